import Foundation
import Testing
@testable import HavenCore
import HavenTestSupport

// MARK: - Fixtures shared by CheckTests, PruneTests and LockTests

/// Deterministic pseudo-random bytes (SplitMix64).
struct CPRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
}

/// An in-memory repository plus helpers to write small snapshots into it.
struct CPFixture {
    let storage: MemoryStorage
    let repo: Repository
    static let password = "check-prune-test"

    static func make() async throws -> CPFixture {
        let storage = MemoryStorage()
        let repo = try await Repository.initialize(storage: storage, password: password, kdf: .testing)
        return CPFixture(storage: storage, repo: repo)
    }

    /// A freshly opened repository on the same storage, with its index loaded.
    func reopen() async throws -> Repository {
        let r = try await Repository.open(storage: storage, password: CPFixture.password)
        try await r.loadIndex()
        return r
    }

    /// A file's content: the blobs (each stored as one data blob, in order).
    struct File {
        var name: String
        var blobs: [[UInt8]]
    }

    /// Saves files into the root directory (and `sub` into directory "sub") through `writer`, flushes, and
    /// saves a snapshot. Returns the snapshot ID.
    @discardableResult
    func backup(_ files: [File], sub: [File] = [], writer: BlobWriter, time: Timestamp, host: String = "host",
                paths: [String] = ["/data"], tags: [String] = []) async throws -> ID {
        func fileNodes(_ files: [File]) async throws -> [Node] {
            var nodes: [Node] = []
            for f in files {
                var n = Node(name: Array(f.name.utf8), type: .file)
                n.mode = 0o644
                for b in f.blobs { n.content.append(try await writer.save(.data, plaintext: b)) }
                n.size = UInt64(f.blobs.reduce(0) { $0 + $1.count })
                nodes.append(n)
            }
            return nodes
        }
        var root = try await fileNodes(files)
        if !sub.isEmpty {
            let subTree = Tree(nodes: try await fileNodes(sub).sorted { $0.name.lexicographicallyPrecedes($1.name) })
            var d = Node(name: Array("sub".utf8), type: .dir)
            d.mode = Node.goModeDir | 0o755
            d.subtree = try await writer.save(.tree, plaintext: subTree.encoded())
            root.append(d)
        }
        let tree = Tree(nodes: root.sorted { $0.name.lexicographicallyPrecedes($1.name) })
        let treeID = try await writer.save(.tree, plaintext: tree.encoded())
        try await writer.flush()
        var s = Snapshot(time: time, tree: treeID, paths: paths)
        s.hostname = host
        s.tags = tags
        return try await repo.saveSnapshot(s)
    }

    /// Every blob reachable from `tree`, loaded through `repo` (throws on the first failure).
    static func loadAll(_ repo: Repository, tree: ID) async throws -> Int {
        var count = 1
        let t = try await repo.loadTree(tree)
        for n in t.nodes {
            for c in n.content { _ = try await repo.loadBlob(c, .data); count += 1 }
            if let s = n.subtree { count += try await loadAll(repo, tree: s) }
        }
        return count
    }

    func names(_ type: FileType) async throws -> Set<String> {
        Set(try await storage.list(type).map(\.name))
    }

    /// Every stored file with its bytes, for "nothing changed" comparisons.
    func everything() async throws -> [Handle: [UInt8]] {
        var out: [Handle: [UInt8]] = [:]
        for t in FileType.allCases where t != .config {
            for f in try await storage.list(t) {
                let h = Handle(t, f.name)
                out[h] = try await storage.load(h)
            }
        }
        return out
    }
}

func cpTime(_ s: String) -> Timestamp { Timestamp(rfc3339: s)! }

private func blob(_ rng: inout CPRandom, _ n: Int = 1000) -> [UInt8] { rng.bytes(n) }

