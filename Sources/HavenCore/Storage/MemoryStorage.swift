import Synchronization

/// A repository held in memory, for tests and dry runs.
public final class MemoryStorage: Storage {
    private let files = Mutex<[Handle: [UInt8]]>([:])
    public let location: String
    public var properties: StorageProperties { StorageProperties(connections: 4, atomicReplace: true, consistentListing: true) }

    public init(location: String = "memory:") { self.location = location }

    public func create() async throws {
        if files.withLock({ $0[.config] != nil }) {
            throw HavenError(.invalidArgument, "a repository already exists at \(location)")
        }
    }

    public func save(_ handle: Handle, _ data: [UInt8]) async throws {
        files.withLock { $0[handle] = data }
    }

    public func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] {
        guard let data = files.withLock({ $0[handle] }) else {
            throw HavenError(.notFound, "\(location)\(handle.path) does not exist")
        }
        let end = length.map { offset + $0 } ?? data.count
        guard offset >= 0, offset <= end, end <= data.count else {
            throw HavenError(.corrupt, "\(handle.path) is shorter than expected")
        }
        return Array(data[offset..<end])
    }

    public func stat(_ handle: Handle) async throws -> Int {
        guard let data = files.withLock({ $0[handle] }) else {
            throw HavenError(.notFound, "\(location)\(handle.path) does not exist")
        }
        return data.count
    }

    public func list(_ type: FileType) async throws -> [StoredFile] {
        files.withLock { $0.filter { $0.key.type == type }.map { StoredFile(name: $0.key.name, size: $0.value.count) } }
    }

    public func remove(_ handle: Handle) async throws {
        let removed = files.withLock { $0.removeValue(forKey: handle) }
        if removed == nil { throw HavenError(.notFound, "\(location)\(handle.path) does not exist") }
    }

    /// Replaces a stored file's bytes, for tests that damage a repository.
    public func tamper(_ handle: Handle, _ transform: ([UInt8]) -> [UInt8]) {
        files.withLock { if let d = $0[handle] { $0[handle] = transform(d) } }
    }
}
