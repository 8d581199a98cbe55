import Testing
@testable import HavenCore

// MARK: - Forget policy

/// A snapshot for policy tests; its ID is derived from the time and tags so results are easy to compare.
private func snap(_ time: String, host: String = "mopped", paths: [String] = ["/home/user/work"], tags: [String] = []) -> Snapshot {
    var s = Snapshot(time: cpTime(time), tree: ID.hash(Array(time.utf8)), paths: paths)
    s.hostname = host
    s.tags = tags
    s.id = ID.hash(Array((time + tags.joined()).utf8))
    return s
}

private func times(_ list: [Snapshot]) -> [String] { list.map { $0.time.rfc3339 } }

/// One snapshot a day at 11:00 (+01:00) for `days` days, ending on `last` (a date "YYYY-MM-DD").
private func daily(_ days: Int, endingOn last: String, hour: String = "11:00:00") -> [Snapshot] {
    let end = cpTime("\(last)T\(hour)+01:00")
    return (0..<days).map { i in
        let t = end.adding(seconds: -Int64(i) * 86400)
        return snap(Timestamp(seconds: t.seconds, utcOffset: 3600).rfc3339)
    }.reversed()
}

private let farFuture = cpTime("2100-01-01T00:00:00Z")

@Suite("Forget policy")
struct ForgetPolicyTests {
    @Test("restic's documented example: 12 Sundays, --keep-daily 4 keeps the last four")
    func docExample() throws {
        let sundays = ["2019-09-01", "2019-09-08", "2019-09-15", "2019-09-22", "2019-09-29", "2019-10-06", "2019-10-13",
                       "2019-10-20", "2019-10-27", "2019-11-03", "2019-11-10", "2019-11-17"].map { snap("\($0)T11:00:00+01:00") }
        let r = try applyPolicy(sundays.shuffled(), RetentionPolicy(keepDaily: 4), now: farFuture)
        #expect(times(r.keep.map(\.snapshot)) == ["2019-11-17T11:00:00+01:00", "2019-11-10T11:00:00+01:00",
                                                  "2019-11-03T11:00:00+01:00", "2019-10-27T11:00:00+01:00"])
        #expect(r.keep.allSatisfy { $0.reasons == ["daily snapshot"] })
        #expect(r.remove.count == 8)
        #expect(r.remove.first?.time == cpTime("2019-10-20T11:00:00+01:00"))
    }

    @Test("daily + weekly + monthly overlap as the documentation describes")
    func combinedRules() throws {
        // 60 daily snapshots, the newest on Sunday 2019-11-17.
        let list = daily(60, endingOn: "2019-11-17")
        let dw = try applyPolicy(list, RetentionPolicy(keepDaily: 7, keepWeekly: 5), now: farFuture)
        // 7 dailies (which include this week's Sunday) plus 4 earlier Sundays.
        #expect(dw.keep.count == 11)
        #expect(dw.keep.count + dw.remove.count == 60)
        let weeklyOnly = dw.keep.filter { $0.reasons == ["weekly snapshot"] }.map { $0.snapshot.time.civil.day }
        #expect(weeklyOnly == [10, 3, 27, 20])

        let dwm = try applyPolicy(list, RetentionPolicy(keepDaily: 7, keepWeekly: 5, keepMonthly: 3), now: farFuture)
        #expect(dwm.keep.count == 13)  // plus Oct 31 and Sep 30
        let monthly = dwm.keep.filter { $0.reasons.contains("monthly snapshot") }.map { "\($0.snapshot.time.civil.month)-\($0.snapshot.time.civil.day)" }
        #expect(monthly == ["11-17", "10-31", "9-30"])
        let newest = dwm.keep[0]
        #expect(newest.reasons == ["daily snapshot", "weekly snapshot", "monthly snapshot"])
    }

    @Test("keep-last, keep-hourly and unlimited counts")
    func countsAndHours() throws {
        let list = daily(60, endingOn: "2019-11-17")
        let last = try applyPolicy(list, RetentionPolicy(keepLast: 3), now: farFuture)
        #expect(last.keep.map { $0.snapshot.time.civil.day } == [17, 16, 15])
        #expect(last.keep.allSatisfy { $0.reasons == ["last snapshot"] })

        // Unlimited monthly: the newest of each month, plus the oldest snapshot ("oldest monthly snapshot").
        let monthly = try applyPolicy(list, RetentionPolicy(keepMonthly: RetentionPolicy.unlimited), now: farFuture)
        #expect(monthly.keep.map { "\($0.snapshot.time.civil.month)-\($0.snapshot.time.civil.day)" } == ["11-17", "10-31", "9-30", "9-19"])
        #expect(monthly.keep.last?.reasons == ["oldest monthly snapshot"])

        let hours = ["10:05", "10:35", "11:10", "11:50", "13:00"].map { snap("2020-05-05T\($0):00Z") }
        let h = try applyPolicy(hours, RetentionPolicy(keepHourly: 2), now: farFuture)
        #expect(times(h.keep.map(\.snapshot)) == ["2020-05-05T13:00:00Z", "2020-05-05T11:50:00Z"])
    }

    @Test("when a calendar rule has counts left, the oldest snapshot is kept too")
    func oldestKept() throws {
        let sameDay = ["08:00", "12:00", "18:00"].map { snap("2021-03-03T\($0):00Z") }
        let r = try applyPolicy(sameDay, RetentionPolicy(keepDaily: 5), now: farFuture)
        #expect(r.keep.map(\.reasons) == [["daily snapshot"], ["oldest daily snapshot"]])
        #expect(times(r.remove) == ["2021-03-03T12:00:00Z"])

        let y = try applyPolicy(daily(60, endingOn: "2019-11-17"), RetentionPolicy(keepYearly: 2), now: farFuture)
        #expect(y.keep.map(\.reasons) == [["yearly snapshot"], ["oldest yearly snapshot"]])
    }

    @Test("periods use the snapshot's own UTC offset")
    func localTime() throws {
        // One hour apart, but on different local days (+02:00); the same UTC day.
        let a = snap("2019-11-17T23:30:00+02:00"), b = snap("2019-11-18T00:30:00+02:00")
        let r = try applyPolicy([a, b], RetentionPolicy(keepDaily: 2), now: farFuture)
        #expect(r.keep.count == 2)
        let utc = try applyPolicy([snap("2019-11-17T21:30:00Z"), snap("2019-11-17T22:30:00Z")], RetentionPolicy(keepDaily: 2), now: farFuture)
        #expect(utc.keep.count == 2)  // second one is kept as the oldest
        #expect(utc.keep.last?.reasons == ["oldest daily snapshot"])
    }

    @Test("ISO weeks")
    func isoWeeks() {
        #expect(RetentionPeriod.isoWeek(year: 2021, month: 1, day: 3) == (2020, 53))
        #expect(RetentionPeriod.isoWeek(year: 2021, month: 1, day: 4) == (2021, 1))
        #expect(RetentionPeriod.isoWeek(year: 2019, month: 12, day: 30) == (2020, 1))
        #expect(RetentionPeriod.isoWeek(year: 2019, month: 11, day: 17) == (2019, 46))
        #expect(RetentionPeriod.isoWeek(year: 2019, month: 11, day: 18) == (2019, 47))
        #expect(RetentionPeriod.isoWeek(year: 2026, month: 12, day: 31) == (2026, 53))
    }

    @Test("keep-within is relative to the newest snapshot; future snapshots are kept")
    func keepWithin() throws {
        let list = daily(10, endingOn: "2019-11-17")
        let r = try applyPolicy(list, RetentionPolicy(keepWithin: try .parse("3d")), now: farFuture)
        #expect(r.keep.map { $0.snapshot.time.civil.day } == [17, 16, 15])  // exactly 3 days before is not within
        #expect(r.keep.allSatisfy { $0.reasons == ["within 3d"] })

        // "now" is Nov 16 00:00 UTC: Nov 16 and 17 11:00 are in the future, the newest past one is Nov 15.
        let f = try applyPolicy(list, RetentionPolicy(keepWithin: try .parse("2d")), now: cpTime("2019-11-16T00:00:00Z"))
        #expect(f.keep.map { $0.snapshot.time.civil.day } == [17, 16, 15, 14])
        #expect(f.keep[0].reasons == ["in the future"])
        #expect(f.keep[2].reasons == ["within 2d"])

        // Twice a day; keep the newest of each day within 3 days.
        var twice: [Snapshot] = []
        for d in 8...17 { for h in ["09", "18"] { twice.append(snap("2019-11-\(d < 10 ? "0" : "")\(d)T\(h):00:00Z")) } }
        let wd = try applyPolicy(twice, RetentionPolicy(keepWithinDaily: try .parse("3d")), now: farFuture)
        #expect(times(wd.keep.map(\.snapshot)) == ["2019-11-17T18:00:00Z", "2019-11-16T18:00:00Z", "2019-11-15T18:00:00Z"])
        #expect(wd.keep.allSatisfy { $0.reasons == ["daily within 3d"] })
    }

    @Test("keep-tag keeps snapshots with all tags of any group; '' means untagged")
    func keepTags() throws {
        let list = [snap("2020-01-01T00:00:00Z", tags: ["a", "b"]), snap("2020-01-02T00:00:00Z", tags: ["a"]),
                    snap("2020-01-03T00:00:00Z"), snap("2020-01-04T00:00:00Z", tags: ["b", "c"])]
        func kept(_ groups: [[String]]) throws -> [Int] {
            try applyPolicy(list, RetentionPolicy(keepTags: groups), now: farFuture).keep.map { $0.snapshot.time.civil.day }.sorted()
        }
        #expect(try kept([["a", "b"]]) == [1])
        #expect(try kept([["a"], ["b"]]) == [1, 2, 4])
        #expect(try kept([[""]]) == [3])
        #expect(try kept([["z"]]) == [])
        let r = try applyPolicy(list, RetentionPolicy(keepLast: 1, keepTags: [["a"]]), now: farFuture)
        #expect(r.keep.map(\.reasons) == [["last snapshot"], ["has tags a"], ["has tags a"]])
    }

    @Test("a policy without rules is refused")
    func emptyPolicy() throws {
        let list = daily(3, endingOn: "2019-11-17")
        for p in [RetentionPolicy(), RetentionPolicy(keepLast: 0), RetentionPolicy(keepWithin: RetentionDuration())] {
            #expect(p.isEmpty)
            #expect { _ = try applyPolicy(list, p) } throws: { ($0 as? HavenError)?.code == .invalidArgument }
        }
        #expect { _ = try applyPolicy(list, RetentionPolicy(keepDaily: -2)) } throws: { ($0 as? HavenError)?.code == .invalidArgument }
        #expect(try applyPolicy([], RetentionPolicy(keepLast: 1)).keep.isEmpty)
    }

    @Test("durations parse restic's form and subtract on the calendar")
    func durations() throws {
        #expect(try RetentionDuration.parse("1y2m3d4h") == RetentionDuration(years: 1, months: 2, days: 3, hours: 4))
        #expect(try RetentionDuration.parse("7d") == RetentionDuration(days: 7))
        #expect(try RetentionDuration.parse("2y5m7d3h").description == "2y5m7d3h")
        for bad in ["", "1w", "5", "d", "1d2", "-1d", "1.5d", "99999999999d"] {
            #expect(throws: HavenError.self, "\(bad)") { try RetentionDuration.parse(bad) }
        }
        // One month before March 31 is "February 31", i.e. March 3 (2023) / March 2 (2024), like Go's AddDate.
        #expect(RetentionDuration(months: 1).before(cpTime("2023-03-31T12:00:00Z")) == cpTime("2023-03-03T12:00:00Z"))
        #expect(RetentionDuration(months: 1).before(cpTime("2024-03-31T12:00:00Z")) == cpTime("2024-03-02T12:00:00Z"))
        #expect(RetentionDuration(years: 1, months: 2, days: 3, hours: 4).before(cpTime("2020-05-10T10:00:00+02:00"))
                == cpTime("2019-03-07T06:00:00+02:00"))
        #expect(RetentionDuration(months: 13).before(cpTime("2020-01-15T00:00:00Z")) == cpTime("2018-12-15T00:00:00Z"))
    }

    @Test("grouping by host, paths and tags")
    func grouping() throws {
        let list = [snap("2020-01-01T00:00:00Z", host: "a", paths: ["/x", "/y"]),
                    snap("2020-01-02T00:00:00Z", host: "a", paths: ["/y", "/x"], tags: ["t"]),
                    snap("2020-01-03T00:00:00Z", host: "a", paths: ["/z"]),
                    snap("2020-01-04T00:00:00Z", host: "b", paths: ["/x", "/y"])]
        let byDefault = group(list)
        #expect(byDefault.map(\.snapshots.count) == [2, 1, 1])
        #expect(byDefault[0].key == SnapshotGroupKey(hostname: "a", paths: ["/x", "/y"], tags: nil))
        #expect(group(list, by: .host).map(\.snapshots.count) == [3, 1])
        #expect(group(list, by: []).map(\.snapshots.count) == [4])
        #expect(group(list, by: [.host, .paths, .tags]).count == 4)
        #expect(try SnapshotGroupBy.parse("host,paths") == .default)
        #expect(try SnapshotGroupBy.parse("") == [])
        #expect(throws: HavenError.self) { try SnapshotGroupBy.parse("host,colour") }

        // The policy applies per group.
        let perGroup = try byDefault.map { try applyPolicy($0.snapshots, RetentionPolicy(keepLast: 1), now: farFuture) }
        #expect(perGroup.map(\.keep.count) == [1, 1, 1])
        #expect(perGroup[0].remove.map(\.time) == [cpTime("2020-01-01T00:00:00Z")])
    }
}

