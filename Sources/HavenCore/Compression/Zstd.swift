import CZstd
import Synchronization

/// A few reusable zstd contexts. Creating a context costs about a megabyte of fresh memory (an mmap and
/// page faults), far more than compressing a small blob, so contexts are kept and shared.
final class ZstdContextPool: Sendable {
    private struct Contexts: @unchecked Sendable {  // raw pointers, only touched under the mutex
        var compress: [OpaquePointer] = []
        var decompress: [OpaquePointer] = []
    }
    private let contexts = Mutex(Contexts())
    private let limit = 16

    static let shared = ZstdContextPool()

    func withCompressionContext<R>(_ body: (OpaquePointer) -> R) -> R {
        let ctx = contexts.withLock { $0.compress.popLast() } ?? ZSTD_createCCtx()!
        defer {
            let kept = contexts.withLock { c -> Bool in
                guard c.compress.count < limit else { return false }
                c.compress.append(ctx)
                return true
            }
            if !kept { ZSTD_freeCCtx(ctx) }
        }
        return body(ctx)
    }

    func withDecompressionContext<R>(_ body: (OpaquePointer) throws -> R) rethrows -> R {
        let ctx = contexts.withLock { $0.decompress.popLast() } ?? ZSTD_createDCtx()!
        // A context that failed mid-stream is reset before reuse.
        ZSTD_DCtx_reset(ctx, ZSTD_reset_session_only)
        defer {
            let kept = contexts.withLock { c -> Bool in
                guard c.decompress.count < limit else { return false }
                c.decompress.append(ctx)
                return true
            }
            if !kept { ZSTD_freeDCtx(ctx) }
        }
        return try body(ctx)
    }
}

