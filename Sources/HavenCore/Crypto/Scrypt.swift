// scrypt (RFC 7914): PBKDF2-HMAC-SHA256 around p independent ROMix lanes of Salsa20/8. The lanes are
// mixed by HavenKDF (Haven's own vectorised Salsa20/8, lanes on several threads), not by BoringSSL.
import Crypto
import Foundation
import HavenKDF

enum Scrypt {
    static let maxN = 1 << 20

    /// scrypt(password, salt, N, r, p) → `outputByteCount` bytes (`hardware: false` keeps the lanes off
    /// AVX-512, for tests of the portable path). Throws `.invalidArgument` for
    /// parameters `KDFParameters.problem` rejects, an empty salt, or an output size outside 1...4096.
    static func derive(password: [UInt8], salt: [UInt8], parameters: KDFParameters, outputByteCount: Int,
                       maxThreads: Int = defaultThreads, hardware: Bool = true) throws -> [UInt8] {
        if let problem = parameters.problem { throw HavenError(.invalidArgument, problem) }
        guard !salt.isEmpty else { throw HavenError(.invalidArgument, "scrypt salt must not be empty") }
        guard (1...4096).contains(outputByteCount) else {
            throw HavenError(.invalidArgument, "scrypt output of \(outputByteCount) bytes is out of range (1 to 4096)")
        }
        let laneBytes = 128 * parameters.r
        var lanes = pbkdf2SHA256(password: password, salt: salt, count: parameters.p * laneBytes)
        let threads = threadCount(n: parameters.n, p: parameters.p, maxThreads: maxThreads)
        lanes.withUnsafeMutableBytes { buffer in
            ScryptMix.mixLanes(buffer, n: parameters.n, r: parameters.r, threads: threads, hardware: hardware)
        }
        return pbkdf2SHA256(password: password, salt: lanes, count: outputByteCount)
    }

    /// Threads for the p lanes: a power of two (so every t-th block divides N), at most 4, the cores
    /// present, p and N. Each stores every t-th block of its table (see HavenKDF), so memory stays that of
    /// one full table.
    static let defaultThreads = ProcessInfo.processInfo.activeProcessorCount

    static func threadCount(n: Int, p: Int, maxThreads: Int) -> Int {
        var threads = 1
        while threads * 2 <= min(n, p, maxThreads, 4) { threads *= 2 }
        return threads
    }

    /// The key that seals a key file's master key: scrypt output bytes 0..<32 encrypt, 32..<48 are the
    /// MAC's AES key k, 48..<64 its r.
    static func userKey(password: String, salt: [UInt8], parameters: KDFParameters) throws -> MasterKey {
        let bytes = try derive(password: Array(password.utf8), salt: salt, parameters: parameters, outputByteCount: 64)
        return MasterKey(encryptionKey: Array(bytes[0..<32]), macK: Array(bytes[32..<48]), macR: Array(bytes[48..<64]))
    }

    /// PBKDF2 with HMAC-SHA-256 and one iteration (RFC 8018), which is all scrypt uses.
    static func pbkdf2SHA256(password: [UInt8], salt: [UInt8], count: Int) -> [UInt8] {
        let key = SymmetricKey(data: password)
        var out = [UInt8]()
        out.reserveCapacity(count + 32)
        var block: UInt32 = 1
        while out.count < count {
            var mac = HMAC<SHA256>(key: key)
            mac.update(data: salt)
            mac.update(data: [UInt8(block >> 24), UInt8(truncatingIfNeeded: block >> 16),
                              UInt8(truncatingIfNeeded: block >> 8), UInt8(truncatingIfNeeded: block)])
            out.append(contentsOf: mac.finalize())
            block += 1
        }
        out.removeLast(out.count - count)
        return out
    }
}

