import Foundation
import HavenDaemon
import HavenTestSupport
import Testing

@Suite("State store")
struct StateStoreTests {
    func newJob(_ backup: String = "docs", repositories: [String] = ["nas"]) -> StateStore.NewJob {
        StateStore.NewJob(kind: .backup, backup: backup, repositories: repositories, trigger: "api", priority: 0, priorityName: "normal")
    }

    @Test("a job goes pending → running → finished, with progress, log and per-repository results")
    func lifecycle() async throws {
        let tmp = TempDir("state-life")
        let store = try StateStore(directory: tmp.sub("state"))
        let job = try await store.insert(newJob())
        #expect(job.state == .pending)
        #expect(try await store.claim(job.id))
        #expect(try await !store.claim(job.id), "a job is claimed once")
        try await store.setProgress(job.id, JobProgress(filesDone: 3, bytesDone: 300, step: "backup"))
        try await store.log(job.id, level: "info", "hello")
        try await store.log(job.id, level: "error", "world")
        let running = try #require(try await store.job(job.id))
        #expect(running.record.state == .running)
        #expect(running.record.progress?.filesDone == 3)
        #expect(running.ownerPID == getpid())
        let result = RepositoryResult(repository: "nas", ok: true, snapshotID: String(repeating: "ab", count: 32), filesNew: 5)
        try await store.finish(job.id, state: .finished, results: [result], error: nil)
        let done = try #require(try await store.job(job.id)?.record)
        #expect(done.state == .finished)
        #expect(done.results == [result])
        #expect(done.finishedAt != nil)
        let lines = try await store.logLines(job.id)
        #expect(lines.map(\.message) == ["hello", "world"])
        #expect(try await store.logLines(job.id, after: lines[0].seq).map(\.message) == ["world"])
        let outcome = try await store.outcome(backup: "docs", repository: "nas")
        #expect(outcome.lastSuccess != nil)
        #expect(outcome.lastSuccessSnapshot == result.snapshotID)
        #expect(outcome.lastFailure == nil)
    }

    @Test("running jobs of a dead process are marked interrupted; those of a live one are not")
    func interruptedDetection() async throws {
        let tmp = TempDir("state-int")
        // A process that ran a job and died: a short-lived child's pid.
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        let deadStore = try StateStore(directory: tmp.sub("state"), ownerPID: dead.processIdentifier)
        let orphan = try await deadStore.insert(newJob("a", repositories: ["r1"]))
        #expect(try await deadStore.claim(orphan.id))
        let me = try StateStore(directory: tmp.sub("state"))
        let mine = try await me.insert(newJob("b", repositories: ["r2"]))
        #expect(try await me.claim(mine.id))
        let marked = try await me.markInterrupted()
        #expect(marked.map(\.id) == [orphan.id])
        #expect(try await me.job(orphan.id)?.record.state == .interrupted)
        #expect(try await me.job(mine.id)?.record.state == .running)
        #expect(try await me.lastEndedJob(backup: "a")?.state == .interrupted)
        #expect(try await !me.resumed(orphan.id))
        var resume = newJob("a", repositories: ["r1"])
        resume.resumes = orphan.id
        _ = try await me.insert(resume)
        #expect(try await me.resumed(orphan.id))
    }

    @Test("clearing removes ended jobs and their logs, keeps the per-repository history")
    func clear() async throws {
        let tmp = TempDir("state-clear")
        let store = try StateStore(directory: tmp.sub("state"))
        let a = try await store.insert(newJob())
        let b = try await store.insert(newJob())
        let c = try await store.insert(newJob())
        try await store.log(a.id, level: "info", "x")
        try await store.finish(a.id, state: .finished, results: [RepositoryResult(repository: "nas", ok: true)], error: nil)
        try await store.finish(b.id, state: .failed, results: [RepositoryResult(repository: "nas", ok: false, error: "boom")], error: "boom")
        #expect(try await store.clear(states: [.finished]) == 1)
        #expect(try await store.job(a.id) == nil)
        #expect(try await store.logLines(a.id).isEmpty)
        #expect(try await store.job(b.id)?.record.state == .failed)
        #expect(try await store.job(c.id)?.record.state == .pending)
        #expect(try await store.clear(states: [.pending]) == 0, "pending jobs are never cleared")
        let o = try await store.outcome(backup: "docs", repository: "nas")
        #expect(o.lastSuccess != nil)
        #expect(o.lastError == "boom")
    }

