import Foundation

/// When a task fires: every so often, or on a cron expression.
public enum Schedule: Sendable, Hashable, CustomStringConvertible {
    /// Fires `interval` seconds after the previous fire (or after the daemon started, before the first fire).
    case interval(TimeInterval)
    /// Fires at the times the expression matches.
    case cron(CronExpression)

    /// Parses a config value: a duration (`"30s"`, `"1h30m"`, `"90"`) or a cron expression
    /// (`"0 30 2 * * *"`, `"@daily"`). Throws `ScheduleError` with a message for the user.
    public static func parse(_ text: String) throws -> Schedule {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let looksLikeCron = trimmed.hasPrefix("@") || trimmed.contains(" ") || trimmed.contains("*")
        if looksLikeCron {
            do { return .cron(try CronExpression.parse(trimmed)) } catch let e as CronExpression.ParseError {
                throw ScheduleError(message: e.message)
            }
        }
        do {
            let seconds = try DurationParser.parse(trimmed)
            guard seconds >= 1 else {
                throw ScheduleError(message: "schedule interval '\(trimmed)' is too short: use at least 1s")
            }
            return .interval(seconds)
        } catch let e as DurationParser.ParseError {
            throw ScheduleError(message: "'\(trimmed)' is neither an interval nor a cron expression: \(e.message); "
                + "write an interval such as '1h' or a cron expression such as '0 30 2 * * *'")
        }
    }

    /// The first fire strictly after `anchor`: `anchor + interval`, or the cron expression's next match.
    public func next(after anchor: Date, timeZone: TimeZone) -> Date? {
        switch self {
        case .interval(let seconds): return anchor.addingTimeInterval(seconds)
        case .cron(let cron): return cron.next(after: anchor, timeZone: timeZone)
        }
    }

    /// The config form: `"1h30m"` or the cron text.
    public var description: String {
        switch self {
        case .interval(let seconds): return DurationParser.format(seconds)
        case .cron(let cron): return cron.source
        }
    }
}

/// A schedule that could not be parsed; `message` says what is wrong and what to write instead.
public struct ScheduleError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
