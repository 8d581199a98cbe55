#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A repository in a local directory. Writes go to a temporary file that is synced and renamed into place.
public struct LocalStorage: Storage {
    public let root: String
    public var location: String { root }
    public var properties: StorageProperties { StorageProperties(connections: 2, atomicReplace: true, consistentListing: true) }

    public init(path: String) {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        root = p
    }

    private func fullPath(_ handle: Handle) -> String { root + "/" + handle.path }

    public func create() async throws {
        if FileSystem.exists(root + "/config") {
            throw HavenError(.invalidArgument, "a repository already exists at \(root): config file found; choose another location")
        }
        try FileSystem.makeDirectories(root, mode: 0o700)
        for dir in ["keys", "snapshots", "index", "locks", "data"] {
            try FileSystem.makeDirectories(root + "/" + dir, mode: 0o700)
        }
        for i in 0..<256 {
            try FileSystem.makeDirectories(root + "/data/" + Hex.encode([UInt8(i)]), mode: 0o700)
        }
    }

    public func save(_ handle: Handle, _ data: [UInt8]) async throws {
        let path = fullPath(handle)
        let dir = String(path[..<path.lastIndex(of: "/")!])
        if !FileSystem.exists(dir) { try FileSystem.makeDirectories(dir, mode: 0o700) }
        // A lock file need not survive a crash: its holder is gone then, and a lost (or torn, hence ignored)
        // lock only spares the next run a stale one. Not syncing it saves two fsyncs per command, which
        // wait behind any writeback in progress (tens of milliseconds after a large backup).
        let durable = handle.type != .lock
        if durable {
            try await offThePool { try FileSystem.writeAtomically(path, data, mode: 0o400, durable: true) }
        } else {
            try FileSystem.writeAtomically(path, data, mode: 0o400, durable: false)
        }
    }

    public var spoolDirectory: String? { root + "/data" }

    /// A spool written in the repository's own directory gets its final name without being copied.
    public func save(_ handle: Handle, spooled file: SpoolFile) async throws {
        let path = fullPath(handle)
        guard file.directory == spoolDirectory else { return try await save(handle, try file.readAll()) }
        let dir = String(path[..<path.lastIndex(of: "/")!])
        if !FileSystem.exists(dir) { try FileSystem.makeDirectories(dir, mode: 0o700) }
        do {
            // The fsync waits for the disk: off the cooperative pool, so both cores keep working.
            try await offThePool { try file.link(to: path) }
        } catch let e as HavenError where e.code != .noSpace {
            // E.g. no /proc to name an unnamed file: copy it instead.
            try await save(handle, try file.readAll())
        }
    }

    public func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] {
        let path = fullPath(handle)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw HavenError.system("cannot open", path) }
        defer { close(fd) }
        let count: Int
        if let length {
            count = length
        } else {
            var st = Glibc.stat()
            guard fstat(fd, &st) == 0 else { throw HavenError.system("cannot stat", path) }
            count = max(0, Int(st.st_size) - offset)
        }
        // Uninitialized: pread fills it, and a short read is an error (nothing unfilled is returned).
        var got = 0
        let out = try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            got = try FileSystem.preadFully(fd, UnsafeMutableRawBufferPointer(buffer), offset: offset, path: path)
            initialized = got
        }
        if got < count {
            throw HavenError(.corrupt, "\(path) is shorter than expected: wanted \(count) bytes at offset \(offset), got \(got)")
        }
        return out
    }

    public func stat(_ handle: Handle) async throws -> Int {
        let path = fullPath(handle)
        var st = Glibc.stat()
        guard Glibc.lstat(path, &st) == 0 else { throw HavenError.system("cannot stat", path) }
        return Int(st.st_size)
    }

    public func list(_ type: FileType) async throws -> [StoredFile] {
        if type == .config {
            return FileSystem.exists(root + "/config") ? [StoredFile(name: "config", size: try await stat(.config))] : []
        }
        let dir = root + "/" + type.directory
        var out: [StoredFile] = []
        if type == .pack {
            for sub in try FileSystem.listDirectory(dir) where sub.count == 2 {
                for name in try FileSystem.listDirectory(dir + "/" + sub) where !name.hasPrefix(".") && !name.contains(".tmp") {
                    out.append(StoredFile(name: name, size: FileSystem.size(dir + "/" + sub + "/" + name) ?? 0))
                }
            }
        } else {
            guard FileSystem.exists(dir) else { return [] }
            for name in try FileSystem.listDirectory(dir) where !name.hasPrefix(".") && !name.contains(".tmp") {
                out.append(StoredFile(name: name, size: FileSystem.size(dir + "/" + name) ?? 0))
            }
        }
        return out
    }

    public func remove(_ handle: Handle) async throws {
        let path = fullPath(handle)
        guard unlink(path) == 0 else { throw HavenError.system("cannot remove", path) }
    }
}
