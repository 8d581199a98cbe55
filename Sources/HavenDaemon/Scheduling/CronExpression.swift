import Foundation

/// A cron expression with an optional seconds field, evaluated on the wall clock of a time zone.
///
/// Accepted forms:
/// - five fields `minute hour day-of-month month day-of-week` (the second is 0);
/// - six fields `second minute hour day-of-month month day-of-week`;
/// - `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`.
///
/// Each field is `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a comma-separated list of
/// those. Months accept `jan`…`dec`, days of week `sun`…`sat`; day of week 0 and 7 are both Sunday; `?` is `*`.
/// As in classic cron, when both day of month and day of week are restricted (neither starts with `*`), a day
/// matches if *either* matches.
///
/// Daylight saving time: a fixed time that falls into a gap (spring forward) fires at the end of the gap; a
/// fixed time that occurs twice (fall back) fires once, the first time. When the hour field starts with `*`,
/// the schedule follows elapsed time instead: it fires in both copies of a repeated hour and skips nothing.
public struct CronExpression: Sendable, Hashable, CustomStringConvertible {
    /// The text the expression was parsed from.
    public let source: String
    let seconds: [Int]
    let minutes: [Int]
    let hours: [Int]
    let daysOfMonth: Set<Int>
    let months: Set<Int>
    let daysOfWeek: Set<Int>
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool
    let hourIsWildcard: Bool

    public var description: String { source }

