// scrypt's mixing (RFC 7914 sections 3–5) for HavenCore's key derivation, in a module of its own so that
// it is compiled with optimisation even in debug builds (Package.swift): unoptimised SIMD code is ~30×
// slower, which made every test that derives a key pay seconds.
//
// Why Haven mixes itself instead of through BoringSSL (measured on a 2-core VM, N=2^15, r=8, p=5:
// opening a repository 0.52 s → 0.36 s, same peak memory):
// - Salsa20/8 runs on 4-lane SIMD vectors. The 16 state words are kept in "diagonal" order (below), so
//   a column round and a row round are each four vector quarter-rounds, with lane rotations in between.
// - The p lanes are independent; they run on up to 4 threads. To keep memory where one lane's table
//   would be (128·r·N bytes, 32 MiB for N=2^15, r=8), each of t threads stores only every t-th block of
//   its table and recomputes the others when they are read (scrypt's time–memory trade-off; it costs the
//   defender time, not the attacker anything). Two threads: 1.25× the work each, half the wall time.
//
// On x86-64 CPUs with AVX-512 or AVX2, CHavenShims' scrypt_hw.c mixes up to four lanes at once per thread
// instead (one lane per 128-bit slot of one 512-bit register or two 256-bit ones), four lanes in about
// the time one takes here; its tables keep every k-th block for k lanes running at once, so memory is
// again about one full table. Measured on a 2-core AMD EPYC (AVX2), N=2^15, r=8, p=6: 3 + 3 lanes on two
// threads in ~170 ms, against ~290 ms for one lane at a time on two threads.
import CHavenShims
import Dispatch

public enum ScryptMix {
    /// Whether `mixLanes` runs on AVX-512 on this machine.
    public static let usesAVX512 = haven_scrypt_avx512_available() != 0
    /// Whether `mixLanes` runs on AVX2 on this machine (when it has no AVX-512).
    public static let usesAVX2 = !usesAVX512 && haven_scrypt_avx2_available() != 0
    /// Whether `mixLanes` mixes up to four lanes at once in one thread (`mixLanesWide`).
    public static var mixesWide: Bool { usesAVX512 || usesAVX2 }

    /// Replaces each 128·r-byte lane in `lanes` (p of them, back to back, little-endian words) with
    /// scryptROMix of it. With AVX-512 or AVX2 (when `hardware` allows it), up to four lanes at once per
    /// thread, on as few of the `threads` threads as hold all lanes four at a time (so p = 6 runs as 3 + 3
    /// on two); every lane's table then keeps every k-th block for k lanes running at once, so memory is
    /// about one full table. Otherwise one lane at a time on `threads` threads (a power of two dividing
    /// N). N must be a power of two.
    public static func mixLanes(_ lanes: UnsafeMutableRawBufferPointer, n: Int, r: Int, threads: Int, hardware: Bool = true) {
        let laneBytes = 128 * r
        let p = lanes.count / laneBytes
        precondition(p * laneBytes == lanes.count && n > 1 && n & (n - 1) == 0 && threads >= 1 && n % threads == 0)
        if hardware && mixesWide && n <= Int(UInt32.max) && r <= Int(UInt32.max) / 128 {
            let workers = min(threads, (p + 3) / 4)
            let share = (p + workers - 1) / workers
            let running = (0..<workers).reduce(0) { sum, w in sum + min(4, max(0, min(share, p - w * share))) }
            let base = LanePointer(address: lanes.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                var start = w * share
                let end = min(p, start + share)
                while start < end {
                    let count = min(4, end - start)
                    let group = UnsafeMutableRawBufferPointer(start: base.address + start * laneBytes, count: count * laneBytes)
                    if !mixLanesWide(group, n: n, r: r, storeEvery: running) {
                        // Memory was short for the tables: the portable path needs no more than it did.
                        mixLanes(group, n: n, r: r, threads: 1, hardware: false)
                    }
                    start += count
                }
            }
            return
        }
        let base = LanePointer(address: lanes.baseAddress!)
        DispatchQueue.concurrentPerform(iterations: threads) { worker in
            let romix = ROMix(n: n, r: r, storeEvery: threads)
            defer { romix.deallocate() }
            var lane = worker
            while lane < p {
                romix.mix(base.address + lane * laneBytes)
                lane += threads
            }
        }
    }

