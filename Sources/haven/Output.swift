import Foundation
import HavenCore

/// Where commands print: results to stdout, messages and errors to stderr, JSON when asked.
struct Output: Sendable {
    var json: Bool
    var quiet: Bool
    var verbose: Int

    /// A human-readable message (suppressed by --quiet and --json).
    func info(_ s: String) {
        if !quiet && !json { print(s) }
    }

    /// Detail shown with -v.
    func detail(_ s: String) {
        if verbose > 0 && !quiet && !json { print(s) }
    }

    /// A result line that is always printed in text mode.
    func result(_ s: String) {
        if !json { print(s) }
    }

    func warning(_ s: String) {
        FileHandleOutput.stderr("warning: " + s)
    }

    /// One JSON document per line, written at once (not buffered), so a reader of a pipe — the daemon
    /// following a job's progress — sees each line when it is printed.
    func printJSON(_ value: Any) {
        try? FileHandle.standardOutput.write(contentsOf: Data((JSON.string(value) + "\n").utf8))
    }

    static func error(_ e: HavenError) {
        FileHandleOutput.stderr("haven: " + e.description)
    }
}

enum FileHandleOutput {
    static func stderr(_ s: String) {
        try? FileHandle.standardError.write(contentsOf: Data((s + "\n").utf8))
    }
}

enum JSON {
    static func string(_ value: Any) -> String {
        guard JSONSerialization.isValidJSONObject(value) || value is String || value is NSNumber,
              let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed])
        else { return "null" }
        return String(decoding: data, as: UTF8.self)
    }

    static func snapshot(_ s: Snapshot) -> [String: Any] {
        var d: [String: Any] = [
            "time": s.time.rfc3339, "tree": s.tree.hex, "paths": s.paths,
            "hostname": s.hostname, "username": s.username, "uid": Int(s.uid), "gid": Int(s.gid),
        ]
        if let id = s.id { d["id"] = id.hex; d["short_id"] = id.short }
        if let p = s.parent { d["parent"] = p.hex }
        if !s.tags.isEmpty { d["tags"] = s.tags }
        if !s.excludes.isEmpty { d["excludes"] = s.excludes }
        if let o = s.original { d["original"] = o.hex }
        if !s.programVersion.isEmpty { d["program_version"] = s.programVersion }
        return d
    }
}

enum Format {
    /// Bytes in binary units, as restic prints them ("1.500 MiB").
    static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var v = Double(n)
        var u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(n) B" : String(format: "%.3f %@", v, units[u])
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        if s < 60 { return String(format: "%.2fs", seconds) }
        if s < 3600 { return String(format: "%d:%02d", s / 60, s % 60) }
        return String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
    }

    /// Parses sizes like `500`, `10k`, `1.5M`, `2G`, `1T` (binary units).
    static func parseSize(_ s: String) throws -> UInt64 {
        let t = s.trimmingCharacters(in: .whitespaces).uppercased()
        var number = t
        var mult: Double = 1
        if let last = t.last, last.isLetter {
            number = String(t.dropLast())
            switch last {
            case "B": mult = 1
            case "K": mult = 1024
            case "M": mult = 1024 * 1024
            case "G": mult = 1024 * 1024 * 1024
            case "T": mult = 1024 * 1024 * 1024 * 1024
            default: throw HavenError(.usage, "invalid size \"\(s)\": use a number with an optional unit K, M, G or T")
            }
        }
        guard let v = Double(number), v >= 0, v.isFinite else {
            throw HavenError(.usage, "invalid size \"\(s)\": use a number with an optional unit K, M, G or T")
        }
        return UInt64(v * mult)
    }

    /// A table with left-aligned columns.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        var out = [line(header), String(repeating: "-", count: widths.reduce(0, +) + 2 * (widths.count - 1))]
        out += rows.map(line)
        out.append(String(repeating: "-", count: widths.reduce(0, +) + 2 * (widths.count - 1)))
        return out.joined(separator: "\n")
    }
}
