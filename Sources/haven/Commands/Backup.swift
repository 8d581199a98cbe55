import ArgumentParser
import Foundation
import HavenCore

struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Back up files and directories into a new snapshot.",
        discussion: """
        Files whose size, mtime, ctime and inode match the parent snapshot (the latest snapshot of the same \
        host and paths, or --parent) are not read again.

        Examples:
          haven -r /srv/backup backup ~/Documents --exclude '*.tmp' --tag daily
          mysqldump db | haven -r /srv/backup backup --stdin --stdin-filename db.sql
          haven -r /srv/backup backup --files-from list.txt --dry-run -v
          haven -r /srv/backup -r /mnt/usb/backup backup ~/Documents

        With several --repo options, each file is read once and stored into every repository (all opened \
        with the same password; they need the same chunker parameters: create the others with \
        `init --copy-chunker-params --from-repo`). A repository that fails is reported and the others still \
        get their snapshot; the exit code is then 1.

        Exit code 3 means the snapshot was saved but some files could not be read (listed as warnings).
        """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Files and directories to back up.", valueName: "PATH"))
    var paths: [String] = []

    @Option(name: [.short, .long], help: ArgumentHelp("Exclude paths matching the pattern (repeatable).", valueName: "PATTERN"))
    var exclude: [String] = []

    @Option(help: ArgumentHelp("Like --exclude, ignoring case.", valueName: "PATTERN"))
    var iexclude: [String] = []

    @Option(help: ArgumentHelp("Read exclude patterns from a file (repeatable).", valueName: "FILE"))
    var excludeFile: [String] = []

    @Option(help: ArgumentHelp("Read case-insensitive exclude patterns from a file.", valueName: "FILE"))
    var iexcludeFile: [String] = []

    @Option(help: ArgumentHelp("Skip directories containing FILE (whose content starts with HEADER, if given).", valueName: "FILE[:HEADER]"))
    var excludeIfPresent: [String] = []

    @Flag(help: "Skip directories containing a valid CACHEDIR.TAG file.")
    var excludeCaches = false

    @Option(help: ArgumentHelp("Skip files larger than SIZE (e.g. 500M, 2G).", valueName: "SIZE"))
    var excludeLargerThan: String?

    @Flag(name: [.customShort("x"), .long], help: "Do not cross file system boundaries.")
    var oneFileSystem = false

    @Option(help: ArgumentHelp("Read paths to back up from a file, one per line (repeatable).", valueName: "FILE"))
    var filesFrom: [String] = []

    @Option(help: ArgumentHelp("Add tags to the snapshot: \"a,b\" or repeat the flag.", valueName: "TAG[,TAG]"))
    var tag: [String] = []

    @Option(name: [.customShort("H"), .long], help: ArgumentHelp("Host name to record (default: this host).", valueName: "HOST"))
    var host: String?

    @Option(help: ArgumentHelp("Use this snapshot as the parent.", valueName: "SNAPSHOT"))
    var parent: String?

    @Flag(name: [.short, .long], help: "Read all files, even unchanged ones.")
    var force = false

    @Flag(help: "Back up standard input as one file.")
    var stdin = false

    @Option(help: ArgumentHelp("File name for --stdin.", valueName: "NAME"))
    var stdinFilename = "stdin"

    @Flag(name: [.customShort("n"), .long], help: "Do everything but write to the repository.")
    var dryRun = false

    @Option(help: ArgumentHelp("Compression: off, auto or max.", valueName: "MODE"))
    var compression = "auto"

    @Option(help: ArgumentHelp("Target pack size in MiB (4 to 128).", valueName: "MiB"))
    var packSize = 16

    @Option(help: ArgumentHelp("Files read in parallel.", valueName: "N"))
    var readConcurrency = 4

    func validate() throws {
        guard (4...128).contains(packSize) else { throw ValidationError("--pack-size must be between 4 and 128 MiB, got \(packSize)") }
        guard CompressionMode(rawValue: compression) != nil else { throw ValidationError("--compression must be off, auto or max, got \"\(compression)\"") }
        guard (1...64).contains(readConcurrency) else { throw ValidationError("--read-concurrency must be between 1 and 64") }
        if stdin && !paths.isEmpty { throw ValidationError("--stdin cannot be combined with paths") }
    }

    func backupOptions(repository: Repository) async throws -> BackupOptions {
        var o = BackupOptions()
        var all = paths
        for file in filesFrom {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw HavenError(.usage, "cannot read --files-from file \(file)")
            }
            all += String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).map(String.init)
                .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        if !stdin && all.isEmpty { throw HavenError(.usage, "nothing to back up: give at least one path, --files-from or --stdin") }
        o.paths = all
        o.excludes = try exclude.map { try PathPattern($0) } + iexclude.map { try PathPattern($0, caseInsensitive: true) }
        for f in excludeFile { o.excludes += try PatternList.load(file: f) }
        for f in iexcludeFile { o.excludes += try PatternList.load(file: f, caseInsensitive: true) }
        for spec in excludeIfPresent {
            if let colon = spec.firstIndex(of: ":") {
                o.excludeIfPresent.append((String(spec[..<colon]), Array(spec[spec.index(after: colon)...].utf8)))
            } else {
                o.excludeIfPresent.append((spec, nil))
            }
        }
        if excludeCaches { o.excludeIfPresent.append(BackupOptions.cacheDirTag) }
        if let s = excludeLargerThan { o.excludeLargerThan = try Format.parseSize(s) }
        o.oneFileSystem = oneFileSystem
        o.tags = tag.flatMap { $0.split(separator: ",").map(String.init) }
        if let host { o.hostname = host }
        if let parent {
            let snaps = try await global.loadSnapshots(repository)
            o.parent = try Repository.resolveSnapshot(parent, in: snaps).id
        }
        o.force = force
        o.dryRun = dryRun
        o.compression = CompressionMode(rawValue: compression)!
        o.packSize = packSize << 20
        o.fileConcurrency = readConcurrency
        o.countTotals = ProgressReporter.shows(global.output)
        if stdin { o.stdinFilename = stdinFilename }
        return o
    }

    func run() async throws {
        if global.repo.count > 1 { return try await runMultiple() }
        let out = global.output
        let repo = try await global.openRepository()
        let options = try await backupOptions(repository: repo)
        let result = try await withRepositoryLock(repo, exclusive: false, global: global) { _ in
            let progress = BackupProgress()
            let reporter = ProgressReporter(output: out, progress: progress)
            let task = Task { await reporter.run() }
            defer { task.cancel() }
            return try await Archiver.backup(repository: repo, options: options, progress: progress)
        }
        for w in result.warnings { out.warning(w.description) }
        report(result, out: out)
        if !result.warnings.isEmpty {
            if !global.json {
                FileHandleOutput.stderr("Warning: at least one source file could not be read")
            }
            throw ExitStatus(code: 3)
        }
    }

    /// `--repo A --repo B …`: every file is read once and stored into each repository. A repository that
    /// cannot be opened or fails during the backup is reported; the others still get their snapshot.
    func runMultiple() async throws {
        let out = global.output
        if parent != nil {
            throw HavenError(.usage, "--parent names a snapshot of one repository; leave it out when backing up into several (each uses its own latest snapshot)")
        }
        let locations = global.repo
        let password = try global.password()
        var repositories: [Repository] = []
        var failures: [(String, HavenError)] = []
        for location in locations {
            do {
                let repo = try await Repository.open(storage: try global.storage(at: location), password: password)
                global.useCache(for: repo)
                try await global.loadIndex(repo)
                repositories.append(repo)
            } catch let e as HavenError {
                if e.code == .usage { throw e }
                failures.append((location, e))
            }
        }
        for (location, e) in failures { out.warning("repository \(location): \(e.description)") }
        guard !repositories.isEmpty else {
            throw HavenError(failures.first?.1.code ?? .fatal, "no repository could be opened; nothing was backed up")
        }
        let options = try await backupOptions(repository: repositories[0])
        let outcomes = try await withRepositoryLocks(repositories[...]) {
            let progress = BackupProgress()
            let reporter = ProgressReporter(output: out, progress: progress)
            let task = Task { await reporter.run() }
            defer { task.cancel() }
            return try await Archiver.backup(repositories: repositories, options: options, progress: progress)
        }
        var warnings: [BackupWarning] = []
        var failed = failures.count
        for o in outcomes {
            if let r = o.result {
                warnings = r.warnings
                if !global.json { out.info("repository \(o.location):") }
                report(r, out: out)
            } else if let e = o.error {
                failed += 1
                out.warning("repository \(o.location): backup failed, no snapshot was saved: \(e.description)")
            }
        }
        for w in warnings { out.warning(w.description) }
        if failed > 0 {
            FileHandleOutput.stderr("haven: \(failed) of \(locations.count) repositories got no snapshot (see the warnings above)")
            throw ExitStatus(code: 1)
        }
        if !warnings.isEmpty {
            if !global.json { FileHandleOutput.stderr("Warning: at least one source file could not be read") }
            throw ExitStatus(code: 3)
        }
    }

    /// Holds a shared lock on every repository while `body` runs.
    func withRepositoryLocks<R: Sendable>(_ repos: ArraySlice<Repository>, _ body: () async throws -> R) async throws -> R {
        guard let first = repos.first else { return try await body() }
        return try await withRepositoryLock(first, exclusive: false, global: global) { _ in
            try await withRepositoryLocks(repos.dropFirst(), body)
        }
    }

    func report(_ r: BackupResult, out: Output) {
        let s = r.summary
        let duration = s.backupEnd.timeInterval - s.backupStart.timeInterval
        if global.json {
            var d: [String: Any] = [
                "message_type": "summary",
                "files_new": s.filesNew, "files_changed": s.filesChanged, "files_unmodified": s.filesUnmodified,
                "dirs_new": s.dirsNew, "dirs_changed": s.dirsChanged, "dirs_unmodified": s.dirsUnmodified,
                "data_blobs": s.dataBlobs, "tree_blobs": s.treeBlobs,
                "data_added": s.dataAdded, "data_added_packed": s.dataAddedPacked,
                "total_files_processed": s.totalFilesProcessed, "total_bytes_processed": s.totalBytesProcessed,
                "total_duration": duration, "dry_run": r.dryRun,
                "errors": r.warnings.map { ["path": $0.path, "message": $0.message] },
            ]
            if let id = r.snapshotID { d["snapshot_id"] = id.hex }
            if let p = r.parent { d["parent"] = p.hex }
            out.printJSON(d)
            return
        }
        if let p = r.parent { out.info("using parent snapshot \(p.short)") }
        out.info("")
        out.info(String(format: "Files:       %5d new, %5d changed, %5d unmodified", s.filesNew, s.filesChanged, s.filesUnmodified))
        out.info(String(format: "Dirs:        %5d new, %5d changed, %5d unmodified", s.dirsNew, s.dirsChanged, s.dirsUnmodified))
        out.info("Added to the repository: \(Format.bytes(s.dataAdded)) (\(Format.bytes(s.dataAddedPacked)) stored)")
        out.info("")
        out.info("processed \(s.totalFilesProcessed) files, \(Format.bytes(s.totalBytesProcessed)) in \(Format.duration(duration))")
        if let id = r.snapshotID {
            out.info("snapshot \(id.short) saved")
        } else if r.dryRun {
            out.info("dry run: nothing was written")
        }
    }
}

