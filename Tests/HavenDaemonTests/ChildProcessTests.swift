import Foundation
import Testing
import HavenCore
@testable import HavenDaemon

@Suite("Child processes")
struct ChildProcessTests {
    /// Foundation's Process waits for a child in its one monitoring thread as soon as the child closes an
    /// inherited descriptor, and sees no other child end until that one exits. ssh closes them all when it
    /// starts, so a hook running ssh held back the end of every other job.
    @Test("a child that closes its inherited descriptors does not delay seeing another child end")
    func closingDescriptorsDoesNotStallOthers() async throws {
        // The long child sleeps far longer than any delay a loaded machine adds to the short one; it is
        // killed when the test ends.
        let script = "import os, time\nos.closerange(3, 65536)\ntime.sleep(120)\n"
        let long = try ChildProcess(["python3", "-c", script]) { _, _ in }
        defer { long.signal(SIGKILL) }
        try await Task.sleep(for: .milliseconds(500))  // let it close its descriptors
        let lines = Locked<[String]>([])
        let short = try ChildProcess(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]) { isErr, line in
            lines.withLock { $0.append((isErr ? "2:" : "1:") + line) }
        }
        let exit = await short.wait()
        #expect(exit == ChildProcess.Exit(code: 3, signaled: false))
        #expect(lines.withLock { $0.sorted() } == ["1:out", "2:err"])
        #expect(kill(long.pid, 0) == 0, "the short child's end was seen only after the long one ended")
    }

    @Test("terminate stops the child's whole process group; a signal shows as 128 + its number")
    func terminateStopsTheGroup() async throws {
        let marker = FileManager.default.temporaryDirectory.appendingPathComponent("haven-child-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { unlink(marker) }
        // The grandchild writes its pid, then would outlive the shell if only the shell were stopped. It
        // sleeps far longer than a loaded machine can delay this test's next steps (30 s was once not
        // enough: the shell ended on its own first); if the test fails, `terminate` below still ends it.
        let child = try ChildProcess(["/bin/sh", "-c", "sleep 300 & echo $! > \(marker); wait"], newProcessGroup: true) { _, _ in }
        var grandchild: pid_t = 0
        for _ in 0..<100 where grandchild == 0 {
            try await Task.sleep(for: .milliseconds(50))
            grandchild = (try? String(contentsOfFile: marker, encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
        }
        #expect(grandchild > 0)
        child.terminate(grace: 5)
        let exit = await child.wait()
        #expect(exit == ChildProcess.Exit(code: 128 + SIGTERM, signaled: true))
        // The grandchild got SIGTERM too (it is reaped by init, so poll until it is gone).
        var gone = false
        for _ in 0..<100 where !gone {
            gone = kill(grandchild, 0) != 0
            if !gone { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(gone, "the grandchild \(grandchild) still runs")
    }

    @Test("a program that cannot be started is an error naming it")
    func missingProgram() {
        #expect(throws: HavenError.self) { try ChildProcess(["/nonexistent/haven-test-program"]) { _, _ in } }
        #expect(throws: HavenError.self) { try ChildProcess(["haven-no-such-program-in-path"]) { _, _ in } }
    }
}
