import Foundation
import HavenCore

/// The daemon's configuration (`haven.yml`): global settings, repositories and backup definitions.
///
/// Parse with `parse(yaml:path:environment:)` or `load(path:environment:)`; both are pure apart from
/// `load` reading the file: password files, token files and commands are only recorded, never read or run.
/// Relative paths are already resolved against the config file's directory.
public struct DaemonConfig: Sendable, Equatable {
    /// The config file's path as given.
    public var path: String
    /// The host name recorded in snapshots; nil means the machine's host name.
    public var host: String?
    /// Where the daemon keeps its SQLite state and job logs.
    public var stateDir: String
    public var api: APIConfig
    public var log: LogConfig
    /// Jobs that may run at the same time (at least 1; `immediate` jobs may exceed it).
    public var concurrency: Int
    /// Run schedules missed while the daemon was down once at startup.
    public var catchUp: Bool
    /// In file order.
    public var repositories: [RepositoryConfig]
    /// In file order.
    public var backups: [BackupConfig]
    /// Problems that do not stop the config from being used (e.g. a password written in the file).
    public var warnings: [ConfigIssue]

    public init(path: String, host: String? = nil, stateDir: String, api: APIConfig = APIConfig(),
                log: LogConfig = LogConfig(), concurrency: Int = 1, catchUp: Bool = true,
                repositories: [RepositoryConfig] = [], backups: [BackupConfig] = [], warnings: [ConfigIssue] = []) {
        self.path = path; self.host = host; self.stateDir = stateDir; self.api = api; self.log = log
        self.concurrency = concurrency; self.catchUp = catchUp; self.repositories = repositories
        self.backups = backups; self.warnings = warnings
    }

    public func repository(named name: String) -> RepositoryConfig? { repositories.first { $0.name == name } }
    public func backup(named name: String) -> BackupConfig? { backups.first { $0.name == name } }

    /// Every schedule of every backup, keyed for `Scheduler.due`: the backup's own schedules (`.backup`),
    /// retention (`.forget`), prune and check schedules.
    public var schedules: [ScheduleKey: Schedule] {
        var all: [ScheduleKey: Schedule] = [:]
        for backup in backups {
            for (kind, list) in backup.scheduleLists {
                for (i, s) in list.enumerated() { all[ScheduleKey(backup: backup.name, task: kind, index: i)] = s }
            }
        }
        return all
    }
}

/// `host:port` the API listens on.
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) { self.host = host; self.port = port }

    /// Parses `127.0.0.1:8470`, `[::1]:8470`, `localhost:8470` or `:8470` (all interfaces). nil when malformed.
    public static func parse(_ text: String) -> ListenAddress? {
        let t = text.trimmingCharacters(in: .whitespaces)
        var host: Substring, portText: Substring
        if t.hasPrefix("[") {
            guard let close = t.firstIndex(of: "]"), t[t.index(after: close)...].hasPrefix(":") else { return nil }
            host = t[t.index(after: t.startIndex)..<close]
            portText = t[t.index(close, offsetBy: 2)...]
        } else {
            guard let colon = t.lastIndex(of: ":"), !t[..<colon].contains(":") else { return nil }
            host = t[..<colon]
            portText = t[t.index(after: colon)...]
        }
        // Port 0 lets the system pick a free port (the daemon logs the one it got).
        guard let port = Int(portText), (0...65535).contains(port) else { return nil }
        return ListenAddress(host: host.isEmpty ? "0.0.0.0" : String(host), port: port)
    }

    /// True for `localhost`, 127.0.0.0/8 and `::1`.
    public var isLoopback: Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// The HTTP API's address and credentials.
public struct APIConfig: Sendable, Equatable {
    public var listen: ListenAddress
    public var users: [APIUser]
    /// Bearer tokens written in the config (usually through `${VAR}`).
    public var tokens: [String]
    /// A file with one bearer token per line; read by the daemon at startup.
    public var tokenFile: String?

