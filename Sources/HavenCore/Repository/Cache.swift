import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A repository's local metadata cache, laid out like restic's: `<base>/<repository id>/` holding
/// `index/<id>`, `snapshots/<id>` and `data/<xx>/<pack id>` for packs that hold tree blobs.
///
/// Files are stored exactly as in the repository (encrypted) and are checked on every use: index and
/// snapshot files against their names (SHA-256), tree blobs by their MAC and ID. A damaged file is removed
/// and fetched again. Data blobs never go to the cache. Files are written under a temporary name and
/// renamed into place, so two processes sharing a cache never see half a file.
///
/// The cache never fails an operation: when it cannot be written (a full or read-only disk) it warns once
/// and the repository reads from storage as if there were no cache.
public final class RepositoryCache: Sendable {
    /// `<base>/<repository id>`.
    public let directory: String
    /// Whether index and snapshot files are kept (a temporary cache for `check` holds packs only).
    public let cachesFiles: Bool
    /// A temporary cache is removed by `removeAll()` when the command ends.
    public let isTemporary: Bool
    private let warning: @Sendable (String) -> Void
    private let state = Locked(State())

    /// A whole pack downloaded for the cache. `verified` is false when its SHA-256 is not its ID.
    struct Download: Sendable {
        var bytes: [UInt8]
        var verified: Bool
    }

    private struct State: Sendable {
        /// Packs being downloaded, so concurrent requests for one pack make one request.
        var inFlight: [ID: Task<Download, any Error>] = [:]
        /// Packs this process stored, so a request racing with a finished download reads the file.
        var stored = Set<ID>()
        /// Packs whose content does not match their ID: read blob by blob from storage, never cached.
        var uncacheable = Set<ID>()
        /// Index files loaded through the cache, to know which cached ones are stale after the index is loaded.
        var indexLoaded = Set<String>()
        /// Set when a write failed: from then on the repository reads from storage only.
        var disabled = false
    }

    /// The first line of a cache directory tag (https://bford.info/cachedir/).
    public static let tagSignature = "Signature: 8a477f597d28d172789f06886806bc55"
    static let tagFile = "CACHEDIR.TAG"
    static let tagContent = tagSignature + "\n# This file is a cache directory tag created by Haven.\n"
        + "# For information about cache directory tags, see:\n#\thttps://bford.info/cachedir/\n"

    /// The default base directory: `$HAVEN_CACHE_DIR`, else `$XDG_CACHE_HOME/haven`, else `~/.cache/haven`
    /// (nil when none is set).
    public static func defaultBase(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let d = environment["HAVEN_CACHE_DIR"], !d.isEmpty { return d }
        if let x = environment["XDG_CACHE_HOME"], x.hasPrefix("/") { return x + "/haven" }
        if let h = environment["HOME"], !h.isEmpty { return h + "/.cache/haven" }
        return nil
    }

    /// Opens (creating when needed) the cache for the repository with config ID `repositoryID` under
    /// `base`, and tags `base` with a `CACHEDIR.TAG` so backup tools skip it. `warning` receives the one
    /// message printed if the cache later stops working.
    ///
    /// Throws when the directories cannot be created; callers then go on without a cache.
    public convenience init(base: String, repositoryID: String, warning: @escaping @Sendable (String) -> Void = { _ in }) throws {
        guard !repositoryID.isEmpty, repositoryID.utf8.allSatisfy({ isalnum(Int32($0)) != 0 }) else {
            throw HavenError(.invalidArgument, "repository ID \"\(repositoryID)\" cannot name a cache directory")
        }
        let base = Self.trimmed(base)
        try Self.prepareBase(base)
        try self.init(directory: base + "/" + repositoryID, cachesFiles: true, isTemporary: false, warning: warning)
        // The directory's modification time says when the cache was last used (`haven cache`).
        _ = utimensat(AT_FDCWD, directory, nil, 0)
    }