    /// ROMix of the one to four lanes in `lanes` at once on AVX-512 or AVX2, each lane's table keeping
    /// every `storeEvery`-th block. False when the tables could not be allocated (the lanes are then
    /// unchanged). Only for CPUs where `mixesWide` is true.
    public static func mixLanesWide(_ lanes: UnsafeMutableRawBufferPointer, n: Int, r: Int, storeEvery: Int) -> Bool {
        let count = lanes.count / (128 * r)
        precondition(mixesWide && (1...4).contains(count) && count * 128 * r == lanes.count && storeEvery >= 1)
        let romix = usesAVX512 ? haven_scrypt_romix_avx512 : haven_scrypt_romix_avx2
        return romix(lanes.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(count), UInt32(n), UInt32(r), UInt32(storeEvery)) == 0
    }

    /// The lanes' buffer, handed to the worker threads (each touches only its own lanes).
    private struct LanePointer: @unchecked Sendable { let address: UnsafeMutableRawPointer }
}

/// Salsa20/8 on a 64-byte block held as four vectors in diagonal order: with x0…x15 the words of the
/// block, a = (x0,x5,x10,x15), b = (x4,x9,x14,x3), c = (x8,x13,x2,x7), d = (x12,x1,x6,x11). Lane i of
/// a, b, c, d are then y0, y1, y2, y3 of column i's quarter-round; rotating d by 1, c by 2 and b by 3
/// lanes gives the rows' quarter-rounds the same shape.
public typealias SalsaWords = SIMD4<UInt32>

extension ScryptMix {
    /// Where word k of a block in diagonal order comes from in natural order.
    static let diagonalOrder: [Int] = [0, 5, 10, 15, 4, 9, 14, 3, 8, 13, 2, 7, 12, 1, 6, 11]

    /// The rotation amounts of Salsa20's four steps as left and right shifts. They reach the mixing code
    /// through memory on purpose: with literal amounts, LLVM recognises each rotation as a funnel shift,
    /// which it does per lane on x86-64's baseline (no vector rotate), taking the whole round out of the
    /// vector registers (measured: 2.5× slower than BoringSSL's scalar code). With amounts it cannot see,
    /// the shifts stay vector shifts.
    struct Rotations {
        let l7, r7, l9, r9, l13, r13, l18, r18: UInt32

        init(_ amounts: UnsafePointer<UInt32>) {
            l7 = amounts[0]; r7 = amounts[1]
            l9 = amounts[2]; r9 = amounts[3]
            l13 = amounts[4]; r13 = amounts[5]
            l18 = amounts[6]; r18 = amounts[7]
        }

        /// Storage holding each rotation as a left and a right shift (both stored, so the compiler cannot
        /// see that they add up to 32), for `init`; the caller deallocates it.
        static func amounts() -> UnsafeMutablePointer<UInt32> {
            let amounts = UnsafeMutablePointer<UInt32>.allocate(capacity: 8)
            amounts.initialize(from: [7, 25, 9, 23, 13, 19, 18, 14], count: 8)
            return amounts
        }
    }

    @inline(__always)
    static func rotate(_ v: SalsaWords, _ left: UInt32, _ right: UInt32) -> SalsaWords {
        (v &<< left) | (v &>> right)
    }

