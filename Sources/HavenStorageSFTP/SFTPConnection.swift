import Foundation
import HavenCore
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One outstanding request: completed once, by the reader thread, a timeout, or a connection failure.
final class Reply: Sendable {
    private enum State {
        case waiting(CheckedContinuation<Response, any Error>?)
        case done(Result<Response, HavenError>)
    }
    private let state = Mutex<State>(.waiting(nil))

    /// Completes the reply; returns false when it was already complete.
    @discardableResult
    func complete(_ result: Result<Response, HavenError>) -> Bool {
        let cont: CheckedContinuation<Response, any Error>?? = state.withLock { s in
            guard case .waiting(let c) = s else { return .none }
            s = .done(result)
            return .some(c)
        }
        guard case .some(let c) = cont else { return false }
        c?.resume(with: result.mapError { $0 as any Error })
        return true
    }

    func value() async throws -> Response {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Response, any Error>) in
            let done: Result<Response, HavenError>? = state.withLock { s in
                switch s {
                case .done(let r): return r
                case .waiting: s = .waiting(c); return nil
                }
            }
            if let done { c.resume(with: done.mapError { $0 as any Error }) }
        }
    }
}

/// An SFTP v3 session over a `ssh … -s sftp` subprocess's stdin and stdout.
///
/// A reader thread reads replies and hands each to the request with its id, so many requests can be
/// outstanding at once. When ssh exits or the stream breaks, every waiting request fails with one error
/// that carries ssh's stderr.
final class SFTPConnection: @unchecked Sendable {
    private struct State {
        var nextID: UInt32 = 1
        var pending: [UInt32: Reply] = [:]
        /// The most requests ever outstanding at once (shows that transfers are pipelined).
        var peakPending = 0
        /// OPEN requests sent (shows how many file handles reads took).
        var opens = 0
        var failure: HavenError?
    }

    let location: String
    let commandLine: String
    private let child: Subprocess
    /// True once the server's VERSION reply arrived.
    private let connected = Mutex(false)
    private let state = Mutex(State())
    /// Serializes writes to ssh's stdin; true once stdin is closed.
    private let writeLock = Mutex(false)
    private let stderrText = Mutex<[UInt8]>([])
    private let stderrDone = DispatchSemaphore(value: 0)
    private let versionReply = Reply()
    private let requestTimeout: Double
    private let extensionsBox = Mutex<[String: String]>([:])

    var extensions: [String: String] { extensionsBox.withLock { $0 } }
    var isAlive: Bool { state.withLock { $0.failure == nil } }
    var peakOutstandingRequests: Int { state.withLock { $0.peakPending } }
    var opensSent: Int { state.withLock { $0.opens } }

    private init(command: [String], location: String, requestTimeout: Double) throws {
        self.location = location
        self.requestTimeout = requestTimeout
        commandLine = command.joined(separator: " ")
        guard let first = command.first else { throw HavenError(.usage, "the SFTP command is empty") }
        guard let executable = Self.resolve(first) else {
            throw HavenError(.io, "cannot connect to \(location): program \"\(first)\" not found (is the OpenSSH client installed?)")
        }
        signal(SIGPIPE, SIG_IGN)
        do {
            // ssh starts with SIGINT ignored (set by a shell that then becomes ssh; ssh keeps an ignored
            // SIGINT as it is). Ctrl-C in a terminal goes to the whole process group: it must stop the
            // command, which then removes its lock and saves its index over this very session, not kill
            // ssh under it. ssh stays in the terminal's foreground group, so it can still ask for a
            // password when the command allows it.
            child = try Subprocess(["/bin/sh", "-c", "trap '' INT; exec \"$@\"", "sh", executable] + Array(command.dropFirst()))
        } catch let e as HavenError {
            throw HavenError(.io, "cannot start `\(commandLine)` for \(location): \(e.message)")
        }
    }

