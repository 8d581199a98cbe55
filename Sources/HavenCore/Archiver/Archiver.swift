#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import CHavenShims

/// What to back up and how.
public struct BackupOptions: Sendable {
    public var paths: [String] = []
    public var excludes: [PathPattern] = []
    /// A directory holding one of these files (whose content starts with `header`, when given) is skipped.
    public var excludeIfPresent: [(file: String, header: [UInt8]?)] = []
    public var excludeLargerThan: UInt64?
    public var oneFileSystem = false
    public var tags: [String] = []
    public var hostname = Host.name
    /// Use this snapshot as the parent instead of looking for one.
    public var parent: ID?
    /// Read every file, ignoring the parent snapshot.
    public var force = false
    public var dryRun = false
    public var compression: CompressionMode = .auto
    public var packSize = 16 << 20
    /// Back up the bytes read from this file descriptor as one file (restic's `--stdin`).
    public var stdinFilename: String?
    public var stdinDescriptor: Int32 = 0
    /// The snapshot's time (now when nil).
    public var time: Timestamp?
    /// Files read at once.
    public var fileConcurrency = 4
    /// Count the files and bytes to back up in a second walk beside the backup, so that progress can show
    /// totals and an ETA (`BackupProgress.Snapshot.totalFiles`). That walk stats every file once more;
    /// leave it off when nobody looks at the progress.
    public var countTotals = true

    public init(paths: [String] = []) { self.paths = paths }

    /// restic's CACHEDIR.TAG convention for `--exclude-caches`.
    public static let cacheDirTag: (file: String, header: [UInt8]?) = ("CACHEDIR.TAG", Array("Signature: 8a477f597d28d172789f06886806bc55".utf8))
}

/// A source file or directory that could not be backed up completely.
public struct BackupWarning: Sendable, CustomStringConvertible {
    public var path: String
    public var message: String
    public var description: String { "\(path): \(message)" }
}

/// Live counters of a running backup. Safe to read from any thread.
public final class BackupProgress: Sendable {
    public struct Snapshot: Sendable {
        public var filesDone = 0
        public var dirsDone = 0
        public var bytesDone: UInt64 = 0
        public var bytesNew: UInt64 = 0
        public var errors = 0
        public var currentFiles: [String] = []
        /// Totals found by the scanner that runs beside the backup (for an ETA); final when `scanDone`.
        public var totalFiles = 0
        public var totalBytes: UInt64 = 0
        public var scanDone = false
    }
    private let state = Mutex(Snapshot())
    private let current = Mutex<[Int: String]>([:])
    private let nextToken = Atomic<Int>(0)

    public init() {}

    public var snapshot: Snapshot {
        var s = state.withLock { $0 }
        s.currentFiles = current.withLock { Array($0.values).sorted() }
        return s
    }

    func update(_ body: (inout Snapshot) -> Void) { state.withLock { body(&$0) } }

    func begin(_ path: String) -> Int {
        let token = nextToken.add(1, ordering: .relaxed).newValue
        current.withLock { $0[token] = path }
        return token
    }

    func end(_ token: Int) { _ = current.withLock { $0.removeValue(forKey: token) } }
}

/// The outcome of a backup.
public struct BackupResult: Sendable {
    public var snapshotID: ID?
    public var snapshot: Snapshot
    public var parent: ID?
    public var summary: Snapshot.Summary
    public var warnings: [BackupWarning]
    public var dryRun: Bool
}

/// One repository a backup writes to, with its own key, index, pack writer and parent snapshot.
final class BackupTarget: Sendable {
    let repository: Repository
    let writer: BlobWriter
    /// The first failure of this repository; nothing more is written to it once set.
    let failure = Locked<HavenError?>(nil)

    init(repository: Repository, options: BackupOptions) {
        self.repository = repository
        writer = BlobWriter(repository: repository, packSize: options.packSize, compression: options.compression, dryRun: options.dryRun)
    }

    var failed: Bool { failure.withLock { $0 != nil } }

    func fail(_ error: any Error) {
        let e = (error as? HavenError) ?? HavenError(.io, "\(error)")
        failure.withLock { if $0 == nil { $0 = e } }
    }
}

/// The outcome of a backup into one of several repositories: a result, or the error that stopped it.
public struct BackupOutcome: Sendable {
    public var location: String
    public var result: BackupResult?
    public var error: HavenError?
}

