/// One file in `index/`: which blobs live in which packs, and which older index files it replaces.
public struct IndexFile: Sendable {
    public struct Pack: Sendable {
        public var id: ID
        public var blobs: [PackedBlob]
        public init(id: ID, blobs: [PackedBlob]) { self.id = id; self.blobs = blobs }
    }

    public var supersedes: [ID] = []
    public var packs: [Pack] = []
    public init(packs: [Pack] = [], supersedes: [ID] = []) { self.packs = packs; self.supersedes = supersedes }

    public var blobCount: Int { packs.reduce(0) { $0 + $1.blobs.count } }

    public func encoded() -> [UInt8] {
        var w = JSONWriter(capacity: 256 + blobCount * 200)
        w.beginObject()
        if !supersedes.isEmpty {
            w.key("supersedes"); w.beginArray(); for s in supersedes { w.string(s.hex) }; w.endArray()
        }
        w.key("packs"); w.beginArray()
        for p in packs {
            w.beginObject()
            w.key("id"); w.string(p.id.hex)
            w.key("blobs"); w.beginArray()
            for b in p.blobs {
                w.beginObject()
                w.key("id"); w.string(b.id.hex)
                w.key("type"); w.string(b.type.rawValue)
                w.key("offset"); w.number(b.offset)
                w.key("length"); w.number(b.length)
                if b.isCompressed { w.key("uncompressed_length"); w.number(b.uncompressedLength) }
                w.endObject()
            }
            w.endArray()
            w.endObject()
        }
        w.endArray()
        w.endObject()
        return w.bytes
    }

    /// Parses an index file. Accepts restic's legacy format (a bare list of packs). Throws `.corrupt` naming `id`.
    /// Reads the JSON straight into the result, without a tree of JSON values (which would cost several
    /// hundred bytes per blob while the file is decoded).
    public static func decode(_ bytes: [UInt8], id: ID) throws -> IndexFile {
        var d = IndexDecoder(bytes: bytes, what: "index \(id.short)")
        do { try d.document() } catch let e as JSONError {
            throw HavenError(.corrupt, "\(d.what) is not valid JSON: \(e)")
        }
        if let problem = d.supersedesProblem ?? d.packsProblem { throw HavenError(.corrupt, problem) }
        return d.result
    }
}

/// Decodes an index file with `JSONParser`'s primitives: it accepts exactly the documents `JSONValue.parse`
/// accepts, with the same errors. A field with a wrong value is remembered and reported only once the whole
/// document proved to be JSON, supersedes problems before packs problems, as a check of the parsed tree would.
struct IndexDecoder {
    enum Key { case id, type, offset, length, uncompressedLength, supersedes, packs, blobs, other }

    /// A number field: a JSON unsigned integer, null, or any other value.
    enum Number {
        case value(UInt64), null, invalid
        var value: UInt64? { if case .value(let n) = self { return n }; return nil }
    }

    var p: JSONParser
    let what: String
    var result = IndexFile()
    var supersedesProblem: String?
    var packsProblem: String?

    init(bytes: [UInt8], what: String) {
        p = JSONParser(bytes: bytes, maxDepth: 256)
        self.what = what
    }

    mutating func document() throws {
        p.skipSpace()
        guard p.i < p.bytes.count else { _ = try p.parseDocument(); return }
        switch p.bytes[p.i] {
        case UInt8(ascii: "["):
            try packList()
        case UInt8(ascii: "{"):
            var seenSupersedes = false, seenPacks = false
            try object { d, key in
                switch key {
                case .supersedes where !seenSupersedes:
                    seenSupersedes = true
                    try d.supersedes()
                case .packs where !seenPacks:
                    seenPacks = true
                    let isList = try d.list { try $0.packList() }
                    if !isList, d.packsProblem == nil { d.packsProblem = d.notAList("packs") }
                default:
                    _ = try d.p.parseValue()
                }
            }
        default:
            _ = try p.parseValue()
            packsProblem = "\(what) is not a JSON object"
        }
        p.skipSpace()
        guard p.i == p.bytes.count else { throw p.fail("unexpected data after the document") }
    }

    func notAList(_ field: String) -> String { "\(what) has a \(field) field that is not a list" }

    mutating func supersedes() throws {
        let isList = try list { d in
            try d.array { d in
                if let sid = try d.idValue() {
                    d.result.supersedes.append(sid)
                } else if d.supersedesProblem == nil {
                    d.supersedesProblem = "\(d.what) has an invalid supersedes entry"
                }
            }
        }
        if !isList, supersedesProblem == nil { supersedesProblem = notAList("supersedes") }
    }

    /// A field holding a list: runs `body` at a list, accepts null as an empty list, returns false for
    /// anything else.
    mutating func list(_ body: (inout IndexDecoder) throws -> Void) throws -> Bool {
        switch p.bytes[p.i] {
        case UInt8(ascii: "["):
            try body(&self)
            return true
        default:
            return try p.parseValue().isNull
        }
    }

    mutating func packList() throws {
        try array { d in try d.pack() }
    }

