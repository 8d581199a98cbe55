import Synchronization

/// Where a blob is: its pack and position. Kept small because the index holds one per blob.
public struct BlobLocation: Sendable, Hashable {
    public var pack: ID
    public var blob: PackedBlob
}

/// The in-memory union of all index files, plus blobs written in this session. Thread-safe.
public final class MasterIndex: Sendable {
    struct Entry {
        var pack: UInt32
        var offset: UInt32
        var length: UInt32
        var uncompressedLength: UInt32
    }

    struct State {
        var packs: [ID] = []
        var packNumbers: [ID: UInt32] = [:]
        var data: [ID: Entry] = [:]
        var tree: [ID: Entry] = [:]
        /// Blobs being written in this session (reserved, not yet in a stored pack).
        var pendingData: Set<ID> = []
        var pendingTree: Set<ID> = []
    }

    private let state = Mutex(State())

    public init() {}

    /// Adds every blob of `file`. The first location seen for a blob wins.
    public func add(_ file: IndexFile) {
        state.withLock { s in
            for p in file.packs { Self.add(&s, pack: p.id, blobs: p.blobs) }
        }
    }

    public func add(pack: ID, blobs: [PackedBlob]) {
        state.withLock { s in Self.add(&s, pack: pack, blobs: blobs) }
    }

    private static func add(_ s: inout State, pack: ID, blobs: [PackedBlob]) {
        let n: UInt32
        if let existing = s.packNumbers[pack] {
            n = existing
        } else {
            n = UInt32(s.packs.count)
            s.packs.append(pack)
            s.packNumbers[pack] = n
        }
        for b in blobs {
            let e = Entry(pack: n, offset: b.offset, length: b.length, uncompressedLength: b.uncompressedLength)
            switch b.type {
            case .data:
                if s.data[b.id] == nil { s.data[b.id] = e }
                s.pendingData.remove(b.id)
            case .tree:
                if s.tree[b.id] == nil { s.tree[b.id] = e }
                s.pendingTree.remove(b.id)
            }
        }
    }

    public func lookup(_ id: ID, _ type: BlobType) -> BlobLocation? {
        state.withLock { s in
            guard let e = (type == .data ? s.data[id] : s.tree[id]) else { return nil }
            return BlobLocation(pack: s.packs[Int(e.pack)], blob: PackedBlob(id: id, type: type, offset: e.offset, length: e.length, uncompressedLength: e.uncompressedLength))
        }
    }

    public func has(_ id: ID, _ type: BlobType) -> Bool {
        state.withLock { s in type == .data ? s.data[id] != nil : s.tree[id] != nil }
    }

    /// Claims `id` for writing: true when the blob is neither stored nor already claimed, so exactly one
    /// writer stores each new blob even when several find it at once.
    public func reserve(_ id: ID, _ type: BlobType) -> Bool {
        state.withLock { s in
            switch type {
            case .data: return s.data[id] == nil && s.pendingData.insert(id).inserted
            case .tree: return s.tree[id] == nil && s.pendingTree.insert(id).inserted
            }
        }
    }

    public var blobCount: Int { state.withLock { $0.data.count + $0.tree.count } }
    public var packCount: Int { state.withLock { s in Set(s.data.values.map(\.pack)).union(s.tree.values.map(\.pack)).count } }

    /// Every pack that holds at least one indexed blob.
    public var packIDs: Set<ID> {
        state.withLock { s in
            var used = Set<UInt32>()
            for e in s.data.values { used.insert(e.pack) }
            for e in s.tree.values { used.insert(e.pack) }
            return Set(used.map { s.packs[Int($0)] })
        }
    }

    /// All blobs of a type with their sizes (plaintext).
    public func allBlobs(_ type: BlobType) -> [(ID, UInt32)] {
        state.withLock { s in
            (type == .data ? s.data : s.tree).map { ($0.key, $0.value.uncompressedLength != 0 ? $0.value.uncompressedLength : $0.value.length - UInt32(MasterKey.overhead)) }
        }
    }
}
