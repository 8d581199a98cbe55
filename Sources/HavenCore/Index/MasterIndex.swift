import Synchronization

/// Where a blob is: its pack and position. Kept small because the index holds one per blob.
public struct BlobLocation: Sendable, Hashable {
    public var pack: ID
    public var blob: PackedBlob
}

/// The in-memory union of all index files, plus blobs written in this session. Thread-safe.
///
/// About 50 bytes per blob. Each blob type keeps a *base*: one array of 48-byte records sorted by ID, found
/// through a table of bucket starts on the ID's leading bits (IDs are uniformly spread, so a bucket holds a
/// handful of records). Blobs added one pack at a time go to a small dictionary (the *overlay*) that is
/// merged into the base once it holds 64Ki blobs or a sixteenth of the base. Index files are only appended,
/// unsorted; the next read (or `finishLoading()`) sorts them into the base, or into the overlay when they
/// are few.
///
/// The first location seen for a blob wins and is never replaced. Among copies of a blob that arrive in
/// index files added before the same read, the one in the earliest registered pack wins.
public final class MasterIndex: Sendable {
    /// One blob in the base: 48 bytes.
    struct Record {
        var id: ID
        var pack: UInt32
        var offset: UInt32
        var length: UInt32
        var uncompressedLength: UInt32
    }

    /// One blob in the overlay, keyed by its ID.
    struct Entry {
        var pack: UInt32
        var offset: UInt32
        var length: UInt32
        var uncompressedLength: UInt32
    }

    /// The blobs of one type.
    struct Table {
        /// Sorted by ID, one record per blob, disjoint from `overlay`.
        var base: [Record] = []
        /// `base[starts[b]..<starts[b + 1]]` holds the records whose ID's first word, shifted right by
        /// `shift`, is `b`.
        var starts: [UInt32] = [0, 0]
        var shift: UInt64 = 64
        /// Blobs added since the last merge.
        var overlay: [ID: Entry] = [:]
        /// The overlay is merged into the base when it holds this many blobs, or a sixteenth of the base.
        var overlayLimit = 1 << 16
        /// Records of index files added since the last read: not visible until `flushLoaded()`.
        var loaded: [[Record]] = []
        /// Blobs being written in this session (reserved, not yet in a stored pack).
        var pending: Set<ID> = []

        var count: Int { base.count + overlay.count }

        func baseIndex(of id: ID) -> Int? {
            let b = Int(truncatingIfNeeded: id.w0 >> shift)
            return starts.withUnsafeBufferPointer { st in
                var lo = Int(st[b]), hi = Int(st[b + 1])
                return base.withUnsafeBufferPointer { recs in
                    // Only a hostile index crowds a bucket: halve it down to a few records first.
                    while hi - lo > 16 {
                        let mid = (lo + hi) >> 1
                        let m = recs[mid].id
                        if m == id { return mid }
                        if m < id { lo = mid + 1 } else { hi = mid }
                    }
                    // Then scan in order: adjacent cache lines, which the CPU fetches ahead.
                    while lo < hi {
                        let m = recs[lo].id
                        if m.w0 >= id.w0 {
                            if m == id { return lo }
                            if m.w0 > id.w0 { return nil }
                        }
                        lo += 1
                    }
                    return nil
                }
            }
        }

        func contains(_ id: ID) -> Bool {
            baseIndex(of: id) != nil || (!overlay.isEmpty && overlay[id] != nil)
        }

        func entry(_ id: ID) -> Entry? {
            if let i = baseIndex(of: id) {
                let r = base[i]
                return Entry(pack: r.pack, offset: r.offset, length: r.length, uncompressedLength: r.uncompressedLength)
            }
            return overlay.isEmpty ? nil : overlay[id]
        }

        /// Merging copies the whole base, so a larger base merges a larger overlay.
        var overlayFull: Int { max(overlayLimit, base.count / 16) }

