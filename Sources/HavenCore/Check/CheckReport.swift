/// What `Checker.run` found: problems by severity, damaged objects and counts.
public struct CheckReport: Sendable, CustomStringConvertible {
    /// How serious a finding is; errors sort first.
    public enum Severity: String, Sendable, Comparable {
        /// The repository is damaged: data may be lost or unreadable.
        case error
        /// Something is off but no data is at risk.
        case warning
        /// A suggestion (e.g. space that `prune` could reclaim).
        case hint

        private var rank: Int { self == .error ? 0 : self == .warning ? 1 : 2 }
        /// Errors before warnings before hints.
        public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
    }

    /// One problem, with the message a user sees.
    public struct Finding: Sendable, CustomStringConvertible {
        /// How serious it is.
        public var severity: Severity
        /// What is wrong, naming the objects involved.
        public var message: String
        /// "error: …", "warning: …" or "hint: …".
        public var description: String { "\(severity.rawValue): \(message)" }
        /// A finding with a message.
        public init(_ severity: Severity, _ message: String) { self.severity = severity; self.message = message }
    }

    /// A blob that is damaged or unavailable, with the snapshots that use it.
    public struct DamagedBlob: Sendable, Hashable {
        /// The blob ID.
        public var id: ID
        /// Data or tree.
        public var type: BlobType
        /// The pack it is (or was) stored in.
        public var pack: ID
        /// Snapshots whose trees reach this blob (empty when none does, or when unknown).
        public var snapshots: [ID]
    }

    /// Counts gathered along the way.
    public struct Statistics: Sendable {
        /// Index files that loaded.
        public var indexFiles = 0
        /// Packs named in the index.
        public var packs = 0
        /// Pack files in storage.
        public var packsInStorage = 0
        /// Pack files in storage that no index names.
        public var unreferencedPacks = 0
        /// Snapshots that loaded.
        public var snapshots = 0
        /// Trees loaded and decoded.
        public var trees = 0
        /// Distinct blobs in the index.
        public var blobs = 0
        /// Blobs stored in more than one pack (harmless; `prune` removes the extra copies).
        public var duplicateBlobs = 0
        /// Distinct blobs the snapshots reference.
        public var usedDataBlobs = 0
        /// Distinct tree blobs the snapshots reference.
        public var usedTreeBlobs = 0
        /// Blobs in the index that no snapshot uses (harmless; `prune` removes them).
        public var unusedBlobs = 0
        /// Packs read completely (read-data).
        public var packsRead = 0
        /// Bytes read by read-data.
        public var bytesRead: UInt64 = 0
        /// Blobs decrypted and hashed successfully by read-data.
        public var blobsVerified = 0
    }

    /// Every problem, in the order found.
    public var findings: [Finding] = []
    /// Counts gathered along the way.
    public var statistics = Statistics()
    /// Packs that are missing, have the wrong size or content, or hold damaged blobs; sorted.
    public var damagedPacks: [ID] = []
    /// Blobs found damaged by reading data, or lost with a missing pack.
    public var damagedBlobs: [DamagedBlob] = []

    /// An empty report.
    public init() {}

    /// Messages of the errors.
    public var errors: [String] { findings.filter { $0.severity == .error }.map(\.message) }
    /// Messages of the warnings.
    public var warnings: [String] { findings.filter { $0.severity == .warning }.map(\.message) }
    /// Messages of the hints.
    public var hints: [String] { findings.filter { $0.severity == .hint }.map(\.message) }
    /// True when the repository is damaged; the CLI exits non-zero.
    public var hasErrors: Bool { findings.contains { $0.severity == .error } }

    mutating func error(_ m: String) { findings.append(Finding(.error, m)) }
    mutating func warning(_ m: String) { findings.append(Finding(.warning, m)) }
    mutating func hint(_ m: String) { findings.append(Finding(.hint, m)) }

    /// Every finding, then a summary line.
    public var description: String {
        var lines = findings.map(\.description)
        let s = statistics
        lines.append("checked \(s.indexFiles) index files, \(s.packs) packs, \(s.snapshots) snapshots, \(s.trees) trees"
                     + (s.packsRead > 0 ? ", read \(s.packsRead) packs (\(s.bytesRead) bytes)" : ""))
        let e = errors.count
        lines.append(e == 0 ? "no errors were found" : "\(e) error\(e == 1 ? "" : "s") found")
        return lines.joined(separator: "\n")
    }
}
