/// Verifies a repository like `restic check`: structure always, pack contents on request.
///
/// The structure check loads every index file, compares the packs they name with the packs in storage
/// (existence and size), loads every snapshot and every tree reachable from them (each tree once), and
/// checks that every blob those trees reference is in the index. With `options.readData` it also reads the
/// selected packs completely: the file's SHA-256 must equal its name, its header must decode and match the
/// index, and every blob must decrypt, decompress and hash to its ID.
///
/// The checker never modifies the repository and never throws: every problem lands in the report, and the
/// caller decides the exit status from `CheckReport.hasErrors`. Take a non-exclusive lock around it.
public enum Checker {
    /// Runs the check. `progress` is called from concurrent tasks as items finish.
    public static func run(
        repository: Repository, options: CheckOptions = CheckOptions(),
        progress: (@Sendable (CheckProgress) -> Void)? = nil
    ) async -> CheckReport {
        var report = CheckReport()
        do {
            try await check(repository, options, progress, &report)
        } catch is CancellationError {
            report.error("the check was cancelled before it finished")
        } catch let e as HavenError where e.code == .cancelled {
            report.error("the check was cancelled before it finished")
        } catch {
            report.error("the check could not finish: \(error)")
        }
        report.damagedPacks.sort()
        report.damagedBlobs.sort { ($0.pack, $0.id) < ($1.pack, $1.id) }
        return report
    }

    /// One damaged blob found while reading a pack.
    private struct BlobDamage: Sendable {
        var blob: PackedBlob
        var pack: ID
        var message: String
    }

    private struct PackResult: Sendable {
        var pack: ID
        var errors: [String] = []
        var damaged: [BlobDamage] = []
        var bytes: UInt64 = 0
        var verified = 0
    }

