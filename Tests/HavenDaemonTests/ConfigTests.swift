import Foundation
import HavenCore
import Testing
@testable import HavenDaemon

/// The config from the daemon issue, verbatim.
let issueExample = """
host: laptop
state_dir: /var/lib/haven
api:
  listen: 127.0.0.1:8470
repositories:
  nas:
    url: /mnt/nas/haven            # or s3:…, sftp:…
    password_file: /etc/haven/nas.pass
backups:
  documents:
    paths: [/home/me/Documents]
    exclude: ["*.tmp", ".cache"]
    repositories: [nas]
    schedules: ["1h", "0 30 2 * * *"]   # interval, or cron with seconds
    min_interval: 20h
    priority: normal
    retention: {keep_daily: 7, keep_weekly: 4}
"""

/// Parses and returns the error, failing the test when parsing succeeds.
func configError(_ yaml: String, environment: [String: String] = [:]) -> ConfigError? {
    do {
        let config = try DaemonConfig.parse(yaml: yaml, path: "/etc/haven/haven.yml", environment: environment)
        Issue.record("parsed unexpectedly: \(config)")
        return nil
    } catch let error as ConfigError {
        return error
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

@Suite("Daemon config")
struct ConfigTests {
    @Test("the issue's example parses")
    func issueExampleParses() throws {
        let c = try DaemonConfig.parse(yaml: issueExample, path: "/etc/haven/haven.yml", environment: [:])
        #expect(c.host == "laptop")
        #expect(c.stateDir == "/var/lib/haven")
        #expect(c.api.listen == ListenAddress(host: "127.0.0.1", port: 8470))
        #expect(c.api.listen.isLoopback && !c.api.requiresAuthentication)
        #expect(c.concurrency == 1 && c.catchUp == true)
        #expect(c.log == LogConfig(format: .text, level: .info))
        #expect(c.repositories == [RepositoryConfig(name: "nas", url: "/mnt/nas/haven", password: .file("/etc/haven/nas.pass"))])
        let b = try #require(c.backup(named: "documents"))
        #expect(b.paths == ["/home/me/Documents"])
        #expect(b.exclude == ["*.tmp", ".cache"])
        #expect(b.repositories == ["nas"])
        let cron = try CronExpression.parse("0 30 2 * * *")
        #expect(b.schedules == [.interval(3600), .cron(cron)])
        #expect(b.minInterval == 72_000)
        #expect(b.priority == .normal)
        #expect(b.retention == RetentionConfig(policy: RetentionPolicy(keepDaily: 7, keepWeekly: 4)))
        #expect(b.retention?.afterEachBackup == true)
        #expect(b.hooks == HookSet())
        #expect(c.schedules.keys.sorted() == [ScheduleKey(backup: "documents", task: .backup, index: 0),
                                              ScheduleKey(backup: "documents", task: .backup, index: 1)])
        #expect(c.warnings.isEmpty)
    }

    @Test("examples/haven.yml parses, with relative paths resolved against its directory")
    func exampleFile() throws {
        let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples").path
        let c = try DaemonConfig.load(path: examples + "/haven.yml", environment: ["HAVEN_DEMO_INTERVAL": "5m"])
        #expect(c.stateDir == examples + "/demo/state")
        #expect(c.repository(named: "demo")?.url == examples + "/demo/repo")
        #expect(c.repository(named: "demo")?.password == .command("echo haven-demo-password"))
        #expect(c.backups.map(\.name) == ["demo", "nightly"])
        #expect(c.backup(named: "demo")?.schedules == [.interval(300)])
        let n = try #require(c.backup(named: "nightly"))
        #expect(n.paths == [examples + "/demo/data"])
        #expect(n.watch == WatchConfig(paths: [examples + "/demo/data"], minWait: 10, maxWait: 300))
        let window = try TimeWindow(start: "01:00", end: "06:00")
        #expect(n.window == window)
        #expect(n.priority == .low)
        #expect(n.excludeLargerThan == 1 << 30)
        #expect(n.ionice == IONice(ioClass: .bestEffort, level: 7))
        #expect(n.hooks.before.count == 2 && n.hooks.after.count == 1 && n.hooks.failure.count == 1)
        #expect(n.hooks.before[0] == Hook(action: .command("echo \"starting nightly backup\""), onFailure: .abort))
        #expect(n.hooks.before[1].timeout == 10 && n.hooks.before[1].retries == 1)
        #expect(n.hooks.after[0].onFailure == .ignore)
        #expect(n.hooks.after[0].action == .http(HTTPHook(url: "http://127.0.0.1:9/ping", method: "POST",
            headers: ["Content-Type": "application/json"], body: "{\"backup\": \"nightly\"}")))
        #expect(n.hooks.failure[0].onFailure == .continue)
        #expect(n.retention?.policy.keepWithin == RetentionDuration(days: 2))
        #expect(n.retention?.afterEachBackup == false)
        #expect(n.prune?.maxUnused == .percent(5))
        #expect(n.check?.readData == .percent(10))
        let kinds = c.schedules.keys.filter { $0.backup == "nightly" }.map(\.task)
        #expect(Set(kinds) == [.backup, .forget, .prune, .check])
        // Without the variable, the default applies.
        let defaulted = try DaemonConfig.load(path: examples + "/haven.yml", environment: [:])
        #expect(defaulted.backup(named: "demo")?.schedules == [.interval(30)])
    }

    @Test("defaults, watch: true, hook forms and environment substitution")
    func defaultsAndForms() throws {
        let yaml = """
        repositories:
          local:
            url: repo
            password_env: RESTIC_PASSWORD
          remote:
            url: sftp:backup@nas:/srv/haven
            password: ${PASS:-fallback}
        backups:
          home:
            paths: ~/notes
            repositories: [local, remote]
            watch: true
            hooks:
              before: pg_dump db > /tmp/db.sql
              after: [{command: "true", on_failure: ignore}]
        """
        let c = try DaemonConfig.parse(yaml: yaml, path: "conf/haven.yml", environment: ["HOME": "/home/me"])
        let cwd = FileManager.default.currentDirectoryPath
        #expect(c.stateDir == "/home/me/.local/state/haven")
        #expect(c.repository(named: "local")?.url == cwd + "/conf/repo")
        #expect(c.repository(named: "local")?.password == .environment("RESTIC_PASSWORD"))
        #expect(c.repository(named: "remote")?.url == "sftp:backup@nas:/srv/haven")
        #expect(c.repository(named: "remote")?.password == .literal("fallback"))
        let b = try #require(c.backup(named: "home"))
        #expect(b.paths == ["/home/me/notes"])
        #expect(b.watch == WatchConfig(paths: ["/home/me/notes"]))
        #expect(b.hooks.before == [Hook(action: .command("pg_dump db > /tmp/db.sql"), timeout: 60, retries: 0, onFailure: .abort)])
        #expect(b.hooks.after == [Hook(action: .command("true"), onFailure: .ignore)])
        // The literal password is allowed, with a warning on its line.
        #expect(c.warnings.map(\.line) == [7])
        #expect(c.warnings.first?.keyPath == "repositories.remote.password")
    }

    @Test("YAML anchors and merge keys share settings between backups")
    func mergeKeys() throws {
        let yaml = """
        repositories:
          nas: {url: /nas, password_file: /p}
        backups:
          documents: &common
            paths: [/home/me/Documents]
            repositories: [nas]
            schedules: ["1h"]
            priority: high
          photos:
            <<: *common
            paths: [/home/me/Pictures]
        """
        let c = try DaemonConfig.parse(yaml: yaml, path: "/etc/haven/haven.yml", environment: [:])
        let photos = try #require(c.backup(named: "photos"))
        #expect(photos.paths == ["/home/me/Pictures"])
        #expect(photos.repositories == ["nas"] && photos.priority == .high && photos.schedules == [.interval(3600)])
    }

    @Test("an unknown key is located and a close match suggested")
    func unknownKey() throws {
        let yaml = issueExample.replacingOccurrences(of: "    schedules: [", with: "    schedule: [")
        let error = try #require(configError(yaml))
        #expect(error.issues.count == 1)
        let issue = try #require(error.issues.first)
        #expect(issue.line == 14 && issue.column == 5)
        #expect(issue.keyPath == "backups.documents.schedule")
        #expect(issue.message == "unknown key 'schedule' — did you mean 'schedules'?")
        #expect(error.description == "/etc/haven/haven.yml:14:5: backups.documents.schedule: unknown key 'schedule' — did you mean 'schedules'?")
    }

    @Test("every mistake is reported at once, each with its line and key path")
    func manyErrors() throws {
        let yaml = """
        concurrency: 0
        log: {format: xml}
        repositories:
          nas:
            url: /mnt/nas
        backups:
          documents:
            paths: [/home/me/Documents]
            repositories: [nsa]
            schedules: ["1h", "0 61 * * *", "soon"]
            min_interval: 20 hours
            priority: 250
            retention: {keep_daily: seven}
            window: {start: "1am", end: "06:00"}
            hooks:
              before: [{command: "x", on_failure: explode}]
        """
        let error = try #require(configError(yaml))
        let found = error.issues.map { "\($0.line) \($0.keyPath)" }
        #expect(found == [
            "1 concurrency",
            "2 log.format",
            "4 repositories.nas",
            "9 backups.documents.repositories[0]",
            "10 backups.documents.schedules[1]",
            "10 backups.documents.schedules[2]",
            "11 backups.documents.min_interval",
            "12 backups.documents.priority",
            "13 backups.documents.retention.keep_daily",
            "14 backups.documents.window.start",
            "16 backups.documents.hooks.before[0].on_failure",
        ])
        let messages = error.issues.map(\.message)
        #expect(messages[0].contains("out of range"))
        #expect(messages[1].contains("json, text"))
        #expect(messages[2].contains("no password"))
        #expect(messages[3] == "unknown repository 'nsa' — did you mean 'nas'?")
        #expect(messages[4] == "cron hour field '61': 61 is out of range 0–23")
        #expect(messages[5].contains("neither an interval nor a cron expression"))
        #expect(messages[7].contains("0–100"))
        #expect(error.description.split(separator: "\n").count == 11)
    }

    @Test("an unset variable without default names the variable and line")
    func unsetVariable() throws {
        let yaml = issueExample.replacingOccurrences(of: "/mnt/nas/haven", with: "${NAS_PATH}")
        let error = try #require(configError(yaml))
        #expect(error.issues.map(\.line) == [7])
        #expect(error.issues.first?.keyPath == "repositories.nas.url")
        #expect(error.issues.first?.message.contains("environment variable 'NAS_PATH' is not set") == true)
        let fixed = try DaemonConfig.parse(yaml: yaml, path: "/etc/haven/haven.yml", environment: ["NAS_PATH": "/srv/nas"])
        #expect(fixed.repository(named: "nas")?.url == "/srv/nas")
    }

    @Test("a duplicate backup name points at the second definition")
    func duplicateName() throws {
        let yaml = issueExample + """

          documents:
            paths: [/srv]
            repositories: [nas]
        """
        let error = try #require(configError(yaml))
        let issue = try #require(error.issues.first)
        #expect(issue.line == 18)
        #expect(issue.keyPath == "backups.documents")
        #expect(issue.message.contains("duplicate key 'documents' (first defined on line 10)"))
    }

    @Test("missing required keys and wrong types")
    func requiredAndTypes() throws {
        let yaml = """
        repositories:
          nas:
            password_file: /p
        backups:
          docs:
            paths: /x
          more:
            repositories: nas
            paths: {a: b}
            exclude_caches: maybe
        """
        let error = try #require(configError(yaml))
        #expect(error.issues.map { "\($0.line):\($0.column) \($0.keyPath)" } == [
            "2:3 repositories.nas", "5:3 backups.docs", "9:12 backups.more.paths", "10:21 backups.more.exclude_caches",
        ])
        #expect(error.issues[0].message == "missing required key 'url'")
        #expect(error.issues[1].message == "missing required key 'repositories'")
        #expect(error.issues[2].message.contains("expected a list"))
    }

    @Test("invalid YAML reports the parser's position")
    func invalidYAML() throws {
        let error = try #require(configError("repositories:\n  nas: [a, b\nbackups: {}\n"))
        #expect(error.issues.count == 1)
        #expect(error.issues[0].line >= 2)
        #expect(error.issues[0].message.hasPrefix("invalid YAML"))
    }

    @Test("an API off loopback needs credentials; bad hashes are rejected")
    func apiSecurity() throws {
        let open = issueExample.replacingOccurrences(of: "127.0.0.1:8470", with: "0.0.0.0:8470")
        let error = try #require(configError(open))
        #expect(error.issues.map(\.keyPath) == ["api.listen"])
        #expect(error.issues[0].line == 4)
        let hash = APIUser.hash(password: "s3cret", salt: Array(repeating: 7, count: 16), iterations: 1000)
        let secured = open.replacingOccurrences(of: "  listen: 0.0.0.0:8470", with: """
              listen: 0.0.0.0:8470
              users:
                - {name: admin, password_hash: "\(hash)"}
                - {name: bob, password_hash: "md5:abc"}
            """)
        let bad = try #require(configError(secured))
        #expect(bad.issues.map(\.keyPath) == ["api.users[1].password_hash"])
        let good = secured.replacingOccurrences(of: "\n    - {name: bob, password_hash: \"md5:abc\"}", with: "\n  tokens: [\"${TOKEN}\"]")
        let c = try DaemonConfig.parse(yaml: good, path: "/etc/haven/haven.yml", environment: ["TOKEN": "0123456789abcdef0123456789abcdef"])
        #expect(c.api.requiresAuthentication)
        #expect(c.api.authenticate(user: "admin", password: "s3cret")?.name == "admin")
        #expect(c.api.authenticate(user: "admin", password: "wrong") == nil)
        #expect(c.api.accepts(token: "0123456789abcdef0123456789abcdef"))
        #expect(!c.api.accepts(token: "0123456789abcdef0123456789abcdeX"))
    }
}

