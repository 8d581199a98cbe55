import Foundation
import HavenTestSupport
import Testing

/// End-to-end tests of ls, find, diff, cat, stats and key, run against the built `haven` binary.
@Suite("Inspection commands")
struct InspectCommandsTests {
    // MARK: ls

    @Test func lsListsEveryPath() async throws {
        let f = try await InspectFixture()
        let r = try await f.ok(["ls", "latest"])
        let lines = Set(r.stdout.split(separator: "\n").map(String.init))
        for p in ["", "/a.txt", "/sub", "/sub/b.txt", "/sub/deep", "/sub/deep/c.dat"] {
            #expect(lines.contains(f.src + p), "ls should list \(f.src + p); got:\n\(r.stdout)")
        }
        #expect(r.stdout.hasPrefix("snapshot "), "ls starts with the snapshot line")
    }

    @Test func lsLongShowsModeSizeAndTime() async throws {
        let f = try await InspectFixture()
        let r = try await f.ok(["ls", "-l", "latest"])
        let line = try #require(r.stdout.split(separator: "\n").first { $0.hasSuffix(" " + f.src + "/a.txt") })
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        #expect(fields.first == "-rw-r--r--")
        #expect(fields.contains("6"), "size 6 in \(line)")
        #expect(line.range(of: #"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"#, options: .regularExpression) != nil, "mtime in \(line)")
        let dirLine = try #require(r.stdout.split(separator: "\n").first { $0.hasSuffix(" " + f.src + "/sub") })
        #expect(dirLine.hasPrefix("d"))
    }

    @Test func lsJSONIsOneObjectPerLine() async throws {
        let f = try await InspectFixture()
        let r = try await f.ok(["--json", "ls", "latest"])
        let objects = try r.stdout.split(separator: "\n").map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
        }
        let first = try #require(objects.first)
        #expect(first["struct_type"] as? String == "snapshot")
        #expect((first["id"] as? String)?.count == 64)
        let nodes = objects.dropFirst()
        #expect(nodes.allSatisfy { $0["struct_type"] as? String == "node" })
        let a = try #require(nodes.first { $0["path"] as? String == f.src + "/a.txt" })
        #expect(a["name"] as? String == "a.txt")
        #expect(a["type"] as? String == "file")
        #expect(a["size"] as? Int == 6)
        #expect(a["mode"] as? Int == 0o644)
        for key in ["uid", "gid", "mtime", "atime", "ctime"] { #expect(a[key] != nil, "node has \(key)") }
        let sub = try #require(nodes.first { $0["path"] as? String == f.src + "/sub" })
        #expect(sub["type"] as? String == "dir")
    }

    @Test func lsDirectoryFilter() async throws {
        let f = try await InspectFixture()
        let flat = try await f.ok(["ls", "latest", f.src + "/sub"]).stdout
        #expect(flat.contains(f.src + "/sub/b.txt\n"))
        #expect(flat.contains(f.src + "/sub/deep\n"))
        #expect(!flat.contains(f.src + "/sub/deep/c.dat"), "without --recursive only direct entries")
        #expect(!flat.contains(f.src + "/a.txt"))
        let deep = try await f.ok(["ls", "latest", f.src + "/sub", "--recursive"]).stdout
        #expect(deep.contains(f.src + "/sub/deep/c.dat"))
        #expect(!deep.contains(f.src + "/a.txt"))

        let relative = try await f.run(["ls", "latest", "sub"])
        #expect(relative.status != 0)
        #expect(relative.stderr.contains("absolute"))
    }

    // MARK: find

    @Test func findByNamePattern() async throws {
        let f = try await InspectFixture()
        let r = try await f.ok(["find", "*.txt"])
        #expect(r.stdout.contains("Found matching entries in snapshot"))
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains(f.src + "/a.txt"))
        #expect(lines.contains(f.src + "/sub/b.txt"))
        #expect(!lines.contains(f.src + "/sub/deep/c.dat"))

        let ci = try await f.ok(["find", "-i", "A.TXT"])
        #expect(ci.stdout.split(separator: "\n").contains { $0 == f.src + "/a.txt" })

        let none = try await f.ok(["find", "nothing-like-this*"])
        #expect(!none.stdout.contains(f.src))

