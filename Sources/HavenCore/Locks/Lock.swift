#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The content of a lock file (restic's format, stored encrypted in `locks/`).
public struct LockInfo: Sendable, Equatable {
    /// When the lock was created or last refreshed.
    public var time: Timestamp
    /// Whether the lock excludes every other lock.
    public var exclusive: Bool
    /// The host of the process holding the lock.
    public var hostname: String
    /// The user running that process.
    public var username: String
    /// The process ID (checked for liveness when the host is this one).
    public var pid: Int32
    /// The user ID of that process.
    public var uid: UInt32
    /// The group ID of that process.
    public var gid: UInt32

    /// A lock record with the given fields.
    public init(time: Timestamp, exclusive: Bool, hostname: String, username: String, pid: Int32, uid: UInt32, gid: UInt32) {
        self.time = time; self.exclusive = exclusive; self.hostname = hostname; self.username = username
        self.pid = pid; self.uid = uid; self.gid = gid
    }

    /// A lock for this process, now.
    public static func current(exclusive: Bool) -> LockInfo {
        LockInfo(time: .now(), exclusive: exclusive, hostname: Host.name, username: Host.user,
                 pid: getpid(), uid: getuid(), gid: getgid())
    }

    /// The JSON restic writes: time, exclusive, hostname, username, pid, uid, gid.
    public func encoded() -> [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        w.key("time"); w.string(time.rfc3339)
        w.key("exclusive"); w.bool(exclusive)
        w.key("hostname"); w.string(hostname)
        w.key("username"); w.string(username)
        w.key("pid"); w.number(pid)
        w.key("uid"); w.number(uid)
        w.key("gid"); w.number(gid)
        w.endObject()
        return w.bytes
    }

    /// Parses a lock file's JSON. Throws `.corrupt` naming `what` for malformed content.
    public static func decode(_ bytes: [UInt8], what: String = "lock") throws -> LockInfo {
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch { throw HavenError(.corrupt, "\(what) is not valid JSON: \(error)") }
        guard case .object = json else { throw HavenError(.corrupt, "\(what) is not a JSON object") }
        guard let ts = json["time"]?.string, let time = Timestamp(rfc3339: ts) else {
            throw HavenError(.corrupt, "\(what) has an invalid time")
        }
        let pid = json["pid"]?.int64 ?? 0
        return LockInfo(time: time, exclusive: json["exclusive"]?.bool ?? false,
                        hostname: json["hostname"]?.string ?? "", username: json["username"]?.string ?? "",
                        pid: Int32(clamping: pid),
                        uid: UInt32(truncatingIfNeeded: json["uid"]?.uint64 ?? 0),
                        gid: UInt32(truncatingIfNeeded: json["gid"]?.uint64 ?? 0))
    }

    /// Whether the lock no longer counts: older than `timing.staleAfter`, or made on this host (`localHost`)
    /// by a process that no longer exists.
    public func isStale(now: Timestamp = .now(), timing: LockTiming = .standard, localHost: String = Host.name) -> Bool {
        if now.timeInterval - time.timeInterval > timing.staleAfter.seconds { return true }
        if hostname == localHost && pid > 0 && !LockInfo.processExists(pid) { return true }
        return false
    }

    /// `kill(pid, 0)`: the process exists unless it fails with ESRCH (EPERM means it exists, owned by another user).
    static func processExists(_ pid: Int32) -> Bool {
        guard pid > 0 else { return true }
        if kill(pid, 0) == 0 { return true }
        return errno != ESRCH
    }

    /// "exclusively by PID 1234 on host (user) since 2024-01-02 03:04:05".
    var holderDescription: String {
        var s = (exclusive ? "exclusively " : "") + "by PID \(pid) on \(hostname.isEmpty ? "an unknown host" : hostname)"
        if !username.isEmpty { s += " (user \(username))" }
        return s + " since \(time.display)"
    }
}

/// Timing of lock handling; tests shorten these.
public struct LockTiming: Sendable {
    /// A lock older than this is stale (restic: 30 minutes).
    public var staleAfter: Duration
    /// How often a held lock is rewritten with a fresh time (restic: 5 minutes).
    public var refreshInterval: Duration
    /// How long to wait after writing a lock before checking again for a competing one, on storage whose
    /// listings may lag behind writes (object stores). On a file system (`consistentListing`) there is no
    /// pause: of two processes that each write their lock and then list, the later lister always sees
    /// the other's lock, so at least one backs out without waiting.
    public var recheckDelay: Duration
    /// The pause between attempts when acquiring with a retry budget.
    public var retryInterval: Duration

    /// Timing; the defaults are restic's.
    public init(staleAfter: Duration = .seconds(30 * 60), refreshInterval: Duration = .seconds(5 * 60),
                recheckDelay: Duration = .milliseconds(200), retryInterval: Duration = .seconds(5)) {
        self.staleAfter = staleAfter; self.refreshInterval = refreshInterval
        self.recheckDelay = recheckDelay; self.retryInterval = retryInterval
    }

