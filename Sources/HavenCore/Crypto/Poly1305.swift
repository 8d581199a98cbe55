// Poly1305 one-time authenticator, RFC 8439 section 2.5.
//
// The accumulator h lives in three 64-bit words (h0 + h1·2^64 + h2·2^128, h2 small) and r in two
// (r0 + r1·2^64). Clamping clears the top four bits of each r word and the low two bits of r1, so
// the 2^128 terms of the product fold back with s1 = r1 + r1/4 = 5·r1/4:
//   h·r ≡ (h0·r0 + h1·s1) + (h0·r1 + h1·r0 + h2·s1)·2^64 + (h2·r0)·2^128   (mod 2^130 − 5)
// because h1·r1·2^128 = h1·(r1/4)·2^130 ≡ h1·5·(r1/4). After each block the bits of h at and above
// 2^130 are folded back as 5·(h2 >> 2), which keeps h2 ≤ 4 and every partial product below 2^126.
//
// On x86-64 with AVX2 or AVX-512 IFMA, messages of 256 bytes and more go to CHavenShims' poly1305_hw.c,
// which evaluates the polynomial 4 (AVX2) or 8 (IFMA) blocks at a time with precomputed powers of r:
// 2–6× this code's speed on blob-sized messages.

import CHavenShims

/// Poly1305 (RFC 8439 §2.5) over contiguous memory, with 64-bit limbs and no allocation per block.
enum Poly1305 {
    /// Whether `tag` hands long messages to the vector code (the CPU has AVX2 or AVX-512 IFMA).
    static let usesVectorUnits = haven_poly1305_avx2_available() != 0 || haven_poly1305_avx512_available() != 0

    /// Messages shorter than this stay on the 64-bit code, where the vector set-up does not pay.
    static let vectorThreshold = 256

    /// Size of a tag and of each half of the key.
    static let tagSize = 16

    /// The tag of `message` under the one-time key (`r`, `s`), 16 bytes each, little-endian as in the
    /// RFC. `r` is clamped here, so callers may pass it clamped or not.
    static func mac(message: UnsafeRawBufferPointer, r: UnsafeRawBufferPointer, s: UnsafeRawBufferPointer) -> [UInt8] {
        let (t0, t1) = tag(message: message, r: r, s: s)
        return tagBytes(t0, t1)
    }

    /// Convenience for arrays: the tag of `message` under `key` = r || s (32 bytes).
    static func mac(message: [UInt8], key: [UInt8]) -> [UInt8] {
        precondition(key.count == 32, "Poly1305 key must be 32 bytes")
        return message.withUnsafeBytes { m in
            key.withUnsafeBytes { k in
                mac(message: m, r: UnsafeRawBufferPointer(rebasing: k[0..<16]),
                    s: UnsafeRawBufferPointer(rebasing: k[16..<32]))
            }
        }
    }

    /// The 16 tag bytes for the two little-endian tag words.
    static func tagBytes(_ t0: UInt64, _ t1: UInt64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        out.withUnsafeMutableBytes { o in
            o.storeBytes(of: t0.littleEndian, toByteOffset: 0, as: UInt64.self)
            o.storeBytes(of: t1.littleEndian, toByteOffset: 8, as: UInt64.self)
        }
        return out
    }

