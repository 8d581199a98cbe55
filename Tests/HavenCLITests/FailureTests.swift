import Foundation
import HavenTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Bad input and crashes: each gets a clear message, the documented exit code, and loses nothing.
@Suite("Failures", .serialized)
struct FailureTests {
    func repoWithBackup(_ tmp: TempDir, _ cli: CLI) async throws -> (repo: String, src: String) {
        let src = tmp.sub("src")
        try Fixture.standardTree(at: src, seed: 11, nonUTF8Names: false)
        let repo = tmp.sub("repo")
        try await cli.ok(["init", "-r", repo])
        try await cli.ok(["-r", repo, "backup", src, "--pack-size", "4"])
        return (repo, src)
    }

    @Test("wrong password: exit 12 and a clear message")
    func wrongPassword() async throws {
        let cli = try CLI()
        let tmp = TempDir("wrongpw")
        let (repo, _) = try await repoWithBackup(tmp, cli)
        let r = try await cli.run(["-r", repo, "snapshots"], env: ["HAVEN_PASSWORD": "nope"])
        #expect(r.status == 12)
        #expect(r.stderr.contains("wrong password"))
    }

    @Test("missing repository: exit 10; not a repository: exit 10")
    func missingRepository() async throws {
        let cli = try CLI()
        let tmp = TempDir("missing")
        let r = try await cli.run(["-r", tmp.sub("nothing-here"), "snapshots"])
        #expect(r.status == 10)
        #expect(r.stderr.contains("no repository"))
        try Fixture.mkdir(tmp.sub("emptydir"))
        let r2 = try await cli.run(["-r", tmp.sub("emptydir"), "snapshots"])
        #expect(r2.status == 10)
    }

    @Test("bad flags: exit 1 with a message naming the problem", arguments: [
        (["backup", "--pack-size", "1000", "/tmp"], "pack-size"),
        (["backup", "--compression", "fast", "/tmp"], "compression"),
        (["init", "--repository-version", "7"], "repository-version"),
        (["backup", "--no-such-flag"], "no-such-flag"),
        (["snapshots"], "repo"),
        (["forget"], "keep"),
    ])
    func badFlags(args: [String], mentions: String) async throws {
        let cli = try CLI()
        let tmp = TempDir("flags")
        var full = args
        if mentions != "repo" && args.first != "init" { full = ["-r", tmp.sub("repo")] + args }
        if args.first == "init" { full = ["-r", tmp.sub("repo")] + args }
        if args.first == "forget" {
            try await cli.ok(["init", "-r", tmp.sub("repo")])
        }
        let r = try await cli.run(full, env: mentions == "repo" ? ["HAVEN_REPOSITORY": ""] : [:])
        #expect(r.status == 1, "\(full): \(r)")
        #expect(r.stderr.lowercased().contains(mentions), "\(full): \(r)")
    }

    @Test("a flipped byte in a pack is found by check --read-data; other files still restore")
    func flippedByte() async throws {
        let cli = try CLI()
        let tmp = TempDir("flip")
        let (repo, src) = try await repoWithBackup(tmp, cli)
        try await cli.ok(["-r", repo, "check", "--read-data"])
        // Damage the largest pack in the middle of its blob area.
        let packs = try await packFiles(repo)
        let victim = try #require(packs.max { $0.1 < $1.1 })
        try await flipByte(victim.0, at: victim.1 / 3)
        let check = try await cli.run(["-r", repo, "check", "--read-data"])
        #expect(check.status == 1)
        let victimID = URL(fileURLWithPath: victim.0).lastPathComponent
        #expect((check.stdout + check.stderr).contains(String(victimID.prefix(8))), "check output should name the pack: \(check)")
        // Structure check does not read data: it passes.
        try await cli.ok(["-r", repo, "check"])
        let target = tmp.sub("restored")
        let restore = try await cli.run(["-r", repo, "restore", "latest", "--target", target])
        #expect(restore.status == 1)
        let diffs = try TreeSnapshot(root: src).differences(from: TreeSnapshot(root: target + src))
        // Only files whose blobs were in the damaged range differ (their content, and the metadata that a
        // failed file does not get); every other file is restored exactly.
        let damaged = Set(diffs.filter { $0.hasPrefix("content differs: ") || $0.hasPrefix("missing: ") }
            .map { String($0.split(separator: ":", maxSplits: 1)[1].dropFirst()) })
        #expect(!damaged.isEmpty)
        #expect(diffs.allSatisfy { d in damaged.contains { d.contains(": \($0)") } }, "\(diffs)")
        #expect(FileManager.default.contents(atPath: target + src + "/docs/readme.txt") == Data("Haven test fixture\n".utf8))
    }

