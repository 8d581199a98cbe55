import HavenCore

/// SFTP version 3 message types and constants (draft-ietf-secsh-filexfer-02).
enum SFTP {
    static let initType: UInt8 = 1, version: UInt8 = 2, open: UInt8 = 3, close: UInt8 = 4, read: UInt8 = 5
    static let write: UInt8 = 6, lstat: UInt8 = 7, fstat: UInt8 = 8, opendir: UInt8 = 11, readdir: UInt8 = 12
    static let remove: UInt8 = 13, mkdir: UInt8 = 14, rmdir: UInt8 = 15, realpath: UInt8 = 16, stat: UInt8 = 17
    static let rename: UInt8 = 18, extended: UInt8 = 200
    static let status: UInt8 = 101, handle: UInt8 = 102, data: UInt8 = 103, name: UInt8 = 104, attrs: UInt8 = 105
    static let extendedReply: UInt8 = 201

    static let openRead: UInt32 = 0x1, openWrite: UInt32 = 0x2, openCreate: UInt32 = 0x8
    static let openTruncate: UInt32 = 0x10, openExclusive: UInt32 = 0x20

    static let ok: UInt32 = 0, eof: UInt32 = 1, noSuchFile: UInt32 = 2, permissionDenied: UInt32 = 3

    static let attrSize: UInt32 = 0x1, attrUIDGID: UInt32 = 0x2, attrPermissions: UInt32 = 0x4
    static let attrTimes: UInt32 = 0x8, attrExtended: UInt32 = 0x8000_0000

    /// Largest packet accepted from the server (a 256 KiB payload plus headers).
    static let maxPacket = 256 * 1024 + 1024
    /// Data per READ or WRITE request: at least what every server accepts, at most what fits a packet.
    static let minimumChunk = 32 * 1024, maximumChunk = 256 * 1024
    /// Bytes kept in flight per transfer, so a round trip never leaves the link idle.
    static let inFlightBytes = 4 << 20
}

/// Builds one length-prefixed packet.
struct PacketWriter {
    private(set) var bytes: [UInt8] = [0, 0, 0, 0]

    init(type: UInt8) { bytes.append(type) }

    mutating func u32(_ v: UInt32) {
        bytes.append(UInt8(v >> 24)); bytes.append(UInt8(v >> 16 & 0xff))
        bytes.append(UInt8(v >> 8 & 0xff)); bytes.append(UInt8(v & 0xff))
    }
    mutating func u64(_ v: UInt64) { u32(UInt32(v >> 32)); u32(UInt32(v & 0xffff_ffff)) }
    mutating func string<C: Collection>(_ s: C) where C.Element == UInt8 {
        u32(UInt32(s.count))
        bytes.append(contentsOf: s)
    }
    mutating func string(_ s: String) { string(Array(s.utf8)) }
    /// An ATTRS block with only the given permissions, or none.
    mutating func attrs(permissions: UInt32?) {
        if let permissions {
            u32(SFTP.attrPermissions)
            u32(permissions)
        } else {
            u32(0)
        }
    }

    /// The packet with its length filled in.
    func finished() -> [UInt8] {
        var out = bytes
        let n = UInt32(out.count - 4)
        out[0] = UInt8(n >> 24); out[1] = UInt8(n >> 16 & 0xff); out[2] = UInt8(n >> 8 & 0xff); out[3] = UInt8(n & 0xff)
        return out
    }
}

struct SFTPProtocolError: Error, CustomStringConvertible, Sendable {
    var description: String
}

/// Bounds-checked reading of a received packet body; every read that would run past the end throws.
struct PacketReader {
    let bytes: [UInt8]
    private(set) var position: Int

    init(_ bytes: [UInt8], position: Int = 0) {
        self.bytes = bytes
        self.position = position
    }

    var remaining: Int { bytes.count - position }

    private func need(_ n: Int, _ what: String) throws {
        guard n >= 0, n <= remaining else {
            throw SFTPProtocolError(description: "malformed SFTP packet: \(what) needs \(n) bytes, \(remaining) left")
        }
    }

    mutating func u8() throws -> UInt8 {
        try need(1, "byte")
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u32() throws -> UInt32 {
        try need(4, "uint32")
        defer { position += 4 }
        return UInt32(bytes[position]) << 24 | UInt32(bytes[position + 1]) << 16 | UInt32(bytes[position + 2]) << 8 | UInt32(bytes[position + 3])
    }

    mutating func u64() throws -> UInt64 {
        let hi = try u32(), lo = try u32()
        return UInt64(hi) << 32 | UInt64(lo)
    }

    mutating func string() throws -> ArraySlice<UInt8> {
        let n = Int(try u32())
        try need(n, "string")
        defer { position += n }
        return bytes[position..<(position + n)]
    }

    mutating func text() throws -> String { String(decoding: try string(), as: UTF8.self) }

    mutating func attrs() throws -> FileAttributes {
        var a = FileAttributes()
        let flags = try u32()
        if flags & SFTP.attrSize != 0 { a.size = try u64() }
        if flags & SFTP.attrUIDGID != 0 { _ = try u32(); _ = try u32() }
        if flags & SFTP.attrPermissions != 0 { a.permissions = try u32() }
        if flags & SFTP.attrTimes != 0 { _ = try u32(); _ = try u32() }
        if flags & SFTP.attrExtended != 0 {
            let count = try u32()
            for _ in 0..<count { _ = try string(); _ = try string() }
        }
        return a
    }
}

struct FileAttributes: Sendable {
    var size: UInt64?
    var permissions: UInt32?
    var isDirectory: Bool { permissions.map { $0 & 0o170000 == 0o040000 } ?? false }
    var isRegular: Bool { permissions.map { $0 & 0o170000 == 0o100000 } ?? true }
}

/// A reply from the server: its type and the body after the request id.
struct Response: Sendable {
    var type: UInt8
    var id: UInt32
    var body: [UInt8]
    /// Offset in `body` where the payload after the id starts.
    var payloadStart: Int

    var reader: PacketReader { PacketReader(body, position: payloadStart) }
}