/// zstd compression as restic v2 uses it: whole frames with the content size recorded.
public enum Zstd {
    /// Compresses `input` at `level` (restic's "auto" is close to level 3, "max" to level 19).
    public static func compress(_ input: UnsafeRawBufferPointer, level: Int32) -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var n = 0
        let out = [UInt8](unsafeUninitializedCapacity: bound) { dst, count in
            n = ZstdContextPool.shared.withCompressionContext { ctx in
                compress(ctx, into: dst.baseAddress, capacity: bound, input, level: level)
            }
            count = ZSTD_isError(n) == 0 ? n : 0
        }
        precondition(ZSTD_isError(n) == 0, "zstd compression failed: \(String(cString: ZSTD_getErrorName(n)))")
        return out
    }

    /// zstd's level-3 tables for inputs over 256 KiB are a 2^17-entry hash table and a 2^16-entry chain
    /// table (768 KiB together). With one compressor per core, a 2^16 hash table keeps both closer to the
    /// core's own cache: on the toolchain binaries, 1 MiB blobs compressed ~14% faster (zstd's benchmark
    /// on this machine) for 0.3% more output, and a whole first backup took ~5% less CPU.
    static let largeInputHashLog: Int32 = 16

    /// Level 3 is zstd's "double fast" strategy: a hash table of 8-byte sequences (hash log) and one of
    /// short ones (the "chain" log). Above 16 KiB, zstd sizes the short table at 2^15–2^16 entries; 2^14
    /// (the size it uses up to 16 KiB) finds almost all the same matches and stays in the core's cache.
    /// Measured on this machine, every blob of the benchmark's corpora compressed alone, against the
    /// tables zstd picks (with `largeInputHashLog`): source code 3% less time for 0.1% less output
    /// (blobs of 16 KiB–512 KiB) and 13% less time for 0.9% less output (larger); the toolchain's
    /// binaries 10% less time for 0.9% more output (a whole first backup: 14% less wall, 1.2% more stored).
    static let chainLog: Int32 = 14
    static let defaultChainLogUpTo = 16 << 10

    /// One frame with the content size recorded. Parameters are set on every call, since a pooled
    /// context keeps them from its last use (0 restores the level's default).
    private static func compress(_ ctx: OpaquePointer, into dst: UnsafeMutableRawPointer?, capacity: Int,
                                 _ input: UnsafeRawBufferPointer, level: Int32) -> Int {
        let large = input.count > 256 << 10 && level == 3
        let smallChains = input.count > defaultChainLogUpTo && level == 3
        ZSTD_CCtx_setParameter(ctx, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(ctx, ZSTD_c_hashLog, large ? largeInputHashLog : 0)
        ZSTD_CCtx_setParameter(ctx, ZSTD_c_chainLog, smallChains ? chainLog : 0)
        return ZSTD_compress2(ctx, dst, capacity, input.baseAddress, input.count)
    }

    /// The size `input` compresses to at `level`, without keeping the result (for probes of small
    /// samples: the output goes to a buffer on the stack when it fits).
    public static func compressedSize(_ input: UnsafeRawBufferPointer, level: Int32) -> Int {
        let bound = ZSTD_compressBound(input.count)
        let n = withUnsafeTemporaryAllocation(byteCount: bound, alignment: 16) { dst in
            ZstdContextPool.shared.withCompressionContext { ctx in
                ZSTD_compressCCtx(ctx, dst.baseAddress, bound, input.baseAddress, input.count, level)
            }
        }
        precondition(ZSTD_isError(n) == 0, "zstd compression failed: \(String(cString: ZSTD_getErrorName(n)))")
        return n
    }

    public static func compress(_ input: [UInt8], level: Int32) -> [UInt8] {
        input.withUnsafeBytes { compress($0, level: level) }
    }

    /// Decompresses one or more frames. `limit` bounds the output (hostile input may claim any size).
    /// Throws `.corrupt` on malformed input or output beyond `limit`.
    public static func decompress(_ input: UnsafeRawBufferPointer, limit: Int, expectedSize: Int? = nil) throws -> [UInt8] {
        let capacity: Int
        if let expectedSize {
            guard expectedSize <= limit else { throw HavenError(.corrupt, "zstd: claimed size \(expectedSize) exceeds limit") }
            // The size is known (every compressed blob records it): decompress in one call into an exactly
            // sized, uninitialised buffer. Larger output fails as "destination buffer too small".
            return try ZstdContextPool.shared.withDecompressionContext { dctx in
                var result = 0
                let out = [UInt8](unsafeUninitializedCapacity: max(expectedSize, 1)) { dst, count in
                    result = ZSTD_decompressDCtx(dctx, dst.baseAddress, expectedSize, input.baseAddress, input.count)
                    count = ZSTD_isError(result) == 0 ? result : 0
                }
                if ZSTD_isError(result) != 0 { throw HavenError(.corrupt, "zstd: \(String(cString: ZSTD_getErrorName(result)))") }
                guard result == expectedSize else {
                    throw HavenError(.corrupt, "zstd: decompressed \(result) bytes, expected \(expectedSize)")
                }
                return out
            }
        } else {
            let claimed = ZSTD_getFrameContentSize(input.baseAddress, input.count)
            // ZSTD_CONTENTSIZE_UNKNOWN / _ERROR are the two largest UInt64 values.
            if claimed < UInt64.max - 1, claimed <= UInt64(limit) {
                capacity = Int(claimed)
            } else {
                capacity = min(limit, max(input.count * 4, 1 << 16))
            }
        }
        return try ZstdContextPool.shared.withDecompressionContext { dctx in
            try decompress(input, context: dctx, capacity: capacity, limit: limit)
        }
    }

    private static func decompress(_ input: UnsafeRawBufferPointer, context dctx: OpaquePointer, capacity: Int,
                                   limit: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: max(capacity, 1))
        var produced = 0
        var inBuf = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        while true {
            if produced == out.count {
                guard out.count < limit else { throw HavenError(.corrupt, "zstd: decompressed data exceeds \(limit) bytes") }
                out.append(contentsOf: repeatElement(0, count: min(out.count, limit - out.count)))
            }
            let (ret, pos) = out.withUnsafeMutableBytes { dst -> (Int, Int) in
                var outBuf = ZSTD_outBuffer(dst: dst.baseAddress, size: dst.count, pos: produced)
                let r = ZSTD_decompressStream(dctx, &outBuf, &inBuf)
                return (r, outBuf.pos)
            }
            produced = pos
            if ZSTD_isError(ret) != 0 {
                throw HavenError(.corrupt, "zstd: \(String(cString: ZSTD_getErrorName(ret)))")
            }
            if ret == 0 && inBuf.pos == inBuf.size { break }
            if inBuf.pos == inBuf.size && produced < out.count {
                throw HavenError(.corrupt, "zstd: truncated stream")
            }
        }
        out.removeLast(out.count - produced)
        return out
    }

    public static func decompress(_ input: [UInt8], limit: Int, expectedSize: Int? = nil) throws -> [UInt8] {
        try input.withUnsafeBytes { try decompress($0, limit: limit, expectedSize: expectedSize) }
    }
}
