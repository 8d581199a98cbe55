// restic's content-defined chunker (Rabin fingerprints over a 64-byte window), exactly as the
// restic/chunker repository defines it, so that Haven cuts the same chunks as restic.

/// A polynomial over GF(2), as a bit mask (bit i = coefficient of x^i).
public struct Polynomial: Sendable, Hashable, CustomStringConvertible {
    /// The coefficients: bit i is the coefficient of x^i.
    public var rawValue: UInt64
    /// The polynomial with the coefficients in `rawValue`.
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// Parses the hex form stored in a repository's config (`"25b468838dcb75"`, no 0x).
    ///
    /// Accepts hex digits of either case; returns nil for an empty string, any other character
    /// (including a `0x` prefix or a sign) or a value that does not fit in 64 bits.
    public init?(hex: String) {
        var value: UInt64 = 0
        var digits = 0
        for c in hex.utf8 {
            let d: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            if value >> 60 != 0 { return nil }  // would overflow
            value = value << 4 | UInt64(d)
            digits += 1
        }
        if digits == 0 { return nil }
        rawValue = value
    }

    /// The hex form stored in config (lower case, no 0x).
    public var hex: String { String(rawValue, radix: 16, uppercase: false) }

    /// The hex form, as in config.
    public var description: String { hex }

    /// The degree of the polynomial; -1 for the zero polynomial.
    public var degree: Int { Polynomial.degree(of: rawValue) }

    /// Ben-Or irreducibility test.
    ///
    /// Like restic, polynomials of degree below 2 (including 0 and 1) count as irreducible.
    public var isIrreducible: Bool {
        let half = degree / 2
        var i = 1
        while i <= half {
            if gcd(Polynomial.qp(i, self)) != Polynomial(1) { return false }
            i += 1
        }
        return true
    }

    /// Whether a ``Chunker`` accepts this polynomial (its degree is between 8 and 53).
    ///
    /// Repositories made by restic always hold an irreducible polynomial of degree 53.
    public var isUsableForChunking: Bool { (8...53).contains(degree) }

    /// A random irreducible polynomial of degree 53, as restic generates for new repositories.
    public static func random() -> Polynomial {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    /// A random irreducible polynomial of degree 53 drawn from `generator`, the way restic derives one
    /// from a random source: 64 random bits, masked to 54 bits, with bits 53 and 0 set, until one is
    /// irreducible.
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> Polynomial {
        for _ in 0..<1_000_000 {
            var f: UInt64 = generator.next()
            f &= (1 << 54) - 1
            f |= (1 << 53) | 1
            let candidate = Polynomial(f)
            if candidate.isIrreducible { return candidate }
        }
        // About one candidate in 27 is irreducible, so this is never reached with a working generator.
        fatalError("no irreducible polynomial found in 1000000 tries; the random generator is broken")
    }
}

/// Finds chunk boundaries in a stream of bytes fed in pieces of any size.
///
/// Cuts exactly where restic's chunker (github.com/restic/chunker) cuts: a Rabin fingerprint over a
/// 64-byte sliding window is computed for every byte after the first `minSize - 64` of a chunk; a chunk
/// ends after the byte where the low 20 bits of the fingerprint are zero, once it holds at least
/// `minSize` bytes, or when it reaches `maxSize` bytes.
public struct Chunker: Sendable {
    /// restic's minimum chunk size (512 KiB).
    public static let minSize = 512 * 1024
    /// restic's maximum chunk size (8 MiB).
    public static let maxSize = 8 * 1024 * 1024

    /// Fingerprints whose low 20 bits are zero end a chunk: about 1 MiB on average.
    static let defaultAverageBits = 20

    private let tables: ChunkerTables
    /// A chunk may end where `digest & splitMask == 0`.
    let splitMask: UInt64
    /// The smallest chunk this chunker cuts (the last chunk of an input may be shorter).
    public let minimumSize: Int
    /// The largest chunk this chunker cuts.
    public let maximumSize: Int

    /// The last 64 hashed bytes, as a ring indexed by `wpos`.
    private var window: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
    private var wpos: Int
    private var digest: UInt64
    /// Bytes of the current chunk seen so far (skipped or hashed).
    private var count: Int
    /// Bytes still to skip, unhashed, at the start of the current chunk.
    private var pre: Int