        let json = try await f.ok(["--json", "find", "b.txt"])
        let groups = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        #expect(groups.count == 1)
        let matches = try #require(groups.first?["matches"] as? [[String: Any]])
        #expect(matches.map { $0["path"] as? String } == [f.src + "/sub/b.txt"])
    }

    @Test func findByBlobID() async throws {
        let f = try await InspectFixture()
        let blob = try await f.contentID(of: "a.txt")
        let r = try await f.ok(["find", "--blob", String(blob.prefix(10))])
        #expect(r.stdout.contains("Found blob \(blob.prefix(8))"))
        #expect(r.stdout.contains(" ... in file \(f.src)/a.txt"))
        #expect(!r.stdout.contains("b.txt"))
    }

    // MARK: diff

    @Test func diffShowsAddedRemovedAndModified() async throws {
        let f = try await InspectFixture()
        let first = try await f.snapshotIDs().last!
        try Fixture.write(f.src + "/a.txt", Array("changed content\n".utf8))
        try Fixture.write(f.src + "/new.txt", Array("brand new\n".utf8))
        #expect(unlink(f.src + "/sub/b.txt") == 0)
        try await f.ok(["backup", f.src])
        let second = try await f.snapshotIDs().last!
        #expect(first != second)

        let r = try await f.ok(["diff", first, second])
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("M    \(f.src)/a.txt"), "diff output:\n\(r.stdout)")
        #expect(lines.contains("+    \(f.src)/new.txt"))
        #expect(lines.contains("-    \(f.src)/sub/b.txt"))
        #expect(!lines.contains { $0.hasSuffix("/c.dat") }, "unchanged files are not listed")
        #expect(r.stdout.contains("Files:           1 new,     1 removed,     1 changed"))

        let json = try await f.ok(["--json", "diff", String(first.prefix(8)), "latest"])
        let objects = json.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let changes = objects.filter { $0["message_type"] as? String == "change" }
        let byPath = Dictionary(uniqueKeysWithValues: changes.map { ($0["path"] as! String, $0["modifier"] as! String) })
        #expect(byPath == [f.src + "/a.txt": "M", f.src + "/new.txt": "+", f.src + "/sub/b.txt": "-"])
        let stats = try #require(objects.last)
        #expect(stats["message_type"] as? String == "statistics")
        #expect(stats["changed_files"] as? Int == 1)
        #expect((stats["added"] as? [String: Any])?["files"] as? Int == 1)
        #expect((stats["removed"] as? [String: Any])?["files"] as? Int == 1)
    }

    // MARK: cat

    @Test func catJSONObjects() async throws {
        let f = try await InspectFixture()
        let config = try await f.jsonObject(["cat", "config"])
        #expect(config["version"] as? Int == 2)
        #expect(config["chunker_polynomial"] is String)

        let master = try await f.jsonObject(["cat", "masterkey"])
        let mac = try #require(master["mac"] as? [String: Any])
        #expect((mac["k"] as? String).flatMap { Data(base64Encoded: $0) }?.count == 16)
        #expect((mac["r"] as? String).flatMap { Data(base64Encoded: $0) }?.count == 16)
        #expect((master["encrypt"] as? String).flatMap { Data(base64Encoded: $0) }?.count == 32)

        let snap = try await f.jsonObject(["cat", "snapshot", "latest"])
        #expect(snap["paths"] as? [String] == [f.src])
        let id = try await f.snapshotIDs().last!
        let byPrefix = try await f.jsonObject(["cat", "snapshot", String(id.prefix(6))])
        #expect(byPrefix["tree"] as? String == snap["tree"] as? String)

        let keys = try FileManager.default.contentsOfDirectory(atPath: f.repo + "/keys")
        let key = try await f.jsonObject(["cat", "key", String(keys[0].prefix(8))])
        #expect(key["kdf"] as? String == "scrypt")
    }

    @Test func catBlobAndTree() async throws {
        let f = try await InspectFixture()
        let blob = try await f.contentID(of: "a.txt")
        let r = try await f.ok(["cat", "blob", blob])
        #expect(r.stdoutData == Data("hello\n".utf8))
        let c = try await f.ok(["cat", "blob", try await f.contentID(of: "sub/deep/c.dat")])
        expectSameBytes(c.stdoutData, Data(f.cBytes))

        let tree = try await f.jsonObject(["cat", "tree", "latest:" + f.src + "/sub"])
        let names = (tree["nodes"] as? [[String: Any]])?.compactMap { $0["name"] as? String }
        #expect(names == ["b.txt", "deep"])
    }

    @Test func catRejectsBadInput() async throws {
        let f = try await InspectFixture()
        let bad = try await f.run(["cat", "nonsense"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("invalid type"), "stderr: \(bad.stderr)")
        #expect(bad.stderr.contains("snapshot") && bad.stderr.contains("masterkey"), "lists the valid types")

        let missing = try await f.run(["cat", "blob", "0000000000"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("no blob"))

        let noID = try await f.run(["cat", "snapshot"])
        #expect(noID.status != 0)
        #expect(noID.stderr.contains("needs an ID"))
    }

    // MARK: stats

    @Test func statsRestoreSizeAndRawData() async throws {
        let f = try await InspectFixture()
        let restore = try await f.jsonObject(["--json", "stats"])
        #expect(restore["total_size"] as? Int == f.totalFileBytes)
        // Every entry counts, as in restic: src's parents, src, sub, deep and the three files.
        let parents = f.src.split(separator: "/").count
        #expect(restore["total_file_count"] as? Int == parents + 2 + 3)
        #expect(restore["snapshots_count"] as? Int == 1)

        let text = try await f.ok(["stats"]).stdout
        #expect(text.contains("Stats in restore-size mode:"))
        #expect(text.contains("Total Size:"))

        let raw = try await f.jsonObject(["--json", "stats", "--mode", "raw-data"])
        // Three distinct data blobs plus one tree per directory level.
        #expect(raw["total_blob_count"] as? Int == 3 + parents + 3)
        #expect((raw["total_size"] as? Int ?? 0) > 0)
        #expect((raw["total_uncompressed_size"] as? Int ?? 0) >= f.totalFileBytes)

        let byContents = try await f.jsonObject(["--json", "stats", "--mode", "files-by-contents"])
        #expect(byContents["total_file_count"] as? Int == 3)
        #expect(byContents["total_size"] as? Int == f.totalFileBytes)

        let bad = try await f.run(["stats", "--mode", "everything"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("restore-size"))
    }

    @Test func statsIndexDescribesTheLoadedIndex() async throws {
        let f = try await InspectFixture()
        let parents = f.src.split(separator: "/").count
        let index = try await f.jsonObject(["--json", "stats", "--mode", "index"])
        #expect(index["data_blobs"] as? Int == 3)
        #expect(index["tree_blobs"] as? Int == parents + 3)
        #expect(index["index_files"] as? Int == 1)
        #expect(index["packs"] as? Int == 2, "one data pack and one tree pack")
        let bytes = try #require(index["index_memory_bytes"] as? Int)
        let perBlob = try #require(index["index_memory_per_blob"] as? Double)
        // At least the 32-byte ID of each blob; the reported ratio is bytes over blobs.
        #expect(bytes >= 32 * (3 + parents + 3))
        #expect(abs(perBlob - Double(bytes) / Double(3 + parents + 3)) < 0.1)

        let text = try await f.ok(["stats", "--mode", "index"]).stdout
        #expect(text.contains("Stats in index mode:"))
        #expect(text.contains("Data blobs"))
        #expect(text.contains("bytes per blob"))

        let withSnapshot = try await f.run(["stats", "latest", "--mode", "index"])
        #expect(withSnapshot.status != 0)
        #expect(withSnapshot.stderr.contains("leave out the snapshots"))
    }

    // MARK: key

    @Test func keyListAddRemove() async throws {
        let f = try await InspectFixture()
        let list = try await f.ok(["key", "list"])
        let current = try #require(list.stdout.split(separator: "\n").first { $0.hasPrefix("*") })
        let currentID = String(current.dropFirst().prefix(8))

        let pwFile = f.dir.sub("second-password")
        try Fixture.write(pwFile, Array("second\n".utf8))
        let added = try await f.ok(["key", "add", "--new-password-file", pwFile, "--user", "alice", "--host", "box"])
        let newID = try #require(added.stdout.split(separator: " ").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) })
        #expect(newID.count == 64)

        let keys = try #require(try JSONSerialization.jsonObject(with: await f.ok(["--json", "key", "list"]).stdoutData) as? [[String: Any]])
        #expect(keys.count == 2)
        let alice = try #require(keys.first { $0["userName"] as? String == "alice" })
        #expect(alice["hostName"] as? String == "box")
        #expect(alice["current"] as? Bool == false)

        // Both passwords open the repository.
        try await f.ok(["--password-file", pwFile, "snapshots"])

        let refused = try await f.run(["key", "remove", currentID])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("refusing"), "stderr: \(refused.stderr)")

        try await f.ok(["key", "remove", String(newID.prefix(10))])
        let gone = try await f.run(["--password-file", pwFile, "snapshots"])
        #expect(gone.status == 12, "the removed key's password no longer opens the repository: \(gone)")

        let noPassword = try await f.run(["key", "add"])
        #expect(noPassword.status != 0)
        #expect(noPassword.stderr.contains("--new-password-file"))
    }

    @Test func keyPasswdReplacesCurrentKey() async throws {
        let f = try await InspectFixture()
        let pwFile = f.dir.sub("new-password")
        try Fixture.write(pwFile, Array("changed-password\n".utf8))
        try await f.ok(["key", "passwd", "--new-password-file", pwFile])

        let old = try await f.run(["snapshots"])
        #expect(old.status == 12, "the old password must fail with exit code 12: \(old)")
        let new = try await f.ok(["--password-file", pwFile, "key", "list"])
        #expect(new.stdout.split(separator: "\n").filter { $0.hasPrefix("*") }.count == 1)
        let keys = try FileManager.default.contentsOfDirectory(atPath: f.repo + "/keys")
        #expect(keys.count == 1)
    }
}

/// A repository with one snapshot of a small tree, in its own temporary directory.
private struct InspectFixture {
    let dir = TempDir("haven-inspect")
    let binary: String
    let src: String
    let repo: String
    let cBytes: [UInt8]
    let totalFileBytes: Int

    static let env = ["HAVEN_PASSWORD": "test", "HAVEN_KDF_PARAMS": "1024,8,1", "TZ": "UTC"]

    init() async throws {
        binary = try HavenBinary.path()
        // The backup stores cleaned absolute paths; the temp dir may contain "//".
        src = "/" + (dir.path + "/src").split(separator: "/").joined(separator: "/")
        repo = dir.sub("repo")
        var rng = SeededRandom(seed: 42)
        cBytes = rng.bytes(3000)
        try Fixture.mkdir(src)
        try Fixture.write(src + "/a.txt", Array("hello\n".utf8))
        try Fixture.mkdir(src + "/sub")
        try Fixture.write(src + "/sub/b.txt", Array("second file\n".utf8))
        try Fixture.mkdir(src + "/sub/deep")
        try Fixture.write(src + "/sub/deep/c.dat", cBytes)
        totalFileBytes = 6 + 12 + 3000
        try await ok(["init"])
        try await ok(["backup", src])
    }

    func run(_ args: [String]) async throws -> ProcessResult {
        try await Run.process(binary, ["-r", repo] + args, environment: Self.env, timeout: 120)
    }

    @discardableResult
    func ok(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) async throws -> ProcessResult {
        let r = try await run(args)
        guard r.status == 0 else {
            Issue.record("haven \(args.joined(separator: " ")) failed: \(r)", sourceLocation: sourceLocation)
            throw FixtureError.failed("haven \(args.first ?? "") failed")
        }
        return r
    }

    func jsonObject(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) async throws -> [String: Any] {
        let r = try await ok(args, sourceLocation: sourceLocation)
        return try #require(try JSONSerialization.jsonObject(with: r.stdoutData) as? [String: Any],
                            "haven \(args.joined(separator: " ")) printed no JSON object: \(r.stdout)", sourceLocation: sourceLocation)
    }

    /// Snapshot IDs, oldest first.
    func snapshotIDs() async throws -> [String] {
        let r = try await ok(["--json", "snapshots"])
        let list = try JSONSerialization.jsonObject(with: r.stdoutData) as? [[String: Any]] ?? []
        return list.compactMap { $0["id"] as? String }
    }

    /// The first content blob of a file in the latest snapshot, read from `cat tree`.
    func contentID(of relative: String) async throws -> String {
        let parts = relative.split(separator: "/").map(String.init)
        let dirPath = ([src] + parts.dropLast()).joined(separator: "/")
        let tree = try await jsonObject(["cat", "tree", "latest:" + dirPath])
        let nodes = tree["nodes"] as? [[String: Any]] ?? []
        let node = try #require(nodes.first { $0["name"] as? String == parts.last })
        let content = try #require(node["content"] as? [String])
        return try #require(content.first)
    }
}
