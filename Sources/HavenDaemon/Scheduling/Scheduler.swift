import Foundation

/// What a job does.
public enum JobKind: String, Sendable, Hashable, Codable, CaseIterable, Comparable {
    case backup, forget, prune, check

    public static func < (lhs: JobKind, rhs: JobKind) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// Why a job was started; every log line of the job carries it.
public enum Trigger: String, Sendable, Hashable, Codable, CaseIterable {
    /// A schedule came due while the daemon ran.
    case schedule
    /// Watched files changed and settled.
    case watch
    /// Requested through the HTTP API.
    case api
    /// Requested from the command line.
    case cli
    /// A schedule was missed while the daemon was down and runs once at startup.
    case catchUp = "catch-up"
    /// Continues a job that was interrupted (the process died or a time window closed).
    case resume
}

/// One schedule of one task of one backup definition, e.g. the second schedule of `documents`' backups.
public struct ScheduleKey: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The backup definition's name.
    public var backup: String
    /// Which task the schedule starts.
    public var task: JobKind
    /// Position in that task's `schedules` list.
    public var index: Int

    public init(backup: String, task: JobKind, index: Int) {
        self.backup = backup; self.task = task; self.index = index
    }

    public static func < (lhs: ScheduleKey, rhs: ScheduleKey) -> Bool {
        (lhs.backup, lhs.task, lhs.index) < (rhs.backup, rhs.task, rhs.index)
    }

    /// `documents/backup[1]`.
    public var description: String { "\(backup)/\(task.rawValue)[\(index)]" }
}

/// A schedule that is due now.
public struct DueTrigger: Sendable, Hashable {
    public var key: ScheduleKey
    /// `.schedule`, or `.catchUp` for a fire missed while the daemon was down.
    public var trigger: Trigger
    /// The slot that came due (for a catch-up: the first missed slot).
    public var scheduledAt: Date

    public init(key: ScheduleKey, trigger: Trigger, scheduledAt: Date) {
        self.key = key; self.trigger = trigger; self.scheduledAt = scheduledAt
    }
}

/// Decides which schedules are due. Pure: all state and the current time are parameters.
public enum Scheduler {
    /// The schedules due at `now`, in key order, and when to evaluate again.
    ///
    /// For each key the anchor is its last fire, or `startedAt` when it never fired. The next fire is
    /// `anchor + interval` or the cron expression's next match after the anchor; it is due when ≤ `now`.
    /// A due key is reported once however many slots passed; record `now` as its last fire.
    ///
    /// Catch-up: when `catchUp` is on and a key's next fire after its last fire lies at or before
    /// `startedAt` (it was missed while the daemon was down), it is due once with trigger `.catchUp`.
    /// When `catchUp` is off, missed slots are dropped and the key waits for its first slot after
    /// `startedAt`.
    ///
    /// `nextWake` is the earliest next fire over all keys, assuming the due ones are recorded at `now`;
    /// nil when nothing will ever fire.
    public static func due(schedules: [ScheduleKey: Schedule], lastFired: [ScheduleKey: Date], startedAt: Date,
                           now: Date, catchUp: Bool, timeZone: TimeZone) -> (due: [DueTrigger], nextWake: Date?) {
        var due: [DueTrigger] = []
        var wake: Date? = nil
        func wakeAt(_ d: Date?) {
            guard let d else { return }
            if wake == nil || d < wake! { wake = d }
        }
        for key in schedules.keys.sorted() {
            let schedule = schedules[key]!
            let last = lastFired[key]
            var next: Date?
            var trigger = Trigger.schedule
            if let last, last < startedAt {
                let missed = schedule.next(after: last, timeZone: timeZone)
                if let missed, missed <= startedAt {
                    if catchUp {
                        next = missed
                        trigger = .catchUp
                    } else {
                        next = firstSlot(schedule, after: startedAt, anchor: last, timeZone: timeZone)
                    }
                } else {
                    next = missed
                }
            } else {
                next = schedule.next(after: last ?? startedAt, timeZone: timeZone)
            }
            guard let next else { continue }
            if next <= now {
                due.append(DueTrigger(key: key, trigger: trigger, scheduledAt: next))
                wakeAt(schedule.next(after: now, timeZone: timeZone))
            } else {
                wakeAt(next)
            }
        }
        return (due, wake)
    }

    /// The first slot strictly after `date`; interval schedules keep their phase relative to `anchor`.
    private static func firstSlot(_ schedule: Schedule, after date: Date, anchor: Date, timeZone: TimeZone) -> Date? {
        switch schedule {
        case .interval(let interval):
            let elapsed = date.timeIntervalSince(anchor)
            let periods = (elapsed / interval).rounded(.down) + 1
            return anchor.addingTimeInterval(periods * interval)
        case .cron:
            return schedule.next(after: date, timeZone: timeZone)
        }
    }
}