/// Reads source files, cuts them into chunks, stores new blobs and trees, and writes a snapshot.
///
/// With several repositories, each file is read and chunked once and its blobs are stored into every
/// repository (each with its own key, index, deduplication and parent snapshot). A repository that fails
/// is dropped; the others still get their snapshot.
public final class Archiver: Sendable {
    let targets: [BackupTarget]
    /// The first repository (its chunker parameters are those of all).
    var repository: Repository { targets[0].repository }
    let options: BackupOptions
    let progress: BackupProgress
    let fileSlots: AsyncSemaphore
    /// Buffers large files are read into, one per chunk (see `chunkStream`).
    let chunkPool = ChunkPool(capacity: Chunker.maxSize)
    /// Directories walked in tasks of their own at once (others are walked by their parent's task).
    let directorySlots = AsyncSemaphore(permits: 8)
    /// Entries of one directory in flight at once.
    static let entriesInFlight = 16
    /// Directories kept open while their entries are backed up (see `archiveDirectory`).
    static let maxOpenDirectories = 64
    let openDirectories = Atomic<Int>(0)
    let warnings = Locked<[BackupWarning]>([])
    let counts = Locked<Snapshot.Summary>(Snapshot.Summary())
    let names = NameCache()
    let excludes: PatternList

    init(repositories: [Repository], options: BackupOptions, progress: BackupProgress) {
        precondition(!repositories.isEmpty)
        targets = repositories.map { BackupTarget(repository: $0, options: options) }
        self.options = options
        self.progress = progress
        fileSlots = AsyncSemaphore(permits: max(1, options.fileConcurrency))
        excludes = PatternList(options.excludes)
    }

    /// Backs up `options.paths` (or standard input) into `repository` and saves a snapshot.
    ///
    /// Unreadable source files are skipped and reported in `warnings`; the snapshot is still written. On
    /// cancellation or error, packs already uploaded are indexed so that the next backup reuses them.
    public static func backup(repository: Repository, options: BackupOptions, progress: BackupProgress = BackupProgress()) async throws -> BackupResult {
        let archiver = Archiver(repositories: [repository], options: options, progress: progress)
        let outcome = try await archiver.run()[0]
        if let error = outcome.error { throw error }
        return outcome.result!
    }

    /// Backs up `options.paths` into every repository of `repositories`, reading each file once.
    ///
    /// The repositories must share chunker parameters (else `.usage` is thrown before anything is read).
    /// A repository that fails (its storage becomes unwritable, its parent cannot be read, …) is reported
    /// in its outcome and dropped; the others go on. Throws only when the backup as a whole cannot proceed
    /// (no source path exists, cancellation, every repository failed).
    public static func backup(repositories: [Repository], options: BackupOptions,
                              progress: BackupProgress = BackupProgress()) async throws -> [BackupOutcome] {
        guard let first = repositories.first else { throw HavenError(.usage, "no repository to back up into") }
        for r in repositories.dropFirst() where r.config.chunkerPolynomial != first.config.chunkerPolynomial {
            throw HavenError(.usage, "\(r.storage.location) uses different chunker parameters than \(first.storage.location), so a file "
                + "cannot be read once for both; create it with `haven -r \(r.storage.location) init --copy-chunker-params "
                + "--from-repo \(first.storage.location)` (or back up into each repository separately)")
        }
        let archiver = Archiver(repositories: repositories, options: options, progress: progress)
        return try await archiver.run()
    }

    /// Stores a blob in every repository that has not failed. With one repository its error is thrown;
    /// with several, a repository's error drops that repository, and only the last one's error is thrown.
    func saveBlob<P: BlobPlaintext>(_ type: BlobType, id: ID, plaintext: P) async throws {
        if targets.count == 1 {
            try await targets[0].writer.save(type, id: id, plaintext: plaintext)
            return
        }
        for t in targets where !t.failed {
            do {
                try await t.writer.save(type, id: id, plaintext: plaintext)
            } catch {
                if error is CancellationError || Task.isCancelled { throw error }
                t.fail(error)
            }
        }
        try checkAlive()
    }

    /// Throws the first failure when every repository has failed.
    func checkAlive() throws {
        if targets.allSatisfy(\.failed) { throw targets[0].failure.withLock { $0 }! }
    }

    /// Runs `body` for every repository that has not failed; with several, an error drops the repository.
    func forEachTarget(_ body: (BackupTarget) async throws -> Void) async throws {
        for t in targets where !t.failed {
            do { try await body(t) } catch {
                if targets.count == 1 || error is CancellationError { throw error }
                t.fail(error)
            }
        }
        try checkAlive()
    }

    func warn(_ path: String, _ message: String) {
        warnings.withLock { $0.append(BackupWarning(path: path, message: message)) }
        progress.update { $0.errors += 1 }
    }

    func run() async throws -> [BackupOutcome] {
        let start = Timestamp.now()
        let scanner = options.countTotals ? Task.detached(priority: .low) { [self] in self.scan() } : nil
        defer { scanner?.cancel() }
        if !options.dryRun { try await forEachTarget { try await self.adoptUnindexedPacks($0) } }
        do {
            let (tree, paths, parentIDs) = try await buildRoot()
            try Task.checkCancellation()
            try await forEachTarget { try await $0.writer.flush() }
            var outcomes: [BackupOutcome] = []
            for (i, target) in targets.enumerated() {
                if let error = target.failure.withLock({ $0 }) {
                    if !options.dryRun { try? await target.writer.flush() }
                    outcomes.append(BackupOutcome(location: target.repository.storage.location, result: nil, error: error))
                    continue
                }
                do {
                    let result = try await saveSnapshot(target, tree: tree, paths: paths, parentID: parentIDs[i], start: start)
                    outcomes.append(BackupOutcome(location: target.repository.storage.location, result: result, error: nil))
                } catch {
                    if targets.count == 1 || error is CancellationError { throw error }
                    target.fail(error)
                    outcomes.append(BackupOutcome(location: target.repository.storage.location, result: nil, error: target.failure.withLock { $0 }))
                }
            }
            return outcomes
        } catch {
            // Keep what was uploaded usable: index the packs written so far (best effort).
            if !options.dryRun { for t in targets { try? await t.writer.flush() } }
            if error is CancellationError { throw HavenError(.cancelled, "backup cancelled; uploaded data was kept and will be reused by the next backup") }
            throw error
        }
    }

