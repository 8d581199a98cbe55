import Foundation
import GRDB
import HavenCore

/// The daemon's state in SQLite (`state.db` in the state directory): jobs, their logs, per-repository
/// outcomes and schedule bookkeeping.
///
/// The database is in WAL mode with a busy timeout, so a daemon and `haven run --local` started from cron
/// can share it. Each process claims the jobs it runs with its pid; a running job whose owner is gone was
/// interrupted.
public final class StateStore: Sendable {
    public let path: String
    let pool: DatabasePool
    /// This process, as recorded on the jobs it runs.
    public let ownerPID: Int32

    public init(directory: String, ownerPID: Int32 = getpid()) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw HavenError(.io, "cannot create the state directory \(directory): \(error.localizedDescription); set state_dir to a writable directory")
        }
        path = directory + "/state.db"
        self.ownerPID = ownerPID
        var config = Configuration()
        config.busyMode = .timeout(15)
        config.foreignKeysEnabled = true
        do {
            pool = try DatabasePool(path: path, configuration: config)
            try Self.migrator.migrate(pool)
        } catch let error as DatabaseError {
            throw HavenError(.io, "cannot open the state database \(path): \(error.message ?? error.description)")
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE jobs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    kind TEXT NOT NULL,
                    backup TEXT,
                    repositories TEXT NOT NULL,
                    trigger TEXT NOT NULL,
                    priority INTEGER NOT NULL,
                    priority_name TEXT NOT NULL,
                    state TEXT NOT NULL,
                    force INTEGER NOT NULL DEFAULT 0,
                    parameters TEXT,
                    created_at REAL NOT NULL,
                    started_at REAL,
                    finished_at REAL,
                    progress TEXT,
                    results TEXT,
                    error TEXT,
                    resumes INTEGER,
                    owner_pid INTEGER
                );
                CREATE INDEX jobs_by_state ON jobs(state, priority);
                CREATE TABLE job_log (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                    time REAL NOT NULL,
                    level TEXT NOT NULL,
                    message TEXT NOT NULL
                );
                CREATE INDEX job_log_by_job ON job_log(job_id, seq);
                CREATE TABLE runs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    job_id INTEGER NOT NULL,
                    kind TEXT NOT NULL,
                    backup TEXT,
                    repository TEXT NOT NULL,
                    finished_at REAL NOT NULL,
                    ok INTEGER NOT NULL,
                    snapshot_id TEXT,
                    files_new INTEGER NOT NULL DEFAULT 0,
                    files_changed INTEGER NOT NULL DEFAULT 0,
                    files_unmodified INTEGER NOT NULL DEFAULT 0,
                    data_added INTEGER NOT NULL DEFAULT 0,
                    data_added_packed INTEGER NOT NULL DEFAULT 0,
                    total_files INTEGER NOT NULL DEFAULT 0,
                    total_bytes INTEGER NOT NULL DEFAULT 0,
                    duration REAL NOT NULL DEFAULT 0,
                    error TEXT
                );
                CREATE INDEX runs_by_backup ON runs(backup, repository, finished_at);
                CREATE TABLE schedule_state (
                    key TEXT PRIMARY KEY,
                    last_fired REAL NOT NULL
                );
                """)
        }
        return m
    }

    // MARK: Jobs

    public struct NewJob: Sendable {
        public var kind: JobKind
        public var backup: String?
        public var repositories: [String]
        public var trigger: String
        public var priority: Int
        public var priorityName: String
        public var force: Bool
        /// Kind-specific parameters (e.g. `read_data_subset` for check).
        public var parameters: [String: String]
        public var resumes: Int64?
        public init(kind: JobKind, backup: String?, repositories: [String], trigger: String, priority: Int, priorityName: String,
                    force: Bool = false, parameters: [String: String] = [:], resumes: Int64? = nil) {
            self.kind = kind
            self.backup = backup
            self.repositories = repositories
            self.trigger = trigger
            self.priority = priority
            self.priorityName = priorityName
            self.force = force
            self.parameters = parameters
            self.resumes = resumes
        }
    }

    /// A stored job with what the scheduler needs beyond the API record.
    public struct StoredJob: Sendable {
        public var record: JobRecord
        public var priorityValue: Int
        public var force: Bool
        public var parameters: [String: String]
        public var ownerPID: Int32?
    }

    /// Inserts a job; `state` is pending, or running when this process starts it at once (`run --local`).
    @discardableResult
    public func insert(_ job: NewJob, state: JobState = .pending, now: Date = Date()) async throws -> JobRecord {
        let id = try await pool.write { db -> Int64 in
            try db.execute(sql: """
                INSERT INTO jobs (kind, backup, repositories, trigger, priority, priority_name, state, force, parameters,
                                  created_at, started_at, resumes, owner_pid)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [job.kind.rawValue, job.backup, Self.encode(job.repositories), job.trigger, job.priority,
                                 job.priorityName, state.rawValue, job.force, Self.encode(job.parameters),
                                 now.timeIntervalSince1970, state == .running ? now.timeIntervalSince1970 : nil, job.resumes,
                                 state == .running ? Int64(ownerPID) : nil])
            return db.lastInsertedRowID
        }
        return try await self.job(id)!.record
    }

    public func job(_ id: Int64) async throws -> StoredJob? {
        try await pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [id]).map(Self.storedJob) }
    }

    /// Jobs newest first, optionally in one state.
    public func jobs(states: [JobState]? = nil, limit: Int = 1000) async throws -> [StoredJob] {
        try await pool.read { db in
            if let states {
                let marks = states.map { _ in "?" }.joined(separator: ",")
                return try Row.fetchAll(db, sql: "SELECT * FROM jobs WHERE state IN (\(marks)) ORDER BY id DESC LIMIT ?",
                                        arguments: StatementArguments(states.map(\.rawValue) + [String(limit)]))
                    .map(Self.storedJob)
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM jobs ORDER BY id DESC LIMIT ?", arguments: [limit]).map(Self.storedJob)
        }
    }

    /// Moves a pending job to running, claimed by this process. False when it was no longer pending.
    public func claim(_ id: Int64, now: Date = Date()) async throws -> Bool {
        try await pool.write { db in
            try db.execute(sql: "UPDATE jobs SET state = 'running', started_at = ?, owner_pid = ? WHERE id = ? AND state = 'pending'",
                           arguments: [now.timeIntervalSince1970, Int64(self.ownerPID), id])
            return db.changesCount == 1
        }
    }

    public func updatePriority(_ id: Int64, priority: Int, name: String) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE jobs SET priority = ?, priority_name = ? WHERE id = ? AND state = 'pending'",
                           arguments: [priority, name, id])
        }
    }

    public func setProgress(_ id: Int64, _ progress: JobProgress) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE jobs SET progress = ? WHERE id = ?", arguments: [Self.encode(progress), id])
        }
    }

    /// Ends a job. Results are also recorded per repository in `runs` (kept when jobs are cleared).
    public func finish(_ id: Int64, state: JobState, results: [RepositoryResult], error: String?, now: Date = Date()) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE jobs SET state = ?, finished_at = ?, results = ?, error = ? WHERE id = ?",
                           arguments: [state.rawValue, now.timeIntervalSince1970, Self.encode(results), error, id])
            guard let row = try Row.fetchOne(db, sql: "SELECT kind, backup FROM jobs WHERE id = ?", arguments: [id]) else { return }
            let kind: String = row["kind"]
            let backup: String? = row["backup"]
            for r in results {
                try db.execute(sql: """
                    INSERT INTO runs (job_id, kind, backup, repository, finished_at, ok, snapshot_id, files_new, files_changed,
                                      files_unmodified, data_added, data_added_packed, total_files, total_bytes, duration, error)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [id, kind, backup, r.repository, now.timeIntervalSince1970, r.ok, r.snapshotID, r.filesNew,
                                     r.filesChanged, r.filesUnmodified, Int64(clamping: r.dataAdded), Int64(clamping: r.dataAddedPacked),
                                     r.totalFiles, Int64(clamping: r.totalBytes), r.durationSeconds, r.error])
            }
        }
    }

    /// Marks running jobs whose owner process is gone (or, with `owner`, every job that owner ran) as
    /// interrupted. Returns them.
    public func markInterrupted(previousOwner: Int32? = nil, now: Date = Date()) async throws -> [JobRecord] {
        let running = try await jobs(states: [.running])
        var out: [JobRecord] = []
        for job in running {
            let pid = job.ownerPID ?? 0
            let gone = pid == previousOwner || pid == 0 || (pid != ownerPID && !Self.processAlive(pid))
            guard gone else { continue }
            try await finish(job.record.id, state: .interrupted, results: job.record.results,
                             error: "interrupted: the process running it (pid \(pid)) stopped before it finished", now: now)
            try await log(job.record.id, level: "warning", "job interrupted; it will be resumed", now: now)
            if var r = try await self.job(job.record.id)?.record { r.state = .interrupted; out.append(r) }
        }
        return out
    }

    /// Whether any job was resumed from `id` already.
    public func resumed(_ id: Int64) async throws -> Bool {
        try await pool.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM jobs WHERE resumes = ?", arguments: [id]) ?? 0 > 0
        }
    }

    /// Deletes ended jobs in `states`, with their logs.
    public func clear(states: [JobState]) async throws -> Int {
        let ended = states.filter(\.isDone)
        guard !ended.isEmpty else { return 0 }
        return try await pool.write { db in
            let marks = ended.map { _ in "?" }.joined(separator: ",")
            try db.execute(sql: "DELETE FROM jobs WHERE state IN (\(marks))", arguments: StatementArguments(ended.map(\.rawValue)))
            return db.changesCount
        }
    }

    // MARK: Logs

    public func log(_ job: Int64, level: String, _ message: String, now: Date = Date()) async throws {
        try await pool.write { db in
            try db.execute(sql: "INSERT INTO job_log (job_id, time, level, message) VALUES (?, ?, ?, ?)",
                           arguments: [job, now.timeIntervalSince1970, level, message])
        }
    }

    public func logLines(_ job: Int64, after: Int64 = 0, limit: Int = 10_000) async throws -> [JobLogLine] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM job_log WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                             arguments: [job, after, limit]).map { row in
                JobLogLine(seq: row["seq"], jobID: row["job_id"], time: Date(timeIntervalSince1970: row["time"]),
                           level: row["level"], message: row["message"])
            }
        }
    }

    // MARK: Outcomes

    public struct Outcome: Sendable, Equatable {
        public var lastSuccess: Date?
        public var lastSuccessSnapshot: String?
        public var lastFailure: Date?
        public var lastError: String?
    }

    /// The last success and failure of `kind` for a backup in a repository (any repository when nil).
    public func outcome(kind: JobKind = .backup, backup: String?, repository: String? = nil) async throws -> Outcome {
        try await pool.read { db in
            var filter = "kind = ?"
            var args: [(any DatabaseValueConvertible)?] = [kind.rawValue]
            if let backup { filter += " AND backup = ?"; args.append(backup) }
            if let repository { filter += " AND repository = ?"; args.append(repository) }
            let ok = try Row.fetchOne(db, sql: "SELECT finished_at, snapshot_id FROM runs WHERE \(filter) AND ok = 1 ORDER BY finished_at DESC LIMIT 1",
                                      arguments: StatementArguments(args))
            let bad = try Row.fetchOne(db, sql: "SELECT finished_at, error FROM runs WHERE \(filter) AND ok = 0 ORDER BY finished_at DESC LIMIT 1",
                                       arguments: StatementArguments(args))
            return Outcome(lastSuccess: ok.map { Date(timeIntervalSince1970: $0["finished_at"]) }, lastSuccessSnapshot: ok?["snapshot_id"],
                           lastFailure: bad.map { Date(timeIntervalSince1970: $0["finished_at"]) }, lastError: bad?["error"])
        }
    }

    /// When a backup last succeeded in every one of its repositories (the oldest of the per-repository
    /// last successes), for the minimum-interval guard.
    public func lastCompleteSuccess(backup: String, repositories: [String]) async throws -> Date? {
        var oldest: Date?
        for r in repositories {
            guard let t = try await outcome(backup: backup, repository: r).lastSuccess else { return nil }
            oldest = min(oldest ?? t, t)
        }
        return oldest
    }

    /// The most recent ended backup job of `backup`, to tell whether it was interrupted.
    public func lastEndedJob(kind: JobKind = .backup, backup: String) async throws -> JobRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE kind = ? AND backup = ? AND state NOT IN ('pending', 'running', 'skipped') ORDER BY id DESC LIMIT 1",
                             arguments: [kind.rawValue, backup]).map { Self.storedJob($0).record }
        }
    }

    /// Per-repository results of backups, newest first (the snapshot summaries).
    public func runs(repository: String, limit: Int = 1000) async throws -> [String: RepositoryResult] {
        try await pool.read { db in
            var out: [String: RepositoryResult] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT * FROM runs WHERE repository = ? AND snapshot_id IS NOT NULL ORDER BY id DESC LIMIT ?",
                                        arguments: [repository, limit]) {
                let id: String = row["snapshot_id"]
                out[id] = RepositoryResult(repository: repository, ok: row["ok"], snapshotID: id, filesNew: row["files_new"],
                                           filesChanged: row["files_changed"], filesUnmodified: row["files_unmodified"],
                                           dataAdded: UInt64(max(0, row["data_added"] as Int64)),
                                           dataAddedPacked: UInt64(max(0, row["data_added_packed"] as Int64)),
                                           totalFiles: row["total_files"], totalBytes: UInt64(max(0, row["total_bytes"] as Int64)),
                                           durationSeconds: row["duration"])
            }
            return out
        }
    }

    /// Counts for metrics: jobs by state, and totals of runs by kind and result.
    public func jobCounts() async throws -> [JobState: Int] {
        try await pool.read { db in
            var out: [JobState: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state") {
                if let s = JobState(rawValue: row["state"]) { out[s] = row["n"] }
            }
            return out
        }
    }

    // MARK: Schedules

    public func lastFired() async throws -> [String: Date] {
        try await pool.read { db in
            var out: [String: Date] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT key, last_fired FROM schedule_state") {
                out[row["key"]] = Date(timeIntervalSince1970: row["last_fired"])
            }
            return out
        }
    }

    public func setLastFired(_ key: String, _ date: Date) async throws {
        try await pool.write { db in
            try db.execute(sql: "INSERT INTO schedule_state (key, last_fired) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET last_fired = excluded.last_fired",
                           arguments: [key, date.timeIntervalSince1970])
        }
    }

    // MARK: Encoding

    static func encode<T: Encodable>(_ value: T) -> String {
        (try? String(decoding: JSONEncoder.haven.encode(value), as: UTF8.self)) ?? "null"
    }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String?) -> T? {
        guard let text else { return nil }
        return try? JSONDecoder.haven.decode(type, from: Data(text.utf8))
    }

    static func storedJob(_ row: Row) -> StoredJob {
        func date(_ column: String) -> Date? { (row[column] as Double?).map(Date.init(timeIntervalSince1970:)) }
        let record = JobRecord(
            id: row["id"], kind: JobKind(rawValue: row["kind"]) ?? .backup, backup: row["backup"],
            repositories: decode([String].self, row["repositories"]) ?? [], trigger: row["trigger"], priority: row["priority_name"],
            state: JobState(rawValue: row["state"]) ?? .failed, createdAt: date("created_at") ?? Date(timeIntervalSince1970: 0),
            startedAt: date("started_at"), finishedAt: date("finished_at"), progress: decode(JobProgress.self, row["progress"]),
            results: decode([RepositoryResult].self, row["results"]) ?? [], error: row["error"], resumes: row["resumes"])
        return StoredJob(record: record, priorityValue: row["priority"], force: row["force"],
                         parameters: decode([String: String].self, row["parameters"]) ?? [:],
                         ownerPID: (row["owner_pid"] as Int64?).map { Int32(truncatingIfNeeded: $0) })
    }

    /// Whether a process with this pid exists and is a Haven process.
    static func processAlive(_ pid: Int32) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return true }
        return String(decoding: cmd, as: UTF8.self).contains("haven")
    }
}
