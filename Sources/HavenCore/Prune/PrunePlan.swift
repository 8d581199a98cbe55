/// How much unused space `prune` may leave in partly used packs (restic's `--max-unused`).
public enum MaxUnused: Sendable, Equatable {
    /// At most this percentage of the repository's size after pruning may be unused.
    case percent(Double)
    /// At most this many unused bytes may remain.
    case bytes(UInt64)
    /// Never repack data packs just to reclaim space (tree packs are still repacked).
    case unlimited

    /// Parses restic's forms: `"5%"`, `"unlimited"`, or a size such as `"0"`, `"200M"` (binary units).
    public static func parse(_ text: String) throws -> MaxUnused {
        let s = text.filter { $0 != " " }
        if s == "unlimited" { return .unlimited }
        if s.hasSuffix("%") {
            guard let p = Double(s.dropLast()), p >= 0, p <= 100 else {
                throw HavenError(.invalidArgument, "invalid --max-unused \"\(text)\": the percentage must be between 0 and 100")
            }
            return .percent(p)
        }
        guard let b = parseSize(s) else {
            throw HavenError(.invalidArgument, "invalid --max-unused \"\(text)\": use a percentage (5%), a size (200M) or \"unlimited\"")
        }
        return .bytes(b)
    }

    /// The unused bytes allowed when `used` bytes remain in use.
    func allowance(used: UInt64) -> UInt64 {
        switch self {
        case .unlimited: return .max
        case .bytes(let b): return b
        case .percent(let p):
            // p% of (used + unused) ⇔ unused ≤ used · p / (100 − p).
            guard p < 100 else { return .max }
            guard p > 0 else { return 0 }
            return UInt64(Double(used) * p / (100 - p))
        }
    }
}

/// What `PrunePlan.make` may do.
public struct PruneOptions: Sendable {
    /// Unused space allowed to remain in partly used packs.
    public var maxUnused: MaxUnused
    /// Stop choosing packs to repack once their total size would exceed this (restic's `--max-repack-size`).
    public var maxRepackBytes: UInt64?
    /// Repack only packs holding tree blobs (restic's `--repack-cacheable-only`).
    public var repackCacheableOnly: Bool
    /// Target size of the packs written when repacking.
    public var packSize: Int
    /// Packs read at once while repacking (each is held in memory).
    public var concurrency: Int

    /// Options; the defaults are restic's (5% unused, 16 MiB packs).
    public init(maxUnused: MaxUnused = .percent(5), maxRepackBytes: UInt64? = nil, repackCacheableOnly: Bool = false,
                packSize: Int = 16 << 20, concurrency: Int = 2) {
        self.maxUnused = maxUnused
        self.maxRepackBytes = maxRepackBytes
        self.repackCacheableOnly = repackCacheableOnly
        self.packSize = packSize
        self.concurrency = max(1, concurrency)
    }

    func validate() throws {
        if case .percent(let p) = maxUnused, !(p >= 0 && p <= 100) {
            throw HavenError(.invalidArgument, "--max-unused \(p)% is out of range: use 0% to 100%")
        }
        guard packSize >= 1 else { throw HavenError(.invalidArgument, "pack size must be positive") }
    }
}

/// Progress of planning and executing a prune.
public struct PruneProgress: Sendable {
    /// The step being worked on; the raw value is a label for display.
    public enum Phase: String, Sendable {
        case snapshots = "loading snapshots"
        case trees = "finding data still in use"
        case repack = "repacking packs"
        case writeIndex = "rebuilding index"
        case deleteIndex = "deleting obsolete index files"
        case deletePacks = "removing old packs"
    }
    /// The current step.
    public var phase: Phase
    /// Items of this step finished so far.
    public var done: Int
    /// Items in this step, when known.
    public var total: Int?
}

/// What `PrunePlan.execute` did.
public struct PruneResult: Sendable {
    /// New packs holding repacked blobs.
    public var packsWritten = 0
    /// Blobs copied into new packs.
    public var blobsRepacked = 0
    /// Bytes of the new packs.
    public var bytesWritten: UInt64 = 0
    /// New index files describing the remaining packs.
    public var indexFilesWritten = 0
    /// Old index files removed.
    public var indexFilesRemoved = 0
    /// Packs removed (deleted, repacked and unreferenced).
    public var packsRemoved = 0
}

