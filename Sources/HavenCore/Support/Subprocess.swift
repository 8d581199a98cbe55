import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A program started with `posix_spawn`, its stdin, stdout and stderr connected to pipes, and a thread of
/// its own that waits for it to end.
///
/// Foundation's `Process` is not used on purpose: on Linux it learns that a child ended when the child
/// closes an inherited socket, and then blocks its one monitoring thread in `waitpid` until that child
/// really exits. Programs such as ssh close every inherited descriptor when they start, so one of them
/// running for minutes (an SFTP connection, a hook calling ssh) would hold back the exit of every other
/// child in the program: a daemon would see finished backups as still running.
public final class Subprocess: Sendable {
    public let pid: pid_t
    /// Write end of the child's stdin (-1 when the child shares this process's stdin).
    public let stdin: Int32
    /// Read end of the child's stdout.
    public let stdout: Int32
    /// Read end of the child's stderr (-1 when the child writes to this process's stderr).
    public let stderr: Int32
    /// Whether the child leads a process group of its own, which signals are sent to.
    public let signalsGroup: Bool

    /// How a child ended.
    public struct Exit: Sendable, Equatable {
        /// The exit code, or 128 + the signal number when a signal ended it.
        public var code: Int32
        public var signaled: Bool

        public init(code: Int32, signaled: Bool) {
            self.code = code
            self.signaled = signaled
        }
    }

    /// Shared with the reaper thread, which must not keep the `Subprocess` alive.
    private final class State: Sendable {
        let exit = Mutex<Exit?>(nil)
        /// Left once the child has ended and been reaped.
        let group = DispatchGroup()
        /// Called on the reaper thread once the child has been reaped; nil afterwards.
        let handlers = Mutex<[@Sendable () -> Void]?>([])
        /// Whether a timer (`signal(_:ifRunningAfter:)`) sent its signal; set under `exit`'s lock before
        /// the signal, so whoever sees the child's end also sees this.
        let timerFired = Mutex(false)
    }
    private let state = State()
    private let stdinOpen = Mutex(true)

