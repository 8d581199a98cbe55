import Foundation
import HavenCore
import Yams

extension DaemonConfig {
    /// Reads and parses the config file at `path`. Throws `ConfigError` (also when the file cannot be read).
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> DaemonConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(path: path, issues: [ConfigIssue(line: 0, column: 0, keyPath: "",
                message: "cannot read the config file: \(error.localizedDescription); check the path and its permissions")])
        }
        return try parse(yaml: text, path: path, environment: environment)
    }

    /// Parses a config document. `path` locates the file (relative paths in the config resolve against its
    /// directory) and names it in messages; `environment` feeds `${VAR}` and `${VAR:-default}`.
    /// Throws `ConfigError` listing every error found; warnings end up in `warnings`.
    public static func parse(yaml: String, path: String, environment: [String: String]) throws -> DaemonConfig {
        let reader = ConfigReader(yaml: yaml, path: path, environment: environment)
        let config = reader.read()
        let errors = reader.issues.filter { $0.severity == .error }
        if let config, errors.isEmpty {
            var result = config
            result.warnings = reader.issues.filter { $0.severity == .warning }
                .sorted { ($0.line, $0.column) < ($1.line, $1.column) }
            return result
        }
        throw ConfigError(path: path, issues: errors.isEmpty ? reader.issues : errors)
    }
}

/// A node with its key path and the position of the key that introduced it.
struct Located {
    let node: Node
    let path: String
    let keyMark: Mark?

    var mark: Mark? { node.mark ?? keyMark }
    /// Where to report a problem with the entry as a whole (its key, else the value).
    var entryMark: Mark? { keyMark ?? node.mark }

    func child(_ key: String, _ node: Node, _ keyMark: Mark?) -> Located {
        Located(node: node, path: path.isEmpty ? key : "\(path).\(key)", keyMark: keyMark)
    }

    func item(_ index: Int, _ node: Node) -> Located {
        Located(node: node, path: "\(path)[\(index)]", keyMark: node.mark)
    }

    var isNull: Bool {
        if case .scalar = node { return node.null != nil }
        return false
    }
}

/// Walks the YAML node tree, building the config and collecting every problem.
final class ConfigReader {
    var issues: [ConfigIssue] = []
    let yaml: String
    let path: String
    let environment: [String: String]
    let baseDirectory: String

    init(yaml: String, path: String, environment: [String: String]) {
        self.yaml = yaml; self.path = path; self.environment = environment
        let absolute = path.hasPrefix("/") ? path : (FileManager.default.currentDirectoryPath + "/" + path)
        baseDirectory = (absolute as NSString).deletingLastPathComponent
    }

    // MARK: Reporting

    func error(_ at: Mark?, _ keyPath: String, _ message: String) {
        issues.append(ConfigIssue(severity: .error, line: at?.line ?? 0, column: at?.column ?? 0, keyPath: keyPath, message: message))
    }

    func warning(_ at: Mark?, _ keyPath: String, _ message: String) {
        issues.append(ConfigIssue(severity: .warning, line: at?.line ?? 0, column: at?.column ?? 0, keyPath: keyPath, message: message))
    }

    // MARK: Document

    func read() -> DaemonConfig? {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let e as YamlError {
            reportYAML(e)
            return nil
        } catch {
            self.error(nil, "", "cannot parse the YAML: \(error)")
            return nil
        }
        guard let root else {
            error(nil, "", "the config is empty: define at least 'repositories' and 'backups'")
            return nil
        }
        let top = Located(node: root, path: "", keyMark: nil)
        guard let fields = mapping(top, known: ["host", "state_dir", "api", "log", "concurrency", "catch_up",
                                                "repositories", "backups"]) else { return nil }
        var config = DaemonConfig(path: path, stateDir: defaultStateDirectory())
        if let v = fields["host"] { config.host = string(v) }
        if let v = fields["state_dir"], let p = filePath(v) { config.stateDir = p }
        if let v = fields["api"] { config.api = readAPI(v) }
        if let v = fields["log"] { config.log = readLog(v) }
        if let v = fields["concurrency"], let n = int(v, 1...64) { config.concurrency = n }
        if let v = fields["catch_up"], let b = bool(v) { config.catchUp = b }

        if let v = fields["repositories"] {
            for (name, entry) in named(v, what: "repository") {
                if let repo = readRepository(name, entry) { config.repositories.append(repo) }
            }
        } else {
            error(top.mark, "repositories", "missing key 'repositories': define at least one repository (name → url and password)")
        }
        let declaredRepositories: [String] = fields["repositories"].map { named($0, what: nil).map(\.0) } ?? []
        if let v = fields["backups"] {
            for (name, entry) in named(v, what: "backup") {
                if let backup = readBackup(name, entry, repositories: Set(declaredRepositories)) {
                    config.backups.append(backup)
                }
            }
        } else {
            warning(top.mark, "backups", "no 'backups' defined: the daemon will have nothing to do")
        }
        return config
    }

