import CHavenShims
import Crypto
import _CryptoExtras
import Foundation

/// The AES building blocks restic's format uses, on top of swift-crypto (BoringSSL).
enum AESPrimitives {
    /// AES-CTR keystream XOR of `input` into `output` (same length), under a 16/24/32-byte `key`, with
    /// `iv` (16 bytes) as the initial counter block, incremented as one 128-bit big-endian integer
    /// (wrapping at 2^128), as Go's `cipher.NewCTR` does.
    static func ctr(key: [UInt8], iv: UnsafeRawBufferPointer, input: UnsafeRawBufferPointer,
                    output: UnsafeMutableRawBufferPointer) {
        precondition(iv.count == 16, "AES-CTR IV must be 16 bytes")
        precondition(output.count == input.count, "AES-CTR output size must equal input size")
        precondition([16, 24, 32].contains(key.count), "AES key must be 16, 24 or 32 bytes")
        guard input.count > 0 else { return }
        // swift-crypto only returns fresh `Data`; going through it in modest chunks keeps the temporary
        // small and reused instead of a second buffer as large as the input. With a 16-byte nonce,
        // BoringSSL's AES_ctr128_encrypt uses it as the whole counter block; its 32-bit fast path
        // carries into the upper 96 bits, i.e. a 128-bit increment. Chunks start on block boundaries
        // with the counter advanced here the same way.
        let symmetricKey = SymmetricKey(data: key)
        var counterHigh = UInt64(bigEndian: iv.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        var counterLow = UInt64(bigEndian: iv.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        var offset = 0
        while offset < input.count {
            let n = min(ctrChunkSize, input.count - offset)
            var counter = (counterHigh.bigEndian, counterLow.bigEndian)
            let nonce = withUnsafeBytes(of: &counter) { try! AES._CTR.Nonce(nonceBytes: $0) }
            let chunk = UnsafeRawBufferPointer(rebasing: input[offset..<(offset + n)])
            let result = try! AES._CTR.encrypt(chunk, using: symmetricKey, nonce: nonce)
            precondition(result.count == n)
            result.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: output[offset..<(offset + n)]))
            offset += n
            let (low, overflow) = counterLow.addingReportingOverflow(UInt64(n / 16))
            counterLow = low
            if overflow { counterHigh &+= 1 }
        }
    }

    /// Poly1305-AES as `poly1305AES(message:k:r:nonce:)`, with s computed by `hardware` when given.
    static func poly1305AES(message: UnsafeRawBufferPointer, k: [UInt8], r: [UInt8], nonce: UnsafeRawBufferPointer,
                            hardware: AESHardwareKeys?) -> (UInt64, UInt64) {
        guard let hardware else { return poly1305AES(message: message, k: k, r: r, nonce: nonce) }
        var s = (UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &s) { hardware.encryptMACBlock(nonce, into: $0) }
        return r.withUnsafeBytes { rp in
            withUnsafeBytes(of: &s) { sp in Poly1305.tag(message: message, r: rp, s: sp) }
        }
    }

    /// Bytes per call into swift-crypto's CTR (a multiple of the block size).
    static let ctrChunkSize = 64 << 10