    /// A repository's cache directory, as `haven cache` lists them.
    public struct Entry: Sendable, Equatable {
        /// The repository's ID (its config ID), which names the directory.
        public var repositoryID: String
        public var path: String
        /// When a command last opened the cache (the directory's modification time).
        public var lastUsed: Date
        /// The bytes of its files, when asked for.
        public var size: UInt64?
    }

    /// The repository caches under `base` (directories named by a 64-digit repository ID; everything
    /// else there is left alone), most recently used first. None when `base` does not exist.
    public static func entries(in base: String, sizes: Bool) throws -> [Entry] {
        let base = trimmed(base)
        guard FileSystem.exists(base) else { return [] }
        var out: [Entry] = []
        for name in try FileSystem.listDirectory(base) where name.utf8.count == 64 && ID(hex: name) != nil {
            let path = base + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { continue }
            let used = Date(timeIntervalSince1970: TimeInterval(st.st_mtim.tv_sec) + TimeInterval(st.st_mtim.tv_nsec) / 1e9)
            out.append(Entry(repositoryID: name, path: path, lastUsed: used, size: sizes ? treeSize(path) : nil))
        }
        return out.sorted { ($0.lastUsed, $0.repositoryID) > ($1.lastUsed, $1.repositoryID) }
    }

    /// Removes the caches under `base` last used more than `maxAge` seconds before `now` (restic's rule:
    /// a cache nobody opened for 30 days belongs to a repository that is gone or moved). Returns them.
    public static func removeOld(in base: String, olderThan maxAge: TimeInterval, now: Date = Date()) throws -> [Entry] {
        let old = try entries(in: base, sizes: true).filter { now.timeIntervalSince($0.lastUsed) > maxAge }
        for entry in old {
            do { try FileManager.default.removeItem(atPath: entry.path) } catch {
                throw HavenError(.io, "cannot remove the old cache directory \(entry.path): \(error.localizedDescription)")
            }
        }
        return old
    }

    /// The bytes of the regular files below `path` (symbolic links are not followed).
    private static func treeSize(_ path: String) -> UInt64 {
        var total: UInt64 = 0
        for name in (try? FileSystem.listDirectory(path)) ?? [] {
            let child = path + "/" + name
            var st = stat()
            guard lstat(child, &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFDIR: total += treeSize(child)
            case S_IFREG: total += UInt64(st.st_size)
            default: break
            }
        }
        return total
    }

    /// A new, empty cache in a fresh directory below `base` (or the system's temporary directory), for a
    /// command that must read the repository itself rather than trust an old cache (`check`). Remove it
    /// with `removeAll()`. Index and snapshot files are not kept.
    public static func temporary(in base: String?, warning: @escaping @Sendable (String) -> Void = { _ in }) throws -> RepositoryCache {
        var parent = NSTemporaryDirectory()
        if let base {
            parent = trimmed(base)
            try prepareBase(parent)
            removeAbandonedTemporaries(in: parent)
        }
        while parent.count > 1 && parent.hasSuffix("/") { parent.removeLast() }
        var template = Array("\(parent)/haven-check-XXXXXX".utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw HavenError.system("cannot create a temporary cache directory in", parent)
        }
        let dir = String(cString: p)
        if base == nil { try? FileSystem.writeAtomically(dir + "/" + tagFile, Array(tagContent.utf8), mode: 0o644) }
        return try RepositoryCache(directory: dir, cachesFiles: false, isTemporary: true, warning: warning)
    }

    private init(directory: String, cachesFiles: Bool, isTemporary: Bool, warning: @escaping @Sendable (String) -> Void) throws {
        self.directory = directory
        self.cachesFiles = cachesFiles
        self.isTemporary = isTemporary
        self.warning = warning
        for sub in ["data", "index", "snapshots"] { try FileSystem.makeDirectories(directory + "/" + sub, mode: 0o700) }
    }

