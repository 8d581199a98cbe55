import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Restorer {
    /// Carries out `plan` into `plan.options.target`.
    ///
    /// Directories, files of several blobs (pre-sized, still empty), symlinks, hard links, FIFOs and device
    /// nodes are created first, in plan order. Then file contents are written pack by pack: each pack's
    /// needed blobs are read in a few large ranges, decrypted, and written at every position that uses them
    /// (all-zero blobs are left as holes). A file of one blob is created when that blob is written. Then,
    /// when `verify` is set, every written file is re-read and checked. Last come owners, extended
    /// attributes, modes and times, directories deepest first; without `verify`, a file whose last blob a
    /// task has just written gets them at once through its open descriptor.
    ///
    /// Everything is created relative to directory descriptors opened without following symlinks, so nothing
    /// outside the target is created, changed or followed, whatever the snapshot contains.
    ///
    /// - Parameter progress: called (from any task) whenever files or bytes are finished.
    /// - Returns: counts, and the errors (the plan's included) and warnings, each naming its entry.
    /// - Throws: when the target cannot be created or opened, when the disk is full (`.noSpace`), or when
    ///   the task is cancelled (`.cancelled`). Everything else is reported per entry in the result.
    public static func execute(_ plan: RestorePlan, repository: Repository,
                               progress: (@Sendable (RestoreProgress) -> Void)? = nil) async throws -> RestoreResult {
        let clock = ContinuousClock()
        let started = clock.now
        var result: RestoreResult
        if plan.options.dryRun {
            result = RestoreResult()
            result.dryRun = true
            result.filesRestored = plan.fileCount
            result.directoriesRestored = plan.directoryCount
            result.symlinksRestored = plan.symlinkCount
            result.hardLinksRestored = plan.hardLinkCount
            result.specialFilesRestored = plan.specialCount
            result.bytesWritten = plan.totalBytes
            result.errors = plan.errors
            result.warnings = plan.warnings
        } else {
            let rootFD = try openTarget(plan.options.target, create: true)
            defer { close(rootFD) }
            let run = RestoreRun(plan: plan, repository: repository, rootFD: rootFD, progress: progress)
            defer { run.dirs.closeAll() }
            try await run.run()
            result = run.result()
        }
        let elapsed = clock.now - started
        result.duration = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return result
    }

    /// Re-reads every regular file of `plan` in its target and checks its size and the SHA-256 of each chunk
    /// against the blob IDs. Returns one issue per file that is missing or differs.
    public static func verify(_ plan: RestorePlan, repository: Repository) async throws -> [RestoreIssue] {
        let rootFD = try openTarget(plan.options.target, create: false)
        defer { close(rootFD) }
        let dirs = RestoreDirectories(rootFD: rootFD, entries: plan.entries)
        defer { dirs.closeAll() }
        let files = plan.entries.indices.filter { plan.entries[$0].action == .file }
        return try await verifyFiles(files, entries: plan.entries, dirs: dirs, index: repository.index,
                                     concurrency: plan.options.packConcurrency).map(\.1)
    }

    static func verifyFiles(_ files: [Int], entries: [RestorePlan.Entry], dirs: RestoreDirectories, index: MasterIndex,
                            concurrency: Int) async throws -> [(Int, RestoreIssue)] {
        let found = Locked<[(Int, RestoreIssue)]>([])
        try await forEachConcurrently(files, limit: max(1, concurrency)) { i in
            if Task.isCancelled { throw HavenError(.cancelled, "restore verification cancelled") }
            let e = entries[i]
            let problem: String?
            do {
                let (fd, err) = try dirs.with(e.parent) { pfd in
                    let fd = RestoreFS.withCString(e.name) { openat(pfd, $0, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) }
                    return (fd, errno)
                }
                if fd < 0 {
                    problem = "verification failed: cannot open the restored file: \(Errno(err))"
                } else {
                    defer { close(fd) }
                    problem = RestoreRun.compare(fd, e, index: index).map { "verification failed: \($0)" }
                }
            } catch let error as HavenError {
                problem = "verification failed: \(error.message)"
            }
            if let problem { found.withLock { $0.append((i, RestoreIssue(path: e.path, message: problem))) } }
        }
        return found.withLock { $0 }.sorted { $0.0 < $1.0 }
    }

    static func openTarget(_ target: String, create: Bool) throws -> Int32 {
        guard !target.isEmpty else { throw HavenError(.invalidArgument, "no restore target given") }
        if create {
            do {
                try FileSystem.makeDirectories(target, mode: 0o700)
            } catch let e as HavenError {
                throw HavenError(e.code == .noSpace ? .noSpace : .io, "cannot create the restore target \(target): \(e.description)")
            }
        }
        let fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            let err = errno
            throw HavenError(err == ENOENT ? .notFound : .io, "cannot open the restore target \(target)", cause: Errno(err))
        }
        return fd
    }
}

/// One execution of a plan. Phases 1 (create) and 3 (metadata) run in one task and own `states`;
/// phase 2 (contents) runs packs concurrently and only reads `states`, sharing the rest through `shared`.
final class RestoreRun: @unchecked Sendable {
    enum State: Equatable {
        case pending
        /// Created by this run.
        case created
        /// Already there and kept: an existing directory, or an entry the overwrite policy found unchanged.
        /// Its metadata is restored.
        case kept
        /// Left untouched because of the overwrite policy or a warning.
        case skipped
        /// Not created because its directory is not available.
        case blocked
        case failed
    }

