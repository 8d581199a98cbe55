/// restic stores node names as Go's `strconv.Quote` output without the outer quotes, inside a JSON
/// string. These functions convert between raw name bytes and that form, so that names which are not
/// valid UTF-8 survive a round trip through the repository.
enum GoQuote {
    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// Escapes `raw` so that Go's `strconv.Unquote` gives back the same bytes. The result is valid UTF-8.
    static func quote(_ raw: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count + 2)
        var i = 0
        while i < raw.count {
            let c = raw[i]
            if c < 0x80 {
                switch c {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(92); out.append(c)
                case 0x07: out.append(contentsOf: [92, UInt8(ascii: "a")])
                case 0x08: out.append(contentsOf: [92, UInt8(ascii: "b")])
                case 0x0c: out.append(contentsOf: [92, UInt8(ascii: "f")])
                case 0x0a: out.append(contentsOf: [92, UInt8(ascii: "n")])
                case 0x0d: out.append(contentsOf: [92, UInt8(ascii: "r")])
                case 0x09: out.append(contentsOf: [92, UInt8(ascii: "t")])
                case 0x0b: out.append(contentsOf: [92, UInt8(ascii: "v")])
                case 0..<0x20, 0x7f:
                    out.append(contentsOf: [92, UInt8(ascii: "x"), hexDigits[Int(c >> 4)], hexDigits[Int(c & 15)]])
                default: out.append(c)
                }
                i += 1
                continue
            }
            let n = validSequenceLength(raw, at: i)
            if n == 0 {
                out.append(contentsOf: [92, UInt8(ascii: "x"), hexDigits[Int(c >> 4)], hexDigits[Int(c & 15)]])
                i += 1
            } else {
                out.append(contentsOf: raw[i..<(i + n)])
                i += n
            }
        }
        return out
    }

    /// The most bytes `writeJSONString(quoting:to:)` writes for `count` raw bytes.
    static func maxJSONStringLength(quoting count: Int) -> Int { 5 * count + 2 }

    /// Writes what `JSONWriter.string(utf8: quote(raw))` writes: the Go-quoted form of `raw` as a JSON
    /// string, outer JSON quotes included, in one pass; runs of bytes that need no escaping at either
    /// level are copied at once. `p` has room for `maxJSONStringLength(quoting: raw.count)` bytes.
    /// Returns the count written.
    static func writeJSONString(quoting raw: UnsafeBufferPointer<UInt8>, to p: UnsafeMutablePointer<UInt8>) -> Int {
        p[0] = UInt8(ascii: "\"")
        var n = 1
        var runStart = 0
        var i = 0
        while i < raw.count {
            let c = raw[i]
            if c >= 0x20 && c < 0x7f && c != UInt8(ascii: "\"") && c != UInt8(ascii: "\\") {
                i += 1
                continue
            }
            if c >= 0x80 {
                let length = validSequenceLength(raw, at: i)
                if length > 0 { i += length; continue }
            }
            if runStart < i {
                (p + n).update(from: raw.baseAddress! + runStart, count: i - runStart)
                n += i - runStart
            }
            // Go's escape starts with a backslash, which JSON doubles.
            p[n] = 92
            p[n + 1] = 92
            n += 2
            switch c {
            case UInt8(ascii: "\""): p[n] = 92; p[n + 1] = 34; n += 2  // Go \" → JSON \\\"
            case UInt8(ascii: "\\"): p[n] = 92; p[n + 1] = 92; n += 2  // Go \\ → JSON \\\\
            case 0x07: p[n] = UInt8(ascii: "a"); n += 1
            case 0x08: p[n] = UInt8(ascii: "b"); n += 1
            case 0x0c: p[n] = UInt8(ascii: "f"); n += 1
            case 0x0a: p[n] = UInt8(ascii: "n"); n += 1
            case 0x0d: p[n] = UInt8(ascii: "r"); n += 1
            case 0x09: p[n] = UInt8(ascii: "t"); n += 1
            case 0x0b: p[n] = UInt8(ascii: "v"); n += 1
            default:
                let hex: StaticString = "0123456789abcdef"
                p[n] = UInt8(ascii: "x")
                p[n + 1] = hex.utf8Start[Int(c >> 4)]
                p[n + 2] = hex.utf8Start[Int(c & 15)]
                n += 3
            }
            i += 1
            runStart = i
        }
        if runStart < raw.count {
            (p + n).update(from: raw.baseAddress! + runStart, count: raw.count - runStart)
            n += raw.count - runStart
        }
        p[n] = UInt8(ascii: "\"")
        return n + 1
    }

    /// Length of the valid UTF-8 sequence starting at `i`, or 0 if the bytes there are not valid UTF-8.
    static func validSequenceLength(_ b: [UInt8], at i: Int) -> Int {
        b.withUnsafeBufferPointer { validSequenceLength($0, at: i) }
    }

    /// Whether `b` is entirely valid UTF-8 (by the same rules as `quote`).
    static func isValidUTF8(_ b: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        while i < b.count {
            if b[i] < 0x80 { i += 1; continue }
            let n = validSequenceLength(b, at: i)
            if n == 0 { return false }
            i += n
        }
        return true
    }

    static func validSequenceLength(_ b: UnsafeBufferPointer<UInt8>, at i: Int) -> Int {
        let c = b[i]
        let need: Int
        var minScalar: UInt32
        var scalar: UInt32
        switch c {
        case 0xc2...0xdf: need = 1; scalar = UInt32(c & 0x1f); minScalar = 0x80
        case 0xe0...0xef: need = 2; scalar = UInt32(c & 0x0f); minScalar = 0x800
        case 0xf0...0xf4: need = 3; scalar = UInt32(c & 0x07); minScalar = 0x10000
        default: return 0
        }
        guard i + need < b.count else { return 0 }
        for k in 1...need {
            let cc = b[i + k]
            guard cc & 0xc0 == 0x80 else { return 0 }
            scalar = scalar << 6 | UInt32(cc & 0x3f)
        }
        if scalar < minScalar || scalar > 0x10ffff || (0xd800...0xdfff).contains(scalar) { return 0 }
        return need + 1
    }

    /// Reverses Go's quoting: interprets \a \b \f \n \r \t \v \\ \" \' \xHH \ooo \uHHHH \UHHHHHHHH.
    /// Returns nil for an invalid escape.
    static func unquote(_ s: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        if s.contains(92) { return unquote(Array(s)) }
        return Array(s)
    }

    static func unquote(_ s: [UInt8]) -> [UInt8]? {
        guard s.contains(92) else { return s }
        var out: [UInt8] = []
        out.reserveCapacity(s.count)
        var i = 0
        func hex(_ from: Int, _ count: Int) -> UInt32? {
            guard from + count <= s.count else { return nil }
            var v: UInt32 = 0
            for k in from..<(from + count) {
                guard let d = Hex.nibble(s[k]) else { return nil }
                v = v << 4 | UInt32(d)
            }
            return v
        }
        while i < s.count {
            let c = s[i]
            if c != 92 { out.append(c); i += 1; continue }
            guard i + 1 < s.count else { return nil }
            let e = s[i + 1]
            switch e {
            case UInt8(ascii: "a"): out.append(7); i += 2
            case UInt8(ascii: "b"): out.append(8); i += 2
            case UInt8(ascii: "f"): out.append(12); i += 2
            case UInt8(ascii: "n"): out.append(10); i += 2
            case UInt8(ascii: "r"): out.append(13); i += 2
            case UInt8(ascii: "t"): out.append(9); i += 2
            case UInt8(ascii: "v"): out.append(11); i += 2
            case 92, 34, 39: out.append(e); i += 2
            case UInt8(ascii: "x"):
                guard let v = hex(i + 2, 2) else { return nil }
                out.append(UInt8(v)); i += 4
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                guard i + 3 < s.count else { return nil }
                var v: UInt32 = 0
                for k in 1...3 {
                    let d = s[i + k]
                    guard d >= 48 && d <= 55 else { return nil }
                    v = v * 8 + UInt32(d - 48)
                }
                guard v <= 255 else { return nil }
                out.append(UInt8(v)); i += 4
            case UInt8(ascii: "u"), UInt8(ascii: "U"):
                let n = e == UInt8(ascii: "u") ? 4 : 8
                guard let v = hex(i + 2, n), let scalar = Unicode.Scalar(v) else { return nil }
                out.append(contentsOf: Array(String(Character(scalar)).utf8)); i += 2 + n
            default: return nil
            }
        }
        return out
    }
}
