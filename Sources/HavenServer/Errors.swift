import Foundation
import HavenDaemon
import Hummingbird
import Logging
import Synchronization

/// An error with the HTTP status the API answers with; its message is shown to the client.
struct APIError: Error, Sendable {
    var status: HTTPResponse.Status
    var message: String
    var headers: HTTPFields = [:]

    static func badRequest(_ message: String) -> APIError { APIError(status: .badRequest, message: message) }
    static func notFound(_ message: String) -> APIError { APIError(status: .notFound, message: message) }
}

/// The body of every error response: `{"error": "message"}`.
public struct APIErrorBody: Codable, Sendable, Equatable {
    public var error: String
    public init(error: String) { self.error = error }
}

/// The method and path pattern (`/api/v1/jobs/{id}`) of every route, filled in once the routes are
/// registered, so a request for a known path with the wrong method can be told from an unknown path.
final class RouteTable: Sendable {
    private let routes = Mutex<[(method: String, segments: [Substring])]>([])

    func load(_ routes: [(method: String, path: String)]) {
        let parsed = routes.map { (method: $0.method, segments: Self.segments($0.path)) }
        self.routes.withLock { $0 = parsed }
    }

    /// The methods of the routes for `path`, sorted; empty for an unknown path. As in the router, a
    /// literal segment wins over a parameter (`/jobs/clear` is not `/jobs/:id`).
    func methods(for path: String) -> [String] {
        let given = Self.segments(path)
        var candidates = routes.withLock { $0 }.filter { $0.segments.count == given.count }
        for (i, segment) in given.enumerated() {
            let literal = candidates.filter { $0.segments[i] == segment }
            candidates = literal.isEmpty ? candidates.filter { Self.isParameter($0.segments[i]) } : literal
        }
        return Set(candidates.map(\.method)).sorted()
    }

    /// `{id}` as Hummingbird writes a parameter (`:id` as routes are declared).
    private static func isParameter(_ segment: Substring) -> Bool {
        segment.hasPrefix(":") || (segment.hasPrefix("{") && segment.hasSuffix("}"))
    }

    private static func segments(_ path: String) -> [Substring] {
        path.split(separator: "/", omittingEmptySubsequences: true)
    }
}

/// Turns every error into a JSON `{"error": …}` response: `DaemonError` → 404/400/409, a known path with
/// another method → 405 with `Allow`, Hummingbird's own errors keep their status, anything else is a 500
/// with a generic message (the detail is only logged).
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: RouteTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return JSONResponse.error(error.status, error.message, headers: error.headers)
        } catch let error as DaemonError {
            switch error {
            case .notFound(let m): return JSONResponse.error(.notFound, m)
            case .badRequest(let m): return JSONResponse.error(.badRequest, m)
            case .conflict(let m): return JSONResponse.error(.conflict, m)
            }
        } catch let error as HTTPError {
            if error.status == .notFound {
                let allowed = routes.methods(for: request.uri.path)
                // (A method the table allows but the router did not find: the router's own 404 stands.)
                guard allowed.isEmpty || allowed.contains(request.method.rawValue) else {
                    return JSONResponse.error(.methodNotAllowed,
                                              "\(request.method) is not allowed on \(request.uri.path); use \(allowed.joined(separator: " or "))",
                                              headers: [.allow: allowed.joined(separator: ", ")])
                }
                return JSONResponse.error(.notFound, "no such endpoint: \(request.method) \(request.uri.path)")
            }
            let message = error.body ?? error.status.reasonPhrase
            return JSONResponse.error(error.status, message, headers: error.headers)
        } catch {
            context.logger.error("internal error in \(request.method) \(request.uri.path): \(String(reflecting: error))")
            return JSONResponse.error(.internalServerError, "internal error; see the daemon's log")
        }
    }
}

/// One `info` line per request: method, path, status, duration and the authenticated user.
struct AccessLogMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let response = try await next(request, context)
        let elapsed = ContinuousClock.now - start
        let ms = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        context.logger.info(
            "\(request.method) \(request.uri.path) \(response.status.code) \(String(format: "%.1f", ms))ms user=\(context.user ?? "-")",
            metadata: ["http.status": "\(response.status.code)"])
        return response
    }
}

enum JSONResponse {
    static let contentType = "application/json; charset=utf-8"

    /// `value` encoded with `JSONEncoder.haven`.
    static func encode<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try JSONEncoder.haven.encode(value)
        return Response(status: status, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) -> Response {
        var headers = headers
        headers[.contentType] = contentType
        let data = (try? JSONEncoder.haven.encode(APIErrorBody(error: message))) ?? Data(#"{"error":"internal error"}"#.utf8)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