@Suite("API password hashes")
struct PasswordHashTests {
    @Test("pbkdf2-sha256 matches the RFC 7914 test vector")
    func pbkdf2Vector() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1, dkLen=64 (first 32 bytes here).
        let derived = APIUser.pbkdf2SHA256(password: Array("passwd".utf8), salt: Array("salt".utf8), iterations: 1, length: 32)
        #expect(APIUser.hex(derived) == "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc")
    }

    @Test("hash and verify round trip; wrong passwords and malformed hashes fail")
    func roundTrip() {
        let hash = APIUser.hash(password: "correct horse", iterations: 2000)
        #expect(hash.hasPrefix("pbkdf2-sha256:2000:"))
        #expect(APIUser.isValidHash(hash))
        #expect(APIUser(name: "a", passwordHash: hash).verify(password: "correct horse"))
        #expect(!APIUser(name: "a", passwordHash: hash).verify(password: "correct horsE"))
        #expect(APIUser.hash(password: "x", iterations: 10) != APIUser.hash(password: "x", iterations: 10))
        #expect(!APIUser(name: "a", passwordHash: "plain").verify(password: "plain"))
        #expect(!APIUser.isValidHash("pbkdf2-sha256:0:00:00"))
    }

    @Test("the simple sha256 form verifies")
    func sha256Form() {
        // sha256("salt" ‖ "pw"), salt hex 73616c74.
        let digest = "sha256:73616c74:21baed949b716c49cbf7d8fe79412f1dc104745650a32081ae0be0b967aeb7f3"
        #expect(APIUser.isValidHash(digest))
        #expect(APIUser(name: "a", passwordHash: digest).verify(password: "pw"))
        #expect(!APIUser(name: "a", passwordHash: digest).verify(password: "pW"))
    }
}