/// A prune, decided before anything is changed: which packs to delete, which to repack, and what it frees.
///
/// `make` only reads, so showing `description` without executing is a dry run. `execute` carries the plan
/// out in an order that keeps the repository valid if it is interrupted at any point: new packs, then an
/// index describing every remaining pack, then removal of the old index files, and only then of packs.
public struct PrunePlan: Sendable, CustomStringConvertible {
    /// A number of blobs and their stored size (encrypted bytes plus header entries).
    public struct Amount: Sendable, Equatable {
        /// Number of blobs.
        public var blobs = 0
        /// Their stored size.
        public var bytes: UInt64 = 0
        mutating func add(_ b: PackedBlob) {
            blobs += 1
            bytes += UInt64(b.length) + UInt64(PackReader.headerEntrySize(b))
        }
        mutating func add(_ a: Amount) { blobs += a.blobs; bytes += a.bytes }
    }

    /// The options the plan was made with.
    public var options: PruneOptions
    /// Indexed packs that hold no used blob.
    public var packsToDelete: [ID] = []
    /// Partly used packs whose used blobs are copied into new packs before the pack is removed.
    public var packsToRepack: [ID] = []
    /// Pack files in storage that no index names (left by interrupted operations).
    public var unreferencedPacks: [ID] = []
    /// Packs named in the index but missing from storage; the new index drops them (none of their blobs is needed).
    public var missingPacks: [ID] = []
    /// Packs that stay as they are.
    public var packsKept = 0

    /// Used blobs (one copy each).
    public var used = Amount()
    /// Blobs no snapshot needs, including extra copies of duplicated blobs.
    public var unused = Amount()
    /// Extra copies of blobs stored more than once (part of `unused`).
    public var duplicates = Amount()
    /// Used blobs copied into new packs.
    public var toRepack = Amount()
    /// Unused blobs removed by repacking.
    public var removedByRepack = Amount()
    /// Blobs in deleted packs.
    public var removedByDelete = Amount()
    /// Size of the unreferenced packs.
    public var unreferencedBytes: UInt64 = 0
    /// Unused bytes left in kept packs after pruning.
    public var unusedAfter: UInt64 = 0
    /// Approximate storage space freed.
    public var bytesFreed: UInt64 = 0
    /// Approximate repository size (packs) after pruning.
    public var remainingBytes: UInt64 = 0

    // What execute needs.
    var indexFiles: [ID] = []
    var snapshotIDs: [ID] = []
    var keptPacks: [IndexFile.Pack] = []
    var repackSources: [ID: [PackedBlob]] = [:]

    /// True when executing would change nothing.
    public var isEmpty: Bool {
        packsToDelete.isEmpty && packsToRepack.isEmpty && unreferencedPacks.isEmpty && missingPacks.isEmpty
    }

    // MARK: Planning

    /// Reads the repository and decides what to prune. Changes nothing.
    ///
    /// Refuses (throws `.corrupt`) when a snapshot or index file cannot be read, a tree cannot be loaded,
    /// or a blob a snapshot uses is not available: pruning then could destroy the data a repair needs.
    public static func make(
        repository: Repository, options: PruneOptions = PruneOptions(),
        progress: (@Sendable (PruneProgress) -> Void)? = nil
    ) async throws -> PrunePlan {
        try options.validate()
        var plan = PrunePlan(options: options)
        let storage = repository.storage

        // Snapshots are listed before the index is read (the index covers every listed snapshot).
        let snapshotIDs = try await repository.listSnapshotIDs()
        plan.snapshotIDs = snapshotIDs.sorted()
        // Each index file goes into the master index (for reading trees) and the listing (every copy of
        // every blob) as it is decoded; no decoded file is kept.
        let index = MasterIndex()
        let listing: PackListing
        do {
            (listing, plan.indexFiles) = try await PackListing.load(repository, into: index)
        } catch let e as HavenError {
            throw HavenError(.corrupt, "prune refused: \(e.message); nothing was changed. Run `haven check` and repair the index first", cause: e)
        }
        let snapshots = Locked<[Snapshot]>([])
        let done = Locked(0)
        do {
            try await forEachConcurrently(snapshotIDs, limit: 8) { id in
                let s = try await repository.loadSnapshot(id)
                snapshots.withLock { $0.append(s) }
                let n = done.withLock { $0 += 1; return $0 }
                progress?(PruneProgress(phase: .snapshots, done: n, total: snapshotIDs.count))
            }
        } catch let e as HavenError {
            throw HavenError(.corrupt, "prune refused: a snapshot cannot be loaded (\(e.message)); nothing was changed. "
                             + "Run `haven check`, then remove or repair the damaged snapshot", cause: e)
        }

        let walk = try await TreeWalker(repository: repository, index: index, maxProblems: 20)
            .walk(snapshots.withLock { $0 }) { n in progress?(PruneProgress(phase: .trees, done: n, total: nil)) }
        if walk.problemCount > 0 {
            throw HavenError(.corrupt, "prune refused: \(walk.problemCount) problem\(walk.problemCount == 1 ? "" : "s") in the data snapshots use, e.g.\n  "
                             + walk.problems.prefix(5).map(\.description).joined(separator: "\n  ")
                             + "\nnothing was changed. Run `haven check` and repair the repository first")
        }

        var stored: [ID: Int] = [:]
        for f in try await storage.list(.pack) {
            if let id = ID(hex: f.name) { stored[id] = f.size }
        }
        try plan.classify(listing: listing, stored: stored, inUse: walk.used)
        return plan
    }

