import AsyncHTTPClient
import Foundation
import HavenCore

/// How a job ended.
public struct JobOutcome: Sendable {
    public var state: JobState
    public var results: [RepositoryResult]
    public var error: String?
    /// Why the job was stopped, when it was.
    public var stopReason: StopReason? = nil
}

/// Why a running job is being stopped.
public enum StopReason: Sendable, Equatable {
    /// Asked through the API or CLI: the job ends `cancelled`.
    case cancelled
    /// Shutdown or `max_duration`: the job ends `interrupted` and continues at the next start or run.
    case interrupted(String)
    /// The end of the backup's time window: the job ends `interrupted` and a resume job waits for the window.
    case windowClosed(String)

    var message: String {
        switch self {
        case .cancelled: return "cancelled on request"
        case .interrupted(let why), .windowClosed(let why): return why
        }
    }
}

/// Runs one job: hooks, then the `haven` command line in a child process per repository (so each backup
/// gets its own niceness, memory and crash isolation, and a SIGKILL of the daemon cannot corrupt anything
/// the engine's own crash safety does not cover), then retention and the after/failure hooks.
///
/// Progress comes from the child's `--json` status lines and is stored about once a second.
public final class JobRunner: Sendable {
    public let config: DaemonConfig
    public let store: StateStore
    public let events: EventLog
    /// The `haven` executable the children run.
    public let executable: String
    let http: HTTPClient?
    let stop = Locked<StopReason?>(nil)
    let child = Locked<ChildProcess?>(nil)

    public init(config: DaemonConfig, store: StateStore, events: EventLog, executable: String, http: HTTPClient?) {
        self.config = config
        self.store = store
        self.events = events
        self.executable = executable
        self.http = http
    }

    /// Stops the job: the child gets SIGTERM (and SIGKILL 10 s later).
    public func requestStop(_ reason: StopReason) {
        let first = stop.withLock { s -> Bool in
            if s == nil { s = reason; return true }
            return false
        }
        if first { child.withLock { $0 }?.terminate(grace: 10) }
    }

    var stopReason: StopReason? { stop.withLock { $0 } }

    // MARK: Running

    public func run(_ job: JobRecord, force: Bool, parameters: [String: String]) async -> JobOutcome {
        let log = JobLogger(store: store, events: events, job: job)
        do {
            switch job.kind {
            case .backup: return try await runBackup(job, force: force, log: log)
            case .forget: return try await runMaintenance(job, log: log) { _, backup in try self.forgetArguments(backup: backup, prune: backup?.retention?.prune ?? false) }
            case .prune: return try await runMaintenance(job, log: log) { _, backup in ["prune"] + (backup?.prune.map { ["--max-unused", Self.text($0.maxUnused)] } ?? []) }
            case .check: return try await runMaintenance(job, log: log) { _, backup in
                var args = ["check"]
                if let subset = parameters["read_data_subset"] {
                    args += subset == "all" ? ["--read-data"] : ["--read-data-subset", subset]
                } else if let sel = backup?.check?.readData {
                    args += Self.arguments(sel)
                }
                return args
            }
            }
        } catch {
            await log.error("\(error)")
            return JobOutcome(state: .failed, results: [], error: "\(error)")
        }
    }

    func backupDefinition(_ job: JobRecord) throws -> BackupConfig? {
        guard let name = job.backup else { return nil }
        guard let b = config.backup(named: name) else {
            throw HavenError(.usage, "backup \"\(name)\" is no longer in the configuration")
        }
        return b
    }