    private static func check(
        _ repository: Repository, _ options: CheckOptions, _ progress: (@Sendable (CheckProgress) -> Void)?,
        _ report: inout CheckReport
    ) async throws {
        do { try options.readData.validate() } catch let e as HavenError {
            report.error(e.message)
            return
        }
        let storage = repository.storage

        // Snapshots are listed before the index is read, so a snapshot saved meanwhile has its index entries.
        let snapshotIDs: [ID]
        do { snapshotIDs = try await repository.listSnapshotIDs() } catch {
            report.error("cannot list snapshots: \(error)")
            return
        }

        // MARK: Index files
        let indexFiles: [StoredFile]
        do { indexFiles = try await storage.list(.index) } catch {
            report.error("cannot list index files: \(error)")
            return
        }
        // Each file goes into the master index (one location per blob, for reading trees) and into the
        // listing (every entry of every pack) as soon as it is decoded; neither keeps the decoded file.
        let index = MasterIndex()
        let builder = PackListing.Builder()
        let indexErrors = Locked<[String]>([])
        let indexDone = Locked((done: 0, loaded: 0))
        var validIndexIDs: [ID] = []
        for f in indexFiles {
            if let id = ID(hex: f.name) { validIndexIDs.append(id) } else {
                report.warning("index/\(f.name) does not have a valid index file name; it was ignored")
            }
        }
        let indexIDs = validIndexIDs
        try await forEachConcurrently(indexIDs, limit: 4) { id in
            var ok = false
            do {
                let file = try IndexFile.decode(try await repository.loadUnpacked(Handle(.index, id)), id: id)
                index.add(file)
                builder.add(file, id: id)
                ok = true
            } catch let e as HavenError {
                indexErrors.withLock { $0.append("index \(id.short) cannot be used: \(e.message)") }
            }
            let n = indexDone.withLock { c -> Int in
                c.done += 1
                if ok { c.loaded += 1 }
                return c.done
            }
            progress?(CheckProgress(phase: .indexes, done: n, total: indexIDs.count))
        }
        for e in indexErrors.withLock({ $0 }).sorted() { report.error(e) }
        report.statistics.indexFiles = indexDone.withLock { $0.loaded }
        index.seal()
        let listing = builder.finish()
        let slotCount = index.slotCount

        // How many packs hold each blob (saturating): a blob of a missing pack is lost only without a copy.
        var copies = [UInt8](repeating: 0, count: slotCount)
        do {
            var lastPack = [UInt32](repeating: .max, count: slotCount)
            for e in listing.entries {
                guard let slot = index.slot(e.blob.id, e.blob.type), lastPack[slot] != e.pack else { continue }
                lastPack[slot] = e.pack
                if copies[slot] < .max { copies[slot] += 1 }
            }
        }
        func copyCount(_ b: PackedBlob) -> Int { index.slot(b.id, b.type).map { Int(copies[$0]) } ?? 0 }
        report.statistics.packs = listing.packs.count
        report.statistics.blobs = slotCount
        report.statistics.duplicateBlobs = copies.reduce(0) { $0 + ($1 > 1 ? 1 : 0) }

        // MARK: Packs in storage
        var stored: [ID: Int] = [:]
        do {
            for f in try await storage.list(.pack) {
                if let id = ID(hex: f.name) { stored[id] = f.size } else {
                    report.warning("data/\(f.name) is not a valid pack file name; it was ignored")
                }
            }
        } catch {
            report.error("cannot list pack files: \(error)")
            return
        }
        report.statistics.packsInStorage = stored.count
        var damaged: [BlobKey: ID] = [:]     // lost or damaged blob → its pack
        var damagedPacks = Set<ID>()
        var lostByPack: [ID: [BlobKey]] = [:]
        for (k, pack) in listing.packs.enumerated() {
            let entries = listing.blobs(ofPackAt: k).map(\.blob)
            let indexName = "index \(listing.namedBy[k].short)"
            progress?(CheckProgress(phase: .packs, done: k + 1, total: listing.packs.count))
            guard let size = stored[pack] else {
                report.error("pack \(pack.short) is named in \(indexName) but missing from storage (\(entries.count) blobs lost)")
                damagedPacks.insert(pack)
                for b in entries where copyCount(b) <= 1 {
                    // A copy in another pack still makes the blob available.
                    let key = BlobKey(id: b.id, type: b.type)
                    damaged[key] = pack
                    lostByPack[pack, default: []].append(key)
                }
                continue
            }
            var end: UInt64 = 0
            var overlap: (PackedBlob, PackedBlob)?
            var previous: PackedBlob?
            for b in entries {
                if let p = previous, UInt64(b.offset) < UInt64(p.offset) + UInt64(p.length), overlap == nil { overlap = (p, b) }
                end = max(end, UInt64(b.offset) + UInt64(b.length))
                previous = b
            }
            if let (a, b) = overlap {
                report.error("pack \(pack.short): \(indexName) lists overlapping blobs \(a.id.short) and \(b.id.short)")
                damagedPacks.insert(pack)
            }
            let expected = PackReader.expectedSize(entries)
            let headerBytes = expected - entries.reduce(0) { $0 + Int($1.length) }
            if end + UInt64(headerBytes) > UInt64(size) {
                report.error("pack \(pack.short) is too short: it has \(size) bytes, but the blobs listed in \(indexName) end at "
                             + "byte \(end) and the header needs \(headerBytes) more")
                damagedPacks.insert(pack)
            } else if expected != size {
                report.error("pack \(pack.short) has \(size) bytes, but \(indexName) implies \(expected) (blobs plus header)")
                damagedPacks.insert(pack)
            }
        }
        let unreferenced = stored.keys.filter { listing.position(of: $0) == nil }.sorted()
        report.statistics.unreferencedPacks = unreferenced.count
        if !unreferenced.isEmpty {
            let sample = unreferenced.prefix(5).map(\.short).joined(separator: ", ")
            report.hint("\(unreferenced.count) pack\(unreferenced.count == 1 ? " is" : "s are") not referenced by any index "
                        + "(\(sample)\(unreferenced.count > 5 ? ", …" : "")); run `haven prune` to remove "
                        + (unreferenced.count == 1 ? "it" : "them"))
        }

        // MARK: Snapshots
        let snapshots = Locked<[Snapshot]>([])
        let snapshotErrors = Locked<[String]>([])
        let snapshotsDone = Locked(0)
        try await forEachConcurrently(snapshotIDs, limit: 8) { id in
            do {
                let s = try await repository.loadSnapshot(id)
                snapshots.withLock { $0.append(s) }
            } catch let e as HavenError {
                snapshotErrors.withLock { $0.append("snapshot \(id.short) cannot be loaded: \(e.message)") }
            }
            let n = snapshotsDone.withLock { $0 += 1; return $0 }
            progress?(CheckProgress(phase: .snapshots, done: n, total: snapshotIDs.count))
        }
        for e in snapshotErrors.withLock({ $0 }).sorted() { report.error(e) }
        let allSnapshots = snapshots.withLock { $0 }.sorted { ($0.time, $0.id!) < ($1.time, $1.id!) }
        report.statistics.snapshots = allSnapshots.count

        // MARK: Trees
        let walker = TreeWalker(repository: repository, index: index)
        let walk = try await walker.walk(allSnapshots) { n in
            progress?(CheckProgress(phase: .trees, done: n, total: nil))
        }
        for p in walk.problems { report.error(p.description) }
        if walk.problemCount > walk.problems.count {
            report.error("… and \(walk.problemCount - walk.problems.count) more problems in snapshot trees")
        }
        report.statistics.trees = walk.treesLoaded
        report.statistics.usedDataBlobs = walk.used.dataCount
        report.statistics.usedTreeBlobs = walk.used.treeCount
        report.statistics.unusedBlobs = slotCount - walk.used.indexedCount

        // MARK: Read data
        var blobDamage: [BlobDamage] = []
        let readable = listing.packs.filter { stored[$0] != nil }
        let selected = select(readable, sizes: stored, options.readData)
        if !selected.isEmpty {
            let results = Locked<[PackResult]>([])
            let listing = listing, stored = stored
            let totals = Locked<(Int, UInt64)>((0, 0))
            try await forEachConcurrently(selected, limit: options.concurrency) { pack in
                let indexed = listing.position(of: pack).map { Set(listing.blobs(ofPackAt: $0).map(\.blob)) } ?? []
                let r = await verifyPack(repository, pack, size: stored[pack] ?? 0, indexed: indexed, window: options.readWindow)
                results.withLock { $0.append(r) }
                let (n, b) = totals.withLock { t -> (Int, UInt64) in t.0 += 1; t.1 += r.bytes; return t }
                progress?(CheckProgress(phase: .readData, done: n, total: selected.count, bytes: b))
            }
            for r in results.withLock({ $0 }).sorted(by: { $0.pack < $1.pack }) {
                report.statistics.packsRead += 1
                report.statistics.bytesRead += r.bytes
                report.statistics.blobsVerified += r.verified
                for e in r.errors { report.error(e) }
                if !r.errors.isEmpty || !r.damaged.isEmpty { damagedPacks.insert(r.pack) }
                blobDamage.append(contentsOf: r.damaged)
                for d in r.damaged { damaged[BlobKey(id: d.blob.id, type: d.blob.type)] = r.pack }
            }
        }

        // MARK: Who is affected
        let users = await walker.snapshotsUsing(Set(damaged.keys), in: allSnapshots)
        func usedBy(_ k: BlobKey) -> String {
            guard let s = users[k], !s.isEmpty else { return "not used by any snapshot" }
            let names = s.prefix(10).map(\.short).joined(separator: ", ")
            return "used by snapshot\(s.count == 1 ? "" : "s") \(names)\(s.count > 10 ? " and \(s.count - 10) more" : "")"
        }
        let perPackLimit = 100
        var shownPerPack: [ID: Int] = [:]
        for d in blobDamage.sorted(by: { ($0.pack, $0.blob.offset) < ($1.pack, $1.blob.offset) }) {
            let shown = shownPerPack[d.pack, default: 0]
            shownPerPack[d.pack] = shown + 1
            if shown < perPackLimit { report.error("\(d.message); \(usedBy(BlobKey(id: d.blob.id, type: d.blob.type)))") }
        }
        for (pack, n) in shownPerPack.sorted(by: { $0.key < $1.key }) where n > perPackLimit {
            report.error("pack \(pack.short): … and \(n - perPackLimit) more damaged blobs")
        }
        for (pack, lost) in lostByPack.sorted(by: { $0.key < $1.key }) {
            var affected = Set<ID>()
            for k in lost { affected.formUnion(users[k] ?? []) }
            if !affected.isEmpty {
                let names = affected.sorted().prefix(10).map(\.short).joined(separator: ", ")
                report.error("missing pack \(pack.short) held blobs used by \(affected.count) snapshot\(affected.count == 1 ? "" : "s"): \(names)"
                             + (affected.count > 10 ? ", …" : ""))
            }
        }
        report.damagedPacks = Array(damagedPacks)
        report.damagedBlobs = damaged.map { k, pack in
            CheckReport.DamagedBlob(id: k.id, type: k.type, pack: pack, snapshots: (users[k] ?? []).sorted())
        }
        if report.hasErrors && !damagedPacks.isEmpty {
            report.hint("damaged or missing packs: \(damagedPacks.sorted().prefix(10).map(\.short).joined(separator: ", "))"
                        + (damagedPacks.count > 10 ? ", …" : ""))
        }
    }

