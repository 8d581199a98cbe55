import ArgumentParser
import Foundation
import HavenCore

struct Copy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Copy snapshots from another repository.",
        discussion: """
        Copies the given snapshots (all when none are given; --host, --tag and --path narrow them) from \
        --from-repo into the repository given with -r. A snapshot the destination already has (same tree, \
        time, paths and host) is skipped, and only blobs the destination lacks are transferred; they are \
        stored again with the destination's key. The new snapshot records the source snapshot as "original".

        The repositories may use different chunker parameters, but deduplication between snapshots copied \
        and snapshots made by backups into the destination works best when they are the same (create the \
        destination with `haven init --copy-chunker-params --from-repo SRC`).

        Examples:
          haven -r /srv/offsite copy --from-repo /srv/backup --from-password-file ~/.backup-pw
          haven -r s3:https://s3.example.com/bucket copy --from-repo /srv/backup --host laptop latest
        """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("Repository to copy snapshots from.", valueName: "REPO"))
    var fromRepo: String?

    @Option(help: ArgumentHelp("File to read the source repository's password from (or HAVEN_FROM_PASSWORD).", valueName: "FILE"))
    var fromPasswordFile: String?

    @Option(help: ArgumentHelp("Shell command whose output is the source repository's password.", valueName: "CMD"))
    var fromPasswordCommand: String?

    @OptionGroup var filter: SnapshotFilter

    @Argument(help: ArgumentHelp("Snapshots to copy (IDs, prefixes or \"latest\"); all when none are given.", valueName: "SNAPSHOT"))
    var snapshots: [String] = []

    func sourcePassword() throws -> String {
        if let cmd = fromPasswordCommand { return try PasswordText.fromCommand(cmd) }
        let env = global.environment
        if let file = fromPasswordFile ?? env["HAVEN_FROM_PASSWORD_FILE"] ?? env["RESTIC_FROM_PASSWORD_FILE"] {
            return try PasswordText.fromFile(file, what: "source password file")
        }
        if let pw = env["HAVEN_FROM_PASSWORD"] ?? env["RESTIC_FROM_PASSWORD"] { return pw }
        return try global.password(prompt: "enter password for source repository: ")
    }

    func run() async throws {
        let out = global.output
        let env = global.environment
        guard let from = fromRepo ?? env["HAVEN_FROM_REPOSITORY"] ?? env["RESTIC_FROM_REPOSITORY"], !from.isEmpty else {
            throw HavenError(.usage, "no source repository: give --from-repo REPO (or set HAVEN_FROM_REPOSITORY)")
        }
        guard global.repo.count <= 1 else {
            throw HavenError(.usage, "copy writes into one repository: give -r/--repo once (the source is --from-repo)")
        }
        let source = try await Repository.open(storage: try global.storage(at: from), password: try sourcePassword())
        global.useCache(for: source)
        let destination = try await global.openRepository()
        guard source.config.id != destination.config.id else {
            throw HavenError(.usage, "--from-repo and -r name the same repository (\(destination.storage.location)); copy needs two repositories")
        }
        if source.config.chunkerPolynomial != destination.config.chunkerPolynomial {
            out.detail("the repositories use different chunker parameters: blobs are copied as they are, but later backups into the destination will not deduplicate against them")
        }
        let result = try await withRepositoryLock(source, exclusive: false, global: global, readOnly: true) { _ in
            try await global.loadIndex(source)
            var chosen = filter.apply(try await global.loadSnapshots(source))
            if !snapshots.isEmpty {
                var picked: [Snapshot] = []
                for name in snapshots {
                    let s = try Repository.resolveSnapshot(name, in: chosen)
                    if !picked.contains(where: { $0.id == s.id }) { picked.append(s) }
                }
                chosen = picked
            }
            return try await withRepositoryLock(destination, exclusive: false, global: global) { _ in
                try await SnapshotCopier.copy(chosen, from: source, to: destination, report: { out.info($0) })
            }
        }
        let s = result.statistics
        if global.json {
            out.printJSON([
                "message_type": "summary", "snapshots_copied": result.copied.count, "snapshots_skipped": result.skipped.count,
                "copied": result.copied.map { ["source": $0.source.hex, "copy": $0.copy.hex] },
                "data_blobs": s.dataBlobs, "tree_blobs": s.treeBlobs, "data_added": s.bytesAdded,
                "data_added_packed": s.bytesStored, "packs": s.packs,
            ])
        } else {
            out.info("copied \(result.copied.count) snapshots, skipped \(result.skipped.count) already present; "
                + "transferred \(s.dataBlobs) data and \(s.treeBlobs) tree blobs, \(Format.bytes(s.bytesAdded)) "
                + "(\(Format.bytes(s.bytesStored)) stored in \(s.packs) packs)")
        }
    }
}
