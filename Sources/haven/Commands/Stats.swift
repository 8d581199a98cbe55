import ArgumentParser
import Foundation
import HavenCore

struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show how much data snapshots hold.",
        discussion: """
        Counts the given snapshots ("latest", IDs or prefixes), or all snapshots matching --host/--tag/--path. \
        --mode chooses what is counted, as in restic:
          restore-size       what a restore would write: every entry counts
                             (directories too), hard links once per snapshot
          raw-data           the unique blobs referenced: stored size,
                             uncompressed size and compression; with all
                             snapshots selected also the size of all packs
          blobs-per-file     data blobs of each file with distinct contents
          files-by-contents  files with distinct contents and their sizes
          index              (Haven) the repository index as loaded: index
                             files, packs, blobs and the memory it takes;
                             snapshots and filters do not apply

        Examples:
          haven -r /srv/backup stats
          haven -r /srv/backup stats latest --mode raw-data
          haven -r /srv/backup stats --host laptop --mode files-by-contents --json
          haven -r /srv/backup stats --mode index
        """
    )

    enum Mode: String, CaseIterable {
        case restoreSize = "restore-size"
        case rawData = "raw-data"
        case blobsPerFile = "blobs-per-file"
        case filesByContents = "files-by-contents"
        case index
    }

    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: SnapshotFilter

    @Argument(help: ArgumentHelp("Snapshots to count (default: all matching the filters).", valueName: "SNAPSHOT"))
    var snapshots: [String] = []

    @Option(help: ArgumentHelp("What to count: restore-size, raw-data, blobs-per-file, files-by-contents or index.", valueName: "MODE"))
    var mode = "restore-size"

    func validate() throws {
        guard Mode(rawValue: mode) != nil else {
            throw ValidationError("invalid --mode \"\(mode)\": use \(Mode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if mode == Mode.index.rawValue && !snapshots.isEmpty {
            throw ValidationError("--mode index describes the whole repository index: leave out the snapshots (\(snapshots.joined(separator: " ")))")
        }
    }

    struct Result {
        var snapshots = 0
        var fileCount: UInt64 = 0
        var blobCount: UInt64 = 0
        var size: UInt64 = 0
        var uncompressedSize: UInt64 = 0
        var compressionRatio = 0.0
        var compressionProgress = 0.0
        var spaceSaving = 0.0
        var packSize: UInt64?
    }

    func run() async throws {
        let mode = Mode(rawValue: mode)!
        let repo = try await global.openRepository()
        if mode == .index {
            try await reportIndex(repo)
            return
        }
        let all = try await global.loadSnapshots(repo)
        let filtered = filter.apply(all)
        var selected: [Snapshot] = []
        if snapshots.isEmpty {
            selected = filtered
        } else {
            for name in snapshots {
                let s = try Repository.resolveSnapshot(name, in: filtered)
                if !selected.contains(where: { $0.id == s.id }) { selected.append(s) }
            }
        }
        let everything = selected.count == all.count
        let chosen = selected
        let result = try await withRepositoryLock(repo, exclusive: false, global: global, readOnly: true) { (_: Lock?) -> ResultBox in
            var counter = StatsCounter(repo: repo)
            var r = Result()
            r.snapshots = chosen.count
            switch mode {
            case .restoreSize:
                for s in chosen {
                    let (count, size) = try await counter.restoreSize(s.tree)
                    r.fileCount += count
                    r.size += size
                }
            case .rawData:
                for s in chosen { try await counter.collectBlobs(s.tree) }
                try counter.rawData(into: &r)
                if everything {
                    r.packSize = try await repo.storage.list(.pack).reduce(0) { $0 + UInt64($1.size) }
                }
            case .blobsPerFile, .filesByContents:
                for s in chosen {
                    try await counter.byContents(s.tree, path: "/", blobsPerFile: mode == .blobsPerFile, into: &r)
                }
            case .index:
                preconditionFailure("--mode index is reported by reportIndex")
            }
            return ResultBox(result: r)
        }.result
        report(result, mode: mode)
    }

    /// Loads every index file and tells what the in-memory index holds and how much memory it takes:
    /// the figure that decides whether a repository fits a small machine.
    func reportIndex(_ repo: Repository) async throws {
        let indexFiles = try await withRepositoryLock(repo, exclusive: false, global: global, readOnly: true) { (_: Lock?) in
            try await repo.loadIndex()
        }
        let index = repo.index
        let data = index.count(.data), tree = index.count(.tree)
        let blobs = data + tree
        let bytes = index.memoryBytes
        let perBlob = blobs > 0 ? Double(bytes) / Double(blobs) : 0
        if global.json {
            global.output.printJSON([
                "index_files": indexFiles, "packs": index.packCount, "data_blobs": data, "tree_blobs": tree,
                "index_memory_bytes": bytes, "index_memory_per_blob": (perBlob * 10).rounded() / 10,
            ] as [String: Any])
            return
        }
        func line(_ label: String, _ value: String) {
            Swift.print(Inspect.pad(label, 24) + ":  " + value)
        }
        Swift.print("Stats in index mode:")
        line("Index files", String(indexFiles))
        line("Packs", String(index.packCount))
        line("Data blobs", String(data))
        line("Tree blobs", String(tree))
        line("Index memory", Format.bytes(UInt64(bytes)) + (blobs > 0 ? String(format: " (%.1f bytes per blob)", perBlob) : ""))
    }

    /// Carries the non-Sendable result out of the locked section.
    struct ResultBox: @unchecked Sendable { var result: Result }

    func report(_ r: Result, mode: Mode) {
        if global.json {
            var d: [String: Any] = [
                "total_size": NSNumber(value: r.size), "total_file_count": NSNumber(value: r.fileCount),
                "total_blob_count": NSNumber(value: r.blobCount), "total_uncompressed_size": NSNumber(value: r.uncompressedSize),
                "compression_ratio": r.compressionRatio, "compression_progress": r.compressionProgress,
                "compression_space_saving": r.spaceSaving, "snapshots_count": r.snapshots,
            ]
            if let p = r.packSize { d["repository_pack_size"] = NSNumber(value: p) }
            global.output.printJSON(d)
            return
        }
        func line(_ label: String, _ value: String) {
            Swift.print(Inspect.pad(label, 24) + ":  " + value)
        }
        Swift.print("Stats in \(mode.rawValue) mode:")
        line("Snapshots processed", String(r.snapshots))
        if r.blobCount > 0 { line("Total Blob Count", String(r.blobCount)) }
        if r.fileCount > 0 { line("Total File Count", String(r.fileCount)) }
        if r.uncompressedSize > 0 { line("Total Uncompressed Size", Format.bytes(r.uncompressedSize)) }
        line("Total Size", Format.bytes(r.size))
        if r.compressionProgress > 0 { line("Compression Progress", String(format: "%.2f%%", r.compressionProgress)) }
        if r.compressionRatio > 0 { line("Compression Ratio", String(format: "%.2fx", r.compressionRatio)) }
        if r.spaceSaving > 0 { line("Compression Space Saving", String(format: "%.2f%%", r.spaceSaving)) }
        if let p = r.packSize { line("Repository Pack Size", Format.bytes(p)) }
    }
}

