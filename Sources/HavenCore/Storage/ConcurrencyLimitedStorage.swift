/// Runs at most `connections` operations of the wrapped storage at once (`-o local.connections=N`, …);
/// `properties.connections` reports the limit.
public final class ConcurrencyLimitedStorage: StorageDecorator {
    public let base: any Storage
    public let connections: Int
    private let semaphore: AsyncSemaphore

    public init(_ base: any Storage, connections: Int) {
        self.base = base
        self.connections = max(1, connections)
        self.semaphore = AsyncSemaphore(permits: max(1, connections))
    }

    public var properties: StorageProperties {
        var p = base.properties
        p.connections = connections
        return p
    }

    public func create() async throws { try await semaphore.withPermit { try await self.base.create() } }
    public func save(_ handle: Handle, _ data: [UInt8]) async throws {
        try await semaphore.withPermit { try await self.base.save(handle, data) }
    }
    public func save(_ handle: Handle, spooled file: SpoolFile) async throws {
        try await semaphore.withPermit { try await self.base.save(handle, spooled: file) }
    }
    public func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] {
        try await semaphore.withPermit { try await self.base.load(handle, offset: offset, length: length) }
    }
    /// An open reader holds one of the connections until it is closed.
    public func reader(_ handle: Handle, offset: Int, length: Int) async throws -> any StorageReader {
        await semaphore.acquire()
        do {
            return PermitReader(try await base.reader(handle, offset: offset, length: length), semaphore)
        } catch {
            semaphore.release()
            throw error
        }
    }
    public func stat(_ handle: Handle) async throws -> Int { try await semaphore.withPermit { try await self.base.stat(handle) } }
    public func list(_ type: FileType) async throws -> [StoredFile] {
        try await semaphore.withPermit { try await self.base.list(type) }
    }
    public func remove(_ handle: Handle) async throws { try await semaphore.withPermit { try await self.base.remove(handle) } }
}

/// A reader that gives its permit back when closed (or, should a caller forget, when released).
private final class PermitReader: StorageReader {
    private let base: any StorageReader
    private let semaphore: AsyncSemaphore
    private var held = true

    init(_ base: any StorageReader, _ semaphore: AsyncSemaphore) {
        self.base = base
        self.semaphore = semaphore
    }

    deinit { if held { semaphore.release() } }

    var remaining: Int { base.remaining }
    func read(_ count: Int) async throws -> [UInt8] { try await base.read(count) }

    func close() async {
        await base.close()
        if held {
            held = false
            semaphore.release()
        }
    }
}
