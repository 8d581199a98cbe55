import Foundation
import Testing
@testable import HavenCore
import HavenTestSupport

// The byte-level tree codec (Tree.encoded(), TreeDecoder) against frozen reference implementations, real
// restic output and hostile input. A tree's ID is the SHA-256 of its encoding, so the encoder must stay
// byte-identical to what Haven always wrote; the decoder must take everything restic writes.

private func utf8(_ s: String) -> [UInt8] { Array(s.utf8) }

private func expectCorrupt(_ body: () throws -> Void, _ comment: String = "", sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("expected HavenError .corrupt, nothing was thrown. \(comment)", sourceLocation: sourceLocation)
    } catch let e as HavenError {
        #expect(e.code == .corrupt, "got \(e.code): \(e.message). \(comment)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected HavenError, got \(type(of: error)): \(error). \(comment)", sourceLocation: sourceLocation)
    }
}

private func decodeOne(_ nodeFields: String) throws -> Node {
    let tree = try Tree.decode(utf8("{\"nodes\":[{\(nodeFields)}]}"))
    return try #require(tree.nodes.first)
}

// MARK: - Reference implementation

/// The tree encoder and the timestamp and ID parsers as they were before the byte-level rewrite: a
/// `String`-based JSON writer, RFC 3339 through string padding, `GoQuote.quote` followed by JSON escaping,
/// Foundation's base64. Frozen here: the fast code must match it byte for byte (encoding) or value for
/// value (parsing).
private enum Reference {
    struct Writer {
        var bytes: [UInt8] = []
        private var needsComma = false

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

