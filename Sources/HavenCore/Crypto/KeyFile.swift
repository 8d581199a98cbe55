// CONTRACT (helper fills in; keep the public signatures):
//
// A file in keys/: plain JSON, not encrypted. Its storage ID is the SHA-256 of the file's bytes.
// {"created": RFC3339Nano, "username", "hostname", "kdf": "scrypt", "N", "r", "p",
//  "salt": base64(64 random bytes), "data": base64(sealed master-key JSON)}
// The master-key JSON: {"mac":{"k":base64,"r":base64},"encrypt":base64}.
// scrypt(password, salt, N, r, p) -> 64 bytes: first 32 = AES-256 key, next 16 = MAC k, last 16 = MAC r.
import Crypto
import Foundation

/// scrypt cost parameters as stored in a key file: N (CPU/memory cost), r (block size), p (parallelism).
public struct KDFParameters: Sendable, Equatable {
    public var n: Int, r: Int, p: Int
    /// Wraps the three scrypt parameters; `problem` says whether they are usable.
    public init(n: Int, r: Int, p: Int) { self.n = n; self.r = r; self.p = p }
    /// Parameters whose work takes about `target` seconds of one core on this machine within `maxMemory`
    /// bytes (restic aims at 0.5 s and 60 MiB). Never lower than N=2^15, r=8, p=1. Opening a repository
    /// takes less wall time than `target` when p > 1: Haven mixes the p lanes on several cores.
    public static func calibrate(target: Double = 0.5, maxMemory: Int = 60 << 20) -> KDFParameters {
        let base = KDFParameters(n: 1 << 15, r: 8, p: 1)
        let salt = [UInt8](repeating: 0x5a, count: 64)
        let start = ContinuousClock.now
        _ = try? Scrypt.derive(password: Array("calibration".utf8), salt: salt, parameters: base, outputByteCount: 64)
        let elapsed = ContinuousClock.now - start
        let measured = max(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18, 1e-4)

        // scrypt's time is linear in N·p. Double N while the estimate stays within target and memory.
        var result = base
        var estimate = measured
        while estimate * 2 <= target, 128 * (result.n * 2) * result.r <= maxMemory,
              KDFParameters(n: result.n * 2, r: result.r, p: 1).problem == nil {
            result.n *= 2
            estimate *= 2
        }
        // Capped by memory with time to spare: spend it on p, which costs time but no memory (restic does too).
        if estimate * 2 <= target {
            result.p = min(Int(target / estimate), 64)
            while result.p > 1, result.problem != nil { result.p -= 1 }
        }
        return result
    }
    /// Fast parameters for tests only.
    public static let testing = KDFParameters(n: 1 << 10, r: 8, p: 1)
}

/// A key file: the master key sealed under a key derived from a password with scrypt, as restic stores it.
public struct KeyFile: Sendable, Equatable {
    /// Creation time as stored (RFC 3339 text, kept verbatim when decoding).
    public var created: String
    public var username: String
    public var hostname: String
    /// Key derivation function; only "scrypt" exists.
    public var kdf: String
    public var parameters: KDFParameters
    /// scrypt salt (64 random bytes when Haven creates the file).
    public var salt: [UInt8]
    /// The sealed master-key JSON: IV || ciphertext || MAC under the password-derived key.
    public var data: [UInt8]

    /// Wraps `master` under `password` with a new random salt.
    public static func create(password: String, master: MasterKey, parameters: KDFParameters,
                              hostname: String, username: String, created: Date = Date()) throws -> KeyFile {
        if let problem = parameters.problem { throw HavenError(.invalidArgument, problem) }
        guard master.isWellFormed else {
            throw HavenError(.invalidArgument, "master key is malformed: needs a 32-byte encryption key and 16-byte MAC keys")
        }
        var rng = SystemRandomNumberGenerator()
        let salt = MasterKey.randomBytes(64, using: &rng)
        let userKey = try Scrypt.userKey(password: password, salt: salt, parameters: parameters)
        return KeyFile(created: createdString(created), username: username, hostname: hostname, kdf: "scrypt",
                       parameters: parameters, salt: salt, data: userKey.seal(master.jsonBytes()))
    }

    /// Parses the JSON bytes of a key file. Throws `HavenError(.corrupt, …)` for malformed JSON, an unknown
    /// kdf, or out-of-range parameters (refuses N, r, p that would need more than 1 GiB or are not powers of 2).
    public static func decode(_ bytes: [UInt8]) throws -> KeyFile {
        guard bytes.count <= maxEncodedSize else {
            throw HavenError.corrupt("key file", "\(bytes.count) bytes is far larger than any key file")
        }
        let form: JSONForm
        do {
            form = try JSONDecoder().decode(JSONForm.self, from: Data(bytes))
        } catch {
            throw HavenError.corrupt("key file", "not valid key-file JSON (\(Self.describe(error)))")
        }
        guard form.kdf == "scrypt" else {
            throw HavenError.corrupt("key file", "unknown key derivation function \"\(form.kdf.prefix(40))\" (only scrypt is supported)")
        }
        let parameters = KDFParameters(n: form.N, r: form.r, p: form.p)
        if let problem = parameters.problem { throw HavenError.corrupt("key file", problem) }
        guard let salt = form.salt.flatMap({ Data(base64Encoded: $0) }) else {
            throw HavenError.corrupt("key file", "\"salt\" is missing or not valid base64")
        }
        guard !salt.isEmpty else { throw HavenError.corrupt("key file", "\"salt\" is empty") }
        guard let data = form.data.flatMap({ Data(base64Encoded: $0) }) else {
            throw HavenError.corrupt("key file", "\"data\" is missing or not valid base64")
        }
        guard data.count >= MasterKey.overhead else {
            throw HavenError.corrupt("key file", "\"data\" holds \(data.count) bytes, fewer than the 32 bytes of IV and MAC")
        }
        return KeyFile(created: form.created ?? "", username: form.username ?? "", hostname: form.hostname ?? "",
                       kdf: form.kdf, parameters: parameters, salt: Array(salt), data: Array(data))
    }

