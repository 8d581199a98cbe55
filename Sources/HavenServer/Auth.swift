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

    init(users: [APIAccount], tokens: [String]) {
        self.users = users
        self.tokens = tokens.map { Array($0.utf8) }
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
            return user.verify(password) ? user.name : nil
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