/// A repository with one snapshot of one file "big" made of `blobs` random, uncompressed blobs of `size`
/// bytes, written with packs of `packSize`: the repository and the file's content IDs.
private func oneFileRepo(seed: UInt64, blobs count: Int, of size: Int, packSize: Int) async throws -> (CPFixture, [ID]) {
    let fx = try await CPFixture.make()
    var rng = CPRandom(seed: seed)
    let w = BlobWriter(repository: fx.repo, packSize: packSize, compression: .off)
    let content = (0..<count).map { _ in blob(&rng, size) }
    let snap = try await fx.backup([.init(name: "big", blobs: content)], writer: w, time: cpTime("2024-01-01T10:00:00Z"))
    let tree = try await fx.repo.loadTree(try await fx.repo.loadSnapshot(snap).tree)
    return (fx, tree.node(named: Array("big".utf8))!.content)
}

/// A repository with two snapshots (several data packs and tree packs), written with small packs.
private func twoSnapshotRepo() async throws -> (CPFixture, [ID]) {
    let fx = try await CPFixture.make()
    var rng = CPRandom(seed: 42)
    let w = BlobWriter(repository: fx.repo, packSize: 4096, compression: .off)
    let shared = CPFixture.File(name: "shared", blobs: (0..<4).map { _ in blob(&rng) })
    let a = try await fx.backup([shared, .init(name: "a", blobs: (0..<5).map { _ in blob(&rng) })],
                                sub: [.init(name: "deep", blobs: [blob(&rng, 300)])],
                                writer: w, time: cpTime("2024-01-01T10:00:00Z"))
    let w2 = BlobWriter(repository: fx.repo, packSize: 4096, compression: .off)
    let b = try await fx.backup([shared, .init(name: "b", blobs: (0..<3).map { _ in blob(&rng) })],
                                writer: w2, time: cpTime("2024-01-02T10:00:00Z"))
    return (fx, [a, b])
}

private func packs(_ fx: CPFixture) async throws -> [ID] {
    try await fx.storage.list(.pack).compactMap { ID(hex: $0.name) }.sorted()
}

// MARK: - Check

@Suite("Check")
struct CheckTests {
    @Test("a clean repository passes, with and without reading data")
    func cleanRepository() async throws {
        let (fx, _) = try await twoSnapshotRepo()
        let report = await Checker.run(repository: fx.repo)
        #expect(!report.hasErrors, "\(report)")
        #expect(report.hints.isEmpty)
        #expect(report.statistics.snapshots == 2)
        #expect(report.statistics.trees == 3)  // two roots and one subdirectory
        #expect(report.statistics.packs == report.statistics.packsInStorage)
        #expect(report.statistics.unusedBlobs == 0)
        #expect(report.statistics.packsRead == 0)

        let full = await Checker.run(repository: fx.repo, options: CheckOptions(readData: .all))
        #expect(!full.hasErrors, "\(full)")
        #expect(full.statistics.packsRead == full.statistics.packs)
        #expect(full.statistics.blobsVerified == full.statistics.blobs)
        #expect(full.damagedPacks.isEmpty && full.damagedBlobs.isEmpty)
    }

    @Test("a missing pack is an error naming the pack and the snapshots that lose data")
    func missingPack() async throws {
        let (fx, snaps) = try await twoSnapshotRepo()
        // The pack holding the first blob of the file only snapshot A has.
        let tree = try await fx.repo.loadTree(try await fx.repo.loadSnapshot(snaps[0]).tree)
        let onlyA = tree.node(named: Array("a".utf8))!.content[0]
        let pack = fx.repo.index.lookup(onlyA, .data)!.pack
        try await fx.storage.remove(Handle(.pack, pack))

        let report = await Checker.run(repository: fx.repo)
        #expect(report.hasErrors)
        #expect(report.errors.contains { $0.contains(pack.short) && $0.contains("missing") }, "\(report)")
        #expect(report.damagedPacks == [pack])
        let lost = report.damagedBlobs.first { $0.id == onlyA }
        #expect(lost?.snapshots == [snaps[0]])
        #expect(report.errors.contains { $0.contains(snaps[0].short) }, "\(report)")
    }

