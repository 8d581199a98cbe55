import Foundation

/// What a finished child process printed.
struct ProcessResult: Sendable {
    var code: Int32
    var stdout: String
    var stderr: String
}

/// Runs a program to completion. The blocking reads and the wait happen on Dispatch threads, not on the
/// cooperative pool, so the servers the tests run keep answering while the child talks to them.
func runProcess(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> ProcessResult {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ProcessResult, any Error>) in
        DispatchQueue.global().async {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            if let environment { process.environment = environment }
            process.standardInput = FileHandle.nullDevice
            let out = Pipe(), err = Pipe()
            process.standardOutput = out
            process.standardError = err
            do {
                try process.run()
            } catch {
                continuation.resume(throwing: error)
                return
            }
            let group = DispatchGroup()
            nonisolated(unsafe) var errData = Data()
            group.enter()
            DispatchQueue.global().async {
                errData = err.fileHandleForReading.readDataToEndOfFile()
                group.leave()
            }
            let outData = out.fileHandleForReading.readDataToEndOfFile()
            group.wait()
            process.waitUntilExit()
            continuation.resume(returning: ProcessResult(code: process.terminationStatus,
                                                         stdout: String(decoding: outData, as: UTF8.self),
                                                         stderr: String(decoding: errData, as: UTF8.self)))
        }
    }
}