        /// Adds a blob unless it is already known; it is no longer pending either way.
        mutating func insert(_ id: ID, _ e: Entry) {
            // A pending blob is known to be new: whatever adds a blob also takes it out of `pending`.
            let wasPending = !pending.isEmpty && pending.remove(id) != nil
            guard wasPending || !contains(id) else { return }
            overlay[id] = e
            if overlay.count >= overlayFull { mergeOverlay() }
        }

        /// Sorts the records of added index files into the base.
        mutating func flushLoaded() {
            guard !loaded.isEmpty else { return }
            var fresh = MasterIndex.sorted(&loaded)
            // Keep the first record of each ID, drop IDs already visible.
            let checkBase = !base.isEmpty, checkOverlay = !overlay.isEmpty, checkPending = !pending.isEmpty
            let kept = fresh.withUnsafeMutableBufferPointer { f -> Int in
                var kept = 0
                var k = 0
                while k < f.count {
                    let r = f[k]
                    k += 1
                    while k < f.count, f[k].id == r.id { k += 1 }
                    if checkPending { pending.remove(r.id) }
                    if checkBase, baseIndex(of: r.id) != nil { continue }
                    if checkOverlay, overlay[r.id] != nil { continue }
                    f[kept] = r
                    kept += 1
                }
                return kept
            }
            fresh.removeLast(fresh.count - kept)
            if !base.isEmpty, overlay.count + kept < overlayFull {
                // A few blobs: not worth copying the base for.
                for r in fresh {
                    overlay[r.id] = Entry(pack: r.pack, offset: r.offset, length: r.length, uncompressedLength: r.uncompressedLength)
                }
            } else {
                mergeIntoBase(fresh)
            }
        }

        mutating func mergeOverlay() {
            var records: [Record] = []
            records.reserveCapacity(overlay.count)
            for (id, e) in overlay {
                records.append(Record(id: id, pack: e.pack, offset: e.offset, length: e.length, uncompressedLength: e.uncompressedLength))
            }
            // The overlay fills up again during a large backup: keep its table rather than regrow it.
            overlay.removeAll(keepingCapacity: true)
            var chunks = [records]
            records = []
            mergeIntoBase(MasterIndex.sorted(&chunks))
        }

        /// Merges `fresh` (sorted, one record per ID, none in the base) into the base.
        mutating func mergeIntoBase(_ fresh: [Record]) {
            guard !fresh.isEmpty else { return }
            precondition(base.count + fresh.count < Int(UInt32.max), "too many blobs for the index")
            if base.isEmpty {
                base = fresh
                // Duplicates dropped by the flush can leave a lot of unused capacity.
                if base.capacity - base.count > base.count / 16 + 64 {
                    base = [Record](unsafeUninitializedCapacity: fresh.count) { buf, n in
                        _ = buf.initialize(fromContentsOf: fresh)
                        n = fresh.count
                    }
                }
            } else {
                let old = base.count, total = old + fresh.count
                if base.capacity >= total {
                    // In place, from the back.
                    base.append(contentsOf: fresh)
                    base.withUnsafeMutableBufferPointer { b in
                        fresh.withUnsafeBufferPointer { f in
                            var i = old - 1, j = f.count - 1, k = total - 1
                            while j >= 0 {
                                if i >= 0, f[j].id < b[i].id {
                                    b[k] = b[i]
                                    i -= 1
                                } else {
                                    b[k] = f[j]
                                    j -= 1
                                }
                                k -= 1
                            }
                        }
                    }
                } else {
                    // Into a larger array with a little headroom, so that merges of the overlay rarely reallocate.
                    base = [Record](unsafeUninitializedCapacity: total + total / 16) { out, initialized in
                        base.withUnsafeBufferPointer { b in
                            fresh.withUnsafeBufferPointer { f in
                                var i = 0, j = 0, k = 0
                                while k < total {
                                    if j == f.count || (i < b.count && b[i].id < f[j].id) {
                                        out[k] = b[i]
                                        i += 1
                                    } else {
                                        out[k] = f[j]
                                        j += 1
                                    }
                                    k += 1
                                }
                            }
                        }
                        initialized = total
                    }
                }
                if UInt64(64 - Self.bucketBits(total)) == shift {
                    shiftStarts(by: fresh)
                    return
                }
            }
            rebuildStarts()
        }

