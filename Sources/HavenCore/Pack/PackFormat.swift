/// Data blobs hold file content; tree blobs hold directory listings. They never share a pack.
public enum BlobType: String, Sendable, Hashable, CaseIterable {
    case data, tree
}

/// Where a blob lives inside a pack, as the pack header and the index record it.
public struct PackedBlob: Sendable, Hashable {
    public var id: ID
    public var type: BlobType
    public var offset: UInt32
    /// Length of the encrypted (and possibly compressed) bytes in the pack.
    public var length: UInt32
    /// Length of the plaintext when the blob is compressed; 0 when it is not.
    public var uncompressedLength: UInt32

    public init(id: ID, type: BlobType, offset: UInt32, length: UInt32, uncompressedLength: UInt32) {
        self.id = id; self.type = type; self.offset = offset; self.length = length
        self.uncompressedLength = uncompressedLength
    }

    public var isCompressed: Bool { uncompressedLength != 0 }
    /// The plaintext size.
    public var dataLength: UInt32 { isCompressed ? uncompressedLength : length - UInt32(MasterKey.overhead) }
}

/// The pack file layout: blobs, then the encrypted header, then the header's length (4 bytes, LE).
public enum PackFormat {
    static let plainEntrySize = 1 + 4 + 32
    static let compressedEntrySize = 1 + 4 + 4 + 32
    /// Largest header Haven will read (a 128 MiB pack of tiny blobs stays far below it).
    static let maxHeaderSize = 16 << 20

    /// Encodes the plaintext header for `blobs` (in pack order).
    public static func encodeHeader(_ blobs: [PackedBlob]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(blobs.count * compressedEntrySize)
        for b in blobs {
            let typeByte: UInt8 = (b.type == .data ? 0 : 1) | (b.isCompressed ? 2 : 0)
            out.append(typeByte)
            appendLE(&out, b.length)
            if b.isCompressed { appendLE(&out, b.uncompressedLength) }
            out.append(contentsOf: b.id.bytes)
        }
        return out
    }

    static func appendLE(_ out: inout [UInt8], _ v: UInt32) {
        out.append(UInt8(v & 0xff)); out.append(UInt8(v >> 8 & 0xff))
        out.append(UInt8(v >> 16 & 0xff)); out.append(UInt8(v >> 24))
    }

    static func readLE(_ b: UnsafeRawBufferPointer, _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }

    /// Decodes a decrypted header; offsets follow from the lengths. Throws `.corrupt` naming `pack` when the
    /// header is malformed or describes blobs beyond `headerStart` (the first byte of the encrypted header).
    public static func decodeHeader(_ header: [UInt8], pack: ID, headerStart: Int) throws -> [PackedBlob] {
        var blobs: [PackedBlob] = []
        var offset: UInt64 = 0
        try header.withUnsafeBytes { b in
            var i = 0
            while i < b.count {
                let t = b[i]
                guard t <= 3 else { throw HavenError(.corrupt, "pack \(pack.short) has an invalid header: unknown blob type \(t)") }
                let compressed = t & 2 != 0
                let size = compressed ? compressedEntrySize : plainEntrySize
                guard i + size <= b.count else { throw HavenError(.corrupt, "pack \(pack.short) has a truncated header") }
                let length = readLE(b, i + 1)
                let ulen = compressed ? readLE(b, i + 5) : 0
                let id = ID(bytes: UnsafeRawBufferPointer(rebasing: b[(i + size - 32)..<(i + size)]))
                guard length >= UInt32(MasterKey.overhead) else {
                    throw HavenError(.corrupt, "pack \(pack.short) header lists blob \(id.short) with impossible length \(length)")
                }
                guard offset + UInt64(length) <= UInt64(headerStart) else {
                    throw HavenError(.corrupt, "pack \(pack.short) header lists blob \(id.short) beyond the end of the blob area")
                }
                guard offset <= UInt64(UInt32.max) else {
                    throw HavenError(.corrupt, "pack \(pack.short) header lists blob \(id.short) at offset \(offset), beyond the 4 GiB a pack may hold")
                }
                blobs.append(PackedBlob(id: id, type: t & 1 == 0 ? .data : .tree, offset: UInt32(offset), length: length, uncompressedLength: ulen))
                offset += UInt64(length)
                i += size
            }
        }
        return blobs
    }
}
