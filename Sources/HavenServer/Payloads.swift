import HavenDaemon

// The JSON bodies the API answers with, besides the model types of `HavenDaemon` (encoded with
// `JSONEncoder.haven`: snake_case keys, ISO 8601 dates).

/// `GET /healthz`.
public struct HealthResponse: Codable, Sendable, Equatable {
    public var status: String
    public init(status: String = "ok") { self.status = status }
}

/// `GET /api/v1/backups`.
public struct BackupList: Codable, Sendable, Equatable {
    public var backups: [BackupStatus]
    public init(backups: [BackupStatus]) { self.backups = backups }
}

/// `GET /api/v1/jobs`, newest first.
public struct JobList: Codable, Sendable, Equatable {
    public var jobs: [JobRecord]
    public init(jobs: [JobRecord]) { self.jobs = jobs }
}

/// `GET /api/v1/jobs/{id}/log`: the lines after `after`, and the job's state so a follower knows when to stop.
public struct JobLogResponse: Codable, Sendable, Equatable {
    public var jobID: Int64
    public var state: JobState
    public var lines: [JobLogLine]
    /// The `seq` to pass as `after` next time (the last line's, or `after` when there are none).
    public var lastSeq: Int64
    public init(jobID: Int64, state: JobState, lines: [JobLogLine], lastSeq: Int64) {
        self.jobID = jobID
        self.state = state
        self.lines = lines
        self.lastSeq = lastSeq
    }
}

/// `POST /api/v1/jobs/clear`.
public struct ClearResponse: Codable, Sendable, Equatable {
    public var cleared: Int
    public var states: [JobState]
    public init(cleared: Int, states: [JobState]) {
        self.cleared = cleared
        self.states = states
    }
}

/// `GET /api/v1/repositories`.
public struct RepositoryList: Codable, Sendable, Equatable {
    public var repositories: [RepositoryStatus]
    public init(repositories: [RepositoryStatus]) { self.repositories = repositories }
}

/// `GET /api/v1/repositories/{name}/snapshots`, newest first.
public struct SnapshotList: Codable, Sendable, Equatable {
    public var repository: String
    public var snapshots: [SnapshotSummary]
    public init(repository: String, snapshots: [SnapshotSummary]) {
        self.repository = repository
        self.snapshots = snapshots
    }
}
