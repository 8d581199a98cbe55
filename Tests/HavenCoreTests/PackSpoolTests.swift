import Foundation
import Testing
@testable import HavenCore
import HavenTestSupport
import CHavenShims
#if canImport(Glibc)
import Glibc
#endif

// Packs are assembled in spool files rather than in memory; a local repository gives the spool its name
// without copying it. And an unchanged directory keeps its parent's tree without re-encoding it.

/// Every regular file below `root`, relative to it.
private func files(under root: String) -> [String] {
    guard let e = FileManager.default.enumerator(atPath: root) else { return [] }
    var out: [String] = []
    while let rel = e.nextObject() as? String {
        var st = stat()
        if lstat(root + "/" + rel, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG { out.append(rel) }
    }
    return out.sorted()
}

/// Whether a file in `dir` can be opened for direct I/O.
private func directIOWorks(in dir: String) -> Bool {
    let path = dir + "/.direct-probe"
    let fd = open(path, O_RDWR | O_CREAT | haven_o_direct(), 0o600)
    defer { unlink(path) }
    guard fd >= 0 else { return false }
    close(fd)
    return true
}


/// Writes seeded random runs of the given sizes to `spool`, checking its size after each, and returns all
/// the bytes written, in order.
private func writeAll(_ spool: SpoolFile, _ sizes: [Int], seed: UInt64) throws -> [UInt8] {
    var all: [UInt8] = []
    for (i, n) in sizes.enumerated() {
        let bytes = SeededRandom.bytes(seed: seed + UInt64(i), n)
        try spool.write(bytes)
        all += bytes
        #expect(spool.size == all.count)
    }
    return all
}
/// How many of the file's pages are in the page cache (mincore on a mapping of it).
private func residentPages(_ path: String) throws -> (cached: Int, total: Int) {
    let fd = open(path, O_RDONLY)
    try #require(fd >= 0)
    defer { close(fd) }
    var st = stat()
    try #require(fstat(fd, &st) == 0)
    let length = Int(st.st_size), page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let map = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0)
    try #require(map != MAP_FAILED)
    defer { munmap(map, length) }
    var vector = [UInt8](repeating: 0, count: (length + page - 1) / page)
    try #require(mincore(map, length, &vector) == 0)
    return (vector.filter { $0 & 1 != 0 }.count, vector.count)
}

@Suite("Pack spooling")
struct PackSpoolTests {

    @Test("a spool's ID is the SHA-256 of what was written, and it reads back the same bytes", arguments: [true, false])
    func spoolContent(unnamed: Bool) throws {
        let dir = TempDir("haven-spool")
        let spool = try SpoolFile(in: dir.path, unnamed: unnamed)
        let a = SeededRandom.bytes(seed: 1, 100_000), b = SeededRandom.bytes(seed: 2, 3)
        try spool.write(a)
        try spool.write(b)
        #expect(spool.size == a.count + b.count)
        #expect(try spool.id() == ID.hash(a + b))
        try expectSameBytes(spool.readAll(), a + b)
        spool.close()
        #expect(files(under: dir.path).isEmpty, "a closed spool that was never named must leave nothing behind")
    }

    @Test("small writes are gathered in a buffer: size, ID, content and the named file see every byte in order")
    func spoolBuffersSmallWrites() throws {
        let dir = TempDir("haven-spool")
        let spool = try SpoolFile(in: dir.path)
        // Sizes around the buffer's capacity: many tiny writes, one that just fits, one that just does not,
        // one as large as the buffer (written through), and tiny ones again.
        let cap = SpoolFile.bufferCapacity
        var sizes = Array(repeating: 37, count: 500) + [cap - 500 * 37, 1, cap - 1, cap, 3, cap + 5]
        sizes += (0..<300).map { 1 + ($0 * 7919) % 2000 }
        var all = try writeAll(spool, sizes, seed: 100)
        try expectSameBytes(spool.readAll(), all, "reading flushes the buffer first")
        try spool.write([1, 2, 3])
        all += [1, 2, 3]
        #expect(try spool.id() == ID.hash(all), "the ID covers the bytes still buffered")
        let target = dir.sub("named")
        try spool.link(to: target)
        spool.close()
        expectFileBytes(target, all)
    }

