import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// System calls the restorer makes, all relative to directory descriptors so that no path is resolved
/// through a symlink.
enum RestoreFS {
    /// Flags for opening a directory that is only used as the base of *at calls.
    static var directoryOpenFlags: Int32 {
        #if os(Linux) && (arch(x86_64) || arch(arm64))
        // O_PATH (not exported by the Glibc module without _GNU_SOURCE): no read permission needed.
        let oPath: Int32 = 0o10000000
        return oPath | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
        #else
        return O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
        #endif
    }

    /// Runs `body` with `bytes` as a NUL-terminated C string.
    static func withCString<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        var z = bytes
        z.append(0)
        return try z.withUnsafeBufferPointer { buf in
            try buf.withMemoryRebound(to: CChar.self) { try body($0.baseAddress!) }
        }
    }

    /// errno values after which continuing makes no sense: the restore stops.
    static func isFatal(_ err: Int32) -> Bool {
        err == ENOSPC || err == EDQUOT
    }

    /// The error for a failed call on the entry at `path`; `.noSpace` when the disk is full.
    static func failure(_ operation: String, _ path: [UInt8], _ err: Int32 = errno) -> HavenError {
        if isFatal(err) {
            return HavenError(.noSpace, "cannot \(operation) \(RestorePath.display(path)): the disk holding the restore target is full", cause: Errno(err))
        }
        return HavenError(err == ENOENT ? .notFound : .io, "cannot \(operation): \(Errno(err))", cause: Errno(err))
    }

    static func lstat(_ dirFD: Int32, _ name: [UInt8]) -> stat? {
        var st = stat()
        let rc = withCString(name) { fstatat(dirFD, $0, &st, AT_SYMLINK_NOFOLLOW) }
        return rc == 0 ? st : nil
    }

    static func fileType(_ st: stat) -> UInt32 { UInt32(st.st_mode) & UInt32(S_IFMT) }

    static func timeSpec(_ t: Timestamp) -> timespec {
        timespec(tv_sec: Int(t.seconds), tv_nsec: Int(t.nanoseconds))
    }

    static func modificationTime(_ st: stat) -> Timestamp {
        Timestamp(seconds: Int64(st.st_mtim.tv_sec), nanoseconds: Int32(st.st_mtim.tv_nsec))
    }

    /// Writes all of `buffer` at `offset`.
    static func pwriteFully(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, offset: UInt64) -> Int32? {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            if n == 0 { return EIO }
            done += n
        }
        return nil
    }

    /// Reads up to `buffer.count` bytes at `offset`; the number read, or nil with errno set.
    static func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: UInt64) -> Int? {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    static func isAllZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        let n = bytes.count
        while i + 8 <= n {
            if bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
            i += 8
        }
        while i < n {
            if bytes[i] != 0 { return false }
            i += 1
        }
        return true
    }

    /// The target of the symlink `name` in `dirFD`, or nil.
    static func readLink(_ dirFD: Int32, _ name: [UInt8]) -> [UInt8]? {
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = withCString(name) { cname in
            buf.withUnsafeMutableBufferPointer { b in
                b.withMemoryRebound(to: CChar.self) { readlinkat(dirFD, cname, $0.baseAddress!, $0.count) }
            }
        }
        guard n >= 0 else { return nil }
        return Array(buf[0..<n])
    }

    // MARK: Extended attributes

    #if os(Linux)
    private typealias SetXattr = @convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?, UnsafeRawPointer?, Int, Int32) -> Int32

    /// glibc's lsetxattr, looked up at run time (its header is not part of the Glibc module).
    private static let lsetxattrFunction: SetXattr? = {
        guard let handle = dlopen(nil, RTLD_NOW), let sym = dlsym(handle, "lsetxattr") else { return nil }
        return unsafeBitCast(sym, to: SetXattr.self)
    }()
    #endif

    /// Sets an extended attribute on `name` in `dirFD` without following a symlink. Returns errno on failure.
    ///
    /// Linux has no fd-relative setxattr, so the path goes through `/proc/self/fd/<dirFD>`, a link to the
    /// directory itself that is never resolved through the names above it.
    static func setExtendedAttribute(_ dirFD: Int32, _ name: [UInt8], attribute: String, value: [UInt8]) -> Int32? {
        #if os(Linux)
        guard let setter = lsetxattrFunction else { return ENOTSUP }
        let path = Array("/proc/self/fd/\(dirFD)/".utf8) + name
        let rc = withCString(path) { cpath in
            attribute.withCString { cattr in
                value.withUnsafeBytes { setter(cpath, cattr, $0.baseAddress, value.count, 0) }
            }
        }
        return rc == 0 ? nil : errno
        #else
        return ENOTSUP
        #endif
    }
}

