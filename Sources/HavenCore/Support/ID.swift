import Crypto

/// A 32-byte SHA-256 identifier: of a blob's plaintext, or of a stored file's bytes.
public struct ID: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    // Four words keep IDs inline (no heap) and make hashing and comparison cheap.
    public var w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    public init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) {
        self.w0 = w0; self.w1 = w1; self.w2 = w2; self.w3 = w3
    }

    /// Reads 32 bytes. Precondition: `bytes.count >= 32`.
    public init(bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count >= 32)
        w0 = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        w1 = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        w2 = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        w3 = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
    }

    public init<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        let array = Array(bytes)
        self = array.withUnsafeBytes { ID(bytes: $0) }
    }

    /// Parses 64 hex digits; nil for anything else.
    public init?(hex: some StringProtocol) {
        guard let bytes = Hex.decode(hex), bytes.count == 32 else { return nil }
        self.init(bytes)
    }

    /// The SHA-256 of `data`.
    public static func hash(_ data: UnsafeRawBufferPointer) -> ID {
        let digest = SHA256.hash(data: data)
        return digest.withUnsafeBytes { ID(bytes: $0) }
    }

    public static func hash(_ data: [UInt8]) -> ID {
        data.withUnsafeBytes { hash($0) }
    }

    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        out.withUnsafeMutableBytes { p in
            p.storeBytes(of: w0.bigEndian, toByteOffset: 0, as: UInt64.self)
            p.storeBytes(of: w1.bigEndian, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: w2.bigEndian, toByteOffset: 16, as: UInt64.self)
            p.storeBytes(of: w3.bigEndian, toByteOffset: 24, as: UInt64.self)
        }
        return out
    }

    public var hex: String { Hex.encode(bytes) }
    /// The first 8 hex digits, as restic shows IDs in lists.
    public var short: String { String(hex.prefix(8)) }
    public var description: String { hex }

    public static func < (a: ID, b: ID) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let id = ID(hex: s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a 64-digit hex ID: \(s.prefix(80))")
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(hex)
    }
}

public enum Hex {
    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ s: some StringProtocol) -> [UInt8]? {
        let u = Array(s.utf8)
        guard u.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let hi = nibble(u[i]), let lo = nibble(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