    private func reportYAML(_ e: YamlError) {
        switch e {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            var text = "invalid YAML: \(problem)"
            if let context { text += " (\(context.text) at line \(context.mark.line))" }
            error(mark, "", text + "; check indentation, colons and quotes")
        case .duplicatedKeysInMapping(let duplicates, let context):
            let key = duplicates.sorted().first ?? "?"
            let first = context.mark
            let at = findRepeatedKey(key, after: first) ?? (first.line, first.column)
            let keyPath = blockKeyPath(line: at.line, column: at.column) ?? key
            issues.append(ConfigIssue(line: at.line, column: at.column, keyPath: keyPath,
                message: "duplicate key '\(key)' (first defined on line \(first.line)): names must be unique; rename or merge one of them"))
        case .reader(let problem, _, _, _):
            error(nil, "", "cannot read the config text: \(problem); the file must be UTF-8")
        default:
            error(nil, "", "invalid YAML: \(e)")
        }
    }

    /// The line after `first` where `key:` appears again at the same column.
    private func findRepeatedKey(_ key: String, after first: Mark) -> (line: Int, column: Int)? {
        let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
        guard first.line >= 1 else { return nil }
        for index in first.line..<lines.count {
            let line = lines[index]
            let indent = line.prefix { $0 == " " }.count
            guard indent == first.column - 1 else { continue }
            let rest = line.dropFirst(indent)
            for candidate in [key, "\"\(key)\"", "'\(key)'"] where rest.hasPrefix(candidate + ":") {
                return (index + 1, indent + 1)
            }
        }
        return nil
    }

    /// The dotted key path of the block-style key at (line, column), from indentation.
    private func blockKeyPath(line: Int, column: Int) -> String? {
        let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard line >= 1, line <= lines.count else { return nil }
        func key(of text: String) -> String? {
            let trimmed = text.drop { $0 == " " }
            guard let colon = trimmed.firstIndex(of: ":"), !trimmed.hasPrefix("#"), !trimmed.hasPrefix("-") else { return nil }
            return String(trimmed[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "\"' "))
        }
        guard var path = key(of: lines[line - 1]).map({ [$0] }) else { return nil }
        var indent = column - 1
        var index = line - 2
        while index >= 0, indent > 0 {
            let text = lines[index]
            let own = text.prefix { $0 == " " }.count
            if own < indent, let k = key(of: text), !text.trimmingCharacters(in: .whitespaces).isEmpty {
                path.insert(k, at: 0)
                indent = own
            }
            index -= 1
        }
        return path.joined(separator: ".")
    }

    private func defaultStateDirectory() -> String {
        if let xdg = environment["XDG_STATE_HOME"], xdg.hasPrefix("/") { return xdg + "/haven" }
        if let home = environment["HOME"], home.hasPrefix("/"), home != "/" { return home + "/.local/state/haven" }
        return "/var/lib/haven"
    }

    // MARK: Sections

