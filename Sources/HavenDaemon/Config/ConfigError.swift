/// One problem in a config file, located by line, column and key path.
public struct ConfigIssue: Sendable, Hashable, CustomStringConvertible {
    public enum Severity: String, Sendable, Hashable {
        case error, warning
    }

    public var severity: Severity
    /// 1-based; 0 when the problem concerns the file as a whole.
    public var line: Int
    /// 1-based; 0 when unknown.
    public var column: Int
    /// Where in the document, e.g. `backups.documents.schedules[1]`; empty for the whole file.
    public var keyPath: String
    /// What is wrong and what to do about it.
    public var message: String

    public init(severity: Severity = .error, line: Int, column: Int, keyPath: String, message: String) {
        self.severity = severity; self.line = line; self.column = column
        self.keyPath = keyPath; self.message = message
    }

    /// `line:column: keyPath: message` (parts that are unknown are left out; warnings say so).
    public var description: String {
        var s = ""
        if line > 0 { s += "\(line):\(column): " }
        if severity == .warning { s += "warning: " }
        if !keyPath.isEmpty { s += "\(keyPath): " }
        return s + message
    }
}

/// A config file that cannot be used; `issues` lists every error found (not just the first), sorted by
/// position.
public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The config file's path as given.
    public var path: String
    public var issues: [ConfigIssue]

    public init(path: String, issues: [ConfigIssue]) {
        self.path = path
        self.issues = issues.sorted { ($0.line, $0.column) < ($1.line, $1.column) }
    }

    /// One `path:line:column: keyPath: message` line per issue.
    public var description: String {
        issues.map { "\(path):\($0.description)" }.joined(separator: "\n")
    }
}
