import Foundation

/// An open repository: storage, master key, config and index. The engine's entry point.
public final class Repository: Sendable {
    public let storage: any Storage
    public let key: MasterKey
    public let config: RepositoryConfig
    public let index = MasterIndex()
    /// The key file this repository was opened with.
    public let keyID: ID
    let cacheSlot = Locked<RepositoryCache?>(nil)
    /// The local metadata cache, if one is in use (see `useCache`).
    public var cache: RepositoryCache? { cacheSlot.withLock { $0 } }

    init(storage: any Storage, key: MasterKey, config: RepositoryConfig, keyID: ID) {
        self.storage = storage
        self.key = key
        self.config = config
        self.keyID = keyID
    }

    public var version: Int { config.version }

    // MARK: Creating and opening

    /// Creates a new repository in `storage` and returns it opened.
    public static func initialize(
        storage: any Storage, password: String, version: Int = 2,
        polynomial: Polynomial? = nil, kdf: KDFParameters? = nil,
        hostname: String = Host.name, username: String = Host.user
    ) async throws -> Repository {
        guard version == 1 || version == 2 else {
            throw HavenError(.invalidArgument, "repository version \(version) is not supported; use 1 or 2")
        }
        if try await storage.exists(.config) {
            throw HavenError(.invalidArgument, "a repository already exists at \(storage.location); choose another location")
        }
        try await storage.create()
        let master = MasterKey.random()
        var idBytes = [UInt8](repeating: 0, count: 32)
        var rng = SystemRandomNumberGenerator()
        for i in idBytes.indices { idBytes[i] = rng.next() }
        let config = RepositoryConfig(version: version, id: Hex.encode(idBytes), chunkerPolynomial: polynomial ?? Polynomial.random())
        let keyFile = try KeyFile.create(password: password, master: master, parameters: kdf ?? KDFParameters.calibrate(),
                                         hostname: hostname, username: username)
        let keyBytes = try keyFile.encoded()
        let keyID = ID.hash(keyBytes)
        try await storage.save(Handle(.key, keyID), keyBytes)
        // The config is encrypted but never compressed: a reader must decrypt it before it knows the version.
        try await storage.save(.config, master.seal(config.encoded()))
        return Repository(storage: storage, key: master, config: config, keyID: keyID)
    }

    /// Opens the repository in `storage` with `password`.
    ///
    /// Throws `.repositoryNotFound` when there is no config, `.wrongPassword` when no key opens.
    public static func open(storage: any Storage, password: String, maxKeys: Int = 20) async throws -> Repository {
        let sealedConfig: [UInt8]
        do {
            sealedConfig = try await storage.load(.config)
        } catch let e as HavenError where e.code == .notFound {
            throw HavenError(.repositoryNotFound, "no repository at \(storage.location): the config file is missing (create one with `haven init`)")
        }
        let keys = try await storage.list(.key)
        guard !keys.isEmpty else { throw HavenError(.notARepository, "\(storage.location) has no key files; it is not a usable repository") }
        var lastError: HavenError?
        for k in keys.prefix(maxKeys) {
            guard let kid = ID(hex: k.name) else { continue }
            guard k.size < 1 << 20 else { continue }
            let bytes = try await storage.load(Handle(.key, kid))
            let master: MasterKey
            do {
                let file = try KeyFile.decode(bytes)
                master = try file.open(password: password)
            } catch let e as HavenError {
                if e.code != .wrongPassword { lastError = HavenError(e.code, "key \(kid.short): \(e.message)") }
                continue
            }
            let plain: [UInt8]
            do {
                plain = try master.open(sealedConfig)
            } catch {
                throw HavenError(.corrupt, "config in \(storage.location) is damaged: it does not authenticate with the master key")
            }
            let config = try RepositoryConfig.decode(plain)
            return Repository(storage: storage, key: master, config: config, keyID: kid)
        }
        if let lastError, keys.count == 1 { throw lastError }
        throw HavenError(.wrongPassword, "wrong password or no key found for \(storage.location)")
    }

    // MARK: Unpacked files (config, index, snapshot, lock)

    /// Loads, checks and decrypts a stored file, and decompresses it in a version 2 repository.
    public func loadUnpacked(_ handle: Handle) async throws -> [UInt8] {
        let raw = try await loadFileCached(handle)
        let plain: [UInt8]
        do { plain = try key.open(raw) } catch {
            throw HavenError(.corrupt, "\(handle.path) is damaged: decryption failed (MAC mismatch)")
        }
        return try decodeUnpacked(plain, what: handle.path)
    }

    func decodeUnpacked(_ plain: [UInt8], what: String) throws -> [UInt8] {
        guard let first = plain.first else { throw HavenError(.corrupt, "\(what) is empty") }
        if first == UInt8(ascii: "{") || first == UInt8(ascii: "[") { return plain }
        guard version >= 2 else { throw HavenError(.corrupt, "\(what) is not JSON") }
        guard first == 2 else { throw HavenError(.corrupt, "\(what) has unknown encoding version \(first)") }
        do {
            return try plain.withUnsafeBytes { try Zstd.decompress(UnsafeRawBufferPointer(rebasing: $0[1...]), limit: 1 << 30) }
        } catch let e as HavenError {
            throw HavenError(.corrupt, "\(what) is damaged: \(e.message)")
        }
    }

