import Foundation
import HavenTestSupport
import Testing

/// restic 0.14 is the independent oracle for the repository format: it must check and restore what Haven
/// writes, and Haven must restore what restic writes.
@Suite("Interop with restic", .serialized)
struct InteropTests {
    @Test("Haven writes, restic checks and restores")
    func havenWritesResticReads() async throws {
        let cli = try CLI()
        let tmp = TempDir("interop1")
        let src = tmp.sub("src")
        try Fixture.standardTree(at: src)
        let repo = tmp.sub("repo")
        try await cli.ok(["init", "-r", repo])
        let backup = try await cli.ok(["-r", repo, "backup", src, "--json", "--tag", "t1"])
        let summary = try #require(CLI.lastJSON(backup))
        #expect(summary["message_type"] as? String == "summary")
        #expect((summary["snapshot_id"] as? String)?.count == 64)
        try await cli.resticOK(["-r", repo, "check", "--read-data"])
        let snaps = try await cli.resticOK(["-r", repo, "snapshots", "--json"])
        let list = CLI.jsonArray(snaps)
        #expect(list.count == 1)
        #expect((list.first?["tags"] as? [String]) == ["t1"])
        let target = tmp.sub("restored")
        try await cli.resticOK(["-r", repo, "restore", "latest", "--target", target])
        let diffs = try TreeSnapshot(root: src).differences(from: TreeSnapshot(root: target + src), compareDirectoryTimes: true)
        #expect(diffs.isEmpty, "restic restore of Haven's snapshot differs: \(diffs)")
    }

    @Test("restic writes, Haven lists, restores and checks")
    func resticWritesHavenReads() async throws {
        let cli = try CLI()
        let tmp = TempDir("interop2")
        let src = tmp.sub("src")
        try Fixture.standardTree(at: src, seed: 2)
        let repo = tmp.sub("repo")
        try await cli.resticOK(["init", "-r", repo, "--repository-version", "2"])
        try await cli.resticOK(["-r", repo, "backup", src, "--tag", "fromrestic"])
        let snaps = CLI.jsonArray(try await cli.ok(["-r", repo, "snapshots", "--json"]))
        #expect(snaps.count == 1)
        #expect((snaps.first?["tags"] as? [String]) == ["fromrestic"])
        let ls = try await cli.ok(["-r", repo, "ls", "latest"])
        #expect(ls.stdout.contains(src + "/docs/readme.txt"))
        let target = tmp.sub("restored")
        try await cli.ok(["-r", repo, "restore", "latest", "--target", target])
        let diffs = try TreeSnapshot(root: src).differences(from: TreeSnapshot(root: target + src), compareDirectoryTimes: true)
        #expect(diffs.isEmpty, "Haven restore of restic's snapshot differs: \(diffs)")
        try await cli.ok(["-r", repo, "check", "--read-data"])
    }

    @Test("a password file opens the same repository in Haven and restic (white space and byte order mark ignored)")
    func passwordFilesMeanTheSame() async throws {
        let cli = try CLI()
        let tmp = TempDir("interop-password")
        let repo = tmp.sub("repo")
        let padded = tmp.sub("padded"), exact = tmp.sub("exact"), twoLines = tmp.sub("two-lines")
        try Fixture.write(padded, [0xef, 0xbb, 0xbf] + Array("  pass phrase \r\n\n".utf8))
        try Fixture.write(exact, Array("pass phrase".utf8))
        try Fixture.write(twoLines, Array("pass phrase\nsecond line\n".utf8))
        try await cli.ok(["init", "-r", repo, "--password-file", padded])
        try await cli.resticOK(["-r", repo, "--password-file", exact, "snapshots"])
        try await cli.resticOK(["-r", repo, "--password-file", padded, "snapshots"])
        try await cli.ok(["-r", repo, "--password-command", "printf ' pass phrase\\n'", "snapshots"])
        // A second line is part of the password in both tools, so both refuse it.
        #expect(try await cli.run(["-r", repo, "--password-file", twoLines, "snapshots"]).status != 0)
        #expect(try await cli.restic(["-r", repo, "--password-file", twoLines, "snapshots"]).status != 0)
    }

