import Foundation
import HavenDaemon

/// A `DaemonControl` holding a few backups, jobs and repositories in memory.
actor FakeDaemon: DaemonControl {
    static let t0 = Date(timeIntervalSince1970: 1_795_000_000.25)

    var backupList: [BackupStatus] = [
        BackupStatus(name: "documents", paths: ["/home/me/Documents"], repositories: ["nas"], schedules: ["1h", "0 30 2 * * *"],
                     watch: false, priority: "normal", minInterval: 72000, lastSuccess: t0, nextRun: t0.addingTimeInterval(3600),
                     perRepository: [BackupRepositoryStatus(repository: "nas", lastSuccess: t0, lastSuccessSnapshot: "abcdef12")]),
        BackupStatus(name: "photos", paths: ["/srv/photos"], repositories: ["nas"], schedules: ["1d"], watch: true, priority: "low"),
    ]
    var jobList: [JobRecord] = [
        JobRecord(id: 1, kind: .backup, backup: "documents", repositories: ["nas"], trigger: "schedule", priority: "normal",
                  state: .finished, createdAt: t0, startedAt: t0, finishedAt: t0.addingTimeInterval(12),
                  results: [RepositoryResult(repository: "nas", ok: true, snapshotID: "abcdef1234", filesNew: 3, dataAdded: 1024)]),
        JobRecord(id: 2, kind: .backup, backup: "photos", repositories: ["nas"], trigger: "api", priority: "low",
                  state: .running, createdAt: t0.addingTimeInterval(60), startedAt: t0.addingTimeInterval(61),
                  progress: JobProgress(filesDone: 10, bytesDone: 4096, totalFiles: 20, totalBytes: 8192, percentDone: 0.5,
                                        secondsElapsed: 3, currentFiles: ["/srv/photos/a.jpg"], step: "backup")),
        JobRecord(id: 3, kind: .backup, backup: "documents", repositories: ["nas"], trigger: "cli", priority: "high",
                  state: .failed, createdAt: t0.addingTimeInterval(120), error: "repository is locked"),
    ]
    var logs: [JobLogLine] = (1...5).map {
        JobLogLine(seq: Int64($0), jobID: 2, time: t0.addingTimeInterval(Double($0)), level: "info", message: "line \($0)")
    }
    var clearedStates: [[JobState]] = []
    var lastRun: (name: String, priority: String?, force: Bool)?
    var lastCheck: (repository: String, priority: String?, subset: String?)?
    /// When set, `status()` throws it (to test the 500 path).
    var statusError: (any Error)?

    func setStatusError(_ error: (any Error)?) { statusError = error }
    func appendLog(_ message: String) {
        let seq = (logs.last?.seq ?? 0) + 1
        logs.append(JobLogLine(seq: seq, jobID: 2, time: Self.t0.addingTimeInterval(Double(seq)), level: "info", message: message))
    }
    func setState(_ id: Int64, _ state: JobState) {
        if let i = jobList.firstIndex(where: { $0.id == id }) { jobList[i].state = state }
    }

    func status() async throws -> StatusReport {
        if let statusError { throw statusError }
        return StatusReport(host: "laptop", version: "0.1.0", startedAt: Self.t0, jobs: JobGroups(jobList), backups: backupList)
    }

    func backups() async throws -> [BackupStatus] { backupList }

    func runBackup(_ name: String, priority: String?, force: Bool) async throws -> EnqueueResult {
        guard backupList.contains(where: { $0.name == name }) else { throw DaemonError.notFound("no backup named '\(name)'") }
        if let priority, !["immediate", "next", "high", "normal", "low", "idle"].contains(priority), Int(priority) == nil {
            throw DaemonError.badRequest("unknown priority '\(priority)'")
        }
        lastRun = (name, priority, force)
        if name == "photos" && !force {
            return EnqueueResult(outcome: "skipped", job: nil, reason: "last success 1h ago; min_interval is 20h")
        }
        let job = JobRecord(id: Int64(jobList.count + 1), kind: .backup, backup: name, repositories: ["nas"], trigger: "api",
                            priority: priority ?? "normal", state: .pending, createdAt: Self.t0)
        jobList.append(job)
        return EnqueueResult(outcome: "queued", job: job)
    }

    func jobs(state: JobState?, limit: Int) async throws -> [JobRecord] {
        Array(jobList.filter { state == nil || $0.state == state }.reversed().prefix(limit))
    }

    func job(_ id: Int64) async throws -> JobRecord {
        guard let job = jobList.first(where: { $0.id == id }) else { throw DaemonError.notFound("no job \(id)") }
        return job
    }

    func jobLog(_ id: Int64, after: Int64) async throws -> [JobLogLine] {
        _ = try await job(id)
        return logs.filter { $0.jobID == id && $0.seq > after }
    }

    func cancel(_ id: Int64) async throws -> JobRecord {
        var job = try await job(id)
        guard !job.state.isDone else { throw DaemonError.conflict("job \(id) already ended (\(job.state.rawValue))") }
        job.state = .cancelled
        job.finishedAt = Self.t0
        setState(id, .cancelled)
        return job
    }

    func clear(states: [JobState]) async throws -> Int {
        clearedStates.append(states)
        let before = jobList.count
        jobList.removeAll { states.contains($0.state) }
        return before - jobList.count
    }

    func repositories() async throws -> [RepositoryStatus] {
        [RepositoryStatus(name: "nas", url: "/mnt/nas/haven", backups: ["documents", "photos"], lastCheck: Self.t0, lastCheckOK: true)]
    }

    func snapshots(repository: String) async throws -> [SnapshotSummary] {
        guard repository == "nas" else { throw DaemonError.notFound("no repository named '\(repository)'") }
        return [SnapshotSummary(id: String(repeating: "ab", count: 32), shortID: "abababab", time: Self.t0, host: "laptop",
                                paths: ["/home/me/Documents"], tags: ["daily"], filesNew: 3, totalBytes: 4096)]
    }

    func runCheck(repository: String, priority: String?, readDataSubset: String?) async throws -> EnqueueResult {
        guard repository == "nas" else { throw DaemonError.notFound("no repository named '\(repository)'") }
        lastCheck = (repository, priority, readDataSubset)
        let job = JobRecord(id: 99, kind: .check, backup: nil, repositories: ["nas"], trigger: "api", priority: priority ?? "normal",
                            state: .pending, createdAt: Self.t0)
        return EnqueueResult(outcome: "queued", job: job)
    }

    func metrics() async throws -> String {
        "# HELP haven_jobs_total Jobs run.\n# TYPE haven_jobs_total counter\nhaven_jobs_total{state=\"finished\"} 1\n"
    }
}
