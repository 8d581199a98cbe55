import Foundation
import HavenCore
@testable import HavenStorageS3
import HavenTestSupport
import Testing

// The storage conformance cases of HavenCoreTests/StorageTests.swift, run against a real SeaweedFS S3 gateway,
// plus S3 specifics: continuation of long listings, multipart uploads, and a repository restic can check.

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

private func randomID(_ rng: inout SeededRandom) -> ID { ID(rng.bytes(32)) }

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

@Suite("S3Storage against SeaweedFS", .seaweedFS)
struct S3StorageTests {

    @Test("save, load, stat and exists for every file type")
    func saveLoadStat() async throws {
        try await withStorage { s in
            var rng = SeededRandom(seed: 1)
            var saved: [(Handle, [UInt8])] = [(.config, rng.bytes(155))]
            for type in FileType.allCases where type != .config {
                saved.append((Handle(type, randomID(&rng)), rng.bytes(Int(rng.next() % 3000) + 1)))
            }
            saved.append((Handle(.snapshot, randomID(&rng)), []))
            for (h, data) in saved { try await s.save(h, data) }
            for (h, data) in saved {
                #expect(try await s.load(h) == data, "\(h)")
                #expect(try await s.stat(h) == data.count, "\(h)")
                #expect(try await s.exists(h), "\(h)")
            }
        }
    }

    @Test("load with offset and length")
    func loadRange() async throws {
        try await withStorage { s in
            let data = SeededRandom.bytes(seed: 2, 10_000)
            let h = Handle(.pack, ID.hash(data))
            try await s.save(h, data)
            for (offset, length) in [(0, 10_000), (0, 1), (1, 1), (4321, 1234), (9999, 1), (10_000, 0), (0, 0), (5000, 5000)] {
                #expect(try await s.load(h, offset: offset, length: length) == Array(data[offset..<(offset + length)]),
                        "offset \(offset) length \(length)")
            }
            for offset in [0, 1, 9000, 10_000] {
                #expect(try await s.load(h, offset: offset, length: nil) == Array(data[offset...]), "offset \(offset) to end")
            }
            for (offset, length) in [(9000, 1001), (0, 10_001), (10_000, 1)] {
                let e = await havenError { _ = try await s.load(h, offset: offset, length: length) }
                #expect(e?.code == .corrupt, "offset \(offset) length \(length): \(e.map { "\($0)" } ?? "")")
            }
        }
    }

    @Test("missing files: load, stat and remove report .notFound")
    func missingFiles() async throws {
        try await withStorage { s in
            for h in [Handle.config, Handle(.pack, ID.hash([1])), Handle(.snapshot, ID.hash([2])), Handle(.key, ID.hash([3])), Handle(.lock, ID.hash([4]))] {
                let load = await havenError { _ = try await s.load(h) }
                #expect(load?.code == .notFound, "load \(h)")
                let ranged = await havenError { _ = try await s.load(h, offset: 10, length: 5) }
                #expect(ranged?.code == .notFound, "ranged load \(h)")
                let stat = await havenError { _ = try await s.stat(h) }
                #expect(stat?.code == .notFound, "stat \(h)")
                let remove = await havenError { try await s.remove(h) }
                #expect(remove?.code == .notFound, "remove \(h)")
                let exists = try await s.exists(h)
                #expect(exists == false, "\(h)")
            }
        }
    }

    @Test("list returns exactly the files of each type with their sizes")
    func listEachType() async throws {
        try await withStorage { s in
            for type in FileType.allCases { #expect(try await s.list(type).isEmpty, "\(type) not empty after create") }
            var rng = SeededRandom(seed: 3)
            var expected: [FileType: Set<StoredFile>] = [:]
            try await s.save(.config, [1, 2, 3])
            expected[.config] = [StoredFile(name: "config", size: 3)]
            for type in FileType.allCases where type != .config {
                var files: Set<StoredFile> = []
                let count = type == .pack ? 40 : 5
                var first: ID?
                for i in 0..<count {
                    var id = randomID(&rng)
                    if type == .pack, i == 1, let first { id = ID(Array(first.bytes.prefix(1)) + rng.bytes(31)) }
                    if i == 0 { first = id }
                    let data = rng.bytes(Int(rng.next() % 500))
                    try await s.save(Handle(type, id), data)
                    files.insert(StoredFile(name: id.hex, size: data.count))
                }
                expected[type] = files
            }
            for type in FileType.allCases {
                let listed = try await s.list(type)
                #expect(Set(listed) == expected[type], "\(type)")
                #expect(listed.count == expected[type]?.count, "\(type) listed a file twice")
            }
            let victim = try #require(expected[.index]?.first)
            try await s.remove(Handle(.index, victim.name))
            #expect(Set(try await s.list(.index)) == expected[.index]!.subtracting([victim]))
            #expect(Set(try await s.list(.snapshot)) == expected[.snapshot])
            let gone = await havenError { _ = try await s.load(Handle(.index, victim.name)) }
            #expect(gone?.code == .notFound)
        }
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

    @Test("save replaces an existing file completely")
    func saveReplaces() async throws {
        try await withStorage { s in
            let h = Handle(.lock, ID.hash([9]))
            let long = SeededRandom.bytes(seed: 4, 5000), short = SeededRandom.bytes(seed: 5, 10)
            try await s.save(h, long)
            try await s.save(h, short)
            #expect(try await s.load(h) == short)
            #expect(try await s.stat(h) == short.count)
            #expect(try await s.list(.lock) == [StoredFile(name: h.name, size: short.count)])
            try await s.save(.config, long)
            try await s.save(.config, short)
            #expect(try await s.load(.config) == short)
        }
    }

    @Test("concurrent saves")
    func concurrentSaves() async throws {
        try await withStorage { s in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<48 {
                    group.addTask {
                        let data = SeededRandom.bytes(seed: UInt64(i), 20_000 + i)
                        let type: FileType = [.pack, .index, .snapshot][i % 3]
                        try await s.save(Handle(type, ID.hash(data)), data)
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await s.list(.pack).count == 16)
            #expect(try await s.list(.index).count == 16)
            #expect(try await s.list(.snapshot).count == 16)
            for f in try await s.list(.pack) {
                let data = try await s.load(Handle(.pack, f.name))
                #expect(ID.hash(data).hex == f.name, "content of \(f.name) is not what was saved")
            }
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

    @Test("20 MiB file round trip")
    func largeFile() async throws {
        try await withStorage { s in
            let data = SeededRandom.bytes(seed: 20, 20 << 20)
            let h = Handle(.pack, ID.hash(data))
            try await s.save(h, data)
            #expect(try await s.stat(h) == data.count)
            let back = try await s.load(h)
            #expect(back.count == data.count)
            #expect(ID.hash(back) == ID.hash(data))
            let mid = (10 << 20) - 7
            #expect(try await s.load(h, offset: mid, length: 1 << 20) == Array(data[mid..<(mid + (1 << 20))]))
            #expect(try await s.list(.pack) == [StoredFile(name: h.name, size: data.count)])
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
        #expect(FileManager.default.contents(atPath: restored + "/dir/random.bin") == FileManager.default.contents(atPath: source.sub("dir/random.bin")))
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
