import Foundation
import HavenCore

/// Where an S3 repository lives: endpoint, bucket and key prefix, parsed from restic's `s3:` location forms.
///
/// Accepted forms:
/// - `s3:https://host[:port]/bucket[/prefix]`
/// - `s3:http://host[:port]/bucket[/prefix]` (plain HTTP, e.g. a local MinIO or SeaweedFS)
/// - `s3:host/bucket[/prefix]` (HTTPS, e.g. `s3:s3.amazonaws.com/bucket`)
public struct S3Location: Sendable, Equatable, CustomStringConvertible {
    /// "http" or "https".
    public var scheme: String
    public var host: String
    /// The port when one was given explicitly.
    public var port: Int?
    public var bucket: String
    /// The key prefix inside the bucket, without leading or trailing slashes ("" for the bucket root).
    public var prefix: String
    /// The signing region (AWS_DEFAULT_REGION, else AWS_REGION, else "us-east-1").
    public var region: String
    /// Path-style addressing (`host/bucket/key`, needed by MinIO and SeaweedFS) when true,
    /// virtual-hosted style (`bucket.host/key`) when false.
    public var pathStyle: Bool

    public init(scheme: String = "https", host: String, port: Int? = nil, bucket: String, prefix: String = "",
                region: String = "us-east-1", pathStyle: Bool = true) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.bucket = bucket
        self.prefix = prefix.split(separator: "/").joined(separator: "/")
        self.region = region
        self.pathStyle = pathStyle
    }

    /// Parses a restic-style `s3:` location. The region comes from `environment`.
    public static func parse(_ text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> S3Location {
        guard text.hasPrefix("s3:") else {
            throw HavenError(.usage, "invalid S3 location \"\(text)\": it must start with \"s3:\", e.g. s3:https://host/bucket/prefix")
        }
        var rest = String(text.dropFirst(3))
        var scheme = "https"
        if rest.hasPrefix("https://") {
            rest = String(rest.dropFirst(8))
        } else if rest.hasPrefix("http://") {
            scheme = "http"
            rest = String(rest.dropFirst(7))
        } else if rest.contains("://") {
            throw HavenError(.usage, "invalid S3 location \"\(text)\": only http:// and https:// endpoints are supported")
        }
        let parts = rest.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard let hostPort = parts.first, !hostPort.isEmpty, !rest.hasPrefix("/") else {
            throw HavenError(.usage, "invalid S3 location \"\(text)\": missing endpoint host, expected s3:https://host[:port]/bucket[/prefix]")
        }
        guard parts.count >= 2 else {
            throw HavenError(.usage, "invalid S3 location \"\(text)\": missing bucket name, expected s3:https://host[:port]/bucket[/prefix]")
        }
        var host = hostPort
        var port: Int?
        if let colon = hostPort.lastIndex(of: ":"), !hostPort.hasSuffix("]") {
            let portText = hostPort[hostPort.index(after: colon)...]
            guard let p = Int(portText), p > 0, p < 65536 else {
                throw HavenError(.usage, "invalid S3 location \"\(text)\": port \"\(portText)\" is not a number between 1 and 65535")
            }
            port = p
            host = String(hostPort[..<colon])
        }
        guard !host.isEmpty else {
            throw HavenError(.usage, "invalid S3 location \"\(text)\": missing endpoint host")
        }
        let bucket = parts[1]
        let prefix = parts.dropFirst(2).joined(separator: "/")
        var region = "us-east-1"
        if let r = environment["AWS_DEFAULT_REGION"], !r.isEmpty {
            region = r
        } else if let r = environment["AWS_REGION"], !r.isEmpty {
            region = r
        }
        return S3Location(scheme: scheme, host: host, port: port, bucket: bucket, prefix: prefix, region: region)
    }

    /// The Host header value: host, plus the port when it is not the scheme's default.
    var hostHeader: String {
        let base = pathStyle ? host : "\(bucket).\(host)"
        if let port, !(scheme == "http" && port == 80) && !(scheme == "https" && port == 443) {
            return "\(base):\(port)"
        }
        return base
    }

    /// The object key for a repository-relative path.
    public func key(_ path: String) -> String { prefix.isEmpty ? path : prefix + "/" + path }

    /// The URI path (already encoded, as used both on the wire and in the canonical request) for `key`;
    /// nil key addresses the bucket itself.
    func uriPath(key: String?) -> String {
        var segments: [String] = []
        if pathStyle { segments.append(bucket) }
        if let key { segments.append(contentsOf: key.split(separator: "/", omittingEmptySubsequences: false).map(String.init)) }
        return "/" + segments.map { SigV4.uriEncode($0) }.joined(separator: "/")
    }

    /// A readable form for messages, in restic's syntax.
    public var description: String {
        let portPart = port.map { ":\($0)" } ?? ""
        return "s3:\(scheme)://\(host)\(portPart)/\(bucket)" + (prefix.isEmpty ? "" : "/" + prefix)
    }
}
