import Foundation
import Synchronization
import Testing
@testable import HavenCore
import HavenTestSupport

/// Counts the calls that reach the wrapped storage; pack loads are split into whole-file and range reads.
private final class CallCountingStorage: StorageDecorator {
    let base: any Storage
    private let counts = Mutex<[String: Int]>([:])

    init(_ base: any Storage) { self.base = base }

    var properties: StorageProperties { base.properties }

    subscript(_ key: String) -> Int { counts.withLock { $0[key, default: 0] } }
    func reset() { counts.withLock { $0 = [:] } }
    private func count(_ key: String) { counts.withLock { $0[key, default: 0] += 1 } }

    func create() async throws { try await base.create() }
    func save(_ handle: Handle, _ data: [UInt8]) async throws { try await base.save(handle, data) }
    func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] {
        if handle.type == .pack {
            count(offset == 0 && length == nil ? "pack" : "pack-range")
        } else {
            count(handle.type.rawValue)
        }
        return try await base.load(handle, offset: offset, length: length)
    }
    func stat(_ handle: Handle) async throws -> Int { try await base.stat(handle) }
    func list(_ type: FileType) async throws -> [StoredFile] {
        count("list-" + type.rawValue)
        return try await base.list(type)
    }
    func remove(_ handle: Handle) async throws { try await base.remove(handle) }
}

/// A repository whose snapshot has a root tree and `dirs` subdirectories (each with one file): all trees
/// land in one tree pack.
private struct CacheFixture {
    let fx: CPFixture
    let counting: CallCountingStorage
    let snapshot: ID
    let root: ID
    let treePack: ID
    let dirs: Int
    let cacheBase: TempDir

    static func make(dirs: Int = 6) async throws -> CacheFixture {
        let fx = try await CPFixture.make()
        var rng = CPRandom(seed: 7)
        let w = BlobWriter(repository: fx.repo, compression: .off)
        var rootNodes: [Node] = []
        for i in 0..<dirs {
            var file = Node(name: Array("file".utf8), type: .file)
            file.mode = 0o644
            let content = rng.bytes(500)
            file.content = [try await w.save(.data, plaintext: content)]
            file.size = UInt64(content.count)
            var dir = Node(name: Array("dir\(i)".utf8), type: .dir)
            dir.mode = Node.goModeDir | 0o755
            dir.subtree = try await w.save(.tree, plaintext: Tree(nodes: [file]).encoded())
            rootNodes.append(dir)
        }
        let root = try await w.save(.tree, plaintext: Tree(nodes: rootNodes.sorted { $0.name.lexicographicallyPrecedes($1.name) }).encoded())
        try await w.flush()
        let snapshot = try await fx.repo.saveSnapshot(Snapshot(time: cpTime("2024-03-01T10:00:00Z"), tree: root, paths: ["/data"]))
        let treePack = try #require(fx.repo.index.lookup(root, .tree)).pack
        return CacheFixture(fx: fx, counting: CallCountingStorage(fx.storage), snapshot: snapshot, root: root, treePack: treePack,
                            dirs: dirs, cacheBase: TempDir("haven-cache-test"))
    }

    /// A freshly opened repository on the counting storage with the index loaded, using the cache unless
    /// `cached` is false.
    func open(cached: Bool = true, warnings: Locked<[String]>? = nil) async throws -> Repository {
        let repo = try await Repository.open(storage: counting, password: CPFixture.password)
        if cached {
            repo.useCache(try RepositoryCache(base: cacheBase.path, repositoryID: repo.config.id,
                                              warning: { w in warnings?.withLock { $0.append(w) } }))
        }
        try await repo.loadIndex()
        repo.cleanCache()
        return repo
    }

    /// Loads every tree of the snapshot; returns how many.
    static func walk(_ repo: Repository, _ tree: ID) async throws -> Int {
        var n = 1
        for node in try await repo.loadTree(tree).nodes {
            if let sub = node.subtree { n += try await walk(repo, sub) }
        }
        return n
    }

    func cachedPackPath(_ repo: Repository) -> String {
        repo.cache!.directory + "/data/\(treePack.hex.prefix(2))/\(treePack.hex)"
    }
}

private func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