    /// restic's values.
    public static let standard = LockTiming()
}

extension Duration {
    var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }
}

/// A lock on a repository, held until `release()`.
///
/// Exclusive locks (prune, unlock-free maintenance) exclude every other lock; non-exclusive locks (backup,
/// restore, check) only exclude exclusive ones. While held, the lock file is replaced by a fresh one every
/// `refreshInterval` so others do not consider it stale.
public final class Lock: Sendable {
    /// The locked repository.
    public let repository: Repository
    /// Whether this is an exclusive lock.
    public let isExclusive: Bool
    /// The timing the lock was acquired with (staleness, refresh interval).
    public let timing: LockTiming

    struct State {
        var fileID: ID?
        var refresher: Task<Void, Never>?
        var released = false
        var refreshError: HavenError?
    }
    private let state = Mutex(State())
    private let warning: (@Sendable (String) -> Void)?

    private init(repository: Repository, exclusive: Bool, fileID: ID, timing: LockTiming,
                 warning: (@Sendable (String) -> Void)?) {
        self.repository = repository
        self.isExclusive = exclusive
        self.timing = timing
        self.warning = warning
        state.withLock { $0.fileID = fileID }
    }

    deinit {
        state.withLock { $0.refresher?.cancel() }
    }

    /// The storage ID of the current lock file (it changes on each refresh); nil once released.
    public var fileID: ID? { state.withLock { $0.released ? nil : $0.fileID } }
    /// Whether `release()` has not been called yet.
    public var isHeld: Bool { state.withLock { !$0.released } }
    /// The last refresh failure, if any (the lock may have become stale for others).
    public var refreshError: HavenError? { state.withLock { $0.refreshError } }

    /// Locks `repository`.
    ///
    /// Fails with `.lockFailed` when another live lock conflicts (an exclusive lock conflicts with every
    /// lock, a non-exclusive one with exclusive locks). Stale locks (older than `timing.staleAfter`, or from
    /// a dead process on this host) are ignored; lock files that cannot be read are ignored with a warning.
    /// After writing its own lock file it waits `timing.recheckDelay` (only where listings may lag) and checks again, backing out when a
    /// conflicting lock appeared meanwhile. With `retry` > 0, conflicts are retried until that much time passed.
    public static func acquire(
        repository: Repository, exclusive: Bool, retry: Duration = .zero, timing: LockTiming = .standard,
        warning: (@Sendable (String) -> Void)? = nil
    ) async throws -> Lock {
        let clock = ContinuousClock()
        let deadline = clock.now + retry
        while true {
            do {
                return try await attempt(repository: repository, exclusive: exclusive, timing: timing, warning: warning)
            } catch let e as HavenError where e.code == .lockFailed {
                let left = deadline - clock.now
                guard left > .zero else { throw e }
                try await Task.sleep(for: min(left, timing.retryInterval))
            }
        }
    }

    private static func attempt(repository: Repository, exclusive: Bool, timing: LockTiming,
                                warning: (@Sendable (String) -> Void)?) async throws -> Lock {
        let localHost = Host.name
        try await checkConflicts(repository: repository, exclusive: exclusive, ignoring: nil, timing: timing,
                                 localHost: localHost, warning: warning)
        let id = try await repository.saveUnpacked(.lock, LockInfo.current(exclusive: exclusive).encoded())
        do {
            if timing.recheckDelay > .zero, !repository.storage.properties.consistentListing {
                try await Task.sleep(for: timing.recheckDelay)
            }
            try await checkConflicts(repository: repository, exclusive: exclusive, ignoring: id, timing: timing,
                                     localHost: localHost, warning: warning)
        } catch {
            // Also when cancelled (SIGTERM right after the lock was written): the removal runs in a task of its
            // own, which the cancellation does not reach, so no lock is left behind.
            await Task { try? await repository.storage.remove(Handle(.lock, id)) }.value
            throw error
        }
        let lock = Lock(repository: repository, exclusive: exclusive, fileID: id, timing: timing, warning: warning)
        lock.startRefreshing()
        return lock
    }

    private static func checkConflicts(repository: Repository, exclusive: Bool, ignoring own: ID?, timing: LockTiming,
                                       localHost: String, warning: (@Sendable (String) -> Void)?) async throws {
        let now = Timestamp.now()
        for (id, info) in try await list(repository: repository, warning: warning) where id != own {
            guard exclusive || info.exclusive else { continue }
            guard !info.isStale(now: now, timing: timing, localHost: localHost) else { continue }
            throw HavenError(.lockFailed, "repository is already locked \(info.holderDescription) (lock \(id.short)); "
                             + "run `haven unlock` if that process is gone")
        }
    }

