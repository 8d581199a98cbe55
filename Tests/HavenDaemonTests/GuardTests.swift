import Foundation
import Testing
@testable import HavenDaemon

@Suite("Minimum-interval guard")
struct GuardTests {
    let now = utc("2026-11-22T12:00:00Z")
    let lastSuccess = utc("2026-11-22T09:00:00Z")

    @Test("skips when the last success is younger than min_interval, saying until when")
    func skip() {
        let d = RunGuard.decide(trigger: .schedule, lastSuccess: lastSuccess, lastRunInterrupted: false,
                                minInterval: 20 * 3600, force: false, now: now, timeZone: utcZone)
        #expect(d == .skip(reason: "last successful backup 3h ago, min_interval 20h: next allowed at 2026-11-23 05:00",
                           nextAllowed: utc("2026-11-23T05:00:00Z")))
        #expect(!d.shouldRun)
        let local = RunGuard.decide(trigger: .api, lastSuccess: lastSuccess, lastRunInterrupted: false,
                                    minInterval: 20 * 3600, force: false, now: now, timeZone: berlin)
        #expect(local.reason.hasSuffix("next allowed at 2026-11-23 06:00"))
    }

    @Test("runs once min_interval has passed")
    func run() {
        let d = RunGuard.decide(trigger: .cli, lastSuccess: lastSuccess, lastRunInterrupted: false,
                                minInterval: 3 * 3600, force: false, now: now, timeZone: utcZone)
        #expect(d == .run(reason: "last successful backup 3h ago, min_interval 3h"))
    }

    @Test("an interrupted run always continues")
    func interrupted() {
        let d = RunGuard.decide(trigger: .schedule, lastSuccess: lastSuccess, lastRunInterrupted: true,
                                minInterval: 20 * 3600, force: false, now: now, timeZone: utcZone)
        #expect(d.shouldRun)
        #expect(d.reason.contains("interrupted"))
        let resume = RunGuard.decide(trigger: .resume, lastSuccess: lastSuccess, lastRunInterrupted: false,
                                     minInterval: 20 * 3600, force: false, now: now, timeZone: utcZone)
        #expect(resume.shouldRun)
    }

    @Test("force overrides; no history or no min_interval runs")
    func forceAndDefaults() {
        #expect(RunGuard.decide(trigger: .api, lastSuccess: lastSuccess, lastRunInterrupted: false,
                                minInterval: 20 * 3600, force: true, now: now, timeZone: utcZone).shouldRun)
        #expect(RunGuard.decide(trigger: .api, lastSuccess: nil, lastRunInterrupted: false,
                                minInterval: 20 * 3600, force: false, now: now, timeZone: utcZone)
            == .run(reason: "no successful backup yet"))
        #expect(RunGuard.decide(trigger: .api, lastSuccess: lastSuccess, lastRunInterrupted: false,
                                minInterval: nil, force: false, now: now, timeZone: utcZone).shouldRun)
    }
}

@Suite("Time windows and debouncing")
struct WindowTests {
    @Test("a window across midnight")
    func acrossMidnight() throws {
        let w = try TimeWindow(start: "22:00", end: "04:30")
        #expect(w.contains(utc("2026-11-22T23:00:00Z"), timeZone: utcZone))
        #expect(w.contains(utc("2026-11-22T02:00:00Z"), timeZone: utcZone))
        #expect(w.contains(utc("2026-11-22T22:00:00Z"), timeZone: utcZone))
        #expect(!w.contains(utc("2026-11-22T04:30:00Z"), timeZone: utcZone))
        #expect(!w.contains(utc("2026-11-22T12:00:00Z"), timeZone: utcZone))
        #expect(w.nextOpen(after: utc("2026-11-22T12:00:00Z"), timeZone: utcZone) == utc("2026-11-22T22:00:00Z"))
        #expect(w.nextOpen(after: utc("2026-11-22T23:00:00Z"), timeZone: utcZone) == utc("2026-11-22T23:00:00Z"))
        #expect(w.closes(after: utc("2026-11-22T23:00:00Z"), timeZone: utcZone) == utc("2026-11-23T04:30:00Z"))
        #expect(w.closes(after: utc("2026-11-22T01:00:00Z"), timeZone: utcZone) == utc("2026-11-22T04:30:00Z"))
    }

    @Test("a daytime window in local time")
    func local() throws {
        let w = try TimeWindow(start: "01:00", end: "06:00")
        // 00:30 UTC is 01:30 in Berlin (CET).
        #expect(w.contains(utc("2026-11-22T00:30:00Z"), timeZone: berlin))
        #expect(!w.contains(utc("2026-11-22T00:30:00Z"), timeZone: utcZone))
        #expect(w.nextOpen(after: utc("2026-11-22T06:00:00Z"), timeZone: berlin) == utc("2026-11-23T00:00:00Z"))
        #expect(w.description == "01:00–06:00")
    }

    @Test("bad times are rejected", arguments: ["25:00", "1:5", "noon", "12:60", ""])
    func badTimes(text: String) {
        #expect(throws: TimeWindowError.self) { try TimeWindow(start: text, end: "06:00") }
    }

    @Test("debounce: min wait after the last change, capped by max wait after the first")
    func debounce() {
        let d = Debouncer(minWait: 10, maxWait: 300)
        let first = utc("2026-11-22T10:00:00Z")
        #expect(d.fireTime(firstChange: first, lastChange: first.addingTimeInterval(5)) == first.addingTimeInterval(15))
        // Changes keep coming: the max wait wins.
        #expect(d.fireTime(firstChange: first, lastChange: first.addingTimeInterval(295)) == first.addingTimeInterval(300))
        #expect(!d.isDue(firstChange: first, lastChange: first.addingTimeInterval(5), now: first.addingTimeInterval(14)))
        #expect(d.isDue(firstChange: first, lastChange: first.addingTimeInterval(5), now: first.addingTimeInterval(15)))
    }
}
