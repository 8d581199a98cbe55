import Foundation
import Testing
@testable import HavenCore
import HavenTestSupport
#if canImport(Glibc)
import Glibc
#endif

// Engine-level backups into an in-memory repository: path patterns, backup options, parent detection,
// dry runs, warnings and the shape of the snapshot's root tree.

private func utf8(_ s: String) -> [UInt8] { Array(s.utf8) }

private func makeRepository() async throws -> (Repository, MemoryStorage) {
    let storage = MemoryStorage()
    let repo = try await Repository.initialize(storage: storage, password: "archiver-test", kdf: .testing)
    return (repo, storage)
}

private func backup(_ repo: Repository, _ paths: [String], _ configure: (inout BackupOptions) -> Void = { _ in }) async throws -> BackupResult {
    var options = BackupOptions(paths: paths)
    options.fileConcurrency = 2
    configure(&options)
    return try await Archiver.backup(repository: repo, options: options)
}

/// The tree stored for the directory at `absolute` in `snapshot` (following the intermediate directories).
private func tree(_ repo: Repository, _ snapshotID: ID?, at absolute: String) async throws -> Tree {
    let id = try #require(snapshotID, "the backup saved no snapshot")
    let snapshot = try await repo.loadSnapshot(id)
    var tree = try await repo.loadTree(snapshot.tree)
    for comp in absolute.split(separator: "/") {
        let node = try #require(tree.node(named: utf8(String(comp))), "\(comp) missing on the way to \(absolute)")
        tree = try await repo.loadTree(try #require(node.subtree, "\(comp) has no subtree"))
    }
    return tree
}

/// Every entry below `tree`, keyed by its path relative to the tree.
private func listing(_ repo: Repository, _ tree: Tree, prefix: String = "") async throws -> [String: Node] {
    var out: [String: Node] = [:]
    for n in tree.nodes {
        let path = prefix + n.displayName
        out[path] = n
        if n.type == .dir, let sid = n.subtree {
            out.merge(try await listing(repo, try await repo.loadTree(sid), prefix: path + "/")) { a, _ in a }
        }
    }
    return out
}

private func content(_ repo: Repository, _ node: Node?) async throws -> [UInt8] {
    let node = try #require(node)
    var out: [UInt8] = []
    for id in node.content { out += try await repo.loadBlob(id, .data) }
    return out
}


/// lsetxattr / lremovexattr, looked up at run time (their header is not in the Glibc module).
private func setXattr(_ path: String, _ name: String, _ value: [UInt8]?) -> Bool {
    typealias Set = @convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafeRawPointer?, Int, Int32) -> Int32
    typealias Remove = @convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Int32
    guard let h = dlopen(nil, RTLD_NOW) else { return false }
    if let value {
        guard let sym = dlsym(h, "lsetxattr") else { return false }
        return value.withUnsafeBytes { v in unsafeBitCast(sym, to: Set.self)(path, name, v.baseAddress, v.count, 0) } == 0
    }
    guard let sym = dlsym(h, "lremovexattr") else { return false }
    return unsafeBitCast(sym, to: Remove.self)(path, name) == 0
}

@Suite("Archiver")
struct ArchiverTests {

    // MARK: PathPattern

