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
    /// - Parameter report: called with a line per snapshot copied or skipped.
    public static func copy(_ snapshots: [Snapshot], from source: Repository, to destination: Repository,
                            packSize: Int = 16 << 20, compression: CompressionMode = .auto,
                            report: @Sendable (String) -> Void = { _ in }) async throws -> CopyResult {
        var result = CopyResult()
        var existing = try await destination.loadSnapshots()
        let writer = BlobWriter(repository: destination, packSize: packSize, compression: compression)
        let visited = Locked<Set<ID>>([])
        let queued = Locked<Set<ID>>([])
        let concurrency = max(2, min(16, 2 * max(source.storage.properties.connections, destination.storage.properties.connections)))
        for snapshot in snapshots {
            guard let sourceID = snapshot.id else { continue }
            if existing.contains(where: { isSameBackup($0, snapshot) }) {
                result.skipped.append(sourceID)
                report("skipping snapshot \(sourceID.short) of \(snapshot.paths.joined(separator: ", ")) at \(snapshot.time): already in the destination")
                continue
            }
            try await copyTree(snapshot.tree, from: source, writer: writer, visited: visited, queued: queued, concurrency: concurrency)
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

    /// Copies the tree `id` and everything below it that the destination lacks, children first.
    private static func copyTree(_ id: ID, from source: Repository, writer: BlobWriter, visited: Locked<Set<ID>>, queued: Locked<Set<ID>>,
                                 concurrency: Int) async throws {
        let destination = writer.repository
        guard !destination.index.has(id, .tree), visited.withLock({ $0.insert(id).inserted }) else { return }
        let bytes = try await source.loadBlob(id, .tree)
        let tree: Tree
        do { tree = try Tree.decode(bytes) } catch let e as HavenError {
            throw HavenError(.corrupt, "tree \(id.short) in \(source.storage.location): \(e.message)")
        }
        var missing: [ID] = []
        queued.withLock { queued in
            for node in tree.nodes where node.type == .file {
                for blob in node.content where !destination.index.has(blob, .data) && queued.insert(blob).inserted {
                    missing.append(blob)
                }
            }
        }
        try await forEachConcurrently(missing, limit: concurrency) { blob in
            let plaintext = try await source.loadBlob(blob, .data)
            try await writer.save(.data, id: blob, plaintext: plaintext)
        }
        for node in tree.nodes {
            if let subtree = node.subtree {
                try await copyTree(subtree, from: source, writer: writer, visited: visited, queued: queued, concurrency: concurrency)
            }
        }
        try await writer.save(.tree, id: id, plaintext: bytes)
    }
}