@Suite("Metadata cache")
struct CacheTests {
    @Test("all trees of a pack cost one pack download; a second repository on the same cache downloads nothing")
    func onePackThenNone() async throws {
        let f = try await CacheFixture.make()
        let repo = try await f.open()
        #expect(f.counting["index"] == 1)
        #expect(try await CacheFixture.walk(repo, f.root) == f.dirs + 1)
        #expect(f.counting["pack"] == 1)
        #expect(f.counting["pack-range"] == 0)
        #expect(exists(f.cachedPackPath(repo)))
        _ = try await repo.loadSnapshots()
        #expect(f.counting["snapshot"] == 1)

        let cacheDir = repo.cache!.directory
        #expect(cacheDir == f.cacheBase.path + "/" + repo.config.id)
        let tag = try String(contentsOfFile: f.cacheBase.path + "/CACHEDIR.TAG", encoding: .utf8)
        #expect(tag.hasPrefix(RepositoryCache.tagSignature + "\n"))
        // Stored exactly as in the repository: encrypted, byte for byte.
        let cached = try #require(FileManager.default.contents(atPath: f.cachedPackPath(repo)))
        try await expectSameBytes(Array(cached), f.fx.storage.load(Handle(.pack, f.treePack)))

        f.counting.reset()
        let second = try await f.open()
        #expect(try await CacheFixture.walk(second, f.root) == f.dirs + 1)
        let snapshots = try await second.loadSnapshots()
        #expect(snapshots.map(\.id) == [f.snapshot])
        #expect(f.counting["pack"] == 0)
        #expect(f.counting["pack-range"] == 0)
        #expect(f.counting["index"] == 0)
        #expect(f.counting["snapshot"] == 0)

        // Files this process writes go into the cache as well.
        let saved = try await second.saveSnapshot(Snapshot(time: cpTime("2024-03-02T10:00:00Z"), tree: f.root, paths: ["/data"]))
        #expect(exists(cacheDir + "/snapshots/" + saved.hex))
        #expect(try await second.loadSnapshots().count == 2)
        #expect(f.counting["snapshot"] == 0)
    }

    @Test("concurrent requests for trees of one pack download it once")
    func concurrentDownloadsOnce() async throws {
        let f = try await CacheFixture.make(dirs: 40)
        let repo = try await f.open()
        let subtrees = try await repo.loadTree(f.root).nodes.compactMap(\.subtree)
        #expect(f.counting["pack"] == 1)
        repo.cache!.removePack(f.treePack)
        try await forEachConcurrently(subtrees + subtrees, limit: 16) { _ = try await repo.loadTree($0) }
        #expect(f.counting["pack"] == 2)
        #expect(f.counting["pack-range"] == 0)
    }

