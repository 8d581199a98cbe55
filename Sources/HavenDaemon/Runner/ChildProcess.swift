import Foundation
import HavenCore
#if canImport(Glibc)
import Glibc
#endif

/// A child process whose output is read line by line on dedicated threads (never on the cooperative pool),
/// and whose exit is awaited without blocking a thread.
public final class ChildProcess: Sendable {
    public struct Exit: Sendable, Equatable {
        /// The exit code, or 128 + signal when killed by a signal.
        public var code: Int32
        public var signaled: Bool
    }

    let process: Process
    /// Whether signals go to the child's whole process group (everything it started).
    let signalsGroup: Bool
    private let exitBox = Locked<Exit?>(nil)
    private let waiters = Locked<[CheckedContinuation<Exit, Never>]>([])
    private let readers = DispatchGroup()

    public var pid: Int32 { process.processIdentifier }

    /// Starts `arguments[0]` (looked up in PATH when it has no slash) with `environment`.
    /// `onLine` is called with each line of stdout (`false`) and stderr (`true`), in order per stream.
    /// With `newProcessGroup`, stopping the child also stops whatever it started (a hook's `sleep`, a
    /// pipeline): Foundation starts each child as the leader of its own process group, and signals go to
    /// that group.
    public init(_ arguments: [String], environment: [String: String]? = nil, directory: String? = nil,
                stdin: String? = nil, newProcessGroup: Bool = false,
                onLine: @escaping @Sendable (_ stderr: Bool, _ line: String) -> Void) throws {
        guard let first = arguments.first else { throw HavenError(.usage, "empty command") }
        let p = Process()
        if first.contains("/") {
            p.executableURL = URL(fileURLWithPath: first)
            p.arguments = Array(arguments.dropFirst())
        } else {
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = arguments
        }
        if let environment { p.environment = environment }
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let out = Pipe()
        let err = Pipe()
        let input = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = input
        process = p
        p.terminationHandler = { [exitBox, waiters, readers] proc in
            let exit = Exit(code: proc.terminationReason == .uncaughtSignal ? 128 + proc.terminationStatus : proc.terminationStatus,
                            signaled: proc.terminationReason == .uncaughtSignal)
            // Deliver the exit once both streams are drained, so callers see every line first — but no
            // later than 5 s after the exit, in case something the child started still holds the pipes.
            DispatchQueue.global().async {
                _ = readers.wait(timeout: .now() + 5)
                let first = exitBox.withLock { e -> Bool in
                    if e != nil { return false }
                    e = exit
                    return true
                }
                guard first else { return }
                let list = waiters.withLock { w -> [CheckedContinuation<Exit, Never>] in defer { w = [] }; return w }
                for c in list { c.resume(returning: exit) }
            }
        }
        do {
            try Spawner.shared.run { try p.run() }
        } catch {
            throw HavenError(.io, "cannot start \(first): \(error.localizedDescription)")
        }
        signalsGroup = newProcessGroup && getpgid(p.processIdentifier) == p.processIdentifier
        Self.readLines(out.fileHandleForReading, stderr: false, group: readers, onLine: onLine)
        Self.readLines(err.fileHandleForReading, stderr: true, group: readers, onLine: onLine)
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try? input.fileHandleForWriting.close()
    }

    private static func readLines(_ handle: FileHandle, stderr: Bool, group: DispatchGroup,
                                  onLine: @escaping @Sendable (Bool, String) -> Void) {
        group.enter()
        let fd = handle.fileDescriptor
        let thread = Thread {
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                pending.append(contentsOf: buffer[0..<n])
                while let nl = pending.firstIndex(of: 10) {
                    onLine(stderr, String(decoding: pending[..<nl], as: UTF8.self))
                    pending.removeSubrange(...nl)
                }
                // A very long line without a newline is delivered in pieces rather than held forever.
                if pending.count > 1 << 20 {
                    onLine(stderr, String(decoding: pending, as: UTF8.self))
                    pending.removeAll()
                }
            }
            if !pending.isEmpty { onLine(stderr, String(decoding: pending, as: UTF8.self)) }
            try? handle.close()
            group.leave()
        }
        thread.start()
    }

    /// Waits for the process to exit (and its output to be read).
    public func wait() async -> Exit {
        if let e = exitBox.withLock({ $0 }) { return e }
        return await withCheckedContinuation { c in
            let done = exitBox.withLock { e -> Exit? in
                if let e { return e }
                waiters.withLock { $0.append(c) }
                return nil
            }
            if let done { c.resume(returning: done) }
        }
    }

    public func signal(_ sig: Int32) {
        guard process.isRunning else { return }
        kill(signalsGroup ? -process.processIdentifier : process.processIdentifier, sig)
    }

    /// Asks the process to stop (SIGTERM), and kills it when it has not exited after `grace` seconds.
    public func terminate(grace: Double) {
        signal(SIGTERM)
        let target = signalsGroup ? -process.processIdentifier : process.processIdentifier
        DispatchQueue.global().asyncAfter(deadline: .now() + grace) { [exitBox] in
            if exitBox.withLock({ $0 }) == nil { kill(target, SIGKILL) }
        }
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

    /// Runs `body` on the spawner thread and waits for it.
    func run(_ body: @escaping () throws -> Void) throws {
        let done = DispatchSemaphore(value: 0)
        var failure: (any Error)?
        lock.lock()
        work.append {
            do { try body() } catch { failure = error }
            done.signal()
        }
        lock.signal()
        lock.unlock()
        done.wait()
        if let failure { throw failure }
    }
}