    /// A chunker for the polynomial stored in a repository's config.
    ///
    /// Preconditions: `polynomial.isUsableForChunking`, `64 <= minSize <= maxSize`.
    public init(polynomial: Polynomial, minSize: Int = Chunker.minSize, maxSize: Int = Chunker.maxSize) {
        self.init(
            polynomial: polynomial, minSize: minSize, maxSize: maxSize, averageBits: Chunker.defaultAverageBits)
    }

    /// Like restic's `WithAverageBits`: chunks end where the low `averageBits` bits of the fingerprint
    /// are zero. restic repositories always use 20; smaller values give more, smaller chunks (tests).
    init(polynomial: Polynomial, minSize: Int, maxSize: Int, averageBits: Int) {
        precondition(polynomial.isUsableForChunking, "chunker polynomial must have a degree between 8 and 53")
        precondition(minSize >= ChunkerTables.windowSize && minSize <= maxSize, "invalid chunk size limits")
        precondition((1...53).contains(averageBits), "invalid average bits")
        splitMask = (1 << UInt64(averageBits)) - 1
        tables = ChunkerTables.tables(for: polynomial)
        minimumSize = minSize
        maximumSize = maxSize
        window = (0, 0, 0, 0, 0, 0, 0, 0)
        wpos = 0
        digest = 0
        count = 0
        pre = 0
        reset()
    }

    /// The polynomial the fingerprints are computed with.
    public var polynomial: Polynomial { tables.polynomial }

    /// Scans `buffer` (the bytes following everything fed so far) and returns the number of bytes of
    /// `buffer` that complete the current chunk, or nil if the chunk does not end inside `buffer` (then
    /// all of `buffer` belongs to the current chunk). After returning a value the chunker has started a
    /// new chunk: call again with the rest of the buffer. The caller ends the last chunk at end of input.
    public mutating func nextBoundary(in buffer: UnsafeRawBufferPointer) -> Int? {
        let n = buffer.count
        guard n > 0, let raw = buffer.baseAddress else { return nil }

        // The first minSize - 64 bytes of a chunk are never hashed.
        var i = 0
        if pre > 0 {
            if pre >= n {
                pre -= n
                count += n
                return nil
            }
            i = pre
            count += pre
            pre = 0
        }

        let outTable = UnsafePointer(tables.out)
        let modTable = UnsafePointer(tables.mod)
        let shift = tables.polShift
        let mask = splitMask
        let minSize = minimumSize
        let maxSize = maximumSize
        let start = i
        var digest = self.digest

        // Phase 1: the first (up to) 64 hashed bytes of this buffer slide out bytes kept in `window`
        // from earlier buffers (or its initial contents after a reset).
        let ringEnd = min(n, start + ChunkerTables.windowSize)
        var add = count
        var wpos = self.wpos
        var cutInWindow = false
        withUnsafeMutableBytes(of: &window) { win in
            while i < ringEnd {
                let b = raw.load(fromByteOffset: i, as: UInt8.self)
                let o = win[wpos]
                win[wpos] = b
                wpos = (wpos + 1) & (ChunkerTables.windowSize - 1)
                digest = Chunker.roll(digest, o, b, out: outTable, mod: modTable, shift: shift)
                add += 1
                i += 1
                if digest & mask == 0 || add >= maxSize {
                    if add < minSize { continue }
                    cutInWindow = true
                    return
                }
            }
        }
        if cutInWindow {
            reset()
            return i
        }

        if i < n {
            // Phase 2: at least 64 bytes of this buffer are hashed, so the byte leaving the window is
            // in the buffer, 64 positions back. At least minSize bytes are in the chunk by now (hashing
            // starts at minSize - 64), so only the split mask and maxSize can end it.
            let toMax = maxSize - add  // > 0: add >= maxSize would have cut in phase 1
            let limit = n - i > toMax ? i + toMax : n
            // restic's polynomials have degree 53: a constant shift makes the hot loop cheaper.
            let scan =
                shift == 45
                ? Chunker.scan(
                    raw, from: i, to: limit, digest: digest, out: outTable, mod: modTable, shift: 45, mask: mask)
                : Chunker.scan(
                    raw, from: i, to: limit, digest: digest, out: outTable, mod: modTable, shift: shift, mask: mask)
            if let cut = scan.cut {
                reset()
                return cut
            }
            digest = scan.digest
            i = limit
            add += limit - ringEnd
            if add >= maxSize {
                reset()
                return i
            }
            // Keep the last 64 bytes for the next buffer, in ring order.
            wpos = (wpos + (n - ringEnd)) & (ChunkerTables.windowSize - 1)
            withUnsafeMutableBytes(of: &window) { win in
                for k in 0..<ChunkerTables.windowSize {
                    win[(wpos + k) & (ChunkerTables.windowSize - 1)] =
                        raw.load(fromByteOffset: n - ChunkerTables.windowSize + k, as: UInt8.self)
                }
            }
        }

        self.digest = digest
        self.wpos = wpos
        count = add
        return nil
    }