        mutating func null() {
            separator()
            bytes.append(contentsOf: "null".utf8)
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

    static func encode(_ tree: Tree) -> [UInt8] {
        var w = Writer()
        w.beginObject()
        w.key("nodes")
        w.beginArray()
        for n in tree.nodes { write(n, to: &w) }
        w.endArray()
        w.endObject()
        w.bytes.append(0x0a)
        return w.bytes
    }

    static func write(_ n: Node, to w: inout Writer) {
        w.beginObject()
        w.key("name"); w.string(utf8: goQuote(n.name))
        w.key("type"); w.string(n.type.rawValue)
        if n.mode != 0 { w.key("mode"); w.number(n.mode) }
        w.key("mtime"); w.string(rfc3339(n.mtime))
        w.key("atime"); w.string(rfc3339(n.atime))
        w.key("ctime"); w.string(rfc3339(n.ctime))
        w.key("uid"); w.number(n.uid)
        w.key("gid"); w.number(n.gid)
        if !n.user.isEmpty { w.key("user"); w.string(n.user) }
        if !n.group.isEmpty { w.key("group"); w.string(n.group) }
        if n.inode != 0 { w.key("inode"); w.number(n.inode) }
        if n.deviceID != 0 { w.key("device_id"); w.number(n.deviceID) }
        if n.size != 0 { w.key("size"); w.number(n.size) }
        if n.links != 0 { w.key("links"); w.number(n.links) }
        if !n.linkTarget.isEmpty {
            w.key("linktarget")
            if let s = String(validating: n.linkTarget, as: UTF8.self) {
                w.string(s)
            } else {
                w.string(String(decoding: n.linkTarget, as: UTF8.self))
                w.key("linktarget_raw"); w.string(Data(n.linkTarget).base64EncodedString())
            }
        }
        if !n.extendedAttributes.isEmpty {
            w.key("extended_attributes")
            w.beginArray()
            for a in n.extendedAttributes {
                w.beginObject()
                w.key("name"); w.string(a.name)
                w.key("value"); w.string(Data(a.value).base64EncodedString())
                w.endObject()
            }
            w.endArray()
        }
        if n.device != 0 { w.key("device"); w.number(n.device) }
        w.key("content")
        if n.type == .file {
            w.beginArray()
            for id in n.content { w.string(hex(id)) }
            w.endArray()
        } else {
            w.null()
        }
        if let subtree = n.subtree { w.key("subtree"); w.string(hex(subtree)) }
        if !n.error.isEmpty { w.key("error"); w.string(n.error) }
        w.endObject()
    }

    static func hex(_ id: ID) -> String {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in id.bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func rfc3339(_ t: Timestamp) -> String {
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(abs(v))
            let padded = s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
            return v < 0 ? "-" + padded : padded
        }
        let c = t.civil
        var s = pad(c.year, 4) + "-" + pad(Int64(c.month), 2) + "-" + pad(Int64(c.day), 2)
        s += "T" + pad(Int64(c.hour), 2) + ":" + pad(Int64(c.minute), 2) + ":" + pad(Int64(c.second), 2)
        if t.nanoseconds != 0 {
            var frac = pad(Int64(t.nanoseconds), 9)
            while frac.hasSuffix("0") { frac.removeLast() }
            s += "." + frac
        }
        if t.utcOffset == 0 {
            s += "Z"
        } else {
            let off = abs(Int64(t.utcOffset))
            s += (t.utcOffset < 0 ? "-" : "+") + pad(off / 3600, 2) + ":" + pad(off % 3600 / 60, 2)
        }
        return s
    }

    static func goQuote(_ raw: [UInt8]) -> [UInt8] {
        let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
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

    static func validSequenceLength(_ b: [UInt8], at i: Int) -> Int {
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

    static func parseTimestamp(_ text: String) -> Timestamp? {
        let b = Array(text.utf8)
        var i = 0
        func num(_ n: Int) -> Int64? {
            guard i + n <= b.count else { return nil }
            var v: Int64 = 0
            for k in i..<(i + n) {
                guard b[k] >= 48 && b[k] <= 57 else { return nil }
                v = v * 10 + Int64(b[k] - 48)
            }
            i += n
            return v
        }
        func expect(_ c: Character) -> Bool {
            guard i < b.count, b[i] == c.asciiValue! else { return false }
            i += 1
            return true
        }
        guard let year = num(4), expect("-"), let month = num(2), expect("-"), let day = num(2) else { return nil }
        guard i < b.count, b[i] == UInt8(ascii: "T") || b[i] == UInt8(ascii: "t") || b[i] == UInt8(ascii: " ") else { return nil }
        i += 1
        guard let hour = num(2), expect(":"), let minute = num(2), expect(":"), let second = num(2) else { return nil }
        guard (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        let isLeap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let monthDays = [31, isLeap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        guard day <= Int64(monthDays[Int(month) - 1]) else { return nil }
        var nanos: Int64 = 0
        if i < b.count && b[i] == UInt8(ascii: ".") {
            i += 1
            var digits = 0
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                if digits < 9 { nanos = nanos * 10 + Int64(b[i] - 48) }
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            if digits < 9 { for _ in digits..<9 { nanos *= 10 } }
        }
        var offset: Int64 = 0
        guard i < b.count else { return nil }
        if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") {
            i += 1
        } else if b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
            let negative = b[i] == UInt8(ascii: "-")
            i += 1
            guard let oh = num(2), expect(":"), let om = num(2), oh <= 24, om < 60 else { return nil }
            offset = (oh * 3600 + om * 60) * (negative ? -1 : 1)
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        let days = Timestamp.daysFromCivil(year, Int(month), Int(day))
        let local = days * 86400 + hour * 3600 + minute * 60 + second
        return Timestamp(seconds: local - offset, nanoseconds: Int32(nanos), utcOffset: Int32(offset))
    }

    static func parseID(_ s: String) -> ID? {
        let u = Array(s.utf8)
        guard u.count == 64 else { return nil }
        var out = [UInt8]()
        var i = 0
        while i < u.count {
            guard let hi = Hex.nibble(u[i]), let lo = Hex.nibble(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return ID(out)
    }
}

// MARK: - Generated nodes

/// Random nodes that stress the encoder: every kind, names and link targets that are not UTF-8, strings
/// with quotes, backslashes and control characters, extreme numbers and timestamps.
private struct NodeGenerator {
    var rng: SeededRandom

    static let kinds: [Node.Kind] = [.file, .dir, .symlink, .dev, .chardev, .fifo, .socket, .irregular]
    static let bytePieces: [[UInt8]] = [
        [0x22], [0x5c], [0x27], [0x00], [0x07], [0x08], [0x09], [0x0a], [0x0b], [0x0c], [0x0d], [0x1b], [0x1f],
        [0x20], [0x7f], [0x80], [0xbf], [0xff], [0xc0, 0xaf], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80],
        [0xf0, 0x9f, 0x8e], utf8("é"), utf8("名前"), utf8("🎉"), utf8("\u{2028}"), utf8("\u{fffd}"), utf8("<&>"),
        utf8("abc"), utf8("IMG_0001.jpg"), utf8("\\x41"), utf8("\\u00e9"), utf8("/"), utf8(" "),
    ]
    static let stringPieces: [String] = [
        "a", "alice", "wheel", "\"", "\\", "\n", "\t", "\r", "\u{0}", "\u{1}", "\u{8}", "\u{c}", "\u{1f}", "\u{7f}",
        "é", "名", "🎉", "\u{2028}", "<&>", " ", "/", "\\u0041", "I/O error",
    ]

    mutating func below(_ n: UInt64) -> UInt64 { rng.next() % n }
    mutating func chance(_ n: UInt64) -> Bool { rng.next() % n == 0 }

    mutating func bytes(maxPieces: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        for _ in 0..<below(maxPieces + 1) {
            if chance(4) {
                out.append(UInt8(truncatingIfNeeded: rng.next()))
            } else {
                out += Self.bytePieces[Int(below(UInt64(Self.bytePieces.count)))]
            }
        }
        return out
    }

    mutating func string(maxPieces: UInt64) -> String {
        var s = ""
        for _ in 0..<below(maxPieces + 1) { s += Self.stringPieces[Int(below(UInt64(Self.stringPieces.count)))] }
        return s
    }

    mutating func number() -> UInt64 {
        switch below(6) {
        case 0: return 0
        case 1: return .max
        case 2: return below(10)
        case 3: return rng.next() >> below(64)
        default: return rng.next()
        }
    }

    mutating func id() -> ID { ID(rng.bytes(32)) }

    /// A timestamp. `representable` keeps it to what RFC 3339 carries (years 0…9999, nanoseconds below
    /// a second, offsets of whole minutes up to a day), so it decodes back exactly; otherwise it may be
    /// anything `Timestamp` can hold that the formatter handles.
    mutating func timestamp(representable: Bool) -> Timestamp {
        if !representable && chance(3) {
            let seconds = Int64(bitPattern: rng.next()) >> 24  // about ±17,000 years
            let nanos = chance(2) ? Int32(truncatingIfNeeded: rng.next()) : Int32(below(1_000_000_000))
            let offset = Int32(truncatingIfNeeded: Int64(bitPattern: rng.next()) >> 44)  // about ±145 hours
            return Timestamp(seconds: seconds, nanoseconds: nanos, utcOffset: offset)
        }
        let seconds: Int64
        switch below(4) {
        case 0: seconds = [0, -1, 1, -86_400, 951_782_400, 1_700_000_000, -62_000_000_000, 253_000_000_000][Int(below(8))]
        default: seconds = Int64(below(315_000_000_000)) - 62_000_000_000
        }
        let nanos: Int32
        switch below(5) {
        case 0: nanos = 0
        case 1: nanos = 500_000_000
        case 2: nanos = Int32(below(1_000_000)) * 1000
        case 3: nanos = 1
        default: nanos = Int32(below(1_000_000_000))
        }
        let offset: Int32 = chance(3) ? 0 : (Int32(below(2881)) - 1440) * 60
        return Timestamp(seconds: seconds, nanoseconds: nanos, utcOffset: offset)
    }

    /// A node. `representable` keeps to values the tree format carries back exactly (content only on files).
    mutating func node(representable: Bool) -> Node {
        let kind = Self.kinds[Int(below(UInt64(Self.kinds.count)))]
        var n = Node(name: bytes(maxPieces: 8), type: kind)
        if !chance(5) { n.mode = UInt32(truncatingIfNeeded: number()) }
        n.mtime = timestamp(representable: representable)
        n.atime = timestamp(representable: representable)
        n.ctime = timestamp(representable: representable)
        n.uid = UInt32(truncatingIfNeeded: number())
        n.gid = UInt32(truncatingIfNeeded: number())
        if !chance(3) { n.user = string(maxPieces: 3) }
        if !chance(3) { n.group = string(maxPieces: 3) }
        n.inode = number()
        n.deviceID = number()
        n.size = number()
        n.links = number()
        if chance(3) { n.linkTarget = bytes(maxPieces: 6) }
        n.device = chance(2) ? 0 : number()
        if kind == .file || !representable { n.content = (0..<below(5)).map { _ in id() } }
        if chance(2) { n.subtree = id() }
        if chance(4) {
            n.extendedAttributes = (0..<below(4)).map { _ in
                Node.ExtendedAttribute(name: string(maxPieces: 3), value: rng.bytes(Int(below(40))))
            }
        }
        if chance(4) { n.error = string(maxPieces: 4) }
        return n
    }
}

// MARK: - Tests

@Suite("Tree codec")
struct TreeCodecTests {

    // MARK: Encoder parity

    @Test("Encoder: output is byte-identical to the reference encoder on generated trees")
    func encoderMatchesReference() {
        var gen = NodeGenerator(rng: SeededRandom(seed: 0x7ee_c0de))
        expectSameBytes(Tree().encoded(), Reference.encode(Tree()))
        for i in 0..<3000 {
            let tree = Tree(nodes: (0..<(1 + gen.below(4))).map { _ in gen.node(representable: i % 2 == 0) })
            let fast = tree.encoded()
            let reference = Reference.encode(tree)
            if fast != reference {
                Issue.record("case \(i) differs:\n  fast \(String(decoding: fast, as: UTF8.self))\n  ref  \(String(decoding: reference, as: UTF8.self))")
                return
            }
        }
    }

    @Test("Encoder: a large realistic tree encodes exactly as the reference does")
    func encoderMatchesReferenceLargeTree() {
        var nodes: [Node] = []
        for i in 0..<2000 {
            var n = Node(name: utf8("file-\(i).dat"), type: i % 10 == 0 ? .dir : .file)
            n.mode = i % 10 == 0 ? Node.goModeDir | 0o755 : 0o644
            n.mtime = Timestamp(seconds: 1_700_000_000 + Int64(i), nanoseconds: Int32(i * 7919), utcOffset: 3600)
            n.atime = n.mtime
            n.ctime = Timestamp(seconds: 1_700_000_000, nanoseconds: 0, utcOffset: -25_200)
            n.uid = 1000; n.gid = 1000; n.user = "alice"; n.group = "staff"
            n.inode = UInt64(i) + 1; n.deviceID = 2049; n.links = 1
            if n.type == .file {
                n.size = UInt64(i) * 4096
                n.content = (0..<(i % 4)).map { ID.hash(utf8("blob \(i) \($0)")) }
            } else {
                n.subtree = ID.hash(utf8("tree \(i)"))
            }
            nodes.append(n)
        }
        let tree = Tree(nodes: nodes)
        expectSameBytes(tree.encoded(), Reference.encode(tree))
    }

    @Test("Encoder: timestamps format exactly as the reference, inside and outside RFC 3339's range")
    func timestampFormatMatchesReference() {
        let fixed: [Timestamp] = [
            Timestamp(seconds: 0), Timestamp(seconds: -1), Timestamp(seconds: 0, nanoseconds: 1),
            Timestamp(seconds: 0, nanoseconds: 100_000_000), Timestamp(seconds: 0, nanoseconds: 999_999_999),
            Timestamp(seconds: -62_135_596_800),  // 0001-01-01T00:00:00Z, Go's zero time
            Timestamp(seconds: -62_167_219_200),  // 0000-01-01
            Timestamp(seconds: -62_167_219_201),  // year -1
            Timestamp(seconds: 253_402_300_799, nanoseconds: 999_999_999),  // 9999-12-31T23:59:59.999999999Z
            Timestamp(seconds: 253_402_300_800),  // year 10000
            Timestamp(seconds: 1_700_000_000, nanoseconds: 0, utcOffset: 19_800),  // +05:30
            Timestamp(seconds: 1_700_000_000, nanoseconds: 0, utcOffset: -34_200),  // -09:30
            Timestamp(seconds: 1_700_000_000, nanoseconds: 0, utcOffset: 3_601),  // odd seconds are dropped
            Timestamp(seconds: 1_700_000_000, nanoseconds: 0, utcOffset: 359_999),
            Timestamp(seconds: 1_700_000_000, nanoseconds: 0, utcOffset: 360_000),  // 100 hours: three digits
            Timestamp(seconds: 1_700_000_000, nanoseconds: -1),
            Timestamp(seconds: 1_700_000_000, nanoseconds: 1_000_000_000),
            Timestamp(seconds: 1_700_000_000, nanoseconds: .max, utcOffset: .max / 2),
            Timestamp(seconds: 1_700_000_000, nanoseconds: .min, utcOffset: .min / 2),
        ]
        for t in fixed {
            #expect(t.rfc3339 == Reference.rfc3339(t), "\(t.seconds) \(t.nanoseconds) \(t.utcOffset)")
        }
        var gen = NodeGenerator(rng: SeededRandom(seed: 3339))
        for i in 0..<50_000 {
            let t = gen.timestamp(representable: i % 2 == 0)
            let fast = t.rfc3339
            let reference = Reference.rfc3339(t)
            if fast != reference {
                Issue.record("\(t.seconds) \(t.nanoseconds) \(t.utcOffset): \(fast) vs \(reference)")
                return
            }
        }
    }

    @Test("Encoder: integers, IDs and base64 come out as String(n), hex and Foundation write them")
    func primitivesMatch() {
        let signed: [Int64] = [0, 1, -1, 9, 10, 99, 100, -100, 1_000_000_007, .max, .min, .min + 1]
        let unsigned: [UInt64] = [0, 1, 9, 10, 99, 100, 999, 1000, 4_294_967_295, 4_294_967_296, 9_999_999_999_999_999_999,
                                  10_000_000_000_000_000_000, .max, .max - 1]
        var w = JSONWriter()
        var expected = ""
        w.beginArray()
        for n in signed { w.number(n); expected += (expected.isEmpty ? "" : ",") + String(n) }
        for n in unsigned { w.number(n); expected += "," + String(n) }
        for n in [Int8.min, -1, 0, Int8.max] { w.number(n); expected += "," + String(n) }
        w.number(UInt32.max); expected += "," + String(UInt32.max)
        w.endArray()
        #expect(String(decoding: w.bytes, as: UTF8.self) == "[" + expected + "]")

        var rng = SeededRandom(seed: 64)
        for _ in 0..<2000 {
            let v = rng.next() >> (rng.next() % 64)
            var one = JSONWriter()
            one.number(v)
            #expect(one.bytes == utf8(String(v)))
            #expect(DecimalDigits.digitCount(v) == String(v).count)
        }
        for _ in 0..<500 {
            let id = ID(rng.bytes(32))
            #expect(id.hex == Reference.hex(id))
            #expect(ID(hex: id.hex) == id)
            #expect(ID(hex: id.hex.uppercased()) == id)
        }
        for length in 0..<70 {
            let raw = rng.bytes(length)
            var b = JSONWriter()
            b.string(base64: raw)
            #expect(b.bytes == utf8("\"" + Data(raw).base64EncodedString() + "\""), "length \(length)")
        }
    }

    @Test("Encoder: names are written as GoQuote.quote and JSON escaping would write them", arguments: 0..<4)
    func goQuotedNamesMatch(seed: Int) {
        var gen = NodeGenerator(rng: SeededRandom(seed: UInt64(seed) &+ 0x9a0))
        for _ in 0..<1000 {
            let name = gen.bytes(maxPieces: 16)
            var fast = JSONWriter()
            fast.string(goQuoting: name)
            var reference = Reference.Writer()
            reference.string(utf8: Reference.goQuote(name))
            expectSameBytes(fast.bytes, reference.bytes, "\(name)")
            #expect(GoQuote.quote(name) == Reference.goQuote(name))
        }
        // Every single byte, alone and between plain text.
        for b in 0...255 {
            for name in [[UInt8(b)], utf8("a") + [UInt8(b)] + utf8("z")] {
                var fast = JSONWriter()
                fast.string(goQuoting: name)
                var reference = Reference.Writer()
                reference.string(utf8: Reference.goQuote(name))
                expectSameBytes(fast.bytes, reference.bytes, "byte \(b)")
            }
        }
    }

    // MARK: Round trips

    @Test("Round trip: generated nodes of every kind decode to what was encoded", arguments: 0..<3)
    func generatedRoundTrip(seed: Int) throws {
        var gen = NodeGenerator(rng: SeededRandom(seed: UInt64(seed) &+ 0x5eed))
        for i in 0..<1000 {
            let tree = Tree(nodes: (0..<(1 + gen.below(4))).map { _ in gen.node(representable: true) })
            let bytes = tree.encoded()
            let decoded = try Tree.decode(bytes)
            guard decoded == tree else {
                Issue.record("case \(i) does not round-trip: \(String(decoding: bytes, as: UTF8.self))")
                return
            }
            for (a, b) in zip(decoded.nodes, tree.nodes) {
                #expect(a.mtime.utcOffset == b.mtime.utcOffset && a.atime.utcOffset == b.atime.utcOffset
                        && a.ctime.utcOffset == b.ctime.utcOffset)
            }
            expectSameBytes(decoded.encoded(), bytes)
        }
    }

    @Test("Round trip: extreme values of every field", arguments: [Node.Kind.file, .dir, .symlink, .dev, .chardev, .fifo, .socket, .irregular])
    func extremeRoundTrip(kind: Node.Kind) throws {
        var n = Node(name: [0xff, 0x00, 0x22, 0x5c, 0x0a, 0x7f] + utf8("名🎉") + [0xc3], type: kind)
        n.mode = .max
        n.mtime = Timestamp(seconds: -62_167_219_200)  // 0000-01-01T00:00:00Z
        n.atime = Timestamp(seconds: 253_402_300_799, nanoseconds: 999_999_999, utcOffset: -86_340)  // -23:59
        n.ctime = Timestamp(seconds: -1, nanoseconds: 1, utcOffset: 89_940)  // +24:59
        n.uid = .max; n.gid = .max
        n.user = "\u{0}\u{1f}\"\\\u{7f}\u{2028}名"
        n.group = String(repeating: "g", count: 300)
        n.inode = .max; n.deviceID = .max; n.size = .max; n.links = .max; n.device = .max
        n.linkTarget = kind == .symlink ? [0x00, 0xff, 0xfe] + utf8("/é") : utf8("target")
        n.extendedAttributes = [.init(name: "", value: []), .init(name: "user.\u{1}", value: Array(0...255))]
        n.error = "\n"
        if kind == .file { n.content = (0..<100).map { ID.hash(utf8("\($0)")) } }
        n.subtree = ID(hex: String(repeating: "f", count: 64))
        let tree = Tree(nodes: [n, Node(name: [], type: kind)])
        let bytes = tree.encoded()
        expectSameBytes(bytes, Reference.encode(tree))
        let decoded = try Tree.decode(bytes)
        #expect(decoded == tree)
        #expect(decoded.nodes[0].atime.utcOffset == -86_340 && decoded.nodes[0].ctime.utcOffset == 89_940)
    }

    // MARK: restic's output

    /// The tree of a directory as restic 0.14.0 stored it (`restic cat blob`): Go escapes `&`, `<`, `>` as
    /// `\u0026…`, Go-quotes names (`lat\xe9n` is the Latin-1 byte 0xE9), writes a non-UTF-8 link target with
    /// U+FFFD (0.14 predates `linktarget_raw`), hard links, extended attributes, a FIFO, a setuid file and
    /// a 1969 time in a +01:00 zone. Its SHA-256 is the blob ID restic gave it.
    static let resticTree = #"""
    {"nodes":[{"name":"R\u0026D \u003cx\u003e.txt","type":"file","mode":420,"mtime":"1969-07-21T02:17:40.5+01:00","atime":"1969-07-21T02:17:40.5+01:00","ctime":"2026-11-22T12:59:04.858091959+01:00","uid":0,"gid":0,"user":"root","group":"root","inode":16337395,"device_id":65024,"links":1,"content":[]},{"name":"badlink","type":"symlink","mode":134218239,"mtime":"2026-11-22T12:59:04.834091959+01:00","atime":"2026-11-22T12:59:04.834091959+01:00","ctime":"2026-11-22T12:59:04.834091959+01:00","uid":0,"gid":0,"user":"root","group":"root","inode":16337392,"device_id":65024,"links":1,"linktarget":"tar\ufffdget","content":null},{"name":"big.bin","type":"file","mode":420,"mtime":"2026-11-22T12:59:04.822091959+01:00","atime":"2026-11-22T12:59:04.822091959+01:00","ctime":"2026-11-22T12:59:04.822091959+01:00","uid":0,"gid":0,"user":"root","group":"root","inode":16337390,"device_id":65024,"size":3000000,"links":1,"content":["a0f29224ed6d74fd73a0c597eba94c54af1ea77611f2ea8c92e04839d22fbd7d"]},{"name":"hardlink","type":"file","mode":420,"mtime":"2026-11-22T12:59:04.802143454+01:00","atime":"2026-11-22T12:59:04.802143454+01:00","ctime":"2026-11-22T12:59:09.858091959+01:00","uid":0,"gid":0,"user":"root","group":"root","inode":16337378,"device_id":65024,"size":12,"links":2,"extended_attributes":[{"name":"user.comment","value":"aGVsbG8="},{"name":"user.bin","value":"AP+ACg=="}],"content":["a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447"]},{"name":"lat\\xe9n","type":"file","mode":420,"mtime":"2026-11-22T12:59:04.850091959+01:00","atime":"2026-11-22T12:59:04.850091959+01:00","ctime":"2026-11-22T12:59:04.850091959+01:00","uid":0,"gid":0,"user":"root","group":"root","inode":16337394,"device_id":65024,"links":1,"content":[]},{"name":"link","type":"symlink","mode":134218239,"mtime":"2026-11-22T12:59:04.826091959+01:00","atime":"2026-11-22T12:59:04.826091959+01:00","ctime":"2026-11-22T12:59:04.826091959+01:00","uid":0,"gid":0,"user":"root","group":"root","inode":16337391,"device_id":65024,"links":1,"linktarget":"plain.txt","content":null},{"name":"pipe","type":"fifo","mode":33554852,"mtime":"2026-11-22T12:59:04.842091959+01:00","atime":"2026-11-22T12:59:04.842091959+01:00","ctime":"2026-11-22T12:59:04.842091959+01:00","uid":0,"gid":0,"user":"root","group":"root","inode":16337393,"device_id":65024,"content":null},{"name":"plain.txt","type":"file","mode":420,"mtime":"2026-11-22T12:59:04.802143454+01:00","atime":"2026-11-22T12:59:04.802143454+01:00","ctime":"2026-11-22T12:59:09.858091959+01:00","uid":0,"gid":0,"user":"root","group":"root","inode":16337378,"device_id":65024,"size":12,"links":2,"extended_attributes":[{"name":"user.comment","value":"aGVsbG8="},{"name":"user.bin","value":"AP+ACg=="}],"content":["a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447"]},{"name":"quote\\\"back\\\\slash","type":"file","mode":8389101,"mtime":"2026-11-22T12:59:04.850091959+01:00","atime":"2026-11-22T12:59:04.850091959+01:00","ctime":"2026-11-22T12:59:04.862091959+01:00","uid":0,"gid":0,"user":"root","group":"root","inode":16337396,"device_id":65024,"links":1,"content":[]},{"name":"sub","type":"dir","mode":2147484141,"mtime":"2026-11-22T12:59:04.854091959+01:00","atime":"2026-11-22T12:59:04.854091959+01:00","ctime":"2026-11-22T12:59:04.854091959+01:00","uid":0,"gid":0,"user":"root","group":"root","inode":16337387,"device_id":65024,"content":null,"subtree":"e427251c977182197f29d6f4e352764a018ea7fa21a5a39567194e3d79ec1e28"},{"name":"tab\\there","type":"file","mode":420,"mtime":"2026-11-22T12:59:04.850091959+01:00","atime":"2026-11-22T12:59:04.850091959+01:00","ctime":"2026-11-22T12:59:04.850091959+01:00","uid":0,"gid":0,"user":"root","group":"root","inode":16337397,"device_id":65024,"links":1,"content":[]},{"name":"ünïcödé 名前 🎉","type":"file","mode":420,"mtime":"2026-11-22T12:59:04.850091959+01:00","atime":"2026-11-22T12:59:04.850091959+01:00","ctime":"2026-11-22T12:59:04.850091959+01:00","uid":0,"gid":0,"user":"root","group":"root","inode":16337398,"device_id":65024,"links":1,"content":[]}]}

    """#

    @Test("restic: decodes a tree restic 0.14 wrote, byte for byte as it stored it")
    func decodeResticOutput() throws {
        let bytes = utf8(Self.resticTree)
        #expect(ID.hash(bytes) == ID(hex: "e25ce48f61db27346729120a0f950b1c27ab12513254d11657ac646ba0c6a3f1"))
        let tree = try Tree.decode(bytes)
        #expect(tree.nodes.map(\.displayName) == [
            "R&D <x>.txt", "badlink", "big.bin", "hardlink", #"lat\xe9n"#, "link", "pipe", "plain.txt",
            #"quote"back\slash"#, "sub", "tab\there", "ünïcödé 名前 🎉",
        ])
        let rd = tree.nodes[0]
        #expect(rd.name == utf8("R&D <x>.txt") && rd.type == .file && rd.mode == 0o644)
        #expect(rd.mtime == Timestamp(seconds: -14_164_940, nanoseconds: 500_000_000) && rd.mtime.utcOffset == 3600)
        #expect(rd.ctime == Timestamp(seconds: 1_795_348_744, nanoseconds: 858_091_959))
        #expect(rd.user == "root" && rd.group == "root" && rd.inode == 16_337_395 && rd.deviceID == 65024 && rd.links == 1)
        #expect(rd.content.isEmpty && rd.size == 0)

        let badlink = tree.nodes[1]
        #expect(badlink.type == .symlink && badlink.linkTarget == utf8("tar\u{fffd}get"))
        #expect(badlink.mode == Node.goModeSymlink | 0o777)

        let big = tree.nodes[2]
        #expect(big.size == 3_000_000 && big.content == [ID(hex: "a0f29224ed6d74fd73a0c597eba94c54af1ea77611f2ea8c92e04839d22fbd7d")!])

        let hard = tree.nodes[3]
        #expect(hard.links == 2 && hard.inode == tree.nodes[7].inode)
        #expect(hard.extendedAttributes == [.init(name: "user.comment", value: utf8("hello")), .init(name: "user.bin", value: [0, 0xff, 0x80, 0x0a])])

        #expect(tree.nodes[4].name == [0x6c, 0x61, 0x74, 0xe9, 0x6e])
        #expect(tree.nodes[5].linkTarget == utf8("plain.txt"))
        #expect(tree.nodes[6].type == .fifo && tree.nodes[6].mode == Node.goModeNamedPipe | 0o644)
        #expect(tree.nodes[8].name == utf8(#"quote"back\slash"#) && tree.nodes[8].unixPermissions == 0o4755)
        #expect(tree.nodes[9].type == .dir && tree.nodes[9].subtree == ID(hex: "e427251c977182197f29d6f4e352764a018ea7fa21a5a39567194e3d79ec1e28"))
        #expect(tree.nodes[10].name == utf8("tab\there"))
        #expect(tree.nodes[11].name == utf8("ünïcödé 名前 🎉"))

        // Haven's own encoding of the same tree decodes to the same nodes.
        #expect(try Tree.decode(tree.encoded()) == tree)
    }

    @Test("restic: random byte mutations of restic's tree never trap, and what decodes is valid JSON")
    func mutatedResticTree() {
        let bytes = utf8(Self.resticTree)
        var rng = SeededRandom(seed: 0x14)
        let interesting: [UInt8] = [0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x6e, 0x30, 0x2d, 0x00, 0xff, 0x75, 0x20]
        var decoded = 0
        for i in 0..<4000 {
            var m = bytes
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let at = Int(rng.next() % UInt64(m.count))
                let byte = rng.next() % 2 == 0 ? interesting[Int(rng.next() % UInt64(interesting.count))] : UInt8(truncatingIfNeeded: rng.next())
                switch rng.next() % 3 {
                case 0: m[at] = byte
                case 1: m.insert(byte, at: at)
                default: m.remove(at: at)
                }
            }
            do {
                _ = try Tree.decode(m)
                decoded += 1
                // Whatever the tree decoder accepts, the general JSON parser accepts too.
                #expect((try? JSONValue.parse(m)) != nil, "case \(i) decoded but is not JSON")
            } catch let e as HavenError where e.code == .corrupt {
            } catch {
                Issue.record("case \(i): unexpected error \(error)")
            }
        }
        #expect(decoded > 0)
    }

    // MARK: What the decoder accepts

    static let h1 = String(repeating: "a1", count: 32)
    static let h2 = String(repeating: "b2", count: 32)
    static let base = #""name":"n","type":"file""#

    @Test("Decoder: unknown keys of every shape are skipped, at every level")
    func unknownKeys() throws {
        let json = #"""
        {"extra":{"a":[1,-2.5e+3,true,false,null,"s\"\\",{"b":{}}]},"nodes":[{"future":[[[]]],"name":"x","generic_attributes":{"windows.creation_time":"AAAA"},"type":"file","size":7,"number":-0.0,"content":[],"extended_attributes":[{"flags":3,"name":"user.a","value":"aGk=","more":null}],"last":"ok"}],"zzz":0}
        """#
        let tree = try Tree.decode(utf8(json))
        let n = try #require(tree.nodes.first)
        #expect(n.name == utf8("x") && n.size == 7 && n.extendedAttributes == [.init(name: "user.a", value: utf8("hi"))])
    }

    @Test("Decoder: null stands for the zero value of every optional field")
    func nulls() throws {
        let fields = ["mode", "mtime", "atime", "ctime", "uid", "gid", "user", "group", "inode", "device_id", "size", "links",
                      "linktarget", "linktarget_raw", "extended_attributes", "device", "content", "subtree", "error"]
        let n = try decodeOne(Self.base + fields.map { ",\"\($0)\":null" }.joined())
        #expect(n == Node(name: utf8("n"), type: .file))
        #expect(try Tree.decode(utf8(#"{"nodes":null}"#)).nodes.isEmpty)
    }

    @Test("Decoder: whitespace between all tokens is accepted")
    func whitespace() throws {
        let json = " \n{ \"nodes\" :\t[ {\r\n\"name\" : \"a\" , \"type\":\"dir\" ,\"uid\" : 5 , \"content\" : [ ] , \"subtree\" : \"\(Self.h1)\" } , { \"name\":\"b\",\"type\":\"file\",\"content\":[ \"\(Self.h1)\" , \"\(Self.h2)\" ] } ] } \n\n"
        let tree = try Tree.decode(utf8(json))
        #expect(tree.nodes.count == 2)
        #expect(tree.nodes[0].uid == 5 && tree.nodes[0].subtree == ID(hex: Self.h1))
        #expect(tree.nodes[1].content == [ID(hex: Self.h1)!, ID(hex: Self.h2)!])
    }

    @Test("Decoder: JSON escapes in keys and values, surrogate pairs, Go's \\u0026")
    func escapes() throws {
        let n = try decodeOne(#""n\u0061me":"\u0061\u00e9\ud83c\udf89\u0026","type":"fi\u006ce","user":"a\/b\"c\\d\n\t\b\f\r","group":"\ud800","error":"\ud800\u0041\udc00x""#)
        #expect(n.name == utf8("aé🎉&"))
        #expect(n.type == .file)
        #expect(n.user == "a/b\"c\\d\n\t\u{8}\u{c}\r")
        // Lone surrogates become U+FFFD, like Go's encoding/json.
        #expect(n.group == "\u{fffd}")
        #expect(n.error == "\u{fffd}A\u{fffd}x")
        // An escaped ID and an escaped timestamp.
        let m = try decodeOne(Self.base + #","content":["\u0061"# + String(Self.h1.dropFirst()) + #""],"mtime":"2020-01-01T00:00:00\u005a""#)
        #expect(m.content == [ID(hex: Self.h1)!])
        #expect(m.mtime == Timestamp(rfc3339: "2020-01-01T00:00:00Z"))
    }

    @Test("Decoder: invalid UTF-8 inside strings becomes U+FFFD, as the JSON parser and Go do")
    func invalidUTF8InStrings() throws {
        var json = utf8("{\"nodes\":[{\"name\":\"a")
        json += [0xff]
        json += utf8("\\\\xff\",\"type\":\"symlink\",\"user\":\"u")
        json += [0xc3]
        json += utf8("\",\"linktarget\":\"t")
        json += [0x80]
        json += utf8("\"}]}")
        let n = try #require(try Tree.decode(json).nodes.first)
        #expect(n.name == utf8("a\u{fffd}") + [0xff])
        #expect(n.user == "u\u{fffd}")
        #expect(n.linkTarget == utf8("t\u{fffd}"))
    }

    @Test("Decoder: a repeated key overrides the earlier one, as in Go")
    func repeatedKeys() throws {
        let n = try decodeOne(Self.base + #","size":1,"size":2,"content":[""# + Self.h1 + #""],"content":null,"type":"dir","user":"a","user":"b""#)
        #expect(n.size == 2 && n.content.isEmpty && n.type == .dir && n.user == "b")
    }

    @Test("Decoder: linktarget_raw wins over linktarget in either order")
    func linkTargetRaw() throws {
        let raw = Data([0x61, 0xff]).base64EncodedString()
        for fields in [#""linktarget":"a\ufffd","linktarget_raw":"\#(raw)""#, #""linktarget_raw":"\#(raw)","linktarget":"a\ufffd""#] {
            #expect(try decodeOne(#""name":"l","type":"symlink","# + fields).linkTarget == [0x61, 0xff])
        }
        #expect(try decodeOne(#""name":"l","type":"symlink","linktarget":"x","linktarget_raw":"""#).linkTarget.isEmpty)
        #expect(try decodeOne(#""name":"l","type":"symlink","linktarget":"x","linktarget_raw":null"#).linkTarget == utf8("x"))
    }

    @Test("Decoder: IDs in either case; numbers at their limits")
    func idsAndNumbers() throws {
        let n = try decodeOne(Self.base + ",\"content\":[\"\(Self.h1.uppercased())\"],\"subtree\":\"\(Self.h2.uppercased())\""
            + ",\"uid\":4294967295,\"gid\":0,\"mode\":4294967295,\"size\":18446744073709551615,\"inode\":0,\"links\":0")
        #expect(n.content == [ID(hex: Self.h1)!] && n.subtree == ID(hex: Self.h2))
        #expect(n.uid == .max && n.mode == .max && n.size == .max && n.links == 0)
    }

    @Test("Decoder: unknown values nested up to the depth limit are accepted, deeper ones rejected")
    func nestingLimit() throws {
        // Three containers (tree, nodes, node) surround the value.
        func tree(depth: Int) -> [UInt8] {
            utf8("{\"nodes\":[{\(Self.base),\"deep\":" + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + "}]}")
        }
        #expect(try Tree.decode(tree(depth: TreeDecoder.maxDepth - 3)).nodes.count == 1)
        expectCorrupt({ _ = try Tree.decode(tree(depth: TreeDecoder.maxDepth - 2)) })
        expectCorrupt({ _ = try Tree.decode(tree(depth: 100_000)) })
    }

    // MARK: What the decoder rejects

    @Test("Decoder: malformed trees throw .corrupt", arguments: [
        // Wrong types and out-of-range numbers.
        "\"uid\":4294967296", "\"gid\":-1", "\"mode\":4294967296", "\"uid\":\"0\"", "\"uid\":1e3", "\"uid\":+1",
        "\"size\":1E3", "\"size\":1.0", "\"size\":[1]", "\"size\":{}", "\"links\":true", "\"inode\":99999999999999999999",
        "\"device\":-0", "\"device_id\":\"\"",
        // Timestamps.
        "\"mtime\":123", "\"mtime\":\"2020-01-01T00:00:00\"", "\"mtime\":\"2020-01-01T00:00:00+0100\"",
        "\"mtime\":\"2020-02-30T00:00:00Z\"", "\"mtime\":\"2021-02-29T00:00:00Z\"", "\"mtime\":\"2020-01-01T24:00:00Z\"",
        "\"mtime\":\"2020-01-01T00:00:00.Z\"", "\"mtime\":\"2020-01-01T00:00:00Zjunk\"", "\"mtime\":\"20200-01-01T00:00:00Z\"",
        "\"ctime\":\"2020-01-01T00:00:00+25:00\"", "\"atime\":\"2020-01-01T00:00:00+01:60\"", "\"atime\":\"2020-1-01T00:00:00Z\"",
        "\"atime\":[]", "\"atime\":\"\"",
        // Strings.
        "\"user\":5", "\"group\":[]", "\"error\":{}", "\"linktarget\":1", "\"linktarget_raw\":5", "\"linktarget_raw\":\"***\"",
        // IDs.
        "\"content\":\"abc\"", "\"content\":{}", "\"content\":[\"\(String(repeating: "a", count: 65))\"]",
        "\"content\":[\" \(String(repeating: "a", count: 63))\"]", "\"content\":[\"\(String(repeating: "a", count: 62))\\\"\"]",
        "\"content\":[\"\(String(repeating: "a", count: 63))é\"]", "\"content\":[null]", "\"content\":[[]]",
        "\"subtree\":true", "\"subtree\":[]", "\"subtree\":\"\(String(repeating: "g", count: 64))\"", "\"subtree\":\"\"",
        // Extended attributes.
        "\"extended_attributes\":{}", "\"extended_attributes\":[5]", "\"extended_attributes\":[{\"name\":5}]",
        "\"extended_attributes\":[{\"name\":\"a\",\"value\":\"***\"}]", "\"extended_attributes\":[{\"name\":\"a\",\"value\":5}]",
        "\"extended_attributes\":[{\"value\":\"aGk=\"}]", "\"extended_attributes\":[{\"name\":null}]",
        // Name and type.
        "\"type\":null", "\"name\":null", "\"type\":\"FILE\"", "\"type\":\"\"", "\"name\":\"bad \\\\q escape\"",
        // JSON syntax inside a node.
        "\"extra\":[1,2,]", "\"extra\":tru", "\"extra\":-", "\"extra\":1.", "\"extra\":1e", "\"extra\":.5", "\"extra\":+1",
        "\"extra\":\"\\q\"", "\"extra\":\"\\u12\"", "\"extra\":\"\\u12G4\"", "\"extra\":\"a\u{1}b\"", "\"extra\":{\"a\"}",
        "\"extra\":{\"a\":}", "\"extra\":{1:2}", "\"extra\" 1", "\"extra\":nul", "\"extra\":\"\\",
    ])
    func malformedNodes(field: String) {
        expectCorrupt({ _ = try Tree.decode(utf8("{\"nodes\":[{\(Self.base),\(field)}]}")) }, field)
    }

    @Test("Decoder: malformed documents throw .corrupt", arguments: [
        "", " ", "[]", "\"x\"", "garbage", "{", "{}}", "{\"nodes\":[]", "{\"nodes\":[]}}", "{nodes:[]}",
        "{\"nodes\":[] \"x\":1}", "{\"nodes\":[{\"name\":\"a\" \"type\":\"file\"}]}", "{\"nodes\":[{\"name\":\"a\",}]}",
        "{\"nodes\":[{\"name\":\"a\",\"type\":\"file\"}}", "{\"nodes\":[{\"name\":\"a\",\"type\":\"file\"},]}",
        "{\"nodes\":[{\"name\":\"a,\"type\":\"file\"}]}", "{\"nodes\":[{\"name\":\"a\",\"type\":\"file\"}]}x",
        "{\"nodes\":{\"name\":\"a\"}}", "{\"nodes\":\"\"}", "{\"nodes\":[\"\"]}", "{\"nodes\":[{}]}",
        "{\"nodes\":[],\"x\":[}", "{\"nodes\":[{\"name\":\"a\",\"type\":\"file\",\"content\":[\"\(String(repeating: "a", count: 64))\"}]}",
        "{\"nodes\":[{\"name\":\"a\",\"type\":\"file\",\"content\":[\"\(String(repeating: "a", count: 64))\",]}]}",
        "{\"nodes\":[{\"name\":\"a\",\"type\":\"file\",\"content\":[\"\(String(repeating: "a", count: 64))\"",
    ])
    func malformedDocuments(text: String) {
        expectCorrupt({ _ = try Tree.decode(utf8(text)) }, text)
    }

    @Test("Decoder: raw control characters in strings are rejected")
    func controlCharacters() {
        for c: UInt8 in [0x00, 0x01, 0x0a, 0x1f] {
            var json = utf8("{\"nodes\":[{\"name\":\"a")
            json.append(c)
            json += utf8("\",\"type\":\"file\"}]}")
            expectCorrupt({ _ = try Tree.decode(json) }, "byte \(c)")
        }
    }

    @Test("Decoder: error messages name the node and the field")
    func errorMessages() throws {
        let json = "{\"nodes\":[{\(Self.base)},{\(Self.base),\"mtime\":\"yesterday\"}]}"
        do {
            _ = try Tree.decode(utf8(json))
            Issue.record("expected an error")
        } catch let e as HavenError {
            #expect(e.code == .corrupt)
            #expect(e.message.contains("node 1") && e.message.contains("mtime") && e.message.contains("yesterday"), "\(e.message)")
        }
        do {
            _ = try Tree.decode(utf8("{\"nodes\":[{\(Self.base),\"subtree\":\"zz\"}]}"))
            Issue.record("expected an error")
        } catch let e as HavenError {
            #expect(e.message.contains("node 0") && e.message.contains("subtree"), "\(e.message)")
        }
        do {
            _ = try Tree.decode(utf8("{\"nodes\":[{\(Self.base)} x]}"))
            Issue.record("expected an error")
        } catch let e as HavenError {
            #expect(e.message.contains("not valid JSON") && e.message.contains("byte"), "\(e.message)")
        }
    }

    // MARK: Parsers against their references

    @Test("Timestamp parsing from bytes agrees with the reference parser on valid and mutated input")
    func timestampParseMatchesReference() {
        var gen = NodeGenerator(rng: SeededRandom(seed: 0x3339))
        let alphabet = utf8("0123456789-:.TtZz+ x")
        var checked = 0
        for i in 0..<40_000 {
            var text = utf8(gen.timestamp(representable: true).rfc3339)
            if i % 4 != 0 {
                for _ in 0..<(1 + gen.below(2)) {
                    let at = Int(gen.below(UInt64(text.count)))
                    let byte = alphabet[Int(gen.below(UInt64(alphabet.count)))]
                    switch gen.below(3) {
                    case 0: text[at] = byte
                    case 1: text.insert(byte, at: at)
                    default: text.remove(at: at)
                    }
                }
            }
            let s = String(decoding: text, as: UTF8.self)
            let fast = Timestamp(rfc3339: s)
            let reference = Reference.parseTimestamp(s)
            guard fast == reference, fast?.utcOffset == reference?.utcOffset else {
                Issue.record("\(s): \(String(describing: fast)) vs \(String(describing: reference))")
                return
            }
            checked += 1
        }
        #expect(checked == 40_000)
        for s in ["2020-01-01T00:00:00.1234567891234Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:60.999999999-24:59",
                  "2020-01-01t00:00:00z", "2020-01-01 00:00:00+00:00", "2000-02-29T00:00:00Z", "1900-02-29T00:00:00Z"] {
            #expect(Timestamp(rfc3339: s) == Reference.parseTimestamp(s), "\(s)")
        }
    }

    @Test("ID(hex:) agrees with the reference parser for every byte at every position")
    func idParseMatchesReference() {
        let valid = Self.h1
        for position in 0..<64 {
            for b in 0...255 {
                var u = utf8(valid)
                u[position] = UInt8(b)
                let s = String(decoding: u, as: UTF8.self)
                guard u.count == 64, String(validating: u, as: UTF8.self) != nil else { continue }
                #expect(ID(hex: s) == Reference.parseID(s), "byte \(b) at \(position)")
            }
        }
        for s in ["", "a", String(valid.dropLast()), valid + "0", valid.uppercased(), String(valid.prefix(63)) + "é"] {
            #expect(ID(hex: s) == Reference.parseID(s), "\(s)")
        }
        #expect(ID(hex: Substring(valid)) == ID(hex: valid))
    }
}
