import HavenDaemon
import Hummingbird
import Logging

/// The daemon's HTTP API (Hummingbird 2): JSON routes under `/api/v1`, `/healthz` and `/metrics`.
///
/// ```swift
/// let server = try APIServer(control: daemon, configuration: APIConfiguration(listen: "127.0.0.1:8470"))
/// let app = server.makeApplication()   // a Service: add it to the daemon's ServiceGroup
/// ```
public struct APIServer: Sendable {
    public let control: any DaemonControl
    public let configuration: APIConfiguration

    /// `GET /metrics`'s content type (Prometheus text exposition).
    public static let metricsContentType = "text/plain; version=0.0.4"

    /// Throws `APIServerError` when the configuration must not be served, e.g. a non-loopback address
    /// without users or tokens.
    public init(control: any DaemonControl, configuration: APIConfiguration) throws {
        try configuration.validate()
        self.control = control
        self.configuration = configuration
    }

    /// The application to run (it is a `Service`). `onListening` is called with the bound port once the
    /// server accepts connections, which tells the port picked for port 0.
    public func makeApplication(
        onListening: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let logger = configuration.logger
        return Application(
            router: makeRouter(),
            configuration: ApplicationConfiguration(address: .hostname(configuration.host, port: configuration.port)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                logger.info("Haven API listening on \(configuration.host):\(port)")
                await onListening(port)
            },
            logger: logger
        )
    }

    /// The router with every route and middleware.
    public func makeRouter() -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        let table = RouteTable()
        router.add(middleware: AccessLogMiddleware())
        router.add(middleware: ErrorMiddleware(routes: table))
        router.get("/healthz") { _, _ in try JSONResponse.encode(HealthResponse()) }
        router.add(middleware: AuthMiddleware(users: configuration.users, tokens: configuration.tokens))
        APIRoutes(control: control).register(on: router)
        table.load(router.routes.map { (method: $0.method.rawValue, path: $0.path.description) })
        return router
    }

    /// Every route as `METHOD /path/{param}`, in the spelling of `docs/api.yaml`.
    public var routes: [String] {
        makeRouter().routes.map { route in
            let path = route.path.description.split(separator: "/", omittingEmptySubsequences: false).map { segment in
                segment.hasPrefix(":") ? "{\(segment.dropFirst())}" : String(segment)
            }.joined(separator: "/")
            return "\(route.method) \(path.hasPrefix("/") ? path : "/" + path)"
        }.sorted()
    }
}

/// Builds the API application; see `APIServer`. Throws `APIServerError` for a configuration that must not be served.
public func makeApplication(
    control: any DaemonControl, configuration: APIConfiguration,
    onListening: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
) throws -> some ApplicationProtocol {
    try APIServer(control: control, configuration: configuration).makeApplication(onListening: onListening)
}
