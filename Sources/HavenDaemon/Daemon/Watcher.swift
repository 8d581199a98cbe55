import Foundation
import HavenCore
#if canImport(Glibc)
import Glibc
#endif

/// Watches directory trees with inotify and reports each changed path. New subdirectories are watched
/// as they appear. Reading happens on a dedicated thread.
public final class Watcher: Sendable {
    let fd: Int32
    let onChange: @Sendable (String) -> Void
    /// Watch descriptor → directory path.
    let watches = Locked<[Int32: String]>([:])
    let problems = Locked<[String]>([])
    let stopped = Locked(false)
    /// inotify's per-user limit is often 8192 watches; stay well below it per daemon.
    static let maxWatches = 50_000

    public init(onChange: @escaping @Sendable (String) -> Void) throws {
        let fd = inotify_init1(Int32(IN_CLOEXEC))
        guard fd >= 0 else { throw HavenError.system("inotify_init1", "", errno: errno) }
        self.fd = fd
        self.onChange = onChange
        let thread = Thread { [self] in self.readLoop() }
        thread.start()
    }

    /// Problems met while adding watches (missing paths, the inotify limit), for the log.
    public var warnings: [String] { problems.withLock { $0 } }

    static let mask = UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB
                             | IN_DELETE_SELF | IN_MOVE_SELF)

    /// Watches `path` and every directory below it.
    public func watch(_ path: String) {
        var stack = [path]
        while let dir = stack.popLast() {
            if watches.withLock({ $0.count }) >= Self.maxWatches {
                problems.withLock { $0.append("watching stopped at \(Self.maxWatches) directories below \(path); changes deeper are not seen") }
                return
            }
            let wd = inotify_add_watch(fd, dir, Self.mask | UInt32(IN_ONLYDIR))
            if wd < 0 {
                let e = errno
                if dir == path {
                    let why = e == ENOSPC ? "the inotify watch limit is reached (raise fs.inotify.max_user_watches)" : String(cString: strerror(e))
                    problems.withLock { $0.append("cannot watch \(dir): \(why)") }
                }
                continue
            }
            watches.withLock { $0[wd] = dir }
            guard let entries = try? FileManager.default.contentsOfDirectory(atPath: dir) else { continue }
            for name in entries {
                let child = dir == "/" ? "/" + name : dir + "/" + name
                var st = stat()
                if lstat(child, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { stack.append(child) }
            }
        }
    }

    public func stop() {
        stopped.withLock { $0 = true }
        // Closing the descriptor ends the blocking read.
        for wd in watches.withLock({ Array($0.keys) }) { inotify_rm_watch(fd, wd) }
        close(fd)
    }

    private func readLoop() {
        let size = 64 * 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        while !stopped.withLock({ $0 }) {
            let n = read(fd, buffer, size)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            var offset = 0
            while offset + MemoryLayout<inotify_event>.size <= n {
                let event = buffer.load(fromByteOffset: offset, as: inotify_event.self)
                let nameStart = buffer.advanced(by: offset + MemoryLayout<inotify_event>.size)
                let name = event.len > 0 ? String(cString: nameStart.assumingMemoryBound(to: CChar.self)) : ""
                offset += MemoryLayout<inotify_event>.size + Int(event.len)
                guard let dir = watches.withLock({ $0[event.wd] }) else { continue }
                let path = name.isEmpty ? dir : (dir == "/" ? "/" + name : dir + "/" + name)
                if event.mask & UInt32(IN_ISDIR) != 0 && event.mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0 {
                    watch(path)
                }
                if event.mask & UInt32(IN_IGNORED) != 0 {
                    _ = watches.withLock { $0.removeValue(forKey: event.wd) }
                    continue
                }
                onChange(path)
            }
        }
    }
}
