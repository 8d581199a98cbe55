import Foundation
import Testing
import HavenCore
import HavenTestSupport

@Suite("Subprocess")
struct SubprocessTests {
    /// On Linux, Dispatch's global queue adds threads for blocked work only slowly: with 32 blocks waiting
    /// there, a timer fired on it ran more than 20 s late on this machine. A daemon whose hooks or password
    /// commands block that queue must still stop a child on time and see it end at once.
    @Test("a timer's signal and the exit handler do not wait for Dispatch's global queue")
    func timersAndHandlersDoNotNeedTheGlobalQueue() throws {
        let release = DispatchSemaphore(value: 0)
        let blockers = 32
        for _ in 0..<blockers { DispatchQueue.global().async { release.wait() } }
        defer { for _ in 0..<blockers { release.signal() } }

        let start = ContinuousClock.now
        let child = try Subprocess(["sleep", "30"])
        child.signal(SIGKILL, ifRunningAfter: 0.3)
        let seen = DispatchSemaphore(value: 0)
        child.onExit { seen.signal() }
        let handled = seen.wait(timeout: .now() + 10) == .success
        let elapsed = ContinuousClock.now - start

        #expect(handled, "the child was not stopped, or its end not seen, within 10 s")
        #expect(child.exit == Subprocess.Exit(code: 128 + SIGKILL, signaled: true))
        #expect(child.timerFired)
        #expect(elapsed >= .milliseconds(300), "the timer fired early")
    }

    @Test("a timer does nothing to a child that ended before it")
    func timerAfterTheEnd() throws {
        let child = try Subprocess(["/bin/sh", "-c", "exit 7"])
        child.signal(SIGKILL, ifRunningAfter: 0.2)
        #expect(child.wait(seconds: 10) == 7)
        Thread.sleep(forTimeInterval: 0.5)
        #expect(!child.timerFired)
        #expect(child.exit == Subprocess.Exit(code: 7, signaled: false))
    }

    @Test("terminateLater kills a child that ignores SIGTERM after the grace")
    func terminateLaterKills() throws {
        // The shell ignores SIGTERM and so does the sleep it waits for.
        let child = try Subprocess(["/bin/sh", "-c", "trap '' TERM; echo ready; sleep 30"], newProcessGroup: true)
        var byte: UInt8 = 0
        #expect(read(child.stdout, &byte, 1) == 1)  // the trap is set
        let start = ContinuousClock.now
        child.terminateLater(grace: 0.3)
        #expect(child.wait(seconds: 10) == 128 + SIGKILL)
        #expect(ContinuousClock.now - start >= .milliseconds(300))
    }

    @Test("a child starts in the directory it is given")
    func workingDirectory() throws {
        let dir = TempDir()
        let real = URL(fileURLWithPath: dir.path).resolvingSymlinksInPath().path
        let child = try Subprocess(["/bin/pwd"], directory: real)
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(child.stdout, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            output += buffer[0..<n]
        }
        #expect(child.wait(seconds: 10) == 0)
        #expect(String(decoding: output, as: UTF8.self) == real + "\n")
        #expect(throws: HavenError.self) { try Subprocess(["/bin/pwd"], directory: real + "/missing").wait(seconds: 10) }
    }

    // The test harness runs every CLI test's program through `Run.processBlocking`.

    @Test("the harness passes input larger than a pipe holds and captures both outputs")
    func harnessCapturesOutput() throws {
        let input = Data((0..<1_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let r = try Run.processBlocking("/bin/sh", ["-c", "cat; echo done >&2; exit 4"], stdin: input, timeout: 60)
        #expect(r.status == 4)
        expectSameBytes(r.stdoutData, input)
        #expect(r.stderr == "done\n")
    }

    @Test("the harness kills a program at its timeout and reports the signal")
    func harnessTimeout() throws {
        let start = ContinuousClock.now
        let r = try Run.processBlocking("/bin/sleep", ["30"], timeout: 0.5)
        #expect(r.status == SIGKILL)
        #expect(ContinuousClock.now - start < .seconds(20))
    }
}
