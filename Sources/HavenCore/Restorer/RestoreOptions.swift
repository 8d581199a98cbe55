#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What to do when the restore target already holds an entry with the name being restored.
public enum RestoreOverwrite: String, Sendable, CaseIterable {
    /// Replace every existing file, symlink or special file (the default).
    case always
    /// Replace an existing entry only when it differs from the snapshot: a file whose size or content
    /// (SHA-256 of each chunk) differs, a symlink with another target, an entry of another type. An unchanged
    /// file is kept and only its metadata is restored.
    case ifChanged = "if-changed"
    /// Replace an existing entry only when the snapshot's modification time is later than its own.
    case ifNewer = "if-newer"
    /// Never replace anything that exists.
    case never
}

/// A filter's verdict on one entry of the snapshot.
public enum RestoreSelection: Sendable, Equatable {
    /// Restore the entry; for a directory, also visit its children.
    case restore
    /// Do not restore the entry by itself but visit its children (directories only); the directory is
    /// created anyway when something beneath it is restored. Treated as `skip` for other entries.
    case descend
    /// Skip the entry and everything beneath it.
    case skip
}

/// How a restore runs: where to, what to select, and what to do with existing files.
public struct RestoreOptions: Sendable {
    /// The directory to restore into. It is created (with its parents) when missing. Everything the
    /// restore creates is inside it.
    public var target: String

    /// Glob patterns; when not empty, only matching entries (and everything beneath a matching directory)
    /// are restored, plus the directories leading to them.
    ///
    /// Patterns are matched against the entry's path relative to the snapshot root (components joined by
    /// "/", without a leading "/"). A pattern starting with "/" is anchored at the snapshot root; other
    /// patterns match at any depth. `*`, `?`, `[…]` match within one path component, `**` matches any
    /// number of components, `\` escapes. A pattern that matches a directory matches everything beneath it.
    public var includes: [String]
    /// Glob patterns (same syntax as `includes`); matching entries and everything beneath them are skipped.
    public var excludes: [String]
    /// An additional selector, for callers with their own pattern engine. It gets the entry's path relative
    /// to the snapshot root ('/'-joined raw name bytes, no leading '/') and whether it is a directory. It
    /// can only narrow what `includes`/`excludes` select.
    public var filter: (@Sendable (_ path: [UInt8], _ isDirectory: Bool) -> RestoreSelection)?

    /// What to do with entries that already exist in the target.
    public var overwrite: RestoreOverwrite
    /// Re-read every restored file after writing and check each chunk against its blob ID.
    public var verify: Bool
    /// Restore owner and group (needs root). Defaults to true when running as root.
    public var restoreOwnership: Bool
    /// Plan and count only: nothing in the target is created or changed.
    public var dryRun: Bool

    /// Packs read and written at once.
    public var packConcurrency: Int = 4
    /// Deepest directory nesting accepted; deeper trees are reported as errors.
    public var maxDepth: Int = 1000
    /// Largest byte range read from a pack in one request; a pack's needed blobs are split into ranges
    /// no longer than this (a single larger blob is read alone). Bounds memory per running pack. 8 MiB
    /// (against 16 MiB before) took the peak memory of a restore from S3 from 90 to 74 MB and was no
    /// slower: more, smaller reads keep the four workers busy to the end.
    public var maxReadSize: Int = 8 << 20
    /// Unused bytes between two needed blobs of one pack above which two reads are made instead of one.
    public var maxReadGap: Int = 1 << 20

    /// Creates options for restoring into `target`.
    public init(
        target: String, includes: [String] = [], excludes: [String] = [],
        filter: (@Sendable (_ path: [UInt8], _ isDirectory: Bool) -> RestoreSelection)? = nil,
        overwrite: RestoreOverwrite = .always, verify: Bool = false,
        restoreOwnership: Bool = geteuid() == 0, dryRun: Bool = false
    ) {
        self.target = target
        self.includes = includes
        self.excludes = excludes
        self.filter = filter
        self.overwrite = overwrite
        self.verify = verify
        self.restoreOwnership = restoreOwnership
        self.dryRun = dryRun
    }
}

/// A problem with one entry: what went wrong and where.
public struct RestoreIssue: Sendable, Equatable, CustomStringConvertible {
    /// The entry's path relative to the restore target, raw name bytes joined by "/".
    public var path: [UInt8]
    /// What went wrong, without the path.
    public var message: String

    /// Creates an issue for the entry at `path` (relative to the target, raw bytes).
    public init(path: [UInt8], message: String) {
        self.path = path
        self.message = message
    }

    /// The path for display: UTF-8 when valid, else with Go-style `\x` escapes.
    public var displayPath: String { RestorePath.display(path) }

    /// `"path": message`.
    public var description: String { "\"\(displayPath)\": \(message)" }
}

/// Where a running restore is, passed to the progress callback.
public struct RestoreProgress: Sendable, Equatable {
    /// Regular files finished (written, kept, skipped or failed), and the number planned.
    public var filesDone = 0, filesTotal = 0
    /// File content bytes finished, and the number planned.
    public var bytesDone: UInt64 = 0, bytesTotal: UInt64 = 0
    /// Errors so far.
    public var errors = 0
    /// All zero.
    public init() {}
}

/// What a restore did.
public struct RestoreResult: Sendable {
    /// Regular files whose content was written (hard links not included).
    public var filesRestored = 0
    /// Directories created, or already there and given the snapshot's metadata.
    public var directoriesRestored = 0
    /// Symbolic links created.
    public var symlinksRestored = 0
    /// Additional names created with link() for hard-linked files.
    public var hardLinksRestored = 0
    /// FIFOs and device nodes.
    public var specialFilesRestored = 0
    /// Existing entries left in place by the overwrite policy (unchanged files included).
    public var entriesSkipped = 0
    /// File content bytes restored (holes included).
    public var bytesWritten: UInt64 = 0
    /// Entries that could not be restored or were refused; each names its path.
    public var errors: [RestoreIssue] = []
    /// Problems that did not stop an entry from being restored (e.g. an extended attribute refused by the
    /// file system, a device node that needs root).
    public var warnings: [RestoreIssue] = []
    /// Wall-clock seconds the restore took.
    public var duration: Double = 0
    /// True when the restore only planned (`RestoreOptions.dryRun`).
    public var dryRun = false

    /// An empty result.
    public init() {}

    /// How many entries failed.
    public var failed: Int { errors.count }
    /// Links of both kinds restored.
    public var linksRestored: Int { symlinksRestored + hardLinksRestored }
}

/// Path helpers shared by the planner and the executor.
enum RestorePath {
    static func display(_ path: [UInt8]) -> String {
        if !path.contains(where: { $0 < 0x20 || $0 == 0x7f }), let s = String(validating: path, as: UTF8.self) { return s }
        return String(decoding: GoQuote.quote(path), as: UTF8.self)
    }

    static func join(_ parent: [UInt8], _ name: [UInt8]) -> [UInt8] {
        parent.isEmpty ? name : parent + [UInt8(ascii: "/")] + name
    }

    /// Why a name cannot be created in a directory, or nil when it is acceptable.
    static func invalidNameReason(_ name: [UInt8]) -> String? {
        if name.isEmpty { return "invalid name: empty" }
        if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] {
            return "invalid name: \".\" and \"..\" cannot be created"
        }
        if name.contains(UInt8(ascii: "/")) { return "invalid name: contains \"/\"" }
        if name.contains(0) { return "invalid name: contains a NUL byte" }
        return nil
    }
}
