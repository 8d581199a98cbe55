import ArgumentParser
import AsyncHTTPClient
import Foundation
import HavenCore
import HavenDaemon
import HavenServer
import NIOCore
import NIOHTTP1

// The commands that talk to a running `haven daemon` over its HTTP API: status, run, jobs, log, cancel.

/// Where the daemon is and how to authenticate, shared by the client commands.
struct DaemonClientOptions: ParsableArguments {
    @Option(help: ArgumentHelp("URL of the Haven daemon (default: api.listen from --config, else HAVEN_SERVER, else http://127.0.0.1:8470).",
                               valueName: "URL"))
    var server: String?

    @Option(help: ArgumentHelp("Daemon configuration file; its api.listen gives the daemon's address.", valueName: "FILE"))
    var config: String?

    @Option(help: ArgumentHelp("API user for HTTP Basic authentication (or HAVEN_API_USER); the password comes from HAVEN_API_PASSWORD or a prompt.",
                               valueName: "NAME"))
    var user: String?

    @Option(help: ArgumentHelp("API bearer token (or HAVEN_API_TOKEN).", valueName: "TOKEN"))
    var token: String?

    @Flag(help: "Print the daemon's JSON answer as it is.")
    var json = false

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// The daemon's base URL, without a trailing slash.
    func serverURL() throws -> String {
        if let server { return Self.normalize(server) }
        if let config {
            let api: APIConfig
            do {
                api = try DaemonConfig.load(path: config).api
            } catch {
                throw HavenError(.usage, "cannot take the daemon's address from \(config): \(error)")
            }
            return Self.url(for: api.listen)
        }
        if let env = environment["HAVEN_SERVER"], !env.isEmpty { return Self.normalize(env) }
        return "http://127.0.0.1:\(APIConfiguration.defaultPort)"
    }

    /// A URL to reach a daemon listening on `listen`: all-interfaces addresses are reached on loopback.
    static func url(for listen: ListenAddress) -> String {
        var host = listen.host
        if host == "0.0.0.0" || host.isEmpty { host = "127.0.0.1" }
        if host == "::" { host = "::1" }
        return host.contains(":") ? "http://[\(host)]:\(listen.port)" : "http://\(host):\(listen.port)"
    }

    static func normalize(_ server: String) -> String {
        var s = server.trimmingCharacters(in: .whitespaces)
        if !s.contains("://") { s = "http://" + s }
        while s.hasSuffix("/") { s.removeLast() }
        return s
    }

    enum Credentials {
        case none
        case basic(user: String, password: String)
        case bearer(String)
    }

    func credentials() throws -> Credentials {
        if let token = token ?? environment["HAVEN_API_TOKEN"].flatMap({ $0.isEmpty ? nil : $0 }) {
            return .bearer(token)
        }
        guard let user = user ?? environment["HAVEN_API_USER"].flatMap({ $0.isEmpty ? nil : $0 }) else { return .none }
        if let password = environment["HAVEN_API_PASSWORD"] { return .basic(user: user, password: password) }
        guard isatty(0) == 1 || isatty(2) == 1, FileManager.default.isReadableFile(atPath: "/dev/tty") else {
            throw HavenError(.usage, "no password for API user '\(user)': set HAVEN_API_PASSWORD (no terminal to ask on)")
        }
        return .basic(user: user, password: try Terminal.readPassword("password for API user \(user): "))
    }

    func client() throws -> DaemonClient {
        DaemonClient(baseURL: try serverURL(), credentials: try credentials())
    }
}

/// A small client of the daemon's API: one request per call, errors turned into `HavenError`s that say what to do.
struct DaemonClient {
    let baseURL: String
    let credentials: DaemonClientOptions.Credentials

    struct Reply {
        var status: Int
        var body: Data
    }

    /// Sends a request and returns the body of a 2xx answer; throws a `HavenError` for anything else.
    func call(_ method: HTTPMethod, _ path: String) async throws -> Data {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        switch credentials {
        case .none: break
        case .basic(let user, let password):
            request.headers.add(name: "Authorization", value: "Basic " + Data("\(user):\(password)".utf8).base64EncodedString())
        case .bearer(let token):
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
        }
        let reply: Reply
        do {
            reply = try await Self.withClient { client in
                let response = try await client.execute(request, timeout: .seconds(30))
                let body = try await response.body.collect(upTo: 64 << 20)
                return Reply(status: Int(response.status.code), body: Data(body.readableBytesView))
            }
        } catch {
            throw HavenError(.fatal, "cannot reach the Haven daemon at \(baseURL): \(Self.describe(error)) — is `haven daemon` running?")
        }
        switch reply.status {
        case 200..<300:
            return reply.body
        case 401:
            throw HavenError(.usage, unauthorizedMessage)
        default:
            let message = (try? JSONDecoder().decode(APIErrorBody.self, from: reply.body))?.error
                ?? "HTTP \(reply.status) from \(baseURL)\(path)"
            throw HavenError(reply.status == 404 ? .notFound : reply.status == 400 ? .invalidArgument : .fatal, message)
        }
    }