    /// Compresses (version 2), encrypts and stores `plaintext` JSON; returns its storage ID.
    @discardableResult
    public func saveUnpacked(_ type: FileType, _ plaintext: [UInt8]) async throws -> ID {
        precondition(type != .config && type != .pack && type != .key)
        var payload = plaintext
        if version >= 2 {
            payload = [2] + Zstd.compress(plaintext, level: 3)
        }
        let sealed = key.seal(payload)
        let id = ID.hash(sealed)
        try await storage.save(Handle(type, id), sealed)
        cache?.storeFile(Handle(type, id), sealed)
        return id
    }

    // MARK: Index

    /// Loads every index file into `index`, several at a time, then sorts the index. Returns how many
    /// index files there are.
    @discardableResult
    public func loadIndex() async throws -> Int {
        let files = try await storage.list(.index)
        try await forEachConcurrently(files, limit: 4) { f in
            guard let id = ID(hex: f.name) else { return }
            let file = try IndexFile.decode(try await self.loadUnpacked(Handle(.index, id)), id: id)
            self.index.add(file)
        }
        index.finishLoading()
        return files.count
    }

    // MARK: Blobs

    /// Loads a blob's plaintext and checks it against its ID.
    public func loadBlob(_ id: ID, _ type: BlobType) async throws -> [UInt8] {
        guard let loc = index.lookup(id, type) else {
            throw HavenError(.notFound, "\(type.rawValue) blob \(id.short) is not in the index")
        }
        return try await loadBlob(at: loc)
    }

    /// Loads the blob at `loc` (from this or another index) and checks it against its ID. Tree blobs come
    /// through the cache when there is one.
    public func loadBlob(at loc: BlobLocation) async throws -> [UInt8] {
        if loc.blob.type == .tree, let cache { return try await loadCachedTreeBlob(loc, cache: cache) }
        let sealed = try await storage.load(Handle(.pack, loc.pack), offset: Int(loc.blob.offset), length: Int(loc.blob.length))
        return try decryptBlob(sealed, loc.blob, pack: loc.pack)
    }

    /// Opens a blob's sealed bytes read from its pack, decompresses and verifies it.
    public func decryptBlob(_ sealed: UnsafeRawBufferPointer, _ blob: PackedBlob, pack: ID) throws -> [UInt8] {
        let plain = try unsealBlob(sealed, blob, pack: pack)
        try Self.verify(plain, ID.hash(plain), blob, pack: pack)
        return plain
    }

    /// Decrypts and decompresses a blob's sealed bytes; the caller checks the plaintext against the ID.
    private func unsealBlob(_ sealed: UnsafeRawBufferPointer, _ blob: PackedBlob, pack: ID) throws -> [UInt8] {
        var plain: [UInt8]
        do { plain = try key.open(sealed) } catch {
            throw HavenError(.corrupt, "\(Self.describe(blob, pack)) is damaged: decryption failed (MAC mismatch)")
        }
        if blob.isCompressed {
            do {
                plain = try Zstd.decompress(plain, limit: Int(blob.uncompressedLength), expectedSize: Int(blob.uncompressedLength))
            } catch let e as HavenError {
                throw HavenError(.corrupt, "\(Self.describe(blob, pack)) is damaged: \(e.message)")
            }
        }
        return plain
    }

    private static func describe(_ blob: PackedBlob, _ pack: ID) -> String {
        "\(blob.type.rawValue) blob \(blob.id.short) in pack \(pack.short)"
    }

    private static func verify(_ plain: [UInt8], _ actual: ID, _ blob: PackedBlob, pack: ID) throws {
        guard actual == blob.id else {
            throw HavenError(.corrupt, "\(describe(blob, pack)) is damaged: its content does not match its ID")
        }
    }

    /// Opens, decompresses and verifies the blobs of one stretch of a pack (`raw` holds the pack's bytes
    /// from offset `base`), hashing their plaintexts two at a time (`SHA256Lanes`). Calls `body` once per
    /// blob with the blob's index and its plaintext or the damage found: damage at once, plaintexts as
    /// their hashes complete, so not always in the blobs' order. At most two plaintexts are held at once.
    public func openBlobs(_ blobs: [PackedBlob], in raw: UnsafeRawBufferPointer, at base: Int, pack: ID,
                          _ body: (Int, Result<[UInt8], HavenError>) throws -> Void) rethrows {
        func unseal(_ i: Int) -> Result<[UInt8], HavenError> {
            let b = blobs[i]
            let start = Int(b.offset) - base, end = start + Int(b.length)
            guard start >= 0, end <= raw.count else {
                return .failure(HavenError(.corrupt, "\(Self.describe(b, pack)) is damaged: it extends beyond the end of the pack"))
            }
            return Result { try unsealBlob(UnsafeRawBufferPointer(rebasing: raw[start..<end]), b, pack: pack) }
                .mapError { $0 as? HavenError ?? HavenError(.corrupt, "\(Self.describe(b, pack)): \($0)") }
        }
        func checked(_ i: Int, _ plain: [UInt8], _ actual: ID) throws {
            try body(i, Result { try Self.verify(plain, actual, blobs[i], pack: pack); return plain }
                .mapError { $0 as? HavenError ?? HavenError(.corrupt, "\($0)") })
        }
        let lanes = SHA256Lanes<Int, [UInt8]>()
        for i in blobs.indices {
            switch unseal(i) {
            case .success(let plain): try lanes.add(plain, i, checked)
            case .failure(let damage): try body(i, .failure(damage))
            }
        }
        try lanes.finish(checked)
    }