    /// Temporary caches are removed when their command ends; one left by a crash goes after a day.
    private static func removeAbandonedTemporaries(in base: String) {
        for name in (try? FileSystem.listDirectory(base)) ?? [] where name.hasPrefix("haven-check-") {
            var st = stat()
            guard lstat(base + "/" + name, &st) == 0, time(nil) - st.st_mtim.tv_sec > 86400 else { continue }
            try? FileManager.default.removeItem(atPath: base + "/" + name)
        }
    }

    private static func trimmed(_ path: String) -> String {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p
    }

    private static func prepareBase(_ base: String) throws {
        try FileSystem.makeDirectories(base, mode: 0o700)
        let tag = base + "/" + tagFile
        if !FileSystem.exists(tag) { try FileSystem.writeAtomically(tag, Array(tagContent.utf8), mode: 0o644) }
    }

    /// Deletes the cache directory (for a temporary cache at the end of a command).
    public func removeAll() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: Paths

    func path(_ handle: Handle) -> String {
        directory + "/" + handle.path
    }

    /// Whether files of `type` are kept in this cache.
    func keeps(_ type: FileType) -> Bool {
        switch type {
        case .index, .snapshot: return cachesFiles && !isDisabled
        default: return false
        }
    }

    var isDisabled: Bool { state.withLock { $0.disabled } }

    /// Whether tree blobs of `pack` are served through the cache.
    func servesPack(_ pack: ID) -> Bool {
        state.withLock { !$0.disabled && !$0.uncacheable.contains(pack) }
    }

    // MARK: Index and snapshot files

    /// A cached file's bytes, nil when it is not cached (or cannot be read).
    func readFile(_ handle: Handle) -> [UInt8]? {
        if handle.type == .index { state.withLock { _ = $0.indexLoaded.insert(handle.name) } }
        return Self.readAll(path(handle))
    }

    /// Stores an index or snapshot file loaded from storage (its content checked against its name) or just
    /// written to it, so the next command does not download it.
    func storeFile(_ handle: Handle, _ bytes: [UInt8]) {
        if keeps(handle.type) { write(path(handle), bytes) }
    }

    func remove(_ handle: Handle) {
        unlink(path(handle))
    }

    // MARK: Packs

    enum PackRead {
        case hit([UInt8])
        case miss
        /// The file is shorter than the range: it is damaged.
        case damaged
    }

    func removePack(_ pack: ID) {
        unlink(path(Handle(.pack, pack)))
        state.withLock { _ = $0.stored.remove(pack) }
    }

    func storePack(_ pack: ID, _ bytes: [UInt8]) {
        if write(path(Handle(.pack, pack)), bytes) { state.withLock { _ = $0.stored.insert(pack) } }
    }

    /// Reads `length` bytes at `offset` from a cached pack.
    func readPack(_ pack: ID, offset: Int, length: Int) -> PackRead {
        let p = path(Handle(.pack, pack))
        let fd = open(p, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .miss }
        defer { close(fd) }
        var n = 0
        let bytes = [UInt8](unsafeUninitializedCapacity: length) { buf, count in
            n = (try? FileSystem.preadFully(fd, UnsafeMutableRawBufferPointer(buf), offset: offset, path: p)) ?? -1
            count = length
        }
        return n == length ? .hit(bytes) : .damaged
    }

    /// The whole pack from storage, downloaded once however many tasks ask at the same time, checked
    /// against its ID and stored in the cache when it matches. Nil when another task stored the pack
    /// meanwhile (read the file then) unless `ignoreStored`.
    func fetch(_ pack: ID, from storage: any Storage, ignoreStored: Bool = false) async throws -> Download? {
        let task: Task<Download, any Error>? = state.withLock { s in
            if let t = s.inFlight[pack] { return t }
            if s.stored.contains(pack) && !ignoreStored { return nil }
            let t = Task { try await self.download(pack, from: storage) }
            s.inFlight[pack] = t
            return t
        }
        guard let task else { return nil }
        return try await task.value
    }

