/// A small, allocation-light JSON writer. Output is deterministic: fields appear in the order written.
struct JSONWriter {
    var bytes: [UInt8] = []
    private var needsComma = false

    init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    mutating func beginObject() { separator(); bytes.append(UInt8(ascii: "{")); needsComma = false }
    mutating func endObject() { bytes.append(UInt8(ascii: "}")); needsComma = true }
    mutating func beginArray() { separator(); bytes.append(UInt8(ascii: "[")); needsComma = false }
    mutating func endArray() { bytes.append(UInt8(ascii: "]")); needsComma = true }

    mutating func key(_ k: StaticString) {
        separator()
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: UnsafeBufferPointer(start: k.utf8Start, count: k.utf8CodeUnitCount))
        bytes.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
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

    mutating func number<T: BinaryInteger>(_ n: T) {
        separator()
        bytes.append(contentsOf: String(n).utf8)
        needsComma = true
    }

    mutating func bool(_ b: Bool) {
        separator()
        bytes.append(contentsOf: (b ? "true" : "false").utf8)
        needsComma = true
    }

    mutating func null() {
        separator()
        bytes.append(contentsOf: "null".utf8)
        needsComma = true
    }

    mutating func raw(_ s: String) {
        separator()
        bytes.append(contentsOf: s.utf8)
        needsComma = true
    }

    private mutating func separator() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    private mutating func writeEscaped(_ s: UnsafeBufferPointer<UInt8>) {
        bytes.append(UInt8(ascii: "\""))
        for c in s {
            switch c {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [92, 34])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [92, 92])
            case 0x0a: bytes.append(contentsOf: [92, UInt8(ascii: "n")])
            case 0x0d: bytes.append(contentsOf: [92, UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [92, UInt8(ascii: "t")])
            case 0..<0x20:
                bytes.append(contentsOf: [92, UInt8(ascii: "u"), 48, 48, Self.hexDigits[Int(c >> 4)], Self.hexDigits[Int(c & 15)]])
            default: bytes.append(c)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