        /// About 8 records per bucket.
        static func bucketBits(_ n: Int) -> Int {
            n < 64 ? 0 : min(24, Int.bitWidth - n.leadingZeroBitCount - 3)
        }

        /// Moves the bucket starts after merging `fresh` into the base, without reading the base.
        mutating func shiftStarts(by fresh: [Record]) {
            let shift = self.shift
            fresh.withUnsafeBufferPointer { f in
                starts.withUnsafeMutableBufferPointer { s in
                    var before = 0
                    for b in 0..<s.count {
                        while before < f.count, Int(truncatingIfNeeded: f[before].id.w0 >> shift) < b { before += 1 }
                        s[b] += UInt32(before)
                    }
                }
            }
        }

        /// Sizes the bucket table for the base and fills it.
        mutating func rebuildStarts() {
            let n = base.count
            let bits = Self.bucketBits(n)
            let shift = UInt64(64 - bits)
            let buckets = 1 << bits
            var st = [UInt32](repeating: 0, count: buckets + 1)
            base.withUnsafeBufferPointer { recs in
                st.withUnsafeMutableBufferPointer { s in
                    var b = 0
                    for i in 0..<n {
                        let rb = Int(truncatingIfNeeded: recs[i].id.w0 >> shift)
                        while b <= rb {
                            s[b] = UInt32(i)
                            b += 1
                        }
                    }
                    while b <= buckets {
                        s[b] = UInt32(n)
                        b += 1
                    }
                }
            }
            self.shift = shift
            starts = st
        }

        var memoryBytes: Int {
            base.capacity * MemoryLayout<Record>.stride
                + starts.capacity * MemoryLayout<UInt32>.stride
                + loaded.reduce(loaded.capacity * 8) { $0 + $1.capacity * MemoryLayout<Record>.stride }
                + MasterIndex.hashedBytes(capacity: overlay.capacity, element: MemoryLayout<ID>.stride + MemoryLayout<Entry>.stride)
                + MasterIndex.hashedBytes(capacity: pending.capacity, element: MemoryLayout<ID>.stride)
        }
    }

    struct State {
        var packs: [ID] = []
        var packNumbers: [ID: UInt32] = [:]
        var data = Table()
        var tree = Table()

        mutating func number(for pack: ID) -> UInt32 {
            if let n = packNumbers[pack] { return n }
            let n = UInt32(packs.count)
            packs.append(pack)
            packNumbers[pack] = n
            return n
        }

        mutating func flushLoaded() {
            data.flushLoaded()
            tree.flushLoaded()
        }

        /// The blobs of `type`, with their index files sorted in.
        mutating func table<R>(_ type: BlobType, _ body: (inout Table) -> R) -> R {
            switch type {
            case .data:
                data.flushLoaded()
                return body(&data)
            case .tree:
                tree.flushLoaded()
                return body(&tree)
            }
        }

        /// Which pack numbers hold at least one indexed blob.
        mutating func usedPacks() -> [Bool] {
            flushLoaded()
            var used = [Bool](repeating: false, count: packs.count)
            for t in [data, tree] {
                for r in t.base { used[Int(r.pack)] = true }
                for e in t.overlay.values { used[Int(e.pack)] = true }
            }
            return used
        }
    }

    private let state: Mutex<State>

    public convenience init() { self.init(overlayLimit: 1 << 16) }

    /// `overlayLimit`: how many blobs added one pack at a time are kept in a dictionary (at least; a sixteenth
    /// of the base when that is more) before they are merged into the sorted base.
    init(overlayLimit: Int) {
        var s = State()
        s.data.overlayLimit = max(1, overlayLimit)
        s.tree.overlayLimit = max(1, overlayLimit)
        state = Mutex(s)
    }