    private func readAPI(_ v: Located) -> APIConfig {
        var api = APIConfig()
        guard let f = mapping(v, known: ["listen", "users", "tokens", "token_file"]) else { return api }
        if let l = f["listen"], let text = string(l) {
            if let address = ListenAddress.parse(text) {
                api.listen = address
            } else {
                error(l.mark, l.path, "'\(text)' is not a listen address: write host:port, e.g. 127.0.0.1:8470 or [::1]:8470")
            }
        }
        if let u = f["users"], let items = sequence(u) {
            var seen = Set<String>()
            for item in items {
                guard let uf = mapping(item, known: ["name", "password_hash"]) else { continue }
                let name = required(uf, "name", in: item).flatMap(string)
                let hashField = required(uf, "password_hash", in: item)
                let hash = hashField.flatMap(string)
                if let hashField, let hash, !APIUser.isValidHash(hash) {
                    error(hashField.mark, hashField.path, "not a password hash: use pbkdf2-sha256:<iterations>:<salt-hex>:<hash-hex> "
                        + "(create one with `haven config hash-password`) or sha256:<salt-hex>:<hash-hex>")
                }
                if let name, !seen.insert(name).inserted {
                    error(uf["name"]?.mark, "\(item.path).name", "user '\(name)' is defined twice: user names must be unique")
                }
                if let name, let hash { api.users.append(APIUser(name: name, passwordHash: hash)) }
            }
        }
        if let t = f["tokens"], let tokens = stringList(t) {
            for (i, token) in tokens.enumerated() where token.count < 16 {
                warning(t.mark, "\(t.path)[\(i)]", "token is only \(token.count) characters long: use at least 32 random characters")
            }
            api.tokens = tokens
        }
        if let t = f["token_file"] { api.tokenFile = filePath(t) }
        if !api.listen.isLoopback && !api.requiresAuthentication {
            let at = f["listen"]
            error(at?.mark ?? v.entryMark, at?.path ?? v.path, "the API listens on \(api.listen), which is not a loopback address, "
                + "but no credentials are configured: add api.users or api.tokens, or listen on 127.0.0.1")
        }
        return api
    }

    private func readLog(_ v: Located) -> LogConfig {
        var log = LogConfig()
        guard let f = mapping(v, known: ["format", "level"]) else { return log }
        if let x = f["format"], let format: LogFormat = choice(x) { log.format = format }
        if let x = f["level"], let level: LogLevel = choice(x) { log.level = level }
        return log
    }

    private func readRepository(_ name: String, _ v: Located) -> RepositoryConfig? {
        guard let f = mapping(v, known: ["url", "password_file", "password_env", "password_command", "password",
                                         "options", "limit_upload", "limit_download", "connections"]) else { return nil }
        let url = required(f, "url", in: v).flatMap(string).map(resolveRepositoryURL)
        let sources = ["password_file", "password_env", "password_command", "password"].filter { f[$0] != nil }
        var password: PasswordSource?
        if sources.count > 1 {
            error(f[sources[1]]?.entryMark, "\(v.path).\(sources[1])",
                  "more than one password source (\(sources.joined(separator: ", "))): keep exactly one")
        } else if let key = sources.first, let x = f[key] {
            switch key {
            case "password_file": password = filePath(x).map(PasswordSource.file)
            case "password_env": password = string(x).map(PasswordSource.environment)
            case "password_command": password = string(x).map(PasswordSource.command)
            default:
                password = string(x).map(PasswordSource.literal)
                warning(x.entryMark, x.path, "a password written in the config is readable by anyone who can read the file: "
                    + "prefer password_file, password_env or password_command")
            }
        } else {
            error(v.entryMark, v.path, "repository '\(name)' has no password: set one of password_file, password_env or password_command")
        }
        var options: [String: String] = [:]
        if let o = f["options"], let entries = mappingEntries(o) {
            for (key, value) in entries { if let s = string(value) { options[key] = s } }
        }
        guard let url, let password else { return nil }
        var repo = RepositoryConfig(name: name, url: url, password: password, options: options)
        if let x = f["limit_upload"] { repo.limitUpload = int(x, 1...Int(Int32.max)) }
        if let x = f["limit_download"] { repo.limitDownload = int(x, 1...Int(Int32.max)) }
        if let x = f["connections"] { repo.connections = int(x, 1...128) }
        return repo
    }

    private static let backupKeys = [
        "paths", "exclude", "exclude_if_present", "exclude_caches", "one_file_system", "exclude_larger_than", "tags",
        "repositories", "schedules", "watch", "min_interval", "priority", "hooks", "retention", "prune", "check",
        "window", "max_duration", "nice", "ionice", "limit_upload", "limit_download",
    ]

