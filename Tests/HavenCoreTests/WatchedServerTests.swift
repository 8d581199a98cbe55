import Foundation
import HavenTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("Test servers cannot outlive their test process")
struct WatchedServerTests {
    /// Whether a process with this ID runs (a zombie does not).
    static func exists(_ pid: pid_t) -> Bool { WatchedServer.isAlive(pid) }

    /// Waits up to `seconds` for `condition`, polling without blocking a thread of the shared pool (the
    /// other suites running at once need it).
    static func eventually(_ seconds: Double, _ condition: () -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }

    @Test("when the test process's end of the pipe closes without stop, the server ends and its directory goes")
    func abandonedServerEnds() async throws {
        let dir = TempDir("haven-watched")
        let data = dir.sub("data")
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let server = try WatchedServer(["/bin/sleep", "300"], log: dir.sub("log"), removing: data)
        #expect(server.isRunning && Self.exists(server.pid))
        server.abandon()  // what the kernel does when the test process crashes
        #expect(try await Self.eventually(15) { server.process.exitCode != nil }, "the watchdog ends")
        #expect(!Self.exists(server.pid), "the server is gone")
        #expect(!FileManager.default.fileExists(atPath: data), "its directory is removed")
        #expect(FileManager.default.fileExists(atPath: dir.path), "only the directory given is removed")
    }

    @Test("stop ends the server and leaves its directory to the test")
    func stopKeepsDirectory() async throws {
        let dir = TempDir("haven-watched")
        let server = try WatchedServer(["/bin/sleep", "300"], log: dir.sub("log"), removing: dir.path)
        server.stop()
        #expect(!server.isRunning)
        #expect(!Self.exists(server.pid))
        #expect(FileManager.default.fileExists(atPath: dir.path))
    }

    @Test("a server that ignores SIGTERM is killed 10 s later, with everything it started")
    func stubbornServerIsKilled() async throws {
        let dir = TempDir("haven-watched")
        let pidFile = dir.sub("grandchild")
        let server = try WatchedServer(
            ["/bin/sh", "-c", "trap '' TERM; sleep 300 & echo $! > \(pidFile); while :; do sleep 1; done"],
            log: dir.sub("log"))
        #expect(try await Self.eventually(10) { FileManager.default.fileExists(atPath: pidFile) })
        let grandchild = try #require(pid_t(try String(contentsOfFile: pidFile, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        let start = Date()
        server.abandon()
        #expect(try await Self.eventually(20) { server.process.exitCode != nil })
        #expect(Date().timeIntervalSince(start) >= 9, "SIGTERM was ignored, so only the SIGKILL ended it")
        #expect(try await Self.eventually(5) { !Self.exists(server.pid) && !Self.exists(grandchild) })
    }

    @Test("a server that exits on its own is seen as not running")
    func exitedServerIsNotRunning() async throws {
        let dir = TempDir("haven-watched")
        let server = try WatchedServer(["/bin/true"], log: dir.sub("log"))
        #expect(try await Self.eventually(10) { !server.isRunning })
        server.stop()
    }
}