    /// Writes the snapshot of a finished backup into one repository.
    func saveSnapshot(_ target: BackupTarget, tree: ID, paths: [String], parentID: ID?, start: Timestamp) async throws -> BackupResult {
        let writer = target.writer
        do {
            var snap = Snapshot(time: options.time ?? start, tree: tree, paths: paths)
            snap.parent = parentID
            snap.hostname = options.hostname
            snap.username = Host.user
            snap.uid = getuid()
            snap.gid = getgid()
            snap.tags = options.tags
            snap.excludes = options.excludes.map(\.text)
            snap.programVersion = "haven \(HavenVersion.string)"
            var summary = counts.withLock { $0 }
            let stats = writer.statistics
            summary.backupStart = start
            summary.backupEnd = Timestamp.now()
            summary.dataBlobs = stats.dataBlobs
            summary.treeBlobs = stats.treeBlobs
            summary.dataAdded = stats.bytesAdded
            summary.dataAddedPacked = stats.bytesStored
            snap.summary = summary
            var id: ID?
            if !options.dryRun { id = try await target.repository.saveSnapshot(snap) }
            snap.id = id
            return BackupResult(snapshotID: id, snapshot: snap, parent: parentID, summary: summary,
                                warnings: warnings.withLock { $0 }, dryRun: options.dryRun)
        }
    }

    /// Indexes packs that an interrupted backup uploaded but never named in an index.
    func adoptUnindexedPacks(_ target: BackupTarget) async throws {
        let repository = target.repository
        let stored = try await repository.storage.list(.pack)
        let known = repository.index.packIDs
        let orphans = stored.filter { f in ID(hex: f.name).map { !known.contains($0) } ?? false }
        guard !orphans.isEmpty else { return }
        let adopted = Locked<[IndexFile.Pack]>([])
        try await forEachConcurrently(orphans, limit: 4) { f in
            let id = ID(hex: f.name)!
            do {
                let blobs = try await repository.loadPackHeader(id, size: f.size)
                repository.index.add(pack: id, blobs: blobs)
                adopted.withLock { $0.append(IndexFile.Pack(id: id, blobs: blobs)) }
            } catch {
                // A damaged leftover is not used; prune removes it.
            }
        }
        target.writer.adopt(adopted.withLock { $0 })
    }

    /// Counts the files and bytes to back up, so progress can show an ETA. Directories are read once and
    /// their entries stat'ed relative to the open directory; entries readdir marks as directories are not
    /// stat'ed at all.
    func scan() {
        guard options.stdinFilename == nil else { return }
        var files = 0
        var bytes: UInt64 = 0
        var directories: [RawPath] = []
        func count(_ info: FileInfo, _ path: RawPath) {
            if info.isDirectory {
                directories.append(path)
            } else if info.isRegular, options.excludeLargerThan.map({ info.size <= $0 }) ?? true {
                files += 1
                bytes += info.size
            }
        }
        for root in options.paths.map({ RawPath(Self.clean($0.hasPrefix("/") ? $0 : Self.currentDirectory() + "/" + $0)) }) {
            if !excludes.isEmpty && excludes.matches(root.bytes) { continue }
            if case .success(let info) = FileInfo.lstat(root) { count(info, root) }
        }
        var lastReport = 0
        while let path = directories.popLast() {
            if Task.isCancelled { return }
            guard let dir = path.withCString({ opendir($0) }) else { continue }
            let fd = dirfd(dir)
            while let entry = readdir(dir) {
                let name = FileSystem.entryName(entry)
                if name == [46] || name == [46, 46] { continue }
                let child = path.appending(name)
                if !excludes.isEmpty && excludes.matches(child.bytes) { continue }
                switch Int32(entry.pointee.d_type) {
                case Int32(DT_DIR): directories.append(child)
                case Int32(DT_REG), Int32(DT_UNKNOWN):
                    if case .success(let info) = FileInfo.lstat(at: fd, name, path: child) { count(info, child) }
                default: break
                }
            }
            closedir(dir)
            if files - lastReport >= 1000 {
                lastReport = files
                progress.update { [files, bytes] in $0.totalFiles = files; $0.totalBytes = bytes }
            }
        }
        progress.update { [files, bytes] in $0.totalFiles = files; $0.totalBytes = bytes; $0.scanDone = true }
    }

