import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A loopback TCP proxy that injects network faults between a client and a server, for testing retries.
///
/// Each accepted connection is numbered from 1; `plan` picks what happens to it. Connections that get
/// `.none` are forwarded untouched in both directions. Binds 127.0.0.1 only. Call `stop()` when done (it
/// closes the listening socket and every open connection, and its threads then end).
public final class FaultProxy: @unchecked Sendable {
    /// What happens to one connection.
    public enum Fault: Sendable, Equatable, CustomStringConvertible {
        /// Forward both ways.
        case none
        /// Forward `afterBytes` bytes of the request, then reset both sides.
        case dropRequest(afterBytes: Int)
        /// Forward the request, then reset both sides after `afterBytes` bytes of the response.
        case dropResponse(afterBytes: Int)
        /// Read the request head and answer `HTTP/1.1 <status>` with an S3 error document, then close.
        case httpError(status: Int, code: String)
        /// Read the request, stay silent for `milliseconds`, then reset.
        case stall(milliseconds: Int)
        /// Reset the connection right after accepting it.
        case reset
        /// Read the request head and answer with these bytes (a whole HTTP response), then close.
        case answer(String)

        public static let http500 = Fault.httpError(status: 500, code: "InternalError")
        public static let slowDown = Fault.httpError(status: 503, code: "SlowDown")

        public var description: String {
            switch self {
            case .none: return "none"
            case .dropRequest(let n): return "drop request after \(n) bytes"
            case .dropResponse(let n): return "drop response after \(n) bytes"
            case .httpError(let s, let c): return "HTTP \(s) \(c)"
            case .stall(let ms): return "stall \(ms) ms"
            case .reset: return "reset"
            case .answer(let text): return "answer \(text.prefix(while: { $0 != "\r" }))"
            }
        }
    }

    /// The port the proxy listens on (127.0.0.1).
    public let port: Int
    public let upstreamPort: Int
    private let listener: Int32
    private let plan: @Sendable (Int) -> Fault
    private let lock = NSLock()
    private var accepted = 0
    private var injected: [Fault] = []
    private var open = Set<Int32>()
    private var stopped = false

    /// Starts listening on a free loopback port and forwarding to 127.0.0.1:`upstreamPort`.
    public init(upstreamPort: Int, plan: @escaping @Sendable (_ connection: Int) -> Fault) throws {
        self.upstreamPort = upstreamPort
        self.plan = plan
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FixtureError.failed("FaultProxy: socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            close(fd)
            throw FixtureError.failed("FaultProxy: bind/listen: \(String(cString: strerror(errno)))")
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    deinit { stop() }

    /// Connections accepted so far.
    public var connections: Int { lock.withLock { accepted } }
    /// The faults injected so far, in order.
    public var faults: [Fault] { lock.withLock { injected } }

    /// Stops accepting and closes every connection.
    public func stop() {
        let fds: [Int32]? = lock.withLock {
            if stopped { return nil }
            stopped = true
            return Array(open)
        }
        // Only the first call closes anything: a second close could hit a descriptor number reused since.
        guard let fds else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in fds { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return addr
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            let number: Int? = lock.withLock {
                if stopped { return nil }
                accepted += 1
                open.insert(client)
                return accepted
            }
            guard let number else {
                close(client)
                return
            }
            let fault = plan(number)
            if fault != .none { lock.withLock { injected.append(fault) } }
            Thread { [self] in handle(client, fault) }.start()
        }
    }

    private func forget(_ fd: Int32) {
        lock.withLock { _ = open.remove(fd) }
    }

    /// Closes with a TCP reset instead of an orderly FIN.
    private func reset(_ fd: Int32) {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        forget(fd)
        close(fd)
    }

    private func finish(_ fd: Int32) {
        forget(fd)
        close(fd)
    }

    /// Reads the request head, sends `response`, and closes once the client has.
    private func answer(_ client: Int32, _ response: String) {
        _ = readHead(client)
        _ = writeAll(client, Array(response.utf8)[...])
        shutdown(client, Int32(SHUT_WR))
        drain(client, seconds: 1)
        finish(client)
    }

    private func handle(_ client: Int32, _ fault: Fault) {
        switch fault {
        case .reset:
            reset(client)
            return
        case .httpError(let status, let code):
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>\(code)</Code><Message>injected by FaultProxy</Message></Error>"
            let reason = status == 503 ? "Service Unavailable" : "Internal Server Error"
            answer(client, "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/xml\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
            return
        case .answer(let response):
            answer(client, response)
            return
        case .stall(let ms):
            _ = readHead(client)
            usleep(useconds_t(ms * 1000))
            reset(client)
            return
        default:
            break
        }
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = Self.loopback(port: upstreamPort)
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard upstream >= 0, connected == 0 else {
            if upstream >= 0 { close(upstream) }
            reset(client)
            return
        }
        lock.withLock { _ = open.insert(upstream) }
        var requestLimit: Int?
        var responseLimit: Int?
        if case .dropRequest(let n) = fault { requestLimit = n }
        if case .dropResponse(let n) = fault { responseLimit = n }
        let done = DispatchGroup()
        let cut = Cut()
        for (from, to, limit) in [(client, upstream, requestLimit), (upstream, client, responseLimit)] {
            done.enter()
            Thread { [self] in
                pump(from, to, limit: limit, cut: cut)
                done.leave()
            }.start()
        }
        done.wait()
        if cut.happened {
            reset(client)
            reset(upstream)
        } else {
            finish(client)
            finish(upstream)
        }
    }

    /// Set when a pump cut the connection, so the other pump stops too.
    private final class Cut: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        var happened: Bool { lock.withLock { value } }
        func set() { lock.withLock { value = true } }
    }

    /// Copies `from` to `to` until end of stream; with a limit, cuts both sockets after that many bytes.
    private func pump(_ from: Int32, _ to: Int32, limit: Int?, cut: Cut) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var total = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(from, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 || cut.happened { break }
            var count = n
            if let limit, total + n >= limit { count = limit - total }
            if count > 0, !writeAll(to, buffer[0..<count]) { break }
            total += count
            if let limit, total >= limit {
                cut.set()
                shutdown(from, Int32(SHUT_RDWR))
                shutdown(to, Int32(SHUT_RDWR))
                return
            }
        }
        shutdown(to, Int32(SHUT_WR))
    }

    private func writeAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>) -> Bool {
        var rest = bytes
        while !rest.isEmpty {
            let n = rest.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            rest = rest.dropFirst(n)
        }
        return true
    }

    /// Reads until the end of an HTTP request head (or the stream ends).
    private func readHead(_ fd: Int32) -> [UInt8] {
        var head: [UInt8] = []
        var byte = [UInt8](repeating: 0, count: 4096)
        while head.count < 1 << 20 {
            let n = byte.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            head.append(contentsOf: byte[0..<n])
            if head.count >= 4, head.suffix(from: max(0, head.count - n - 3)).windows4Contains([13, 10, 13, 10]) { break }
        }
        return head
    }

    /// Reads and discards input for up to `seconds`, so the peer can finish sending before the close.
    private func drain(_ fd: Int32, seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        let deadline = Date().addingTimeInterval(Double(seconds))
        while Date() < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
        }
    }
}

private extension ArraySlice where Element == UInt8 {
    func windows4Contains(_ pattern: [UInt8]) -> Bool {
        guard count >= pattern.count else { return false }
        var i = startIndex
        while i + pattern.count <= endIndex {
            if self[i..<(i + pattern.count)].elementsEqual(pattern) { return true }
            i += 1
        }
        return false
    }
}
