import Foundation
import HavenServer
import Testing
import Yams

/// `docs/api.yaml` against the server: same routes, valid OpenAPI, and the JSON the server sends fits the schemas.
@Suite("OpenAPI document", .timeLimit(.minutes(3)))
struct OpenAPITests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let documentPath = repositoryRoot.appendingPathComponent("docs/api.yaml").path

    static func document() throws -> [String: Any] {
        let text = try String(contentsOfFile: documentPath, encoding: .utf8)
        return try #require(try Yams.load(yaml: text) as? [String: Any])
    }

    static let methods: Set<String> = ["get", "put", "post", "delete", "patch", "head", "options", "trace"]

    @Test func everyRouteIsDocumentedAndViceVersa() throws {
        let paths = try #require(try Self.document()["paths"] as? [String: Any])
        var documented: [String] = []
        for (path, item) in paths {
            for method in (item as? [String: Any] ?? [:]).keys where Self.methods.contains(method) {
                documented.append("\(method.uppercased()) \(path)")
            }
        }
        let served = try APIServer(control: FakeDaemon(), configuration: APIConfiguration()).routes
        #expect(served.count == 13)
        #expect(Set(served).subtracting(documented).sorted() == [], "served but not in docs/api.yaml")
        #expect(Set(documented).subtracting(served).sorted() == [], "in docs/api.yaml but not served")
    }

    static var validator: String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/openapi-spec-validator" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static var inCI: Bool { !(ProcessInfo.processInfo.environment["CI"] ?? "").isEmpty }

    @Test(.enabled(if: validator != nil || inCI,
                   "openapi-spec-validator is not installed (pip install openapi-spec-validator); this check is skipped outside CI"))
    func documentValidates() async throws {
        let tool = try #require(Self.validator, "openapi-spec-validator is not on PATH; scripts/install-deps.sh --test installs it")
        let result = try await runProcess(tool, [Self.documentPath])
        #expect(result.code == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("OK"), "\(result.stdout)\(result.stderr)")
    }

    /// Each request, the status it answers with and the schema its body must match.
    static let samples: [(method: String, path: String, status: Int, schema: String)] = [
        ("GET", "/healthz", 200, "Health"),
        ("GET", "/api/v1/status", 200, "StatusReport"),
        ("GET", "/api/v1/backups", 200, "BackupList"),
        ("POST", "/api/v1/backups/documents/run?priority=high", 202, "EnqueueResult"),
        ("POST", "/api/v1/backups/photos/run", 200, "EnqueueResult"),
        ("GET", "/api/v1/jobs", 200, "JobList"),
        ("GET", "/api/v1/jobs/1", 200, "Job"),
        ("GET", "/api/v1/jobs/2", 200, "Job"),
        ("GET", "/api/v1/jobs/2/log", 200, "JobLog"),
        ("POST", "/api/v1/jobs/2/cancel", 200, "Job"),
        ("POST", "/api/v1/jobs/2/cancel", 409, "Error"),
        ("POST", "/api/v1/jobs/clear?state=failed", 200, "ClearResult"),
        ("GET", "/api/v1/repositories", 200, "RepositoryList"),
        ("GET", "/api/v1/repositories/nas/snapshots", 200, "SnapshotList"),
        ("POST", "/api/v1/repositories/nas/check?read_data_subset=1/5", 202, "EnqueueResult"),
        ("GET", "/api/v1/jobs/x", 400, "Error"),
        ("GET", "/api/v1/jobs/77", 404, "Error"),
    ]

    @Test func responsesMatchTheSchemas() async throws {
        let document = try Self.document()
        let schemas = try #require((document["components"] as? [String: Any])?["schemas"] as? [String: Any])
        try await withServer { server in
            for sample in Self.samples {
                let reply = try await server.call(.init(rawValue: sample.method), sample.path)
                #expect(reply.status == sample.status, "\(sample.method) \(sample.path)")
                let json = try JSONSerialization.jsonObject(with: reply.body, options: [.fragmentsAllowed])
                var problems: [String] = []
                SchemaCheck(schemas: schemas).check(json, against: ["$ref": "#/components/schemas/\(sample.schema)"], at: "$",
                                                    problems: &problems)
                #expect(problems == [], "\(sample.method) \(sample.path)")
                #expect(Self.documents(sample.method, sample.path, status: sample.status, document: document),
                        "\(sample.status) of \(sample.method) \(sample.path) is not documented")
            }
        }
    }

    /// Whether the document lists `status` as a response of the route that `path` hits.
    static func documents(_ method: String, _ path: String, status: Int, document: [String: Any]) -> Bool {
        let paths = document["paths"] as? [String: Any] ?? [:]
        let concrete = path.split(separator: "?")[0].split(separator: "/")
        for (template, item) in paths {
            let parts = template.split(separator: "/")
            guard parts.count == concrete.count,
                  zip(parts, concrete).allSatisfy({ $0.hasPrefix("{") || $0 == $1 }),
                  let operation = (item as? [String: Any])?[method.lowercased()] as? [String: Any],
                  let responses = operation["responses"] as? [String: Any] else { continue }
            return responses["\(status)"] != nil
        }
        return false
    }
}

/// A small JSON Schema check for the OpenAPI subset the document uses: $ref, type, required, properties,
/// additionalProperties: false, items, enum, format date-time.
struct SchemaCheck {
    let schemas: [String: Any]

    func check(_ value: Any, against schema: [String: Any], at path: String, problems: inout [String]) {
        if let ref = schema["$ref"] as? String {
            let name = String(ref.split(separator: "/").last ?? "")
            guard let target = schemas[name] as? [String: Any] else { problems.append("\(path): unknown $ref \(ref)"); return }
            check(value, against: target, at: path, problems: &problems)
            return
        }
        if let allowed = schema["enum"] as? [Any] {
            if !allowed.contains(where: { "\($0)" == "\(value)" }) { problems.append("\(path): \(value) not in \(allowed)") }
        }
        switch schema["type"] as? String {
        case "object":
            guard let object = value as? [String: Any] else { problems.append("\(path): expected an object"); return }
            let properties = schema["properties"] as? [String: Any] ?? [:]
            for key in schema["required"] as? [String] ?? [] where object[key] == nil {
                problems.append("\(path): missing required \(key)")
            }
            for (key, child) in object {
                guard let childSchema = properties[key] as? [String: Any] else {
                    problems.append("\(path): undocumented property \(key)")
                    continue
                }
                check(child, against: childSchema, at: "\(path).\(key)", problems: &problems)
            }
        case "array":
            guard let array = value as? [Any] else { problems.append("\(path): expected an array"); return }
            let items = schema["items"] as? [String: Any] ?? [:]
            for (i, element) in array.enumerated() { check(element, against: items, at: "\(path)[\(i)]", problems: &problems) }
        case "string":
            guard let string = value as? String else { problems.append("\(path): expected a string"); return }
            if schema["format"] as? String == "date-time",
               string.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"#, options: .regularExpression) == nil {
                problems.append("\(path): \(string) is not an ISO 8601 date-time")
            }
        case "integer":
            guard let number = value as? NSNumber, number.doubleValue.rounded() == number.doubleValue else {
                problems.append("\(path): expected an integer"); return
            }
        case "number":
            if !(value is NSNumber) { problems.append("\(path): expected a number") }
        case "boolean":
            if !(value is Bool) { problems.append("\(path): expected a boolean") }
        default:
            break
        }
    }
}
