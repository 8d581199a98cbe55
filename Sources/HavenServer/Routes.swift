import Foundation
import HavenDaemon
import Hummingbird

/// The `/api/v1` handlers: parse and check parameters, call `DaemonControl`, encode the result.
struct APIRoutes: Sendable {
    let control: any DaemonControl

    static let defaultJobLimit = 100
    static let maxJobLimit = 1000

    func register(on router: Router<APIRequestContext>) {
        router.get("/api/v1/status") { _, _ in try JSONResponse.encode(try await control.status()) }
        router.get("/api/v1/backups") { _, _ in try JSONResponse.encode(BackupList(backups: try await control.backups())) }
        router.post("/api/v1/backups/:name/run") { request, context in try await runBackup(request, context) }
        router.get("/api/v1/jobs") { request, _ in try await jobs(request) }
        router.post("/api/v1/jobs/clear") { request, _ in try await clear(request) }
        router.get("/api/v1/jobs/:id") { _, context in try JSONResponse.encode(try await control.job(try jobID(context))) }
        router.get("/api/v1/jobs/:id/log") { request, context in try await log(request, context) }
        router.post("/api/v1/jobs/:id/cancel") { _, context in
            try JSONResponse.encode(try await control.cancel(try jobID(context)))
        }
        router.get("/api/v1/repositories") { _, _ in
            try JSONResponse.encode(RepositoryList(repositories: try await control.repositories()))
        }
        router.get("/api/v1/repositories/:name/snapshots") { _, context in
            let name = try pathName(context)
            return try JSONResponse.encode(SnapshotList(repository: name, snapshots: try await control.snapshots(repository: name)))
        }
        router.post("/api/v1/repositories/:name/check") { request, context in try await check(request, context) }
        router.get("/metrics") { _, _ in
            let text = try await control.metrics()
            return Response(status: .ok, headers: [.contentType: APIServer.metricsContentType],
                            body: .init(byteBuffer: ByteBuffer(string: text)))
        }
    }

    func runBackup(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let query = request.uri.queryParameters
        let name = try pathName(context)
        let priority = try Self.priority(query["priority"])
        let force = try Self.bool(query["force"], name: "force")
        let result = try await control.runBackup(name, priority: priority, force: force)
        return try JSONResponse.encode(result, status: Self.status(of: result))
    }

    func jobs(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let state = try query["state"].map { try Self.jobState(String($0)) }
        var limit = Self.defaultJobLimit
        if let raw = query["limit"] {
            guard let n = Int(raw), (1...Self.maxJobLimit).contains(n) else {
                throw APIError.badRequest("limit must be a number from 1 to \(Self.maxJobLimit), got '\(raw)'")
            }
            limit = n
        }
        return try JSONResponse.encode(JobList(jobs: try await control.jobs(state: state, limit: limit)))
    }

    func log(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let id = try jobID(context)
        var after: Int64 = 0
        if let raw = request.uri.queryParameters["after"] {
            guard let n = Int64(raw), n >= 0 else { throw APIError.badRequest("after must be a log line number (0 or more), got '\(raw)'") }
            after = n
        }
        let job = try await control.job(id)
        let lines = try await control.jobLog(id, after: after)
        return try JSONResponse.encode(JobLogResponse(jobID: id, state: job.state, lines: lines, lastSeq: lines.last?.seq ?? after))
    }

    func clear(_ request: Request) async throws -> Response {
        let values = request.uri.queryParameters.getAll("state")
            .flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        var states: [JobState] = []
        for value in values.isEmpty ? ["finished"] : values {
            let state = try Self.jobState(value)
            guard state.isDone else {
                throw APIError.badRequest("only ended jobs can be cleared; state '\(value)' is not an ended state (use finished, failed, interrupted, cancelled or skipped)")
            }
            if !states.contains(state) { states.append(state) }
        }
        return try JSONResponse.encode(ClearResponse(cleared: try await control.clear(states: states), states: states))
    }

    func check(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let query = request.uri.queryParameters
        let name = try pathName(context)
        let priority = try Self.priority(query["priority"])
        var subset: String?
        if let raw = query["read_data_subset"] {
            guard !raw.isEmpty else { throw APIError.badRequest("read_data_subset is empty; give a percentage (10%) or a part (1/5)") }
            subset = String(raw)
        }
        let result = try await control.runCheck(repository: name, priority: priority, readDataSubset: subset)
        return try JSONResponse.encode(result, status: Self.status(of: result))
    }

    // MARK: Parameters

    func jobID(_ context: APIRequestContext) throws -> Int64 {
        let raw = context.parameters.get("id") ?? ""
        guard let id = Int64(raw), id > 0 else { throw APIError.badRequest("job id must be a positive number, got '\(raw)'") }
        return id
    }

    func pathName(_ context: APIRequestContext) throws -> String {
        let raw = context.parameters.get("name") ?? ""
        let name = raw.removingPercentEncoding ?? raw
        guard !name.isEmpty else { throw APIError.badRequest("the name in the path is empty") }
        return name
    }

    static func jobState(_ value: String) throws -> JobState {
        guard let state = JobState(rawValue: value.lowercased()) else {
            throw APIError.badRequest("unknown job state '\(value)'; use one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return state
    }

    static func priority(_ value: Substring?) throws -> String? {
        guard let value else { return nil }
        guard !value.isEmpty else { throw APIError.badRequest("priority is empty; use immediate, next, high, normal, low, idle or a number") }
        return String(value)
    }

    static func bool(_ value: Substring?, name: String) throws -> Bool {
        switch value?.lowercased() {
        case nil, "false", "0", "no": return false
        case "", "true", "1", "yes": return true
        case let other?: throw APIError.badRequest("\(name) must be true or false, got '\(other)'")
        }
    }

    /// 202 when a job was queued or merged, 200 when nothing was queued (skipped by the guard).
    static func status(of result: EnqueueResult) -> HTTPResponse.Status {
        result.job != nil && result.outcome != "skipped" ? .accepted : .ok
    }
}