/// The tree walks behind `stats`.
struct StatsCounter {
    let repo: Repository

    /// restore-size totals of one tree: entries, bytes of files not hard-linked, and the hard-link candidates
    /// (counted once per snapshot by inode and device).
    struct TreeTotals {
        var count: UInt64 = 0
        var size: UInt64 = 0
        var linked: [LinkedFile] = []
    }

    struct LinkedFile: Hashable {
        var inode: UInt64
        var device: UInt64
        var size: UInt64
    }

    struct BlobKey: Hashable {
        var id: ID
        var type: BlobType
    }

    private var totals: [ID: TreeTotals] = [:]
    private var blobs = Set<BlobKey>()
    private var visitedTrees = Set<ID>()
    private var uniqueFiles = Set<ID>()
    private var fileBlobs: [String: Set<ID>] = [:]

    init(repo: Repository) { self.repo = repo }

    mutating func restoreSize(_ root: ID) async throws -> (UInt64, UInt64) {
        let t = try await treeTotals(root)
        var size = t.size
        var seen = Set<LinkedFile>()
        for f in t.linked where seen.insert(LinkedFile(inode: f.inode, device: f.device, size: 0)).inserted {
            size += f.size
        }
        return (t.count, size)
    }

    private mutating func treeTotals(_ id: ID) async throws -> TreeTotals {
        if let t = totals[id] { return t }
        var t = TreeTotals()
        for node in try await repo.loadTree(id).nodes {
            t.count += 1
            // A node whose link count is unknown (0) or above 1 may be a hard link to another node.
            if node.inode != 0 && node.links != 1 {
                t.linked.append(LinkedFile(inode: node.inode, device: node.deviceID, size: node.size))
            } else {
                t.size += node.size
            }
            if node.type == .dir, let sub = node.subtree {
                let s = try await treeTotals(sub)
                t.count += s.count
                t.size += s.size
                t.linked += s.linked
            }
        }
        totals[id] = t
        return t
    }

