import Foundation

/// One entry of a tree: a file, directory, symlink, device, FIFO or socket with its metadata.
///
/// Field names and value conventions follow restic: `mode` is Go's `os.FileMode` (type bits above the
/// permission bits), names are stored Go-quoted, times are RFC 3339 with nanoseconds.
public struct Node: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case file, dir, symlink, dev, chardev, fifo, socket, irregular
    }

    /// The raw name bytes (not necessarily UTF-8).
    public var name: [UInt8]
    public var type: Kind
    public var mode: UInt32 = 0
    public var mtime = Timestamp(seconds: 0)
    public var atime = Timestamp(seconds: 0)
    public var ctime = Timestamp(seconds: 0)
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    public var user: String = ""
    public var group: String = ""
    public var inode: UInt64 = 0
    public var deviceID: UInt64 = 0
    public var size: UInt64 = 0
    public var links: UInt64 = 0
    /// The raw link target bytes (symlinks only).
    public var linkTarget: [UInt8] = []
    /// st_rdev for device nodes.
    public var device: UInt64 = 0
    public var content: [ID] = []
    public var subtree: ID?
    public var extendedAttributes: [ExtendedAttribute] = []
    public var error: String = ""

    public struct ExtendedAttribute: Sendable, Equatable {
        public var name: String
        public var value: [UInt8]
        public init(name: String, value: [UInt8]) { self.name = name; self.value = value }
    }

    public init(name: [UInt8], type: Kind) {
        self.name = name
        self.type = type
    }

    /// The name for display; bytes that are not UTF-8 are shown as Go-style `\x` escapes.
    public var displayName: String {
        if let s = String(validating: name, as: UTF8.self) { return s }
        return String(decoding: GoQuote.quote(name), as: UTF8.self)
    }

    // Go os.FileMode bits.
    public static let goModeDir: UInt32 = 1 << 31
    public static let goModeSymlink: UInt32 = 1 << 27
    public static let goModeDevice: UInt32 = 1 << 26
    public static let goModeNamedPipe: UInt32 = 1 << 25
    public static let goModeSocket: UInt32 = 1 << 24
    public static let goModeSetuid: UInt32 = 1 << 23
    public static let goModeSetgid: UInt32 = 1 << 22
    public static let goModeCharDevice: UInt32 = 1 << 21
    public static let goModeSticky: UInt32 = 1 << 20

    /// Permission bits plus setuid/setgid/sticky in Unix form (what chmod takes).
    public var unixPermissions: UInt32 {
        var m = mode & 0o777
        if mode & Self.goModeSetuid != 0 { m |= 0o4000 }
        if mode & Self.goModeSetgid != 0 { m |= 0o2000 }
        if mode & Self.goModeSticky != 0 { m |= 0o1000 }
        return m
    }

    /// Builds a Go FileMode from a Unix st_mode.
    public static func goMode(fromUnix m: UInt32) -> UInt32 {
        var g = m & 0o777
        if m & 0o4000 != 0 { g |= goModeSetuid }
        if m & 0o2000 != 0 { g |= goModeSetgid }
        if m & 0o1000 != 0 { g |= goModeSticky }
        switch m & 0o170000 {
        case 0o040000: g |= goModeDir
        case 0o120000: g |= goModeSymlink
        case 0o060000: g |= goModeDevice
        case 0o020000: g |= goModeDevice | goModeCharDevice
        case 0o010000: g |= goModeNamedPipe
        case 0o140000: g |= goModeSocket
        default: break
        }
        return g
    }

    /// `ls -l` style mode string, e.g. `drwxr-xr-x`.
    public var modeString: String {
        let typeChar: Character
        switch type {
        case .dir: typeChar = "d"
        case .symlink: typeChar = "L"
        case .dev: typeChar = "D"
        case .chardev: typeChar = "c"
        case .fifo: typeChar = "p"
        case .socket: typeChar = "S"
        default: typeChar = "-"
        }
        var s = String(typeChar)
        let chars: [Character] = ["r", "w", "x"]
        for i in 0..<9 {
            s.append(mode & (1 << (8 - i)) != 0 ? chars[i % 3] : "-")
        }
        return s
    }
}

