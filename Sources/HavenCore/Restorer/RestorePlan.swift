/// Everything a restore will create, in creation order, worked out from the snapshot's trees before
/// anything is written.
///
/// Entries are in pre-order: a directory comes before everything inside it, so an entry's `parent` always
/// has a smaller index. Entries the planner refused (hostile or damaged) are not in `entries`; they are
/// listed in `errors`, and nothing beneath them is planned.
public struct RestorePlan: Sendable {
    /// Whether the file `node` may share its inode with other entries: the planner makes the first such
    /// entry of an inode the primary that later ones are hard links to.
    static func mayBeHardLinked(_ node: Node) -> Bool { node.links > 1 && node.inode != 0 }

    /// What the executor does for an entry.
    public enum Action: Sendable, Equatable {
        /// A directory (an existing one is reused).
        case directory
        /// A regular file whose content is written from its blobs.
        case file
        /// Another name for the file at entry index `to` (a hard link to a file restored in this run).
        case hardLink(to: Int)
        /// A symbolic link with the node's target (never followed).
        case symlink
        /// A named pipe.
        case fifo
        /// A block or character device node (created only when running as root).
        case device
    }

    /// One entry to create.
    public struct Entry: Sendable {
        /// Path relative to the restore target: raw name bytes joined by "/".
        public var path: [UInt8]
        /// Index of the directory entry this one lives in; nil for the target directory itself.
        public var parent: Int?
        /// The node from the snapshot: name and metadata (and content IDs for files).
        public var node: Node
        /// What is created.
        public var action: Action
        /// A file's content size, summed from its blobs' sizes in the index; 0 for other entries.
        public var size: UInt64

        /// The name created in the parent directory.
        public var name: [UInt8] { node.name }
    }

    /// The options the plan was made with; `execute` uses them as well.
    public var options: RestoreOptions
    /// What to create, parents before children.
    public internal(set) var entries: [Entry] = []
    /// Entries refused while planning (invalid or duplicate names, cycles, missing blobs, …), each with its path.
    public internal(set) var errors: [RestoreIssue] = []
    /// Entries skipped on purpose (sockets and other types that cannot be restored).
    public internal(set) var warnings: [RestoreIssue] = []

    init(options: RestoreOptions) { self.options = options }

    /// Regular files whose content will be written (hard links not included).
    public var fileCount: Int { entries.reduce(0) { $0 + ($1.action == .file ? 1 : 0) } }
    /// Total content bytes of those files.
    public var totalBytes: UInt64 { entries.reduce(0) { $0 + ($1.action == .file ? $1.size : 0) } }
    /// Directories to create.
    public var directoryCount: Int { entries.reduce(0) { $0 + ($1.action == .directory ? 1 : 0) } }
    /// Symbolic links to create.
    public var symlinkCount: Int { entries.reduce(0) { $0 + ($1.action == .symlink ? 1 : 0) } }
    /// Extra names of hard-linked files.
    public var hardLinkCount: Int {
        entries.reduce(0) { if case .hardLink = $1.action { return $0 + 1 }; return $0 }
    }
    /// FIFOs and device nodes.
    public var specialCount: Int { entries.reduce(0) { $0 + ($1.action == .fifo || $1.action == .device ? 1 : 0) } }
}

/// Where a restore starts, once a subpath has been looked up: a directory's tree or a single entry.
public enum RestoreStart: Sendable {
    /// A directory: its contents are restored into the target.
    case tree(ID)
    /// A single non-directory entry: it is restored into the target under its own name.
    case node(Node)
}

/// Restores snapshots: `plan` walks the trees and decides what to create, `execute` creates it.
public enum Restorer {
    /// Plans restoring the tree `tree` (a snapshot's root tree), or the part of it at `subpath`.
    ///
    /// - Parameters:
    ///   - subpath: a path inside the snapshot ("home/user/docs", leading "/" optional) whose contents are
    ///     restored into the target; a non-directory is restored into the target under its own name.
    ///     Empty restores the whole snapshot.
    ///   - options: the target, filters and policies; `plan.options` keeps them for `execute`.
    /// - Throws: `.notFound` when `subpath` does not exist in the snapshot, `.invalidArgument` for a subpath
    ///   with "..", and errors loading the starting tree. Problems below the start do not throw: the
    ///   affected entries are skipped and listed in `plan.errors`.
    public static func plan(repository: Repository, tree: ID, subpath: String = "", options: RestoreOptions) async throws -> RestorePlan {
        try await plan(repository: repository, tree: tree, subpath: subpath, options: options, loadTree: { try await repository.loadTree($0) })
    }

