import ArgumentParser
import Foundation
import HavenCore

struct PruneFlags: ParsableArguments {
    @Option(help: ArgumentHelp("Unused space to tolerate after prune: a percentage (5%), a size (1G) or unlimited.", valueName: "LIMIT"))
    var maxUnused = "5%"

    @Option(help: ArgumentHelp("Repack at most this much data per run (e.g. 10G).", valueName: "SIZE"))
    var maxRepackSize: String?

    @Flag(help: "Only repack packs that hold tree blobs (cheap on remote storage).")
    var repackCacheableOnly = false

    func options() throws -> PruneOptions {
        PruneOptions(maxUnused: try MaxUnused.parse(maxUnused), maxRepackBytes: try maxRepackSize.map(Format.parseSize),
                     repackCacheableOnly: repackCacheableOnly)
    }
}

/// Plans a prune, prints the plan, and runs it unless `dryRun`. The caller holds an exclusive lock.
func runPrune(repository: Repository, lock: Lock?, options: PruneOptions, dryRun: Bool, global: GlobalOptions) async throws {
    let out = global.output
    let plan = try await PrunePlan.make(repository: repository, options: options)
    if global.json {
        out.printJSON([
            "message_type": "prune_plan", "packs_to_delete": plan.packsToDelete.count, "packs_to_repack": plan.packsToRepack.count,
            "unreferenced_packs": plan.unreferencedPacks.count, "bytes_freed": plan.bytesFreed,
            "blobs_to_repack": plan.toRepack.blobs, "bytes_to_repack": plan.toRepack.bytes,
            "unused_bytes_after": plan.unusedAfter, "remaining_bytes": plan.remainingBytes, "dry_run": dryRun,
        ])
    } else {
        out.info(plan.description)
    }
    if dryRun {
        out.info("dry run: nothing was changed")
        return
    }
    if plan.isEmpty {
        out.info("nothing to prune")
        return
    }
    guard let lock else { throw HavenError(.usage, "prune needs a lock; do not use --no-lock") }
    let result = try await plan.execute(repository: repository, lock: lock)
    if global.json {
        out.printJSON(["message_type": "prune_summary", "packs_written": result.packsWritten, "blobs_repacked": result.blobsRepacked,
                       "packs_removed": result.packsRemoved, "index_files_written": result.indexFilesWritten,
                       "index_files_removed": result.indexFilesRemoved])
    } else {
        out.info("repacked \(result.blobsRepacked) blobs into \(result.packsWritten) packs, removed \(result.packsRemoved) packs and \(result.indexFilesRemoved) index files")
        out.info("done")
    }
}

