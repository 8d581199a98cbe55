import Foundation
import Testing
@testable import HavenCore
import HavenTestSupport

// The on-disk formats Haven shares with restic: tree blobs (nodes), snapshots, index files and pack
// headers. Hostile inputs must be rejected with HavenError .corrupt, never trap.

private func utf8(_ s: String) -> [UInt8] { Array(s.utf8) }
private func testID(_ s: String) -> ID { ID.hash(utf8(s)) }

private func expectCorrupt(_ body: () throws -> Void, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("expected HavenError .corrupt, nothing was thrown. \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
    } catch let e as HavenError {
        #expect(e.code == .corrupt, "got \(e.code): \(e.message). \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected HavenError, got \(type(of: error)): \(error). \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
    }
}

/// A node of `kind` with every field that kind can carry set to a non-default value.
private func fullNode(_ kind: Node.Kind, name: [UInt8] = utf8("entry")) -> Node {
    var n = Node(name: name, type: kind)
    let typeBits: UInt32
    switch kind {
    case .dir: typeBits = 0o040000
    case .symlink: typeBits = 0o120000
    case .dev: typeBits = 0o060000
    case .chardev: typeBits = 0o020000
    case .fifo: typeBits = 0o010000
    case .socket: typeBits = 0o140000
    default: typeBits = 0o100000
    }
    n.mode = Node.goMode(fromUnix: typeBits | 0o4751)
    n.mtime = Timestamp(seconds: 1_600_000_000, nanoseconds: 123_456_789, utcOffset: 3600)
    n.atime = Timestamp(seconds: -86_400, nanoseconds: 1, utcOffset: -19800)
    n.ctime = Timestamp(seconds: 253_402_300_799, nanoseconds: 999_999_999)
    n.uid = 4_000_000_000
    n.gid = 65534
    n.user = "ålice \"the\" user"
    n.group = "wheel\\group"
    n.inode = UInt64.max
    n.deviceID = 0xfd01
    n.links = 3
    n.error = "partial read: I/O error"
    n.extendedAttributes = [
        .init(name: "user.comment", value: utf8("hello")),
        .init(name: "security.selinux", value: [0, 0xff, 0x80, 10]),
        .init(name: "user.empty", value: []),
    ]
    switch kind {
    case .file:
        n.size = 1 << 40
        n.content = [testID("c1"), testID("c2"), testID("c1")]
    case .dir:
        n.subtree = testID("subtree")
    case .symlink:
        n.linkTarget = utf8("../target with space/é")
    case .dev, .chardev:
        n.device = 0x0801
    default:
        break
    }
    return n
}

@Suite("Tree format")
struct TreeFormatTests {

    // MARK: Nodes and trees

    @Test("Node: every kind round-trips through the tree encoding with all fields",
          arguments: [Node.Kind.file, .dir, .symlink, .dev, .chardev, .fifo, .socket, .irregular])
    func nodeRoundTrip(kind: Node.Kind) throws {
        let node = fullNode(kind)
        let tree = Tree(nodes: [node])
        let bytes = tree.encoded()
        let decoded = try Tree.decode(bytes)
        #expect(decoded == tree)
        let d = try #require(decoded.nodes.first)
        // Spell out the fields so a failure says which one broke.
        #expect(d.name == node.name)
        #expect(d.type == kind)
        #expect(d.mode == node.mode)
        #expect(d.mtime == node.mtime && d.mtime.utcOffset == 3600)
        #expect(d.atime == node.atime && d.atime.utcOffset == -19800)
        #expect(d.ctime == node.ctime)
        #expect(d.uid == node.uid && d.gid == node.gid)
        #expect(d.user == node.user && d.group == node.group)
        #expect(d.inode == node.inode && d.deviceID == node.deviceID && d.links == node.links)
        #expect(d.size == node.size)
        #expect(d.content == node.content)
        #expect(d.subtree == node.subtree)
        #expect(d.linkTarget == node.linkTarget)
        #expect(d.device == node.device)
        #expect(d.extendedAttributes == node.extendedAttributes)
        #expect(d.error == node.error)
        // The encoding is canonical: re-encoding gives the same bytes, hence the same tree ID.
        expectSameBytes(decoded.encoded(), bytes)
        #expect(bytes.last == 0x0a)
        #expect(String(validating: bytes, as: UTF8.self) != nil)
    }

    @Test("Node: a node with only defaults round-trips and omits empty fields")
    func minimalNode() throws {
        let tree = Tree(nodes: [Node(name: utf8("x"), type: .file), Node(name: utf8("d"), type: .dir)])
        let bytes = tree.encoded()
        #expect(try Tree.decode(bytes) == tree)
        let text = String(decoding: bytes, as: UTF8.self)
        for absent in ["\"user\"", "\"size\"", "\"inode\"", "\"linktarget\"", "\"subtree\"", "\"error\"", "\"extended_attributes\""] {
            #expect(!text.contains(absent), "\(absent) should be omitted")
        }
        #expect(text.contains(#""content":[]"#))  // files always list their content (restic requires it)
        #expect(text.contains(#""content":null"#))
        #expect(Tree().encoded() == utf8("{\"nodes\":[]}\n"))
    }

