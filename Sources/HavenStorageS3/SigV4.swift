import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// AWS Signature Version 4 for S3, with the Authorization header.
public enum SigV4 {
    public static let algorithm = "AWS4-HMAC-SHA256"
    /// SHA-256 of the empty payload.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// Percent-encodes everything except RFC 3986 unreserved characters (A-Z a-z 0-9 - _ . ~), uppercase hex.
    public static func uriEncode(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        let hex = Array("0123456789ABCDEF")
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.append(Character(Unicode.Scalar(b)))
            default:
                out.append("%")
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 15)])
            }
        }
        return out
    }

    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    public static func sha256Hex(_ data: some DataProtocol) -> String { hex(SHA256.hash(data: data)) }

    /// The query string, sorted by name then value, names and values encoded; also the form sent on the wire.
    public static func canonicalQuery(_ query: [(String, String)]) -> String {
        query.map { (uriEncode($0.0), uriEncode($0.1)) }
            .sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    /// Lowercased header names with trimmed values (inner runs of spaces collapsed), sorted by name.
    static func normalizedHeaders(_ headers: [(String, String)]) -> [(String, String)] {
        var merged: [String: [String]] = [:]
        for (name, value) in headers {
            let v = value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            merged[name.lowercased(), default: []].append(v)
        }
        return merged.map { ($0.key, $0.value.joined(separator: ",")) }.sorted { $0.0 < $1.0 }
    }

    public static func signedHeaders(_ headers: [(String, String)]) -> String {
        normalizedHeaders(headers).map(\.0).joined(separator: ";")
    }

    /// The canonical request: method, canonical URI, canonical query, canonical headers, signed headers, payload hash.
    public static func canonicalRequest(method: String, uriPath: String, query: [(String, String)],
                                        headers: [(String, String)], payloadHash: String) -> String {
        let normalized = normalizedHeaders(headers)
        let canonicalHeaders = normalized.map { "\($0.0):\($0.1)\n" }.joined()
        return [method, uriPath, canonicalQuery(query), canonicalHeaders, normalized.map(\.0).joined(separator: ";"), payloadHash]
            .joined(separator: "\n")
    }

    public static func scope(date: String, region: String, service: String = "s3") -> String {
        "\(date)/\(region)/\(service)/aws4_request"
    }

    public static func stringToSign(amzDate: String, scope: String, canonicalRequest: String) -> String {
        "\(algorithm)\n\(amzDate)\n\(scope)\n\(sha256Hex(Array(canonicalRequest.utf8)))"
    }

    public static func signingKey(secret: String, date: String, region: String, service: String = "s3") -> SymmetricKey {
        func hmac(_ key: SymmetricKey, _ text: String) -> SymmetricKey {
            SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: key))
        }
        var key = SymmetricKey(data: Array(("AWS4" + secret).utf8))
        for part in [date, region, service, "aws4_request"] { key = hmac(key, part) }
        return key
    }

    public static func signature(stringToSign: String, key: SymmetricKey) -> String {
        hex(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key))
    }

    /// "20130524T000000Z" for the given time (UTC).
    public static func amzDate(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tm = tm()
        gmtime_r(&t, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return pad(tm.tm_year + 1900, 4) + pad(tm.tm_mon + 1, 2) + pad(tm.tm_mday, 2) + "T"
            + pad(tm.tm_hour, 2) + pad(tm.tm_min, 2) + pad(tm.tm_sec, 2) + "Z"
    }

    /// Signs a request. `headers` must include `host`; x-amz-date, x-amz-content-sha256 and
    /// (with a session token) x-amz-security-token are added. Returns all headers to send, Authorization included.
    public static func sign(method: String, uriPath: String, query: [(String, String)], headers: [(String, String)],
                            payloadHash: String, credentials: S3Credentials, region: String, date: Date) -> [(String, String)] {
        let amz = amzDate(date)
        let day = String(amz.prefix(8))
        var all = headers
        all.append(("x-amz-date", amz))
        all.append(("x-amz-content-sha256", payloadHash))
        if let token = credentials.sessionToken { all.append(("x-amz-security-token", token)) }
        let creq = canonicalRequest(method: method, uriPath: uriPath, query: query, headers: all, payloadHash: payloadHash)
        let sc = scope(date: day, region: region)
        let sts = stringToSign(amzDate: amz, scope: sc, canonicalRequest: creq)
        let sig = signature(stringToSign: sts, key: signingKey(secret: credentials.secretAccessKey, date: day, region: region))
        all.append(("Authorization", "\(algorithm) Credential=\(credentials.accessKeyID)/\(sc),SignedHeaders=\(signedHeaders(all)),Signature=\(sig)"))
        return all
    }
}
