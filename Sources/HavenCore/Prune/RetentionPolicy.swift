/// A calendar duration in restic's `--keep-within` form: years, months, days and hours (`"1y2m3d4h"`).
///
/// Subtracting it from a time works on the calendar, like Go's `AddDate`: one month before March 31 is
/// "February 31", which normalizes to March 3 (or 2 in a leap year).
public struct RetentionDuration: Sendable, Hashable, CustomStringConvertible {
    /// Calendar years.
    public var years: Int
    /// Calendar months.
    public var months: Int
    /// Calendar days.
    public var days: Int
    /// Hours.
    public var hours: Int

    /// A duration from its components.
    public init(years: Int = 0, months: Int = 0, days: Int = 0, hours: Int = 0) {
        self.years = years; self.months = months; self.days = days; self.hours = hours
    }

    /// Parses restic's duration form: one or more `<number><unit>` pairs with unit `y`, `m`, `d` or `h`
    /// (e.g. `"2y5m7d3h"`, `"7d"`). Throws `.invalidArgument` for anything else (`"1w"` is not a duration).
    public static func parse(_ text: String) throws -> RetentionDuration {
        func bad(_ why: String) -> HavenError {
            HavenError(.invalidArgument, "invalid duration \"\(text)\": \(why); use numbers with units y, m, d, h such as \"1y2m3d4h\"")
        }
        var d = RetentionDuration()
        var number: Int? = nil
        guard !text.isEmpty else { throw bad("it is empty") }
        for c in text {
            if let digit = c.wholeNumberValue, c.isASCII {
                let (m, o1) = (number ?? 0).multipliedReportingOverflow(by: 10)
                let (v, o2) = m.addingReportingOverflow(digit)
                guard !o1, !o2, v <= 1_000_000 else { throw bad("the number is too large") }
                number = v
                continue
            }
            guard let n = number else { throw bad("expected a number before '\(c)'") }
            switch c {
            case "y": d.years += n
            case "m": d.months += n
            case "d": d.days += n
            case "h": d.hours += n
            default: throw bad("unknown unit '\(c)'")
            }
            number = nil
        }
        guard number == nil else { throw bad("the last number has no unit") }
        return d
    }

    /// True when every component is zero (such a duration is not a rule).
    public var isZero: Bool { years == 0 && months == 0 && days == 0 && hours == 0 }

    /// restic's format: the non-zero components, e.g. `"2y5m"`, or `"0h"` for zero.
    public var description: String {
        var s = ""
        if years != 0 { s += "\(years)y" }
        if months != 0 { s += "\(months)m" }
        if days != 0 { s += "\(days)d" }
        if hours != 0 { s += "\(hours)h" }
        return s.isEmpty ? "0h" : s
    }

    /// `time` minus this duration, on the calendar of `time`'s own UTC offset.
    public func before(_ time: Timestamp) -> Timestamp {
        let c = time.civil
        // Month arithmetic with floor division, then let the day overflow/underflow linearly.
        let monthIndex = c.year * 12 + Int64(c.month - 1) - Int64(years) * 12 - Int64(months)
        let year = monthIndex >= 0 ? monthIndex / 12 : (monthIndex - 11) / 12
        let month = Int(monthIndex - year * 12) + 1
        let dayNumber = Timestamp.daysFromCivil(year, month, c.day - days)
        let localSeconds = dayNumber * 86400 + Int64(c.hour * 3600 + c.minute * 60 + c.second)
        let utc = localSeconds - Int64(time.utcOffset) - Int64(hours) * 3600
        return Timestamp(seconds: utc, nanoseconds: time.nanoseconds, utcOffset: time.utcOffset)
    }
}

/// Which snapshots `forget` keeps, as restic's `--keep-*` options. A snapshot is kept when any rule keeps it.
///
/// Counts: `nil` or 0 means the rule is off, a positive number keeps that many, and
/// `RetentionPolicy.unlimited` (-1) keeps one per period forever.
public struct RetentionPolicy: Sendable, Hashable {
    /// The count that means "every period" (restic's `unlimited`).
    public static let unlimited = -1