    struct BlobUse: Sendable {
        var entry: Int
        var offset: UInt64
    }

    struct PackBlob: Sendable {
        var blob: PackedBlob
        var uses: [BlobUse]
    }

    struct PackJob: Sendable {
        var pack: ID
        var blobs: [PackBlob]
    }

    struct Shared: Sendable {
        var errors: [RestoreIssue] = []
        var warnings: [RestoreIssue] = []
        /// Files whose content could not be written completely (or did not verify).
        var failed: Set<Int> = []
        /// Blob uses still to be written, by entry (0 for entries with no content to write).
        var remaining: [Int32] = []
        /// Entries whose metadata was set as their last content was written (phase 3 skips them).
        var metadataDone: [Bool] = []
        var progress = RestoreProgress()
    }

    let plan: RestorePlan
    let entries: [RestorePlan.Entry]
    let options: RestoreOptions
    let repository: Repository
    let dirs: RestoreDirectories
    let progressCallback: (@Sendable (RestoreProgress) -> Void)?
    let shared = Locked(Shared())
    let isRoot = geteuid() == 0

    var states: [State]
    /// Inode of each hard-link primary file as created or kept, to recognise existing links.
    var inodes: [Int: UInt64] = [:]
    /// Files that phase 1 only reserves: phase 2 creates each when its one blob is written, then sets its
    /// metadata through the same descriptor, so a small file costs one open instead of three and no
    /// ftruncate, fstatat or path lookups. Hard-link targets are created in phase 1 (links need them).
    let createdWithContent: [Bool]
    /// Whether a file's metadata is set as soon as its content is complete. Not with verification, which
    /// reads the files afterwards (and would change their access times).
    let earlyMetadata: Bool
    /// Directory descriptor caches for content writers, one taken per pack job, so that creating and
    /// opening files in phase 2 does not wait on one lock.
    let writerDirectories = Locked<[RestoreDirectories]>([])

    init(plan: RestorePlan, repository: Repository, rootFD: Int32, progress: (@Sendable (RestoreProgress) -> Void)?) {
        self.plan = plan
        entries = plan.entries
        options = plan.options
        self.repository = repository
        dirs = RestoreDirectories(rootFD: rootFD, entries: plan.entries)
        progressCallback = progress
        states = Array(repeating: .pending, count: plan.entries.count)
        createdWithContent = plan.entries.map { e in
            e.action == .file && e.size > 0 && e.node.content.count == 1 && !RestorePlan.mayBeHardLinked(e.node)
        }
        earlyMetadata = !plan.options.verify
        shared.withLock { s in
            s.metadataDone = Array(repeating: false, count: plan.entries.count)
            s.errors = plan.errors
            s.warnings = plan.warnings
            s.progress.filesTotal = plan.fileCount
            s.progress.bytesTotal = plan.totalBytes
            s.progress.errors = plan.errors.count
        }
    }

    func run() async throws {
        try createEntries()
        try await writeContents()
        if options.verify {
            let files = entries.indices.filter { entries[$0].action == .file && states[$0] == .created }
            let failed = shared.withLock { $0.failed }
            let issues = try await Restorer.verifyFiles(files.filter { !failed.contains($0) }, entries: entries, dirs: dirs,
                                                        index: repository.index, concurrency: options.packConcurrency)
            for (i, issue) in issues { fail(i, issue.message) }
        }
        try await applyMetadata()
    }

    // MARK: Reporting

    func addError(_ path: [UInt8], _ message: String) {
        shared.withLock {
            $0.errors.append(RestoreIssue(path: path, message: message))
            $0.progress.errors += 1
        }
    }

    func addWarning(_ path: [UInt8], _ message: String) {
        shared.withLock { $0.warnings.append(RestoreIssue(path: path, message: message)) }
    }

    /// Marks a file as failed, reporting the first reason only.
    func fail(_ entry: Int, _ message: String) {
        let path = entries[entry].path
        shared.withLock {
            if $0.failed.insert(entry).inserted {
                $0.errors.append(RestoreIssue(path: path, message: message))
                $0.progress.errors += 1
            }
        }
    }

    func isFailed(_ entry: Int) -> Bool { shared.withLock { $0.failed.contains(entry) } }

    func report() {
        guard let progressCallback else { return }
        progressCallback(shared.withLock { $0.progress })
    }

    static func checkCancelled() throws {
        if Task.isCancelled { throw HavenError(.cancelled, "restore cancelled") }
    }

    static func isFatal(_ e: HavenError) -> Bool { e.code == .noSpace || e.code == .cancelled }

    static func byPath(_ issues: [RestoreIssue]) -> [RestoreIssue] {
        issues.enumerated().sorted { a, b in
            a.element.path == b.element.path ? a.offset < b.offset : a.element.path.lexicographicallyPrecedes(b.element.path)
        }.map(\.element)
    }

