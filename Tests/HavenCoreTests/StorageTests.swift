import Foundation
import Testing
@testable import HavenCore
import HavenTestSupport
#if canImport(Glibc)
import Glibc
#endif

// One conformance suite for every storage backend. To cover a new backend (S3, SFTP, ...), add a
// `StorageKind` to `StorageKind.all`; every test below then runs against it too.

/// A storage instance under test, with the backend-specific hooks the conformance tests need.
private struct StorageUnderTest: Sendable {
    let storage: any Storage
    /// Paths of temporary files left behind by `save` (a backend without temp files returns []).
    let leftovers: @Sendable () -> [String]
    /// Whether a handle is stored at restic's path for it (nil when the backend has no paths to look at).
    let storedAtLayoutPath: (@Sendable (Handle) -> Bool)?
    /// The temporary directory behind the storage, if any (removed when released).
    let directory: TempDir?

    /// Marks the end of the test's use of the storage: the directory stays alive until then.
    func finish() { withExtendedLifetime(directory) {} }
}

/// A named factory for a storage backend.
private struct StorageKind: Sendable, CustomTestStringConvertible {
    let name: String
    let make: @Sendable () async throws -> StorageUnderTest
    var testDescription: String { name }

    static let memory = StorageKind(name: "MemoryStorage") {
        StorageUnderTest(storage: MemoryStorage(location: "memory:/conformance/"), leftovers: { [] }, storedAtLayoutPath: nil, directory: nil)
    }