    /// Keep the newest n snapshots.
    public var keepLast: Int?
    /// Keep the newest snapshot of each of the last n hours that have snapshots.
    public var keepHourly: Int?
    /// Keep the newest snapshot of each of the last n days that have snapshots.
    public var keepDaily: Int?
    /// Keep the newest snapshot of each of the last n ISO weeks that have snapshots.
    public var keepWeekly: Int?
    /// Keep the newest snapshot of each of the last n months that have snapshots.
    public var keepMonthly: Int?
    /// Keep the newest snapshot of each of the last n years that have snapshots.
    public var keepYearly: Int?
    /// Keep every snapshot within this duration of the newest snapshot.
    public var keepWithin: RetentionDuration?
    /// Keep the newest snapshot of each hour within this duration of the newest snapshot.
    public var keepWithinHourly: RetentionDuration?
    /// Keep the newest snapshot of each day within this duration of the newest snapshot.
    public var keepWithinDaily: RetentionDuration?
    /// Keep the newest snapshot of each ISO week within this duration of the newest snapshot.
    public var keepWithinWeekly: RetentionDuration?
    /// Keep the newest snapshot of each month within this duration of the newest snapshot.
    public var keepWithinMonthly: RetentionDuration?
    /// Keep the newest snapshot of each year within this duration of the newest snapshot.
    public var keepWithinYearly: RetentionDuration?
    /// Keep every snapshot that has all tags of at least one group. The group `[""]` matches untagged snapshots.
    public var keepTags: [[String]]

    /// A policy from its rules; unset rules are off.
    public init(keepLast: Int? = nil, keepHourly: Int? = nil, keepDaily: Int? = nil, keepWeekly: Int? = nil,
                keepMonthly: Int? = nil, keepYearly: Int? = nil, keepWithin: RetentionDuration? = nil,
                keepWithinHourly: RetentionDuration? = nil, keepWithinDaily: RetentionDuration? = nil,
                keepWithinWeekly: RetentionDuration? = nil, keepWithinMonthly: RetentionDuration? = nil,
                keepWithinYearly: RetentionDuration? = nil, keepTags: [[String]] = []) {
        self.keepLast = keepLast; self.keepHourly = keepHourly; self.keepDaily = keepDaily
        self.keepWeekly = keepWeekly; self.keepMonthly = keepMonthly; self.keepYearly = keepYearly
        self.keepWithin = keepWithin; self.keepWithinHourly = keepWithinHourly; self.keepWithinDaily = keepWithinDaily
        self.keepWithinWeekly = keepWithinWeekly; self.keepWithinMonthly = keepWithinMonthly
        self.keepWithinYearly = keepWithinYearly; self.keepTags = keepTags
    }

    /// True when no rule is set: applying such a policy would remove every snapshot, so it is refused.
    public var isEmpty: Bool {
        let counts = [keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepYearly]
        let durations = [keepWithin, keepWithinHourly, keepWithinDaily, keepWithinWeekly, keepWithinMonthly, keepWithinYearly]
        return counts.allSatisfy { ($0 ?? 0) == 0 } && durations.allSatisfy { $0?.isZero ?? true } && keepTags.isEmpty
    }

    /// Throws `.invalidArgument` for an empty policy or a negative count other than `unlimited`.
    public func validate() throws {
        let named: [(String, Int?)] = [("keep-last", keepLast), ("keep-hourly", keepHourly), ("keep-daily", keepDaily),
                                       ("keep-weekly", keepWeekly), ("keep-monthly", keepMonthly), ("keep-yearly", keepYearly)]
        for (name, v) in named {
            if let v, v < RetentionPolicy.unlimited {
                throw HavenError(.invalidArgument, "--\(name) \(v) is invalid: give a positive count or \"unlimited\"")
            }
        }
        if isEmpty {
            throw HavenError(.invalidArgument, "no retention rule given (every --keep-* option is unset or zero); refusing to remove all snapshots")
        }
    }

