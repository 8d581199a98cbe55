// Sealed format, as restic: IV(16, random) || AES-256-CTR(ciphertext, IV as full 128-bit big-endian counter)
// || Poly1305-AES MAC(16) over the ciphertext only, with nonce = IV.
import CHavenShims
import Foundation
import Synchronization

/// A repository's master key: AES-256-CTR encryption plus Poly1305-AES authentication, as restic.
public struct MasterKey: Sendable, Equatable {
    /// AES-256 key for the CTR-mode encryption.
    public var encryptionKey: [UInt8] {  // 32 bytes
        didSet { hardware = AESHardwareKeys.make(encryptionKey: encryptionKey, macK: macK) }
    }
    /// AES-128 key that encrypts the IV into Poly1305's s.
    public var macK: [UInt8] {           // 16 bytes
        didSet { hardware = AESHardwareKeys.make(encryptionKey: encryptionKey, macK: macK) }
    }
    /// Poly1305's r. `random()` clamps it; keys read from restic may be stored unclamped, which is
    /// harmless because Poly1305 clamps r when it uses it.
    public var macR: [UInt8]           // 16 bytes, clamped as Poly1305 requires

    /// Bytes `seal` adds: 16 IV + 16 MAC.
    public static let overhead = 32

    /// The two AES keys expanded for the CPU's AES instructions (nil without them, or for malformed keys).
    private var hardware: AESHardwareKeys?

    /// A key from its parts (32, 16 and 16 bytes; `seal` traps and `open` throws on other sizes).
    public init(encryptionKey: [UInt8], macK: [UInt8], macR: [UInt8]) {
        self.encryptionKey = encryptionKey; self.macK = macK; self.macR = macR
        hardware = AESHardwareKeys.make(encryptionKey: encryptionKey, macK: macK)
    }

    public static func == (a: MasterKey, b: MasterKey) -> Bool {
        a.encryptionKey == b.encryptionKey && a.macK == b.macK && a.macR == b.macR
    }

    /// Whether sealing and opening use the CPU's AES instructions.
    var usesAESInstructions: Bool { hardware != nil }

    /// AES-256-CTR under the encryption key.
    func ctr(iv: UnsafeRawBufferPointer, input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer) {
        if let hardware {
            hardware.ctr(iv: iv, input: input, output: output)
        } else {
            AESPrimitives.ctr(key: encryptionKey, iv: iv, input: input, output: output)
        }
    }

    /// The Poly1305-AES tag of `message` with `nonce` (the IV).
    func tag(_ message: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer) -> (UInt64, UInt64) {
        AESPrimitives.poly1305AES(message: message, k: macK, r: macR, nonce: nonce, hardware: hardware)
    }

    /// A new key from the system's CSPRNG.
    public static func random() -> MasterKey {
        var rng = SystemRandomNumberGenerator()
        var r = randomBytes(16, using: &rng)
        clamp(&r)
        return MasterKey(encryptionKey: randomBytes(32, using: &rng), macK: randomBytes(16, using: &rng), macR: r)
    }

    /// Encrypts and authenticates `plaintext`: returns IV || ciphertext || MAC.
    public func seal(_ plaintext: UnsafeRawBufferPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: plaintext.count + MasterKey.overhead) { buffer, initialized in
            seal(plaintext, into: UnsafeMutableRawBufferPointer(buffer))
            initialized = plaintext.count + MasterKey.overhead
        }
    }

    /// Checks the MAC, then decrypts. Throws `HavenError` with code `.corrupt` when the input is shorter
    /// than 32 bytes or the MAC does not match (wrong key or damaged bytes).
    public func open(_ sealed: UnsafeRawBufferPointer) throws -> [UInt8] {
        guard isWellFormed else {
            throw HavenError(.invalidArgument, "master key is malformed: needs a 32-byte encryption key and 16-byte MAC keys")
        }
        guard sealed.count >= MasterKey.overhead else {
            throw HavenError.corrupt("encrypted data", "\(sealed.count) bytes is shorter than the 32-byte IV and MAC")
        }
        return try [UInt8](unsafeUninitializedCapacity: sealed.count - MasterKey.overhead) { buffer, initialized in
            try open(sealed, into: UnsafeMutableRawBufferPointer(buffer))
            initialized = sealed.count - MasterKey.overhead
        }
    }
}

