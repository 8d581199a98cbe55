#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Crypto
import CHavenShims

/// A file assembled on disk before it is stored (a pack being filled), so a backup does not hold whole
/// packs in memory.
///
/// Where the system allows it the file has no name (`O_TMPFILE`) until `link(to:)` gives it one, so a
/// crash leaves nothing behind; elsewhere it is a hidden file that is removed when the spool is closed.
/// The SHA-256 of everything written is kept as it goes, so the storage ID costs no second pass.
/// Small writes (a pack of tiny blobs) are gathered in a buffer and reach the file and the hash in
/// pieces of `bufferCapacity` bytes. Not thread-safe: one owner at a time.
public final class SpoolFile: @unchecked Sendable {
    public let directory: String
    let fd: Int32
    /// The visible name when `O_TMPFILE` was not available (removed on close).
    public private(set) var visiblePath: String?
    /// Bytes written so far, including those still in the buffer.
    public private(set) var size = 0
    private var hasher = SHA256()
    /// Writes smaller than this are gathered before they reach the file.
    static let bufferCapacity = 128 * 1024
    /// Bytes written but not yet in the file (allocated on the first small write).
    private var buffer: UnsafeMutableRawBufferPointer?
    private var buffered = 0

    /// Creates an empty spool file in `directory` (the system's temporary directory when nil). With
    /// `unnamed` false, or where the filesystem has no unnamed files, it is a hidden named file.
    public init(in directory: String?, unnamed: Bool = true) throws {
        let dir = directory ?? SpoolFile.temporaryDirectory
        self.directory = dir
        let tmpfile = unnamed ? haven_o_tmpfile() : 0
        var fd: Int32 = tmpfile != 0 ? open(dir, tmpfile | O_RDWR | O_CLOEXEC, 0o600) : -1
        if fd < 0 {
            // Not every filesystem supports unnamed files; fall back to a hidden named one.
            let path = dir + "/.haven-spool-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
            fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw HavenError.system("cannot create a temporary file for a pack in", dir)
            }
            visiblePath = path
        }
        self.fd = fd
    }

    deinit { close() }

    static var temporaryDirectory: String {
        if let t = getenv("TMPDIR"), t.pointee != 0 { return String(cString: t) }
        return "/tmp"
    }

    /// Appends `bytes`.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
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
        hasher.update(bufferPointer: bytes)
    }

    /// Moves the buffered bytes into the file (and the hash).
    private func flush() throws {
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
        let digest = hasher.finalize()
        return digest.withUnsafeBytes { ID(bytes: $0) }
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
        buffer?.deallocate()
        buffer = nil
        buffered = 0
        if let visible = visiblePath { unlink(visible) }
        _ = Glibc.close(fd)
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