    @Test("Node: non-UTF-8 and special names round-trip Go-quoted", arguments: [
        [0xff],
        [0x63, 0x61, 0x66, 0xe9],  // Latin-1 "café"
        [0x6c, 0x61, 0x74, 0x69, 0x6e, 0x31, 0xe9, 0xff],
        [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82],
        utf8("quote\"name"), utf8("back\\slash"), utf8("new\nline"), utf8("tab\tname"), [0x01, 0x7f, 0x00],
        utf8("Ünïcödé-名前-🎉"), utf8("\\xff"), utf8("-"), utf8(".hidden"), utf8("R&D <x>"),
    ] as [[UInt8]])
    func nodeNames(name: [UInt8]) throws {
        var node = Node(name: name, type: .file)
        node.linkTarget = []
        let bytes = Tree(nodes: [node]).encoded()
        #expect(String(validating: bytes, as: UTF8.self) != nil, "tree JSON must be valid UTF-8")
        let decoded = try Tree.decode(bytes)
        #expect(decoded.nodes.first?.name == name)
        #expect(decoded.node(named: name) != nil)
    }

    @Test("Node: the name is stored as Go's strconv.Quote form")
    func goQuotedNameOnDisk() {
        let bytes = Tree(nodes: [Node(name: [0x61, 0xff, 0x22, 0x0a], type: .file)]).encoded()
        let text = String(decoding: bytes, as: UTF8.self)
        // Go-quoted: a\xff\"\n, then JSON-escaped (each backslash doubled, the quote escaped).
        #expect(text.contains(#""name":"a\\xff\\\"\\n""#), "\(text)")
    }

    @Test("Node: a link target that is not UTF-8 round-trips through linktarget_raw", arguments: [
        [0xff], [0x2e, 0x2e, 0x2f, 0xe9, 0x74, 0xe9], [0x61, 0x00, 0x62], [0xed, 0xa0, 0x80],
    ] as [[UInt8]])
    func nonUTF8LinkTarget(target: [UInt8]) throws {
        var node = Node(name: utf8("link"), type: .symlink)
        node.mode = Node.goMode(fromUnix: 0o120777)
        node.linkTarget = target
        let bytes = Tree(nodes: [node]).encoded()
        let text = String(decoding: bytes, as: UTF8.self)
        if String(validating: target, as: UTF8.self) == nil {
            #expect(text.contains("\"linktarget_raw\":\"\(Data(target).base64EncodedString())\""))
        }
        #expect(try Tree.decode(bytes).nodes.first?.linkTarget == target)
    }