    /// The JSON bytes to store.
    public func encoded() throws -> [UInt8] {
        var out = "{\"created\":" + JSONText.quote(created)
        out += ",\"username\":" + JSONText.quote(username)
        out += ",\"hostname\":" + JSONText.quote(hostname)
        out += ",\"kdf\":" + JSONText.quote(kdf)
        out += ",\"N\":\(parameters.n),\"r\":\(parameters.r),\"p\":\(parameters.p)"
        out += ",\"salt\":\"" + Data(salt).base64EncodedString() + "\""
        out += ",\"data\":\"" + Data(data).base64EncodedString() + "\"}"
        return Array(out.utf8)
    }

    /// Derives the key from `password` and opens the master key. Throws `HavenError(.wrongPassword, …)`
    /// when the MAC fails, `.corrupt` when the decrypted JSON is malformed.
    public func open(password: String) throws -> MasterKey {
        guard kdf == "scrypt" else {
            throw HavenError.corrupt("key file", "unknown key derivation function \"\(kdf.prefix(40))\"")
        }
        let userKey = try Scrypt.userKey(password: password, salt: salt, parameters: parameters)
        let json: [UInt8]
        do {
            json = try userKey.open(data)
        } catch let error as HavenError where error.code == .corrupt {
            throw HavenError(.wrongPassword, "wrong password or no key found")
        }
        return try MasterKey.fromJSON(json)
    }
}

extension KeyFile {
    /// Key files are a few hundred bytes; refuse to parse anything larger than this.
    static let maxEncodedSize = 64 << 10

    /// The JSON shape; optional fields are those Go would also accept missing.
    private struct JSONForm: Decodable {
        var created: String?
        var username: String?
        var hostname: String?
        var kdf: String
        var N: Int
        var r: Int
        var p: Int
        var salt: String?
        var data: String?
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "missing field \"\(key.stringValue)\""
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "wrong type at \"\(context.codingPath.map(\.stringValue).joined(separator: "."))\""
        case DecodingError.dataCorrupted: return "malformed JSON"
        default: return "malformed JSON"
        }
    }
}

extension KDFParameters {
    /// Why these parameters are unusable, or nil when scrypt accepts them and they are safe to run:
    /// N a power of two in 2...2^20, r in 1...16, p in 1...1024, scrypt's own rule N < 2^(16·r), at
    /// most 1 GiB of memory (128·r·(N+p+1) bytes) and at most 4 GiB of mixing work (128·N·r·p).
    var problem: String? {
        let what = "scrypt parameters N=\(n), r=\(r), p=\(p) are out of range"
        guard n >= 2, n <= Scrypt.maxN, n & (n - 1) == 0 else { return "\(what): N must be a power of two from 2 to 2^20" }
        guard (1...16).contains(r) else { return "\(what): r must be from 1 to 16" }
        guard (1...1024).contains(p) else { return "\(what): p must be from 1 to 1024" }
        guard r >= 4 || n < 1 << (16 * r) else { return "\(what): scrypt requires N < 2^(16·r)" }
        guard 128 * r * (n + p + 1) <= 1 << 30 else { return "\(what): they would need more than 1 GiB of memory" }
        guard 128 * n * r * p <= 1 << 32 else { return "\(what): they would take unreasonably long" }
        return nil
    }
}

extension KeyFile {
    /// Minimal JSON text helpers for the fixed-shape files written here.
    private enum JSONText {
        /// `s` as a JSON string literal.
        static func quote(_ s: String) -> String {
            var out = "\""
            for scalar in s.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                default:
                    if scalar.value < 0x20 {
                        out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
                            + String(scalar.value, radix: 16)
                    } else {
                        out.unicodeScalars.append(scalar)
                    }
                }
            }
            return out + "\""
        }
    }

    /// `date` in UTC as RFC 3339 with nanoseconds, the way Go's time.RFC3339Nano writes it (trailing
    /// zeros of the fraction dropped), e.g. "2026-11-22T05:30:00.123456789Z".
    static func createdString(_ date: Date) -> String {
        let t = date.timeIntervalSince1970
        var seconds = Int64(t.rounded(.down))
        var nanos = Int64(((t - Double(seconds)) * 1e9).rounded())
        if nanos >= 1_000_000_000 { seconds += 1; nanos -= 1_000_000_000 }
        return Timestamp(seconds: seconds, nanoseconds: Int32(max(nanos, 0)), utcOffset: 0).rfc3339
    }
}