    @Test("a damaged cached pack is removed and downloaded again; the tree still loads")
    func damagedCachedPack() async throws {
        let f = try await CacheFixture.make()
        let first = try await f.open()
        _ = try await CacheFixture.walk(first, f.root)
        let loc = try #require(first.index.lookup(f.root, .tree))
        let path = f.cachedPackPath(first)
        var bytes = Array(try #require(FileManager.default.contents(atPath: path)))
        bytes[Int(loc.blob.offset) + 20] ^= 0xff
        try Data(bytes).write(to: URL(fileURLWithPath: path))

        f.counting.reset()
        let second = try await f.open()
        #expect(try await CacheFixture.walk(second, f.root) == f.dirs + 1)
        #expect(f.counting["pack"] == 1)
        try await expectSameBytes(FileManager.default.contents(atPath: path), f.fx.storage.load(Handle(.pack, f.treePack)))

        // A truncated cached pack is no better.
        try Data(bytes.prefix(10)).write(to: URL(fileURLWithPath: path))
        let third = try await f.open()
        #expect(try await CacheFixture.walk(third, f.root) == f.dirs + 1)
        #expect(f.counting["pack"] == 2)
    }

    @Test("a pack whose content does not match its ID is not cached: a damaged tree is .corrupt, intact ones load")
    func packNotMatchingItsID() async throws {
        let f = try await CacheFixture.make()
        let subtrees = try await f.fx.repo.loadTree(f.root).nodes.compactMap(\.subtree)
        let damaged = try #require(f.fx.repo.index.lookup(subtrees[0], .tree))
        f.fx.storage.tamper(Handle(.pack, f.treePack)) { var b = $0; b[Int(damaged.blob.offset) + 20] ^= 0xff; return b }

        let repo = try await f.open()
        await #expect { try await repo.loadTree(subtrees[0]) } throws: { ($0 as? HavenError)?.code == .corrupt }
        #expect(f.counting["pack"] == 1)
        #expect(!exists(f.cachedPackPath(repo)))
        // The other trees of the damaged pack are intact: each is read on its own, as without a cache.
        #expect(try await repo.loadTree(f.root).nodes.count == f.dirs)
        for sub in subtrees.dropFirst() { _ = try await repo.loadTree(sub) }
        #expect(f.counting["pack"] == 1)
        #expect(f.counting["pack-range"] == f.dirs)
        #expect(!exists(f.cachedPackPath(repo)))
    }

    @Test("cleanup removes packs the index no longer names and index and snapshot files the repository no longer has")
    func cleanup() async throws {
        let f = try await CacheFixture.make()
        let repo = try await f.open()
        _ = try await CacheFixture.walk(repo, f.root)
        _ = try await repo.loadSnapshots()
        let dir = repo.cache!.directory
        let gonePack = ID.hash([1, 2, 3]), goneIndex = ID.hash([4]), goneSnapshot = ID.hash([5])
        let stale = [dir + "/data/\(gonePack.hex.prefix(2))/\(gonePack.hex)", dir + "/index/\(goneIndex.hex)",
                     dir + "/snapshots/\(goneSnapshot.hex)"]
        try FileManager.default.createDirectory(atPath: dir + "/data/\(gonePack.hex.prefix(2))", withIntermediateDirectories: true)
        for p in stale { try Data([1]).write(to: URL(fileURLWithPath: p)) }
        let indexIDs = try await f.fx.storage.list(.index).map(\.name)

        let second = try await f.open()
        _ = try await second.listSnapshotIDs()
        for p in stale { #expect(!exists(p), "\(p) is still cached") }
        #expect(exists(f.cachedPackPath(second)))
        for i in indexIDs { #expect(exists(dir + "/index/" + i)) }
        #expect(exists(dir + "/snapshots/" + f.snapshot.hex))

        // The pack leaves the cache once the index stops naming it.
        for i in indexIDs { try await f.fx.storage.remove(Handle(.index, i)) }
        _ = try await f.open()
        #expect(!exists(f.cachedPackPath(second)))
    }

    @Test("a damaged cached index file is fetched again")
    func damagedCachedIndex() async throws {
        let f = try await CacheFixture.make()
        let first = try await f.open()
        let indexID = try #require(try await f.fx.storage.list(.index).first).name
        let path = first.cache!.directory + "/index/" + indexID
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path))
        f.counting.reset()
        let second = try await f.open()
        #expect(f.counting["index"] == 1)
        #expect(try await CacheFixture.walk(second, f.root) == f.dirs + 1)
        try await expectSameBytes(FileManager.default.contents(atPath: path), f.fx.storage.load(Handle(.index, indexID)))
    }

    @Test("without a cache, every tree is one range read and nothing is written")
    func noCache() async throws {
        let f = try await CacheFixture.make()
        let repo = try await f.open(cached: false)
        #expect(repo.cache == nil)
        #expect(try await CacheFixture.walk(repo, f.root) == f.dirs + 1)
        #expect(f.counting["pack"] == 0)
        #expect(f.counting["pack-range"] == f.dirs + 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.cacheBase.path).isEmpty)
    }

    @Test("a cache that cannot be written warns once and the repository reads from storage")
    func unwritableCache() async throws {
        let f = try await CacheFixture.make()
        let warnings = Locked<[String]>([])
        let repo = try await f.open(warnings: warnings)
        let data = repo.cache!.directory + "/data"
        try FileManager.default.removeItem(atPath: data)
        try Data([0]).write(to: URL(fileURLWithPath: data))
        #expect(try await CacheFixture.walk(repo, f.root) == f.dirs + 1)
        #expect(warnings.withLock { $0 }.count == 1)
        #expect(f.counting["pack"] == 1)
        #expect(f.counting["pack-range"] == f.dirs)

        // A base directory that cannot be created is an error for the caller to report.
        #expect(throws: HavenError.self) { try RepositoryCache(base: data + "/below-a-file", repositoryID: repo.config.id) }
    }

    @Test("the default base directory follows HAVEN_CACHE_DIR, XDG_CACHE_HOME and HOME")
    func defaultBase() {
        #expect(RepositoryCache.defaultBase(environment: ["HAVEN_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x", "HOME": "/h"]) == "/c")
        #expect(RepositoryCache.defaultBase(environment: ["XDG_CACHE_HOME": "/x", "HOME": "/h"]) == "/x/haven")
        #expect(RepositoryCache.defaultBase(environment: ["XDG_CACHE_HOME": "relative", "HOME": "/h"]) == "/h/.cache/haven")
        #expect(RepositoryCache.defaultBase(environment: [:]) == nil)
    }

    @Test("a temporary cache keeps packs only and is removed afterwards")
    func temporaryCache() async throws {
        let f = try await CacheFixture.make()
        let repo = try await Repository.open(storage: f.counting, password: CPFixture.password)
        let cache = try RepositoryCache.temporary(in: f.cacheBase.path)
        repo.useCache(cache)
        try await repo.loadIndex()
        #expect(try await CacheFixture.walk(repo, f.root) == f.dirs + 1)
        #expect(f.counting["pack"] == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache.directory + "/index").isEmpty)
        cache.removeAll()
        #expect(!exists(cache.directory))
    }
}
