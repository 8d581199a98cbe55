import Foundation
import Testing
@testable import HavenCore
import HavenTestSupport
import Crypto
import _CryptoExtras
import HavenKDF
import CHavenShims

// MARK: - Helpers

private func hex(_ s: String) -> [UInt8] {
    let digits = Array(s.utf8).filter { $0 != UInt8(ascii: " ") }
    precondition(digits.count % 2 == 0, "odd hex length")
    func nibble(_ c: UInt8) -> UInt8 {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: preconditionFailure("bad hex digit")
        }
    }
    return stride(from: 0, to: digits.count, by: 2).map { nibble(digits[$0]) << 4 | nibble(digits[$0 + 1]) }
}

private func toHex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

/// Deterministic pseudo-random bytes (SplitMix64), so failures reproduce.
private struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
}

/// Asserts `body` throws a `HavenError` with `code`.
private func expectHavenError(_ code: HavenError.Code, _ comment: Comment? = nil,
                              sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected HavenError(\(code)), nothing was thrown. \(comment.map { "\($0)" } ?? "")",
                     sourceLocation: sourceLocation)
    } catch let error as HavenError {
        #expect(error.code == code, "got \(error.code): \(error.message). \(comment.map { "\($0)" } ?? "")",
                sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected HavenError(\(code)), got \(error)", sourceLocation: sourceLocation)
    }
}

/// An independent, slow Poly1305 (radix 2^26, the textbook formulation) used to cross-check the fast one.
private func referencePoly1305(message: [UInt8], key: [UInt8]) -> [UInt8] {
    func le32(_ b: [UInt8], _ i: Int) -> UInt64 {
        UInt64(b[i]) | UInt64(b[i + 1]) << 8 | UInt64(b[i + 2]) << 16 | UInt64(b[i + 3]) << 24
    }
    let mask: UInt64 = 0x3ff_ffff
    let r = [le32(key, 0) & 0x3ff_ffff, (le32(key, 3) >> 2) & 0x3ff_ff03, (le32(key, 6) >> 4) & 0x3ff_c0ff,
             (le32(key, 9) >> 6) & 0x3f0_3fff, (le32(key, 12) >> 8) & 0x00f_ffff]
    var h = [UInt64](repeating: 0, count: 5)
    var offset = 0
    while offset < message.count {
        var block = [UInt8](repeating: 0, count: 17)
        let n = min(16, message.count - offset)
        block.replaceSubrange(0..<n, with: message[offset..<(offset + n)])
        block[n] = 1
        offset += n
        // 130 bits of the block (plus the 0x01 marker) as five 26-bit limbs
        var bits = [UInt64](repeating: 0, count: 5)
        for limb in 0..<5 {
            var v: UInt64 = 0
            for bit in 0..<26 {
                let pos = limb * 26 + bit
                if pos / 8 < 17, (block[pos / 8] >> (pos % 8)) & 1 == 1 { v |= 1 << bit }
            }
            bits[limb] = v
        }
        for i in 0..<5 { h[i] += bits[i] }
        var d = [UInt64](repeating: 0, count: 5)
        for i in 0..<5 {
            for j in 0..<5 {
                let k = i + j
                if k < 5 { d[k] += h[i] * r[j] } else { d[k - 5] += h[i] * r[j] * 5 }
            }
        }
        var carry: UInt64 = 0
        for i in 0..<5 { d[i] += carry; carry = d[i] >> 26; h[i] = d[i] & mask }
        h[0] += carry * 5
        carry = h[0] >> 26; h[0] &= mask; h[1] += carry
    }
    // full carry, then conditional subtraction of p = 2^130 - 5
    var carry: UInt64 = 0
    for _ in 0..<2 {
        for i in 0..<5 { h[i] += carry; carry = h[i] >> 26; h[i] &= mask }
        h[0] += carry * 5; carry = 0
    }
    var g = h
    g[0] += 5
    for i in 0..<4 { g[i + 1] += g[i] >> 26; g[i] &= mask }
    if g[4] >> 26 != 0 { g[4] &= mask; h = g }
    // h as 128 bits + s
    var lo: UInt64 = h[0] | h[1] << 26 | h[2] << 52
    var hi: UInt64 = h[2] >> 12 | h[3] << 14 | h[4] << 40
    let s0 = key[16..<24].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    let s1 = key[24..<32].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    let (sum, c) = lo.addingReportingOverflow(s0)
    lo = sum
    hi = hi &+ s1 &+ (c ? 1 : 0)
    return (0..<8).map { UInt8(truncatingIfNeeded: lo >> (8 * $0)) } + (0..<8).map { UInt8(truncatingIfNeeded: hi >> (8 * $0)) }
}

/// All crypto tests, grouped so `swift test --filter CryptoTests` selects them.
@Suite struct CryptoTests {}

extension CryptoTests {
    // MARK: - Poly1305

    @Suite struct Poly1305Tests {
        @Test func rfc8439Section252() {
            let key = hex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
            let tag = Poly1305.mac(message: Array("Cryptographic Forum Research Group".utf8), key: key)
            #expect(toHex(tag) == "a8061dc1305136c6c22b8baf0c0127a9")
        }

        static let ietfText = """
            416e79207375626d697373696f6e20746f20746865204945544620696e74656e6465642062792074686520436f6e7472\
            696275746f7220666f72207075626c69636174696f6e20617320616c6c206f722070617274206f6620616e2049455446\
            20496e7465726e65742d4472616674206f722052464320616e6420616e792073746174656d656e74206d616465207769\
            7468696e2074686520636f6e74657874206f6620616e204945544620616374697669747920697320636f6e7369646572\
            656420616e20224945544620436f6e747269627574696f6e222e20537563682073746174656d656e747320696e636c75\
            6465206f72616c2073746174656d656e747320696e20494554462073657373696f6e732c2061732077656c6c20617320\
            7772697474656e20616e6420656c656374726f6e696320636f6d6d756e69636174696f6e73206d61646520617420616e\
            792074696d65206f7220706c6163652c207768696368206172652061646472657373656420746f
            """