    /// Starts `arguments[0]` (an absolute path, or a name looked up in PATH) with the rest as its arguments.
    /// `environment` replaces this process's environment when given. With `newProcessGroup`, the child
    /// leads a new process group, and `signal` and `terminate` reach everything it started. With
    /// `sharesTerminal`, only stdout is a pipe: the child reads this process's stdin and writes its errors
    /// to this process's stderr (a password command that asks on the terminal). `directory` is the
    /// child's working directory (this process's when nil).
    /// Throws `HavenError(.io)` naming the program when it cannot be started.
    public init(_ arguments: [String], environment: [String: String]? = nil, newProcessGroup: Bool = false,
                sharesTerminal: Bool = false, directory: String? = nil) throws {
        guard let executable = arguments.first, !executable.isEmpty else { throw HavenError(.usage, "empty command") }
        if directory != nil && Self.addChdir == nil {
            throw HavenError(.io, "cannot start \(executable) in another directory: this C library lacks posix_spawn_file_actions_addchdir_np")
        }
        var inPipe: [Int32] = [-1, -1], outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        guard sharesTerminal || Self.makePipe(&inPipe), Self.makePipe(&outPipe), sharesTerminal || Self.makePipe(&errPipe) else {
            let e = errno
            for fd in inPipe + outPipe + errPipe where fd >= 0 { close(fd) }
            throw HavenError(.io, "cannot start \(executable): no pipes available (errno \(e)); close some files and retry")
        }
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
        let (inRead, outWrite, errWrite) = (inPipe[0], outPipe[1], errPipe[1])
        let result = Spawner.shared.run { () -> (pid_t, Int32) in
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            if !sharesTerminal { posix_spawn_file_actions_adddup2(&actions, inRead, 0) }
            posix_spawn_file_actions_adddup2(&actions, outWrite, 1)
            if !sharesTerminal { posix_spawn_file_actions_adddup2(&actions, errWrite, 2) }
            // Nothing else leaks into the child (other descriptors may lack O_CLOEXEC).
            if let closeFrom = Self.closeFrom { _ = closeFrom(&actions, 3) }
            if let directory, let addChdir = Self.addChdir { _ = addChdir(&actions, directory) }

            var attributes = posix_spawnattr_t()
            posix_spawnattr_init(&attributes)
            defer { posix_spawnattr_destroy(&attributes) }
            // We ignore SIGPIPE; the child gets the default behaviour back, and no blocked signals.
            var defaults = sigset_t()
            sigemptyset(&defaults)
            sigaddset(&defaults, SIGPIPE)
            posix_spawnattr_setsigdefault(&attributes, &defaults)
            var empty = sigset_t()
            sigemptyset(&empty)
            posix_spawnattr_setsigmask(&attributes, &empty)
            var flags = Int32(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)
            if newProcessGroup {
                flags |= Int32(POSIX_SPAWN_SETPGROUP)
                posix_spawnattr_setpgroup(&attributes, 0)
            }
            posix_spawnattr_setflags(&attributes, Int16(flags))

            let argv = arguments.map { strdup($0) }
            defer { argv.forEach { free($0) } }
            let envp = envStrings.map { strdup($0) }
            defer { envp.forEach { free($0) } }
            var child: pid_t = 0
            let rc = (argv + [nil]).withUnsafeBufferPointer { a in
                (envp + [nil]).withUnsafeBufferPointer { e in
                    executable.contains("/")
                        ? posix_spawn(&child, executable, &actions, &attributes, a.baseAddress!, e.baseAddress!)
                        : posix_spawnp(&child, executable, &actions, &attributes, a.baseAddress!, e.baseAddress!)
                }
            }
            return (child, rc)
        }
        for fd in [inPipe[0], outPipe[1], errPipe[1]] where fd >= 0 { close(fd) }
        guard result.1 == 0 else {
            for fd in [inPipe[1], outPipe[0], errPipe[0]] where fd >= 0 { close(fd) }
            throw HavenError(.io, "cannot start \(executable): \(String(cString: strerror(result.1)))")
        }
        pid = result.0
        stdin = inPipe[1]
        stdout = outPipe[0]
        stderr = errPipe[0]
        signalsGroup = newProcessGroup
        startReaper()
    }

    // pipe2 and glibc's *_np spawn file actions are not visible through Swift's Glibc module:
    // look them up at run time.
    private typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
    private typealias CloseFrom = @convention(c) (UnsafeMutableRawPointer, Int32) -> Int32
    private static let pipe2: Pipe2? = dlsym(nil, "pipe2").map { unsafeBitCast($0, to: Pipe2.self) }
    private static let closeFrom: CloseFrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map {
        unsafeBitCast($0, to: CloseFrom.self)
    }
    private typealias AddChdir = @convention(c) (UnsafeMutableRawPointer, UnsafePointer<CChar>) -> Int32
    private static let addChdir: AddChdir? = dlsym(nil, "posix_spawn_file_actions_addchdir_np").map {
        unsafeBitCast($0, to: AddChdir.self)
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
        let state = self.state
        state.group.enter()
        let thread = Thread {
            // Wait without reaping first, so a signal is never sent to a recycled pid.
            var info = siginfo_t()
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
            state.exit.withLock { e in
                var raw: Int32 = 0
                while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
                let signal = raw & 0x7f
                e = signal == 0 ? Exit(code: (raw >> 8) & 0xff, signaled: false) : Exit(code: 128 + signal, signaled: true)
            }
            state.group.leave()
            for body in state.handlers.withLock({ h in defer { h = nil }; return h ?? [] }) { body() }
        }
        thread.name = "haven-child-reaper"
        thread.start()
    }

    /// How the child ended, or nil while it runs.
    public var exit: Exit? { state.exit.withLock { $0 } }

    /// The exit code (128 + signal number when killed by a signal), or nil while running.
    public var exitCode: Int32? { exit?.code }

