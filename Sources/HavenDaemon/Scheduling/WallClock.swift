import Foundation

/// Local wall-clock arithmetic on whole seconds, independent of `Calendar`, so that DST gaps and folds are
/// handled by one explicit rule. A "local" value counts seconds since 1970-01-01 00:00 *on the wall clock*
/// of a time zone (UTC offset already added).
enum WallClock {
    /// The wall-clock value of an instant in `timeZone`.
    static func local(_ instant: Int64, _ timeZone: TimeZone) -> Int64 {
        instant + Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(instant))))
    }

    /// How a wall-clock time maps to instants.
    enum Resolution: Equatable {
        /// The time exists once.
        case unique(Int64)
        /// The clocks were set back: the time exists twice (earlier first).
        case fold(Int64, Int64)
        /// The clocks jumped forward over this time; the associated value is the first instant after the gap.
        case gap(Int64)
    }

    /// Maps a wall-clock value back to instants in `timeZone`.
    static func resolve(_ local: Int64, _ timeZone: TimeZone) -> Resolution {
        func offset(_ instant: Int64) -> Int64 {
            Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(instant))))
        }
        // Offsets in effect a day either side bracket any transition that can affect this wall time.
        let before = offset(local - 86_400)
        let after = offset(local + 86_400)
        var instants: [Int64] = []
        for o in Set([before, after, offset(local - before), offset(local - after)]) {
            let candidate = local - o
            if offset(candidate) == o, !instants.contains(candidate) { instants.append(candidate) }
        }
        instants.sort()
        if instants.count >= 2 { return .fold(instants[0], instants[instants.count - 1]) }
        if let only = instants.first { return .unique(only) }
        // A gap: find the transition instant between the two readings of the wall time.
        var low = local - max(before, after)   // still before the transition
        var high = local - min(before, after)  // already after it
        if low > high { swap(&low, &high) }
        let startOffset = offset(low)
        while high - low > 1 {
            let mid = low + (high - low) / 2
            if offset(mid) == startOffset { low = mid } else { high = mid }
        }
        return .gap(high)
    }

    // Civil calendar from day numbers (days since 1970-01-01), proleptic Gregorian.

    static func days(year: Int64, month: Int, day: Int) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let m = Int64(month)
        let dayOfYear = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + Int64(day) - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civil(days: Int64) -> (year: Int64, month: Int, day: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = Int(dayOfYear - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// 0 = Sunday … 6 = Saturday.
    static func weekday(days: Int64) -> Int {
        let w = (days + 4) % 7
        return Int(w >= 0 ? w : w + 7)
    }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        a >= 0 ? a / b : -((-a + b - 1) / b)
    }

    /// "2026-11-23 05:00" in `timeZone`.
    static func format(_ date: Date, _ timeZone: TimeZone, seconds: Bool = false) -> String {
        let local = local(Int64(date.timeIntervalSince1970.rounded(.down)), timeZone)
        let day = floorDiv(local, 86_400)
        let c = civil(days: day)
        let s = Int(local - day * 86_400)
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        var text = "\(c.year)-\(two(c.month))-\(two(c.day)) \(two(s / 3600)):\(two(s / 60 % 60))"
        if seconds { text += ":\(two(s % 60))" }
        return text
    }
}