        /// RFC 8439 Appendix A.3, test vectors #1–#11: (key r||s, message, tag).
        static let appendixA3: [(String, String, String)] = [
            (String(repeating: "00", count: 32), String(repeating: "00", count: 64), "00000000000000000000000000000000"),
            ("0000000000000000000000000000000036e5f6b5c5e06070f0efca96227a863e", ietfText, "36e5f6b5c5e06070f0efca96227a863e"),
            ("36e5f6b5c5e06070f0efca96227a863e00000000000000000000000000000000", ietfText, "f3477e7cd95417af89a6b8794c310cf0"),
            ("1c9240a5eb55d38af333888604f6b5f0473917c1402b80099dca5cbc207075c0",
             "2754776173206272696c6c69672c20616e642074686520736c6974687920746f7665730a446964206779726520616e64"
                + "2067696d626c6520696e2074686520776162653a0a416c6c206d696d737920776572652074686520626f726f676f76"
                + "65732c0a416e6420746865206d6f6d65207261746873206f757467726162652e",
             "4541669a7eaaee61e708dc7cbcc5eb62"),
            ("0200000000000000000000000000000000000000000000000000000000000000",
             "ffffffffffffffffffffffffffffffff", "03000000000000000000000000000000"),
            ("02000000000000000000000000000000ffffffffffffffffffffffffffffffff",
             "02000000000000000000000000000000", "03000000000000000000000000000000"),
            ("0100000000000000000000000000000000000000000000000000000000000000",
             "fffffffffffffffffffffffffffffffff0ffffffffffffffffffffffffffffff11000000000000000000000000000000",
             "05000000000000000000000000000000"),
            ("0100000000000000000000000000000000000000000000000000000000000000",
             "fffffffffffffffffffffffffffffffffbfefefefefefefefefefefefefefefe01010101010101010101010101010101",
             "00000000000000000000000000000000"),
            ("0200000000000000000000000000000000000000000000000000000000000000",
             "fdffffffffffffffffffffffffffffff", "faffffffffffffffffffffffffffffff"),
            ("0100000000000000040000000000000000000000000000000000000000000000",
             "e33594d7505e43b900000000000000003394d7505e4379cd0100000000000000000000000000000000000000000000000"
                + "1000000000000000000000000000000",
             "14000000000000005500000000000000"),
            ("0100000000000000040000000000000000000000000000000000000000000000",
             "e33594d7505e43b900000000000000003394d7505e4379cd010000000000000000000000000000000000000000000000",
             "13000000000000000000000000000000"),
        ]

        @Test(arguments: 0..<11)
        func rfc8439AppendixA3(index: Int) {
            let (key, message, tag) = Self.appendixA3[index]
            #expect(toHex(Poly1305.mac(message: hex(message), key: hex(key))) == tag, "A.3 test vector #\(index + 1)")
            #expect(toHex(referencePoly1305(message: hex(message), key: hex(key))) == tag, "reference, vector #\(index + 1)")
        }

        /// Random keys and messages of every length up to 200, and some long ones with extreme bytes,
        /// against the independent slow implementation; also at an unaligned address.
        @Test func matchesReferenceImplementation() {
            var rng = SplitMix(state: 0x1305)
            var lengths = Array(0...200)
            lengths += [255, 256, 257, 1000, 4096, 4099]
            for length in lengths {
                let key = rng.bytes(32)
                let message: [UInt8]
                switch length % 3 {
                case 0: message = [UInt8](repeating: 0xff, count: length)
                default: message = rng.bytes(length)
                }
                let expected = referencePoly1305(message: message, key: key)
                #expect(Poly1305.mac(message: message, key: key) == expected, "length \(length)")
                let shifted = [0x42] + message
                let unaligned = shifted.withUnsafeBytes { b in
                    key.withUnsafeBytes { k in
                        Poly1305.mac(message: UnsafeRawBufferPointer(rebasing: b[1...]),
                                     r: UnsafeRawBufferPointer(rebasing: k[0..<16]),
                                     s: UnsafeRawBufferPointer(rebasing: k[16..<32]))
                    }
                }
                #expect(unaligned == expected, "unaligned, length \(length)")
            }
            // all-ones r (before clamping) and s stress the carries
            let ones = [UInt8](repeating: 0xff, count: 32)
            for length in [16, 17, 64, 1024] {
                let message = [UInt8](repeating: 0xff, count: length)
                #expect(Poly1305.mac(message: message, key: ones) == referencePoly1305(message: message, key: ones))
            }
        }

        /// The vector code (AVX2 or AVX-512 IFMA) against the 64-bit code: every length from the hand-over
        /// threshold to 2,100 bytes, and long messages, with random and all-ones keys and messages.
        @Test(.enabled(if: Poly1305.usesVectorUnits, "the CPU has neither AVX2 nor AVX-512 IFMA"))
        func vectorCodeAgreesWith64BitCode() {
            var rng = SplitMix(state: 0x4242)
            let lengths = Array(Poly1305.vectorThreshold...2100) + [65_536 + 7, (1 << 20) + 13, 4 << 20]
            for (index, length) in lengths.enumerated() {
                let extreme = index % 5 == 0
                let key = extreme ? [UInt8](repeating: 0xff, count: 32) : rng.bytes(32)
                let message = index % 7 == 0 ? [UInt8](repeating: 0xff, count: length) : rng.bytes(length)
                let (vector, scalar) = message.withUnsafeBytes { m in
                    key.withUnsafeBytes { k in
                        let r = UnsafeRawBufferPointer(rebasing: k[0..<16]), s = UnsafeRawBufferPointer(rebasing: k[16..<32])
                        return (Poly1305.tag(message: m, r: r, s: s), Poly1305.tag(message: m, r: r, s: s, vector: false))
                    }
                }
                #expect(vector == scalar, "length \(length)")
            }
        }

        /// Poly1305-AES test vectors from Bernstein's paper (as used in restic's crypto tests).
        static let poly1305AES: [(msg: String, r: String, k: String, nonce: String, mac: String)] = [
            ("f3f6", "851fc40c3467ac0be05cc20404f3f700", "ec074c835580741701425b623235add6",
             "fb447350c4e868c52ac3275cf9d4327e", "f4c633c3044fc145f84f335cb81953de"),
            ("", "a0f3080000f46400d0c7e9076c834403", "75deaa25c09f208e1dc4ce6b5cad3fbf",
             "61ee09218d29b0aaed7e154a2c5509cc", "dd3fab2251f11ac759f0887129cc2ee7"),
            ("663cea190ffb83d89593f3f476b6bc24d7e679107ea26adb8caf6652d0656136",
             "48443d0bb0d21109c89a100b5ce2c208", "6acb5f61a7176dd320c5c1eb2edcdc74",
             "ae212a55399729595dea458bc621ff0e", "0ee1c16bb73f0f4fd19881753c01cdbe"),
            ("ab0812724a7f1e342742cbed374d94d136c6b8795d45b3819830f2c04491faf0990c62e48b8018b2c3e4a0fa3134cb67"
                + "fa83e158c994d961c4cb21095c1bf9",
             "12976a08c4426d0ce8a82407c4f48207", "e1a5668a4d5b66a5f68cc5424ed5982d",
             "9ae831e743978d3a23527c7128149e3a", "5154ad0d2cb26e01274fc51148491f1b"),
        ]

