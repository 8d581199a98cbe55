import Foundation
import HavenCore
import HavenTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The commands' options, run through the built binary.
@Suite("Commands")
struct CommandTests {
    /// A repository reached over SFTP through OpenSSH's SFTP server run directly on stdin and stdout (no
    /// ssh or sshd), wrapped in a shell that writes its PID to a file.
    struct SFTPSetup {
        static let server = "/usr/lib/openssh/sftp-server"
        static var available: Bool { FileManager.default.isExecutableFile(atPath: server) }

        let cli: CLI
        let tmp: TempDir
        var src: String { tmp.sub("src") }
        var pidFile: String { tmp.sub("server.pid") }
        var repo: String { "sftp:localhost:" + tmp.sub("repo") }

        init(_ name: String) throws {
            cli = try CLI()
            tmp = TempDir(name)
            try Fixture.mkdir(tmp.sub("src"))
        }

        /// haven's options for the repository; `after` runs in the wrapper once the server has ended. With
        /// `stopped`, the wrapper stops itself (SIGSTOP) after writing its PID, before the server starts.
        func options(after: String? = nil, stopped: Bool = false) -> [String] {
            let run = after.map { "\(Self.server); \($0)" } ?? "exec \(Self.server)"
            let stop = stopped ? "kill -STOP $$; " : ""
            return ["-r", repo, "--no-cache", "-o", "sftp.command=sh -c 'echo $$ > \(pidFile); \(stop)\(run)'"]
        }

        /// The PID the last session's wrapper wrote, if any.
        func serverPID() -> Int32? {
            (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
    }

    @Test("Ctrl-C during a backup over SFTP cancels it cleanly: the session survives the signal, the lock is removed, exit 130",
          .enabled(if: SFTPSetup.available, "needs openssh-server"), .timeLimit(.minutes(1)))
    func sftpInterrupt() async throws {
        let s = try SFTPSetup("cmd-sftp-int")
        for i in 0..<8 { try Fixture.write(s.src + "/f\(i).bin", SeededRandom.bytes(seed: UInt64(40 + i), 4 << 20)) }
        try await s.cli.ok(s.options() + ["init"])
        try FileManager.default.removeItem(atPath: s.pidFile)
        // The backup leads a process group of its own, as a command started from a terminal does, and its
        // SFTP server is in that group too.
        let child = try Subprocess([s.cli.haven, "-q"] + s.options(stopped: true) + ["backup", s.src],
                                   environment: ProcessInfo.processInfo.environment.merging(s.cli.env) { $1 },
                                   newProcessGroup: true)
        var server: Int32?
        for _ in 0..<2000 where server == nil {
            server = s.serverPID()
            if server == nil { try await Task.sleep(for: .milliseconds(5)) }
        }
        let serverPID = try #require(server, "the backup's SFTP server did not start")
        // The server stops itself before it starts serving, so the backup cannot get anywhere however
        // slowly this test runs; press Ctrl-C (SIGINT to the whole group); then let the server go on.
        func stopped() -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(serverPID)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            return stat[stat.index(close, offsetBy: 2)...].hasPrefix("T")
        }
        for _ in 0..<2000 where !stopped() { try await Task.sleep(for: .milliseconds(5)) }
        #expect(stopped(), "the SFTP server did not stop itself")
        try await Task.sleep(for: .milliseconds(200))
        #expect(child.exitCode == nil, "the backup ended before it could be interrupted")
        child.signal(SIGINT)
        try await Task.sleep(for: .milliseconds(300))
        kill(serverPID, SIGCONT)
        for _ in 0..<600 where child.exitCode == nil { try await Task.sleep(for: .milliseconds(50)) }
        if child.exitCode == nil { _ = child.terminate() }
        let stderr = String(decoding: FileHandle(fileDescriptor: child.stderr, closeOnDealloc: false).readDataToEndOfFile(), as: UTF8.self)
        #expect(child.exitCode == 130, "exit \(child.exitCode.map(String.init) ?? "none"): \(stderr)")
        #expect(stderr.contains("cancelled") || stderr.contains("interrupted"), "\(stderr)")
        #expect(!stderr.contains("SFTP connection"), "the SFTP session died with the signal: \(stderr)")
        // The cancelled backup removed its lock and saved its index over the same session: the server
        // ignored the SIGINT. (Killed by it, the server would have had to be started again, writing a new
        // PID into the file.)
        let after = s.serverPID()
        #expect(after == serverPID, "the SFTP server \(serverPID) did not survive Ctrl-C; a new session (\(after.map(String.init) ?? "none")) was opened")
        let locks = (try? FileManager.default.contentsOfDirectory(atPath: s.tmp.sub("repo/locks"))) ?? []
        #expect(locks.isEmpty, "lock files left: \(locks)")
    }

