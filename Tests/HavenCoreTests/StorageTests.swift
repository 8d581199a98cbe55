import Foundation
import Testing
@testable import HavenCore
import HavenTestSupport
#if canImport(Glibc)
import Glibc
#endif

// The storage conformance cases live in HavenTestSupport/StorageConformance.swift and run here against
// MemoryStorage and LocalStorage; HavenStorageS3Tests and HavenStorageSFTPTests run the same cases.

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
    await expectHavenError(sourceLocation: sourceLocation, body)
}

/// A fresh LocalStorage in a temporary directory, removed by `finish`.
private func localUnderTest() -> StorageUnderTest {
    let dir = TempDir("haven-storage")
    let root = dir.sub("repo")
    return StorageUnderTest(
        storage: LocalStorage(path: root + "/"),
        leftovers: { findFiles(under: root) { $0.contains(".tmp-") } },
        storedAtLayoutPath: { handle in
            var st = stat()
            return lstat(root + "/" + handle.path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
        },
        finish: { dir.remove() })
}

@Suite("Storage")
struct StorageTests {

    @Test("MemoryStorage conformance", arguments: StorageConformance.allCases)
    func memoryConformance(_ check: StorageConformance) async throws {
        try await check.run { StorageUnderTest(storage: MemoryStorage(location: "memory:/conformance/")) }
    }

    @Test("LocalStorage conformance", arguments: StorageConformance.allCases)
    func localConformance(_ check: StorageConformance) async throws {
        try await check.run { localUnderTest() }
    }

    /// The conformance cases are only worth something if they notice a broken backend: each case must
    /// record an issue against a storage broken in the way that case is about.
    @Test("each conformance case fails on a storage broken in its way", arguments: StorageConformance.allCases)
    func conformanceCatchesFaults(_ check: StorageConformance) async throws {
        await withKnownIssue("FaultyStorage breaks what \(check) checks") {
            try await check.run { StorageUnderTest(storage: FaultyStorage(fault: check)) }
        }
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

/// MemoryStorage with one deliberate defect, chosen per conformance case.
private struct FaultyStorage: Storage {
    let base = MemoryStorage(location: "memory:/faulty/")
    let fault: StorageConformance
    let saves = Locked(0)

    var location: String { base.location }
    var properties: StorageProperties { base.properties }

    func create() async throws {
        if fault == .createTwice { return }  // never notices an existing repository
        try await base.create()
    }

    func save(_ handle: Handle, _ data: [UInt8]) async throws {
        let n = saves.withLock { $0 += 1; return $0 }
        switch fault {
        case .emptyFile where data.isEmpty: return                                   // drops empty files
        case .saveReplaces where try await base.exists(handle): return                // keeps the old content
        case .concurrentSaves where n % 7 == 0: return                                // loses a save now and then
        default: try await base.save(handle, data)
        }
    }

    func save(_ handle: Handle, spooled file: SpoolFile) async throws {
        var data = try file.readAll()
        if fault == .spooledSave { data.removeLast(4096) }                              // loses the tail
        try await save(handle, data)
    }

    func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] {
        switch fault {
        case .loadRange where offset > 0: return try await base.load(handle, offset: 0, length: length)  // ignores the offset
        case .largeFile:
            let all = try await base.load(handle, offset: offset, length: length)
            return Array(all.prefix(16 << 20))                                         // truncates big reads
        default: return try await base.load(handle, offset: offset, length: length)
        }
    }

    func reader(_ handle: Handle, offset: Int, length: Int) async throws -> any StorageReader {
        guard fault == .sequentialRead else { return try await base.reader(handle, offset: offset, length: length) }
        return RestartingReader(base, handle, offset: offset, length: length)
    }

    func stat(_ handle: Handle) async throws -> Int {
        let size = try await base.stat(handle)
        return fault == .saveLoadStat ? size + 1 : size                                // wrong size
    }

    func list(_ type: FileType) async throws -> [StoredFile] {
        let files = try await base.list(type)
        return fault == .listEachType && type == .pack ? Array(files.dropLast()) : files  // forgets a pack
    }

    func remove(_ handle: Handle) async throws {
        if fault == .missingFiles, try await !base.exists(handle) { return }           // silent on missing files
        try await base.remove(handle)
    }
}

/// A reader that reads every piece from the start of its range.
private final class RestartingReader: StorageReader {
    let base: MemoryStorage
    let handle: Handle
    let offset: Int
    var remaining: Int

    init(_ base: MemoryStorage, _ handle: Handle, offset: Int, length: Int) {
        self.base = base
        self.handle = handle
        self.offset = offset
        self.remaining = length
    }

    func read(_ count: Int) async throws -> [UInt8] {
        remaining -= count
        return try await base.load(handle, offset: offset, length: count)
    }

    func close() async {}
}
