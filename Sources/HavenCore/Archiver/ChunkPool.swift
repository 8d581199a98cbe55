#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Bytes a blob is stored from: an array, or a chunk read in place into a `ChunkBuffer`.
public protocol BlobPlaintext: Sendable {
    var count: Int { get }
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: BlobPlaintext where Element == UInt8 {}

/// Buffers of a chunker's maximum chunk size, lent out one per chunk and reused.
///
/// A large file is read straight into the buffer of the chunk being cut, so its bytes are scanned,
/// hashed and compressed where `read(2)` put them: no read buffer per file, no copy into a chunk, and
/// no fresh pages to fault in for every chunk. A buffer is mapped once and only the pages a chunk
/// touches become resident; when a buffer comes back, pages past `residentLimit` are handed back to the
/// kernel, so an idle buffer costs at most that much memory however large its last chunk was.
final class ChunkPool: Sendable {
    /// The size of every buffer: the largest chunk the chunker cuts.
    let capacity: Int
    /// Bytes of an idle buffer kept resident (rounded to whole pages).
    let residentLimit: Int
    /// Idle buffers kept for reuse; more are unmapped.
    let idleLimit: Int
    private let idle = Mutex<[Region]>([])

    /// `residentLimit` for backups. A restic chunk is 512 KiB plus about 1 MiB on average, so about
    /// one chunk in five runs past 2 MiB and has its tail faulted in again. Measured on the Swift
    /// toolchain's binaries (first backup, peak RSS): 1 MiB 77–80 MB, 2 MiB 82–86 MB, 4 MiB 99–105 MB,
    /// 8 MiB (nothing given back) 123–125 MB, at the same speed within the noise from 2 MiB up.
    static let defaultResidentLimit = 2 << 20

    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// A mapped buffer's address (owned by the pool while idle, by one `ChunkBuffer` while lent).
    private struct Region: @unchecked Sendable {
        let base: UnsafeMutableRawPointer
    }

    init(capacity: Int, residentLimit: Int = ChunkPool.defaultResidentLimit, idleLimit: Int = 16) {
        precondition(capacity > 0 && residentLimit >= 0 && idleLimit >= 0)
        self.capacity = capacity
        self.residentLimit = residentLimit
        self.idleLimit = idleLimit
    }

    deinit {
        for region in idle.withLock({ $0 }) { munmap(region.base, capacity) }
    }

    /// An empty buffer of `capacity` bytes. Throws when no memory can be mapped.
    func take() throws -> ChunkBuffer {
        if let region = idle.withLock({ $0.popLast() }) { return ChunkBuffer(base: region.base, pool: self) }
        guard let base = mmap(nil, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              base != MAP_FAILED else {
            throw HavenError(.fatal, "cannot map \(capacity >> 20) MiB for reading a file: \(Errno(errno)); free some memory or lower --read-concurrency")
        }
        return ChunkBuffer(base: base, pool: self)
    }

    /// Takes back a buffer whose first `touched` bytes were written.
    fileprivate func giveBack(_ base: UnsafeMutableRawPointer, touched: Int) {
        let page = Self.pageSize
        let keep = (residentLimit + page - 1) / page * page
        if touched > keep {
            // Drop the pages past the limit; they read as zeros (and are faulted in) when next touched.
            _ = madvise(base + keep, min(capacity, (touched + page - 1) / page * page) - keep, MADV_DONTNEED)
        }
        let kept = idle.withLock { list -> Bool in
            guard list.count < idleLimit else { return false }
            list.append(Region(base: base))
            return true
        }
        if !kept { munmap(base, capacity) }
    }

    /// Buffers idle in the pool (tests).
    var idleCount: Int { idle.withLock { $0.count } }
}

/// One chunk's bytes, in a buffer lent by a `ChunkPool`, which gets the buffer back when the last
/// reference goes. Filled once through `fill` before it is shared, read-only after.
final class ChunkBuffer: BlobPlaintext, @unchecked Sendable {
    private let base: UnsafeMutableRawPointer
    private let pool: ChunkPool
    /// Bytes of the chunk.
    private(set) var count = 0
    /// Bytes written since the buffer was lent (the chunk and any bytes read past its end).
    private var touched = 0

    fileprivate init(base: UnsafeMutableRawPointer, pool: ChunkPool) {
        self.base = base
        self.pool = pool
    }

    deinit { pool.giveBack(base, touched: touched) }

    /// Where the buffer lies (tests).
    var address: UnsafeRawPointer { UnsafeRawPointer(base) }

    /// Lets `body` write into the whole buffer; it returns the chunk's length and the bytes it wrote in
    /// all (at least the chunk's length).
    func fill(_ body: (UnsafeMutableRawBufferPointer) throws -> (count: Int, touched: Int)) rethrows {
        let space = UnsafeMutableRawBufferPointer(start: base, count: pool.capacity)
        var written = pool.capacity  // unknown if `body` throws
        defer { touched = max(touched, written) }
        let result = try body(space)
        precondition(result.count >= 0 && result.count <= result.touched && result.touched <= pool.capacity)
        written = result.touched
        count = result.count
    }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }
}
