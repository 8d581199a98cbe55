import ArgumentParser
import Foundation
import HavenCore
import HavenDaemon
import HavenServer
#if canImport(Glibc)
import Glibc
#endif

struct DaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon",
        abstract: "Run backups on their schedules and file changes, and answer the HTTP API.",
        discussion: """
        Reads the config (see examples/haven.yml and docs/config.md), keeps its state in STATE_DIR/state.db, \
        logs one line per event on stderr (JSON with log.format: json), and listens on api.listen. SIGTERM or \
        SIGINT stop it within seconds: running jobs are interrupted and resume at the next start.

        Examples:
          haven daemon --config /etc/haven/haven.yml
          haven config check --config /etc/haven/haven.yml
        """
    )

    @Option(name: [.short, .long], help: ArgumentHelp("The config file.", valueName: "FILE"))
    var config: String = ProcessInfo.processInfo.environment["HAVEN_CONFIG"] ?? "haven.yml"

    @Option(help: ArgumentHelp("Listen on this address instead of api.listen (e.g. 127.0.0.1:0).", valueName: "HOST:PORT"))
    var listen: String?

    func run() async throws {
        var cfg = try LocalRun.loadConfig(config)
        if let listen {
            guard let address = ListenAddress.parse(listen) else {
                throw HavenError(.usage, "--listen \"\(listen)\" is not HOST:PORT")
            }
            cfg.api.listen = address
        }
        let events = EventLog(format: cfg.log.format, level: cfg.log.level)
        var tokens: [String] = []
        if let file = cfg.api.tokenFile {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw HavenError(.usage, "cannot read api.token_file \(file)")
            }
            tokens = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty && !$0.hasPrefix("#") }
            guard !tokens.isEmpty || !cfg.api.users.isEmpty else {
                throw HavenError(.usage, "api.token_file \(file) holds no tokens and no api.users are configured; put one token per line in it")
            }
        }
        let daemon = try Daemon(config: cfg, executable: try LocalRun.executablePath(), events: events)
        let api: APIServer
        do {
            api = try APIServer(control: daemon, configuration: APIConfiguration(cfg.api, extraTokens: tokens))
        } catch let error as APIServerError {
            throw HavenError(.usage, error.message)
        }
        try await daemon.start()
        let stop = AsyncStream<String>.makeStream()
        let signals = SignalWatcher([SIGINT, SIGTERM]) { sig in stop.continuation.yield("signal \(sig) received") }
        defer { signals.cancel() }
        let host = cfg.api.listen.host
        let app = api.makeApplication { port in
            events.log("info", "API listening on http://\(host):\(port)", fields: ["port": .int(port)])
        }
        let serverTask = Task {
            do {
                try await app.run()
            } catch {
                stop.continuation.yield("the API server stopped: \(error)")
            }
        }
        var reason = "stopping"
        for await r in stop.stream {
            reason = r
            break
        }
        events.log("info", "\(reason): stopping", fields: [:])
        await daemon.shutdown(grace: 20)
        serverTask.cancel()
        _ = await serverTask.result
    }
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Check a daemon config, or hash a password for api.users.",
        subcommands: [ConfigCheck.self, ConfigHashPassword.self]
    )
}

struct ConfigCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a config file; each problem is printed with its line, column and key."
    )

    @Option(name: [.short, .long], help: ArgumentHelp("The config file.", valueName: "FILE"))
    var config: String = ProcessInfo.processInfo.environment["HAVEN_CONFIG"] ?? "haven.yml"

    @Flag(help: "Print the result as JSON.")
    var json = false

    func run() async throws {
        do {
            let cfg = try DaemonConfig.load(path: config)
            if json {
                let d: [String: Any] = ["valid": true, "repositories": cfg.repositories.map(\.name), "backups": cfg.backups.map(\.name),
                                        "warnings": cfg.warnings.map(\.description)]
                print(String(decoding: try JSONSerialization.data(withJSONObject: d, options: [.sortedKeys]), as: UTF8.self))
                return
            }
            for w in cfg.warnings { print("\(config):\(w)") }
            print("\(config): OK: \(cfg.repositories.count) repositor\(cfg.repositories.count == 1 ? "y" : "ies"), \(cfg.backups.count) backup\(cfg.backups.count == 1 ? "" : "s")")
            for b in cfg.backups {
                let when = b.schedules.map(\.description) + (b.watch != nil ? ["on changes"] : [])
                print("  \(b.name): \(b.paths.joined(separator: " ")) → \(b.repositories.joined(separator: ", "))" + (when.isEmpty ? " (on request only)" : " [\(when.joined(separator: ", "))]"))
            }
        } catch let error as ConfigError {
            if json {
                let d: [String: Any] = ["valid": false, "issues": error.issues.map { ["line": $0.line, "column": $0.column, "key": $0.keyPath, "message": $0.message, "severity": $0.severity.rawValue] }]
                print(String(decoding: try JSONSerialization.data(withJSONObject: d, options: [.sortedKeys]), as: UTF8.self))
            } else {
                FileHandleOutput.stderr(error.description)
                FileHandleOutput.stderr("\(error.issues.count) problem\(error.issues.count == 1 ? "" : "s") found in \(config)")
            }
            throw ExitStatus(code: 1)
        }
    }
}

struct ConfigHashPassword: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-password",
        abstract: "Print the hash of a password for api.users[].password_hash (reads the password from stdin or a prompt)."
    )

    func run() async throws {
        let password: String
        if isatty(0) == 1 {
            password = try Terminal.readPassword("API password: ")
        } else {
            password = readLine(strippingNewline: true) ?? ""
        }
        guard !password.isEmpty else { throw HavenError(.usage, "an empty password is not allowed") }
        print(APIUser.hash(password: password))
    }
}
