import ArgumentParser
import Foundation
import HavenCore
import HavenBackends
import Synchronization

/// Options every command accepts, in restic's spelling.
struct GlobalOptions: ParsableArguments {
    @Option(name: [.customShort("r"), .customLong("repo")], help: ArgumentHelp("Repository location.", valueName: "REPO"))
    var repo: [String] = []

    @Option(help: ArgumentHelp("File to read the repository password from (white space at either end is ignored, as restic does).", valueName: "FILE"))
    var passwordFile: String?

    @Option(help: ArgumentHelp("Shell command whose output is the repository password (white space at either end is ignored).", valueName: "CMD"))
    var passwordCommand: String?

    @Flag(help: "Print results as JSON.")
    var json = false

    @Flag(name: [.short, .long], help: "Print only errors and requested results.")
    var quiet = false

    @Flag(name: [.short, .long], help: "Print more detail (repeat for more).")
    var verbose: Int

    @Flag(help: "Do not lock the repository (read-only commands only).")
    var noLock = false

    @Option(help: ArgumentHelp("Directory of the local metadata cache (default: $HAVEN_CACHE_DIR, $XDG_CACHE_HOME/haven or ~/.cache/haven; "
                               + "a local repository is cached only with this option).", valueName: "DIR"))
    var cacheDir: String?

    @Flag(help: "Do not use a local metadata cache.")
    var noCache = false

    @Option(name: [.customShort("o"), .customLong("option")],
            help: ArgumentHelp("Backend option: s3.storage-class=CLASS, sftp.command=CMD, local|s3|sftp.connections=N (repeatable).",
                               valueName: "KEY=VALUE"))
    var backendOptions: [String] = []

    @Option(parsing: .unconditional,
            help: ArgumentHelp("Limit uploads to a maximum rate in KiB/s (default: unlimited).", valueName: "KiB/s"))
    var limitUpload: Int?

    @Option(parsing: .unconditional,
            help: ArgumentHelp("Limit downloads to a maximum rate in KiB/s (default: unlimited).", valueName: "KiB/s"))
    var limitDownload: Int?

    func validate() throws {
        for (flag, value) in [("--limit-upload", limitUpload), ("--limit-download", limitDownload)] {
            if let value, value <= 0 {
                throw ValidationError("\(flag) must be a positive rate in KiB/s, got \(value); e.g. \(flag) 1024 for 1 MiB/s (leave it out for no limit)")
            }
        }
        if noCache && cacheDir != nil {
            throw ValidationError("use either --cache-dir or --no-cache, not both")
        }
    }

    static let valueOptions: Set<String> = ["-r", "--repo", "--password-file", "--password-command", "--cache-dir", "-o", "--option",
                                            "--limit-upload", "--limit-download"]
    static let flagOptions: Set<String> = ["--json", "-q", "--quiet", "-v", "--verbose", "--no-lock", "--no-cache"]

    /// `-v`, `-vv`, `-vvv`… (checked by hand: a Foundation regular expression costs ~1 ms at every start).
    static func isVerbosity(_ a: String) -> Bool {
        let u = a.utf8
        return u.count >= 2 && u.first == UInt8(ascii: "-") && u.dropFirst().allSatisfy { $0 == UInt8(ascii: "v") }
    }

