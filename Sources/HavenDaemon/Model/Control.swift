import Foundation

/// A job's life: pending → running → finished | failed | cancelled | skipped; a job cut short by a crash
/// or shutdown is `interrupted` (and a `resume` job continues it).
public enum JobState: String, Codable, Sendable, CaseIterable {
    case pending, running, finished, failed, interrupted, cancelled, skipped

    /// The group `GET /api/v1/status` shows the job under.
    public var group: StatusGroup {
        switch self {
        case .pending: return .pending
        case .running: return .running
        case .finished, .skipped: return .finished
        case .failed, .interrupted, .cancelled: return .error
        }
    }

    public var isDone: Bool { self != .pending && self != .running }
}

public enum StatusGroup: String, Codable, Sendable, CaseIterable { case error, finished, running, pending }

// `JobKind` (backup, forget, prune, check) is declared with the scheduler.

/// Progress of a running job, updated about once a second.
public struct JobProgress: Codable, Sendable, Equatable {
    public var filesDone: Int
    public var bytesDone: UInt64
    public var totalFiles: Int
    public var totalBytes: UInt64
    /// 0…1 once the size of the source is known.
    public var percentDone: Double?
    public var secondsElapsed: Double
    public var secondsRemaining: Double?
    public var currentFiles: [String]
    public var step: String

    public init(filesDone: Int = 0, bytesDone: UInt64 = 0, totalFiles: Int = 0, totalBytes: UInt64 = 0, percentDone: Double? = nil,
                secondsElapsed: Double = 0, secondsRemaining: Double? = nil, currentFiles: [String] = [], step: String = "") {
        self.filesDone = filesDone
        self.bytesDone = bytesDone
        self.totalFiles = totalFiles
        self.totalBytes = totalBytes
        self.percentDone = percentDone
        self.secondsElapsed = secondsElapsed
        self.secondsRemaining = secondsRemaining
        self.currentFiles = currentFiles
        self.step = step
    }
}

/// The outcome of a job in one repository.
public struct RepositoryResult: Codable, Sendable, Equatable {
    public var repository: String
    public var ok: Bool
    public var snapshotID: String?
    public var filesNew: Int
    public var filesChanged: Int
    public var filesUnmodified: Int
    public var dataAdded: UInt64
    public var dataAddedPacked: UInt64
    public var totalFiles: Int
    public var totalBytes: UInt64
    public var durationSeconds: Double
    public var warnings: Int
    public var error: String?
    /// Free-form detail (snapshots removed by forget, packs deleted by prune, errors found by check).
    public var message: String?

    public init(repository: String, ok: Bool, snapshotID: String? = nil, filesNew: Int = 0, filesChanged: Int = 0,
                filesUnmodified: Int = 0, dataAdded: UInt64 = 0, dataAddedPacked: UInt64 = 0, totalFiles: Int = 0,
                totalBytes: UInt64 = 0, durationSeconds: Double = 0, warnings: Int = 0, error: String? = nil, message: String? = nil) {
        self.repository = repository
        self.ok = ok
        self.snapshotID = snapshotID
        self.filesNew = filesNew
        self.filesChanged = filesChanged
        self.filesUnmodified = filesUnmodified
        self.dataAdded = dataAdded
        self.dataAddedPacked = dataAddedPacked
        self.totalFiles = totalFiles
        self.totalBytes = totalBytes
        self.durationSeconds = durationSeconds
        self.warnings = warnings
        self.error = error
        self.message = message
    }
}

/// One job, as stored and as the API returns it.
public struct JobRecord: Codable, Sendable, Equatable, Identifiable {
    public var id: Int64
    public var kind: JobKind
    /// The backup definition (nil for a repository-wide check or prune).
    public var backup: String?
    public var repositories: [String]
    /// schedule, watch, api, cli, catch-up, resume.
    public var trigger: String
    /// The priority's name (`normal`) or number.
    public var priority: String
    public var state: JobState
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    public var progress: JobProgress?
    public var results: [RepositoryResult]
    public var error: String?
    /// The interrupted job this one continues.
    public var resumes: Int64?

    public init(id: Int64, kind: JobKind, backup: String?, repositories: [String], trigger: String, priority: String,
                state: JobState, createdAt: Date, startedAt: Date? = nil, finishedAt: Date? = nil, progress: JobProgress? = nil,
                results: [RepositoryResult] = [], error: String? = nil, resumes: Int64? = nil) {
        self.id = id
        self.kind = kind
        self.backup = backup
        self.repositories = repositories
        self.trigger = trigger
        self.priority = priority
        self.state = state
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.progress = progress
        self.results = results
        self.error = error
        self.resumes = resumes
    }
}