    public func decryptBlob(_ sealed: [UInt8], _ blob: PackedBlob, pack: ID) throws -> [UInt8] {
        try sealed.withUnsafeBytes { try decryptBlob($0, blob, pack: pack) }
    }

    public func loadTree(_ id: ID) async throws -> Tree {
        let bytes = try await loadBlob(id, .tree)
        do { return try Tree.decode(bytes) } catch let e as HavenError {
            throw HavenError(.corrupt, "tree \(id.short): \(e.message)")
        }
    }

    /// Reads a pack's header: the list of its blobs. Throws `.corrupt` when the pack is damaged.
    public func loadPackHeader(_ pack: ID, size: Int? = nil) async throws -> [PackedBlob] {
        var total = size ?? 0
        if size == nil { total = try await storage.stat(Handle(.pack, pack)) }
        // Read the tail in one request; most headers fit in a few KiB.
        let guess = min(total, 4 + 8192)
        var tail = try await storage.load(Handle(.pack, pack), offset: total - guess, length: guess)
        let length = try PackReader.headerLength(tail: tail, total: total, id: pack)
        if length + 4 > guess {
            tail = try await storage.load(Handle(.pack, pack), offset: total - 4 - length, length: length + 4)
        }
        return try PackReader.header(tail: tail, total: total, id: pack, key: key)
    }

    // MARK: Snapshots

    public func listSnapshotIDs() async throws -> [ID] {
        let files = try await storage.list(.snapshot)
        cache?.retainSnapshots(Set(files.map(\.name)))
        return files.compactMap { ID(hex: $0.name) }
    }

    public func loadSnapshot(_ id: ID) async throws -> Snapshot {
        try Snapshot.decode(try await loadUnpacked(Handle(.snapshot, id)), id: id)
    }

    /// All snapshots, oldest first. Damaged ones are reported through `onError` and skipped.
    public func loadSnapshots(onError: (@Sendable (HavenError) -> Void)? = nil) async throws -> [Snapshot] {
        let ids = try await listSnapshotIDs()
        let out = Locked<[Snapshot]>([])
        try await forEachConcurrently(ids, limit: 8) { id in
            do {
                let s = try await self.loadSnapshot(id)
                out.withLock { $0.append(s) }
            } catch let e as HavenError {
                guard let onError else { throw e }
                onError(e)
            }
        }
        return out.withLock { $0 }.sorted { ($0.time, $0.id!) < ($1.time, $1.id!) }
    }

    /// Saves a snapshot and returns its ID.
    public func saveSnapshot(_ snapshot: Snapshot) async throws -> ID {
        try await saveUnpacked(.snapshot, snapshot.encoded())
    }

    /// Resolves "latest" or a unique ID prefix among `snapshots`.
    public static func resolveSnapshot(_ name: String, in snapshots: [Snapshot]) throws -> Snapshot {
        if name == "latest" {
            guard let s = snapshots.max(by: { $0.time < $1.time }) else {
                throw HavenError(.notFound, "no snapshot found: the repository has no snapshots (matching the filters)")
            }
            return s
        }
        let lower = name.lowercased()
        guard !lower.isEmpty, lower.allSatisfy(\.isHexDigit) else {
            throw HavenError(.invalidArgument, "\"\(name)\" is not a snapshot ID: give an ID (or prefix) or \"latest\"")
        }
        let matches = snapshots.filter { $0.id!.hex.hasPrefix(lower) }
        guard !matches.isEmpty else { throw HavenError(.notFound, "no snapshot matches ID \(name)") }
        guard matches.count == 1 else { throw HavenError(.invalidArgument, "snapshot ID prefix \(name) is ambiguous: it matches \(matches.count) snapshots") }
        return matches[0]
    }
}

/// The local host and user names, as stored in snapshots and locks.
public enum Host {
    public static var name: String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, 255)
        return String(cString: buf)
    }
    public static var user: String {
        if let pw = getpwuid(getuid()), let n = pw.pointee.pw_name { return String(cString: n) }
        return ProcessInfo.processInfo.environment["USER"] ?? ""
    }
}