    func runBackup(_ job: JobRecord, force: Bool, log: JobLogger) async throws -> JobOutcome {
        guard let backup = try backupDefinition(job) else { throw HavenError(.usage, "backup job without a backup name") }
        let hooks = HookRunner(environment: hookEnvironment(job, backup: backup), http: http) { level, message in
            await log.line(level, message, step: "hook")
        }
        var failures: [String] = []
        // Before-hooks: an `abort` failure means the backup does not run.
        let before = await hooks.run(backup.hooks.before, stage: "before")
        if before.contains(where: { if case .failed(_, .abort) = $0 { return true }; return false }) {
            _ = await hooks.run(backup.hooks.failure, stage: "failure")
            return JobOutcome(state: .failed, results: [], error: "a before-hook failed; the backup did not run")
        }
        failures += before.map(Self.describe)

        var results: [RepositoryResult] = []
        for name in job.repositories {
            if let reason = stopReason { return stopped(reason, results: results) }
            guard let repo = config.repository(named: name) else {
                results.append(RepositoryResult(repository: name, ok: false, error: "repository \"\(name)\" is not in the configuration"))
                continue
            }
            // A job that died may have left its lock behind (killed before it could remove it): remove
            // locks whose process is gone, as `haven unlock` does, before continuing.
            if job.trigger == Trigger.resume.rawValue {
                _ = try? await runHaven(["unlock"], repository: repo, backup: backup, job: job, log: log, step: "unlock")
            }
            var args = ["backup"] + backup.paths.map { absolute($0) }
            args += ["--host", host]
            for t in backup.tags { args += ["--tag", t] }
            for e in backup.exclude { args += ["--exclude", e] }
            for f in backup.excludeIfPresent { args += ["--exclude-if-present", f] }
            if backup.excludeCaches { args.append("--exclude-caches") }
            if backup.oneFileSystem { args.append("--one-file-system") }
            if let size = backup.excludeLargerThan { args += ["--exclude-larger-than", String(size)] }
            var result = try await runHaven(args, repository: repo, backup: backup, job: job, log: log, step: "backup")
            if result.ok, let retention = backup.retention, retention.afterEachBackup {
                let forget = try await runHaven(try forgetArguments(backup: backup, prune: retention.prune), repository: repo,
                                                backup: backup, job: job, log: log, step: "forget")
                if !forget.ok {
                    result.ok = false
                    result.error = "backup saved, but applying the retention policy failed: \(forget.error ?? "unknown error")"
                }
                result.message = forget.message
            }
            results.append(result)
        }
        if let reason = stopReason { return stopped(reason, results: results) }
        failures += results.filter { !$0.ok }.map { "\($0.repository): \($0.error ?? "failed")" }
        if failures.isEmpty && results.allSatisfy(\.ok) {
            let after = await hooks.run(backup.hooks.after, stage: "after")
            failures += after.map(Self.describe)
        } else {
            _ = await hooks.run(backup.hooks.failure, stage: "failure")
        }
        return JobOutcome(state: failures.isEmpty ? .finished : .failed, results: results,
                          error: failures.isEmpty ? nil : failures.joined(separator: "; "))
    }

    /// forget, prune and check: one command per repository.
    func runMaintenance(_ job: JobRecord, log: JobLogger, arguments: (RepositoryConfig, BackupConfig?) throws -> [String]) async throws -> JobOutcome {
        let backup = try backupDefinition(job)
        var results: [RepositoryResult] = []
        for name in job.repositories {
            if let reason = stopReason { return stopped(reason, results: results) }
            guard let repo = config.repository(named: name) else {
                results.append(RepositoryResult(repository: name, ok: false, error: "repository \"\(name)\" is not in the configuration"))
                continue
            }
            results.append(try await runHaven(try arguments(repo, backup), repository: repo, backup: backup, job: job, log: log,
                                              step: job.kind.rawValue))
        }
        if let reason = stopReason { return stopped(reason, results: results) }
        let failed = results.filter { !$0.ok }
        return JobOutcome(state: failed.isEmpty ? .finished : .failed, results: results,
                          error: failed.isEmpty ? nil : failed.map { "\($0.repository): \($0.error ?? "failed")" }.joined(separator: "; "))
    }

