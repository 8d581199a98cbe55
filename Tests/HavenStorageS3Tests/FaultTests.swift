import Foundation
import HavenCore
import HavenStorageS3
import HavenTestSupport
import Testing

/// Haven against SeaweedFS through `FaultProxy`: dropped, stalled and refused connections and 5xx answers
/// are retried by the storage decorator, and the repository still checks clean.
@Suite("S3 through a fault-injecting proxy", .seaweedFS)
struct FaultTests {
    struct Tools {
        let haven: String
        let server: SeaweedServer
        let env: [String: String]

        init() throws {
            // The CLI tests' settings: a fixed password and a fast KDF.
            haven = try HavenBinary.path()
            server = try #require(SeaweedServer.current, "no SeaweedFS server (the suite trait starts one)")
            env = server.environment.merging(["HAVEN_PASSWORD": "fault proxy password", "RESTIC_PASSWORD": "fault proxy password",
                                              "HAVEN_KDF_PARAMS": "1024,8,1", "TZ": "UTC",
                                              "HAVEN_CACHE_DIR": NSTemporaryDirectory() + "/haven-test-cache"]) { $1 }
        }

        func haven(_ args: [String]) async throws -> ProcessResult {
            try await Run.process(haven, args, environment: env)
        }
    }

    @Test("a backup through a flaky network succeeds thanks to retries; haven and restic check it, and it restores exactly")
    func flakyBackup() async throws {
        let t = try Tools()
        let tmp = TempDir("faults")
        let src = tmp.sub("src")
        try Fixture.standardTree(at: src, seed: 31)
        try Fixture.write(src + "/big.bin", SeededRandom.bytes(seed: 32, 6_000_000))
        // One fault of each kind, spread over the first connections (a fault closes its connection, so the
        // client keeps opening new ones); then a clean network.
        let planned: [Int: FaultProxy.Fault] = [
            2: .dropRequest(afterBytes: 150), 3: .http500, 5: .dropResponse(afterBytes: 60), 7: .slowDown,
            8: .reset, 10: .stall(milliseconds: 300), 12: .dropRequest(afterBytes: 40_000), 14: .http500,
        ]
        let proxy = try FaultProxy(upstreamPort: t.server.s3Port) { planned[$0] ?? .none }
        defer { proxy.stop() }
        let prefix = "faults/" + UUID().uuidString.lowercased().prefix(8)
        let viaProxy = "s3:http://127.0.0.1:\(proxy.port)/\(prefix)"
        let direct = "s3:\(t.server.endpoint)/\(prefix)"

        let start = Date()
        let initResult = try await t.haven(["-r", viaProxy, "-v", "init"])
        #expect(initResult.status == 0, "\(initResult)")
        let backup = try await t.haven(["-r", viaProxy, "-v", "backup", src, "-o", "s3.connections=3"])
        #expect(backup.status == 0, "\(backup)")
        // Without a cache every tree is its own request, so the faults spread over as many connections as planned.
        let check = try await t.haven(["-r", viaProxy, "-v", "--no-cache", "check", "--read-data"])
        #expect(check.status == 0, "\(check)")
        let target = tmp.sub("restored")
        let restore = try await t.haven(["-r", viaProxy, "-v", "restore", "latest", "--target", target])
        #expect(restore.status == 0, "\(restore)")
        let diffs = try TreeSnapshot(root: src).differences(from: TreeSnapshot(root: target + src))
        #expect(diffs.isEmpty, "restore through the proxy differs: \(diffs)")
        let elapsed = Date().timeIntervalSince(start)
        print("faults injected: \(proxy.faults.count) over \(proxy.connections) connections in \(Int(elapsed)) s: \(proxy.faults)")
        #expect(proxy.faults.count >= 6, "only \(proxy.faults.count) faults were injected: \(proxy.faults)")
        // With -v every retry is printed as a warning.
        let warnings = [initResult, backup, check, restore].map(\.stderr).joined()
        #expect(warnings.contains("retry 1/5"), "no retry was logged: \(warnings)")

        // restic, straight to the server, agrees that the repository is sound.
        if let restic = Run.which("restic") {
            let r = try await Run.process(restic, ["-r", direct, "check", "--read-data", "--no-cache"], environment: t.env)
            #expect(r.status == 0, "restic check failed: \(r)")
        } else {
            Issue.record("restic is not installed: it is the format oracle (apt-get install restic)")
        }
    }

    @Test("a store that answers only HTTP 500 fails with a clear error within bounded time")
    func allServerErrors() async throws {
        let t = try Tools()
        let proxy = try FaultProxy(upstreamPort: t.server.s3Port) { _ in .http500 }
        defer { proxy.stop() }
        let start = Date()
        let r = try await t.haven(["-r", "s3:http://127.0.0.1:\(proxy.port)/broken/repo", "-v", "snapshots"])
        let elapsed = Date().timeIntervalSince(start)
        #expect(r.status == 1, "\(r)")
        #expect(r.stderr.contains("HTTP 500"), "\(r.stderr)")
        #expect(r.stderr.contains("gave up after 6 attempts"), "\(r.stderr)")
        #expect(r.stderr.contains("retry 5/5"), "the retries should be logged with -v: \(r.stderr)")
        // Five retries with full-jitter backoff capped at 0.25, 0.5, 1, 2 and 4 s.
        #expect(elapsed < 30, "took \(elapsed) s")
        #expect(proxy.connections >= 6)
    }