    /// `make(repository:options:progress:)` with just the common options.
    public static func make(
        repository: Repository, maxUnused: MaxUnused, repackCacheableOnly: Bool = false,
        progress: (@Sendable (PruneProgress) -> Void)? = nil
    ) async throws -> PrunePlan {
        try await make(repository: repository, options: PruneOptions(maxUnused: maxUnused, repackCacheableOnly: repackCacheableOnly),
                       progress: progress)
    }

    private struct PackStats {
        var blobs: [PackedBlob] { entries.map(\.blob) }
        var entries: ArraySlice<PackListing.Entry>
        var size: UInt64
        var used = Amount()
        var unused = Amount()
        var duplicates = Amount()
        var hasTree = false
        var keepers: [PackedBlob] = []
    }

    private mutating func classify(listing: PackListing, stored: [ID: Int], inUse: UsedBlobs) throws {
        let index = inUse.index
        let slotCount = index.slotCount
        // Every listed blob is in the index (both come from the same files), so each has a slot.
        func slot(_ b: PackedBlob) -> Int? { index.slot(b.id, b.type) }
        func isUsed(_ b: PackedBlob) -> Bool { slot(b).map(inUse.contains(slot:)) ?? false }

        // The first stored pack holding each used blob, and every holder of the few used blobs with copies.
        var packs: [ID: PackStats] = [:]
        var firstHolder = [UInt32](repeating: .max, count: slotCount)
        var holders: [Int: [ID]] = [:]
        var missingPositions: [Int] = []
        for (k, id) in listing.packs.enumerated() {
            guard let size = stored[id] else {
                missingPacks.append(id)
                missingPositions.append(k)
                continue
            }
            let entries = listing.blobs(ofPackAt: k)
            var stats = PackStats(entries: entries, size: UInt64(size))
            for e in entries {
                if e.blob.type == .tree { stats.hasTree = true }
                guard let s = slot(e.blob), inUse.contains(slot: s) else { continue }
                let first = firstHolder[s]
                if first == .max {
                    firstHolder[s] = UInt32(k)
                } else if first != UInt32(k), holders[s]?.last != id {
                    holders[s, default: [listing.packs[Int(first)]]].append(id)
                }
            }
            packs[id] = stats
        }

        // Every used blob needs a copy in a pack that exists.
        var unavailable = inUse.notIndexed.sorted { ($0.type.rawValue, $0.id) < ($1.type.rawValue, $1.id) }
        var reported = Set<Int>()
        for k in missingPositions {
            for e in listing.blobs(ofPackAt: k) {
                guard let s = slot(e.blob), inUse.contains(slot: s), firstHolder[s] == .max, reported.insert(s).inserted else { continue }
                unavailable.append(BlobKey(id: e.blob.id, type: e.blob.type))
            }
        }
        if !unavailable.isEmpty {
            let sample = unavailable.prefix(5).map { "\($0.type.rawValue) blob \($0.id.short)" }.joined(separator: ", ")
            throw HavenError(.corrupt, "prune refused: \(unavailable.count) blob\(unavailable.count == 1 ? "" : "s") that snapshots use "
                             + "\(unavailable.count == 1 ? "is" : "are") only in packs missing from storage (\(sample)); nothing was changed. "
                             + "Run `haven check` and repair the repository first")
        }

        // Choose one copy of each used blob: the one in the pack that is most used anyway.
        // Ties go to the pack with more used bytes, then to the lower pack ID (deterministic).
        var keeper: [Int: ID] = [:]
        if !holders.isEmpty {
            var usedShare: [ID: (share: Double, bytes: UInt64)] = [:]
            for (id, p) in packs {
                var usedBytes: UInt64 = 0, total: UInt64 = 0
                for e in p.entries {
                    total += UInt64(e.blob.length)
                    if isUsed(e.blob) { usedBytes += UInt64(e.blob.length) }
                }
                usedShare[id] = (total == 0 ? 0 : Double(usedBytes) / Double(total), usedBytes)
            }
            for (s, where_) in holders {
                keeper[s] = where_.min { a, b in
                    let x = usedShare[a]!, y = usedShare[b]!
                    if x.share != y.share { return x.share > y.share }
                    if x.bytes != y.bytes { return x.bytes > y.bytes }
                    return a < b
                }
            }
        }
        // A blob listed twice in one pack is kept once: `takenBy` marks the pack that took it.
        firstHolder = []
        var takenBy = [UInt32](repeating: .max, count: slotCount)
        for (k, id) in listing.packs.enumerated() {
            guard var p = packs[id] else { continue }
            for e in p.entries {
                let b = e.blob
                let s = slot(b)
                let isKeeper = s.map { s in inUse.contains(slot: s) && (keeper[s] ?? id) == id && takenBy[s] != UInt32(k) } ?? false
                if isKeeper, let s {
                    takenBy[s] = UInt32(k)
                    p.used.add(b)
                    p.keepers.append(b)
                } else {
                    p.unused.add(b)
                    if isUsed(b) { p.duplicates.add(b) }
                }
            }
            packs[id] = p
            used.add(p.used)
            unused.add(p.unused)
            duplicates.add(p.duplicates)
        }

        // Classify.
        var keep = Set<ID>()
        var repack: [ID] = []
        var candidates: [ID] = []
        var repackBytes: UInt64 = 0
        for id in packs.keys.sorted() {
            let p = packs[id]!
            if p.used.blobs == 0 {
                packsToDelete.append(id)
                removedByDelete.add(p.unused)
            } else if p.unused.blobs == 0 {
                keep.insert(id)
            } else if p.hasTree {
                // Tree packs are small and read by every operation: always repacked, within --max-repack-size.
                if options.maxRepackBytes.map({ repackBytes + p.size <= $0 }) ?? true {
                    repack.append(id)
                    repackBytes += p.size
                } else {
                    keep.insert(id)
                }
            } else if options.repackCacheableOnly {
                keep.insert(id)
            } else {
                candidates.append(id)
            }
        }
        // Packs that are mostly unused first: repacking one reads the whole pack and writes its used part,
        // so the highest unused/used ratio frees the most space per byte rewritten (restic orders the same
        // way). Compared as unused·used' > unused'·used, in Double to stay clear of overflow.
        candidates.sort { a, b in
            let x = packs[a]!, y = packs[b]!
            let lhs = Double(x.unused.bytes) * Double(y.used.bytes), rhs = Double(y.unused.bytes) * Double(x.used.bytes)
            return lhs != rhs ? lhs > rhs : a < b
        }
        var unusedLeft = candidates.reduce(UInt64(0)) { $0 + packs[$1]!.unused.bytes }
            + keep.reduce(UInt64(0)) { $0 + packs[$1]!.unused.bytes }
        let allowance = options.maxUnused.allowance(used: used.bytes)
        for id in candidates {
            let p = packs[id]!
            let fits = options.maxRepackBytes.map { repackBytes + p.size <= $0 } ?? true
            if unusedLeft > allowance && fits {
                repack.append(id)
                repackBytes += p.size
                unusedLeft -= p.unused.bytes
            } else {
                keep.insert(id)
            }
        }
        unusedAfter = unusedLeft

        // Copy a used blob out of a repacked pack only when no kept pack has a copy of it.
        var keptHas = SlotSet(count: slotCount)
        for id in keep { for e in packs[id]!.entries { if let s = slot(e.blob) { keptHas.insert(s) } } }
        var copied = SlotSet(count: slotCount)
        for id in repack.sorted() {
            let p = packs[id]!
            var sources: [PackedBlob] = []
            for b in p.keepers {
                guard let s = slot(b), !keptHas.contains(s), copied.insert(s) else { continue }
                sources.append(b)
                toRepack.add(b)
            }
            var removed = p.unused
            removed.blobs += p.keepers.count - sources.count
            for b in p.keepers where !sources.contains(b) { removed.bytes += UInt64(b.length) + UInt64(PackReader.headerEntrySize(b)) }
            removedByRepack.add(removed)
            if !sources.isEmpty { repackSources[id] = sources }
        }
        packsToRepack = repack.sorted()
        packsToDelete.sort()
        packsKept = keep.count
        keptPacks = keep.sorted().map { IndexFile.Pack(id: $0, blobs: packs[$0]!.blobs) }

        unreferencedPacks = stored.keys.filter { listing.position(of: $0) == nil }.sorted()
        unreferencedBytes = unreferencedPacks.reduce(0) { $0 + UInt64(stored[$1]!) }
        let deletedBytes = packsToDelete.reduce(UInt64(0)) { $0 + packs[$1]!.size }
        let repackedBytes = packsToRepack.reduce(UInt64(0)) { $0 + packs[$1]!.size }
        bytesFreed = deletedBytes + unreferencedBytes + (repackedBytes > toRepack.bytes ? repackedBytes - toRepack.bytes : 0)
        let keptBytes = keep.reduce(UInt64(0)) { $0 + packs[$1]!.size }
        remainingBytes = keptBytes + toRepack.bytes
    }