    mutating func pack() throws {
        guard p.bytes[p.i] == UInt8(ascii: "{") else {
            _ = try p.parseValue()
            if packsProblem == nil { packsProblem = "\(what) has a pack without a valid id" }
            return
        }
        var pid: ID??
        var blobs: [PackedBlob] = []
        var seenBlobs = false, blobsAreList = true
        // The first bad blob: true when its uncompressed_length is what is wrong.
        var badBlob: Bool?
        try object { d, key in
            switch key {
            case .id where pid == nil:
                pid = .some(try d.idValue())
            case .blobs where !seenBlobs:
                seenBlobs = true
                blobsAreList = try d.list { d in
                    try d.array { d in
                        switch try d.blob() {
                        case .success(let b): blobs.append(b)
                        case .failure(let bad): if badBlob == nil { badBlob = bad.uncompressed }
                        }
                    }
                }
            default:
                _ = try d.p.parseValue()
            }
        }
        guard packsProblem == nil else { return }
        guard let pid = pid ?? nil else {
            packsProblem = "\(what) has a pack without a valid id"
            return
        }
        if !blobsAreList {
            packsProblem = notAList("blobs")
        } else if let badBlob {
            packsProblem = badBlob ? "\(what) has an invalid uncompressed_length" : "\(what) has an invalid blob entry in pack \(pid.short)"
        } else {
            result.packs.append(IndexFile.Pack(id: pid, blobs: blobs))
        }
    }

    struct BadBlob: Error { var uncompressed: Bool }

    mutating func blob() throws -> Result<PackedBlob, BadBlob> {
        guard p.bytes[p.i] == UInt8(ascii: "{") else {
            _ = try p.parseValue()
            return .failure(BadBlob(uncompressed: false))
        }
        var bid: ID??, type: BlobType??, offset: Number?, length: Number?, ulen: Number?
        try object { d, key in
            switch key {
            case .id where bid == nil: bid = .some(try d.idValue())
            case .type where type == nil: type = .some(try d.typeValue())
            case .offset where offset == nil: offset = try d.number()
            case .length where length == nil: length = try d.number()
            case .uncompressedLength where ulen == nil: ulen = try d.number()
            default: _ = try d.p.parseValue()
            }
        }
        guard let bid = bid ?? nil, let t = type ?? nil, let off = offset?.value, let len = length?.value,
              off <= UInt64(UInt32.max), len <= UInt64(UInt32.max), len >= UInt64(MasterKey.overhead)
        else { return .failure(BadBlob(uncompressed: false)) }
        var u: UInt64 = 0
        switch ulen {
        case nil, .null?: break
        case .invalid?: return .failure(BadBlob(uncompressed: true))
        case .value(let n)?: u = n
        }
        guard u <= UInt64(UInt32.max) else { return .failure(BadBlob(uncompressed: true)) }
        return .success(PackedBlob(id: bid, type: t, offset: UInt32(off), length: UInt32(len), uncompressedLength: UInt32(u)))
    }

    // MARK: Values (each starts at a value's first byte and consumes exactly one value)

    /// A string of 64 hex digits; nil for any other value.
    mutating func idValue() throws -> ID? {
        let i = p.i
        let id = p.bytes.withUnsafeBufferPointer { b -> ID? in
            guard i + 66 <= b.count, b[i] == UInt8(ascii: "\""), b[i + 65] == UInt8(ascii: "\""),
                  let w0 = Self.hexWord(b, i + 1), let w1 = Self.hexWord(b, i + 17),
                  let w2 = Self.hexWord(b, i + 33), let w3 = Self.hexWord(b, i + 49) else { return nil }
            return ID(w0: w0, w1: w1, w2: w2, w3: w3)
        }
        if let id {
            p.i = i + 66
            return id
        }
        return try p.parseValue().string.flatMap { ID(hex: $0) }
    }

    /// 16 hex digits (either case) at `at`, without branching on each digit.
    static func hexWord(_ b: UnsafeBufferPointer<UInt8>, _ at: Int) -> UInt64? {
        var v: UInt64 = 0, bad: UInt8 = 0
        for k in at..<(at + 16) {
            let c = b[k]
            let digit = c &- UInt8(ascii: "0"), letter = (c | 0x20) &- (UInt8(ascii: "a") - 10)
            let n = digit < 10 ? digit : (letter >= 10 && letter < 16 ? letter : 0xff)
            bad |= n
            v = v << 4 | UInt64(n & 15)
        }
        return bad < 16 ? v : nil
    }

    mutating func typeValue() throws -> BlobType? {
        let i = p.i
        let type = p.bytes.withUnsafeBufferPointer { b -> BlobType? in
            guard i + 6 <= b.count, b[i] == UInt8(ascii: "\""), b[i + 5] == UInt8(ascii: "\"") else { return nil }
            let word = UnsafeRawPointer(b.baseAddress! + i + 1).loadUnaligned(as: UInt32.self)
            if word == Self.dataWord { return .data }
            if word == Self.treeWord { return .tree }
            return nil
        }
        if let type {
            p.i = i + 6
            return type
        }
        return try p.parseValue().string.flatMap(BlobType.init(rawValue:))
    }

