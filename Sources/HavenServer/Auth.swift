import Crypto
import Foundation
import Hummingbird
import Synchronization

/// The request context of the API: Hummingbird's core storage plus the caller's identity.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Shared by every copy of this request's context, so the access log (outside) sees what auth (inside) set.
    let identity = Identity()

    /// The Basic user name, `token` for a bearer token, nil when anonymous.
    public var user: String? { identity.user.withLock { $0 } }

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }

    final class Identity: Sendable {
        let user = Mutex<String?>(nil)
    }
}

/// HTTP Basic against the configured users or `Authorization: Bearer TOKEN`. Without configured credentials
/// (only allowed on loopback) every request passes. A failure is a 401 whose body says nothing about why.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext

    let users: [APIAccount]
    let tokens: [[UInt8]]
    let verified: VerifiedCredentials

    init(users: [APIAccount], tokens: [String], verified: VerifiedCredentials = VerifiedCredentials()) {
        self.users = users
        self.tokens = tokens.map { Array($0.utf8) }
        self.verified = verified
    }

    var anonymous: Bool { users.isEmpty && tokens.isEmpty }

    static let challenge = #"Basic realm="haven""#

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if anonymous { return try await next(request, context) }
        guard let user = authenticate(request.headers[.authorization]) else {
            throw APIError(status: .unauthorized, message: "authentication required",
                           headers: [.wwwAuthenticate: Self.challenge])
        }
        context.identity.user.withLock { $0 = user }
        return try await next(request, context)
    }

    /// The authenticated identity for an `Authorization` header value, or nil.
    func authenticate(_ header: String?) -> String? {
        guard let header else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2 else { return nil }
        let scheme = parts[0].lowercased()
        let credentials = parts[1].trimmingCharacters(in: .whitespaces)
        switch scheme {
        case "bearer":
            let given = Array(credentials.utf8)
            var matched = false
            // Every token is compared, so the time taken does not say which one (or whether one) matched.
            for token in tokens { matched = Self.constantTimeEqual(given, token) || matched }
            return matched ? "token" : nil
        case "basic":
            guard let data = Data(base64Encoded: credentials), let text = String(data: data, encoding: .utf8),
                  let colon = text.firstIndex(of: ":") else { return nil }
            let name = Array(text[..<colon].utf8)
            let password = String(text[text.index(after: colon)...])
            var found: APIAccount?
            for user in users where Self.constantTimeEqual(name, Array(user.name.utf8)) { found = user }
            guard let user = found else {
                // Spend about the time a real check takes, so an unknown user looks like a wrong password.
                _ = users.first?.verify(password)
                return nil
            }
            let key = verified.key(user.name, password)
            if verified.contains(key) { return user.name }
            guard user.verify(password) else { return nil }
            verified.insert(key)
            return user.name
        default:
            return nil
        }
    }

    /// Compares in time that depends only on the lengths, not on where the bytes differ.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var diff = UInt64(a.count ^ b.count)
        let n = max(a.count, b.count)
        for i in 0..<n {
            let x = i < a.count ? a[i] : 0
            let y = i < b.count ? b[i] : 0
            diff |= UInt64(x ^ y)
        }
        return diff == 0
    }
}

/// User names and passwords that passed `APIAccount.verify` lately, so that a client polling the API (a
/// status page every few seconds) does not cost a slow password hash (PBKDF2, ~0.1 s of CPU; seconds on a
/// Raspberry Pi) per request. Kept only in memory and only as HMAC-SHA256 under a key drawn when the
/// server starts. A failure is never remembered, so every guess still pays the full hash. An entry lasts
/// `lifetime` from its verification, not from its last use; at most `capacity` are kept.
final class VerifiedCredentials: Sendable {
    let lifetime: Duration
    let capacity: Int
    private let secret: [UInt8] = {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }()
    private let expiries = Mutex<[[UInt8]: ContinuousClock.Instant]>([:])
    private let now: @Sendable () -> ContinuousClock.Instant

    init(lifetime: Duration = .seconds(300), capacity: Int = 256,
         now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.lifetime = lifetime
        self.capacity = max(1, capacity)
        self.now = now
    }

    /// The entry for a name and password (the name's length first, so no two pairs run together).
    func key(_ name: String, _ password: String) -> [UInt8] {
        var mac = HMAC<SHA256>(key: SymmetricKey(data: secret))
        mac.update(data: withUnsafeBytes(of: UInt64(name.utf8.count).littleEndian) { Array($0) })
        mac.update(data: Array(name.utf8))
        mac.update(data: Array(password.utf8))
        return Array(mac.finalize())
    }

    func contains(_ key: [UInt8]) -> Bool {
        let now = now()
        return expiries.withLock { entries in
            guard let expiry = entries[key] else { return false }
            if expiry > now { return true }
            entries[key] = nil
            return false
        }
    }

    func insert(_ key: [UInt8]) {
        let now = now()
        expiries.withLock { entries in
            if entries.count >= capacity {
                entries = entries.filter { $0.value > now }
                while entries.count >= capacity, let oldest = entries.min(by: { $0.value < $1.value }) {
                    entries[oldest.key] = nil
                }
            }
            entries[key] = now + lifetime
        }
    }
}