struct Forget: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget",
        abstract: "Remove snapshots by a retention policy or by ID (and optionally prune).",
        discussion: """
        Snapshots are grouped by host and paths (--group-by) and the policy applies to each group. A \
        snapshot is kept when any --keep option keeps it. Use -1 for "unlimited" counts. Forgetting only \
        removes snapshot files: run prune (or --prune) to free the space.

        Examples:
          haven -r /srv/backup forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --prune
          haven -r /srv/backup forget --keep-within 30d --dry-run
          haven -r /srv/backup forget 1a2b3c4d
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: SnapshotFilter
    @OptionGroup var pruneFlags: PruneFlags

    @Argument(help: ArgumentHelp("Snapshots to remove (instead of a policy).", valueName: "SNAPSHOT"))
    var ids: [String] = []

    @Option(name: [.customShort("l"), .long], help: "Keep the last N snapshots.") var keepLast: Int?
    @Option(name: [.customShort("H"), .long], help: "Keep the last N hourly snapshots.") var keepHourly: Int?
    @Option(name: [.customShort("d"), .long], help: "Keep the last N daily snapshots.") var keepDaily: Int?
    @Option(name: [.customShort("w"), .long], help: "Keep the last N weekly snapshots.") var keepWeekly: Int?
    @Option(name: [.customShort("m"), .long], help: "Keep the last N monthly snapshots.") var keepMonthly: Int?
    @Option(name: [.customShort("y"), .long], help: "Keep the last N yearly snapshots.") var keepYearly: Int?
    @Option(help: ArgumentHelp("Keep snapshots newer than DURATION (e.g. 1y5m7d2h) before the latest.", valueName: "DURATION")) var keepWithin: String?
    @Option(help: ArgumentHelp("Keep hourly snapshots within DURATION.", valueName: "DURATION")) var keepWithinHourly: String?
    @Option(help: ArgumentHelp("Keep daily snapshots within DURATION.", valueName: "DURATION")) var keepWithinDaily: String?
    @Option(help: ArgumentHelp("Keep weekly snapshots within DURATION.", valueName: "DURATION")) var keepWithinWeekly: String?
    @Option(help: ArgumentHelp("Keep monthly snapshots within DURATION.", valueName: "DURATION")) var keepWithinMonthly: String?
    @Option(help: ArgumentHelp("Keep yearly snapshots within DURATION.", valueName: "DURATION")) var keepWithinYearly: String?
    @Option(help: ArgumentHelp("Keep snapshots with these tags (\"a,b\" needs both; repeatable).", valueName: "TAG[,TAG]")) var keepTag: [String] = []

    @Option(name: [.customShort("g"), .long], help: ArgumentHelp("Group by host, paths and/or tags.", valueName: "GROUP"))
    var groupBy = "host,paths"

    @Flag(name: [.customShort("n"), .long], help: "Show what would be removed without removing it.")
    var dryRun = false

    @Flag(help: "Prune the repository afterwards.")
    var prune = false

    func policy() throws -> RetentionPolicy {
        func d(_ s: String?) throws -> RetentionDuration? { try s.map(RetentionDuration.parse) }
        return RetentionPolicy(
            keepLast: keepLast, keepHourly: keepHourly, keepDaily: keepDaily, keepWeekly: keepWeekly,
            keepMonthly: keepMonthly, keepYearly: keepYearly, keepWithin: try d(keepWithin),
            keepWithinHourly: try d(keepWithinHourly), keepWithinDaily: try d(keepWithinDaily),
            keepWithinWeekly: try d(keepWithinWeekly), keepWithinMonthly: try d(keepWithinMonthly),
            keepWithinYearly: try d(keepWithinYearly),
            keepTags: keepTag.map { $0.split(separator: ",").map(String.init) })
    }

    func run() async throws {
        let out = global.output
        let pruneOptions = try pruneFlags.options()
        let policy = try policy()
        if ids.isEmpty { try policy.validate() } else if !policy.isEmpty {
            throw HavenError(.usage, "give either snapshot IDs or --keep-* options, not both")
        }
        let grouping = try SnapshotGroupBy.parse(groupBy)
        let repo = try await global.openRepository(index: false)
        try await withRepositoryLock(repo, exclusive: true, global: global) { lock in
            let all = filter.apply(try await global.loadSnapshots(repo))
            var remove: [Snapshot] = []
            var jsonGroups: [[String: Any]] = []
            if !ids.isEmpty {
                remove = try ids.map { try Repository.resolveSnapshot($0, in: all) }
            } else {
                for g in group(all, by: grouping) {
                    let decision = try applyPolicy(g.snapshots, policy)
                    remove += decision.remove
                    if global.json {
                        jsonGroups.append([
                            "tags": g.key.tags as Any, "host": g.key.hostname as Any, "paths": g.key.paths as Any,
                            "keep": decision.keep.map { JSON.snapshot($0.snapshot) },
                            "remove": decision.remove.map(JSON.snapshot),
                            "reasons": decision.keep.map { ["snapshot": $0.snapshot.id!.hex, "matches": $0.reasons] },
                        ])
                        continue
                    }
                    out.info("snapshots for \(g.key.description):")
                    out.info("keep \(decision.keep.count) snapshots:")
                    if !decision.keep.isEmpty {
                        out.info(Format.table(["ID", "Time", "Host", "Tags", "Reasons"], decision.keep.map { k in
                            [k.snapshot.id!.short, k.snapshot.time.display, k.snapshot.hostname, k.snapshot.tags.joined(separator: ","), k.reasons.joined(separator: ", ")]
                        }))
                    }
                    out.info("remove \(decision.remove.count) snapshots:")
                    if !decision.remove.isEmpty {
                        out.info(Format.table(["ID", "Time", "Host", "Tags"], decision.remove.map { s in
                            [s.id!.short, s.time.display, s.hostname, s.tags.joined(separator: ",")]
                        }))
                    }
                    out.info("")
                }
            }
            if global.json && ids.isEmpty { out.printJSON(jsonGroups) }
            if dryRun {
                out.info("dry run: would remove \(remove.count) snapshots")
            } else {
                for s in remove {
                    try await repo.storage.remove(Handle(.snapshot, s.id!))
                    out.detail("removed snapshot \(s.id!.short)")
                }
                out.info("removed \(remove.count) snapshots")
            }
            if prune {
                try await runPrune(repository: repo, lock: lock, options: pruneOptions, dryRun: dryRun, global: global)
            }
        }
    }
}

struct Prune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Remove data that no snapshot uses.",
        discussion: """
        Prints the plan first (what is deleted, what is repacked, how much space is freed), then carries it \
        out: new packs and index files are written before anything is deleted, so an interruption never \
        loses data.

        Examples:
          haven -r /srv/backup prune
          haven -r /srv/backup prune --max-unused 10% --dry-run
          haven -r /srv/backup prune --max-unused unlimited      # delete only, never repack
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var pruneFlags: PruneFlags

    @Flag(name: [.customShort("n"), .long], help: "Print the plan without changing anything.")
    var dryRun = false

    func run() async throws {
        let options = try pruneFlags.options()
        let repo = try await global.openRepository(index: false)
        try await withRepositoryLock(repo, exclusive: true, global: global) { lock in
            try await runPrune(repository: repo, lock: lock, options: options, dryRun: dryRun, global: global)
        }
    }
}