    /// AES-CTR as above, returning a new array.
    static func ctr(key: [UInt8], iv: [UInt8], input: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: input.count)
        iv.withUnsafeBytes { ivp in
            input.withUnsafeBytes { inp in
                out.withUnsafeMutableBytes { outp in ctr(key: key, iv: ivp, input: inp, output: outp) }
            }
        }
        return out
    }

    /// One AES block encryption (ECB of a single 16-byte block) under a 16/24/32-byte key.
    static func encryptBlock(key: [UInt8], block: UnsafeRawBufferPointer) -> [UInt8] {
        precondition(block.count == 16, "AES block must be 16 bytes")
        precondition([16, 24, 32].contains(key.count), "AES key must be 16, 24 or 32 bytes")
        var out = [UInt8](block)
        try! AES.permute(&out, key: SymmetricKey(data: key))
        return out
    }

    /// Poly1305-AES (Bernstein 2005) as restic uses it: the tag of `message` under r (clamped here)
    /// and s = AES-128_k(nonce).
    static func poly1305AES(message: UnsafeRawBufferPointer, k: [UInt8], r: [UInt8],
                            nonce: UnsafeRawBufferPointer) -> (UInt64, UInt64) {
        precondition(k.count == 16 && r.count == 16, "Poly1305-AES keys must be 16 bytes each")
        let s = encryptBlock(key: k, block: nonce)
        return r.withUnsafeBytes { rp in
            s.withUnsafeBytes { sp in Poly1305.tag(message: message, r: rp, s: sp) }
        }
    }

    /// Array convenience for `poly1305AES`, returning the 16 tag bytes.
    static func poly1305AES(message: [UInt8], k: [UInt8], r: [UInt8], nonce: [UInt8]) -> [UInt8] {
        let (t0, t1) = message.withUnsafeBytes { m in
            nonce.withUnsafeBytes { n in poly1305AES(message: m, k: k, r: r, nonce: n) }
        }
        return Poly1305.tagBytes(t0, t1)
    }
}

/// A master key's AES keys expanded once for the CPU's AES instructions (x86-64 AES-NI), so sealing and
/// opening a blob costs no key schedule, no temporary buffer and no copy. `make` returns nil where the
/// CPU has no such instructions; callers then use swift-crypto (`AESPrimitives`).
final class AESHardwareKeys: @unchecked Sendable {  // immutable after init
    static let available = haven_aes_hw_available() != 0

    /// AES-256 round keys (15 × 16 bytes) for CTR mode, then AES-128 round keys (11 × 16) for Poly1305's s.
    private let schedules: UnsafeMutableRawBufferPointer
    private static let encryptionBytes = 240, macBytes = 176

    static func make(encryptionKey: [UInt8], macK: [UInt8]) -> AESHardwareKeys? {
        guard available, encryptionKey.count == 32, macK.count == 16 else { return nil }
        return AESHardwareKeys(encryptionKey: encryptionKey, macK: macK)
    }

    private init(encryptionKey: [UInt8], macK: [UInt8]) {
        schedules = .allocate(byteCount: Self.encryptionBytes + Self.macBytes, alignment: 16)
        let base = schedules.baseAddress!.assumingMemoryBound(to: UInt8.self)
        haven_aes256_expand(encryptionKey, base)
        haven_aes128_expand(macK, base + Self.encryptionBytes)
    }

    deinit {
        schedules.initializeMemory(as: UInt8.self, repeating: 0)
        schedules.deallocate()
    }

    private var base: UnsafePointer<UInt8> { UnsafePointer(schedules.baseAddress!.assumingMemoryBound(to: UInt8.self)) }

    /// AES-256-CTR of `input` into `output` (same length), counter block `iv`, as `AESPrimitives.ctr`.
    /// Uses the 512-bit AES instructions where the CPU has them (`wide`: false keeps to the 128-bit ones,
    /// for tests that compare both).
    func ctr(iv: UnsafeRawBufferPointer, input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, wide: Bool = true) {
        precondition(iv.count == 16 && output.count == input.count, "AES-CTR needs a 16-byte IV and equal sizes")
        guard input.count > 0 else { return }
        haven_aes256_ctr(base, iv.baseAddress!.assumingMemoryBound(to: UInt8.self),
                         input.baseAddress!.assumingMemoryBound(to: UInt8.self),
                         output.baseAddress!.assumingMemoryBound(to: UInt8.self), input.count, wide ? 1 : 0)
    }

    /// AES-128 under the MAC key k of one 16-byte block (Poly1305-AES's s = AES_k(nonce)).
    func encryptMACBlock(_ block: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) {
        precondition(block.count == 16 && output.count == 16, "AES block must be 16 bytes")
        haven_aes128_encrypt_block(base + Self.encryptionBytes, block.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                   output.baseAddress!.assumingMemoryBound(to: UInt8.self))
    }
}
