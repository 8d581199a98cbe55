import Foundation
import HavenCore
import Synchronization

/// A repository on an SSH server, reached by running `ssh … -s sftp` and speaking SFTP version 3.
///
/// One connection is opened on first use and shared by all requests (which are pipelined). If it breaks,
/// the next operation opens a new one. `save` writes a temporary file next to the target and renames it
/// into place; SFTP v3 cannot rename over an existing file, so replacing removes the old file first.
public final class SFTPStorage: Storage {
    public let sftpLocation: SFTPLocation
    public let location: String
    /// The program and arguments that start the SFTP session.
    public let command: [String]
    /// `connections` is how many operations callers should run at once. They all share one pipelined SSH
    /// session, so more only helps to overlap the round trips of small files (restic's default is 5 too).
    public var properties: StorageProperties { StorageProperties(connections: connections, atomicReplace: false, consistentListing: true) }
    private let connections: Int

    private let handshakeTimeout: Double
    private let requestTimeout: Double
    private let current = Mutex<Task<SFTPConnection, any Error>?>(nil)

    /// - Parameters:
    ///   - command: replaces the whole ssh command line (like restic's `-o sftp.command=…`); it must start
    ///     an SFTP server on its stdin/stdout. By default: `ssh [-p PORT] [-l USER] HOST -s sftp` in batch mode.
    ///   - connections: the parallelism reported in `properties` (`-o sftp.connections`), at least 1.
    public init(location: SFTPLocation, command: [String]? = nil, connections: Int = 5,
                handshakeTimeout: Double = 30, requestTimeout: Double = 120) {
        sftpLocation = location
        self.connections = max(1, connections)
        self.location = location.description
        self.command = command ?? Self.defaultCommand(location)
        self.handshakeTimeout = handshakeTimeout
        self.requestTimeout = requestTimeout
    }

    /// Parses `url` (see `SFTPLocation.parse`).
    public convenience init(url: String, command: [String]? = nil, connections: Int = 5,
                            handshakeTimeout: Double = 30, requestTimeout: Double = 120) throws {
        self.init(location: try SFTPLocation.parse(url), command: command, connections: connections,
                  handshakeTimeout: handshakeTimeout, requestTimeout: requestTimeout)
    }

