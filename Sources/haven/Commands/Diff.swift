import ArgumentParser
import Foundation
import HavenCore

struct Diff: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Show what changed between two snapshots.",
        discussion: """
        Compares SNAPSHOT_A (before) with SNAPSHOT_B (after) and prints one line per changed entry:
          +  added          -  removed
          M  file content changed
          T  type changed (e.g. a file became a directory)
          U  metadata changed (with --metadata): mode, owner, mtime, size,
             link target or extended attributes
        Directories end in "/". A summary follows: entries added and removed, and the blobs and bytes \
        (plaintext, data and tree blobs) that only one of the two snapshots references.

        A snapshot may be written as SNAPSHOT:DIR to compare only that directory.
        With --json every change is a line {"message_type":"change","path":…,"modifier":…}, followed by a \
        line {"message_type":"statistics",…} as restic prints it.

        Examples:
          haven -r /srv/backup diff 1a2b3c4d latest
          haven -r /srv/backup diff --metadata 1a2b3c4d 5e6f7a8b
          haven -r /srv/backup diff 1a2b3c4d:/home/me latest:/home/me --json
        """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The earlier snapshot (\"latest\", ID or prefix; optionally :DIR).", valueName: "SNAPSHOT_A"))
    var first: String

    @Argument(help: ArgumentHelp("The later snapshot (\"latest\", ID or prefix; optionally :DIR).", valueName: "SNAPSHOT_B"))
    var second: String

    @Flag(help: "Also show entries whose metadata changed (U).")
    var metadata = false

    func run() async throws {
        let repo = try await global.openRepository()
        let snaps = try await global.loadSnapshots(repo)
        func resolve(_ spec: String) async throws -> (Snapshot, ID) {
            let (name, sub) = Inspect.splitSnapshotPath(spec)
            let s = try Repository.resolveSnapshot(name, in: snaps)
            guard let sub, !sub.isEmpty else { return (s, s.tree) }
            return (s, try await Inspect.subtree(repo, root: s.tree, path: sub, snapshot: s.id!))
        }
        let (snapA, treeA) = try await resolve(first)
        let (snapB, treeB) = try await resolve(second)
        let out = global.output
        let json = global.json, showMetadata = metadata
        try await withRepositoryLock(repo, exclusive: false, global: global, readOnly: true) { _ in
            out.info("comparing snapshot \(snapA.id!.short) to \(snapB.id!.short):")
            out.info("")
            let differ = TreeDiffer(repo: repo, json: json, showMetadata: showMetadata)
            try await differ.diffTree(prefix: "/", treeA, treeB)
            try await differ.finishBlobStatistics()
            differ.printer.flush()
            differ.report(from: snapA.id!, to: snapB.id!, out: out)
        }
    }
}

/// Walks two trees side by side, printing changes and collecting statistics (restic's diff semantics).
final class TreeDiffer {
    struct Side {
        var files = 0, dirs = 0, others = 0, dataBlobs = 0, treeBlobs = 0
        var bytes: UInt64 = 0
        var json: [String: Any] {
            ["files": files, "dirs": dirs, "others": others, "data_blobs": dataBlobs, "tree_blobs": treeBlobs,
             "bytes": NSNumber(value: bytes)]
        }
    }

    struct BlobKey: Hashable {
        var id: ID
        var type: BlobType
    }

    let repo: Repository
    let json: Bool
    let showMetadata: Bool
    var printer = LinePrinter()
    var added = Side(), removed = Side()
    var changedFiles = 0
    var blobsBefore = Set<BlobKey>(), blobsAfter = Set<BlobKey>()
    /// Subtrees identical in both snapshots: their blobs are common to both (walked only when needed).
    var commonTrees: [ID] = []

    init(repo: Repository, json: Bool, showMetadata: Bool) {
        self.repo = repo
        self.json = json
        self.showMetadata = showMetadata
    }

    func change(_ modifier: String, _ path: String) {
        if json {
            printer.line(JSON.string(["message_type": "change", "path": path, "modifier": modifier]))
        } else {
            printer.line(modifier.padding(toLength: max(5, modifier.count + 1), withPad: " ", startingAt: 0) + path)
        }
    }

    static func displayPath(_ prefix: String, _ node: Node) -> String {
        let p = Inspect.join(prefix, node.displayName)
        return node.type == .dir ? p + "/" : p
    }

    func diffTree(prefix: String, _ a: ID, _ b: ID) async throws {
        blobsBefore.insert(BlobKey(id: a, type: .tree))
        blobsAfter.insert(BlobKey(id: b, type: .tree))
        if a == b { commonTrees.append(a); return }
        let ta = try await repo.loadTree(a), tb = try await repo.loadTree(b)
        var byNameA: [[UInt8]: Node] = [:], byNameB: [[UInt8]: Node] = [:]
        for n in ta.nodes { byNameA[n.name] = n }
        for n in tb.nodes { byNameB[n.name] = n }
        let names = Set(byNameA.keys).union(byNameB.keys).sorted { $0.lexicographicallyPrecedes($1) }
        for name in names {
            switch (byNameA[name], byNameB[name]) {
            case (let n1?, nil):
                try await collect(n1, prefix: prefix, modifier: "-")
            case (nil, let n2?):
                try await collect(n2, prefix: prefix, modifier: "+")
            case (let n1?, let n2?):
                try await compare(n1, n2, prefix: prefix)
            default:
                break
            }
        }
    }