    /// A one-line summary such as "keep 7 daily, 4 weekly snapshots, all within 1y".
    public var summary: String {
        var parts: [String] = []
        func count(_ v: Int?, _ what: String) {
            guard let v, v != 0 else { return }
            parts.append(v == RetentionPolicy.unlimited ? "all \(what)" : "\(v) \(what)")
        }
        count(keepLast, "latest"); count(keepHourly, "hourly"); count(keepDaily, "daily")
        count(keepWeekly, "weekly"); count(keepMonthly, "monthly"); count(keepYearly, "yearly")
        func within(_ d: RetentionDuration?, _ what: String) {
            guard let d, !d.isZero else { return }
            parts.append("\(what)within \(d)")
        }
        within(keepWithin, "all "); within(keepWithinHourly, "hourly "); within(keepWithinDaily, "daily ")
        within(keepWithinWeekly, "weekly "); within(keepWithinMonthly, "monthly "); within(keepWithinYearly, "yearly ")
        for group in keepTags { parts.append("with tags " + group.map { $0.isEmpty ? "''" : $0 }.joined(separator: ",")) }
        return parts.isEmpty ? "keep nothing" : "keep " + parts.joined(separator: ", ") + " snapshots"
    }
}

/// Calendar periods that snapshots are bucketed into, in the snapshot's own UTC offset.
enum RetentionPeriod: CaseIterable {
    case hour, day, week, month, year

    var reason: String {
        switch self {
        case .hour: return "hourly"
        case .day: return "daily"
        case .week: return "weekly"
        case .month: return "monthly"
        case .year: return "yearly"
        }
    }

    /// A number identifying the period containing `t`; equal numbers mean the same period.
    func bucket(_ t: Timestamp) -> Int64 {
        let c = t.civil
        switch self {
        case .hour: return ((c.year * 100 + Int64(c.month)) * 100 + Int64(c.day)) * 100 + Int64(c.hour)
        case .day: return (c.year * 100 + Int64(c.month)) * 100 + Int64(c.day)
        case .week:
            let w = RetentionPeriod.isoWeek(year: c.year, month: c.month, day: c.day)
            return w.year * 100 + Int64(w.week)
        case .month: return c.year * 100 + Int64(c.month)
        case .year: return c.year
        }
    }

    /// ISO 8601 week-numbering year and week (weeks start on Monday; week 1 holds the year's first Thursday).
    static func isoWeek(year: Int64, month: Int, day: Int) -> (year: Int64, week: Int) {
        let days = Timestamp.daysFromCivil(year, month, day)
        // 1970-01-01 was a Thursday. Monday = 0 … Sunday = 6.
        var weekday = (days + 3) % 7
        if weekday < 0 { weekday += 7 }
        let thursday = days - weekday + 3
        let (ty, _, _) = Timestamp.civilFromDays(thursday)
        let ordinal = thursday - Timestamp.daysFromCivil(ty, 1, 1)
        return (ty, Int(ordinal / 7) + 1)
    }
}

