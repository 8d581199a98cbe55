import Synchronization

/// Writes new blobs into packs and packs into storage, then records them in index files.
///
/// Compression and encryption run in the caller's task, so callers that save blobs concurrently use all
/// cores. Each caller writes into a pack of its own while it appends (an idle open pack, or a new one), so
/// concurrent callers never wait for each other's writes; there are at most as many open packs per blob
/// type as callers appending at once, and `flush()` joins the partly filled ones. A pack is uploaded by the
/// task whose blob filled it, which gives natural backpressure. Nothing becomes visible to readers until
/// `flush()` has written the index files naming the uploaded packs.
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
        /// Open packs no caller is writing into, by blob type.
        var idle: [BlobType: [OpenPack]] = [:]
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
    public func save<P: BlobPlaintext>(_ type: BlobType, id: ID, plaintext: P) async throws -> Bool {
        guard repository.index.reserve(id, type) else { return false }
        let (sealed, uncompressedLength) = plaintext.withUnsafeBytes { seal(type, $0) }
        return try await append(type, id: id, sealed: sealed, uncompressedLength: uncompressedLength, plaintextCount: plaintext.count)
    }

    /// Compresses (when it helps) and encrypts a blob.
    func seal(_ type: BlobType, _ plaintext: UnsafeRawBufferPointer) -> ([UInt8], UInt32) {
        // Trees always compress well; data is compressed unless the mode is off or it does not shrink.
        // In auto mode a large data blob is first probed, and one that looks incompressible (media,
        // archives, encrypted files) is stored as it is without compressing all of it.
        if repository.version >= 2 && (compression != .off || type == .tree) && plaintext.count > 64
            && !(type == .data && compression == .auto && Self.looksIncompressible(plaintext)) {
            let compressed = Zstd.compress(plaintext, level: (compression == .max ? CompressionMode.max : .auto).level)
            if compressed.count < plaintext.count {
                return (compressed.withUnsafeBytes { repository.key.seal($0) }, UInt32(plaintext.count))
            }
        }
        return (repository.key.seal(plaintext), 0)
    }

    /// The probe's samples: this many, of this size, spread evenly from the first byte to the last.
    static let probeSamples = 8
    static let probeSampleSize = 16 << 10

    /// Whether `plaintext` looks incompressible: it is at least 512 KiB (the chunker's minimum; smaller
    /// blobs are compressed whole) and not one of `probeSamples` samples, compressed on its own, shrinks
    /// at all. The samples are a quarter of the blob or less (an eighth on average), and incompressible
    /// data is where zstd is fastest, so the probe costs little; data that shrinks in any sample is
    /// compressed whole as before. Measured on the Swift toolchain's binaries: 0.3% more stored than
    /// compressing every blob (4 KiB samples, or a 3% threshold, lost 0.8–2.3%).
    static func looksIncompressible(_ plaintext: UnsafeRawBufferPointer) -> Bool {
        let size = probeSampleSize
        guard plaintext.count >= 512 * 1024 else { return false }
        let step = (plaintext.count - size) / (probeSamples - 1)
        for k in 0..<probeSamples {
            let sample = UnsafeRawBufferPointer(rebasing: plaintext[(k * step)..<(k * step + size)])
            if Zstd.compressedSize(sample, level: CompressionMode.auto.level) < size { return false }
        }
        return true
    }

    func append(_ type: BlobType, id: ID, sealed: [UInt8], uncompressedLength: UInt32, plaintextCount: Int) async throws -> Bool {
        // Take an idle pack (moved out, so appending to its blob list does not copy the list) and write
        // into it without holding the lock.
        var pack = state.withLock { $0.idle[type]?.popLast() } ?? OpenPack()
        if pack.spool == nil && !dryRun {
            do { pack.spool = try SpoolFile.forPack(of: repository.storage) } catch { throw Self.haven(error) }
        }
        do { try pack.spool?.write(sealed) } catch {
            // The pack is unusable now; its blobs were never stored.
            pack.spool?.close()
            throw Self.haven(error)
        }
        pack.blobs.append(PackedBlob(id: id, type: type, offset: UInt32(pack.size), length: UInt32(sealed.count), uncompressedLength: uncompressedLength))
        pack.size += sealed.count
        // Count the header too, so a pack of many tiny blobs stays near the target size.
        let full = pack.size + pack.blobs.count * PackFormat.compressedEntrySize >= packSize
        let idle: OpenPack? = full ? nil : pack
        state.withLock { s in
            if type == .data { s.stats.dataBlobs += 1 } else { s.stats.treeBlobs += 1 }
            s.stats.bytesAdded += UInt64(plaintextCount)
            s.stats.bytesStored += UInt64(sealed.count)
            if let idle { s.idle[type, default: []].append(idle) }
        }
        if full { try await upload(pack) }
        return true
    }

    /// Joins partly filled packs of one type, largest first, each into the first joined pack with room, so
    /// a backup ends with about as few small packs as one writer would leave. Copies sealed blobs as they are.
    func joined(_ packs: [OpenPack]) throws -> [OpenPack] {
        var out: [OpenPack] = []
        for pack in packs.sorted(by: { $0.size > $1.size }) {
            let room = { (p: OpenPack) in
                p.size + pack.size + (p.blobs.count + pack.blobs.count) * PackFormat.compressedEntrySize <= self.packSize
            }
            guard let i = out.firstIndex(where: room) else {
                out.append(pack)
                continue
            }
            if let target = out[i].spool, let source = pack.spool {  // none in a dry run
                do { try target.append(contentsOf: source) } catch { throw Self.haven(error) }
                source.close()
            }
            let base = UInt32(out[i].size)
            for var b in pack.blobs {
                b.offset += base
                out[i].blobs.append(b)
            }
            out[i].size += pack.size
        }
        return out
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
        let idle = state.withLock { s -> [[OpenPack]] in
            defer { s.idle = [:] }
            return BlobType.allCases.compactMap { s.idle[$0] }
        }
        // An idle pack always holds at least one blob: `append` only parks a pack after writing into it.
        for packs in idle {
            for p in try joined(packs) { try await upload(p) }
        }
        try await writeIndex()
    }
}
