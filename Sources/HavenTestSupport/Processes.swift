import Foundation
import HavenCore
#if canImport(Glibc)
import Glibc
#endif

/// The result of running a program.
public struct ProcessResult: Sendable, CustomStringConvertible {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var stdoutData: Data
    public var description: String { "exit \(status)\nstdout: \(stdout.prefix(4000))\nstderr: \(stderr.prefix(4000))" }
}

public enum Run {
    /// Runs `executable` with `arguments` and waits for it (with a timeout in seconds) on a thread of its
    /// own, so that waiting never blocks the cooperative pool that other async tests need, nor Dispatch's
    /// global queue, which on Linux grows only slowly when its threads block.
    @discardableResult
    public static func process(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                               stdin: Data? = nil, directory: String? = nil, timeout: Double = 600) async throws -> ProcessResult {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(with: Result {
                    try processBlocking(executable, arguments, environment: environment, stdin: stdin, directory: directory, timeout: timeout)
                })
            }.start()
        }
    }

    /// Runs `executable` and blocks the calling thread until it ends; after `timeout` seconds it is killed.
    /// Started with `Subprocess`, so a long-running server started by another test that closes its
    /// inherited descriptors cannot delay seeing this program end (Foundation's `Process` would).
    /// A program killed by a signal reports that signal's number as its status.
    @discardableResult
    public static func processBlocking(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                                       stdin: Data? = nil, directory: String? = nil, timeout: Double = 600) throws -> ProcessResult {
        _ = ignoreBrokenPipes
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let p = try Subprocess([executable] + arguments, environment: env, directory: directory)
        // Input goes in from a thread of its own, so a program that writes much before it reads cannot
        // deadlock against us.
        let input = Thread { [p] in
            if let stdin {
                stdin.withUnsafeBytes { raw in
                    var done = 0
                    while done < raw.count {
                        let n = write(p.stdin, raw.baseAddress! + done, raw.count - done)
                        if n < 0 && errno == EINTR { continue }
                        if n <= 0 { break }
                        done += n
                    }
                }
            }
            p.closeStdin()
        }
        input.start()
        let deadline = Date().addingTimeInterval(timeout)
        var out: [UInt8] = [], err: [UInt8] = []
        var open: [(fd: Int32, isErr: Bool)] = [(p.stdout, false), (p.stderr, true)]
        var buffer = [UInt8](repeating: 0, count: 65536)
        var killed = false
        while !open.isEmpty {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 && !killed {
                p.signal(SIGKILL)
                killed = true
            }
            // After a kill, whatever the program started may still hold the pipes: read what is there
            // for at most 5 more seconds.
            if killed && left < -5 { break }
            var fds = open.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&fds, nfds_t(fds.count), Int32(max(10, min(1000, left * 1000))))
            if ready < 0 && errno != EINTR { break }
            var closed: [Int] = []
            for (k, f) in fds.enumerated() where f.revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(f.fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { closed.append(k); continue }
                if open[k].isErr { err.append(contentsOf: buffer[0..<n]) } else { out.append(contentsOf: buffer[0..<n]) }
            }
            for k in closed.reversed() { open.remove(at: k) }
        }
        if p.wait(seconds: killed ? 5 : max(1, deadline.timeIntervalSinceNow)) == nil {
            p.signal(SIGKILL)
            _ = p.wait(seconds: 30)
        }
        let exit = p.exit ?? Subprocess.Exit(code: 128 + SIGKILL, signaled: true)
        let outData = Data(out)
        return ProcessResult(status: exit.signaled ? exit.code - 128 : exit.code, stdout: String(decoding: out, as: UTF8.self),
                             stderr: String(decoding: err, as: UTF8.self), stdoutData: outData)
    }

    /// Input to a program that has already exited is an error from `write`, not a signal that ends the tests.
    private static let ignoreBrokenPipes: Void = { signal(SIGPIPE, SIG_IGN) }()

    /// Finds a program on PATH.
    public static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }
}

/// Locates the built `haven` binary for CLI tests.
public enum HavenBinary {
    public static func path(file: String = #filePath) throws -> String {
        if let p = ProcessInfo.processInfo.environment["HAVEN_BINARY"], FileManager.default.isExecutableFile(atPath: p) { return p }
        var root = URL(fileURLWithPath: file)
        while root.pathComponents.count > 1 {
            root.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: root.appendingPathComponent("Package.swift").path) { break }
        }
        for candidate in [".build/debug/haven", ".build/release/haven", ".build-cli/debug/haven"] {
            let p = root.appendingPathComponent(candidate).path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw FixtureError.failed("haven binary not found: run `swift build` first (or set HAVEN_BINARY)")
    }
}
