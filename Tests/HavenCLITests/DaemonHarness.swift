import AsyncHTTPClient
import Foundation
import HavenDaemon
import HavenTestSupport
import NIOCore
import NIOHTTP1
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A real `haven daemon` process on a temporary config, listening on a loopback port it picks itself.
final class DaemonProcess: @unchecked Sendable {
    let process = Process()
    let configPath: String
    private let lock = NSLock()
    private var lines: [String] = []
    private(set) var port = 0
    let client = HTTPClient(eventLoopGroupProvider: .singleton)

    /// Starts the daemon and waits (≤ 60 s) until its API answers.
    init(config: String, environment: [String: String], extraArguments: [String] = []) async throws {
        configPath = config
        process.executableURL = URL(fileURLWithPath: try HavenBinary.path())
        process.arguments = ["daemon", "--config", config, "--listen", "127.0.0.1:0"] + extraArguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        let fd = err.fileHandleForReading.fileDescriptor
        try process.run()
        Thread { [self] in
            var pending: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 8192)
            while true {
                let n = read(fd, &buf, buf.count)
                if n <= 0 { break }
                pending += buf[0..<n]
                while let nl = pending.firstIndex(of: 10) {
                    let line = String(decoding: pending[..<nl], as: UTF8.self)
                    pending.removeSubrange(...nl)
                    lock.withLock { lines.append(line) }
                }
            }
        }.start()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if let line = log.first(where: { $0.contains("API listening") }),
               let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let p = obj["port"] as? Int {
                port = p
                return
            }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let output = log.joined(separator: "\n")
        terminateHard()
        try? await client.shutdown()
        throw FixtureError.failed("the daemon did not start listening within 60 s:\n\(output)")
    }

    var log: [String] { lock.withLock { lines } }

    /// Log lines as JSON objects.
    var events: [[String: Any]] {
        log.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    struct Response {
        var status: Int
        var body: Data
        var json: Any? { try? JSONSerialization.jsonObject(with: body) }
        var object: [String: Any] { json as? [String: Any] ?? [:] }
    }

    func request(_ method: HTTPMethod, _ path: String, headers: [(String, String)] = []) async throws -> Response {
        var r = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        r.method = method
        for (k, v) in headers { r.headers.add(name: k, value: v) }
        let response = try await client.execute(r, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 16 << 20)
        return Response(status: Int(response.status.code), body: Data(body.readableBytesView))
    }

    func get(_ path: String) async throws -> Response { try await request(.GET, path) }
    func post(_ path: String) async throws -> Response { try await request(.POST, path) }

    func job(_ id: Int64) async throws -> JobRecord {
        let r = try await get("/api/v1/jobs/\(id)")
        guard r.status == 200 else { throw FixtureError.failed("GET job \(id): \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
        return try JSONDecoder.haven.decode(JobRecord.self, from: r.body)
    }

    struct JobList: Decodable { var jobs: [JobRecord] }

    func jobs() async throws -> [JobRecord] {
        let r = try await get("/api/v1/jobs")
        return try JSONDecoder.haven.decode(JobList.self, from: r.body).jobs
    }

    /// Queues a backup through the API and returns its job.
    func run(_ backup: String, query: String = "") async throws -> EnqueueResult {
        let r = try await post("/api/v1/backups/\(backup)/run\(query)")
        guard r.status == 200 || r.status == 202 else {
            throw FixtureError.failed("POST run \(backup): \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        }
        return try JSONDecoder.haven.decode(EnqueueResult.self, from: r.body)
    }

    /// Polls a job until `done` holds, at most `timeout` seconds.
    func waitFor(_ id: Int64, timeout: Double = 120, _ done: (JobRecord) -> Bool) async throws -> JobRecord {
        let deadline = Date().addingTimeInterval(timeout)
        var last: JobRecord?
        while Date() < deadline {
            let j = try await job(id)
            if done(j) { return j }
            last = j
            try await Task.sleep(for: .milliseconds(100))
        }
        throw FixtureError.failed("job \(id) did not reach the expected state within \(timeout) s; last: \(String(describing: last))\nlog:\n\(log.suffix(30).joined(separator: "\n"))")
    }

    func waitUntilEnded(_ id: Int64, timeout: Double = 120) async throws -> JobRecord {
        try await waitFor(id, timeout: timeout) { $0.state.isDone }
    }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    /// Waits for the process to exit; returns its status, or nil after `timeout` seconds.
    func waitForExit(timeout: Double) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        return process.isRunning ? nil : process.terminationStatus
    }

    func terminateHard() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Stops the daemon with SIGTERM (SIGKILL after 30 s) and closes the HTTP client.
    func stop() async {
        if process.isRunning {
            signal(SIGTERM)
            if await waitForExit(timeout: 30) == nil { terminateHard() }
        }
        try? await client.shutdown()
    }
}

/// A temporary config with one local repository (initialized) and a source folder.
struct DaemonSetup {
    let tmp: TempDir
    let cli: CLI
    var repo: String { tmp.sub("repo") }
    var source: String { tmp.sub("src") }
    var state: String { tmp.sub("state") }
    var configPath: String { tmp.sub("haven.yml") }

    init(_ label: String) async throws {
        tmp = TempDir(label)
        cli = try CLI()
        try Fixture.mkdir(source)
        for i in 0..<20 {
            try Fixture.write(source + "/file\(i).txt", SeededRandom.bytes(seed: UInt64(i + 1), 2000 + i * 100))
        }
        try await cli.ok(["init", "-r", repo])
        try Fixture.write(tmp.sub("pass"), Array(cli.password.utf8))
    }

    /// Writes the config: `backups` is the YAML under `backups:` (indented by 2), using `REPO` as the repository name.
    func writeConfig(backups: String, extra: String = "", extraRepositories: String = "") throws {
        let yaml = """
        host: testhost
        state_dir: \(state)
        log:
          format: json
          level: debug
        api:
          listen: 127.0.0.1:0
        \(extra)
        repositories:
          main:
            url: \(repo)
            password_file: \(tmp.sub("pass"))
        \(extraRepositories)
        backups:
        \(backups)
        """
        try Fixture.write(configPath, Array(yaml.utf8))
    }

    var env: [String: String] { ["HAVEN_KDF_PARAMS": "1024,8,1", "TZ": "UTC"] }

    func startDaemon() async throws -> DaemonProcess {
        try await DaemonProcess(config: configPath, environment: env)
    }

    func snapshotCount() async throws -> Int {
        let r = try await cli.ok(["-r", repo, "snapshots", "--json"])
        return CLI.jsonArray(r).count
    }
}