    // MARK: The root of the snapshot

    /// A directory on the way to the backup targets (`/home` for `/home/me/docs`).
    final class PathTrie {
        var children: [[UInt8]: PathTrie] = [:]
        var isTarget = false
    }

    /// The root tree, the paths backed up, and each repository's parent snapshot.
    func buildRoot() async throws -> (ID, [String], [ID?]) {
        if let name = options.stdinFilename {
            let (tree, paths) = try await stdinRoot(name)
            return (tree, paths, targets.map { _ in nil })
        }
        var absolute: [String] = []
        for p in options.paths {
            guard !p.isEmpty else { continue }
            absolute.append(Self.clean(p.hasPrefix("/") ? p : Self.currentDirectory() + "/" + p))
        }
        absolute = Array(Set(absolute)).sorted()
        guard !absolute.isEmpty else { throw HavenError(.usage, "nothing to back up: give at least one path (or --stdin)") }
        var existing: [String] = []
        for p in absolute {
            if case .failure(let e) = FileInfo.lstat(RawPath(p)) {
                warn(p, "\(e.cause.map { "\($0)" } ?? e.message); skipped")
            } else {
                existing.append(p)
            }
        }
        guard !existing.isEmpty else {
            throw HavenError(.invalidArgument, "none of the paths to back up exist: \(absolute.joined(separator: ", "))")
        }
        // Drop targets nested inside other targets.
        existing = existing.filter { p in !existing.contains { q in q != p && (q == "/" || p.hasPrefix(q + "/")) } }
        let root = PathTrie()
        for p in existing {
            var node = root
            for comp in p.split(separator: "/") {
                let key = Array(comp.utf8)
                if node.children[key] == nil { node.children[key] = PathTrie() }
                node = node.children[key]!
            }
            node.isTarget = true
        }
        var parentIDs = [ID?](repeating: nil, count: targets.count)
        var parentTrees = [ParentTree?](repeating: nil, count: targets.count)
        for (i, t) in targets.enumerated() {
            do {
                guard let parentID = try await findParent(t.repository, paths: existing, explicit: i == 0 ? options.parent : nil) else { continue }
                parentIDs[i] = parentID
                let parent = try await t.repository.loadSnapshot(parentID)
                if let tree = try? await t.repository.loadTree(parent.tree) { parentTrees[i] = ParentTree(id: parent.tree, tree: tree) }
            } catch {
                if targets.count == 1 || error is CancellationError { throw error }
                t.fail(error)
            }
        }
        try checkAlive()
        if root.isTarget {
            // Backing up "/" itself.
            let (id, _) = try await archiveDirectory(RawPath("/"), parentTrees: parentTrees, device: nil)
            return (id, existing, parentIDs)
        }
        let id = try await archiveTrie(root, path: RawPath("/"), parentTrees: parentTrees)
        return (id, existing, parentIDs)
    }

    /// The parent snapshot in `repository`: `explicit`, or the latest of this host and paths.
    func findParent(_ repository: Repository, paths: [String], explicit: ID?) async throws -> ID? {
        if options.force { return nil }
        if let explicit { return explicit }
        let snapshots = try await repository.loadSnapshots(onError: { _ in })
        let wanted = paths.sorted()
        return snapshots.last(where: { $0.hostname == options.hostname && $0.paths.sorted() == wanted })?.id
    }

