import Foundation
import HavenCore
#if canImport(Glibc)
import Glibc
#endif

/// A temporary directory removed when the value is released... or explicitly with `remove()`.
public final class TempDir: Sendable {
    public let path: String

    public init(_ label: String = "haven-test") {
        var base = NSTemporaryDirectory()
        while base.count > 1 && base.hasSuffix("/") { base.removeLast() }
        var template = Array("\(base)/\(label)-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(cString: p!)
    }

    public func sub(_ name: String) -> String { path + "/" + name }

    public func remove() {
        _ = try? Subprocess(["/bin/chmod", "-R", "u+rwx", path]).wait(seconds: 60)
        try? FileManager.default.removeItem(atPath: path)
    }

    deinit { remove() }
}

/// A small deterministic PRNG (splitmix64) so fixtures are the same on every run.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9e3779b97f4a7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58476d1ce4e5b9
        z = (z ^ (z >> 27)) &* 0x94d049bb133111eb
        return z ^ (z >> 31)
    }

    /// `n` bytes from a generator seeded with `seed`.
    public static func bytes(seed: UInt64, _ n: Int) -> [UInt8] {
        var r = SeededRandom(seed: seed)
        return r.bytes(n)
    }

    public mutating func bytes(_ n: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        out.withUnsafeMutableBytes { buf in
            var i = 0
            while i + 8 <= n { buf.storeBytes(of: next(), toByteOffset: i, as: UInt64.self); i += 8 }
            while i < n { buf[i] = UInt8(truncatingIfNeeded: next()); i += 1 }
        }
        return out
    }
}

public enum FixtureError: Error, CustomStringConvertible {
    case failed(String)
    public var description: String { if case .failed(let s) = self { return s }; return "" }
}

/// Builds source trees with the kinds of entries a backup must reproduce.
public enum Fixture {
    /// Writes `bytes` to `path` (raw path bytes allowed through RawPath).
    public static func write(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
        try write(RawPath(path), bytes, mode: mode)
    }

    public static func write(_ path: RawPath, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
        let fd = path.withCString { open($0, O_WRONLY | O_CREAT | O_TRUNC, mode) }
        guard fd >= 0 else { throw FixtureError.failed("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            guard n > 0 else { throw FixtureError.failed("cannot write \(path)") }
            done += n
        }
        fchmod(fd, mode)
    }

    public static func mkdir(_ path: String, mode: mode_t = 0o755) throws {
        guard Glibc.mkdir(path, mode) == 0 || errno == EEXIST else { throw FixtureError.failed("mkdir \(path): \(String(cString: strerror(errno)))") }
        chmod(path, mode)
    }

    public static func setTimes(_ path: RawPath, seconds: Int, nanoseconds: Int) {
        var ts = [timespec(tv_sec: seconds, tv_nsec: nanoseconds), timespec(tv_sec: seconds, tv_nsec: nanoseconds)]
        _ = path.withCString { utimensat(AT_FDCWD, $0, &ts, AT_SYMLINK_NOFOLLOW) }
    }

    /// A tree with regular, empty, large (several chunks), compressible and incompressible files,
    /// symlinks, hard links, unusual and non-UTF-8 names, deep directories, various modes and
    /// nanosecond mtimes. `scale` multiplies the large file sizes.
    public static func standardTree(at root: String, seed: UInt64 = 1, scale: Int = 1, nonUTF8Names: Bool = true) throws {
        var rng = SeededRandom(seed: seed)
        try mkdir(root)
        try mkdir(root + "/docs")
        try write(root + "/docs/readme.txt", Array("Haven test fixture\n".utf8))
        try write(root + "/docs/empty", [])
        try write(root + "/docs/private.key", rng.bytes(300), mode: 0o600)
        try write(root + "/docs/script.sh", Array("#!/bin/sh\necho hi\n".utf8), mode: 0o755)
        try write(root + "/docs/readonly.txt", Array("read only\n".utf8), mode: 0o444)
        // Large files: incompressible (chunked), compressible text, and a sparse-looking zero run.
        try mkdir(root + "/big")
        try write(root + "/big/random.bin", rng.bytes(6 * 1024 * 1024 * scale + 12345))
        var text: [UInt8] = []
        let words = ["backup", "restore", "chunk", "pack", "index", "snapshot", "tree", "blob", "haven", "restic"]
        while text.count < 3 * 1024 * 1024 * scale {
            text.append(contentsOf: Array(words[Int(rng.next() % UInt64(words.count))].utf8))
            text.append(rng.next() % 9 == 0 ? 10 : 32)
        }
        try write(root + "/big/words.txt", text)
        var mixed = rng.bytes(700 * 1024)
        mixed += [UInt8](repeating: 0, count: 2 * 1024 * 1024)
        mixed += rng.bytes(300 * 1024)
        try write(root + "/big/zeros-inside.img", mixed)
        // Many small files in nested directories.
        var dir = root + "/deep"
        try mkdir(dir)
        for level in 0..<24 {
            dir += "/level\(level)"
            try mkdir(dir)
            try write(dir + "/file\(level).txt", Array("depth \(level)\n".utf8))
        }
        try mkdir(root + "/many")
        for i in 0..<120 {
            try write(root + "/many/f\(i).dat", rng.bytes(Int(rng.next() % 5000)))
        }
        // Names.
        try mkdir(root + "/names")
        for name in ["with space", "tab\tname", "quote\"name", "back\\slash", "Ünïcödé-名前", "emoji-🎉", "-dash", ".hidden", "new\nline", "percent%s"] {
            try write(root + "/names/" + name, Array(name.utf8))
        }
        if nonUTF8Names {
            try write(RawPath(Array((root + "/names/").utf8) + [0x6c, 0x61, 0x74, 0x69, 0x6e, 0x31, 0xe9, 0xff]), Array("latin1".utf8))
        }
        // Links.
        try mkdir(root + "/links")
        symlink("../docs/readme.txt", root + "/links/relative")
        symlink("/nonexistent/target", root + "/links/dangling")
        symlink("docs", root + "/links/dirlink-name-only")
        try write(root + "/links/hard-a", Array("hard link content\n".utf8))
        link(root + "/links/hard-a", root + "/links/hard-b")
        // Modes.
        try mkdir(root + "/modes", mode: 0o750)
        try mkdir(root + "/modes/setgid", mode: 0o2775)
        try write(root + "/modes/setgid/inside", Array("x".utf8), mode: 0o640)
        // Times with nanoseconds (set last, after all contents exist).
        Fixture.setTimes(RawPath(root + "/docs/readme.txt"), seconds: 1_600_000_000, nanoseconds: 123_456_789)
        Fixture.setTimes(RawPath(root + "/big/words.txt"), seconds: 1_500_000_000, nanoseconds: 1)
        Fixture.setTimes(RawPath(root + "/links/relative"), seconds: 1_400_000_000, nanoseconds: 500)
        Fixture.setTimes(RawPath(root + "/docs"), seconds: 1_650_000_000, nanoseconds: 999_999_999)
    }
}
