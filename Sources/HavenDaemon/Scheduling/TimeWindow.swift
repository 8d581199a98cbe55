import Foundation

/// A daily wall-clock window such as 01:00–06:00; `start > end` crosses midnight (22:00–04:00) and
/// `start == end` means the whole day. The start is inside the window, the end is not.
public struct TimeWindow: Sendable, Hashable, CustomStringConvertible {
    /// Minutes after midnight.
    public let start: Int
    /// Minutes after midnight.
    public let end: Int

    /// A window parsed from `"HH:MM"` strings. Throws `TimeWindowError`.
    public init(start: String, end: String) throws {
        self.start = try TimeWindow.minutes(start, "start")
        self.end = try TimeWindow.minutes(end, "end")
    }

    /// A window from minutes after midnight (0..<1440).
    public init(startMinute: Int, endMinute: Int) {
        start = ((startMinute % 1440) + 1440) % 1440
        end = ((endMinute % 1440) + 1440) % 1440
    }

    private static func minutes(_ text: String, _ which: String) throws -> Int {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let h = Int(parts[0]), let m = Int(parts[1]), parts[1].count == 2,
              (0...24).contains(h), (0...59).contains(m), h < 24 || m == 0 else {
            throw TimeWindowError(message: "window \(which) '\(text)' is not a time: write HH:MM between 00:00 and 24:00, e.g. 01:30")
        }
        return (h * 60 + m) % 1440
    }

    public var description: String {
        func hm(_ m: Int) -> String { String(format: "%02d:%02d", m / 60, m % 60) }
        return "\(hm(start))–\(hm(end))"
    }

    private func containsLocal(_ secondOfDay: Int64) -> Bool {
        if start == end { return true }
        let s = Int64(start) * 60, e = Int64(end) * 60
        if start < end { return secondOfDay >= s && secondOfDay < e }
        return secondOfDay >= s || secondOfDay < e
    }

    /// True when `date` lies in the window on the wall clock of `timeZone`.
    public func contains(_ date: Date, timeZone: TimeZone) -> Bool {
        let local = WallClock.local(Int64(date.timeIntervalSince1970.rounded(.down)), timeZone)
        return containsLocal(local - WallClock.floorDiv(local, 86_400) * 86_400)
    }

    /// `date` itself when the window is open then, else the next time it opens.
    public func nextOpen(after date: Date, timeZone: TimeZone) -> Date {
        if contains(date, timeZone: timeZone) { return date }
        return boundary(minute: start, after: date, timeZone: timeZone)
    }

    /// The next time the window closes after `date` (the end of the current opening when it is open);
    /// nil for a whole-day window, which never closes.
    public func closes(after date: Date, timeZone: TimeZone) -> Date? {
        if start == end { return nil }
        return boundary(minute: end, after: date, timeZone: timeZone)
    }

    /// The first instant strictly after `date` at which the wall clock shows `minute` (the end of the gap
    /// when that time is skipped by a DST change).
    private func boundary(minute: Int, after date: Date, timeZone: TimeZone) -> Date {
        let now = Int64(date.timeIntervalSince1970.rounded(.down))
        let today = WallClock.floorDiv(WallClock.local(now, timeZone), 86_400)
        for day in (today - 1)...(today + 2) {
            let local = day * 86_400 + Int64(minute) * 60
            let instant: Int64
            switch WallClock.resolve(local, timeZone) {
            case .unique(let i): instant = i
            case .fold(let first, let second): instant = first > now ? first : second
            case .gap(let end): instant = end
            }
            if instant > now { return Date(timeIntervalSince1970: TimeInterval(instant)) }
        }
        return date.addingTimeInterval(86_400)
    }
}

/// A window that could not be parsed.
public struct TimeWindowError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Debouncing for watched files: fire `minWait` after the last change, but no later than `maxWait` after
/// the first change of a burst.
public struct Debouncer: Sendable, Hashable {
    public var minWait: TimeInterval
    public var maxWait: TimeInterval

    public init(minWait: TimeInterval = 10, maxWait: TimeInterval = 300) {
        self.minWait = minWait; self.maxWait = maxWait
    }

    /// `min(lastChange + minWait, firstChange + maxWait)`.
    public func fireTime(firstChange: Date, lastChange: Date) -> Date {
        min(lastChange.addingTimeInterval(minWait), firstChange.addingTimeInterval(maxWait))
    }

    /// True when a burst that started at `firstChange` and last changed at `lastChange` should fire at `now`.
    public func isDue(firstChange: Date, lastChange: Date, now: Date) -> Bool {
        fireTime(firstChange: firstChange, lastChange: lastChange) <= now
    }
}
