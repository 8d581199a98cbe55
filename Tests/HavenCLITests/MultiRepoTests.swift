import Foundation
import HavenCore
import HavenTestSupport
import Testing

/// `haven backup --repo A --repo B`: one read, several repositories.
@Suite("Backup into several repositories")
struct MultiRepoTests {
    /// Two repositories with the same chunker parameters and a source tree.
    struct Setup {
        let cli: CLI
        let tmp = TempDir("multi")
        var src: String { tmp.sub("src") }
        var a: String { tmp.sub("a") }
        var b: String { tmp.sub("b") }

        init() async throws {
            cli = try CLI()
            try Fixture.standardTree(at: src, seed: 21)
            try await cli.ok(["init", "-r", a])
            try await cli.ok(["-r", b, "init", "--copy-chunker-params", "--from-repo", a], env: ["HAVEN_FROM_PASSWORD": cli.password])
        }

        func restoreMatches(_ repo: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let target = tmp.sub("restored-" + UUID().uuidString.prefix(8))
            try await cli.resticOK(["-r", repo, "restore", "latest", "--target", target], sourceLocation: sourceLocation)
            let diffs = try TreeSnapshot(root: src).differences(from: TreeSnapshot(root: target + src))
            #expect(diffs.isEmpty, "restore from \(repo) differs: \(diffs)", sourceLocation: sourceLocation)
        }
    }

