import Foundation

/// When and how often `RetryingStorage` tries a failed operation again.
public struct RetryPolicy: Sendable {
    /// Retries after the first attempt (so at most `maxRetries + 1` attempts).
    public var maxRetries: Int
    /// The backoff cap before the first retry; it doubles with each retry up to `maxDelay`.
    public var baseDelay: Duration
    public var maxDelay: Duration
    /// No retry starts once this much time has passed since the first attempt (or would pass during the wait).
    public var maxElapsed: Duration
    /// Waits between attempts (injectable so tests need not sleep).
    public var sleep: @Sendable (Duration) async throws -> Void
    /// A uniform random fraction in 0..<1, for full jitter (injectable for deterministic tests).
    public var random: @Sendable () -> Double

    public init(maxRetries: Int = 5, baseDelay: Duration = .milliseconds(250), maxDelay: Duration = .seconds(8),
                maxElapsed: Duration = .seconds(120),
                sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
                random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }) {
        self.maxRetries = max(0, maxRetries)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.maxElapsed = maxElapsed
        self.sleep = sleep
        self.random = random
    }

    /// The wait before retry number `retry` (1-based): uniform in [0, min(maxDelay, baseDelay·2^(retry-1))].
    public func delay(beforeRetry retry: Int) -> Duration {
        let cap = min(maxDelay, baseDelay * Double(1 << min(max(retry - 1, 0), 30)))
        return cap * random()
    }

    /// Whether a failure is worth retrying: a `HavenError` marked transient (dropped or refused connection,
    /// timeout, HTTP 5xx, SlowDown) or carrying a network errno. Missing files, bad passwords, invalid
    /// arguments, unsupported features, a full disk, damaged data and cancellation are permanent.
    public static func isTransient(_ error: any Error) -> Bool {
        guard let e = error as? HavenError else { return false }
        if permanentCodes.contains(e.code) { return false }
        if e.isTransient { return true }
        if let errno = e.cause as? Errno { return transientErrnos.contains(errno.value) }
        return false
    }

    static let permanentCodes: Set<HavenError.Code> = [
        .notFound, .wrongPassword, .invalidArgument, .unsupported, .noSpace, .usage, .cancelled, .corrupt,
        .repositoryNotFound, .notARepository, .lockFailed, .partialBackup,
    ]
    static let transientErrnos: Set<Int32> = [
        EINTR, EAGAIN, ETIMEDOUT, ECONNRESET, ECONNREFUSED, ECONNABORTED, EPIPE, ENETUNREACH, EHOSTUNREACH, ENETDOWN,
    ]
}

/// Retries a storage's transient failures with exponential backoff and full jitter, bounded by a count
/// and a total time; permanent failures are thrown at once. A `save` returns only once the wrapped
/// storage confirmed it. Each retry is reported through `log`.
public final class RetryingStorage: StorageDecorator {
    public let base: any Storage
    public let policy: RetryPolicy
    private let log: @Sendable (String) -> Void

    public init(_ base: any Storage, policy: RetryPolicy = RetryPolicy(), log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.base = base
        self.policy = policy
        self.log = log
    }

    public var properties: StorageProperties { base.properties }

    public func create() async throws {
        try await retrying("creating the repository") { try await self.base.create() }
    }

    public func save(_ handle: Handle, _ data: [UInt8]) async throws {
        try await retrying("saving \(handle)") { try await self.base.save(handle, data) }
    }

    public func save(_ handle: Handle, spooled file: SpoolFile) async throws {
        try await retrying("saving \(handle)") { try await self.base.save(handle, spooled: file) }
    }

    public func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] {
        try await retrying("reading \(handle)") { try await self.base.load(handle, offset: offset, length: length) }
    }

    /// A failed read is retried from where the range stood before it, through a new reader of the rest.
    public func reader(_ handle: Handle, offset: Int, length: Int) async throws -> any StorageReader {
        RetryingReader(self, handle, offset: offset, length: length)
    }

    public func stat(_ handle: Handle) async throws -> Int {
        try await retrying("stat \(handle)") { try await self.base.stat(handle) }
    }

    public func list(_ type: FileType) async throws -> [StoredFile] {
        try await retrying("listing \(type.directory.isEmpty ? "config" : type.directory + "/")") { try await self.base.list(type) }
    }

    public func remove(_ handle: Handle) async throws {
        var attempted = false
        try await retrying("removing \(handle)") {
            do {
                try await self.base.remove(handle)
            } catch let e as HavenError where e.code == .notFound && attempted {
                // An earlier attempt removed it but its answer was lost.
            }
            attempted = true
        }
    }

    fileprivate func retrying<T>(_ what: String, _ operation: () async throws -> T) async throws -> T {
        let clock = ContinuousClock()
        let start = clock.now
        var waited = Duration.zero
        var retry = 0
        while true {
            do {
                return try await operation()
            } catch {
                guard Self.shouldRetry(error), retry < policy.maxRetries else { throw Self.finalError(error, attempts: retry + 1) }
                retry += 1
                let delay = policy.delay(beforeRetry: retry)
                // With an injected sleep the real clock does not advance, so count the waits as well.
                let elapsed = max(clock.now - start, waited)
                guard elapsed + delay <= policy.maxElapsed else { throw Self.finalError(error, attempts: retry) }
                log("\(base.location): \(what) failed (\(Self.describe(error))); retry \(retry)/\(policy.maxRetries) in \(Self.format(delay))")
                do {
                    try await policy.sleep(delay)
                } catch {
                    throw HavenError(.cancelled, "\(what) in \(base.location) was cancelled while waiting to retry")
                }
                waited += delay
            }
        }
    }

    private static func shouldRetry(_ error: any Error) -> Bool {
        if error is CancellationError || Task.isCancelled { return false }
        return RetryPolicy.isTransient(error)
    }

    /// The error to report: transient failures say how many attempts were made.
    private static func finalError(_ error: any Error, attempts: Int) -> any Error {
        guard attempts > 1, var e = error as? HavenError else { return error }
        e.message += " (gave up after \(attempts) attempts; check the connection and the server, then run the command again)"
        return e
    }

    private static func describe(_ error: any Error) -> String {
        if let e = error as? HavenError { return e.description }
        return "\(error)"
    }

    private static func format(_ d: Duration) -> String {
        let s = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        return String(format: "%.2f s", s)
    }
}

/// A reader whose failed reads are tried again (see `RetryingStorage.reader`); the wrapped storage's
/// reader is opened at the first read and again after each failure.
private final class RetryingReader: StorageReader {
    private let storage: RetryingStorage
    private var range: ReadRange
    private var current: (any StorageReader)?

    init(_ storage: RetryingStorage, _ handle: Handle, offset: Int, length: Int) {
        self.storage = storage
        self.range = ReadRange(handle, offset: offset, length: length)
    }

    var remaining: Int { range.remaining }

    func read(_ count: Int) async throws -> [UInt8] {
        range.check(count)
        let bytes = try await storage.retrying("reading \(range.handle)") { () async throws -> [UInt8] in
            let reader: any StorageReader
            if let current { reader = current } else {
                reader = try await storage.base.reader(range.handle, offset: range.offset, length: range.remaining)
                current = reader
            }
            do {
                return try await reader.read(count)
            } catch {
                current = nil
                await reader.close()
                throw error
            }
        }
        range.advance(count)
        return bytes
    }

    func close() async {
        await current?.close()
        current = nil
    }
}