    func result() -> RestoreResult {
        var r = RestoreResult()
        let s = shared.withLock { $0 }
        for (i, e) in entries.enumerated() {
            switch states[i] {
            case .created:
                switch e.action {
                case .directory: r.directoriesRestored += 1
                case .file:
                    if !s.failed.contains(i) {
                        r.filesRestored += 1
                        r.bytesWritten += e.size
                    }
                case .hardLink: r.hardLinksRestored += 1
                case .symlink: r.symlinksRestored += 1
                case .fifo, .device: r.specialFilesRestored += 1
                }
            case .kept:
                if e.action == .directory { r.directoriesRestored += 1 } else { r.entriesSkipped += 1 }
            case .skipped:
                r.entriesSkipped += 1
            case .pending, .blocked, .failed:
                break
            }
        }
        // Entries are created on two threads, so issues arrive in no fixed order: report them by path.
        r.errors = Self.byPath(s.errors)
        r.warnings = Self.byPath(s.warnings)
        return r
    }

    // MARK: Phase 1: create entries

    enum Slot { case create, keep(UInt64?), skip }

    /// Creates the entries in three passes: directories in plan order (parents first), then files, symlinks
    /// and special files on two threads (each needs only its directory), then hard links (each needs its
    /// primary file).
    func createEntries() throws {
        var leaves: [Int] = [], links: [Int] = []
        for i in entries.indices {
            switch entries[i].action {
            case .directory: try createInOrder(i, dirs: dirs)
            case .hardLink: links.append(i)
            default: leaves.append(i)
            }
        }
        try createConcurrently(leaves)
        for i in links { try createInOrder(i, dirs: dirs) }
        // Files that get no content writes are finished now.
        shared.withLock { s in
            for (i, e) in entries.enumerated() where e.action == .file {
                if states[i] != .created || e.size == 0 || e.node.content.isEmpty {
                    s.progress.filesDone += 1
                    s.progress.bytesDone += e.size
                }
            }
        }
        report()
    }

    /// Creates entry `i` once its directory is there, and records its state.
    private func createInOrder(_ i: Int, dirs: RestoreDirectories) throws {
        let (state, inode) = try createChecked(i, dirs: dirs, parentState: entries[i].parent.map { states[$0] })
        states[i] = state
        if let inode { inodes[i] = inode }
    }

    /// The state entry `i` ends in (created, or why not) and the inode of a hard-link primary. Throws only
    /// what stops the whole restore.
    private func createChecked(_ i: Int, dirs: RestoreDirectories, parentState: State?) throws -> (State, UInt64?) {
        try Self.checkCancelled()
        if let parentState, parentState != .created && parentState != .kept { return (.blocked, nil) }
        do {
            return try createEntry(i, dirs: dirs, inFreshDirectory: parentState == .created)
        } catch let err as HavenError {
            if Self.isFatal(err) { throw err }
            addError(entries[i].path, err.message)
            return (.failed, nil)
        }
    }

