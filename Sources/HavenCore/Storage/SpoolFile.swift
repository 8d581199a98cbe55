#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CHavenShims
import Dispatch
import Synchronization

/// A file assembled on disk before it is stored (a pack being filled), so a backup does not hold whole
/// packs in memory.
///
/// Where the system allows it the file has no name (`O_TMPFILE`) until `link(to:)` gives it one, so a
/// crash leaves nothing behind; elsewhere it is a hidden file that is removed when the spool is closed.
/// The SHA-256 of everything written is kept as it goes, so the storage ID costs no second pass.
/// Small writes (a pack of tiny blobs) are gathered in a buffer and reach the file and the hash in
/// pieces of `bufferCapacity` bytes. Not thread-safe: one owner at a time.
///
/// A `direct` spool (one that will be linked into a local repository, never read back) writes around the
/// page cache (`O_DIRECT`) in aligned pieces of `stagingCapacity` bytes; only its last partial block goes
/// through the cache when the spool is finished. A pack is synced before it is named anyway, so this
/// saves copying every byte into the cache (and on virtual machines that hand freed memory back to the
/// host, faulting in fresh pages for it, which cost more than the disk write), and a backup no longer
/// pushes the machine's working set out of the cache. Where the filesystem refuses direct I/O, the spool
/// writes through the cache as any other.
public final class SpoolFile: @unchecked Sendable {
    public let directory: String
    let fd: Int32
    /// The visible name when `O_TMPFILE` was not available (removed on close).
    public private(set) var visiblePath: String?
    /// Bytes written so far, including those still in the buffer.
    public private(set) var size = 0
    private let hasher = StreamingSHA256()
    /// Writes smaller than this are gathered before they reach the file.
    static let bufferCapacity = 128 * 1024
    /// Bytes written but not yet in the file (allocated on the first small write).
    private var buffer: UnsafeMutableRawBufferPointer?
    private var buffered = 0

    /// Whether writes gather in `staging` for direct writes (until the spool is finished).
    private var directMode: Bool
    /// Whether writes still bypass the page cache: in direct mode, and the filesystem has not refused.
    public var isDirect: Bool { directMode && fcntl(fd, F_GETFL) & haven_o_direct() != 0 }
    /// Direct writes start, end and are sized on multiples of this (the largest logical block size of
    /// common disks, and the page size).
    static let directAlignment = 4096
    /// Bytes gathered before each direct write.
    static let stagingCapacity = 1 << 20
    /// Full staging buffers being written at once, at most; a spool that fills one more waits.
    static let maxInFlight = 2
    /// The size of this spool's direct writes: `stagingCapacity` except in tests.
    private let stagingSize: Int
    /// Bytes waiting for a direct write (already hashed), from `StagingPool`.
    private var staging: UnsafeMutableRawBufferPointer?
    private var staged = 0
    /// Bytes handed to the file in direct mode (written, or queued on `writer`).
    private var fileOffset = 0
    /// Runs direct writes after the first, in order, so compression and encryption go on meanwhile.
    private var writer: QueuedWrites?

    /// Creates an empty spool file in `directory` (the system's temporary directory when nil). With
    /// `unnamed` false, or where the filesystem has no unnamed files, it is a hidden named file. With
    /// `direct`, it bypasses the page cache where the filesystem allows (see the type's description).
    public convenience init(in directory: String?, unnamed: Bool = true, direct: Bool = false) throws {
        try self.init(in: directory, unnamed: unnamed, direct: direct, stagingSize: Self.stagingCapacity)
    }

