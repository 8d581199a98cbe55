import CHavenShims
import Foundation
import HavenCore
import HavenDaemon
#if canImport(Glibc)
import Glibc
#endif

/// `haven run BACKUP --config FILE --local`: runs one backup definition in this process, with the daemon's
/// guard, hooks, retention, resume and state (the same SQLite file, shared safely with a running daemon).
/// Meant for cron: when nothing is due it prints one line saying why and exits 0.
enum LocalRun {
    static func run(backup name: String, configPath: String, force: Bool, json: Bool) async throws -> Int32 {
        let config = try loadConfig(configPath)
        guard let backup = config.backup(named: name) else {
            throw HavenError(.usage, "no backup named \"\(name)\" in \(configPath); the configured backups are: \(config.backups.map(\.name).joined(separator: ", "))")
        }
        let store = try StateStore(directory: config.stateDir)
        let events = EventLog(format: json ? .json : .text, level: config.log.level)
        // Jobs whose process died are interrupted; the guard then lets this run continue them.
        _ = try await store.markInterrupted()
        func say(_ message: String, _ fields: [String: String] = [:]) {
            if json {
                var d: [String: Any] = ["message_type": "run", "backup": name, "message": message]
                for (k, v) in fields { d[k] = v }
                if let data = try? JSONSerialization.data(withJSONObject: d, options: [.sortedKeys]) { print(String(decoding: data, as: UTF8.self)) }
            } else {
                print(message)
            }
        }
        let active = try await store.jobs(states: [.running, .pending]).filter {
            $0.record.state == .running && !$0.record.repositories.filter(backup.repositories.contains).isEmpty
        }
        if let busy = active.first {
            say("nothing to do: job \(busy.record.id) (\(busy.record.kind.rawValue) of \(busy.record.backup ?? busy.record.repositories.joined(separator: ","))) is running on the same repository (pid \(busy.ownerPID ?? 0))",
                ["outcome": "busy"])
            return 0
        }
        let last = try await store.lastEndedJob(backup: name)
        let interrupted = last?.state == .interrupted
        let lastSuccess = try await store.lastCompleteSuccess(backup: name, repositories: backup.repositories)
        let decision = RunGuard.decide(trigger: interrupted ? .resume : .cli, lastSuccess: lastSuccess, lastRunInterrupted: interrupted,
                                       minInterval: backup.minInterval, force: force, now: Date())
        guard decision.shouldRun else {
            say("nothing to do: \(decision.reason)", ["outcome": "skipped"])
            return 0
        }
        let job = try await store.insert(StateStore.NewJob(
            kind: .backup, backup: name, repositories: backup.repositories, trigger: interrupted ? Trigger.resume.rawValue : Trigger.cli.rawValue,
            priority: backup.priority.value, priorityName: backup.priority.description, force: force,
            resumes: interrupted ? last?.id : nil), state: .running)
        try await store.log(job.id, level: "info", "started by haven run --local: \(decision.reason)")
        let runner = JobRunner(config: config, store: store, events: events, executable: try executablePath(), http: nil)
        // SIGINT/SIGTERM stop the child cleanly; the job is recorded as interrupted and resumes next time.
        let signals = SignalWatcher([SIGINT, SIGTERM]) { sig in
            runner.requestStop(.interrupted("stopped by signal \(sig); the next run continues it"))
        }
        defer { signals.cancel() }
        let outcome = await runner.run(job, force: force, parameters: [:])
        try await store.finish(job.id, state: outcome.state, results: outcome.results, error: outcome.error)
        let snapshots = outcome.results.compactMap { r in r.snapshotID.map { "\(r.repository): \($0.prefix(8))" } }
        switch outcome.state {
        case .finished:
            say("backup \(name) finished (job \(job.id))" + (snapshots.isEmpty ? "" : "; snapshots " + snapshots.joined(separator: ", ")),
                ["outcome": "finished", "job": String(job.id)])
            return outcome.results.contains { $0.warnings > 0 } ? 3 : 0
        case .interrupted:
            say("backup \(name) interrupted (job \(job.id)): \(outcome.error ?? "")", ["outcome": "interrupted", "job": String(job.id)])
            return 130
        default:
            say("backup \(name) \(outcome.state.rawValue) (job \(job.id)): \(outcome.error ?? "unknown error")",
                ["outcome": outcome.state.rawValue, "job": String(job.id)])
            return 1
        }
    }

    static func loadConfig(_ path: String) throws -> DaemonConfig {
        do {
            let config = try DaemonConfig.load(path: path)
            for w in config.warnings { FileHandleOutput.stderr("\(path):\(w)") }
            return config
        } catch let error as ConfigError {
            throw HavenError(.usage, "the config has \(error.issues.count) problem\(error.issues.count == 1 ? "" : "s"):\n\(error.description)")
        }
    }

    /// This program's own path, so child jobs run the same binary.
    static func executablePath() throws -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if n > 0 { return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        let arg0 = CommandLine.arguments[0]
        if arg0.hasPrefix("/") { return arg0 }
        return FileManager.default.currentDirectoryPath + "/" + arg0
    }
}

/// Runs a handler on the given signals (which no longer end the process by themselves) until cancelled.
///
/// A C handler writes each signal to a pipe that a thread reads (libdispatch's signal sources use
/// signalfd on Linux, which never sees a signal that is not blocked in every thread). Children started
/// later get the default disposition back on exec.
final class SignalWatcher: Sendable {
    private let active = Locked(true)

    init(_ signals: [Int32], handler: @escaping @Sendable (Int32) -> Void) {
        for sig in signals {
            let fd = haven_signal_pipe(sig)
            guard fd >= 0 else { continue }
            let thread = Thread { [active] in
                var byte: UInt8 = 0
                while true {
                    let n = read(fd, &byte, 1)
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { return }
                    if active.withLock({ $0 }) { handler(Int32(byte)) }
                }
            }
            thread.start()
        }
    }

    func cancel() {
        active.withLock { $0 = false }
    }
}