    /// `plan` with the tree loader replaced (tests use it to feed trees a real repository cannot hold).
    static func plan(repository: Repository, tree: ID, subpath: String, options: RestoreOptions,
                     loadTree: @escaping @Sendable (ID) async throws -> Tree) async throws -> RestorePlan {
        let components = try splitSubpath(subpath)
        let (start, ancestors) = try await resolve(loadTree: loadTree, tree: tree, components: components, maxDepth: options.maxDepth)
        let prefetcher = TreePrefetcher(load: loadTree)
        defer { prefetcher.cancelAll() }
        var planner = Planner(repository: repository, options: options, loadTree: { try await prefetcher.tree($0) })
        if planner.selector.selectsEverything { planner.prefetch = { prefetcher.prefetch($0) } }
        switch start {
        case .tree(let id):
            let root = try await loadTree(id)
            try await planner.addChildren(of: root, dirIndex: nil, relPath: [], components: components,
                                          ancestors: ancestors + [id], depth: 0, parentSelected: false)
        case .node(let node):
            try await planner.addChildren(of: Tree(nodes: [node]), dirIndex: nil, relPath: [], components: Array(components.dropLast()),
                                          ancestors: ancestors, depth: 0, parentSelected: false)
        }
        return planner.plan
    }

    /// Looks up `subpath` (see `plan`) below the tree `tree`.
    ///
    /// - Throws: `.notFound` naming the missing component, `.invalidArgument` for "..", `.corrupt` for a
    ///   directory without a subtree or a cycle.
    public static func resolve(repository: Repository, tree: ID, subpath: String) async throws -> RestoreStart {
        try await resolve(loadTree: { try await repository.loadTree($0) }, tree: tree, components: splitSubpath(subpath), maxDepth: 1000).0
    }

    static func splitSubpath(_ subpath: String) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        for part in Array(subpath.utf8).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            let c = Array(part)
            if c == [UInt8(ascii: ".")] { continue }
            if c == [UInt8(ascii: "."), UInt8(ascii: ".")] {
                throw HavenError(.invalidArgument, "invalid path \"\(subpath)\" inside the snapshot: \"..\" is not allowed")
            }
            out.append(c)
        }
        return out
    }

    static func resolve(loadTree: @Sendable (ID) async throws -> Tree, tree: ID, components: [[UInt8]],
                        maxDepth: Int) async throws -> (RestoreStart, [ID]) {
        guard components.count <= maxDepth else {
            throw HavenError(.invalidArgument, "path inside the snapshot is deeper than \(maxDepth) levels")
        }
        var current = tree
        var ancestors: [ID] = []
        var walked: [UInt8] = []
        for (k, name) in components.enumerated() {
            ancestors.append(current)
            let listing = try await loadTree(current)
            let path = RestorePath.join(walked, name)
            let location = walked.isEmpty ? "the snapshot root" : "\"\(RestorePath.display(walked))\""
            guard let node = listing.node(named: name) else {
                throw HavenError(.notFound, "\"\(RestorePath.display(path))\" not found in the snapshot: no entry \"\(RestorePath.display(name))\" in \(location)")
            }
            let last = k == components.count - 1
            if node.type != .dir {
                if last { return (.node(node), ancestors) }
                throw HavenError(.notFound, "\"\(RestorePath.display(path))\" in the snapshot is not a directory")
            }
            guard let sub = node.subtree else {
                throw HavenError(.corrupt, "directory \"\(RestorePath.display(path))\" in the snapshot has no subtree")
            }
            if ancestors.contains(sub) {
                throw HavenError(.corrupt, "directory \"\(RestorePath.display(path))\" in the snapshot contains itself (tree cycle)")
            }
            current = sub
            walked = path
        }
        return (.tree(current), ancestors)
    }
}

/// Loads directory listings ahead of a depth-first walk, on other threads: up to `limit` listings are in
/// flight or waiting to be used at once.
final class TreePrefetcher: Sendable {
    let load: @Sendable (ID) async throws -> Tree
    let limit: Int
    private let pending = Locked<[ID: Task<Tree, any Error>]>([:])

    init(load: @escaping @Sendable (ID) async throws -> Tree, limit: Int = 64) {
        self.load = load
        self.limit = limit
    }

    /// Starts loading `ids` not already started, while fewer than `limit` are pending.
    func prefetch(_ ids: [ID]) {
        pending.withLock { pending in
            for id in ids where pending.count < limit && pending[id] == nil {
                pending[id] = Task { [load] in try await load(id) }
            }
        }
    }

    /// The listing `id`: the prefetched one if it was started (its error, if loading failed), else loaded now.
    func tree(_ id: ID) async throws -> Tree {
        if let task = pending.withLock({ $0.removeValue(forKey: id) }) { return try await task.value }
        return try await load(id)
    }

    /// Stops the loads nobody will use.
    func cancelAll() {
        for task in pending.withLock({ p in defer { p = [:] }; return Array(p.values) }) { task.cancel() }
    }
}

/// Walks trees and fills a plan. Used by one task.
struct Planner {
    let repository: Repository
    let loadTree: @Sendable (ID) async throws -> Tree
    let selector: RestoreSelector
    let maxDepth: Int
    var plan: RestorePlan
    /// Starts loading the listings of directories about to be visited (set when every directory is).
    var prefetch: (@Sendable ([ID]) -> Void)?
    /// (device, inode) of hard-linked files already planned → their entry index.
    var hardLinks: [HardLinkKey: Int] = [:]

