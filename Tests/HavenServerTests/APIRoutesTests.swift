import Foundation
import HavenDaemon
import HavenServer
import Testing

@Suite("API routes", .timeLimit(.minutes(3)))
struct APIRoutesTests {
    @Test func healthzAnswersOK() async throws {
        try await withServer { server in
            let reply = try await server.get("/healthz")
            #expect(reply.status == 200)
            #expect(reply.text == #"{"status":"ok"}"#)
            #expect(reply.headers.first(name: "content-type")?.hasPrefix("application/json") == true)
        }
    }

    @Test func statusGroupsJobsWithSnakeCaseAndISODates() async throws {
        try await withServer { server in
            let reply = try await server.get("/api/v1/status")
            #expect(reply.status == 200)
            let object = reply.object
            #expect(object["host"] as? String == "laptop")
            #expect(object["started_at"] as? String == "2026-11-18T11:06:40.250Z")
            let jobs = try #require(object["jobs"] as? [String: Any])
            #expect(Set(jobs.keys) == ["error", "finished", "running", "pending"])
            let running = try #require((jobs["running"] as? [[String: Any]])?.first)
            #expect(running["id"] as? Int == 2)
            let progress = try #require(running["progress"] as? [String: Any])
            #expect(progress["percent_done"] as? Double == 0.5)
            #expect(progress["current_files"] as? [String] == ["/srv/photos/a.jpg"])
            let backup = try #require((object["backups"] as? [[String: Any]])?.first)
            #expect(backup["next_run"] as? String == "2026-11-18T12:06:40.250Z")
            #expect(backup["min_interval"] as? Double == 72000)
            #expect((backup["per_repository"] as? [[String: Any]])?.first?["last_success_snapshot"] as? String == "abcdef12")
            let decoded = try reply.decode(StatusReport.self)
            #expect(decoded.jobs.error.map(\.id) == [3])
        }
    }

    @Test func listsBackups() async throws {
        try await withServer { server in
            let reply = try await server.get("/api/v1/backups")
            #expect(reply.status == 200)
            #expect(try reply.decode(BackupList.self).backups.map(\.name) == ["documents", "photos"])
            #expect(reply.text.contains(#""last_success":"2026-11-18T11:06:40.250Z""#))
        }
    }

    @Test func runQueuesABackup() async throws {
        try await withServer { server in
            let reply = try await server.post("/api/v1/backups/documents/run?priority=high&force=true")
            #expect(reply.status == 202)
            let result = try reply.decode(EnqueueResult.self)
            #expect(result.outcome == "queued")
            #expect(result.job?.priority == "high")
            let last = await server.control.lastRun
            #expect(last?.name == "documents" && last?.priority == "high" && last?.force == true)
        }
    }

    @Test func runSkippedByTheGuardIs200WithAReason() async throws {
        try await withServer { server in
            let reply = try await server.post("/api/v1/backups/photos/run")
            #expect(reply.status == 200)
            #expect(reply.object["outcome"] as? String == "skipped")
            #expect((reply.object["reason"] as? String)?.contains("min_interval") == true)
        }
    }

    @Test func jobsFilterByStateAndLimit() async throws {
        try await withServer { server in
            let all = try await server.get("/api/v1/jobs")
            #expect(try all.decode(JobList.self).jobs.map(\.id) == [3, 2, 1])
            let failed = try await server.get("/api/v1/jobs?state=failed")
            #expect(try failed.decode(JobList.self).jobs.map(\.id) == [3])
            let limited = try await server.get("/api/v1/jobs?limit=1")
            #expect(try limited.decode(JobList.self).jobs.map(\.id) == [3])
        }
    }

    @Test func oneJobWithProgressAndResults() async throws {
        try await withServer { server in
            let running = try await server.get("/api/v1/jobs/2")
            #expect(running.status == 200)
            #expect((running.object["progress"] as? [String: Any])?["files_done"] as? Int == 10)
            let finished = try await server.get("/api/v1/jobs/1")
            let result = try #require((finished.object["results"] as? [[String: Any]])?.first)
            #expect(result["snapshot_id"] as? String == "abcdef1234")
            #expect(result["data_added"] as? Int == 1024)
            #expect(finished.object["finished_at"] as? String == "2026-11-18T11:06:52.250Z")
        }
    }