    @Test("a reader whose connection drops mid-body goes on from the byte it reached, through a new request")
    func readerResumes() async throws {
        let t = try Tools()
        // Connection 1 carries the reader's GET and is cut 3 MB into the body; later connections are forwarded.
        let proxy = try FaultProxy(upstreamPort: t.server.s3Port) { $0 == 1 ? .dropResponse(afterBytes: 3_000_000) : .none }
        defer { proxy.stop() }
        let prefix = "reader/" + UUID().uuidString.lowercased().prefix(8)
        var env = t.server.environment
        env["AWS_DEFAULT_REGION"] = "us-east-1"
        let direct = try S3Storage(url: "s3:\(t.server.endpoint)/\(prefix)", environment: env)
        try await direct.create()
        let data = SeededRandom.bytes(seed: 33, 8 << 20)
        let h = Handle(.pack, ID.hash(data))
        try await direct.save(h, data)
        try await direct.shutdown()
        let s3 = try S3Storage(url: "s3:http://127.0.0.1:\(proxy.port)/\(prefix)", environment: env, maxAttempts: 1)
        let log = Locked<[String]>([])
        let policy = RetryPolicy(baseDelay: .milliseconds(10), maxDelay: .milliseconds(50))
        let storage = RetryingStorage(s3, policy: policy) { line in log.withLock { $0.append(line) } }
        let back = try await storage.withReader(h, offset: 0, length: data.count) { reader in
            var out: [UInt8] = []
            while reader.remaining > 0 { out += try await reader.read(1 << 20) }
            return out
        }
        try await s3.shutdown()
        expectSameBytes(back, data)
        #expect(proxy.faults.count == 1, "\(proxy.faults)")
        #expect(s3.requestsSent == 2, "one GET, then one for the rest: \(s3.requestsSent)")
        #expect(log.withLock { $0 }.count == 1, "\(log.withLock { $0 })")
    }

    @Test("a partial answer for another range than the one asked for is a clear error, not damage")
    func wrongRange() async throws {
        let t = try Tools()
        // Every connection answers bytes 0-9 of a 100-byte object, whatever was asked.
        let wrong = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789"
        let proxy = try FaultProxy(upstreamPort: t.server.s3Port) { _ in .answer(wrong) }
        defer { proxy.stop() }
        var env = t.server.environment
        env["AWS_DEFAULT_REGION"] = "us-east-1"
        let s3 = try S3Storage(url: "s3:http://127.0.0.1:\(proxy.port)/wrong-range", environment: env, maxAttempts: 1)
        let h = Handle(.pack, ID.hash([1]))
        let loaded = await expectHavenError { _ = try await s3.load(h, offset: 50, length: 10) }
        let read = await expectHavenError { try await s3.withReader(h, offset: 50, length: 10) { _ = try await $0.read(10) } }
        try await s3.shutdown()
        for e in [loaded, read] {
            #expect(e?.code == .io, "\(e.map { "\($0)" } ?? "")")
            #expect(e?.message.contains("wrong range") == true && e?.message.contains("bytes 0-9/100") == true, "\(e.map { "\($0)" } ?? "")")
        }
        // The same answer for a request at offset 0 is what was asked for.
        let s3b = try S3Storage(url: "s3:http://127.0.0.1:\(proxy.port)/wrong-range", environment: env, maxAttempts: 1)
        #expect(try await s3b.load(h, offset: 0, length: 10) == Array("0123456789".utf8))
        try await s3b.shutdown()
    }

    @Test("creating a bucket retries a 404 answer from a concurrent creation, and the bucket is then made")
    func bucketCreationRace() async throws {
        let t = try Tools()
        // Connection 1 carries the bucket HEAD, connection 2 the PUT: both answered 404 NoSuchBucket, as
        // SeaweedFS does while another client is creating the same bucket. Later connections are forwarded.
        let proxy = try FaultProxy(upstreamPort: t.server.s3Port) { $0 <= 2 ? .httpError(status: 404, code: "NoSuchBucket") : .none }
        defer { proxy.stop() }
        let bucket = "haven-race-" + UUID().uuidString.lowercased().prefix(8)
        var env = t.server.environment
        env["AWS_DEFAULT_REGION"] = "us-east-1"
        func storage(_ endpoint: String) throws -> S3Storage {
            S3Storage(location: try S3Location.parse("s3:\(endpoint)/\(bucket)/repo", environment: env),
                      credentials: try S3Credentials.fromEnvironment(env))
        }
        let viaProxy = try storage("http://127.0.0.1:\(proxy.port)")
        try await viaProxy.create()
        try await viaProxy.shutdown()
        #expect(proxy.connections >= 3, "the PUT's 404 should have been retried on a new connection")
        let direct = try storage(t.server.endpoint)
        try await direct.save(.config, [1])
        #expect(try await direct.load(.config) == [1], "the bucket should exist on the server")
        try await direct.shutdown()
    }
}