    @Test("an SFTP session's process is ended and reaped before haven exits, not left running behind it",
          .enabled(if: SFTPSetup.available, "needs openssh-server"), .timeLimit(.minutes(1)))
    func sftpSessionEndsWithTheCommand() async throws {
        let s = try SFTPSetup("cmd-sftp")
        try Fixture.write(s.src + "/a.txt", Array("a\n".utf8))
        // The wrapper stays on (as a sleep, same PID) after the server has seen the end of its input.
        for args in [["init"], ["backup", s.src], ["snapshots"]] {
            try? FileManager.default.removeItem(atPath: s.pidFile)
            try await s.cli.ok(s.options(after: "exec sleep 30") + args)
            let pid = try #require(s.serverPID(), "no PID written")
            let alive = kill(pid, 0) == 0
            #expect(!alive, "haven \(args[0]) exited while its SFTP session (pid \(pid)) still ran")
            if alive { kill(pid, SIGKILL) }
        }
    }

    /// A repository with a small source tree.
    struct Setup {
        let cli: CLI
        let tmp = TempDir("cmd")
        var src: String { tmp.sub("src") }
        var repo: String { tmp.sub("repo") }

        init() async throws {
            cli = try CLI()
            try Fixture.mkdir(src)
            try Fixture.write(src + "/keep.txt", Array("keep\n".utf8))
            try Fixture.write(src + "/skip.tmp", Array("temporary\n".utf8))
            try Fixture.write(src + "/UPPER.TMP", Array("upper\n".utf8))
            try Fixture.mkdir(src + "/cache")
            try Fixture.write(src + "/cache/CACHEDIR.TAG", Array("Signature: 8a477f597d28d172789f06886806bc55\n".utf8))
            try Fixture.write(src + "/cache/blob", Array("cached\n".utf8))
            try Fixture.mkdir(src + "/marked")
            try Fixture.write(src + "/marked/.nobackup", [])
            try Fixture.write(src + "/marked/data", Array("marked\n".utf8))
            try Fixture.write(src + "/large.bin", SeededRandom.bytes(seed: 3, 200_000))
            try Fixture.mkdir(src + "/sub")
            try Fixture.write(src + "/sub/inner.txt", Array("inner\n".utf8))
            try await cli.ok(["init", "-r", repo])
        }

        func paths(_ snapshot: String = "latest") async throws -> Set<String> {
            let r = try await cli.ok(["-r", repo, "ls", snapshot])
            return Set(r.stdout.split(separator: "\n").dropFirst().map { String($0) }.filter { $0.hasPrefix(src) }
                .map { String($0.dropFirst(src.count)) })
        }
    }

    @Test("-v, -vv before the command raise verbosity; a look-alike is not taken as a global option")
    func verbosityFlagsBeforeTheCommand() async throws {
        let s = try await Setup()
        try await s.cli.ok(["-r", s.repo, "backup", s.src])
        let line = "no matching entries in 1 snapshots"
        #expect(!(try await s.cli.ok(["-r", s.repo, "find", "no-such-name"])).stdout.contains(line))
        for flag in ["-v", "-vv", "-vvv"] {
            let r = try await s.cli.ok([flag, "-r", s.repo, "find", "no-such-name"])
            #expect(r.stdout.contains(line), "\(flag): \(r.stdout)")
        }
        let odd = try await s.cli.run(["-vx", "-r", s.repo, "find", "no-such-name"])
        #expect(odd.status != 0)
    }

