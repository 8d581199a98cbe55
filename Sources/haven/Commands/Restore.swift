import ArgumentParser
import Foundation
import HavenCore

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a snapshot (or part of it) into a directory.",
        discussion: """
        The snapshot's absolute paths are recreated below the target: restoring a backup of \
        /home/me/docs into /tmp/r creates /tmp/r/home/me/docs. With SNAPSHOT:SUBPATH only that subtree is \
        restored, directly into the target.

        Nothing outside the target is ever created or changed, whatever the snapshot contains: entries with \
        unsafe names are reported as errors and skipped.

        Examples:
          haven -r /srv/backup restore latest --target /tmp/restore
          haven -r /srv/backup restore 1a2b3c4d:/home/me/docs --target ~/docs-back --verify
          haven -r /srv/backup restore latest --target / --include /etc/nginx --overwrite if-changed
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: SnapshotFilter

    @Argument(help: ArgumentHelp("Snapshot ID, prefix or \"latest\", optionally with :SUBPATH.", valueName: "SNAPSHOT[:SUBPATH]"))
    var snapshot: String

    @Option(name: [.short, .long], help: ArgumentHelp("Directory to restore into (created if missing).", valueName: "DIR"))
    var target: String?

    @Option(name: [.short, .long], help: ArgumentHelp("Restore only paths matching the pattern (repeatable).", valueName: "PATTERN"))
    var include: [String] = []

    @Option(name: [.short, .long], help: ArgumentHelp("Do not restore paths matching the pattern (repeatable).", valueName: "PATTERN"))
    var exclude: [String] = []

    @Flag(help: "Re-read every restored file and compare it with the snapshot.")
    var verify = false

    @Option(help: ArgumentHelp("When a file exists: always, if-changed, if-newer or never.", valueName: "POLICY"))
    var overwrite = "always"

    @Flag(name: [.customShort("n"), .long], help: "Show what would be restored without writing anything.")
    var dryRun = false

    func validate() throws {
        guard target?.isEmpty == false else { throw ValidationError("missing --target: say where to restore to") }
        guard RestoreOverwrite(rawValue: overwrite) != nil else {
            throw ValidationError("--overwrite must be always, if-changed, if-newer or never, got \"\(overwrite)\"")
        }
    }

    func run() async throws {
        let out = global.output
        let repo = try await global.openRepository()
        var name = snapshot
        var subpath = ""
        if let colon = snapshot.firstIndex(of: ":") {
            name = String(snapshot[..<colon])
            subpath = String(snapshot[snapshot.index(after: colon)...])
        }
        let result = try await withRepositoryLock(repo, exclusive: false, global: global, readOnly: true) { _ in
            let snap = try await global.findSnapshot(name, in: repo, filter: filter)
            // Patterns are written as absolute snapshot paths (restic's form); the engine matches from the root.
            var options = RestoreOptions(target: target!, includes: include, excludes: exclude,
                                         overwrite: RestoreOverwrite(rawValue: overwrite)!, verify: verify, dryRun: dryRun)
            // Reading a local pack in smaller pieces costs nothing and keeps memory down; remote stores get
            // fewer, larger requests.
            if undecorated(repo.storage) is LocalStorage {
                options.maxReadSize = 4 << 20
                options.packConcurrency = 2
            }
            out.info("restoring snapshot \(snap.id!.short) of \(snap.paths.joined(separator: ", ")) at \(snap.time.display) to \(target!)")
            let plan = try await Restorer.plan(repository: repo, tree: snap.tree, subpath: subpath, options: options)
            let reporter = RestoreReporter(output: out, total: plan.totalBytes)
            let task = Task { await reporter.run() }
            defer { task.cancel() }
            var result = try await Restorer.execute(plan, repository: repo, progress: { p in reporter.update(p) })
            if verify && !dryRun {
                let issues = try await Restorer.verify(plan, repository: repo)
                result.errors += issues
                out.info("verified \(plan.fileCount) files: \(issues.isEmpty ? "all match the snapshot" : "\(issues.count) differ")")
            }
            return result
        }
        for w in result.warnings { out.warning(w.description) }
        for e in result.errors { FileHandleOutput.stderr("error: \(e.description)") }
        if global.json {
            out.printJSON([
                "message_type": "summary", "files_restored": result.filesRestored, "dirs_restored": result.directoriesRestored,
                "links_restored": result.linksRestored, "special_restored": result.specialFilesRestored,
                "bytes_restored": result.bytesWritten, "errors": result.errors.count, "skipped": result.entriesSkipped,
                "total_duration": result.duration, "dry_run": result.dryRun,
            ])
        } else {
            let verb = result.dryRun ? "would restore" : "restored"
            out.info("\(verb) \(result.filesRestored) files, \(result.directoriesRestored) directories, \(result.linksRestored) links, \(Format.bytes(result.bytesWritten)) in \(Format.duration(result.duration))")
        }
        if !result.errors.isEmpty {
            throw HavenError(.fatal, "restore finished with \(result.errors.count) errors (listed above)")
        }
    }
}

/// Restore progress on a terminal.
final class RestoreReporter: Sendable {
    let output: Output
    let total: UInt64
    let latest = Locked(RestoreProgress())

    init(output: Output, total: UInt64) { self.output = output; self.total = total }

    func update(_ p: RestoreProgress) { latest.withLock { $0 = p } }

    func run() async {
        guard Terminal.stdoutIsTerminal, !output.quiet, !output.json else { return }
        let start = Date()
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(250))
            if Task.isCancelled { break }
            let p = latest.withLock { $0 }
            let elapsed = Date().timeIntervalSince(start)
            var line = "[\(Format.duration(elapsed))] \(p.filesDone)/\(p.filesTotal) files \(Format.bytes(p.bytesDone))/\(Format.bytes(p.bytesTotal))"
            if p.bytesDone > 0 && p.bytesTotal > p.bytesDone {
                line += ", ETA \(Format.duration(Double(p.bytesTotal - p.bytesDone) / (Double(p.bytesDone) / elapsed)))"
            }
            try? FileHandle.standardOutput.write(contentsOf: Data(("\r\u{1b}[2K" + String(line.prefix(Terminal.columns - 1))).utf8))
        }
        try? FileHandle.standardOutput.write(contentsOf: Data("\r\u{1b}[2K".utf8))
    }
}
