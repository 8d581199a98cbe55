import Foundation
import HavenDaemon
@testable import HavenServer
import Synchronization
import Testing

@Suite("API authentication", .timeLimit(.minutes(3)))
struct AuthTests {
    static let unauthorizedBody = #"{"error":"authentication required"}"#

    @Test(arguments: [
        ("wrong password", TestServer.basic("alice", "nope")),
        ("unknown user", TestServer.basic("mallory", "secret")),
        ("other user's password", TestServer.basic("alice", "hunter2")),
        ("bad token", "Bearer not-the-token"),
        ("token prefix", "Bearer tok"),
        ("garbage basic", "Basic %%%"),
        ("no colon", "Basic " + Data("alice".utf8).base64EncodedString()),
        ("unknown scheme", "Digest username=alice"),
        ("missing header", nil),
    ] as [(String, String?)])
    func wrongCredentialsAre401WithoutDetail(_ name: String, authorization: String?) async throws {
        try await withServer(users: testUsers, tokens: ["tok-123"]) { server in
            for path in ["/api/v1/status", "/metrics", "/api/v1/does-not-exist"] {
                let reply = try await server.get(path, authorization: authorization)
                #expect(reply.status == 401, "\(name) \(path)")
                #expect(reply.text == Self.unauthorizedBody, "\(name) \(path)")
                #expect(reply.headers.first(name: "www-authenticate") == #"Basic realm="haven""#)
            }
        }
    }

    @Test func basicAndBearerSucceed() async throws {
        try await withServer(users: testUsers, tokens: ["tok-123", "tok-456"]) { server in
            try await server.expectStatus(200, .GET, "/api/v1/status", authorization: TestServer.basic("alice", "secret"))
            try await server.expectStatus(200, .GET, "/api/v1/status", authorization: TestServer.basic("bob", "hunter2"))
            try await server.expectStatus(200, .GET, "/api/v1/status", authorization: "Bearer tok-456")
            try await server.expectStatus(200, .GET, "/api/v1/status", authorization: "bearer tok-123")
        }
    }

    @Test("a password that passed is not hashed again for a while; a wrong one is, every time")
    func verifiedPasswordsAreRemembered() async throws {
        let checks = Mutex(0)
        let dora = APIAccount(name: "dora") { password in
            checks.withLock { $0 += 1 }
            return password == "s3cret"
        }
        try await withServer(users: [dora, APIAccount(name: "erin") { $0 == "s3cret" }]) { server in
            for _ in 0..<3 {
                try await server.expectStatus(200, .GET, "/api/v1/status", authorization: TestServer.basic("dora", "s3cret"))
            }
            #expect(checks.withLock { $0 } == 1)
            for _ in 0..<2 {
                try await server.expectStatus(401, .GET, "/api/v1/status", authorization: TestServer.basic("dora", "s3cret "))
            }
            #expect(checks.withLock { $0 } == 3)
            // Another user with the same password is not let in on dora's entry.
            try await server.expectStatus(401, .GET, "/api/v1/status", authorization: TestServer.basic("erin", "wrong"))
            try await server.expectStatus(200, .GET, "/api/v1/status", authorization: TestServer.basic("dora", "s3cret"))
            #expect(checks.withLock { $0 } == 3)
        }
    }

    @Test("remembered credentials expire after their lifetime, and the oldest go when full")
    func rememberedCredentialsExpire() {
        let clock = Mutex(ContinuousClock.now)
        let remembered = VerifiedCredentials(lifetime: .seconds(300), capacity: 2, now: { clock.withLock { $0 } })
        let a = remembered.key("dora", "one"), b = remembered.key("dora", "two"), c = remembered.key("erin", "one")
        #expect(Set([a, b, c]).count == 3)
        #expect(remembered.key("ab", "c") != remembered.key("a", "bc"))
        remembered.insert(a)  // t = 0
        clock.withLock { $0 += .seconds(100) }
        remembered.insert(b)  // t = 100
        #expect(remembered.contains(a) && remembered.contains(b) && !remembered.contains(c))
        clock.withLock { $0 += .seconds(50) }
        remembered.insert(c)  // t = 150, full: a, the oldest, goes
        #expect(!remembered.contains(a) && remembered.contains(b) && remembered.contains(c))
        clock.withLock { $0 += .seconds(249) }  // t = 399: b is 299 s old; looking it up does not renew it
        #expect(remembered.contains(b) && remembered.contains(c))
        clock.withLock { $0 += .seconds(2) }  // t = 401
        #expect(!remembered.contains(b) && remembered.contains(c))
        clock.withLock { $0 += .seconds(50) }  // t = 451
        #expect(!remembered.contains(c))
    }