    /// The Salsa20/8 core (RFC 7914 section 3) in place: four double rounds, then the input added back.
    @inline(__always)
    static func salsa8(_ a: inout SalsaWords, _ b: inout SalsaWords, _ c: inout SalsaWords, _ d: inout SalsaWords,
                       _ k: Rotations) {
        let a0 = a, b0 = b, c0 = c, d0 = d
        for _ in 0..<4 {
            b ^= rotate(a &+ d, k.l7, k.r7)
            c ^= rotate(b &+ a, k.l9, k.r9)
            d ^= rotate(c &+ b, k.l13, k.r13)
            a ^= rotate(d &+ c, k.l18, k.r18)
            var d1 = SalsaWords(d[1], d[2], d[3], d[0])
            var c1 = SalsaWords(c[2], c[3], c[0], c[1])
            var b1 = SalsaWords(b[3], b[0], b[1], b[2])
            d1 ^= rotate(a &+ b1, k.l7, k.r7)
            c1 ^= rotate(d1 &+ a, k.l9, k.r9)
            b1 ^= rotate(c1 &+ d1, k.l13, k.r13)
            a ^= rotate(b1 &+ c1, k.l18, k.r18)
            d = SalsaWords(d1[3], d1[0], d1[1], d1[2])
            c = SalsaWords(c1[2], c1[3], c1[0], c1[1])
            b = SalsaWords(b1[1], b1[2], b1[3], b1[0])
        }
        a &+= a0
        b &+= b0
        c &+= c0
        d &+= d0
    }

    /// Salsa20/8 of a 64-byte block in natural word order (little-endian), for tests against RFC 7914.
    public static func salsa8(block: [UInt8]) -> [UInt8] {
        precondition(block.count == 64)
        var words = [UInt32](repeating: 0, count: 16)
        for k in 0..<16 { words[k] = readWord(block, ScryptMix.diagonalOrder[k]) }
        var a = SalsaWords(words[0], words[1], words[2], words[3]), b = SalsaWords(words[4], words[5], words[6], words[7])
        var c = SalsaWords(words[8], words[9], words[10], words[11]), d = SalsaWords(words[12], words[13], words[14], words[15])
        let amounts = Rotations.amounts()
        defer { amounts.deallocate() }
        salsa8(&a, &b, &c, &d, Rotations(amounts))
        var out = [UInt8](repeating: 0, count: 64)
        let mixed = [a, b, c, d]
        for k in 0..<16 {
            let word = mixed[k / 4][k % 4], at = 4 * ScryptMix.diagonalOrder[k]
            for byte in 0..<4 { out[at + byte] = UInt8(truncatingIfNeeded: word >> (8 * byte)) }
        }
        return out
    }

    private static func readWord(_ bytes: [UInt8], _ index: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(bytes[4 * index + $1]) << (8 * $1) }
    }
}

/// scryptROMix (RFC 7914 section 5) for one lane, with a table that stores every `storeEvery`-th block.
/// Blocks are 2r Salsa blocks of four vectors each, in diagonal order.
private struct ROMix {
    let n: Int, r: Int, storeEvery: Int
    /// Vectors per scrypt block (128·r bytes).
    let blockVectors: Int
    let table: UnsafeMutablePointer<SalsaWords>
    /// The running block X, its next value, and two scratch blocks for recomputing table entries.
    let x: UnsafeMutablePointer<SalsaWords>
    let y: UnsafeMutablePointer<SalsaWords>
    let t: UnsafeMutablePointer<SalsaWords>
    let u: UnsafeMutablePointer<SalsaWords>
    let rotations = ScryptMix.Rotations.amounts()

    init(n: Int, r: Int, storeEvery: Int) {
        self.n = n
        self.r = r
        self.storeEvery = storeEvery
        blockVectors = 8 * r
        table = .allocate(capacity: n / storeEvery * blockVectors)
        x = .allocate(capacity: 4 * blockVectors)
        y = x + blockVectors
        t = y + blockVectors
        u = t + blockVectors
    }

    func deallocate() {
        table.deallocate()
        x.deallocate()
        rotations.deallocate()
    }

