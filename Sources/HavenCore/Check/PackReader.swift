/// Sizes and headers of pack files.
enum PackReader {
    /// Size of one header entry for `blob` in the plaintext header.
    static func headerEntrySize(_ blob: PackedBlob) -> Int {
        blob.isCompressed ? PackFormat.compressedEntrySize : PackFormat.plainEntrySize
    }

    /// The size a pack holding exactly `blobs` (contiguous, in any order) has on disk.
    static func expectedSize(_ blobs: [PackedBlob]) -> Int {
        blobs.reduce(0) { $0 + Int($1.length) + headerEntrySize($1) } + MasterKey.overhead + 4
    }

    /// The length of the sealed header recorded in the last 4 bytes of `tail`, the end of a pack of `total`
    /// bytes. Throws `.corrupt` naming the pack when it is too short or too large, or the length is invalid.
    static func headerLength(tail: [UInt8], total: Int, id: ID) throws -> Int {
        guard total >= 4 + MasterKey.overhead, tail.count >= 4 else {
            throw HavenError(.corrupt, "pack \(id.short) is too short (\(total) bytes) to hold a header")
        }
        // Blob offsets are 32-bit; anything larger is not a pack this format can describe.
        guard total <= Int(UInt32.max) else {
            throw HavenError(.corrupt, "pack \(id.short) is too large (\(total) bytes) for the pack format")
        }
        let length = tail.withUnsafeBytes { Int(PackFormat.readLE($0, tail.count - 4)) }
        guard length >= MasterKey.overhead, length <= total - 4, length <= PackFormat.maxHeaderSize else {
            throw HavenError(.corrupt, "pack \(id.short) has an invalid header length \(length)")
        }
        return length
    }

    /// Decodes the header from `tail`: the last bytes of a pack of `total` bytes, at least the header and
    /// its length field (a whole pack will do). Throws `.corrupt` naming the pack for any malformed length,
    /// a header that does not authenticate, or entries that do not fit.
    static func header(tail: [UInt8], total: Int, id: ID, key: MasterKey) throws -> [PackedBlob] {
        let length = try headerLength(tail: tail, total: total, id: id)
        guard tail.count >= length + 4 else {
            throw HavenError(.corrupt, "pack \(id.short): \(tail.count) bytes read from its end do not hold its \(length)-byte header")
        }
        let plain: [UInt8]
        do {
            plain = try tail.withUnsafeBytes { try key.open(UnsafeRawBufferPointer(rebasing: $0[(tail.count - 4 - length)..<(tail.count - 4)])) }
        } catch {
            throw HavenError(.corrupt, "pack \(id.short) has a damaged header (MAC mismatch)")
        }
        return try PackFormat.decodeHeader(plain, pack: id, headerStart: total - 4 - length)
    }
}