    func compare(_ n1: Node, _ n2: Node, prefix: String) async throws {
        let path = Self.displayPath(prefix, n2)
        let plain = Inspect.join(prefix, n2.displayName)
        var mod = ""
        if n1.type != n2.type { mod += "T" }
        if n1.type == .file && n2.type == .file && n1.content != n2.content {
            mod += "M"
            changedFiles += 1
        }
        if showMetadata && !Self.sameMetadata(n1, n2) { mod += "U" }
        if !mod.isEmpty { change(mod, path) }

        switch (n1.type == .dir, n2.type == .dir) {
        case (true, true):
            if let s1 = n1.subtree, let s2 = n2.subtree { try await diffTree(prefix: plain, s1, s2) }
        case (true, false):
            if let s1 = n1.subtree { try await collectTree(s1, prefix: plain, modifier: "-") }
            addBlobs(n2, to: &blobsAfter)
        case (false, true):
            addBlobs(n1, to: &blobsBefore)
            if let s2 = n2.subtree { try await collectTree(s2, prefix: plain, modifier: "+") }
        case (false, false):
            addBlobs(n1, to: &blobsBefore)
            addBlobs(n2, to: &blobsAfter)
        }
    }

    /// Metadata restic users care about; atime, ctime, inode and link count change without the file changing.
    static func sameMetadata(_ a: Node, _ b: Node) -> Bool {
        a.mode == b.mode && a.mtime == b.mtime && a.uid == b.uid && a.gid == b.gid && a.user == b.user
            && a.group == b.group && a.size == b.size && a.linkTarget == b.linkTarget && a.device == b.device
            && a.extendedAttributes == b.extendedAttributes
    }

    func addBlobs(_ node: Node, to set: inout Set<BlobKey>) {
        for c in node.content { set.insert(BlobKey(id: c, type: .data)) }
    }

    /// An entry only one side has: print it (and everything beneath it) and count it.
    func collect(_ node: Node, prefix: String, modifier: String) async throws {
        change(modifier, Self.displayPath(prefix, node))
        let removing = modifier == "-"
        switch node.type {
        case .file: removing ? (removed.files += 1) : (added.files += 1)
        case .dir: removing ? (removed.dirs += 1) : (added.dirs += 1)
        default: removing ? (removed.others += 1) : (added.others += 1)
        }
        if removing { addBlobs(node, to: &blobsBefore) } else { addBlobs(node, to: &blobsAfter) }
        if node.type == .dir, let sub = node.subtree {
            try await collectTree(sub, prefix: Inspect.join(prefix, node.displayName), modifier: modifier)
        }
    }

    func collectTree(_ tree: ID, prefix: String, modifier: String) async throws {
        if modifier == "-" {
            blobsBefore.insert(BlobKey(id: tree, type: .tree))
        } else {
            blobsAfter.insert(BlobKey(id: tree, type: .tree))
        }
        for node in try await repo.loadTree(tree).nodes {
            try await collect(node, prefix: prefix, modifier: modifier)
        }
    }

    /// Turns the collected blob sets into added/removed counts, discounting blobs that identical subtrees
    /// (skipped during the walk) also reference.
    func finishBlobStatistics() async throws {
        var onlyAfter = blobsAfter.subtracting(blobsBefore)
        var onlyBefore = blobsBefore.subtracting(blobsAfter)
        var visited = Set<ID>()
        var stack = commonTrees
        while !stack.isEmpty, !(onlyAfter.isEmpty && onlyBefore.isEmpty) {
            let id = stack.removeLast()
            guard visited.insert(id).inserted else { continue }
            onlyAfter.remove(BlobKey(id: id, type: .tree))
            onlyBefore.remove(BlobKey(id: id, type: .tree))
            for node in try await repo.loadTree(id).nodes {
                for c in node.content {
                    onlyAfter.remove(BlobKey(id: c, type: .data))
                    onlyBefore.remove(BlobKey(id: c, type: .data))
                }
                if let sub = node.subtree { stack.append(sub) }
            }
        }
        for k in onlyAfter { count(k, into: &added) }
        for k in onlyBefore { count(k, into: &removed) }
    }

    func count(_ k: BlobKey, into side: inout Side) {
        if k.type == .data { side.dataBlobs += 1 } else { side.treeBlobs += 1 }
        side.bytes += Inspect.blobSize(repo, k.id, k.type) ?? 0
    }

    func report(from a: ID, to b: ID, out: Output) {
        if json {
            out.printJSON(["message_type": "statistics", "source_snapshot": a.hex, "target_snapshot": b.hex,
                           "changed_files": changedFiles, "added": added.json, "removed": removed.json])
            return
        }
        print("")
        print(String(format: "Files:       %5d new, %5d removed, %5d changed", added.files, removed.files, changedFiles))
        print(String(format: "Dirs:        %5d new, %5d removed", added.dirs, removed.dirs))
        print(String(format: "Others:      %5d new, %5d removed", added.others, removed.others))
        print(String(format: "Data Blobs:  %5d new, %5d removed", added.dataBlobs, removed.dataBlobs))
        print(String(format: "Tree Blobs:  %5d new, %5d removed", added.treeBlobs, removed.treeBlobs))
        print("  Added:   \(Format.bytes(added.bytes))")
        print("  Removed: \(Format.bytes(removed.bytes))")
    }
}
