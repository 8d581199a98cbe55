import AsyncHTTPClient
import Foundation
import HavenBackends
import HavenCore
import Synchronization

/// The daemon: scheduler, watcher, queue and runner over the state database. Implements `DaemonControl`
/// for the HTTP API.
///
/// One loop does everything that changes the queue: it turns due schedules and settled file changes into
/// jobs, stops jobs whose time window closed or whose `max_duration` passed, and starts the pending jobs
/// the queue policy allows. It sleeps until the next schedule or debounce deadline, and is woken at once
/// when a job is queued or ends or a watched file changes; while jobs run or wait it looks every second,
/// and otherwise at least every `idleInterval` (for jobs `haven run --local` ran in another process).
/// Jobs run as tasks that own a `JobRunner`; their state lives in SQLite, so `haven run --local` from
/// cron sees it and is seen.
public actor Daemon: DaemonControl {
    public let config: DaemonConfig
    public let store: StateStore
    public let events: EventLog
    public let startedAt: Date
    let executable: String
    let http: HTTPClient
    let timeZone: TimeZone
    var running: [Int64: (runner: JobRunner, task: Task<Void, Never>)] = [:]
    var loop: Task<Void, Never>?
    var watcher: Watcher?
    /// Per backup: first and last change seen since the last watch-triggered job.
    var changes: [String: (first: Date, last: Date)] = [:]
    var stopping = false
    var counters = Counters()
    /// Wakes the loop before its next deadline (a job was queued or ended, a watched file changed).
    let wake = WakeSignal()
    /// The longest the loop sleeps when nothing is due, running or waiting.
    static let idleInterval: Duration = .seconds(5)
    /// How often the loop looks while jobs run (time windows, `max_duration`) or wait to start.
    static let busyInterval: Duration = .seconds(1)
    /// Passes of the loop so far (for tests of its sleeping).
    var ticks = 0

    struct Counters {
        var started: [JobKind: Int] = [:]
        var ended: [String: Int] = [:]
        var skipped: [String: Int] = [:]
    }

    public init(config: DaemonConfig, executable: String, events: EventLog, timeZone: TimeZone = .current) throws {
        self.config = config
        self.store = try StateStore(directory: config.stateDir)
        self.events = events
        self.executable = executable
        self.timeZone = timeZone
        self.startedAt = Date()
        self.http = HTTPClient(eventLoopGroupProvider: .singleton)
    }

    // MARK: Life cycle

    /// Marks jobs a dead process left running as interrupted, queues their resumption, and starts the loop
    /// and the file watcher.
    public func start() async throws {
        events.log("info", "haven daemon starting", fields: ["version": .string(HavenVersion.string), "pid": .int(Int(getpid())),
                                                             "backups": .int(config.backups.count), "state": .string(store.path)])
        let interrupted = try await store.markInterrupted()
        for job in interrupted {
            events.log("warning", "job \(job.id) was interrupted when the previous process stopped", fields: jobFields(job))
        }
        try await resumeInterrupted()
        let watched = config.backups.filter { $0.watch != nil }
        if !watched.isEmpty {
            let w = try Watcher { [weak self] path in
                guard let self else { return }
                Task { await self.changed(path) }
            }
            for b in watched {
                for p in b.watch!.paths { w.watch(p) }
            }
            watcher = w
            for warning in w.warnings { events.log("warning", warning, fields: [:]) }
        }
        loop = Task { await self.runLoop() }
    }

    /// Stops scheduling, interrupts running jobs (they are resumed at the next start) and waits for them,
    /// at most `grace` seconds.
    public func shutdown(grace: Double = 20) async {
        guard !stopping else { return }
        stopping = true
        events.log("info", "haven daemon stopping", fields: ["running_jobs": .int(running.count)])
        loop?.cancel()
        wake.signal()
        watcher?.stop()
        for (_, entry) in running { entry.runner.requestStop(.interrupted("the daemon is shutting down; the job resumes at its next start")) }
        let tasks = running.values.map(\.task)
        let deadline = Date().addingTimeInterval(grace)
        for t in tasks {
            let waiter = Task { await t.value }
            while Date() < deadline, running.count > 0 {
                try? await Task.sleep(for: .milliseconds(100))
                if running.isEmpty { break }
            }
            waiter.cancel()
        }
        try? await http.shutdown()
        events.log("info", "haven daemon stopped", fields: [:])
    }

    func runLoop() async {
        while !Task.isCancelled && !stopping {
            var pause = Self.idleInterval
            do {
                let now = Date()
                if let next = try await tick(now: now) {
                    let seconds = min(max(next.timeIntervalSince(now), 0.01), Double(Self.idleInterval.components.seconds))
                    pause = .milliseconds(Int64((seconds * 1000).rounded(.up)))
                }
            } catch {
                pause = Self.busyInterval
                events.log("error", "scheduler error: \(error)", fields: [:])
            }
            await wake.wait(timeout: pause)
        }
    }

    /// One pass: schedules, watches, windows, then starts what may start. Returns when the next pass is
    /// due: the next schedule or debounce deadline, a second from now while jobs run or wait, else nil
    /// (the loop then sleeps `idleInterval`, or until woken).
    @discardableResult
    func tick(now: Date) async throws -> Date? {
        ticks += 1
        // Schedules.
        let keyed = config.schedules
        let stored = try await store.lastFired()
        var lastFired: [ScheduleKey: Date] = [:]
        for key in keyed.keys { if let d = stored[key.description] { lastFired[key] = d } }
        let (due, nextSchedule) = Scheduler.due(schedules: keyed, lastFired: lastFired, startedAt: startedAt, now: now,
                                                catchUp: config.catchUp, timeZone: timeZone)
        var next = nextSchedule
        func wakeAt(_ date: Date) { if next == nil || date < next! { next = date } }
        for d in due {
            try await store.setLastFired(d.key.description, now)
            guard let backup = config.backup(named: d.key.backup) else { continue }
            _ = try await enqueue(kind: d.key.task, backup: backup, priority: backup.priority, trigger: d.trigger, force: false)
        }
        // Watched changes that settled.
        for (name, c) in changes {
            guard let backup = config.backup(named: name), let watch = backup.watch else { continue }
            if watch.debouncer.isDue(firstChange: c.first, lastChange: c.last, now: now) {
                changes[name] = nil
                _ = try await enqueue(kind: .backup, backup: backup, priority: backup.priority, trigger: .watch, force: false)
            } else {
                wakeAt(watch.debouncer.fireTime(firstChange: c.first, lastChange: c.last))
            }
        }
        // Windows and maximum durations of running jobs.
        for (id, entry) in running {
            guard let job = try await store.job(id)?.record, let name = job.backup, let backup = config.backup(named: name) else { continue }
            if let window = backup.window, !window.contains(now, timeZone: timeZone) {
                entry.runner.requestStop(.windowClosed("the time window \(window) closed; the backup continues when it opens again"))
            }
            if let max = backup.maxDuration, let started = job.startedAt, now.timeIntervalSince(started) > max {
                entry.runner.requestStop(.interrupted("max_duration \(DurationParser.format(max)) reached; the backup continues at its next run"))
            }
        }
        let waiting = try await dispatch(now: now)
        if !running.isEmpty || waiting { wakeAt(now.addingTimeInterval(Double(Self.busyInterval.components.seconds))) }
        return next
    }

    /// Starts the pending jobs the queue policy allows (jobs other processes run count as running).
    /// Returns whether jobs are still pending.
    @discardableResult
    func dispatch(now: Date) async throws -> Bool {
        guard !stopping else { return false }
        let pending = try await store.jobs(states: [.pending])
        let active = try await store.jobs(states: [.running])
        let eligible = pending.filter { job in
            guard let name = job.record.backup, let b = config.backup(named: name), let window = b.window else { return true }
            return window.contains(now, timeZone: timeZone)
        }
        let start = QueuePolicy.startable(pending: eligible.map(queued), running: active.map(queued), maxConcurrent: config.concurrency)
        for q in start {
            guard let job = pending.first(where: { $0.record.id == q.id }) else { continue }
            guard try await store.claim(q.id, now: Date()) else { continue }
            launch(job)
        }
        return pending.count > start.count
    }

    func queued(_ job: StateStore.StoredJob) -> QueuedJob {
        QueuedJob(id: job.record.id, kind: job.record.kind, target: job.record.backup ?? job.record.repositories.joined(separator: ","),
                  repositories: Set(job.record.repositories), priority: Priority(job.priorityValue),
                  enqueuedAt: job.record.createdAt, trigger: Trigger(rawValue: job.record.trigger) ?? .api)
    }

    func launch(_ stored: StateStore.StoredJob) {
        var job = stored.record
        job.state = .running
        let runner = JobRunner(config: config, store: store, events: events, executable: executable, http: http)
        counters.started[job.kind, default: 0] += 1
        events.log("info", "job \(job.id) started", fields: jobFields(job))
        let task = Task {
            let outcome = await self.execute(job, stored: stored, runner: runner)
            await self.finished(job, outcome)
        }
        running[job.id] = (runner, task)
    }

    nonisolated func execute(_ job: JobRecord, stored: StateStore.StoredJob, runner: JobRunner) async -> JobOutcome {
        // The guard runs when the job starts, so a job queued long ago is judged by the latest state.
        if job.kind == .backup, let skip = await guardSkip(job, force: stored.force) {
            return JobOutcome(state: .skipped, results: [], error: skip)
        }
        return await runner.run(job, force: stored.force, parameters: stored.parameters)
    }

    func finished(_ job: JobRecord, _ outcome: JobOutcome) async {
        running[job.id] = nil
        defer { wake.signal() }  // a job waiting for this one's repository may start now
        do {
            try await store.finish(job.id, state: outcome.state, results: outcome.results, error: outcome.error)
            if outcome.state == .skipped, let reason = outcome.error {
                try await store.log(job.id, level: "info", "skipped: \(reason)")
            }
        } catch {
            events.log("error", "cannot record the end of job \(job.id): \(error)", fields: jobFields(job))
        }
        counters.ended["\(job.kind.rawValue)|\(outcome.state.rawValue)", default: 0] += 1
        var fields = jobFields(job)
        fields["state"] = .string(outcome.state.rawValue)
        if let e = outcome.error { fields["error"] = .string(e) }
        events.log(outcome.state == .failed ? "error" : "info", "job \(job.id) \(outcome.state.rawValue)", fields: fields)
        // A backup stopped by its time window continues when the window opens again (the resume job waits
        // for it); one stopped by max_duration continues at its next run.
        if case .windowClosed = outcome.stopReason, !stopping, job.kind == .backup, let name = job.backup, let backup = config.backup(named: name) {
            _ = try? await enqueue(kind: .backup, backup: backup, priority: backup.priority, trigger: .resume, force: false, resumes: job.id)
        }
    }

    /// Queues a resume job for each backup whose last job was interrupted and not resumed yet.
    func resumeInterrupted() async throws {
        for backup in config.backups {
            guard let last = try await store.lastEndedJob(backup: backup.name), last.state == .interrupted,
                  try await !store.resumed(last.id) else { continue }
            let pending = try await store.jobs(states: [.pending, .running]).contains { $0.record.backup == backup.name && $0.record.kind == .backup }
            guard !pending else { continue }
            _ = try await enqueue(kind: .backup, backup: backup, priority: backup.priority, trigger: .resume, force: false, resumes: last.id)
        }
    }

    /// The guard's reason to skip, or nil to run.
    nonisolated func guardSkip(_ job: JobRecord, force: Bool) async -> String? {
        guard let name = job.backup, let backup = config.backup(named: name) else { return nil }
        let trigger = Trigger(rawValue: job.trigger) ?? .api
        let lastSuccess = try? await store.lastCompleteSuccess(backup: name, repositories: backup.repositories)
        let lastJob = try? await store.lastEndedJob(backup: name)
        let decision = RunGuard.decide(trigger: trigger, lastSuccess: lastSuccess ?? nil, lastRunInterrupted: (lastJob ?? nil)?.state == .interrupted,
                                       minInterval: backup.minInterval, force: force, now: Date(), timeZone: timeZone)
        return decision.shouldRun ? nil : decision.reason
    }

    /// Queues a job, merging it into an identical pending one. Scheduled and watched backups that the
    /// guard would skip are not queued at all (one log line says why).
    func enqueue(kind: JobKind, backup: BackupConfig?, repository: String? = nil, priority: Priority, trigger: Trigger, force: Bool,
                 parameters: [String: String] = [:], resumes: Int64? = nil) async throws -> EnqueueResult {
        let repositories = backup?.repositories ?? [repository].compactMap { $0 }
        let target = backup?.name ?? repositories.joined(separator: ",")
        if kind == .backup, trigger == .schedule || trigger == .catchUp || trigger == .watch, let backup {
            let probe = JobRecord(id: 0, kind: .backup, backup: backup.name, repositories: repositories, trigger: trigger.rawValue,
                                  priority: priority.description, state: .pending, createdAt: Date())
            if let reason = await guardSkip(probe, force: force) {
                counters.skipped[backup.name, default: 0] += 1
                events.log("info", "\(trigger.rawValue) backup of \(backup.name) skipped: \(reason)",
                           fields: ["backup": .string(backup.name), "trigger": .string(trigger.rawValue), "step": .string("guard")])
                return EnqueueResult(outcome: "skipped", job: nil, reason: reason)
            }
        }
        let pending = try await store.jobs(states: [.pending]).map(queued)
        let request = JobRequest(kind: kind, target: target, repositories: Set(repositories), priority: priority, trigger: trigger)
        switch QueuePolicy.admit(request, pending: pending) {
        case .merge(let id, let raise):
            if let raise { try await store.updatePriority(id, priority: raise.value, name: raise.description) }
            let job = try await store.job(id)?.record
            events.log("info", "\(kind.rawValue) of \(target) is already queued as job \(id)" + (raise.map { "; priority raised to \($0)" } ?? ""),
                       fields: ["job": .int(Int(id)), "trigger": .string(trigger.rawValue)])
            return EnqueueResult(outcome: "merged", job: job)
        case .insert:
            let job = try await store.insert(StateStore.NewJob(kind: kind, backup: backup?.name, repositories: repositories,
                                                               trigger: trigger.rawValue, priority: priority.value,
                                                               priorityName: priority.description, force: force,
                                                               parameters: parameters, resumes: resumes))
            events.log("info", "job \(job.id) queued: \(kind.rawValue) of \(target)", fields: jobFields(job))
            wake.signal()
            return EnqueueResult(outcome: "queued", job: job)
        }
    }

    func changed(_ path: String) {
        let now = Date()
        for b in config.backups {
            guard let watch = b.watch, watch.paths.contains(where: { path == $0 || path.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }) else { continue }
            let c = changes[b.name]
            changes[b.name] = (c?.first ?? now, now)
        }
        wake.signal()  // the loop sets its deadline for the burst
    }

    nonisolated func jobFields(_ job: JobRecord) -> [String: EventLog.Value] {
        var f: [String: EventLog.Value] = ["job": .int(Int(job.id)), "kind": .string(job.kind.rawValue), "trigger": .string(job.trigger)]
        if let b = job.backup { f["backup"] = .string(b) }
        if !job.repositories.isEmpty { f["repository"] = .string(job.repositories.joined(separator: ",")) }
        return f
    }

    // MARK: DaemonControl

    public func status() async throws -> StatusReport {
        let jobs = try await store.jobs(limit: 200).map(\.record)
        return StatusReport(host: config.host ?? Host.name, version: HavenVersion.string, startedAt: startedAt,
                            jobs: JobGroups(jobs), backups: try await backups())
    }

    public func backups() async throws -> [BackupStatus] {
        let stored = try await store.lastFired()
        var out: [BackupStatus] = []
        for b in config.backups {
            var s = BackupStatus(name: b.name, paths: b.paths, repositories: b.repositories, schedules: b.schedules.map(\.description),
                                 watch: b.watch != nil, priority: b.priority.description, minInterval: b.minInterval)
            let o = try await store.outcome(backup: b.name)
            s.lastSuccess = o.lastSuccess
            s.lastFailure = o.lastFailure
            s.lastError = o.lastError
            for r in b.repositories {
                let ro = try await store.outcome(backup: b.name, repository: r)
                s.perRepository.append(BackupRepositoryStatus(repository: r, lastSuccess: ro.lastSuccess, lastSuccessSnapshot: ro.lastSuccessSnapshot,
                                                              lastFailure: ro.lastFailure, lastError: ro.lastError))
            }
            var next: Date?
            for (i, schedule) in b.schedules.enumerated() {
                let key = ScheduleKey(backup: b.name, task: .backup, index: i)
                if let d = schedule.next(after: stored[key.description] ?? startedAt, timeZone: timeZone) {
                    next = min(next ?? d, d)
                }
            }
            s.nextRun = next
            out.append(s)
        }
        return out
    }

    public func runBackup(_ name: String, priority: String?, force: Bool) async throws -> EnqueueResult {
        guard let backup = config.backup(named: name) else {
            throw DaemonError.notFound("no backup named \"\(name)\"; the configured backups are: \(config.backups.map(\.name).joined(separator: ", "))")
        }
        var p = backup.priority
        if let priority {
            do { p = try Priority.parse(priority) } catch { throw DaemonError.badRequest("invalid priority \"\(priority)\": \(error)") }
        }
        let result = try await enqueue(kind: .backup, backup: backup, priority: p, trigger: .api, force: force)
        try await dispatch(now: Date())
        return result
    }

    public func jobs(state: JobState?, limit: Int) async throws -> [JobRecord] {
        try await store.jobs(states: state.map { [$0] }, limit: limit).map(\.record)
    }

    public func job(_ id: Int64) async throws -> JobRecord {
        guard let job = try await store.job(id) else { throw DaemonError.notFound("no job \(id)") }
        return job.record
    }

    public func jobLog(_ id: Int64, after: Int64) async throws -> [JobLogLine] {
        _ = try await job(id)
        return try await store.logLines(id, after: after)
    }

    public func cancel(_ id: Int64) async throws -> JobRecord {
        let job = try await job(id)
        switch job.state {
        case .pending:
            try await store.finish(id, state: .cancelled, results: [], error: "cancelled before it started")
        case .running:
            guard let entry = running[id] else {
                throw DaemonError.conflict("job \(id) is run by another process (haven run --local); stop that process instead")
            }
            entry.runner.requestStop(.cancelled)
            await entry.task.value
        default:
            throw DaemonError.conflict("job \(id) already ended (\(job.state.rawValue))")
        }
        return try await self.job(id)
    }

    public func clear(states: [JobState]) async throws -> Int {
        for s in states where !s.isDone {
            throw DaemonError.badRequest("only ended jobs can be cleared; \(s.rawValue) is not an ended state")
        }
        return try await store.clear(states: states)
    }

    public func repositories() async throws -> [RepositoryStatus] {
        var out: [RepositoryStatus] = []
        for r in config.repositories {
            let check = try await store.outcome(kind: .check, backup: nil, repository: r.name)
            let last = [check.lastSuccess, check.lastFailure].compactMap { $0 }.max()
            out.append(RepositoryStatus(name: r.name, url: Self.redacted(r.url), backups: config.backups.filter { $0.repositories.contains(r.name) }.map(\.name),
                                        lastCheck: last, lastCheckOK: last.map { $0 == check.lastSuccess }))
        }
        return out
    }

    public func snapshots(repository name: String) async throws -> [SnapshotSummary] {
        guard let r = config.repository(named: name) else { throw DaemonError.notFound("no repository named \"\(name)\"") }
        let storage = try Backends.open(r.url, options: r.options)
        defer { Task { await Backends.close(storage) } }
        let repo = try await Repository.open(storage: storage, password: try r.password.resolve(repository: r.name))
        let snapshots = try await repo.loadSnapshots().sorted { $0.time < $1.time }
        let runs = try await store.runs(repository: name)
        return snapshots.map { s in
            let id = s.id?.hex ?? ""
            let run = runs[id]
            return SnapshotSummary(id: id, shortID: String(id.prefix(8)), time: Date(timeIntervalSince1970: s.time.timeInterval), host: s.hostname, paths: s.paths, tags: s.tags,
                                   filesNew: s.summary?.filesNew ?? run?.filesNew, filesChanged: s.summary?.filesChanged ?? run?.filesChanged,
                                   dataAdded: s.summary.map { UInt64($0.dataAdded) } ?? run?.dataAdded,
                                   totalFiles: s.summary?.totalFilesProcessed ?? run?.totalFiles,
                                   totalBytes: s.summary.map { UInt64($0.totalBytesProcessed) } ?? run?.totalBytes)
        }
    }

    public func runCheck(repository name: String, priority: String?, readDataSubset: String?) async throws -> EnqueueResult {
        guard config.repository(named: name) != nil else { throw DaemonError.notFound("no repository named \"\(name)\"") }
        var p = Priority.normal
        if let priority {
            do { p = try Priority.parse(priority) } catch { throw DaemonError.badRequest("invalid priority \"\(priority)\": \(error)") }
        }
        var params: [String: String] = [:]
        if let subset = readDataSubset {
            if subset != "all" {
                do { _ = try ReadDataSelection.parse(subset) } catch { throw DaemonError.badRequest("invalid read_data_subset \"\(subset)\": \(error)") }
            }
            params["read_data_subset"] = subset
        }
        let result = try await enqueue(kind: .check, backup: nil, repository: name, priority: p, trigger: .api, force: false, parameters: params)
        try await dispatch(now: Date())
        return result
    }

    public func metrics() async throws -> String {
        var m = MetricsText()
        m.gauge("haven_up", "1 while the daemon runs.", 1)
        m.gauge("haven_start_time_seconds", "When the daemon started (Unix time).", startedAt.timeIntervalSince1970)
        let counts = try await store.jobCounts()
        m.help("haven_jobs", "Jobs in the state database by state.", type: "gauge")
        for s in JobState.allCases { m.sample("haven_jobs", ["state": s.rawValue], Double(counts[s] ?? 0)) }
        m.help("haven_jobs_started_total", "Jobs this daemon started, by kind.", type: "counter")
        for k in JobKind.allCases { m.sample("haven_jobs_started_total", ["kind": k.rawValue], Double(counters.started[k] ?? 0)) }
        m.help("haven_jobs_ended_total", "Jobs this daemon ran to an end, by kind and state.", type: "counter")
        for (key, n) in counters.ended.sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: "|").map(String.init)
            m.sample("haven_jobs_ended_total", ["kind": parts[0], "state": parts[1]], Double(n))
        }
        m.help("haven_scheduler_passes_total", "Passes of the scheduling loop (it sleeps until the next deadline or event).", type: "counter")
        m.sample("haven_scheduler_passes_total", [:], Double(ticks))
        m.help("haven_backups_skipped_total", "Scheduled or watched backups the minimum-interval guard skipped.", type: "counter")
        for b in config.backups { m.sample("haven_backups_skipped_total", ["backup": b.name], Double(counters.skipped[b.name] ?? 0)) }
        m.help("haven_backup_last_success_timestamp_seconds", "Last successful backup per backup and repository (Unix time).", type: "gauge")
        var failures: [(String, String, Date)] = []
        for b in config.backups {
            for r in b.repositories {
                let o = try await store.outcome(backup: b.name, repository: r)
                if let t = o.lastSuccess { m.sample("haven_backup_last_success_timestamp_seconds", ["backup": b.name, "repository": r], t.timeIntervalSince1970) }
                if let t = o.lastFailure { failures.append((b.name, r, t)) }
            }
        }
        m.help("haven_backup_last_failure_timestamp_seconds", "Last failed backup per backup and repository (Unix time).", type: "gauge")
        for (b, r, t) in failures { m.sample("haven_backup_last_failure_timestamp_seconds", ["backup": b, "repository": r], t.timeIntervalSince1970) }
        m.help("haven_job_progress_ratio", "Progress of running jobs (0–1), when known.", type: "gauge")
        for job in try await store.jobs(states: [.running]) {
            if let p = job.record.progress?.percentDone {
                m.sample("haven_job_progress_ratio", ["job": String(job.record.id), "backup": job.record.backup ?? ""], p)
            }
        }
        return m.text
    }

    /// The URL without a password (`sftp://user:pw@host` or `s3:https://key:secret@host`).
    static func redacted(_ url: String) -> String {
        guard let at = url.firstIndex(of: "@"), let scheme = url.range(of: "://"), scheme.upperBound < at else { return url }
        let userinfo = url[scheme.upperBound..<at]
        guard let colon = userinfo.firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + ":***" + String(url[at...])
    }
}

