import HavenCore

/// A storage that records the packs it loads and the readers it opens, for tests of how data is read.
/// It can claim that its reads are best streamed (as an object store does), and it can fail one read of
/// the first reader opened after `reset`.
public final class CountingStorage: StorageDecorator {
    public let base: any Storage
    private let streamed: Bool
    /// Names of the packs loaded with `load`, once per load.
    public let packLoads = Locked<[String]>([])
    /// Names of the files readers were opened on, once per reader.
    public let readers = Locked<[String]>([])
    /// Reads made through the readers.
    public let reads = Locked(0)
    let failingRead = Locked<Int?>(nil)

    public init(_ base: any Storage, streamedReads: Bool = false) {
        self.base = base
        self.streamed = streamedReads
    }

    /// Forgets what was counted; with `failingRead` n, the n-th read of the next reader fails with an
    /// `.io` error saying "injected".
    public func reset(failingRead n: Int? = nil) {
        packLoads.withLock { $0 = [] }
        readers.withLock { $0 = [] }
        reads.withLock { $0 = 0 }
        failingRead.withLock { $0 = n }
    }

    public var properties: StorageProperties {
        var p = base.properties
        if streamed { p.streamedReads = true }
        return p
    }

    public func create() async throws { try await base.create() }
    public func save(_ handle: Handle, _ data: [UInt8]) async throws { try await base.save(handle, data) }

    public func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] {
        if handle.type == .pack { packLoads.withLock { $0.append(handle.name) } }
        return try await base.load(handle, offset: offset, length: length)
    }

    public func reader(_ handle: Handle, offset: Int, length: Int) async throws -> any StorageReader {
        readers.withLock { $0.append(handle.name) }
        let failing = failingRead.withLock { n -> Int? in
            defer { n = nil }
            return n
        }
        return CountingReader(try await base.reader(handle, offset: offset, length: length), self, failingAt: failing)
    }

    public func stat(_ handle: Handle) async throws -> Int { try await base.stat(handle) }
    public func list(_ type: FileType) async throws -> [StoredFile] { try await base.list(type) }
    public func remove(_ handle: Handle) async throws { try await base.remove(handle) }
}

private final class CountingReader: StorageReader {
    let base: any StorageReader
    let storage: CountingStorage
    let failingAt: Int?
    var count = 0

    init(_ base: any StorageReader, _ storage: CountingStorage, failingAt: Int?) {
        self.base = base
        self.storage = storage
        self.failingAt = failingAt
    }

    var remaining: Int { base.remaining }

    func read(_ n: Int) async throws -> [UInt8] {
        count += 1
        storage.reads.withLock { $0 += 1 }
        if count == failingAt { throw HavenError(.io, "injected read failure") }
        return try await base.read(n)
    }

    func close() async { await base.close() }
}