    /// Adds every blob of `file`. The first location seen for a blob wins. Cheap: the blobs are sorted in
    /// by the next read (or `finishLoading()`), so many files can be added from several tasks at once.
    public func add(_ file: IndexFile) {
        let numbers = state.withLock { s in file.packs.map { s.number(for: $0.id) } }
        var dataCount = 0, treeCount = 0
        for p in file.packs {
            for b in p.blobs {
                if b.type == .data { dataCount += 1 } else { treeCount += 1 }
            }
        }
        var data: [Record] = [], tree: [Record] = []
        data.reserveCapacity(dataCount)
        tree.reserveCapacity(treeCount)
        for (k, p) in file.packs.enumerated() {
            for b in p.blobs {
                let r = Record(id: b.id, pack: numbers[k], offset: b.offset, length: b.length, uncompressedLength: b.uncompressedLength)
                if b.type == .data { data.append(r) } else { tree.append(r) }
            }
        }
        state.withLock { s in
            if !data.isEmpty { s.data.loaded.append(data) }
            if !tree.isEmpty { s.tree.loaded.append(tree) }
        }
    }

    /// Sorts the index files added so far into place, which the first read would otherwise do.
    public func finishLoading() {
        state.withLock { $0.flushLoaded() }
    }

    public func add(pack: ID, blobs: [PackedBlob]) {
        state.withLock { s in
            s.flushLoaded()
            let n = s.number(for: pack)
            for b in blobs {
                let e = Entry(pack: n, offset: b.offset, length: b.length, uncompressedLength: b.uncompressedLength)
                switch b.type {
                case .data: s.data.insert(b.id, e)
                case .tree: s.tree.insert(b.id, e)
                }
            }
        }
    }

    public func lookup(_ id: ID, _ type: BlobType) -> BlobLocation? {
        state.withLock { s in
            guard let e = s.table(type, { $0.entry(id) }) else { return nil }
            return BlobLocation(pack: s.packs[Int(e.pack)], blob: PackedBlob(id: id, type: type, offset: e.offset, length: e.length, uncompressedLength: e.uncompressedLength))
        }
    }

    public func has(_ id: ID, _ type: BlobType) -> Bool {
        state.withLock { s in s.table(type) { $0.contains(id) } }
    }

    /// Claims `id` for writing: true when the blob is neither stored nor already claimed, so exactly one
    /// writer stores each new blob even when several find it at once.
    public func reserve(_ id: ID, _ type: BlobType) -> Bool {
        state.withLock { s in
            s.table(type) { t in !t.contains(id) && t.pending.insert(id).inserted }
        }
    }

    /// Sorts every blob added so far into the sorted arrays, so that `slot(_:_:)` numbers them all: data
    /// blobs `0..<dataCount`, tree blobs after them. For an index nothing adds to afterwards (check and
    /// prune build their own); blobs added later get no slot.
    func seal() {
        state.withLock { s in
            s.flushLoaded()
            for type in [BlobType.data, .tree] {
                s.table(type) { t in
                    if !t.overlay.isEmpty { t.mergeOverlay() }
                    t.overlay = [:]
                }
            }
        }
    }

    /// The blob's number in `0..<slotCount` after `seal()`; nil when it is not in the sorted arrays.
    func slot(_ id: ID, _ type: BlobType) -> Int? {
        state.withLock { s in
            switch type {
            case .data: return s.data.baseIndex(of: id)
            case .tree: return s.tree.baseIndex(of: id).map { $0 + s.data.base.count }
            }
        }
    }

    /// How many slots `seal()` numbered.
    var slotCount: Int { state.withLock { $0.data.base.count + $0.tree.base.count } }

    public var blobCount: Int {
        state.withLock { s in
            s.flushLoaded()
            return s.data.count + s.tree.count
        }
    }

    /// How many blobs of one type the index holds.
    public func count(_ type: BlobType) -> Int {
        state.withLock { s in
            s.flushLoaded()
            return s.table(type) { $0.count }
        }
    }

    public var packCount: Int { state.withLock { s in s.usedPacks().reduce(0) { $0 + ($1 ? 1 : 0) } } }

    /// Every pack that holds at least one indexed blob.
    public var packIDs: Set<ID> {
        state.withLock { s in
            var out = Set<ID>()
            for (n, used) in s.usedPacks().enumerated() where used { out.insert(s.packs[n]) }
            return out
        }
    }

