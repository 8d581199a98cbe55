import Foundation
import HavenCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A server for tests (sshd, SeaweedFS) that cannot outlive the test process, however that process ends.
///
/// A shell in a process group of its own starts the server in the background and then reads its
/// standard input, a pipe whose writing end only the test process holds (close-on-exec, so no other
/// child inherits it). When the test process closes it (`stop`), or the kernel closes it because the
/// test process crashed or was killed, the shell sends SIGTERM to the group, SIGKILL to the server 10 s
/// later if it has not ended, and once it has, removes the server's directory (if one was given and the
/// test process went away without `stop`) and kills whatever is left in the group.
public final class WatchedServer: Sendable {
    /// The watching shell.
    public let process: Subprocess
    /// The server's own process ID.
    public let pid: pid_t
    /// Whether the pipe to the watchdog is still open.
    private let connected = Mutex(true)

    static let script = """
        log=$1; dir=$2; shift 2
        "$@" >>"$log" 2>&1 </dev/null &
        child=$!
        echo "$child"
        exec >/dev/null 2>&1  # the test process may be gone: a write to its pipes would end this shell
        stopped=
        while read -r line; do [ "$line" = stop ] && stopped=1; done
        trap '' TERM
        kill -TERM 0
        (sleep 10; kill -KILL "$child") >/dev/null 2>&1 </dev/null &
        wait "$child"
        [ -z "$stopped" ] && [ -n "$dir" ] && rm -rf -- "$dir"
        kill -KILL 0
        """

    /// Starts `command`, its output appended to `log`. `directory` is removed once the server has ended
    /// if the test process went away without `stop` (otherwise the test removes it itself).
    public init(_ command: [String], log: String, removing directory: String = "") throws {
        let p = try Subprocess(["/bin/sh", "-c", Self.script, "haven-test-watchdog", log, directory] + command,
                               newProcessGroup: true)
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let n = read(p.stdout, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            guard n == 1, byte != UInt8(ascii: "\n") else { break }
            line.append(byte)
        }
        guard let pid = pid_t(String(decoding: line, as: UTF8.self)) else {
            p.signal(SIGKILL)
            throw FixtureError.failed("the watchdog for \(command[0]) did not report the server's process ID")
        }
        process = p
        self.pid = pid
    }

    /// Whether the server still runs: its watchdog has not ended, and the server is not a zombie
    /// waiting for the watchdog to reap it.
    public var isRunning: Bool { process.exitCode == nil && Self.isAlive(pid) }

    /// Whether process `pid` exists and is not a zombie (Linux: read from /proc).
    public static func isAlive(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return !stat[close...].hasPrefix(") Z")
    }

    /// Stops the server: SIGTERM, SIGKILL after 10 s. Waits for it to end.
    public func stop() {
        disconnect(saying: "stop\n")
        if process.wait(seconds: 15) == nil { process.signal(SIGKILL) }
    }

    /// Closes the pipe as the kernel does when the test process dies, without `stop` (tests).
    public func abandon() { disconnect(saying: "") }

    private func disconnect(saying word: String) {
        signal(SIGPIPE, SIG_IGN)  // the watchdog may be gone already
        connected.withLock { open in
            guard open else { return }
            open = false
            let bytes = Array(word.utf8)
            if !bytes.isEmpty { _ = bytes.withUnsafeBytes { write(process.stdin, $0.baseAddress!, $0.count) } }
            process.closeStdin()
        }
    }

    deinit { stop() }
}