        @Test(arguments: 0..<4)
        func poly1305AESVectors(index: Int) {
            let v = Self.poly1305AES[index]
            let tag = AESPrimitives.poly1305AES(message: hex(v.msg), k: hex(v.k), r: hex(v.r), nonce: hex(v.nonce))
            #expect(toHex(tag) == v.mac)
        }

        @Test func tagComparison() {
            let a = [UInt8](repeating: 7, count: 16)
            var b = a
            #expect(a.withUnsafeBytes { x in b.withUnsafeBytes { Poly1305.tagsEqual(x, $0) } })
            for i in 0..<16 {
                b = a
                b[i] ^= 0x80
                #expect(!a.withUnsafeBytes { x in b.withUnsafeBytes { Poly1305.tagsEqual(x, $0) } })
            }
        }
    }

    // MARK: - AES

    @Suite struct SHA256PairTests {
        /// Lengths around the block size and its padding boundary (55, 56, 64), zero, and ones that
        /// leave the two messages far apart, so either one runs on alone after the shared blocks.
        static let lengths = [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 4096, 65_537, 1 << 20]

        static let x: [UInt8] = { var g = SplitMix(state: 91); return g.bytes((1 << 20) + 3) }()
        static let y: [UInt8] = { var g = SplitMix(state: 92); return g.bytes(1 << 20) }()

        @Test(arguments: lengths)
        func pairMatchesOneAtATime(_ a: Int) {
            let x = Self.x, y = Self.y
            for b in Self.lengths {
                // Unaligned starts, too.
                x.withUnsafeBytes { xs in
                    y.withUnsafeBytes { ys in
                        let ma = UnsafeRawBufferPointer(rebasing: xs[3..<(3 + a)])
                        let mb = UnsafeRawBufferPointer(rebasing: ys[0..<b])
                        #expect(ma.count == a)
                        // Two messages in the lanes: they share min(a, b) bytes' worth of blocks, then
                        // the longer one runs on alone.
                        let lanes = SHA256Lanes<Int, [UInt8]>()
                        var got: [Int: ID] = [:]
                        lanes.add(Array(ma), 0) { got[$0] = $2 }
                        lanes.add(Array(mb), 1) { got[$0] = $2 }
                        lanes.finish { got[$0] = $2 }
                        #expect(got[0] == ID(Array(SHA256.hash(data: ma))), "a: \(ma.count) bytes with b: \(b)")
                        #expect(got[1] == ID(Array(SHA256.hash(data: mb))), "b: \(b) bytes with a: \(ma.count)")
                    }
                }
            }
        }

        /// `ID.hash` (CHavenShims' code where the CPU has the SHA extensions) against swift-crypto's.
        @Test(arguments: lengths)
        func singleMatchesSwiftCrypto(_ a: Int) {
            Self.x.withUnsafeBytes { xs in
                let m = UnsafeRawBufferPointer(rebasing: xs[3..<(3 + a)])
                #expect(ID.hash(m) == ID(Array(SHA256.hash(data: m))), "\(a) bytes")
            }
        }