    @Test("Node: a UTF-8 link target is stored plainly, without linktarget_raw")
    func utf8LinkTarget() throws {
        var node = Node(name: utf8("link"), type: .symlink)
        node.linkTarget = utf8("/srv/data/é")
        let bytes = Tree(nodes: [node]).encoded()
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains(#""linktarget":"/srv/data/é""#))
        #expect(!text.contains("linktarget_raw"))
        #expect(try Tree.decode(bytes).nodes.first?.linkTarget == node.linkTarget)
    }

    // MARK: Go FileMode

    @Test("Node.goMode(fromUnix:) matches Go's os.FileMode", arguments: [
        (UInt32(0o100644), UInt32(0o644), UInt32(0o644)),
        (0o040755, 2_147_484_141, 0o755),  // what restic stores for a 0755 directory
        (0o120777, 134_218_239, 0o777),  // symlink
        (0o104755, (1 << 23) | 0o755, 0o4755),  // setuid
        (0o102755, (1 << 22) | 0o755, 0o2755),  // setgid
        (0o042775, (1 << 31) | (1 << 22) | 0o775, 0o2775),  // setgid directory
        (0o041777, (1 << 31) | (1 << 20) | 0o777, 0o1777),  // sticky directory (/tmp)
        (0o107777, (1 << 23) | (1 << 22) | (1 << 20) | 0o777, 0o7777),
        (0o060660, (1 << 26) | 0o660, 0o660),  // block device
        (0o020620, 69_206_416, 0o620),  // character device: ModeDevice | ModeCharDevice
        (0o010644, 33_554_852, 0o644),  // FIFO
        (0o140755, (1 << 24) | 0o755, 0o755),  // socket
        (0o100000, 0, 0),
    ] as [(UInt32, UInt32, UInt32)])
    func goMode(unix: UInt32, go: UInt32, permissions: UInt32) {
        #expect(Node.goMode(fromUnix: unix) == go)
        var node = Node(name: [0x61], type: .file)
        node.mode = go
        #expect(node.unixPermissions == permissions)
    }

    @Test("Node.unixPermissions inverts goMode for every permission and type")
    func unixPermissionsRoundTrip() {
        for type: UInt32 in [0o100000, 0o040000, 0o120000, 0o060000, 0o020000, 0o010000, 0o140000] {
            for perm: UInt32 in 0...0o7777 {
                var node = Node(name: [0x61], type: .file)
                node.mode = Node.goMode(fromUnix: type | perm)
                #expect(node.unixPermissions == perm)
                // Type bits stay out of the permission bits.
                #expect(node.mode & 0o777 == perm & 0o777)
            }
        }
    }

    // MARK: restic-written trees

    static let h1 = String(repeating: "a1", count: 32), h2 = String(repeating: "b2", count: 32), h3 = String(repeating: "c3", count: 32)

    /// A tree as restic 0.14 writes it (Go's encoding/json field order, Go-quoted names, \u0026 for &).
    static let resticTree = #"""
    {"nodes":[{"name":"caf\\xc3\\xa9","type":"file","mode":420,"mtime":"2022-05-01T10:20:30.123456789+02:00","atime":"2022-05-01T10:20:31.5+02:00","ctime":"2022-05-02T11:00:00Z","uid":1000,"gid":100,"user":"alice","group":"users","inode":1234567,"device_id":2049,"size":1048577,"links":2,"content":["\#(TreeFormatTests.h1)","\#(TreeFormatTests.h2)"],"extended_attributes":[{"name":"user.comment","value":"aGVsbG8="},{"name":"user.bin","value":"AP+A"}]},{"name":"\\xff","type":"dir","mode":2147484141,"mtime":"1969-07-20T20:17:40-05:00","atime":"1969-07-20T20:17:40-05:00","ctime":"1969-07-20T20:17:40-05:00","uid":0,"gid":0,"user":"root","inode":42,"device_id":2049,"content":null,"subtree":"\#(TreeFormatTests.h3)"},{"name":"link","type":"symlink","mode":134218239,"mtime":"2020-01-01T00:00:00Z","atime":"2020-01-01T00:00:00Z","ctime":"2020-01-01T00:00:00Z","uid":1000,"gid":100,"inode":7,"links":1,"linktarget":"../caf\u00e9","content":null},{"name":"tty0","type":"chardev","mode":69206416,"mtime":"2020-01-01T00:00:00Z","atime":"2020-01-01T00:00:00Z","ctime":"2020-01-01T00:00:00Z","uid":0,"gid":5,"group":"tty","inode":8,"device":1024,"content":null},{"name":"pipe","type":"fifo","mode":33554852,"mtime":"2020-01-01T00:00:00Z","atime":"2020-01-01T00:00:00Z","ctime":"2020-01-01T00:00:00Z","uid":0,"gid":0,"content":null},{"name":"quote\\\"d\\\\name\\t","type":"file","mode":8389101,"mtime":"2020-01-01T00:00:00Z","atime":"2020-01-01T00:00:00Z","ctime":"2020-01-01T00:00:00Z","uid":0,"gid":0,"size":0,"content":[]},{"name":"R\u0026D","type":"file","mode":384,"mtime":"2020-01-01T00:00:00Z","atime":"2020-01-01T00:00:00Z","ctime":"2020-01-01T00:00:00Z","uid":0,"gid":0,"content":null}]}

    """#

    @Test("Tree: decodes JSON as restic 0.14 writes it")
    func decodeResticTree() throws {
        let tree = try Tree.decode(utf8(Self.resticTree))
        #expect(tree.nodes.count == 7)
        let file = try #require(tree.nodes.first)
        #expect(file.name == utf8("café"))
        #expect(file.type == .file)
        #expect(file.mode == 0o644 && file.unixPermissions == 0o644)
        #expect(file.mtime == Timestamp(seconds: 1_651_393_230, nanoseconds: 123_456_789))
        #expect(file.mtime.utcOffset == 7200)
        #expect(file.atime == Timestamp(seconds: 1_651_393_231, nanoseconds: 500_000_000))
        #expect(file.ctime == Timestamp(seconds: 1_651_489_200))
        #expect(file.uid == 1000 && file.gid == 100)
        #expect(file.user == "alice" && file.group == "users")
        #expect(file.inode == 1_234_567 && file.deviceID == 2049 && file.links == 2)
        #expect(file.size == 1_048_577)
        #expect(file.content == [ID(hex: Self.h1)!, ID(hex: Self.h2)!])
        #expect(file.subtree == nil)
        #expect(file.extendedAttributes == [.init(name: "user.comment", value: utf8("hello")), .init(name: "user.bin", value: [0x00, 0xff, 0x80])])

        let dir = tree.nodes[1]
        #expect(dir.name == [0xff])
        #expect(dir.displayName == #"\xff"#)
        #expect(dir.type == .dir)
        #expect(dir.mode == Node.goModeDir | 0o755 && dir.unixPermissions == 0o755)
        #expect(dir.mtime == Timestamp(seconds: -14_164_940))
        #expect(dir.mtime.rfc3339 == "1969-07-20T20:17:40-05:00")
        #expect(dir.subtree == ID(hex: Self.h3))
        #expect(dir.content.isEmpty)
        #expect(dir.user == "root")

        let link = tree.nodes[2]
        #expect(link.type == .symlink)
        #expect(link.mode & Node.goModeSymlink != 0)
        #expect(link.linkTarget == utf8("../café"))

        let tty = tree.nodes[3]
        #expect(tty.type == .chardev && tty.device == 1024 && tty.group == "tty")
        #expect(tty.mode == Node.goModeDevice | Node.goModeCharDevice | 0o620)

        #expect(tree.nodes[4].type == .fifo && tree.nodes[4].mode == Node.goModeNamedPipe | 0o644)

        let quoted = tree.nodes[5]
        #expect(quoted.name == utf8("quote\"d\\name\t"))
        #expect(quoted.unixPermissions == 0o4755)
        #expect(quoted.content.isEmpty)

        #expect(tree.nodes[6].name == utf8("R&D"))
        #expect(tree.nodes[6].unixPermissions == 0o600)

        // Re-encoding keeps every value restic wrote.
        #expect(try Tree.decode(tree.encoded()) == tree)
    }

    @Test("Tree: 1969 timestamp in the restic tree is the right instant")
    func resticTreeOldTime() throws {
        let t = try #require(Timestamp(rfc3339: "1969-07-20T20:17:40-05:00"))
        // 1969-07-21T01:17:40Z
        #expect(t.seconds == -14_164_940)
    }

    @Test("Tree: empty and null node lists decode to an empty tree", arguments: ["{}", "{\"nodes\":null}", "{\"nodes\":[]}", " {\"nodes\" : [ ] } \n"])
    func emptyTrees(text: String) throws {
        #expect(try Tree.decode(utf8(text)).nodes.isEmpty)
    }

    static let goodNode = #""name":"a","type":"file","mtime":"2020-01-01T00:00:00Z""#

    @Test("Tree: hostile trees throw .corrupt", arguments: [
        "", "nodes", "not json at all", "{", "{\"nodes\":[", "[]", "null", "7", "\"tree\"",
        "{\"nodes\":7}", "{\"nodes\":{}}", "{\"nodes\":\"x\"}", "{\"nodes\":true}",
        "{\"nodes\":[7]}", "{\"nodes\":[null]}", "{\"nodes\":[[]]}", "{\"nodes\":[\"a\"]}",
        "{\"nodes\":[{\"type\":\"file\"}]}",  // no name
        "{\"nodes\":[{\"name\":5,\"type\":\"file\"}]}",
        "{\"nodes\":[{\"name\":null,\"type\":\"file\"}]}",
        "{\"nodes\":[{\"name\":\"a\\\\q\",\"type\":\"file\"}]}",  // invalid Go escape \q
        "{\"nodes\":[{\"name\":\"a\\\\x4\",\"type\":\"file\"}]}",
        "{\"nodes\":[{\"name\":\"a\"}]}",  // no type
        "{\"nodes\":[{\"name\":\"a\",\"type\":\"blockdev\"}]}",
        "{\"nodes\":[{\"name\":\"a\",\"type\":\"File\"}]}",
        "{\"nodes\":[{\"name\":\"a\",\"type\":7}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode),\"content\":[\"xyz\"]}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode),\"content\":[\"\(String(repeating: "a", count: 63))\"]}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode),\"content\":[\"\(String(repeating: "g", count: 64))\"]}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode),\"content\":[1]}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode),\"content\":[null]}]}",
        "{\"nodes\":[{\"name\":\"d\",\"type\":\"dir\",\"subtree\":\"zz\"}]}",
        "{\"nodes\":[{\"name\":\"d\",\"type\":\"dir\",\"subtree\":12}]}",
        "{\"nodes\":[{\"name\":\"d\",\"type\":\"dir\",\"subtree\":\"\(String(repeating: "a", count: 66))\"}]}",
        "{\"nodes\":[{\"name\":\"a\",\"type\":\"file\",\"mtime\":\"yesterday\"}]}",
        "{\"nodes\":[{\"name\":\"a\",\"type\":\"file\",\"mtime\":\"2020-13-01T00:00:00Z\"}]}",
        "{\"nodes\":[{\"name\":\"a\",\"type\":\"file\",\"atime\":\"2020-01-01 00:00\"}]}",
        "{\"nodes\":[{\"name\":\"a\",\"type\":\"file\",\"ctime\":\"\"}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode),\"size\":-1}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode),\"size\":\"5\"}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode),\"size\":1.5}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode),\"size\":18446744073709551616}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode),\"inode\":true}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode),\"mode\":-420}]}",
        "{\"nodes\":[{\"name\":\"l\",\"type\":\"symlink\",\"linktarget_raw\":\"!!not base64!!\"}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode),\"extended_attributes\":[{\"value\":\"aGk=\"}]}]}",
        "{\"nodes\":[{\(TreeFormatTests.goodNode)}]} trailing",
        "{\"nodes\":[{\(TreeFormatTests.goodNode)},]}",
        String(repeating: "{\"nodes\":[", count: 5000),
        "{\"nodes\":[" + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000) + "]}",
    ])
    func hostileTree(text: String) {
        expectCorrupt({ _ = try Tree.decode(utf8(text)) }, "\(text.prefix(120))")
    }

    @Test("Tree: every strict prefix of an encoded tree is rejected")
    func truncatedTrees() {
        let bytes = Tree(nodes: [fullNode(.file), fullNode(.dir, name: [0xff]), fullNode(.symlink, name: utf8("l"))]).encoded()
        // The final newline is optional; anything shorter is not a complete document.
        for n in 0..<(bytes.count - 1) {
            expectCorrupt({ _ = try Tree.decode(Array(bytes[..<n])) }, "prefix of \(n) bytes")
        }
    }

    @Test("Tree: random mutations of an encoded tree never trap")
    func mutatedTrees() {
        let bytes = Tree(nodes: [fullNode(.file), fullNode(.dir, name: [0xff, 0x22])]).encoded()
        var rng = SeededRandom(seed: 2024)
        var ok = 0, corrupt = 0
        for _ in 0..<3000 {
            var m = bytes
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                m[Int(rng.next() % UInt64(m.count))] = UInt8(truncatingIfNeeded: rng.next())
            }
            do { _ = try Tree.decode(m); ok += 1 } catch let e as HavenError where e.code == .corrupt { corrupt += 1 } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        #expect(ok + corrupt == 3000)
        #expect(corrupt > 0)
    }

    // MARK: Snapshots

    private static func fullSnapshot() -> Snapshot {
        var s = Snapshot(time: Timestamp(seconds: 1_700_000_000, nanoseconds: 42, utcOffset: -18000),
                         tree: testID("tree"), paths: ["/home/alice", "/etc/with \"quote\"", "/srv/é"])
        s.parent = testID("parent")
        s.hostname = "host.example"
        s.username = "alice"
        s.uid = 1000
        s.gid = 100
        s.excludes = ["*.tmp", "/home/*/cache"]
        s.tags = ["daily", "tag,with,commas"]
        s.original = testID("original")
        s.programVersion = "haven 0.1.0"
        var m = Snapshot.Summary()
        m.backupStart = Timestamp(seconds: 1_700_000_000, nanoseconds: 1)
        m.backupEnd = Timestamp(seconds: 1_700_000_100, nanoseconds: 999_999_999)
        m.filesNew = 1; m.filesChanged = 2; m.filesUnmodified = 3
        m.dirsNew = 4; m.dirsChanged = 5; m.dirsUnmodified = 6
        m.dataBlobs = 7; m.treeBlobs = 8
        m.dataAdded = UInt64(1) << 50; m.dataAddedPacked = 10
        m.totalFilesProcessed = 11; m.totalBytesProcessed = UInt64.max
        s.summary = m
        return s
    }

    @Test("Snapshot: encode/decode round trip including the summary")
    func snapshotRoundTrip() throws {
        var s = Self.fullSnapshot()
        let id = testID("snapshot file")
        let decoded = try Snapshot.decode(s.encoded(), id: id)
        s.id = id
        #expect(decoded == s)
        #expect(decoded.summary == s.summary)
        #expect(decoded.time.utcOffset == -18000)
        #expect(decoded.summary?.totalBytesProcessed == UInt64.max)
        // Minimal snapshot: optional fields stay absent.
        var minimal = Snapshot(time: Timestamp(seconds: 0), tree: testID("t"), paths: [])
        let bytes = minimal.encoded()
        let text = String(decoding: bytes, as: UTF8.self)
        for absent in ["parent", "summary", "hostname", "tags", "original"] { #expect(!text.contains(absent)) }
        minimal.id = nil
        #expect(try Snapshot.decode(bytes, id: nil) == minimal)
    }

    @Test("Snapshot: decodes JSON as restic writes it")
    func decodeResticSnapshot() throws {
        let text = #"""
        {"time":"2024-03-01T08:00:00.123456789+01:00","parent":"\#(Self.h1)","tree":"\#(Self.h2)","paths":["/home/alice"],"hostname":"laptop","username":"alice","uid":1000,"gid":1000,"excludes":["*.o"],"tags":["a","b"],"program_version":"restic 0.17.0","summary":{"backup_start":"2024-03-01T08:00:00.1+01:00","backup_end":"2024-03-01T08:01:00+01:00","files_new":10,"files_changed":2,"files_unmodified":300,"dirs_new":1,"dirs_changed":3,"dirs_unmodified":40,"data_blobs":12,"tree_blobs":4,"data_added":123456,"data_added_packed":65432,"total_files_processed":312,"total_bytes_processed":98765432101}}
        """#
        let s = try Snapshot.decode(utf8(text), id: testID("x"))
        #expect(s.time == Timestamp(seconds: 1_709_276_400, nanoseconds: 123_456_789))
        #expect(s.parent == ID(hex: Self.h1) && s.tree == ID(hex: Self.h2)!)
        #expect(s.paths == ["/home/alice"] && s.hostname == "laptop" && s.username == "alice")
        #expect(s.uid == 1000 && s.gid == 1000 && s.excludes == ["*.o"] && s.tags == ["a", "b"])
        #expect(s.programVersion == "restic 0.17.0")
        let m = try #require(s.summary)
        #expect(m.filesNew == 10 && m.filesChanged == 2 && m.filesUnmodified == 300)
        #expect(m.dirsNew == 1 && m.dirsChanged == 3 && m.dirsUnmodified == 40)
        #expect(m.dataBlobs == 12 && m.treeBlobs == 4 && m.dataAdded == 123_456 && m.dataAddedPacked == 65432)
        #expect(m.totalFilesProcessed == 312 && m.totalBytesProcessed == 98_765_432_101)
        #expect(m.backupEnd.seconds - m.backupStart.seconds == 60)
    }

    @Test("Snapshot: hostile snapshots throw .corrupt", arguments: [
        "", "{}", "[]", "{\"tree\":\"\(TreeFormatTests.h1)\"}",
        "{\"time\":\"2024-03-01T08:00:00Z\"}",
        "{\"time\":\"bad\",\"tree\":\"\(TreeFormatTests.h1)\"}",
        "{\"time\":5,\"tree\":\"\(TreeFormatTests.h1)\"}",
        "{\"time\":\"2024-03-01T08:00:00Z\",\"tree\":\"abc\"}",
        "{\"time\":\"2024-03-01T08:00:00Z\",\"tree\":\"\(TreeFormatTests.h1)\",\"parent\":\"zz\"}",
        "{\"time\":\"2024-03-01T08:00:00Z\",\"tree\":\"\(TreeFormatTests.h1)\",\"original\":\"00\"}",
        "{\"time\":\"2024-03-01T08:00:00Z\",\"tree\":\"\(TreeFormatTests.h1)\"",
    ])
    func hostileSnapshot(text: String) {
        expectCorrupt({ _ = try Snapshot.decode(utf8(text), id: nil) }, "\(text)")
    }

    // MARK: Index files

    private static func sampleIndex() -> IndexFile {
        let p1 = IndexFile.Pack(id: testID("pack1"), blobs: [
            PackedBlob(id: testID("b1"), type: .data, offset: 0, length: 100, uncompressedLength: 0),
            PackedBlob(id: testID("b2"), type: .data, offset: 100, length: 64, uncompressedLength: 4096),
            PackedBlob(id: testID("b3"), type: .data, offset: 164, length: UInt32.max, uncompressedLength: UInt32.max),
        ])
        let p2 = IndexFile.Pack(id: testID("pack2"), blobs: [
            PackedBlob(id: testID("t1"), type: .tree, offset: UInt32.max, length: 32, uncompressedLength: 0),
        ])
        let p3 = IndexFile.Pack(id: testID("pack3"), blobs: [])
        return IndexFile(packs: [p1, p2, p3], supersedes: [testID("old1"), testID("old2")])
    }

    @Test("IndexFile: encode/decode round trip")
    func indexRoundTrip() throws {
        let index = Self.sampleIndex()
        let decoded = try IndexFile.decode(index.encoded(), id: testID("idx"))
        #expect(decoded.supersedes == index.supersedes)
        #expect(decoded.packs.map(\.id) == index.packs.map(\.id))
        #expect(decoded.packs.map(\.blobs) == index.packs.map(\.blobs))
        #expect(decoded.blobCount == 4)
        let text = String(decoding: index.encoded(), as: UTF8.self)
        #expect(text.contains("\"uncompressed_length\":4096"))
        #expect(text.components(separatedBy: "uncompressed_length").count == 3, "only compressed blobs carry uncompressed_length")
        #expect(text.contains("\"type\":\"tree\""))
    }

    @Test("IndexFile: decodes restic's current and legacy forms")
    func indexResticForms() throws {
        let blobs = #"[{"id":"\#(Self.h2)","type":"data","offset":0,"length":1234},{"id":"\#(Self.h3)","type":"tree","offset":1234,"length":300,"uncompressed_length":2000}]"#
        let current = #"{"supersedes":["\#(Self.h3)"],"packs":[{"id":"\#(Self.h1)","blobs":\#(blobs)}]}"#
        let legacy = #"[{"id":"\#(Self.h1)","blobs":\#(blobs)}]"#
        let expected = [
            PackedBlob(id: ID(hex: Self.h2)!, type: .data, offset: 0, length: 1234, uncompressedLength: 0),
            PackedBlob(id: ID(hex: Self.h3)!, type: .tree, offset: 1234, length: 300, uncompressedLength: 2000),
        ]
        let c = try IndexFile.decode(utf8(current), id: testID("c"))
        #expect(c.supersedes == [ID(hex: Self.h3)!])
        #expect(c.packs.count == 1 && c.packs[0].id == ID(hex: Self.h1)! && c.packs[0].blobs == expected)
        let l = try IndexFile.decode(utf8(legacy), id: testID("l"))
        #expect(l.supersedes.isEmpty)
        #expect(l.packs.count == 1 && l.packs[0].id == ID(hex: Self.h1)! && l.packs[0].blobs == expected)
        // Empty forms.
        #expect(try IndexFile.decode(utf8("{\"packs\":[]}"), id: testID("e")).packs.isEmpty)
        #expect(try IndexFile.decode(utf8("{}"), id: testID("e")).packs.isEmpty)
        #expect(try IndexFile.decode(utf8("[]"), id: testID("e")).packs.isEmpty)
        #expect(try IndexFile.decode(utf8("{\"supersedes\":null,\"packs\":null}"), id: testID("e")).packs.isEmpty)
    }

    static func blobEntry(_ fields: String) -> String {
        "{\"packs\":[{\"id\":\"\(TreeFormatTests.h1)\",\"blobs\":[{\(fields)}]}]}"
    }
    static let okBlob = "\"id\":\"\(TreeFormatTests.h2)\",\"type\":\"data\",\"offset\":0,\"length\":100"

    @Test("IndexFile: hostile index files throw .corrupt", arguments: [
        "", "garbage", "null", "7", "\"x\"", "{\"packs\":7}", "{\"packs\":{}}", "{\"packs\":\"x\"}", "{\"packs\":true}",
        "{\"packs\":[7]}", "{\"packs\":[null]}", "{\"packs\":[[]]}",
        "{\"packs\":[{\"blobs\":[]}]}", "{\"packs\":[{\"id\":\"zz\",\"blobs\":[]}]}", "{\"packs\":[{\"id\":7,\"blobs\":[]}]}",
        "{\"packs\":[{\"id\":\"\(TreeFormatTests.h1)\",\"blobs\":7}]}", "{\"packs\":[{\"id\":\"\(TreeFormatTests.h1)\",\"blobs\":{}}]}",
        "{\"packs\":[{\"id\":\"\(TreeFormatTests.h1)\",\"blobs\":[7]}]}",
        "[{\"id\":\"\(TreeFormatTests.h1)\",\"blobs\":\"x\"}]", "[7]",
        "{\"supersedes\":7,\"packs\":[]}", "{\"supersedes\":[\"zz\"],\"packs\":[]}", "{\"supersedes\":[5],\"packs\":[]}",
        TreeFormatTests.blobEntry("\"type\":\"data\",\"offset\":0,\"length\":100"),  // no id
        TreeFormatTests.blobEntry("\"id\":\"\(TreeFormatTests.h2)\",\"offset\":0,\"length\":100"),  // no type
        TreeFormatTests.blobEntry("\"id\":\"\(TreeFormatTests.h2)\",\"type\":\"data\",\"length\":100"),  // no offset
        TreeFormatTests.blobEntry("\"id\":\"\(TreeFormatTests.h2)\",\"type\":\"data\",\"offset\":0"),  // no length
        TreeFormatTests.blobEntry("\"id\":\"\(TreeFormatTests.h2)\",\"type\":\"snapshot\",\"offset\":0,\"length\":100"),
        TreeFormatTests.blobEntry("\"id\":\"xyz\",\"type\":\"data\",\"offset\":0,\"length\":100"),
        TreeFormatTests.blobEntry("\"id\":\"\(TreeFormatTests.h2)\",\"type\":\"data\",\"offset\":4294967296,\"length\":100"),
        TreeFormatTests.blobEntry("\"id\":\"\(TreeFormatTests.h2)\",\"type\":\"data\",\"offset\":0,\"length\":4294967296"),
        TreeFormatTests.blobEntry("\"id\":\"\(TreeFormatTests.h2)\",\"type\":\"data\",\"offset\":-1,\"length\":100"),
        TreeFormatTests.blobEntry("\"id\":\"\(TreeFormatTests.h2)\",\"type\":\"data\",\"offset\":0,\"length\":-100"),
        TreeFormatTests.blobEntry("\"id\":\"\(TreeFormatTests.h2)\",\"type\":\"data\",\"offset\":0,\"length\":31"),
        TreeFormatTests.blobEntry("\"id\":\"\(TreeFormatTests.h2)\",\"type\":\"data\",\"offset\":\"0\",\"length\":100"),
        TreeFormatTests.blobEntry("\"id\":\"\(TreeFormatTests.h2)\",\"type\":\"data\",\"offset\":1.5,\"length\":100"),
        TreeFormatTests.blobEntry("\"id\":\"\(TreeFormatTests.h2)\",\"type\":\"data\",\"offset\":0,\"length\":100.0"),
        TreeFormatTests.blobEntry(TreeFormatTests.okBlob + ",\"uncompressed_length\":4294967296"),
        TreeFormatTests.blobEntry(TreeFormatTests.okBlob + ",\"uncompressed_length\":-1"),
        TreeFormatTests.blobEntry(TreeFormatTests.okBlob + ",\"uncompressed_length\":\"big\""),
        String(repeating: "[", count: 10_000),
    ])
    func hostileIndex(text: String) {
        expectCorrupt({ _ = try IndexFile.decode(utf8(text), id: testID("i")) }, "\(text.prefix(160))")
    }

    // MARK: Pack headers

    private static func sampleBlobs() -> [PackedBlob] {
        var offset: UInt32 = 0
        var out: [PackedBlob] = []
        let specs: [(BlobType, UInt32, UInt32)] = [(.data, 32, 0), (.data, 1000, 5000), (.tree, 77, 0), (.tree, 300, 2000), (.data, 1 << 20, 0)]
        for (i, (t, len, ulen)) in specs.enumerated() {
            out.append(PackedBlob(id: testID("blob\(i)"), type: t, offset: offset, length: len, uncompressedLength: ulen))
            offset += len
        }
        return out
    }

    @Test("PackFormat: header encode/decode round trip with offsets from lengths")
    func packHeaderRoundTrip() throws {
        let blobs = Self.sampleBlobs()
        let header = PackFormat.encodeHeader(blobs)
        #expect(header.count == 3 * PackFormat.plainEntrySize + 2 * PackFormat.compressedEntrySize)
        // restic's type bytes: 0 data, 1 tree, 2 compressed data, 3 compressed tree.
        #expect(header[0] == 0)
        #expect(header[PackFormat.plainEntrySize] == 2)
        let end = Int(blobs.last!.offset + blobs.last!.length)
        #expect(try PackFormat.decodeHeader(header, pack: testID("p"), headerStart: end) == blobs)
        #expect(try PackFormat.decodeHeader(header, pack: testID("p"), headerStart: end + 100) == blobs)
        #expect(try PackFormat.decodeHeader([], pack: testID("p"), headerStart: 0).isEmpty)
        // Little-endian lengths.
        let one = PackFormat.encodeHeader([PackedBlob(id: testID("x"), type: .tree, offset: 0, length: 0x0403_0201, uncompressedLength: 0)])
        #expect(Array(one[0..<5]) == [1, 1, 2, 3, 4])
        #expect(Array(one[5...]) == testID("x").bytes)
    }

    @Test("PackFormat: hostile headers throw .corrupt")
    func hostilePackHeaders() {
        let blobs = Self.sampleBlobs()
        let header = PackFormat.encodeHeader(blobs)
        let end = Int(blobs.last!.offset + blobs.last!.length)
        let pack = testID("p")
        // Unknown type bytes.
        for t: UInt8 in [4, 5, 0x80, 0xff] {
            var h = header
            h[0] = t
            expectCorrupt({ _ = try PackFormat.decodeHeader(h, pack: pack, headerStart: end) }, "type \(t)")
        }
        // Truncated entries: every length that does not end on an entry boundary.
        var boundaries: Set<Int> = [0]
        var at = 0
        for b in blobs { at += b.isCompressed ? PackFormat.compressedEntrySize : PackFormat.plainEntrySize; boundaries.insert(at) }
        for n in 0..<header.count where !boundaries.contains(n) {
            expectCorrupt({ _ = try PackFormat.decodeHeader(Array(header[..<n]), pack: pack, headerStart: end) }, "truncated to \(n)")
        }
        // Blobs reaching beyond the blob area.
        expectCorrupt({ _ = try PackFormat.decodeHeader(header, pack: pack, headerStart: end - 1) }, "beyond headerStart")
        expectCorrupt({ _ = try PackFormat.decodeHeader(header, pack: pack, headerStart: 0) }, "headerStart 0")
        // Lengths below the encryption overhead.
        for len: UInt32 in [0, 1, 31] {
            let h = PackFormat.encodeHeader([PackedBlob(id: testID("s"), type: .data, offset: 0, length: len, uncompressedLength: 0)])
            expectCorrupt({ _ = try PackFormat.decodeHeader(h, pack: pack, headerStart: 1 << 20) }, "length \(len)")
        }
    }

    @Test("PackFormat: offsets beyond UInt32.max throw instead of trapping")
    func packHeaderHugeOffsets() {
        // Three maximal blobs: the third starts at 2 * (2^32 - 1), which no PackedBlob offset can hold.
        let big = (0..<3).map { PackedBlob(id: testID("big\($0)"), type: .data, offset: 0, length: UInt32.max, uncompressedLength: 0) }
        let header = PackFormat.encodeHeader(big)
        expectCorrupt({ _ = try PackFormat.decodeHeader(header, pack: testID("p"), headerStart: 3 * Int(UInt32.max)) })
        // Two still fit: the second starts at exactly UInt32.max.
        let two = PackFormat.encodeHeader(Array(big.prefix(2)))
        let decoded = try? PackFormat.decodeHeader(two, pack: testID("p"), headerStart: 2 * Int(UInt32.max))
        #expect(decoded?.last?.offset == UInt32.max)
    }

    @Test("PackFormat: random headers never trap")
    func randomPackHeaders() {
        var rng = SeededRandom(seed: 37)
        var rejected = 0
        for i in 0..<2000 {
            let h = rng.bytes(Int(rng.next() % 200))
            do {
                let blobs = try PackFormat.decodeHeader(h, pack: testID("r"), headerStart: Int(rng.next() % (1 << 34)))
                #expect(blobs.allSatisfy { $0.length >= 32 }, "case \(i)")
            } catch let e as HavenError where e.code == .corrupt {
                rejected += 1
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        #expect(rejected > 0)
    }
}