    /// Bytes per lane in the main loop of `scan`.
    static let laneLength = 4096
    /// Bytes per lane below which `scan` stops splitting the rest of a range into lanes.
    static let minimumLaneLength = 256

    /// Finds the first position `p` in `start + 1 ... end` where the fingerprint of the 64 bytes before
    /// `p` has no bit of `mask` set, and returns it as `cut`; otherwise returns the fingerprint at
    /// `end`. `digest` is the fingerprint at `start`. Precondition: `start >= 64` (the window before
    /// each position is in `raw`).
    ///
    /// The fingerprint of a full window depends only on its 64 bytes, so it can be computed from
    /// scratch anywhere: long ranges are split into four lanes hashed in an interleaved loop, which
    /// keeps the CPU busy with four independent dependency chains instead of waiting on one.
    @inline(__always)
    static func scan(
        _ raw: UnsafeRawPointer, from start: Int, to end: Int, digest: UInt64,
        out: UnsafePointer<UInt64>, mod: UnsafePointer<UInt64>, shift: UInt64, mask: UInt64
    ) -> (cut: Int?, digest: UInt64) {
        var digest = digest
        var i = start
        // Fixed-length lanes (constant offsets in the hot loop), then one block of shorter lanes.
        while end - i >= 4 * laneLength {
            let lanes = scanLanes(raw, at: i, length: laneLength, out: out, mod: mod, shift: shift, mask: mask)
            if lanes.cut != nil { return lanes }
            digest = lanes.digest
            i += 4 * laneLength
        }
        if end - i >= 4 * minimumLaneLength {
            let length = (end - i) / 4
            let lanes = scanLanes(raw, at: i, length: length, out: out, mod: mod, shift: shift, mask: mask)
            if lanes.cut != nil { return lanes }
            digest = lanes.digest
            i += 4 * length
        }
        return scanSequentially(raw, from: i, to: end, digest: digest, out: out, mod: mod, shift: shift, mask: mask)
    }