    public static func defaultCommand(_ location: SFTPLocation) -> [String] {
        var args = ["ssh", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=60", "-o", "ServerAliveCountMax=3"]
        if let port = location.port { args += ["-p", String(port)] }
        if let user = location.user { args += ["-l", user] }
        args += [location.host, "-s", "sftp"]
        return args
    }

    deinit {
        let task = current.withLock { $0 }
        task?.cancel()
        Task { [task] in (try? await task?.value)?.close() }
    }

    /// Ends the SSH session and waits for ssh to exit (a later operation opens a new one).
    public func close() async {
        let task = current.withLock { t -> Task<SFTPConnection, any Error>? in defer { t = nil }; return t }
        await (try? await task?.value)?.closeAndWait()
    }

    // MARK: Connection

    func connection() async throws -> SFTPConnection {
        let task = current.withLock { t -> Task<SFTPConnection, any Error> in
            if let t { return t }
            let command = self.command, location = self.location
            let hs = handshakeTimeout, rt = requestTimeout
            let new = Task { try await SFTPConnection.open(command: command, location: location, handshakeTimeout: hs, requestTimeout: rt) }
            t = new
            return new
        }
        do {
            let c = try await task.value
            if c.isAlive { return c }
            // Broken: replace it (once, even when several callers notice together).
            current.withLock { if $0 == task { $0 = nil } }
            return try await connection()
        } catch {
            current.withLock { if $0 == task { $0 = nil } }
            throw error
        }
    }

    /// The current session's largest number of requests in flight at once, its READ/WRITE sizes and the
    /// files it opened (nil without a session). For tests and diagnostics.
    func sessionStatistics() async -> (peakOutstanding: Int, readChunk: Int, writeChunk: Int, opens: Int)? {
        guard let task = current.withLock({ $0 }), let c = try? await task.value else { return nil }
        return (c.peakOutstandingRequests, c.readChunk, c.writeChunk, c.opensSent)
    }

    // MARK: Paths and errors

    private func remote(_ relative: String) -> String {
        let root = sftpLocation.path
        if relative.isEmpty { return root }
        if root == "/" { return "/" + relative }
        return root + "/" + relative
    }

    private func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    private struct StatusError: Error {
        var code: UInt32
        var message: String
    }

    /// Checks a reply for `expected`; a STATUS reply becomes a HavenError for `operation` on `path`.
    private func expect(_ c: SFTPConnection, _ r: Response, _ expected: UInt8, _ operation: String, _ path: String) throws -> PacketReader {
        if r.type == expected && expected != SFTP.status { return r.reader }
        if r.type == SFTP.status {
            let (code, message) = try c.decode(r) { r -> (UInt32, String) in
                let code = try r.u32()
                let message = r.remaining > 0 ? ((try? r.text()) ?? "") : ""
                return (code, message)
            }
            if expected == SFTP.status && code == SFTP.ok { return r.reader }
            throw statusError(code, message, operation, path)
        }
        throw HavenError(.io, "protocol error from the SFTP server at \(location): unexpected reply type \(r.type) to \(operation) \(path)")
    }

    private func statusError(_ code: UInt32, _ message: String, _ operation: String, _ path: String) -> HavenError {
        let detail = message.isEmpty ? "" : ": \(message)"
        switch code {
        case SFTP.noSuchFile: return HavenError(.notFound, "cannot \(operation) \(path) on \(sftpLocation.host): no such file or directory")
        case SFTP.permissionDenied: return HavenError(.io, "cannot \(operation) \(path) on \(sftpLocation.host): permission denied\(detail)")
        case SFTP.eof: return HavenError(.corrupt, "cannot \(operation) \(path) on \(sftpLocation.host): unexpected end of file")
        default: return HavenError(.io, "cannot \(operation) \(path) on \(sftpLocation.host)\(detail) (SFTP status \(code))")
        }
    }

    private func status(_ c: SFTPConnection, _ r: Response, _ operation: String, _ path: String) throws {
        _ = try expect(c, r, SFTP.status, operation, path)
    }

    private func statusCode(_ c: SFTPConnection, _ r: Response) throws -> UInt32? {
        guard r.type == SFTP.status else { return nil }
        return try c.decode(r) { try $0.u32() }
    }

    // MARK: Primitive operations

    private func statAttrs(_ c: SFTPConnection, _ path: String) async throws -> FileAttributes {
        let r = try await c.request(SFTP.stat) { $0.string(path) }
        var reader = try expect(c, r, SFTP.attrs, "stat", path)
        return try c.decode(r) { _ in try reader.attrs() }
    }

    private func openFile(_ c: SFTPConnection, _ path: String, flags: UInt32, permissions: UInt32?, operation: String) async throws -> [UInt8] {
        let r = try await c.request(SFTP.open) { w in
            w.string(path)
            w.u32(flags)
            w.attrs(permissions: permissions)
        }
        var reader = try expect(c, r, SFTP.handle, operation, path)
        return try c.decode(r) { _ in Array(try reader.string()) }
    }

    private func closeHandle(_ c: SFTPConnection, _ handle: [UInt8], _ path: String) async throws {
        let r = try await c.request(SFTP.close) { $0.string(handle) }
        try status(c, r, "close", path)
    }

    private func mkdir(_ c: SFTPConnection, _ path: String) async throws {
        let r = try await c.request(SFTP.mkdir) { w in
            w.string(path)
            w.attrs(permissions: 0o700)
        }
        if r.type == SFTP.status, try statusCode(c, r) == SFTP.ok { return }
        // It may exist already (servers report that as a plain failure).
        if let a = try? await statAttrs(c, path), a.isDirectory { return }
        try status(c, r, "create directory", path)
    }

    /// Creates `path` and missing parents.
    private func mkdirAll(_ c: SFTPConnection, _ path: String) async throws {
        if let a = try? await statAttrs(c, path) {
            if a.isDirectory { return }
            throw HavenError(.io, "cannot create directory \(path) on \(sftpLocation.host): a file is in the way")
        }
        let parent = directory(of: path)
        if parent != path && parent != "." && parent != "/" {
            try await mkdirAll(c, parent)
        }
        try await mkdir(c, path)
    }

    private func removeFile(_ c: SFTPConnection, _ path: String) async throws {
        let r = try await c.request(SFTP.remove) { $0.string(path) }
        try status(c, r, "remove", path)
    }

    private func rename(_ c: SFTPConnection, _ from: String, _ to: String) async throws -> Response {
        try await c.request(SFTP.rename) { w in
            w.string(from)
            w.string(to)
        }
    }

    // MARK: Storage

    public func create() async throws {
        let c = try await connection()
        let config = remote(Handle.config.path)
        if let a = try? await statAttrs(c, config), !a.isDirectory {
            throw HavenError(.invalidArgument, "a repository already exists at \(location): config file found; choose another location")
        }
        try await mkdirAll(c, sftpLocation.path)
        for dir in ["keys", "snapshots", "index", "locks", "data"] {
            try await mkdir(c, remote(dir))
        }
        // The 256 pack directories, pipelined.
        var replies: [(String, Reply)] = []
        for i in 0..<256 {
            let path = remote("data/" + Self.hexByte(UInt8(i)))
            replies.append((path, try c.send(SFTP.mkdir) { w in
                w.string(path)
                w.attrs(permissions: 0o700)
            }))
        }
        for (path, reply) in replies {
            let r = try await reply.value()
            if try statusCode(c, r) == SFTP.ok { continue }
            if let a = try? await statAttrs(c, path), a.isDirectory { continue }
            try status(c, r, "create directory", path)
        }
    }

    static func hexByte(_ b: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(b >> 4)], digits[Int(b & 15)]])
    }

    public func save(_ handle: Handle, _ data: [UInt8]) async throws {
        try await save(handle, content: .bytes(data))
    }

    /// Writes a pack straight from its spool file, a write request's worth at a time, so an upload holds
    /// at most its window of requests instead of the whole pack.
    public func save(_ handle: Handle, spooled file: SpoolFile) async throws {
        try await save(handle, content: .spool(file))
    }

    /// What a save writes: bytes in memory, or a spool file read as it is sent.
    private enum Content {
        case bytes([UInt8])
        case spool(SpoolFile)

        var count: Int {
            switch self {
            case .bytes(let data): return data.count
            case .spool(let file): return file.size
            }
        }
    }

    private func save(_ handle: Handle, content: Content) async throws {
        let c = try await connection()
        let path = remote(handle.path)
        var random = SystemRandomNumberGenerator()
        let tmp = path + ".tmp-" + String(random.next() as UInt64, radix: 16)
        let flags = SFTP.openWrite | SFTP.openCreate | SFTP.openTruncate | SFTP.openExclusive
        let fileHandle: [UInt8]
        do {
            fileHandle = try await openFile(c, tmp, flags: flags, permissions: 0o600, operation: "create")
        } catch let e as HavenError where e.code == .notFound {
            // The directory (e.g. data/XX) is missing: create it and try again.
            try await mkdirAll(c, directory(of: path))
            fileHandle = try await openFile(c, tmp, flags: flags, permissions: 0o600, operation: "create")
        }
        do {
            try await writeAll(c, fileHandle, content, tmp)
            if c.extensions["fsync@openssh.com"] != nil {
                let r = try await c.request(SFTP.extended) { w in
                    w.string("fsync@openssh.com")
                    w.string(fileHandle)
                }
                try status(c, r, "sync", tmp)
            }
            try await closeHandle(c, fileHandle, tmp)
        } catch {
            _ = try? await closeHandle(c, fileHandle, tmp)
            _ = try? await removeFile(c, tmp)
            throw error
        }
        do {
            let first = try await rename(c, tmp, path)
            if try statusCode(c, first) != SFTP.ok {
                // SFTP v3 rename does not replace: remove the old file, then rename again.
                if (try? await statAttrs(c, path)) != nil {
                    try await removeFile(c, path)
                    try status(c, try await rename(c, tmp, path), "rename \(tmp) to", path)
                } else {
                    try status(c, first, "rename \(tmp) to", path)
                }
            }
        } catch {
            _ = try? await removeFile(c, tmp)
            throw error
        }
    }

    private func writeAll(_ c: SFTPConnection, _ handle: [UInt8], _ content: Content, _ path: String) async throws {
        var inFlight: [Reply] = []
        var offset = 0
        let chunk = c.writeChunk, window = max(8, SFTP.inFlightBytes / chunk)
        func drainOne() async throws {
            let reply = inFlight.removeFirst()
            try status(c, try await reply.value(), "write", path)
        }
        let size = content.count
        var piece: [UInt8] = []
        while offset < size {
            let end = min(size, offset + chunk)
            let off = offset
            if case .spool(let file) = content {
                piece = try [UInt8](unsafeUninitializedCapacity: end - off) { buffer, count in
                    count = 0
                    try file.read(into: UnsafeMutableRawBufferPointer(buffer), at: off)
                    count = end - off
                }
            }
            inFlight.append(try c.send(SFTP.write) { w in
                w.string(handle)
                w.u64(UInt64(off))
                if case .bytes(let data) = content { w.string(data[off..<end]) } else { w.string(piece) }
            })
            offset = end
            if inFlight.count >= window { try await drainOne() }
        }
        while !inFlight.isEmpty { try await drainOne() }
    }

    public func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] {
        guard offset >= 0, (length ?? 0) >= 0 else {
            throw HavenError(.invalidArgument, "invalid range offset \(offset) length \(length ?? -1) for \(handle.path)")
        }
        let (c, fh, path) = try await openForReading(handle)
        do {
            let count: Int
            if let length {
                count = length
            } else {
                let r = try await c.request(SFTP.fstat) { $0.string(fh) }
                var reader = try expect(c, r, SFTP.attrs, "stat", path)
                let size = try c.decode(r) { _ in try reader.attrs().size } ?? 0
                count = max(0, Int(clamping: size) - offset)
            }
            let out = try await readRange(c, fh, path, offset: offset, count: count)
            try await closeHandle(c, fh, path)
            return out
        } catch {
            _ = try? await closeHandle(c, fh, path)
            throw error
        }
    }

    private func readRange(_ c: SFTPConnection, _ fh: [UInt8], _ path: String, offset: Int, count: Int) async throws -> [UInt8] {
        var pipeline = ReadPipeline(c, fh, path, offset: offset, length: count)
        return try await pull(&pipeline, count)
    }

    /// Opens `handle` and reads `length` bytes from `offset` through one file handle, with read requests
    /// kept up to `SFTP.inFlightBytes` ahead of the caller: one open and one close for the whole range,
    /// and no round trip between the pieces the caller asks for.
    public func reader(_ handle: Handle, offset: Int, length: Int) async throws -> any StorageReader {
        guard offset >= 0, length >= 0 else {
            throw HavenError(.invalidArgument, "invalid range offset \(offset) length \(length) for \(handle.path)")
        }
        return SFTPReader(self, handle, offset: offset, length: length)
    }

    /// Opens `handle` for reading (for `load` and readers): the session, the file handle and its path.
    fileprivate func openForReading(_ handle: Handle) async throws -> (SFTPConnection, [UInt8], String) {
        let c = try await connection()
        let path = remote(handle.path)
        return (c, try await openFile(c, path, flags: SFTP.openRead, permissions: nil, operation: "open"), path)
    }

    fileprivate func closeAfterReading(_ c: SFTPConnection, _ fh: [UInt8], _ path: String) async {
        _ = try? await closeHandle(c, fh, path)
    }

    /// The pipeline's next `count` bytes, asking for more as answers come in: up to `count` bytes and the
    /// pipeline's read-ahead past them, at most `SFTP.inFlightBytes` at once. A server may answer a read
    /// with fewer bytes than asked: the rest is asked for at once and taken before the answers after it.
    /// The end of the file before the end of the range is `.corrupt`.
    fileprivate func pull(_ p: inout ReadPipeline, _ count: Int) async throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        if !p.spill.isEmpty {
            let n = min(count, p.spill.count)
            out.append(contentsOf: p.spill.prefix(n))
            p.spill.removeFirst(n)
        }
        let chunk = p.connection.readChunk, window = max(8, SFTP.inFlightBytes / chunk)
        let goal = min(p.end, p.taken + count + p.ahead)
        while out.count < count {
            while p.asked < goal && p.inFlight.count < window {
                let want = min(chunk, goal - p.asked)
                p.inFlight.append((p.asked, want, try p.ask(p.asked, want)))
                p.asked += want
            }
            let (at, want, reply) = p.inFlight.removeFirst()
            let r = try await reply.value()
            var bytes: ArraySlice<UInt8> = []
            let atEnd = try statusCode(p.connection, r) == SFTP.eof
            if !atEnd {
                var reader = try expect(p.connection, r, SFTP.data, "read", p.path)
                bytes = try p.connection.decode(r) { _ in try reader.string() }
            }
            guard bytes.count <= want else {
                throw HavenError(.io, "protocol error from the SFTP server at \(location): read of \(want) bytes returned \(bytes.count)")
            }
            guard !bytes.isEmpty else {
                throw HavenError(.corrupt, "\(p.path) is shorter than expected: wanted \(p.end - p.start) bytes at offset \(p.start), got \(at - p.start)")
            }
            if bytes.count < want { p.inFlight.insert((at + bytes.count, want - bytes.count, try p.ask(at + bytes.count, want - bytes.count)), at: 0) }
            let n = min(bytes.count, count - out.count)
            out.append(contentsOf: bytes.prefix(n))
            if n < bytes.count { p.spill = bytes.dropFirst(n) }
        }
        p.taken += count
        p.ahead = min(SFTP.inFlightBytes, max(2 * p.ahead, count))
        return out
    }

    public func stat(_ handle: Handle) async throws -> Int {
        let c = try await connection()
        let path = remote(handle.path)
        let a = try await statAttrs(c, path)
        return Int(clamping: a.size ?? 0)
    }

    /// Entries of a directory: name and attributes, without "." and "..".
    private func readDirectory(_ c: SFTPConnection, _ path: String) async throws -> [(String, FileAttributes)] {
        let r = try await c.request(SFTP.opendir) { $0.string(path) }
        var reader = try expect(c, r, SFTP.handle, "list", path)
        let dh = try c.decode(r) { _ in Array(try reader.string()) }
        var entries: [(String, FileAttributes)] = []
        do {
            while true {
                let r = try await c.request(SFTP.readdir) { $0.string(dh) }
                if r.type == SFTP.status, try statusCode(c, r) == SFTP.eof { break }
                var reader = try expect(c, r, SFTP.name, "list", path)
                try c.decode(r) { _ in
                    let n = try reader.u32()
                    for _ in 0..<n {
                        let name = try reader.text()
                        _ = try reader.string()
                        let attrs = try reader.attrs()
                        if name != "." && name != ".." { entries.append((name, attrs)) }
                    }
                }
            }
        } catch {
            _ = try? await closeHandle(c, dh, path)
            throw error
        }
        try await closeHandle(c, dh, path)
        return entries
    }

    private func files(_ entries: [(String, FileAttributes)]) -> [StoredFile] {
        entries.compactMap { name, a in
            guard !name.hasPrefix("."), !name.contains(".tmp"), a.isRegular else { return nil }
            return StoredFile(name: name, size: Int(clamping: a.size ?? 0))
        }
    }

    public func list(_ type: FileType) async throws -> [StoredFile] {
        let c = try await connection()
        if type == .config {
            do {
                return [StoredFile(name: "config", size: try await stat(.config))]
            } catch let e as HavenError where e.code == .notFound {
                return []
            }
        }
        let dir = remote(type.directory)
        let entries: [(String, FileAttributes)]
        do {
            entries = try await readDirectory(c, dir)
        } catch let e as HavenError where e.code == .notFound {
            return []
        }
        guard type == .pack else { return files(entries) }
        let subdirs = entries.filter { $0.0.count == 2 && $0.1.isDirectory }.map { $0.0 }
        let collected = Locked<[StoredFile]>([])
        try await forEachConcurrently(subdirs, limit: 16) { sub in
            let found = try await self.files(self.readDirectory(c, dir + "/" + sub))
            collected.withLock { $0.append(contentsOf: found) }
        }
        return collected.withLock { $0 }
    }

    public func remove(_ handle: Handle) async throws {
        let c = try await connection()
        try await removeFile(c, remote(handle.path))
    }
}