public struct JobLogLine: Codable, Sendable, Equatable {
    public var seq: Int64
    public var jobID: Int64
    public var time: Date
    /// debug, info, warning, error.
    public var level: String
    public var message: String
    public init(seq: Int64, jobID: Int64, time: Date, level: String, message: String) {
        self.seq = seq
        self.jobID = jobID
        self.time = time
        self.level = level
        self.message = message
    }
}

/// The last outcome of a backup definition in one repository.
public struct BackupRepositoryStatus: Codable, Sendable, Equatable {
    public var repository: String
    public var lastSuccess: Date?
    public var lastSuccessSnapshot: String?
    public var lastFailure: Date?
    public var lastError: String?
    public init(repository: String, lastSuccess: Date? = nil, lastSuccessSnapshot: String? = nil, lastFailure: Date? = nil, lastError: String? = nil) {
        self.repository = repository
        self.lastSuccess = lastSuccess
        self.lastSuccessSnapshot = lastSuccessSnapshot
        self.lastFailure = lastFailure
        self.lastError = lastError
    }
}

/// A backup definition and how it is doing.
public struct BackupStatus: Codable, Sendable, Equatable {
    public var name: String
    public var paths: [String]
    public var repositories: [String]
    public var schedules: [String]
    public var watch: Bool
    public var priority: String
    public var minInterval: Double?
    public var lastSuccess: Date?
    public var lastFailure: Date?
    public var lastError: String?
    public var nextRun: Date?
    public var perRepository: [BackupRepositoryStatus]
    public init(name: String, paths: [String], repositories: [String], schedules: [String], watch: Bool, priority: String,
                minInterval: Double? = nil, lastSuccess: Date? = nil, lastFailure: Date? = nil, lastError: String? = nil,
                nextRun: Date? = nil, perRepository: [BackupRepositoryStatus] = []) {
        self.name = name
        self.paths = paths
        self.repositories = repositories
        self.schedules = schedules
        self.watch = watch
        self.priority = priority
        self.minInterval = minInterval
        self.lastSuccess = lastSuccess
        self.lastFailure = lastFailure
        self.lastError = lastError
        self.nextRun = nextRun
        self.perRepository = perRepository
    }
}

/// `GET /api/v1/status`.
public struct StatusReport: Codable, Sendable, Equatable {
    public var host: String
    public var version: String
    public var startedAt: Date
    public var jobs: JobGroups
    public var backups: [BackupStatus]
    public init(host: String, version: String, startedAt: Date, jobs: JobGroups, backups: [BackupStatus]) {
        self.host = host
        self.version = version
        self.startedAt = startedAt
        self.jobs = jobs
        self.backups = backups
    }
}

/// Jobs by status group, newest first.
public struct JobGroups: Codable, Sendable, Equatable {
    public var error: [JobRecord] = []
    public var finished: [JobRecord] = []
    public var running: [JobRecord] = []
    public var pending: [JobRecord] = []
    public init(_ jobs: [JobRecord] = []) {
        for job in jobs {
            switch job.state.group {
            case .error: error.append(job)
            case .finished: finished.append(job)
            case .running: running.append(job)
            case .pending: pending.append(job)
            }
        }
    }
}

public struct RepositoryStatus: Codable, Sendable, Equatable {
    public var name: String
    /// The URL with any credentials removed.
    public var url: String
    public var backups: [String]
    public var lastCheck: Date?
    public var lastCheckOK: Bool?
    public init(name: String, url: String, backups: [String], lastCheck: Date? = nil, lastCheckOK: Bool? = nil) {
        self.name = name
        self.url = url
        self.backups = backups
        self.lastCheck = lastCheck
        self.lastCheckOK = lastCheckOK
    }
}

public struct SnapshotSummary: Codable, Sendable, Equatable {
    public var id: String
    public var shortID: String
    public var time: Date
    public var host: String
    public var paths: [String]
    public var tags: [String]
    public var filesNew: Int?
    public var filesChanged: Int?
    public var dataAdded: UInt64?
    public var totalFiles: Int?
    public var totalBytes: UInt64?
    public init(id: String, shortID: String, time: Date, host: String, paths: [String], tags: [String], filesNew: Int? = nil,
                filesChanged: Int? = nil, dataAdded: UInt64? = nil, totalFiles: Int? = nil, totalBytes: UInt64? = nil) {
        self.id = id
        self.shortID = shortID
        self.time = time
        self.host = host
        self.paths = paths
        self.tags = tags
        self.filesNew = filesNew
        self.filesChanged = filesChanged
        self.dataAdded = dataAdded
        self.totalFiles = totalFiles
        self.totalBytes = totalBytes
    }
}

