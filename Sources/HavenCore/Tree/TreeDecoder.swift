import Foundation

/// Decodes a tree blob's JSON straight into nodes in one pass over the bytes.
///
/// There is no intermediate JSON value and no `String` for keys: keys are matched as bytes, IDs are
/// hex-decoded and timestamps parsed where they lie in the buffer, and a string is copied only when it
/// holds escapes. Field semantics follow restic's `Node.UnmarshalJSON` (Go's encoding/json): unknown keys
/// are skipped, `null` leaves a field at its zero value (only `name` and `type` are required), a repeated
/// key overrides the earlier one, and invalid UTF-8 inside a string becomes U+FFFD. Skipped values are
/// validated too, with `JSONValue.parse`'s nesting limit, so whatever decodes is valid JSON and hostile
/// input throws `.corrupt` instead of trapping.
struct TreeDecoder {
    private let b: UnsafeBufferPointer<UInt8>
    private var i = 0
    /// The unescaped text of the current string when it holds escapes; reused from string to string.
    private var scratch: [UInt8] = []
    /// The node being decoded, for error messages.
    private var nodeIndex = 0

    /// Containers nested deeper than this are rejected, like `JSONValue.parse`'s default.
    static let maxDepth = 256

    init(_ buffer: UnsafeBufferPointer<UInt8>) { b = buffer }

    mutating func decodeTree() throws -> [Node] {
        skipSpace()
        guard i < b.count else { throw syntax("unexpected end") }
        guard b[i] == UInt8(ascii: "{") else {
            try skipValue(depth: 0)
            skipSpace()
            guard i == b.count else { throw syntax("unexpected data after the document") }
            throw HavenError(.corrupt, "tree is not a JSON object")
        }
        i += 1
        var nodes: [Node] = []
        if try beginMembers() {
            repeat {
                let isNodes = try memberKey { Self.equals($0, "nodes") }
                if isNodes { nodes = try nodeList() } else { try skipValue(depth: 1) }
            } while try nextMember()
        }
        skipSpace()
        guard i == b.count else { throw syntax("unexpected data after the document") }
        return nodes
    }

    // MARK: Nodes

    private mutating func nodeList() throws -> [Node] {
        guard i < b.count else { throw syntax("unexpected end") }
        if b[i] == UInt8(ascii: "n") { try literal("null"); return [] }
        guard b[i] == UInt8(ascii: "[") else { throw HavenError(.corrupt, "tree's nodes field is not a list") }
        i += 1
        var nodes: [Node] = []
        nodes.reserveCapacity((b.count - i) / 400)
        nodeIndex = 0
        if try beginElements() {
            repeat {
                nodes.append(try node())
                nodeIndex += 1
            } while try nextElement()
        }
        return nodes
    }

    private mutating func node() throws -> Node {
        guard i < b.count else { throw syntax("unexpected end") }
        guard b[i] == UInt8(ascii: "{") else { throw invalid("shape (not an object)") }
        i += 1
        var node = Node(name: [], type: .file)
        var name: [UInt8]?
        var kind: Node.Kind?
        var rawTarget: [UInt8]?
        if try beginMembers() {
            repeat {
                let field = try memberKey(NodeField.matching)
                switch field {
                case .name: name = try nodeName()
                case .type: kind = try nodeKind()
                case .mode: node.mode = try UInt32(unsigned("mode", max: UInt64(UInt32.max)))
                case .mtime: node.mtime = try timestamp("mtime")
                case .atime: node.atime = try timestamp("atime")
                case .ctime: node.ctime = try timestamp("ctime")
                case .uid: node.uid = try UInt32(unsigned("uid", max: UInt64(UInt32.max)))
                case .gid: node.gid = try UInt32(unsigned("gid", max: UInt64(UInt32.max)))
                case .user: node.user = try string("user") ?? ""
                case .group: node.group = try string("group") ?? ""
                case .inode: node.inode = try unsigned("inode", max: .max)
                case .deviceID: node.deviceID = try unsigned("device_id", max: .max)
                case .size: node.size = try unsigned("size", max: .max)
                case .links: node.links = try unsigned("links", max: .max)
                case .linkTarget: node.linkTarget = try linkTarget()
                case .linkTargetRaw: rawTarget = try base64("linktarget_raw")
                case .extendedAttributes: node.extendedAttributes = try extendedAttributes()
                case .device: node.device = try unsigned("device", max: .max)
                case .content: node.content = try idList("content ID")
                case .subtree: node.subtree = try optionalID("subtree ID")
                case .error: node.error = try string("error") ?? ""
                case nil: try skipValue(depth: 3)
                }
            } while try nextMember()
        }
        guard let name else { throw invalid("name (missing)") }
        guard let kind else { throw invalid("type (missing)") }
        node.name = name
        node.type = kind
        // As in restic, the raw bytes win over the UTF-8 form whatever the field order.
        if let rawTarget { node.linkTarget = rawTarget }
        return node
    }