    @Test func logAfterASequenceNumber() async throws {
        try await withServer { server in
            let reply = try await server.get("/api/v1/jobs/2/log?after=3")
            #expect(reply.status == 200)
            let log = try reply.decode(JobLogResponse.self)
            #expect(log.lines.map(\.seq) == [4, 5])
            #expect(log.lastSeq == 5)
            #expect(log.state == .running)
            #expect(reply.object["job_id"] as? Int == 2)
            #expect((reply.object["lines"] as? [[String: Any]])?.first?["job_id"] as? Int == 2)
            let none = try await server.get("/api/v1/jobs/2/log?after=5").decode(JobLogResponse.self)
            #expect(none.lines.isEmpty && none.lastSeq == 5)
        }
    }

    @Test func cancelARunningJobThenConflict() async throws {
        try await withServer { server in
            let reply = try await server.post("/api/v1/jobs/2/cancel")
            #expect(reply.status == 200)
            #expect(reply.object["state"] as? String == "cancelled")
            let again = try await server.post("/api/v1/jobs/2/cancel")
            #expect(again.status == 409)
            #expect(again.error == "job 2 already ended (cancelled)")
        }
    }

    @Test(arguments: [
        ("", [JobState.finished]),
        ("?state=failed", [.failed]),
        ("?state=finished,failed", [.finished, .failed]),
        ("?state=finished&state=failed&state=cancelled", [.finished, .failed, .cancelled]),
    ])
    func clearEndedJobs(query: String, states: [JobState]) async throws {
        try await withServer { server in
            let reply = try await server.post("/api/v1/jobs/clear" + query)
            #expect(reply.status == 200)
            let body = try reply.decode(ClearResponse.self)
            #expect(body.states == states)
            #expect(await server.control.clearedStates == [states])
        }
    }

    @Test func repositoriesAndSnapshots() async throws {
        try await withServer { server in
            let repos = try await server.get("/api/v1/repositories")
            let repo = try #require((repos.object["repositories"] as? [[String: Any]])?.first)
            #expect(repo["last_check_ok"] as? Bool == true)
            #expect(repo["url"] as? String == "/mnt/nas/haven")
            let snaps = try await server.get("/api/v1/repositories/nas/snapshots")
            #expect(snaps.status == 200)
            #expect(snaps.object["repository"] as? String == "nas")
            let snap = try #require((snaps.object["snapshots"] as? [[String: Any]])?.first)
            #expect(snap["short_id"] as? String == "abababab")
            #expect(snap["time"] as? String == "2026-11-18T11:06:40.250Z")
        }
    }

    @Test func checkPassesTheDecodedSubset() async throws {
        try await withServer { server in
            let reply = try await server.post("/api/v1/repositories/nas/check?read_data_subset=10%25&priority=low")
            #expect(reply.status == 202)
            #expect((reply.object["job"] as? [String: Any])?["kind"] as? String == "check")
            let last = await server.control.lastCheck
            #expect(last?.subset == "10%" && last?.priority == "low")
        }
    }

    @Test func metricsIsPrometheusText() async throws {
        try await withServer { server in
            let reply = try await server.get("/metrics")
            #expect(reply.status == 200)
            #expect(reply.headers.first(name: "content-type") == "text/plain; version=0.0.4")
            #expect(reply.text.contains("haven_jobs_total{state=\"finished\"} 1"))
        }
    }

