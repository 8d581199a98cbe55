import Synchronization

/// Writes already-sealed blobs (copied from other packs) into new packs, for repacking.
///
/// Unlike `BlobWriter` it does not consult the repository's index: the blobs it is given are in the
/// index already (in the packs being replaced) and must be written anyway. It records the new packs but
/// writes no index file; the caller describes them in the index it rewrites.
final class PackAssembler: Sendable {
    let repository: Repository
    let packSize: Int

    /// A pack being filled, written to a spool file.
    private struct OpenPack {
        var spool: SpoolFile
        var size = 0
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
        let full: OpenPack? = try state.withLock { s throws(HavenError) -> OpenPack? in
            // Taken out of the dictionary, so appending to its blob list does not copy the list.
            var pack: OpenPack
            if let open = s.open.removeValue(forKey: blob.type) {
                pack = open
            } else {
                do { pack = OpenPack(spool: try SpoolFile.forPack(of: repository.storage)) } catch { throw BlobWriter.haven(error) }
            }
            var b = blob
            b.offset = UInt32(pack.size)
            do { try pack.spool.write(sealed) } catch {
                pack.spool.close()
                throw BlobWriter.haven(error)
            }
            pack.blobs.append(b)
            pack.size += sealed.count
            if pack.size + pack.blobs.count * PackFormat.compressedEntrySize >= packSize { return pack }
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
        let spool = pack.spool
        defer { spool.close() }
        let id = try await repository.savePack(spool, blobs: pack.blobs)
        state.withLock { s in
            s.written.append(IndexFile.Pack(id: id, blobs: pack.blobs))
            s.bytesWritten += UInt64(spool.size)
        }
    }
}