    /// The packs `selection` picks among `packs` (sorted).
    static func select(_ packs: [ID], sizes: [ID: Int], _ selection: ReadDataSelection) -> [ID] {
        switch selection {
        case .none:
            return []
        case .all:
            return packs
        case .subset(let n, let t):
            guard t >= 1, n >= 1, n <= t else { return [] }
            return packs.filter { Int($0.w0 >> 56) % t == n - 1 }
        case .percent(let p):
            guard p > 0, !packs.isEmpty else { return [] }
            let count = min(packs.count, max(1, Int((Double(packs.count) * min(p, 100) / 100).rounded(.up))))
            return Array(packs.shuffled().prefix(count)).sorted()
        case .bytes(let limit):
            var chosen: [ID] = []
            var total: UInt64 = 0
            for p in packs.shuffled() {
                guard total < limit else { break }
                chosen.append(p)
                total += UInt64(sizes[p] ?? 0)
            }
            return chosen.sorted()
        }
    }

    /// How many bytes of a pack are read at once while verifying it: the memory a pack in flight costs
    /// (plus its blobs' plaintext), whatever the pack's size. A blob larger than this is read whole.
    static let readWindow = 4 << 20

    /// What reading a pack in order does: hash a stretch that holds no blob to verify, verify the blobs of a
    /// stretch (the first starts at `start`, and the stretch ends where the last ends), or verify blobs that
    /// overlap an earlier stretch (read on their own, since their bytes were hashed already).
    enum ReadStep: Equatable {
        case hash(start: Int, end: Int)
        case blobs(start: Int, end: Int, [PackedBlob])
        case overlapping([PackedBlob])
    }