    /// Replaces the lane's 128·r bytes at `lane` with ROMix of them.
    func mix(_ lane: UnsafeMutableRawPointer) {
        load(lane)
        var current = x, other = y
        let mask = n - 1
        for i in 0..<n {
            if i % storeEvery == 0 { (table + i / storeEvery * blockVectors).update(from: current, count: blockVectors) }
            blockMix(current, xor: nil, into: other)
            swap(&current, &other)
        }
        for _ in 0..<n {
            let j = Int(current[blockVectors - 4][0]) & mask
            var stored = UnsafePointer(table + j / storeEvery * blockVectors)
            let skipped = j % storeEvery
            if skipped > 0 {
                // Recompute block j from the stored block before it, in the two scratch blocks.
                var from = stored, scratch = t, spare = u
                for _ in 0..<skipped {
                    blockMix(from, xor: nil, into: scratch)
                    from = UnsafePointer(scratch)
                    swap(&scratch, &spare)
                }
                stored = from
            }
            blockMix(current, xor: stored, into: other)
            swap(&current, &other)
        }
        if current != x { x.update(from: current, count: blockVectors) }
        storeLane(lane)
    }

    /// scryptBlockMix (RFC 7914 section 4) of `input` (XORed with `xor` first when given) into `output`:
    /// Salsa block i of the result goes to position i/2 when i is even and r + i/2 when odd.
    @inline(__always)
    func blockMix(_ input: UnsafePointer<SalsaWords>, xor: UnsafePointer<SalsaWords>?, into output: UnsafeMutablePointer<SalsaWords>) {
        let k = ScryptMix.Rotations(rotations)
        let last = blockVectors - 4
        var a = input[last], b = input[last + 1], c = input[last + 2], d = input[last + 3]
        if let xor {
            a ^= xor[last]; b ^= xor[last + 1]; c ^= xor[last + 2]; d ^= xor[last + 3]
            for i in 0..<(2 * r) {
                let at = 4 * i
                a ^= input[at] ^ xor[at]
                b ^= input[at + 1] ^ xor[at + 1]
                c ^= input[at + 2] ^ xor[at + 2]
                d ^= input[at + 3] ^ xor[at + 3]
                ScryptMix.salsa8(&a, &b, &c, &d, k)
                let to = 4 * ((i & 1) * r + i >> 1)
                output[to] = a; output[to + 1] = b; output[to + 2] = c; output[to + 3] = d
            }
        } else {
            for i in 0..<(2 * r) {
                let at = 4 * i
                a ^= input[at]
                b ^= input[at + 1]
                c ^= input[at + 2]
                d ^= input[at + 3]
                ScryptMix.salsa8(&a, &b, &c, &d, k)
                let to = 4 * ((i & 1) * r + i >> 1)
                output[to] = a; output[to + 1] = b; output[to + 2] = c; output[to + 3] = d
            }
        }
    }

    /// The lane's little-endian words into `x`, in diagonal order.
    private func load(_ lane: UnsafeMutableRawPointer) {
        for block in 0..<(2 * r) {
            let source = lane + 64 * block
            for v in 0..<4 {
                var vector = SalsaWords()
                for k in 0..<4 {
                    let word = ScryptMix.diagonalOrder[4 * v + k]
                    vector[k] = UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * word, as: UInt32.self))
                }
                x[4 * block + v] = vector
            }
        }
    }

    /// `x` back into the lane in natural order.
    private func storeLane(_ lane: UnsafeMutableRawPointer) {
        for block in 0..<(2 * r) {
            let target = lane + 64 * block
            for v in 0..<4 {
                let vector = x[4 * block + v]
                for k in 0..<4 {
                    let word = ScryptMix.diagonalOrder[4 * v + k]
                    target.storeBytes(of: vector[k].littleEndian, toByteOffset: 4 * word, as: UInt32.self)
                }
            }
        }
    }
}