    @Test func passwordsMayContainColons() async throws {
        try await withServer(users: [APIAccount(name: "carol") { $0 == "a:b:c" }]) { server in
            try await server.expectStatus(200, .GET, "/api/v1/jobs", authorization: TestServer.basic("carol", "a:b:c"))
        }
    }

    @Test func healthzNeedsNoCredentials() async throws {
        try await withServer(users: testUsers) { server in
            let reply = try await server.get("/healthz")
            #expect(reply.status == 200)
            #expect(reply.text == #"{"status":"ok"}"#)
        }
    }

    @Test func authenticatedUserAppearsInTheAccessLog() async throws {
        let capture = LogCapture()
        try await withServer(users: testUsers, logger: capture.logger) { server in
            _ = try await server.get("/api/v1/backups", authorization: TestServer.basic("bob", "hunter2"))
        }
        #expect(capture.lines.withLock { $0.contains { $0.contains("GET /api/v1/backups 200") && $0.contains("user=bob") } })
    }

    @Test func anonymousOnLoopbackWithoutCredentials() async throws {
        try await withServer { server in
            try await server.expectStatus(200, .GET, "/api/v1/status")
            try await server.expectStatus(200, .GET, "/api/v1/status", authorization: "Bearer anything")
        }
    }

    @Test(arguments: ["0.0.0.0", "192.0.2.10", "::", "example.org"])
    func refusesToStartOffLoopbackWithoutCredentials(host: String) throws {
        let configuration = APIConfiguration(host: host, port: 8470)
        #expect(throws: APIServerError.self) { try APIServer(control: FakeDaemon(), configuration: configuration) }
        do {
            _ = try APIServer(control: FakeDaemon(), configuration: configuration)
        } catch let error as APIServerError {
            let listen = host.contains(":") ? "[\(host)]:8470" : "\(host):8470"
            #expect(error.message == "api.listen is \(listen) but no api.users or api.tokens are configured; add credentials or listen on 127.0.0.1")
        }
    }

    @Test func startsOffLoopbackWithCredentials() throws {
        _ = try APIServer(control: FakeDaemon(), configuration: APIConfiguration(host: "0.0.0.0", port: 8470, tokens: ["t"]))
        _ = try APIServer(control: FakeDaemon(), configuration: APIConfiguration(host: "0.0.0.0", port: 8470, users: testUsers))
    }

    @Test(arguments: ["127.0.0.1", "127.1.2.3", "localhost", "::1"])
    func loopbackHosts(host: String) {
        #expect(APIConfiguration.isLoopback(host))
    }

    @Test(arguments: [
        ("127.0.0.1:8470", "127.0.0.1", 8470),
        ("0.0.0.0:9000", "0.0.0.0", 9000),
        ("[::1]:8471", "::1", 8471),
        (":8472", "0.0.0.0", 8472),
        ("127.0.0.1:0", "127.0.0.1", 0),
    ])
    func parsesListen(value: String, host: String, port: Int) throws {
        let parsed = try APIConfiguration.parseListen(value)
        #expect(parsed.host == host && parsed.port == port)
    }

    @Test(arguments: ["127.0.0.1:http", "127.0.0.1:70000", "[::1", "", "localhost"])
    func rejectsBadListen(value: String) {
        #expect(throws: APIServerError.self) { try APIConfiguration.parseListen(value) }
    }

    @Test func fromTheDaemonConfiguration() throws {
        let hash = HavenDaemon.APIUser.hash(password: "pw", salt: Array(repeating: 7, count: 16), iterations: 10)
        let api = APIConfig(listen: ListenAddress(host: "0.0.0.0", port: 8470),
                            users: [HavenDaemon.APIUser(name: "ann", passwordHash: hash)], tokens: ["t1"])
        let configuration = APIConfiguration(api, extraTokens: ["t2"])
        #expect(configuration.listen == "0.0.0.0:8470")
        #expect(configuration.tokens == ["t1", "t2"])
        #expect(configuration.users.map(\.name) == ["ann"])
        #expect(configuration.users[0].verify("pw"))
        #expect(!configuration.users[0].verify("wrong"))
        try configuration.validate()
    }

    @Test func constantTimeComparisonIsUsedForTokens() async throws {
        // Tokens of different lengths and a shared prefix still need an exact match.
        try await withServer(tokens: ["abc", "abcdef"]) { server in
            try await server.expectStatus(401, .GET, "/api/v1/jobs", authorization: "Bearer abcd")
            try await server.expectStatus(200, .GET, "/api/v1/jobs", authorization: "Bearer abcdef")
            try await server.expectStatus(200, .GET, "/api/v1/jobs", authorization: "Bearer abc")
        }
    }
}