extension PasswordSource {
    /// The password, read as the job's `haven` process reads it (`PasswordText`): a file or a command's
    /// output without white space at either end, a variable's or literal's value as it is. A command
    /// that runs longer than `commandTimeout` seconds is stopped.
    public func resolve(repository: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                        commandTimeout: Double = 120) throws -> String {
        do {
            switch self {
            case .file(let path): return try PasswordText.fromFile(path)
            case .command(let cmd): return try PasswordText.fromCommand(cmd, timeout: commandTimeout)
            case .environment(let name):
                guard let v = environment[name] else {
                    throw HavenError(.usage, "the password of repository \(repository) comes from $\(name), which is not set")
                }
                guard !v.isEmpty else { throw HavenError(.usage, "the password of repository \(repository) is empty ($\(name))") }
                return v
            case .literal(let pw):
                guard !pw.isEmpty else { throw HavenError(.usage, "the password of repository \(repository) is empty") }
                return pw
            }
        } catch let e as HavenError where e.code == .usage && !e.message.contains("repository \(repository)") {
            throw HavenError(.usage, "repository \(repository): \(e.message)")
        }
    }
}

/// Prometheus text exposition format 0.0.4.
struct MetricsText {
    var text = ""

    mutating func help(_ name: String, _ help: String, type: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func gauge(_ name: String, _ help: String, _ value: Double) {
        self.help(name, help, type: "gauge")
        sample(name, [:], value)
    }

    mutating func sample(_ name: String, _ labels: [String: String], _ value: Double) {
        var line = name
        if !labels.isEmpty {
            line += "{" + labels.sorted(by: { $0.key < $1.key }).map { k, v in
                let escaped = v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                    .replacingOccurrences(of: "\n", with: "\\n")
                return "\(k)=\"\(escaped)\""
            }.joined(separator: ",") + "}"
        }
        let v = value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        text += "\(line) \(v)\n"
    }
}

/// Wakes a sleeping loop early. A signal sent while nobody waits is kept for the next `wait`, so none is
/// lost between two waits.
final class WakeSignal: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    func signal() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard let w = s.waiter else {
                s.pending = true
                return nil
            }
            s.waiter = nil
            return w
        }
        waiter?.resume()
    }

    /// Returns when signalled, or after `timeout`.
    func wait(timeout: Duration) async {
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled { self?.signal() }
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.pending {
                    s.pending = false
                    return true
                }
                s.waiter = c
                return false
            }
            if now { c.resume() }
        }
        timer.cancel()
    }
}