/// Prints backup progress: a status line on a terminal, JSON lines with --json, nothing otherwise.
struct ProgressReporter: Sendable {
    let output: Output
    let progress: BackupProgress

    /// Whether `run` prints anything with `output`: only then are the totals worth counting.
    static func shows(_ output: Output) -> Bool {
        output.json || (Terminal.stdoutIsTerminal && !output.quiet)
    }

    func run() async {
        let terminal = Terminal.stdoutIsTerminal && !output.quiet
        guard Self.shows(output) else { return }
        let start = Date()
        var lastBytes: UInt64 = 0
        var lastTime = start
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(output.json ? 1000 : 250))
            if Task.isCancelled { break }
            let s = progress.snapshot
            let now = Date()
            let rate = Double(s.bytesDone - min(lastBytes, s.bytesDone)) / max(now.timeIntervalSince(lastTime), 0.001)
            lastBytes = s.bytesDone
            lastTime = now
            // The ETA uses the average rate since the start, which is steadier than the last interval's.
            let average = Double(s.bytesDone) / max(now.timeIntervalSince(start), 0.001)
            if output.json {
                var d: [String: Any] = ["message_type": "status", "seconds_elapsed": Int(now.timeIntervalSince(start)),
                                        "files_done": s.filesDone, "bytes_done": s.bytesDone, "error_count": s.errors,
                                        "current_files": s.currentFiles, "total_files": s.totalFiles, "total_bytes": s.totalBytes]
                if s.scanDone && s.totalBytes > 0 {
                    d["percent_done"] = min(1.0, Double(s.bytesDone) / Double(s.totalBytes))
                    if average > 0 { d["seconds_remaining"] = Int(Double(s.totalBytes - min(s.bytesDone, s.totalBytes)) / average) }
                }
                output.printJSON(d)
            } else {
                var line = "[\(Format.duration(now.timeIntervalSince(start)))]"
                if s.scanDone && s.totalBytes > 0 {
                    line += String(format: " %.1f%%", min(100.0, 100.0 * Double(s.bytesDone) / Double(s.totalBytes)))
                }
                line += " \(s.filesDone)"
                if s.totalFiles > 0 { line += "/\(s.totalFiles)" }
                line += " files \(Format.bytes(s.bytesDone))"
                if s.totalBytes > 0 { line += "/\(Format.bytes(s.totalBytes))" }
                line += ", \(Format.bytes(UInt64(rate)))/s"
                if s.scanDone && average > 0 && s.totalBytes > s.bytesDone {
                    line += ", ETA \(Format.duration(Double(s.totalBytes - s.bytesDone) / average))"
                }
                if s.errors > 0 { line += ", \(s.errors) errors" }
                if let f = s.currentFiles.first { line += "  " + String(f.suffix(60)) }
                try? FileHandle.standardOutput.write(contentsOf: Data(("\r\u{1b}[2K" + String(line.prefix(Terminal.columns - 1))).utf8))
            }
        }
        if terminal && !output.json { try? FileHandle.standardOutput.write(contentsOf: Data("\r\u{1b}[2K".utf8)) }
    }
}
