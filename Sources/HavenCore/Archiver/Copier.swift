/// What `SnapshotCopier.copy` did.
public struct CopyResult: Sendable {
    /// Source snapshot → the new snapshot in the destination.
    public var copied: [(source: ID, copy: ID)] = []
    /// Source snapshots the destination already had.
    public var skipped: [ID] = []
    /// Blobs and packs written to the destination.
    public var statistics = BlobWriter.Statistics()
}

/// Copies snapshots between repositories (restic's `copy`): only blobs the destination lacks are read,
/// decrypted with the source key and stored again with the destination's key and compression. The
/// repositories may use different chunker parameters; blobs are copied as they are.
public enum SnapshotCopier {
    /// Whether `a` and `b` record the same backup: same root tree, time, paths and host.
    public static func isSameBackup(_ a: Snapshot, _ b: Snapshot) -> Bool {
        a.tree == b.tree && a.time.seconds == b.time.seconds && a.time.nanoseconds == b.time.nanoseconds
            && a.hostname == b.hostname && a.paths.sorted() == b.paths.sorted()
    }

    /// Copies each of `snapshots` (from `source`) that `destination` does not have yet. The destination's
    /// index must be loaded. Trees are written after everything they refer to, and the snapshot only
    /// after the index naming its blobs, so an interrupted copy leaves a consistent repository.
    ///
    /// Data blobs are read in batches, grouped by the pack that holds them: nearby blobs of a pack are one
    /// read, and a pack's reads go through one reader (one request on an object store), instead of one
    /// request per blob.
    ///
    /// - Parameters:
    ///   - batchBytes: sealed bytes of data blobs queued before they are read and written (a quarter of
    ///     it for trees).
    ///   - report: called with a line per snapshot copied or skipped.
    public static func copy(_ snapshots: [Snapshot], from source: Repository, to destination: Repository,
                            packSize: Int = 16 << 20, compression: CompressionMode = .auto, batchBytes: Int = 64 << 20,
                            report: @Sendable (String) -> Void = { _ in }) async throws -> CopyResult {
        var result = CopyResult()
        var existing = try await destination.loadSnapshots()
        let writer = BlobWriter(repository: destination, packSize: packSize, compression: compression)
        let concurrency = max(2, min(16, 2 * max(source.storage.properties.connections, destination.storage.properties.connections)))
        let batch = CopyBatch(source: source, writer: writer, concurrency: concurrency, limit: max(1, batchBytes))
        for snapshot in snapshots {
            guard let sourceID = snapshot.id else { continue }
            if existing.contains(where: { isSameBackup($0, snapshot) }) {
                result.skipped.append(sourceID)
                report("skipping snapshot \(sourceID.short) of \(snapshot.paths.joined(separator: ", ")) at \(snapshot.time): already in the destination")
                continue
            }
            try await copyTree(snapshot.tree, batch)
            try await batch.drain()
            try await writer.flush()
            var copy = snapshot
            copy.id = nil
            copy.parent = nil  // the parent is a snapshot of the source repository
            copy.original = snapshot.original ?? sourceID
            let newID = try await destination.saveSnapshot(copy)
            copy.id = newID
            existing.append(copy)
            result.copied.append((sourceID, newID))
            report("snapshot \(sourceID.short) of \(snapshot.paths.joined(separator: ", ")) at \(snapshot.time) copied as \(newID.short)")
        }
        result.statistics = writer.statistics
        return result
    }

    /// Queues the tree `id` and everything below it that the destination lacks, children first; the
    /// batch writes them once it is large enough.
    private static func copyTree(_ id: ID, _ batch: CopyBatch) async throws {
        let source = batch.source, destination = batch.writer.repository
        guard !destination.index.has(id, .tree), batch.visited.insert(id).inserted else { return }
        let bytes = try await source.loadBlob(id, .tree)
        let tree: Tree
        do { tree = try Tree.decode(bytes) } catch let e as HavenError {
            throw HavenError(.corrupt, "tree \(id.short) in \(source.storage.location): \(e.message)")
        }
        for node in tree.nodes where node.type == .file {
            for blob in node.content where !destination.index.has(blob, .data) && batch.queued.insert(blob).inserted {
                guard let loc = source.index.lookup(blob, .data) else {
                    throw HavenError(.notFound, "data blob \(blob.short) of tree \(id.short) is not in the index of \(source.storage.location)")
                }
                batch.blobs.append(loc)
                batch.blobBytes += Int(loc.blob.length)
            }
        }
        for node in tree.nodes {
            if let subtree = node.subtree { try await copyTree(subtree, batch) }
        }
        batch.trees.append((id, bytes))
        batch.treeBytes += bytes.count
        if batch.blobBytes >= batch.limit || batch.treeBytes >= batch.limit / 4 { try await batch.drain() }
    }
}