/// Applies `policy` to one group of snapshots, as restic's `forget` does.
///
/// Snapshots are processed newest first. `keepLast` keeps the newest n; the calendar rules keep the newest
/// snapshot of each of the last n hours/days/ISO weeks/months/years that have snapshots (in the snapshot's
/// own UTC offset); while a calendar rule still has count left when the oldest snapshot is reached, that
/// snapshot is kept too ("oldest daily snapshot"). `keepWithin*` rules are relative to the newest snapshot
/// that is not in the future (relative to `now`); snapshots in the future are kept when such a rule is
/// set. The results of all rules are ORed.
///
/// - Returns: the kept snapshots with the reasons each was kept, and the removed ones; both newest first.
/// - Throws: `.invalidArgument` when the policy has no rule (`validate()`).
public func applyPolicy(
    _ snapshots: [Snapshot], _ policy: RetentionPolicy, now: Timestamp = .now()
) throws -> (keep: [(snapshot: Snapshot, reasons: [String])], remove: [Snapshot]) {
    try policy.validate()
    let list = snapshots.enumerated().sorted { a, b in
        if a.element.time != b.element.time { return a.element.time > b.element.time }
        return a.offset < b.offset
    }.map(\.element)
    guard !list.isEmpty else { return ([], []) }

    struct CountRule { var period: RetentionPeriod?; var remaining: Int; var last: Int64?; var reason: String }
    var countRules: [CountRule] = []
    if let n = policy.keepLast, n != 0 { countRules.append(CountRule(period: nil, remaining: n, last: nil, reason: "last snapshot")) }
    let calendar: [(RetentionPeriod, Int?)] = [(.hour, policy.keepHourly), (.day, policy.keepDaily), (.week, policy.keepWeekly),
                                               (.month, policy.keepMonthly), (.year, policy.keepYearly)]
    for (period, count) in calendar {
        if let n = count, n != 0 { countRules.append(CountRule(period: period, remaining: n, last: nil, reason: "\(period.reason) snapshot")) }
    }

    struct WithinRule { var period: RetentionPeriod; var limit: Timestamp; var last: Int64?; var reason: String }
    let durationRules: [(RetentionPeriod, RetentionDuration?)] = [
        (.hour, policy.keepWithinHourly), (.day, policy.keepWithinDaily), (.week, policy.keepWithinWeekly),
        (.month, policy.keepWithinMonthly), (.year, policy.keepWithinYearly),
    ]
    let hasDurationRule = !(policy.keepWithin?.isZero ?? true) || durationRules.contains { !($0.1?.isZero ?? true) }
    // The reference time for keep-within: the newest snapshot that is not in the future.
    let latest = list.first { $0.time <= now }?.time ?? list[0].time
    var withinRules: [WithinRule] = []
    for (period, d) in durationRules {
        if let d, !d.isZero {
            withinRules.append(WithinRule(period: period, limit: d.before(latest), last: nil, reason: "\(period.reason) within \(d)"))
        }
    }
    let withinLimit = policy.keepWithin.flatMap { $0.isZero ? nil : $0.before(latest) }

    var keep: [(snapshot: Snapshot, reasons: [String])] = []
    var remove: [Snapshot] = []
    for (nr, s) in list.enumerated() {
        var reasons: [String] = []
        let isOldest = nr == list.count - 1
        if hasDurationRule && s.time > now {
            reasons.append("in the future")
        }
        for group in policy.keepTags where snapshot(s, hasAllTags: group) {
            reasons.append("has tags " + group.map { $0.isEmpty ? "''" : $0 }.joined(separator: ","))
        }
        if let withinLimit, s.time > withinLimit, s.time <= now {
            reasons.append("within \(policy.keepWithin!)")
        }
        for i in countRules.indices {
            let r = countRules[i]
            guard r.remaining > 0 || r.remaining == RetentionPolicy.unlimited else { continue }
            let value = r.period?.bucket(s.time) ?? Int64(nr)
            if value != r.last || isOldest {
                reasons.append(value != r.last ? r.reason : "oldest " + r.reason)
                countRules[i].last = value
                if r.remaining > 0 { countRules[i].remaining -= 1 }
            }
        }
        for i in withinRules.indices where s.time > withinRules[i].limit && s.time <= now {
            let r = withinRules[i]
            let value = r.period.bucket(s.time)
            if value != r.last || isOldest {
                reasons.append(value != r.last ? r.reason : "oldest " + r.reason)
                withinRules[i].last = value
            }
        }
        if reasons.isEmpty { remove.append(s) } else { keep.append((s, reasons)) }
    }
    return (keep, remove)
}