    @Test(arguments: [
        ("GET", "/api/v1/jobs/abc", "job id must be a positive number, got 'abc'"),
        ("GET", "/api/v1/jobs/-4/log", "job id must be a positive number, got '-4'"),
        ("POST", "/api/v1/jobs/x/cancel", "job id must be a positive number, got 'x'"),
        ("GET", "/api/v1/jobs?state=sleeping", "unknown job state 'sleeping'; use one of pending, running, finished, failed, interrupted, cancelled, skipped"),
        ("GET", "/api/v1/jobs?limit=0", "limit must be a number from 1 to 1000, got '0'"),
        ("GET", "/api/v1/jobs?limit=ten", "limit must be a number from 1 to 1000, got 'ten'"),
        ("GET", "/api/v1/jobs/2/log?after=x", "after must be a log line number (0 or more), got 'x'"),
        ("POST", "/api/v1/jobs/clear?state=running", "only ended jobs can be cleared; state 'running' is not an ended state (use finished, failed, interrupted, cancelled or skipped)"),
        ("POST", "/api/v1/jobs/clear?state=bogus", "unknown job state 'bogus'; use one of pending, running, finished, failed, interrupted, cancelled, skipped"),
        ("POST", "/api/v1/backups/documents/run?force=maybe", "force must be true or false, got 'maybe'"),
        ("POST", "/api/v1/backups/documents/run?priority=urgent", "unknown priority 'urgent'"),
        ("POST", "/api/v1/repositories/nas/check?read_data_subset=", "read_data_subset is empty; give a percentage (10%) or a part (1/5)"),
    ])
    func badParametersAre400(method: String, path: String, message: String) async throws {
        try await withServer { server in
            let reply = try await server.call(.init(rawValue: method), path)
            #expect(reply.status == 400)
            #expect(reply.error == message)
            #expect(reply.headers.first(name: "content-type")?.hasPrefix("application/json") == true)
        }
    }

    @Test(arguments: [
        ("POST", "/api/v1/backups/music/run", "no backup named 'music'"),
        ("GET", "/api/v1/jobs/42", "no job 42"),
        ("GET", "/api/v1/jobs/42/log", "no job 42"),
        ("POST", "/api/v1/jobs/42/cancel", "no job 42"),
        ("GET", "/api/v1/repositories/usb/snapshots", "no repository named 'usb'"),
        ("POST", "/api/v1/repositories/usb/check", "no repository named 'usb'"),
        ("GET", "/api/v1/nothing", "no such endpoint: GET /api/v1/nothing"),
        ("GET", "/", "no such endpoint: GET /"),
        ("DELETE", "/api/v1/jobs/1/nothing", "no such endpoint: DELETE /api/v1/jobs/1/nothing"),
    ])
    func unknownThingsAre404(method: String, path: String, message: String) async throws {
        try await withServer { server in
            let reply = try await server.call(.init(rawValue: method), path)
            #expect(reply.status == 404)
            #expect(reply.error == message)
        }
    }

    @Test(arguments: [
        ("DELETE", "/api/v1/jobs/1", "GET"),
        ("GET", "/api/v1/jobs/clear", "POST"),
        ("GET", "/api/v1/jobs/42/cancel", "POST"),
        ("PUT", "/api/v1/status", "GET"),
        ("GET", "/api/v1/backups/home/run", "POST"),
        ("POST", "/api/v1/repositories", "GET"),
    ])
    func knownPathsWithAnotherMethodAre405(method: String, path: String, allowed: String) async throws {
        try await withServer { server in
            let reply = try await server.call(.init(rawValue: method), path)
            #expect(reply.status == 405, "\(method) \(path)")
            #expect(reply.headers.first(name: "allow") == allowed)
            #expect(reply.error == "\(method) is not allowed on \(path); use \(allowed)")
        }
    }

    @Test func internalErrorsAreGenericAndLogged() async throws {
        struct Boom: Error, CustomStringConvertible { var description: String { "database file /var/lib/haven/state.db is corrupt" } }
        let control = FakeDaemon()
        await control.setStatusError(Boom())
        let capture = LogCapture()
        try await withServer(control: control, logger: capture.logger) { server in
            let reply = try await server.get("/api/v1/status")
            #expect(reply.status == 500)
            #expect(reply.error == "internal error; see the daemon's log")
            #expect(!reply.text.contains("state.db"))
        }
        #expect(capture.lines.withLock { $0.contains { $0.hasPrefix("error") && $0.contains("state.db") } })
    }

    @Test func accessLinesGoToTheLogger() async throws {
        let capture = LogCapture()
        try await withServer(logger: capture.logger) { server in
            _ = try await server.get("/api/v1/jobs/1")
        }
        #expect(capture.lines.withLock { $0.contains { $0.hasPrefix("info GET /api/v1/jobs/1 200 ") } })
    }
}