    private func download(_ pack: ID, from storage: any Storage) async throws -> Download {
        let bytes: [UInt8]
        do {
            bytes = try await storage.load(Handle(.pack, pack))
        } catch {
            state.withLock { _ = $0.inFlight.removeValue(forKey: pack) }
            throw error
        }
        let verified = ID.hash(bytes) == pack
        let stored = verified && write(path(Handle(.pack, pack)), bytes)
        state.withLock { s in
            if stored { s.stored.insert(pack) }
            if !verified { s.uncacheable.insert(pack) }
            s.inFlight.removeValue(forKey: pack)
        }
        return Download(bytes: bytes, verified: verified)
    }

    // MARK: Cleanup

    /// Removes cached packs not in `packs` and, once the index has been loaded through this cache, cached
    /// index files that were not part of it. Costs one directory listing per pack prefix.
    func clean(keepingPacks packs: Set<ID>) {
        let loaded = state.withLock { $0.indexLoaded }
        if cachesFiles && !loaded.isEmpty {
            removeStale(in: directory + "/index") { loaded.contains($0) }
        }
        let data = directory + "/data"
        for sub in (try? FileSystem.listDirectory(data)) ?? [] {
            removeStale(in: data + "/" + sub) { name in ID(hex: name).map(packs.contains) ?? false }
        }
    }

    /// Removes cached snapshot files not among `names` (the repository's listing).
    func retainSnapshots(_ names: Set<String>) {
        guard cachesFiles else { return }
        removeStale(in: directory + "/snapshots") { names.contains($0) }
    }

    /// Unlinks the files in `dir` that `keep` rejects. Temporary files are left alone for an hour: another
    /// process may be about to rename one into place.
    private func removeStale(in dir: String, keep: (String) -> Bool) {
        for name in (try? FileSystem.listDirectory(dir)) ?? [] where !keep(name) {
            let p = dir + "/" + name
            if name.contains(".tmp-") {
                var st = stat()
                guard lstat(p, &st) == 0, time(nil) - st.st_mtim.tv_sec > 3600 else { continue }
            }
            unlink(p)
        }
    }

    // MARK: Files

    private static func readAll(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        let size = Int(st.st_size)
        var n = 0
        let bytes = [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            n = (try? FileSystem.preadFully(fd, UnsafeMutableRawBufferPointer(buf), offset: 0, path: path)) ?? -1
            count = size
        }
        return n == size ? bytes : nil
    }

    /// Writes `bytes` to `path` under a temporary name and renames it into place (no fsync: a file torn by
    /// a crash fails its check and is fetched again). On failure the cache turns itself off with a warning.
    @discardableResult
    private func write(_ path: String, _ bytes: [UInt8]) -> Bool {
        guard !isDisabled else { return false }
        let tmp = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        do {
            if let slash = path.lastIndex(of: "/") { try FileSystem.makeDirectories(String(path[..<slash]), mode: 0o700) }
            let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw HavenError.system("cannot create", tmp) }
            do {
                try bytes.withUnsafeBytes { try FileSystem.writeFully(fd, $0, path: tmp) }
                close(fd)
            } catch {
                close(fd)
                throw error
            }
            guard rename(tmp, path) == 0 else { throw HavenError.system("cannot rename into place", path) }
            return true
        } catch {
            unlink(tmp)
            let first = state.withLock { s -> Bool in
                defer { s.disabled = true }
                return !s.disabled
            }
            if first { warning("the cache in \(directory) cannot be written (\(error)); continuing without it") }
            return false
        }
    }
}

// MARK: - Reading through the cache

extension Repository {
    /// Uses `cache` for this repository's metadata from now on (nil: none). Call before loading the index.
    public func useCache(_ cache: RepositoryCache?) {
        cacheSlot.withLock { $0 = cache }
    }