    @Test("both repositories get a snapshot of the same tree; restic checks and restores both; the second run uses each parent")
    func twoRepositories() async throws {
        let s = try await Setup()
        let r = try await s.cli.ok(["-r", s.a, "-r", s.b, "backup", s.src, "--json"])
        let summaries = r.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }.filter { $0["message_type"] as? String == "summary" }
        #expect(summaries.count == 2)
        #expect(summaries.allSatisfy { ($0["data_blobs"] as? Int ?? 0) > 0 })
        for repo in [s.a, s.b] {
            try await s.cli.resticOK(["-r", repo, "check", "--read-data"])
            try await s.restoreMatches(repo)
        }
        let treeA = CLI.jsonArray(try await s.cli.ok(["-r", s.a, "snapshots", "--json"])).first?["tree"] as? String
        let treeB = CLI.jsonArray(try await s.cli.ok(["-r", s.b, "snapshots", "--json"])).first?["tree"] as? String
        #expect(treeA != nil && treeA == treeB)
        // Nothing changed: the second run reads nothing and adds no data to either repository.
        let again = try await s.cli.ok(["-r", s.a, "-r", s.b, "backup", s.src, "--json"])
        let second = again.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }.filter { $0["message_type"] as? String == "summary" }
        #expect(second.count == 2)
        #expect(second.allSatisfy { $0["data_blobs"] as? Int == 0 && $0["files_new"] as? Int == 0 && $0["parent"] != nil })
    }

    @Test("a repository whose storage fails is reported; the other still gets its snapshot; exit code 1")
    func oneRepositoryFails() async throws {
        let s = try await Setup()
        // B's data directory becomes a plain file: every pack upload fails (also for root, unlike chmod).
        let data = s.b + "/data"
        try FileManager.default.moveItem(atPath: data, toPath: s.b + "/data.away")
        try Fixture.write(data, [])
        let r = try await s.cli.run(["-r", s.a, "-r", s.b, "backup", s.src])
        #expect(r.status == 1, "\(r)")
        #expect(r.stderr.contains(s.b), "the failing repository should be named: \(r.stderr)")
        #expect(r.stdout.contains("snapshot") && r.stdout.contains("saved"), "\(r.stdout)")
        try FileManager.default.removeItem(atPath: data)
        try FileManager.default.moveItem(atPath: s.b + "/data.away", toPath: data)
        try await s.cli.resticOK(["-r", s.a, "check", "--read-data"])
        try await s.restoreMatches(s.a)
        try await s.cli.resticOK(["-r", s.b, "check"])
        #expect(CLI.jsonArray(try await s.cli.ok(["-r", s.b, "snapshots", "--json"])).isEmpty)
    }

    @Test("a repository whose storage becomes unwritable mid-way is reported; the other completes; both check clean")
    func failsMidway() async throws {
        let s = try await Setup()
        // Enough data for several packs per repository, slowed down so the storage can break in between.
        try Fixture.write(s.src + "/big.bin", SeededRandom.bytes(seed: 22, 24 << 20))
        let data = s.b + "/data"
        let subdirs = try FileManager.default.contentsOfDirectory(atPath: data).filter { $0.count == 2 }
        let backup = Task {
            try await s.cli.run(["-r", s.a, "-r", s.b, "--limit-upload", "8192", "backup", "--pack-size", "4", s.src])
        }
        // Once B holds its first pack, every other pack directory becomes a plain file: later uploads fail.
        // The watch runs on a thread of its own: a task on the cooperative pool can be held back for
        // seconds when all suites run at once, and by then B may have stored every pack (CI saw that).
        let broken = Locked<[String]>([])
        let finished = Locked(false)
        let watcher = DispatchSemaphore(value: 0)
        Thread {
            defer { watcher.signal() }
            let deadline = Date().addingTimeInterval(60)
            while !finished.withLock({ $0 }) && Date() < deadline {
                let used = subdirs.filter { !((try? FileManager.default.contentsOfDirectory(atPath: data + "/" + $0)) ?? []).isEmpty }
                guard used.isEmpty else {
                    for sub in subdirs where !used.contains(sub) {
                        try? FileManager.default.removeItem(atPath: data + "/" + sub)
                        try? Fixture.write(data + "/" + sub, [])
                        broken.withLock { $0.append(sub) }
                    }
                    return
                }
                usleep(2000)
            }
        }.start()
        let r = try await backup.value
        finished.withLock { $0 = true }
        watcher.wait()
        let brokenNow = broken.withLock { $0 }
        #expect(!brokenNow.isEmpty, "B never stored a pack")
        #expect(r.status == 1, "\(r)")
        #expect(r.stderr.contains("backup failed, no snapshot was saved"), "\(r.stderr)")
        for sub in brokenNow {
            try FileManager.default.removeItem(atPath: data + "/" + sub)
            try Fixture.mkdir(data + "/" + sub)
        }
        try await s.cli.resticOK(["-r", s.a, "check", "--read-data"])
        try await s.restoreMatches(s.a)
        // B keeps the packs it stored (indexed, for reuse) but got no snapshot, and checks clean.
        try await s.cli.resticOK(["-r", s.b, "check", "--read-data"])
        #expect(CLI.jsonArray(try await s.cli.ok(["-r", s.b, "snapshots", "--json"])).isEmpty)
    }

    @Test("a missing repository is reported and the others are backed up; exit code 1")
    func missingRepository() async throws {
        let s = try await Setup()
        let missing = s.tmp.sub("missing")
        let r = try await s.cli.run(["-r", s.a, "-r", missing, "backup", s.src])
        #expect(r.status == 1, "\(r)")
        #expect(r.stderr.contains(missing), "\(r.stderr)")
        try await s.cli.resticOK(["-r", s.a, "check"])
        #expect(CLI.jsonArray(try await s.cli.ok(["-r", s.a, "snapshots", "--json"])).count == 1)
    }

    @Test("repositories with different chunker parameters are refused with a pointer to --copy-chunker-params")
    func differentChunkerParameters() async throws {
        let s = try await Setup()
        let c = s.tmp.sub("c")
        try await s.cli.ok(["init", "-r", c])
        let r = try await s.cli.run(["-r", s.a, "-r", c, "backup", s.src])
        #expect(r.status == 1)
        #expect(r.stderr.contains("--copy-chunker-params"), "\(r.stderr)")
        #expect(CLI.jsonArray(try await s.cli.ok(["-r", s.a, "snapshots", "--json"])).isEmpty)
    }
}