    /// Why an expression was rejected; `message` says what is wrong and what is accepted.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    private struct Field {
        let name: String
        let range: ClosedRange<Int>
        let names: [String: Int]
    }

    private static let monthNames = ["jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
                                     "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12]
    private static let dayNames = ["sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6]
    private static let fields = [
        Field(name: "second", range: 0...59, names: [:]),
        Field(name: "minute", range: 0...59, names: [:]),
        Field(name: "hour", range: 0...23, names: [:]),
        Field(name: "day of month", range: 1...31, names: [:]),
        Field(name: "month", range: 1...12, names: monthNames),
        Field(name: "day of week", range: 0...7, names: dayNames),
    ]
    private static let macros = ["@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
                                 "@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *",
                                 "@hourly": "0 0 * * * *"]

    /// Parses `text`. Throws `ParseError` naming the field and the value that is wrong.
    public static func parse(_ text: String) throws -> CronExpression {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        var expanded = trimmed
        if trimmed.hasPrefix("@") {
            guard let m = macros[trimmed.lowercased()] else {
                throw ParseError(message: "unknown cron shortcut '\(trimmed)': use @hourly, @daily, @weekly, @monthly or @yearly")
            }
            expanded = m
        }
        var parts = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        switch parts.count {
        case 5: parts.insert("0", at: 0)
        case 6: break
        default:
            throw ParseError(message: "cron expression '\(trimmed)' has \(parts.count) field\(parts.count == 1 ? "" : "s"): "
                + "write 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, e.g. '0 30 2 * * *'")
        }
        var sets: [[Int]] = []
        for (field, part) in zip(fields, parts) {
            sets.append(try parseField(part, field))
        }
        var dow = Set(sets[5].map { $0 == 7 ? 0 : $0 })
        if dow.isEmpty { dow = Set(0...6) }
        let restricted = { (s: String) in !(s.hasPrefix("*") || s.hasPrefix("?")) }
        return CronExpression(
            source: trimmed, seconds: sets[0], minutes: sets[1], hours: sets[2], daysOfMonth: Set(sets[3]),
            months: Set(sets[4]), daysOfWeek: dow, dayOfMonthRestricted: restricted(parts[3]),
            dayOfWeekRestricted: restricted(parts[5]), hourIsWildcard: !restricted(parts[2]))
    }

    private static func parseField(_ text: String, _ field: Field) throws -> [Int] {
        func fail(_ why: String) -> ParseError {
            ParseError(message: "cron \(field.name) field '\(text)': \(why)")
        }
        func value(_ s: Substring) throws -> Int {
            if let n = Int(s) {
                guard field.range.contains(n) else {
                    throw fail("\(n) is out of range \(field.range.lowerBound)–\(field.range.upperBound)")
                }
                return n
            }
            if let n = field.names[s.lowercased()] { return n }
            if field.names.isEmpty { throw fail("'\(s)' is not a number") }
            let examples = field.name == "month" ? "jan…dec" : "sun…sat"
            throw fail("'\(s)' is neither a number nor a name (\(examples))")
        }
        var result = Set<Int>()
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { throw fail("empty list item; separate values with single commas") }
            let pieces = item.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw fail("more than one '/' in '\(item)'") }
            var step = 1
            if pieces.count == 2 {
                guard let s = Int(pieces[1]), s > 0 else { throw fail("step '\(pieces[1])' must be a positive number") }
                step = s
            }
            let base = pieces[0]
            var low: Int, high: Int
            if base == "*" || base == "?" {
                low = field.range.lowerBound; high = field.range.upperBound
                if field.name == "day of week" { high = 6 }
            } else if let dash = base.firstIndex(of: "-"), dash != base.startIndex {
                low = try value(base[..<dash])
                high = try value(base[base.index(after: dash)...])
                guard low <= high else {
                    throw fail("range \(base) runs backwards; write the smaller value first")
                }
            } else {
                low = try value(base)
                high = pieces.count == 2 ? field.range.upperBound : low
            }
            for v in stride(from: low, through: high, by: step) { result.insert(v) }
        }
        return result.sorted()
    }

    /// True when this day (day number since 1970-01-01) matches the date fields.
    func matches(day: Int64) -> Bool {
        let c = WallClock.civil(days: day)
        guard months.contains(c.month) else { return false }
        let domOK = daysOfMonth.contains(c.day)
        let dowOK = daysOfWeek.contains(WallClock.weekday(days: day))
        if dayOfMonthRestricted && dayOfWeekRestricted { return domOK || dowOK }
        return domOK && dowOK
    }

    /// The first time strictly after `date` that matches, on the wall clock of `timeZone`; nil when the
    /// expression never matches (e.g. `0 0 30 2 *`). Looks at most eight years ahead; costs a few
    /// microseconds per matching day scanned.
    public func next(after date: Date, timeZone: TimeZone) -> Date? {
        let after = Int64(date.timeIntervalSince1970.rounded(.down))
        let margin: Int64 = 3 * 3600
        func offset(_ instant: Int64) -> Int64 {
            Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(instant))))
        }
        // A wall time earlier than this maps to an instant at or before `after`, even if the clocks are
        // set back soon.
        let startLocal = after + 1 + min(offset(after), offset(after + 1), offset(after + 1 + margin))
        var day = WallClock.floorDiv(startLocal, 86_400)
        let lastDay = day + 366 * 8 + 2
        var best: Int64? = nil
        var stopLocal: Int64? = nil

        func consider(_ instant: Int64) {
            guard instant > after else { return }
            if best == nil || instant < best! { best = instant }
        }

        while day <= lastDay {
            if let stop = stopLocal, day * 86_400 > stop { break }
            defer { day += 1 }
            guard matches(day: day) else { continue }
            let dayStart = day * 86_400
            for h in hours {
                let hourStart = dayStart + Int64(h) * 3600
                if hourStart + 3599 < startLocal { continue }
                if let stop = stopLocal, hourStart > stop { break }
                for m in minutes {
                    let minuteStart = hourStart + Int64(m) * 60
                    if minuteStart + 59 < startLocal { continue }
                    for s in seconds {
                        let local = minuteStart + Int64(s)
                        if local < startLocal { continue }
                        if let stop = stopLocal, local > stop { break }
                        switch WallClock.resolve(local, timeZone) {
                        case .unique(let i): consider(i)
                        case .fold(let first, let second):
                            consider(first)
                            if hourIsWildcard { consider(second) }
                        case .gap(let end):
                            if !hourIsWildcard { consider(end) }
                        }
                        if let b = best, stopLocal == nil {
                            // A later wall time maps to an instant of at least (wall time − largest nearby
                            // offset), so once past best + that offset nothing earlier can follow. Away
                            // from transitions that is the current candidate: the first match wins.
                            stopLocal = b + max(offset(b - margin), offset(b + margin))
                        }
                        if let stop = stopLocal, local >= stop, let b = best {
                            return Date(timeIntervalSince1970: TimeInterval(b))
                        }
                    }
                }
            }
        }
        return best.map { Date(timeIntervalSince1970: TimeInterval($0)) }
    }
}