    /// `stagingSize` other than a multiple of `directAlignment` makes direct writes fail (tests of the
    /// fallback).
    init(in directory: String?, unnamed: Bool, direct: Bool, stagingSize: Int) throws {
        let dir = directory ?? SpoolFile.temporaryDirectory
        self.directory = dir
        self.stagingSize = stagingSize
        let directFlag = direct ? haven_o_direct() : 0
        let tmpfile = unnamed ? haven_o_tmpfile() : 0
        var fd: Int32 = -1
        var isDirect = false
        if tmpfile != 0 {
            fd = open(dir, tmpfile | O_RDWR | O_CLOEXEC | directFlag, 0o600)
            isDirect = fd >= 0 && directFlag != 0
            if fd < 0 && directFlag != 0 { fd = open(dir, tmpfile | O_RDWR | O_CLOEXEC, 0o600) }
        }
        if fd < 0 {
            // Not every filesystem supports unnamed files; fall back to a hidden named one.
            let path = dir + "/.haven-spool-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
            fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw HavenError.system("cannot create a temporary file for a pack in", dir)
            }
            visiblePath = path
            // Direct I/O is switched on afterwards, so a filesystem without it still gets its file.
            if directFlag != 0 {
                let flags = fcntl(fd, F_GETFL)
                isDirect = flags >= 0 && fcntl(fd, F_SETFL, flags | directFlag) == 0
            }
        }
        self.fd = fd
        self.directMode = isDirect
    }

    /// A spool for a pack that `storage` will store: in its spool directory, and direct when it has one
    /// (a local repository names the spool there without reading it back).
    public static func forPack(of storage: any Storage) throws -> SpoolFile {
        let dir = storage.spoolDirectory
        return try SpoolFile(in: dir, direct: dir != nil)
    }

    deinit { close() }

    static var temporaryDirectory: String {
        if let t = getenv("TMPDIR"), t.pointee != 0 { return String(cString: t) }
        return "/tmp"
    }

    /// Appends `bytes`.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        if directMode {
            try stage(bytes)
            size += bytes.count
            return
        }
        guard bytes.count < Self.bufferCapacity else {
            try flush()
            try writeThrough(bytes)
            size += bytes.count
            return
        }
        if buffered + bytes.count > Self.bufferCapacity { try flush() }
        let buffer = self.buffer ?? {
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.bufferCapacity, alignment: 16)
            self.buffer = b
            return b
        }()
        if let source = bytes.baseAddress, !bytes.isEmpty {
            (buffer.baseAddress! + buffered).copyMemory(from: source, byteCount: bytes.count)
        }
        buffered += bytes.count
        size += bytes.count
    }

    private func writeThrough(_ bytes: UnsafeRawBufferPointer) throws {
        try FileSystem.writeFully(fd, bytes, path: "a temporary pack file in \(directory)")
        hasher.update(bytes)
    }

    private var pathForMessages: String { "a temporary pack file in \(directory)" }

    /// Hashes `bytes` and gathers them in the staging buffer, handing it to the file whenever it is full.
    private func stage(_ bytes: UnsafeRawBufferPointer) throws {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        hasher.update(bytes)
        var done = 0
        while done < bytes.count {
            let staging = self.staging ?? {
                let b = StagingPool.take(stagingSize)
                self.staging = b
                return b
            }()
            let n = min(bytes.count - done, staging.count - staged)
            (staging.baseAddress! + staged).copyMemory(from: source + done, byteCount: n)
            staged += n
            done += n
            if staged == staging.count { try submitStaging() }
        }
    }

    /// Writes the full staging buffer at `fileOffset`: the spool's first write here and now (so a
    /// filesystem that refuses direct I/O is found before anything is queued), later ones on `writer`.
    private func submitStaging() throws {
        guard let full = staging else { return }
        let count = staged, offset = fileOffset
        staging = nil
        staged = 0
        fileOffset += count
        guard let writer else {
            defer { StagingPool.give(full) }
            try Self.write(fd, UnsafeRawBufferPointer(rebasing: full[..<count]), at: offset, path: pathForMessages)
            writer = QueuedWrites()
            return
        }
        try writer.enqueue(full, count: count, fd: fd, at: offset, path: pathForMessages)
    }

    /// Waits for the queued direct writes.
    private func drain() { writer?.drain() }

    /// Writes all of `bytes` at `offset`. A filesystem that refuses a direct write (EINVAL: no direct
    /// I/O there, or a block size larger than `directAlignment`) gets it, and everything after it,
    /// through the page cache instead.
    static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EINVAL && leaveDirectIO(fd) { continue }
                throw HavenError.system("cannot write", path)
            }
            done += n
        }
    }

    /// Turns direct I/O off for `fd`; false when it was not on (or cannot be turned off).
    static func leaveDirectIO(_ fd: Int32) -> Bool {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, flags & haven_o_direct() != 0 else { return false }
        return fcntl(fd, F_SETFL, flags & ~haven_o_direct()) == 0
    }

    /// Ends direct mode: waits for the queued writes, writes the staged whole blocks directly and the
    /// last partial one through the cache, and leaves the file position at the end.
    private func finishDirect() throws {
        guard directMode else { return }
        directMode = false
        drain()
        if let error = writer?.failure { throw error }
        if let staging {
            defer {
                StagingPool.give(staging)
                self.staging = nil
                staged = 0
            }
            let whole = staged & ~(Self.directAlignment - 1)
            try Self.write(fd, UnsafeRawBufferPointer(rebasing: staging[..<whole]), at: fileOffset, path: pathForMessages)
            _ = Self.leaveDirectIO(fd)
            try Self.write(fd, UnsafeRawBufferPointer(rebasing: staging[whole..<staged]), at: fileOffset + whole,
                           path: pathForMessages)
            fileOffset += staged
        } else {
            _ = Self.leaveDirectIO(fd)
        }
        guard lseek(fd, off_t(fileOffset), SEEK_SET) >= 0 else {
            throw HavenError.system("cannot seek in", pathForMessages)
        }
    }

    /// Moves the buffered bytes into the file (and the hash).
    /// A direct spool writes its whole blocks directly and the last partial one through the cache, and
    /// is an ordinary spool from then on.
    private func flush() throws {
        try finishDirect()
        guard buffered > 0, let buffer else { return }
        try writeThrough(UnsafeRawBufferPointer(rebasing: buffer[..<buffered]))
        buffered = 0
    }

    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    /// Appends everything written to `other` (another spool), read back in pieces.
    public func append(contentsOf other: SpoolFile) throws {
        try other.flush()
        let piece = 1 << 20
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: min(piece, max(other.size, 1)), alignment: 16)
        defer { chunk.deallocate() }
        var offset = 0
        while offset < other.size {
            let want = min(chunk.count, other.size - offset)
            let got = try FileSystem.preadFully(other.fd, UnsafeMutableRawBufferPointer(rebasing: chunk[..<want]), offset: offset,
                                                path: "a temporary pack file in \(other.directory)")
            guard got == want else {
                throw HavenError(.io, "a temporary pack file in \(other.directory) is shorter than what was written (\(offset + got) of \(other.size) bytes)")
            }
            try write(UnsafeRawBufferPointer(rebasing: chunk[..<want]))
            offset += want
        }
    }

    /// The SHA-256 of everything written so far.
    public func id() throws -> ID {
        try flush()
        return hasher.finalize()
    }

    /// Fills `buffer` with the content at `offset` (for storages that upload it in pieces). A file
    /// shorter than what was written is an error. Safe from any thread once nothing more is written.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws {
        try flush()
        let got = try FileSystem.preadFully(fd, buffer, offset: offset, path: "a temporary pack file in \(directory)")
        guard got == buffer.count else {
            throw HavenError(.io, "a temporary pack file in \(directory) is shorter than what was written (\(offset + got) of \(size) bytes)")
        }
    }

    /// Reads the whole content (for storages that upload from memory).
    public func readAll() throws -> [UInt8] {
        try flush()
        var out = [UInt8](unsafeUninitializedCapacity: size) { _, count in count = size }
        let got = try out.withUnsafeMutableBytes { try FileSystem.preadFully(fd, $0, offset: 0, path: "a temporary pack file in \(directory)") }
        guard got == size else {
            throw HavenError(.io, "a temporary pack file in \(directory) is shorter than what was written (\(got) of \(size) bytes)")
        }
        return out
    }

    /// Makes the content durable and gives it the name `path` (in the same filesystem), mode 0400.
    /// Succeeds without change when `path` exists already: files are named by their content's hash.
    public func link(to path: String) throws {
        try flush()
        guard fsync(fd) == 0 else { throw HavenError.system("cannot sync a temporary pack file in", directory) }
        fchmod(fd, 0o400)
        if let visible = visiblePath {
            guard rename(visible, path) == 0 else { throw HavenError.system("cannot move a temporary pack file to", path) }
            visiblePath = nil
        } else {
            let r = linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, path, AT_SYMLINK_FOLLOW)
            if r != 0 && errno != EEXIST { throw HavenError.system("cannot give a temporary pack file its name", path) }
        }
        FileSystem.syncDirectory(of: path)
    }

    private var closed = false

    /// Closes the file; an unnamed or unlinked spool disappears.
    public func close() {
        guard !closed else { return }
        closed = true
        drain()
        buffer?.deallocate()
        buffer = nil
        buffered = 0
        if let staging { StagingPool.give(staging) }
        staging = nil
        staged = 0
        if let visible = visiblePath { unlink(visible) }
        _ = Glibc.close(fd)
    }
}