    public init(listen: ListenAddress = ListenAddress(host: "127.0.0.1", port: 8470), users: [APIUser] = [],
                tokens: [String] = [], tokenFile: String? = nil) {
        self.listen = listen; self.users = users; self.tokens = tokens; self.tokenFile = tokenFile
    }

    /// True when credentials are configured, so every request must present them.
    public var requiresAuthentication: Bool { !users.isEmpty || !tokens.isEmpty || tokenFile != nil }

    /// True when `token` equals one of `tokens` (constant time per comparison).
    public func accepts(token: String) -> Bool {
        tokens.reduce(false) { found, t in APIUser.constantTimeEqual(t, token) || found }
    }

    /// The user with this name when the password matches, else nil.
    public func authenticate(user: String, password: String) -> APIUser? {
        guard let u = users.first(where: { $0.name == user }), u.verify(password: password) else { return nil }
        return u
    }
}

public enum LogFormat: String, Sendable, Hashable, CaseIterable { case json, text }
public enum LogLevel: String, Sendable, Hashable, CaseIterable { case debug, info, warning, error }

public struct LogConfig: Sendable, Hashable {
    public var format: LogFormat
    public var level: LogLevel
    public init(format: LogFormat = .text, level: LogLevel = .info) { self.format = format; self.level = level }
}

/// Where a repository's password comes from.
public enum PasswordSource: Sendable, Hashable {
    /// The first line of this file.
    case file(String)
    /// This environment variable of the daemon.
    case environment(String)
    /// The first line of this shell command's output.
    case command(String)
    /// Written in the config (discouraged).
    case literal(String)
}

public struct RepositoryConfig: Sendable, Equatable {
    public var name: String
    /// A local path (resolved to absolute) or a backend URL such as `s3:…` or `sftp:…`.
    public var url: String
    public var password: PasswordSource
    /// Backend options, e.g. `s3.storage-class`.
    public var options: [String: String]
    /// KiB/s; nil for no limit.
    public var limitUpload: Int?
    public var limitDownload: Int?
    /// Concurrent backend connections; nil for the backend's default.
    public var connections: Int?

    public init(name: String, url: String, password: PasswordSource, options: [String: String] = [:],
                limitUpload: Int? = nil, limitDownload: Int? = nil, connections: Int? = nil) {
        self.name = name; self.url = url; self.password = password; self.options = options
        self.limitUpload = limitUpload; self.limitDownload = limitDownload; self.connections = connections
    }
}

/// File watching for a backup: changes under `paths` start a backup once they settle.
public struct WatchConfig: Sendable, Hashable {
    public var paths: [String]
    /// Quiet time after the last change.
    public var minWait: TimeInterval
    /// Longest wait after the first change of a burst.
    public var maxWait: TimeInterval

    public init(paths: [String], minWait: TimeInterval = 10, maxWait: TimeInterval = 300) {
        self.paths = paths; self.minWait = minWait; self.maxWait = maxWait
    }

    public var debouncer: Debouncer { Debouncer(minWait: minWait, maxWait: maxWait) }
}

/// What a failing hook does to its job.
public enum HookFailurePolicy: String, Sendable, Hashable, CaseIterable {
    /// Log it and carry on as if it succeeded.
    case ignore
    /// Carry on, but mark the job failed at the end.
    case `continue`
    /// Stop the job now (before-hooks: the backup does not run).
    case abort
}

public struct HTTPHook: Sendable, Hashable {
    public var url: String
    public var method: String
    public var headers: [String: String]
    public var body: String?

    public init(url: String, method: String = "POST", headers: [String: String] = [:], body: String? = nil) {
        self.url = url; self.method = method; self.headers = headers; self.body = body
    }
}

public enum HookAction: Sendable, Hashable {
    /// Run with `/bin/sh -c`.
    case command(String)
    case http(HTTPHook)
}

public struct Hook: Sendable, Hashable {
    public var action: HookAction
    public var timeout: TimeInterval
    /// Extra attempts after a failure.
    public var retries: Int
    public var onFailure: HookFailurePolicy