    @Test("a tampered pack fails read-data, naming the pack and the blob")
    func tamperedPack() async throws {
        let (fx, snaps) = try await twoSnapshotRepo()
        let tree = try await fx.repo.loadTree(try await fx.repo.loadSnapshot(snaps[1]).tree)
        let target = tree.node(named: Array("b".utf8))!.content[1]
        let loc = fx.repo.index.lookup(target, .data)!
        fx.storage.tamper(Handle(.pack, loc.pack)) { bytes in
            var b = bytes
            b[Int(loc.blob.offset) + 20] ^= 0x01
            return b
        }
        let structural = await Checker.run(repository: fx.repo)
        #expect(!structural.hasErrors, "structure is intact: \(structural)")

        let report = await Checker.run(repository: fx.repo, options: CheckOptions(readData: .all))
        #expect(report.hasErrors)
        #expect(report.damagedPacks == [loc.pack])
        #expect(report.damagedBlobs.map(\.id) == [target])
        #expect(report.damagedBlobs.first?.snapshots == [snaps[1]])
        #expect(report.errors.contains { $0.contains(loc.pack.short) && $0.contains("SHA-256") }, "\(report)")
        #expect(report.errors.contains { $0.contains(loc.pack.short) && $0.contains(target.short) && $0.contains(snaps[1].short) },
                "\(report)")
    }

    @Test("blobs of a large pack are verified in two runs of about equal bytes, small packs in one")
    func splitByBytes() {
        func blobs(_ lengths: [UInt32]) -> [PackedBlob] {
            var offset: UInt32 = 0
            return lengths.enumerated().map { i, length in
                defer { offset += length }
                return PackedBlob(id: ID.hash(Array(String(i).utf8)), type: .data, offset: offset, length: length, uncompressedLength: 0)
            }
        }
        let even = Checker.splitByBytes(blobs(Array(repeating: 100_000, count: 20)), minimumBytes: 1 << 20)
        #expect(even.map(\.count) == [10, 10])
        let skewed = Checker.splitByBytes(blobs([1_500_000] + Array(repeating: 100_000, count: 15)), minimumBytes: 1 << 20)
        #expect(skewed.map(\.count) == [1, 15])
        #expect(Checker.splitByBytes(blobs(Array(repeating: 1000, count: 500)), minimumBytes: 1 << 20).count == 1)
        #expect(Checker.splitByBytes(blobs([4_000_000]), minimumBytes: 1 << 20).map(\.count) == [1])
        #expect(Checker.splitByBytes([], minimumBytes: 1 << 20).map(\.count) == [0])
        let parts = Checker.splitByBytes(blobs((0..<40).map { UInt32(20_000 + $0 * 3_000) }), minimumBytes: 1 << 20)
        #expect(parts.flatMap { $0 } == blobs((0..<40).map { UInt32(20_000 + $0 * 3_000) }), "order and content kept")
    }

    @Test("a pack is read once, front to back, in bounded stretches: every byte hashed once, every blob verified once")
    func readPlanCoversThePack() {
        var rng = CPRandom(seed: 11)
        for round in 0..<300 {
            let window = 1 + Int(rng.next() % 5_000)
            // Blobs with gaps, some overlapping, some larger than the window.
            var blobs: [PackedBlob] = []
            var at = 0
            for i in 0..<Int(rng.next() % 40) {
                let gap = Int(rng.next() % 3) == 0 ? Int(rng.next() % 2_000) : 0
                let back = Int(rng.next() % 8) == 0 ? min(at, Int(rng.next() % 500)) : 0
                let start = at + gap - back
                let length = 1 + Int(rng.next() % (Int(rng.next() % 10) == 0 ? 12_000 : 1_500))
                blobs.append(PackedBlob(id: ID.hash(Array("\(round)/\(i)".utf8)), type: .data, offset: UInt32(start),
                                        length: UInt32(length), uncompressedLength: 0))
                at = max(at, start + length)
            }
            let size = at + Int(rng.next() % 3_000)
            blobs.sort { ($0.offset, $0.length) < ($1.offset, $1.length) }
            let steps = Checker.readPlan(size: size, blobs: blobs, window: window)
            var next = 0
            var seen: [PackedBlob] = []
            for step in steps {
                switch step {
                case .hash(let start, let end):
                    #expect(start == next && end > start && end - start <= window, "round \(round): \(step)")
                    next = end
                case .blobs(let start, let end, let inside):
                    #expect(start == next, "round \(round): each stretch starts where the previous one ended")
                    #expect(end - start <= window || inside.contains { Int($0.offset) == start && Int($0.offset) + Int($0.length) == end },
                            "round \(round): a stretch over the window is the span of one blob")
                    for b in inside {
                        #expect(Int(b.offset) >= start && Int(b.offset) + Int(b.length) <= end, "round \(round): blob inside its stretch")
                    }
                    #expect(Int(inside[0].offset) == start && inside.map { Int($0.offset) + Int($0.length) }.max() == end)
                    seen += inside
                    next = end
                case .overlapping(let inside):
                    #expect(step == steps.last, "round \(round): overlapping blobs come last")
                    seen += inside
                }
            }
            #expect(next == size, "round \(round): the whole pack is hashed")
            #expect(seen.sorted { ($0.offset, $0.length) < ($1.offset, $1.length) } == blobs, "round \(round): every blob once")
        }
    }

    @Test("a pack larger than the read window is verified across windows")
    func packAcrossWindows() async throws {
        let (fx, ids) = try await oneFileRepo(seed: 8, blobs: 12, of: 1_000_000, packSize: 16 << 20)
        let last = fx.repo.index.lookup(ids[11], .data)!
        #expect(fx.repo.index.lookup(ids[0], .data)!.pack == last.pack, "one pack holds the file")
        #expect(Int(last.blob.offset) > 2 * Checker.readWindow, "the pack spans several windows")
        let clean = await Checker.run(repository: fx.repo, options: CheckOptions(readData: .all))
        #expect(!clean.hasErrors, "\(clean)")
        #expect(clean.statistics.blobsVerified >= 12 && clean.statistics.bytesRead > 12_000_000)
        fx.storage.tamper(Handle(.pack, last.pack)) { bytes in
            var b = bytes
            b[Int(last.blob.offset) + 70] ^= 0x01
            return b
        }
        let report = await Checker.run(repository: try await fx.reopen(), options: CheckOptions(readData: .all))
        #expect(report.damagedBlobs.map(\.id) == [ids[11]], "\(report)")
        #expect(report.errors.contains { $0.contains(last.pack.short) && $0.contains("SHA-256") }, "\(report)")
    }

    @Test("damage in both halves of a large pack is reported, in pack order")
    func damageInBothHalves() async throws {
        let (fx, ids) = try await oneFileRepo(seed: 7, blobs: 24, of: 100_000, packSize: 8 << 20)
        let first = fx.repo.index.lookup(ids[2], .data)!, second = fx.repo.index.lookup(ids[21], .data)!
        #expect(first.pack == second.pack, "one pack holds the file")
        fx.storage.tamper(Handle(.pack, first.pack)) { bytes in
            var b = bytes
            b[Int(second.blob.offset) + 50] ^= 0x80
            b[Int(first.blob.offset) + 50] ^= 0x80
            return b
        }
        let report = await Checker.run(repository: fx.repo, options: CheckOptions(readData: .all))
        #expect(Set(report.damagedBlobs.map(\.id)) == [ids[2], ids[21]])
        let messages = report.errors.filter { $0.contains(ids[2].short) || $0.contains(ids[21].short) }
        #expect(messages.count == 2 && messages[0].contains(ids[2].short), "in pack order: \(messages)")
        let fine = await Checker.run(repository: try await fx.reopen(), options: CheckOptions(readData: .all))
        #expect(fine.damagedBlobs.count == 2, "the damage is in storage, seen again by a fresh repository")
    }

    @Test("each pack is verified from one read of it, its header taken from the end of that read")
    func oneReadPerPack() async throws {
        let (fx, _) = try await twoSnapshotRepo()
        let counting = CountingStorage(fx.storage)
        let repo = try await Repository.open(storage: counting, password: CPFixture.password)
        try await repo.loadIndex()
        let all = try await packs(fx)
        // The structure check loads the trees; reading the data adds only the readers.
        counting.reset()
        _ = await Checker.run(repository: repo, options: CheckOptions())
        let structure = counting.packLoads.withLock { $0.count }
        counting.reset()
        let report = await Checker.run(repository: repo, options: CheckOptions(readData: .all))
        #expect(!report.hasErrors, "\(report)")
        #expect(counting.readers.withLock { $0.count } == all.count, "one reader per pack")
        #expect(counting.packLoads.withLock { $0.count } == structure, "no pack read apart from its reader")
        // A header larger than the read window is loaded on its own, and checks the same.
        counting.reset()
        var small = CheckOptions(readData: .all)
        small.readWindow = 64
        let windowed = await Checker.run(repository: repo, options: small)
        #expect(!windowed.hasErrors, "\(windowed)")
        #expect(windowed.statistics.blobsVerified == report.statistics.blobsVerified)
        #expect(counting.packLoads.withLock { $0.count } > structure, "headers over 64 bytes are read apart")
        // Whatever the window, the last stretch (which may be shorter than the 4-byte header length) never
        // makes an intact pack look damaged.
        for window in 1...80 {
            var options = CheckOptions(readData: .all)
            options.readWindow = window
            let result = await Checker.run(repository: repo, options: options)
            #expect(!result.hasErrors, "window \(window): \(result)")
        }
    }

    @Test("a blob only the pack header lists is reported, and verified too")
    func blobOnlyInHeader() async throws {
        let (fx, _) = try await twoSnapshotRepo()
        // Drop one data blob from the index files (one new index file replaces them).
        var packsAndBlobs: [IndexFile.Pack] = []
        for name in try await fx.names(.index) {
            let id = ID(hex: name)!
            packsAndBlobs += try IndexFile.decode(try await fx.repo.loadUnpacked(Handle(.index, id)), id: id).packs
            try await fx.storage.remove(Handle(.index, id))
        }
        let k = try #require(packsAndBlobs.firstIndex { p in p.blobs.count > 1 && p.blobs.allSatisfy { $0.type == .data } })
        let dropped = packsAndBlobs[k].blobs.removeLast()
        _ = try await fx.repo.saveUnpacked(.index, IndexFile(packs: packsAndBlobs).encoded())
        let pack = packsAndBlobs[k].id
        fx.storage.tamper(Handle(.pack, pack)) { bytes in
            var b = bytes
            b[Int(dropped.offset) + 40] ^= 0x10
            return b
        }
        let report = await Checker.run(repository: try await fx.reopen(), options: CheckOptions(readData: .all))
        #expect(report.errors.contains { $0.contains(pack.short) && $0.contains("header lists 1 blob the index does not") }, "\(report)")
        #expect(report.damagedBlobs.map(\.id) == [dropped.id], "the header-only blob was verified: \(report)")
    }

    @Test("a damaged pack header fails read-data without crashing")
    func tamperedHeader() async throws {
        let (fx, _) = try await twoSnapshotRepo()
        let pack = try await packs(fx)[0]
        fx.storage.tamper(Handle(.pack, pack)) { bytes in
            var b = bytes
            b[b.count - 10] ^= 0xff
            return b
        }
        let report = await Checker.run(repository: fx.repo, options: CheckOptions(readData: .all))
        #expect(report.errors.contains { $0.contains(pack.short) && $0.contains("header") }, "\(report)")
        // The blobs themselves are intact, so they verify through the index entries.
        #expect(report.damagedBlobs.isEmpty)
    }

    @Test("a tampered index file is an error")
    func tamperedIndex() async throws {
        let (fx, _) = try await twoSnapshotRepo()
        let name = try await fx.names(.index).sorted()[0]
        fx.storage.tamper(Handle(.index, name)) { bytes in
            var b = bytes
            b[b.count / 2] ^= 0x40
            return b
        }
        let report = await Checker.run(repository: fx.repo)
        #expect(report.hasErrors)
        #expect(report.errors.contains { $0.contains("index \(name.prefix(8))") }, "\(report)")
        // Packs only that index described now look unreferenced, and blobs lose their index entries.
        #expect(!report.hints.isEmpty || report.errors.count > 1)
    }

    @Test("a tree or data blob missing from the index is an error naming snapshot and path")
    func missingBlobs() async throws {
        let fx = try await CPFixture.make()
        let w = BlobWriter(repository: fx.repo, packSize: 4096)
        var dir = Node(name: Array("gone".utf8), type: .dir)
        dir.subtree = ID.hash([1, 2, 3])
        var file = Node(name: Array("file".utf8), type: .file)
        file.content = [ID.hash([4, 5, 6])]
        let root = try await w.save(.tree, plaintext: Tree(nodes: [file, dir]).encoded())
        try await w.flush()
        let snap = try await fx.repo.saveSnapshot(Snapshot(time: cpTime("2024-01-01T00:00:00Z"), tree: root, paths: ["/x"]))
        let orphan = try await fx.repo.saveSnapshot(Snapshot(time: cpTime("2024-01-02T00:00:00Z"), tree: ID.hash([9]), paths: ["/y"]))

        let report = await Checker.run(repository: fx.repo)
        #expect(report.hasErrors)
        #expect(report.errors.contains { $0.contains(snap.short) && $0.contains("/gone") && $0.contains(ID.hash([1, 2, 3]).short) }, "\(report)")
        #expect(report.errors.contains { $0.contains(snap.short) && $0.contains("/file") && $0.contains(ID.hash([4, 5, 6]).short) }, "\(report)")
        #expect(report.errors.contains { $0.contains(orphan.short) && $0.contains("root tree") }, "\(report)")
    }

    @Test("a damaged snapshot file is an error")
    func damagedSnapshot() async throws {
        let (fx, snaps) = try await twoSnapshotRepo()
        fx.storage.tamper(Handle(.snapshot, snaps[0])) { Array($0.dropLast()) }
        let report = await Checker.run(repository: fx.repo)
        #expect(report.errors.contains { $0.contains(snaps[0].short) }, "\(report)")
        #expect(report.statistics.snapshots == 1)
    }

    @Test("a pack no index names is a hint, not an error; unused blobs are fine")
    func unreferencedPack() async throws {
        let (fx, _) = try await twoSnapshotRepo()
        let a = PackAssembler(repository: fx.repo, packSize: 1 << 20)
        let plain: [UInt8] = Array(repeating: 7, count: 500)
        let sealed = fx.repo.key.seal(plain)
        try await a.add(PackedBlob(id: ID.hash(plain), type: .data, offset: 0, length: UInt32(sealed.count), uncompressedLength: 0), sealed: sealed)
        try await a.flush()
        // And an indexed blob that no snapshot uses.
        let w = BlobWriter(repository: fx.repo, packSize: 4096)
        _ = try await w.save(.data, plaintext: [1, 2, 3, 4])
        try await w.flush()

        let report = await Checker.run(repository: fx.repo, options: CheckOptions(readData: .all))
        #expect(!report.hasErrors, "\(report)")
        #expect(report.statistics.unreferencedPacks == 1)
        #expect(report.statistics.unusedBlobs == 1)
        #expect(report.hints.contains { $0.contains("1 pack is not referenced by any index") && $0.contains("prune") }, "\(report)")
    }

    @Test("a pack whose size does not match the index is an error")
    func wrongPackSize() async throws {
        let (fx, _) = try await twoSnapshotRepo()
        let pack = try await packs(fx)[1]
        fx.storage.tamper(Handle(.pack, pack)) { $0 + [0] }
        let report = await Checker.run(repository: fx.repo)
        #expect(report.errors.contains { $0.contains(pack.short) && $0.contains("implies") }, "\(report)")
        fx.storage.tamper(Handle(.pack, pack)) { Array($0.prefix(40)) }
        let short = await Checker.run(repository: fx.repo)
        #expect(short.errors.contains { $0.contains(pack.short) && $0.contains("too short") }, "\(short)")
    }

    @Test("read-data subsets n/t for n = 1…t cover every pack exactly once")
    func subsets() async throws {
        var rng = CPRandom(seed: 7)
        let ids = (0..<300).map { _ in ID(rng.bytes(32)) }.sorted()
        for t in [1, 2, 3, 5, 16, 256] {
            var seen: [ID] = []
            for n in 1...t { seen += Checker.select(ids, sizes: [:], .subset(n, of: t)) }
            #expect(seen.sorted() == ids, "t = \(t)")
        }
        #expect(Checker.select(ids, sizes: [:], .percent(10)).count == 30)
        #expect(Checker.select(ids, sizes: [:], .percent(100)) == ids)
        let sizes = Dictionary(uniqueKeysWithValues: ids.map { ($0, 1000) })
        #expect(Checker.select(ids, sizes: sizes, .bytes(4500)).count == 5)

        // End to end: the subsets of a real repository add up to every pack.
        let (fx, _) = try await twoSnapshotRepo()
        var read = 0
        for n in 1...3 {
            let r = await Checker.run(repository: fx.repo, options: CheckOptions(readData: .subset(n, of: 3)))
            #expect(!r.hasErrors)
            read += r.statistics.packsRead
        }
        #expect(read == (try await packs(fx)).count)
    }

    @Test("read-data selections parse like restic's and reject nonsense")
    func parseSelection() throws {
        #expect(try ReadDataSelection.parse("2/5") == .subset(2, of: 5))
        #expect(try ReadDataSelection.parse("12.5%") == .percent(12.5))
        #expect(try ReadDataSelection.parse("500M") == .bytes(500 << 20))
        #expect(try ReadDataSelection.parse("1G") == .bytes(1 << 30))
        for bad in ["0/5", "6/5", "1/0", "x/y", "0%", "101%", "abc", "", "-3"] {
            #expect(throws: HavenError.self, "\(bad)") { try ReadDataSelection.parse(bad) }
        }
    }

    @Test("an invalid selection is reported, not crashed on")
    func invalidSelectionReported() async throws {
        let fx = try await CPFixture.make()
        let r = await Checker.run(repository: fx.repo, options: CheckOptions(readData: .subset(4, of: 3)))
        #expect(r.hasErrors)
    }

    // MARK: Hostile bytes

    @Test("malformed index files give clean errors")
    func malformedIndexFiles() throws {
        let id = ID.hash([0])
        let good = "{\"packs\":[{\"id\":\"\(ID.hash([1]).hex)\",\"blobs\":[{\"id\":\"\(ID.hash([2]).hex)\",\"type\":\"data\",\"offset\":0,\"length\":100}]}]}"
        #expect(try IndexFile.decode(Array(good.utf8), id: id).blobCount == 1)
        let cases: [String] = [
            "", "{", "[", "null", "42", "\"x\"", "{\"packs\":[7]}", "{\"packs\":[{}]}",
            "{\"packs\":[{\"id\":\"zz\"}]}",
            good.replacingOccurrences(of: "\"data\"", with: "\"what\""),
            good.replacingOccurrences(of: "\"offset\":0", with: "\"offset\":-1"),
            good.replacingOccurrences(of: "\"offset\":0", with: "\"offset\":99999999999"),
            good.replacingOccurrences(of: "\"length\":100", with: "\"length\":5"),
            good.replacingOccurrences(of: "\"length\":100", with: "\"length\":1e400"),
            good.replacingOccurrences(of: "\"length\":100", with: "\"length\":100,\"uncompressed_length\":99999999999"),
            "{\"supersedes\":[1],\"packs\":[]}",
            String(repeating: "[", count: 100_000),
            String(good.dropLast(7)),
        ]
        for c in cases {
            do {
                _ = try IndexFile.decode(Array(c.utf8), id: id)
                Issue.record("accepted malformed index: \(c.prefix(80))")
            } catch let e as HavenError {
                #expect(e.code == .corrupt)
                #expect(e.message.contains(id.short))
            }
        }
        // Random bytes and random mutations of a good file never crash.
        var rng = CPRandom(seed: 3)
        for i in 0..<2000 {
            var bytes = Array(good.utf8)
            if i % 2 == 0 { bytes = rng.bytes(Int(rng.next() % 300)) } else {
                for _ in 0..<(1 + rng.next() % 4) { bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            }
            _ = try? IndexFile.decode(bytes, id: id)
        }
    }

    @Test("malformed pack headers give clean errors")
    func malformedPackHeaders() async throws {
        let fx = try await CPFixture.make()
        let key = fx.repo.key
        let pack = ID.hash([42])
        func sealedPack(_ blobArea: Int, _ header: [UInt8]) -> [UInt8] {
            var out = [UInt8](repeating: 0xaa, count: blobArea)
            let h = key.seal(header)
            out += h
            PackFormat.appendLE(&out, UInt32(h.count))
            return out
        }
        func expectCorrupt(_ bytes: [UInt8], _ what: String) {
            do {
                _ = try PackReader.header(tail: bytes, total: bytes.count, id: pack, key: key)
                Issue.record("accepted: \(what)")
            } catch let e as HavenError {
                #expect(e.code == .corrupt, "\(what)")
                #expect(e.message.contains(pack.short), "\(what): \(e.message)")
            } catch {
                Issue.record("unexpected error for \(what): \(error)")
            }
        }
        let entry = PackFormat.encodeHeader([PackedBlob(id: ID.hash([1]), type: .data, offset: 0, length: 100, uncompressedLength: 0)])
        let good = sealedPack(100, entry)
        #expect(try PackReader.header(tail: good, total: good.count, id: pack, key: key).count == 1)
        #expect(try PackReader.header(tail: Array(good.suffix(good.count - 100)), total: good.count, id: pack, key: key).count == 1,
                "the tail alone decodes the same")
        #expect(throws: HavenError.self) { try PackReader.header(tail: Array(good.suffix(20)), total: good.count, id: pack, key: key) }
        expectCorrupt([], "empty")
        expectCorrupt([1, 2, 3], "3 bytes")
        expectCorrupt([UInt8](repeating: 0, count: 40), "zero header length")
        expectCorrupt([UInt8](repeating: 0xff, count: 40), "huge header length")
        expectCorrupt(sealedPack(99, entry), "blob beyond the blob area")
        expectCorrupt(sealedPack(100, Array(entry.dropLast())), "truncated entry")
        expectCorrupt(sealedPack(100, [7] + entry.dropFirst()), "unknown type")
        expectCorrupt(sealedPack(100, PackFormat.encodeHeader([PackedBlob(id: ID.hash([1]), type: .data, offset: 0, length: 3, uncompressedLength: 0)])),
                      "impossible length")
        var wrongKey = sealedPack(100, entry)
        wrongKey[110] ^= 1
        expectCorrupt(wrongKey, "MAC mismatch")

        // Fuzz the decoder on plaintext headers and whole packs.
        var rng = CPRandom(seed: 11)
        for _ in 0..<3000 {
            let header = rng.bytes(Int(rng.next() % 200))
            _ = try? PackFormat.decodeHeader(header, pack: pack, headerStart: Int(rng.next() % 100_000))
            let bytes = rng.bytes(Int(rng.next() % 120))
            _ = try? PackReader.header(tail: bytes, total: bytes.count, id: pack, key: key)
        }

        // Through storage: loadPackHeader on damaged pack files.
        for (i, bytes) in [[], [1, 2, 3], [UInt8](repeating: 0xff, count: 64), sealedPack(99, entry)].enumerated() {
            let id = ID.hash([UInt8(i), 99])
            try await fx.storage.save(Handle(.pack, id), bytes)
            await #expect(throws: HavenError.self) { _ = try await fx.repo.loadPackHeader(id) }
        }
    }

    @Test("check survives garbage in every kind of file")
    func garbageEverywhere() async throws {
        let (fx, _) = try await twoSnapshotRepo()
        var rng = CPRandom(seed: 99)
        let garbage = rng.bytes(200)
        try await fx.storage.save(Handle(.index, ID.hash(garbage)), garbage)
        try await fx.storage.save(Handle(.snapshot, ID.hash(garbage)), garbage)
        try await fx.storage.save(Handle(.pack, ID.hash(garbage)), garbage)
        try await fx.storage.save(Handle(.index, "not-an-id"), garbage)
        let report = await Checker.run(repository: fx.repo, options: CheckOptions(readData: .all))
        #expect(report.hasErrors)
        #expect(report.warnings.contains { $0.contains("not-an-id") })
        #expect(report.hints.contains { $0.contains("not referenced") })
    }
}
