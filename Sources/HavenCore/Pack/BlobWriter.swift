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

    struct OpenPack {
        var bytes: [UInt8] = []
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
        var payload: [UInt8]
        var uncompressedLength: UInt32 = 0
        // Trees always compress well; data is compressed unless the mode is off or it does not shrink.
        if repository.version >= 2 && (compression != .off || type == .tree) && plaintext.count > 64 {
            let compressed = Zstd.compress(plaintext, level: (compression == .max ? CompressionMode.max : .auto).level)
            if compressed.count < plaintext.count {
                payload = compressed
                uncompressedLength = UInt32(plaintext.count)
            } else {
                payload = Array(plaintext)
            }
        } else {
            payload = Array(plaintext)
        }
        return (payload.withUnsafeBytes { repository.key.seal($0) }, uncompressedLength)
    }

    func append(_ type: BlobType, id: ID, sealed: [UInt8], uncompressedLength: UInt32, plaintextCount: Int) async throws -> Bool {
        let full: OpenPack? = state.withLock { s in
            // Take the pack out of the dictionary so appending does not copy the whole buffer.
            var pack = s.open.removeValue(forKey: type) ?? OpenPack()
            if pack.bytes.isEmpty { pack.bytes.reserveCapacity(packSize + sealed.count + 4096) }
            pack.blobs.append(PackedBlob(id: id, type: type, offset: UInt32(pack.bytes.count), length: UInt32(sealed.count), uncompressedLength: uncompressedLength))
            pack.bytes.append(contentsOf: sealed)
            if type == .data { s.stats.dataBlobs += 1 } else { s.stats.treeBlobs += 1 }
            s.stats.bytesAdded += UInt64(plaintextCount)
            s.stats.bytesStored += UInt64(sealed.count)
            if pack.bytes.count >= packSize {
                s.open[type] = nil
                return pack
            }
            s.open[type] = pack
            return nil
        }
        if let full { try await upload(full) }
        return true
    }

    /// Saves a blob whose ID is the SHA-256 of its content.
    @discardableResult
    public func save(_ type: BlobType, plaintext: [UInt8]) async throws -> ID {
        let id = ID.hash(plaintext)
        try await save(type, id: id, plaintext: plaintext)
        return id
    }

    private func upload(_ pack: OpenPack) async throws {
        var bytes = pack.bytes
        let header = repository.key.seal(PackFormat.encodeHeader(pack.blobs))
        bytes.append(contentsOf: header)
        PackFormat.appendLE(&bytes, UInt32(header.count))
        let id = ID.hash(bytes)
        if dryRun {
            state.withLock { $0.stats.packs += 1 }
            return
        }
        try await repository.storage.save(Handle(.pack, id), bytes)
        repository.index.add(pack: id, blobs: pack.blobs)
        let needIndex = state.withLock { s -> Bool in
            s.unindexed.append(IndexFile.Pack(id: id, blobs: pack.blobs))
            s.unindexedBlobs += pack.blobs.count
            s.stats.packs += 1
            return s.unindexedBlobs >= indexFlushBlobs
        }
        if needIndex { try await writeIndex() }
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
            s.open = [:]
            return p
        }
        for p in packs { try await upload(p) }
        try await writeIndex()
    }
}