    @Test("a direct spool holds exactly what was written, across staging and block boundaries, named or unnamed", arguments: [true, false])
    func directSpoolContent(unnamed: Bool) throws {
        let dir = TempDir("haven-spool")
        let spool = try SpoolFile(in: dir.path, unnamed: unnamed, direct: true)
        #expect(spool.isDirect == directIOWorks(in: dir.path))
        let cap = SpoolFile.stagingCapacity, block = SpoolFile.directAlignment
        // Writes that fill the staging buffer exactly, overflow it, span several buffers, end on and off
        // block boundaries, and a run of tiny ones.
        var sizes = [cap, 1, cap - 1, 3 * cap + 17, block, block - 1, 0, 5 * block + 1]
        sizes += (0..<200).map { 1 + ($0 * 7919) % 3000 }
        var all = try writeAll(spool, sizes, seed: 500)
        #expect(try spool.id() == ID.hash(all), "the ID covers staged bytes too")
        #expect(!spool.isDirect, "a finished spool writes through the cache from then on")
        try spool.write([9, 8, 7])
        all += [9, 8, 7]
        try expectSameBytes(spool.readAll(), all)
        let target = dir.sub("named")
        try spool.link(to: target)
        spool.close()
        expectFileBytes(target, all)
        #expect(files(under: dir.path) == ["named"])
    }

    @Test("a direct spool's whole blocks reach the disk without filling the page cache")
    func directSpoolBypassesCache() throws {
        let dir = TempDir("haven-spool")
        try #require(directIOWorks(in: dir.path), "this filesystem refuses O_DIRECT; the test needs one that takes it")
        let bytes = SeededRandom.bytes(seed: 41, 6 * SpoolFile.stagingCapacity + 12_345)
        for direct in [true, false] {
            let spool = try SpoolFile(in: dir.path, direct: direct)
            try spool.write(bytes)
            let target = dir.sub(direct ? "direct" : "cached")
            try spool.link(to: target)
            spool.close()
            let resident = try residentPages(target)
            if direct {
                #expect(resident.cached <= 1, "only the last partial block may go through the cache: \(resident)")
            } else {
                #expect(resident.cached == resident.total, "a spool written through the cache stays in it: \(resident)")
            }
            expectFileBytes(target, bytes)
        }
    }

    @Test("a filesystem that refuses a direct write gets the bytes through the cache instead, none lost or repeated")
    func directSpoolFallback() throws {
        let dir = TempDir("haven-spool")
        try #require(directIOWorks(in: dir.path), "this filesystem refuses O_DIRECT at open; the fallback on write needs one that takes it")
        // A staging size that is not a whole number of blocks makes the kernel refuse the first direct write.
        let spool = try SpoolFile(in: dir.path, unnamed: true, direct: true, stagingSize: 1000)
        #expect(spool.isDirect)
        let a = SeededRandom.bytes(seed: 42, 700), b = SeededRandom.bytes(seed: 43, 5000)
        try spool.write(a)
        #expect(spool.isDirect, "700 bytes fit in the staging buffer: nothing written yet")
        try spool.write(b)
        #expect(!spool.isDirect, "the refused write switches the spool to the cache")
        try spool.write([1])
        try expectSameBytes(spool.readAll(), a + b + [1])
        #expect(try spool.id() == ID.hash(a + b + [1]))
    }

    @Test("a direct spool let go with writes still queued closes itself after them, on another thread than its queue")
    func directSpoolReleasedWithQueuedWrites() throws {
        let dir = TempDir("haven-spool")
        // Each spool queues a few 1 MiB writes and is dropped at once: the last reference then goes away while
        // the queue may still be writing. Closing waits for the queue, so closing on it would never return.
        for i in 0..<20 {
            let spool = try SpoolFile(in: dir.path, unnamed: false, direct: true)
            try spool.write(SeededRandom.bytes(seed: UInt64(60 + i), 4 * SpoolFile.stagingCapacity + 100))
        }
        #expect(files(under: dir.path).isEmpty, "a released spool removes its hidden file")
    }