    public init(action: HookAction, timeout: TimeInterval = 60, retries: Int = 0, onFailure: HookFailurePolicy) {
        self.action = action; self.timeout = timeout; self.retries = retries; self.onFailure = onFailure
    }
}

public struct HookSet: Sendable, Hashable {
    /// Before the backup; failure policy defaults to `abort`.
    public var before: [Hook]
    /// After a successful backup; defaults to `continue`.
    public var after: [Hook]
    /// After a failed backup; defaults to `continue`.
    public var failure: [Hook]

    public init(before: [Hook] = [], after: [Hook] = [], failure: [Hook] = []) {
        self.before = before; self.after = after; self.failure = failure
    }
}

public struct RetentionConfig: Sendable, Equatable {
    public var policy: RetentionPolicy
    /// Prune right after forgetting.
    public var prune: Bool
    /// Own schedules; empty means "after each successful backup".
    public var schedules: [Schedule]

    public init(policy: RetentionPolicy, prune: Bool = false, schedules: [Schedule] = []) {
        self.policy = policy; self.prune = prune; self.schedules = schedules
    }

    /// True when forget runs after each backup rather than on schedules.
    public var afterEachBackup: Bool { schedules.isEmpty }
}

public struct PruneConfig: Sendable, Equatable {
    public var schedules: [Schedule]
    public var maxUnused: MaxUnused
    public init(schedules: [Schedule] = [], maxUnused: MaxUnused = .percent(5)) {
        self.schedules = schedules; self.maxUnused = maxUnused
    }
}

public struct CheckConfig: Sendable, Equatable {
    public var schedules: [Schedule]
    public var readData: ReadDataSelection
    public init(schedules: [Schedule] = [], readData: ReadDataSelection = .none) {
        self.schedules = schedules; self.readData = readData
    }
}

public struct IONice: Sendable, Hashable {
    public enum Class: String, Sendable, Hashable, CaseIterable {
        case realtime, bestEffort = "best-effort", idle
    }
    public var ioClass: Class
    /// 0 (highest) … 7 (lowest); nil for the default, and always nil for `idle`.
    public var level: Int?
    public init(ioClass: Class, level: Int? = nil) { self.ioClass = ioClass; self.level = level }
}

/// One named backup definition.
public struct BackupConfig: Sendable, Equatable {
    public var name: String
    public var paths: [String]
    public var exclude: [String] = []
    public var excludeIfPresent: [String] = []
    public var excludeCaches = false
    public var oneFileSystem = false
    /// Bytes.
    public var excludeLargerThan: UInt64?
    public var tags: [String] = []
    /// Repository names, each defined in `repositories`.
    public var repositories: [String]
    public var schedules: [Schedule] = []
    public var watch: WatchConfig?
    public var minInterval: TimeInterval?
    public var priority: Priority = .normal
    public var hooks = HookSet()
    public var retention: RetentionConfig?
    public var prune: PruneConfig?
    public var check: CheckConfig?
    public var window: TimeWindow?
    public var maxDuration: TimeInterval?
    /// -20 … 19.
    public var nice: Int?
    public var ionice: IONice?
    /// KiB/s; overrides the repository's limit for this backup.
    public var limitUpload: Int?
    public var limitDownload: Int?

    public init(name: String, paths: [String], repositories: [String]) {
        self.name = name; self.paths = paths; self.repositories = repositories
    }

    /// The schedules per task kind (backup, forget, prune, check); empty lists are left out.
    public var scheduleLists: [(JobKind, [Schedule])] {
        var lists: [(JobKind, [Schedule])] = []
        if !schedules.isEmpty { lists.append((.backup, schedules)) }
        if let r = retention, !r.schedules.isEmpty { lists.append((.forget, r.schedules)) }
        if let p = prune, !p.schedules.isEmpty { lists.append((.prune, p.schedules)) }
        if let c = check, !c.schedules.isEmpty { lists.append((.check, c.schedules)) }
        return lists
    }
}