    private func readBackup(_ name: String, _ v: Located, repositories known: Set<String>) -> BackupConfig? {
        guard let f = mapping(v, known: ConfigReader.backupKeys) else { return nil }
        let pathsField = required(f, "paths", in: v)
        var paths: [String]? = nil
        if let pathsField, let items = sequenceOrScalar(pathsField) {
            paths = items.compactMap(filePath)
            if items.isEmpty { error(pathsField.mark, pathsField.path, "no paths to back up: list at least one") }
        }
        let reposField = required(f, "repositories", in: v)
        var repos: [String]? = nil
        if let reposField, let items = sequenceOrScalar(reposField) {
            var list: [String] = []
            for item in items {
                guard let r = string(item) else { continue }
                if !known.contains(r) {
                    let hint = suggestion(r, among: Array(known)).map { " — did you mean '\($0)'?" }
                        ?? (known.isEmpty ? "" : " — defined repositories: \(known.sorted().joined(separator: ", "))")
                    error(item.mark, item.path, "unknown repository '\(r)'\(hint)")
                } else if list.contains(r) {
                    error(item.mark, item.path, "repository '\(r)' is listed twice")
                } else {
                    list.append(r)
                }
            }
            if items.isEmpty { error(reposField.mark, reposField.path, "no repositories: list at least one") }
            repos = list
        }
        var b = BackupConfig(name: name, paths: paths ?? [], repositories: repos ?? [])
        if let x = f["exclude"] { b.exclude = stringList(x) ?? [] }
        if let x = f["exclude_if_present"] { b.excludeIfPresent = stringList(x) ?? [] }
        if let x = f["exclude_caches"] { b.excludeCaches = bool(x) ?? false }
        if let x = f["one_file_system"] { b.oneFileSystem = bool(x) ?? false }
        if let x = f["exclude_larger_than"], let s = string(x) {
            if let size = SizeParser.parse(s), size > 0 { b.excludeLargerThan = size } else {
                error(x.mark, x.path, "'\(s)' is not a size: write a number with an optional unit K, M, G or T, e.g. 100M")
            }
        }
        if let x = f["tags"] { b.tags = stringList(x) ?? [] }
        if let x = f["schedules"] { b.schedules = schedules(x) }
        if let x = f["watch"] { b.watch = readWatch(x, defaultPaths: b.paths) }
        if let x = f["min_interval"] { b.minInterval = duration(x) }
        if let x = f["priority"], let s = string(x) {
            do { b.priority = try Priority.parse(s) } catch let e as PriorityError { error(x.mark, x.path, e.message) } catch {}
        }
        if let x = f["hooks"] { b.hooks = readHooks(x) }
        if let x = f["retention"] { b.retention = readRetention(x) }
        if let x = f["prune"], let p = mapping(x, known: ["schedules", "max_unused"]) {
            var prune = PruneConfig()
            if let s = p["schedules"] { prune.schedules = schedules(s) }
            if let m = p["max_unused"], let text = string(m) {
                do { prune.maxUnused = try MaxUnused.parse(text) } catch { self.error(m.mark, m.path, message(of: error)) }
            }
            b.prune = prune
        }
        if let x = f["check"], let c = mapping(x, known: ["schedules", "read_data_subset", "read_data"]) {
            var check = CheckConfig()
            if let s = c["schedules"] { check.schedules = schedules(s) }
            if let r = c["read_data"], bool(r) == true { check.readData = .all }
            if let r = c["read_data_subset"], let text = string(r) {
                do { check.readData = try ReadDataSelection.parse(text) } catch { self.error(r.mark, r.path, message(of: error)) }
            }
            b.check = check
        }
        if let x = f["window"] { b.window = readWindow(x) }
        if let x = f["max_duration"] { b.maxDuration = duration(x) }
        if let x = f["nice"] { b.nice = int(x, -20...19) }
        if let x = f["ionice"] { b.ionice = readIONice(x) }
        if let x = f["limit_upload"] { b.limitUpload = int(x, 1...Int(Int32.max)) }
        if let x = f["limit_download"] { b.limitDownload = int(x, 1...Int(Int32.max)) }
        if b.schedules.isEmpty && b.watch == nil {
            warning(v.entryMark, v.path, "backup '\(name)' has no schedules and no watch: it runs only when asked through the API or CLI")
        }
        guard paths != nil, repos != nil else { return nil }
        return b
    }

