import Foundation

/// Whether a backup runs now, with a one-line reason for the log and the user.
public enum GuardDecision: Sendable, Hashable {
    case run(reason: String)
    case skip(reason: String, nextAllowed: Date)

    public var shouldRun: Bool {
        if case .run = self { return true }
        return false
    }

    public var reason: String {
        switch self {
        case .run(let r), .skip(let r, _): return r
        }
    }
}

/// The minimum-interval guard: "don't back up more often than every N hours, even if asked — but always
/// continue an interrupted backup".
public enum RunGuard {
    /// Skips when a successful backup finished less than `minInterval` before `now`, unless the last run was
    /// interrupted (or `trigger` is `.resume`), or `force` is set. Times in reasons are shown in `timeZone`.
    public static func decide(trigger: Trigger, lastSuccess: Date?, lastRunInterrupted: Bool,
                              minInterval: TimeInterval?, force: Bool, now: Date,
                              timeZone: TimeZone = .current) -> GuardDecision {
        if force { return .run(reason: "forced: min_interval not checked") }
        if lastRunInterrupted || trigger == .resume {
            return .run(reason: "continuing the interrupted backup")
        }
        guard let minInterval, minInterval > 0 else { return .run(reason: "no min_interval set") }
        guard let lastSuccess else { return .run(reason: "no successful backup yet") }
        let age = now.timeIntervalSince(lastSuccess)
        let limit = DurationParser.format(minInterval)
        let ago = age >= 0 ? "\(DurationParser.approximate(age)) ago" : "in the future (clock changed?)"
        let nextAllowed = lastSuccess.addingTimeInterval(minInterval)
        if age >= minInterval {
            return .run(reason: "last successful backup \(ago), min_interval \(limit)")
        }
        return .skip(reason: "last successful backup \(ago), min_interval \(limit): next allowed at \(WallClock.format(nextAllowed, timeZone))",
                     nextAllowed: nextAllowed)
    }
}