    func stopped(_ reason: StopReason, results: [RepositoryResult]) -> JobOutcome {
        JobOutcome(state: reason == .cancelled ? .cancelled : .interrupted, results: results, error: reason.message, stopReason: reason)
    }

    static func describe(_ outcome: HookRunner.Outcome) -> String {
        if case .failed(let message, _) = outcome { return "hook failed: \(message)" }
        return "ok"
    }

    var host: String { config.host ?? Host.name }

    func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    func forgetArguments(backup: BackupConfig?, prune: Bool) throws -> [String] {
        guard let backup, let retention = backup.retention else {
            throw HavenError(.usage, "no retention policy configured for this backup")
        }
        var args = ["forget", "--host", host]
        for p in backup.paths { args += ["--path", absolute(p)] }
        if !backup.tags.isEmpty { args += ["--tag", backup.tags.joined(separator: ",")] }
        let p = retention.policy
        func count(_ flag: String, _ v: Int?) { if let v { args += [flag, String(v)] } }
        func within(_ flag: String, _ v: RetentionDuration?) { if let v { args += [flag, v.description] } }
        count("--keep-last", p.keepLast); count("--keep-hourly", p.keepHourly); count("--keep-daily", p.keepDaily)
        count("--keep-weekly", p.keepWeekly); count("--keep-monthly", p.keepMonthly); count("--keep-yearly", p.keepYearly)
        within("--keep-within", p.keepWithin); within("--keep-within-hourly", p.keepWithinHourly)
        within("--keep-within-daily", p.keepWithinDaily); within("--keep-within-weekly", p.keepWithinWeekly)
        within("--keep-within-monthly", p.keepWithinMonthly); within("--keep-within-yearly", p.keepWithinYearly)
        for group in p.keepTags { args += ["--keep-tag", group.joined(separator: ",")] }
        if prune {
            args.append("--prune")
            if let m = backup.prune?.maxUnused { args += ["--max-unused", Self.text(m)] }
        }
        return args
    }

    static func text(_ m: MaxUnused) -> String {
        switch m {
        case .percent(let p): return "\(p)%"
        case .bytes(let b): return String(b)
        case .unlimited: return "unlimited"
        }
    }

    static func arguments(_ selection: ReadDataSelection) -> [String] {
        switch selection {
        case .none: return []
        case .all: return ["--read-data"]
        case .subset(let n, let t): return ["--read-data-subset", "\(n)/\(t)"]
        case .percent(let p): return ["--read-data-subset", "\(p)%"]
        case .bytes(let b): return ["--read-data-subset", String(b)]
        }
    }

