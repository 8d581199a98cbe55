import Foundation
import HavenDaemon
import HavenTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The real daemon process: API triggers, queue, hooks, watch, guard, crashes and signals.
@Suite("Daemon", .serialized)
struct DaemonTests {
    @Test("a backup asked through the API goes pending → running → finished, and a second one pends meanwhile")
    func queueThroughAPI() async throws {
        let s = try await DaemonSetup("daemon-queue")
        // The slow backup's before-hook waits until the test opens the gate, so the order of events does
        // not depend on how busy the machine is.
        let gate = s.tmp.sub("gate")
        try s.writeConfig(backups: """
          slow:
            paths: [\(s.source)]
            repositories: [main]
            hooks:
              before:
                - command: "while [ ! -f \(gate) ]; do sleep 0.1; done"
                  timeout: 2m
          quick:
            paths: [\(s.source)]
            repositories: [main]
        """)
        let d = try await s.startDaemon()
        defer { Task { await d.stop() } }
        let first = try await d.run("slow")
        #expect(first.outcome == "queued")
        let slowID = try #require(first.job?.id)
        _ = try await d.waitFor(slowID, timeout: 30) { $0.state == .running }
        let second = try await d.run("quick")
        let quickID = try #require(second.job?.id)
        // One job per repository: the quick backup waits while the slow one runs.
        let whileRunning = try await d.job(quickID)
        #expect(whileRunning.state == .pending)
        let status = try await d.get("/api/v1/status")
        let groups = status.object["jobs"] as? [String: Any]
        #expect((groups?["running"] as? [Any])?.count == 1)
        #expect((groups?["pending"] as? [Any])?.count == 1)
        // Asking again for the pending job merges into it.
        let again = try await d.run("quick", query: "?priority=high")
        #expect(again.outcome == "merged")
        #expect(again.job?.id == quickID)
        #expect(again.job?.priority == "high")

        try Fixture.write(gate, [])
        let slow = try await d.waitUntilEnded(slowID)
        #expect(slow.state == .finished, "\(slow)")
        #expect(slow.results.first?.snapshotID != nil)
        let quick = try await d.waitUntilEnded(quickID)
        #expect(quick.state == .finished)
        let quickStart = try #require(quick.startedAt)
        let slowEnd = try #require(slow.finishedAt)
        #expect(quickStart >= slowEnd)
        #expect(try await s.snapshotCount() == 2)
        // The log of the job is kept and served.
        let log = try await d.get("/api/v1/jobs/\(slowID)/log")
        let lines = (log.object["lines"] as? [[String: Any]] ?? []).compactMap { $0["message"] as? String }
        #expect(lines.contains { $0.contains("before hook 1 succeeded") })
        #expect(lines.contains { $0.contains("backup into main finished") })
        // Every event line about the job names its trigger, backup and repository.
        let finished = d.events.first { ($0["msg"] as? String)?.contains("backup into main finished") == true && ($0["job"] as? Int) == Int(slowID) }
        #expect(finished?["trigger"] as? String == "api")
        #expect(finished?["backup"] as? String == "slow")
        #expect(finished?["repository"] as? String == "main")
        #expect(finished?["step"] as? String == "backup")
        // Finished jobs can be cleared.
        let cleared = try await d.post("/api/v1/jobs/clear?state=finished")
        #expect(cleared.status == 200)
        #expect(try await d.jobs().isEmpty)
        await d.stop()
    }

