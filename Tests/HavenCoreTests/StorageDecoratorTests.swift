import Foundation
import Synchronization
import Testing
@testable import HavenCore
import HavenTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A MemoryStorage that fails its next calls with scripted errors, then behaves.
private final class FlakyStorage: StorageDecorator {
    let base: any Storage
    private let script = Mutex<[any Error & Sendable]>([])
    private let calls = Mutex(0)
    /// When set, `remove` removes the file and then fails (the answer was lost).
    let loseRemoveAnswer: Bool

    init(failing errors: [any Error & Sendable], loseRemoveAnswer: Bool = false) {
        base = MemoryStorage()
        script.withLock { $0 = errors }
        self.loseRemoveAnswer = loseRemoveAnswer
    }

    var callCount: Int { calls.withLock { $0 } }
    /// Fails the next calls with `errors` (after those already scripted).
    func fail(next errors: [any Error & Sendable]) { script.withLock { $0 += errors } }
    var properties: StorageProperties { base.properties }

    private func step() throws {
        calls.withLock { $0 += 1 }
        if let e = script.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) { throw e }
    }

    func create() async throws { try step(); try await base.create() }
    func save(_ handle: Handle, _ data: [UInt8]) async throws { try step(); try await base.save(handle, data) }
    func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] {
        try step()
        return try await base.load(handle, offset: offset, length: length)
    }
    func stat(_ handle: Handle) async throws -> Int { try step(); return try await base.stat(handle) }
    func list(_ type: FileType) async throws -> [StoredFile] { try step(); return try await base.list(type) }
    func remove(_ handle: Handle) async throws {
        if loseRemoveAnswer {
            try? await base.remove(handle)
            try step()
            return
        }
        try step()
        try await base.remove(handle)
    }
}

/// Records retry log lines and the waits asked for, without sleeping.
private final class RetryRecorder: Sendable {
    let lines = Mutex<[String]>([])
    let sleeps = Mutex<[Duration]>([])

    func policy(maxRetries: Int = 5, baseDelay: Duration = .milliseconds(250), maxDelay: Duration = .seconds(8),
                maxElapsed: Duration = .seconds(120), random: Double = 0.999) -> RetryPolicy {
        RetryPolicy(maxRetries: maxRetries, baseDelay: baseDelay, maxDelay: maxDelay, maxElapsed: maxElapsed,
                    sleep: { d in self.sleeps.withLock { $0.append(d) } }, random: { random })
    }
    var log: @Sendable (String) -> Void { { line in self.lines.withLock { $0.append(line) } } }
}

private let transient = HavenError(.io, "connection reset by peer", transient: true)

@Suite("Storage decorators")
struct StorageDecoratorTests {

    // MARK: Retry

    @Test("transient failures are retried until the base confirms the save; each retry is logged")
    func retriesTransient() async throws {
        let flaky = FlakyStorage(failing: [transient, transient, transient])
        let rec = RetryRecorder()
        let s = RetryingStorage(flaky, policy: rec.policy(), log: rec.log)
        try await s.save(Handle(.snapshot, ID.hash([1])), [1, 2, 3])
        #expect(flaky.callCount == 4)
        #expect(try await flaky.base.load(Handle(.snapshot, ID.hash([1]))) == [1, 2, 3])
        let lines = rec.lines.withLock { $0 }
        #expect(lines.count == 3)
        #expect(lines.first?.contains("saving snapshots/") == true, "\(lines)")
        #expect(lines.first?.contains("retry 1/5") == true, "\(lines)")
    }

    @Test("permanent failures fail at once", arguments: [
        HavenError(.notFound, "missing"), HavenError(.wrongPassword, "bad password"),
        HavenError(.invalidArgument, "bad range"), HavenError(.unsupported, "no"),
        HavenError(.noSpace, "disk full", cause: Errno(ENOSPC)), HavenError(.corrupt, "short file"),
        HavenError(.io, "access denied (check the credentials)"), HavenError(.io, "read-only", cause: Errno(EROFS)),
        // A permanent code wins over a transient mark.
        HavenError(.notFound, "missing", transient: true), HavenError(.cancelled, "cancelled", transient: true),
    ])
    func permanentFailsAtOnce(error: HavenError) async throws {
        let flaky = FlakyStorage(failing: [error])
        let rec = RetryRecorder()
        let s = RetryingStorage(flaky, policy: rec.policy(), log: rec.log)
        await #expect(throws: HavenError.self) { _ = try await s.load(Handle.config) }
        #expect(flaky.callCount == 1)
        #expect(rec.lines.withLock { $0 }.isEmpty)
    }

