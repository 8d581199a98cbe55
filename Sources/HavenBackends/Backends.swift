import Foundation
import HavenCore
import HavenStorageS3
import HavenStorageSFTP

/// Turns a repository location as restic writes it into a storage backend.
///
/// - `/path`, `local:/path`, `~/path`: a local directory;
/// - `s3:https://host[:port]/bucket[/prefix]`, `s3:http://…`, `s3:s3.amazonaws.com/bucket`: S3-compatible storage;
/// - `sftp:user@host:/path`, `sftp://user@host:port/path`: a directory on an SSH server.
public enum Backends {
    /// The `-o KEY=VALUE` options Haven knows, with what each does (for error messages and help).
    public static let knownOptions: [String: String] = [
        "s3.storage-class": "storage class of data packs, e.g. STANDARD_IA",
        "sftp.command": "command that starts the SFTP session, replacing `ssh HOST -s sftp`",
        "local.connections": "parallel file operations on a local repository (default 2)",
        "s3.connections": "parallel S3 requests (default 5)",
        "sftp.connections": "parallel SFTP operations",
    ]

    /// The `*.connections` options, which take a count.
    static let connectionOptions: Set<String> = ["local.connections", "s3.connections", "sftp.connections"]

    /// Parses `-o key=value` options; unknown keys are an error naming the known ones.
    public static func parseOptions(_ list: [String]) throws -> [String: String] {
        var out: [String: String] = [:]
        for item in list {
            guard let eq = item.firstIndex(of: "=") else {
                throw HavenError(.usage, "invalid -o \"\(item)\": use KEY=VALUE, e.g. -o s3.storage-class=STANDARD_IA")
            }
            let key = String(item[..<eq])
            guard isKnownOption(key) else {
                throw HavenError(.usage, "unknown -o option \"\(key)\": known options are \(knownOptions.keys.sorted().joined(separator: ", "))")
            }
            let value = String(item[item.index(after: eq)...])
            if connectionOptions.contains(key) {
                guard let n = Int(value), (1...128).contains(n) else {
                    throw HavenError(.usage, "invalid -o \(key)=\(value): give a number of connections from 1 to 128, e.g. -o \(key)=4")
                }
            }
            out[key] = value
        }
        return out
    }

    static func isKnownOption(_ key: String) -> Bool { knownOptions[key] != nil }

    /// How `open` wraps a backend: retries of transient failures, transfer rate limits.
    public struct Decorations: Sendable {
        /// nil: no retries (failures surface at once).
        public var retry: RetryPolicy?
        /// Called with one line per retry (the CLI prints it as a warning with --verbose).
        public var retryLog: @Sendable (String) -> Void
        /// Bytes per second; nil means unlimited.
        public var uploadBytesPerSecond: Int?
        public var downloadBytesPerSecond: Int?

        public init(retry: RetryPolicy? = RetryPolicy(), retryLog: @escaping @Sendable (String) -> Void = { _ in },
                    uploadBytesPerSecond: Int? = nil, downloadBytesPerSecond: Int? = nil) {
            self.retry = retry
            self.retryLog = retryLog
            self.uploadBytesPerSecond = uploadBytesPerSecond
            self.downloadBytesPerSecond = downloadBytesPerSecond
        }
    }

    /// The storage for `location`. Remote backends own network resources: release them with `close(_:)`.
    ///
    /// The backend is wrapped, innermost first, in: the rate limiter (so the bytes are counted next to the
    /// transfer, each attempt again), the connection limit (`-o *.connections`), and the retrying storage
    /// (outermost, so a retry waits for a connection and for its bytes like any other request).
    public static func open(_ location: String, options: [String: String] = [:],
                            environment: [String: String] = ProcessInfo.processInfo.environment,
                            decorations: Decorations = Decorations()) throws -> any Storage {
        let (base, connectionKey) = try openBase(location, options: options, environment: environment,
                                                 retrying: decorations.retry != nil)
        var storage: any Storage = base
        if decorations.uploadBytesPerSecond != nil || decorations.downloadBytesPerSecond != nil {
            storage = RateLimitedStorage(storage, uploadBytesPerSecond: decorations.uploadBytesPerSecond,
                                         downloadBytesPerSecond: decorations.downloadBytesPerSecond)
        }
        if let n = options[connectionKey].flatMap({ Int($0) }) {
            storage = ConcurrencyLimitedStorage(storage, connections: n)
        }
        if let policy = decorations.retry {
            storage = RetryingStorage(storage, policy: policy, log: decorations.retryLog)
        }
        return storage
    }

    /// The bare backend and the name of its `-o *.connections` option.
    static func openBase(_ location: String, options: [String: String], environment: [String: String],
                         retrying: Bool) throws -> (any Storage, String) {
        if location.hasPrefix("s3:") {
            // With the retry decorator in place, S3Storage makes one attempt per request (no double retries).
            let connections = options["s3.connections"].flatMap { Int($0) } ?? 5
            return (try S3Storage(url: location, environment: environment, storageClass: options["s3.storage-class"],
                                  connections: connections, maxAttempts: retrying ? 1 : 3), "s3.connections")
        }
        if location.hasPrefix("sftp:") {
            let command = try options["sftp.command"].map(splitCommand)
            let connections = options["sftp.connections"].flatMap { Int($0) } ?? 5
            return (try SFTPStorage(url: location, command: command, connections: connections), "sftp.connections")
        }
        for scheme in ["rest", "b2", "azure", "gs", "rclone", "swift"] where location.hasPrefix(scheme + ":") {
            throw HavenError(.unsupported, "\(scheme): repositories are not supported; Haven supports local paths, s3: and sftp:")
        }
        var path = location
        if path.hasPrefix("local:") { path.removeFirst(6) }
        guard !path.isEmpty else { throw HavenError(.usage, "empty repository path") }
        if path.hasPrefix("~/"), let home = environment["HOME"] { path = home + path.dropFirst(1) }
        return (LocalStorage(path: path), "local.connections")
    }

    /// Releases what a remote backend holds (HTTP clients, SSH processes). Safe on any storage, decorated or not.
    public static func close(_ storage: any Storage) async {
        let storage = undecorated(storage)
        if let s3 = storage as? S3Storage { try? await s3.shutdown() }
        if let sftp = storage as? SFTPStorage { await sftp.close() }
    }

    /// Splits a command line on whitespace, honouring single and double quotes (no other shell syntax).
    public static func splitCommand(_ line: String) throws -> [String] {
        var words: [String] = []
        var current = ""
        var inWord = false
        var quote: Character?
        for c in line {
            if let q = quote {
                if c == q { quote = nil } else { current.append(c) }
            } else if c == "'" || c == "\"" {
                quote = c
                inWord = true
            } else if c == " " || c == "\t" {
                if inWord { words.append(current); current = ""; inWord = false }
            } else {
                current.append(c)
                inWord = true
            }
        }
        guard quote == nil else { throw HavenError(.usage, "unbalanced quote in command: \(line)") }
        if inWord { words.append(current) }
        guard !words.isEmpty else { throw HavenError(.usage, "empty command") }
        return words
    }
}