    /// Creates `indices` (none of them a directory or hard link) on two threads, each with its own cache
    /// of directory descriptors. Small batches are not worth a thread.
    private func createConcurrently(_ indices: [Int]) throws {
        let workers = indices.count >= 256 ? 2 : 1
        if workers == 1 {
            for i in indices { try createInOrder(i, dirs: dirs) }
            return
        }
        let parentStates = indices.map { entries[$0].parent.map { states[$0] } }
        let results = Locked<[(Int, State)]>([])
        let foundInodes = Locked<[Int: UInt64]>([:])
        let fatal = Locked<(any Error)?>(nil)
        let slice = (indices.count + workers - 1) / workers
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let own = w == 0 ? dirs : dirs.sibling()
            var done: [(Int, State)] = []
            var inodesSeen: [Int: UInt64] = [:]
            done.reserveCapacity(slice)
            for k in (w * slice)..<min(indices.count, (w + 1) * slice) {
                if fatal.withLock({ $0 != nil }) { break }
                do {
                    let i = indices[k]
                    let (state, inode) = try createChecked(i, dirs: own, parentState: parentStates[k])
                    done.append((i, state))
                    if let inode { inodesSeen[i] = inode }
                } catch {
                    fatal.withLock { $0 = $0 ?? error }
                    break
                }
            }
            results.withLock { $0 += done }
            foundInodes.withLock { $0.merge(inodesSeen) { a, _ in a } }
        }
        for (i, state) in results.withLock({ $0 }) { states[i] = state }
        inodes.merge(foundInodes.withLock { $0 }) { a, _ in a }
        if let error = fatal.withLock({ $0 }) { throw error }
    }

    /// Creates entry `i`; returns its state and, for a file that other entries are hard links to, its
    /// inode. In a directory this run created, nothing can be in the way, so the overwrite policy is not
    /// consulted (O_EXCL and friends would still refuse to replace anything).
    func createEntry(_ i: Int, dirs: RestoreDirectories, inFreshDirectory: Bool) throws -> (State, UInt64?) {
        let e = entries[i]
        switch e.action {
        case .hardLink(let primary):
            switch states[primary] {
            case .created, .kept: break
            case .skipped: return (.skipped, nil)
            default:
                throw HavenError(.io, "hard link target \(RestorePath.display(entries[primary].path)) was not restored; link not created")
            }
            return try dirs.with(e.parent, entries[primary].parent) { pfd, primaryParent in
                if !inFreshDirectory {
                    switch try prepare(i, pfd) {
                    case .keep: return (.kept, nil)
                    case .skip: return (.skipped, nil)
                    case .create: break
                    }
                }
                let rc = RestoreFS.withCString(entries[primary].name) { from in
                    RestoreFS.withCString(e.name) { to in linkat(primaryParent, from, pfd, to, 0) }
                }
                guard rc == 0 else { throw RestoreFS.failure("create the hard link to \(RestorePath.display(entries[primary].path))", e.path) }
                return (.created, nil)
            }
        case .device where !isRoot:
            addWarning(e.path, "device node not restored: creating device nodes needs root")
            return (.skipped, nil)
        default:
            return try dirs.with(e.parent) { pfd in
                if !inFreshDirectory {
                    switch try prepare(i, pfd) {
                    case .keep(let inode): return (.kept, inode)
                    case .skip: return (.skipped, nil)
                    case .create: break
                    }
                }
                return try create(i, pfd)
            }
        }
    }

    private func create(_ i: Int, _ pfd: Int32) throws -> (State, UInt64?) {
        let e = entries[i]
        var inode: UInt64?
        switch e.action {
        case .directory:
            let rc = RestoreFS.withCString(e.name) { mkdirat(pfd, $0, 0o700) }
            guard rc == 0 else { throw RestoreFS.failure("create the directory", e.path) }
        case .file:
            if createdWithContent[i] { return (.created, nil) }  // by phase 2, with its content
            let fd = RestoreFS.withCString(e.name) { openat(pfd, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
            guard fd >= 0 else { throw RestoreFS.failure("create the file", e.path) }
            defer { close(fd) }
            if e.size > 0 && ftruncate(fd, off_t(e.size)) != 0 {
                throw RestoreFS.failure("set the file's size to \(e.size) bytes", e.path)
            }
            var st = stat()
            if RestorePlan.mayBeHardLinked(e.node) && fstat(fd, &st) == 0 { inode = UInt64(st.st_ino) }
        case .symlink:
            let rc = RestoreFS.withCString(e.node.linkTarget) { target in
                RestoreFS.withCString(e.name) { symlinkat(target, pfd, $0) }
            }
            guard rc == 0 else { throw RestoreFS.failure("create the symlink", e.path) }
        case .fifo:
            let rc = RestoreFS.withCString(e.name) { mknodat(pfd, $0, S_IFIFO | 0o600, 0) }
            guard rc == 0 else { throw RestoreFS.failure("create the FIFO", e.path) }
        case .device:
            let kind = e.node.type == .chardev ? S_IFCHR : S_IFBLK
            let rc = RestoreFS.withCString(e.name) { mknodat(pfd, $0, kind | 0o600, dev_t(e.node.device)) }
            guard rc == 0 else {
                let err = errno
                if err == EPERM {
                    addWarning(e.path, "device node not restored: the system refused to create it (\(Errno(err)))")
                    return (.skipped, nil)
                }
                throw RestoreFS.failure("create the device node", e.path, err)
            }
        case .hardLink:
            preconditionFailure("hard links are created by createEntry")
        }
        return (.created, inode)
    }

    /// Looks at what exists at the entry's name and applies the overwrite policy: removes a replaceable
    /// entry, or says to keep (with the inode of a kept hard-link primary) or skip it.
    private func prepare(_ i: Int, _ pfd: Int32) throws -> Slot {
        let e = entries[i]
        guard let st = RestoreFS.lstat(pfd, e.name) else {
            let err = errno
            if err == ENOENT { return .create }
            throw RestoreFS.failure("inspect the existing entry", e.path, err)
        }
        let type = RestoreFS.fileType(st)
        if e.action == .directory {
            if type == UInt32(S_IFDIR) { return .keep(nil) }
            if options.overwrite == .never {
                addWarning(e.path, "directory not restored: something else exists with this name and the overwrite policy is \"never\"")
                return .skip
            }
            try remove(e, pfd)
            return .create
        }
        if type == UInt32(S_IFDIR) {
            throw HavenError(.io, "a directory exists with this name; it is not replaced, so the entry was not restored")
        }
        switch options.overwrite {
        case .never:
            return .skip
        case .always:
            break
        case .ifNewer:
            if !(e.node.mtime > RestoreFS.modificationTime(st)) {
                return .skip
            }
        case .ifChanged:
            if unchanged(i, pfd, st) {
                return .keep(e.action == .file && RestorePlan.mayBeHardLinked(e.node) ? UInt64(st.st_ino) : nil)
            }
        }
        try remove(e, pfd)
        return .create
    }

    private func remove(_ e: RestorePlan.Entry, _ pfd: Int32) throws {
        let rc = RestoreFS.withCString(e.name) { unlinkat(pfd, $0, 0) }
        guard rc == 0 else { throw RestoreFS.failure("remove the existing entry", e.path) }
    }

    /// Whether the existing entry already equals the one in the snapshot (for `ifChanged`).
    private func unchanged(_ i: Int, _ pfd: Int32, _ st: stat) -> Bool {
        let e = entries[i]
        let type = RestoreFS.fileType(st)
        switch e.action {
        case .file:
            guard type == UInt32(S_IFREG), UInt64(st.st_size) == e.size else { return false }
            let fd = RestoreFS.withCString(e.name) { openat(pfd, $0, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) }
            guard fd >= 0 else { return false }
            defer { close(fd) }
            return Self.compare(fd, e, index: repository.index) == nil
        case .hardLink(let primary):
            return type == UInt32(S_IFREG) && inodes[primary] == UInt64(st.st_ino)
        case .symlink:
            return type == UInt32(S_IFLNK) && RestoreFS.readLink(pfd, e.name) == e.node.linkTarget
        case .fifo:
            return type == UInt32(S_IFIFO)
        case .device:
            let want = UInt32(e.node.type == .chardev ? S_IFCHR : S_IFBLK)
            return type == want && UInt64(st.st_rdev) == e.node.device
        case .directory:
            return type == UInt32(S_IFDIR)
        }
    }

    // MARK: Phase 2: file contents

    /// One use of a blob by a file, as planned: all of a restore's uses sit in one array sorted by pack
    /// and offset, and each pack's run of it becomes a `PackJob` only when that pack is restored.
    struct PlannedUse: Sendable {
        /// The pack's position in the sorted pack list.
        var pack: UInt32
        var blob: PackedBlob
        var use: BlobUse
    }

    func writeContents() async throws {
        var numbering = PackNumbering()
        var planned: [PlannedUse] = []
        var remaining = [Int32](repeating: 0, count: entries.count)
        for (i, e) in entries.enumerated() where e.action == .file && states[i] == .created && e.size > 0 && !e.node.content.isEmpty {
            let before = planned.count
            var offset: UInt64 = 0
            var missing: ID?
            for id in e.node.content {
                guard let loc = repository.index.lookup(id, .data) else {
                    missing = id
                    break
                }
                planned.append(PlannedUse(pack: numbering.number(for: loc.pack).0, blob: loc.blob, use: BlobUse(entry: i, offset: offset)))
                offset += UInt64(loc.blob.dataLength)
            }
            if let missing {
                planned.removeLast(planned.count - before)
                fail(i, "content blob \(missing.short) is not in the repository index")
                shared.withLock { $0.progress.filesDone += 1; $0.progress.bytesDone += e.size }
                continue
            }
            remaining[i] = Int32(planned.count - before)
        }
        // Packs in ID order, each pack's blobs by offset, each blob's uses in file order.
        let (sortedPacks, rank) = numbering.sorted()
        numbering = PackNumbering()
        for k in planned.indices { planned[k].pack = rank[Int(planned[k].pack)] }
        planned.sort { a, b in
            if a.pack != b.pack { return a.pack < b.pack }
            if a.blob.offset != b.blob.offset { return a.blob.offset < b.blob.offset }
            if a.use.entry != b.use.entry { return a.use.entry < b.use.entry }
            return a.use.offset < b.use.offset
        }
        var runs: [Range<Int>] = []
        var start = 0
        for k in planned.indices where k + 1 == planned.count || planned[k + 1].pack != planned[k].pack {
            runs.append(start..<(k + 1))
            start = k + 1
        }
        shared.withLock { $0.remaining = remaining }
        remaining = []
        let uses = planned
        planned = []
        // Each read range is a job of its own, so a few large packs still keep every worker busy. Where a
        // request costs a round trip and a fee (an object store), the ranges of one pack that lie close
        // together are one job instead, read through one reader: one request for the pack. That is done
        // when there are still jobs enough for every worker (a restore of a few packs keeps its ranges
        // apart: few requests either way, and a pack's ranges are then restored side by side).
        let ranges = runs.map { readRuns($0, of: uses) }
        var jobs = ranges.flatMap { $0.map { [$0] } }
        if repository.storage.properties.streamedReads {
            let shared = ranges.flatMap { sharedReads($0, of: uses) }
            if shared.count >= 4 * max(1, options.packConcurrency) { jobs = shared }
        }
        try await forEachConcurrently(jobs, limit: max(1, options.packConcurrency)) { runs in
            let job = runs.map { run in
                var blobs: [PackBlob] = []
                for u in uses[run] {
                    if let last = blobs.last, last.blob.offset == u.blob.offset, last.blob.id == u.blob.id {
                        blobs[blobs.count - 1].uses.append(u.use)
                    } else {
                        blobs.append(PackBlob(blob: u.blob, uses: [u.use]))
                    }
                }
                return PackJob(pack: sortedPacks[Int(uses[run.lowerBound].pack)], blobs: blobs)
            }
            let dirs = self.writerDirectories.withLock { $0.popLast() } ?? self.dirs.sibling()
            defer { self.writerDirectories.withLock { $0.append(dirs) } }
            try await self.restorePack(job, dirs: dirs)
        }
        for d in writerDirectories.withLock({ pool in defer { pool = [] }; return pool }) { d.closeAll() }
    }

    /// Splits the uses of one pack (sorted by offset) into read ranges: a new range starts where the gap to
    /// the previous blob exceeds `maxReadGap` or the range would exceed `maxReadSize`. The uses of one blob
    /// stay together.
    func readRuns(_ run: Range<Int>, of uses: [PlannedUse]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var first = run.lowerBound
        var start = 0, end = 0
        for k in run {
            let s = Int(uses[k].blob.offset), t = s + Int(uses[k].blob.length)
            if k > first && s != Int(uses[k - 1].blob.offset) && (s - end > options.maxReadGap || t - start > options.maxReadSize) {
                out.append(first..<k)
                first = k
            }
            if k == first {
                start = s
                end = t
            } else {
                end = max(end, t)
            }
        }
        if first < run.upperBound { out.append(first..<run.upperBound) }
        return out
    }

    /// Groups the read ranges of one pack (see `readRuns`, in pack order) into runs of ranges read
    /// through one reader: a range joins the previous group unless the gap between them exceeds
    /// `maxReadGap` (those bytes are read and dropped).
    func sharedReads(_ ranges: [Range<Int>], of uses: [PlannedUse]) -> [[Range<Int>]] {
        let spans = ranges.map { r in
            Int(uses[r.lowerBound].blob.offset)..<uses[r].map { Int($0.blob.offset) + Int($0.blob.length) }.max()!
        }
        return runsOfNearbySpans(spans, maxGap: options.maxReadGap).map { Array(ranges[$0]) }
    }

    /// Restores the blobs of read ranges of one pack (see `readRuns`): one range is one `load`; several
    /// (see `sharedReads`) are read in turn through one reader. A range that cannot be read fails the
    /// files its blobs belong to, and a reader that failed is not used again (the ranges after it are
    /// loaded one by one).
    func restorePack(_ job: [PackJob], dirs: RestoreDirectories) async throws {
        var files = OpenFiles(dirs: dirs)
        defer { files.closeAll() }
        func span(_ j: PackJob) -> Range<Int> {
            Int(j.blobs[0].blob.offset)..<j.blobs.map { Int($0.blob.offset) + Int($0.blob.length) }.max()!
        }
        func failed(_ j: PackJob, _ error: any Error) throws {
            if let e = error as? HavenError, e.code == .cancelled { throw e }
            let message = (error as? HavenError)?.description ?? "\(error)"
            for b in j.blobs { failUses(b, "cannot read pack \(j.pack.short): \(message)") }
        }
        func load(_ j: PackJob) async throws {
            try Self.checkCancelled()
            let range = span(j)
            let bytes: [UInt8]
            do {
                bytes = try await repository.storage.load(Handle(.pack, j.pack), offset: range.lowerBound, length: range.count)
                guard bytes.count == range.count else {
                    throw HavenError(.corrupt, "pack \(j.pack.short) is shorter than the index says")
                }
            } catch {
                return try failed(j, error)
            }
            try restoreBlobs(j, bytes, at: range.lowerBound, &files)
        }
        guard job.count > 1 else { return try await load(job[0]) }
        let first = span(job[0]).lowerBound
        let whole = first..<span(job[job.count - 1]).upperBound
        var done = 0
        do {
            try await repository.storage.withReader(Handle(.pack, job[0].pack), offset: first, length: whole.count) { reader in
                var at = first
                for j in job {
                    try Self.checkCancelled()
                    let range = span(j)
                    if range.lowerBound > at { _ = try await reader.read(range.lowerBound - at) }
                    let bytes = try await reader.read(range.count)
                    at = range.upperBound
                    try restoreBlobs(j, bytes, at: range.lowerBound, &files)
                    done += 1
                }
            }
        } catch let e as HavenError where Self.isFatal(e) || e.code == .cancelled {
            throw e
        } catch {
            guard done < job.count else { return }
            try failed(job[done], error)
            for j in job[(done + 1)...] { try await load(j) }
        }
    }

    /// Restores the blobs of `job`, whose bytes from pack offset `start` on are `bytes`.
    private func restoreBlobs(_ job: PackJob, _ bytes: [UInt8], at start: Int, _ files: inout OpenFiles) throws {
        let range = job.blobs
        try bytes.withUnsafeBytes { raw in
            try repository.openBlobs(range.map(\.blob), in: raw, at: start, pack: job.pack) { i, result in
                try Self.checkCancelled()
                let b = range[i]
                switch result {
                case .failure(let damage):
                    failUses(b, damage.description)
                case .success(let plain):
                    let zero = plain.withUnsafeBytes { RestoreFS.isAllZero($0) }
                    for use in b.uses {
                        // An all-zero blob is left as a hole in a pre-sized file; a file created here
                        // (its only blob) still has to be created and sized.
                        if (!zero || createdWithContent[use.entry]) && !isFailed(use.entry) {
                            do {
                                try write(plain, zero: zero, use, &files)
                            } catch let err as HavenError {
                                if Self.isFatal(err) { throw err }
                                fail(use.entry, err.message)
                                files.close(use.entry)
                            }
                        }
                        if finish(use.entry, bytes: UInt64(plain.count)) { try completed(use.entry, &files) }
                    }
                }
            }
        }
    }

    private func write(_ plain: [UInt8], zero: Bool, _ use: BlobUse, _ files: inout OpenFiles) throws {
        let e = entries[use.entry]
        let fd = try files.descriptor(for: use.entry, in: self)
        if zero {
            if ftruncate(fd, off_t(e.size)) != 0 { throw RestoreFS.failure("set the file's size to \(e.size) bytes", e.path) }
        } else if let err = plain.withUnsafeBytes({ RestoreFS.pwriteFully(fd, $0, offset: use.offset) }) {
            throw RestoreFS.failure("write the file", e.path, err)
        }
    }

    /// A file's last blob was written (or failed): when this task holds the file open, its metadata is set
    /// through that descriptor now instead of by path in phase 3, and the file is closed.
    private func completed(_ entry: Int, _ files: inout OpenFiles) throws {
        guard earlyMetadata, let fd = files.fds[entry] else { return }
        defer { files.close(entry) }
        let e = entries[entry]
        // Extended attributes are set by path in phase 3 (Linux has fsetxattr, but the Glibc module does
        // not export it); they are rare on regular files.
        guard !isFailed(entry), e.node.extendedAttributes.isEmpty else { return }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return }  // phase 3 will try by path
        do {
            try setMetadata(e, current: st, owner: { fchown(fd, $0, $1) }, mode: { fchmod(fd, $0) },
                            times: { futimens(fd, $0) })
        } catch let err as HavenError {
            if Self.isFatal(err) { throw err }
            addError(e.path, err.message)
        }
        shared.withLock { $0.metadataDone[entry] = true }
    }

    private func failUses(_ b: PackBlob, _ message: String) {
        for use in b.uses {
            fail(use.entry, message)
            finish(use.entry, bytes: UInt64(b.blob.dataLength))
        }
    }

    /// Counts one blob use of `entry` as done; true when it was the file's last.
    @discardableResult
    private func finish(_ entry: Int, bytes: UInt64) -> Bool {
        let last = shared.withLock { s -> Bool in
            s.progress.bytesDone += bytes
            if entry < s.remaining.count, s.remaining[entry] > 0 {
                s.remaining[entry] -= 1
                if s.remaining[entry] == 0 {
                    s.progress.filesDone += 1
                    return true
                }
            }
            return false
        }
        report()
        return last
    }

    /// A few files open for writing, per pack task; the least recently opened is closed first.
    struct OpenFiles {
        /// This task's directory descriptors.
        let dirs: RestoreDirectories
        var fds: [Int: Int32] = [:]
        var order: [Int] = []
        let capacity = 16

        init(dirs: RestoreDirectories) { self.dirs = dirs }

        mutating func descriptor(for entry: Int, in run: RestoreRun) throws -> Int32 {
            if let fd = fds[entry] { return fd }
            if fds.count >= capacity, let oldest = order.first { close(oldest) }
            let e = run.entries[entry]
            if run.createdWithContent[entry] {
                // Created here: O_EXCL guarantees a new regular file, so it needs no fstat. Permission bits
                // are given at creation (setuid, setgid and sticky only after chown, in `setMetadata`), so
                // the usual file needs no chmod either.
                let perm = e.node.unixPermissions
                let mode = perm & 0o7000 == 0 ? mode_t(perm) : 0o600
                let (fd, err) = try dirs.with(e.parent) { pfd in
                    let fd = RestoreFS.withCString(e.name) { openat(pfd, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode) }
                    return (fd, errno)
                }
                guard fd >= 0 else { throw RestoreFS.failure("create the file", e.path, err) }
                fds[entry] = fd
                order.append(entry)
                return fd
            }
            let (fd, err) = try dirs.with(e.parent) { pfd in
                let fd = RestoreFS.withCString(e.name) { openat(pfd, $0, O_WRONLY | O_NOFOLLOW | O_CLOEXEC) }
                return (fd, errno)
            }
            guard fd >= 0 else { throw RestoreFS.failure("open the file for writing", e.path, err) }
            var st = stat()
            guard fstat(fd, &st) == 0, RestoreFS.fileType(st) == UInt32(S_IFREG) else {
                Glibc.close(fd)
                throw HavenError(.io, "the restored file was replaced by something else during the restore")
            }
            fds[entry] = fd
            order.append(entry)
            return fd
        }

        mutating func close(_ entry: Int) {
            guard let fd = fds.removeValue(forKey: entry) else { return }
            order.removeAll { $0 == entry }
            Glibc.close(fd)
        }

        mutating func closeAll() {
            for fd in fds.values { Glibc.close(fd) }
            fds = [:]
            order = []
        }
    }

    /// Compares an open file with the entry's blobs; nil when equal, else what differs.
    static func compare(_ fd: Int32, _ e: RestorePlan.Entry, index: MasterIndex) -> String? {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return "cannot inspect the file: \(Errno(errno))" }
        guard RestoreFS.fileType(st) == UInt32(S_IFREG) else { return "it is not a regular file" }
        guard UInt64(st.st_size) == e.size else { return "its size is \(st.st_size) bytes, the snapshot has \(e.size)" }
        var buffer: [UInt8] = []
        var offset: UInt64 = 0
        for (n, id) in e.node.content.enumerated() {
            guard let loc = index.lookup(id, .data) else { return "content blob \(id.short) is not in the repository index" }
            let length = Int(loc.blob.dataLength)
            if buffer.count < length { buffer = [UInt8](repeating: 0, count: length) }
            let got = buffer.withUnsafeMutableBytes { RestoreFS.preadFully(fd, UnsafeMutableRawBufferPointer(rebasing: $0[0..<length]), offset: offset) }
            guard let got else { return "cannot read the file: \(Errno(errno))" }
            guard got == length else { return "the file is shorter than the snapshot says" }
            let actual = buffer.withUnsafeBytes { ID.hash(UnsafeRawBufferPointer(rebasing: $0[0..<length])) }
            guard actual == id else {
                return "content differs from the snapshot in bytes \(offset)..<\(offset + UInt64(length)) (chunk \(n + 1) of \(e.node.content.count))"
            }
            offset += UInt64(length)
        }
        return nil
    }

    // MARK: Phase 3: metadata

    func applyMetadata() async throws {
        let (failed, done) = shared.withLock { ($0.failed, $0.metadataDone) }
        func wanted(_ i: Int) -> Bool { (states[i] == .created || states[i] == .kept) && !failed.contains(i) && !done[i] }
        // Files, symlinks and special files first, in parallel: they are independent, and each worker has
        // its own directory descriptors (entries are in tree order, so a slice keeps to few directories).
        let others = entries.indices.filter { i in
            switch entries[i].action {
            case .directory, .hardLink: return false
            default: return wanted(i)
            }
        }
        let workers = others.count >= 512 ? max(1, min(4, options.packConcurrency)) : 1
        let sliceSize = (others.count + workers - 1) / max(1, workers)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for start in stride(from: 0, to: others.count, by: max(1, sliceSize)) {
                let slice = others[start..<min(others.count, start + sliceSize)]
                let dirs = workers == 1 ? self.dirs : self.dirs.sibling()
                group.addTask {
                    for i in slice { try self.applyMetadata(i, dirs) }
                }
            }
            try await group.waitForAll()
        }
        // Directories last, children before parents, so nothing touches a directory after its times are set.
        for i in entries.indices.reversed() where entries[i].action == .directory && wanted(i) {
            try applyMetadata(i, dirs)
        }
    }

    private func applyMetadata(_ i: Int, _ dirs: RestoreDirectories) throws {
        try Self.checkCancelled()
        let e = entries[i]
        do {
            try dirs.with(e.parent) { pfd in try setMetadata(e, pfd) }
        } catch let err as HavenError {
            if Self.isFatal(err) { throw err }
            addError(e.path, err.message)
        }
    }

    private func setMetadata(_ e: RestorePlan.Entry, _ pfd: Int32) throws {
        guard let st = RestoreFS.lstat(pfd, e.name) else {
            throw RestoreFS.failure("inspect the restored entry to set its metadata", e.path)
        }
        let type = RestoreFS.fileType(st)
        let isLink = type == UInt32(S_IFLNK)
        guard isLink == (e.action == .symlink), (type == UInt32(S_IFDIR)) == (e.action == .directory) else {
            throw HavenError(.io, "the entry was replaced during the restore; its metadata was not restored")
        }
        // Extended attributes go after chown (which drops capabilities) and before chmod (which may make
        // the file read-only).
        let setAttributes = {
            for a in e.node.extendedAttributes {
                if let err = RestoreFS.setExtendedAttribute(pfd, e.name, attribute: a.name, value: a.value) {
                    self.addWarning(e.path, "cannot set extended attribute \(a.name): \(Errno(err))")
                }
            }
        }
        try RestoreFS.withCString(e.name) { name in
            // Not a symlink when chmod is called (checked above), so fchmodat does not follow anything.
            try setMetadata(e, current: st, owner: { fchownat(pfd, name, $0, $1, AT_SYMLINK_NOFOLLOW) },
                            mode: isLink ? nil : { fchmodat(pfd, name, $0, 0) },
                            times: { utimensat(pfd, name, $0, AT_SYMLINK_NOFOLLOW) }, beforeMode: setAttributes)
        }
    }

    /// Sets owner, permissions and times through the given calls, skipping an owner or mode the entry
    /// already has (`current`: its stat), since each change is a journaled inode update. `beforeMode` runs
    /// between the owner and the mode (extended attributes go there). Throws the problems, joined.
    private func setMetadata(_ e: RestorePlan.Entry, current st: stat,
                             owner: (uid_t, gid_t) -> Int32, mode: ((mode_t) -> Int32)?,
                             times: (UnsafePointer<timespec>) -> Int32, beforeMode: () -> Void = {}) throws {
        var problems: [String] = []
        let node = e.node
        var chowned = false
        if options.restoreOwnership && (UInt32(st.st_uid) != node.uid || UInt32(st.st_gid) != node.gid) {
            if owner(uid_t(node.uid), gid_t(node.gid)) != 0 {
                problems.append("cannot set owner \(node.uid):\(node.gid): \(Errno(errno))")
            }
            chowned = true
        }
        beforeMode()
        // chown clears setuid and setgid, so after one the mode is set again whatever it was.
        if let mode, chowned || UInt32(st.st_mode) & 0o7777 != node.unixPermissions {
            if mode(mode_t(node.unixPermissions)) != 0 {
                problems.append("cannot set mode \(String(node.unixPermissions, radix: 8)): \(Errno(errno))")
            }
        }
        let stamps = [RestoreFS.timeSpec(node.atime), RestoreFS.timeSpec(node.mtime)]
        if stamps.withUnsafeBufferPointer({ times($0.baseAddress!) }) != 0 {
            problems.append("cannot set times: \(Errno(errno))")
        }
        if !problems.isEmpty { throw HavenError(.io, problems.joined(separator: "; ")) }
    }
}
