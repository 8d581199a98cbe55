/// A small, allocation-light JSON writer. Output is deterministic: fields appear in the order written.
///
/// Numbers, IDs and timestamps are formatted straight into the output buffer (no intermediate `String`),
/// and strings are copied in runs between the bytes that need escaping.
struct JSONWriter {
    /// The output so far is `storage[..<count]`; the rest is zero-filled room to write into, so the
    /// final array needs no second allocation (`finish()`).
    private var storage: [UInt8]
    private var count = 0
    private var needsComma = false

    init(capacity: Int = 256) { storage = [UInt8](repeating: 0, count: max(capacity, 64)) }

    /// A copy of the output so far.
    var bytes: [UInt8] { Array(storage[..<count]) }

    /// The output, handed over without a copy.
    consuming func finish() -> [UInt8] {
        storage.removeSubrange(count...)
        return storage
    }

    /// Appends one byte outside the JSON structure (e.g. a trailing newline).
    mutating func appendByte(_ c: UInt8) { write(c) }

    mutating func beginObject() { separator(); write(UInt8(ascii: "{")); needsComma = false }
    mutating func endObject() { write(UInt8(ascii: "}")); needsComma = true }
    mutating func beginArray() { separator(); write(UInt8(ascii: "[")); needsComma = false }
    mutating func endArray() { write(UInt8(ascii: "]")); needsComma = true }

    @inline(__always)
    mutating func key(_ k: StaticString) {
        let count = k.utf8CodeUnitCount
        let comma = needsComma
        emit(capacity: count + 4) { p in
            var n = 0
            if comma { p[0] = UInt8(ascii: ","); n = 1 }
            p[n] = UInt8(ascii: "\"")
            (p + n + 1).update(from: k.utf8Start, count: count)
            n += count + 1
            p[n] = UInt8(ascii: "\"")
            p[n + 1] = UInt8(ascii: ":")
            return n + 2
        }
        needsComma = false
    }

    mutating func string(_ s: String) {
        separator()
        var s = s
        s.withUTF8 { writeEscaped($0) }
        needsComma = true
    }

    /// Writes bytes that are valid UTF-8 as a JSON string (callers guarantee validity).
    mutating func string(utf8 b: [UInt8]) {
        separator()
        b.withUnsafeBufferPointer { writeEscaped($0) }
        needsComma = true
    }

    /// Writes a string that needs no escaping (callers guarantee it: printable ASCII without `"` or `\`).
    @inline(__always)
    mutating func string(plain s: StaticString) {
        let count = s.utf8CodeUnitCount
        let comma = needsComma
        emit(capacity: count + 3) { p in
            var n = 0
            if comma { p[0] = UInt8(ascii: ","); n = 1 }
            p[n] = UInt8(ascii: "\"")
            (p + n + 1).update(from: s.utf8Start, count: count)
            p[n + 1 + count] = UInt8(ascii: "\"")
            return n + count + 2
        }
        needsComma = true
    }

    /// Writes an ID as a string of 64 lowercase hex digits.
    mutating func string(_ id: ID) {
        let comma = needsComma
        emit(capacity: 67) { p in
            var n = 0
            if comma { p[0] = UInt8(ascii: ","); n = 1 }
            p[n] = UInt8(ascii: "\"")
            id.writeHex(to: p + n + 1)
            p[n + 65] = UInt8(ascii: "\"")
            return n + 66
        }
        needsComma = true
    }

    /// Writes a timestamp as an RFC 3339 string (`Timestamp.rfc3339`).
    mutating func string(_ t: Timestamp) {
        let comma = needsComma
        emit(capacity: Timestamp.maxRFC3339Length + 3) { p in
            var n = 0
            if comma { p[0] = UInt8(ascii: ","); n = 1 }
            p[n] = UInt8(ascii: "\"")
            n += 1 + t.writeRFC3339(to: p + n + 1)
            p[n] = UInt8(ascii: "\"")
            return n + 1
        }
        needsComma = true
    }

    /// Writes raw bytes as Go's `strconv.Quote` form without the outer quotes, as a JSON string; the
    /// same output as `string(utf8: GoQuote.quote(raw))` in one pass.
    mutating func string(goQuoting raw: [UInt8]) {
        separator()
        raw.withUnsafeBufferPointer { raw in
            emit(capacity: GoQuote.maxJSONStringLength(quoting: raw.count)) { GoQuote.writeJSONString(quoting: raw, to: $0) }
        }
        needsComma = true
    }

    /// Writes bytes as a JSON string holding their standard base64 encoding (with padding).
    mutating func string(base64 raw: [UInt8]) {
        let comma = needsComma
        emit(capacity: (raw.count + 2) / 3 * 4 + 3) { p in
            var n = 0
            if comma { p[0] = UInt8(ascii: ","); n = 1 }
            p[n] = UInt8(ascii: "\"")
            n += 1 + Base64.write(raw, to: p + n + 1)
            p[n] = UInt8(ascii: "\"")
            return n + 1
        }
        needsComma = true
    }

    mutating func number<T: BinaryInteger>(_ n: T) {
        let comma = needsComma
        if let u = UInt64(exactly: n) {
            emit(capacity: 21) { p in
                var k = 0
                if comma { p[0] = UInt8(ascii: ","); k = 1 }
                return k + DecimalDigits.write(u, to: p + k)
            }
        } else if let s = Int64(exactly: n) {
            emit(capacity: 22) { p in
                var k = 0
                if comma { p[0] = UInt8(ascii: ","); k = 1 }
                if s < 0 { p[k] = UInt8(ascii: "-"); k += 1 }
                return k + DecimalDigits.write(s.magnitude, to: p + k)
            }
        } else {
            separator()
            append(String(n))
        }
        needsComma = true
    }