    /// `scan` over `start ..< start + 4 * length` (which must not be shorter), as four interleaved
    /// lanes of `length` bytes.
    @inline(__always)
    static func scanLanes(
        _ raw: UnsafeRawPointer, at start: Int, length: Int,
        out: UnsafePointer<UInt64>, mod: UnsafePointer<UInt64>, shift: UInt64, mask: UInt64
    ) -> (cut: Int?, digest: UInt64) {
        let window = ChunkerTables.windowSize
        let p0 = start, p1 = start + length, p2 = start + 2 * length, p3 = start + 3 * length
        // Each lane's fingerprint at its start, from the 64 bytes before it.
        var d0: UInt64 = 0, d1: UInt64 = 0, d2: UInt64 = 0, d3: UInt64 = 0
        var j = -window
        while j < 0 {
            d0 = append(d0, byte(raw, p0 &+ j), mod: mod, shift: shift)
            d1 = append(d1, byte(raw, p1 &+ j), mod: mod, shift: shift)
            d2 = append(d2, byte(raw, p2 &+ j), mod: mod, shift: shift)
            d3 = append(d3, byte(raw, p3 &+ j), mod: mod, shift: shift)
            j &+= 1
        }
        var t = 0
        var hit = false
        while t < length {
            d0 = roll(d0, byte(raw, p0 &+ t &- window), byte(raw, p0 &+ t), out: out, mod: mod, shift: shift)
            d1 = roll(d1, byte(raw, p1 &+ t &- window), byte(raw, p1 &+ t), out: out, mod: mod, shift: shift)
            d2 = roll(d2, byte(raw, p2 &+ t &- window), byte(raw, p2 &+ t), out: out, mod: mod, shift: shift)
            d3 = roll(d3, byte(raw, p3 &+ t &- window), byte(raw, p3 &+ t), out: out, mod: mod, shift: shift)
            t &+= 1
            if d0 & mask == 0 || d1 & mask == 0 || d2 & mask == 0 || d3 & mask == 0 {
                hit = true
                break
            }
        }
        if !hit { return (nil, d3) }
        // Some lane matched after t steps (rare: about once per chunk). The cut is the first match in
        // lane order: finish each lane from step t until one matches.
        var lane = scanSequentially(
            raw, from: p0 + t, to: p1, digest: d0, matched: true, out: out, mod: mod, shift: shift, mask: mask)
        if lane.cut != nil { return lane }
        lane = scanSequentially(
            raw, from: p1 + t, to: p2, digest: d1, matched: true, out: out, mod: mod, shift: shift, mask: mask)
        if lane.cut != nil { return lane }
        lane = scanSequentially(
            raw, from: p2 + t, to: p3, digest: d2, matched: true, out: out, mod: mod, shift: shift, mask: mask)
        if lane.cut != nil { return lane }
        return scanSequentially(
            raw, from: p3 + t, to: p3 + length, digest: d3, matched: true, out: out, mod: mod, shift: shift,
            mask: mask)
    }

    /// `scan` one byte after the other. With `matched`, the fingerprint at `start` itself is tested
    /// first (then a match returns `start`).
    @inline(__always)
    static func scanSequentially(
        _ raw: UnsafeRawPointer, from start: Int, to end: Int, digest: UInt64, matched: Bool = false,
        out: UnsafePointer<UInt64>, mod: UnsafePointer<UInt64>, shift: UInt64, mask: UInt64
    ) -> (cut: Int?, digest: UInt64) {
        if matched && digest & mask == 0 { return (start, digest) }
        var digest = digest
        var i = start
        while i < end {
            digest = roll(
                digest, byte(raw, i &- ChunkerTables.windowSize), byte(raw, i), out: out, mod: mod, shift: shift)
            i &+= 1
            if digest & mask == 0 { return (i, digest) }
        }
        return (nil, digest)
    }

    @inline(__always)
    static func byte(_ raw: UnsafeRawPointer, _ i: Int) -> UInt8 {
        raw.load(fromByteOffset: i, as: UInt8.self)
    }

    /// Slides byte `o` out of the window whose fingerprint is `digest`, and byte `b` in.
    @inline(__always)
    static func roll(
        _ digest: UInt64, _ o: UInt8, _ b: UInt8, out: UnsafePointer<UInt64>, mod: UnsafePointer<UInt64>,
        shift: UInt64
    ) -> UInt64 {
        append(digest ^ out[Int(o)], b, mod: mod, shift: shift)
    }

    /// Appends byte `b` to the bytes whose fingerprint is `digest`: `(digest·x^8 + b) mod P`.
    @inline(__always)
    static func append(_ digest: UInt64, _ b: UInt8, mod: UnsafePointer<UInt64>, shift: UInt64) -> UInt64 {
        ((digest &<< 8) | UInt64(b)) ^ mod[Int(truncatingIfNeeded: digest &>> shift)]
    }

    /// Starts a new chunk (for example at the start of a new file).
    public mutating func reset() {
        // The window starts as a single 1 byte followed by zeros, and the digest as that byte's hash.
        window = (UInt64(1).littleEndian, 0, 0, 0, 0, 0, 0, 0)
        let d = tables.out[0]
        digest = ((d << 8) | 1) ^ tables.mod[Int(truncatingIfNeeded: d >> tables.polShift)]
        wpos = 1
        count = 0
        pre = minimumSize - ChunkerTables.windowSize
    }
}