    @Test("timestamps carry the local zone's offset on each side of a daylight-saving change")
    func timestampsAcrossZoneTransition() async throws {
        let s = try await Setup()
        // Berlin moved from +01:00 to +02:00 at 2026-03-29 01:00 UTC: one file a minute before, two in the
        // hour after (the offset is remembered per hour, so the hour before must not lend its offset).
        let times: [(String, Double, String)] = [
            ("before", 1_774_745_940, "2026-03-29T01:59:00+01:00"),
            ("after", 1_774_746_060, "2026-03-29T03:01:00+02:00"),
            ("later", 1_774_748_400, "2026-03-29T03:40:00+02:00"),
        ]
        for (name, seconds, _) in times {
            let path = s.src + "/sub/" + name
            try Fixture.write(path, Array(name.utf8))
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: seconds)], ofItemAtPath: path)
        }
        let berlin = ["TZ": "Europe/Berlin"]
        let backup = try await s.cli.run(["-r", s.repo, "backup", s.src + "/sub"], env: berlin)
        #expect(backup.status == 0, "\(backup)")
        let ls = try await s.cli.run(["-r", s.repo, "ls", "--json", "latest"], env: berlin)
        #expect(ls.status == 0, "\(ls)")
        var mtimes: [String: String] = [:]
        for line in ls.stdout.split(separator: "\n") {
            guard let node = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let name = node["name"] as? String, let mtime = node["mtime"] as? String else { continue }
            mtimes[name] = mtime
        }
        for (name, _, expected) in times { #expect(mtimes[name] == expected, "\(name): \(mtimes[name] ?? "missing")") }
    }

    @Test("backup exclude options leave out exactly what they name")
    func excludes() async throws {
        let s = try await Setup()
        let excludeFile = s.tmp.sub("excludes")
        try Fixture.write(excludeFile, Array("# comment\n\n/**/sub\n".utf8))
        try await s.cli.ok(["-r", s.repo, "backup", s.src, "--exclude", "*.tmp", "--iexclude", "*.TMP",
                            "--exclude-caches", "--exclude-if-present", ".nobackup", "--exclude-larger-than", "100K",
                            "--exclude-file", excludeFile])
        let p = try await s.paths()
        #expect(p.contains("/keep.txt"))
        for gone in ["/skip.tmp", "/UPPER.TMP", "/cache", "/marked", "/large.bin", "/sub"] {
            #expect(!p.contains(gone), "\(gone) should be excluded: \(p.sorted())")
        }
        // Without excludes everything is there.
        try await s.cli.ok(["-r", s.repo, "backup", s.src])
        let all = try await s.paths()
        for present in ["/skip.tmp", "/UPPER.TMP", "/cache/blob", "/marked/data", "/large.bin", "/sub/inner.txt"] {
            #expect(all.contains(present))
        }
    }

    @Test("--files-from, --tag, --host, --dry-run and snapshot filters")
    func filesFromTagsHost() async throws {
        let s = try await Setup()
        let list = s.tmp.sub("list")
        try Fixture.write(list, Array("# files\n\(s.src)/keep.txt\n\(s.src)/sub\n".utf8))
        let dry = try await s.cli.ok(["-r", s.repo, "backup", "--files-from", list, "--dry-run", "--json"])
        #expect(CLI.lastJSON(dry)?["dry_run"] as? Bool == true)
        #expect(CLI.jsonArray(try await s.cli.ok(["-r", s.repo, "snapshots", "--json"])).isEmpty, "dry run wrote a snapshot")
        try await s.cli.ok(["-r", s.repo, "backup", "--files-from", list, "--tag", "a,b", "--host", "alpha"])
        try await s.cli.ok(["-r", s.repo, "backup", s.src, "--tag", "c", "--host", "beta"])
        try await s.cli.ok(["-r", s.repo, "backup", s.src, "--host", "beta"])
        let first = try await s.paths()
        #expect(first.contains("/keep.txt"))
        func count(_ args: [String]) async throws -> Int {
            CLI.jsonArray(try await s.cli.ok(["-r", s.repo, "snapshots", "--json"] + args)).count
        }
        #expect(try await count([]) == 3)
        #expect(try await count(["--host", "alpha"]) == 1)
        #expect(try await count(["--tag", "a,b"]) == 1)
        #expect(try await count(["--tag", "a,c"]) == 0)
        #expect(try await count(["--tag", "c", "--tag", "a"]) == 2)
        #expect(try await count(["--path", s.src]) == 2)
        #expect(try await count(["--latest", "1", "--host", "beta"]) == 1)
        let grouped = try await s.cli.ok(["-r", s.repo, "snapshots", "--json", "--group-by", "host"])
        let groups = try #require(try JSONSerialization.jsonObject(with: grouped.stdoutData) as? [[String: Any]])
        #expect(groups.count == 2)
        let text = try await s.cli.ok(["-r", s.repo, "snapshots"])
        #expect(text.stdout.contains("alpha") && text.stdout.contains("3 snapshots"))
    }

    @Test("a second backup reads only what changed, using the parent snapshot")
    func parentSnapshot() async throws {
        let s = try await Setup()
        let first = try #require(CLI.lastJSON(try await s.cli.ok(["-r", s.repo, "backup", s.src, "--json"])))
        let total = try #require(first["total_files_processed"] as? Int)
        let second = try #require(CLI.lastJSON(try await s.cli.ok(["-r", s.repo, "backup", s.src, "--json"])))
        #expect(second["files_unmodified"] as? Int == total)
        #expect(second["data_blobs"] as? Int == 0)
        #expect(second["parent"] as? String == first["snapshot_id"] as? String)
        try Fixture.write(s.src + "/keep.txt", Array("changed content\n".utf8))
        let third = try #require(CLI.lastJSON(try await s.cli.ok(["-r", s.repo, "backup", s.src, "--json"])))
        #expect(third["files_changed"] as? Int == 1)
        #expect(third["files_unmodified"] as? Int == total - 1)
        let forced = try #require(CLI.lastJSON(try await s.cli.ok(["-r", s.repo, "backup", s.src, "--json", "--force"])))
        #expect(forced["files_unmodified"] as? Int == 0)
    }

    @Test("backup --stdin stores standard input as one file")
    func stdin() async throws {
        let s = try await Setup()
        let payload = Data(SeededRandom.bytes(seed: 9, 1_500_000))
        try await s.cli.ok(["-r", s.repo, "backup", "--stdin", "--stdin-filename", "dump.sql"], stdin: payload)
        let ls = try await s.cli.ok(["-r", s.repo, "ls", "latest"])
        #expect(ls.stdout.contains("/dump.sql"))
        let target = s.tmp.sub("out")
        try await s.cli.ok(["-r", s.repo, "restore", "latest", "--target", target])
        expectSameBytes(FileManager.default.contents(atPath: target + "/dump.sql"), payload)
    }

    @Test("restore --include/--exclude, SNAPSHOT:SUBPATH, --verify, --dry-run and overwrite policies")
    func restoreOptions() async throws {
        let s = try await Setup()
        try await s.cli.ok(["-r", s.repo, "backup", s.src])
        let inc = s.tmp.sub("inc")
        try await s.cli.ok(["-r", s.repo, "restore", "latest", "--target", inc, "--include", s.src + "/sub"])
        #expect(FileManager.default.fileExists(atPath: inc + s.src + "/sub/inner.txt"))
        #expect(!FileManager.default.fileExists(atPath: inc + s.src + "/keep.txt"))
        let exc = s.tmp.sub("exc")
        try await s.cli.ok(["-r", s.repo, "restore", "latest", "--target", exc, "--exclude", "*.tmp"])
        #expect(FileManager.default.fileExists(atPath: exc + s.src + "/keep.txt"))
        #expect(!FileManager.default.fileExists(atPath: exc + s.src + "/skip.tmp"))
        let sub = s.tmp.sub("subpath")
        let r = try await s.cli.ok(["-r", s.repo, "restore", "latest:" + s.src + "/sub", "--target", sub, "--verify"])
        #expect(FileManager.default.contents(atPath: sub + "/inner.txt") == Data("inner\n".utf8))
        #expect(r.stdout.contains("verified"))
        let dry = s.tmp.sub("dry")
        try await s.cli.ok(["-r", s.repo, "restore", "latest", "--target", dry, "--dry-run"])
        #expect(!FileManager.default.fileExists(atPath: dry + s.src))
        // never: an existing file is left alone; always: it is replaced.
        try Fixture.write(sub + "/inner.txt", Array("local edit\n".utf8))
        try await s.cli.ok(["-r", s.repo, "restore", "latest:" + s.src + "/sub", "--target", sub, "--overwrite", "never"])
        #expect(FileManager.default.contents(atPath: sub + "/inner.txt") == Data("local edit\n".utf8))
        try await s.cli.ok(["-r", s.repo, "restore", "latest:" + s.src + "/sub", "--target", sub])
        #expect(FileManager.default.contents(atPath: sub + "/inner.txt") == Data("inner\n".utf8))
        let bad = try await s.cli.run(["-r", s.repo, "restore", "latest:/no/such/dir", "--target", s.tmp.sub("bad")])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("no"), "\(bad)")
        let noTarget = try await s.cli.run(["-r", s.repo, "restore", "latest"])
        #expect(noTarget.status == 1 && noTarget.stderr.contains("target"))
    }

    @Test("forget and prune: dry runs change nothing; policies keep what they say")
    func forgetPrune() async throws {
        let s = try await Setup()
        for i in 0..<4 {
            try Fixture.write(s.src + "/gen.bin", SeededRandom.bytes(seed: UInt64(100 + i), 600_000))
            try await s.cli.ok(["-r", s.repo, "backup", s.src, "--tag", i == 0 ? "precious" : "daily"])
        }
        let before = try packCount(s.repo)
        let dry = try await s.cli.ok(["-r", s.repo, "forget", "--keep-last", "1", "--dry-run"])
        #expect(dry.stdout.contains("remove 3 snapshots"), "\(dry)")
        #expect(CLI.jsonArray(try await s.cli.ok(["-r", s.repo, "snapshots", "--json"])).count == 4)
        try await s.cli.ok(["-r", s.repo, "forget", "--keep-last", "1", "--keep-tag", "precious"])
        let left = CLI.jsonArray(try await s.cli.ok(["-r", s.repo, "snapshots", "--json"]))
        #expect(left.count == 2)
        #expect(left.contains { ($0["tags"] as? [String]) == ["precious"] })
        let plan = try await s.cli.ok(["-r", s.repo, "prune", "--dry-run"])
        #expect(try packCount(s.repo) == before, "prune --dry-run changed the repository")
        #expect(!plan.stdout.isEmpty)
        try await s.cli.ok(["-r", s.repo, "prune", "--max-unused", "0%"])
        #expect(try packCount(s.repo) < before)
        try await s.cli.ok(["-r", s.repo, "check", "--read-data"])
        try await s.cli.resticOK(["-r", s.repo, "check", "--read-data"])
        let badUnused = try await s.cli.run(["-r", s.repo, "prune", "--max-unused", "lots"])
        #expect(badUnused.status == 1)
    }

    @Test("check --read-data-subset reads the chosen part; bad subsets are refused")
    func checkSubset() async throws {
        let s = try await Setup()
        try await s.cli.ok(["-r", s.repo, "backup", s.src])
        for subset in ["1/2", "2/2", "50%", "1M"] {
            try await s.cli.ok(["-r", s.repo, "check", "--read-data-subset", subset])
        }
        for bad in ["0/2", "3/2", "150%", "x"] {
            let r = try await s.cli.run(["-r", s.repo, "check", "--read-data-subset", bad])
            #expect(r.status == 1, "subset \(bad) should be refused")
        }
    }

    @Test("init --copy-chunker-params makes a second repository that cuts the same chunks")
    func copyChunkerParams() async throws {
        let s = try await Setup()
        let second = s.tmp.sub("second")
        try await s.cli.ok(["init", "-r", second, "--copy-chunker-params", "--from-repo", s.repo],
                           env: ["HAVEN_FROM_PASSWORD": s.cli.password])
        let a = try await s.cli.ok(["-r", s.repo, "cat", "config"])
        let b = try await s.cli.ok(["-r", second, "cat", "config"])
        func pol(_ r: ProcessResult) -> String? {
            (try? JSONSerialization.jsonObject(with: r.stdoutData) as? [String: Any])?["chunker_polynomial"] as? String
        }
        #expect(pol(a) != nil && pol(a) == pol(b))
        let missing = try await s.cli.run(["init", "-r", s.tmp.sub("third"), "--copy-chunker-params"])
        #expect(missing.status == 1 && missing.stderr.contains("from-repo"))
    }

    @Test("unlock removes the lock a killed process left; --no-lock is refused for writes")
    func unlock() async throws {
        let s = try await Setup()
        for i in 0..<6 { try Fixture.write(s.src + "/big\(i).bin", SeededRandom.bytes(seed: UInt64(i), 4 << 20)) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: s.cli.haven)
        p.arguments = ["-r", s.repo, "backup", s.src]
        p.environment = ProcessInfo.processInfo.environment.merging(s.cli.env) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(30)
        // Lock files only: a temporary file being written does not count.
        func locks() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: s.repo + "/locks").filter { !$0.contains(".tmp") }
        }
        while try locks().isEmpty && p.isRunning && Date() < deadline {
            usleep(20_000)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        // Wait until the parent (this test process) has reaped it: a zombie still answers kill(pid, 0).
        let reapDeadline = Date().addingTimeInterval(10)
        while kill(p.processIdentifier, 0) == 0 && Date() < reapDeadline { usleep(20_000) }
        #expect(try !locks().isEmpty, "the killed backup left no lock to test with")
        let r = try await s.cli.ok(["-r", s.repo, "unlock"])
        #expect(r.stdout.contains("removed 1 lock"))
        #expect(try locks().isEmpty)
        let noLock = try await s.cli.run(["-r", s.repo, "backup", s.src, "--no-lock"])
        #expect(noLock.status == 1 && noLock.stderr.contains("no-lock"))
        try await s.cli.ok(["-r", s.repo, "snapshots", "--no-lock"])
    }

    func packCount(_ repo: String) throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: repo + "/data").reduce(0) {
            $0 + (try FileManager.default.contentsOfDirectory(atPath: repo + "/data/" + $1)).count
        }
    }
}