    struct HardLinkKey: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    init(repository: Repository, options: RestoreOptions, loadTree: @escaping @Sendable (ID) async throws -> Tree) {
        self.repository = repository
        self.loadTree = loadTree
        selector = RestoreSelector(options)
        maxDepth = max(1, options.maxDepth)
        plan = RestorePlan(options: options)
    }

    private mutating func error(_ path: [UInt8], _ message: String) {
        plan.errors.append(RestoreIssue(path: path, message: message))
    }

    /// Plans the nodes of `tree`, which is restored at `relPath` (entry `dirIndex`, nil for the target) and
    /// sits at `components` from the snapshot root. Returns whether anything was planned.
    @discardableResult
    mutating func addChildren(of tree: Tree, dirIndex: Int?, relPath: [UInt8], components: [[UInt8]],
                              ancestors: [ID], depth: Int, parentSelected: Bool) async throws -> Bool {
        var seen = Set<[UInt8]>()
        var planned = false
        if depth + 1 <= maxDepth {
            prefetch?(tree.nodes.compactMap { $0.type == .dir ? $0.subtree : nil }.filter { !ancestors.contains($0) })
        }
        for node in tree.nodes {
            if Task.isCancelled { throw HavenError(.cancelled, "restore cancelled while planning") }
            let path = RestorePath.join(relPath, node.name)
            if let reason = RestorePath.invalidNameReason(node.name) {
                error(path, "\(reason); entry not restored")
                continue
            }
            guard seen.insert(node.name).inserted else {
                error(path, "duplicate name in its directory; only the first entry with this name is restored")
                continue
            }
            let comps = components + [node.name]
            let fullPath = comps.joined(separator: [UInt8(ascii: "/")]).map { $0 }
            let isDir = node.type == .dir
            let decision = selector.decide(components: comps, path: fullPath, isDirectory: isDir, parentSelected: parentSelected)

            if isDir {
                guard decision.restore || decision.descend else { continue }
                guard let sub = node.subtree else {
                    error(path, "directory has no subtree; not restored")
                    continue
                }
                guard depth + 1 <= maxDepth else {
                    error(path, "directory is nested deeper than \(maxDepth) levels; not restored")
                    continue
                }
                if ancestors.contains(sub) {
                    error(path, "directory contains itself (tree \(sub.short) is its own ancestor); not restored")
                    continue
                }
                let index = plan.entries.count
                plan.entries.append(RestorePlan.Entry(path: path, parent: dirIndex, node: node, action: .directory, size: 0))
                var childPlanned = false
                if decision.descend {
                    let listing: Tree
                    do {
                        listing = try await loadTree(sub)
                    } catch let e as HavenError where e.code != .cancelled {
                        plan.entries.removeLast()
                        error(path, "cannot read the directory's listing: \(e.message); not restored")
                        continue
                    }
                    childPlanned = try await addChildren(
                        of: listing, dirIndex: index, relPath: path, components: comps,
                        ancestors: ancestors + [sub], depth: depth + 1, parentSelected: decision.childrenSelected)
                }
                if decision.restore || childPlanned {
                    planned = true
                } else {
                    // Only visited to look for selected entries, and none was found.
                    assert(plan.entries.count == index + 1)
                    plan.entries.removeLast()
                }
                continue
            }

            guard decision.restore else { continue }
            switch node.type {
            case .file:
                let key = HardLinkKey(device: node.deviceID, inode: node.inode)
                let linked = RestorePlan.mayBeHardLinked(node)
                if linked, let primary = hardLinks[key] {
                    plan.entries.append(RestorePlan.Entry(path: path, parent: dirIndex, node: node, action: .hardLink(to: primary), size: 0))
                    planned = true
                    continue
                }
                var size: UInt64 = 0
                var missing: ID?
                for id in node.content {
                    guard let loc = repository.index.lookup(id, .data) else { missing = id; break }
                    size += UInt64(loc.blob.dataLength)
                }
                if let missing {
                    error(path, "content blob \(missing.short) is not in the repository index; file not restored")
                    continue
                }
                if linked { hardLinks[key] = plan.entries.count }
                plan.entries.append(RestorePlan.Entry(path: path, parent: dirIndex, node: node, action: .file, size: size))
                planned = true
            case .symlink:
                if node.linkTarget.contains(0) {
                    error(path, "symlink target contains a NUL byte; not restored")
                    continue
                }
                if node.linkTarget.isEmpty {
                    error(path, "symlink has an empty target; not restored")
                    continue
                }
                plan.entries.append(RestorePlan.Entry(path: path, parent: dirIndex, node: node, action: .symlink, size: 0))
                planned = true
            case .fifo:
                plan.entries.append(RestorePlan.Entry(path: path, parent: dirIndex, node: node, action: .fifo, size: 0))
                planned = true
            case .dev, .chardev:
                plan.entries.append(RestorePlan.Entry(path: path, parent: dirIndex, node: node, action: .device, size: 0))
                planned = true
            case .socket:
                plan.warnings.append(RestoreIssue(path: path, message: "socket not restored (sockets cannot be recreated)"))
            case .irregular:
                plan.warnings.append(RestoreIssue(path: path, message: "irregular file not restored"))
            case .dir:
                break
            }
        }
        return planned
    }
}
