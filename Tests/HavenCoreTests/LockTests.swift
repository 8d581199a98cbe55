#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
@testable import HavenCore

private let fast = LockTiming(recheckDelay: .milliseconds(5), retryInterval: .milliseconds(20))

private func expectLockFailed(_ body: () async throws -> Void, containing text: String? = nil,
                              sourceLocation: SourceLocation = #_sourceLocation) async {
    do {
        try await body()
        Issue.record("expected lockFailed, nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as HavenError {
        #expect(e.code == .lockFailed, "\(e)", sourceLocation: sourceLocation)
        if let text { #expect(e.message.contains(text), "\(e.message)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("expected HavenError, got \(error)", sourceLocation: sourceLocation)
    }
}

/// Stores a lock file as another process would.
@discardableResult
private func plantLock(_ repo: Repository, exclusive: Bool, host: String = Host.name, pid: Int32 = getpid(),
                       time: Timestamp = .now()) async throws -> ID {
    let info = LockInfo(time: time, exclusive: exclusive, hostname: host, username: "someone", pid: pid, uid: 1000, gid: 100)
    return try await repo.saveUnpacked(.lock, info.encoded())
}

/// MemoryStorage with a hook called after each save.
private final class HookStorage: Storage {
    let inner = MemoryStorage()
    let hook = Locked<(@Sendable (Handle) async -> Void)?>(nil)
    /// false: the storage declares that its listings may lag behind writes, like some object stores.
    let consistentListing: Bool
    init(consistentListing: Bool = true) { self.consistentListing = consistentListing }
    var location: String { inner.location }
    var properties: StorageProperties {
        var p = inner.properties
        p.consistentListing = consistentListing
        return p
    }
    func create() async throws { try await inner.create() }
    func save(_ handle: Handle, _ data: [UInt8]) async throws {
        try await inner.save(handle, data)
        if let h = hook.withLock({ $0 }) { await h(handle) }
    }
    func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] {
        try await inner.load(handle, offset: offset, length: length)
    }
    func stat(_ handle: Handle) async throws -> Int { try await inner.stat(handle) }
    func list(_ type: FileType) async throws -> [StoredFile] { try await inner.list(type) }
    func remove(_ handle: Handle) async throws { try await inner.remove(handle) }
}

/// A PID that no process has (beyond every system's pid_max).
private let deadPID: Int32 = 99_999_999

@Suite("Locks")
struct LockTests {
    @Test("two exclusive locks conflict")
    func exclusiveVsExclusive() async throws {
        let fx = try await CPFixture.make()
        let first = try await Lock.acquire(repository: fx.repo, exclusive: true, timing: fast)
        await expectLockFailed({ _ = try await Lock.acquire(repository: fx.repo, exclusive: true, timing: fast) },
                               containing: "already locked exclusively by PID \(getpid()) on \(Host.name)")
        await expectLockFailed({ _ = try await Lock.acquire(repository: fx.repo, exclusive: false, timing: fast) },
                               containing: "haven unlock")
        // The failed attempts left no lock files behind.
        #expect(try await fx.names(.lock) == [first.fileID!.hex])
        try await first.release()
    }

    @Test("shared locks coexist; shared and exclusive conflict both ways")
    func sharedLocks() async throws {
        let fx = try await CPFixture.make()
        let a = try await Lock.acquire(repository: fx.repo, exclusive: false, timing: fast)
        let b = try await Lock.acquire(repository: fx.repo, exclusive: false, timing: fast)
        #expect(try await fx.names(.lock).count == 2)
        await expectLockFailed({ _ = try await Lock.acquire(repository: fx.repo, exclusive: true, timing: fast) },
                               containing: "already locked by PID")
        try await a.release()
        try await b.release()
        #expect(try await fx.names(.lock).isEmpty)

        let x = try await Lock.acquire(repository: fx.repo, exclusive: true, timing: fast)
        await expectLockFailed { _ = try await Lock.acquire(repository: fx.repo, exclusive: false, timing: fast) }
        try await x.release()
    }

    @Test("stale locks (dead process on this host, or old) are ignored and removed by unlock")
    func staleLocks() async throws {
        let fx = try await CPFixture.make()
        try await plantLock(fx.repo, exclusive: true, pid: deadPID)
        try await plantLock(fx.repo, exclusive: true, host: "elsewhere", pid: 1, time: Timestamp.now().adding(seconds: -2 * 3600))
        let live = try await plantLock(fx.repo, exclusive: false, host: "elsewhere", pid: 1)

        // Neither stale exclusive lock blocks; the live shared one does block an exclusive lock.
        let shared = try await Lock.acquire(repository: fx.repo, exclusive: false, timing: fast)
        try await shared.release()
        await expectLockFailed({ _ = try await Lock.acquire(repository: fx.repo, exclusive: true, timing: fast) },
                               containing: "on elsewhere")

        #expect(try await Lock.removeStale(repository: fx.repo) == 2)
        #expect(try await fx.names(.lock) == [live.hex])
        #expect(try await Lock.removeAll(repository: fx.repo) == 1)
        #expect(try await fx.names(.lock).isEmpty)
    }

    @Test("staleness rules")
    func staleness() {
        let now = Timestamp.now()
        func info(host: String, pid: Int32, age: Int64) -> LockInfo {
            LockInfo(time: now.adding(seconds: -age), exclusive: true, hostname: host, username: "", pid: pid, uid: 0, gid: 0)
        }
        #expect(!info(host: "me", pid: getpid(), age: 0).isStale(now: now, localHost: "me"))
        #expect(info(host: "me", pid: deadPID, age: 0).isStale(now: now, localHost: "me"))
        #expect(!info(host: "other", pid: deadPID, age: 0).isStale(now: now, localHost: "me"))
        #expect(!info(host: "other", pid: 1, age: 29 * 60).isStale(now: now, localHost: "me"))
        #expect(info(host: "other", pid: 1, age: 31 * 60).isStale(now: now, localHost: "me"))
        #expect(!info(host: "me", pid: 0, age: 0).isStale(now: now, localHost: "me"))
        #expect(!info(host: "me", pid: -5, age: 0).isStale(now: now, localHost: "me"))
    }

    @Test("release removes the lock file and is idempotent")
    func release() async throws {
        let fx = try await CPFixture.make()
        let lock = try await Lock.acquire(repository: fx.repo, exclusive: true, timing: fast)
        let id = try #require(lock.fileID)
        #expect(try await fx.names(.lock) == [id.hex])
        let info = try LockInfo.decode(try await fx.repo.loadUnpacked(Handle(.lock, id)))
        #expect(info.exclusive && info.pid == getpid() && info.hostname == Host.name)
        try await lock.release()
        #expect(!lock.isHeld && lock.fileID == nil)
        #expect(try await fx.names(.lock).isEmpty)
        try await lock.release()
    }

    @Test("a held lock is refreshed: new file first, then the old one is removed")
    func refresh() async throws {
        let fx = try await CPFixture.make()
        let timing = LockTiming(refreshInterval: .milliseconds(40), recheckDelay: .zero)
        let lock = try await Lock.acquire(repository: fx.repo, exclusive: false, timing: timing)
        let first = try #require(lock.fileID)
        // Wait for a refresh (generously: tests run in parallel on few cores).
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(120)
        while lock.fileID == first && clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        let now = try #require(lock.fileID)
        #expect(now != first)
        // The first file is gone; at most a refresh in flight adds a second one for a moment.
        let names = try await fx.names(.lock)
        #expect(!names.contains(first.hex))
        #expect((1...2).contains(names.count))
        #expect(lock.refreshError == nil)
        try await lock.release()
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await fx.names(.lock).isEmpty)
    }

    @Test("the pause before the re-check happens only on storage whose listings may lag")
    func recheckPauseOnlyWhereListingsLag() async throws {
        // A pause far longer than a loaded test machine ever stalls (28 s seen), so its absence is clear.
        let clock = ContinuousClock()
        let consistent = try await Repository.initialize(storage: MemoryStorage(), password: "pw", kdf: .testing)
        #expect(consistent.storage.properties.consistentListing)
        var start = clock.now
        try await Lock.acquire(repository: consistent, exclusive: true, timing: LockTiming(recheckDelay: .seconds(300))).release()
        #expect(clock.now - start < .seconds(150), "no pause on a consistent listing")

        let lagging = try await Repository.initialize(storage: HookStorage(consistentListing: false), password: "pw", kdf: .testing)
        start = clock.now
        try await Lock.acquire(repository: lagging, exclusive: true, timing: LockTiming(recheckDelay: .milliseconds(1500))).release()
        #expect(clock.now - start >= .milliseconds(1500), "the pause where listings may lag")
    }

    @Test("a lock appearing during the re-check makes acquire back out")
    func recheck() async throws {
        // Storage that lets a competitor write its exclusive lock right after ours is stored.
        let storage = HookStorage()
        let repo = try await Repository.initialize(storage: storage, password: "pw", kdf: .testing)
        let planted = Locked<ID?>(nil)
        storage.hook.withLock { $0 = { handle in
            guard handle.type == .lock else { return }
            storage.hook.withLock { $0 = nil }
            let id = try? await plantLock(repo, exclusive: true, host: "racer", pid: 1)
            planted.withLock { $0 = id }
        } }
        await expectLockFailed({ _ = try await Lock.acquire(repository: repo, exclusive: false, timing: fast) },
                               containing: "racer")
        let racer = try #require(planted.withLock { $0 })
        #expect(try await storage.list(.lock).map(\.name) == [racer.hex])
    }

    @Test("with a retry budget, acquire waits for a conflicting lock to go away")
    func retry() async throws {
        let fx = try await CPFixture.make()
        let holder = try await Lock.acquire(repository: fx.repo, exclusive: true, timing: fast)
        let releaser = Task {
            try await Task.sleep(for: .milliseconds(150))
            try await holder.release()
        }
        // Generous budget: under a loaded test run the releaser task may wait a while for a thread.
        let lock = try await Lock.acquire(repository: fx.repo, exclusive: true, retry: .seconds(120), timing: fast)
        try await releaser.value
        #expect(lock.isHeld)
        try await lock.release()

        // A budget that runs out still fails.
        let again = try await Lock.acquire(repository: fx.repo, exclusive: true, timing: fast)
        let clock = ContinuousClock()
        let start = clock.now
        await expectLockFailed { _ = try await Lock.acquire(repository: fx.repo, exclusive: true, retry: .milliseconds(100), timing: fast) }
        #expect(clock.now - start >= .milliseconds(100))
        try await again.release()
    }

    @Test("unreadable lock files are ignored with a warning")
    func unreadable() async throws {
        let fx = try await CPFixture.make()
        let garbage: [UInt8] = Array("not a lock".utf8)
        try await fx.storage.save(Handle(.lock, ID.hash(garbage)), garbage)
        let warnings = Locked<[String]>([])
        let lock = try await Lock.acquire(repository: fx.repo, exclusive: true, timing: fast) { w in warnings.withLock { $0.append(w) } }
        #expect(warnings.withLock { $0 }.contains { $0.contains(ID.hash(garbage).short) })
        try await lock.release()
        // unlock clears damaged lock files too.
        #expect(try await Lock.removeStale(repository: fx.repo) == 1)
    }

    @Test("withLock releases after success, error and cancellation")
    func scoped() async throws {
        let fx = try await CPFixture.make()
        let v = try await withLock(repository: fx.repo, exclusive: true, timing: fast) { lock in
            #expect(lock.isHeld)
            return 42
        }
        #expect(v == 42)
        #expect(try await fx.names(.lock).isEmpty)

        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await withLock(repository: fx.repo, exclusive: false, timing: fast) { _ in throw Boom() }
        }
        #expect(try await fx.names(.lock).isEmpty)

        let started = Locked(false)
        let task = Task {
            try await withLock(repository: fx.repo, exclusive: true, timing: fast) { _ in
                started.withLock { $0 = true }
                try await Task.sleep(for: .seconds(30))
            }
        }
        while !started.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
        #expect(try await fx.names(.lock).count == 1)
        task.cancel()
        _ = await task.result
        #expect(try await fx.names(.lock).isEmpty)
    }

    @Test("lock files round-trip restic's JSON and reject garbage")
    func encoding() throws {
        let info = LockInfo(time: Timestamp(rfc3339: "2015-06-27T12:18:51.759239612+02:00")!, exclusive: false,
                            hostname: "kasimir", username: "fd0", pid: 13607, uid: 1000, gid: 100)
        let text = String(decoding: info.encoded(), as: UTF8.self)
        #expect(text == #"{"time":"2015-06-27T12:18:51.759239612+02:00","exclusive":false,"hostname":"kasimir","username":"fd0","pid":13607,"uid":1000,"gid":100}"#)
        #expect(try LockInfo.decode(info.encoded()) == info)
        for bad in ["", "{}", "[]", "{\"time\":\"yesterday\"}", "{\"time\":5}"] {
            #expect(throws: HavenError.self) { try LockInfo.decode(Array(bad.utf8)) }
        }
        let huge = try LockInfo.decode(Array(#"{"time":"2015-06-27T12:18:51Z","pid":99999999999999}"#.utf8))
        #expect(huge.pid == Int32.max)
    }
}
