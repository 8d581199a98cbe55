import ArgumentParser
import Foundation
import HavenCore

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check the repository for errors.",
        discussion: """
        Without options, checks the structure: index files, packs present with the right sizes, every \
        snapshot and tree readable, every referenced blob indexed. --read-data also reads and decrypts \
        every pack (or a subset) and verifies every blob.

        Examples:
          haven -r /srv/backup check
          haven -r /srv/backup check --read-data
          haven -r /srv/backup check --read-data-subset 1/7     # a seventh of the packs, day by day
          haven -r /srv/backup check --read-data-subset 10%
        """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Read and verify all data.")
    var readData = false

    @Option(help: ArgumentHelp("Read and verify a subset of packs: n/t, x% or a size.", valueName: "SUBSET"))
    var readDataSubset: String?

    func run() async throws {
        let out = global.output
        var options = CheckOptions()
        if readData && readDataSubset != nil { throw HavenError(.usage, "use either --read-data or --read-data-subset, not both") }
        if readData { options.readData = .all }
        if let s = readDataSubset { options.readData = try ReadDataSelection.parse(s) }
        let repo = try await global.openRepository(index: false)
        // Each pack being verified is held in memory whole: run as many as the storage has connections
        // (a local disk: 2), at most 4.
        options.concurrency = min(4, max(2, repo.storage.properties.connections))
        out.info("checking repository \(repo.storage.location)")
        let report = try await withRepositoryLock(repo, exclusive: false, global: global, readOnly: true) { _ in
            // Like restic, check reads trees through a fresh cache, never through copies made earlier.
            await global.withTemporaryCache(for: repo) { await Checker.run(repository: repo, options: options) }
        }
        if global.json {
            out.printJSON([
                "message_type": "summary", "errors": report.errors, "warnings": report.warnings, "hints": report.hints,
                "damaged_packs": report.damagedPacks.map(\.hex),
                "damaged_blobs": report.damagedBlobs.map { ["id": $0.id.hex, "type": $0.type.rawValue, "pack": $0.pack.hex, "snapshots": $0.snapshots.map(\.hex)] },
                "snapshots": report.statistics.snapshots, "packs": report.statistics.packs, "packs_read": report.statistics.packsRead,
                "bytes_read": report.statistics.bytesRead, "blobs_verified": report.statistics.blobsVerified,
            ])
        } else {
            for h in report.hints { out.info(h) }
            for w in report.warnings { out.warning(w) }
            for e in report.errors { FileHandleOutput.stderr("error: " + e) }
            let st = report.statistics
            out.info("checked \(st.snapshots) snapshots, \(st.trees) trees, \(st.packs) packs"
                + (options.readData == .none ? "" : "; read \(st.packsRead) packs (\(Format.bytes(st.bytesRead))), verified \(st.blobsVerified) blobs"))
            if !report.hasErrors { out.info("no errors were found") }
        }
        if report.hasErrors {
            throw HavenError(.corrupt, "the repository has \(report.errors.count) errors (listed above)")
        }
    }
}