extension Node {
    func write(to w: inout JSONWriter) {
        w.beginObject()
        w.key("name"); w.string(utf8: GoQuote.quote(name))
        w.key("type"); w.string(type.rawValue)
        if mode != 0 { w.key("mode"); w.number(mode) }
        w.key("mtime"); w.string(mtime.rfc3339)
        w.key("atime"); w.string(atime.rfc3339)
        w.key("ctime"); w.string(ctime.rfc3339)
        w.key("uid"); w.number(uid)
        w.key("gid"); w.number(gid)
        if !user.isEmpty { w.key("user"); w.string(user) }
        if !group.isEmpty { w.key("group"); w.string(group) }
        if inode != 0 { w.key("inode"); w.number(inode) }
        if deviceID != 0 { w.key("device_id"); w.number(deviceID) }
        if size != 0 { w.key("size"); w.number(size) }
        if links != 0 { w.key("links"); w.number(links) }
        if !linkTarget.isEmpty {
            w.key("linktarget")
            if let s = String(validating: linkTarget, as: UTF8.self) {
                w.string(s)
            } else {
                w.string(String(decoding: linkTarget, as: UTF8.self))
                w.key("linktarget_raw"); w.string(Data(linkTarget).base64EncodedString())
            }
        }
        if !extendedAttributes.isEmpty {
            w.key("extended_attributes")
            w.beginArray()
            for a in extendedAttributes {
                w.beginObject()
                w.key("name"); w.string(a.name)
                w.key("value"); w.string(Data(a.value).base64EncodedString())
                w.endObject()
            }
            w.endArray()
        }
        if device != 0 { w.key("device"); w.number(device) }
        w.key("content")
        if type == .file {
            w.beginArray()
            for id in content { w.string(id.hex) }
            w.endArray()
        } else {
            w.null()
        }
        if let subtree { w.key("subtree"); w.string(subtree.hex) }
        if !error.isEmpty { w.key("error"); w.string(error) }
        w.endObject()
    }

    /// Decodes one node of a tree. Throws a message naming the bad field.
    init(json: JSONValue) throws {
        func bad(_ what: String) -> HavenError { HavenError(.corrupt, "node has an invalid \(what)") }
        guard case .object = json else { throw bad("shape (not an object)") }
        guard let quoted = json["name"]?.string else { throw bad("name") }
        guard let raw = GoQuote.unquote(Array(quoted.utf8)) else { throw bad("name escape in \"\(quoted.prefix(100))\"") }
        let typeName = json["type"]?.string ?? ""
        guard let kind = Kind(rawValue: typeName) else { throw bad("type \"\(typeName.prefix(40))\"") }
        self.init(name: raw, type: kind)
        func u64(_ key: String) throws -> UInt64 {
            guard let v = json[key], !v.isNull else { return 0 }
            guard let n = v.uint64 else { throw bad(key) }
            return n
        }
        func time(_ key: String) throws -> Timestamp {
            guard let s = json[key]?.string else { return Timestamp(seconds: 0) }
            guard let t = Timestamp(rfc3339: s) else { throw bad("\(key) \"\(s.prefix(40))\"") }
            return t
        }
        mode = UInt32(truncatingIfNeeded: try u64("mode"))
        mtime = try time("mtime")
        atime = try time("atime")
        ctime = try time("ctime")
        uid = UInt32(truncatingIfNeeded: try u64("uid"))
        gid = UInt32(truncatingIfNeeded: try u64("gid"))
        user = json["user"]?.string ?? ""
        group = json["group"]?.string ?? ""
        inode = try u64("inode")
        deviceID = try u64("device_id")
        size = try u64("size")
        links = try u64("links")
        device = try u64("device")
        if let rawTarget = json["linktarget_raw"]?.string {
            guard let d = Data(base64Encoded: rawTarget) else { throw bad("linktarget_raw") }
            linkTarget = Array(d)
        } else if let t = json["linktarget"]?.string {
            linkTarget = Array(t.utf8)
        }
        if let items = json["content"]?.array {
            content.reserveCapacity(items.count)
            for item in items {
                guard let s = item.string, let id = ID(hex: s) else { throw bad("content ID") }
                content.append(id)
            }
        }
        if let s = json["subtree"], !s.isNull {
            guard let str = s.string, let id = ID(hex: str) else { throw bad("subtree ID") }
            subtree = id
        }
        if let attrs = json["extended_attributes"]?.array {
            for a in attrs {
                guard let n = a["name"]?.string else { throw bad("extended attribute") }
                let v = a["value"]?.string.flatMap { Data(base64Encoded: $0) } ?? Data()
                extendedAttributes.append(ExtendedAttribute(name: n, value: Array(v)))
            }
        }
        error = json["error"]?.string ?? ""
    }
}

/// A directory listing: nodes sorted by name.
public struct Tree: Sendable, Equatable {
    public var nodes: [Node]
    public init(nodes: [Node] = []) { self.nodes = nodes }

    /// The canonical encoding whose SHA-256 is the tree's blob ID: `{"nodes":[…]}` and a newline.
    public func encoded() -> [UInt8] {
        var w = JSONWriter(capacity: 128 + nodes.count * 300)
        w.beginObject()
        w.key("nodes")
        w.beginArray()
        for n in nodes { n.write(to: &w) }
        w.endArray()
        w.endObject()
        w.bytes.append(0x0a)
        return w.bytes
    }

    /// Parses a tree blob. Throws `.corrupt` for anything that is not a well-formed tree.
    public static func decode(_ bytes: [UInt8]) throws -> Tree {
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch { throw HavenError(.corrupt, "tree is not valid JSON: \(error)") }
        guard case .object = json else { throw HavenError(.corrupt, "tree is not a JSON object") }
        guard let v = json["nodes"] else { return Tree() }
        if v.isNull { return Tree() }
        guard let items = v.array else { throw HavenError(.corrupt, "tree's nodes field is not a list") }
        return Tree(nodes: try items.map { try Node(json: $0) })
    }

    public func node(named name: [UInt8]) -> Node? { nodes.first { $0.name == name } }
}