    @Test("network errnos are transient, others are not")
    func errnoClassification() {
        for e in [ECONNRESET, ECONNREFUSED, ETIMEDOUT, EPIPE] {
            #expect(RetryPolicy.isTransient(HavenError(.io, "x", cause: Errno(e))))
        }
        for e in [EACCES, EROFS, EIO, ENOENT] {
            #expect(!RetryPolicy.isTransient(HavenError(.io, "x", cause: Errno(e))))
        }
        #expect(!RetryPolicy.isTransient(CancellationError()))
        #expect(RetryPolicy.isTransient(HavenError(.io, "HTTP 503 SlowDown", transient: true)))
    }

    @Test("gives up after the retry count with the last error, saying how many attempts were made")
    func givesUpAfterCount() async throws {
        let flaky = FlakyStorage(failing: Array(repeating: transient, count: 10))
        let rec = RetryRecorder()
        let s = RetryingStorage(flaky, policy: rec.policy(maxRetries: 5), log: rec.log)
        let e = await #expect(throws: HavenError.self) { _ = try await s.list(.snapshot) }
        #expect(flaky.callCount == 6)
        #expect(e?.code == .io)
        #expect(e?.isTransient == true)
        #expect(e?.message.contains("gave up after 6 attempts") == true, "\(e.map { "\($0)" } ?? "")")
        #expect(rec.lines.withLock { $0 }.count == 5)
    }

    @Test("backoff doubles from the base delay up to the cap, scaled by full jitter")
    func backoffSchedule() async throws {
        let flaky = FlakyStorage(failing: Array(repeating: transient, count: 5))
        let rec = RetryRecorder()
        let s = RetryingStorage(flaky, policy: rec.policy(baseDelay: .milliseconds(100), maxDelay: .milliseconds(500), random: 0.5))
        _ = try await s.list(.snapshot)
        #expect(rec.sleeps.withLock { $0 } == [.milliseconds(50), .milliseconds(100), .milliseconds(200), .milliseconds(250), .milliseconds(250)])
        let policy = RetryPolicy(baseDelay: .seconds(1), maxDelay: .seconds(4))
        for retry in 1...8 {
            let d = policy.delay(beforeRetry: retry)
            #expect(d >= .zero && d <= .seconds(4))
        }
    }

    @Test("the total time bound stops retrying before the count is used up")
    func givesUpAfterTime() async throws {
        let flaky = FlakyStorage(failing: Array(repeating: transient, count: 10))
        let rec = RetryRecorder()
        // Waits of ~1 s, then ~2 s: the second would end past the 1.5 s budget.
        let s = RetryingStorage(flaky, policy: rec.policy(baseDelay: .seconds(1), maxElapsed: .milliseconds(1500)), log: rec.log)
        let e = await #expect(throws: HavenError.self) { try await s.save(Handle(.index, ID.hash([2])), [9]) }
        #expect(flaky.callCount == 2)
        #expect(e?.message.contains("gave up after 2 attempts") == true, "\(e.map { "\($0)" } ?? "")")
    }

    @Test("a retried remove whose first answer was lost succeeds")
    func removeLostAnswer() async throws {
        let flaky = FlakyStorage(failing: [transient], loseRemoveAnswer: true)
        try await flaky.base.save(Handle(.lock, ID.hash([3])), [1])
        let s = RetryingStorage(flaky, policy: RetryRecorder().policy())
        try await s.remove(Handle(.lock, ID.hash([3])))
        #expect(try await flaky.base.list(.lock).isEmpty)
        // Without a lost answer, removing a missing file is still an error.
        let plain = RetryingStorage(FlakyStorage(failing: []), policy: RetryRecorder().policy())
        await #expect(throws: HavenError.self) { try await plain.remove(Handle(.lock, ID.hash([3]))) }
    }

    @Test("cancellation while waiting to retry ends the operation")
    func cancellationStops() async throws {
        let flaky = FlakyStorage(failing: Array(repeating: transient, count: 100))
        let s = RetryingStorage(flaky, policy: RetryPolicy(baseDelay: .seconds(30), random: { 0.999 }))
        let task = Task { try await s.list(.key) }
        try await Task.sleep(for: .milliseconds(50))
        task.cancel()
        let result = await task.result
        #expect(throws: (any Error).self) { try result.get() }
        #expect(flaky.callCount == 1)
    }

    // MARK: Rate limit