    mutating func bool(_ b: Bool) {
        separator()
        append((b ? "true" : "false"))
        needsComma = true
    }

    mutating func null() {
        separator()
        append("null")
        needsComma = true
    }

    mutating func raw(_ s: String) {
        separator()
        append(s)
        needsComma = true
    }

    private mutating func separator() {
        if needsComma { write(UInt8(ascii: ",")) }
    }

    /// Makes room for at least `n` more bytes.
    @inline(__always)
    private mutating func reserve(_ n: Int) {
        if storage.count - count < n { grow(n) }
    }

    private mutating func grow(_ n: Int) {
        storage.append(contentsOf: repeatElement(0, count: max(n, storage.count)))
    }

    @inline(__always)
    private mutating func write(_ c: UInt8) {
        reserve(1)
        let at = count
        storage.withUnsafeMutableBufferPointer { $0[at] = c }
        count += 1
    }

    private mutating func append(_ s: String) {
        var s = s
        s.withUTF8 { u in
            emit(capacity: u.count) { p in
                if let b = u.baseAddress { p.update(from: b, count: u.count) }
                return u.count
            }
        }
    }

    /// Lets `body` write up to `capacity` bytes straight into the output and keeps the count it returns.
    @inline(__always)
    private mutating func emit(capacity: Int, _ body: (UnsafeMutablePointer<UInt8>) -> Int) {
        reserve(capacity)
        let at = count
        count += storage.withUnsafeMutableBufferPointer { body($0.baseAddress! + at) }
    }

    /// Whether JSON needs `c` escaped inside a string.
    @inline(__always)
    static func needsEscape(_ c: UInt8) -> Bool {
        c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\")
    }

    private mutating func writeEscaped(_ s: UnsafeBufferPointer<UInt8>) {
        var firstEscape = 0
        while firstEscape < s.count, !Self.needsEscape(s[firstEscape]) { firstEscape += 1 }
        if firstEscape == s.count {
            // The usual case: copy the whole string at once.
            emit(capacity: s.count + 2) { p in
                p[0] = UInt8(ascii: "\"")
                if let base = s.baseAddress { (p + 1).update(from: base, count: s.count) }
                p[s.count + 1] = UInt8(ascii: "\"")
                return s.count + 2
            }
            return
        }
        write(UInt8(ascii: "\""))
        var runStart = 0
        var i = firstEscape
        while i < s.count {
            let c = s[i]
            guard Self.needsEscape(c) else { i += 1; continue }
            let run = UnsafeBufferPointer(rebasing: s[runStart..<i])
            emit(capacity: run.count + 6) { p in
                if let base = run.baseAddress { p.update(from: base, count: run.count) }
                return run.count + Self.writeEscape(c, to: p + run.count)
            }
            i += 1
            runStart = i
        }
        let run = UnsafeBufferPointer(rebasing: s[runStart..<s.count])
        emit(capacity: run.count + 1) { p in
            if let base = run.baseAddress { p.update(from: base, count: run.count) }
            p[run.count] = UInt8(ascii: "\"")
            return run.count + 1
        }
    }

    /// Writes the JSON escape of `c`, one of the bytes `needsEscape` accepts; returns the byte count.
    static func writeEscape(_ c: UInt8, to p: UnsafeMutablePointer<UInt8>) -> Int {
        p[0] = 92
        switch c {
        case UInt8(ascii: "\""): p[1] = 34
        case UInt8(ascii: "\\"): p[1] = 92
        case 0x0a: p[1] = UInt8(ascii: "n")
        case 0x0d: p[1] = UInt8(ascii: "r")
        case 0x09: p[1] = UInt8(ascii: "t")
        default:
            let hex: StaticString = "0123456789abcdef"
            p[1] = UInt8(ascii: "u")
            p[2] = 48
            p[3] = 48
            p[4] = hex.utf8Start[Int(c >> 4)]
            p[5] = hex.utf8Start[Int(c & 15)]
            return 6
        }
        return 2
    }
}

/// Standard base64 (RFC 4648 alphabet, `=` padding), as Go's encoding/json writes `[]byte` values.
enum Base64 {
    /// Writes the encoding of `raw` to `p` (room for `(raw.count + 2) / 3 * 4` bytes); returns the count.
    static func write(_ raw: [UInt8], to p: UnsafeMutablePointer<UInt8>) -> Int {
        let alphabet: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        let a = alphabet.utf8Start
        var i = 0
        var n = 0
        while i + 3 <= raw.count {
            let v = UInt32(raw[i]) << 16 | UInt32(raw[i + 1]) << 8 | UInt32(raw[i + 2])
            p[n] = a[Int(v >> 18 & 63)]
            p[n + 1] = a[Int(v >> 12 & 63)]
            p[n + 2] = a[Int(v >> 6 & 63)]
            p[n + 3] = a[Int(v & 63)]
            i += 3
            n += 4
        }
        let rest = raw.count - i
        if rest > 0 {
            let v = UInt32(raw[i]) << 16 | (rest == 2 ? UInt32(raw[i + 1]) << 8 : 0)
            p[n] = a[Int(v >> 18 & 63)]
            p[n + 1] = a[Int(v >> 12 & 63)]
            p[n + 2] = rest == 2 ? a[Int(v >> 6 & 63)] : UInt8(ascii: "=")
            p[n + 3] = UInt8(ascii: "=")
            n += 4
        }
        return n
    }
}
