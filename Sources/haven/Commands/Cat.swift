import ArgumentParser
import Foundation
import HavenCore

struct Cat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cat",
        abstract: "Print the decrypted contents of a repository object.",
        discussion: """
        TYPE is one of:
          config         the repository config (JSON)
          masterkey      the decrypted master key (JSON; keep it secret)
          index ID       an index file (JSON)
          snapshot ID    a snapshot (JSON; ID may be "latest")
          lock ID        a lock file (JSON)
          key ID         a key file as stored (JSON, master key encrypted)
          pack ID        a pack file's raw bytes
          blob ID        a blob's plaintext (data blobs, else tree blobs)
          tree ID        a tree blob (JSON); SNAPSHOT:DIR for a directory's
                         tree in a snapshot

        IDs may be abbreviated to any unique prefix. pack and blob write binary data to standard output.

        Examples:
          haven -r /srv/backup cat config
          haven -r /srv/backup cat snapshot latest
          haven -r /srv/backup cat tree latest:/home/me
          haven -r /srv/backup cat blob 1a2b3c4d > chunk.bin
        """
    )

    static let types = ["config", "masterkey", "index", "snapshot", "lock", "key", "pack", "blob", "tree"]
    static let typesWithoutID: Set<String> = ["config", "masterkey"]

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("What to print: \(types.joined(separator: ", ")).", valueName: "TYPE"))
    var type: String

    @Argument(help: ArgumentHelp("The object's ID or unique ID prefix (not for config and masterkey).", valueName: "ID"))
    var id: String?

    func validate() throws {
        guard Self.types.contains(type) else {
            throw ValidationError("invalid type \"\(type)\": use one of \(Self.types.joined(separator: ", "))")
        }
        if Self.typesWithoutID.contains(type) {
            if let id { throw ValidationError("\(type) takes no ID, but \"\(id)\" was given") }
        } else if id == nil {
            throw ValidationError("cat \(type) needs an ID (or unique ID prefix)")
        }
    }

    func run() async throws {
        let needsIndex = type == "blob" || type == "tree"
        let repo = try await global.openRepository(index: needsIndex)
        let type = type, arg = id ?? ""
        let global = self.global
        try await withRepositoryLock(repo, exclusive: false, global: global, readOnly: true) { _ in
            switch type {
            case "config":
                try Self.writeJSON(try await repo.loadUnpacked(.config))
            case "masterkey":
                let k = repo.key
                func b64(_ b: [UInt8]) -> JSONValue { .string(Data(b).base64EncodedString()) }
                let v = JSONValue.object([("mac", .object([("k", b64(k.macK)), ("r", b64(k.macR))])), ("encrypt", b64(k.encryptionKey))])
                Self.write(Self.pretty(v) + "\n")
            case "index", "lock":
                let ft: FileType = type == "index" ? .index : .lock
                let fid = try await Inspect.resolveFile(repo.storage, ft, arg)
                try Self.writeJSON(try await repo.loadUnpacked(Handle(ft, fid)))
            case "snapshot":
                let sid: ID
                if arg == "latest" {
                    sid = try await global.findSnapshot(arg, in: repo).id!
                } else {
                    sid = try await Inspect.resolveFile(repo.storage, .snapshot, arg)
                }
                try Self.writeJSON(try await repo.loadUnpacked(Handle(.snapshot, sid)))
            case "key":
                let kid = try await Inspect.resolveFile(repo.storage, .key, arg)
                try Self.writeJSON(try await repo.storage.load(Handle(.key, kid)))
            case "pack":
                let pid = try await Inspect.resolveFile(repo.storage, .pack, arg)
                let bytes = try await repo.storage.load(Handle(.pack, pid))
                let actual = ID.hash(bytes)
                if actual != pid {
                    global.output.warning("pack \(pid.short) is damaged: its SHA-256 is \(actual.hex), not its name \(pid.hex)")
                }
                Self.write(bytes)
            case "blob":
                let prefix = try Inspect.IDPrefix(arg, what: "blob")
                if let bid = try Inspect.resolveBlob(repo, .data, prefix) {
                    Self.write(try await repo.loadBlob(bid, .data))
                } else if let bid = try Inspect.resolveBlob(repo, .tree, prefix) {
                    Self.write(try await repo.loadBlob(bid, .tree))
                } else {
                    throw HavenError(.notFound, "no blob with ID \(arg) in the index (`haven find --blob \(arg)` shows which files refer to it)")
                }
            case "tree":
                let treeID = try await Self.resolveTree(arg, repo: repo, global: global)
                try Self.writeJSON(try await repo.loadBlob(treeID, .tree))
            default:
                throw HavenError(.usage, "invalid type \"\(type)\": use one of \(Self.types.joined(separator: ", "))")
            }
        }
    }

    /// A tree blob ID (prefix), "SNAPSHOT:DIR", or a snapshot (its root tree).
    static func resolveTree(_ arg: String, repo: Repository, global: GlobalOptions) async throws -> ID {
        let (name, sub) = Inspect.splitSnapshotPath(arg)
        if sub == nil && name != "latest" {
            let prefix = try Inspect.IDPrefix(name, what: "tree")
            if let tid = try Inspect.resolveBlob(repo, .tree, prefix) { return tid }
        }
        let snaps = try await global.loadSnapshots(repo)
        let snap: Snapshot
        do {
            snap = try Repository.resolveSnapshot(name, in: snaps)
        } catch let e as HavenError where e.code == .notFound && sub == nil {
            throw HavenError(.notFound, "no tree blob or snapshot with ID \(name): give a tree ID, or SNAPSHOT:DIR")
        }
        return try await Inspect.subtree(repo, root: snap.tree, path: sub ?? "", snapshot: snap.id!)
    }

    static func write(_ bytes: [UInt8]) {
        try? FileHandle.standardOutput.write(contentsOf: Data(bytes))
    }

    static func write(_ s: String) {
        try? FileHandle.standardOutput.write(contentsOf: Data(s.utf8))
    }

    /// Prints JSON indented like Go's json.MarshalIndent (two spaces, fields in stored order).
    static func writeJSON(_ bytes: [UInt8]) throws {
        let v: JSONValue
        do { v = try JSONValue.parse(bytes) } catch {
            throw HavenError(.corrupt, "the object decrypted but is not valid JSON (\(error))")
        }
        write(pretty(v) + "\n")
    }

    static func pretty(_ v: JSONValue, indent: String = "") -> String {
        switch v {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(_, let raw): return raw
        case .string(let s): return quote(s)
        case .array(let items):
            if items.isEmpty { return "[]" }
            let inner = indent + "  "
            return "[\n" + items.map { inner + pretty($0, indent: inner) }.joined(separator: ",\n") + "\n" + indent + "]"
        case .object(let fields):
            if fields.isEmpty { return "{}" }
            let inner = indent + "  "
            return "{\n" + fields.map { inner + quote($0.0) + ": " + pretty($0.1, indent: inner) }.joined(separator: ",\n")
                + "\n" + indent + "}"
        }
    }

    /// A JSON string literal, escaped as Go's encoder does.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<", ">", "&", "\u{2028}", "\u{2029}":
                out += String(format: "\\u%04x", u.value)
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}