    func hookEnvironment(_ job: JobRecord, backup: BackupConfig) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["HAVEN_JOB_ID"] = String(job.id)
        env["HAVEN_BACKUP"] = backup.name
        env["HAVEN_REPOSITORIES"] = job.repositories.joined(separator: ",")
        env["HAVEN_TRIGGER"] = job.trigger
        return env
    }

    // MARK: The child process

    /// Runs `haven ARGS --json -r URL …` for one repository and turns its output into a result.
    func runHaven(_ arguments: [String], repository repo: RepositoryConfig, backup: BackupConfig?, job: JobRecord,
                  log: JobLogger, step: String) async throws -> RepositoryResult {
        var env = ProcessInfo.processInfo.environment
        for key in ["HAVEN_PASSWORD", "HAVEN_PASSWORD_FILE", "RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "HAVEN_REPOSITORY", "RESTIC_REPOSITORY"] {
            env[key] = nil
        }
        env["HAVEN_PARENT_PID"] = String(getpid())
        var args = [executable] + arguments + ["--json", "-r", repo.url]
        switch repo.password {
        case .file(let path): args += ["--password-file", path]
        case .command(let cmd): args += ["--password-command", cmd]
        case .environment(let name):
            guard let value = ProcessInfo.processInfo.environment[name] else {
                throw HavenError(.usage, "the password of repository \(repo.name) comes from $\(name), which is not set in the daemon's environment")
            }
            env["HAVEN_PASSWORD"] = value
        case .literal(let pw): env["HAVEN_PASSWORD"] = pw
        }
        for (k, v) in repo.options.sorted(by: { $0.key < $1.key }) { args += ["-o", "\(k)=\(v)"] }
        if let c = repo.connections, let scheme = Self.scheme(repo.url) { args += ["-o", "\(scheme).connections=\(c)"] }
        if let up = backup?.limitUpload ?? repo.limitUpload { args += ["--limit-upload", String(up)] }
        if let down = backup?.limitDownload ?? repo.limitDownload { args += ["--limit-download", String(down)] }
        args = niceWrapper(backup) + args

        await log.line("info", "\(step) into \(repo.name) started", step: step, repository: repo.name)
        let started = Date()
        let parser = OutputParser(jobStarted: started, step: step)
        let logTail = Locked<[String]>([])
        let proc = try ChildProcess(args, environment: env) { isErr, line in
            if isErr {
                guard !line.isEmpty else { return }
                logTail.withLock { t in t.append(line); if t.count > 5 { t.removeFirst() } }
                Task { await log.line(line.hasPrefix("Warning") || line.hasPrefix("warning") ? "warning" : "error", line, step: step, repository: repo.name) }
            } else {
                parser.consume(line)
            }
        }
        child.withLock { $0 = proc }
        if stopReason != nil { proc.terminate(grace: 10) }
        // Progress goes to the state database about once a second while the child runs.
        let progressTask = Task {
            var last: JobProgress?
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                if let p = parser.progress, p != last {
                    last = p
                    try? await store.setProgress(job.id, p)
                }
            }
        }
        let exit = await proc.wait()
        progressTask.cancel()
        child.withLock { $0 = nil }
        if let p = parser.progress { try? await store.setProgress(job.id, p) }

        var result = parser.result(repository: repo.name)
        result.durationSeconds = Date().timeIntervalSince(started)
        // Exit 3: the snapshot was saved, but some files could not be read (the warnings are in the log).
        result.ok = exit.code == 0 || (exit.code == 3 && step == "backup")
        if !result.ok {
            if let reason = stopReason {
                result.error = reason.message
            } else {
                let tail = logTail.withLock { $0 }.last ?? "no error message"
                result.error = "haven \(arguments.first ?? "") exited with code \(exit.code): \(tail)"
            }
        }
        let summary = result.ok ? "\(step) into \(repo.name) finished" + (result.snapshotID.map { ": snapshot \($0.prefix(8))" } ?? "")
            : "\(step) into \(repo.name) failed: \(result.error ?? "")"
        await log.line(result.ok ? "info" : "error", summary, step: step, repository: repo.name)
        if let message = result.message { await log.line("info", message, step: step, repository: repo.name) }
        return result
    }

    static func scheme(_ url: String) -> String? {
        if url.hasPrefix("s3:") { return "s3" }
        if url.hasPrefix("sftp:") { return "sftp" }
        return "local"
    }

    /// `nice -n N` and `ionice -c C -n L` in front of the command when configured and available.
    func niceWrapper(_ backup: BackupConfig?) -> [String] {
        var prefix: [String] = []
        if let n = backup?.nice, let nice = Self.which("nice") { prefix += [nice, "-n", String(n)] }
        if let io = backup?.ionice, let ionice = Self.which("ionice") {
            let cls: String
            switch io.ioClass {
            case .realtime: cls = "1"
            case .bestEffort: cls = "2"
            case .idle: cls = "3"
            }
            prefix += [ionice, "-c", cls]
            if let l = io.level, io.ioClass != .idle { prefix += ["-n", String(l)] }
        }
        return prefix
    }

    static func which(_ tool: String) -> String? {
        for dir in ["/usr/bin", "/bin", "/usr/local/bin"] where FileManager.default.isExecutableFile(atPath: dir + "/" + tool) {
            return dir + "/" + tool
        }
        return nil
    }
}

