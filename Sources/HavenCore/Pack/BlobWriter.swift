import Synchronization

/// Writes new blobs into packs and packs into storage, then records them in index files.
///
/// Compression and encryption run in the caller's task, so callers that save blobs concurrently use all
/// cores. A pack is uploaded by the task whose blob filled it, which gives natural backpressure. Nothing
/// becomes visible to readers until `flush()` has written the index files naming the uploaded packs.
public final class BlobWriter: Sendable {
    public let repository: Repository
    public let packSize: Int
    public let compression: CompressionMode

    /// A pack being filled: its blobs so far, written to a spool file (nothing in memory but the list).
    struct OpenPack {
        var spool: SpoolFile?
        var size = 0
        var blobs: [PackedBlob] = []
    }

    struct State {
        var open: [BlobType: OpenPack] = [:]
        /// Packs stored but not yet named in an index file.
        var unindexed: [IndexFile.Pack] = []
        var unindexedBlobs = 0
        var stats = Statistics()
    }

    /// What the writer stored.
    public struct Statistics: Sendable {
        public var dataBlobs = 0, treeBlobs = 0
        /// Plaintext bytes of new blobs.
        public var bytesAdded: UInt64 = 0
        /// Bytes of new blobs as stored (compressed and encrypted).
        public var bytesStored: UInt64 = 0
        public var packs = 0
        public var indexFiles: [ID] = []
    }

    private let state = Mutex(State())
    /// Packs being stored at once; a blob that fills a pack waits here, which slows readers down when
    /// storage is the bottleneck.
    private let uploadSlots: AsyncSemaphore
    /// Index files are written once this many blobs are waiting, so an interrupted run loses little.
    let indexFlushBlobs: Int

    /// When true, blobs are prepared and counted but nothing is stored.
    public let dryRun: Bool

    public init(repository: Repository, packSize: Int = 16 << 20, compression: CompressionMode = .auto,
                indexFlushBlobs: Int = 50_000, dryRun: Bool = false) {
        self.repository = repository
        self.dryRun = dryRun
        self.packSize = packSize
        self.compression = repository.version >= 2 ? compression : .off
        self.indexFlushBlobs = indexFlushBlobs
        uploadSlots = AsyncSemaphore(permits: min(4, max(2, repository.storage.properties.connections)))
    }

    public var statistics: Statistics { state.withLock { $0.stats } }

    /// Saves a blob unless the repository already has it. Returns true when it was stored now.
    @discardableResult
    public func save(_ type: BlobType, id: ID, plaintext: [UInt8]) async throws -> Bool {
        guard repository.index.reserve(id, type) else { return false }
        let (sealed, uncompressedLength) = plaintext.withUnsafeBytes { seal(type, $0) }
        return try await append(type, id: id, sealed: sealed, uncompressedLength: uncompressedLength, plaintextCount: plaintext.count)
    }

    /// Compresses (when it helps) and encrypts a blob.
    func seal(_ type: BlobType, _ plaintext: UnsafeRawBufferPointer) -> ([UInt8], UInt32) {
        // Trees always compress well; data is compressed unless the mode is off or it does not shrink.
        if repository.version >= 2 && (compression != .off || type == .tree) && plaintext.count > 64 {
            let compressed = Zstd.compress(plaintext, level: (compression == .max ? CompressionMode.max : .auto).level)
            if compressed.count < plaintext.count {
                return (compressed.withUnsafeBytes { repository.key.seal($0) }, UInt32(plaintext.count))
            }
        }
        return (repository.key.seal(plaintext), 0)
    }

    func append(_ type: BlobType, id: ID, sealed: [UInt8], uncompressedLength: UInt32, plaintextCount: Int) async throws -> Bool {
        let full: OpenPack? = try state.withLock { s throws(HavenError) -> OpenPack? in
            // Take the pack out of the dictionary, so appending to its blob list does not copy the list.
            var pack = s.open.removeValue(forKey: type) ?? OpenPack()
            if pack.spool == nil && !dryRun {
                do { pack.spool = try SpoolFile(in: repository.storage.spoolDirectory) } catch { throw Self.haven(error) }
            }
            do { try pack.spool?.write(sealed) } catch {
                // The pack is unusable now; its blobs were never stored.
                s.open[type] = nil
                pack.spool?.close()
                throw Self.haven(error)
            }
            pack.blobs.append(PackedBlob(id: id, type: type, offset: UInt32(pack.size), length: UInt32(sealed.count), uncompressedLength: uncompressedLength))
            pack.size += sealed.count
            if type == .data { s.stats.dataBlobs += 1 } else { s.stats.treeBlobs += 1 }
            s.stats.bytesAdded += UInt64(plaintextCount)
            s.stats.bytesStored += UInt64(sealed.count)
            // Count the header too, so a pack of many tiny blobs stays near the target size.
            if pack.size + pack.blobs.count * PackFormat.compressedEntrySize >= packSize {
                s.open[type] = nil
                return pack
            }
            s.open[type] = pack
            return nil
        }
        if let full { try await upload(full) }
        return true
    }

    static func haven(_ error: any Error) -> HavenError {
        (error as? HavenError) ?? HavenError(.io, "\(error)")
    }

    /// Saves a blob whose ID is the SHA-256 of its content.
    @discardableResult
    public func save(_ type: BlobType, plaintext: [UInt8]) async throws -> ID {
        let id = ID.hash(plaintext)
        try await save(type, id: id, plaintext: plaintext)
        return id
    }

    private func upload(_ pack: OpenPack) async throws {
        guard let spool = pack.spool else {
            state.withLock { $0.stats.packs += 1 }  // dry run
            return
        }
        defer { spool.close() }
        try await uploadSlots.withPermit {
            let id = try await repository.savePack(spool, blobs: pack.blobs)
            repository.cacheWrittenPack(id, spool: spool, blobs: pack.blobs)
            repository.index.add(pack: id, blobs: pack.blobs)
            let needIndex = state.withLock { s -> Bool in
                s.unindexed.append(IndexFile.Pack(id: id, blobs: pack.blobs))
                s.unindexedBlobs += pack.blobs.count
                s.stats.packs += 1
                return s.unindexedBlobs >= indexFlushBlobs
            }
            if needIndex { try await writeIndex() }
        }
    }

    /// Adds packs found in storage but missing from every index (left by an interrupted run) so that the
    /// next index file names them.
    public func adopt(_ packs: [IndexFile.Pack]) {
        state.withLock { s in
            s.unindexed.append(contentsOf: packs)
            s.unindexedBlobs += packs.reduce(0) { $0 + $1.blobs.count }
        }
    }

    private func writeIndex() async throws {
        let packs = state.withLock { s -> [IndexFile.Pack] in
            let p = s.unindexed
            s.unindexed = []
            s.unindexedBlobs = 0
            return p
        }
        guard !packs.isEmpty else { return }
        let id = try await repository.saveUnpacked(.index, IndexFile(packs: packs).encoded())
        state.withLock { $0.stats.indexFiles.append(id) }
    }

    /// Uploads the partly filled packs and writes the index files for everything stored. Call before
    /// saving anything that refers to the new blobs (a snapshot).
    public func flush() async throws {
        let packs = state.withLock { s -> [OpenPack] in
            let p = Array(s.open.values.filter { !$0.blobs.isEmpty })
            for empty in s.open.values where empty.blobs.isEmpty { empty.spool?.close() }
            s.open = [:]
            return p
        }
        for p in packs { try await upload(p) }
        try await writeIndex()
    }
}
