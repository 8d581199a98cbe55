import Foundation
import HavenCore
@testable import HavenStorageS3
import HavenTestSupport
import Testing

// The shared storage conformance cases (HavenTestSupport/StorageConformance.swift), run against a real SeaweedFS
// S3 gateway, plus S3 specifics: continuation of long listings, multipart uploads, and a repository restic can check.

private func havenError(_ body: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async -> HavenError? {
    do {
        try await body()
        Issue.record("expected a HavenError, nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as HavenError {
        return e
    } catch {
        Issue.record("expected a HavenError, got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
    }
    return nil
}


private func currentServer() throws -> SeaweedServer {
    try #require(SeaweedServer.current, "no SeaweedFS server (the suite trait starts one)")
}

/// An S3Storage at a fresh prefix of a shared bucket (or a fresh bucket), shut down after `body`.
private func withStorage(bucket: String = "haven-test", create: Bool = true,
                         multipartThreshold: Int = 64 << 20, partSize: Int = 16 << 20,
                         _ body: (S3Storage) async throws -> Void) async throws {
    let server = try currentServer()
    let prefix = "t-" + UUID().uuidString.lowercased().prefix(12)
    var env = server.environment
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    let location = try S3Location.parse("s3:\(server.endpoint)/\(bucket)/\(prefix)", environment: env)
    let storage = S3Storage(location: location, credentials: try S3Credentials.fromEnvironment(env),
                            multipartThreshold: multipartThreshold, partSize: partSize)
    do {
        if create { try await storage.create() }
        try await body(storage)
    } catch {
        try? await storage.shutdown()
        throw error
    }
    try await storage.shutdown()
}

/// An S3Storage at a fresh prefix of the shared bucket, not yet created; `finish` shuts its client down.
private func s3UnderTest() throws -> StorageUnderTest {
    let server = try currentServer()
    let prefix = "t-" + UUID().uuidString.lowercased().prefix(12)
    var env = server.environment
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    let location = try S3Location.parse("s3:\(server.endpoint)/haven-test/\(prefix)", environment: env)
    let storage = S3Storage(location: location, credentials: try S3Credentials.fromEnvironment(env))
    return StorageUnderTest(storage: storage, finish: { try? await storage.shutdown() })
}

@Suite("S3Storage against SeaweedFS", .seaweedFS)
struct S3StorageTests {

    @Test("conformance", arguments: StorageConformance.allCases)
    func conformance(_ check: StorageConformance) async throws {
        try await check.run { try s3UnderTest() }
    }

    @Test("listing more than 1000 objects follows continuation tokens")
    func longListing() async throws {
        try await withStorage { s in
            let count = 1100
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        for i in stride(from: worker, to: count, by: 8) {
                            try await s.save(Handle(.snapshot, ID.hash(Array("snap-\(i)".utf8))), [UInt8(i & 255)])
                        }
                    }
                }
                try await group.waitForAll()
            }
            let listed = try await s.list(.snapshot)
            #expect(listed.count == count)
            #expect(Set(listed.map(\.name)) == Set((0..<count).map { ID.hash(Array("snap-\($0)".utf8)).hex }))
            #expect(listed.allSatisfy { $0.size == 1 })
            #expect(try await s.list(.index).isEmpty)
        }
    }

    @Test("create makes a missing bucket, and fails once a config exists")
    func createTwice() async throws {
        let bucket = "haven-new-" + UUID().uuidString.lowercased().prefix(8)
        try await withStorage(bucket: bucket, create: false) { s in
            try await s.create()
            #expect(try await s.list(.pack).isEmpty)
            try await s.save(.config, [1, 2, 3])
            let e = await havenError { try await s.create() }
            #expect(e?.code == .invalidArgument)
            #expect(e?.message.contains(s.location) == true, "\(e?.message ?? "")")
            #expect(try await s.load(.config) == [1, 2, 3])
        }
    }

    @Test("multipart upload: 12 MiB in 5 MiB parts")
    func multipart() async throws {
        try await withStorage(multipartThreshold: 6 << 20, partSize: 5 << 20) { s in
            let data = SeededRandom.bytes(seed: 12, 12 << 20)
            let h = Handle(.pack, ID.hash(data))
            try await s.save(h, data)
            #expect(try await s.stat(h) == data.count)
            #expect(ID.hash(try await s.load(h)) == ID.hash(data))
            let at = (5 << 20) - 100
            #expect(try await s.load(h, offset: at, length: 200) == Array(data[at..<(at + 200)]))
            // Below the threshold, a plain PUT.
            let small = SeededRandom.bytes(seed: 13, 1 << 20)
            try await s.save(Handle(.pack, ID.hash(small)), small)
            #expect(Set(try await s.list(.pack)) == [StoredFile(name: h.name, size: data.count), StoredFile(name: ID.hash(small).hex, size: small.count)])
        }
    }

    @Test("multipart upload from a spool file: 12 MiB + 7 bytes in 5 MiB parts, each read from the file")
    func spooledMultipart() async throws {
        try await withStorage(multipartThreshold: 6 << 20, partSize: 5 << 20) { s in
            let data = SeededRandom.bytes(seed: 14, (12 << 20) + 7)
            let spool = try SpoolFile.forPack(of: s)
            defer { spool.close() }
            try spool.write(Array(data[..<1000]))
            try spool.write(Array(data[1000...]))
            let h = Handle(.pack, try spool.id())
            try await s.save(h, spooled: spool)
            #expect(try await s.stat(h) == data.count)
            #expect(ID.hash(try await s.load(h)) == ID.hash(data))
            let at = (10 << 20) - 3
            #expect(try await s.load(h, offset: at, length: 9) == Array(data[at..<(at + 9)]))
            // An object assembled from parts has the ETag "<hash of the parts' hashes>-<number of parts>".
            let head = try await s.send(.HEAD, key: s.endpoint.key(h.path), what: "test")
            let etag = head.headers.first(name: "etag") ?? ""
            #expect(etag.hasSuffix("-3\""), "ETag \(etag)")
        }
    }

    @Test("a reader gets its whole range from one GET, read in pieces as the caller asks")
    func readerIsOneRequest() async throws {
        try await withStorage { s in
            let data = SeededRandom.bytes(seed: 15, (9 << 20) + 11)
            let h = Handle(.pack, ID.hash(data))
            try await s.save(h, data)
            let before = s.requestsSent
            let back = try await s.withReader(h, offset: 3, length: data.count - 3) { reader in
                var out: [UInt8] = []
                while reader.remaining > 0 { out += try await reader.read(min(reader.remaining, 1 << 20)) }
                return out
            }
            #expect(s.requestsSent - before == 1, "\(s.requestsSent - before) requests for one reader")
            expectSameBytes(back, data[3...])
            // Through the decorators the CLI puts around it, still one request.
            let decorated = RetryingStorage(ConcurrencyLimitedStorage(
                RateLimitedStorage(s, uploadBytesPerSecond: nil, downloadBytesPerSecond: nil), connections: 2))
            let again = s.requestsSent
            let tail = try await decorated.withReader(h, offset: 5 << 20, length: 4 << 20) { reader in
                let a = try await reader.read(1 << 20)
                return try await a + reader.read(3 << 20)
            }
            #expect(s.requestsSent - again == 1)
            expectSameBytes(tail, data[(5 << 20)..<(9 << 20)])
        }
    }

    @Test("a repository written by Haven passes restic check --read-data")
    func resticChecksHavenRepository() async throws {
        let server = try currentServer()
        let restic = try #require(Run.which("restic"), "restic is not installed")
        let bucket = "haven-repo-" + UUID().uuidString.lowercased().prefix(8)
        let url = "s3:\(server.endpoint)/\(bucket)/repo"
        let source = TempDir("haven-s3-source")
        defer { withExtendedLifetime(source) {} }
        var rng = SeededRandom(seed: 77)
        try Fixture.mkdir(source.sub("dir"))
        try Fixture.mkdir(source.sub("dir/sub"))
        try Fixture.write(source.sub("small.txt"), Array("hello S3\n".utf8))
        try Fixture.write(source.sub("dir/random.bin"), rng.bytes(3 << 20))
        try Fixture.write(source.sub("dir/sub/empty"), [])
        try Fixture.write(source.sub("dir/sub/zeros"), [UInt8](repeating: 0, count: 100_000))

        let storage = try S3Storage(url: url, environment: server.environment)
        var snapshotID: ID?
        do {
            let repo = try await Repository.initialize(storage: storage, password: "s3-secret", kdf: .testing)
            var options = BackupOptions(paths: [source.path])
            options.fileConcurrency = 2
            let result = try await Archiver.backup(repository: repo, options: options)
            snapshotID = result.snapshotID
            #expect(result.warnings.isEmpty)
        } catch {
            try? await storage.shutdown()
            throw error
        }
        try await storage.shutdown()
        let id = try #require(snapshotID)

        var env = server.environment
        env["RESTIC_PASSWORD"] = "s3-secret"
        let check = try await Run.process(restic, ["-r", url, "--no-cache", "check", "--read-data"], environment: env, timeout: 300)
        #expect(check.status == 0, "\(check)")
        let snapshots = try await Run.process(restic, ["-r", url, "--no-cache", "snapshots", "--json"], environment: env, timeout: 120)
        #expect(snapshots.status == 0, "\(snapshots)")
        #expect(snapshots.stdout.contains(id.hex), "\(snapshots.stdout)")
        let target = TempDir("haven-s3-restore")
        defer { withExtendedLifetime(target) {} }
        let restore = try await Run.process(restic, ["-r", url, "--no-cache", "restore", id.hex, "--target", target.path], environment: env, timeout: 300)
        #expect(restore.status == 0, "\(restore)")
        let restored = target.path + source.path
        expectFileBytes(restored + "/dir/random.bin", try #require(FileManager.default.contents(atPath: source.sub("dir/random.bin"))))
        #expect(FileManager.default.contents(atPath: restored + "/small.txt") == Data("hello S3\n".utf8))
    }
}

@Suite("S3Storage error reporting")
struct S3ErrorTests {
    @Test("a wrong secret key gives a clear access-denied error")
    func wrongCredentials() async throws {
        let dir = TempDir("haven-s3-identities")
        defer { withExtendedLifetime(dir) {} }
        let config = dir.sub("s3.json")
        try Fixture.write(config, Array("""
            {"identities": [{"name": "admin", "credentials": [{"accessKey": "goodkey", "secretKey": "goodsecret"}],
              "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
            """.utf8))
        let server = try await SeaweedServer.start(extraArguments: ["-s3.config=\(config)"])
        defer { server.stop() }
        let good = try S3Storage(url: "s3:\(server.endpoint)/secured/repo",
                                 environment: ["AWS_ACCESS_KEY_ID": "goodkey", "AWS_SECRET_ACCESS_KEY": "goodsecret"])
        let bad = try S3Storage(url: "s3:\(server.endpoint)/secured/repo",
                                environment: ["AWS_ACCESS_KEY_ID": "goodkey", "AWS_SECRET_ACCESS_KEY": "wrong"])
        do {
            try await good.create()
            try await good.save(.config, [1, 2, 3])
            let e = await havenError { _ = try await bad.load(.config) }
            #expect(e?.code == .io)
            #expect(e?.message.contains("access denied") == true, "\(e.map { "\($0)" } ?? "")")
            #expect(e?.message.contains("check the credentials") == true)
            #expect(e?.message.contains("SignatureDoesNotMatch") == true, "\(e.map { "\($0)" } ?? "")")
            let l = await havenError { _ = try await bad.list(.snapshot) }
            #expect(l?.message.contains("access denied") == true, "\(l.map { "\($0)" } ?? "")")
        } catch {
            try? await good.shutdown()
            try? await bad.shutdown()
            throw error
        }
        try await good.shutdown()
        try await bad.shutdown()
    }

    @Test("an unreachable endpoint is a temporary I/O error after bounded retries")
    func unreachable() async throws {
        let storage = S3Storage(location: try S3Location.parse("s3:http://127.0.0.1:1/b", environment: [:]),
                                credentials: S3Credentials(accessKeyID: "a", secretAccessKey: "b"), connectTimeoutSeconds: 1)
        let e = await havenError { _ = try await storage.stat(.config) }
        try await storage.shutdown()
        #expect(e?.code == .io)
        #expect(e?.message.contains("temporary") == true, "\(e.map { "\($0)" } ?? "")")
    }
}