    private mutating func nodeName() throws -> [UInt8]? {
        guard try !null() else { return nil }
        let start = try expectString("name")
        guard let raw = try withString(Self.unquoteName) else { throw invalid("name escape in \"\(preview(start))\"") }
        return raw
    }

    /// A name as stored: Go-quoted text inside the JSON string. Invalid UTF-8 is first replaced like
    /// every JSON string (Go's decoder does the same before restic unquotes).
    private static func unquoteName(_ s: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        if GoQuote.isValidUTF8(s) { return GoQuote.unquote(s) }
        return GoQuote.unquote(Array(String(decoding: s, as: UTF8.self).utf8))
    }

    private mutating func nodeKind() throws -> Node.Kind? {
        guard try !null() else { return nil }
        let start = try expectString("type")
        guard let kind = try withString(Node.Kind.init(jsonName:)) else { throw invalid("type \"\(preview(start))\"") }
        return kind
    }

    private mutating func linkTarget() throws -> [UInt8] {
        guard try !null() else { return [] }
        _ = try expectString("linktarget")
        return try withString { s in
            GoQuote.isValidUTF8(s) ? Array(s) : Array(String(decoding: s, as: UTF8.self).utf8)
        }
    }

    private mutating func extendedAttributes() throws -> [Node.ExtendedAttribute] {
        guard i < b.count else { throw syntax("unexpected end") }
        if b[i] == UInt8(ascii: "n") { try literal("null"); return [] }
        guard b[i] == UInt8(ascii: "[") else { throw invalid("extended_attributes (not a list)") }
        i += 1
        var attributes: [Node.ExtendedAttribute] = []
        if try beginElements() {
            repeat {
                guard i < b.count else { throw syntax("unexpected end") }
                guard b[i] == UInt8(ascii: "{") else { throw invalid("extended attribute (not an object)") }
                i += 1
                var name: String?
                var value: [UInt8] = []
                if try beginMembers() {
                    repeat {
                        let field = try memberKey { k -> UInt8 in
                            Self.equals(k, "name") ? 1 : Self.equals(k, "value") ? 2 : 0
                        }
                        switch field {
                        case 1: name = try string("extended attribute name")
                        case 2: value = try base64("extended attribute value") ?? []
                        default: try skipValue(depth: 5)
                        }
                    } while try nextMember()
                }
                guard let name else { throw invalid("extended attribute (no name)") }
                attributes.append(.init(name: name, value: value))
            } while try nextElement()
        }
        return attributes
    }

    // MARK: Typed values

