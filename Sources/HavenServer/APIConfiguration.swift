import Foundation
import HavenDaemon
import Logging

/// An account allowed to call the API with HTTP Basic authentication.
public struct APIAccount: Sendable {
    public var name: String
    /// Checks a password (for example against a hash from the configuration). A password that passed is
    /// not checked again for five minutes (see `VerifiedCredentials`).
    public var verify: @Sendable (String) -> Bool

    public init(name: String, verify: @escaping @Sendable (String) -> Bool) {
        self.name = name
        self.verify = verify
    }
}

/// Where the API listens and who may call it.
public struct APIConfiguration: Sendable {
    /// The address to bind, e.g. `127.0.0.1`, `::1` or `0.0.0.0`.
    public var host: String
    /// The TCP port; 0 picks a free one (see `APIServer.makeApplication(onListening:)`).
    public var port: Int
    public var users: [APIAccount]
    /// Accepted `Authorization: Bearer TOKEN` values.
    public var tokens: [String]
    /// Server events, access lines (at `.info`) and the detail of internal errors (at `.error`).
    public var logger: Logger

    public init(host: String = "127.0.0.1", port: Int = 8470, users: [APIAccount] = [], tokens: [String] = [],
                logger: Logger = APIConfiguration.defaultLogger) {
        self.host = host
        self.port = port
        self.users = users
        self.tokens = tokens
        self.logger = logger
    }

    /// A configuration from an `api.listen` value such as `127.0.0.1:8470`, `[::1]:8470` or `0.0.0.0:8470`.
    /// Throws `APIServerError` when the address is malformed.
    public init(listen: String, users: [APIAccount] = [], tokens: [String] = [], logger: Logger = APIConfiguration.defaultLogger) throws {
        let (host, port) = try Self.parseListen(listen)
        self.init(host: host, port: port, users: users, tokens: tokens, logger: logger)
    }

    /// The port Haven's daemon listens on unless configured otherwise.
    public static let defaultPort = 8470

    /// A logger that prints only warnings and errors, so the server is quiet by default.
    public static var defaultLogger: Logger {
        var logger = Logger(label: "haven.api")
        logger.logLevel = .warning
        return logger
    }

    /// `host:port` as written in `api.listen` (IPv6 hosts in brackets).
    public var listen: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Whether the server answers credential-free calls: true when no users and no tokens are configured.
    public var allowsAnonymous: Bool { users.isEmpty && tokens.isEmpty }

    /// Whether `host` only accepts connections from this machine.
    public var isLoopback: Bool { Self.isLoopback(host) }

    /// Throws when the server must not start: no credentials while listening beyond loopback.
    public func validate() throws {
        guard (0...65535).contains(port) else {
            throw APIServerError("api.listen port \(port) is out of range; use a port between 1 and 65535")
        }
        if allowsAnonymous && !isLoopback {
            throw APIServerError(
                "api.listen is \(listen) but no api.users or api.tokens are configured; add credentials or listen on 127.0.0.1")
        }
    }

    /// Splits `host:port` like the configuration's `api.listen` (`ListenAddress.parse`): `127.0.0.1:8470`,
    /// `[::1]:8470`, `localhost:8470`, or `:8470` for all interfaces. Port 0 is allowed (tests).
    public static func parseListen(_ value: String) throws -> (host: String, port: Int) {
        if let address = ListenAddress.parse(value) { return (address.host, address.port) }
        if value.hasSuffix(":0"), let address = ListenAddress.parse(String(value.dropLast()) + "1") { return (address.host, 0) }
        throw APIServerError("api.listen '\(value)' is not host:port; write e.g. 127.0.0.1:8470 or [::1]:8470")
    }

    /// `localhost`, `127.0.0.0/8` and `::1`.
    public static func isLoopback(_ host: String) -> Bool {
        let h = host.lowercased()
        if h == "localhost" || h == "::1" || h == "0:0:0:0:0:0:0:1" { return true }
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }
}

extension APIConfiguration {
    /// The configuration's `api` section: its address, its users (checked against their password hashes)
    /// and its tokens plus `extraTokens` (e.g. read from `api.token_file`).
    public init(_ api: APIConfig, extraTokens: [String] = [], logger: Logger = APIConfiguration.defaultLogger) {
        self.init(host: api.listen.host, port: api.listen.port,
                  users: api.users.map { user in APIAccount(name: user.name) { user.verify(password: $0) } },
                  tokens: api.tokens + extraTokens, logger: logger)
    }
}

/// Why the API server could not be set up (bad address, missing credentials).
public struct APIServerError: Error, Sendable, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