/// The restored directories, opened on demand relative to their parents and cached (least recently used
/// ones are closed), so that every directory is reached without following a symlink and the number of
/// open descriptors stays bounded however large the tree.
final class RestoreDirectories: @unchecked Sendable {
    private let lock = NSLock()
    private let rootFD: Int32
    private let entries: [RestorePlan.Entry]
    private let capacity: Int
    private var cache: [Int: Slot] = [:]
    private var clock: UInt64 = 0

    private struct Slot {
        var fd: Int32
        var used: UInt64
    }

    /// `rootFD` is the open target directory; it stays owned by the caller.
    init(rootFD: Int32, entries: [RestorePlan.Entry], capacity: Int = 64) {
        self.rootFD = rootFD
        self.entries = entries
        self.capacity = max(2, capacity)
    }

    deinit { closeAll() }

    /// Another cache of descriptors below the same target, for a worker running beside this one.
    func sibling() -> RestoreDirectories {
        RestoreDirectories(rootFD: rootFD, entries: entries, capacity: capacity)
    }

    /// Runs `body` with the descriptor of directory entry `dir` (nil: the target). `body` runs under a lock.
    func with<R>(_ dir: Int?, _ body: (Int32) throws -> R) throws -> R {
        lock.lock()
        defer { lock.unlock() }
        let fd = try resolve(dir, keep: [])
        return try body(fd)
    }

    /// Runs `body` with the descriptors of two directory entries.
    func with<R>(_ a: Int?, _ b: Int?, _ body: (Int32, Int32) throws -> R) throws -> R {
        lock.lock()
        defer { lock.unlock() }
        let fa = try resolve(a, keep: [])
        let fb = try resolve(b, keep: a.map { [$0] } ?? [])
        return try body(fa, fb)
    }

    func closeAll() {
        lock.lock()
        defer { lock.unlock() }
        for s in cache.values { close(s.fd) }
        cache = [:]
    }

    private func resolve(_ dir: Int?, keep: Set<Int>) throws -> Int32 {
        guard let dir else { return rootFD }
        clock += 1
        if var s = cache[dir] {
            s.used = clock
            cache[dir] = s
            return s.fd
        }
        // Find the nearest open ancestor, then open the directories below it one by one.
        var chain: [Int] = []
        var current: Int? = dir
        var fd = rootFD
        while let c = current {
            if var s = cache[c] {
                s.used = clock
                cache[c] = s
                fd = s.fd
                break
            }
            chain.append(c)
            current = entries[c].parent
        }
        for c in chain.reversed() {
            let next = RestoreFS.withCString(entries[c].name) { openat(fd, $0, RestoreFS.directoryOpenFlags) }
            guard next >= 0 else {
                let err = errno
                let reason = err == ELOOP || err == ENOTDIR ? "it is not a directory (a symlink or file is in its place)" : "\(Errno(err))"
                throw HavenError(err == ENOENT ? .notFound : .io, "cannot open directory \(RestorePath.display(entries[c].path)): \(reason)", cause: Errno(err))
            }
            clock += 1
            cache[c] = Slot(fd: next, used: clock)
            evict(keep: keep.union([c]))
            fd = next
        }
        return fd
    }

    private func evict(keep: Set<Int>) {
        while cache.count > capacity {
            guard let victim = cache.filter({ !keep.contains($0.key) }).min(by: { $0.value.used < $1.value.used }) else { return }
            close(victim.value.fd)
            cache.removeValue(forKey: victim.key)
        }
    }
}
