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

extension Node.Kind {
    /// `rawValue` as a static string, so the encoder copies it without touching `String`.
    var jsonName: StaticString {
        switch self {
        case .file: return "file"
        case .dir: return "dir"
        case .symlink: return "symlink"
        case .dev: return "dev"
        case .chardev: return "chardev"
        case .fifo: return "fifo"
        case .socket: return "socket"
        case .irregular: return "irregular"
        }
    }
}

extension Node {
    /// Writes the node in restic's field order. The output is canonical: the tree ID depends on it, so any
    /// change here changes the ID of every tree Haven writes.
    func write(to w: inout JSONWriter) {
        w.beginObject()
        w.key("name"); w.string(goQuoting: name)
        w.key("type"); w.string(plain: type.jsonName)
        if mode != 0 { w.key("mode"); w.number(mode) }
        w.key("mtime"); w.string(mtime)
        w.key("atime"); w.string(atime)
        w.key("ctime"); w.string(ctime)
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
            if linkTarget.withUnsafeBufferPointer({ GoQuote.isValidUTF8($0) }) {
                w.string(utf8: linkTarget)
            } else {
                w.string(String(decoding: linkTarget, as: UTF8.self))
                w.key("linktarget_raw"); w.string(base64: linkTarget)
            }
        }
        if !extendedAttributes.isEmpty {
            w.key("extended_attributes")
            w.beginArray()
            for a in extendedAttributes {
                w.beginObject()
                w.key("name"); w.string(a.name)
                w.key("value"); w.string(base64: a.value)
                w.endObject()
            }
            w.endArray()
        }
        if device != 0 { w.key("device"); w.number(device) }
        w.key("content")
        if type == .file {
            w.beginArray()
            for id in content { w.string(id) }
            w.endArray()
        } else {
            w.null()
        }
        if let subtree { w.key("subtree"); w.string(subtree) }
        if !error.isEmpty { w.key("error"); w.string(error) }
        w.endObject()
    }

    /// A generous guess at the encoded size, so the encoder reserves once.
    var estimatedEncodedSize: Int {
        var n = 340 + 2 * name.count + user.utf8.count + group.utf8.count + error.utf8.count + 67 * content.count
        if subtree != nil { n += 80 }
        if !linkTarget.isEmpty { n += 40 + 4 * linkTarget.count }
        for a in extendedAttributes { n += 32 + a.name.utf8.count + 2 * a.value.count }
        return n
    }
}

/// A directory listing: nodes sorted by name.
public struct Tree: Sendable, Equatable {
    public var nodes: [Node]
    public init(nodes: [Node] = []) { self.nodes = nodes }

    /// The canonical encoding whose SHA-256 is the tree's blob ID: `{"nodes":[…]}` and a newline.
    public func encoded() -> [UInt8] {
        nodes.withUnsafeBufferPointer { nodes in
            // Indexing the buffer borrows each node; a for-in loop would copy (retain) every one.
            var capacity = 16
            for k in nodes.indices { capacity += nodes[k].estimatedEncodedSize }
            var w = JSONWriter(capacity: capacity)
            w.beginObject()
            w.key("nodes")
            w.beginArray()
            for k in nodes.indices { nodes[k].write(to: &w) }
            w.endArray()
            w.endObject()
            w.appendByte(0x0a)
            return w.finish()
        }
    }

    /// Parses a tree blob in one pass over the bytes (no intermediate JSON values). Accepts what restic
    /// writes: unknown fields are skipped, `null` stands for an absent value. Throws `.corrupt` for
    /// anything that is not a well-formed tree, naming the node and field.
    public static func decode(_ bytes: [UInt8]) throws -> Tree {
        let nodes = try bytes.withUnsafeBufferPointer { buffer in
            var decoder = TreeDecoder(buffer)
            return try decoder.decodeTree()
        }
        return Tree(nodes: nodes)
    }

    public func node(named name: [UInt8]) -> Node? { nodes.first { $0.name == name } }
}
