/// A blob's identity: its ID and type (a data and a tree blob with the same ID are different blobs).
struct BlobKey: Hashable, Sendable {
    var id: ID
    var type: BlobType
}

/// Loads a blob through a given index (not necessarily the repository's own).
func fetchBlob(_ repository: Repository, index: MasterIndex, _ id: ID, _ type: BlobType) async throws -> [UInt8] {
    guard let loc = index.lookup(id, type) else {
        throw HavenError(.notFound, "\(type.rawValue) blob \(id.short) is not in the index")
    }
    return try await repository.loadBlob(at: loc)
}

func fetchTree(_ repository: Repository, index: MasterIndex, _ id: ID) async throws -> Tree {
    let bytes = try await fetchBlob(repository, index: index, id, .tree)
    do { return try Tree.decode(bytes) } catch let e as HavenError {
        throw HavenError(.corrupt, "tree \(id.short) cannot be decoded: \(e.message)")
    }
}

/// The blobs a walk found in use: a bit for each blob of a sealed index (see `MasterIndex.seal()`), plus
/// the few used blobs the index lacks. A few bytes per indexed blob, where a set of IDs takes about 80.
struct UsedBlobs: Sendable {
    let index: MasterIndex
    private var bits: SlotSet
    /// Used blobs that are not in the index.
    private(set) var notIndexed = Set<BlobKey>()
    private(set) var dataCount = 0
    private(set) var treeCount = 0

    init(index: MasterIndex) {
        self.index = index
        bits = SlotSet(count: index.slotCount)
    }

    /// Marks a blob used; `slot` is its `index.slot(id, type)`. True when it was not marked before.
    @discardableResult
    mutating func insert(_ id: ID, _ type: BlobType, slot: Int?) -> Bool {
        if let slot {
            guard bits.insert(slot) else { return false }
        } else {
            guard notIndexed.insert(BlobKey(id: id, type: type)).inserted else { return false }
        }
        if type == .data { dataCount += 1 } else { treeCount += 1 }
        return true
    }

    /// Whether the blob in `slot` of the index is used.
    func contains(slot: Int) -> Bool { bits.contains(slot) }

    func contains(_ id: ID, _ type: BlobType) -> Bool {
        if let slot = index.slot(id, type) { return contains(slot: slot) }
        return notIndexed.contains(BlobKey(id: id, type: type))
    }

    /// How many blobs of the index are used.
    var indexedCount: Int { bits.count }
}

/// Walks every tree reachable from a set of snapshots, each tree once, several at a time, and collects the
/// blobs they use plus every problem found (unloadable trees, blobs missing from the index).
struct TreeWalker: Sendable {
    let repository: Repository
    let index: MasterIndex
    var concurrency = 8
    /// Problems beyond this many are only counted.
    var maxProblems = 1000

    struct Problem: Sendable {
        var snapshot: ID?
        var path: String
        var message: String
        var blob: BlobKey?

        var description: String {
            let where_ = snapshot.map { "snapshot \($0.short): \(path)" } ?? path
            return "\(where_): \(message)"
        }
    }

    struct Result: Sendable {
        var treesLoaded = 0
        var used: UsedBlobs
        var problems: [Problem] = []
        var problemCount = 0
    }

    private struct Item: Sendable {
        var tree: ID
        var snapshot: ID?
        var path: String
    }

    static func join(_ parent: String, _ name: String) -> String {
        parent == "/" ? "/" + name : parent + "/" + name
    }

