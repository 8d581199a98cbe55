import Foundation
import HavenCore
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A program started with `posix_spawn`, its stdin, stdout and stderr connected to pipes.
///
/// Foundation's `Process` is not used on purpose: on Linux it learns that a child ended when the child
/// closes an inherited socket, and then blocks its one monitoring thread in `waitpid` until that child
/// really exits. ssh and sshd close all inherited descriptors at startup, so with `Process` a running
/// ssh would stall the exit detection of every other `Process` in the program (hooks, restic in tests).
/// Here a dedicated thread waits for this one child only.
final class ChildProcess: Sendable {
    let pid: pid_t
    /// Write end of the child's stdin.
    let stdin: Int32
    /// Read ends of the child's stdout and stderr.
    let stdout: Int32, stderr: Int32

    private enum Status { case running, exited(Int32) }
    /// Shared with the reaper thread, which must not keep the `ChildProcess` alive.
    private final class Exit: Sendable {
        let status = Mutex<Status>(.running)
        /// Left once the child has ended and been reaped.
        let group = DispatchGroup()
    }
    private let exit = Exit()

    /// Starts `executable` (an absolute path) with `arguments` (without argv[0]).
    /// Throws `HavenError(.io)` naming the program when it cannot be started.
    init(executable: String, arguments: [String], environment: [String: String]? = nil) throws {
        var inPipe: [Int32] = [-1, -1], outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        guard Self.makePipe(&inPipe), Self.makePipe(&outPipe), Self.makePipe(&errPipe) else {
            let e = errno
            for fd in inPipe + outPipe + errPipe where fd >= 0 { close(fd) }
            throw HavenError(.io, "cannot start \(executable): no pipes available (errno \(e)); close some files and retry")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        // Nothing else leaks into the child (other descriptors may lack O_CLOEXEC).
        if let closeFrom = Self.closeFrom { _ = closeFrom(&actions, 3) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // We ignore SIGPIPE; the child gets the default behaviour back.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = ([executable] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        let envStrings: [String]
        if let environment {
            envStrings = environment.map { "\($0.key)=\($0.value)" }
        } else {
            var list: [String] = []
            if var p = Optional(environ) {
                while let entry = p.pointee { list.append(String(cString: entry)); p += 1 }
            }
            envStrings = list
        }
        let envp = envStrings.map { strdup($0) }
        defer { envp.forEach { free($0) } }

        var child: pid_t = 0
        let rc = (argv + [nil]).withUnsafeBufferPointer { a in
            (envp + [nil]).withUnsafeBufferPointer { e in
                posix_spawn(&child, executable, &actions, &attributes, a.baseAddress!, e.baseAddress!)
            }
        }
        close(inPipe[0]); close(outPipe[1]); close(errPipe[1])
        guard rc == 0 else {
            close(inPipe[1]); close(outPipe[0]); close(errPipe[0])
            throw HavenError(.io, "cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        pid = child
        stdin = inPipe[1]
        stdout = outPipe[0]
        stderr = errPipe[0]
        startReaper()
    }

    // glibc's pipe2 and posix_spawn_file_actions_addclosefrom_np are only declared with _GNU_SOURCE,
    // which Swift's Glibc module does not set: look them up at run time.
    private typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
    private typealias CloseFrom = @convention(c) (UnsafeMutableRawPointer, Int32) -> Int32
    private static let pipe2: Pipe2? = dlsym(nil, "pipe2").map { unsafeBitCast($0, to: Pipe2.self) }
    private static let closeFrom: CloseFrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map {
        unsafeBitCast($0, to: CloseFrom.self)
    }

    /// A pipe whose two ends are closed on exec.
    private static func makePipe(_ fds: inout [Int32]) -> Bool {
        if let pipe2 { return pipe2(&fds, O_CLOEXEC) == 0 }
        guard pipe(&fds) == 0 else { return false }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        return true
    }

    private func startReaper() {
        let pid = self.pid
        let exit = self.exit
        exit.group.enter()
        let thread = Thread {
            // Wait without reaping first, so `terminate` never signals a recycled pid.
            var info = siginfo_t()
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
            exit.status.withLock { s in
                var raw: Int32 = 0
                while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
                s = .exited((raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f))
            }
            exit.group.leave()
        }
        thread.name = "haven-child-reaper"
        thread.start()
    }

    /// The exit code (128 + signal number when killed by a signal), or nil while running.
    var exitCode: Int32? {
        exit.status.withLock { if case .exited(let c) = $0 { return c }; return nil }
    }

    /// Waits up to `seconds` for the child to end; returns its exit code, or nil when it still runs.
    func wait(seconds: Double) -> Int32? {
        if let code = exitCode { return code }
        _ = exit.group.wait(timeout: .now() + max(0, seconds))
        return exitCode
    }

    /// Sends SIGTERM, and SIGKILL when the child has not ended `grace` seconds later. Returns the exit code.
    @discardableResult
    func terminate(grace: Double = 2) -> Int32? {
        send(SIGTERM)
        if let code = wait(seconds: grace) { return code }
        send(SIGKILL)
        return wait(seconds: grace)
    }

    private func send(_ signal: Int32) {
        exit.status.withLock { s in
            if case .running = s { kill(pid, signal) }
        }
    }

    private let stdinOpen = Mutex(true)

    /// Closes the child's stdin (it sees end of input). Later calls do nothing.
    func closeStdin() {
        stdinOpen.withLock { open in
            if open { close(stdin) }
            open = false
        }
    }

    deinit {
        send(SIGKILL)
        closeStdin()
        close(stdout); close(stderr)
    }
}
