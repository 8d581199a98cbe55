import Foundation
import Testing
import HavenCore
@testable import HavenStorageSFTP
import HavenTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A real OpenSSH server on loopback for one test, with its own host key and an authorized user key.
final class SSHServer: @unchecked Sendable {
    let dir: TempDir
    let port: Int
    let userKey: String
    /// sshd, started with posix_spawn: Foundation's `Process` mis-detects the exit of children that close
    /// inherited descriptors (as sshd does) and then stalls exit detection for every other `Process`.
    let process: WatchedServer
    /// A known_hosts file holding this server's host key.
    let knownHosts: String
    let nonce = UUID().uuidString

    /// A loopback port nothing listens on (bound once to port 0, then released).
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    static func keygen(_ path: String) throws {
        let r = try Run.processBlocking("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path], timeout: 30)
        guard r.status == 0 else { throw FixtureError.failed("ssh-keygen failed: \(r)") }
    }

    init() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd") else {
            throw FixtureError.failed("/usr/sbin/sshd not found: install openssh-server (apt-get install -y openssh-server)")
        }
        dir = TempDir("haven-sshd")
        try? FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        try Self.keygen(dir.sub("host_key"))
        userKey = dir.sub("user_key")
        try Self.keygen(userKey)
        try FileManager.default.copyItem(atPath: userKey + ".pub", toPath: dir.sub("authorized_keys"))
        port = Self.freePort()
        let config = """
        ListenAddress 127.0.0.1
        Port \(port)
        HostKey \(dir.sub("host_key"))
        AuthorizedKeysFile \(dir.sub("authorized_keys"))
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PubkeyAuthentication yes
        PermitRootLogin yes
        StrictModes no
        UsePAM no
        Subsystem sftp internal-sftp
        PidFile \(dir.sub("sshd.pid"))

        """
        try Fixture.write(dir.sub("sshd_config"), Array(config.utf8))
        let hostKey = try String(contentsOfFile: dir.sub("host_key.pub"), encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        knownHosts = dir.sub("known_hosts")
        try Fixture.write(knownHosts, Array("[127.0.0.1]:\(port) \(hostKey)\n".utf8))
        let log = dir.sub("sshd.log")
        let p = try WatchedServer(["/usr/sbin/sshd", "-D", "-E", log, "-f", dir.sub("sshd_config")],
                                  log: dir.sub("sshd.out"), removing: dir.path)
        process = p
        let deadline = Date().addingTimeInterval(15)
        while !Self.accepts(port) {
            guard p.isRunning, Date() < deadline else {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                p.stop()
                throw FixtureError.failed("sshd did not start listening on port \(port): \(text)")
            }
            usleep(20_000)
        }
    }

    /// The ssh command line for the SFTP subsystem, logging in with `key` and checking the host key
    /// against `knownHosts` (this server's key by default).
    func command(key: String? = nil, port: Int? = nil, knownHosts: String? = nil) -> [String] {
        ["ssh", "-p", String(port ?? self.port), "-i", key ?? userKey, "-F", "/dev/null",
         "-o", "UserKnownHostsFile=\(knownHosts ?? self.knownHosts)", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
         "127.0.0.1", "-s", "sftp"]
    }

    func storage(_ root: String, key: String? = nil, port: Int? = nil, knownHosts: String? = nil) throws -> SFTPStorage {
        try SFTPStorage(url: "sftp:127.0.0.1:" + root, command: command(key: key, port: port, knownHosts: knownHosts))
    }

    func stop() {
        process.stop()
    }

    deinit { stop() }
}
