/// Reads a whole pack file held in memory.
enum PackReader {
    /// Size of one header entry for `blob` in the plaintext header.
    static func headerEntrySize(_ blob: PackedBlob) -> Int {
        blob.isCompressed ? PackFormat.compressedEntrySize : PackFormat.plainEntrySize
    }

    /// The size a pack holding exactly `blobs` (contiguous, in any order) has on disk.
    static func expectedSize(_ blobs: [PackedBlob]) -> Int {
        blobs.reduce(0) { $0 + Int($1.length) + headerEntrySize($1) } + MasterKey.overhead + 4
    }

    /// Decodes the header of `pack` (its complete bytes). Throws `.corrupt` naming the pack for any
    /// malformed length, a header that does not authenticate, or entries that do not fit.
    static func header(of pack: [UInt8], id: ID, key: MasterKey) throws -> [PackedBlob] {
        let total = pack.count
        guard total >= 4 + MasterKey.overhead else {
            throw HavenError(.corrupt, "pack \(id.short) is too short (\(total) bytes) to hold a header")
        }
        // Blob offsets are 32-bit; anything larger is not a pack this format can describe.
        guard total <= Int(UInt32.max) else {
            throw HavenError(.corrupt, "pack \(id.short) is too large (\(total) bytes) for the pack format")
        }
        return try pack.withUnsafeBytes { b -> [PackedBlob] in
            let headerLength = Int(PackFormat.readLE(b, total - 4))
            guard headerLength >= MasterKey.overhead, headerLength <= total - 4, headerLength <= PackFormat.maxHeaderSize else {
                throw HavenError(.corrupt, "pack \(id.short) has an invalid header length \(headerLength)")
            }
            let start = total - 4 - headerLength
            let plain: [UInt8]
            do { plain = try key.open(UnsafeRawBufferPointer(rebasing: b[start..<(total - 4)])) } catch {
                throw HavenError(.corrupt, "pack \(id.short) has a damaged header (MAC mismatch)")
            }
            return try PackFormat.decodeHeader(plain, pack: id, headerStart: start)
        }
    }
}