    static func currentDirectory() -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buf, buf.count) != nil else { return "/" }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Removes `.`, `..` and repeated slashes from an absolute path.
    static func clean(_ path: String) -> String {
        var out: [Substring] = []
        for comp in path.split(separator: "/") {
            if comp == "." { continue }
            if comp == ".." { if !out.isEmpty { out.removeLast() }; continue }
            out.append(comp)
        }
        return "/" + out.joined(separator: "/")
    }

    func archiveTrie(_ trie: PathTrie, path: RawPath, parentTrees: [ParentTree?]) async throws -> ID {
        var nodes: [Node] = []
        for (name, child) in trie.children.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            let childPath = path.appending(name)
            let parentNodes = parentTrees.map { $0?.tree.node(named: name) }
            if child.isTarget {
                if let n = try await archiveEntry(name: name, path: childPath, parentNodes: parentNodes, device: nil) { nodes.append(n) }
                continue
            }
            guard case .success(let info) = FileInfo.lstat(childPath) else {
                warn(childPath.description, "cannot stat; skipped")
                continue
            }
            var node = makeNode(name: name, info: info, path: childPath)
            let subParents = await subtrees(of: parentNodes)
            node.subtree = try await archiveTrie(child, path: childPath, parentTrees: subParents)
            nodes.append(node)
        }
        return try await saveTree(Tree(nodes: nodes))
    }

    /// A directory's tree in a repository's parent snapshot.
    struct ParentTree {
        var id: ID
        var tree: Tree
    }

    /// Each repository's parent tree below `parentNodes` (nil where a node is no directory or unreadable).
    func subtrees(of parentNodes: [Node?]) async -> [ParentTree?] {
        var out = [ParentTree?](repeating: nil, count: parentNodes.count)
        for (i, node) in parentNodes.enumerated() {
            guard let node, node.type == .dir, let sid = node.subtree, !targets[i].failed else { continue }
            if let tree = try? await targets[i].repository.loadTree(sid) { out[i] = ParentTree(id: sid, tree: tree) }
        }
        return out
    }

    /// The parents' tree ID when `nodes` are exactly the parent tree's nodes in every repository, so the
    /// tree need not be encoded, hashed or looked up again; nil otherwise.
    func unchangedTree(_ nodes: [Node], parents: [ParentTree?]) -> ID? {
        guard let first = parents[0] else { return nil }
        for (i, p) in parents.enumerated() where !targets[i].failed {
            guard let p, p.id == first.id, p.tree.nodes == nodes, targets[i].repository.index.has(p.id, .tree) else { return nil }
        }
        return first.id
    }

    func stdinRoot(_ name: String) async throws -> (ID, [String]) {
        guard !name.isEmpty, !name.contains("/") else {
            throw HavenError(.usage, "--stdin-filename must be a plain file name, not \"\(name)\"")
        }
        let now = Timestamp.now()
        var node = Node(name: Array(name.utf8), type: .file)
        node.mode = 0o644
        node.mtime = now; node.atime = now; node.ctime = now
        node.uid = getuid(); node.gid = getgid()
        node.user = names.user(node.uid); node.group = names.group(node.gid)
        let (content, size) = try await saveStream(descriptor: options.stdinDescriptor, path: "stdin", expectedSize: nil)
        node.content = content
        node.size = size
        counts.withLock { $0.filesNew += 1; $0.totalFilesProcessed += 1; $0.totalBytesProcessed += size }
        let tree = try await saveTree(Tree(nodes: [node]))
        return (tree, ["/" + name])
    }

    // MARK: Walking

    /// The node for an entry. `parent` is its node in the parent snapshot, if any: setxattr and
    /// removexattr change an inode's ctime, so an entry whose type, inode, device and ctime are those of
    /// its parent node still has that node's extended attributes, and they are not read again (a path
    /// walk and one or more system calls per entry).
    ///
    /// With `attributesLater`, a regular file's attributes are left for the caller to read from the open
    /// file (`pendingAttributes` says whether they must be read).
    func makeNode(name: [UInt8], info: FileInfo, path: RawPath, parent: Node? = nil, attributesLater: Bool = false) -> Node {
        var node = Node(name: name, type: info.nodeKind)
        node.mode = Node.goMode(fromUnix: info.mode)
        node.mtime = info.mtime
        node.atime = info.atime
        node.ctime = info.ctime
        node.uid = info.uid
        node.gid = info.gid
        node.user = names.user(info.uid)
        node.group = names.group(info.gid)
        node.inode = info.inode
        node.deviceID = info.device
        node.links = info.links
        if node.type == .file { node.size = info.size }
        if node.type == .dev || node.type == .chardev { node.device = info.rdev }
        if let parent, Self.attributesUnchanged(parent, info) {
            node.extendedAttributes = parent.extendedAttributes
        } else if !(attributesLater && info.isRegular) {
            node.extendedAttributes = ExtendedAttributes.read(path)
        }
        return node
    }

    /// Whether an entry still has the extended attributes its parent node recorded (see `makeNode`).
    static func attributesUnchanged(_ parent: Node, _ info: FileInfo) -> Bool {
        parent.type == info.nodeKind && parent.inode == info.inode && info.inode != 0
            && parent.deviceID == info.device && parent.ctime == info.ctime
    }

    /// Backs up one directory entry of any type. Returns nil when it is excluded or unreadable.
    /// `stat` is the entry's lstat result when the caller has it already.
    /// `directory` is an open descriptor of the entry's directory, when the caller holds one.
    func archiveEntry(name: [UInt8], path: RawPath, parentNodes: [Node?], device: UInt64?,
                      stat: Result<FileInfo, HavenError>? = nil, directory: Int32? = nil) async throws -> Node? {
        // Counters describe the backup as seen from the first repository's parent.
        let parentNode = parentNodes[0]
        try Task.checkCancellation()
        if !excludes.isEmpty && excludes.matches(path.bytes) { return nil }
        let info: FileInfo
        switch stat ?? FileInfo.lstat(path) {
        case .success(let i): info = i
        case .failure(let e):
            warn(path.description, "\(e.cause.map { "\($0)" } ?? e.message); skipped")
            return nil
        }
        if let limit = options.excludeLargerThan, info.isRegular, info.size > limit { return nil }
        var node = makeNode(name: name, info: info, path: path, parent: parentNode, attributesLater: true)
        switch node.type {
        case .file:
            let attributesPending = !(parentNode.map { Self.attributesUnchanged($0, info) } ?? false)
            do {
                try await archiveFile(&node, path: path, info: info, parentNodes: parentNodes,
                                      directory: directory.map { ($0, name) }, attributesPending: attributesPending)
            } catch let e as SourceReadError {
                warn(path.description, "\(e.message); skipped")
                return nil
            }
        case .dir:
            if let device, options.oneFileSystem, info.device != device {
                node.subtree = try await saveTree(Tree())
                return node
            }
            if excludedByMarker(path) { return nil }
            let subParents = await subtrees(of: parentNodes)
            let (subtree, _) = try await archiveDirectory(path, parentTrees: subParents, device: device ?? info.device)
            node.subtree = subtree
            counts.withLock { c in
                if parentNode?.type != .dir { c.dirsNew += 1 } else if parentNode?.subtree == subtree { c.dirsUnmodified += 1 } else { c.dirsChanged += 1 }
            }
        case .symlink:
            var buf = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = path.withCString { p in buf.withUnsafeMutableBufferPointer { b in b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { readlink(p, $0, b.count) } } }
            guard n >= 0 else {
                warn(path.description, "cannot read symlink: \(Errno(errno)); skipped")
                return nil
            }
            node.linkTarget = Array(buf[0..<n])
        default:
            break
        }
        return node
    }

    func excludedByMarker(_ dir: RawPath) -> Bool {
        for marker in options.excludeIfPresent {
            let p = dir.appending(Array(marker.file.utf8))
            guard case .success(let info) = FileInfo.lstat(p) else { continue }
            guard let header = marker.header else { return true }
            guard info.isRegular else { continue }
            let fd = p.withCString { open($0, O_RDONLY | O_CLOEXEC) }
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var buf = [UInt8](repeating: 0, count: header.count)
            let n = buf.withUnsafeMutableBytes { (try? FileSystem.preadFully(fd, $0, offset: 0, path: "")) ?? 0 }
            if n == header.count && buf == header { return true }
        }
        return false
    }

    /// Reads a directory and backs up its entries; returns the stored tree's ID.
    func archiveDirectory(_ path: RawPath, parentTrees: [ParentTree?], device: UInt64?) async throws -> (ID, Int) {
        var names: [[UInt8]] = []
        var stats: [Result<FileInfo, HavenError>] = []
        // The directory stays open while its entries are backed up, so files are opened relative to it
        // (no lookup of the whole path for each), unless many directories are open already: a deep tree
        // must not run out of descriptors.
        var kept: OpaquePointer?
        defer { if let kept { closedir(kept); openDirectories.subtract(1, ordering: .relaxed) } }
        let ok = path.withCString { p -> Bool in
            guard let dir = opendir(p) else { return false }
            var keep = false
            defer {
                if keep { kept = dir } else { closedir(dir) }
            }
            while let entry = readdir(dir) {
                let name = FileSystem.entryName(entry)
                if name == [46] || name == [46, 46] { continue }
                names.append(name)
            }
            names.sort { $0.lexicographicallyPrecedes($1) }
            // Stat the entries relative to the open directory: no path lookup from the root for each.
            let fd = dirfd(dir)
            stats.reserveCapacity(names.count)
            for name in names {
                stats.append(FileInfo.lstat(at: fd, name, path: path.appending(name)))
            }
            if openDirectories.add(1, ordering: .relaxed).newValue <= Self.maxOpenDirectories {
                keep = true
            } else {
                openDirectories.subtract(1, ordering: .relaxed)
            }
            return true
        }
        let directoryFD = kept.map { dirfd($0) }
        if !ok {
            warn(path.description, "cannot read directory: \(Errno(errno)); its contents are skipped")
        }
        let parentByName: [[[UInt8]: Node]] = parentTrees.map { tree in
            var byName: [[UInt8]: Node] = [:]
            if let tree = tree?.tree {
                byName.reserveCapacity(tree.nodes.count)
                for n in tree.nodes { byName[n.name] = n }
            }
            return byName
        }
        var results = [Node?](repeating: nil, count: names.count)
        // Entries run concurrently, a few at a time. A subdirectory gets its own task only while fewer than
        // `directorySlots` are being walked; otherwise it is walked right here. That bounds the number of
        // tasks (and the memory they hold) however wide and deep the tree is, without a parent ever waiting
        // for a slot its own children hold.
        try await withThrowingTaskGroup(of: (Int, Node?).self) { group in
            var inFlight = 0
            for (i, name) in names.enumerated() {
                let childPath = path.appending(name)
                let parentNodes = parentByName.map { $0[name] }
                let stat = stats[i]
                let isDirectory = (try? stat.get())?.isDirectory ?? false
                if isDirectory && !directorySlots.tryAcquire() {
                    results[i] = try await archiveEntry(name: name, path: childPath, parentNodes: parentNodes, device: device,
                                                        stat: stat, directory: directoryFD)
                    continue
                }
                if inFlight >= Self.entriesInFlight {
                    if let (j, n) = try await group.next() { results[j] = n }
                    inFlight -= 1
                }
                group.addTask {
                    defer { if isDirectory { self.directorySlots.release() } }
                    return (i, try await self.archiveEntry(name: name, path: childPath, parentNodes: parentNodes, device: device,
                                                           stat: stat, directory: directoryFD))
                }
                inFlight += 1
            }
            for try await (j, n) in group { results[j] = n }
        }
        progress.update { $0.dirsDone += 1 }
        let tree = Tree(nodes: results.compactMap { $0 })
        if let same = unchangedTree(tree.nodes, parents: parentTrees) { return (same, tree.nodes.count) }
        return (try await saveTree(tree), tree.nodes.count)
    }

    func saveTree(_ tree: Tree) async throws -> ID {
        let bytes = tree.encoded()
        let id = ID.hash(bytes)
        try await saveBlob(.tree, id: id, plaintext: bytes)
        return id
    }

    // MARK: Files

    /// The content recorded by the parents when the file is unchanged in every repository's parent (same
    /// size, times and inode, same content, all blobs present); nil when the file must be read.
    func unchangedContent(_ parentNodes: [Node?], _ info: FileInfo) -> [ID]? {
        guard let first = parentNodes[0] else { return nil }
        for (i, p) in parentNodes.enumerated() where !targets[i].failed {
            guard let old = p, old.type == .file, old.mtime == info.mtime, old.ctime == info.ctime,
                  old.size == info.size, old.inode == info.inode, old.content == first.content,
                  old.content.allSatisfy({ targets[i].repository.index.has($0, .data) }) else { return nil }
        }
        return first.content
    }

    /// `directory` (an open descriptor of the file's directory and its name there) saves a lookup of the
    /// whole path; with `attributesPending`, the extended attributes are read too, from the open file.
    func archiveFile(_ node: inout Node, path: RawPath, info: FileInfo, parentNodes: [Node?],
                     directory: (fd: Int32, name: [UInt8])? = nil, attributesPending: Bool = false) async throws {
        let parentNode = parentNodes[0]
        if let content = unchangedContent(parentNodes, info) {
            if attributesPending { node.extendedAttributes = ExtendedAttributes.read(path) }
            node.content = content
            counts.withLock { $0.filesUnmodified += 1; $0.totalFilesProcessed += 1; $0.totalBytesProcessed += info.size }
            progress.update { $0.filesDone += 1; $0.bytesDone += info.size }
            return
        }
        await fileSlots.acquire()
        defer { fileSlots.release() }
        let token = progress.begin(path.description)
        defer { progress.end(token) }
        var flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | haven_o_noatime()
        func openFile() -> Int32 {
            if let directory { return RawPath(directory.name).withCString { openat(directory.fd, $0, flags) } }
            return path.withCString { open($0, flags) }
        }
        var fd = openFile()
        if fd < 0 && errno == EPERM {
            flags &= ~haven_o_noatime()
            fd = openFile()
        }
        guard fd >= 0 else {
            throw SourceReadError(message: "cannot open: \(Errno(errno))")
        }
        defer { close(fd) }
        if attributesPending { node.extendedAttributes = ExtendedAttributes.read(descriptor: fd) }
        let (content, size) = try await saveStream(descriptor: fd, path: path.description, expectedSize: info.size)
        node.content = content
        node.size = size
        var after = stat()
        if fstat(fd, &after) == 0 {
            let now = FileInfo(after)
            if now.mtime != info.mtime || now.size != size {
                warn(path.description, "file changed while it was read; the snapshot holds the bytes read")
            }
        }
        counts.withLock { c in
            if parentNode?.type == .file { c.filesChanged += 1 } else { c.filesNew += 1 }
            c.totalFilesProcessed += 1
            c.totalBytesProcessed += size
        }
        progress.update { $0.filesDone += 1 }
    }

    /// A source file could not be read; the entry is skipped with a warning.
    struct SourceReadError: Error { var message: String }

    /// Reads a stream to its end, cutting chunks and saving new ones. Returns the content IDs and size.
    func saveStream(descriptor fd: Int32, path: String, expectedSize: UInt64?) async throws -> ([ID], UInt64) {
        // Most files are smaller than the minimum chunk size: read them in one exactly sized buffer, skip
        // the chunker (it cannot cut before the minimum), and allocate nothing else.
        var prefix: [UInt8] = []
        if let expectedSize, expectedSize < UInt64(Chunker.minSize) {
            let capacity = Int(expectedSize) + 1
            let data = try [UInt8](unsafeUninitializedCapacity: capacity) { buf, count in
                count = try Self.readFully(fd, UnsafeMutableRawBufferPointer(buf))
            }
            progress.update { $0.bytesDone += UInt64(data.count) }
            if data.count < capacity {
                // End of file reached: the whole file is one chunk (or empty).
                guard !data.isEmpty else { return ([], 0) }
                let id = ID.hash(data)
                try await saveBlob(.data, id: id, plaintext: data)
                return ([id], UInt64(data.count))
            }
            prefix = data  // the file grew while we read it: go on with the chunker
        }
        return try await chunkStream(descriptor: fd, prefix: prefix)
    }

    /// Fills `buffer` from `fd` until it is full or the stream ends; returns the bytes read.
    static func readFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        while done < buffer.count {
            let r = read(fd, buffer.baseAddress! + done, buffer.count - done)
            if r < 0 {
                if errno == EINTR { continue }
                throw SourceReadError(message: "cannot read: \(Errno(errno))")
            }
            if r == 0 { break }
            done += r
        }
        return done
    }

    /// Cuts a stream into chunks with the repository's chunker and saves them.
    /// `prefix` holds bytes already read from the stream.
    ///
    /// Each chunk is read straight into a buffer of its own from `chunkPool` (see `readChunk`), and is
    /// hashed, compressed and sealed where it lies. Chunks are hashed here, two at a time
    /// (`SHA256Lanes`), and each is saved in a task of its own once hashed. So a file holds at most
    /// three chunks: one being read, one waiting for a partner in the lanes, one being saved. Two
    /// saves in flight per file were no faster (files are read several at a time) and held 8 MB more.
    func chunkStream(descriptor fd: Int32, prefix: [UInt8]) async throws -> ([ID], UInt64) {
        var chunker = Chunker(polynomial: repository.config.chunkerPolynomial)
        var carry = prefix
        var atEnd = false
        var total: UInt64 = 0
        var ids: [ID?] = []
        let lanes = SHA256Lanes<Int, ChunkBuffer>()
        var hashed: [(ChunkBuffer, ID)] = []
        func collect(_ index: Int, _ chunk: ChunkBuffer, _ id: ID) {
            ids[index] = id
            hashed.append((chunk, id))
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var saving = false
            func saveHashed() async throws {
                for (chunk, id) in hashed {
                    if saving { try await group.next() }
                    group.addTask { try await self.saveBlob(.data, id: id, plaintext: chunk) }
                    saving = true
                }
                hashed.removeAll()
            }
            while !(atEnd && carry.isEmpty) {
                try Task.checkCancellation()
                let chunk = try chunkPool.take()
                var bytesRead = 0
                try chunk.fill { space in
                    try Self.readChunk(into: space, chunker: &chunker, carry: &carry, from: fd,
                                       atEnd: &atEnd, bytesRead: &bytesRead)
                }
                total += UInt64(bytesRead)
                progress.update { $0.bytesDone += UInt64(bytesRead) }
                if chunk.count == 0 { break }
                ids.append(nil)
                lanes.add(chunk, ids.count - 1, collect)
                try await saveHashed()
            }
            lanes.finish(collect)
            try await saveHashed()
            try await group.waitForAll()
        }
        return (ids.map { $0! }, total)
    }

    /// Bytes read at once once a chunk holds the chunker's minimum (before that, no cut can come, so
    /// the chunk's first read reaches the minimum in one go). Bytes read past a cut are copied into the
    /// next chunk: half of this, on average, per chunk.
    static let chunkReadSize = 256 << 10

    /// Puts the stream's next chunk at the start of `space` (at least the chunker's maximum chunk size):
    /// first `carry` (bytes read earlier that the chunker has not seen), then bytes read from `fd`, until
    /// the chunker cuts or the stream ends. Bytes read past the cut are left in `carry`; `atEnd` is set
    /// once the stream has ended. Returns the chunk's length (0 when nothing is left) and how many bytes
    /// of `space` were written; adds the bytes read from `fd` to `bytesRead`.
    static func readChunk(into space: UnsafeMutableRawBufferPointer, chunker: inout Chunker, carry: inout [UInt8],
                          from fd: Int32, atEnd: inout Bool, bytesRead: inout Int) throws -> (count: Int, touched: Int) {
        precondition(space.count >= chunker.maximumSize)
        // Carried bytes first. More than fit can only be a long prefix; the chunker cuts inside what fits.
        var filled = min(carry.count, space.count)
        if filled > 0 {
            carry.withUnsafeBytes { space.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<filled])) }
            carry.removeFirst(filled)
        }
        var scanned = 0
        while true {
            if scanned < filled {
                if let cut = chunker.nextBoundary(in: UnsafeRawBufferPointer(rebasing: space[scanned..<filled])) {
                    let end = scanned + cut
                    carry.insert(contentsOf: UnsafeRawBufferPointer(rebasing: space[end..<filled]), at: 0)
                    return (end, filled)
                }
                scanned = filled
            }
            // The chunker cuts at its maximum size at the latest, so there is room for more here, and
            // every carried byte is in the chunk.
            if atEnd { return (filled, filled) }
            let want = min(max(chunkReadSize, chunker.minimumSize - filled), space.count - filled)
            let n = try readFully(fd, UnsafeMutableRawBufferPointer(rebasing: space[filled..<(filled + want)]))
            bytesRead += n
            filled += n
            if n < want { atEnd = true }
        }
    }
}

/// Haven's version, shown by `haven version` and stored in snapshots.
public enum HavenVersion {
    public static let string = "0.1.0"
}
