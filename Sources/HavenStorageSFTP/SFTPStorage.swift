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

    /// The current session's largest number of requests in flight at once, and its READ/WRITE sizes
    /// (nil without a session). For tests and diagnostics.
    func sessionStatistics() async -> (peakOutstanding: Int, readChunk: Int, writeChunk: Int)? {
        guard let task = current.withLock({ $0 }), let c = try? await task.value else { return nil }
        return (c.peakOutstandingRequests, c.readChunk, c.writeChunk)
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
        let c = try await connection()
        let path = remote(handle.path)
        let fh = try await openFile(c, path, flags: SFTP.openRead, permissions: nil, operation: "open")
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
        var out = [UInt8](repeating: 0, count: count)
        let chunk = c.readChunk, window = max(8, SFTP.inFlightBytes / chunk)
        // Requests in flight: (position in `out`, bytes wanted, reply).
        var inFlight: [(Int, Int, Reply)] = []
        var next = 0
        var shortOf: Int?
        func issue(_ pos: Int, _ want: Int) throws {
            inFlight.append((pos, want, try c.send(SFTP.read) { w in
                w.string(fh)
                w.u64(UInt64(offset + pos))
                w.u32(UInt32(want))
            }))
        }
        while next < count || !inFlight.isEmpty {
            while next < count && inFlight.count < window && shortOf == nil {
                let want = min(chunk, count - next)
                try issue(next, want)
                next += want
            }
            if inFlight.isEmpty { break }
            let (pos, want, reply) = inFlight.removeFirst()
            let r = try await reply.value()
            if r.type == SFTP.status, try statusCode(c, r) == SFTP.eof {
                shortOf = min(shortOf ?? pos, pos)
                continue
            }
            var reader = try expect(c, r, SFTP.data, "read", path)
            let chunk = try c.decode(r) { _ in try reader.string() }
            guard chunk.count <= want else {
                throw HavenError(.io, "protocol error from the SFTP server at \(location): read of \(want) bytes returned \(chunk.count)")
            }
            if chunk.isEmpty {
                shortOf = min(shortOf ?? pos, pos)
                continue
            }
            out.replaceSubrange(pos..<(pos + chunk.count), with: chunk)
            // A server may return less than asked: ask for the rest.
            if chunk.count < want { try issue(pos + chunk.count, want - chunk.count) }
        }
        if let shortOf {
            throw HavenError(.corrupt, "\(path) is shorter than expected: wanted \(count) bytes at offset \(offset), got \(shortOf)")
        }
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
