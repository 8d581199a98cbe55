import Foundation

/// The result of running a program.
public struct ProcessResult: Sendable, CustomStringConvertible {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var stdoutData: Data
    public var description: String { "exit \(status)\nstdout: \(stdout.prefix(4000))\nstderr: \(stderr.prefix(4000))" }
}

public enum Run {
    /// Runs `executable` with `arguments` and waits for it (with a timeout in seconds) on a Dispatch thread,
    /// so that waiting never blocks the cooperative pool that other async tests need.
    @discardableResult
    public static func process(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                               stdin: Data? = nil, directory: String? = nil, timeout: Double = 600) async throws -> ProcessResult {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result {
                    try processBlocking(executable, arguments, environment: environment, stdin: stdin, directory: directory, timeout: timeout)
                })
            }
        }
    }

    /// Runs `executable` and blocks the calling thread until it ends.
    @discardableResult
    public static func processBlocking(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                                       stdin: Data? = nil, directory: String? = nil, timeout: Double = 600) throws -> ProcessResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let outPipe = Pipe(), errPipe = Pipe(), inPipe = Pipe()
        p.standardOutput = outPipe
        p.standardError = errPipe
        p.standardInput = inPipe
        try p.run()
        if let stdin { inPipe.fileHandleForWriting.write(stdin) }
        try? inPipe.fileHandleForWriting.close()
        let outBox = DataBox(), errBox = DataBox()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outBox.data = outPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { errBox.data = errPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning { p.terminate(); kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        group.wait()
        return ProcessResult(status: p.terminationStatus, stdout: String(decoding: outBox.data, as: UTF8.self),
                             stderr: String(decoding: errBox.data, as: UTF8.self), stdoutData: outBox.data)
    }

    /// Finds a program on PATH.
    public static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }
}

final class DataBox: @unchecked Sendable {
    var data = Data()
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