// MARK: - Prune

/// Two snapshots laid out so that forgetting A leaves: P1 fully used, P2 fully unused, P3 partly used,
/// P4/P5 used, tree pack TA partly used (A's root unused, the shared subtree used).
private struct PruneScenario {
    var fx: CPFixture
    var a: ID, b: ID
    var p1: ID, p2: ID, p3: ID, ta: ID
    var bTree: ID

    static func make() async throws -> PruneScenario {
        let fx = try await CPFixture.make()
        var rng = CPRandom(seed: 5)
        func blobs(_ n: Int) -> [[UInt8]] { (0..<n).map { _ in rng.bytes(1000) } }
        let shared = blobs(4), onlyA = blobs(4), m = blobs(2), x = blobs(2), onlyB = blobs(2)
        let deep = CPFixture.File(name: "deep", blobs: [rng.bytes(300)])
        let wa = BlobWriter(repository: fx.repo, packSize: 4096, compression: .off)
        let a = try await fx.backup([.init(name: "1shared", blobs: shared), .init(name: "2onlyA", blobs: onlyA),
                                     .init(name: "3mix", blobs: [m[0], x[0], m[1], x[1]])],
                                    sub: [deep], writer: wa, time: cpTime("2024-01-01T10:00:00Z"))
        let wb = BlobWriter(repository: fx.repo, packSize: 4096, compression: .off)
        let b = try await fx.backup([.init(name: "1shared", blobs: shared), .init(name: "3mix", blobs: x),
                                     .init(name: "4onlyB", blobs: onlyB)],
                                    sub: [deep], writer: wb, time: cpTime("2024-01-02T10:00:00Z"))
        let idx = fx.repo.index
        func pack(_ plain: [UInt8]) -> ID { idx.lookup(ID.hash(plain), .data)!.pack }
        let aSnap = try await fx.repo.loadSnapshot(a), bSnap = try await fx.repo.loadSnapshot(b)
        let s = PruneScenario(fx: fx, a: a, b: b, p1: pack(shared[0]), p2: pack(onlyA[0]), p3: pack(m[0]),
                              ta: idx.lookup(aSnap.tree, .tree)!.pack, bTree: bSnap.tree)
        // The layout the tests rely on.
        precondition(Set(shared.map(pack)) == [s.p1] && Set(onlyA.map(pack)) == [s.p2] && Set((m + x).map(pack)) == [s.p3])
        precondition(idx.lookup(bSnap.tree, .tree)!.pack != s.ta)
        return s
    }

