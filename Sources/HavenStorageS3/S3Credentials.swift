import Foundation
import HavenCore

/// An S3 access key pair, optionally with a session token.
public struct S3Credentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN), or else from the
    /// shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile AWS_PROFILE or "default").
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> S3Credentials {
        func value(_ name: String) -> String? {
            guard let v = environment[name], !v.isEmpty else { return nil }
            return v
        }
        if let id = value("AWS_ACCESS_KEY_ID"), let secret = value("AWS_SECRET_ACCESS_KEY") {
            return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: value("AWS_SESSION_TOKEN"))
        }
        let file: String
        if let f = value("AWS_SHARED_CREDENTIALS_FILE") {
            file = f
        } else if let home = value("HOME") {
            file = home + "/.aws/credentials"
        } else {
            file = NSHomeDirectory() + "/.aws/credentials"
        }
        let profile = value("AWS_PROFILE") ?? "default"
        if let data = FileManager.default.contents(atPath: file) {
            let sections = parseINI(String(decoding: data, as: UTF8.self))
            if let section = sections[profile], let id = section["aws_access_key_id"], !id.isEmpty,
               let secret = section["aws_secret_access_key"], !secret.isEmpty {
                let token = section["aws_session_token"].flatMap { $0.isEmpty ? nil : $0 }
                return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
            }
            throw HavenError(.usage, "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add aws_access_key_id and aws_secret_access_key to profile \"\(profile)\" in \(file)")
        }
        throw HavenError(.usage, "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or create the shared credentials file \(file) (profile \"\(profile)\")")
    }

    /// Parses an INI file into sections of lowercased keys. `[profile name]` headers count as `name`.
    static func parseINI(_ text: String) -> [String: [String: String]] {
        var out: [String: [String: String]] = [:]
        var current: String?
        for raw in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                var name = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
                if name.hasPrefix("profile ") { name = String(name.dropFirst(8)).trimmingCharacters(in: .whitespaces) }
                current = name
                if out[name] == nil { out[name] = [:] }
                continue
            }
            guard let section = current, let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            out[section, default: [:]][key] = value
        }
        return out
    }
}
