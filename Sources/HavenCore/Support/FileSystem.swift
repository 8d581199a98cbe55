#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Thin wrappers over POSIX calls that the storage and the archiver share.
enum FileSystem {
    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    static func size(_ path: String) -> Int? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int(st.st_size)
    }

    static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        if isDirectory(path) { return }
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            try makeDirectories(String(path[..<slash]), mode: mode)
        }
        if mkdir(path, mode) != 0 && errno != EEXIST {
            throw HavenError.system("cannot create directory", path)
        }
    }

    /// Names in a directory, without "." and "..".
    /// The name of a directory entry returned by `readdir`, as bytes.
    static func entryName(_ entry: UnsafeMutablePointer<dirent>) -> [UInt8] {
        withUnsafeBytes(of: entry.pointee.d_name) { raw in
            let b = raw.bindMemory(to: UInt8.self)
            return Array(b[..<(b.firstIndex(of: 0) ?? b.count)])
        }
    }

    static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw HavenError.system("cannot list", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> String in
                let bytes = raw.bindMemory(to: UInt8.self)
                let len = bytes.firstIndex(of: 0) ?? bytes.count
                return String(decoding: UnsafeBufferPointer(rebasing: bytes[..<len]), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Reads until `buffer` is full or end of file; returns the bytes read.
    static func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int, path: String) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw HavenError.system("cannot read", path)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    static func writeFully(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < buffer.count {
            let n = write(fd, buffer.baseAddress! + done, buffer.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw HavenError.system("cannot write", path)
            }
            done += n
        }
    }

    /// Writes `data` to a temporary file beside `path` and renames it into place, so that `path` either
    /// holds all of `data` or is left as it was. `durable` also syncs the file before the rename and the
    /// directory after it, so that this holds across a crash too.
    static func writeAtomically(_ path: String, _ data: [UInt8], mode: mode_t = 0o600, durable: Bool = true) throws {
        let tmp = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw HavenError.system("cannot create", tmp) }
        do {
            try data.withUnsafeBytes { try writeFully(fd, $0, path: tmp) }
            guard !durable || fsync(fd) == 0 else { throw HavenError.system("cannot sync", tmp) }
            close(fd)
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw HavenError.system("cannot rename into place", path, errno: e)
        }
        if durable { syncDirectory(of: path) }
    }

    static func syncDirectory(of path: String) {
        guard let slash = path.lastIndex(of: "/") else { return }
        let dir = slash == path.startIndex ? "/" : String(path[..<slash])
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
    }
}