    private static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// Runs `body` and returns its duration, with how late a probe's 10 ms sleeps woke up meanwhile: when
    /// other tests keep the cooperative threads busy, every sleep (the limiter's too) resumes late.
    private static func timed(_ body: () async throws -> Void) async throws -> (seconds: Double, lag: Double) {
        let clock = ContinuousClock()
        let probe = Task {
            var worst = Duration.zero
            while !Task.isCancelled {
                let t0 = clock.now
                try? await Task.sleep(for: .milliseconds(10))
                worst = max(worst, clock.now - t0 - .milliseconds(10))
            }
            return worst
        }
        let start = clock.now
        try await body()
        let elapsed = clock.now - start
        probe.cancel()
        return (seconds(elapsed), seconds(await probe.value))
    }

    /// The limiter never lets data through faster than the rate (+15 %); it is within ±15 % of the rate
    /// unless the machine was too busy to wake its sleeps on time (then only the upper bound is checked).
    private static func expectRate(bytes: Int, rate: Int, _ t: (seconds: Double, lag: Double),
                                   sourceLocation: SourceLocation = #_sourceLocation) {
        let measured = Double(bytes) / t.seconds
        print("limit \(rate) B/s, measured \(Int(measured)) B/s over \(String(format: "%.2f", t.seconds)) s (worst wake-up lag \(Int(t.lag * 1000)) ms)")
        #expect(measured < Double(rate) * 1.15, "measured \(measured) B/s for a limit of \(rate) B/s", sourceLocation: sourceLocation)
        if t.lag < 0.1 {
            #expect(measured > Double(rate) * 0.85, "measured \(measured) B/s for a limit of \(rate) B/s", sourceLocation: sourceLocation)
        }
    }