    /// Waits up to `seconds` for the child to end; returns its exit code, or nil when it still runs.
    public func wait(seconds: Double) -> Int32? {
        if let code = exitCode { return code }
        _ = state.group.wait(timeout: .now() + max(0, seconds))
        return exitCode
    }

    /// Calls `body` once the child has ended and been reaped, on the child's own reaper thread (or a new
    /// thread when it has already ended) — never on a shared pool, which other work may keep busy, so
    /// `body` may block briefly.
    public func onExit(_ body: @escaping @Sendable () -> Void) {
        let queued = state.handlers.withLock { h -> Bool in
            guard h != nil else { return false }
            h!.append(body)
            return true
        }
        if !queued { Thread { body() }.start() }
    }

    /// Sends `sig` to the child (to its process group when it leads one), unless it has ended.
    public func signal(_ sig: Int32) {
        let target = signalsGroup ? -pid : pid
        state.exit.withLock { e in
            if e == nil { kill(target, sig) }
        }
    }

    /// Sends SIGTERM, and SIGKILL when the child has not ended `grace` seconds later. Blocks until then;
    /// returns the exit code.
    @discardableResult
    public func terminate(grace: Double = 2) -> Int32? {
        signal(SIGTERM)
        if let code = wait(seconds: grace) { return code }
        signal(SIGKILL)
        return wait(seconds: grace)
    }

    /// `terminate` without blocking: SIGTERM now, SIGKILL after `grace` seconds if the child still runs.
    public func terminateLater(grace: Double) {
        signal(SIGTERM)
        signal(SIGKILL, ifRunningAfter: grace)
    }

    /// Sends `sig` when the child still runs `seconds` from now. The wait runs on a thread of its own that
    /// ends with the child, not on a shared pool, where busy work could delay a timeout without bound.
    /// `timerFired` tells afterwards whether the signal was sent.
    public func signal(_ sig: Int32, ifRunningAfter seconds: Double) {
        let state = self.state
        let target = signalsGroup ? -pid : pid
        let thread = Thread {
            guard state.group.wait(timeout: .now() + max(0, seconds)) == .timedOut else { return }
            state.exit.withLock { e in
                guard e == nil else { return }
                state.timerFired.withLock { $0 = true }
                kill(target, sig)
            }
        }
        thread.name = "haven-child-timer"
        thread.start()
    }

    /// Whether a signal from `signal(_:ifRunningAfter:)` was sent. Once the child has ended (`exit` or
    /// `wait` says so), this is final.
    public var timerFired: Bool { state.timerFired.withLock { $0 } }

    /// Closes the child's stdin (it sees end of input). Later calls do nothing.
    public func closeStdin() {
        stdinOpen.withLock { open in
            if open && stdin >= 0 { close(stdin) }
            open = false
        }
    }

    deinit {
        signal(SIGKILL)
        closeStdin()
        close(stdout)
        if stderr >= 0 { close(stderr) }
    }
}

/// Starts children from one thread that lives as long as the process.
///
/// A child started with `HAVEN_PARENT_PID` asks the kernel for SIGTERM when its parent dies, and Linux
/// sends that signal when the *thread* that started it ends — a worker thread of the concurrency pool
/// can end at any idle moment, which would stop a healthy backup.
final class Spawner: @unchecked Sendable {
    static let shared = Spawner()
    private let lock = NSCondition()
    private var work: [() -> Void] = []

    private init() {
        let thread = Thread { [self] in
            while true {
                lock.lock()
                while work.isEmpty { lock.wait() }
                let next = work.removeFirst()
                lock.unlock()
                next()
            }
        }
        thread.name = "haven-spawner"
        thread.start()
    }

    /// Runs `body` on the spawner thread and waits for its result.
    func run<R>(_ body: @escaping () -> R) -> R {
        let done = DispatchSemaphore(value: 0)
        var result: R?
        lock.lock()
        work.append {
            result = body()
            done.signal()
        }
        lock.signal()
        lock.unlock()
        done.wait()
        return result!
    }
}
