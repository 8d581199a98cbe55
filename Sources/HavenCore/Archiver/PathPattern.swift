#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// restic's exclude/include patterns: a pattern is split at `/` into parts, each matched against one path
/// component with shell globbing (`*`, `?`, `[…]`); `**` matches any number of components. A pattern
/// matches when its parts match a run of consecutive components of the path, so `*.tmp` matches a file
/// of that name anywhere, and a pattern starting with `/` is anchored at the root.
public struct PathPattern: Sendable, Hashable, CustomStringConvertible {
    public let text: String
    let parts: [[UInt8]]
    let caseInsensitive: Bool

    public init(_ text: String, caseInsensitive: Bool = false) throws {
        var t = text
        // restic expands $VAR and ~ in patterns; we take them literally except a leading ~/.
        if t.hasPrefix("~/"), let home = getenv("HOME") { t = String(cString: home) + t.dropFirst(1) }
        while t.count > 1 && t.hasSuffix("/") { t.removeLast() }
        guard !t.isEmpty else { throw HavenError(.invalidArgument, "empty pattern") }
        self.text = text
        self.caseInsensitive = caseInsensitive
        let source = caseInsensitive ? t.lowercased() : t
        var parts = source.split(separator: "/", omittingEmptySubsequences: false).map { Array($0.utf8) }
        // Collapse consecutive empty parts ("a//b") except the leading one that anchors at the root.
        parts = parts.enumerated().filter { $0.offset == 0 || !$0.element.isEmpty }.map(\.element)
        for p in parts where !p.isEmpty {
            guard Self.fnmatchValid(p) else { throw HavenError(.invalidArgument, "invalid pattern \"\(text)\": unbalanced [ or trailing \\") }
        }
        self.parts = parts
    }

    public var description: String { text }

    /// Whether the pattern matches `path` (absolute or relative, components separated by `/`).
    public func matches(_ path: [UInt8]) -> Bool {
        let p = caseInsensitive ? Array(String(decoding: path, as: UTF8.self).lowercased().utf8) : path
        let comps = p.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map { Array($0) }
        return Self.match(parts[...], comps[...], anchored: false)
    }

    public func matches(_ path: String) -> Bool { matches(Array(path.utf8)) }

    /// Whether something beneath directory `path` could match (the path is a possible prefix of a match),
    /// so that a walk for includes knows to descend into it.
    public func childMayMatch(_ path: [UInt8]) -> Bool {
        let p = caseInsensitive ? Array(String(decoding: path, as: UTF8.self).lowercased().utf8) : path
        let comps = p.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map { Array($0) }
        if parts.first?.isEmpty == false { return true }  // unanchored: may match anywhere below
        return Self.prefixMatches(parts[...], comps[...])
    }

    private static func prefixMatches(_ pattern: ArraySlice<[UInt8]>, _ comps: ArraySlice<[UInt8]>) -> Bool {
        guard let c = comps.first else { return true }
        guard let first = pattern.first else { return true }
        if first == Array("**".utf8) { return true }
        guard componentMatches(first, c) else { return false }
        return prefixMatches(pattern.dropFirst(), comps.dropFirst())
    }

    private static func match(_ pattern: ArraySlice<[UInt8]>, _ comps: ArraySlice<[UInt8]>, anchored: Bool) -> Bool {
        if !anchored {
            // Try every starting component.
            var start = comps.startIndex
            while start <= comps.endIndex {
                if matchHere(pattern, comps[start...]) { return true }
                start += 1
            }
            return false
        }
        return matchHere(pattern, comps)
    }

    /// Matches `pattern` against the components starting at the first one; the path may go on after the
    /// pattern ends (a pattern naming a directory matches everything beneath it).
    private static func matchHere(_ pattern: ArraySlice<[UInt8]>, _ comps: ArraySlice<[UInt8]>) -> Bool {
        guard let first = pattern.first else { return true }
        if first == Array("**".utf8) {
            let rest = pattern.dropFirst()
            var i = comps.startIndex
            while i <= comps.endIndex {
                if matchHere(rest, comps[i...]) { return true }
                i += 1
            }
            return false
        }
        guard let c = comps.first else { return false }
        guard componentMatches(first, c) else { return false }
        return matchHere(pattern.dropFirst(), comps.dropFirst())
    }

    static func componentMatches(_ pattern: [UInt8], _ name: [UInt8]) -> Bool {
        if pattern.isEmpty || name.isEmpty { return pattern == name }
        return (pattern + [0]).withUnsafeBufferPointer { p in
            (name + [0]).withUnsafeBufferPointer { n in
                p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: p.count) { pc in
                    n.baseAddress!.withMemoryRebound(to: CChar.self, capacity: n.count) { nc in
                        fnmatch(pc, nc, 0) == 0
                    }
                }
            }
        }
    }

    private static func fnmatchValid(_ p: [UInt8]) -> Bool {
        var depth = 0
        var i = 0
        while i < p.count {
            if p[i] == UInt8(ascii: "\\") {
                if i + 1 >= p.count { return false }
                i += 2
                continue
            }
            if p[i] == UInt8(ascii: "[") { depth += 1 }
            if p[i] == UInt8(ascii: "]") && depth > 0 { depth -= 1 }
            i += 1
        }
        return depth == 0
    }
}

/// A list of patterns; matches when any pattern does.
public struct PatternList: Sendable {
    public var patterns: [PathPattern]
    public init(_ patterns: [PathPattern] = []) { self.patterns = patterns }
    public var isEmpty: Bool { patterns.isEmpty }
    public func matches(_ path: [UInt8]) -> Bool { patterns.contains { $0.matches(path) } }

    /// Reads patterns from a file: one per line, blank lines and lines starting with `#` ignored.
    public static func load(file: String, caseInsensitive: Bool = false) throws -> [PathPattern] {
        let fd = open(file, O_RDONLY)
        guard fd >= 0 else { throw HavenError.system("cannot read exclude file", file) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
            if n <= 0 { break }
            bytes.append(contentsOf: buf[0..<n])
        }
        return try String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: " \t\r") }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
            .map { try PathPattern($0, caseInsensitive: caseInsensitive) }
    }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s.removeFirst() }
        while let l = s.last, chars.contains(l) { s.removeLast() }
        return String(s)
    }
}