/// A spool's direct writes after the first: run in order on a queue of their own, at most
/// `SpoolFile.maxInFlight` at once. The closures hold this object, not the spool, so a spool is never
/// released (and closed, which waits for its writes) on the queue itself.
final class QueuedWrites: Sendable {
    private let queue = DispatchQueue(label: "haven.spool")
    private let slots = DispatchSemaphore(value: SpoolFile.maxInFlight)
    private let error = Mutex<HavenError?>(nil)

    /// The first failure of a queued write.
    var failure: HavenError? { error.withLock { $0 } }

    /// Queues a write of `buffer[..<count]` at `offset`; the buffer goes back to `StagingPool` after it.
    /// Waits while `maxInFlight` writes are queued; throws an earlier write's failure instead of queueing.
    func enqueue(_ buffer: UnsafeMutableRawBufferPointer, count: Int, fd: Int32, at offset: Int, path: String) throws {
        slots.wait()
        if let failure {
            slots.signal()
            StagingPool.give(buffer)
            throw failure
        }
        let address = UInt(bitPattern: buffer.baseAddress!), capacity = buffer.count
        queue.async { [self] in
            let buffer = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: address), count: capacity)
            do {
                try SpoolFile.write(fd, UnsafeRawBufferPointer(rebasing: buffer[..<count]), at: offset, path: path)
            } catch {
                let failure = (error as? HavenError) ?? HavenError(.io, "\(error)")
                self.error.withLock { if $0 == nil { $0 = failure } }
            }
            StagingPool.give(buffer)
            slots.signal()
        }
    }

    /// Returns once every queued write has ended.
    func drain() { queue.sync {} }
}

