import Foundation
import HavenTestSupport
import Testing

/// `haven copy`, checked with restic as the format oracle; and the transfer-limit global options.
@Suite("Copy and transfer limits")
struct CopyTests {
    /// Counts files below `dir/data`.
    static func packCount(_ repo: String) -> Int {
        let e = FileManager.default.enumerator(atPath: repo + "/data")
        var n = 0
        while let p = e?.nextObject() as? String { if p.count > 3 { n += 1 } }
        return n
    }

    @Test("copy transfers what the destination lacks; restic checks and restores the copy; a second copy transfers nothing")
    func copyBetweenLocalRepositories() async throws {
        let cli = try CLI()
        let tmp = TempDir("copy")
        let src = tmp.sub("src")
        try Fixture.standardTree(at: src, seed: 5)
        let from = tmp.sub("from"), to = tmp.sub("to")
        try await cli.ok(["init", "-r", from])
        try await cli.ok(["-r", from, "backup", src, "--tag", "one"])
        try Fixture.write(src + "/added.bin", SeededRandom.bytes(seed: 77, 300_000))
        try await cli.ok(["-r", from, "backup", src, "--tag", "two"])
        // A destination with different chunker parameters and its own password.
        let destPassword = tmp.sub("dest-pw")
        try Fixture.write(destPassword, Array("another password\n".utf8))
        try await cli.ok(["init", "-r", to, "--password-file", destPassword])
        let sourcePassword = tmp.sub("src-pw")
        try Fixture.write(sourcePassword, Array((cli.password + "\n").utf8))

        let first = try await cli.ok(["-r", to, "--password-file", destPassword, "copy", "--from-repo", from,
                                      "--from-password-file", sourcePassword, "--json"])
        let s1 = try #require(CLI.lastJSON(first))
        #expect(s1["snapshots_copied"] as? Int == 2)
        #expect((s1["data_blobs"] as? Int ?? 0) > 0)

        let second = try await cli.ok(["-r", to, "--password-file", destPassword, "copy", "--from-repo", from,
                                       "--from-password-file", sourcePassword, "--json"])
        let s2 = try #require(CLI.lastJSON(second))
        #expect(s2["snapshots_copied"] as? Int == 0)
        #expect(s2["snapshots_skipped"] as? Int == 2)
        #expect(s2["data_blobs"] as? Int == 0)
        #expect(s2["tree_blobs"] as? Int == 0)
        #expect(s2["packs"] as? Int == 0)

        // restic, with the destination's password, checks every byte and restores the copy.
        let restic = try await cli.resticPath()
        var env = cli.env
        env["RESTIC_PASSWORD"] = "another password"
        let check = try await Run.process(restic, ["-r", to, "check", "--read-data", "--no-cache"], environment: env)
        #expect(check.status == 0, "restic check of the copy failed: \(check)")
        let target = tmp.sub("restored")
        let restore = try await Run.process(restic, ["-r", to, "restore", "latest", "--tag", "two", "--target", target, "--no-cache"],
                                            environment: env)
        #expect(restore.status == 0, "\(restore)")
        let diffs = try TreeSnapshot(root: src).differences(from: TreeSnapshot(root: target + src))
        #expect(diffs.isEmpty, "restic restore of the copied snapshot differs: \(diffs)")
        // The copy names its original.
        let snaps = try await Run.process(restic, ["-r", to, "snapshots", "--json", "--no-cache"], environment: env)
        #expect(snaps.stdout.contains("\"original\""), "\(snaps.stdout)")
    }