    /// Every readable lock in the repository. Lock files that vanish while listing are skipped; ones that
    /// cannot be read or decoded are skipped and reported through `warning`.
    public static func list(repository: Repository, warning: (@Sendable (String) -> Void)? = nil) async throws -> [(ID, LockInfo)] {
        var out: [(ID, LockInfo)] = []
        for f in try await repository.storage.list(.lock) {
            guard let id = ID(hex: f.name) else { continue }
            do {
                out.append((id, try LockInfo.decode(try await repository.loadUnpacked(Handle(.lock, id)), what: "lock \(id.short)")))
            } catch let e as HavenError where e.code == .notFound {
                continue
            } catch {
                warning?("ignoring lock \(id.short): it cannot be read (\(error))")
            }
        }
        return out
    }

    /// Removes stale locks (and lock files too damaged to read) for `haven unlock`. Returns how many were removed.
    @discardableResult
    public static func removeStale(repository: Repository, timing: LockTiming = .standard) async throws -> Int {
        let now = Timestamp.now()
        let localHost = Host.name
        var removed = 0
        for f in try await repository.storage.list(.lock) {
            guard let id = ID(hex: f.name) else { continue }
            let stale: Bool
            do {
                let info = try LockInfo.decode(try await repository.loadUnpacked(Handle(.lock, id)), what: "lock \(id.short)")
                stale = info.isStale(now: now, timing: timing, localHost: localHost)
            } catch let e as HavenError where e.code == .corrupt {
                stale = true
            } catch let e as HavenError where e.code == .notFound {
                continue
            }
            guard stale else { continue }
            do {
                try await repository.storage.remove(Handle(.lock, id))
                removed += 1
            } catch let e as HavenError where e.code == .notFound {}
        }
        return removed
    }

    /// Removes every lock file, live or not, for `haven unlock --remove-all`. Returns how many were removed.
    @discardableResult
    public static func removeAll(repository: Repository) async throws -> Int {
        var removed = 0
        for f in try await repository.storage.list(.lock) {
            do {
                try await repository.storage.remove(Handle(.lock, f.name))
                removed += 1
            } catch let e as HavenError where e.code == .notFound {}
        }
        return removed
    }

    // MARK: Holding

    private func startRefreshing() {
        let interval = timing.refreshInterval
        let task = Task { [weak self] in
            while !Task.isCancelled {
                do { try await Task.sleep(for: interval) } catch { return }
                guard let self else { return }
                await self.refresh()
            }
        }
        state.withLock { $0.refresher = task }
    }

    /// Writes a new lock file with the current time, then removes the previous one.
    func refresh() async {
        guard let old = state.withLock({ $0.released ? nil : $0.fileID }) else { return }
        do {
            let new = try await repository.saveUnpacked(.lock, LockInfo.current(exclusive: isExclusive).encoded())
            let stillHeld = state.withLock { s -> Bool in
                guard !s.released else { return false }
                s.fileID = new
                s.refreshError = nil
                return true
            }
            guard stillHeld else {
                try? await repository.storage.remove(Handle(.lock, new))
                return
            }
            do {
                try await repository.storage.remove(Handle(.lock, old))
            } catch let e as HavenError where e.code == .notFound {
                warning?("lock \(old.short) was removed by someone else (haven unlock?); the repository may have been used concurrently")
            }
        } catch {
            let e = (error as? HavenError) ?? HavenError(.io, "cannot refresh lock \(old.short)", cause: HavenError(.io, "\(error)"))
            state.withLock { $0.refreshError = e }
            warning?("cannot refresh the repository lock: \(e)")
        }
    }

    /// Stops refreshing and removes the lock file. Calling it again does nothing.
    public func release() async throws {
        let (task, id) = state.withLock { s -> (Task<Void, Never>?, ID?) in
            guard !s.released else { return (nil, nil) }
            s.released = true
            let t = s.refresher
            s.refresher = nil
            return (t, s.fileID)
        }
        task?.cancel()
        await task?.value
        guard let id else { return }
        do {
            try await repository.storage.remove(Handle(.lock, id))
        } catch let e as HavenError where e.code == .notFound {}
    }
}

/// Runs `body` while holding a lock on `repository`, and releases the lock afterwards: also when `body`
/// throws or the task is cancelled (the release runs in its own task, so cancellation does not stop it).
public func withLock<T: Sendable>(
    repository: Repository, exclusive: Bool, retry: Duration = .zero, timing: LockTiming = .standard,
    warning: (@Sendable (String) -> Void)? = nil, _ body: (Lock) async throws -> T
) async throws -> T {
    let lock = try await Lock.acquire(repository: repository, exclusive: exclusive, retry: retry, timing: timing, warning: warning)
    let result: Result<T, any Error>
    do {
        result = .success(try await body(lock))
    } catch {
        result = .failure(error)
    }
    let releaseError = await Task { () -> (any Error)? in
        do { try await lock.release(); return nil } catch { return error }
    }.value
    let value = try result.get()
    if let releaseError { throw releaseError }
    return value
}