/// Whether `s` has every tag in `tags`; the empty tag matches a snapshot without tags.
func snapshot(_ s: Snapshot, hasAllTags tags: [String]) -> Bool {
    for tag in tags {
        if tag.isEmpty {
            if s.tags.isEmpty { return true }
            return false
        }
        if !s.tags.contains(tag) { return false }
    }
    return true
}

// MARK: Grouping

/// Which snapshot fields `forget` groups by before applying a policy (restic's `--group-by`).
public struct SnapshotGroupBy: OptionSet, Sendable, Hashable {
    /// The option bits.
    public let rawValue: Int
    /// Fields from option bits.
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// Group by host name.
    public static let host = SnapshotGroupBy(rawValue: 1)
    /// Group by the (sorted) backup paths.
    public static let paths = SnapshotGroupBy(rawValue: 2)
    /// Group by the (sorted) tags.
    public static let tags = SnapshotGroupBy(rawValue: 4)
    /// restic's default, `host,paths`.
    public static let `default`: SnapshotGroupBy = [.host, .paths]

    /// Parses a comma-separated list of `host`, `paths` and `tags`; the empty string means no grouping.
    public static func parse(_ text: String) throws -> SnapshotGroupBy {
        var g: SnapshotGroupBy = []
        for part in text.split(separator: ",", omittingEmptySubsequences: true) {
            switch String(part.filter { $0 != " " }) {
            case "host": g.insert(.host)
            case "paths": g.insert(.paths)
            case "tags": g.insert(.tags)
            case "": break
            default: throw HavenError(.invalidArgument, "unknown --group-by field \"\(part)\": use host, paths and tags")
            }
        }
        return g
    }
}

/// What the snapshots of a group share: the fields grouped by (nil when not grouped by that field).
public struct SnapshotGroupKey: Sendable, Hashable, CustomStringConvertible {
    /// The host name, when grouped by host.
    public var hostname: String?
    /// Sorted.
    public var paths: [String]?
    /// Sorted.
    public var tags: [String]?

    /// "host [h], paths [p], tags [t]" for the fields grouped by.
    public var description: String {
        var parts: [String] = []
        if let hostname { parts.append("host [\(hostname)]") }
        if let paths { parts.append("paths [\(paths.joined(separator: ", "))]") }
        if let tags { parts.append("tags [\(tags.joined(separator: ", "))]") }
        return parts.isEmpty ? "all snapshots" : parts.joined(separator: ", ")
    }
}

/// A set of snapshots that share a `SnapshotGroupKey`.
public struct SnapshotGroup: Sendable {
    /// What the group shares.
    public var key: SnapshotGroupKey
    /// In the order given to `group(_:by:)`.
    public var snapshots: [Snapshot]
}

/// Splits snapshots into groups that share the chosen fields, so a policy is applied to each backup set on
/// its own. Groups are sorted by host, then paths, then tags.
public func group(_ snapshots: [Snapshot], by grouping: SnapshotGroupBy = .default) -> [SnapshotGroup] {
    var order: [SnapshotGroupKey] = []
    var members: [SnapshotGroupKey: [Snapshot]] = [:]
    for s in snapshots {
        let key = SnapshotGroupKey(hostname: grouping.contains(.host) ? s.hostname : nil,
                                   paths: grouping.contains(.paths) ? s.paths.sorted() : nil,
                                   tags: grouping.contains(.tags) ? s.tags.sorted() : nil)
        if members[key] == nil { order.append(key) }
        members[key, default: []].append(s)
    }
    func lexLess(_ a: [String]?, _ b: [String]?) -> Bool {
        let x = a ?? [], y = b ?? []
        return x.lexicographicallyPrecedes(y)
    }
    order.sort { a, b in
        if (a.hostname ?? "") != (b.hostname ?? "") { return (a.hostname ?? "") < (b.hostname ?? "") }
        if (a.paths ?? []) != (b.paths ?? []) { return lexLess(a.paths, b.paths) }
        return lexLess(a.tags, b.tags)
    }
    return order.map { SnapshotGroup(key: $0, snapshots: members[$0]!) }
}