extension MasterKey {
    /// `seal` into caller-provided memory (say, a reused buffer) of exactly `plaintext.count + overhead`
    /// bytes, not overlapping `plaintext`.
    public func seal(_ plaintext: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) {
        var iv = [UInt8](repeating: 0, count: 16)
        repeat {
            IVSource.shared.fill(&iv)
        } while iv.allSatisfy({ $0 == 0 })  // restic refuses an all-zero IV
        seal(plaintext, iv: iv, into: output)
    }

    /// `open` into caller-provided memory of exactly `sealed.count - overhead` bytes, not overlapping
    /// `sealed`. Verifies the MAC before writing anything; throws as `open`.
    public func open(_ sealed: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        guard isWellFormed else {
            throw HavenError(.invalidArgument, "master key is malformed: needs a 32-byte encryption key and 16-byte MAC keys")
        }
        guard sealed.count >= MasterKey.overhead else {
            throw HavenError.corrupt("encrypted data", "\(sealed.count) bytes is shorter than the 32-byte IV and MAC")
        }
        precondition(output.count == sealed.count - MasterKey.overhead, "open(into:) needs exactly sealed.count - 32 bytes")
        let ctEnd = sealed.count - 16
        let iv = UnsafeRawBufferPointer(rebasing: sealed[0..<16])
        let ciphertext = UnsafeRawBufferPointer(rebasing: sealed[16..<ctEnd])
        let stored = UnsafeRawBufferPointer(rebasing: sealed[ctEnd...])
        let (t0, t1) = tag(ciphertext, nonce: iv)
        var expected = (t0.littleEndian, t1.littleEndian)
        let ok = withUnsafeBytes(of: &expected) { Poly1305.tagsEqual($0, stored) }
        guard ok else {
            throw HavenError.corrupt("encrypted data", "MAC does not match (wrong key, or the bytes were modified)")
        }
        ctr(iv: iv, input: ciphertext, output: output)
    }

    /// `seal` for an array.
    public func seal(_ plaintext: [UInt8]) -> [UInt8] { plaintext.withUnsafeBytes { seal($0) } }
    /// `open` for an array.
    public func open(_ sealed: [UInt8]) throws -> [UInt8] { try sealed.withUnsafeBytes { try open($0) } }
}

extension MasterKey {
    /// Whether the three keys have the sizes the format needs (32, 16, 16 bytes).
    var isWellFormed: Bool { encryptionKey.count == 32 && macK.count == 16 && macR.count == 16 }