    /// Plans reading a pack of `size` bytes once, front to back, in stretches of at most `window` bytes
    /// (or one blob), so that every byte is hashed exactly once and every blob in `blobs` (sorted by offset,
    /// each within the pack) is decrypted from the stretch that holds it.
    static func readPlan(size: Int, blobs: [PackedBlob], window: Int) -> [ReadStep] {
        var steps: [ReadStep] = []
        var done = 0            // bytes before this are planned
        var current: [PackedBlob] = []
        var start = 0, end = 0  // the open stretch of blobs
        var overlapping: [PackedBlob] = []
        func hashUpTo(_ limit: Int) {
            var at = done
            while at < limit {
                let next = min(limit, at + window)
                steps.append(.hash(start: at, end: next))
                at = next
            }
            done = max(done, limit)
        }
        func close() {
            guard !current.isEmpty else { return }
            steps.append(.blobs(start: start, end: end, current))
            done = end
            current = []
        }
        for b in blobs {
            let s = Int(b.offset), e = s + Int(b.length)
            if !current.isEmpty, e - start > window { close() }
            if current.isEmpty {
                if s < done {
                    overlapping.append(b)
                    continue
                }
                hashUpTo(s)
                start = s
                end = e
            }
            current.append(b)
            end = max(end, e)
        }
        close()
        hashUpTo(size)
        if !overlapping.isEmpty { steps.append(.overlapping(overlapping)) }
        return steps
    }