    @Test("a failing before-hook: abort skips the backup, continue backs up but fails the job, ignore finishes",
          arguments: ["abort", "continue", "ignore"])
    func beforeHookPolicies(policy: String) async throws {
        let s = try await DaemonSetup("daemon-hook-\(policy)")
        let marker = s.tmp.sub("failure-hook-ran")
        try s.writeConfig(backups: """
          docs:
            paths: [\(s.source)]
            repositories: [main]
            hooks:
              before:
                - command: "echo preparing; exit 7"
                  on_failure: \(policy)
              failure: ["touch \(marker)"]
        """)
        let d = try await s.startDaemon()
        defer { Task { await d.stop() } }
        let id = try #require(try await d.run("docs").job?.id)
        let job = try await d.waitUntilEnded(id)
        let snapshots = try await s.snapshotCount()
        switch policy {
        case "abort":
            #expect(job.state == .failed)
            #expect(snapshots == 0)
            #expect(FileManager.default.fileExists(atPath: marker))
        case "continue":
            #expect(job.state == .failed)
            #expect(job.error?.contains("exited with code 7") == true, "\(job)")
            #expect(snapshots == 1)
        default:
            #expect(job.state == .finished)
            #expect(snapshots == 1)
        }
        await d.stop()
    }

    @Test("a file change starts a backup once the changes settle")
    func watchTriggersDebouncedBackup() async throws {
        let s = try await DaemonSetup("daemon-watch")
        try s.writeConfig(backups: """
          docs:
            paths: [\(s.source)]
            repositories: [main]
            watch:
              min_wait: 2s
              max_wait: 20s
        """)
        let d = try await s.startDaemon()
        defer { Task { await d.stop() } }
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await d.jobs().isEmpty)
        // A burst of changes, 100 ms apart: one backup, after the burst. The gaps actually taken are
        // measured: on a starved machine one may reach min_wait, and then two backups are right.
        var longestGap: TimeInterval = 0
        var previous = Date()
        for i in 0..<5 {
            try Fixture.write(s.source + "/new\(i).txt", Array("change \(i)".utf8))
            if i > 0 { longestGap = max(longestGap, Date().timeIntervalSince(previous)) }
            previous = Date()
            try await Task.sleep(for: .milliseconds(100))
        }
        let lastChange = previous
        let deadline = Date().addingTimeInterval(60)
        var jobs: [JobRecord] = []
        while Date() < deadline {
            jobs = try await d.jobs()
            // The backup that covers the last change (with a split burst, an earlier one ran too).
            if jobs.contains(where: { $0.state == .finished && $0.createdAt >= lastChange }) { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        if longestGap < 2 {
            #expect(jobs.count == 1, "\(jobs)")
        } else {
            #expect((1...2).contains(jobs.count), "a gap of \(longestGap) s split the burst: \(jobs)")
        }
        #expect(jobs.first?.trigger == "watch")
        #expect(jobs.first?.state == .finished)
        // The change wakes the sleeping scheduler: the job is queued at min_wait (2 s) after the burst,
        // not at the loop's next idle pass (5 s).
        let queued = try #require(jobs.first?.createdAt)
        #expect(queued.timeIntervalSince(lastChange) < 4, "queued \(queued.timeIntervalSince(lastChange)) s after the last change")
        let ls = try await s.cli.ok(["-r", s.repo, "ls", "latest"])
        #expect(ls.stdout.contains("new4.txt"))
        await d.stop()
    }

    @Test("min_interval: an early run is skipped with a reason, force runs anyway")
    func guardSkipsEarlyRun() async throws {
        let s = try await DaemonSetup("daemon-guard")
        try s.writeConfig(backups: """
          docs:
            paths: [\(s.source)]
            repositories: [main]
            min_interval: 20h
        """)
        let d = try await s.startDaemon()
        defer { Task { await d.stop() } }
        let first = try await d.waitUntilEnded(try #require(try await d.run("docs").job?.id))
        #expect(first.state == .finished)
        let second = try await d.waitUntilEnded(try #require(try await d.run("docs").job?.id))
        #expect(second.state == .skipped)
        #expect(second.error?.contains("min_interval 20h") == true, "\(second)")
        let forced = try await d.waitUntilEnded(try #require(try await d.run("docs", query: "?force=true").job?.id))
        #expect(forced.state == .finished)
        #expect(try await s.snapshotCount() == 2)
        await d.stop()
    }

    @Test("SIGKILL during a backup: after a restart the job is interrupted, resumed despite min_interval, and restic checks the repository")
    func killDuringBackupResumes() async throws {
        let s = try await DaemonSetup("daemon-kill")
        try s.writeConfig(backups: """
          docs:
            paths: [\(s.source)]
            repositories: [main]
            min_interval: 20h
            limit_upload: 2048
        """)
        let d = try await s.startDaemon()
        // A first backup succeeds, so min_interval would hold back any further run for 20 hours.
        let first = try await d.waitUntilEnded(try #require(try await d.run("docs").job?.id))
        #expect(first.state == .finished)
        // Then enough data, uploaded slowly, that the forced backup is surely running when the daemon dies.
        try Fixture.mkdir(s.source + "/big")
        for i in 0..<6 { try Fixture.write(s.source + "/big/blob\(i)", SeededRandom.bytes(seed: UInt64(100 + i), 3 << 20)) }
        let id = try #require(try await d.run("docs", query: "?force=true").job?.id)
        _ = try await d.waitFor(id, timeout: 60) { ($0.progress?.bytesDone ?? 0) > 0 }
        let firstDaemonPID = d.process.processIdentifier
        d.signal(SIGKILL)
        _ = await d.waitForExit(timeout: 10)
        await d.stop()
        // The child backup stops when the daemon dies (it must not write on behind the next daemon's back).
        try await Task.sleep(for: .seconds(2))

        let d2 = try await s.startDaemon()
        defer { Task { await d2.stop() } }
        let old = try await d2.job(id)
        #expect(old.state == .interrupted, "\(old)")
        let deadline = Date().addingTimeInterval(120)
        var resumed: JobRecord?
        while Date() < deadline {
            resumed = try await d2.jobs().first { $0.resumes == id }
            if let r = resumed, r.state.isDone { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let r = try #require(resumed, "no resume job was queued: \(d2.log.suffix(20))")
        #expect(r.trigger == "resume")
        #expect(r.state == .finished, "\(r)")
        await d2.stop()
        // No backup process of the first daemon is left running (it got SIGTERM when its parent died).
        var leftover = ""
        for _ in 0..<150 {
            leftover = try await Run.process("/usr/bin/pgrep", ["-af", "haven backup \(s.source)"]).stdout
            if leftover.isEmpty { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(leftover.isEmpty, "backup processes outlived their daemon: \(leftover)")
        let locks = (try? FileManager.default.contentsOfDirectory(atPath: s.repo + "/locks")) ?? []
        var lockInfo = ""
        for l in locks { lockInfo += try await s.cli.run(["-r", s.repo, "cat", "lock", l]).stdout }
        #expect(locks.isEmpty, "locks left behind: \(lockInfo) — first daemon pid \(firstDaemonPID), second \(d2.process.processIdentifier)")
        try await s.cli.resticOK(["-r", s.repo, "check", "--read-data"])
        let restored = s.tmp.sub("restored")
        try await s.cli.resticOK(["-r", s.repo, "restore", "latest", "--target", restored])
        let a = try TreeSnapshot(root: s.source)
        let b = try TreeSnapshot(root: restored + s.source)
        #expect(a.differences(from: b).isEmpty)
    }

    @Test("SIGTERM during a backup stops the daemon within seconds, and the job resumes at the next start")
    func sigtermStopsQuickly() async throws {
        let s = try await DaemonSetup("daemon-term")
        try Fixture.mkdir(s.source + "/big")
        for i in 0..<6 { try Fixture.write(s.source + "/big/blob\(i)", SeededRandom.bytes(seed: UInt64(200 + i), 3 << 20)) }
        try s.writeConfig(backups: """
          docs:
            paths: [\(s.source)]
            repositories: [main]
            limit_upload: 2048
        """)
        let d = try await s.startDaemon()
        let id = try #require(try await d.run("docs").job?.id)
        _ = try await d.waitFor(id, timeout: 60) { ($0.progress?.bytesDone ?? 0) > 0 }
        let start = Date()
        d.signal(SIGTERM)
        let status = await d.waitForExit(timeout: 15)
        #expect(status == 0, "the daemon did not exit cleanly within 15 s")
        #expect(Date().timeIntervalSince(start) < 15)
        await d.stop()
        // No lock left behind: an exclusive command works at once.
        try await s.cli.ok(["-r", s.repo, "prune", "--dry-run"])
        let d2 = try await s.startDaemon()
        defer { Task { await d2.stop() } }
        #expect(try await d2.job(id).state == .interrupted)
        let deadline = Date().addingTimeInterval(120)
        var resumed: JobRecord?
        while Date() < deadline {
            resumed = try await d2.jobs().first { $0.resumes == id && $0.state.isDone }
            if resumed != nil { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(resumed?.state == .finished)
        await d2.stop()
        try await s.cli.resticOK(["-r", s.repo, "check"])
    }

    @Test("a schedule with seconds fires, and retention after the backup keeps the last 2 snapshots")
    func cronWithSecondsAndRetention() async throws {
        let s = try await DaemonSetup("daemon-cron")
        try s.writeConfig(backups: """
          docs:
            paths: [\(s.source)]
            repositories: [main]
            schedules: ["*/2 * * * * *"]
            retention: {keep_last: 2}
        """)
        let d = try await s.startDaemon()
        defer { Task { await d.stop() } }
        let deadline = Date().addingTimeInterval(90)
        var finished: [JobRecord] = []
        while Date() < deadline {
            finished = try await d.jobs().filter { $0.state == .finished }
            if finished.count >= 3 { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(finished.count >= 3)
        #expect(finished.allSatisfy { $0.trigger == "schedule" })
        await d.stop()
        #expect(try await s.snapshotCount() == 2)
    }

    @Test("an idle daemon sleeps until its next deadline instead of polling; an API request still starts at once")
    func idleLoopSleeps() async throws {
        let s = try await DaemonSetup("daemon-idle")
        try s.writeConfig(backups: """
          manual:
            paths: [\(s.source)]
            repositories: [main]
        """)
        let d = try await s.startDaemon()
        defer { Task { await d.stop() } }
        func passes() async throws -> Int {
            let text = String(decoding: try await d.get("/metrics").body, as: UTF8.self)
            let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("haven_scheduler_passes_total ") })
            return Int(try #require(Double(line.split(separator: " ")[1])))
        }
        let before = try await passes()
        try await Task.sleep(for: .seconds(3))
        let after = try await passes()
        // Polling every half second made 6 passes here; the idle loop makes at most one.
        #expect(after - before <= 1, "\(after - before) passes in 3 s")
        let job = try #require(try await d.run("manual").job?.id)
        let ended = try await d.waitUntilEnded(job)
        #expect(ended.state == .finished, "\(ended)")
        let waited = try #require(ended.startedAt).timeIntervalSince(ended.createdAt)
        #expect(waited < 2, "the job waited \(waited) s to start")
        await d.stop()
    }

    @Test("retention, prune and check run on their own schedules, each as its own job")
    func maintenanceSchedules() async throws {
        let s = try await DaemonSetup("daemon-maint")
        try s.writeConfig(backups: """
          docs:
            paths: [\(s.source)]
            repositories: [main]
            schedules: ["*/2 * * * * *"]
            retention:
              keep_last: 1
              schedules: ["*/3 * * * * *"]
            prune:
              schedules: ["*/3 * * * * *"]
              max_unused: 0
            check:
              schedules: ["*/3 * * * * *"]
              read_data_subset: 1/2
        """)
        let d = try await s.startDaemon()
        defer { Task { await d.stop() } }
        let deadline = Date().addingTimeInterval(90)
        var done: Set<JobKind> = []
        while Date() < deadline {
            done = Set(try await d.jobs().filter { $0.state == .finished }.map(\.kind))
            if done == Set(JobKind.allCases) { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        let all = try await d.jobs().map { "\($0.kind) \($0.state) \($0.error ?? "")" }
        #expect(done == Set(JobKind.allCases), "\(all)")
        let failed = try await d.jobs().filter { $0.state == .failed }
        #expect(failed.isEmpty, "\(failed)")
        await d.stop()
        // Retention ran separately from the backups: at most the backups made since the last forget remain.
        try await s.cli.resticOK(["-r", s.repo, "check"])
    }

    @Test("run --local: backs up when due, then prints why it does nothing and exits 0")
    func localRun() async throws {
        let s = try await DaemonSetup("daemon-local")
        try s.writeConfig(backups: """
          docs:
            paths: [\(s.source)]
            repositories: [main]
            min_interval: 1h
        """)
        let first = try await s.cli.run(["run", "docs", "--config", s.configPath, "--local"], env: s.env)
        #expect(first.status == 0, "\(first)")
        #expect(first.stdout.contains("backup docs finished"))
        let second = try await s.cli.run(["run", "docs", "--config", s.configPath, "--local"], env: s.env)
        #expect(second.status == 0)
        #expect(second.stdout.contains("nothing to do"), "\(second)")
        #expect(second.stdout.split(separator: "\n").count == 1)
        #expect(try await s.snapshotCount() == 1)
        // The daemon sees what the local run recorded in the shared state.
        let d = try await s.startDaemon()
        defer { Task { await d.stop() } }
        let backups = try await d.get("/api/v1/backups")
        let docs = (backups.object["backups"] as? [[String: Any]])?.first
        #expect(docs?["last_success"] != nil, "\(String(decoding: backups.body, as: UTF8.self))")
        let skipped = try await d.waitUntilEnded(try #require(try await d.run("docs").job?.id))
        #expect(skipped.state == .skipped)
        await d.stop()
    }

    @Test("config check points at the line and key of each mistake")
    func configCheck() async throws {
        let s = try await DaemonSetup("daemon-config")
        try Fixture.write(s.configPath, Array("""
        state_dir: \(s.state)
        repositories:
          main:
            url: \(s.repo)
            password_file: \(s.tmp.sub("pass"))
        backups:
          docs:
            paths: [\(s.source)]
            repositories: [main, elsewhere]
            schedule: ["1h"]
            min_interval: soon
        """.utf8))
        let r = try await s.cli.run(["config", "check", "--config", s.configPath])
        #expect(r.status == 1)
        #expect(r.stderr.contains(":9:"), "\(r)")
        #expect(r.stderr.contains("elsewhere"))
        #expect(r.stderr.contains("backups.docs.schedule"))
        #expect(r.stderr.contains("schedules"))
        #expect(r.stderr.contains(":11:"))
        // The daemon refuses the same config with the same messages.
        let daemon = try await s.cli.run(["daemon", "--config", s.configPath])
        #expect(daemon.status == 1)
        #expect(daemon.stderr.contains("backups.docs.min_interval"))
    }

    @Test("API: JSON errors for unknown names and bad parameters")
    func apiErrors() async throws {
        let s = try await DaemonSetup("daemon-api")
        try s.writeConfig(backups: """
          docs:
            paths: [\(s.source)]
            repositories: [main]
        """)
        let d = try await s.startDaemon()
        defer { Task { await d.stop() } }
        let unknown = try await d.post("/api/v1/backups/nope/run")
        #expect(unknown.status == 404)
        #expect((unknown.object["error"] as? String)?.contains("nope") == true)
        #expect(try await d.post("/api/v1/backups/docs/run?priority=urgent").status == 400)
        #expect(try await d.get("/api/v1/jobs/abc").status == 400)
        #expect(try await d.get("/api/v1/jobs/999").status == 404)
        #expect(try await d.get("/api/v1/repositories/nope/snapshots").status == 404)
        let snaps = try await d.get("/api/v1/repositories/main/snapshots")
        #expect(snaps.status == 200)
        let check = try await d.post("/api/v1/repositories/main/check?read_data_subset=50%25")
        #expect(check.status == 200 || check.status == 202)
        let checkJob = try JSONDecoder.haven.decode(EnqueueResult.self, from: check.body)
        let ended = try await d.waitUntilEnded(try #require(checkJob.job?.id))
        #expect(ended.state == .finished, "\(ended)")
        let metrics = try await d.get("/metrics")
        let text = String(decoding: metrics.body, as: UTF8.self)
        #expect(text.contains("haven_up 1"))
        #expect(text.contains("haven_jobs_ended_total{kind=\"check\",state=\"finished\"} 1"))
        await d.stop()
    }

    @Test("hooks: a timeout stops a hanging command, retries repeat a failing one, HTTP hooks call the URL")
    func hookTimeoutRetriesAndHTTP() async throws {
        let s = try await DaemonSetup("daemon-hooks")
        let web = s.tmp.sub("web")
        try Fixture.mkdir(web)
        try Fixture.write(web + "/ok", Array("ok".utf8))
        let port = try freePort()
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = ["python3", "-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", web]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer {
            // SIGKILL: Foundation's Process starts the child with this thread's signal mask, in which SIGTERM
            // is blocked, so terminate() left the server running after the test.
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
        }
        let closed = try freePort()
        let mark = s.tmp.sub("tried-once")
        try s.writeConfig(backups: """
          docs:
            paths: [\(s.source)]
            repositories: [main]
            hooks:
              before:
                - command: "sleep 30"
                  timeout: 1s
                  on_failure: continue
                - command: "test -f \(mark) || { touch \(mark); exit 1; }"
                  retries: 1
              failure:
                - http: {url: "http://127.0.0.1:\(port)/ok", method: GET}
                  retries: 5
                - http: {url: "http://127.0.0.1:\(closed)/", method: POST, body: "failed"}
                  on_failure: ignore
        """)
        let d = try await s.startDaemon()
        defer { Task { await d.stop() } }
        let started = Date()
        let job = try await d.waitUntilEnded(try #require(try await d.run("docs").job?.id))
        #expect(Date().timeIntervalSince(started) < 25, "the hanging hook was not stopped at its timeout")
        #expect(job.state == .failed)
        #expect(job.error?.contains("did not finish within 1s") == true, "\(job)")
        #expect(try await s.snapshotCount() == 1, "on_failure: continue still backs up")
        let log = try await d.get("/api/v1/jobs/\(job.id)/log")
        let lines = (log.object["lines"] as? [[String: Any]] ?? []).compactMap { $0["message"] as? String }
        #expect(lines.contains { $0.contains("before hook 2: attempt 2 of 2") }, "\(lines)")
        #expect(lines.contains { $0.contains("before hook 2 succeeded") })
        #expect(lines.contains { $0.contains("failure hook 1 succeeded") }, "\(lines)")
        #expect(lines.contains { $0.contains("failure hook 2 failed (ignored)") && $0.contains("POST") })
        await d.stop()
    }

    @Test("a closed time window keeps a backup pending; max_duration stops a slow one, which is not restarted at once; nice applies to the backup")
    func windowMaxDurationAndNice() async throws {
        let s = try await DaemonSetup("daemon-window")
        try Fixture.mkdir(s.source + "/big")
        for i in 0..<4 { try Fixture.write(s.source + "/big/blob\(i)", SeededRandom.bytes(seed: UInt64(300 + i), 3 << 20)) }
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!
        let now = Date()
        func hhmm(_ d: Date) -> String {
            let c = utc.dateComponents([.hour, .minute], from: d)
            return String(format: "%02d:%02d", c.hour!, c.minute!)
        }
        try s.writeConfig(backups: """
          night:
            paths: [\(s.source)]
            repositories: [main]
            window: {start: "\(hhmm(now.addingTimeInterval(7200)))", end: "\(hhmm(now.addingTimeInterval(10800)))"}
          slow:
            paths: [\(s.source)/big]
            repositories: [slow]
            limit_upload: 1024
            max_duration: 4s
            nice: 7
            ionice: {class: best-effort, level: 6}
        """, extraRepositories: """
          slow:
            url: \(s.tmp.sub("slowrepo"))
            password_file: \(s.tmp.sub("pass"))
        """)
        try await s.cli.ok(["init", "-r", s.tmp.sub("slowrepo")])
        let d = try await s.startDaemon()
        defer { Task { await d.stop() } }
        let night = try #require(try await d.run("night").job?.id)
        let slow = try #require(try await d.run("slow").job?.id)
        _ = try await d.waitFor(slow, timeout: 30) { ($0.progress?.bytesDone ?? 0) > 0 }
        // The backup child runs with the configured niceness.
        let pgrep = try await Run.process("/usr/bin/pgrep", ["-f", "haven backup \(s.source)/big"])
        let pid = try #require(pgrep.stdout.split(separator: "\n").first.map(String.init), "no backup child found")
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        let fields = stat[stat.range(of: ")")!.upperBound...].split(separator: " ")
        #expect(fields[16] == "7", "niceness of the backup child: \(fields[16])")
        let io = try await Run.process("/usr/bin/ionice", ["-p", pid])
        #expect(io.stdout.contains("best-effort: prio 6"), "\(io)")
        let stopped = try await d.waitUntilEnded(slow, timeout: 60)
        #expect(stopped.state == .interrupted)
        #expect(stopped.error?.contains("max_duration 4s") == true, "\(stopped)")
        try await Task.sleep(for: .seconds(2))
        #expect(try await d.jobs().filter { $0.backup == "slow" }.count == 1, "max_duration must not restart the job at once")
        #expect(try await d.job(night).state == .pending, "outside its window a backup waits")
        await d.stop()
    }

    @Test("a backup still running when its time window closes is interrupted, and a resume job waits for the window")
    func windowClosesDuringBackup() async throws {
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!
        // The window ends at the next minute; leave the backup at least 15 s to start first.
        if utc.component(.second, from: Date()) > 45 { try await Task.sleep(for: .seconds(16)) }
        let s = try await DaemonSetup("daemon-window-end")
        try Fixture.mkdir(s.source + "/big")
        for i in 0..<4 { try Fixture.write(s.source + "/big/blob\(i)", SeededRandom.bytes(seed: UInt64(400 + i), 3 << 20)) }
        let now = Date()
        func hhmm(_ d: Date) -> String {
            let c = utc.dateComponents([.hour, .minute], from: d)
            return String(format: "%02d:%02d", c.hour!, c.minute!)
        }
        let nextMinute = utc.nextDate(after: now, matching: DateComponents(second: 0), matchingPolicy: .nextTime)!
        try s.writeConfig(backups: """
          docs:
            paths: [\(s.source)]
            repositories: [main]
            limit_upload: 64
            window: {start: "\(hhmm(now.addingTimeInterval(-3600)))", end: "\(hhmm(nextMinute))"}
        """)
        let d = try await s.startDaemon()
        defer { Task { await d.stop() } }
        let id = try #require(try await d.run("docs").job?.id)
        _ = try await d.waitFor(id, timeout: 30) { $0.state == .running }
        let job = try await d.waitUntilEnded(id, timeout: 90)
        #expect(job.state == .interrupted)
        #expect(job.error?.contains("time window") == true, "\(job)")
        #expect(Date() >= nextMinute)
        let resume = try await d.jobs().first { $0.resumes == id }
        #expect(resume?.state == .pending, "\(String(describing: resume))")
        #expect(resume?.trigger == "resume")
        await d.stop()
        try await s.cli.resticOK(["-r", s.repo, "check"])
    }

    func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw FixtureError.failed("no free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