    static let local = StorageKind(name: "LocalStorage") {
        let dir = TempDir("haven-storage")
        defer { withExtendedLifetime(dir) {} }
        let root = dir.sub("repo")
        return StorageUnderTest(
            storage: LocalStorage(path: root + "/"),
            leftovers: { findFiles(under: root) { $0.contains(".tmp-") } },
            storedAtLayoutPath: { handle in
                var st = stat()
                return lstat(root + "/" + handle.path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
            },
            directory: dir)
    }

    /// Every backend the conformance suite runs against.
    static let all: [StorageKind] = [.memory, .local]
}

/// Regular files below `root` whose name satisfies `predicate`.
private func findFiles(under root: String, where predicate: (String) -> Bool) -> [String] {
    guard let e = FileManager.default.enumerator(atPath: root) else { return [] }
    var out: [String] = []
    while let rel = e.nextObject() as? String {
        if predicate((rel as NSString).lastPathComponent) { out.append(rel) }
    }
    return out
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

/// Creates a storage of `kind` with its repository structure in place.
private func prepared(_ kind: StorageKind) async throws -> StorageUnderTest {
    let s = try await kind.make()
    try await s.storage.create()
    return s
}

@Suite("Storage")
struct StorageTests {

    @Test("save, load, stat and exists for every file type", arguments: StorageKind.all)
    fileprivate func saveLoadStat(kind: StorageKind) async throws {
        let s = try await prepared(kind)
        defer { s.finish() }
        var rng = SeededRandom(seed: 1)
        var saved: [(Handle, [UInt8])] = [(.config, rng.bytes(155))]
        for type in FileType.allCases where type != .config {
            saved.append((Handle(type, randomID(&rng)), rng.bytes(Int(rng.next() % 3000) + 1)))
        }
        saved.append((Handle(.snapshot, randomID(&rng)), []))  // empty files are files too
        for (h, data) in saved { try await s.storage.save(h, data) }
        for (h, data) in saved {
            #expect(try await s.storage.load(h) == data, "\(h)")
            #expect(try await s.storage.stat(h) == data.count, "\(h)")
            #expect(try await s.storage.exists(h), "\(h)")
            if let atPath = s.storedAtLayoutPath { #expect(atPath(h), "\(h) is not stored at \(h.path)") }
        }
        #expect(s.leftovers().isEmpty)
    }

    @Test("load with offset and length", arguments: StorageKind.all)
    fileprivate func loadRange(kind: StorageKind) async throws {
        let s = try await prepared(kind)
        defer { s.finish() }
        let data = SeededRandom.bytes(seed: 2, 10_000)
        let h = Handle(.pack, ID.hash(data))
        try await s.storage.save(h, data)
        for (offset, length) in [(0, 10_000), (0, 1), (1, 1), (4321, 1234), (9999, 1), (10_000, 0), (0, 0), (5000, 5000)] {
            #expect(try await s.storage.load(h, offset: offset, length: length) == Array(data[offset..<(offset + length)]),
                    "offset \(offset) length \(length)")
        }
        for offset in [0, 1, 9000, 10_000] {
            #expect(try await s.storage.load(h, offset: offset, length: nil) == Array(data[offset...]), "offset \(offset) to end")
        }
        // Reading past the end is an error, not a short read.
        for (offset, length) in [(9000, 1001), (0, 10_001), (10_000, 1)] {
            let e = await havenError { _ = try await s.storage.load(h, offset: offset, length: length) }
            #expect(e?.code == .corrupt, "offset \(offset) length \(length)")
        }
    }

    @Test("missing files: load, stat and remove report .notFound", arguments: StorageKind.all)
    fileprivate func missingFiles(kind: StorageKind) async throws {
        let s = try await prepared(kind)
        defer { s.finish() }
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
    }

    @Test("list returns exactly the files of each type with their sizes", arguments: StorageKind.all)
    fileprivate func listEachType(kind: StorageKind) async throws {
        let s = try await prepared(kind)
        defer { s.finish() }
        for type in FileType.allCases { #expect(try await s.storage.list(type).isEmpty, "\(type) not empty after create") }
        var rng = SeededRandom(seed: 3)
        var expected: [FileType: Set<StoredFile>] = [:]
        try await s.storage.save(.config, [1, 2, 3])
        expected[.config] = [StoredFile(name: "config", size: 3)]
        for type in FileType.allCases where type != .config {
            var files: Set<StoredFile> = []
            // Packs: enough IDs to land in several data/XX/ directories, two sharing a prefix.
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
        for type in FileType.allCases {
            let listed = try await s.storage.list(type)
            #expect(Set(listed) == expected[type], "\(type)")
            #expect(listed.count == expected[type]?.count, "\(type) listed a file twice")
        }
        if let atPath = s.storedAtLayoutPath {
            for f in expected[.pack]! {
                #expect(atPath(Handle(.pack, f.name)), "pack \(f.name) is not under data/\(f.name.prefix(2))/")
            }
        }
        // Removing makes a file disappear from its list only.
        let victim = try #require(expected[.index]?.first)
        try await s.storage.remove(Handle(.index, victim.name))
        #expect(Set(try await s.storage.list(.index)) == expected[.index]!.subtracting([victim]))
        #expect(Set(try await s.storage.list(.snapshot)) == expected[.snapshot])
        let gone = await havenError { _ = try await s.storage.load(Handle(.index, victim.name)) }
        #expect(gone?.code == .notFound)
    }

    @Test("save replaces an existing file completely", arguments: StorageKind.all)
    fileprivate func saveReplaces(kind: StorageKind) async throws {
        let s = try await prepared(kind)
        defer { s.finish() }
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
    }

    @Test("save leaves no temporary files behind, also under concurrent saves", arguments: StorageKind.all)
    fileprivate func noLeftovers(kind: StorageKind) async throws {
        let s = try await prepared(kind)
        defer { s.finish() }
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
    }

    @Test("create succeeds on an empty location and fails once a config exists", arguments: StorageKind.all)
    fileprivate func createTwice(kind: StorageKind) async throws {
        let s = try await kind.make()
        defer { s.finish() }
        try await s.storage.create()
        #expect(try await s.storage.list(.pack).isEmpty)
        try await s.storage.save(.config, [1, 2, 3])
        let e = await havenError { try await s.storage.create() }
        #expect(e?.code == .invalidArgument)
        #expect(e?.message.contains(s.storage.location.trimmingCharacters(in: CharacterSet(charactersIn: "/"))) == true, "\(e?.message ?? "")")
        // The existing repository is untouched.
        #expect(try await s.storage.load(.config) == [1, 2, 3])
    }

    @Test("20 MiB file round trip", arguments: StorageKind.all)
    fileprivate func largeFile(kind: StorageKind) async throws {
        let s = try await prepared(kind)
        defer { s.finish() }
        let data = SeededRandom.bytes(seed: 20, 20 << 20)
        let h = Handle(.pack, ID.hash(data))
        try await s.storage.save(h, data)
        #expect(try await s.storage.stat(h) == data.count)
        let back = try await s.storage.load(h)
        #expect(back.count == data.count)
        #expect(ID.hash(back) == ID.hash(data))
        // A ranged read across the middle.
        let mid = (10 << 20) - 7
        #expect(try await s.storage.load(h, offset: mid, length: 1 << 20) == Array(data[mid..<(mid + (1 << 20))]))
        #expect(try await s.storage.list(.pack) == [StoredFile(name: h.name, size: data.count)])
        #expect(s.leftovers().isEmpty)
    }

    // MARK: LocalStorage specifics

    @Test("LocalStorage: create lays out restic's directories")
    func localLayout() async throws {
        let dir = TempDir("haven-storage")
        defer { withExtendedLifetime(dir) {} }
        let root = dir.sub("repo")
        try await LocalStorage(path: root).create()
        for sub in ["keys", "snapshots", "index", "locks", "data", "data/00", "data/7f", "data/ff"] {
            var st = stat()
            #expect(stat(root + "/" + sub, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR, "\(sub) missing")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/data").count == 256)
    }

    @Test("LocalStorage: list ignores temporary files of interrupted saves")
    func localIgnoresTempFiles() async throws {
        let dir = TempDir("haven-storage")
        defer { withExtendedLifetime(dir) {} }
        let root = dir.sub("repo")
        let storage = LocalStorage(path: root)
        try await storage.create()
        let id = ID.hash([1])
        try Fixture.write(root + "/data/\(id.hex.prefix(2))/\(id.hex).tmp-123-456", [1, 2, 3])
        try Fixture.write(root + "/snapshots/\(id.hex).tmp-1-2", [1])
        #expect(try await storage.list(.pack).isEmpty)
        #expect(try await storage.list(.snapshot).isEmpty)
    }

    /// Mounts a 1 MiB tmpfs at `path`; returns why it failed, or nil on success.
    private static func mountTinyTmpfs(_ path: String) -> String? {
        guard let mount = ["/usr/bin/mount", "/bin/mount"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return "no mount program"
        }
        do {
            let r = try Run.processBlocking(mount, ["-t", "tmpfs", "-o", "size=1m", "tmpfs", path], timeout: 30)
            return r.status == 0 ? nil : "mount exited \(r.status): \(r.stderr)"
        } catch {
            return "cannot run mount: \(error)"
        }
    }

    private static func unmount(_ path: String) {
        guard let umount = ["/usr/bin/umount", "/bin/umount"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            Issue.record("no umount program; \(path) stays mounted")
            return
        }
        let r = try? Run.processBlocking(umount, [path], timeout: 30)
        if r?.status != 0 {
            // Busy: detach lazily so the temporary directory can still be removed.
            let lazy = try? Run.processBlocking(umount, ["-l", path], timeout: 30)
            if lazy?.status != 0 { Issue.record("cannot unmount \(path): \(r.map { "\($0)" } ?? "umount did not run")") }
        }
    }

    @Test("LocalStorage: a full disk gives .noSpace naming the path and leaves no temp file",
          .enabled(if: geteuid() == 0, "mounting a tmpfs needs root (tests run as root locally and in CI)"))
    func diskFull() async throws {
        let dir = TempDir("haven-nospace")
        defer { withExtendedLifetime(dir) {} }
        let mountPoint = dir.sub("mnt")
        try Fixture.mkdir(mountPoint)
        if let failure = Self.mountTinyTmpfs(mountPoint) {
            withKnownIssue("tmpfs cannot be mounted in this environment: \(failure)") {
                Issue.record("mount failed: \(failure)")
            }
            return
        }
        defer { Self.unmount(mountPoint) }
        let storage = LocalStorage(path: mountPoint + "/repo")
        try await storage.create()
        let small = [UInt8](repeating: 7, count: 1000)
        try await storage.save(.config, small)

        let data = SeededRandom.bytes(seed: 6, 4 << 20)
        let h = Handle(.pack, ID.hash(data))
        let e = await havenError { try await storage.save(h, data) }
        #expect(e?.code == .noSpace, "\(e.map { "\($0.code): \($0)" } ?? "no error")")
        #expect(e?.message.contains(h.path) == true, "message should name the file: \(e?.message ?? "")")
        #expect((e?.cause as? Errno)?.value == ENOSPC)
        // Nothing half-written stays behind, neither at the final name nor as a temp file.
        #expect(findFiles(under: mountPoint) { $0.contains(".tmp-") }.isEmpty)
        #expect(try await storage.exists(h) == false)
        #expect(try await storage.list(.pack).isEmpty)
        // The space was given back: a small file still fits, and earlier files are intact.
        let after = Handle(.snapshot, ID.hash(small))
        try await storage.save(after, small)
        #expect(try await storage.load(after) == small)
        #expect(try await storage.load(.config) == small)
    }
}
