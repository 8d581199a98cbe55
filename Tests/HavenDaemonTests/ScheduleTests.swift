import Foundation
import Testing
@testable import HavenDaemon

/// A fixed instant from an ISO 8601 UTC string such as "2026-03-29T01:00:00Z".
func utc(_ text: String) -> Date {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    guard let d = f.date(from: text) else { fatalError("bad test date \(text)") }
    return d
}

let berlin = TimeZone(identifier: "Europe/Berlin")!
let utcZone = TimeZone(identifier: "UTC")!

/// The next `count` fires of `cron` after `start`.
func fires(_ cron: String, after start: String, count: Int, in zone: TimeZone = utcZone) throws -> [Date] {
    let expression = try CronExpression.parse(cron)
    var result: [Date] = []
    var at = utc(start)
    for _ in 0..<count {
        guard let next = expression.next(after: at, timeZone: zone) else { break }
        result.append(next)
        at = next
    }
    return result
}

@Suite("Cron expressions")
struct CronTests {
    @Test("six fields: seconds come first")
    func seconds() throws {
        #expect(try fires("*/15 * * * * *", after: "2026-11-22T10:00:07Z", count: 3)
            == [utc("2026-11-22T10:00:15Z"), utc("2026-11-22T10:00:30Z"), utc("2026-11-22T10:00:45Z")])
        #expect(try fires("5,35 30 2 * * *", after: "2026-11-22T02:30:05Z", count: 2)
            == [utc("2026-11-22T02:30:35Z"), utc("2026-11-23T02:30:05Z")])
    }

    @Test("five fields: minute first, second 0")
    func fiveFields() throws {
        #expect(try fires("30 2 * * *", after: "2026-11-22T02:30:00Z", count: 1) == [utc("2026-11-23T02:30:00Z")])
        #expect(try fires("30 2 * * *", after: "2026-11-22T02:29:59Z", count: 1) == [utc("2026-11-22T02:30:00Z")])
    }

    @Test("lists, ranges, steps and names")
    func listsRangesSteps() throws {
        // Hours 9, 13, 17 on weekdays; 2026-11-20 is a Friday.
        #expect(try fires("0 0 9-17/4 * * mon-fri", after: "2026-11-20T13:00:00Z", count: 3)
            == [utc("2026-11-20T17:00:00Z"), utc("2026-11-23T09:00:00Z"), utc("2026-11-23T13:00:00Z")])
        #expect(try fires("0 12 1 jan,JUL *", after: "2026-02-01T00:00:00Z", count: 2)
            == [utc("2026-07-01T12:00:00Z"), utc("2027-01-01T12:00:00Z")])
        #expect(try fires("10/20 * * * *", after: "2026-11-22T10:00:00Z", count: 3)
            == [utc("2026-11-22T10:10:00Z"), utc("2026-11-22T10:30:00Z"), utc("2026-11-22T10:50:00Z")])
        // 7 is Sunday too; 2026-11-22 is a Sunday.
        #expect(try fires("0 8 * * 7", after: "2026-11-20T00:00:00Z", count: 1) == [utc("2026-11-22T08:00:00Z")])
    }

    @Test("shortcuts", arguments: [
        ("@hourly", "2026-11-22T11:00:00Z"), ("@daily", "2026-11-23T00:00:00Z"), ("@midnight", "2026-11-23T00:00:00Z"),
        ("@weekly", "2026-11-29T00:00:00Z"), ("@monthly", "2026-12-01T00:00:00Z"), ("@yearly", "2027-01-01T00:00:00Z"),
    ])
    func shortcuts(text: String, expected: String) throws {
        #expect(try fires(text, after: "2026-11-22T10:20:00Z", count: 1) == [utc(expected)])
    }

    @Test("the 31st skips short months; Feb 29 waits for a leap year")
    func monthEnds() throws {
        #expect(try fires("0 0 31 * *", after: "2026-01-31T00:00:00Z", count: 2)
            == [utc("2026-03-31T00:00:00Z"), utc("2026-05-31T00:00:00Z")])
        #expect(try fires("0 0 29 2 *", after: "2026-03-01T00:00:00Z", count: 2)
            == [utc("2028-02-29T00:00:00Z"), utc("2032-02-29T00:00:00Z")])
        #expect(try CronExpression.parse("0 0 30 2 *").next(after: utc("2026-01-01T00:00:00Z"), timeZone: utcZone) == nil)
    }

    @Test("day of month OR day of week when both are restricted")
    func dayOrSemantics() throws {
        // The 15th, or any Friday: Fri 13th, Sun 15th, Fri 20th.
        #expect(try fires("0 0 15 * fri", after: "2026-11-06T00:00:00Z", count: 3)
            == [utc("2026-11-13T00:00:00Z"), utc("2026-11-15T00:00:00Z"), utc("2026-11-20T00:00:00Z")])
        // With day of month '*', only Fridays.
        #expect(try fires("0 0 * * fri", after: "2026-11-06T00:00:00Z", count: 2)
            == [utc("2026-11-13T00:00:00Z"), utc("2026-11-20T00:00:00Z")])
    }

    @Test("spring forward in Berlin: a time in the gap fires when the gap ends")
    func springForwardFixedTime() throws {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        #expect(try fires("0 30 2 * * *", after: "2026-03-28T12:00:00Z", count: 2, in: berlin)
            == [utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:30:00Z")])
        // Asked one second before the jump, 02:00 (which does not exist) fires as the clocks change.
        #expect(try fires("0 0 2 * * *", after: "2026-03-29T00:59:59Z", count: 1, in: berlin) == [utc("2026-03-29T01:00:00Z")])
        #expect(try fires("0 0 * * * *", after: "2026-03-28T23:30:00Z", count: 3, in: berlin)
            == [utc("2026-03-29T00:00:00Z"), utc("2026-03-29T01:00:00Z"), utc("2026-03-29T02:00:00Z")])
    }

    @Test("fall back in Berlin: a fixed time fires once, a wildcard hour follows elapsed time")
    func fallBack() throws {
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET (01:00 UTC); 02:30 happens twice.
        #expect(try fires("0 30 2 * * *", after: "2026-10-24T12:00:00Z", count: 2, in: berlin)
            == [utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")])
        #expect(try fires("0 */30 * * * *", after: "2026-10-24T23:50:00Z", count: 5, in: berlin)
            == [utc("2026-10-25T00:00:00Z"), utc("2026-10-25T00:30:00Z"), utc("2026-10-25T01:00:00Z"),
                utc("2026-10-25T01:30:00Z"), utc("2026-10-25T02:00:00Z")])
        // Daily at 02:00 local is one day later in UTC terms across the change: 25 hours apart.
        let daily = try fires("0 2 * * *", after: "2026-10-24T12:00:00Z", count: 2, in: berlin)
        #expect(daily == [utc("2026-10-25T00:00:00Z"), utc("2026-10-26T01:00:00Z")])
    }

    @Test("a wildcard hour matches exactly the minutes whose local time matches, across both DST changes",
          arguments: ["*/7 * * * *", "13 * * * *", "0,59 * * * *", "30 */2 * * *"])
    func wildcardHourAgainstBruteForce(text: String) throws {
        let cron = try CronExpression.parse(text)
        for start in ["2026-03-28T22:00:00Z", "2026-10-24T22:00:00Z"] {
            let begin = Int64(utc(start).timeIntervalSince1970)
            var expected: [Date] = []
            for minute in Int64(1)...(8 * 60) {
                let instant = begin + minute * 60
                let local = WallClock.local(instant, berlin)
                let day = WallClock.floorDiv(local, 86_400)
                let secondOfDay = local - day * 86_400
                if cron.minutes.contains(Int(secondOfDay / 60 % 60)), cron.hours.contains(Int(secondOfDay / 3600)),
                   cron.matches(day: day) {
                    expected.append(Date(timeIntervalSince1970: TimeInterval(instant)))
                }
            }
            var actual: [Date] = []
            var at = utc(start)
            while let next = cron.next(after: at, timeZone: berlin), next <= expected.last! {
                actual.append(next)
                at = next
            }
            #expect(actual == expected, "\(text) from \(start)")
        }
    }

    @Test("errors name the field and say what is accepted", arguments: [
        ("61 0 * * *", "minute"), ("0 24 * * *", "hour"), ("1 2 3", "3 fields"), ("0 0 * * funday", "day of week"),
        ("@sometimes", "@hourly"), ("5-1 * * * *", "backwards"), ("*/0 * * * *", "step"),
        ("0 0 0 32 * *", "day of month"), ("0 0 * 13 *", "out of range"), ("0 0 * foo *", "jan…dec"),
    ])
    func errors(text: String, fragment: String) {
        do {
            _ = try CronExpression.parse(text)
            Issue.record("'\(text)' parsed")
        } catch let error as CronExpression.ParseError {
            #expect(error.message.contains(fragment), "\(error.message)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}

@Suite("Durations and priorities")
struct DurationPriorityTests {
    @Test("durations", arguments: [
        ("30s", 30.0), ("5m", 300), ("1h", 3600), ("1d", 86_400), ("1w", 604_800), ("1h30m", 5400), ("90", 90),
        ("1.5h", 5400), ("2d12h", 216_000),
    ])
    func durations(text: String, seconds: Double) throws {
        #expect(try DurationParser.parse(text) == seconds)
    }

    @Test("bad durations", arguments: ["", "5x", "h", "1h30", "-5m", "1h1h", "1y"])
    func badDurations(text: String) {
        #expect(throws: DurationParser.ParseError.self) { try DurationParser.parse(text) }
    }

    @Test("formatting")
    func format() {
        #expect(DurationParser.format(5400) == "1h30m")
        #expect(DurationParser.format(72_000) == "20h")
        #expect(DurationParser.format(0) == "0s")
        #expect(DurationParser.approximate(3 * 3600 + 59) == "3h")
        #expect(DurationParser.approximate(26 * 3600) == "1d2h")
    }

    @Test("priorities parse, order and print")
    func priorities() throws {
        let names = ["idle", "low", "normal", "high", "next", "immediate"]
        let parsed = try names.map(Priority.parse)
        #expect(parsed == parsed.sorted())
        #expect(parsed.map(\.description) == names)
        #expect(try Priority.parse("60") > .normal)
        #expect(try Priority.parse("60") < .high)
        #expect(try Priority.parse("60").description == "60")
        #expect(try Priority.parse("HIGH") == .high)
        #expect(throws: PriorityError.self) { try Priority.parse("101") }
        #expect(throws: PriorityError.self) { try Priority.parse("urgent") }
    }

    @Test("schedule strings: interval or cron")
    func scheduleStrings() throws {
        #expect(try Schedule.parse("1h") == .interval(3600))
        let cron = try CronExpression.parse("0 30 2 * * *")
        #expect(try Schedule.parse("0 30 2 * * *") == .cron(cron))
        #expect(try Schedule.parse("@daily").description == "@daily")
        #expect(throws: ScheduleError.self) { try Schedule.parse("often") }
        #expect(throws: ScheduleError.self) { try Schedule.parse("0s") }
    }
}

@Suite("Scheduler")
struct SchedulerTests {
    let docs = ScheduleKey(backup: "documents", task: .backup, index: 0)
    let docsCron = ScheduleKey(backup: "documents", task: .backup, index: 1)
    let photos = ScheduleKey(backup: "photos", task: .backup, index: 0)

    @Test("interval: first fire one interval after start, then one after each fire")
    func interval() {
        let start = utc("2026-11-22T08:00:00Z")
        let schedules: [ScheduleKey: Schedule] = [docs: .interval(3600)]
        let early = Scheduler.due(schedules: schedules, lastFired: [:], startedAt: start,
                                  now: utc("2026-11-22T08:59:59Z"), catchUp: true, timeZone: utcZone)
        #expect(early.due.isEmpty)
        #expect(early.nextWake == utc("2026-11-22T09:00:00Z"))
        let onTime = Scheduler.due(schedules: schedules, lastFired: [:], startedAt: start,
                                   now: utc("2026-11-22T09:00:00Z"), catchUp: true, timeZone: utcZone)
        #expect(onTime.due == [DueTrigger(key: docs, trigger: .schedule, scheduledAt: utc("2026-11-22T09:00:00Z"))])
        #expect(onTime.nextWake == utc("2026-11-22T10:00:00Z"))
        let after = Scheduler.due(schedules: schedules, lastFired: [docs: utc("2026-11-22T09:00:03Z")], startedAt: start,
                                  now: utc("2026-11-22T09:30:00Z"), catchUp: true, timeZone: utcZone)
        #expect(after.due.isEmpty)
        #expect(after.nextWake == utc("2026-11-22T10:00:03Z"))
    }

    @Test("several schedules: each decides on its own, the earliest sets the wake-up")
    func several() throws {
        let start = utc("2026-11-22T00:00:00Z")
        let schedules: [ScheduleKey: Schedule] = [
            docs: .interval(3600), docsCron: .cron(try CronExpression.parse("0 30 2 * * *")), photos: .interval(600),
        ]
        let last: [ScheduleKey: Date] = [docs: utc("2026-11-22T01:40:00Z"), photos: utc("2026-11-22T02:20:00Z")]
        let result = Scheduler.due(schedules: schedules, lastFired: last, startedAt: start,
                                   now: utc("2026-11-22T02:30:00Z"), catchUp: true, timeZone: utcZone)
        #expect(result.due.map(\.key) == [docsCron, photos])
        #expect(result.due.allSatisfy { $0.trigger == .schedule })
        #expect(result.nextWake == utc("2026-11-22T02:40:00Z"))
    }

    @Test("catch-up: missed slots while down fire once at startup, then the schedule resumes")
    func catchUpOnce() {
        let start = utc("2026-11-22T08:00:00Z")
        let schedules: [ScheduleKey: Schedule] = [docs: .interval(3600)]
        let threeDaysAgo = utc("2026-11-19T08:00:00Z")
        let first = Scheduler.due(schedules: schedules, lastFired: [docs: threeDaysAgo], startedAt: start,
                                  now: start, catchUp: true, timeZone: utcZone)
        #expect(first.due == [DueTrigger(key: docs, trigger: .catchUp, scheduledAt: utc("2026-11-19T09:00:00Z"))])
        // The daemon records the fire; the next evaluation finds nothing more to catch up.
        let second = Scheduler.due(schedules: schedules, lastFired: [docs: start], startedAt: start,
                                   now: utc("2026-11-22T08:00:01Z"), catchUp: true, timeZone: utcZone)
        #expect(second.due.isEmpty)
        #expect(second.nextWake == utc("2026-11-22T09:00:00Z"))
    }

    @Test("catch-up of a cron schedule fires once; without catch-up the missed slots are dropped")
    func catchUpCron() throws {
        let schedules: [ScheduleKey: Schedule] = [docsCron: .cron(try CronExpression.parse("0 30 2 * * *"))]
        let last = [docsCron: utc("2026-11-19T02:30:00Z")]
        let start = utc("2026-11-22T10:00:00Z")
        let on = Scheduler.due(schedules: schedules, lastFired: last, startedAt: start, now: start, catchUp: true, timeZone: utcZone)
        #expect(on.due.count == 1)
        #expect(on.due.first?.trigger == .catchUp)
        let off = Scheduler.due(schedules: schedules, lastFired: last, startedAt: start, now: start, catchUp: false, timeZone: utcZone)
        #expect(off.due.isEmpty)
        #expect(off.nextWake == utc("2026-11-23T02:30:00Z"))
    }

    @Test("without catch-up an interval keeps its phase; with nothing missed there is no catch-up")
    func noCatchUp() {
        let start = utc("2026-11-22T08:10:00Z")
        let schedules: [ScheduleKey: Schedule] = [docs: .interval(3600)]
        let off = Scheduler.due(schedules: schedules, lastFired: [docs: utc("2026-11-22T06:00:00Z")], startedAt: start,
                                now: start, catchUp: false, timeZone: utcZone)
        #expect(off.due.isEmpty)
        #expect(off.nextWake == utc("2026-11-22T09:00:00Z"))
        let recent = Scheduler.due(schedules: schedules, lastFired: [docs: utc("2026-11-22T07:30:00Z")], startedAt: start,
                                   now: start, catchUp: true, timeZone: utcZone)
        #expect(recent.due.isEmpty)
        #expect(recent.nextWake == utc("2026-11-22T08:30:00Z"))
    }
}