    private static func resolve(_ program: String) -> String? {
        if program.contains("/") { return FileManager.default.isExecutableFile(atPath: program) ? program : nil }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(program)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    /// Starts the command and performs the SFTP version handshake.
    static func open(command: [String], location: String, handshakeTimeout: Double, requestTimeout: Double) async throws -> SFTPConnection {
        let c = try SFTPConnection(command: command, location: location, requestTimeout: requestTimeout)
        c.startThreads()
        var init0 = PacketWriter(type: SFTP.initType)
        init0.u32(3)
        c.writePacket(init0.finished())
        let reply = c.versionReply
        DispatchQueue.global().asyncAfter(deadline: .now() + handshakeTimeout) { [weak c] in
            guard let c else { return }
            let err = HavenError(.io, "SFTP handshake with \(location) timed out after \(Int(handshakeTimeout)) s (command: \(c.commandLine))\(c.stderrSuffix())",
                                transient: true)
            if reply.complete(.failure(err)) { c.shutdown(err) }
        }
        let response = try await reply.value()
        var r = response.reader
        let version = try c.parse { try r.u32() }
        guard version == 3 else {
            let err = HavenError(.unsupported, "the SFTP server at \(location) speaks protocol version \(version); only version 3 is supported")
            c.shutdown(err)
            throw err
        }
        var ext: [String: String] = [:]
        while r.remaining > 0 {
            guard let name = try? r.text(), let value = try? r.text() else { break }
            ext[name] = value
        }
        c.extensionsBox.withLock { $0 = ext }
        if ext["limits@openssh.com"] != nil { try await c.negotiateLimits() }
        return c
    }

    /// Bytes per READ and per WRITE request. 32 KiB is what every SFTP v3 server must accept; OpenSSH
    /// announces larger limits through its limits@openssh.com extension.
    private let chunkSizes = Mutex((read: SFTP.minimumChunk, write: SFTP.minimumChunk))
    var readChunk: Int { chunkSizes.withLock { $0.read } }
    var writeChunk: Int { chunkSizes.withLock { $0.write } }

    private func negotiateLimits() async throws {
        let r = try await request(SFTP.extended) { $0.string("limits@openssh.com") }
        guard r.type == SFTP.extendedReply else { return }
        let (_, maxRead, maxWrite) = try decode(r) { r in (try r.u64(), try r.u64(), try r.u64()) }
        // Stay inside what our reader accepts (a reply carries the data plus a small header).
        func usable(_ v: UInt64) -> Int {
            v == 0 ? SFTP.minimumChunk : max(SFTP.minimumChunk, min(Int(clamping: v), SFTP.maximumChunk))
        }
        chunkSizes.withLock { $0 = (usable(maxRead), usable(maxWrite)) }
    }

    private func parse<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as SFTPProtocolError {
            let err = HavenError(.io, "protocol error from the SFTP server at \(location): \(e.description)")
            shutdown(err)
            throw err
        }
    }

    private func startThreads() {
        let out = child.stdout
        let errFD = child.stderr
        let t1 = Thread { [self] in readLoop(out) }
        t1.name = "haven-sftp-reader"
        t1.start()
        let t2 = Thread { [self] in
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buf.withUnsafeMutableBytes { read(errFD, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                stderrText.withLock { t in
                    t.append(contentsOf: buf[0..<n])
                    if t.count > 16384 { t.removeFirst(t.count - 16384) }
                }
            }
            stderrDone.signal()
        }
        t2.name = "haven-sftp-stderr"
        t2.start()
    }

    /// ssh's stderr so far, as ": <text>" (empty when there is none).
    func stderrSuffix() -> String {
        let text = stderrText.withLock { String(decoding: $0, as: UTF8.self) }
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("Warning: Permanently added") }
        return lines.isEmpty ? "" : ": " + lines.joined(separator: "; ")
    }

