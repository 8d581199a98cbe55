import Synchronization

/// Every pack entry of a set of index files: for each pack, the blobs the files list in it (merged when
/// several files list the same pack), in one flat array sorted by pack ID, then offset and length. About
/// 56 bytes per entry. Check and prune need every copy of every blob; the master index keeps one.
struct PackListing: Sendable {
    struct Entry: Sendable, Equatable {
        var blob: PackedBlob
        /// The pack's position in `packs`.
        var pack: UInt32
    }

    /// The packs the index files name, sorted.
    private(set) var packs: [ID] = []
    /// For each pack, the first index file (by ID) that names it.
    private(set) var namedBy: [ID] = []
    /// The entries of `packs[k]` are `entries[starts[k]..<starts[k + 1]]`.
    private(set) var entries: [Entry] = []
    private(set) var starts: [Int] = [0]

    /// The entries of `packs[k]`, sorted by offset, then length.
    func blobs(ofPackAt k: Int) -> ArraySlice<Entry> { entries[starts[k]..<starts[k + 1]] }

    /// The position of `pack` in `packs`.
    func position(of pack: ID) -> Int? {
        var lo = 0, hi = packs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if packs[mid] < pack { lo = mid + 1 } else { hi = mid }
        }
        return lo < packs.count && packs[lo] == pack ? lo : nil
    }

    /// Collects index files from several tasks at once; `finish()` sorts them into a listing.
    final class Builder: Sendable {
        private struct State {
            var numbering = PackNumbering()
            var namedBy: [ID] = []
            var entries: [Entry] = []
        }
        private let state = Mutex(State())

        func add(_ file: IndexFile, id: ID) {
            state.withLock { s in
                for p in file.packs {
                    let (n, isNew) = s.numbering.number(for: p.id)
                    if isNew {
                        s.namedBy.append(id)
                    } else if id < s.namedBy[Int(n)] {
                        s.namedBy[Int(n)] = id
                    }
                    for b in p.blobs { s.entries.append(Entry(blob: b, pack: n)) }
                }
            }
        }

        func finish() -> PackListing {
            var s = state.withLock { s in
                defer { s = State() }
                return s
            }
            let (packs, rank) = s.numbering.sorted()
            var out = PackListing()
            out.packs = packs
            out.namedBy = zip(rank, s.namedBy).sorted { $0.0 < $1.0 }.map(\.1)
            for i in s.entries.indices { s.entries[i].pack = rank[Int(s.entries[i].pack)] }
            s.entries.sort { a, b in
                if a.pack != b.pack { return a.pack < b.pack }
                if a.blob.offset != b.blob.offset { return a.blob.offset < b.blob.offset }
                if a.blob.length != b.blob.length { return a.blob.length < b.blob.length }
                if a.blob.type != b.blob.type { return a.blob.type == .data }
                if a.blob.id != b.blob.id { return a.blob.id < b.blob.id }
                return a.blob.uncompressedLength < b.blob.uncompressedLength
            }
            // The same pack listed by two index files: keep one of each entry.
            var kept = 0
            for i in s.entries.indices where kept == 0 || s.entries[i] != s.entries[kept - 1] {
                s.entries[kept] = s.entries[i]
                kept += 1
            }
            s.entries.removeLast(s.entries.count - kept)
            if s.entries.capacity > kept + kept / 8 + 64 {
                // Growth left up to twice the room needed: copy into an exact fit.
                out.entries.reserveCapacity(kept)
                out.entries.append(contentsOf: s.entries)
            } else {
                out.entries = s.entries
            }
            s.entries = []
            out.starts = [Int](repeating: 0, count: out.packs.count + 1)
            var k = 0
            for (i, e) in out.entries.enumerated() {
                while k < Int(e.pack) { k += 1; out.starts[k] = i }
            }
            while k < out.packs.count { k += 1; out.starts[k] = out.entries.count }
            return out
        }
    }
}

extension PackListing {
    /// Loads every index file of `repository`, a few at a time, into `index` and a listing, keeping no
    /// decoded file: the listing and the IDs of the files. Throws on the first file that cannot be used.
    static func load(_ repository: Repository, into index: MasterIndex) async throws -> (PackListing, [ID]) {
        let builder = Builder()
        let ids = try await repository.storage.list(.index).compactMap { ID(hex: $0.name) }
        try await forEachConcurrently(ids, limit: 4) { id in
            let file = try IndexFile.decode(try await repository.loadUnpacked(Handle(.index, id)), id: id)
            index.add(file)
            builder.add(file, id: id)
        }
        return (builder.finish(), ids.sorted())
    }
}

/// A set of small integers (index slots): a bit each.
struct SlotSet: Sendable {
    private var words: [UInt64]

    init(count: Int) { words = [UInt64](repeating: 0, count: (count + 63) / 64) }

    /// True when `slot` was not in the set.
    @discardableResult
    mutating func insert(_ slot: Int) -> Bool {
        let mask: UInt64 = 1 << UInt64(slot & 63)
        guard words[slot >> 6] & mask == 0 else { return false }
        words[slot >> 6] |= mask
        return true
    }

    func contains(_ slot: Int) -> Bool { words[slot >> 6] & (1 << UInt64(slot & 63)) != 0 }

    var count: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }
}

/// Numbers packs in the order they are first seen, so that large arrays can hold a 4-byte number instead
/// of a 32-byte pack ID, and then ranks them by ID.
struct PackNumbering {
    private var numbers: [ID: UInt32] = [:]
    private var packs: [ID] = []

    /// The pack's number, and whether this call gave it.
    mutating func number(for pack: ID) -> (UInt32, isNew: Bool) {
        if let known = numbers[pack] { return (known, false) }
        let n = UInt32(packs.count)
        numbers[pack] = n
        packs.append(pack)
        return (n, true)
    }

    /// The packs sorted by ID, and for each number its position in that order.
    func sorted() -> (packs: [ID], rank: [UInt32]) {
        let order = packs.indices.sorted { packs[$0] < packs[$1] }
        var rank = [UInt32](repeating: 0, count: order.count)
        for (position, n) in order.enumerated() { rank[n] = UInt32(position) }
        return (order.map { packs[$0] }, rank)
    }
}
