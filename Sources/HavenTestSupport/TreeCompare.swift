import Crypto
import Foundation
import HavenCore
#if canImport(Glibc)
import Glibc
#endif

/// Describes a directory tree for comparison: per relative path, type, permissions, size, content hash,
/// mtime, link target, and hard-link groups.
public struct TreeSnapshot: Sendable {
    public struct Entry: Sendable, Equatable {
        public var type: UInt32
        public var permissions: UInt32
        public var size: Int64
        public var sha256: String
        public var mtimeSeconds: Int
        public var mtimeNanoseconds: Int
        public var linkTarget: [UInt8]
        public var inode: UInt64
        public var links: UInt64
    }

    public var entries: [[UInt8]: Entry] = [:]

    public init(root: String) throws {
        try walk(RawPath(root), relative: [])
    }

    private mutating func walk(_ dir: RawPath, relative: [UInt8]) throws {
        guard let d = dir.withCString({ opendir($0) }) else { throw FixtureError.failed("cannot list \(dir)") }
        var names: [[UInt8]] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw -> [UInt8] in
                let b = raw.bindMemory(to: UInt8.self)
                return Array(b[..<(b.firstIndex(of: 0) ?? b.count)])
            }
            if name != [46] && name != [46, 46] { names.append(name) }
        }
        closedir(d)
        for name in names {
            let path = dir.appending(name)
            let rel = relative.isEmpty ? name : relative + [47] + name
            var st = stat()
            guard path.withCString({ lstat($0, &st) }) == 0 else { throw FixtureError.failed("cannot stat \(path)") }
            let type = UInt32(st.st_mode) & UInt32(S_IFMT)
            var entry = Entry(type: type, permissions: UInt32(st.st_mode) & 0o7777, size: Int64(st.st_size), sha256: "",
                              mtimeSeconds: st.st_mtim.tv_sec, mtimeNanoseconds: st.st_mtim.tv_nsec, linkTarget: [],
                              inode: UInt64(st.st_ino), links: UInt64(st.st_nlink))
            if type == UInt32(S_IFREG) {
                entry.sha256 = try Self.hashFile(path)
            } else if type == UInt32(S_IFLNK) {
                var buf = [CChar](repeating: 0, count: 4096)
                let n = path.withCString { readlink($0, &buf, 4096) }
                entry.linkTarget = buf[0..<max(0, n)].map { UInt8(bitPattern: $0) }
            }
            if type == UInt32(S_IFDIR) { entry.size = 0 }
            entries[rel] = entry
            if type == UInt32(S_IFDIR) { try walk(path, relative: rel) }
        }
    }

    static func hashFile(_ path: RawPath) throws -> String {
        let fd = path.withCString { open($0, O_RDONLY) }
        guard fd >= 0 else { throw FixtureError.failed("cannot open \(path)") }
        defer { close(fd) }
        var hasher = SHA256()
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 1 << 20) }
            if n <= 0 { break }
            hasher.update(data: buf[0..<n])
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Differences from `other` (the restored copy), as readable lines; empty when equal.
    /// Directory and symlink mtimes are compared only when `compareDirectoryTimes` is set.
    public func differences(from other: TreeSnapshot, compareDirectoryTimes: Bool = false) -> [String] {
        var out: [String] = []
        func show(_ p: [UInt8]) -> String { String(decoding: p, as: UTF8.self) }
        for (path, a) in entries.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            guard let b = other.entries[path] else { out.append("missing: \(show(path))"); continue }
            if a.type != b.type { out.append("type differs: \(show(path))"); continue }
            if a.type != UInt32(S_IFLNK) && a.permissions != b.permissions {
                out.append("mode differs: \(show(path)) \(String(a.permissions, radix: 8)) vs \(String(b.permissions, radix: 8))")
            }
            if a.type == UInt32(S_IFREG) {
                if a.size != b.size || a.sha256 != b.sha256 { out.append("content differs: \(show(path))") }
            }
            if a.type == UInt32(S_IFLNK) && a.linkTarget != b.linkTarget { out.append("link target differs: \(show(path))") }
            let timed = a.type == UInt32(S_IFREG) || (compareDirectoryTimes && a.type == UInt32(S_IFDIR))
            if timed && (a.mtimeSeconds != b.mtimeSeconds || a.mtimeNanoseconds != b.mtimeNanoseconds) {
                out.append("mtime differs: \(show(path)) \(a.mtimeSeconds).\(a.mtimeNanoseconds) vs \(b.mtimeSeconds).\(b.mtimeNanoseconds)")
            }
        }
        for path in other.entries.keys where entries[path] == nil { out.append("unexpected: \(show(path))") }
        // Hard links: paths sharing an inode in the source share one in the copy.
        let groups = Dictionary(grouping: entries.filter { $0.value.type == UInt32(S_IFREG) && $0.value.links > 1 }, by: { $0.value.inode })
        for (_, members) in groups where members.count > 1 {
            let inodes = Set(members.compactMap { other.entries[$0.key]?.inode })
            if inodes.count != 1 { out.append("hard link lost: \(members.map { show($0.key) }.sorted())") }
        }
        return out
    }
}
