/// The repository's `config` file: format version, repository ID and chunker polynomial.
public struct RepositoryConfig: Sendable, Equatable {
    public var version: Int
    public var id: String
    public var chunkerPolynomial: Polynomial

    public init(version: Int, id: String, chunkerPolynomial: Polynomial) {
        self.version = version; self.id = id; self.chunkerPolynomial = chunkerPolynomial
    }

    public func encoded() -> [UInt8] {
        var w = JSONWriter()
        w.beginObject()
        w.key("version"); w.number(version)
        w.key("id"); w.string(id)
        w.key("chunker_polynomial"); w.string(chunkerPolynomial.hex)
        w.endObject()
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws -> RepositoryConfig {
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch { throw HavenError(.corrupt, "config is not valid JSON: \(error)") }
        guard let version = json["version"]?.int else { throw HavenError(.corrupt, "config has no version") }
        guard version == 1 || version == 2 else {
            throw HavenError(.unsupported, "repository format version \(version) is not supported (Haven reads versions 1 and 2)")
        }
        guard let id = json["id"]?.string, !id.isEmpty else { throw HavenError(.corrupt, "config has no repository id") }
        guard let polHex = json["chunker_polynomial"]?.string, let pol = Polynomial(hex: polHex), pol.degree >= 9, pol.degree <= 53 else {
            throw HavenError(.corrupt, "config has an invalid chunker polynomial")
        }
        return RepositoryConfig(version: version, id: id, chunkerPolynomial: pol)
    }
}

/// How blobs are compressed in a version 2 repository.
public enum CompressionMode: String, Sendable, CaseIterable {
    case off, auto, max

    var level: Int32 { self == .max ? 12 : 3 }
}