    /// Seals with a caller-chosen IV (16 bytes). Internal: only tests need a fixed IV.
    func seal(_ plaintext: UnsafeRawBufferPointer, iv: [UInt8]) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: plaintext.count + MasterKey.overhead) { buffer, initialized in
            seal(plaintext, iv: iv, into: UnsafeMutableRawBufferPointer(buffer))
            initialized = plaintext.count + MasterKey.overhead
        }
    }

    func seal(_ plaintext: UnsafeRawBufferPointer, iv: [UInt8], into out: UnsafeMutableRawBufferPointer) {
        precondition(isWellFormed, "MasterKey needs a 32-byte encryption key and 16-byte MAC keys")
        precondition(iv.count == 16, "IV must be 16 bytes")
        let n = plaintext.count
        precondition(out.count == n + MasterKey.overhead, "seal(into:) needs exactly plaintext.count + 32 bytes")
        iv.withUnsafeBytes { ivp in
            out.baseAddress!.copyMemory(from: ivp.baseAddress!, byteCount: 16)
            let ciphertext = UnsafeMutableRawBufferPointer(rebasing: out[16..<(16 + n)])
            ctr(iv: ivp, input: plaintext, output: ciphertext)
            let (t0, t1) = tag(UnsafeRawBufferPointer(ciphertext), nonce: ivp)
            out.storeBytes(of: t0.littleEndian, toByteOffset: 16 + n, as: UInt64.self)
            out.storeBytes(of: t1.littleEndian, toByteOffset: 24 + n, as: UInt64.self)
        }
    }

    /// Clears the bits Poly1305 requires to be zero in r (RFC 8439 §2.5).
    static func clamp(_ r: inout [UInt8]) {
        precondition(r.count == 16)
        for i in [3, 7, 11, 15] { r[i] &= 15 }
        for i in [4, 8, 12] { r[i] &= 252 }
    }

    static func randomBytes(_ count: Int, using rng: inout SystemRandomNumberGenerator) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var i = 0
        while i < count {
            let word = rng.next() as UInt64
            withUnsafeBytes(of: word.littleEndian) { w in
                for j in 0..<min(8, count - i) { bytes[i + j] = w[j] }
            }
            i += 8
        }
        return bytes
    }

    /// The master key as restic stores it inside a key file: {"mac":{"k":…,"r":…},"encrypt":…}.
    func jsonBytes() -> [UInt8] {
        let json = "{\"mac\":{\"k\":\"\(Data(macK).base64EncodedString())\",\"r\":\"\(Data(macR).base64EncodedString())\"},"
            + "\"encrypt\":\"\(Data(encryptionKey).base64EncodedString())\"}"
        return Array(json.utf8)
    }

    private struct JSONForm: Decodable {
        struct MAC: Decodable { var k: String; var r: String }
        var mac: MAC
        var encrypt: String
    }

    /// Parses the master-key JSON; throws `.corrupt` for anything malformed or of the wrong size.
    static func fromJSON(_ bytes: [UInt8]) throws -> MasterKey {
        let form: JSONForm
        do {
            form = try JSONDecoder().decode(JSONForm.self, from: Data(bytes))
        } catch {
            throw HavenError.corrupt("master key", "the decrypted key data is not valid master-key JSON")
        }
        guard let k = Data(base64Encoded: form.mac.k), let r = Data(base64Encoded: form.mac.r),
              let e = Data(base64Encoded: form.encrypt) else {
            throw HavenError.corrupt("master key", "a key field is not valid base64")
        }
        guard k.count == 16, r.count == 16, e.count == 32 else {
            throw HavenError.corrupt("master key", "key sizes are \(e.count)/\(k.count)/\(r.count) bytes, expected 32/16/16")
        }
        // r is kept exactly as stored (restic writes it unclamped); Poly1305 clamps it when used.
        return MasterKey(encryptionKey: Array(e), macK: Array(k), macR: Array(r))
    }
}

/// Random IVs, 16 bytes each, handed out from a block read from the kernel's CSPRNG 4 KiB at a time:
/// one getrandom(2) call per 256 blobs instead of two per blob (a backup of many small files seals
/// hundreds of thousands). IVs are stored in the clear next to the ciphertext, so holding the next few in
/// memory reveals nothing they would not.
final class IVSource: Sendable {
    static let shared = IVSource()
    private static let blockSize = 4096

    private struct Block: ~Copyable {
        var bytes = [UInt8](repeating: 0, count: IVSource.blockSize)
        var used = IVSource.blockSize
    }
    private let block = Mutex(Block())

    func fill(_ iv: inout [UInt8]) {
        precondition(iv.count <= Self.blockSize)
        block.withLock { b in
            if b.used + iv.count > b.bytes.count {
                let ok = b.bytes.withUnsafeMutableBytes { haven_random_bytes($0.baseAddress, $0.count) == 0 }
                precondition(ok, "the system's random number generator failed")
                b.used = 0
            }
            let start = b.used
            iv.withUnsafeMutableBytes { out in
                b.bytes.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[start..<(start + out.count)])) }
            }
            b.used += iv.count
        }
    }
}