    // MARK: Executing

    /// Carries the plan out. The caller must hold an exclusive `lock` on `repository` (taken before or
    /// after planning); the plan is refused if index files or snapshots were added since it was made.
    ///
    /// Order: repacked blobs are written into new packs; then new index files describing every remaining
    /// pack (superseding all old ones) are stored; then the old index files are removed; and only then the
    /// deleted, repacked and unreferenced packs. An interruption leaves a valid repository (possibly with
    /// extra packs or duplicate index entries, which the next prune cleans up). Afterwards the repository's
    /// in-memory index is stale: open the repository again before using it.
    @discardableResult
    public func execute(repository: Repository, lock: Lock,
                        progress: (@Sendable (PruneProgress) -> Void)? = nil) async throws -> PruneResult {
        guard lock.isExclusive, lock.isHeld, lock.repository.storage.location == repository.storage.location else {
            throw HavenError(.lockFailed, "prune needs an exclusive lock on \(repository.storage.location) held while it runs")
        }
        var result = PruneResult()
        guard !isEmpty else { return result }
        let storage = repository.storage

        // The plan is only valid for the repository state it was made from.
        let currentIndex = Set(try await storage.list(.index).compactMap { ID(hex: $0.name) })
        guard currentIndex == Set(indexFiles) else {
            throw HavenError(.fatal, "the repository's index changed since the prune plan was made; nothing was changed, make a new plan")
        }
        let currentSnapshots = Set(try await repository.listSnapshotIDs())
        guard currentSnapshots.isSubset(of: Set(snapshotIDs)) else {
            throw HavenError(.fatal, "snapshots were added since the prune plan was made; nothing was deleted, make a new plan")
        }

        // 1. Copy the used blobs of repacked packs into new packs.
        let assembler = PackAssembler(repository: repository, packSize: options.packSize)
        let sources = repackSources.sorted { $0.key < $1.key }
        let repacked = Locked(0)
        try await forEachConcurrently(sources, limit: options.concurrency) { (pack, blobs) in
            let bytes: [UInt8]
            do { bytes = try await storage.load(Handle(.pack, pack)) } catch {
                throw HavenError(.io, "prune stopped before deleting anything: pack \(pack.short) cannot be read: \(error)")
            }
            for b in blobs {
                let start = Int(b.offset), end = Int(b.offset) + Int(b.length)
                guard end <= bytes.count else {
                    throw HavenError(.corrupt, "prune stopped before deleting anything: \(b.type.rawValue) blob \(b.id.short) lies beyond "
                                     + "the end of pack \(pack.short); run `haven check --read-data`")
                }
                let sealed = Array(bytes[start..<end])
                do { _ = try repository.decryptBlob(sealed, b, pack: pack) } catch let e as HavenError {
                    throw HavenError(.corrupt, "prune stopped before deleting anything: \(e.message); run `haven check --read-data`")
                }
                try await assembler.add(b, sealed: sealed)
            }
            let n = repacked.withLock { $0 += 1; return $0 }
            progress?(PruneProgress(phase: .repack, done: n, total: sources.count))
        }
        try await assembler.flush()
        let newPacks = assembler.packs
        result.packsWritten = newPacks.count
        result.blobsRepacked = newPacks.reduce(0) { $0 + $1.blobs.count }
        result.bytesWritten = assembler.bytesWritten

        // 2. An index of everything that remains, replacing all old index files.
        let remaining = keptPacks + newPacks.sorted { $0.id < $1.id }
        var chunk: [IndexFile.Pack] = []
        var chunkBlobs = 0
        var chunks: [[IndexFile.Pack]] = []
        for p in remaining {
            chunk.append(p)
            chunkBlobs += p.blobs.count
            if chunkBlobs >= PrunePlan.maxBlobsPerIndexFile {
                chunks.append(chunk)
                chunk = []
                chunkBlobs = 0
            }
        }
        if !chunk.isEmpty { chunks.append(chunk) }
        for (i, c) in chunks.enumerated() {
            try await repository.saveUnpacked(.index, IndexFile(packs: c, supersedes: indexFiles).encoded())
            result.indexFilesWritten += 1
            progress?(PruneProgress(phase: .writeIndex, done: i + 1, total: chunks.count))
        }

        // 3. The old index files.
        for (i, id) in indexFiles.enumerated() {
            do {
                try await storage.remove(Handle(.index, id))
                result.indexFilesRemoved += 1
            } catch let e as HavenError where e.code == .notFound {}
            progress?(PruneProgress(phase: .deleteIndex, done: i + 1, total: indexFiles.count))
        }

        // 4. Only now, packs nothing refers to any more.
        let doomed = packsToDelete + packsToRepack + unreferencedPacks
        let removed = Locked(0)
        try await forEachConcurrently(doomed, limit: 8) { id in
            do {
                try await storage.remove(Handle(.pack, id))
            } catch let e as HavenError where e.code == .notFound {}
            let n = removed.withLock { $0 += 1; return $0 }
            progress?(PruneProgress(phase: .deletePacks, done: n, total: doomed.count))
        }
        result.packsRemoved = doomed.count
        return result
    }

