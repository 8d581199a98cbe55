import AsyncHTTPClient
import Foundation
import HavenDaemon
import HavenServer
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import Testing

/// Collects log lines so tests can see what the server logged (and nothing reaches the terminal).
final class LogCapture: Sendable {
    let lines = Mutex<[String]>([])

    var logger: Logger {
        var logger = Logger(label: "haven.api.test") { _ in Handler(capture: self) }
        logger.logLevel = .info
        return logger
    }

    struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            capture.lines.withLock { $0.append("\(event.level) \(event.message)") }
        }
    }
}

struct Reply: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: Data

    var text: String { String(decoding: body, as: UTF8.self) }
    /// The body as a JSON object (empty when it is not one).
    var object: [String: Any] { ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:] }
    var error: String? { object["error"] as? String }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try JSONDecoder.haven.decode(type, from: body) }
}

/// A real API server on 127.0.0.1 and an ephemeral port, driven through AsyncHTTPClient.
struct TestServer: Sendable {
    let port: Int
    let control: FakeDaemon
    let client: HTTPClient

    static func basic(_ user: String, _ password: String) -> String {
        "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    func call(_ method: HTTPMethod, _ path: String, authorization: String? = nil) async throws -> Reply {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        if let authorization { request.headers.add(name: "Authorization", value: authorization) }
        let response = try await client.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        return Reply(status: Int(response.status.code), headers: response.headers, body: Data(body.readableBytesView))
    }

    /// Calls `path` and expects the answer's status to be `status`.
    func expectStatus(_ status: Int, _ method: HTTPMethod, _ path: String, authorization: String? = nil,
                      sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let reply = try await call(method, path, authorization: authorization)
        #expect(reply.status == status, "\(method) \(path): \(reply.text)", sourceLocation: sourceLocation)
    }

    func get(_ path: String, authorization: String? = nil) async throws -> Reply { try await call(.GET, path, authorization: authorization) }
    func post(_ path: String, authorization: String? = nil) async throws -> Reply { try await call(.POST, path, authorization: authorization) }
}

struct ServerDidNotStart: Error {}

/// Runs the API on 127.0.0.1:0 for the duration of `body`, then shuts it down.
func withServer(
    users: [APIAccount] = [], tokens: [String] = [], control: FakeDaemon = FakeDaemon(), logger: Logger? = nil,
    _ body: (TestServer) async throws -> Void
) async throws {
    let configuration = APIConfiguration(host: "127.0.0.1", port: 0, users: users, tokens: tokens,
                                         logger: logger ?? LogCapture().logger)
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    let app = try APIServer(control: control, configuration: configuration).makeApplication { port in continuation.yield(port) }
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            defer { continuation.finish() }
            try await app.run()
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw ServerDidNotStart() }
        // The test's own client: shutting it down closes its connections, so the server stops at once.
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try await body(TestServer(port: port, control: control, client: client))
        } catch {
            try? await client.shutdown()
            group.cancelAll()
            throw error
        }
        try await client.shutdown()
        group.cancelAll()
    }
}

/// Users for the auth tests: alice/secret and bob/hunter2.
let testUsers = [
    APIAccount(name: "alice") { $0 == "secret" },
    APIAccount(name: "bob") { $0 == "hunter2" },
]
