import Foundation
import HavenDaemon
import HavenServer
import Testing

/// The `haven` client commands (status, run, jobs, log, cancel) against a live API on a fake daemon.
/// `haven` next to the test bundle (both are products of the same build), or HAVEN_BINARY.
enum HavenBinary {
    static let path: String? = {
        if let path = ProcessInfo.processInfo.environment["HAVEN_BINARY"] { return path }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("haven").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir.deleteLastPathComponent()
        }
        return nil
    }()
}

@Suite("haven client commands", .timeLimit(.minutes(2)), .enabled(if: HavenBinary.path != nil, "the haven binary is not built"))
struct ClientCommandTests {

    static func haven(_ arguments: [String], environment: [String: String] = [:]) async throws -> ProcessResult {
        var env = ProcessInfo.processInfo.environment
        for key in ["HAVEN_SERVER", "HAVEN_API_USER", "HAVEN_API_PASSWORD", "HAVEN_API_TOKEN"] { env[key] = nil }
        env.merge(environment) { $1 }
        return try await runProcess(try #require(HavenBinary.path), arguments, environment: env)
    }

    @Test func statusPrintsTablesAndJSON() async throws {
        try await withServer { server in
            let url = "http://127.0.0.1:\(server.port)"
            let text = try await Self.haven(["status", "--server", url])
            #expect(text.code == 0, "\(text.stderr)")
            #expect(text.stdout.contains("Haven 0.1.0 on laptop"))
            #expect(text.stdout.contains("Running jobs:"))
            #expect(text.stdout.contains("50.0%"))
            #expect(text.stdout.contains("repository is locked"))
            #expect(text.stdout.contains("documents"))
            let json = try await Self.haven(["status", "--json"], environment: ["HAVEN_SERVER": url])
            #expect(json.code == 0)
            #expect(try JSONDecoder.haven.decode(StatusReport.self, from: Data(json.stdout.utf8)).host == "laptop")
        }
    }

    @Test func runJobsLogCancel() async throws {
        try await withServer { server in
            let url = "http://127.0.0.1:\(server.port)"
            let run = try await Self.haven(["run", "documents", "--priority", "high", "--server", url])
            #expect(run.code == 0, "\(run.stderr)")
            #expect(run.stdout.contains("queued backup documents as job 4 (priority high)"))
            let skipped = try await Self.haven(["run", "photos", "--server", url])
            #expect(skipped.stdout.contains("skipped backup photos: last success 1h ago"))
            let forced = try await Self.haven(["run", "photos", "--force", "--server", url])
            #expect(forced.stdout.contains("queued backup photos"))
            let unknown = try await Self.haven(["run", "music", "--server", url])
            #expect(unknown.code == 1)
            #expect(unknown.stderr.contains("no backup named 'music'"))

            let jobs = try await Self.haven(["jobs", "--state", "failed", "--server", url])
            #expect(jobs.code == 0)
            #expect(jobs.stdout.contains("repository is locked"))
            #expect(!jobs.stdout.contains("photos"))

            let log = try await Self.haven(["log", "2", "--server", url])
            #expect(log.stdout.split(separator: "\n").count == 5)
            #expect(log.stdout.contains("INFO    line 5"))

            let cancel = try await Self.haven(["cancel", "2", "--server", url])
            #expect(cancel.stdout.contains("job 2 is cancelled"))
            let again = try await Self.haven(["cancel", "2", "--server", url])
            #expect(again.code == 1)
            #expect(again.stderr.contains("job 2 already ended (cancelled)"))
        }
    }

    @Test func logFollowStopsWhenTheJobEnds() async throws {
        try await withServer { server in
            let url = "http://127.0.0.1:\(server.port)"
            async let follow = Self.haven(["log", "2", "--follow", "--interval", "0.2", "--server", url])
            try await Task.sleep(for: .milliseconds(800))
            await server.control.appendLog("almost done")
            await server.control.setState(2, .finished)
            let result = try await follow
            #expect(result.code == 0, "\(result.stderr)")
            #expect(result.stdout.contains("line 1") && result.stdout.contains("almost done"))
            #expect(result.stderr.contains("job 2 finished"))
        }
    }

    @Test func credentialsFromFlagsAndEnvironment() async throws {
        try await withServer(users: testUsers, tokens: ["tok-1"]) { server in
            let url = "http://127.0.0.1:\(server.port)"
            let none = try await Self.haven(["jobs", "--server", url])
            #expect(none.code == 1)
            #expect(none.stderr.contains("requires credentials: pass --user NAME with the password in HAVEN_API_PASSWORD, or --token TOKEN"))
            let wrong = try await Self.haven(["jobs", "--server", url, "--user", "alice"], environment: ["HAVEN_API_PASSWORD": "nope"])
            #expect(wrong.code == 1)
            #expect(wrong.stderr.contains("rejected API user 'alice'"))
            let badToken = try await Self.haven(["jobs", "--server", url], environment: ["HAVEN_API_TOKEN": "x"])
            #expect(badToken.stderr.contains("rejected the bearer token: check --token/HAVEN_API_TOKEN"))
            let user = try await Self.haven(["jobs", "--server", url], environment: ["HAVEN_API_USER": "alice", "HAVEN_API_PASSWORD": "secret"])
            #expect(user.code == 0, "\(user.stderr)")
            let token = try await Self.haven(["jobs", "--server", url, "--token", "tok-1"])
            #expect(token.code == 0, "\(token.stderr)")
        }
    }

    @Test func unreachableDaemonIsAClearError() async throws {
        // A port that was just free: bind a server, note its port, stop it.
        var freePort = 0
        try await withServer { server in freePort = server.port }
        let url = "http://127.0.0.1:\(freePort)"
        let result = try await Self.haven(["status", "--server", url])
        #expect(result.code == 1)
        #expect(result.stderr.contains("cannot reach the Haven daemon at \(url): connection refused — is `haven daemon` running?"),
                "\(result.stderr)")
    }

    @Test func serverFromTheConfigFile() async throws {
        try await withServer { server in
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("haven-client-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let config = dir.appendingPathComponent("haven.yml")
            try """
            state_dir: \(dir.path)/state
            api:
              listen: 127.0.0.1:\(server.port)
            repositories:
              nas:
                url: \(dir.path)/repo
                password_file: \(dir.path)/pass
            backups:
              documents:
                paths: [\(dir.path)]
                repositories: [nas]
            """.write(to: config, atomically: true, encoding: .utf8)
            let result = try await Self.haven(["jobs", "--config", config.path])
            #expect(result.code == 0, "\(result.stderr)")
            #expect(result.stdout.contains("documents"))
        }
    }
}