    private func readWatch(_ v: Located, defaultPaths: [String]) -> WatchConfig? {
        if case .scalar = v.node, !v.isNull {
            guard let on = bool(v) else { return nil }
            return on ? WatchConfig(paths: defaultPaths) : nil
        }
        guard let f = mapping(v, known: ["paths", "min_wait", "max_wait"]) else { return nil }
        var w = WatchConfig(paths: defaultPaths)
        if let p = f["paths"], let items = sequenceOrScalar(p) { w.paths = items.compactMap(filePath) }
        if let x = f["min_wait"], let d = duration(x) { w.minWait = d }
        if let x = f["max_wait"], let d = duration(x) {
            w.maxWait = d
            if d < w.minWait {
                error(x.mark, x.path, "max_wait \(DurationParser.format(d)) is shorter than min_wait \(DurationParser.format(w.minWait)): make it at least as long")
            }
        }
        return w
    }

    private func readHooks(_ v: Located) -> HookSet {
        var set = HookSet()
        guard let f = mapping(v, known: ["before", "after", "failure"]) else { return set }
        if let x = f["before"] { set.before = hooks(x, defaultPolicy: .abort) }
        if let x = f["after"] { set.after = hooks(x, defaultPolicy: .continue) }
        if let x = f["failure"] { set.failure = hooks(x, defaultPolicy: .continue) }
        return set
    }

    private func hooks(_ v: Located, defaultPolicy: HookFailurePolicy) -> [Hook] {
        guard let items = sequenceOrScalar(v) else { return [] }
        return items.compactMap { hook($0, defaultPolicy: defaultPolicy) }
    }

    private func hook(_ v: Located, defaultPolicy: HookFailurePolicy) -> Hook? {
        if case .scalar = v.node {
            guard let command = string(v) else { return nil }
            guard !command.trimmingCharacters(in: .whitespaces).isEmpty else {
                error(v.mark, v.path, "empty hook command")
                return nil
            }
            return Hook(action: .command(command), onFailure: defaultPolicy)
        }
        guard let f = mapping(v, known: ["command", "http", "timeout", "retries", "on_failure"]) else { return nil }
        var action: HookAction?
        switch (f["command"], f["http"]) {
        case (let c?, nil): action = string(c).map(HookAction.command)
        case (nil, let h?): action = readHTTPHook(h)
        case (_?, _?): error(v.entryMark, v.path, "a hook has either 'command' or 'http', not both: split it into two hooks")
        case (nil, nil): error(v.entryMark, v.path, "missing key 'command' or 'http': say what the hook runs")
        }
        var hook = Hook(action: action ?? .command(""), onFailure: defaultPolicy)
        if let x = f["timeout"], let d = duration(x) {
            if d > 0 { hook.timeout = d } else { error(x.mark, x.path, "timeout must be longer than 0s") }
        }
        if let x = f["retries"], let n = int(x, 0...100) { hook.retries = n }
        if let x = f["on_failure"], let p: HookFailurePolicy = choice(x) { hook.onFailure = p }
        return action == nil ? nil : hook
    }

