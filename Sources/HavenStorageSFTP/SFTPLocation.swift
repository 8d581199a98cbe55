import HavenCore

/// Where an SFTP repository lives: the SSH host to reach and the directory on it.
///
/// Accepted forms (as restic spells them):
/// - `sftp:user@host:/abs/path` and `sftp:host:rel/path` (relative to the login directory)
/// - `sftp://user@host:port/rel/path`; an absolute path needs a double slash: `sftp://host//srv/repo`
public struct SFTPLocation: Sendable, Hashable, CustomStringConvertible {
    public var user: String?
    public var host: String
    public var port: Int?
    /// The repository directory on the server; relative paths are relative to the login directory.
    public var path: String

    public init(user: String? = nil, host: String, port: Int? = nil, path: String) {
        self.user = user
        self.host = host
        self.port = port
        self.path = path
    }

    public var description: String {
        let userPart = user.map { "\($0)@" } ?? ""
        let hostPart = host.contains(":") ? "[\(host)]" : host
        if let port { return "sftp://\(userPart)\(hostPart):\(port)/\(path)" }
        return "sftp:\(userPart)\(hostPart):\(path)"
    }

    /// Parses a repository URL; throws `HavenError(.usage)` with a message saying what is wrong.
    public static func parse(_ url: String) throws -> SFTPLocation {
        func usage(_ why: String) -> HavenError {
            HavenError(.usage, "invalid SFTP repository location \"\(url)\": \(why); use sftp:user@host:/path or sftp://user@host:port/path")
        }
        var location: SFTPLocation
        if url.hasPrefix("sftp://") {
            let rest = url.dropFirst("sftp://".count)
            guard let slash = rest.firstIndex(of: "/") else { throw usage("no directory given") }
            let authority = String(rest[..<slash])
            let path = String(rest[rest.index(after: slash)...])
            var (user, hostPort) = splitUser(authority)
            var port: Int?
            var host: String
            if hostPort.hasPrefix("[") {
                guard let close = hostPort.firstIndex(of: "]") else { throw usage("unterminated [ in the host") }
                host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
                let after = hostPort[hostPort.index(after: close)...]
                if !after.isEmpty {
                    guard after.hasPrefix(":") else { throw usage("unexpected text after ]") }
                    guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw usage("the port must be a number from 1 to 65535") }
                    port = p
                }
            } else if let colon = hostPort.lastIndex(of: ":") {
                host = String(hostPort[..<colon])
                guard let p = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(p) else {
                    throw usage("the port must be a number from 1 to 65535")
                }
                port = p
            } else {
                host = hostPort
            }
            if user?.isEmpty == true { user = nil }
            if let u = user { user = u.removingPercentEscapes }
            hostPort = host
            location = SFTPLocation(user: user, host: hostPort, port: port, path: path)
        } else if url.hasPrefix("sftp:") {
            let rest = String(url.dropFirst("sftp:".count))
            var (user, hostPath) = splitUser(rest)
            if let u = user, u.contains(":") || u.contains("/") {
                // The "@" belonged to the path, not to a user name.
                (user, hostPath) = (nil, rest)
            }
            let host: String, path: String
            if hostPath.hasPrefix("[") {
                guard let close = hostPath.firstIndex(of: "]") else { throw usage("unterminated [ in the host") }
                host = String(hostPath[hostPath.index(after: hostPath.startIndex)..<close])
                let after = hostPath[hostPath.index(after: close)...]
                guard after.hasPrefix(":") else { throw usage("expected ':' between host and path") }
                path = String(after.dropFirst())
            } else {
                guard let colon = hostPath.firstIndex(of: ":") else { throw usage("expected ':' between host and path") }
                host = String(hostPath[..<colon])
                path = String(hostPath[hostPath.index(after: colon)...])
            }
            location = SFTPLocation(user: user?.isEmpty == true ? nil : user, host: host, port: nil, path: path)
        } else {
            throw usage("it does not start with sftp:")
        }
        guard !location.host.isEmpty else { throw usage("no host given") }
        guard !location.host.hasPrefix("-") else { throw usage("the host must not start with '-'") }
        if let u = location.user, u.hasPrefix("-") { throw usage("the user must not start with '-'") }
        while location.path.count > 1 && location.path.hasSuffix("/") { location.path.removeLast() }
        guard !location.path.isEmpty else { throw usage("no directory given") }
        return location
    }

    /// Splits "user@rest" at the last "@" before any "/" (so user names may contain "@").
    private static func splitUser(_ s: String) -> (String?, String) {
        let limit = s.firstIndex(of: "/") ?? s.endIndex
        guard let at = s[..<limit].lastIndex(of: "@") else { return (nil, s) }
        return (String(s[..<at]), String(s[s.index(after: at)...]))
    }
}

extension String {
    /// Decodes %XX escapes (as in a URL's user part); leaves malformed escapes as they are.
    fileprivate var removingPercentEscapes: String {
        var out: [UInt8] = []
        let b = Array(utf8)
        var i = 0
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        while i < b.count {
            if b[i] == 0x25, i + 2 < b.count, let h = hex(b[i + 1]), let l = hex(b[i + 2]) {
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
