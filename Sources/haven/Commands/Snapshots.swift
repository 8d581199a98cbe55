import ArgumentParser
import Foundation
import HavenCore

struct Snapshots: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List snapshots.",
        discussion: """
        Examples:
          haven -r /srv/backup snapshots
          haven -r /srv/backup snapshots --host laptop --tag daily --latest 3
          haven -r /srv/backup snapshots --group-by host,paths --json
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: SnapshotFilter

    @Argument(help: ArgumentHelp("Show only these snapshots (IDs, prefixes or \"latest\").", valueName: "SNAPSHOT"))
    var ids: [String] = []

    @Option(help: ArgumentHelp("Show only the last N snapshots of each group.", valueName: "N"))
    var latest: Int?

    @Option(name: [.customShort("g"), .long], help: ArgumentHelp("Group by host, paths and/or tags (comma-separated).", valueName: "GROUP"))
    var groupBy: String?

    func run() async throws {
        let repo = try await global.openRepository(index: false)
        var snaps = filter.apply(try await global.loadSnapshots(repo))
        if !ids.isEmpty { snaps = try ids.map { try Repository.resolveSnapshot($0, in: snaps) } }
        let groups = try SnapshotGrouping(groupBy ?? "").group(snaps)
        var jsonGroups: [[String: Any]] = []
        for (key, var members) in groups {
            members.sort { $0.time < $1.time }
            if let latest { members = Array(members.suffix(max(0, latest))) }
            if global.json {
                if groupBy == nil {
                    for s in members { jsonGroups.append(JSON.snapshot(s)) }
                } else {
                    jsonGroups.append(["group_key": key.json, "snapshots": members.map(JSON.snapshot)])
                }
                continue
            }
            if groupBy != nil { print("snapshots for \(key.description):") }
            let rows = members.map { s in
                [s.id!.short, s.time.display, s.hostname, s.tags.joined(separator: ","), s.paths.joined(separator: "\n" + String(repeating: " ", count: 0))]
            }
            print(Format.table(["ID", "Time", "Host", "Tags", "Paths"], rows))
            print("\(members.count) snapshots")
            if groupBy != nil { print("") }
        }
        if global.json { global.output.printJSON(jsonGroups) }
    }
}

/// Groups snapshots by any of host, paths and tags (restic's --group-by).
struct SnapshotGrouping {
    var host = false, paths = false, tags = false

    struct Key: Hashable, Comparable {
        var host: String?
        var paths: [String]?
        var tags: [String]?
        var description: String {
            var parts: [String] = []
            if let host { parts.append("host [\(host)]") }
            if let paths { parts.append("paths [\(paths.joined(separator: ", "))]") }
            if let tags { parts.append("tags [\(tags.joined(separator: ", "))]") }
            return parts.isEmpty ? "all" : parts.joined(separator: ", ")
        }
        var json: [String: Any] {
            var d: [String: Any] = [:]
            if let host { d["hostname"] = host }
            if let paths { d["paths"] = paths }
            if let tags { d["tags"] = tags }
            return d
        }
        static func < (a: Key, b: Key) -> Bool { a.description < b.description }
    }

    init(_ spec: String) throws {
        for part in spec.split(separator: ",") {
            switch part.trimmingCharacters(in: .whitespaces) {
            case "host": host = true
            case "paths": paths = true
            case "tags": tags = true
            case "": break
            default: throw HavenError(.usage, "invalid --group-by \"\(part)\": use host, paths and/or tags")
            }
        }
    }

    func key(_ s: Snapshot) -> Key {
        Key(host: host ? s.hostname : nil, paths: paths ? s.paths.sorted() : nil, tags: tags ? s.tags.sorted() : nil)
    }

    func group(_ snaps: [Snapshot]) -> [(Key, [Snapshot])] {
        Dictionary(grouping: snaps, by: key).sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }
}