    @Test("restic repository version 1 is readable")
    func resticVersion1() async throws {
        let cli = try CLI()
        let tmp = TempDir("interop-v1")
        let src = tmp.sub("src")
        try Fixture.standardTree(at: src, seed: 3, nonUTF8Names: false)
        let repo = tmp.sub("repo")
        try await cli.resticOK(["init", "-r", repo, "--repository-version", "1"])
        try await cli.resticOK(["-r", repo, "backup", src])
        let target = tmp.sub("restored")
        try await cli.ok(["-r", repo, "restore", "latest", "--target", target])
        #expect(try TreeSnapshot(root: src).differences(from: TreeSnapshot(root: target + src)).isEmpty)
        // Haven adds a backup to the v1 repository; restic still accepts it.
        try await cli.ok(["-r", repo, "backup", src, "--force"])
        try await cli.resticOK(["-r", repo, "check", "--read-data"])
    }

    @Test("Haven cuts the same chunks as restic: backing up restic's data adds no data blobs")
    func sameChunksAsRestic() async throws {
        let cli = try CLI()
        let tmp = TempDir("chunks")
        let src = tmp.sub("src")
        try Fixture.standardTree(at: src, seed: 4, scale: 2)
        let repo = tmp.sub("repo")
        try await cli.resticOK(["init", "-r", repo])
        try await cli.resticOK(["-r", repo, "backup", src])
        let before = try await cli.resticDataBlobCount(repo)
        #expect(before > 10)
        let r = try await cli.ok(["-r", repo, "backup", src, "--force", "--json"])
        let summary = try #require(CLI.lastJSON(r))
        #expect(summary["data_blobs"] as? Int == 0, "Haven stored new data blobs for data restic already had: \(summary)")
        #expect(try await cli.resticDataBlobCount(repo) == before)
        try await cli.resticOK(["-r", repo, "check", "--read-data"])
    }

    @Test("forget --prune on a mixed repository; restic prune then Haven check")
    func mixedPrune() async throws {
        let cli = try CLI()
        let tmp = TempDir("mixed")
        let src = tmp.sub("src")
        try Fixture.standardTree(at: src, seed: 5)
        let repo = tmp.sub("repo")
        try await cli.ok(["init", "-r", repo])
        try await cli.ok(["-r", repo, "backup", src])
        try Fixture.write(src + "/big/changed.bin", SeededRandom.bytes(seed: 99, 3 << 20))
        try await cli.resticOK(["-r", repo, "backup", src])
        try Fixture.write(src + "/big/changed.bin", SeededRandom.bytes(seed: 100, 2 << 20))
        try FileManager.default.removeItem(atPath: src + "/big/random.bin")
        try await cli.ok(["-r", repo, "backup", src])
        try await cli.ok(["-r", repo, "forget", "--keep-last", "1", "--prune"])
        #expect(CLI.jsonArray(try await cli.ok(["-r", repo, "snapshots", "--json"])).count == 1)
        try await cli.resticOK(["-r", repo, "check", "--read-data"])
        let target = tmp.sub("restored")
        try await cli.resticOK(["-r", repo, "restore", "latest", "--target", target])
        #expect(try TreeSnapshot(root: src).differences(from: TreeSnapshot(root: target + src)).isEmpty)
        // And the other way round.
        try Fixture.write(src + "/big/another.bin", SeededRandom.bytes(seed: 7, 2 << 20))
        try await cli.resticOK(["-r", repo, "backup", src])
        try await cli.resticOK(["-r", repo, "forget", "--keep-last", "1", "--prune"])
        try await cli.ok(["-r", repo, "check", "--read-data"])
    }
}
