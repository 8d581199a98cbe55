/// Which packs `check` reads completely (restic's `--read-data` / `--read-data-subset`).
public enum ReadDataSelection: Sendable, Equatable {
    /// Check structure only.
    case none
    /// Read every pack.
    case all
    /// Subset n of t (1 ≤ n ≤ t): packs whose first ID byte modulo t is n-1. Running n = 1…t covers every pack once.
    case subset(Int, of: Int)
    /// A random sample of this percentage (0 < p ≤ 100) of the packs.
    case percent(Double)
    /// Random packs until at least this many bytes are selected.
    case bytes(UInt64)

    /// Parses restic's `--read-data-subset` forms: `"n/t"`, `"x%"` or a size such as `"500M"` (binary units
    /// k, m, g, t). Throws `.invalidArgument` otherwise.
    public static func parse(_ text: String) throws -> ReadDataSelection {
        let s = text.filter { $0 != " " }
        func bad(_ why: String) -> HavenError {
            HavenError(.invalidArgument, "invalid read-data subset \"\(text)\": \(why); use n/t (e.g. 1/5), a percentage (e.g. 10%) or a size (e.g. 500M)")
        }
        if let slash = s.firstIndex(of: "/") {
            guard let n = Int(s[..<slash]), let t = Int(s[s.index(after: slash)...]) else { throw bad("n and t must be numbers") }
            let sel = ReadDataSelection.subset(n, of: t)
            try sel.validate()
            return sel
        }
        if s.hasSuffix("%") {
            guard let p = Double(s.dropLast()), p.isFinite else { throw bad("the percentage is not a number") }
            let sel = ReadDataSelection.percent(p)
            try sel.validate()
            return sel
        }
        guard let bytes = parseSize(s) else { throw bad("not a size") }
        let sel = ReadDataSelection.bytes(bytes)
        try sel.validate()
        return sel
    }

    /// Throws `.invalidArgument` for a subset, percentage or size out of range.
    public func validate() throws {
        switch self {
        case .none, .all: return
        case .subset(let n, let t):
            guard t >= 1, n >= 1, n <= t else {
                throw HavenError(.invalidArgument, "read-data subset \(n)/\(t) is out of range: need 1 ≤ n ≤ t")
            }
        case .percent(let p):
            guard p > 0, p <= 100 else {
                throw HavenError(.invalidArgument, "read-data percentage \(p)% is out of range: need more than 0 and at most 100")
            }
        case .bytes(let b):
            guard b > 0 else { throw HavenError(.invalidArgument, "read-data size must be more than 0 bytes") }
        }
    }
}

/// Parses a byte size with an optional binary unit: `"123"`, `"4k"`, `"500M"`, `"2G"`, `"1T"` (a trailing
/// `B` or `iB` is accepted). nil when malformed or too large.
func parseSize(_ text: String) -> UInt64? {
    var s = Substring(text)
    if s.hasSuffix("iB") || s.hasSuffix("ib") { s = s.dropLast(2) } else if s.hasSuffix("B") || s.hasSuffix("b") { s = s.dropLast() }
    var shift: UInt64 = 0
    switch s.last {
    case "k", "K": shift = 10
    case "m", "M": shift = 20
    case "g", "G": shift = 30
    case "t", "T": shift = 40
    default: break
    }
    if shift != 0 { s = s.dropLast() }
    guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }), let n = UInt64(s) else { return nil }
    let (v, overflow) = n.multipliedReportingOverflow(by: 1 << shift)
    return overflow ? nil : v
}

/// What `Checker.run` does.
public struct CheckOptions: Sendable {
    /// Which packs to read and verify completely, beyond the structure check.
    public var readData: ReadDataSelection
    /// Packs read at once with `readData` (each is held in memory while it is verified).
    public var concurrency: Int
    /// Bytes of a pack read at once while verifying it (tests make it small).
    var readWindow = Checker.readWindow

    /// Structure check only by default; `concurrency` is clamped to at least 1.
    public init(readData: ReadDataSelection = .none, concurrency: Int = 4) {
        self.readData = readData
        self.concurrency = max(1, concurrency)
    }
}

/// Progress of a check, reported as each item finishes.
public struct CheckProgress: Sendable {
    /// The step being worked on; the raw value is a label for display.
    public enum Phase: String, Sendable {
        case indexes = "loading indexes"
        case packs = "checking packs"
        case snapshots = "loading snapshots"
        case trees = "checking snapshots, trees and blobs"
        case readData = "reading all data"
    }
    /// The current step.
    public var phase: Phase
    /// Items of this step finished so far.
    public var done: Int
    /// nil when not known in advance (trees).
    public var total: Int?
    /// Bytes read so far in `.readData`.
    public var bytes: UInt64 = 0
}
