import CZstd

/// zstd compression as restic v2 uses it: whole frames with the content size recorded.
public enum Zstd {
    /// Compresses `input` at `level` (restic's "auto" is close to level 3, "max" to level 19).
    public static func compress(_ input: UnsafeRawBufferPointer, level: Int32) -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var out = [UInt8](repeating: 0, count: bound)
        let n = out.withUnsafeMutableBytes { dst in
            ZSTD_compress(dst.baseAddress, bound, input.baseAddress, input.count, level)
        }
        precondition(ZSTD_isError(n) == 0, "zstd compression failed: \(String(cString: ZSTD_getErrorName(n)))")
        out.removeLast(bound - n)
        return out
    }

    public static func compress(_ input: [UInt8], level: Int32) -> [UInt8] {
        input.withUnsafeBytes { compress($0, level: level) }
    }

    /// Decompresses one or more frames. `limit` bounds the output (hostile input may claim any size).
    /// Throws `.corrupt` on malformed input or output beyond `limit`.
    public static func decompress(_ input: UnsafeRawBufferPointer, limit: Int, expectedSize: Int? = nil) throws -> [UInt8] {
        var capacity: Int
        if let expectedSize {
            guard expectedSize <= limit else { throw HavenError(.corrupt, "zstd: claimed size \(expectedSize) exceeds limit") }
            capacity = expectedSize
        } else {
            let claimed = ZSTD_getFrameContentSize(input.baseAddress, input.count)
            // ZSTD_CONTENTSIZE_UNKNOWN / _ERROR are the two largest UInt64 values.
            if claimed < UInt64.max - 1, claimed <= UInt64(limit) {
                capacity = Int(claimed)
            } else {
                capacity = min(limit, max(input.count * 4, 1 << 16))
            }
        }
        guard let dctx = ZSTD_createDCtx() else { throw HavenError(.fatal, "zstd: out of memory") }
        defer { ZSTD_freeDCtx(dctx) }
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
        if let expectedSize, produced != expectedSize {
            throw HavenError(.corrupt, "zstd: decompressed \(produced) bytes, expected \(expectedSize)")
        }
        return out
    }

    public static func decompress(_ input: [UInt8], limit: Int, expectedSize: Int? = nil) throws -> [UInt8] {
        try input.withUnsafeBytes { try decompress($0, limit: limit, expectedSize: expectedSize) }
    }
}