/// Reads the JSON lines of `haven … --json`: status lines become progress, the summary becomes the result.
final class OutputParser: Sendable {
    let started: Date
    let step: String
    private let state = Locked<(progress: JobProgress?, summary: [String: any Sendable]?, other: [String])>((nil, nil, []))

    init(jobStarted: Date, step: String) {
        started = jobStarted
        self.step = step
    }

    var progress: JobProgress? { state.withLock { $0.progress } }

    func consume(_ line: String) {
        guard let data = line.data(using: .utf8), let any = try? JSONSerialization.jsonObject(with: data) else {
            if !line.isEmpty { state.withLock { $0.other.append(line) } }
            return
        }
        guard let object = any as? [String: Any] else { return }
        let type = object["message_type"] as? String
        if type == "status" {
            var p = JobProgress(step: step)
            p.filesDone = object["files_done"] as? Int ?? 0
            p.bytesDone = UInt64(object["bytes_done"] as? Int ?? 0)
            p.totalFiles = object["total_files"] as? Int ?? 0
            p.totalBytes = UInt64(object["total_bytes"] as? Int ?? 0)
            p.percentDone = object["percent_done"] as? Double
            p.secondsRemaining = (object["seconds_remaining"] as? Int).map(Double.init)
            p.secondsElapsed = Date().timeIntervalSince(started)
            p.currentFiles = object["current_files"] as? [String] ?? []
            state.withLock { $0.progress = p }
        } else if type == "summary" || type == "prune_summary" || type == "prune_plan" {
            var flat: [String: any Sendable] = [:]
            for (k, v) in object {
                if let i = v as? Int { flat[k] = i } else if let d = v as? Double { flat[k] = d } else if let s = v as? String { flat[k] = s }
                else if let a = v as? [Any] { flat[k] = a.count }
            }
            state.withLock { s in
                var merged = s.summary ?? [:]
                for (k, v) in flat { merged[k] = v }
                s.summary = merged
            }
        }
    }

    func result(repository: String) -> RepositoryResult {
        let (summary, other) = state.withLock { ($0.summary ?? [:], $0.other) }
        func int(_ k: String) -> Int { summary[k] as? Int ?? 0 }
        var r = RepositoryResult(repository: repository, ok: false)
        r.snapshotID = summary["snapshot_id"] as? String
        r.filesNew = int("files_new")
        r.filesChanged = int("files_changed")
        r.filesUnmodified = int("files_unmodified")
        r.dataAdded = UInt64(max(0, int("data_added")))
        r.dataAddedPacked = UInt64(max(0, int("data_added_packed")))
        r.totalFiles = int("total_files_processed")
        r.totalBytes = UInt64(max(0, int("total_bytes_processed")))
        r.warnings = int("errors") + int("warnings")
        switch step {
        case "prune":
            r.message = "removed \(int("packs_removed")) packs, repacked \(int("blobs_repacked")) blobs"
        case "check":
            r.message = "read \(int("packs_read")) of \(int("packs")) packs; \(int("errors")) errors"
        case "forget":
            r.message = other.last
        default: break
        }
        return r
    }
}

/// Writes a job's log lines to the state database and to the daemon's event log.
public struct JobLogger: Sendable {
    let store: StateStore
    let events: EventLog
    let job: JobRecord

    func line(_ level: String, _ message: String, step: String? = nil, repository: String? = nil) async {
        try? await store.log(job.id, level: level, message)
        events.log(level, message, fields: ["job": .int(Int(job.id)), "backup": job.backup.map { .string($0) } ?? .null,
                                             "trigger": .string(job.trigger), "kind": .string(job.kind.rawValue),
                                             "step": step.map { .string($0) } ?? .null,
                                             "repository": repository.map { .string($0) } ?? .null])
    }

    func error(_ message: String) async { await line("error", message) }
}