    /// Moves global options written before the command name to the end (before any `--`), so that
    /// `haven -r REPO snapshots` parses like `haven snapshots -r REPO`.
    static func reorder(_ args: [String]) -> [String] {
        var globals: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if valueOptions.contains(a), i + 1 < args.count {
                globals += [a, args[i + 1]]
                i += 2
            } else if let eq = a.firstIndex(of: "="), valueOptions.contains(String(a[..<eq])) {
                globals.append(a)
                i += 1
            } else if flagOptions.contains(a) || isVerbosity(a) {
                globals.append(a)
                i += 1
            } else {
                break
            }
        }
        guard !globals.isEmpty else { return args }
        var rest = Array(args[i...])
        // A nested command (`key list`) must come before the options.
        var insertAt = rest.firstIndex(of: "--") ?? rest.count
        if rest.isEmpty { return args }
        if rest.first == "key", rest.count >= 2, !rest[1].hasPrefix("-") { insertAt = min(insertAt, 2) } else { insertAt = min(insertAt, 1) }
        rest.insert(contentsOf: globals, at: insertAt)
        return rest
    }

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// The repository location from the flag or the environment.
    func repositoryLocation() throws -> String {
        if let r = repo.first { return r }
        if let r = environment["HAVEN_REPOSITORY"] ?? environment["RESTIC_REPOSITORY"], !r.isEmpty { return r }
        throw HavenError(.usage, "no repository given: use -r/--repo or set HAVEN_REPOSITORY")
    }

    static func storage(for location: String, options: [String: String] = [:]) throws -> any Storage {
        try Backends.open(location, options: options)
    }

    /// How every storage this command opens is wrapped: retries (logged with -v), --limit-upload/--limit-download.
    var decorations: Backends.Decorations {
        let out = output
        return Backends.Decorations(
            retryLog: { line in if out.verbose > 0 { out.warning(line) } },
            uploadBytesPerSecond: limitUpload.map { $0 * 1024 }, downloadBytesPerSecond: limitDownload.map { $0 * 1024 })
    }

    /// The storage at `location` with this command's -o options, retries and rate limits. It is closed
    /// when the command ends (`OpenedStorages`).
    func storage(at location: String) throws -> any Storage {
        let storage = try Backends.open(location, options: try Backends.parseOptions(backendOptions), decorations: decorations)
        OpenedStorages.add(storage)
        return storage
    }

    func storage() throws -> any Storage {
        try storage(at: try repositoryLocation())
    }

    /// The password from (in order) --password-command, --password-file, the environment, or a prompt.
    func password(prompt: String = "enter password for repository: ", confirm: Bool = false) throws -> String {
        if let cmd = passwordCommand { return try PasswordText.fromCommand(cmd) }
        let file = passwordFile ?? environment["HAVEN_PASSWORD_FILE"] ?? environment["RESTIC_PASSWORD_FILE"]
        if let file { return try PasswordText.fromFile(file) }
        if let pw = environment["HAVEN_PASSWORD"] ?? environment["RESTIC_PASSWORD"] { return pw }
        guard isatty(0) == 1 || FileManager.default.isReadableFile(atPath: "/dev/tty") && isatty(2) == 1 else {
            throw HavenError(.usage, "no password given: use --password-file, HAVEN_PASSWORD_FILE or HAVEN_PASSWORD (no terminal to ask on)")
        }
        let pw = try Terminal.readPassword(prompt)
        if confirm {
            let again = try Terminal.readPassword("enter password again: ")
            guard again == pw else { throw HavenError(.usage, "passwords do not match") }
        }
        guard !pw.isEmpty else { throw HavenError(.usage, "an empty password is not allowed") }
        return pw
    }

    /// Opens the repository with its cache; loads the index (and cleans the cache) unless `index` is false.
    func openRepository(index: Bool = true) async throws -> Repository {
        let storage = try storage()
        let repo = try await Repository.open(storage: storage, password: try password())
        useCache(for: repo)
        if index { try await loadIndex(repo) }
        return repo
    }

    /// Loads the index, then drops what the cache holds that the index no longer names.
    func loadIndex(_ repo: Repository) async throws {
        try await repo.loadIndex()
        repo.cleanCache()
    }

    /// Where the cache lives for `repo`: nil with --no-cache, for a local repository without --cache-dir
    /// (reading it is as cheap as reading a cache), or when no base directory is known.
    func cacheBase(for repo: Repository) -> String? {
        guard wantsCache(repo) else { return nil }
        return cacheDir ?? RepositoryCache.defaultBase(environment: environment)
    }

    private func wantsCache(_ repo: Repository) -> Bool {
        if noCache { return false }
        if cacheDir != nil { return true }
        let base = undecorated(repo.storage)
        return !(base is LocalStorage || base is MemoryStorage)
    }

    /// Gives `repo` its cache (see `cacheBase`). A cache that cannot be created is a warning, never an error.
    func useCache(for repo: Repository) {
        guard let base = cacheBase(for: repo) else { return }
        let out = output
        do {
            repo.useCache(try RepositoryCache(base: base, repositoryID: repo.config.id, warning: { out.warning($0) }))
        } catch {
            out.warning("cannot use the cache directory \(base): \(error); continuing without a cache")
        }
    }

    /// Gives `repo` a new, empty cache that `body` uses and that is removed afterwards (for `check`, which
    /// must read the repository itself, not an earlier copy).
    func withTemporaryCache<R>(for repo: Repository, _ body: () async throws -> R) async rethrows -> R {
        guard wantsCache(repo) else { return try await body() }
        let out = output
        let base = cacheDir ?? RepositoryCache.defaultBase(environment: environment)
        let cache: RepositoryCache
        do {
            cache = try RepositoryCache.temporary(in: base, warning: { out.warning($0) })
        } catch {
            out.warning("cannot create a temporary cache in \(base ?? NSTemporaryDirectory()): \(error); continuing without a cache")
            return try await body()
        }
        let previous = repo.cache
        repo.useCache(cache)
        defer {
            repo.useCache(previous)
            cache.removeAll()
        }
        return try await body()
    }

    var output: Output { Output(json: json, quiet: quiet, verbose: verbose) }
}

enum Terminal {
    /// Reads a line from /dev/tty with echo turned off.
    static func readPassword(_ prompt: String) throws -> String {
        let fd = open("/dev/tty", O_RDWR)
        guard fd >= 0 else { throw HavenError(.usage, "no terminal to ask for the password; use --password-file") }
        defer { close(fd) }
        _ = prompt.withCString { write(fd, $0, strlen($0)) }
        var old = termios()
        tcgetattr(fd, &old)
        var noEcho = old
        noEcho.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(fd, TCSAFLUSH, &noEcho)
        defer {
            tcsetattr(fd, TCSAFLUSH, &old)
            _ = "\n".withCString { write(fd, $0, 1) }
        }
        var bytes: [UInt8] = []
        var c: UInt8 = 0
        while read(fd, &c, 1) == 1 && c != 10 && c != 13 { bytes.append(c) }
        return String(decoding: bytes, as: UTF8.self)
    }

    static var stdoutIsTerminal: Bool { isatty(1) == 1 }

    /// The terminal's width (80 when unknown), so a status line never wraps.
    static var columns: Int {
        var ws = winsize()
        if ioctl(1, UInt(TIOCGWINSZ), &ws) == 0, ws.ws_col > 10 { return Int(ws.ws_col) }
        return 80
    }
}

/// The storages a command opened, closed before it exits: an SFTP session ends and its ssh is reaped
/// (rather than left running, orphaned, after the command), S3's HTTP client shuts down.
enum OpenedStorages {
    private static let opened = Mutex<[any Storage]>([])

    static func add(_ storage: any Storage) {
        opened.withLock { $0.append(storage) }
    }

    static func closeAll() async {
        let all = opened.withLock { list in
            defer { list = [] }
            return list
        }
        for storage in all { await Backends.close(storage) }
    }
}