    @Test("joining packs copies out of a direct spool into another")
    func directSpoolAppend() throws {
        let dir = TempDir("haven-spool")
        let first = try SpoolFile(in: dir.path, direct: true), second = try SpoolFile(in: dir.path, direct: true)
        let a = SeededRandom.bytes(seed: 44, SpoolFile.stagingCapacity + 3), b = SeededRandom.bytes(seed: 45, 2 * SpoolFile.stagingCapacity + 5)
        try first.write(a)
        try second.write(b)
        try first.append(contentsOf: second)
        try expectSameBytes(first.readAll(), a + b)
        #expect(try first.id() == ID.hash(a + b))
    }

    @Test("link(to:) names the spool read-only and durable; an existing file of the same name is kept", arguments: [true, false])
    func spoolLink(unnamed: Bool) throws {
        let dir = TempDir("haven-spool")
        let spool = try SpoolFile(in: dir.path, unnamed: unnamed)
        if unnamed {
            #expect(files(under: dir.path).isEmpty, "an unnamed spool has no name until linked")
        } else {
            #expect(spool.visiblePath != nil && files(under: dir.path).count == 1)
        }
        try spool.write(Array("pack bytes".utf8))
        let target = dir.sub("named")
        try spool.link(to: target)
        spool.close()
        #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == Data("pack bytes".utf8))
        var st = stat()
        #expect(lstat(target, &st) == 0 && st.st_mode & 0o777 == 0o400)
        #expect(files(under: dir.path) == ["named"], "only the named file remains")

        // Packs are named by their content: linking the same content again is not an error.
        let again = try SpoolFile(in: dir.path, unnamed: unnamed)
        try again.write(Array("pack bytes".utf8))
        if unnamed { try again.link(to: target) }
        again.close()
        #expect(files(under: dir.path) == ["named"])
    }