    private func readHTTPHook(_ v: Located) -> HookAction? {
        guard let f = mapping(v, known: ["url", "method", "headers", "body"]) else { return nil }
        guard let urlField = required(f, "url", in: v), let url = string(urlField) else { return nil }
        guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), scheme == "http" || scheme == "https",
              parsed.host != nil else {
            error(urlField.mark, urlField.path, "'\(url)' is not an http:// or https:// URL")
            return nil
        }
        var hook = HTTPHook(url: url)
        if let b = f["body"] { hook.body = string(b) }
        hook.method = hook.body == nil ? "GET" : "POST"
        if let m = f["method"], let method = string(m) {
            let upper = method.uppercased()
            if ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(upper) { hook.method = upper } else {
                error(m.mark, m.path, "unknown HTTP method '\(method)': use GET, POST, PUT, PATCH, DELETE or HEAD")
            }
        }
        if let h = f["headers"], let entries = mappingEntries(h) {
            for (k, value) in entries { if let s = string(value) { hook.headers[k] = s } }
        }
        return .http(hook)
    }

    private func readRetention(_ v: Located) -> RetentionConfig? {
        let counts = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"]
        let withins = ["keep_within", "keep_within_hourly", "keep_within_daily", "keep_within_weekly",
                       "keep_within_monthly", "keep_within_yearly"]
        guard let f = mapping(v, known: counts + withins + ["keep_tags", "prune", "schedules"]) else { return nil }
        var policy = RetentionPolicy()
        func count(_ key: String) -> Int? {
            guard let x = f[key] else { return nil }
            if string(x)?.lowercased() == "unlimited" { return RetentionPolicy.unlimited }
            return int(x, 0...1_000_000, hint: "or 'unlimited'")
        }
        func within(_ key: String) -> RetentionDuration? {
            guard let x = f[key], let text = string(x) else { return nil }
            do { return try RetentionDuration.parse(text) } catch { self.error(x.mark, x.path, message(of: error)) }
            return nil
        }
        policy.keepLast = count("keep_last"); policy.keepHourly = count("keep_hourly")
        policy.keepDaily = count("keep_daily"); policy.keepWeekly = count("keep_weekly")
        policy.keepMonthly = count("keep_monthly"); policy.keepYearly = count("keep_yearly")
        policy.keepWithin = within("keep_within"); policy.keepWithinHourly = within("keep_within_hourly")
        policy.keepWithinDaily = within("keep_within_daily"); policy.keepWithinWeekly = within("keep_within_weekly")
        policy.keepWithinMonthly = within("keep_within_monthly"); policy.keepWithinYearly = within("keep_within_yearly")
        if let x = f["keep_tags"], let tags = stringList(x) {
            policy.keepTags = tags.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }
        }
        if policy.isEmpty && issues.allSatisfy({ !$0.keyPath.hasPrefix(v.path + ".") }) {
            error(v.entryMark, v.path, "retention keeps nothing, which would delete every snapshot: set at least one keep_* key, e.g. keep_daily: 7")
        }
        var r = RetentionConfig(policy: policy)
        if let x = f["prune"], let p = bool(x) { r.prune = p }
        if let x = f["schedules"] { r.schedules = schedules(x) }
        return r
    }

    private func readWindow(_ v: Located) -> TimeWindow? {
        var startText: String?, endText: String?
        var startMark = v.mark, endMark = v.mark
        var startPath = v.path, endPath = v.path
        if case .scalar = v.node {
            guard let text = string(v) else { return nil }
            let parts = text.split(separator: "-").map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else {
                error(v.mark, v.path, "'\(text)' is not a window: write {start: \"01:00\", end: \"06:00\"} or \"01:00-06:00\"")
                return nil
            }
            startText = parts[0]; endText = parts[1]
        } else {
            guard let f = mapping(v, known: ["start", "end"]) else { return nil }
            let s = required(f, "start", in: v), e = required(f, "end", in: v)
            startText = s.flatMap(string); endText = e.flatMap(string)
            startMark = s?.mark; endMark = e?.mark
            startPath = s?.path ?? v.path; endPath = e?.path ?? v.path
        }
        guard let startText, let endText else { return nil }
        var ok = true
        do { _ = try TimeWindow(start: startText, end: "00:00") } catch let e as TimeWindowError {
            error(startMark, startPath, e.message); ok = false
        } catch {}
        do { _ = try TimeWindow(start: "00:00", end: endText) } catch let e as TimeWindowError {
            error(endMark, endPath, e.message); ok = false
        } catch {}
        guard ok, let window = try? TimeWindow(start: startText, end: endText) else { return nil }
        if window.start == window.end {
            warning(v.entryMark, v.path, "the window starts and ends at the same time, so it is always open")
        }
        return window
    }

    private func readIONice(_ v: Located) -> IONice? {
        if case .scalar = v.node {
            guard let cls: IONice.Class = choice(v) else { return nil }
            return IONice(ioClass: cls)
        }
        guard let f = mapping(v, known: ["class", "level"]) else { return nil }
        guard let c = required(f, "class", in: v), let cls: IONice.Class = choice(c) else { return nil }
        var result = IONice(ioClass: cls)
        if let l = f["level"], let n = int(l, 0...7) {
            if cls == .idle {
                error(l.mark, l.path, "the idle IO class has no level: remove 'level' or use class best-effort")
            } else {
                result.level = n
            }
        }
        return result
    }

    // MARK: Values

    /// The fields of a mapping; reports a non-mapping value and unknown keys (with a suggestion).
    func mapping(_ v: Located, known: [String]) -> [String: Located]? {
        guard let entries = mappingEntries(v) else { return nil }
        var result: [String: Located] = [:]
        for (key, value) in entries {
            if known.contains(key) {
                result[key] = value
            } else {
                let hint = suggestion(key, among: known).map { " — did you mean '\($0)'?" }
                    ?? " — known keys here: \(known.joined(separator: ", "))"
                error(value.keyMark, value.path, "unknown key '\(key)'\(hint)")
            }
        }
        return result
    }

    /// The entries of a mapping in file order, keys as strings.
    func mappingEntries(_ v: Located) -> [(String, Located)]? {
        if v.isNull { return [] }
        guard case .mapping(let m) = v.node else {
            error(v.mark, v.path, "expected a mapping (key: value lines) here, found \(kind(v.node))")
            return nil
        }
        var entries: [(String, Located)] = []
        var merged: [(String, Located)] = []
        for (k, value) in m {
            guard case .scalar(let s) = k else {
                error(k.mark, v.path, "keys must be plain names, found \(kind(k))")
                continue
            }
            if s.string == "<<" && s.style == .plain {
                // YAML merge key: `<<: *defaults` (or a list of aliases) copies keys not given here.
                let sources: [Node]
                switch value {
                case .mapping: sources = [value]
                case .sequence(let list): sources = Array(list)
                default: sources = []
                }
                guard !sources.isEmpty, sources.allSatisfy({ if case .mapping = $0 { return true } else { return false } }) else {
                    error(k.mark, v.path, "'<<' merges mappings: write '<<: *name' where '&name' marks a mapping")
                    continue
                }
                for case .mapping(let source) in sources {
                    for (mk, mv) in source {
                        guard let name = mk.string else { continue }
                        merged.append((name, v.child(name, mv, mk.mark)))
                    }
                }
                continue
            }
            entries.append((s.string, v.child(s.string, value, k.mark)))
        }
        for (name, entry) in merged where !entries.contains(where: { $0.0 == name }) {
            entries.append((name, entry))
        }
        return entries
    }

    /// Named entries (repositories, backups): names must be simple so they can appear in URLs and logs.
    func named(_ v: Located, what: String?) -> [(String, Located)] {
        guard let what else {
            if case .mapping(let m) = v.node { return m.compactMap { k, _ in k.string.map { ($0, v) } } }
            return []
        }
        guard let entries = mappingEntries(v) else { return [] }
        var result: [(String, Located)] = []
        for (name, entry) in entries {
            let allowed = !name.isEmpty && name.unicodeScalars.allSatisfy {
                CharacterSet.alphanumerics.contains($0) && $0.isASCII || "._-".unicodeScalars.contains($0)
            }
            if !allowed {
                error(entry.keyMark, entry.path, "\(what) name '\(name)' may contain only letters, digits, '.', '_' and '-'")
                continue
            }
            result.append((name, entry))
        }
        return result
    }

    func required(_ fields: [String: Located], _ key: String, in parent: Located) -> Located? {
        if let v = fields[key], !v.isNull { return v }
        if let v = fields[key] {
            error(v.entryMark, v.path, "'\(key)' is empty: give it a value")
        } else {
            error(parent.entryMark, parent.path, "missing required key '\(key)'")
        }
        return nil
    }

    func sequence(_ v: Located) -> [Located]? {
        if v.isNull { return [] }
        guard case .sequence(let s) = v.node else {
            error(v.mark, v.path, "expected a list here, found \(kind(v.node))")
            return nil
        }
        return s.enumerated().map { v.item($0.offset, $0.element) }
    }

    /// A list, or a single scalar taken as a one-item list.
    func sequenceOrScalar(_ v: Located) -> [Located]? {
        if case .scalar = v.node, !v.isNull { return [v] }
        return sequence(v)
    }

    func stringList(_ v: Located) -> [String]? {
        guard let items = sequenceOrScalar(v) else { return nil }
        return items.compactMap(string)
    }

    /// A scalar's text with `${VAR}` substituted.
    func string(_ v: Located) -> String? {
        guard case .scalar(let s) = v.node else {
            error(v.mark, v.path, "expected a single value here, found \(kind(v.node))")
            return nil
        }
        guard s.string.contains("$") else { return s.string }
        switch EnvironmentSubstitution.apply(s.string, environment) {
        case .success(let text): return text
        case .failure(let e):
            error(v.mark, v.path, e.message)
            return nil
        }
    }

    func int(_ v: Located, _ range: ClosedRange<Int>, hint: String? = nil) -> Int? {
        guard let text = string(v) else { return nil }
        guard let n = Int(text.trimmingCharacters(in: .whitespaces)) else {
            error(v.mark, v.path, "expected a whole number, found '\(text)'\(hint.map { "; write a number \($0)" } ?? "")")
            return nil
        }
        guard range.contains(n) else {
            error(v.mark, v.path, "\(n) is out of range: use \(range.lowerBound)…\(range.upperBound)")
            return nil
        }
        return n
    }

    func bool(_ v: Located) -> Bool? {
        guard let text = string(v) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            error(v.mark, v.path, "expected true or false, found '\(text)'")
            return nil
        }
    }

    func duration(_ v: Located) -> TimeInterval? {
        guard let text = string(v) else { return nil }
        do { return try DurationParser.parse(text) } catch let e as DurationParser.ParseError {
            error(v.mark, v.path, e.message)
        } catch {}
        return nil
    }

    func choice<T: RawRepresentable & CaseIterable>(_ v: Located) -> T? where T.RawValue == String {
        guard let text = string(v) else { return nil }
        if let value = T(rawValue: text.lowercased()) { return value }
        let names = T.allCases.map(\.rawValue)
        let hint = suggestion(text, among: names).map { "did you mean '\($0)'? " } ?? ""
        error(v.mark, v.path, "unknown value '\(text)': \(hint)use one of \(names.joined(separator: ", "))")
        return nil
    }

    func schedules(_ v: Located) -> [Schedule] {
        guard let items = sequenceOrScalar(v) else { return [] }
        var result: [Schedule] = []
        for item in items {
            guard let text = string(item) else { continue }
            do { result.append(try Schedule.parse(text)) } catch let e as ScheduleError {
                error(item.mark, item.path, e.message)
            } catch {}
        }
        return result
    }

    /// An absolute path: `~/` expands to `$HOME`, relative paths resolve against the config's directory.
    func filePath(_ v: Located) -> String? {
        guard let text = string(v) else { return nil }
        guard !text.isEmpty else {
            error(v.mark, v.path, "empty path")
            return nil
        }
        return resolve(text)
    }

    func resolve(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        if path == "~" || path.hasPrefix("~/"), let home = environment["HOME"] { return home + path.dropFirst() }
        let joined = baseDirectory + "/" + path
        return (joined as NSString).standardizingPath
    }

    /// Local repository paths resolve like other paths; URLs with a scheme (`s3:`, `sftp:`, …) stay as they are.
    func resolveRepositoryURL(_ url: String) -> String {
        if url.hasPrefix("local:") { return "local:" + resolve(String(url.dropFirst(6))) }
        if let colon = url.firstIndex(of: ":"), colon != url.startIndex,
           url[..<colon].allSatisfy({ $0.isLetter || $0.isNumber || "+.-".contains($0) }), url[..<colon].first!.isLetter {
            return url
        }
        return resolve(url)
    }

    private func kind(_ node: Node) -> String {
        switch node {
        case .scalar(let s): return "the value '\(s.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    private func message(of error: any Error) -> String {
        (error as? HavenError)?.message ?? "\(error)"
    }
}

/// The closest candidate within a small edit distance (insertions, deletions, substitutions and swaps of
/// neighbours count one each), for "did you mean" hints.
func suggestion(_ word: String, among candidates: [String]) -> String? {
    let w = Array(word.lowercased())
    var best: (String, Int)? = nil
    for candidate in candidates {
        let c = Array(candidate.lowercased())
        var d = Array(repeating: Array(repeating: 0, count: c.count + 1), count: w.count + 1)
        for i in 0...w.count { d[i][0] = i }
        for j in 0...c.count { d[0][j] = j }
        if !w.isEmpty && !c.isEmpty {
            for i in 1...w.count {
                for j in 1...c.count {
                    let cost = w[i - 1] == c[j - 1] ? 0 : 1
                    d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                    if i > 1, j > 1, w[i - 1] == c[j - 2], w[i - 2] == c[j - 1] {
                        d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
                    }
                }
            }
        }
        let distance = d[w.count][c.count]
        let allowed = max(1, min(3, candidate.count / 3))
        if distance <= allowed, best == nil || distance < best!.1 { best = (candidate, distance) }
    }
    return best?.0
}