    @Test("PathPattern semantics", arguments: [
        ("*.tmp", "/a/b/x.tmp", false, true),
        ("*.tmp", "/x.tmp/y", false, true),  // a matching directory excludes what is inside
        ("*.tmp", "/x.tmp", false, true),
        ("*.tmp", "/a/b/x.tmpl", false, false),
        ("*.tmp", "/a/tmp", false, false),
        ("*.tmp", "/a/.tmp", false, true),  // * matches a leading dot, as in restic
        ("/home/*/cache", "/home/alice/cache", false, true),
        ("/home/*/cache", "/home/alice/cache/sub/file", false, true),
        ("/home/*/cache", "/srv/home/alice/cache", false, false),  // anchored at the root
        ("/home/*/cache", "/home/alice/x/cache", false, false),  // * stays inside one component
        ("/home/*/cache", "/home/cache", false, false),
        ("home/*/cache", "/srv/home/alice/cache", false, true),  // unanchored
        ("**/node_modules", "/a/b/c/node_modules", false, true),
        ("**/node_modules", "/node_modules/x/y.js", false, true),
        ("**/node_modules", "/a/node_modules_old", false, false),
        ("/a/**/z", "/a/z", false, true),
        ("/a/**/z", "/a/b/c/z/file", false, true),
        ("/a/**/z", "/b/a/z", false, false),
        ("foo/bar", "/x/foo/bar/baz", false, true),
        ("foo/bar", "/foo/bar", false, true),
        ("foo/bar", "/x/foo/baz/bar", false, false),
        ("foo/bar", "/x/afoo/bar", false, false),
        ("foo/bar", "/x/foo/barx", false, false),
        ("cache/", "/home/cache/f", false, true),  // a trailing slash is ignored
        ("file[0-9].txt", "/d/file7.txt", false, true),
        ("file[0-9].txt", "/d/filex.txt", false, false),
        ("file[!0-9].txt", "/d/filex.txt", false, true),
        ("file[!0-9].txt", "/d/file7.txt", false, false),
        ("[ab]*", "/x/bcd", false, true),
        ("[ab]*", "/x/cd", false, false),
        ("?.log", "/var/a.log", false, true),
        ("?.log", "/var/ab.log", false, false),
        ("*.JPG", "/Photos/a.jpg", false, false),
        ("*.JPG", "/Photos/a.jpg", true, true),  // case-insensitive
        ("*.jpg", "/Photos/A.JPG", true, true),
        ("/Home/USER", "/home/user/docs", true, true),
        ("/Home/USER", "/home/user/docs", false, false),
        ("/home/user", "/home/user2", false, false),
    ] as [(String, String, Bool, Bool)])
    func pathPatternSemantics(pattern: String, path: String, caseInsensitive: Bool, expected: Bool) throws {
        let p = try PathPattern(pattern, caseInsensitive: caseInsensitive)
        #expect(p.matches(path) == expected)
        #expect(p.matches(utf8(path)) == expected)
        #expect(PatternList([p]).matches(utf8(path)) == expected)
    }

    @Test("PathPattern matches names that are not UTF-8")
    func pathPatternRawBytes() throws {
        let path: [UInt8] = utf8("/data/") + [0x6c, 0x61, 0x74, 0xe9, 0xff] + utf8(".tmp")
        #expect(try PathPattern("*.tmp").matches(path))
        #expect(try PathPattern("/data/lat*").matches(path))
        #expect(try !PathPattern("/other/*").matches(path))
    }