/// What asking for a job did.
public struct EnqueueResult: Codable, Sendable, Equatable {
    /// `queued` (a new job), `merged` (the same job was already pending; its priority may have been raised)
    /// or `skipped` (the minimum-interval guard said no; `reason` says why).
    public var outcome: String
    public var job: JobRecord?
    public var reason: String?
    public init(outcome: String, job: JobRecord?, reason: String? = nil) {
        self.outcome = outcome
        self.job = job
        self.reason = reason
    }
}

/// Errors the API turns into HTTP statuses: 404, 400, 409.
public enum DaemonError: Error, Sendable, Equatable, CustomStringConvertible {
    case notFound(String)
    case badRequest(String)
    case conflict(String)

    public var description: String {
        switch self {
        case .notFound(let m), .badRequest(let m), .conflict(let m): return m
        }
    }
}

/// What the HTTP API (and tests, with a fake) drive: the daemon's operations.
public protocol DaemonControl: Sendable {
    func status() async throws -> StatusReport
    func backups() async throws -> [BackupStatus]
    /// Queues a backup of `name`. `priority` is a name (`high`) or an integer; nil uses the backup's own.
    /// `force` bypasses the minimum-interval guard. Throws `.notFound` for an unknown backup, `.badRequest` for a bad priority.
    func runBackup(_ name: String, priority: String?, force: Bool) async throws -> EnqueueResult
    func jobs(state: JobState?, limit: Int) async throws -> [JobRecord]
    func job(_ id: Int64) async throws -> JobRecord
    /// Log lines of a job with `seq` greater than `after`.
    func jobLog(_ id: Int64, after: Int64) async throws -> [JobLogLine]
    /// Cancels a pending or running job. Throws `.conflict` when it already ended.
    func cancel(_ id: Int64) async throws -> JobRecord
    /// Deletes ended jobs in `states` (finished, failed, …) and their logs; returns how many.
    func clear(states: [JobState]) async throws -> Int
    func repositories() async throws -> [RepositoryStatus]
    func snapshots(repository: String) async throws -> [SnapshotSummary]
    /// Queues `check` of a repository, reading `readDataSubset` (e.g. `10%`, `1/5`) of the data when given.
    func runCheck(repository: String, priority: String?, readDataSubset: String?) async throws -> EnqueueResult
    /// The Prometheus text exposition (version 0.0.4).
    func metrics() async throws -> String
}

extension JSONEncoder {
    /// The API's encoding: snake_case keys, ISO 8601 dates with fractional seconds, sorted keys.
    public static var haven: JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys]
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(ISO8601.format(date))
        }
        return e
    }
}

extension JSONDecoder {
    public static var haven: JSONDecoder {
        let d = JSONDecoder()
        // snake_case back to the property names, which spell ID and OK in capitals (`snapshot_id` → `snapshotID`).
        d.keyDecodingStrategy = .custom { path in
            let key = path.last!.stringValue
            let parts = key.split(separator: "_", omittingEmptySubsequences: true)
            guard parts.count > 1 else { return AnyKey(key) }
            var name = String(parts[0])
            for part in parts.dropFirst() {
                switch part {
                case "id": name += "ID"
                case "ok": name += "OK"
                default: name += part.prefix(1).uppercased() + part.dropFirst()
                }
            }
            return AnyKey(name)
        }
        d.dateDecodingStrategy = .custom { decoder in
            let s = try decoder.singleValueContainer().decode(String.self)
            guard let date = ISO8601.parse(s) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad date \(s)"))
            }
            return date
        }
        return d
    }
}

/// ISO 8601 in UTC with milliseconds, e.g. `2026-11-22T08:40:00.123Z`.
public enum ISO8601 {
    public static func format(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true).timeSeparator(.colon).timeZone(separator: .omitted))
    }

    public static func parse(_ s: String) -> Date? {
        if let d = try? Date(s, strategy: .iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true).timeSeparator(.colon).timeZone(separator: .omitted)) { return d }
        return try? Date(s, strategy: .iso8601)
    }
}

struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
