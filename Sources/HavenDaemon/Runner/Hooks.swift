import AsyncHTTPClient
import Foundation
import HavenCore
import NIOCore
import NIOHTTP1

/// Runs hooks: shell commands (`/bin/sh -c`) or HTTP requests, each bounded by its timeout and retried.
public struct HookRunner: Sendable {
    /// Where a hook's output and failures go (the job log).
    public var log: @Sendable (_ level: String, _ message: String) async -> Void
    /// Environment for commands: the daemon's plus HAVEN_* variables describing the job.
    public var environment: [String: String]
    let http: HTTPClient?

    public init(environment: [String: String], http: HTTPClient?, log: @escaping @Sendable (String, String) async -> Void) {
        self.environment = environment
        self.http = http
        self.log = log
    }

    public enum Outcome: Sendable, Equatable {
        case ok
        /// The hook failed; `policy` says what the job does about it.
        case failed(message: String, policy: HookFailurePolicy)
    }

    /// Runs `hooks` in order. Stops at the first failure whose policy is `abort`.
    /// Returns the failures that did not say `ignore`.
    public func run(_ hooks: [Hook], stage: String) async -> [Outcome] {
        var outcomes: [Outcome] = []
        for (i, hook) in hooks.enumerated() {
            let name = "\(stage) hook \(i + 1)"
            let outcome = await runOne(hook, name: name)
            if case .failed(let message, let policy) = outcome {
                switch policy {
                case .ignore:
                    await log("warning", "\(name) failed (ignored): \(message)")
                case .continue:
                    await log("error", "\(name) failed: \(message)")
                    outcomes.append(outcome)
                case .abort:
                    await log("error", "\(name) failed, aborting the job: \(message)")
                    outcomes.append(outcome)
                    return outcomes
                }
            }
        }
        return outcomes
    }

    func runOne(_ hook: Hook, name: String) async -> Outcome {
        var lastError = ""
        for attempt in 0...max(0, hook.retries) {
            if Task.isCancelled { return .failed(message: "cancelled", policy: hook.onFailure) }
            if attempt > 0 {
                await log("info", "\(name): attempt \(attempt + 1) of \(hook.retries + 1)")
                try? await Task.sleep(for: .seconds(min(30, Double(1 << min(attempt - 1, 5)))))
            }
            do {
                switch hook.action {
                case .command(let command): try await runCommand(command, timeout: hook.timeout, name: name)
                case .http(let request): try await runHTTP(request, timeout: hook.timeout)
                }
                await log("info", "\(name) succeeded")
                return .ok
            } catch {
                lastError = "\(error)"
            }
        }
        return .failed(message: lastError, policy: hook.onFailure)
    }

    struct HookError: Error, CustomStringConvertible {
        var description: String
    }

    func runCommand(_ command: String, timeout: TimeInterval, name: String) async throws {
        let tail = Locked<[String]>([])
        let logSink = log
        let child = try ChildProcess(["/bin/sh", "-c", command], environment: environment, newProcessGroup: true) { isErr, line in
            tail.withLock { t in
                t.append(line)
                if t.count > 20 { t.removeFirst() }
            }
            Task { await logSink(isErr ? "warning" : "info", "\(name): \(line)") }
        }
        let expired = Locked(false)
        let timer = Task {
            try await Task.sleep(for: .seconds(timeout))
            expired.withLock { $0 = true }
            child.terminate(grace: 5)
        }
        let exit = await withTaskCancellationHandler {
            await child.wait()
        } onCancel: {
            child.terminate(grace: 5)
        }
        let timedOut = expired.withLock { $0 }
        timer.cancel()
        if exit.code != 0 {
            if timedOut { throw HookError(description: "`\(command)` did not finish within \(DurationParser.format(timeout)) and was stopped") }
            let last = tail.withLock { $0.last }.map { ": \($0)" } ?? ""
            throw HookError(description: "`\(command)` exited with code \(exit.code)\(last)")
        }
    }

    func runHTTP(_ hook: HTTPHook, timeout: TimeInterval) async throws {
        guard let http else { throw HookError(description: "no HTTP client") }
        var request = HTTPClientRequest(url: hook.url)
        request.method = HTTPMethod(rawValue: hook.method.uppercased())
        for (k, v) in hook.headers { request.headers.add(name: k, value: v) }
        if let body = hook.body { request.body = .bytes(ByteBuffer(string: body)) }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .milliseconds(Int64(timeout * 1000)))
        } catch {
            throw HookError(description: "\(hook.method) \(hook.url) failed: \(error)")
        }
        _ = try? await response.body.collect(upTo: 1 << 20)
        guard (200..<300).contains(Int(response.status.code)) else {
            throw HookError(description: "\(hook.method) \(hook.url) answered \(response.status.code) \(response.status.reasonPhrase)")
        }
    }
}
