import Foundation
import Testing
import HavenCore
import HavenStorageSFTP
import HavenTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// An SFTP storage on a fresh sshd, with the local directory behind it for inspection.
private struct Fixture2: Sendable {
    let server: SSHServer
    let root: String
    let storage: SFTPStorage

    init() throws {
        server = try SSHServer()
        root = server.dir.sub("repo")
        storage = try server.storage(root)
    }

    func leftovers() -> [String] {
        guard let e = FileManager.default.enumerator(atPath: root) else { return [] }
        var out: [String] = []
        while let rel = e.nextObject() as? String {
            if (rel as NSString).lastPathComponent.contains(".tmp-") { out.append(rel) }
        }
        return out
    }

    func storedAtLayoutPath(_ handle: Handle) -> Bool {
        var st = stat()
        return lstat(root + "/" + handle.path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    func finish() async {
        await storage.close()
        server.stop()
    }
}

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

private func prepared() async throws -> Fixture2 {
    let f = try Fixture2()
    try await f.storage.create()
    return f
}

@Suite("SFTP storage", .serialized)
struct SFTPStorageTests {

    @Test("sshd is installed")
    func sshdInstalled() {
        #expect(FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd"), "install openssh-server")
    }

    // MARK: Conformance (the cases of HavenCoreTests/StorageTests)

    @Test("save, load, stat and exists for every file type")
    func saveLoadStat() async throws {
        let s = try await prepared()
        var rng = SeededRandom(seed: 1)
        var saved: [(Handle, [UInt8])] = [(.config, rng.bytes(155))]
        for type in FileType.allCases where type != .config {
            saved.append((Handle(type, randomID(&rng)), rng.bytes(Int(rng.next() % 3000) + 1)))
        }
        saved.append((Handle(.snapshot, randomID(&rng)), []))
        for (h, data) in saved { try await s.storage.save(h, data) }
        for (h, data) in saved {
            #expect(try await s.storage.load(h) == data, "\(h)")
            #expect(try await s.storage.stat(h) == data.count, "\(h)")
            #expect(try await s.storage.exists(h), "\(h)")
            #expect(s.storedAtLayoutPath(h), "\(h) is not stored at \(h.path)")
        }
        #expect(s.leftovers().isEmpty)
        await s.finish()
    }

    @Test("load with offset and length")
    func loadRange() async throws {
        let s = try await prepared()
        let data = SeededRandom.bytes(seed: 2, 100_000)
        let h = Handle(.pack, ID.hash(data))
        try await s.storage.save(h, data)
        for (offset, length) in [(0, 100_000), (0, 1), (1, 1), (4321, 1234), (99_999, 1), (100_000, 0), (0, 0), (5000, 50_000), (32_767, 32_770)] {
            #expect(try await s.storage.load(h, offset: offset, length: length) == Array(data[offset..<(offset + length)]),
                    "offset \(offset) length \(length)")
        }
        for offset in [0, 1, 90_000, 100_000] {
            #expect(try await s.storage.load(h, offset: offset, length: nil) == Array(data[offset...]), "offset \(offset) to end")
        }
        for (offset, length) in [(90_000, 10_001), (0, 100_001), (100_000, 1), (200_000, 5)] {
            let e = await havenError { _ = try await s.storage.load(h, offset: offset, length: length) }
            #expect(e?.code == .corrupt, "offset \(offset) length \(length)")
            #expect(e?.message.contains("shorter than expected") == true)
        }
        await s.finish()
    }

    @Test("missing files: load, stat and remove report .notFound")
    func missingFiles() async throws {
        let s = try await prepared()
        for h in [Handle.config, Handle(.pack, ID.hash([1])), Handle(.snapshot, ID.hash([2])), Handle(.key, ID.hash([3])), Handle(.lock, ID.hash([4]))] {
            let load = await havenError { _ = try await s.storage.load(h) }
            #expect(load?.code == .notFound, "load \(h)")
            let ranged = await havenError { _ = try await s.storage.load(h, offset: 10, length: 5) }
            #expect(ranged?.code == .notFound, "ranged load \(h)")
            let stat = await havenError { _ = try await s.storage.stat(h) }
            #expect(stat?.code == .notFound, "stat \(h)")
            let remove = await havenError { try await s.storage.remove(h) }
            #expect(remove?.code == .notFound, "remove \(h)")
            #expect(try await s.storage.exists(h) == false)
        }
        await s.finish()
    }

    @Test("list returns exactly the files of each type with their sizes")
    func listEachType() async throws {
        let s = try await prepared()
        for type in FileType.allCases { #expect(try await s.storage.list(type).isEmpty, "\(type) not empty after create") }
        var rng = SeededRandom(seed: 3)
        var expected: [FileType: Set<StoredFile>] = [:]
        try await s.storage.save(.config, [1, 2, 3])
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
                try await s.storage.save(Handle(type, id), data)
                files.insert(StoredFile(name: id.hex, size: data.count))
            }
            expected[type] = files
        }
        // A temporary file of an interrupted save is not listed.
        let stray = ID.hash([7]).hex
        try HavenTestSupport.Fixture.write(s.root + "/data/\(stray.prefix(2))/\(stray).tmp-123", [1, 2, 3])
        try HavenTestSupport.Fixture.write(s.root + "/snapshots/\(stray).tmp-1", [1])
        for type in FileType.allCases {
            let listed = try await s.storage.list(type)
            #expect(Set(listed) == expected[type], "\(type)")
            #expect(listed.count == expected[type]?.count, "\(type) listed a file twice")
        }
        for f in expected[.pack]! {
            #expect(s.storedAtLayoutPath(Handle(.pack, f.name)), "pack \(f.name) is not under data/\(f.name.prefix(2))/")
        }
        let victim = try #require(expected[.index]?.first)
        try await s.storage.remove(Handle(.index, victim.name))
        #expect(Set(try await s.storage.list(.index)) == expected[.index]!.subtracting([victim]))
        #expect(Set(try await s.storage.list(.snapshot)) == expected[.snapshot])
        let gone = await havenError { _ = try await s.storage.load(Handle(.index, victim.name)) }
        #expect(gone?.code == .notFound)
        await s.finish()
    }