    /// Walks from each snapshot's root tree. `onTree` is called after each tree with the count so far.
    ///
    /// Seals `index` first (see `MasterIndex.seal()`): the walker's index must be one nothing adds to.
    func walk(_ snapshots: [Snapshot], onTree: (@Sendable (Int) -> Void)? = nil) async throws -> Result {
        index.seal()
        let state = Locked(Result(used: UsedBlobs(index: index)))
        let max = maxProblems
        @Sendable func record(_ s: inout Result, _ p: Problem) {
            s.problemCount += 1
            if s.problems.count < max { s.problems.append(p) }
        }
        var wave: [Item] = []
        for snap in snapshots {
            let slot = index.slot(snap.tree, .tree)
            state.withLock { s in
                guard s.used.insert(snap.tree, .tree, slot: slot) else { return }
                if slot != nil {
                    wave.append(Item(tree: snap.tree, snapshot: snap.id, path: "/"))
                } else {
                    record(&s, Problem(snapshot: snap.id, path: "/", message: "root tree \(snap.tree.short) is not in the index",
                                       blob: BlobKey(id: snap.tree, type: .tree)))
                }
            }
        }
        while !wave.isEmpty {
            try Task.checkCancellation()
            let next = Locked<[Item]>([])
            let repository = self.repository, index = self.index
            try await forEachConcurrently(wave, limit: concurrency) { item in
                let tree: Tree
                do {
                    tree = try await fetchTree(repository, index: index, item.tree)
                } catch let e as HavenError {
                    state.withLock { record(&$0, Problem(snapshot: item.snapshot, path: item.path,
                                                         message: "tree \(item.tree.short) cannot be loaded: \(e.message)")) }
                    return
                }
                var data: [(ID, Int?)] = []
                var children: [(Item, Int?)] = []
                var problems: [Problem] = []
                for node in tree.nodes {
                    let path = TreeWalker.join(item.path, node.displayName)
                    switch node.type {
                    case .file:
                        for c in node.content {
                            let slot = index.slot(c, .data)
                            data.append((c, slot))
                            if slot == nil {
                                problems.append(Problem(snapshot: item.snapshot, path: path,
                                                        message: "data blob \(c.short) is not in the index",
                                                        blob: BlobKey(id: c, type: .data)))
                            }
                        }
                    case .dir:
                        guard let sub = node.subtree else {
                            problems.append(Problem(snapshot: item.snapshot, path: path, message: "directory has no subtree"))
                            continue
                        }
                        children.append((Item(tree: sub, snapshot: item.snapshot, path: path), index.slot(sub, .tree)))
                    default:
                        if let sub = node.subtree {
                            children.append((Item(tree: sub, snapshot: item.snapshot, path: path), index.slot(sub, .tree)))
                        }
                    }
                }
                let count = state.withLock { s -> Int in
                    s.treesLoaded += 1
                    for (id, slot) in data { s.used.insert(id, .data, slot: slot) }
                    for p in problems { record(&s, p) }
                    var fresh: [Item] = []
                    for (c, slot) in children where s.used.insert(c.tree, .tree, slot: slot) {
                        if slot != nil {
                            fresh.append(c)
                        } else {
                            record(&s, Problem(snapshot: c.snapshot, path: c.path, message: "tree blob \(c.tree.short) is not in the index",
                                               blob: BlobKey(id: c.tree, type: .tree)))
                        }
                    }
                    next.withLock { $0.append(contentsOf: fresh) }
                    return s.treesLoaded
                }
                onTree?(count)
            }
            wave = next.withLock { $0 }
        }
        return state.withLock { $0 }
    }

    /// For each blob in `targets`, the snapshots whose trees reach it. Each tree is loaded at most once;
    /// trees that cannot be loaded are skipped.
    func snapshotsUsing(_ targets: Set<BlobKey>, in snapshots: [Snapshot]) async -> [BlobKey: [ID]] {
        guard !targets.isEmpty else { return [:] }
        var memo: [ID: Set<BlobKey>] = [:]
        func reach(_ tree: ID, depth: Int) async -> Set<BlobKey> {
            if let known = memo[tree] { return known }
            memo[tree] = []  // guards against cycles in hostile data
            var found = Set<BlobKey>()
            if targets.contains(BlobKey(id: tree, type: .tree)) { found.insert(BlobKey(id: tree, type: .tree)) }
            guard depth < 1000, let t = try? await fetchTree(repository, index: index, tree) else {
                memo[tree] = found
                return found
            }
            for node in t.nodes {
                for c in node.content where targets.contains(BlobKey(id: c, type: .data)) {
                    found.insert(BlobKey(id: c, type: .data))
                }
                if let sub = node.subtree { found.formUnion(await reach(sub, depth: depth + 1)) }
            }
            memo[tree] = found
            return found
        }
        var out: [BlobKey: [ID]] = [:]
        for s in snapshots {
            guard let sid = s.id else { continue }
            for b in await reach(s.tree, depth: 0) { out[b, default: []].append(sid) }
        }
        return out
    }
}