    /// All blobs of a type with their sizes (plaintext).
    public func allBlobs(_ type: BlobType) -> [(ID, UInt32)] {
        func size(_ length: UInt32, _ uncompressed: UInt32) -> UInt32 {
            uncompressed != 0 ? uncompressed : length - UInt32(MasterKey.overhead)
        }
        return state.withLock { s in
            s.table(type) { t in
                var out: [(ID, UInt32)] = []
                out.reserveCapacity(t.count)
                for r in t.base { out.append((r.id, size(r.length, r.uncompressedLength))) }
                for (id, e) in t.overlay { out.append((id, size(e.length, e.uncompressedLength))) }
                return out
            }
        }
    }

    /// The index's own memory, estimated from the capacities of its arrays and hash tables.
    public var memoryBytes: Int {
        state.withLock { s in
            s.data.memoryBytes + s.tree.memoryBytes + s.packs.capacity * MemoryLayout<ID>.stride
                + Self.hashedBytes(capacity: s.packNumbers.capacity, element: MemoryLayout<ID>.stride + MemoryLayout<UInt32>.stride)
        }
    }

    /// A Swift hash table of `capacity` holds up to 3/4 of its power-of-two bucket count, plus a bit per bucket.
    static func hashedBytes(capacity: Int, element: Int) -> Int {
        guard capacity > 0 else { return 0 }
        let buckets = 1 << (Int.bitWidth - ((capacity * 4 + 2) / 3 - 1).leadingZeroBitCount)
        return buckets * element + buckets / 8 + 64
    }

    /// The records of `chunks` sorted by ID, then by pack number and offset: a counting sort on the IDs'
    /// leading bits (IDs are uniformly spread, so each bucket gets a few records), then each bucket by
    /// insertion. Empties `chunks`, each as soon as it is copied, so the peak stays near twice the records.
    static func sorted(_ chunks: inout [[Record]]) -> [Record] {
        let n = chunks.reduce(0) { $0 + $1.count }
        guard n > 0 else { return [] }
        let bits = min(20, max(0, Int.bitWidth - n.leadingZeroBitCount - 2))
        let shift = UInt64(64 - bits)
        let buckets = 1 << bits
        var nextStorage = [Int](repeating: 0, count: buckets)
        return nextStorage.withUnsafeMutableBufferPointer { next in
            for c in chunks {
                c.withUnsafeBufferPointer { c in
                    for r in c { next[Int(truncatingIfNeeded: r.id.w0 >> shift)] += 1 }
                }
            }
            var sum = 0
            for b in 0..<buckets {
                let size = next[b]
                next[b] = sum
                sum += size
            }
            let out = [Record](unsafeUninitializedCapacity: n) { out, initialized in
                for i in chunks.indices {
                    chunks[i].withUnsafeBufferPointer { c in
                        for r in c {
                            let b = Int(truncatingIfNeeded: r.id.w0 >> shift)
                            (out.baseAddress! + next[b]).initialize(to: r)
                            next[b] += 1
                        }
                    }
                    chunks[i] = []
                }
                initialized = n
                // Now bucket b ends at next[b].
                var lo = 0
                for b in 0..<buckets {
                    let hi = next[b]
                    if hi - lo > 1 { sortBucket(UnsafeMutableBufferPointer(rebasing: out[lo..<hi])) }
                    lo = hi
                }
            }
            chunks = []
            return out
        }
    }

    private static func sortBucket(_ r: UnsafeMutableBufferPointer<Record>) {
        guard r.count <= 32 else {
            var r = r
            r.sort(by: precedes)
            return
        }
        for i in 1..<r.count {
            let x = r[i]
            var j = i
            while j > 0, precedes(x, r[j - 1]) {
                r[j] = r[j - 1]
                j -= 1
            }
            r[j] = x
        }
    }

    private static func precedes(_ a: Record, _ b: Record) -> Bool {
        if a.id != b.id { return a.id < b.id }
        return (a.pack, a.offset) < (b.pack, b.offset)
    }
}
