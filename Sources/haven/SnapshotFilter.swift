import ArgumentParser
import HavenCore

/// restic's snapshot filters: --host, --tag, --path.
struct SnapshotFilter: ParsableArguments {
    @Option(help: ArgumentHelp("Only snapshots of this host (repeatable).", valueName: "HOST"))
    var host: [String] = []

    @Option(help: ArgumentHelp("Only snapshots with these tags: \"a,b\" needs both; repeat for alternatives.", valueName: "TAG[,TAG]"))
    var tag: [String] = []

    @Option(help: ArgumentHelp("Only snapshots that include this path (repeatable).", valueName: "PATH"))
    var path: [String] = []

    func matches(_ s: Snapshot) -> Bool {
        if !host.isEmpty && !host.contains(s.hostname) { return false }
        if !tag.isEmpty {
            let groups = tag.map { $0.split(separator: ",").map(String.init) }
            if !groups.contains(where: { g in g.allSatisfy { s.tags.contains($0) } }) { return false }
        }
        if !path.isEmpty {
            let wanted = path.map { $0.count > 1 && $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
            if !wanted.allSatisfy({ s.paths.contains($0) }) { return false }
        }
        return true
    }

    func apply(_ snapshots: [Snapshot]) -> [Snapshot] { snapshots.filter(matches) }
}

extension GlobalOptions {
    /// Loads snapshots (warning about damaged ones) and resolves `name` ("latest", an ID or prefix).
    func findSnapshot(_ name: String, in repo: Repository, filter: SnapshotFilter? = nil) async throws -> Snapshot {
        let all = try await loadSnapshots(repo)
        return try Repository.resolveSnapshot(name, in: filter?.apply(all) ?? all)
    }

    func loadSnapshots(_ repo: Repository) async throws -> [Snapshot] {
        let out = output
        return try await repo.loadSnapshots(onError: { e in out.warning("skipping damaged snapshot: \(e.message)") })
    }
}