    @Test("uploads through the limiter run at the set rate (±15 %), also from several tasks at once")
    func uploadRate() async throws {
        let rate = 1024 * 1024
        let s = RateLimitedStorage(MemoryStorage(), uploadBytesPerSecond: rate, downloadBytesPerSecond: nil)
        let chunk = [UInt8](repeating: 7, count: 64 << 10)
        let total = 2 << 20
        let t = try await Self.timed {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for t in 0..<4 {
                    group.addTask {
                        for i in 0..<(total / chunk.count / 4) {
                            try await s.save(Handle(.pack, ID.hash([UInt8(t), UInt8(i)])), chunk)
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        Self.expectRate(bytes: total, rate: rate, t)
    }

    @Test("downloads through the limiter run at the set rate (±15 %)")
    func downloadRate() async throws {
        let memory = MemoryStorage()
        let handle = Handle(.pack, ID.hash([4]))
        try await memory.save(handle, [UInt8](repeating: 1, count: 1 << 20))
        let rate = 512 * 1024
        let s = RateLimitedStorage(memory, uploadBytesPerSecond: nil, downloadBytesPerSecond: rate)
        let total = Locked(0)
        let t = try await Self.timed {
            for i in 0..<16 {
                let n = try await s.load(handle, offset: i * 65536, length: 65536).count
                total.withLock { $0 += n }
            }
        }
        Self.expectRate(bytes: total.withLock { $0 }, rate: rate, t)
        // Read through a reader, the same rate.
        let t2 = try await Self.timed {
            try await s.withReader(handle, offset: 0, length: 1 << 20) { reader in
                while reader.remaining > 0 { _ = try await reader.read(65536) }
            }
        }
        Self.expectRate(bytes: 1 << 20, rate: rate, t2)
        let clock = ContinuousClock()
        // Uploads are not limited when only downloads are.
        let t0 = clock.now
        try await s.save(Handle(.pack, ID.hash([5])), [UInt8](repeating: 0, count: 4 << 20))
        #expect(clock.now - t0 < .milliseconds(500))
    }

    @Test("the token bucket serves waiting transfers first come, first served")
    func fairness() async throws {
        let bucket = TokenBucket(bytesPerSecond: 1_048_576, burst: .zero)
        let order = Locked<[Int]>([])
        // One big reservation, then small ones: the small ones wait behind it and keep their order.
        try await bucket.take(100 << 10)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<5 {
                group.addTask {
                    try await Task.sleep(for: .milliseconds(5 * i))
                    try await bucket.take(32 << 10)
                    order.withLock { $0.append(i) }
                }
            }
            try await group.waitForAll()
        }
        #expect(order.withLock { $0 } == [0, 1, 2, 3, 4])
    }

    @Test("a read that fails mid-range is retried from where the range stood, through a new reader")
    func readerRetries() async throws {
        let flaky = FlakyStorage(failing: [])
        let data = SeededRandom.bytes(seed: 40, 100_000)
        let handle = Handle(.pack, ID.hash(data))
        try await flaky.base.save(handle, data)
        let recorder = RetryRecorder()
        let s = RetryingStorage(flaky, policy: recorder.policy(), log: recorder.log)
        let back = try await s.withReader(handle, offset: 1000, length: 99_000) { reader in
            var out: [UInt8] = []
            for k in 0..<9 {
                if k == 3 { flaky.fail(next: [transient, transient]) }  // the fourth piece fails twice
                out += try await reader.read(11_000)
            }
            #expect(reader.remaining == 0)
            return out
        }
        expectSameBytes(back, data[1000...])
        #expect(recorder.lines.withLock { $0.count } == 2, "\(recorder.lines.withLock { $0 })")
        #expect(flaky.callCount == 9 + 2)
    }

    @Test("a permanent failure of a read is not retried")
    func readerPermanentFailure() async throws {
        let flaky = FlakyStorage(failing: [])
        let handle = Handle(.pack, ID.hash([7]))
        try await flaky.base.save(handle, [UInt8](repeating: 7, count: 1000))
        let recorder = RetryRecorder()
        let s = RetryingStorage(flaky, policy: recorder.policy(), log: recorder.log)
        flaky.fail(next: [HavenError(.corrupt, "damaged")])
        let e = await expectHavenError { try await s.withReader(handle, offset: 0, length: 1000) { _ = try await $0.read(500) } }
        #expect(e?.code == .corrupt)
        #expect(flaky.callCount == 1)
        #expect(recorder.lines.withLock { $0 }.isEmpty)
    }

    // MARK: Connection limit

    @Test("an open reader holds one of the limited connections until it is closed")
    func readerHoldsConnection() async throws {
        let memory = MemoryStorage()
        let handle = Handle(.pack, ID.hash([8]))
        try await memory.save(handle, [UInt8](repeating: 8, count: 10_000))
        let s = ConcurrencyLimitedStorage(memory, connections: 2)
        let a = try await s.reader(handle, offset: 0, length: 10_000)
        var b: (any StorageReader)? = try await s.reader(handle, offset: 0, length: 10_000)
        _ = try await a.read(10)
        let loaded = Locked(false)
        let load = Task {
            _ = try await s.load(handle, offset: 0, length: 10)
            loaded.withLock { $0 = true }
        }
        try await Task.sleep(for: .milliseconds(100))
        #expect(!loaded.withLock { $0 }, "a load ran while both connections were held by readers")
        await a.close()
        await a.close()  // a second close gives back nothing more
        try await load.value
        #expect(loaded.withLock { $0 })
        // A reader dropped without close gives its connection back too; then two readers fit again.
        _ = try await b?.read(5)
        b = nil
        let c = try await s.reader(handle, offset: 0, length: 1)
        let d = try await s.reader(handle, offset: 0, length: 1)
        let third = Task { try await s.stat(handle) }
        try await Task.sleep(for: .milliseconds(100))
        await c.close()
        #expect(try await third.value == 10_000)
        await d.close()
    }

    @Test("the connection limit bounds parallel operations and shows in properties")
    func connectionLimit() async throws {
        final class Gauge: Sendable {
            let state = Mutex((now: 0, max: 0))
            func enter() { state.withLock { $0.now += 1; $0.max = max($0.max, $0.now) } }
            func leave() { state.withLock { $0.now -= 1 } }
        }
        final class Slow: StorageDecorator {
            let base: any Storage = MemoryStorage()
            let gauge: Gauge
            init(_ gauge: Gauge) { self.gauge = gauge }
            var properties: StorageProperties { base.properties }
            func create() async throws {}
            func save(_ handle: Handle, _ data: [UInt8]) async throws {
                gauge.enter()
                try? await Task.sleep(for: .milliseconds(5))
                gauge.leave()
                try await base.save(handle, data)
            }
            func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] { [] }
            func stat(_ handle: Handle) async throws -> Int { 0 }
            func list(_ type: FileType) async throws -> [StoredFile] { [] }
            func remove(_ handle: Handle) async throws {}
        }
        let gauge = Gauge()
        let s = ConcurrencyLimitedStorage(Slow(gauge), connections: 3)
        #expect(s.properties.connections == 3)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<24 { group.addTask { try await s.save(Handle(.pack, ID.hash([UInt8(i)])), [1]) } }
            try await group.waitForAll()
        }
        #expect(gauge.state.withLock { $0.max } == 3)
        #expect(undecorated(RetryingStorage(s)) is MemoryStorage)
    }
}