/// Staging buffers of direct spools, kept for the next spool: a new buffer's pages would each be faulted
/// in (and zeroed) again, which is what direct I/O saves.
enum StagingPool {
    /// Buffers kept at most; more are freed.
    static let limit = 8
    private static let free = Mutex<[(address: UInt, count: Int)]>([])

    static func take(_ count: Int) -> UnsafeMutableRawBufferPointer {
        let found = free.withLock { list -> UInt? in
            guard let i = list.lastIndex(where: { $0.count == count }) else { return nil }
            return list.remove(at: i).address
        }
        if let found, let base = UnsafeMutableRawPointer(bitPattern: found) {
            return UnsafeMutableRawBufferPointer(start: base, count: count)
        }
        return UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: SpoolFile.directAlignment)
    }

    static func give(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress else { return }
        let kept = free.withLock { list -> Bool in
            guard list.count < limit else { return false }
            list.append((UInt(bitPattern: base), buffer.count))
            return true
        }
        if !kept { buffer.deallocate() }
    }
}

extension Repository {
    /// Finishes a pack whose blobs were written to `spool` (appends the encrypted header and its length)
    /// and stores it under its SHA-256. Returns the pack's ID.
    func savePack(_ spool: SpoolFile, blobs: [PackedBlob]) async throws -> ID {
        let header = key.seal(PackFormat.encodeHeader(blobs))
        try spool.write(header)
        var length: [UInt8] = []
        PackFormat.appendLE(&length, UInt32(header.count))
        try spool.write(length)
        let id = try spool.id()
        try await storage.save(Handle(.pack, id), spooled: spool)
        return id
    }
}