    @Test("two processes share one database: concurrent writers lose nothing")
    func sharedBetweenProcesses() async throws {
        let tmp = TempDir("state-shared")
        let one = try StateStore(directory: tmp.sub("state"))
        let two = try StateStore(directory: tmp.sub("state"), ownerPID: getpid())
        try await withThrowingTaskGroup(of: Void.self) { group in
            for store in [one, two] {
                group.addTask {
                    for i in 0..<50 {
                        let job = try await store.insert(newJob("b\(i)"))
                        try await store.log(job.id, level: "info", "line \(i)")
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await one.jobs().count == 100)
        #expect(Set(try await two.jobs().map(\.record.id)).count == 100)
    }

    @Test("schedule bookkeeping survives a restart")
    func lastFired() async throws {
        let tmp = TempDir("state-sched")
        let t = Date(timeIntervalSince1970: 1_800_000_000)
        do {
            let store = try StateStore(directory: tmp.sub("state"))
            try await store.setLastFired("docs/backup[0]", t)
            try await store.setLastFired("docs/backup[0]", t.addingTimeInterval(60))
        }
        let again = try StateStore(directory: tmp.sub("state"))
        #expect(try await again.lastFired() == ["docs/backup[0]": t.addingTimeInterval(60)])
    }

    @Test("an unwritable state directory is a clear error")
    func unwritable() throws {
        let tmp = TempDir("state-bad")
        try Fixture.write(tmp.sub("file"), [1])
        do {
            _ = try StateStore(directory: tmp.sub("file") + "/state")
            Issue.record("opening a state directory under a file succeeded")
        } catch {
            #expect("\(error)".contains("state"))
        }
    }
}


@Suite("API encoding")
struct EncodingTests {
    @Test("every model survives a round trip through the API's JSON (snake_case keys, ID and OK in capitals)")
    func roundTrip() throws {
        let date = Date(timeIntervalSince1970: 1_800_000_000.25)
        let result = RepositoryResult(repository: "nas", ok: true, snapshotID: "abc", filesNew: 1, dataAdded: 7)
        let job = JobRecord(id: 4, kind: .check, backup: nil, repositories: ["nas"], trigger: "api", priority: "high", state: .running,
                            createdAt: date, startedAt: date, progress: JobProgress(filesDone: 2, percentDone: 0.5), results: [result], resumes: 3)
        let back = try JSONDecoder.haven.decode(JobRecord.self, from: JSONEncoder.haven.encode(job))
        #expect(back == job)
        let text = String(decoding: try JSONEncoder.haven.encode(job), as: UTF8.self)
        #expect(text.contains("\"snapshot_id\":\"abc\""))
        #expect(text.contains("\"created_at\":\"2027-01-15T08:00:00.250Z\""))
        let line = JobLogLine(seq: 1, jobID: 4, time: date, level: "info", message: "m")
        #expect(try JSONDecoder.haven.decode(JobLogLine.self, from: JSONEncoder.haven.encode(line)) == line)
        let repo = RepositoryStatus(name: "nas", url: "/x", backups: ["a"], lastCheck: date, lastCheckOK: true)
        #expect(try JSONDecoder.haven.decode(RepositoryStatus.self, from: JSONEncoder.haven.encode(repo)) == repo)
        let snap = SnapshotSummary(id: "abcdef", shortID: "abc", time: date, host: "h", paths: ["/"], tags: [])
        #expect(try JSONDecoder.haven.decode(SnapshotSummary.self, from: JSONEncoder.haven.encode(snap)) == snap)
    }
}