    /// Index files written by prune hold at most this many blobs each.
    static let maxBlobsPerIndexFile = 50_000

    // MARK: Description

    /// A summary in the spirit of restic's prune output.
    public var description: String {
        func line(_ label: String, _ a: Amount) -> String {
            label.padding(22) + "\(a.blobs) blobs / \(formatBytes(a.bytes))"
        }
        var total = removedByRepack
        total.add(removedByDelete)
        var lines: [String] = []
        lines.append(line("used:", used))
        lines.append(line("unused:", unused) + (duplicates.blobs > 0 ? " (duplicates: \(duplicates.blobs) blobs / \(formatBytes(duplicates.bytes)))" : ""))
        lines.append(line("to repack:", toRepack) + " from \(packsToRepack.count) packs")
        lines.append(line("this removes:", removedByRepack))
        lines.append(line("to delete:", removedByDelete) + " in \(packsToDelete.count) packs")
        if !unreferencedPacks.isEmpty {
            lines.append("unreferenced packs:".padding(22) + "\(unreferencedPacks.count) packs / \(formatBytes(unreferencedBytes))")
        }
        if !missingPacks.isEmpty {
            lines.append("missing packs:".padding(22) + "\(missingPacks.count) (dropped from the index; no used data in them)")
        }
        lines.append(line("total prune:", total))
        lines.append("remaining:".padding(22) + "\(used.blobs + unused.blobs - total.blobs) blobs / \(formatBytes(remainingBytes))")
        let pct = remainingBytes == 0 ? 0 : Double(unusedAfter) / Double(remainingBytes) * 100
        lines.append("unused size after prune: \(formatBytes(unusedAfter)) (\(String(format2: pct))% of remaining size)")
        lines.append("frees about \(formatBytes(bytesFreed)); keeps \(packsKept) packs, repacks \(packsToRepack.count), "
                     + "deletes \(packsToDelete.count + unreferencedPacks.count)")
        if isEmpty { lines.append("nothing to prune") }
        return lines.joined(separator: "\n")
    }
}

extension String {
    fileprivate func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }

    /// A number with two decimals, without Foundation.
    fileprivate init(format2 v: Double) {
        let scaled = Int64((v * 100).rounded())
        let frac = scaled % 100
        self = "\(scaled / 100)." + (frac < 10 ? "0" : "") + "\(frac)"
    }
}

/// Bytes in binary units as restic prints them ("1.078 MiB").
func formatBytes(_ b: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var v = Double(b)
    var u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    if u == 0 { return "\(b) B" }
    let scaled = Int64((v * 1000).rounded())
    let frac = String(scaled % 1000)
    return "\(scaled / 1000)." + String(repeating: "0", count: 3 - frac.count) + frac + " " + units[u]
}
