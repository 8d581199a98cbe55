import ArgumentParser
import Foundation
import HavenCore

struct Find: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "find",
        abstract: "Find files and directories in snapshots.",
        discussion: """
        Searches every snapshot (or those given with --snapshot, or those matching --host/--tag/--path) \
        for entries whose NAME matches one of the shell patterns (*, ?, [abc]); quote the patterns so the \
        shell does not expand them. --oldest and --newest restrict matches by modification time \
        ("2024-01-31", "2024-01-31 15:04", "2024-01-31 15:04:05" in local time, or RFC 3339).

        With --blob, the arguments are data blob IDs (or prefixes) and find lists the files that contain \
        them; with --tree, they are tree IDs and find lists the directories stored as those trees.

        Examples:
          haven -r /srv/backup find '*.pdf'
          haven -r /srv/backup find -i 'report*' --snapshot latest -l
          haven -r /srv/backup find '*.log' --newest '2024-01-31' --host server
          haven -r /srv/backup find --blob 1a2b3c4d
          haven -r /srv/backup find --tree 9f8e7d6c --json
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: SnapshotFilter

    @Argument(help: ArgumentHelp("Name patterns (or blob/tree IDs with --blob/--tree).", valueName: "PATTERN"))
    var patterns: [String] = []

    @Option(name: [.customShort("s"), .long], help: ArgumentHelp("Only search this snapshot (repeatable; \"latest\", ID or prefix).", valueName: "SNAPSHOT"))
    var snapshot: [String] = []

    @Flag(name: [.short, .long], help: "Match names ignoring case.")
    var ignoreCase = false

    @Flag(name: [.short, .long], help: "Long listing: mode, owner, group, size and modification time.")
    var long = false

    @Option(help: ArgumentHelp("Only entries modified at or after this time.", valueName: "TIME"))
    var oldest: String?

    @Option(help: ArgumentHelp("Only entries modified at or before this time.", valueName: "TIME"))
    var newest: String?

    @Flag(help: "The arguments are data blob IDs: list the files containing them.")
    var blob = false

    @Flag(help: "The arguments are tree IDs: list the directories stored as them.")
    var tree = false

    @Flag(name: [.customShort("N"), .long], help: "Search the newest snapshots first.")
    var reverse = false

    func validate() throws {
        if patterns.isEmpty {
            throw ValidationError(blob || tree ? "give at least one ID to search for" : "give at least one pattern to search for (e.g. '*.txt')")
        }
        if blob && tree { throw ValidationError("--blob and --tree cannot be combined") }
        if (blob || tree) && (oldest != nil || newest != nil || ignoreCase) {
            throw ValidationError("--oldest, --newest and --ignore-case only apply to name patterns, not to --blob/--tree")
        }
    }

    /// What an entry must satisfy to be reported.
    enum Matcher: Sendable {
        case names([PathPattern], oldest: Timestamp?, newest: Timestamp?)
        case blobs([Inspect.IDPrefix])
        case trees([Inspect.IDPrefix])

        func matches(_ node: Node) -> Bool {
            switch self {
            case .names(let patterns, let oldest, let newest):
                if let oldest, node.mtime < oldest { return false }
                if let newest, node.mtime > newest { return false }
                return patterns.contains { $0.matches(node.name) }
            case .blobs(let ids):
                return node.type == .file && node.content.contains { c in ids.contains { $0.matches(c) } }
            case .trees(let ids):
                guard let sub = node.subtree else { return false }
                return ids.contains { $0.matches(sub) }
            }
        }
    }

    struct Hit: Sendable {
        var path: String
        var node: Node
        var parentTree: ID
    }

    func run() async throws {
        let matcher: Matcher
        if blob {
            matcher = .blobs(try patterns.map { try Inspect.IDPrefix($0, what: "blob") })
        } else if tree {
            matcher = .trees(try patterns.map { try Inspect.IDPrefix($0, what: "tree") })
        } else {
            let pats = try patterns.map { p -> PathPattern in
                do { return try PathPattern(p, caseInsensitive: ignoreCase) } catch let e as HavenError {
                    throw HavenError(.usage, e.message)
                }
            }
            matcher = .names(pats, oldest: try oldest.map { try Self.parseTime($0, flag: "--oldest") },
                             newest: try newest.map { try Self.parseTime($0, flag: "--newest") })
        }
        let repo = try await global.openRepository()
        let all = filter.apply(try await global.loadSnapshots(repo))
        var snaps: [Snapshot]
        if snapshot.isEmpty {
            snaps = all
        } else {
            snaps = []
            for name in snapshot {
                let s = try Repository.resolveSnapshot(name, in: all)
                if !snaps.contains(where: { $0.id == s.id }) { snaps.append(s) }
            }
        }
        snaps.sort { $0.time < $1.time }
        if reverse { snaps.reverse() }
        let selected = snaps
        let out = global.output
        let json = global.json, long = long

        try await withRepositoryLock(repo, exclusive: false, global: global, readOnly: true) { _ in
            // Trees known to hold no match anywhere beneath them: matching depends only on the entries, so a
            // tree shared by several snapshots is searched once.
            var barren = Set<ID>()
            var jsonResults: [[String: Any]] = []
            var printedGroups = 0
            var total = 0
            for snap in selected {
                var hits: [Hit] = []
                if case .trees(let ids) = matcher, ids.contains(where: { $0.matches(snap.tree) }) {
                    var root = Node(name: [], type: .dir)
                    root.subtree = snap.tree
                    hits.append(Hit(path: "/", node: root, parentTree: snap.tree))
                }
                _ = try await Self.search(repo, tree: snap.tree, path: "/", matcher: matcher, barren: &barren, hits: &hits)
                total += hits.count
                if hits.isEmpty { continue }
                switch matcher {
                case .names:
                    if json {
                        jsonResults.append(["snapshot": snap.id!.hex, "hits": hits.count,
                                            "matches": hits.map { Inspect.detailedNodeJSON($0.node, path: $0.path) }])
                        continue
                    }
                    if printedGroups > 0 { print("") }
                    printedGroups += 1
                    print("Found matching entries in snapshot \(snap.id!.short) from \(snap.time.display)")
                    for h in hits {
                        print(long ? Inspect.longLine(h.node, path: h.path, numeric: false, human: false) : h.path)
                    }
                case .blobs(let ids), .trees(let ids):
                    let isBlob: Bool
                    if case .blobs = matcher { isBlob = true } else { isBlob = false }
                    for h in hits {
                        let objects: [ID] = isBlob ? h.node.content.filter { c in ids.contains { $0.matches(c) } } : [h.node.subtree!]
                        for obj in Array(Set(objects)).sorted() {
                            if json {
                                jsonResults.append(["object_type": isBlob ? "blob" : "tree", "id": obj.hex, "path": h.path,
                                                    "parent_tree": h.parentTree.hex, "snapshot": snap.id!.hex,
                                                    "time": snap.time.rfc3339])
                                continue
                            }
                            print("Found \(isBlob ? "blob" : "tree") \(obj.short)")
                            print(isBlob ? " ... in file \(h.path)" : " ... path \(h.path)")
                            if isBlob { print("     (tree \(h.parentTree.short))") }
                            print(" ... in snapshot \(snap.id!.short) (\(snap.time.display))")
                        }
                    }
                }
            }
            if json {
                out.printJSON(jsonResults)
            } else if total == 0 {
                out.detail("no matching entries in \(selected.count) snapshots")
            }
        }
    }

    /// Searches `tree` and returns whether anything beneath it matched.
    static func search(_ repo: Repository, tree: ID, path: String, matcher: Matcher,
                       barren: inout Set<ID>, hits: inout [Hit]) async throws -> Bool {
        if barren.contains(tree) { return false }
        let t = try await repo.loadTree(tree)
        var any = false
        for node in t.nodes {
            let p = Inspect.join(path, node.displayName)
            if matcher.matches(node) {
                hits.append(Hit(path: p, node: node, parentTree: tree))
                any = true
            }
            if node.type == .dir, let sub = node.subtree {
                if try await search(repo, tree: sub, path: p, matcher: matcher, barren: &barren, hits: &hits) { any = true }
            }
        }
        if !any { barren.insert(tree) }
        return any
    }

    /// Parses restic's time formats for --oldest/--newest, in local time unless an offset is given.
    static func parseTime(_ s: String, flag: String) throws -> Timestamp {
        if let t = Timestamp(rfc3339: s) { return t }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone.current
        for format in ["yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd HH:mm", "yyyy-MM-dd", "yyyy-MM-dd'T'HH:mm:ss"] {
            f.dateFormat = format
            if let d = f.date(from: s) {
                let secs = d.timeIntervalSince1970.rounded(.down)
                return Timestamp(seconds: Int64(secs), nanoseconds: Int32((d.timeIntervalSince1970 - secs) * 1e9))
            }
        }
        throw HavenError(.usage, "invalid \(flag) time \"\(s)\": use \"2024-01-31\", \"2024-01-31 15:04\" or \"2024-01-31 15:04:05\"")
    }
}