    mutating func collectBlobs(_ tree: ID) async throws {
        guard visitedTrees.insert(tree).inserted else { return }
        blobs.insert(BlobKey(id: tree, type: .tree))
        for node in try await repo.loadTree(tree).nodes {
            for c in node.content { blobs.insert(BlobKey(id: c, type: .data)) }
            if let sub = node.subtree { try await collectBlobs(sub) }
        }
    }

    func rawData(into r: inout Stats.Result) throws {
        var compressedStored: UInt64 = 0, compressedPlain: UInt64 = 0
        let v2 = repo.version >= 2
        for k in blobs {
            guard let loc = repo.index.lookup(k.id, k.type) else {
                throw HavenError(.corrupt, "\(k.type.rawValue) blob \(k.id.short) is referenced but not in the index; run `haven check`")
            }
            r.size += UInt64(loc.blob.length)
            r.blobCount += 1
            if v2 {
                // Like restic: the size the blob would take stored without compression.
                let plain = UInt64(loc.blob.dataLength) + UInt64(MasterKey.overhead)
                r.uncompressedSize += plain
                if loc.blob.isCompressed {
                    compressedStored += UInt64(loc.blob.length)
                    compressedPlain += plain
                }
            }
        }
        if compressedStored > 0 { r.compressionRatio = Double(compressedPlain) / Double(compressedStored) }
        if r.uncompressedSize > 0 {
            r.compressionProgress = Double(compressedPlain) / Double(r.uncompressedSize) * 100
            r.spaceSaving = (1 - Double(r.size) / Double(r.uncompressedSize)) * 100
        }
    }

    mutating func byContents(_ tree: ID, path: String, blobsPerFile: Bool, into r: inout Stats.Result) async throws {
        for node in try await repo.loadTree(tree).nodes {
            let p = Inspect.join(path, node.displayName)
            if node.type == .file {
                let fid = ID.hash(node.content.flatMap(\.bytes))
                if uniqueFiles.insert(fid).inserted {
                    if !blobsPerFile {
                        r.size += node.size
                        r.fileCount += 1
                    } else {
                        for blob in node.content {
                            if fileBlobs[p] == nil {
                                fileBlobs[p] = []
                                r.fileCount += 1
                            }
                            guard fileBlobs[p]!.insert(blob).inserted else { continue }
                            guard let size = Inspect.blobSize(repo, blob, .data) else {
                                throw HavenError(.corrupt, "data blob \(blob.short) of \(p) is not in the index; run `haven check`")
                            }
                            r.size += size
                            r.blobCount += 1
                        }
                    }
                }
            }
            if node.type == .dir, let sub = node.subtree {
                try await byContents(sub, path: p, blobsPerFile: blobsPerFile, into: &r)
            }
        }
    }
}
