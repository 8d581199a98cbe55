import Crypto
import Foundation

/// A user of the HTTP API (HTTP Basic authentication) with a salted, slow password hash.
///
/// Hash formats:
/// - `pbkdf2-sha256:<iterations>:<salt-hex>:<hash-hex>` — PBKDF2-HMAC-SHA256 (RFC 8018), what `hash(password:)`
///   produces;
/// - `sha256:<salt-hex>:<hash-hex>` — one SHA-256 over salt ‖ password; accepted for simple setups, but fast
///   to brute-force if the config leaks.
public struct APIUser: Sendable, Hashable {
    public var name: String
    public var passwordHash: String

    public init(name: String, passwordHash: String) {
        self.name = name; self.passwordHash = passwordHash
    }

    /// The PBKDF2 iteration count `hash(password:)` uses by default.
    public static let defaultIterations = 200_000

    /// A new `pbkdf2-sha256` hash with a random 16-byte salt. Costs `iterations` HMAC-SHA256 computations
    /// (about 0.1 s at the default in a release build).
    public static func hash(password: String, iterations: Int = defaultIterations) -> String {
        var generator = SystemRandomNumberGenerator()
        let salt = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return hash(password: password, salt: salt, iterations: iterations)
    }

    /// A `pbkdf2-sha256` hash with the given salt (for tests and reproducible fixtures).
    public static func hash(password: String, salt: [UInt8], iterations: Int) -> String {
        let derived = pbkdf2SHA256(password: Array(password.utf8), salt: salt, iterations: max(1, iterations), length: 32)
        return "pbkdf2-sha256:\(max(1, iterations)):\(hex(salt)):\(hex(derived))"
    }

    /// Whether `hash` has one of the accepted formats (it says nothing about the password).
    public static func isValidHash(_ hash: String) -> Bool { Parsed(hash) != nil }

    /// True when `password` matches the hash; false for a malformed hash. Compares in constant time.
    public func verify(password: String) -> Bool {
        guard let parsed = Parsed(passwordHash) else { return false }
        let computed: [UInt8]
        switch parsed.scheme {
        case .pbkdf2(let iterations):
            computed = APIUser.pbkdf2SHA256(password: Array(password.utf8), salt: parsed.salt,
                                            iterations: iterations, length: parsed.digest.count)
        case .sha256:
            computed = Array(SHA256.hash(data: parsed.salt + Array(password.utf8)))
        }
        return APIUser.constantTimeEqual(computed, parsed.digest)
    }

    private struct Parsed {
        enum Scheme { case pbkdf2(Int), sha256 }
        let scheme: Scheme
        let salt: [UInt8]
        let digest: [UInt8]

        init?(_ text: String) {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            switch parts.first {
            case "pbkdf2-sha256":
                guard parts.count == 4, let n = Int(parts[1]), n >= 1, n <= 10_000_000,
                      let salt = APIUser.unhex(parts[2]), let digest = APIUser.unhex(parts[3]),
                      !salt.isEmpty, digest.count >= 16, digest.count <= 64 else { return nil }
                scheme = .pbkdf2(n); self.salt = salt; self.digest = digest
            case "sha256":
                guard parts.count == 3, let salt = APIUser.unhex(parts[1]), let digest = APIUser.unhex(parts[2]),
                      digest.count == 32 else { return nil }
                scheme = .sha256; self.salt = salt; self.digest = digest
            default:
                return nil
            }
        }
    }

    /// PBKDF2 with HMAC-SHA256 as the pseudo-random function.
    static func pbkdf2SHA256(password: [UInt8], salt: [UInt8], iterations: Int, length: Int) -> [UInt8] {
        let keyed = HMAC<SHA256>(key: SymmetricKey(data: password))
        var output: [UInt8] = []
        var block: UInt32 = 1
        while output.count < length {
            var mac = keyed
            mac.update(data: salt)
            mac.update(data: withUnsafeBytes(of: block.bigEndian) { Array($0) })
            var u = Array(mac.finalize())
            var t = u
            if iterations > 1 {
                for _ in 1..<iterations {
                    var next = keyed
                    next.update(data: u)
                    u = Array(next.finalize())
                    for i in 0..<t.count { t[i] ^= u[i] }
                }
            }
            output += t
            block += 1
        }
        return Array(output.prefix(length))
    }

    /// Equal length and contents, in time that depends only on the lengths.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }

    /// `constantTimeEqual` over the UTF-8 bytes of two strings (for bearer tokens).
    public static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        constantTimeEqual(Array(a.utf8), Array(b.utf8))
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        var s = ""
        s.reserveCapacity(bytes.count * 2)
        for b in bytes { s.append(digits[Int(b >> 4)]); s.append(digits[Int(b & 15)]) }
        return s
    }

    static func unhex(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let hi = value(chars[i]), let lo = value(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}
