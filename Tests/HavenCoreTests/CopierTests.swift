import Testing
@testable import HavenCore
import HavenTestSupport

@Suite("Copy between repositories")
struct CopierTests {
    /// A source with two snapshots of files spread over many small data packs (they share blobs), opened
    /// through a counter.
    private static func source() async throws -> (CPFixture, Repository, CountingStorage, [[UInt8]]) {
        let fx = try await CPFixture.make()
        var rng = SeededRandom(seed: 50)
        let blobs = (0..<40).map { _ in rng.bytes(20_000 + Int(rng.next() % 20_000)) }
        let w = BlobWriter(repository: fx.repo, packSize: 150_000, compression: .auto)
        let files = (0..<10).map { k in CPFixture.File(name: "f\(k)", blobs: [blobs[k], blobs[k + 10]]) }
        let deeper = (0..<10).map { k in CPFixture.File(name: "g\(k)", blobs: [blobs[20 + k], blobs[30 + k], blobs[k]]) }
        try await fx.backup(files, sub: deeper, writer: w, time: cpTime("2024-03-01T10:00:00Z"))
        let w2 = BlobWriter(repository: fx.repo, packSize: 150_000, compression: .auto)
        try await fx.backup(Array(files.prefix(4)), sub: [CPFixture.File(name: "new", blobs: [rng.bytes(30_000)])],
                            writer: w2, time: cpTime("2024-03-02T10:00:00Z"))
        let counter = CountingStorage(fx.storage)
        let repo = try await Repository.open(storage: counter, password: CPFixture.password)
        try await repo.loadIndex()
        return (fx, repo, counter, blobs)
    }

    private static func snapshots(_ repo: Repository) async throws -> [Snapshot] {
        try await repo.loadSnapshots()
    }

    /// Every file's content under `tree`, by path.
    private static func contents(_ repo: Repository, tree: ID, prefix: String = "") async throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for node in try await repo.loadTree(tree).nodes {
            let name = prefix + String(decoding: node.name, as: UTF8.self)
            if let sub = node.subtree {
                out.merge(try await contents(repo, tree: sub, prefix: name + "/")) { a, _ in a }
            } else {
                var bytes: [UInt8] = []
                for c in node.content { bytes += try await repo.loadBlob(c, .data) }
                out[name] = bytes
            }
        }
        return out
    }

    @Test("copy reads data blobs pack by pack through readers, in one batch or many, and the copy is whole",
          arguments: [64 << 20, 50_000])
    func copiesByPack(batchBytes: Int) async throws {
        let (_, source, counter, _) = try await Self.source()
        let dataPacks = Set(source.index.allBlobs(.data).compactMap { source.index.lookup($0.0, .data)?.pack.hex })
        #expect(dataPacks.count >= 8, "the blobs are spread over many packs")
        counter.reset()
        let destination = try await CPFixture.make()
        let snaps = try await Self.snapshots(source)
        let result = try await SnapshotCopier.copy(snaps, from: source, to: destination.repo, batchBytes: batchBytes)
        #expect(result.copied.count == 2)
        #expect(counter.packLoads.withLock { $0 }.filter(dataPacks.contains).isEmpty, "no data blob was loaded on its own")
        let readers = counter.readers.withLock { $0 }
        #expect(Set(readers).isSubset(of: dataPacks))
        if batchBytes >= 64 << 20 {
            #expect(readers.count == dataPacks.count, "one reader per pack: \(readers.count) for \(dataPacks.count) packs")
        }
        // The copy has every file, byte for byte, and checks clean with all data read.
        let copied = try await destination.reopen()
        for (original, copy) in zip(snaps, try await Self.snapshots(copied)) {
            let a = try await Self.contents(source, tree: original.tree)
            let b = try await Self.contents(copied, tree: copy.tree)
            #expect(a.count >= 5 && a.keys.sorted() == b.keys.sorted())
            for (path, bytes) in a { expectSameBytes(b[path], bytes, "\(path)") }
        }
        let report = await Checker.run(repository: copied, options: CheckOptions(readData: .all))
        #expect(!report.hasErrors, "\(report)")
        // A second copy finds everything there and reads nothing.
        counter.reset()
        let again = try await SnapshotCopier.copy(snaps, from: source, to: copied)
        #expect(again.copied.isEmpty && again.skipped.count == 2)
        #expect(counter.readers.withLock { $0 }.isEmpty)
    }

    @Test("a damaged data blob in the source fails the copy, naming the blob, and no snapshot is written")
    func damagedSource() async throws {
        let (fx, source, _, blobs) = try await Self.source()
        let loc = try #require(source.index.lookup(ID.hash(blobs[3]), .data))
        fx.storage.tamper(Handle(.pack, loc.pack)) { bytes in
            var b = bytes
            b[Int(loc.blob.offset) + 20] ^= 0x04
            return b
        }
        let destination = try await CPFixture.make()
        await #expect {
            try await SnapshotCopier.copy(try await Self.snapshots(source), from: source, to: destination.repo)
        } throws: { error in
            guard let e = error as? HavenError else { return false }
            return e.code == .corrupt && e.message.contains(loc.blob.id.short)
        }
        #expect(try await destination.storage.list(.snapshot).isEmpty)
    }

    @Test("ranges of a pack: at most 4 MiB or one blob, gaps up to 1 MiB; runs of close ranges share a reader")
    func readGroups() {
        func blob(_ offset: Int, _ length: Int) -> PackedBlob {
            PackedBlob(id: ID.hash(Array("\(offset)".utf8)), type: .data, offset: UInt32(offset), length: UInt32(length),
                       uncompressedLength: 0)
        }
        let mib = 1 << 20
        let blobs = [blob(0, 2 * mib), blob(2 * mib, 2 * mib), blob(4 * mib + 100, 2 * mib),  // 6 MiB: two ranges
                     blob(6 * mib + 100, 5 * mib),                                             // one blob over 4 MiB
                     blob(13 * mib, 1000),                                                     // 2 MiB gap: a new run
                     blob(13 * mib + 1000, 1000)]
        let groups = SnapshotCopier.readGroups(blobs)
        let shape = groups.map { $0.map { $0.map { Int($0.offset) } } }
        #expect(shape == [[[0, 2 * mib], [4 * mib + 100], [6 * mib + 100]], [[13 * mib, 13 * mib + 1000]]], "\(shape)")
    }
}
