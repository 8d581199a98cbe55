import CHavenShims
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

    /// Parses 64 hex digits (either case); nil for anything else.
    public init?(hex: some StringProtocol) {
        let id = hex.utf8.withContiguousStorageIfAvailable { ID(hexDigits: $0) }
            ?? Array(hex.utf8).withUnsafeBufferPointer { ID(hexDigits: $0) }
        guard let id else { return nil }
        self = id
    }

    /// Parses exactly 64 hex digits (either case) straight from bytes; nil for anything else.
    init?(hexDigits b: UnsafeBufferPointer<UInt8>) {
        guard b.count == 64, let base = b.baseAddress,
              let w0 = Hex.word(base), let w1 = Hex.word(base + 16),
              let w2 = Hex.word(base + 32), let w3 = Hex.word(base + 48) else { return nil }
        self.init(w0: w0, w1: w1, w2: w2, w3: w3)
    }

    /// Writes the 64 lowercase hex digits to `p`.
    func writeHex(to p: UnsafeMutablePointer<UInt8>) {
        Hex.writeWord(w0, to: p)
        Hex.writeWord(w1, to: p + 16)
        Hex.writeWord(w2, to: p + 32)
        Hex.writeWord(w3, to: p + 48)
    }

    /// The SHA-256 of `data`: with the SHA extensions, CHavenShims' code (about 1.2× BoringSSL's here);
    /// elsewhere swift-crypto's.
    public static func hash(_ data: UnsafeRawBufferPointer) -> ID {
        guard hashesInHardware else {
            return SHA256.hash(data: data).withUnsafeBytes { ID(bytes: $0) }
        }
        var id = ID(w0: 0, w1: 0, w2: 0, w3: 0)
        withUnsafeTemporaryAllocation(byteCount: 32, alignment: 8) { out in
            haven_sha256(data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count,
                         out.baseAddress!.assumingMemoryBound(to: UInt8.self))
            id = ID(bytes: UnsafeRawBufferPointer(out))
        }
        return id
    }

    public static func hash(_ data: [UInt8]) -> ID {
        data.withUnsafeBytes { hash($0) }
    }

    /// Whether `hash`, `StreamingSHA256` and `SHA256Lanes` use CHavenShims' SHA-256 (x86-64 with the
    /// SHA extensions).
    static let hashesInHardware = haven_sha256_hw_available() != 0

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

    public var hex: String {
        String(unsafeUninitializedCapacity: 64) { buf in
            writeHex(to: buf.baseAddress!)
            return 64
        }
    }
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

    /// The value of one hex digit (either case), or a value above 15 for any other byte. Branch-light.
    @inline(__always)
    static func nibbleOrInvalid(_ c: UInt8) -> UInt8 {
        let digit = c &- UInt8(ascii: "0")
        if digit < 10 { return digit }
        let letter = (c | 0x20) &- UInt8(ascii: "a")
        return letter < 6 ? letter + 10 : 0xff
    }

    /// 16 hex digits at `p` as a big-endian word; nil if any of them is not a hex digit.
    @inline(__always)
    static func word(_ p: UnsafePointer<UInt8>) -> UInt64? {
        guard let high = half(UnsafeRawPointer(p)), let low = half(UnsafeRawPointer(p + 8)) else { return nil }
        return high << 32 | low
    }

    /// 8 hex digits at `p` as a 32-bit value, eight bytes at a time without branches per digit; nil if
    /// any byte is not a hex digit.
    @inline(__always)
    private static func half(_ p: UnsafeRawPointer) -> UInt64? {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        // Byte k is the k-th digit.
        let x = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
        // Every byte below 0x80 keeps the additions below within their byte. A byte's high bit then says:
        // x >= "0", x > "9", (x | 0x20) >= "a", (x | 0x20) > "f".
        let lower = x | (ones &* 0x20)
        let isDigit = (x &+ ones &* (0x80 - 0x30)) & ~(x &+ ones &* (0x7f - 0x39))
        let isLetter = (lower &+ ones &* (0x80 - 0x61)) & ~(lower &+ ones &* (0x7f - 0x66))
        guard x & highs == 0, (isDigit | isLetter) & highs == highs else { return nil }
        // "0"…"9" → 0…9; "a"…"f" and "A"…"F" have bit 6 set and low bits 1…6 → 10…15.
        let nibbles = (x & (ones &* 0x0f)) &+ ((x >> 6) & ones) &* 9
        // Gather the nibbles, first digit most significant.
        var v = nibbles.byteSwapped
        v = (v | v >> 4) & 0x00ff_00ff_00ff_00ff
        v = (v | v >> 8) & 0x0000_ffff_0000_ffff
        v = (v | v >> 16) & 0x0000_0000_ffff_ffff
        return v
    }

    /// Writes `w` as 16 lowercase hex digits to `p`.
    @inline(__always)
    static func writeWord(_ w: UInt64, to p: UnsafeMutablePointer<UInt8>) {
        let raw = UnsafeMutableRawPointer(p)
        raw.storeBytes(of: digits(UInt32(truncatingIfNeeded: w >> 32)).littleEndian, as: UInt64.self)
        (raw + 8).storeBytes(of: digits(UInt32(truncatingIfNeeded: w)).littleEndian, as: UInt64.self)
    }

    /// The 8 lowercase hex digits of `v`, first digit in the lowest byte (the reverse of `half`).
    @inline(__always)
    private static func digits(_ v: UInt32) -> UInt64 {
        let ones: UInt64 = 0x0101_0101_0101_0101
        // Spread the nibbles one per byte, first digit most significant, then put it first in memory.
        var x = UInt64(v)
        x = (x | x << 16) & 0x0000_ffff_0000_ffff
        x = (x | x << 8) & 0x00ff_00ff_00ff_00ff
        x = (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f
        x = x.byteSwapped
        // 0…9 → "0"…"9", 10…15 → "a"…"f" ("a" is 39 past "9" + 1).
        let letters = ((x &+ ones &* 6) >> 4) & ones
        return x &+ ones &* 0x30 &+ letters &* 39
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