    /// A non-negative integer up to `max`; `null` is 0.
    private mutating func unsigned(_ what: StaticString, max: UInt64) throws -> UInt64 {
        guard i < b.count else { throw syntax("unexpected end") }
        var d = b[i] &- UInt8(ascii: "0")
        guard d < 10 else {
            if b[i] == UInt8(ascii: "n") { try literal("null"); return 0 }
            throw invalid("\(what) (not a non-negative integer)")
        }
        var v: UInt64 = 0
        repeat {
            let (times10, o1) = v.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(d))
            guard !o1, !o2 else { throw invalid("\(what) (out of range)") }
            v = sum
            i += 1
            guard i < b.count else { break }
            d = b[i] &- UInt8(ascii: "0")
        } while d < 10
        if i < b.count, b[i] == UInt8(ascii: ".") || b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            throw invalid("\(what) (not an integer)")
        }
        guard v <= max else { throw invalid("\(what) (out of range)") }
        return v
    }

    /// An RFC 3339 time; `null` is the zero timestamp.
    private mutating func timestamp(_ what: StaticString) throws -> Timestamp {
        guard try !null() else { return Timestamp(seconds: 0) }
        let start = try expectString(what)
        guard let t = try withString(Timestamp.init(rfc3339Bytes:)) else { throw invalid("\(what) \"\(preview(start))\"") }
        return t
    }

    /// A string; nil for `null`.
    private mutating func string(_ what: StaticString) throws -> String? {
        guard try !null() else { return nil }
        _ = try expectString(what)
        return try withString { String(decoding: $0, as: UTF8.self) }
    }

    /// Base64 bytes (Go's `[]byte`); nil for `null`.
    private mutating func base64(_ what: StaticString) throws -> [UInt8]? {
        guard try !null() else { return nil }
        let start = try expectString(what)
        guard let data = try withString({ Data(base64Encoded: Data($0)) }) else { throw invalid("\(what) \"\(preview(start))\"") }
        return Array(data)
    }

    private mutating func optionalID(_ what: StaticString) throws -> ID? {
        guard try !null() else { return nil }
        return try id(what)
    }

    private mutating func id(_ what: StaticString) throws -> ID {
        let start = try expectString(what)
        // Fast path: 64 digits and the closing quote, decoded in place.
        if i + 65 < b.count, b[i + 65] == UInt8(ascii: "\""),
           let id = ID(hexDigits: UnsafeBufferPointer(rebasing: b[(i + 1)..<(i + 65)])) {
            i += 66
            return id
        }
        guard let id = try withString(ID.init(hexDigits:)) else { throw invalid("\(what) \"\(preview(start))\"") }
        return id
    }

    /// A list of IDs; `null` is the empty list.
    private mutating func idList(_ what: StaticString) throws -> [ID] {
        guard i < b.count else { throw syntax("unexpected end") }
        if b[i] == UInt8(ascii: "n") { try literal("null"); return [] }
        guard b[i] == UInt8(ascii: "[") else { throw invalid("\(what) list (not a list)") }
        i += 1
        var ids: [ID] = []
        if try beginElements() {
            // Count the IDs ahead in the canonical layout ("…64 digits…", repeated) to allocate once.
            var expected = 1
            var j = i
            while j + 66 < b.count, b[j] == UInt8(ascii: "\""), b[j + 65] == UInt8(ascii: "\""), b[j + 66] == UInt8(ascii: ",") {
                expected += 1
                j += 67
            }
            ids.reserveCapacity(expected)
            repeat { ids.append(try id(what)) } while try nextElement()
        }
        return ids
    }

    // MARK: JSON structure

    /// After `{`: whether a member follows (false when the object is empty and now closed).
    private mutating func beginMembers() throws -> Bool {
        skipSpace()
        guard i < b.count else { throw syntax("unexpected end in object") }
        if b[i] == UInt8(ascii: "}") { i += 1; return false }
        return true
    }

    /// Reads a member's key, hands its bytes to `match`, and consumes the `:` and the space after it.
    @inline(__always)
    private mutating func memberKey<R>(_ match: (UnsafeBufferPointer<UInt8>) -> R) throws -> R {
        guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw syntax("expected a field name") }
        let r = try withString(match)
        skipSpace()
        guard i < b.count, b[i] == UInt8(ascii: ":") else { throw syntax("expected ':'") }
        i += 1
        skipSpace()
        return r
    }

    /// After a member's value: whether another member follows (false when the object is now closed).
    private mutating func nextMember() throws -> Bool {
        skipSpace()
        guard i < b.count else { throw syntax("unexpected end in object") }
        if b[i] == UInt8(ascii: ",") { i += 1; skipSpace(); return true }
        if b[i] == UInt8(ascii: "}") { i += 1; return false }
        throw syntax("expected ',' or '}'")
    }

    /// After `[`: whether an element follows (false when the array is empty and now closed).
    private mutating func beginElements() throws -> Bool {
        skipSpace()
        guard i < b.count else { throw syntax("unexpected end in array") }
        if b[i] == UInt8(ascii: "]") { i += 1; return false }
        return true
    }

    /// After an element: whether another element follows (false when the array is now closed).
    private mutating func nextElement() throws -> Bool {
        skipSpace()
        guard i < b.count else { throw syntax("unexpected end in array") }
        if b[i] == UInt8(ascii: ",") { i += 1; skipSpace(); return true }
        if b[i] == UInt8(ascii: "]") { i += 1; return false }
        throw syntax("expected ',' or ']'")
    }

    /// Skips one value of any type, validating it. `depth` is the number of containers around it.
    private mutating func skipValue(depth: Int) throws {
        guard i < b.count else { throw syntax("unexpected end") }
        switch b[i] {
        case UInt8(ascii: "{"):
            guard depth < Self.maxDepth else { throw syntax("nested too deeply") }
            i += 1
            if try beginMembers() {
                repeat {
                    try memberKey { _ in () }
                    try skipValue(depth: depth + 1)
                } while try nextMember()
            }
        case UInt8(ascii: "["):
            guard depth < Self.maxDepth else { throw syntax("nested too deeply") }
            i += 1
            if try beginElements() {
                repeat { try skipValue(depth: depth + 1) } while try nextElement()
            }
        case UInt8(ascii: "\""): try withString { _ in () }
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default: try skipNumber()
        }
    }

    /// A number by JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    private mutating func skipNumber() throws {
        if b[i] == UInt8(ascii: "-") { i += 1 }
        guard skipDigits() > 0 else { throw syntax("expected a value") }
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            guard skipDigits() > 0 else { throw syntax("malformed number") }
        }
        if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            i += 1
            if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
            guard skipDigits() > 0 else { throw syntax("malformed number") }
        }
    }

    private mutating func skipDigits() -> Int {
        let start = i
        while i < b.count, b[i] &- UInt8(ascii: "0") < 10 { i += 1 }
        return i - start
    }

    private mutating func literal(_ word: StaticString) throws {
        let count = word.utf8CodeUnitCount
        guard i + count <= b.count, Self.equals(UnsafeBufferPointer(rebasing: b[i..<(i + count)]), word) else {
            throw syntax("expected \(word)")
        }
        i += count
    }

    /// Consumes a `null` and returns true, or returns false when the value is something else.
    private mutating func null() throws -> Bool {
        guard i < b.count, b[i] == UInt8(ascii: "n") else { return false }
        try literal("null")
        return true
    }

    /// Checks that a string value starts here and returns its position, for error messages.
    private func expectString(_ what: StaticString) throws -> Int {
        guard i < b.count else { throw syntax("unexpected end") }
        guard b[i] == UInt8(ascii: "\"") else { throw invalid("\(what) (not a string)") }
        return i
    }

    @inline(__always)
    private mutating func skipSpace() {
        while i < b.count {
            let c = b[i]
            guard c == 0x20 || c == 0x0a || c == 0x0d || c == 0x09 else { return }
            i += 1
        }
    }

    // MARK: Strings

    /// Reads the string starting at the `"` under the cursor and hands its unescaped bytes to `body`:
    /// a slice of the input when the string holds no escapes (the usual case), else the scratch buffer.
    /// `body` must not keep the buffer.
    @inline(__always)
    private mutating func withString<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) throws -> R {
        i += 1
        let start = i
        // Eight bytes at a time while none of them is a quote, a backslash or a control character.
        if let base = b.baseAddress {
            while i + 8 <= b.count {
                let w = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)
                if Self.hasSpecialByte(w) { break }
                i += 8
            }
        }
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                let r = try body(UnsafeBufferPointer(rebasing: b[start..<i]))
                i += 1
                return r
            }
            if c == UInt8(ascii: "\\") || c < 0x20 { break }
            i += 1
        }
        try unescapeString(from: start)
        return try scratch.withUnsafeBufferPointer { try body($0) }
    }

    /// Whether any byte of `w` is `"`, `\` or below 0x20 (exact, by the classic SWAR zero-byte test).
    @inline(__always)
    private static func hasSpecialByte(_ w: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        let quote = w ^ (ones &* 0x22)
        let backslash = w ^ (ones &* 0x5c)
        let zeroInQuote = (quote &- ones) & ~quote
        let zeroInBackslash = (backslash &- ones) & ~backslash
        let below20 = (w &- ones &* 0x20) & ~w
        return (zeroInQuote | zeroInBackslash | below20) & highs != 0
    }

    /// Unescapes the string that began at `start` into `scratch`, leaving the cursor after its closing
    /// quote. Same rules as `JSONValue.parse`: a lone surrogate becomes U+FFFD.
    private mutating func unescapeString(from start: Int) throws {
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: b[start..<i]))
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") { i += 1; return }
            if c < 0x20 { throw syntax("control character in string") }
            if c != UInt8(ascii: "\\") { scratch.append(c); i += 1; continue }
            i += 1
            guard i < b.count else { break }
            let e = b[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scratch.append(e)
            case UInt8(ascii: "b"): scratch.append(8)
            case UInt8(ascii: "f"): scratch.append(12)
            case UInt8(ascii: "n"): scratch.append(10)
            case UInt8(ascii: "r"): scratch.append(13)
            case UInt8(ascii: "t"): scratch.append(9)
            case UInt8(ascii: "u"):
                var v = try hex4()
                if (0xd800..<0xdc00).contains(v), i + 6 <= b.count, b[i] == 92, b[i + 1] == UInt8(ascii: "u") {
                    // Take the next escape only when it completes the pair; otherwise it is decoded on
                    // its own (like Go's encoding/json) and this lone surrogate becomes U+FFFD below.
                    let mark = i
                    i += 2
                    let low = try hex4()
                    if (0xdc00..<0xe000).contains(low) {
                        v = 0x10000 + ((v - 0xd800) << 10) + (low - 0xdc00)
                    } else {
                        i = mark
                    }
                }
                UTF8.encode(Unicode.Scalar(v) ?? "\u{fffd}") { scratch.append($0) }
            default: throw syntax("bad escape")
            }
        }
        throw syntax("unterminated string")
    }

    private mutating func hex4() throws -> UInt32 {
        guard i + 4 <= b.count else { throw syntax("short \\u escape") }
        var v: UInt32 = 0
        for k in i..<(i + 4) {
            let d = Hex.nibbleOrInvalid(b[k])
            guard d < 16 else { throw syntax("bad \\u escape") }
            v = v << 4 | UInt32(d)
        }
        i += 4
        return v
    }

    // MARK: Errors

    private func syntax(_ reason: String) -> HavenError {
        HavenError(.corrupt, "tree is not valid JSON: invalid JSON at byte \(i): \(reason)")
    }

    private func invalid(_ what: String) -> HavenError {
        HavenError(.corrupt, "tree node \(nodeIndex) has an invalid \(what)")
    }

    /// Up to 60 bytes of the raw string that starts at `start`, for an error message.
    private func preview(_ start: Int) -> String {
        let from = min(start + 1, b.count)
        let to = min(max(from, i - 1), from + 60, b.count)
        return String(decoding: UnsafeBufferPointer(rebasing: b[from..<to]), as: UTF8.self)
    }

    @inline(__always)
    static func equals(_ bytes: UnsafeBufferPointer<UInt8>, _ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard bytes.count == count else { return false }
        guard count > 0, let p = bytes.baseAddress else { return true }
        return memcmp(p, word.utf8Start, count) == 0
    }
}