    private func readFully(_ fd: Int32, _ count: Int) -> [UInt8]? {
        var buf = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, count - got) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nil }
            got += n
        }
        return buf
    }

    private func readLoop(_ fd: Int32) {
        var protocolError: String?
        loop: while true {
            guard let header = readFully(fd, 4) else { break }
            let length = Int(UInt32(header[0]) << 24 | UInt32(header[1]) << 16 | UInt32(header[2]) << 8 | UInt32(header[3]))
            guard length >= 1, length <= SFTP.maxPacket else {
                protocolError = "packet length \(length) is outside 1...\(SFTP.maxPacket) (is the remote command an SFTP server?)"
                break
            }
            guard let body = readFully(fd, length) else { break }
            let type = body[0]
            if type == SFTP.version {
                connected.withLock { $0 = true }
                versionReply.complete(.success(Response(type: type, id: 0, body: body, payloadStart: 1)))
                continue
            }
            var r = PacketReader(body, position: 1)
            guard let id = try? r.u32() else {
                protocolError = "reply of type \(type) without a request id"
                break loop
            }
            let reply = state.withLock { $0.pending.removeValue(forKey: id) }
            // A reply for an unknown id (e.g. one that timed out) is dropped.
            reply?.complete(.success(Response(type: type, id: id, body: body, payloadStart: 5)))
        }
        // The stream ended: say why, with ssh's own words.
        let error: HavenError
        if let protocolError {
            terminate()
            _ = stderrDone.wait(timeout: .now() + 2)
            error = HavenError(.io, "protocol error from the SFTP server at \(location): \(protocolError)\(stderrSuffix())")
        } else {
            // End of stream: ssh has exited or is about to. Give it a moment, then make sure.
            let code = child.wait(seconds: 5) ?? child.terminate()
            _ = stderrDone.wait(timeout: .now() + 2)
            let status = code.map { " (exit status \($0))" } ?? ""
            let already = state.withLock { $0.failure }
            if let already {
                error = already
            } else {
                let said = stderrSuffix()
                if connected.withLock({ $0 }) {
                    error = HavenError(.io, "the SFTP connection to \(location) ended: `\(commandLine)` exited\(status)\(said)\(Self.hint(said))",
                                       transient: true)
                } else {
                    error = HavenError(.io, "ssh to \(location) failed\(status)\(said)\(Self.hint(said)) (command: `\(commandLine)`)",
                                       transient: Self.isNetworkFailure(said))
                }
            }
        }
        shutdown(error)
    }

    /// Stops ssh without blocking the caller: SIGTERM now, SIGKILL if it is still there 2 s later.
    private func terminate() {
        guard child.exitCode == nil else { return }
        child.terminateLater(grace: 2)
    }

    /// Whether ssh's message describes a network problem that may go away (unlike a refused key or an
    /// unknown host key, which need the user).
    static func isNetworkFailure(_ stderr: String) -> Bool {
        ["Connection refused", "Connection timed out", "Connection reset", "No route to host", "Network is unreachable",
         "Connection closed by", "Temporary failure in name resolution", "kex_exchange_identification"]
            .contains { stderr.contains($0) }
    }

    /// What to do about the usual ssh failures, judged by ssh's own message.
    static func hint(_ stderr: String) -> String {
        if stderr.contains("Permission denied") {
            return " — check the user name, the key (ssh -i / IdentityFile) and that the server accepts it"
        }
        if stderr.contains("Host key verification failed") || stderr.contains("No ED25519 host key is known")
            || stderr.contains("host key is known") || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
            return " — the server's host key is not in known_hosts: connect once with `ssh` to verify and add it"
        }
        if stderr.contains("Connection refused") || stderr.contains("Connection timed out") || stderr.contains("Could not resolve hostname")
            || stderr.contains("No route to host") {
            return " — check the host name and port, and that the SSH server is running"
        }
        if stderr.contains("subsystem request failed") {
            return " — the server has no SFTP subsystem enabled (Subsystem sftp in sshd_config)"
        }
        return ""
    }

    /// Fails every outstanding request (and later ones) with the session's first failure, `error` unless
    /// one came before.
    private func failRequests(_ error: HavenError) {
        let (pending, err) = state.withLock { s -> ([Reply], HavenError) in
            if s.failure == nil { s.failure = error }
            defer { s.pending = [:] }
            return (Array(s.pending.values), s.failure!)
        }
        versionReply.complete(.failure(err))
        for p in pending { p.complete(.failure(err)) }
    }

    /// Fails every outstanding request with `error` and stops ssh.
    func shutdown(_ error: HavenError) {
        failRequests(error)
        // Stop ssh first: that also unblocks a writer stuck on a full pipe, so the lock below is free soon.
        terminate()
        writeLock.withLock { closed in
            child.closeStdin()
            closed = true
        }
    }

    /// Closes the session: ssh sees end of input and exits.
    func close() {
        shutdown(HavenError(.io, "the SFTP connection to \(location) was closed", transient: true))
    }

    /// Closes the session the way a command ends: end of input first, so ssh closes the channel and exits
    /// by itself, then waits for it to be reaped (SIGTERM after 2 s, SIGKILL after 4 s if it has not).
    /// Returning before ssh is gone would leave it running behind the command, orphaned, with its exit
    /// unobserved.
    func closeAndWait() async {
        failRequests(HavenError(.io, "the SFTP connection to \(location) was closed", transient: true))
        writeLock.withLock { closed in
            child.closeStdin()
            closed = true
        }
        child.signal(SIGTERM, ifRunningAfter: 2)
        child.signal(SIGKILL, ifRunningAfter: 4)
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in child.onExit { c.resume() } }
    }

    private func writePacket(_ bytes: [UInt8]) {
        let fd = child.stdin
        let ok: Bool = writeLock.withLock { closed in
            if closed { return false }
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                done += n
            }
            return true
        }
        // ssh is gone: the reader sees end of stream and fails all requests with ssh's stderr.
        if !ok { terminate() }
    }

    /// Sends a request; `build` appends the fields after the request id. Await the reply's `value()`.
    func send(_ type: UInt8, _ build: (inout PacketWriter) -> Void) throws -> Reply {
        let reply = Reply()
        let id: UInt32 = try state.withLock { s in
            if let f = s.failure { throw f }
            let id = s.nextID
            s.nextID &+= 1
            s.pending[id] = reply
            s.peakPending = max(s.peakPending, s.pending.count)
            if type == SFTP.open { s.opens += 1 }
            return id
        }
        var w = PacketWriter(type: type)
        w.u32(id)
        build(&w)
        writePacket(w.finished())
        let timeout = requestTimeout
        let location = self.location
        // The timer holds the reply weakly: while the request is pending, `pending` keeps it; once
        // answered and consumed it must go, with its data, rather than live until the timer fires (a
        // strong capture kept every read's data for the whole timeout: a restore over SFTP held up to
        // everything it had read in that time).
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [weak self, weak reply] in
            guard let reply else { return }
            let err = HavenError(.io, "SFTP request to \(location) timed out after \(Int(timeout)) s", transient: true)
            if reply.complete(.failure(err)) { self?.shutdown(err) }
        }
        return reply
    }

    /// Sends a request and waits for its reply.
    func request(_ type: UInt8, _ build: (inout PacketWriter) -> Void) async throws -> Response {
        try await send(type, build).value()
    }

    /// Runs `body` on a reply, turning malformed packets into one connection error.
    func decode<T>(_ response: Response, _ body: (inout PacketReader) throws -> T) throws -> T {
        var r = response.reader
        return try parse { try body(&r) }
    }

    deinit {
        child.closeStdin()
        terminate()
    }
}