    static let dataWord = Array("data".utf8).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
    static let treeWord = Array("tree".utf8).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }

    /// Reads plain digits directly; anything else (signs, fractions, exponents, very long numbers, other
    /// values) goes through the parser and `UInt64(raw)`, as the tree-based decoder did.
    mutating func number() throws -> Number {
        let b = p.bytes, start = p.i
        var j = start, v: UInt64 = 0
        while j < b.count, j - start < 19, b[j] >= 48, b[j] <= 57 {
            v = v * 10 + UInt64(b[j] - 48)
            j += 1
        }
        if j > start, j < b.count, !Self.isNumberByte(b[j]) {
            p.i = j
            return .value(v)
        }
        let value = try p.parseValue()
        if value.isNull { return .null }
        return value.uint64.map(Number.value) ?? .invalid
    }

    static func isNumberByte(_ c: UInt8) -> Bool {
        (c >= 48 && c <= 57) || c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E")
            || c == UInt8(ascii: "+") || c == UInt8(ascii: "-")
    }

    // MARK: Containers, as JSONParser.parseObject and parseArray read them

    mutating func object(_ field: (inout IndexDecoder, Key) throws -> Void) throws {
        p.depth += 1
        guard p.depth <= p.maxDepth else { throw p.fail("nested too deeply") }
        defer { p.depth -= 1 }
        p.i += 1
        p.skipSpace()
        if p.i < p.bytes.count, p.bytes[p.i] == UInt8(ascii: "}") { p.i += 1; return }
        while true {
            p.skipSpace()
            guard p.i < p.bytes.count, p.bytes[p.i] == UInt8(ascii: "\"") else { throw p.fail("expected a field name") }
            let k = try key()
            p.skipSpace()
            guard p.i < p.bytes.count, p.bytes[p.i] == UInt8(ascii: ":") else { throw p.fail("expected ':'") }
            p.i += 1
            p.skipSpace()
            guard p.i < p.bytes.count else { throw p.fail("unexpected end") }
            try field(&self, k)
            p.skipSpace()
            guard p.i < p.bytes.count else { throw p.fail("unexpected end in object") }
            if p.bytes[p.i] == UInt8(ascii: ",") { p.i += 1; continue }
            if p.bytes[p.i] == UInt8(ascii: "}") { p.i += 1; return }
            throw p.fail("expected ',' or '}'")
        }
    }

    mutating func array(_ element: (inout IndexDecoder) throws -> Void) throws {
        p.depth += 1
        guard p.depth <= p.maxDepth else { throw p.fail("nested too deeply") }
        defer { p.depth -= 1 }
        p.i += 1
        p.skipSpace()
        if p.i < p.bytes.count, p.bytes[p.i] == UInt8(ascii: "]") { p.i += 1; return }
        while true {
            p.skipSpace()
            guard p.i < p.bytes.count else { throw p.fail("unexpected end") }
            try element(&self)
            p.skipSpace()
            guard p.i < p.bytes.count else { throw p.fail("unexpected end in array") }
            if p.bytes[p.i] == UInt8(ascii: ",") { p.i += 1; continue }
            if p.bytes[p.i] == UInt8(ascii: "]") { p.i += 1; return }
            throw p.fail("expected ',' or ']'")
        }
    }

    /// A field name, compared without building a string unless it has escapes.
    mutating func key() throws -> Key {
        let start = p.i + 1
        let plain = p.bytes.withUnsafeBufferPointer { b -> (Key, end: Int)? in
            var j = start
            while j < b.count, b[j] != UInt8(ascii: "\""), b[j] != UInt8(ascii: "\\"), b[j] >= 0x20 { j += 1 }
            guard j < b.count, b[j] == UInt8(ascii: "\"") else { return nil }
            return (Self.key(UnsafeBufferPointer(rebasing: b[start..<j])), j + 1)
        }
        if let plain {
            p.i = plain.end
            return plain.0
        }
        let name = Array(try p.parseString().utf8)
        return name.withUnsafeBufferPointer { Self.key($0) }
    }

    static func key(_ name: UnsafeBufferPointer<UInt8>) -> Key {
        func equals(_ s: StaticString) -> Bool {
            name.count == s.utf8CodeUnitCount && name.elementsEqual(UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
        }
        switch name.first {
        case UInt8(ascii: "i"): return equals("id") ? .id : .other
        case UInt8(ascii: "t"): return equals("type") ? .type : .other
        case UInt8(ascii: "o"): return equals("offset") ? .offset : .other
        case UInt8(ascii: "l"): return equals("length") ? .length : .other
        case UInt8(ascii: "u"): return equals("uncompressed_length") ? .uncompressedLength : .other
        case UInt8(ascii: "p"): return equals("packs") ? .packs : .other
        case UInt8(ascii: "b"): return equals("blobs") ? .blobs : .other
        case UInt8(ascii: "s"): return equals("supersedes") ? .supersedes : .other
        default: return .other
        }
    }
}