    func forgetA() async throws { try await fx.storage.remove(Handle(.snapshot, a)) }
}

private func exclusiveLock(_ repo: Repository) async throws -> Lock {
    try await Lock.acquire(repository: repo, exclusive: true, timing: LockTiming(recheckDelay: .milliseconds(1)))
}

@Suite("Prune")
struct PruneTests {
    @Test("after forgetting a snapshot, prune deletes, repacks, and leaves a repository that checks clean")
    func pruneAfterForget() async throws {
        let s = try await PruneScenario.make()
        try await s.forgetA()
        let oldIndex = try await s.fx.names(.index)
        let plan = try await PrunePlan.make(repository: s.fx.repo, options: PruneOptions(maxUnused: .bytes(0), packSize: 4096))
        #expect(plan.packsToDelete == [s.p2])
        #expect(Set(plan.packsToRepack) == [s.p3, s.ta])
        #expect(plan.toRepack.blobs == 3)  // two shared blobs of P3 and the shared subtree
        #expect(plan.removedByDelete.blobs == 4)
        #expect(plan.removedByRepack.blobs == 3)  // two A-only blobs of P3 and A's root tree
        #expect(plan.unreferencedPacks.isEmpty && plan.missingPacks.isEmpty)
        #expect(plan.unusedAfter == 0)
        #expect(plan.description.contains("to repack:"))

        let lock = try await exclusiveLock(s.fx.repo)
        let result = try await plan.execute(repository: s.fx.repo, lock: lock)
        try await lock.release()
        #expect(result.packsRemoved == 3)
        #expect(result.blobsRepacked == 3)
        #expect(result.packsWritten == 2)  // one data pack, one tree pack
        #expect(result.indexFilesRemoved == oldIndex.count)

        let packsNow = try await s.fx.names(.pack)
        for gone in [s.p2, s.p3, s.ta] { #expect(!packsNow.contains(gone.hex)) }
        #expect(packsNow.contains(s.p1.hex))
        #expect(try await s.fx.names(.index).isDisjoint(with: oldIndex))

        let fresh = try await s.fx.reopen()
        #expect(try await CPFixture.loadAll(fresh, tree: s.bTree) == 11)  // 2 trees + 9 data blobs
        let report = await Checker.run(repository: fresh, options: CheckOptions(readData: .all))
        #expect(!report.hasErrors, "\(report)")
        #expect(report.hints.isEmpty, "\(report)")
        #expect(report.statistics.unusedBlobs == 0)

        // Nothing is left to do.
        let again = try await PrunePlan.make(repository: fresh, options: PruneOptions(maxUnused: .bytes(0)))
        #expect(again.isEmpty, "\(again)")
    }

    @Test("max-unused decides whether partly used data packs are repacked; tree packs always are")
    func maxUnused() async throws {
        let s = try await PruneScenario.make()
        try await s.forgetA()
        let unlimited = try await PrunePlan.make(repository: s.fx.repo, options: PruneOptions(maxUnused: .unlimited))
        #expect(unlimited.packsToRepack == [s.ta])
        #expect(unlimited.packsToDelete == [s.p2])
        #expect(unlimited.unusedAfter == 2 * (1032 + 37))

        let small = try await PrunePlan.make(repository: s.fx.repo, options: PruneOptions(maxUnused: .percent(5)))
        #expect(Set(small.packsToRepack) == [s.p3, s.ta])
        let generous = try await PrunePlan.make(repository: s.fx.repo, options: PruneOptions(maxUnused: .percent(50)))
        #expect(generous.packsToRepack == [s.ta])
        let cacheable = try await PrunePlan.make(repository: s.fx.repo, maxUnused: .bytes(0), repackCacheableOnly: true)
        #expect(cacheable.packsToRepack == [s.ta])
        // --max-repack-size 0: nothing is repacked, whole unused packs are still deleted.
        let noRepack = try await PrunePlan.make(repository: s.fx.repo, options: PruneOptions(maxUnused: .bytes(0), maxRepackBytes: 0))
        #expect(noRepack.packsToRepack.isEmpty)
        #expect(noRepack.packsToDelete == [s.p2])
        #expect(noRepack.unusedAfter > unlimited.unusedAfter)  // P3's and TA's unused blobs stay

        // Executing the unlimited plan keeps everything readable too.
        let lock = try await exclusiveLock(s.fx.repo)
        try await unlimited.execute(repository: s.fx.repo, lock: lock)
        try await lock.release()
        let fresh = try await s.fx.reopen()
        #expect(try await CPFixture.loadAll(fresh, tree: s.bTree) == 11)
        let report = await Checker.run(repository: fresh, options: CheckOptions(readData: .all))
        #expect(!report.hasErrors, "\(report)")
        #expect(report.statistics.unusedBlobs == 2)
    }

    @Test("partly used data packs are repacked mostly-unused first, until the unused bytes fit the allowance")
    func repackOrder() async throws {
        let fx = try await CPFixture.make()
        var rng = CPRandom(seed: 11)
        func blobs(_ n: Int) -> [[UInt8]] { (0..<n).map { _ in rng.bytes(1000) } }
        let gone1 = blobs(3), kept1 = blobs(5), gone2 = blobs(2), kept2 = blobs(1)
        // One backup per pack: X holds 3 blobs that become unused and 5 that stay (more unused bytes),
        // Y holds 2 that become unused and 1 that stays (the higher unused/used ratio).
        func writer() -> BlobWriter { BlobWriter(repository: fx.repo, packSize: 1 << 20, compression: .off) }
        let a1 = try await fx.backup([.init(name: "x", blobs: gone1 + kept1)], writer: writer(), time: cpTime("2024-01-01T10:00:00Z"))
        let a2 = try await fx.backup([.init(name: "y", blobs: gone2 + kept2)], writer: writer(), time: cpTime("2024-01-02T10:00:00Z"))
        try await fx.backup([.init(name: "k", blobs: kept1 + kept2)], writer: writer(), time: cpTime("2024-01-03T10:00:00Z"))
        let packX = fx.repo.index.lookup(ID.hash(gone1[0]), .data)!.pack, packY = fx.repo.index.lookup(ID.hash(gone2[0]), .data)!.pack
        #expect(packX != packY)
        #expect(fx.repo.index.lookup(ID.hash(kept2[0]), .data)!.pack == packY)
        try await fx.storage.remove(Handle(.snapshot, a1))
        try await fx.storage.remove(Handle(.snapshot, a2))

        // Unused: X 3·1069, Y 2·1069 bytes. With 3,500 bytes allowed, one repack is enough either way;
        // Y goes first because two thirds of it are unused (X: three eighths).
        let plan = try await PrunePlan.make(repository: fx.repo, options: PruneOptions(maxUnused: .bytes(3500)))
        #expect(plan.packsToRepack.contains(packY))
        #expect(!plan.packsToRepack.contains(packX))
        #expect(plan.unusedAfter == 3 * (1032 + 37))
        let none = try await PrunePlan.make(repository: fx.repo, options: PruneOptions(maxUnused: .bytes(5 * 1069)))
        #expect(!none.packsToRepack.contains(packX) && !none.packsToRepack.contains(packY))
    }

    @Test("a dry run (plan only) changes nothing")
    func dryRun() async throws {
        let s = try await PruneScenario.make()
        try await s.forgetA()
        let before = try await s.fx.everything()
        let plan = try await PrunePlan.make(repository: s.fx.repo, options: PruneOptions(maxUnused: .bytes(0)))
        #expect(!plan.isEmpty)
        #expect(try await s.fx.everything() == before)
    }

    @Test("prune refuses when data a snapshot needs is missing, and changes nothing")
    func refusesMissingData() async throws {
        let s = try await PruneScenario.make()
        try await s.forgetA()
        try await s.fx.storage.remove(Handle(.pack, s.p1))
        let before = try await s.fx.everything()
        await #expect { _ = try await PrunePlan.make(repository: s.fx.repo) } throws: { e in
            guard let e = e as? HavenError else { return false }
            return e.code == .corrupt && e.message.contains("prune refused") && e.message.contains("missing")
        }
        #expect(try await s.fx.everything() == before)

        // A snapshot whose tree is not indexed at all.
        let fx = try await CPFixture.make()
        _ = try await fx.repo.saveSnapshot(Snapshot(time: cpTime("2024-01-01T00:00:00Z"), tree: ID.hash([1]), paths: ["/"]))
        await #expect { _ = try await PrunePlan.make(repository: fx.repo) } throws: { e in
            ((e as? HavenError)?.message.contains("root tree") ?? false)
        }
    }

    @Test("prune removes unreferenced packs and extra copies of duplicated blobs")
    func unreferencedAndDuplicates() async throws {
        let s = try await PruneScenario.make()
        // A second client that did not load the index stores a blob again: a duplicate in a new pack.
        let other = try await Repository.open(storage: s.fx.storage, password: CPFixture.password)
        let bTree = try await s.fx.repo.loadTree(s.bTree)
        let sharedFirst = try await s.fx.repo.loadBlob(bTree.node(named: Array("1shared".utf8))!.content[0], .data)
        let w = BlobWriter(repository: other, packSize: 4096, compression: .off)
        _ = try await w.save(.data, plaintext: sharedFirst)
        try await w.flush()
        let dupPack = other.index.lookup(ID.hash(sharedFirst), .data)!.pack
        // And a pack no index names.
        let asm = PackAssembler(repository: s.fx.repo, packSize: 1 << 20)
        let sealed = s.fx.repo.key.seal([9, 9, 9])
        try await asm.add(PackedBlob(id: ID.hash([9, 9, 9]), type: .data, offset: 0, length: UInt32(sealed.count), uncompressedLength: 0), sealed: sealed)
        try await asm.flush()
        let stray = asm.packs[0].id

        let plan = try await PrunePlan.make(repository: s.fx.repo, options: PruneOptions(maxUnused: .bytes(0)))
        #expect(plan.duplicates.blobs == 1)
        #expect(plan.packsToDelete == [dupPack])
        #expect(plan.unreferencedPacks == [stray])
        #expect(plan.packsToRepack.isEmpty)
        let lock = try await exclusiveLock(s.fx.repo)
        try await plan.execute(repository: s.fx.repo, lock: lock)
        try await lock.release()
        let names = try await s.fx.names(.pack)
        #expect(!names.contains(dupPack.hex) && !names.contains(stray.hex))
        let fresh = try await s.fx.reopen()
        let report = await Checker.run(repository: fresh, options: CheckOptions(readData: .all))
        #expect(!report.hasErrors && report.hints.isEmpty, "\(report)")
        #expect(report.statistics.duplicateBlobs == 0)
    }

    @Test("execute needs an exclusive lock and refuses a plan the repository has outgrown")
    func executeGuards() async throws {
        let s = try await PruneScenario.make()
        try await s.forgetA()
        let plan = try await PrunePlan.make(repository: s.fx.repo, options: PruneOptions(maxUnused: .bytes(0)))
        let shared = try await Lock.acquire(repository: s.fx.repo, exclusive: false, timing: LockTiming(recheckDelay: .zero))
        await #expect { try await plan.execute(repository: s.fx.repo, lock: shared) } throws: { ($0 as? HavenError)?.code == .lockFailed }
        try await shared.release()

        // A backup after planning adds an index file and a snapshot: the plan is refused, nothing is deleted.
        var rng = CPRandom(seed: 77)
        let w = BlobWriter(repository: s.fx.repo, packSize: 4096)
        try await s.fx.backup([.init(name: "new", blobs: [rng.bytes(100)])], writer: w, time: cpTime("2024-02-01T00:00:00Z"))
        let before = try await s.fx.everything()
        let lock = try await exclusiveLock(s.fx.repo)
        await #expect(throws: HavenError.self) { try await plan.execute(repository: s.fx.repo, lock: lock) }
        try await lock.release()
        #expect(try await s.fx.everything() == before)
    }

    @Test("max-unused parses restic's forms")
    func parseMaxUnused() throws {
        #expect(try MaxUnused.parse("5%") == .percent(5))
        #expect(try MaxUnused.parse("unlimited") == .unlimited)
        #expect(try MaxUnused.parse("0") == .bytes(0))
        #expect(try MaxUnused.parse("200M") == .bytes(200 << 20))
        for bad in ["", "x", "101%", "-1%", "5%%"] { #expect(throws: HavenError.self, "\(bad)") { try MaxUnused.parse(bad) } }
        #expect(MaxUnused.percent(10).allowance(used: 900) == 100)
        #expect(MaxUnused.percent(0).allowance(used: 900) == 0)
    }
}