    /// Reads one pack front to back, a window at a time, and verifies its name (SHA-256 of the content),
    /// its header against the index, and every blob either lists. The header comes from the last window
    /// read, so on an object store the whole pack is one request.
    private static func verifyPack(_ repository: Repository, _ pack: ID, size: Int, indexed: Set<PackedBlob>,
                                   window: Int) async -> PackResult {
        var r = PackResult(pack: pack)
        let handle = Handle(.pack, pack)
        var inside: [PackedBlob] = []
        func beyondTheEnd(_ b: PackedBlob) -> Bool {
            guard UInt64(b.offset) + UInt64(b.length) > UInt64(size) else { return false }
            r.damaged.append(BlobDamage(blob: b, pack: pack, message: "\(b.type.rawValue) blob \(b.id.short) in pack \(pack.short) "
                                        + "is damaged: it extends beyond the end of the pack"))
            return true
        }
        for b in indexed.sorted(by: { ($0.offset, $0.length) < ($1.offset, $1.length) }) where !beyondTheEnd(b) {
            inside.append(b)
        }
        let hash = StreamingSHA256()
        let plan = readPlan(size: size, blobs: inside, window: window)
        var tail: [UInt8] = []  // the last stretch read, which ends at the end of the pack
        var overlapping: [PackedBlob] = []
        do {
            // The pack front to back through one reader (one request on an object store).
            try await repository.storage.withReader(handle, offset: 0, length: size) { reader in
                /// The next stretch of the pack, hashed and counted.
                func read(_ start: Int, _ end: Int) async throws -> [UInt8] {
                    let bytes = try await reader.read(end - start)
                    hash.update(bytes)
                    r.bytes += UInt64(bytes.count)
                    if end == size { tail = bytes }
                    return bytes
                }
                for step in plan {
                    switch step {
                    case .hash(let start, let end):
                        _ = try await read(start, end)
                    case .blobs(let start, let end, let blobs):
                        let bytes = try await read(start, end)
                        // Two workers share the blobs, so decryption, decompression and hashing use both
                        // cores even when only a few packs are read at once.
                        let parts = splitByBytes(blobs, minimumBytes: 1 << 20)
                        let results = await withTaskGroup(of: (Int, [BlobDamage]).self) { group in
                            for part in parts {
                                group.addTask { verifyBlobs(repository, pack, part, in: bytes, at: start) }
                            }
                            var all: [(Int, [BlobDamage])] = []
                            for await result in group { all.append(result) }
                            return all
                        }
                        for (verified, damaged) in results {
                            r.verified += verified
                            r.damaged += damaged
                        }
                    case .overlapping(let blobs):
                        overlapping = blobs
                    }
                }
            }
        } catch {
            r.errors.append("pack \(pack.short) cannot be read: \(error)")
            return r
        }
        // The header against the index; blobs only the header lists are verified too, each on its own.
        do {
            // The last stretch may be shorter than the header, even than its 4-byte length (a window
            // boundary can fall just before the end): then the header is read on its own.
            let header: Set<PackedBlob>
            if tail.count >= 4, try PackReader.headerLength(tail: tail, total: size, id: pack) + 4 <= tail.count {
                header = Set(try PackReader.header(tail: tail, total: size, id: pack, key: repository.key))
            } else {
                header = Set(try await repository.loadPackHeader(pack, size: size))
            }
            let notInHeader = indexed.subtracting(header).sorted { $0.offset < $1.offset }
            let notInIndex = header.subtracting(indexed).sorted { $0.offset < $1.offset }
            var problems: [String] = []
            if let b = notInHeader.first {
                problems.append("pack \(pack.short): \(notInHeader.count) index entr\(notInHeader.count == 1 ? "y does" : "ies do") not match "
                                + "the pack header (e.g. \(b.type.rawValue) blob \(b.id.short) at offset \(b.offset), length \(b.length))")
            }
            if let b = notInIndex.first {
                problems.append("pack \(pack.short): its header lists \(notInIndex.count) blob\(notInIndex.count == 1 ? "" : "s") the index does not "
                                + "(e.g. \(b.type.rawValue) blob \(b.id.short) at offset \(b.offset))")
            }
            r.errors.insert(contentsOf: problems, at: 0)
            overlapping += notInIndex.filter { !beyondTheEnd($0) }
        } catch let e as HavenError where e.code == .corrupt {
            r.errors.insert(e.message, at: 0)
        } catch {
            r.errors.append("pack \(pack.short) cannot be read: \(error)")
            return r
        }
        do {
            for b in overlapping {
                let bytes = try await repository.storage.load(handle, offset: Int(b.offset), length: Int(b.length))
                let (verified, damaged) = verifyBlobs(repository, pack, [b], in: bytes, at: Int(b.offset))
                r.verified += verified
                r.damaged += damaged
            }
        } catch {
            r.errors.append("pack \(pack.short) cannot be read: \(error)")
            return r
        }
        if hash.finalize() != pack {
            r.errors.append("pack \(pack.short) is damaged: its content does not match its ID (SHA-256)")
        }
        return r
    }

    /// `blobs` in two runs of about equal bytes (one run when they hold less than `minimumBytes`).
    static func splitByBytes(_ blobs: [PackedBlob], minimumBytes: UInt64) -> [[PackedBlob]] {
        let total = blobs.reduce(UInt64(0)) { $0 + UInt64($1.length) }
        guard blobs.count > 1, total >= minimumBytes else { return [blobs] }
        var sum: UInt64 = 0
        var cut = 0
        while cut < blobs.count - 1, sum + UInt64(blobs[cut].length) / 2 < total / 2 {
            sum += UInt64(blobs[cut].length)
            cut += 1
        }
        return cut == 0 ? [blobs] : [Array(blobs[..<cut]), Array(blobs[cut...])]
    }

    /// Decrypts and verifies `blobs` of `pack`, whose bytes from offset `base` on are in `bytes`: the count
    /// verified and the damage.
    private static func verifyBlobs(_ repository: Repository, _ pack: ID, _ blobs: [PackedBlob], in bytes: [UInt8], at base: Int) -> (Int, [BlobDamage]) {
        var verified = 0
        var damaged: [BlobDamage] = []
        bytes.withUnsafeBytes { raw in
            repository.openBlobs(blobs, in: raw, at: base, pack: pack) { i, result in
                switch result {
                case .success: verified += 1
                case .failure(let e): damaged.append(BlobDamage(blob: blobs[i], pack: pack, message: e.message))
                }
            }
        }
        return (verified, damaged)
    }
}