    @Test("a truncated pack is reported by check")
    func truncatedPack() async throws {
        let cli = try CLI()
        let tmp = TempDir("trunc")
        let (repo, _) = try await repoWithBackup(tmp, cli)
        let victim = try #require(try await packFiles(repo).max { $0.1 < $1.1 })
        chmod(victim.0, 0o600)
        #expect(truncate(victim.0, off_t(victim.1 / 2)) == 0)
        let check = try await cli.run(["-r", repo, "check"])
        #expect(check.status == 1)
        #expect((check.stdout + check.stderr).contains(String(URL(fileURLWithPath: victim.0).lastPathComponent.prefix(8))))
        let full = try await cli.run(["-r", repo, "check", "--read-data"])
        #expect(full.status == 1)
    }

    @Test("a backup killed with SIGKILL leaves a repository that checks clean; the next backup reuses uploaded packs",
          arguments: [0.3, 0.8, 1.5, 3.0])
    func killedBackup(after delay: Double) async throws {
        let cli = try CLI()
        let tmp = TempDir("kill")
        let src = tmp.sub("src")
        try Fixture.mkdir(src)
        var rng = SeededRandom(seed: 21)
        for i in 0..<12 { try Fixture.write(src + "/file\(i).bin", rng.bytes(5 << 20)) }
        let repo = tmp.sub("repo")
        try await cli.ok(["init", "-r", repo])
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cli.haven)
        p.arguments = ["-r", repo, "backup", src, "--pack-size", "4", "--compression", "off"]
        p.environment = ProcessInfo.processInfo.environment.merging(cli.env) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        usleep(useconds_t(delay * 1_000_000))
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        // Haven ignores the dead process's lock; restic 0.14 needs `unlock`, which must see it as stale.
        try await cli.ok(["-r", repo, "check", "--read-data"])
        try await cli.resticOK(["-r", repo, "unlock"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: repo + "/locks").isEmpty, "restic did not see the killed process's lock as stale")
        try await cli.resticOK(["-r", repo, "check", "--read-data"])
        let packsBefore = try await packFiles(repo).count
        let r = try await cli.ok(["-r", repo, "backup", src, "--pack-size", "4", "--compression", "off", "--json"])
        let summary = try #require(CLI.lastJSON(r))
        let added = (summary["data_added"] as? Int) ?? -1
        if packsBefore > 0 {
            #expect(added < 60 << 20, "the next backup should reuse the \(packsBefore) packs already uploaded, but added \(added) bytes")
        }
        try await cli.resticOK(["-r", repo, "check", "--read-data"])
        let target = tmp.sub("restored")
        try await cli.ok(["-r", repo, "restore", "latest", "--target", target])
        #expect(try TreeSnapshot(root: src).differences(from: TreeSnapshot(root: target + src)).isEmpty)
    }

    @Test("unreadable source files: a warning each, the backup goes on, exit code 3")
    func unreadableFiles() async throws {
        guard getuid() != 0 else {
            // root reads everything; simulate with a file that vanishes instead.
            let cli = try CLI()
            let tmp = TempDir("vanish")
            let src = tmp.sub("src")
            try Fixture.mkdir(src)
            try Fixture.write(src + "/ok.txt", Array("fine".utf8))
            symlink("x", src + "/loop")
            let repo = tmp.sub("repo")
            try await cli.ok(["init", "-r", repo])
            let r = try await cli.run(["-r", repo, "backup", src, tmp.sub("does-not-exist")])
            #expect(r.status == 3, "\(r)")
            #expect(r.stderr.contains("does-not-exist"))
            #expect(CLI.jsonArray(try await cli.ok(["-r", repo, "snapshots", "--json"])).count == 1)
            return
        }
        let cli = try CLI()
        let tmp = TempDir("unreadable")
        let src = tmp.sub("src")
        try Fixture.mkdir(src)
        try Fixture.write(src + "/ok.txt", Array("fine".utf8))
        try Fixture.write(src + "/secret.txt", Array("no".utf8), mode: 0o000)
        let repo = tmp.sub("repo")
        try await cli.ok(["init", "-r", repo])
        let r = try await cli.run(["-r", repo, "backup", src])
        #expect(r.status == 3)
        #expect(r.stderr.contains("secret.txt"))
    }

    @Test("a prune killed with SIGKILL leaves a repository that checks clean and restores every kept snapshot",
          arguments: [0.15, 0.4, 0.8])
    func killedPrune(after delay: Double) async throws {
        let cli = try CLI()
        let tmp = TempDir("killprune")
        let src = tmp.sub("src")
        try Fixture.mkdir(src)
        let repo = tmp.sub("repo")
        try await cli.ok(["init", "-r", repo])
        for round in 0..<4 {
            for i in 0..<4 { try Fixture.write(src + "/f\(i).bin", SeededRandom.bytes(seed: UInt64(round * 10 + i), 1 << 20)) }
            try await cli.ok(["-r", repo, "backup", src, "--pack-size", "4", "--compression", "off"])
        }
        try await cli.ok(["-r", repo, "forget", "--keep-last", "2"])
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cli.haven)
        p.arguments = ["-r", repo, "prune", "--max-unused", "0%"]
        p.environment = ProcessInfo.processInfo.environment.merging(cli.env) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        usleep(useconds_t(delay * 1_000_000))
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        try await cli.ok(["-r", repo, "unlock"])
        try await cli.ok(["-r", repo, "check", "--read-data"])
        try await cli.resticOK(["-r", repo, "check", "--read-data"])
        for snap in CLI.jsonArray(try await cli.ok(["-r", repo, "snapshots", "--json"])) {
            let id = try #require(snap["id"] as? String)
            try await cli.ok(["-r", repo, "restore", id, "--target", tmp.sub("r-" + id), "--verify"])
        }
        // A second prune finishes the job.
        try await cli.ok(["-r", repo, "prune", "--max-unused", "0%"])
        try await cli.resticOK(["-r", repo, "check", "--read-data"])
    }

    @Test("a full disk: the backup fails with a clear message, exit 1, and the repository stays usable")
    func diskFull() async throws {
        guard getuid() == 0 else {
            Issue.record("this test mounts a small tmpfs and needs root (CI runs as root)")
            return
        }
        let cli = try CLI()
        let tmp = TempDir("full")
        let mnt = tmp.sub("mnt")
        try Fixture.mkdir(mnt)
        let mount = try await Run.process("/bin/mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt])
        try #require(mount.status == 0, "cannot mount a tmpfs: \(mount)")
        defer { _ = try? Run.processBlocking("/bin/umount", ["-l", mnt]) }
        let repo = mnt + "/repo"
        try await cli.ok(["init", "-r", repo])
        let src = tmp.sub("src")
        try Fixture.mkdir(src)
        try Fixture.write(src + "/small.txt", Array("small\n".utf8))
        try await cli.ok(["-r", repo, "backup", src])
        try Fixture.write(src + "/big.bin", SeededRandom.bytes(seed: 5, 6 << 20))
        let r = try await cli.run(["-r", repo, "backup", src, "--compression", "off"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("No space left on device"), "\(r)")
        #expect(CLI.jsonArray(try await cli.ok(["-r", repo, "snapshots", "--json"])).count == 1)
        try await cli.ok(["-r", repo, "check"])
        let target = tmp.sub("restored")
        try await cli.ok(["-r", repo, "restore", "latest", "--target", target])
        #expect(FileManager.default.contents(atPath: target + src + "/small.txt") == Data("small\n".utf8))
    }

    func packFiles(_ repo: String) async throws -> [(String, Int)] {
        var out: [(String, Int)] = []
        for sub in try FileManager.default.contentsOfDirectory(atPath: repo + "/data") {
            for f in try FileManager.default.contentsOfDirectory(atPath: repo + "/data/" + sub) {
                let p = repo + "/data/" + sub + "/" + f
                let size = (try FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? 0
                out.append((p, size))
            }
        }
        return out
    }

    func flipByte(_ path: String, at offset: Int) async throws {
        chmod(path, 0o600)
        let fd = open(path, O_RDWR)
        #expect(fd >= 0)
        defer { close(fd) }
        var b: UInt8 = 0
        pread(fd, &b, 1, off_t(offset))
        b ^= 0x55
        pwrite(fd, &b, 1, off_t(offset))
    }
}