/// Blobs waiting to be copied: data blobs (where they are in the source) and the trees that wait for
/// them, in the order they are to be written.
private final class CopyBatch {
    let source: Repository
    let writer: BlobWriter
    let concurrency: Int
    /// Sealed bytes of data blobs at which the batch is written (a quarter of it for trees).
    let limit: Int
    var visited: Set<ID> = []
    var queued: Set<ID> = []
    var blobs: [BlobLocation] = []
    var blobBytes = 0
    var trees: [(ID, [UInt8])] = []
    var treeBytes = 0

    init(source: Repository, writer: BlobWriter, concurrency: Int, limit: Int) {
        self.source = source
        self.writer = writer
        self.concurrency = concurrency
        self.limit = limit
    }

    /// Copies the queued data blobs, then writes the queued trees.
    func drain() async throws {
        let byPack = Dictionary(grouping: blobs, by: \.pack)
        let source = source, writer = writer
        // Each pack's blobs in offset order, as reads: a run of ranges close enough to share a reader.
        let jobs = byPack.sorted { $0.key < $1.key }.flatMap { pack, locations in
            SnapshotCopier.readGroups(locations.map(\.blob).sorted { $0.offset < $1.offset }).map { (pack, $0) }
        }
        // Each job holds one range (up to `maxRead` bytes) and two plaintexts at a time. Four at once: over S3,
        // copying 1.2 GiB took 3.3 s and peaked at 91 MB RSS (eight: 3.2 s, 108 MB).
        try await forEachConcurrently(jobs, limit: min(concurrency, 4)) { pack, ranges in
            let first = Int(ranges[0][0].offset)
            let end = SnapshotCopier.end(of: ranges[ranges.count - 1])
            try await source.storage.withReader(Handle(.pack, pack), offset: first, length: end - first) { reader in
                var at = first
                for range in ranges {
                    let start = Int(range[0].offset)
                    if start > at { _ = try await reader.read(start - at) }
                    let bytes = try await reader.read(SnapshotCopier.end(of: range) - start)
                    at = start + bytes.count
                    // Two blobs at a time (their hashes are computed side by side), each stored before
                    // the next two are opened.
                    for pair in stride(from: 0, to: range.count, by: 2) {
                        let blobs = Array(range[pair..<min(pair + 2, range.count)])
                        var plaintexts: [(ID, [UInt8])] = []
                        try bytes.withUnsafeBytes { raw in
                            try source.openBlobs(blobs, in: raw, at: start, pack: pack) { i, result in
                                plaintexts.append((blobs[i].id, try result.get()))
                            }
                        }
                        for (id, plaintext) in plaintexts { try await writer.save(.data, id: id, plaintext: plaintext) }
                    }
                }
            }
        }
        for (id, bytes) in trees { try await writer.save(.tree, id: id, plaintext: bytes) }
        blobs = []
        blobBytes = 0
        trees = []
        treeBytes = 0
    }
}

extension SnapshotCopier {
    /// A pack's blobs are read in ranges of at most this many bytes, gaps of up to `maxGap` included.
    static let maxRead = 4 << 20
    static let maxGap = 1 << 20

    static func end(of range: [PackedBlob]) -> Int {
        range.map { Int($0.offset) + Int($0.length) }.max()!
    }

    /// `blobs` (one pack's, by offset) as ranges of at most `maxRead` bytes (or one blob) with gaps of at
    /// most `maxGap`, grouped into runs of ranges that follow each other that closely too (a run is read
    /// through one reader).
    static func readGroups(_ blobs: [PackedBlob]) -> [[[PackedBlob]]] {
        var ranges: [[PackedBlob]] = []
        var start = 0, end = 0
        for b in blobs {
            let s = Int(b.offset), e = s + Int(b.length)
            if !ranges.isEmpty, s >= end, s - end <= maxGap, e - start <= maxRead {
                ranges[ranges.count - 1].append(b)
                end = max(end, e)
            } else {
                ranges.append([b])
                start = s
                end = e
            }
        }
        let spans = ranges.map { Int($0[0].offset)..<SnapshotCopier.end(of: $0) }
        return runsOfNearbySpans(spans, maxGap: maxGap).map { Array(ranges[$0]) }
    }
}
