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
    ]

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
            out[key] = String(item[item.index(after: eq)...])
        }
        return out
    }

    static func isKnownOption(_ key: String) -> Bool { knownOptions[key] != nil }

    /// The storage for `location`. Remote backends own network resources: release them with `close(_:)`.
    public static func open(_ location: String, options: [String: String] = [:],
                            environment: [String: String] = ProcessInfo.processInfo.environment) throws -> any Storage {
        if location.hasPrefix("s3:") {
            return try S3Storage(url: location, environment: environment, storageClass: options["s3.storage-class"])
        }
        if location.hasPrefix("sftp:") {
            let command = try options["sftp.command"].map(splitCommand)
            return try SFTPStorage(url: location, command: command)
        }
        for scheme in ["rest", "b2", "azure", "gs", "rclone", "swift"] where location.hasPrefix(scheme + ":") {
            throw HavenError(.unsupported, "\(scheme): repositories are not supported; Haven supports local paths, s3: and sftp:")
        }
        var path = location
        if path.hasPrefix("local:") { path.removeFirst(6) }
        guard !path.isEmpty else { throw HavenError(.usage, "empty repository path") }
        if path.hasPrefix("~/"), let home = environment["HOME"] { path = home + path.dropFirst(1) }
        return LocalStorage(path: path)
    }

    /// Releases what a remote backend holds (HTTP clients, SSH processes). Safe on any storage.
    public static func close(_ storage: any Storage) async {
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