    @Test("save replaces an existing file completely")
    func saveReplaces() async throws {
        let s = try await prepared()
        let h = Handle(.lock, ID.hash([9]))
        let long = SeededRandom.bytes(seed: 4, 5000), short = SeededRandom.bytes(seed: 5, 10)
        try await s.storage.save(h, long)
        try await s.storage.save(h, short)
        #expect(try await s.storage.load(h) == short)
        #expect(try await s.storage.stat(h) == short.count)
        #expect(try await s.storage.list(.lock) == [StoredFile(name: h.name, size: short.count)])
        try await s.storage.save(.config, long)
        try await s.storage.save(.config, short)
        #expect(try await s.storage.load(.config) == short)
        #expect(s.leftovers().isEmpty)
        await s.finish()
    }

    @Test("save leaves no temporary files behind, also under concurrent saves")
    func noLeftovers() async throws {
        let s = try await prepared()
        let storage = s.storage
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<48 {
                group.addTask {
                    let data = SeededRandom.bytes(seed: UInt64(i), 20_000 + i)
                    let type: FileType = [.pack, .index, .snapshot][i % 3]
                    try await storage.save(Handle(type, ID.hash(data)), data)
                }
            }
            try await group.waitForAll()
        }
        #expect(s.leftovers().isEmpty)
        #expect(try await storage.list(.pack).count == 16)
        #expect(try await storage.list(.index).count == 16)
        #expect(try await storage.list(.snapshot).count == 16)
        for f in try await storage.list(.pack) {
            let data = try await storage.load(Handle(.pack, f.name))
            #expect(ID.hash(data).hex == f.name, "content of \(f.name) is not what was saved")
        }
        await s.finish()
    }

    @Test("create lays out restic's directories, and fails once a config exists")
    func createTwice() async throws {
        let s = try Fixture2()
        try await s.storage.create()
        for sub in ["keys", "snapshots", "index", "locks", "data", "data/00", "data/7f", "data/ff"] {
            var st = stat()
            #expect(stat(s.root + "/" + sub, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR, "\(sub) missing")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.root + "/data").count == 256)
        #expect(try await s.storage.list(.pack).isEmpty)
        try await s.storage.save(.config, [1, 2, 3])
        let e = await havenError { try await s.storage.create() }
        #expect(e?.code == .invalidArgument)
        #expect(e?.message.contains(s.storage.location.trimmingCharacters(in: CharacterSet(charactersIn: "/"))) == true, "\(e?.message ?? "")")
        #expect(try await s.storage.load(.config) == [1, 2, 3])
        await s.finish()
    }

    @Test("save creates missing pack directories on demand")
    func missingDirectories() async throws {
        let s = try Fixture2()
        // No create(): nothing exists yet, not even the root.
        let data = SeededRandom.bytes(seed: 8, 1000)
        let h = Handle(.pack, ID.hash(data))
        try await s.storage.save(h, data)
        #expect(try await s.storage.load(h) == data)
        #expect(s.storedAtLayoutPath(h))
        await s.finish()
    }

    @Test("20 MiB file round trip")
    func largeFile() async throws {
        let s = try await prepared()
        let data = SeededRandom.bytes(seed: 20, 20 << 20)
        let h = Handle(.pack, ID.hash(data))
        try await s.storage.save(h, data)
        #expect(try await s.storage.stat(h) == data.count)
        let back = try await s.storage.load(h)
        #expect(back.count == data.count)
        #expect(ID.hash(back) == ID.hash(data))
        let mid = (10 << 20) - 7
        #expect(try await s.storage.load(h, offset: mid, length: 1 << 20) == Array(data[mid..<(mid + (1 << 20))]))
        #expect(try await s.storage.list(.pack) == [StoredFile(name: h.name, size: data.count)])
        #expect(s.leftovers().isEmpty)
        await s.finish()
    }

    // MARK: Repository on SFTP

    @Test("a repository round trip through HavenCore")
    func repositoryRoundTrip() async throws {
        let s = try Fixture2()
        let repo = try await Repository.initialize(storage: s.storage, password: "sftp-test", kdf: .testing)
        let writer = BlobWriter(repository: repo, packSize: 64 * 1024)
        var blobs: [(ID, [UInt8])] = []
        for i in 0..<30 {
            let data = SeededRandom.bytes(seed: UInt64(100 + i), 5000 + i * 997)
            blobs.append((try await writer.save(.data, plaintext: data), data))
        }
        try await writer.flush()
        let tree = TempDir("haven-sftp-src")
        try HavenTestSupport.Fixture.standardTree(at: tree.sub("src"), nonUTF8Names: false)
        var options = BackupOptions(paths: [tree.sub("src")])
        options.fileConcurrency = 2
        let result = try await Archiver.backup(repository: repo, options: options)
        let snapshotID = try #require(result.snapshotID)

        let reopened = try await Repository.open(storage: try s.server.storage(s.root), password: "sftp-test")
        try await reopened.loadIndex()
        for (id, data) in blobs { #expect(try await reopened.loadBlob(id, .data) == data) }
        #expect(try await reopened.listSnapshotIDs().contains(snapshotID))
        let snapshot = try await reopened.loadSnapshot(snapshotID)
        #expect(try await reopened.loadTree(snapshot.tree).nodes.isEmpty == false)
        withExtendedLifetime(tree) {}
        await s.finish()
    }

    @Test("restic checks a repository Haven wrote over SFTP",
          .disabled("hangs: not yet diagnosed whether restic or the sftp.command hand-over; SFTP is unfinished (issue 4)"))
    func resticOracle() async throws {
        let s = try Fixture2()
        let repo = try await Repository.initialize(storage: s.storage, password: "oracle", kdf: .testing)
        let tree = TempDir("haven-sftp-src")
        try HavenTestSupport.Fixture.standardTree(at: tree.sub("src"))
        var options = BackupOptions(paths: [tree.sub("src")])
        options.fileConcurrency = 2
        _ = try await Archiver.backup(repository: repo, options: options)
        let command = s.server.command().joined(separator: " ")
        let env = ["RESTIC_PASSWORD": "oracle", "RESTIC_CACHE_DIR": s.server.dir.sub("cache")]
        let check = try await Run.process(Run.which("restic")!, ["-r", "sftp:127.0.0.1:" + s.root, "-o", "sftp.command=" + command,
                                                                 "check", "--read-data"], environment: env, timeout: 300)
        #expect(check.status == 0, "\(check)")
        let snapshots = try await Run.process(Run.which("restic")!, ["-r", "sftp:127.0.0.1:" + s.root, "-o", "sftp.command=" + command,
                                                                     "snapshots", "--json"], environment: env, timeout: 120)
        #expect(snapshots.status == 0 && snapshots.stdout.contains("\"tree\""), "\(snapshots)")
        withExtendedLifetime(tree) {}
        await s.finish()
    }

    // MARK: Failures

    @Test("an unauthorized key fails quickly with ssh's 'Permission denied'",
          .disabled("hangs: the connection does not notice ssh exiting after an auth failure; SFTP is unfinished (issue 4)"))
    func badAuth() async throws {
        let server = try SSHServer()
        let otherKey = server.dir.sub("other_key")
        try SSHServer.keygen(otherKey)
        let storage = try server.storage(server.dir.sub("repo"), key: otherKey)
        let start = Date()
        let e = await havenError { _ = try await storage.list(.snapshot) }
        #expect(e?.code == .io)
        #expect(e?.message.contains("Permission denied") == true, "\(e?.message ?? "")")
        #expect(Date().timeIntervalSince(start) < 20)
        // Every later call fails the same way instead of hanging.
        let again = await havenError { _ = try await storage.stat(.config) }
        #expect(again?.message.contains("Permission denied") == true)
        server.stop()
    }

    @Test("an unreachable port fails with a clear error")
    func unreachable() async throws {
        let server = try SSHServer()
        let storage = try server.storage(server.dir.sub("repo"), port: SSHServer.freePort())
        let start = Date()
        let e = await havenError { try await storage.create() }
        #expect(e?.code == .io)
        #expect(e?.message.contains("Connection refused") == true, "\(e?.message ?? "")")
        #expect(Date().timeIntervalSince(start) < 20)
        server.stop()
    }

    @Test("a server that never answers times out; garbage is rejected without crashing")
    func hostileServers() async throws {
        let silent = SFTPStorage(location: try SFTPLocation.parse("sftp:nowhere:/x"), command: ["/bin/sh", "-c", "sleep 30"], handshakeTimeout: 1)
        let e1 = await havenError { _ = try await silent.stat(.config) }
        #expect(e1?.code == .io)
        #expect(e1?.message.contains("timed out") == true, "\(e1?.message ?? "")")

        // A huge length prefix must not make us allocate it.
        let huge = SFTPStorage(location: try SFTPLocation.parse("sftp:nowhere:/x"),
                               command: ["/bin/sh", "-c", "printf '\\377\\377\\377\\377'; sleep 5"])
        let e2 = await havenError { _ = try await huge.stat(.config) }
        #expect(e2?.message.contains("packet length") == true, "\(e2?.message ?? "")")

        // A version reply followed by a truncated STATUS for request 1.
        let truncated = SFTPStorage(location: try SFTPLocation.parse("sftp:nowhere:/x"),
                                    command: ["/bin/sh", "-c", "printf '\\0\\0\\0\\5\\2\\0\\0\\0\\3'; sleep 1; printf '\\0\\0\\0\\6\\145\\0\\0\\0\\1\\0'; sleep 5"])
        let e3 = await havenError { _ = try await truncated.stat(.config) }
        #expect(e3?.code == .io, "\(e3?.message ?? "")")

        // A program that exits at once: its stderr is in the error.
        let exits = SFTPStorage(location: try SFTPLocation.parse("sftp:nowhere:/x"), command: ["/bin/sh", "-c", "echo 'Host key verification failed.' >&2; exit 255"])
        let e4 = await havenError { _ = try await exits.stat(.config) }
        #expect(e4?.message.contains("Host key verification failed.") == true, "\(e4?.message ?? "")")
        #expect(e4?.message.contains("255") == true, "\(e4?.message ?? "")")
    }

    // MARK: Locations

    @Test("parsing repository locations")
    func parsing() throws {
        let a = try SFTPLocation.parse("sftp:user@host:/srv/repo/")
        #expect(a == SFTPLocation(user: "user", host: "host", port: nil, path: "/srv/repo"))
        let b = try SFTPLocation.parse("sftp:host:backups/repo")
        #expect(b == SFTPLocation(user: nil, host: "host", port: nil, path: "backups/repo"))
        let c = try SFTPLocation.parse("sftp://user@host:2222/repo")
        #expect(c == SFTPLocation(user: "user", host: "host", port: 2222, path: "repo"))
        let d = try SFTPLocation.parse("sftp://host//srv/repo")
        #expect(d == SFTPLocation(user: nil, host: "host", port: nil, path: "/srv/repo"))
        let e = try SFTPLocation.parse("sftp://me@[::1]:22/r")
        #expect(e == SFTPLocation(user: "me", host: "::1", port: 22, path: "r"))
        #expect(SFTPStorage.defaultCommand(c) == ["ssh", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=60", "-o", "ServerAliveCountMax=3",
                                                  "-p", "2222", "-l", "user", "host", "-s", "sftp"])
        for bad in ["sftp:host", "sftp://host", "sftp://host:x/p", "sftp::/p", "s3:host:/p", "sftp://host:99999/p", "sftp:-oProxyCommand=x:/p"] {
            #expect(throws: HavenError.self, "\(bad)") { try SFTPLocation.parse(bad) }
            do { _ = try SFTPLocation.parse(bad) } catch let e as HavenError { #expect(e.code == .usage, "\(bad)") }
        }
    }
}