    func get<T: Decodable>(_ path: String, as type: T.Type) async throws -> (T, Data) {
        let data = try await call(.GET, path)
        return (try decode(type, data, path), data)
    }

    func post<T: Decodable>(_ path: String, as type: T.Type) async throws -> (T, Data) {
        let data = try await call(.POST, path)
        return (try decode(type, data, path), data)
    }

    func decode<T: Decodable>(_ type: T.Type, _ data: Data, _ path: String) throws -> T {
        do {
            return try JSONDecoder.haven.decode(type, from: data)
        } catch {
            throw HavenError(.fatal, "the daemon at \(baseURL) answered \(path) with JSON this haven does not understand "
                + "(a different version?): \(error)")
        }
    }

    var unauthorizedMessage: String {
        switch credentials {
        case .none:
            return "the Haven daemon at \(baseURL) requires credentials: pass --user NAME with the password in HAVEN_API_PASSWORD, "
                + "or --token TOKEN (or set HAVEN_API_USER and HAVEN_API_PASSWORD, or HAVEN_API_TOKEN)"
        case .basic(let user, _):
            return "the Haven daemon at \(baseURL) rejected API user '\(user)': check the user name (--user/HAVEN_API_USER) "
                + "and the password in HAVEN_API_PASSWORD"
        case .bearer:
            return "the Haven daemon at \(baseURL) rejected the bearer token: check --token/HAVEN_API_TOKEN"
        }
    }

    /// Runs `body` with a client that fails at once when nothing listens (instead of retrying until a timeout).
    static func withClient<T: Sendable>(_ body: (HTTPClient) async throws -> T) async throws -> T {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(60))
        configuration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            let result = try await body(client)
            try await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    static func describe(_ error: any Error) -> String {
        let text = String(describing: error)
        if text.localizedCaseInsensitiveContains("refused") { return "connection refused" }
        if text.localizedCaseInsensitiveContains("timeout") || text.localizedCaseInsensitiveContains("timed out") { return "timed out" }
        if text.localizedCaseInsensitiveContains("resolve") || text.localizedCaseInsensitiveContains("lookup") { return "cannot resolve the host name" }
        return text
    }

    static func escape(_ segment: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/?#%")
        return segment.addingPercentEncoding(withAllowedCharacters: allowed) ?? segment
    }
}

/// Prints a raw JSON answer, or a line of text.
enum ClientOutput {
    static func raw(_ data: Data) {
        print(String(decoding: data, as: UTF8.self))
    }

    static func time(_ date: Date?) -> String {
        guard let date else { return "-" }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.string(from: date)
    }

    /// How long a job ran (or has been running).
    static func duration(_ job: JobRecord, now: Date = Date()) -> String {
        guard let start = job.startedAt else { return "-" }
        return Format.duration((job.finishedAt ?? now).timeIntervalSince(start))
    }

    static func progress(_ job: JobRecord) -> String {
        guard let p = job.progress else { return "" }
        var parts: [String] = []
        if let pct = p.percentDone { parts.append(String(format: "%.1f%%", pct * 100)) }
        parts.append("\(p.filesDone) files, \(Format.bytes(p.bytesDone))")
        if let left = p.secondsRemaining { parts.append("ETA \(Format.duration(left))") }
        if !p.step.isEmpty { parts.append(p.step) }
        return parts.joined(separator: ", ")
    }

    /// The last column of a job row: progress while running, the error when it failed, else the snapshot.
    static func note(_ job: JobRecord) -> String {
        if job.state == .running { return progress(job) }
        if let error = job.error { return error }
        let snapshots = job.results.compactMap { r in r.snapshotID.map { "\(r.repository): \(String($0.prefix(8)))" } }
        return snapshots.joined(separator: ", ")
    }

