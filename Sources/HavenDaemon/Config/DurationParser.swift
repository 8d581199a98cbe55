import Foundation

/// Parses and formats the daemon's durations: one or more `<number><unit>` pairs with units `s`, `m`
/// (minutes), `h`, `d`, `w`, such as `"30s"`, `"5m"`, `"1h30m"`, `"1.5h"`, `"2w"`; a bare number is seconds.
public enum DurationParser {
    /// A duration that could not be parsed; `message` says what is wrong.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    private static let units: [Character: TimeInterval] = ["s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800]

    /// The duration in seconds. Throws `ParseError` for empty text, unknown units, a number without a unit
    /// after another pair, negative or absurdly large values.
    public static func parse(_ text: String) throws -> TimeInterval {
        let s = text.trimmingCharacters(in: .whitespaces)
        func fail(_ why: String) -> ParseError {
            ParseError(message: "invalid duration '\(text)': \(why); write e.g. 30s, 5m, 1h, 1d, 1w or 1h30m")
        }
        guard !s.isEmpty else { throw fail("it is empty") }
        if let plain = Double(s), s.allSatisfy({ $0.isNumber || $0 == "." }) {
            guard plain.isFinite else { throw fail("not a number") }
            return plain
        }
        if s.hasPrefix("-") { throw fail("durations cannot be negative") }
        var total: TimeInterval = 0
        var number = ""
        var usedUnits = Set<Character>()
        for c in s {
            if c.isASCII && (c.isNumber || c == ".") { number.append(c); continue }
            if c == " " { continue }
            guard let factor = units[Character(c.lowercased())] else {
                throw fail("unknown unit '\(c)' (units are s, m, h, d, w)")
            }
            guard !number.isEmpty, let n = Double(number) else { throw fail("expected a number before '\(c)'") }
            guard usedUnits.insert(Character(c.lowercased())).inserted else { throw fail("unit '\(c)' appears twice") }
            total += n * factor
            number = ""
        }
        guard number.isEmpty else { throw fail("'\(number)' at the end has no unit") }
        guard total.isFinite, total < 100 * 365 * 86_400 else { throw fail("it is longer than 100 years") }
        return total
    }

    /// The shortest form in whole units, largest first: 5400 → `"1h30m"`, 90 → `"1m30s"`, 0 → `"0s"`.
    /// Fractions of a second are dropped.
    public static func format(_ seconds: TimeInterval) -> String {
        var rest = Int64(max(0, seconds).rounded(.down))
        if rest == 0 { return "0s" }
        var text = ""
        for (unit, size) in [("w", Int64(604_800)), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] where rest >= size {
            text += "\(rest / size)\(unit)"
            rest %= size
        }
        return text
    }

    /// A rounded, human form for messages: `"3h"`, `"2d"`, `"45m"`, `"20s"` (largest unit, rounded down;
    /// two units below ten of the largest, e.g. `"1h30m"`).
    public static func approximate(_ seconds: TimeInterval) -> String {
        let s = Int64(max(0, seconds).rounded(.down))
        let steps: [(String, Int64)] = [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)]
        for (i, (unit, size)) in steps.enumerated() where s >= size {
            let whole = s / size
            var text = "\(whole)\(unit)"
            if whole < 10, i + 1 < steps.count {
                let (nextUnit, nextSize) = steps[i + 1]
                let part = (s % size) / nextSize
                if part > 0 { text += "\(part)\(nextUnit)" }
            }
            return text
        }
        return "0s"
    }
}

/// Parses byte sizes with optional binary units (`"500"`, `"4K"`, `"100M"`, `"2G"`, `"1T"`, with an optional
/// trailing `B` or `iB`), as restic does for `--exclude-larger-than`.
public enum SizeParser {
    public static func parse(_ text: String) -> UInt64? {
        var s = Substring(text.trimmingCharacters(in: .whitespaces))
        if s.lowercased().hasSuffix("ib") { s = s.dropLast(2) } else if s.lowercased().hasSuffix("b") { s = s.dropLast() }
        var shift: UInt64 = 0
        switch s.last?.lowercased() {
        case "k": shift = 10
        case "m": shift = 20
        case "g": shift = 30
        case "t": shift = 40
        default: break
        }
        if shift != 0 { s = s.dropLast() }
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }), let n = UInt64(s) else { return nil }
        let (v, overflow) = n.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : v
    }
}
