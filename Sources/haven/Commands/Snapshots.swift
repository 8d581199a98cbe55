import ArgumentParser
import Foundation
import HavenCore

struct Snapshots: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshots",
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
        let groups = group(snaps, by: try SnapshotGroupBy.parse(groupBy ?? ""))
        var jsonGroups: [[String: Any]] = []
        for g in groups {
            let key = g.key
            var members = g.snapshots
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

extension SnapshotGroupKey {
    var json: [String: Any] {
        var d: [String: Any] = [:]
        if let hostname { d["hostname"] = hostname }
        if let paths { d["paths"] = paths }
        if let tags { d["tags"] = tags }
        return d
    }
}
