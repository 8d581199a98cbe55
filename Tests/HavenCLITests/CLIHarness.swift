import Foundation
import HavenTestSupport
import Testing

/// Runs the built `haven` binary and restic with test settings.
struct CLI {
    let haven: String
    let restic: String?
    let password = "correct horse battery staple"

    init() throws {
        haven = try HavenBinary.path()
        restic = Run.which("restic")
    }

    var env: [String: String] {
        ["HAVEN_PASSWORD": password, "HAVEN_KDF_PARAMS": "1024,8,1", "RESTIC_PASSWORD": password,
         "RESTIC_CACHE_DIR": NSTemporaryDirectory() + "/haven-test-restic-cache", "TZ": "UTC"]
    }

    @discardableResult
    func run(_ args: [String], env extra: [String: String] = [:], stdin: Data? = nil, directory: String? = nil) async throws -> ProcessResult {
        try await Run.process(haven, args, environment: env.merging(extra) { $1 }, stdin: stdin, directory: directory)
    }

    /// Runs haven and requires exit code 0.
    @discardableResult
    func ok(_ args: [String], env extra: [String: String] = [:], stdin: Data? = nil,
            sourceLocation: SourceLocation = #_sourceLocation) async throws -> ProcessResult {
        let r = try await run(args, env: extra, stdin: stdin)
        #expect(r.status == 0, "haven \(args.joined(separator: " ")) failed: \(r)", sourceLocation: sourceLocation)
        return r
    }

    func resticPath(sourceLocation: SourceLocation = #_sourceLocation) async throws -> String {
        guard let restic else {
            Issue.record("restic is not installed: it is the format oracle (apt-get install restic)", sourceLocation: sourceLocation)
            throw FixtureError.failed("restic missing")
        }
        return restic
    }

    @discardableResult
    func restic(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) async throws -> ProcessResult {
        try await Run.process(try resticPath(sourceLocation: sourceLocation), args + ["--no-cache"], environment: env)
    }

    @discardableResult
    func resticOK(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) async throws -> ProcessResult {
        let r = try await restic(args, sourceLocation: sourceLocation)
        #expect(r.status == 0, "restic \(args.joined(separator: " ")) failed: \(r)", sourceLocation: sourceLocation)
        return r
    }

    /// Parses the last JSON object line of an output.
    static func lastJSON(_ r: ProcessResult) -> [String: Any]? {
        for line in r.stdout.split(separator: "\n").reversed() {
            if let d = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] { return d }
        }
        return nil
    }

    static func jsonArray(_ r: ProcessResult) -> [[String: Any]] {
        (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]]) ?? []
    }

    /// Counts data blobs with `restic list blobs`.
    func resticDataBlobCount(_ repo: String) async throws -> Int {
        let r = try await resticOK(["-r", repo, "list", "blobs"])
        return r.stdout.split(separator: "\n").filter { $0.hasPrefix("data ") }.count
    }
}