    @Test("concurrent savers write into packs of their own; flush joins the partly filled ones and every blob reads back")
    func concurrentSaversAndJoinedPacks() async throws {
        let dir = TempDir("haven-spool")
        let storage = LocalStorage(path: dir.sub("repo"))
        let repo = try await Repository.initialize(storage: storage, password: "pw", kdf: .testing)
        let packSize = 64 << 10
        let writer = BlobWriter(repository: repo, packSize: packSize, compression: .off)
        // 8 savers × 40 blobs of 1 to 5,000 bytes: several full packs and a partial one per saver.
        let blobs: [[UInt8]] = (0..<320).map { SeededRandom.bytes(seed: UInt64(1000 + $0), 1 + ($0 * 7919) % 5000) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for saver in 0..<8 {
                group.addTask {
                    for i in stride(from: saver, to: blobs.count, by: 8) {
                        try await writer.save(.data, plaintext: blobs[i])
                        await Task.yield()
                    }
                }
            }
            try await group.waitForAll()
        }
        try await writer.flush()
        #expect(writer.statistics.dataBlobs == blobs.count)

        let fresh = try await Repository.open(storage: storage, password: "pw")
        try await fresh.loadIndex()
        for b in blobs { try await expectSameBytes(fresh.loadBlob(ID.hash(b), .data), b) }

        // Every pack's header describes exactly its bytes, and the packs left under the target size could
        // not have been joined: any two of them together exceed it.
        var partial: [Int] = []
        for pack in try await storage.list(.pack) {
            let id = try #require(ID(hex: pack.name))
            let header = try await fresh.loadPackHeader(id, size: pack.size)
            let content = header.reduce(0) { $0 + Int($1.length) }
            let sorted = header.sorted { $0.offset < $1.offset }
            #expect(sorted.first?.offset == 0)
            for (a, b) in zip(sorted, sorted.dropFirst()) { #expect(a.offset + a.length == b.offset, "blobs are contiguous") }
            let filled = content + header.count * PackFormat.compressedEntrySize
            if filled < packSize { partial.append(filled) }
        }
        for (i, a) in partial.enumerated() {
            for b in partial[(i + 1)...] { #expect(a + b > packSize, "two partial packs of \(a) and \(b) bytes should have been joined") }
        }
    }

    @Test("auto compression probes large data blobs: incompressible ones are stored as they are, anything that compresses in a sample is compressed")
    func compressionProbe() async throws {
        let mib = 1 << 20
        let random = SeededRandom.bytes(seed: 77, mib)
        let text = Array(String(repeating: "the quick brown fox jumps over the lazy dog 0123456789\n", count: mib / 55 + 1).utf8.prefix(mib))
        // Random except for the stretch where the fifth sample falls, which is text.
        var mixed = random
        let step = (mib - BlobWriter.probeSampleSize) / (BlobWriter.probeSamples - 1)
        mixed.replaceSubrange((4 * step)..<(4 * step + BlobWriter.probeSampleSize), with: text.prefix(BlobWriter.probeSampleSize))
        let smallRandom = Array(random.prefix(300 * 1024))
        #expect(random.withUnsafeBytes { BlobWriter.looksIncompressible($0) })
        #expect(!text.withUnsafeBytes { BlobWriter.looksIncompressible($0) })
        #expect(!mixed.withUnsafeBytes { BlobWriter.looksIncompressible($0) })
        #expect(!smallRandom.withUnsafeBytes { BlobWriter.looksIncompressible($0) }, "blobs under 512 KiB are not probed")

        let dir = TempDir("haven-spool")
        let repo = try await Repository.initialize(storage: LocalStorage(path: dir.sub("repo")), password: "pw", kdf: .testing)
        let writer = BlobWriter(repository: repo, compression: .auto)
        for blob in [random, text, mixed] { try await writer.save(.data, plaintext: blob) }
        try await writer.flush()
        func stored(_ blob: [UInt8]) throws -> PackedBlob { try #require(repo.index.lookup(ID.hash(blob), .data)).blob }
        #expect(try stored(random).uncompressedLength == 0, "an incompressible blob is stored uncompressed")
        #expect(try stored(random).length == UInt32(mib + 32))
        #expect(try stored(text).uncompressedLength == UInt32(mib))
        #expect(try stored(text).length < UInt32(mib / 10))
        #expect(try stored(mixed).uncompressedLength == UInt32(mib), "a blob with a compressible sample is compressed")
        let reopened = try await Repository.open(storage: LocalStorage(path: dir.sub("repo")), password: "pw")
        try await reopened.loadIndex()
        for blob in [random, text, mixed] { try await expectSameBytes(reopened.loadBlob(ID.hash(blob), .data), blob) }
    }

    @Test("joining partly filled packs: fewest packs within the target size, each blob's bytes at its new offset")
    func joiningPartialPacks() async throws {
        let dir = TempDir("haven-spool")
        let packSize = 10_000
        let repo = try await Repository.initialize(storage: LocalStorage(path: dir.sub("repo")), password: "pw", kdf: .testing)
        let writer = BlobWriter(repository: repo, packSize: packSize, compression: .off)
        // Five partial packs of 1 to 3 blobs (5000, 4500, 2500, 6000 and 800 bytes).
        let layouts = [[3000, 2000], [4500], [1000, 1000, 500], [6000], [800]]
        var expected: [ID: [UInt8]] = [:]
        var packs: [BlobWriter.OpenPack] = []
        for (p, sizes) in layouts.enumerated() {
            var pack = BlobWriter.OpenPack(spool: try SpoolFile(in: dir.path))
            for (b, n) in sizes.enumerated() {
                let bytes = SeededRandom.bytes(seed: UInt64(p * 10 + b), n)
                let id = ID.hash(bytes)
                try pack.spool!.write(bytes)
                pack.blobs.append(PackedBlob(id: id, type: .data, offset: UInt32(pack.size), length: UInt32(n), uncompressedLength: 0))
                pack.size += n
                expected[id] = bytes
            }
            packs.append(pack)
        }
        let joined = try writer.joined(packs)
        // Largest first, each into the first pack with room (headers count: 41 bytes per blob):
        // 6000 + 2500 + 800 and 5000 + 4500: two packs instead of five.
        #expect(joined.map(\.size).sorted() == [9300, 9500])
        var seen = 0
        for pack in joined {
            #expect(pack.size + pack.blobs.count * PackFormat.compressedEntrySize <= packSize)
            let content = try pack.spool!.readAll()
            #expect(content.count == pack.size)
            for b in pack.blobs {
                expectSameBytes(content[Int(b.offset)..<Int(b.offset + b.length)], try #require(expected[b.id]), "blob \(b.id.short) at its offset")
                seen += 1
            }
            pack.spool!.close()
        }
        #expect(seen == expected.count)
    }

    @Test("a backup into a local repository writes its packs through spools: named by their hash, around the page cache, nothing left over")
    func localBackupSpools() async throws {
        let dir = TempDir("haven-spool")
        let src = dir.sub("src")
        try Fixture.mkdir(src)
        for i in 0..<40 { try Fixture.write(src + "/f\(i)", SeededRandom.bytes(seed: UInt64(i), 20_000 + i * 997)) }
        let root = dir.sub("repo")
        let repo = try await Repository.initialize(storage: LocalStorage(path: root), password: "pw", kdf: .testing)
        var options = BackupOptions(paths: [src])
        options.packSize = 64 << 10
        options.compression = .off
        let result = try await Archiver.backup(repository: repo, options: options)
        #expect(result.warnings.isEmpty)

        let stored = files(under: root + "/data")
        #expect(stored.count >= 10, "small packs: expected many, found \(stored.count)")
        for rel in stored {
            let parts = rel.split(separator: "/")
            try #require(parts.count == 2, "\(rel) is not in a data/xx/ directory")
            // Checked before reading it below, which brings it into the cache.
            if directIOWorks(in: root) {
                let resident = try residentPages(root + "/data/" + rel)
                #expect(resident.cached <= 1, "\(rel) went through the page cache: \(resident)")
            }
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: root + "/data/" + rel)))
            #expect(ID.hash(bytes).hex == parts[1], "\(rel) is not named by its SHA-256")
            #expect(parts[1].hasPrefix(parts[0]))
            var st = stat()
            #expect(lstat(root + "/data/" + rel, &st) == 0 && st.st_mode & 0o777 == 0o400)
        }
        #expect(files(under: root).allSatisfy { !$0.contains("spool") && !$0.contains(".tmp") })

        // The data reads back from a freshly opened repository.
        let reopened = try await Repository.open(storage: LocalStorage(path: root), password: "pw")
        try await reopened.loadIndex()
        let snapshot = try await reopened.loadSnapshot(try #require(result.snapshotID))
        var tree = try await reopened.loadTree(snapshot.tree)
        for comp in src.split(separator: "/") {
            tree = try await reopened.loadTree(try #require(tree.node(named: Array(comp.utf8))?.subtree))
        }
        #expect(tree.nodes.count == 40)
        for node in tree.nodes {
            var content: [UInt8] = []
            for id in node.content { content += try await reopened.loadBlob(id, .data) }
            let i = Int(String(decoding: node.name.dropFirst(), as: UTF8.self))!
            expectSameBytes(content, SeededRandom.bytes(seed: UInt64(i), 20_000 + i * 997))
        }
    }

    @Test("a failing spool directory fails the backup with a clear error and stores no snapshot")
    func unwritableSpool() async throws {
        let dir = TempDir("haven-spool")
        let src = dir.sub("src")
        try Fixture.mkdir(src)
        try Fixture.write(src + "/f", SeededRandom.bytes(seed: 3, 5000))
        let storage = SpoolElsewhere(base: MemoryStorage(), spoolDirectory: dir.sub("missing"))
        let repo = try await Repository.initialize(storage: storage, password: "pw", kdf: .testing)
        let error = await expectHavenError { _ = try await Archiver.backup(repository: repo, options: BackupOptions(paths: [src])) }
        #expect(error?.message.contains("temporary file for a pack") == true, "\(String(describing: error))")
        #expect(try await storage.list(.snapshot).isEmpty)
    }

    @Test("an unchanged directory keeps its parent's tree, even one encoded differently from Haven's encoding")
    func unchangedDirectoryKeepsParentTree() async throws {
        let dir = TempDir("haven-spool")
        let src = dir.sub("src")
        try Fixture.mkdir(src)
        for i in 0..<3 { try Fixture.write(src + "/f\(i)", SeededRandom.bytes(seed: UInt64(i), 1000)) }
        let storage = MemoryStorage()
        let repo = try await Repository.initialize(storage: storage, password: "pw", kdf: .testing)
        let first = try await Archiver.backup(repository: repo, options: BackupOptions(paths: [src]))
        let snapshot = try await repo.loadSnapshot(try #require(first.snapshotID))
        let components = src.split(separator: "/").map { Array($0.utf8) }

        // The same directory content, encoded with extra spaces: another blob ID, the same nodes.
        var trees = [try await repo.loadTree(snapshot.tree)]
        for comp in components { trees.append(try await repo.loadTree(try #require(trees.last!.node(named: comp)?.subtree))) }
        let encoded = String(decoding: trees.last!.encoded(), as: UTF8.self)
        let spaced = Array(encoded.replacingOccurrences(of: "{\"nodes\":", with: "{ \"nodes\" : ").utf8)
        #expect(try Tree.decode(spaced) == trees.last!)
        let writer = BlobWriter(repository: repo)
        var replacement = try await writer.save(.tree, plaintext: spaced)
        let variantID = replacement
        // Rebuild the path from the root with the variant at the end, and save it as another snapshot.
        for level in stride(from: components.count - 1, through: 0, by: -1) {
            var tree = trees[level]
            let index = try #require(tree.nodes.firstIndex { $0.name == components[level] })
            tree.nodes[index].subtree = replacement
            replacement = try await writer.save(.tree, plaintext: tree.encoded())
        }
        try await writer.flush()
        var variant = snapshot
        variant.tree = replacement
        let parent = try await repo.saveSnapshot(variant)

        var options = BackupOptions(paths: [src])
        options.parent = parent
        let second = try await Archiver.backup(repository: repo, options: options)
        let again = try await repo.loadSnapshot(try #require(second.snapshotID))
        var tree = try await repo.loadTree(again.tree)
        var id = again.tree
        for comp in components {
            id = try #require(tree.node(named: comp)?.subtree)
            tree = try await repo.loadTree(id)
        }
        #expect(id == variantID, "the unchanged directory was encoded again instead of keeping the parent's tree")
        #expect(second.summary.dirsUnmodified >= 1)
    }
}

/// Memory storage whose spool files go to a given directory.
private final class SpoolElsewhere: StorageDecorator {
    let base: any Storage
    let directory: String
    init(base: any Storage, spoolDirectory: String) { self.base = base; directory = spoolDirectory }
    var spoolDirectory: String? { directory }
    var properties: StorageProperties { base.properties }
    func create() async throws { try await base.create() }
    func save(_ handle: Handle, _ data: [UInt8]) async throws { try await base.save(handle, data) }
    func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] { try await base.load(handle, offset: offset, length: length) }
    func stat(_ handle: Handle) async throws -> Int { try await base.stat(handle) }
    func list(_ type: FileType) async throws -> [StoredFile] { try await base.list(type) }
    func remove(_ handle: Handle) async throws { try await base.remove(handle) }
}