    static func jobTable(_ jobs: [JobRecord]) -> String {
        Format.table(["ID", "State", "Kind", "Backup", "Repositories", "Trigger", "Priority", "Created", "Duration", "Note"],
                     jobs.map { job in
                         [String(job.id), job.state.rawValue, job.kind.rawValue, job.backup ?? "-",
                          job.repositories.joined(separator: ","), job.trigger, job.priority, time(job.createdAt),
                          duration(job), note(job)]
                     })
    }

    static func logLine(_ line: JobLogLine) -> String {
        "\(time(line.time)) \(line.level.uppercased().padding(toLength: 7, withPad: " ", startingAt: 0)) \(line.message)"
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show what a running Haven daemon is doing: jobs by state and every backup's last and next run.",
        discussion: """
        Examples:
          haven status
          haven status --server http://nas:8470 --user admin     (password in HAVEN_API_PASSWORD)
          haven status --json
        """
    )

    @OptionGroup var daemon: DaemonClientOptions

    func run() async throws {
        let client = try daemon.client()
        let (report, data) = try await client.get("/api/v1/status", as: StatusReport.self)
        if daemon.json { return ClientOutput.raw(data) }
        print("Haven \(report.version) on \(report.host), running since \(ClientOutput.time(report.startedAt))")
        let groups: [(String, [JobRecord])] = [
            ("Running", report.jobs.running), ("Pending", report.jobs.pending),
            ("Failed", report.jobs.error), ("Finished", Array(report.jobs.finished.prefix(10))),
        ]
        for (title, jobs) in groups where !jobs.isEmpty {
            print("\n\(title) jobs:")
            print(ClientOutput.jobTable(jobs))
        }
        if report.jobs.running.isEmpty && report.jobs.pending.isEmpty { print("\nNo job is running or pending.") }
        print("\nBackups:")
        if report.backups.isEmpty {
            print("none configured")
        } else {
            print(Format.table(["Backup", "Repositories", "Last success", "Last failure", "Next run", "Last error"],
                               report.backups.map { b in
                                   [b.name, b.repositories.joined(separator: ","), ClientOutput.time(b.lastSuccess),
                                    ClientOutput.time(b.lastFailure), ClientOutput.time(b.nextRun), b.lastError ?? ""]
                               }))
        }
    }
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Ask the daemon to run a backup now (or, with --local, run it in this process).",
        discussion: """
        Without --force, the backup's min_interval guard may skip the run; an interrupted backup is always continued.
        With --local, the backup definition from --config runs in this process with the same guard, hooks, \
        retention and state as the daemon (for cron): it does nothing and exits 0 when the backup is not due.

        Examples:
          haven run documents
          haven run documents --priority high --force
          haven run documents --config /etc/haven/haven.yml --local
        """
    )

    @OptionGroup var daemon: DaemonClientOptions

    @Argument(help: ArgumentHelp("The backup definition's name.", valueName: "BACKUP"))
    var backup: String

    @Option(help: ArgumentHelp("immediate, next, high, normal, low, idle or a number (default: the backup's own).", valueName: "P"))
    var priority: String?

    @Flag(help: "Run even if the backup's min_interval has not passed.")
    var force = false

    @Flag(help: "Run in this process instead of asking a daemon (needs --config).")
    var local = false

    func validate() throws {
        if local && daemon.config == nil { throw ValidationError("--local needs --config FILE (the daemon's configuration)") }
        if local && daemon.server != nil { throw ValidationError("--local runs without a daemon; leave out --server") }
    }

    func run() async throws {
        if local, let config = daemon.config {
            let code = try await LocalRun.run(backup: backup, configPath: config, force: force, json: daemon.json)
            if code != 0 { throw ExitStatus(code: code) }
            return
        }
        var query: [String] = []
        if let priority { query.append("priority=\(DaemonClient.escape(priority))") }
        if force { query.append("force=true") }
        let path = "/api/v1/backups/\(DaemonClient.escape(backup))/run" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        let client = try daemon.client()
        let (result, data) = try await client.post(path, as: EnqueueResult.self)
        if daemon.json { return ClientOutput.raw(data) }
        switch (result.outcome, result.job) {
        case ("skipped", _):
            print("skipped backup \(backup): \(result.reason ?? "the daemon gave no reason") (use --force to run anyway)")
        case ("merged", let job?):
            print("backup \(backup) is already queued as job \(job.id) (priority \(job.priority), \(job.state.rawValue))")
        case (_, let job?):
            print("queued backup \(backup) as job \(job.id) (priority \(job.priority)); follow it with: haven log \(job.id) --follow")
        default:
            print("\(result.outcome): \(result.reason ?? "")")
        }
    }
}

struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jobs",
        abstract: "List the daemon's jobs, newest first.",
        discussion: """
        Examples:
          haven jobs
          haven jobs --state failed
          haven jobs --limit 200 --json
        """
    )

    @OptionGroup var daemon: DaemonClientOptions

    @Option(help: ArgumentHelp("Only jobs in this state: pending, running, finished, failed, interrupted, cancelled or skipped.",
                               valueName: "S"))
    var state: String?

    @Option(help: ArgumentHelp("At most this many jobs (1-1000).", valueName: "N"))
    var limit: Int = 50

    func validate() throws {
        if let state, JobState(rawValue: state.lowercased()) == nil {
            throw ValidationError("unknown job state '\(state)'; use one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard (1...1000).contains(limit) else { throw ValidationError("--limit must be from 1 to 1000, got \(limit)") }
    }

    func run() async throws {
        var path = "/api/v1/jobs?limit=\(limit)"
        if let state { path += "&state=\(state.lowercased())" }
        let (list, data) = try await daemon.client().get(path, as: JobList.self)
        if daemon.json { return ClientOutput.raw(data) }
        if list.jobs.isEmpty {
            print(state.map { "no \($0) jobs" } ?? "no jobs")
        } else {
            print(ClientOutput.jobTable(list.jobs))
        }
    }
}

struct LogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Print a job's log (and with --follow, keep printing until the job ends).",
        discussion: """
        With --follow the exit code tells how the job ended: 0 finished (or skipped), 1 otherwise.

        Examples:
          haven log 42
          haven log 42 --follow
        """
    )

    @OptionGroup var daemon: DaemonClientOptions

    @Argument(help: ArgumentHelp("The job's number.", valueName: "JOB"))
    var job: Int64

    @Flag(name: [.short, .long], help: "Keep printing new lines until the job ends.")
    var follow = false

    @Option(help: ArgumentHelp("Seconds between polls with --follow.", valueName: "SECONDS"))
    var interval: Double = 1

    func validate() throws {
        guard job > 0 else { throw ValidationError("JOB must be a positive job number, got \(job)") }
        guard interval > 0 && interval <= 60 else { throw ValidationError("--interval must be more than 0 and at most 60 seconds") }
    }

    func run() async throws {
        let client = try daemon.client()
        var after: Int64 = 0
        while true {
            let (log, data) = try await client.get("/api/v1/jobs/\(job)/log?after=\(after)", as: JobLogResponse.self)
            if daemon.json {
                if follow {
                    for line in log.lines { print(String(decoding: try JSONEncoder.haven.encode(line), as: UTF8.self)) }
                } else {
                    ClientOutput.raw(data)
                }
            } else {
                for line in log.lines { print(ClientOutput.logLine(line)) }
            }
            fflush(nil)
            after = log.lastSeq
            guard follow else { return }
            if log.state.isDone {
                // A last look, in case lines were written between the two reads of the state.
                let (rest, _) = try await client.get("/api/v1/jobs/\(job)/log?after=\(after)", as: JobLogResponse.self)
                for line in rest.lines {
                    print(daemon.json ? String(decoding: try JSONEncoder.haven.encode(line), as: UTF8.self) : ClientOutput.logLine(line))
                }
                if !daemon.json { FileHandleOutput.stderr("job \(job) \(log.state.rawValue)") }
                if log.state != .finished && log.state != .skipped { throw ExitStatus(code: 1) }
                return
            }
            try await Task.sleep(for: .milliseconds(Int(interval * 1000)))
        }
    }
}

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a pending or running job.",
        discussion: """
        A running backup stops at its next checkpoint; a later run continues it.

        Examples:
          haven cancel 42
        """
    )

    @OptionGroup var daemon: DaemonClientOptions

    @Argument(help: ArgumentHelp("The job's number.", valueName: "JOB"))
    var job: Int64

    func validate() throws {
        guard job > 0 else { throw ValidationError("JOB must be a positive job number, got \(job)") }
    }

    func run() async throws {
        let (record, data) = try await daemon.client().post("/api/v1/jobs/\(job)/cancel", as: JobRecord.self)
        if daemon.json { return ClientOutput.raw(data) }
        print("job \(record.id) is \(record.state.rawValue)")
    }
}