    @Test("PathPattern: invalid patterns throw .invalidArgument", arguments: ["[", "a[b", "/x/[abc", "foo\\", "", "[[a]"])
    func invalidPatterns(pattern: String) {
        do {
            _ = try PathPattern(pattern)
            Issue.record("pattern \"\(pattern)\" was accepted")
        } catch let e as HavenError {
            #expect(e.code == .invalidArgument)
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    // MARK: Options

    @Test("excludes skip matching files and whole directories")
    func excludes() async throws {
        let dir = TempDir("haven-archiver")
        defer { withExtendedLifetime(dir) {} }
        let src = dir.sub("src")
        for d in ["", "/sub", "/sub/z.tmp", "/cache", "/sub/cache", "/proj", "/proj/node_modules", "/proj/node_modules/pkg"] {
            try Fixture.mkdir(src + d)
        }
        for f in ["keep.txt", "x.tmp", "sub/keep2.txt", "sub/y.tmp", "sub/z.tmp/inner.txt", "cache/a.txt", "sub/cache/b.txt",
                  "proj/src.js", "proj/node_modules/pkg/m.js", "photo.JPG", "cache.txt"] {
            try Fixture.write(src + "/" + f, utf8(f))
        }
        let (repo, _) = try await makeRepository()
        let patterns = [try PathPattern("*.tmp"), try PathPattern("cache"), try PathPattern("**/node_modules"),
                        try PathPattern("*.jpg", caseInsensitive: true), try PathPattern("/nowhere/*")]
        let result = try await backup(repo, [src]) { $0.excludes = patterns }
        let entries = try await listing(repo, try await tree(repo, result.snapshotID, at: src))
        #expect(Set(entries.keys) == ["keep.txt", "cache.txt", "sub", "sub/keep2.txt", "proj", "proj/src.js"])
        #expect(try await content(repo, entries["sub/keep2.txt"]) == utf8("sub/keep2.txt"))
        let snapshot = try await repo.loadSnapshot(try #require(result.snapshotID))
        #expect(snapshot.excludes == ["*.tmp", "cache", "**/node_modules", "*.jpg", "/nowhere/*"])
        #expect(result.summary.filesNew == 4)
    }

    @Test("excludeIfPresent skips directories holding a marker file, checking the header when given")
    func excludeIfPresent() async throws {
        let dir = TempDir("haven-archiver")
        defer { withExtendedLifetime(dir) {} }
        let src = dir.sub("src")
        try Fixture.mkdir(src)
        let tag = utf8("Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n")
        let layout: [(String, [UInt8])] = [
            ("marked/.nobackup", []),
            ("tagged/CACHEDIR.TAG", tag),
            ("wrongtag/CACHEDIR.TAG", utf8("Signature: not the right one at all, nope\n")),
            ("shorttag/CACHEDIR.TAG", utf8("Signature: 8a47")),
            ("plain/x", []),
        ]
        for (path, data) in layout {
            let d = src + "/" + path.split(separator: "/")[0]
            try Fixture.mkdir(d)
            try Fixture.write(src + "/" + path, data)
            try Fixture.write(d + "/file", utf8(path))
        }
        // A directory named like the marker does not count when a header is required.
        try Fixture.mkdir(src + "/tagdir")
        try Fixture.mkdir(src + "/tagdir/CACHEDIR.TAG")

        let (repo, _) = try await makeRepository()
        let both = try await backup(repo, [src]) { $0.excludeIfPresent = [(".nobackup", nil), BackupOptions.cacheDirTag] }
        let top = Set(try await tree(repo, both.snapshotID, at: src).nodes.map(\.displayName))
        #expect(top == ["wrongtag", "shorttag", "plain", "tagdir"])
        let entries = try await listing(repo, try await tree(repo, both.snapshotID, at: src))
        #expect(entries["wrongtag/CACHEDIR.TAG"] != nil && entries["wrongtag/file"] != nil)

        let cachesOnly = try await backup(repo, [src]) { $0.excludeIfPresent = [BackupOptions.cacheDirTag] }
        let top2 = Set(try await tree(repo, cachesOnly.snapshotID, at: src).nodes.map(\.displayName))
        #expect(top2 == ["marked", "wrongtag", "shorttag", "plain", "tagdir"])

        let none = try await backup(repo, [src])
        #expect(try await tree(repo, none.snapshotID, at: src).nodes.count == 6)
    }

    @Test("excludeLargerThan skips bigger files only")
    func excludeLargerThan() async throws {
        let dir = TempDir("haven-archiver")
        defer { withExtendedLifetime(dir) {} }
        let src = dir.sub("src")
        try Fixture.mkdir(src)
        try Fixture.mkdir(src + "/sub")
        try Fixture.write(src + "/small", [UInt8](repeating: 1, count: 100))
        try Fixture.write(src + "/exact", [UInt8](repeating: 2, count: 1000))
        try Fixture.write(src + "/big", [UInt8](repeating: 3, count: 1001))
        try Fixture.write(src + "/sub/big2", [UInt8](repeating: 4, count: 5000))
        try Fixture.write(src + "/sub/small2", [UInt8](repeating: 5, count: 10))
        let (repo, _) = try await makeRepository()
        let result = try await backup(repo, [src]) { $0.excludeLargerThan = 1000 }
        let entries = try await listing(repo, try await tree(repo, result.snapshotID, at: src))
        #expect(Set(entries.keys) == ["small", "exact", "sub", "sub/small2"])
        #expect(entries["exact"]?.size == 1000)
    }

    @Test("the totals scan counts the regular files and bytes a backup will read, without excluded or too large files")
    func totalsScan() async throws {
        let dir = TempDir("haven-archiver")
        defer { withExtendedLifetime(dir) {} }
        let src = dir.sub("src")
        for d in ["", "/a", "/a/b", "/a/b/c", "/empty", "/skip.tmp"] { try Fixture.mkdir(src + d) }
        try Fixture.write(src + "/one", [UInt8](repeating: 1, count: 10))
        try Fixture.write(src + "/a/two", [UInt8](repeating: 2, count: 20))
        try Fixture.write(src + "/a/b/c/three", [UInt8](repeating: 3, count: 30))
        try Fixture.write(src + "/a/x.tmp", [UInt8](repeating: 4, count: 100))
        try Fixture.write(src + "/skip.tmp/inner", [UInt8](repeating: 5, count: 100))
        try Fixture.write(src + "/a/b/big", [UInt8](repeating: 6, count: 5000))
        #expect(symlink("one", src + "/link") == 0)
        let solo = dir.sub("solo")
        try Fixture.write(solo, [UInt8](repeating: 7, count: 7))
        let (repo, _) = try await makeRepository()
        var options = BackupOptions(paths: [src, solo])
        options.excludes = [try PathPattern("*.tmp")]
        options.excludeLargerThan = 1000
        let progress = BackupProgress()
        Archiver(repositories: [repo], options: options, progress: progress).scan()
        let totals = progress.snapshot
        #expect(totals.scanDone)
        #expect(totals.totalFiles == 4 && totals.totalBytes == 67)
    }

    @Test("without countTotals no totals are counted, and the backup is the same")
    func noTotalsScan() async throws {
        let dir = TempDir("haven-archiver")
        defer { withExtendedLifetime(dir) {} }
        let src = dir.sub("src")
        try Fixture.mkdir(src)
        for i in 0..<50 { try Fixture.write(src + "/f\(i)", utf8("file \(i)")) }
        let (repo, _) = try await makeRepository()
        var options = BackupOptions(paths: [src])
        options.countTotals = false
        let progress = BackupProgress()
        let result = try await Archiver.backup(repository: repo, options: options, progress: progress)
        #expect(!progress.snapshot.scanDone && progress.snapshot.totalFiles == 0)
        #expect(result.summary.filesNew == 50 && progress.snapshot.filesDone == 50)
    }

    @Test("stdin backup stores one file node with the bytes read")
    func stdinBackup() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let (readEnd, writeEnd) = (fds[0], fds[1])
        defer { close(readEnd) }
        // More than a pipe buffer, written from another thread while the backup reads; larger than the
        // chunker's 8 MiB maximum, so it always takes more than one chunk whatever the polynomial.
        let payload = SeededRandom.bytes(seed: 77, 9 * 1024 * 1024 + 123)
        let writer = Thread {
            var done = 0
            while done < payload.count {
                let n = payload.withUnsafeBytes { write(writeEnd, $0.baseAddress! + done, $0.count - done) }
                if n <= 0 { break }
                done += n
            }
            close(writeEnd)
        }
        writer.start()

        let (repo, _) = try await makeRepository()
        let result = try await backup(repo, []) {
            $0.stdinFilename = "database.sql"
            $0.stdinDescriptor = readEnd
        }
        let snapshot = try await repo.loadSnapshot(try #require(result.snapshotID))
        #expect(snapshot.paths == ["/database.sql"])
        let root = try await repo.loadTree(snapshot.tree)
        #expect(root.nodes.count == 1)
        let node = try #require(root.nodes.first)
        #expect(node.name == utf8("database.sql"))
        #expect(node.type == .file)
        #expect(node.size == UInt64(payload.count))
        #expect(node.content.count > 1)
        try await expectSameBytes(content(repo, node), payload)
        #expect(result.summary.filesNew == 1)
        #expect(result.summary.totalBytesProcessed == UInt64(payload.count))
    }

    @Test("stdin filename must be a plain name", arguments: ["", "a/b", "/abs"])
    func stdinBadName(name: String) async throws {
        let (repo, storage) = try await makeRepository()
        do {
            _ = try await backup(repo, []) { $0.stdinFilename = name; $0.stdinDescriptor = -1 }
            Issue.record("stdin filename \"\(name)\" was accepted")
        } catch let e as HavenError {
            #expect(e.code == .usage)
        }
        #expect(try await storage.list(.snapshot).isEmpty)
    }

    @Test("extended attributes are backed up, carried over while a file is unchanged, and re-read once they change")
    func extendedAttributes() async throws {
        let dir = TempDir("haven-archiver")
        defer { withExtendedLifetime(dir) {} }
        let src = dir.sub("src")
        try Fixture.mkdir(src)
        try Fixture.write(src + "/f.txt", utf8("with attributes\n"))
        try Fixture.write(src + "/plain.txt", utf8("without\n"))
        guard setXattr(src + "/f.txt", "user.haven", utf8("one")) else {
            Issue.record("this filesystem refuses user extended attributes (errno \(errno)); the test needs them")
            return
        }
        let (repo, _) = try await makeRepository()
        func attributes(_ result: BackupResult) async throws -> [String: [Node.ExtendedAttribute]] {
            try await listing(repo, try await tree(repo, result.snapshotID, at: src)).mapValues { $0.extendedAttributes }
        }

        let first = try await backup(repo, [src])
        #expect(try await attributes(first) == ["f.txt": [.init(name: "user.haven", value: utf8("one"))], "plain.txt": []])
        // Nothing changed: the parent's attributes are carried over, and the directory's tree is the parent's.
        let second = try await backup(repo, [src])
        #expect(try await attributes(second) == ["f.txt": [.init(name: "user.haven", value: utf8("one"))], "plain.txt": []])
        try await expectSameBytes(tree(repo, second.snapshotID, at: src).encoded(), tree(repo, first.snapshotID, at: src).encoded())
        // Changing an attribute changes only the inode's ctime (no content, no mtime): it must be seen.
        #expect(setXattr(src + "/f.txt", "user.haven", utf8("two")))
        #expect(setXattr(src + "/plain.txt", "user.added", utf8("new")))
        let third = try await backup(repo, [src])
        #expect(try await attributes(third) == ["f.txt": [.init(name: "user.haven", value: utf8("two"))],
                                                "plain.txt": [.init(name: "user.added", value: utf8("new"))]])
        #expect(third.summary.filesUnmodified + third.summary.filesChanged == 2)
        #expect(setXattr(src + "/f.txt", "user.haven", nil))
        let fourth = try await backup(repo, [src])
        #expect(try await attributes(fourth)["f.txt"] == [])
    }

    /// Files are opened relative to their directory, kept open while its entries are backed up, up to a
    /// limit of open directories; deeper ones fall back to whole paths. Both must read the right files, with
    /// their attributes, at every level and in wide directories.
    @Test("a tree deeper than the open-directory limit and wide directories are read completely, attributes included")
    func deepAndWideTrees() async throws {
        let dir = TempDir("haven-archiver")
        defer { withExtendedLifetime(dir) {} }
        let src = dir.sub("src")
        try Fixture.mkdir(src)
        let depth = Archiver.maxOpenDirectories + 16
        var expected: [String: [UInt8]] = [:]
        var path = src, rel = ""
        for level in 0..<depth {
            path += "/d\(level)"
            rel += (rel.isEmpty ? "" : "/") + "d\(level)"
            try Fixture.mkdir(path)
            let data = utf8("level \(level)\n")
            try Fixture.write(path + "/f", data)
            expected[rel + "/f"] = data
        }
        for k in 0..<40 {
            let data = utf8("wide \(k)\n")
            try Fixture.write(src + "/d0/w\(k)", data)
            expected["d0/w\(k)"] = data
        }
        let attributes = setXattr(path + "/f", "user.deep", utf8("bottom")) && setXattr(src + "/d0/w7", "user.wide", utf8("top"))
        let (repo, _) = try await makeRepository()
        let result = try await backup(repo, [src])
        #expect(result.warnings.isEmpty, "\(result.warnings)")
        let entries = try await listing(repo, try await tree(repo, result.snapshotID, at: src))
        #expect(entries.values.filter { $0.type == .file }.count == expected.count)
        for (name, data) in expected {
            try await expectSameBytes(content(repo, entries[name]), data, "\(name)")
        }
        if attributes {
            #expect(entries[rel + "/f"]?.extendedAttributes == [.init(name: "user.deep", value: utf8("bottom"))])
            #expect(entries["d0/w7"]?.extendedAttributes == [.init(name: "user.wide", value: utf8("top"))])
            #expect(entries["d0/w6"]?.extendedAttributes == [])
        }
    }

    // MARK: Parent snapshots

    @Test("a second backup reuses the parent; changed files are re-read; deleted files disappear")
    func parentDetection() async throws {
        let dir = TempDir("haven-archiver")
        defer { withExtendedLifetime(dir) {} }
        let src = dir.sub("src")
        try Fixture.mkdir(src)
        try Fixture.mkdir(src + "/d")
        var files: [String: [UInt8]] = [
            "a.txt": utf8("alpha\n"),
            "b.bin": SeededRandom.bytes(seed: 1, 4000),
            "d/c.txt": utf8("gamma\n"),
            "d/gone.txt": utf8("deleted later\n"),
            "big.bin": SeededRandom.bytes(seed: 2, 3 * 1024 * 1024),
        ]
        for (name, data) in files { try Fixture.write(src + "/" + name, data) }
        let (repo, _) = try await makeRepository()

        let first = try await backup(repo, [src])
        #expect(first.parent == nil)
        #expect(first.summary.filesNew == 5)
        #expect(first.summary.dataBlobs > 0)

        let second = try await backup(repo, [src])
        #expect(second.parent == first.snapshotID)
        #expect(try await repo.loadSnapshot(try #require(second.snapshotID)).parent == first.snapshotID)
        #expect(second.summary.filesUnmodified == 5)
        #expect(second.summary.filesNew == 0 && second.summary.filesChanged == 0)
        #expect(second.summary.dataBlobs == 0, "an unchanged backup stored new data")
        var entries = try await listing(repo, try await tree(repo, second.snapshotID, at: src))
        for (name, data) in files { try await expectSameBytes(content(repo, entries[name]), data, "\(name)") }

        // Same size, new content and mtime.
        let changed = utf8("ALPHA\n")
        try Fixture.write(src + "/a.txt", changed)
        Fixture.setTimes(RawPath(src + "/a.txt"), seconds: 1_234_567_890, nanoseconds: 5)
        files["a.txt"] = changed
        let third = try await backup(repo, [src])
        #expect(third.parent == second.snapshotID)
        #expect(third.summary.filesChanged == 1)
        #expect(third.summary.filesUnmodified == 4)
        #expect(third.summary.filesNew == 0)
        #expect(third.summary.dataBlobs == 1)
        entries = try await listing(repo, try await tree(repo, third.snapshotID, at: src))
        try await expectSameBytes(content(repo, entries["a.txt"]), changed)
        #expect(entries["a.txt"]?.mtime == Timestamp(seconds: 1_234_567_890, nanoseconds: 5))

        // Deleted between backups.
        #expect(unlink(src + "/d/gone.txt") == 0)
        files["d/gone.txt"] = nil
        let fourth = try await backup(repo, [src])
        entries = try await listing(repo, try await tree(repo, fourth.snapshotID, at: src))
        #expect(entries["d/gone.txt"] == nil)
        #expect(Set(entries.keys) == Set(files.keys).union(["d"]))
        #expect(fourth.summary.filesUnmodified == 4)
        #expect(fourth.summary.filesChanged == 0 && fourth.summary.filesNew == 0)
        for (name, data) in files { try await expectSameBytes(content(repo, entries[name]), data, "\(name)") }

        // force ignores the parent and reads everything again (but stores nothing new).
        let forced = try await backup(repo, [src]) { $0.force = true }
        #expect(forced.parent == nil)
        #expect(forced.summary.filesNew == 4 && forced.summary.filesUnmodified == 0)
        #expect(forced.summary.dataBlobs == 0)
    }

    // MARK: Dry run, warnings, paths

    @Test("a dry run stores nothing")
    func dryRun() async throws {
        let dir = TempDir("haven-archiver")
        defer { withExtendedLifetime(dir) {} }
        let src = dir.sub("src")
        try Fixture.mkdir(src)
        try Fixture.write(src + "/one", SeededRandom.bytes(seed: 3, 100_000))
        try Fixture.write(src + "/two", utf8("two"))
        let (repo, storage) = try await makeRepository()
        let result = try await backup(repo, [src]) { $0.dryRun = true }
        #expect(result.dryRun)
        #expect(result.snapshotID == nil)
        #expect(result.summary.filesNew == 2)
        #expect(result.summary.dataBlobs > 0, "a dry run still reports what it would store")
        for type in [FileType.pack, .snapshot, .index] {
            #expect(try await storage.list(type).isEmpty, "\(type) written by a dry run")
        }
        #expect(try await storage.list(.key).count == 1)
    }

    @Test("a missing path gives a warning and the other paths are still backed up")
    func missingPathWarning() async throws {
        let dir = TempDir("haven-archiver")
        defer { withExtendedLifetime(dir) {} }
        let src = dir.sub("src"), missing = dir.sub("does-not-exist")
        try Fixture.mkdir(src)
        try Fixture.write(src + "/f", utf8("f"))
        let (repo, _) = try await makeRepository()
        let result = try await backup(repo, [src, missing])
        #expect(result.warnings.count == 1)
        #expect(result.warnings.first?.path == missing)
        let snapshot = try await repo.loadSnapshot(try #require(result.snapshotID))
        #expect(snapshot.paths == [src])
        #expect(try await tree(repo, result.snapshotID, at: src).nodes.map(\.displayName) == ["f"])

        // Nothing to back up at all is an error, and no snapshot is written.
        let before = try await repo.listSnapshotIDs().count
        do {
            _ = try await backup(repo, [missing, missing + "2"])
            Issue.record("a backup of only missing paths succeeded")
        } catch let e as HavenError {
            #expect(e.code == .invalidArgument)
            #expect(e.message.contains(missing))
        }
        #expect(try await repo.listSnapshotIDs().count == before)
    }

    @Test("snapshot paths are absolute and cleaned")
    func cleanedPaths() async throws {
        let dir = TempDir("haven-archiver")
        defer { withExtendedLifetime(dir) {} }
        try Fixture.mkdir(dir.sub("a"))
        try Fixture.mkdir(dir.sub("b"))
        try Fixture.write(dir.sub("b/file"), utf8("b"))
        // A relative path from the current directory, with "." and ".." and repeated slashes in it.
        let cwd = FileManager.default.currentDirectoryPath
        let up = String(repeating: "../", count: cwd.split(separator: "/").count)
        let relative = up + String(dir.path.dropFirst()) + "/a/../b"
        let (repo, _) = try await makeRepository()
        for given in [relative, dir.path + "/a/../b", dir.path + "//./b/", dir.path + "/b/."] {
            let result = try await backup(repo, [given])
            let snapshot = try await repo.loadSnapshot(try #require(result.snapshotID))
            #expect(snapshot.paths == [dir.sub("b")], "given \(given)")
            #expect(try await tree(repo, result.snapshotID, at: dir.sub("b")).nodes.map(\.displayName) == ["file"])
        }
        // The same directory named twice is backed up once.
        let twice = try await backup(repo, [dir.sub("b"), dir.path + "/a/../b/"])
        #expect(try await repo.loadSnapshot(try #require(twice.snapshotID)).paths == [dir.sub("b")])
    }

    @Test("the snapshot tree holds the intermediate directories of the absolute paths, and only them")
    func intermediateDirectories() async throws {
        let dir = TempDir("haven-archiver")
        defer { withExtendedLifetime(dir) {} }
        let base = dir.sub("x/y")
        try Fixture.mkdir(dir.sub("x"))
        try Fixture.mkdir(base)
        try Fixture.mkdir(base + "/one")
        try Fixture.mkdir(base + "/two")
        try Fixture.mkdir(base + "/three-not-backed-up")
        try Fixture.write(base + "/one/f1", utf8("1"))
        try Fixture.write(base + "/two/f2", utf8("2"))
        try Fixture.write(base + "/sibling-file", utf8("s"))
        Fixture.setTimes(RawPath(dir.sub("x")), seconds: 1_500_000_000, nanoseconds: 42)
        let (repo, _) = try await makeRepository()
        let result = try await backup(repo, [base + "/two", base + "/one"])
        let snapshot = try await repo.loadSnapshot(try #require(result.snapshotID))
        #expect(snapshot.paths == [base + "/one", base + "/two"])

        var tree = try await repo.loadTree(snapshot.tree)
        var current = ""
        for comp in base.split(separator: "/") {
            current += "/" + comp
            // Each level on the way holds exactly the next component, as a directory with its metadata.
            #expect(tree.nodes.map(\.displayName) == [String(comp)], "at \(current)")
            let node = try #require(tree.nodes.first)
            #expect(node.type == .dir)
            #expect(node.mode & Node.goModeDir != 0)
            var st = stat()
            #expect(lstat(current, &st) == 0)
            #expect(node.inode == UInt64(st.st_ino), "metadata of \(current)")
            if current == dir.sub("x") { #expect(node.mtime == Timestamp(seconds: 1_500_000_000, nanoseconds: 42)) }
            tree = try await repo.loadTree(try #require(node.subtree))
        }
        #expect(tree.nodes.map(\.displayName) == ["one", "two"])
        let entries = try await listing(repo, tree)
        #expect(Set(entries.keys) == ["one", "one/f1", "two", "two/f2"])
        #expect(try await content(repo, entries["two/f2"]) == utf8("2"))
    }
}