    /// The tag as two little-endian 64-bit words (low, high). `vector: false` keeps long messages on the
    /// 64-bit code (for tests that compare the two).
    static func tag(message: UnsafeRawBufferPointer, r: UnsafeRawBufferPointer, s: UnsafeRawBufferPointer,
                    vector: Bool = true) -> (UInt64, UInt64) {
        precondition(r.count == 16 && s.count == 16, "Poly1305 r and s must be 16 bytes each")
        if vector && usesVectorUnits && message.count >= vectorThreshold {
            var words: (UInt64, UInt64) = (0, 0)
            withUnsafeMutableBytes(of: &words) { out in
                haven_poly1305_mac(message.baseAddress!.assumingMemoryBound(to: UInt8.self), message.count,
                                   r.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                   s.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                   out.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
            return (UInt64(littleEndian: words.0), UInt64(littleEndian: words.1))
        }
        let r0 = UInt64(littleEndian: r.loadUnaligned(fromByteOffset: 0, as: UInt64.self)) & 0x0FFF_FFFC_0FFF_FFFF
        let r1 = UInt64(littleEndian: r.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) & 0x0FFF_FFFC_0FFF_FFFC
        let pad0 = UInt64(littleEndian: s.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        let pad1 = UInt64(littleEndian: s.loadUnaligned(fromByteOffset: 8, as: UInt64.self))

        var h = Accumulator()
        let count = message.count
        let full = count & ~15
        if full > 0, let base = message.baseAddress {
            h.blocks(base, byteCount: full, padBit: 1, r0: r0, r1: r1)
        }
        let rest = count - full
        if rest > 0, let base = message.baseAddress {
            // Last partial block: the bytes, then 0x01, then zeros; no 2^128 pad bit.
            var last: (UInt64, UInt64) = (0, 0)
            withUnsafeMutableBytes(of: &last) { b in
                b.baseAddress!.copyMemory(from: base + full, byteCount: rest)
                b[rest] = 1
            }
            withUnsafeBytes(of: &last) { b in
                h.blocks(b.baseAddress!, byteCount: 16, padBit: 0, r0: r0, r1: r1)
            }
        }
        return h.finish(pad0: pad0, pad1: pad1)
    }

    /// Constant-time equality of two 16-byte tags.
    static func tagsEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == 16, b.count == 16 else { return false }
        var diff: UInt8 = 0
        for i in 0..<16 { diff |= a[i] ^ b[i] }
        return diff == 0
    }

    private struct Accumulator {
        var h0: UInt64 = 0, h1: UInt64 = 0, h2: UInt64 = 0

        /// Absorbs `byteCount` (a multiple of 16) bytes at `p`, adding `padBit`·2^128 to each block.
        @inline(__always)
        mutating func blocks(_ p: UnsafeRawPointer, byteCount: Int, padBit: UInt64, r0: UInt64, r1: UInt64) {
            let s1 = r1 &+ (r1 >> 2)
            var h0 = self.h0, h1 = self.h1, h2 = self.h2
            var offset = 0
            while offset < byteCount {
                let m0 = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
                let m1 = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self))
                offset += 16

                // h += m + padBit·2^128
                let (a0, c0) = addCarry(h0, m0, 0)
                let (a1, c1) = addCarry(h1, m1, c0)
                let a2 = h2 &+ padBit &+ c1                        // ≤ 6

                // d0 = a0·r0 + a1·s1            (< 2^126)
                let (x0h, x0l) = a0.multipliedFullWidth(by: r0)
                let (y0h, y0l) = a1.multipliedFullWidth(by: s1)
                let (d0l, e0) = x0l.addingReportingOverflow(y0l)
                let d0h = x0h &+ y0h &+ (e0 ? 1 : 0)

                // d1 = a0·r1 + a1·r0 + a2·s1 + (d0 >> 64)   (< 2^126)
                let (x1h, x1l) = a0.multipliedFullWidth(by: r1)
                let (y1h, y1l) = a1.multipliedFullWidth(by: r0)
                var (d1l, e1) = x1l.addingReportingOverflow(y1l)
                var d1h = x1h &+ y1h &+ (e1 ? 1 : 0)
                (d1l, e1) = d1l.addingReportingOverflow(a2 &* s1)
                d1h &+= e1 ? 1 : 0
                (d1l, e1) = d1l.addingReportingOverflow(d0h)
                d1h &+= e1 ? 1 : 0

                // d2 = a2·r0 + (d1 >> 64)        (< 2^64)
                let d2 = d1h &+ a2 &* r0

                // Fold bits at 2^130 and above: 2^130 ≡ 5.
                let fold = (d2 >> 2) &* 5
                let (n0, f0) = addCarry(d0l, fold, 0)
                let (n1, f1) = addCarry(d1l, 0, f0)
                h0 = n0
                h1 = n1
                h2 = (d2 & 3) &+ f1                                 // ≤ 4
            }
            self.h0 = h0; self.h1 = h1; self.h2 = h2
        }

        /// a + b + carryIn (carryIn ≤ 1) and the carry out. At most one of the two additions can overflow;
        /// the flags are combined as bytes (a Bool is stored as 0 or 1) rather than with `? :` or `||`,
        /// which LLVM turns into data-dependent branches here (about half the speed). This form
        /// compiles to an add/adc chain.
        @inline(__always)
        func addCarry(_ a: UInt64, _ b: UInt64, _ carryIn: UInt64) -> (UInt64, UInt64) {
            let (t, c1) = a.addingReportingOverflow(b)
            let (sum, c2) = t.addingReportingOverflow(carryIn)
            return (sum, UInt64(unsafeBitCast(c1, to: UInt8.self) | unsafeBitCast(c2, to: UInt8.self)))
        }

        /// Fully reduces h mod 2^130 − 5 (constant time) and adds the pad s mod 2^128.
        func finish(pad0: UInt64, pad1: UInt64) -> (UInt64, UInt64) {
            // h < 5·2^128 < 2p, so one conditional subtraction of p suffices: g = h + 5 reaches 2^130
            // exactly when h ≥ p, and then h − p = g − 2^130.
            let (g0, c0) = addCarry(h0, 5, 0)
            let (g1, c1) = addCarry(h1, 0, c0)
            let g2 = h2 &+ c1
            let useG = 0 &- (g2 >> 2)            // all ones when h ≥ p
            let f0 = (h0 & ~useG) | (g0 & useG)
            let f1 = (h1 & ~useG) | (g1 & useG)
            let (t0, carry) = addCarry(f0, pad0, 0)
            let t1 = f1 &+ pad1 &+ carry
            return (t0, t1)
        }
    }
}
