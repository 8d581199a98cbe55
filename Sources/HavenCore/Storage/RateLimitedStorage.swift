/// A token bucket over bytes: callers reserve bytes in arrival order and wait until the rate allows them,
/// so concurrent transfers share the rate fairly (first come, first served).
public actor TokenBucket {
    public nonisolated let bytesPerSecond: Double
    /// Idle time that may be made up by a burst (credit never exceeds this much transfer time).
    public nonisolated let burst: Duration
    private let clock = ContinuousClock()
    private var due: ContinuousClock.Instant

    public init(bytesPerSecond: Double, burst: Duration = .milliseconds(100)) {
        precondition(bytesPerSecond > 0)
        self.bytesPerSecond = bytesPerSecond
        self.burst = burst
        self.due = clock.now
    }

    /// Reserves `bytes` and returns the instant at which they have been paid for.
    func reserve(_ bytes: Int) -> ContinuousClock.Instant {
        let start = max(due, clock.now - burst)
        due = start + .seconds(Double(bytes) / bytesPerSecond)
        return due
    }

    /// Waits until `bytes` may be transferred. Throws `CancellationError` when the task is cancelled.
    public nonisolated func take(_ bytes: Int) async throws {
        guard bytes > 0 else { return }
        let until = await reserve(bytes)
        if until > ContinuousClock().now { try await Task.sleep(until: until, clock: ContinuousClock()) }
    }
}

/// Limits the bytes per second written by `save` and read by `load` (restic's --limit-upload and
/// --limit-download). An upload waits for its bytes before it starts; a download is charged when it arrives,
/// which delays the next one. Either limit may be nil (unlimited).
public final class RateLimitedStorage: StorageDecorator {
    public let base: any Storage
    public let upload: TokenBucket?
    public let download: TokenBucket?

    /// Rates in bytes per second; nil means unlimited.
    public init(_ base: any Storage, uploadBytesPerSecond: Int?, downloadBytesPerSecond: Int?) {
        self.base = base
        self.upload = uploadBytesPerSecond.map { TokenBucket(bytesPerSecond: Double($0)) }
        self.download = downloadBytesPerSecond.map { TokenBucket(bytesPerSecond: Double($0)) }
    }

    public var properties: StorageProperties { base.properties }
    public func create() async throws { try await base.create() }

    public func save(_ handle: Handle, _ data: [UInt8]) async throws {
        try await Self.wait(upload, data.count, "saving \(handle)", base.location)
        try await base.save(handle, data)
    }

    public func save(_ handle: Handle, spooled file: SpoolFile) async throws {
        try await Self.wait(upload, file.size, "saving \(handle)", base.location)
        try await base.save(handle, spooled: file)
    }

    public func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] {
        let data = try await base.load(handle, offset: offset, length: length)
        try await Self.wait(download, data.count, "reading \(handle)", base.location)
        return data
    }

    public func reader(_ handle: Handle, offset: Int, length: Int) async throws -> any StorageReader {
        RateLimitedReader(try await base.reader(handle, offset: offset, length: length), self, handle)
    }

    public func stat(_ handle: Handle) async throws -> Int { try await base.stat(handle) }
    public func list(_ type: FileType) async throws -> [StoredFile] { try await base.list(type) }
    public func remove(_ handle: Handle) async throws { try await base.remove(handle) }

    fileprivate static func wait(_ bucket: TokenBucket?, _ bytes: Int, _ what: String, _ location: String) async throws {
        guard let bucket else { return }
        do { try await bucket.take(bytes) } catch {
            throw HavenError(.cancelled, "\(what) in \(location) was cancelled")
        }
    }
}

/// Charges each read piece to the download rate, as `load` does.
private final class RateLimitedReader: StorageReader {
    private let base: any StorageReader
    private let storage: RateLimitedStorage
    private let handle: Handle

    init(_ base: any StorageReader, _ storage: RateLimitedStorage, _ handle: Handle) {
        self.base = base
        self.storage = storage
        self.handle = handle
    }

    var remaining: Int { base.remaining }

    func read(_ count: Int) async throws -> [UInt8] {
        let bytes = try await base.read(count)
        try await RateLimitedStorage.wait(storage.download, bytes.count, "reading \(handle)", storage.base.location)
        return bytes
    }

    func close() async { await base.close() }
}
