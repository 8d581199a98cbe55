#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import CHavenShims

/// A path as raw bytes, with helpers to call the C library. File names need not be UTF-8.
public struct RawPath: Sendable, Hashable, CustomStringConvertible {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ string: String) { self.bytes = Array(string.utf8) }

    public func appending(_ name: [UInt8]) -> RawPath {
        if bytes == [UInt8(ascii: "/")] { return RawPath(bytes + name) }
        return RawPath(bytes + [UInt8(ascii: "/")] + name)
    }

    public var description: String {
        String(validating: bytes, as: UTF8.self) ?? String(decoding: GoQuote.quote(bytes), as: UTF8.self)
    }

    public func withCString<R>(_ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        try (bytes + [0]).withUnsafeBufferPointer { buf in
            try buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buf.count) { try body($0) }
        }
    }
}

/// The parts of `lstat` the archiver uses.
struct FileInfo {
    var mode: UInt32
    var uid: UInt32
    var gid: UInt32
    var size: UInt64
    var inode: UInt64
    var device: UInt64
    var rdev: UInt64
    var links: UInt64
    var blocks: Int64
    var atime: Timestamp
    var mtime: Timestamp
    var ctime: Timestamp

    init(_ st: stat) {
        mode = UInt32(st.st_mode)
        uid = st.st_uid
        gid = st.st_gid
        size = UInt64(max(0, st.st_size))
        inode = UInt64(st.st_ino)
        device = UInt64(st.st_dev)
        rdev = UInt64(st.st_rdev)
        links = UInt64(st.st_nlink)
        blocks = Int64(st.st_blocks)
        atime = FileInfo.time(st.st_atim)
        mtime = FileInfo.time(st.st_mtim)
        ctime = FileInfo.time(st.st_ctim)
    }

    static func time(_ ts: timespec) -> Timestamp {
        let s = Int64(ts.tv_sec)
        return Timestamp(seconds: s, nanoseconds: Int32(ts.tv_nsec), utcOffset: Timestamp.localOffset(at: s))
    }

    /// lstat of `name` in the open directory `dirfd`; `path` names it in errors.
    static func lstat(at dirfd: Int32, _ name: [UInt8], path: RawPath) -> Result<FileInfo, HavenError> {
        var st = stat()
        let r = (name + [0]).withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { fstatat(dirfd, $0.baseAddress!, &st, AT_SYMLINK_NOFOLLOW) }
        }
        if r != 0 { return .failure(HavenError.system("cannot stat", path.description)) }
        return .success(FileInfo(st))
    }

    static func lstat(_ path: RawPath) -> Result<FileInfo, HavenError> {
        var st = stat()
        let r = path.withCString { Glibc.lstat($0, &st) }
        if r != 0 { return .failure(HavenError.system("cannot stat", path.description)) }
        return .success(FileInfo(st))
    }

    var fileType: UInt32 { mode & UInt32(S_IFMT) }
    var isRegular: Bool { fileType == UInt32(S_IFREG) }
    var isDirectory: Bool { fileType == UInt32(S_IFDIR) }

    var nodeKind: Node.Kind {
        switch fileType {
        case UInt32(S_IFREG): return .file
        case UInt32(S_IFDIR): return .dir
        case UInt32(S_IFLNK): return .symlink
        case UInt32(S_IFBLK): return .dev
        case UInt32(S_IFCHR): return .chardev
        case UInt32(S_IFIFO): return .fifo
        case UInt32(S_IFSOCK): return .socket
        default: return .irregular
        }
    }
}

/// Caches uid → user name and gid → group name lookups.
final class NameCache: Sendable {
    private let users = Mutex<[UInt32: String]>([:])
    private let groups = Mutex<[UInt32: String]>([:])

    func user(_ uid: UInt32) -> String {
        if let n = users.withLock({ $0[uid] }) { return n }
        var pw = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buf = [CChar](repeating: 0, count: 4096)
        var name = ""
        if getpwuid_r(uid, &pw, &buf, buf.count, &result) == 0, result != nil, let p = pw.pw_name { name = String(cString: p) }
        users.withLock { $0[uid] = name }
        return name
    }

    func group(_ gid: UInt32) -> String {
        if let n = groups.withLock({ $0[gid] }) { return n }
        var gr = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buf = [CChar](repeating: 0, count: 4096)
        var name = ""
        if getgrgid_r(gid, &gr, &buf, buf.count, &result) == 0, result != nil, let p = gr.gr_name { name = String(cString: p) }
        groups.withLock { $0[gid] = name }
        return name
    }
}

enum ExtendedAttributes {
    /// Reads a path's extended attributes without following symlinks. Unsupported filesystems give [].
    static func read(_ path: RawPath) -> [Node.ExtendedAttribute] {
        path.withCString { p in
            collect(list: { llistxattr(p, $0, $1) }, get: { lgetxattr(p, $0, $1, $2) })
        }
    }

    /// Reads the extended attributes of an open file (no path lookup).
    static func read(descriptor fd: Int32) -> [Node.ExtendedAttribute] {
        collect(list: { flistxattr(fd, $0, $1) }, get: { fgetxattr(fd, $0, $1, $2) })
    }

    /// The attributes that `list` names, with the values `get` returns, sorted by name.
    private static func collect(list: (UnsafeMutablePointer<CChar>?, Int) -> Int,
                                get: (UnsafePointer<CChar>, UnsafeMutableRawPointer?, Int) -> Int) -> [Node.ExtendedAttribute] {
        let size = list(nil, 0)
        guard size > 0 else { return [] }
        var names = [CChar](repeating: 0, count: size)
        let got = names.withUnsafeMutableBufferPointer { list($0.baseAddress, size) }
        guard got > 0 else { return [] }
        var out: [Node.ExtendedAttribute] = []
        var start = 0
        for i in 0..<got where names[i] == 0 {
            let nameBytes = names[start..<i].map { UInt8(bitPattern: $0) }
            start = i + 1
            guard !nameBytes.isEmpty else { continue }
            let name = String(decoding: nameBytes, as: UTF8.self)
            let vsize = get(name, nil, 0)
            guard vsize >= 0 else { continue }
            var value = [UInt8](repeating: 0, count: vsize)
            let vgot = vsize == 0 ? 0 : value.withUnsafeMutableBytes { get(name, $0.baseAddress, vsize) }
            guard vgot >= 0 else { continue }
            out.append(Node.ExtendedAttribute(name: name, value: Array(value.prefix(vgot))))
        }
        return out.sorted { $0.name < $1.name }
    }
}
