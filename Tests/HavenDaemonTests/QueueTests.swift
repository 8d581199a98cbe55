import Foundation
import Testing
@testable import HavenDaemon

@Suite("Queue policy")
struct QueueTests {
    let t0 = utc("2026-11-22T08:00:00Z")

    func job(_ id: Int64, _ target: String, _ repos: Set<String>, _ priority: Priority = .normal,
             kind: JobKind = .backup, at offset: TimeInterval? = nil) -> QueuedJob {
        QueuedJob(id: id, kind: kind, target: target, repositories: repos, priority: priority,
                  enqueuedAt: t0.addingTimeInterval(offset ?? TimeInterval(id)), trigger: .schedule)
    }

    func request(_ target: String, _ priority: Priority, kind: JobKind = .backup) -> JobRequest {
        JobRequest(kind: kind, target: target, repositories: ["nas"], priority: priority, trigger: .api)
    }

    @Test("higher priority first, first queued first within a priority")
    func ordering() {
        let pending = [job(1, "a", ["r1"], .low), job(2, "b", ["r2"], .normal), job(3, "c", ["r3"], .high),
                       job(4, "d", ["r4"], .normal), job(5, "e", ["r5"], Priority(60))]
        let started = QueuePolicy.startable(pending: pending.shuffled(), running: [], maxConcurrent: 10)
        #expect(started.map(\.id) == [3, 5, 2, 4, 1])
    }

    @Test("the same job asked twice is queued once, at the higher priority")
    func dedupe() {
        let pending = [job(7, "documents", ["nas"], .normal), job(8, "photos", ["nas"], .low)]
        #expect(QueuePolicy.admit(request("documents", .high), pending: pending) == .merge(existingID: 7, raiseTo: .high))
        #expect(QueuePolicy.admit(request("documents", .low), pending: pending) == .merge(existingID: 7, raiseTo: nil))
        #expect(QueuePolicy.admit(request("documents", .normal), pending: pending) == .merge(existingID: 7, raiseTo: nil))
        #expect(QueuePolicy.admit(request("documents", .high, kind: .check), pending: pending) == .insert)
        #expect(QueuePolicy.admit(request("music", .high), pending: pending) == .insert)
        #expect(QueuePolicy.admit(request("documents", .high), pending: []) == .insert)
    }

    @Test("one job per repository at a time; a job locks all its repositories")
    func perRepository() {
        let running = [job(1, "documents", ["nas", "offsite"])]
        let pending = [job(2, "photos", ["nas"], .high), job(3, "music", ["usb"]), job(4, "mail", ["offsite", "usb"])]
        let started = QueuePolicy.startable(pending: pending, running: running, maxConcurrent: 5)
        #expect(started.map(\.id) == [3])
        // Two pending jobs on one free repository: only the first starts.
        let both = QueuePolicy.startable(pending: [job(5, "a", ["nas"]), job(6, "b", ["nas"])], running: [], maxConcurrent: 5)
        #expect(both.map(\.id) == [5])
    }

    @Test("a job waiting for a busy repository keeps lower-ranked jobs off its other repositories")
    func reservation() {
        let running = [job(1, "documents", ["nas"])]
        let pending = [job(2, "photos", ["nas", "usb"], .high), job(3, "music", ["usb"], .low)]
        #expect(QueuePolicy.startable(pending: pending, running: running, maxConcurrent: 5).isEmpty)
    }

    @Test("the global limit counts running jobs; the default is one at a time")
    func globalLimit() {
        let pending = [job(2, "a", ["r1"]), job(3, "b", ["r2"]), job(4, "c", ["r3"])]
        #expect(QueuePolicy.startable(pending: pending, running: [], maxConcurrent: 1).map(\.id) == [2])
        #expect(QueuePolicy.startable(pending: pending, running: [], maxConcurrent: 2).map(\.id) == [2, 3])
        #expect(QueuePolicy.startable(pending: pending, running: [job(1, "x", ["r9"])], maxConcurrent: 2).map(\.id) == [2])
        #expect(QueuePolicy.startable(pending: pending, running: [job(1, "x", ["r9"])], maxConcurrent: 1).isEmpty)
        #expect(QueuePolicy.startable(pending: pending, running: [], maxConcurrent: 0).map(\.id) == [2])
    }

    @Test("immediate exceeds the global limit but never shares a repository")
    func immediate() {
        let running = [job(1, "documents", ["nas"])]
        let pending = [job(2, "photos", ["usb"], .immediate), job(3, "music", ["nas"], .immediate),
                       job(4, "mail", ["cloud"], .high)]
        let started = QueuePolicy.startable(pending: pending, running: running, maxConcurrent: 1)
        #expect(started.map(\.id) == [2])
    }

    @Test("idle starts only when nothing else runs or waits, one at a time")
    func idle() {
        let idleA = job(5, "scrub", ["nas"], .idle), idleB = job(6, "scrub2", ["usb"], .idle)
        #expect(QueuePolicy.startable(pending: [idleA], running: [job(1, "x", ["cloud"])], maxConcurrent: 4).isEmpty)
        #expect(QueuePolicy.startable(pending: [idleA, job(2, "y", ["nas"], .low)], running: [], maxConcurrent: 4).map(\.id) == [2])
        #expect(QueuePolicy.startable(pending: [idleA, job(3, "z", ["cloud"], .low)], running: [], maxConcurrent: 4).map(\.id) == [3])
        #expect(QueuePolicy.startable(pending: [idleB, idleA], running: [], maxConcurrent: 4).map(\.id) == [5])
    }
}

@Suite("Scheduler loop wake-up", .timeLimit(.minutes(1)))
struct WakeSignalTests {
    // Under load a wake-up may come late, never early: a wait that should be woken has a 30 s timeout
    // and must end well before it (20 s); a lost signal shows as a wait that runs to its timeout.
    @Test("a wait ends at its timeout without a signal, at once with one, and a signal sent between waits is kept")
    func wakeSignal() async throws {
        let wake = WakeSignal()
        let clock = ContinuousClock()
        var elapsed = await clock.measure { await wake.wait(timeout: .milliseconds(300)) }
        #expect(elapsed >= .milliseconds(290))

        wake.signal()  // nobody waits: kept for the next wait
        elapsed = await clock.measure { await wake.wait(timeout: .seconds(30)) }
        #expect(elapsed < .seconds(20), "a signal sent before the wait was lost")

        let waiter = Task { await clock.measure { await wake.wait(timeout: .seconds(30)) } }
        try await Task.sleep(for: .milliseconds(100))
        wake.signal()
        elapsed = await waiter.value
        #expect(elapsed < .seconds(20), "the signal did not wake the waiting loop")

        // One signal wakes one wait, not every later one.
        elapsed = await clock.measure { await wake.wait(timeout: .milliseconds(300)) }
        #expect(elapsed >= .milliseconds(290))
    }
}
