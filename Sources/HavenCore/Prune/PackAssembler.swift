import Synchronization

/// Writes already-sealed blobs (copied from other packs) into new packs, for repacking.
///
/// Unlike `BlobWriter` it does not consult the repository's index: the blobs it is given are in the
/// index already (in the packs being replaced) and must be written anyway. It records the new packs but
/// writes no index file; the caller describes them in the index it rewrites.
final class PackAssembler: Sendable {
    let repository: Repository
    let packSize: Int

    private struct OpenPack {
        var bytes: [UInt8] = []
        var blobs: [PackedBlob] = []
    }

    private struct State {
        var open: [BlobType: OpenPack] = [:]
        var written: [IndexFile.Pack] = []
        var bytesWritten: UInt64 = 0
    }

    private let state = Mutex(State())

    init(repository: Repository, packSize: Int) {
        self.repository = repository
        self.packSize = max(1, packSize)
    }

    /// Packs stored so far, with their blobs.
    var packs: [IndexFile.Pack] { state.withLock { $0.written } }
    var bytesWritten: UInt64 { state.withLock { $0.bytesWritten } }

    /// Appends one sealed blob described by `blob` (its offset is ignored). Uploads a pack once it is full.
    func add(_ blob: PackedBlob, sealed: [UInt8]) async throws {
        precondition(sealed.count == Int(blob.length))
        let full: OpenPack? = state.withLock { s in
            var pack = s.open[blob.type] ?? OpenPack()
            var b = blob
            b.offset = UInt32(pack.bytes.count)
            pack.blobs.append(b)
            pack.bytes.append(contentsOf: sealed)
            if pack.bytes.count >= packSize {
                s.open[blob.type] = nil
                return pack
            }
            s.open[blob.type] = pack
            return nil
        }
        if let full { try await upload(full) }
    }

    /// Uploads the partly filled packs.
    func flush() async throws {
        let rest = state.withLock { s -> [OpenPack] in
            let p = [BlobType.tree, .data].compactMap { s.open[$0] }.filter { !$0.blobs.isEmpty }
            s.open = [:]
            return p
        }
        for p in rest { try await upload(p) }
    }

    private func upload(_ pack: OpenPack) async throws {
        var bytes = pack.bytes
        let header = repository.key.seal(PackFormat.encodeHeader(pack.blobs))
        bytes.append(contentsOf: header)
        PackFormat.appendLE(&bytes, UInt32(header.count))
        let id = ID.hash(bytes)
        try await repository.storage.save(Handle(.pack, id), bytes)
        state.withLock { s in
            s.written.append(IndexFile.Pack(id: id, blobs: pack.blobs))
            s.bytesWritten += UInt64(bytes.count)
        }
    }
}