    @Test("copy into a repository that has most blobs transfers only the new ones")
    func copyTransfersOnlyNewBlobs() async throws {
        let cli = try CLI()
        let tmp = TempDir("copy-new")
        let src = tmp.sub("src")
        try Fixture.standardTree(at: src, seed: 9)
        let from = tmp.sub("from"), to = tmp.sub("to")
        try await cli.ok(["init", "-r", from])
        // Same chunker parameters, so the destination's own backup yields the same blobs.
        try await cli.ok(["-r", to, "init", "--copy-chunker-params", "--from-repo", from],
                         env: ["HAVEN_FROM_PASSWORD": cli.password])
        try await cli.ok(["-r", to, "backup", src])
        let newFile = SeededRandom.bytes(seed: 123, 2_000_000)
        try Fixture.write(src + "/new.bin", newFile)
        try await cli.ok(["-r", from, "backup", src])
        let packsBefore = Self.packCount(to)

        let r = try await cli.ok(["-r", to, "copy", "--from-repo", from, "--json"], env: ["HAVEN_FROM_PASSWORD": cli.password])
        let s = try #require(CLI.lastJSON(r))
        #expect(s["snapshots_copied"] as? Int == 1)
        // Only new.bin's content (about 2 MB, a handful of chunks) and the changed trees travel.
        let added = s["data_added"] as? Int ?? -1
        #expect(added > 0 && added <= newFile.count + 100_000, "data_added \(added)")
        let dataBlobs = s["data_blobs"] as? Int ?? -1
        #expect(dataBlobs >= 1 && dataBlobs <= 6, "data blobs copied: \(dataBlobs)")
        #expect(Self.packCount(to) - packsBefore <= 2)
        try await cli.resticOK(["-r", to, "check", "--read-data"])
        let target = tmp.sub("restored")
        try await cli.resticOK(["-r", to, "restore", "latest", "--target", target, "--path", src])
        #expect(try TreeSnapshot(root: src).differences(from: TreeSnapshot(root: target + src)).isEmpty)
    }

    @Test("copy with snapshot arguments and filters copies only those")
    func copySelected() async throws {
        let cli = try CLI()
        let tmp = TempDir("copy-sel")
        let a = tmp.sub("a"), b = tmp.sub("b")
        try Fixture.mkdir(a)
        try Fixture.mkdir(b)
        try Fixture.write(a + "/f", Array("a\n".utf8))
        try Fixture.write(b + "/f", Array("b\n".utf8))
        let from = tmp.sub("from"), to = tmp.sub("to")
        try await cli.ok(["init", "-r", from])
        try await cli.ok(["init", "-r", to])
        try await cli.ok(["-r", from, "backup", a, "--host", "alpha"])
        try await cli.ok(["-r", from, "backup", b, "--host", "beta"])
        let env = ["HAVEN_FROM_PASSWORD": cli.password]
        let r = try await cli.ok(["-r", to, "copy", "--from-repo", from, "--host", "beta", "--json"], env: env)
        #expect(CLI.lastJSON(r)?["snapshots_copied"] as? Int == 1)
        let list = try await cli.ok(["-r", to, "snapshots", "--json"])
        #expect(CLI.jsonArray(list).map { $0["hostname"] as? String } == ["beta"])
        // A missing source is a clear usage error.
        let missing = try await cli.run(["-r", to, "copy"], env: env)
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("--from-repo"), "\(missing.stderr)")
    }

    @Test("--limit-upload and --limit-download are accepted; bad values are usage errors naming the flag", arguments: [
        ["--limit-upload", "0"], ["--limit-upload", "-5"], ["--limit-upload", "fast"], ["--limit-download", "0"],
        ["--limit-download", "1.5"], ["-o", "local.connections=0"], ["-o", "s3.connections=many"],
    ])
    func limitValidation(bad: [String]) async throws {
        let cli = try CLI()
        let tmp = TempDir("limits")
        let repo = tmp.sub("repo")
        let r = try await cli.run(["-r", repo] + bad + ["init"])
        #expect(r.status == 1, "\(bad) should be rejected: \(r)")
        let flag = bad[0] == "-o" ? String(bad[1].prefix(while: { $0 != "=" })) : bad[0]
        #expect(r.stderr.contains(flag), "the error should name \(flag): \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: repo + "/config"))
    }

    @Test("a backup with --limit-upload, --limit-download and -o local.connections works and checks clean")
    func limitedBackup() async throws {
        let cli = try CLI()
        let tmp = TempDir("limited")
        let src = tmp.sub("src")
        try Fixture.mkdir(src)
        try Fixture.write(src + "/data.bin", SeededRandom.bytes(seed: 4, 1_000_000))
        let repo = tmp.sub("repo")
        try await cli.ok(["init", "-r", repo])
        let start = Date()
        try await cli.ok(["-r", repo, "--limit-upload", "2048", "--limit-download", "4096", "-o", "local.connections=1",
                          "backup", src])
        let elapsed = Date().timeIntervalSince(start)
        // About 1 MB at 2 MiB/s: at least ~0.3 s (the limiter allows a 0.1 s burst), far from unlimited.
        #expect(elapsed > 0.3, "backup took \(elapsed) s")
        try await cli.ok(["-r", repo, "--limit-download", "4096", "check", "--read-data"])
    }
}
