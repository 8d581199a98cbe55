import ArgumentParser
import Foundation
import HavenCore

struct Ls: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List files and directories in a snapshot.",
        discussion: """
        Prints the path of every file, directory and other entry stored in SNAPSHOT ("latest", a snapshot \
        ID or a unique ID prefix), depth first, as it would be restored ("/home/me/notes.txt").

        With DIR arguments (absolute paths inside the snapshot) only those directories and their direct \
        entries are listed; add --recursive to list everything beneath them. --host, --tag and --path \
        choose which snapshot "latest" means.

        With --json the first line is the snapshot (struct_type "snapshot"), then one line per entry \
        (struct_type "node") with name, type, path, uid, gid, size, mode, permissions, mtime, atime, ctime.

        Examples:
          haven -r /srv/backup ls latest
          haven -r /srv/backup ls -l 1a2b3c4d /home/me/Documents
          haven -r /srv/backup ls latest --host laptop /etc --recursive
          haven -r /srv/backup ls latest --json | jq -r .path
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: SnapshotFilter

    @Argument(help: ArgumentHelp("The snapshot: \"latest\", an ID or a unique ID prefix.", valueName: "SNAPSHOT"))
    var snapshot: String

    @Argument(help: ArgumentHelp("Only list these directories (absolute paths inside the snapshot).", valueName: "DIR"))
    var dirs: [String] = []

    @Flag(name: [.short, .long], help: "Long listing: mode, owner, group, size and modification time.")
    var long = false

    @Flag(help: "With DIR arguments, list everything beneath them, not only their direct entries.")
    var recursive = false

    @Flag(help: "With --long, show numeric user and group IDs instead of names.")
    var numericUidGid = false

    @Flag(help: "With --long, print sizes in binary units (KiB, MiB, …).")
    var humanReadable = false

    func run() async throws {
        let wanted = try dirs.map { try Inspect.cleanAbsolutePath($0, what: "DIR") }
        let repo = try await global.openRepository()
        let snap = try await global.findSnapshot(snapshot, in: repo, filter: filter)
        let out = global.output
        let json = global.json
        let long = long, recursive = recursive, numeric = numericUidGid, human = humanReadable

        let found = try await withRepositoryLock(repo, exclusive: false, global: global, readOnly: true) { (_: Lock?) -> Set<String> in
            var found = Set<String>()
            var printer = LinePrinter()
            if json {
                var d = JSON.snapshot(snap)
                d["struct_type"] = "snapshot"
                d["message_type"] = "snapshot"
                printer.line(JSON.string(d))
            } else if !out.quiet {
                let filtered = wanted.isEmpty ? "" : " filtered by [\(wanted.joined(separator: " "))]"
                printer.line("snapshot \(snap.id!.short) of [\(snap.paths.joined(separator: " "))]\(filtered) at \(snap.time.display):")
            }
            try await Inspect.walk(repo, tree: snap.tree, path: "/") { path, node in
                // Like restic: print entries inside a wanted directory (the directory itself and its direct
                // entries, or everything with --recursive); descend while a wanted directory lies deeper.
                let within = wanted.isEmpty || wanted.contains { Inspect.hasPathPrefix($0, path) }
                if wanted.contains(path) { found.insert(path) }
                if within {
                    if json {
                        printer.line(JSON.string(Inspect.nodeJSON(node, path: path)))
                    } else {
                        printer.line(long ? Inspect.longLine(node, path: path, numeric: numeric, human: human) : path)
                    }
                    if recursive || wanted.isEmpty { return true }
                }
                return wanted.contains { Inspect.hasPathPrefix(path, $0) }
            }
            printer.flush()
            return found
        }
        for dir in wanted where dir != "/" && !found.contains(dir) {
            out.warning("\(dir) is not in snapshot \(snap.id!.short)")
        }
    }
}

/// Buffers stdout lines so that long listings are written in large blocks.
struct LinePrinter {
    private var buffer: [UInt8] = []

    mutating func line(_ s: String) {
        buffer.append(contentsOf: s.utf8)
        buffer.append(0x0a)
        if buffer.count >= 1 << 16 { flush() }
    }

    mutating func flush() {
        guard !buffer.isEmpty else { return }
        fflush(nil)  // anything print() buffered comes first
        try? FileHandle.standardOutput.write(contentsOf: Data(buffer))
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Helpers shared by the inspection commands (ls, find, diff, cat, stats).
enum Inspect {
    /// `dir` + "/" + `name`, with the root written as "/".
    static func join(_ dir: String, _ name: String) -> String {
        dir == "/" ? "/" + name : dir + "/" + name
    }

    /// Whether `path` is `base` or lies beneath it (restic's fs.HasPathPrefix).
    static func hasPathPrefix(_ base: String, _ path: String) -> Bool {
        base == "/" || path == base || path.hasPrefix(base + "/")
    }

    /// Normalizes an absolute path given on the command line: no repeated or trailing slashes, no "." or "..".
    static func cleanAbsolutePath(_ p: String, what: String) throws -> String {
        guard p.hasPrefix("/") else {
            throw HavenError(.usage, "\(what) \"\(p)\" is not an absolute path: paths inside a snapshot start with / (e.g. /home/me)")
        }
        var parts: [Substring] = []
        for c in p.split(separator: "/") {
            if c == "." { continue }
            if c == ".." { if !parts.isEmpty { parts.removeLast() }; continue }
            parts.append(c)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// Walks a tree depth first in stored order, calling `visit` for every node with its path. For a directory,
    /// `visit` returns whether to descend into it.
    static func walk(_ repo: Repository, tree: ID, path: String,
                     _ visit: (_ path: String, _ node: Node) throws -> Bool) async throws {
        let t = try await repo.loadTree(tree)
        for node in t.nodes {
            let p = join(path, node.displayName)
            let descend = try visit(p, node)
            if descend, node.type == .dir {
                guard let sub = node.subtree else {
                    throw HavenError(.corrupt, "directory \(p) has no subtree: the snapshot is damaged (run `haven check`)")
                }
                try await walk(repo, tree: sub, path: p, visit)
            }
        }
    }

    /// Splits "SNAPSHOT:sub/dir" into the snapshot and the path inside it.
    static func splitSnapshotPath(_ spec: String) -> (snapshot: String, path: String?) {
        guard let colon = spec.firstIndex(of: ":") else { return (spec, nil) }
        return (String(spec[..<colon]), String(spec[spec.index(after: colon)...]))
    }

    /// The tree of directory `path` (relative or absolute, "/" separated) beneath the tree `root`.
    static func subtree(_ repo: Repository, root: ID, path: String, snapshot: ID) async throws -> ID {
        var current = root
        var walked = ""
        for comp in path.split(separator: "/") where comp != "." && !comp.isEmpty {
            let tree = try await repo.loadTree(current)
            walked += "/" + comp
            guard let node = tree.nodes.first(where: { $0.displayName == comp || $0.name == Array(comp.utf8) }) else {
                throw HavenError(.notFound, "\(walked) is not in snapshot \(snapshot.short)")
            }
            guard node.type == .dir, let sub = node.subtree else {
                throw HavenError(.invalidArgument, "\(walked) in snapshot \(snapshot.short) is a \(node.type.rawValue), not a directory")
            }
            current = sub
        }
        return current
    }

    /// A node as restic's `ls --json` prints it.
    static func nodeJSON(_ node: Node, path: String) -> [String: Any] {
        var d: [String: Any] = [
            "name": node.displayName, "type": node.type.rawValue, "path": path,
            "uid": Int(node.uid), "gid": Int(node.gid), "mode": Int(node.mode), "permissions": node.modeString,
            "mtime": node.mtime.rfc3339, "atime": node.atime.rfc3339, "ctime": node.ctime.rfc3339,
            "struct_type": "node", "message_type": "node",
        ]
        if node.type == .file { d["size"] = NSNumber(value: node.size) }
        if node.inode != 0 { d["inode"] = NSNumber(value: node.inode) }
        return d
    }

    /// `find --json` adds owner names, link count and link target to the `ls` fields.
    static func detailedNodeJSON(_ node: Node, path: String) -> [String: Any] {
        var d = nodeJSON(node, path: path)
        d["struct_type"] = nil
        d["message_type"] = nil
        if !node.user.isEmpty { d["user"] = node.user }
        if !node.group.isEmpty { d["group"] = node.group }
        if node.links != 0 { d["links"] = NSNumber(value: node.links) }
        if node.deviceID != 0 { d["device_id"] = NSNumber(value: node.deviceID) }
        if node.type == .symlink { d["linktarget"] = String(decoding: node.linkTarget, as: UTF8.self) }
        return d
    }

    /// One `ls -l` line: mode, owner, group, size, mtime, path (and a symlink's target).
    static func longLine(_ node: Node, path: String, numeric: Bool, human: Bool) -> String {
        let user = numeric || node.user.isEmpty ? String(node.uid) : node.user
        let group = numeric || node.group.isEmpty ? String(node.gid) : node.group
        let size = human ? Format.bytes(node.size) : String(node.size)
        var line = node.modeString + " " + pad(user, 8) + " " + pad(group, 8) + " " + pad(size, human ? 11 : 10)
            + " " + node.mtime.display + " " + path
        if node.type == .symlink { line += " -> " + String(decoding: node.linkTarget, as: UTF8.self) }
        return line
    }

    /// Right-aligns `s` in `width` columns.
    static func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
    }

    // MARK: IDs given on the command line

    /// A hex ID prefix (1 to 64 digits), compared against IDs without converting them to text.
    struct IDPrefix: Sendable, CustomStringConvertible {
        let text: String
        private let value: ID
        private let masks: (UInt64, UInt64, UInt64, UInt64)

        init(_ s: String, what: String) throws {
            let lower = s.lowercased()
            guard !lower.isEmpty, lower.count <= 64, lower.allSatisfy(\.isHexDigit) else {
                throw HavenError(.usage, "\"\(s)\" is not a valid \(what) ID: give 1 to 64 hex digits")
            }
            text = lower
            value = ID(hex: lower + String(repeating: "0", count: 64 - lower.count))!
            func mask(_ word: Int) -> UInt64 {
                let nibbles = min(max(lower.count - 16 * word, 0), 16)
                return nibbles == 0 ? 0 : ~UInt64(0) << UInt64(64 - 4 * nibbles)
            }
            masks = (mask(0), mask(1), mask(2), mask(3))
        }

        var isComplete: Bool { text.count == 64 }
        var description: String { text }

        func matches(_ id: ID) -> Bool {
            id.w0 & masks.0 == value.w0 & masks.0 && id.w1 & masks.1 == value.w1 & masks.1
                && id.w2 & masks.2 == value.w2 & masks.2 && id.w3 & masks.3 == value.w3 & masks.3
        }
    }

    /// The one stored file of `type` whose name starts with `prefix`.
    static func resolveFile(_ storage: any Storage, _ type: FileType, _ prefix: String) async throws -> ID {
        let what = type == .pack ? "pack" : type.rawValue
        let p = try IDPrefix(prefix, what: what)
        let names = try await storage.list(type).map(\.name).filter { $0.hasPrefix(p.text) }.compactMap { ID(hex: $0) }
        guard !names.isEmpty else {
            throw HavenError(.notFound, "no \(what) file with ID \(prefix) in \(storage.location)")
        }
        guard names.count == 1 else {
            throw HavenError(.invalidArgument, "\(what) ID prefix \(prefix) is ambiguous: it matches \(names.count) files; give more digits")
        }
        return names[0]
    }

    /// The one indexed blob of `type` whose ID starts with `prefix`, or nil when there is none.
    static func resolveBlob(_ repo: Repository, _ type: BlobType, _ prefix: IDPrefix) throws -> ID? {
        if prefix.isComplete {
            let id = ID(hex: prefix.text)!
            return repo.index.has(id, type) ? id : nil
        }
        let matches = repo.index.allBlobs(type).lazy.map(\.0).filter(prefix.matches)
        var it = matches.makeIterator()
        guard let first = it.next() else { return nil }
        if it.next() != nil {
            let count = repo.index.allBlobs(type).filter { prefix.matches($0.0) }.count
            throw HavenError(.invalidArgument, "\(type.rawValue) blob ID prefix \(prefix) is ambiguous: it matches \(count) blobs; give more digits")
        }
        return first
    }

    /// The plaintext size of an indexed blob.
    static func blobSize(_ repo: Repository, _ id: ID, _ type: BlobType) -> UInt64? {
        repo.index.lookup(id, type).map { UInt64($0.blob.dataLength) }
    }
}
