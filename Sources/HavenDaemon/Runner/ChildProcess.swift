import Foundation
import HavenCore
#if canImport(Glibc)
import Glibc
#endif

/// A child process whose output is read line by line on dedicated threads (never on the cooperative pool),
/// and whose exit is awaited without blocking a thread. Built on `Subprocess`, so a child that closes its
/// inherited descriptors (a hook running ssh) does not delay seeing that other children ended.
public final class ChildProcess: Sendable {
    public typealias Exit = Subprocess.Exit

    let process: Subprocess
    private let exitBox = Locked<Exit?>(nil)
    private let waiters = Locked<[CheckedContinuation<Exit, Never>]>([])
    private let readers = DispatchGroup()

    public var pid: Int32 { process.pid }

    /// Starts `arguments[0]` (looked up in PATH when it has no slash) with `environment`.
    /// `onLine` is called with each line of stdout (`false`) and stderr (`true`), in order per stream.
    /// With `newProcessGroup`, the child leads a process group of its own, and stopping it also stops
    /// whatever it started (a hook's `sleep`, a pipeline).
    public init(_ arguments: [String], environment: [String: String]? = nil,
                stdin: String? = nil, newProcessGroup: Bool = false,
                onLine: @escaping @Sendable (_ stderr: Bool, _ line: String) -> Void) throws {
        let p = try Subprocess(arguments, environment: environment, newProcessGroup: newProcessGroup)
        process = p
        Self.readLines(p, p.stdout, stderr: false, group: readers, onLine: onLine)
        Self.readLines(p, p.stderr, stderr: true, group: readers, onLine: onLine)
        p.onExit { [exitBox, waiters, readers] in
            // Deliver the exit once both streams are drained, so callers see every line first — but no
            // later than 5 s after the exit, in case something the child started still holds the pipes.
            _ = readers.wait(timeout: .now() + 5)
            let exit = p.exit ?? Exit(code: 128 + SIGKILL, signaled: true)
            let first = exitBox.withLock { e -> Bool in
                if e != nil { return false }
                e = exit
                return true
            }
            guard first else { return }
            let list = waiters.withLock { w -> [CheckedContinuation<Exit, Never>] in defer { w = [] }; return w }
            for c in list { c.resume(returning: exit) }
        }
        if let stdin {
            var bytes = Array(stdin.utf8)
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeMutableBytes { write(p.stdin, $0.baseAddress! + done, $0.count - done) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                done += n
            }
            bytes = []
        }
        p.closeStdin()
    }

    /// Reads `fd` to its end on a thread of its own, calling `onLine` per line. The thread keeps `process`
    /// (which owns the descriptor) alive until then.
    private static func readLines(_ process: Subprocess, _ fd: Int32, stderr: Bool, group: DispatchGroup,
                                  onLine: @escaping @Sendable (Bool, String) -> Void) {
        group.enter()
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
            withExtendedLifetime(process) {}
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

    public func signal(_ sig: Int32) { process.signal(sig) }

    /// Asks the process to stop (SIGTERM), and kills it when it has not exited after `grace` seconds.
    public func terminate(grace: Double) { process.terminateLater(grace: grace) }
}