        /// Pieces that split blocks anywhere (empty ones too), and a digest taken midway that leaves the
        /// hash going on.
        @Test func streamingMatchesOneShot() throws {
            let x = Self.x
            let hasher = StreamingSHA256()
            var at = 0, step = 0
            let steps = [0, 1, 63, 64, 65, 7, 128, 1000, 55, 4096 + 9]
            var midway: (Int, ID)?
            while at < x.count {
                let n = min(steps[step % steps.count] + step / steps.count, x.count - at)
                x.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[at..<(at + n)])) }
                at += n
                step += 1
                if step == 25 { midway = (at, hasher.finalize()) }
            }
            let (prefix, early) = try #require(midway)
            #expect(early == ID(Array(SHA256.hash(data: x[0..<prefix]))))
            #expect(hasher.finalize() == ID(Array(SHA256.hash(data: x))))
        }

        /// Messages of every length class join whichever lane is free; each digest must match its own
        /// message, and every message must come back exactly once.
        @Test func lanesMatchOneAtATime() {
            let x = Self.x
            let lengths = [1 << 20, 0, 100, 65_537, 64, 1, 300_000, 55, 56, 4096, 120, 1 << 20, 7]
            let lanes = SHA256Lanes<Int, [UInt8]>()
            var got: [Int: ID] = [:]
            for (k, n) in lengths.enumerated() {
                let m = Array(x[(k % 4)..<(k % 4 + n)])
                lanes.add(m, k) { tag, message, id in
                    #expect(got[tag] == nil, "message \(tag) came back twice")
                    #expect(id == ID(Array(SHA256.hash(data: message))), "message \(tag), \(message.count) bytes")
                    got[tag] = id
                }
            }
            lanes.finish { tag, message, id in
                #expect(got[tag] == nil, "message \(tag) came back twice")
                #expect(id == ID(Array(SHA256.hash(data: message))), "message \(tag), \(message.count) bytes")
                got[tag] = id
            }
            #expect(got.keys.sorted() == Array(lengths.indices))
        }

        @Test(.enabled(if: ID.hashesInHardware, "this CPU has no SHA extensions"))
        func hardwarePathIsTaken() {
            // The FIPS 180-4 example "abc" and the two-block example, through the C code directly.
            var digest = [UInt8](repeating: 0, count: 32)
            haven_sha256(Array("abc".utf8), 3, &digest)
            #expect(toHex(digest) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
            let two = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
            haven_sha256(two, two.count, &digest)
            #expect(toHex(digest) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
            haven_sha256([], 0, &digest)
            #expect(toHex(digest) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        }
    }

    @Suite struct AESTests {
        /// NIST SP 800-38A, F.5.5 CTR-AES256.Encrypt.
        @Test func nistCTRAES256() {
            let key = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
            let iv = hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
            let plaintext = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
                + "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
            let expected = "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
                + "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6"
            #expect(toHex(AESPrimitives.ctr(key: key, iv: iv, input: plaintext)) == expected)
            // A partial last block uses a prefix of the keystream.
            #expect(toHex(AESPrimitives.ctr(key: key, iv: iv, input: Array(plaintext.prefix(37))))
                    == String(expected.prefix(74)))
        }

        /// The counter is the whole 16-byte block, incremented as one 128-bit big-endian number: carries
        /// cross the 32- and 64-bit boundaries, and all-ones wraps to zero (as Go's cipher.NewCTR).
        @Test(arguments: ["00112233445566778899aabbfffffffe", "0011223344556677fffffffffffffffd",
                          "fffffffffffffffffffffffffffffffe", "000000000000000000000000000000ff"])
        func counterIs128BitBigEndian(ivHex: String) {
            let key = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
            let iv = hex(ivHex)
            let blocks = 5
            var expected: [UInt8] = []
            var counter = iv
            for _ in 0..<blocks {
                expected += counter.withUnsafeBytes { AESPrimitives.encryptBlock(key: key, block: $0) }
                var i = 15
                while i >= 0 { counter[i] &+= 1; if counter[i] != 0 { break }; i -= 1 }
            }
            let keystream = AESPrimitives.ctr(key: key, iv: iv, input: [UInt8](repeating: 0, count: 16 * blocks))
            #expect(keystream == expected)
        }

        /// Long inputs go through swift-crypto in chunks; the counter must continue exactly across chunk
        /// boundaries, also when the low 64 bits wrap (checked against block-by-block AES).
        @Test(arguments: ["0000000000000001ffffffffffffff00", "fffffffffffffffffffffffffffff000", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"])
        func counterAcrossChunks(ivHex: String) {
            let key = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
            let iv = hex(ivHex)
            var rng = SplitMix(state: 77)
            let input = rng.bytes(3 * AESPrimitives.ctrChunkSize + 5)
            var expected = [UInt8]()
            expected.reserveCapacity(input.count)
            var counter = iv
            while expected.count < input.count {
                let block = counter.withUnsafeBytes { AESPrimitives.encryptBlock(key: key, block: $0) }
                for b in block where expected.count < input.count { expected.append(b ^ input[expected.count]) }
                var i = 15
                while i >= 0 { counter[i] &+= 1; if counter[i] != 0 { break }; i -= 1 }
            }
            #expect(AESPrimitives.ctr(key: key, iv: iv, input: input) == expected)
        }

        /// FIPS-197 Appendix C.1: AES-128 single block, as used for Poly1305-AES's s.
        @Test func aes128Block() {
            let out = hex("00112233445566778899aabbccddeeff").withUnsafeBytes {
                AESPrimitives.encryptBlock(key: hex("000102030405060708090a0b0c0d0e0f"), block: $0)
            }
            #expect(toHex(out) == "69c4e0d86a7b0430d8cdb78070b4c55a")
        }
    }

    /// The AES-NI path (C, `haven_aes*`) against known answers and against swift-crypto's AES.
    @Suite(.enabled(if: AESHardwareKeys.available, "this CPU has no AES instructions"))
    struct AESHardwareTests {
        static let nistKey = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")

        static func ctr(_ keys: AESHardwareKeys, iv: [UInt8], _ input: [UInt8], wide: Bool = true) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: input.count)
            iv.withUnsafeBytes { ivp in
                input.withUnsafeBytes { inp in out.withUnsafeMutableBytes { keys.ctr(iv: ivp, input: inp, output: $0, wide: wide) } }
            }
            return out
        }

        /// NIST SP 800-38A F.5.5, and FIPS-197 C.3 (AES-256) through CTR with a zero input, and C.1 (AES-128).
        @Test func knownAnswers() throws {
            let keys = try #require(AESHardwareKeys.make(encryptionKey: Self.nistKey, macK: hex("000102030405060708090a0b0c0d0e0f")))
            let plaintext = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
                + "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
            #expect(toHex(Self.ctr(keys, iv: hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"), plaintext))
                    == "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
                    + "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6")
            let fips256 = try #require(AESHardwareKeys.make(encryptionKey: (0..<32).map { UInt8($0) }, macK: [UInt8](repeating: 0, count: 16)))
            #expect(toHex(Self.ctr(fips256, iv: hex("00112233445566778899aabbccddeeff"), [UInt8](repeating: 0, count: 16)))
                    == "8ea2b7ca516745bfeafc49904b496089")
            var block = [UInt8](repeating: 0, count: 16)
            hex("00112233445566778899aabbccddeeff").withUnsafeBytes { inp in
                block.withUnsafeMutableBytes { keys.encryptMACBlock(inp, into: $0) }
            }
            #expect(toHex(block) == "69c4e0d86a7b0430d8cdb78070b4c55a")
        }

        /// Random keys, IVs (also where the counter carries across 64 bits and wraps at 2^128, within
        /// and just past a 16-block group) and lengths around the 8-block and 16-block loops: the same
        /// bytes as swift-crypto's CTR on the 128-bit path and on the 512-bit one (VAES), also in place.
        @Test(arguments: ["0000000000000001fffffffffffffff9", "fffffffffffffffffffffffffffffffa",
                          "000000000000000000000000fffffff0", "0000000000000000ffffffffffffffef", "random"])
        func agreesWithSwiftCrypto(ivKind: String) throws {
            var rng = SplitMix(state: 4242)
            for round in 0..<60 {
                let key = rng.bytes(32), k = rng.bytes(16)
                let keys = try #require(AESHardwareKeys.make(encryptionKey: key, macK: k))
                let iv = ivKind == "random" ? rng.bytes(16) : hex(ivKind)
                let lengths = [0, 1, 15, 16, 17, 127, 128, 129, 255, 256, 257, 383, 384, 511, 512, 1000, 4096 + 3, 70_000]
                let input = rng.bytes(lengths[round % lengths.count])
                let expected = AESPrimitives.ctr(key: key, iv: iv, input: input)
                expectSameBytes(Self.ctr(keys, iv: iv, input), expected, "length \(input.count)")
                expectSameBytes(Self.ctr(keys, iv: iv, input, wide: false), expected, "128-bit path, length \(input.count)")
                var inPlace = input
                iv.withUnsafeBytes { ivp in
                    inPlace.withUnsafeMutableBytes { buf in keys.ctr(iv: ivp, input: UnsafeRawBufferPointer(buf), output: buf) }
                }
                expectSameBytes(inPlace, expected, "in place, length \(input.count)")
                let nonce = rng.bytes(16)
                var s = [UInt8](repeating: 0, count: 16)
                nonce.withUnsafeBytes { n in s.withUnsafeMutableBytes { keys.encryptMACBlock(n, into: $0) } }
                #expect(s == nonce.withUnsafeBytes { AESPrimitives.encryptBlock(key: k, block: $0) })
            }
        }

        @Test func masterKeysUseItAndOnlyForWellFormedKeys() throws {
            #expect(MasterKey.random().usesAESInstructions)
            #expect(!MasterKey(encryptionKey: [1, 2, 3], macK: [], macR: []).usesAESInstructions)
            var key = MasterKey.random()
            let sealed = key.seal([1, 2, 3, 4])
            key.encryptionKey = [UInt8](repeating: 7, count: 32)
            #expect(key.usesAESInstructions)
            // The MAC keys are unchanged, so it opens, but with the new encryption key: the schedule was redone.
            #expect(try key.open(sealed) != [1, 2, 3, 4])
        }
    }

    // MARK: - MasterKey

    @Suite struct MasterKeyTests {
        /// restic's own known-answer test (internal/crypto/crypto_int_test.go): a sealed message written by restic.
        @Test func opensResticCiphertext() throws {
            let key = MasterKey(encryptionKey: hex("303e8687b1d7db18421bdc6bb8588ccadac4d59ee87b8ff70c44e635790cafef"),
                                macK: hex("ef4d8824cb80b2bcc5fbff8a9b12a42c"),
                                macR: hex("cc8d4b948ee0ebfe1d415de921d10353"))
            let sealed = hex("69fb41c62d12def4593bd71757138606338f621aeaeb39da0fe4f99233f8037a54ea63338a813bcf3f75d8c3cc75dddf8750")
            #expect(try key.open(sealed) == Array("Dies ist ein Test!".utf8))
            // And sealing with the same IV reproduces restic's bytes exactly.
            let resealed = Array("Dies ist ein Test!".utf8).withUnsafeBytes { key.seal($0, iv: Array(sealed.prefix(16))) }
            #expect(resealed == sealed)
        }

        @Test("sealing draws a fresh random IV per message, across refills of the IV block")
        func ivsAreFreshAcrossRefills() throws {
            let key = MasterKey.random()
            let message = [UInt8](repeating: 7, count: 10)
            var seen = Set<[UInt8]>()
            var byteCounts = [Int](repeating: 0, count: 256)
            for _ in 0..<1_000 {  // 16 bytes each: several 4 KiB blocks
                let sealed = message.withUnsafeBytes { key.seal($0) }
                let iv = Array(sealed.prefix(16))
                #expect(seen.insert(iv).inserted, "IV repeated")
                for b in iv { byteCounts[Int(b)] += 1 }
                try expectSameBytes(key.open(sealed), message)
            }
            // 16,000 bytes over 256 values: a stuck or zeroed source would pile onto a few values.
            #expect(byteCounts.max()! < 140 && byteCounts.min()! > 20, "\(byteCounts)")
        }

        @Test func randomKeysAreClampedAndDistinct() {
            let a = MasterKey.random(), b = MasterKey.random()
            #expect(a.encryptionKey.count == 32 && a.macK.count == 16 && a.macR.count == 16)
            #expect(a != b)
            for key in [a, b] {
                for i in [3, 7, 11, 15] { #expect(key.macR[i] & 0xf0 == 0) }
                for i in [4, 8, 12] { #expect(key.macR[i] & 3 == 0) }
            }
        }

        @Test(arguments: [0, 1, 15, 16, 17, 1 << 20])
        func sealOpenRoundTrip(size: Int) throws {
            var rng = SplitMix(state: UInt64(size) &+ 99)
            let key = MasterKey.random()
            let plaintext = rng.bytes(size)
            let sealed = key.seal(plaintext)
            #expect(sealed.count == size + MasterKey.overhead)
            try expectSameBytes(key.open(sealed), plaintext)
            let again = key.seal(plaintext)
            #expect(again.prefix(16) != sealed.prefix(16), "a fresh IV each time")
            if size >= 16 { #expect(Array(sealed[16..<(16 + size)]) != plaintext, "ciphertext differs from plaintext") }
            // another key cannot open it
            expectHavenError(.corrupt) { _ = try MasterKey.random().open(sealed) }
        }

        @Test func sealAndOpenIntoBuffers() throws {
            let key = MasterKey.random()
            var rng = SplitMix(state: 11)
            let plaintext = rng.bytes(1000)
            var sealed = [UInt8](repeating: 0, count: plaintext.count + MasterKey.overhead)
            plaintext.withUnsafeBytes { p in sealed.withUnsafeMutableBytes { key.seal(p, into: $0) } }
            try expectSameBytes(key.open(sealed), plaintext)
            var opened = [UInt8](repeating: 0xee, count: plaintext.count)
            try sealed.withUnsafeBytes { s in try opened.withUnsafeMutableBytes { try key.open(s, into: $0) } }
            expectSameBytes(opened, plaintext)
            // A damaged input throws before anything is written.
            sealed[40] ^= 4
            var untouched = [UInt8](repeating: 0xee, count: plaintext.count)
            expectHavenError(.corrupt) {
                try sealed.withUnsafeBytes { s in try untouched.withUnsafeMutableBytes { try key.open(s, into: $0) } }
            }
            #expect(untouched.allSatisfy { $0 == 0xee })
        }

        @Test func everyFlippedBitIsDetected() throws {
            let key = MasterKey.random()
            let sealed = key.seal(Array("seventeen bytes!!".utf8))
            for byte in 0..<sealed.count {
                for bit in 0..<8 {
                    var damaged = sealed
                    damaged[byte] ^= 1 << bit
                    expectHavenError(.corrupt, "byte \(byte) bit \(bit)") { _ = try key.open(damaged) }
                }
            }
        }

        @Test func flippedBitsInLargeMessageAreDetected() throws {
            let key = MasterKey.random()
            var rng = SplitMix(state: 5)
            let sealed = key.seal(rng.bytes(1 << 20))
            for position in [0, 15, 16, 17, 1000, 1 << 19, sealed.count - 17, sealed.count - 16, sealed.count - 1] {
                var damaged = sealed
                damaged[position] ^= 0x01
                expectHavenError(.corrupt, "position \(position)") { _ = try key.open(damaged) }
            }
        }

        @Test func truncatedInputThrows() throws {
            let key = MasterKey.random()
            let sealed = key.seal(Array("hello".utf8))
            for length in 0..<sealed.count {
                expectHavenError(.corrupt, "length \(length)") { _ = try key.open(Array(sealed.prefix(length))) }
            }
            expectHavenError(.corrupt) { _ = try key.open(sealed + [0]) }
            // an empty plaintext still authenticates: 32 bytes is the minimum
            #expect(try key.open(key.seal([UInt8]())) == [])
        }

        @Test func malformedKeyThrowsInsteadOfCrashing() {
            let bad = MasterKey(encryptionKey: [1, 2, 3], macK: [], macR: [])
            expectHavenError(.invalidArgument) { _ = try bad.open([UInt8](repeating: 0, count: 64)) }
        }

        @Test func masterKeyJSONRoundTrip() throws {
            let key = MasterKey.random()
            let json = String(decoding: key.jsonBytes(), as: UTF8.self)
            #expect(json.hasPrefix("{\"mac\":{\"k\":\""))
            #expect(json.contains("\"encrypt\":\""))
            #expect(try MasterKey.fromJSON(key.jsonBytes()) == key)
            expectHavenError(.corrupt) { _ = try MasterKey.fromJSON(Array("{\"mac\":{\"k\":\"AA==\",\"r\":\"AA==\"},\"encrypt\":\"AA==\"}".utf8)) }
            expectHavenError(.corrupt) { _ = try MasterKey.fromJSON(Array("nope".utf8)) }
        }
    }

    // MARK: - scrypt and key files

    @Suite struct KeyFileTests {
        /// RFC 7914 section 12, third vector, through the function key files use.
        @Test func scryptRFC7914() throws {
            let out = try Scrypt.derive(password: Array("password".utf8), salt: Array("NaCl".utf8),
                                        parameters: KDFParameters(n: 1024, r: 8, p: 16), outputByteCount: 64)
            #expect(toHex(out) == "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
                + "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640")
        }

        /// RFC 7914 section 8: the Salsa20/8 core alone, through the diagonal-order vector code.
        @Test func salsa8RFC7914() {
            let input = hex("7e879a214f3ec9867ca940e641718f26baee555b8c61c1b50df846116dcd3b1d"
                + "ee24f319df9b3d8514121e4b5ac5aa3276021d2909c74829edebc68db8b8c25e")
            #expect(toHex(ScryptMix.salsa8(block: input)) == "a41f859c6608cc993b81cacb020cef05044b2181a2fd337dfd7b1c6396682f29"
                + "b4393168e3c9e6bcfe6bc5b7a06d96bae424cc102c91745c24ad673dc7618f81")
        }

        /// RFC 7914 section 12, fourth vector (N=2^14, one lane: the full table on one thread).
        @Test func scryptRFC7914Large() throws {
            let out = try Scrypt.derive(password: Array("pleaseletmein".utf8), salt: Array("SodiumChloride".utf8),
                                        parameters: KDFParameters(n: 16384, r: 8, p: 1), outputByteCount: 64)
            #expect(toHex(out) == "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
                + "d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887")
        }

        /// The 16 lanes of the third RFC vector on the portable path with 1, 2 and 4 threads: 2 and 4
        /// threads store every 2nd and 4th table block and recompute the rest, which must not change the result.
        @Test(arguments: [1, 2, 4])
        func scryptThreadsAndSparseTables(threads: Int) throws {
            #expect(Scrypt.threadCount(n: 1024, p: 16, maxThreads: threads) == threads)
            let out = try Scrypt.derive(password: Array("password".utf8), salt: Array("NaCl".utf8),
                                        parameters: KDFParameters(n: 1024, r: 8, p: 16), outputByteCount: 64,
                                        maxThreads: threads, hardware: false)
            #expect(toHex(out) == "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
                + "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640")
        }

        @Test func scryptThreadCount() {
            #expect(Scrypt.threadCount(n: 1024, p: 1, maxThreads: 8) == 1)
            #expect(Scrypt.threadCount(n: 1024, p: 3, maxThreads: 8) == 2)
            #expect(Scrypt.threadCount(n: 1024, p: 5, maxThreads: 3) == 2)
            #expect(Scrypt.threadCount(n: 1024, p: 64, maxThreads: 16) == 4)
            #expect(Scrypt.threadCount(n: 1024, p: 64, maxThreads: 0) == 1)
            #expect(Scrypt.threadCount(n: 2, p: 64, maxThreads: 8) == 2)
        }

        /// Haven's scrypt against BoringSSL's (swift-crypto) on random parameters, passwords, salts,
        /// output sizes and thread counts.
        @Test func scryptAgreesWithBoringSSL() throws {
            var rng = SystemRandomNumberGenerator()
            for round in 0..<40 {
                let r = Int.random(in: 1...8, using: &rng), p = Int.random(in: 1...6, using: &rng)
                let n = 1 << Int.random(in: 1...(r == 1 ? 12 : 11), using: &rng)
                let password = (0..<Int.random(in: 1...80, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let salt = (0..<Int.random(in: 1...80, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let length = Int.random(in: 1...200, using: &rng)
                let threads = [1, 2, 3, 4][round % 4]
                let hardware = round % 2 == 0  // the AVX-512 or AVX2 path where the CPU has one, and the portable one
                let ours = try Scrypt.derive(password: password, salt: salt, parameters: KDFParameters(n: n, r: r, p: p),
                                             outputByteCount: length, maxThreads: threads, hardware: hardware)
                let theirs = try password.withUnsafeBytes { buffer in
                    try KDF.Scrypt.deriveKey(from: buffer, salt: salt, outputByteCount: length, rounds: n, blockSize: r,
                                             parallelism: p, maxMemory: 1 << 28).withUnsafeBytes { Array($0) }
                }
                #expect(ours == theirs, "N=\(n) r=\(r) p=\(p) length=\(length) threads=\(threads) hardware=\(hardware)")
            }
        }

        /// The wide lanes (AVX-512 or AVX2: one to four per call, tables keeping every k-th block, k not
        /// always dividing N) against the portable path with a full table, on random lanes.
        @Test(.enabled(if: ScryptMix.mixesWide, "the CPU has neither AVX-512 nor AVX2"), arguments: [1, 2, 3, 4])
        func scryptWideAgreesWithPortable(lanes count: Int) {
            var rng = SystemRandomNumberGenerator()
            for storeEvery in [1, 2, 3, 4, 5, 7] {
                let r = Int.random(in: 1...8, using: &rng), n = 1 << Int.random(in: 1...10, using: &rng)
                let input = (0..<(count * 128 * r)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                var portable = input, wide = input
                portable.withUnsafeMutableBytes { ScryptMix.mixLanes($0, n: n, r: r, threads: 1, hardware: false) }
                let done = wide.withUnsafeMutableBytes { ScryptMix.mixLanesWide($0, n: n, r: r, storeEvery: storeEvery) }
                #expect(done)
                #expect(wide == portable, "lanes=\(count) N=\(n) r=\(r) every \(storeEvery)")
                #expect(wide != input)
            }
        }

        @Test func scryptRejectsBadOutputSize() {
            expectHavenError(.invalidArgument) {
                _ = try Scrypt.derive(password: [1], salt: [1], parameters: .testing, outputByteCount: 0)
            }
        }

        @Test func scryptEmptyPasswordWorks() throws {
            let salt = [UInt8](repeating: 1, count: 64)
            let a = try Scrypt.derive(password: [], salt: salt, parameters: .testing, outputByteCount: 64)
            let b = try Scrypt.derive(password: [], salt: salt, parameters: .testing, outputByteCount: 64)
            #expect(a == b && a.count == 64)
        }

        @Test func createEncodeDecodeOpen() throws {
            let master = MasterKey.random()
            let date = Date(timeIntervalSince1970: 1_795_325_400.5)
            let file = try KeyFile.create(password: "correct horse", master: master, parameters: .testing,
                                          hostname: "host \"quoted\"", username: "user\\name", created: date)
            #expect(file.created == "2026-11-22T05:30:00.5Z")
            #expect(file.kdf == "scrypt" && file.parameters == .testing && file.salt.count == 64)
            let bytes = try file.encoded()
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(text.hasPrefix("{\"created\":\"2026-11-22T05:30:00.5Z\",\"username\":\"user\\\\name\","
                + "\"hostname\":\"host \\\"quoted\\\"\",\"kdf\":\"scrypt\",\"N\":1024,\"r\":8,\"p\":1,\"salt\":\""))
            let decoded = try KeyFile.decode(bytes)
            #expect(decoded == file)
            #expect(try decoded.open(password: "correct horse") == master)
            expectHavenError(.wrongPassword) { _ = try decoded.open(password: "wrong horse") }
            expectHavenError(.wrongPassword) { _ = try decoded.open(password: "") }
            // Foundation's own JSON parser agrees it is JSON with those fields.
            let object = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
            #expect(Set(object.keys) == ["created", "username", "hostname", "kdf", "N", "r", "p", "salt", "data"])
            #expect(object["hostname"] as? String == "host \"quoted\"")
        }

        @Test func createdTimestamps() throws {
            let master = MasterKey.random()
            for (seconds, expected) in [(0.0, "1970-01-01T00:00:00Z"),
                                        (951_825_600.25, "2000-02-29T12:00:00.25Z"),
                                        (-1.0, "1969-12-31T23:59:59Z"),
                                        (1_795_325_400.0, "2026-11-22T05:30:00Z"),
                                        (1_795_325_400.125, "2026-11-22T05:30:00.125Z")] {
                #expect(KeyFile.createdString(Date(timeIntervalSince1970: seconds)) == expected)
            }
            let file = try KeyFile.create(password: "p", master: master, parameters: .testing, hostname: "h", username: "u")
            let parsed = try #require(Timestamp(rfc3339: file.created), "created must be RFC 3339: \(file.created)")
            #expect(abs(parsed.timeInterval - Date().timeIntervalSince1970) < 60)
            #expect(file.created.hasSuffix("Z"))
        }

        @Test func createRejectsBadParameters() {
            expectHavenError(.invalidArgument) {
                _ = try KeyFile.create(password: "p", master: .random(), parameters: KDFParameters(n: 1000, r: 8, p: 1),
                                       hostname: "h", username: "u")
            }
        }

        private static func keyFileJSON(kdf: String = "\"scrypt\"", n: String = "1024", r: String = "8", p: String = "1",
                                        salt: String = "\"" + String(repeating: "A", count: 86) + "==\"",
                                        data: String = "\"" + String(repeating: "B", count: 64) + "\"") -> [UInt8] {
            Array(("{\"created\":\"2026-01-01T00:00:00Z\",\"username\":\"u\",\"hostname\":\"h\",\"kdf\":\(kdf),"
                + "\"N\":\(n),\"r\":\(r),\"p\":\(p),\"salt\":\(salt),\"data\":\(data)}").utf8)
        }

        @Test func decodeAcceptsWellFormedTemplate() throws {
            let file = try KeyFile.decode(Self.keyFileJSON())
            #expect(file.parameters == KDFParameters(n: 1024, r: 8, p: 1))
            #expect(file.salt.count == 64 && file.data.count == 48)
            expectHavenError(.wrongPassword) { _ = try file.open(password: "x") }
        }

        static let hostile: [(String, [UInt8])] = [
            ("kdf argon2", keyFileJSON(kdf: "\"argon2\"")),
            ("kdf number", keyFileJSON(kdf: "7")),
            ("N = 2^40", keyFileJSON(n: "1099511627776")),
            ("N = 2^62", keyFileJSON(n: "4611686018427387904")),
            ("N beyond Int64", keyFileJSON(n: "1000000000000000000000000")),
            ("N = 3", keyFileJSON(n: "3")),
            ("N = 1", keyFileJSON(n: "1")),
            ("N = 0", keyFileJSON(n: "0")),
            ("N negative", keyFileJSON(n: "-1024")),
            ("N = 2^21", keyFileJSON(n: "2097152")),
            ("N fractional", keyFileJSON(n: "1024.5")),
            ("N string", keyFileJSON(n: "\"1024\"")),
            ("r = 0", keyFileJSON(r: "0")),
            ("r = 1000", keyFileJSON(r: "1000")),
            ("p = 0", keyFileJSON(p: "0")),
            ("p = 2^31", keyFileJSON(p: "2147483648")),
            ("p negative", keyFileJSON(p: "-1")),
            ("memory over 1 GiB", keyFileJSON(n: "1048576", r: "16")),
            ("work too large", keyFileJSON(n: "262144", r: "8", p: "1024")),
            ("N too large for r = 1", keyFileJSON(n: "131072", r: "1")),
            ("salt not base64", keyFileJSON(salt: "\"!!!not base64!!!\"")),
            ("salt empty", keyFileJSON(salt: "\"\"")),
            ("salt null", keyFileJSON(salt: "null")),
            ("data not base64", keyFileJSON(data: "\"%%%%\"")),
            ("data short", keyFileJSON(data: "\"" + String(repeating: "B", count: 40) + "\"")),
            ("data number", keyFileJSON(data: "12")),
            ("truncated JSON", Array(keyFileJSON().dropLast(20))),
            ("not JSON", Array("this is not a key file".utf8)),
            ("empty", []),
            ("JSON array", Array("[1,2,3]".utf8)),
            ("missing fields", Array("{\"kdf\":\"scrypt\"}".utf8)),
            ("deep nesting", Array((String(repeating: "[", count: 30_000) + String(repeating: "]", count: 30_000)).utf8)),
            ("deep nesting in a field", Array(("{\"kdf\":" + String(repeating: "{\"a\":", count: 5_000) + "1" + String(repeating: "}", count: 5_000) + "}").utf8)),
            ("huge", [UInt8](repeating: UInt8(ascii: " "), count: 10 << 20)),
            ("invalid UTF-8", [0x7b, 0xff, 0xfe, 0x7d]),
        ]

        @Test(arguments: 0..<CryptoTests.KeyFileTests.hostile.count)
        func decodeRejectsHostileInput(index: Int) {
            let (name, bytes) = Self.hostile[index]
            expectHavenError(.corrupt, "\(name)") { _ = try KeyFile.decode(bytes) }
        }

        @Test func calibrate() {
            let start = Date()
            let params = KDFParameters.calibrate()
            let elapsed = Date().timeIntervalSince(start)
            #expect(params.n >= 1 << 15 && params.n & (params.n - 1) == 0)
            #expect(params.r == 8 && params.p >= 1)
            #expect(128 * params.n * params.r <= 60 << 20)
            #expect(params.problem == nil)
            #expect(elapsed < 2, "calibration took \(elapsed) s")
            let bigger = KDFParameters.calibrate(target: 0.5, maxMemory: 1 << 30)
            #expect(bigger.problem == nil && bigger.n >= 1 << 15)
        }
    }

    // MARK: - Interoperability with restic

    @Suite struct ResticInteropTests {
        static func which(_ program: String) -> String? {
            for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
                let path = "\(dir)/\(program)"
                if FileManager.default.isExecutableFile(atPath: path) { return path }
            }
            return nil
        }

        @discardableResult
        static func run(_ executable: String, _ arguments: [String], environment: [String: String]) throws -> (Int32, String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let output = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: output, as: UTF8.self))
        }

        /// restic writes a repository; Haven opens its key file and config. Then Haven adds a key file of its
        /// own for the same master key and restic opens the repository with it.
        /// Skipped only when `restic` is not installed (CI installs it).
        @Test(.enabled(if: which("restic") != nil, "restic is not on PATH"))
        func resticRepository() throws {
            let restic = try #require(Self.which("restic"))
            let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("haven-crypto-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: tmp) }
            let repo = tmp.appendingPathComponent("repo").path
            let (status, output) = try Self.run(restic, ["init", "-r", repo, "--repository-version", "2"],
                                                environment: ["RESTIC_PASSWORD": "x", "RESTIC_CACHE_DIR": tmp.appendingPathComponent("cache").path])
            try #require(status == 0, "restic init failed: \(output)")

            let keysDir = URL(fileURLWithPath: repo).appendingPathComponent("keys")
            let names = try FileManager.default.contentsOfDirectory(atPath: keysDir.path)
            try #require(names.count == 1)
            let keyBytes = try [UInt8](Data(contentsOf: keysDir.appendingPathComponent(names[0])))
            let keyFile = try KeyFile.decode(keyBytes)
            #expect(keyFile.kdf == "scrypt")
            #expect(ID.hash(keyBytes).hex == names[0], "a key file is named by the SHA-256 of its bytes")
            let master = try keyFile.open(password: "x")
            expectHavenError(.wrongPassword) { _ = try keyFile.open(password: "y") }

            let config = try [UInt8](Data(contentsOf: URL(fileURLWithPath: repo).appendingPathComponent("config")))
            let plain = try master.open(config)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(plain)) as? [String: Any])
            #expect(json["version"] as? Int == 2)
            #expect(json["chunker_polynomial"] is String)
            #expect(json["id"] is String)

            // The other direction: a Haven key file (password "h") that restic must accept.
            let ours = try KeyFile.create(password: "h", master: master, parameters: .testing,
                                          hostname: "haven-test", username: "haven")
            let ourBytes = try ours.encoded()
            try Data(ourBytes).write(to: keysDir.appendingPathComponent(ID.hash(ourBytes).hex))
            let (catStatus, catOutput) = try Self.run(restic, ["cat", "config", "-r", repo, "--no-lock"],
                                                      environment: ["RESTIC_PASSWORD": "h", "RESTIC_CACHE_DIR": tmp.appendingPathComponent("cache").path])
            #expect(catStatus == 0, "restic could not open the repository with Haven's key file: \(catOutput)")
            #expect(catOutput.contains("\"chunker_polynomial\""))

            // And data Haven seals with the master key, restic can decrypt: replace config with our re-sealing.
            let resealed = master.seal(plain)
            let configURL = URL(fileURLWithPath: repo).appendingPathComponent("config")
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: configURL.path)
            try Data(resealed).write(to: configURL)
            let (cat2Status, cat2Output) = try Self.run(restic, ["cat", "config", "-r", repo, "--no-lock"],
                                                        environment: ["RESTIC_PASSWORD": "x", "RESTIC_CACHE_DIR": tmp.appendingPathComponent("cache").path])
            #expect(cat2Status == 0, "restic could not decrypt a config sealed by Haven: \(cat2Output)")
            #expect(cat2Output.contains("\"version\": 2") || cat2Output.contains("\"version\":2"))
        }
    }

    // MARK: - Throughput (not a timed test; run with HAVEN_BENCH=1, in a release build for real numbers)

    @Suite struct CryptoThroughput {
        /// CPU time of the calling thread, so numbers stay meaningful on a busy machine.
        static func threadCPUSeconds() -> Double {
            var ts = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
            return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
        }

        static func measure(_ name: String, bytes: Int, runs: Int, _ body: () -> Void) {
            var best = Double.infinity
            for _ in 0..<runs {
                let start = threadCPUSeconds()
                body()
                best = min(best, threadCPUSeconds() - start)
            }
            print("\(name): \(String(format: "%.2f", Double(bytes) / best / 1e9)) GB/s per CPU-second")
        }

        @Test(.enabled(if: ProcessInfo.processInfo.environment["HAVEN_BENCH"] != nil))
        func throughput() {
            let size = 64 << 20
            var rng = SplitMix(state: 1)
            let message = rng.bytes(size)
            let key = rng.bytes(32)
            var sink: UInt8 = 0
            Self.measure("Poly1305", bytes: size, runs: 5) { sink ^= Poly1305.mac(message: message, key: key)[0] }
            let aesKey = rng.bytes(32), iv = rng.bytes(16)
            Self.measure("AES-256-CTR", bytes: size, runs: 3) { sink ^= AESPrimitives.ctr(key: aesKey, iv: iv, input: message)[7] }
            var output = [UInt8](repeating: 0, count: size)
            Self.measure("AES-256-CTR into an existing buffer", bytes: size, runs: 3) {
                message.withUnsafeBytes { m in
                    iv.withUnsafeBytes { v in
                        output.withUnsafeMutableBytes { AESPrimitives.ctr(key: aesKey, iv: v, input: m, output: $0) }
                    }
                }
            }
            sink ^= output[9]
            let master = MasterKey.random()
            Self.measure("MasterKey.seal", bytes: size, runs: 3) { sink ^= master.seal(message)[20] }
            let sealed = master.seal(message)
            Self.measure("MasterKey.open", bytes: size, runs: 3) { sink ^= (try? master.open(sealed))?[3] ?? 0 }
            print("(sink \(sink))")
        }
    }
}