/// The read requests for a range of an open file: sent in file order, answered in any order, taken in
/// file order.
struct ReadPipeline {
    let connection: SFTPConnection
    let handle: [UInt8]
    let path: String
    /// The range, as file offsets.
    let start: Int, end: Int
    /// Where the next request starts, and where the next byte taken is.
    var asked: Int, taken: Int
    /// How far past what a caller takes to ask ahead: none at first (a reader may be closed after its
    /// first piece), then doubling with each piece taken, up to `SFTP.inFlightBytes`.
    var ahead = 0
    /// Requests not taken yet, in file order: offset, bytes asked for, the answer.
    var inFlight: [(Int, Int, Reply)] = []
    /// Bytes of the last answer beyond what was taken.
    var spill: ArraySlice<UInt8> = []

    init(_ connection: SFTPConnection, _ handle: [UInt8], _ path: String, offset: Int, length: Int) {
        self.connection = connection
        self.handle = handle
        self.path = path
        start = offset
        end = offset + length
        asked = offset
        taken = offset
    }

    func ask(_ offset: Int, _ count: Int) throws -> Reply {
        try connection.send(SFTP.read) { w in
            w.string(handle)
            w.u64(UInt64(offset))
            w.u32(UInt32(count))
        }
    }
}

/// A range read through one file handle (see `SFTPStorage.reader`). The file is opened at the first read;
/// closing drops the answers not taken and closes the handle.
final class SFTPReader: StorageReader {
    private let storage: SFTPStorage
    private var range: ReadRange
    private var pipeline: ReadPipeline?
    private var closed = false

    init(_ storage: SFTPStorage, _ handle: Handle, offset: Int, length: Int) {
        self.storage = storage
        range = ReadRange(handle, offset: offset, length: length)
    }

    var remaining: Int { range.remaining }

    func read(_ count: Int) async throws -> [UInt8] {
        range.check(count)
        precondition(!closed, "read from a closed reader")
        if pipeline == nil {
            let (c, fh, path) = try await storage.openForReading(range.handle)
            pipeline = ReadPipeline(c, fh, path, offset: range.offset, length: range.remaining)
        }
        let out = try await storage.pull(&pipeline!, count)
        range.advance(count)
        return out
    }

    func close() async {
        guard !closed else { return }
        closed = true
        guard let p = pipeline else { return }
        pipeline = nil
        await storage.closeAfterReading(p.connection, p.handle, p.path)
    }
}