    /// Loads a stored file and checks its content against its name (SHA-256; not for the config). Index
    /// and snapshot files come from the cache when it holds them, and go into it when loaded from storage.
    ///
    /// Throws `.corrupt` when the content does not match the name, or the storage's error.
    public func loadFileCached(_ handle: Handle) async throws -> [UInt8] {
        func matches(_ raw: [UInt8]) -> Bool {
            handle.type == .config || ID(hex: handle.name).map { ID.hash(raw) == $0 } ?? false
        }
        let cache = self.cache.flatMap { $0.keeps(handle.type) ? $0 : nil }
        if let cache, let cached = cache.readFile(handle) {
            if matches(cached) { return cached }
            cache.remove(handle)
        }
        let raw = try await storage.load(handle)
        guard matches(raw) else {
            throw HavenError(.corrupt, "\(handle.path) is damaged: its content does not match its name (SHA-256)")
        }
        cache?.storeFile(handle, raw)
        return raw
    }

    /// Puts a pack this process has just stored into the cache when it holds tree blobs, so the next command
    /// finds it there (restic does the same). Best effort; costs one read of the spool file. Call after the
    /// storage confirmed the save.
    public func cacheWrittenPack(_ id: ID, spool: SpoolFile, blobs: [PackedBlob]) {
        guard let cache, !cache.isTemporary, cache.servesPack(id), blobs.contains(where: { $0.type == .tree }),
              let bytes = try? spool.readAll(), ID.hash(bytes) == id else { return }
        cache.storePack(id, bytes)
    }

    /// Removes what the cache holds but the repository no longer needs: packs the loaded index does not
    /// name, and index files that were not part of it. Call after `loadIndex()`; cheap (directory listings).
    public func cleanCache() {
        guard let cache, !cache.isTemporary else { return }
        cache.clean(keepingPacks: index.packIDs)
    }

    /// A tree blob through the cache: read from the cached pack, else download the whole pack once (checked
    /// against its ID), store it, and serve this and later tree blobs of the pack from the file. A cached
    /// pack that fails is removed and downloaded again. A pack whose content does not match its ID is not
    /// cached; its blobs are read one by one from storage, as without a cache.
    func loadCachedTreeBlob(_ loc: BlobLocation, cache: RepositoryCache) async throws -> [UInt8] {
        let pack = loc.pack, blob = loc.blob
        let start = Int(blob.offset), length = Int(blob.length)
        var missedStored = false
        for _ in 0..<3 {
            guard cache.servesPack(pack) else { break }
            switch cache.readPack(pack, offset: start, length: length) {
            case .hit(let sealed):
                do { return try decryptBlob(sealed, blob, pack: pack) } catch let e as HavenError where e.code == .corrupt {
                    cache.removePack(pack)
                }
            case .damaged:
                cache.removePack(pack)
            case .miss:
                break
            }
            guard let download = try await cache.fetch(pack, from: storage, ignoreStored: missedStored) else {
                missedStored = true
                continue
            }
            let bytes = download.bytes
            guard start + length <= bytes.count else {
                throw HavenError(.corrupt, "pack \(pack.short) is damaged: it has \(bytes.count) bytes, but \(blob.type.rawValue) blob "
                                 + "\(blob.id.short) ends at byte \(start + length)")
            }
            do {
                return try bytes.withUnsafeBytes { try decryptBlob(UnsafeRawBufferPointer(rebasing: $0[start..<(start + length)]), blob, pack: pack) }
            } catch let e as HavenError where e.code == .corrupt && !download.verified {
                throw HavenError(.corrupt, "\(e.message); the pack's content does not match its ID (SHA-256)")
            }
        }
        let sealed = try await storage.load(Handle(.pack, pack), offset: start, length: length)
        return try decryptBlob(sealed, blob, pack: pack)
    }
}