/// The node fields Haven reads, matched from key bytes.
private enum NodeField {
    case name, type, mode, mtime, atime, ctime, uid, gid, user, group, inode, deviceID, size, links
    case linkTarget, linkTargetRaw, extendedAttributes, device, content, subtree, error

    static func matching(_ k: UnsafeBufferPointer<UInt8>) -> NodeField? {
        guard let first = k.first else { return nil }
        // Length and first byte pick one candidate; one comparison of constant length (which the
        // compiler turns into a few word compares) confirms it.
        switch (k.count, first) {
        case (3, UInt8(ascii: "u")): return TreeDecoder.equals(k, "uid") ? .uid : nil
        case (3, UInt8(ascii: "g")): return TreeDecoder.equals(k, "gid") ? .gid : nil
        case (4, UInt8(ascii: "n")): return TreeDecoder.equals(k, "name") ? .name : nil
        case (4, UInt8(ascii: "t")): return TreeDecoder.equals(k, "type") ? .type : nil
        case (4, UInt8(ascii: "m")): return TreeDecoder.equals(k, "mode") ? .mode : nil
        case (4, UInt8(ascii: "u")): return TreeDecoder.equals(k, "user") ? .user : nil
        case (4, UInt8(ascii: "s")): return TreeDecoder.equals(k, "size") ? .size : nil
        case (5, UInt8(ascii: "m")): return TreeDecoder.equals(k, "mtime") ? .mtime : nil
        case (5, UInt8(ascii: "a")): return TreeDecoder.equals(k, "atime") ? .atime : nil
        case (5, UInt8(ascii: "c")): return TreeDecoder.equals(k, "ctime") ? .ctime : nil
        case (5, UInt8(ascii: "g")): return TreeDecoder.equals(k, "group") ? .group : nil
        case (5, UInt8(ascii: "i")): return TreeDecoder.equals(k, "inode") ? .inode : nil
        case (5, UInt8(ascii: "l")): return TreeDecoder.equals(k, "links") ? .links : nil
        case (5, UInt8(ascii: "e")): return TreeDecoder.equals(k, "error") ? .error : nil
        case (6, UInt8(ascii: "d")): return TreeDecoder.equals(k, "device") ? .device : nil
        case (7, UInt8(ascii: "c")): return TreeDecoder.equals(k, "content") ? .content : nil
        case (7, UInt8(ascii: "s")): return TreeDecoder.equals(k, "subtree") ? .subtree : nil
        case (9, UInt8(ascii: "d")): return TreeDecoder.equals(k, "device_id") ? .deviceID : nil
        case (10, UInt8(ascii: "l")): return TreeDecoder.equals(k, "linktarget") ? .linkTarget : nil
        case (14, UInt8(ascii: "l")): return TreeDecoder.equals(k, "linktarget_raw") ? .linkTargetRaw : nil
        case (19, UInt8(ascii: "e")): return TreeDecoder.equals(k, "extended_attributes") ? .extendedAttributes : nil
        default: return nil
        }
    }
}

extension Node.Kind {
    /// The kind whose JSON name is `bytes`; nil for anything else (names are case-sensitive).
    init?(jsonName bytes: UnsafeBufferPointer<UInt8>) {
        guard let first = bytes.first else { return nil }
        let candidate: Node.Kind
        switch (bytes.count, first) {
        case (4, UInt8(ascii: "f")): candidate = bytes[2] == UInt8(ascii: "l") ? .file : .fifo
        case (3, UInt8(ascii: "d")): candidate = bytes[1] == UInt8(ascii: "i") ? .dir : .dev
        case (7, UInt8(ascii: "s")): candidate = .symlink
        case (7, UInt8(ascii: "c")): candidate = .chardev
        case (6, UInt8(ascii: "s")): candidate = .socket
        case (9, UInt8(ascii: "i")): candidate = .irregular
        default: return nil
        }
        guard TreeDecoder.equals(bytes, candidate.jsonName) else { return nil }
        self = candidate
    }
}
