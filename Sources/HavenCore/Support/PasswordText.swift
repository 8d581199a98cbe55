import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a repository password from a file or a command's output by restic's rules, so that one password
/// file opens the same repository in both tools: a UTF-8 byte order mark is dropped, UTF-16 with a byte
/// order mark is decoded, and white space at both ends is removed (the text between is kept whole,
/// including line breaks). The command line and the daemon both read passwords here.
public enum PasswordText {
    /// The password in the file at `path`. `what` names it in errors ("password file", "new password file").
    public static func fromFile(_ path: String, what: String = "password file") throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            var isDirectory: ObjCBool = false
            let reason = !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) ? "it does not exist"
                : isDirectory.boolValue ? "it is a directory" : "it is not readable by this user"
            throw HavenError(.usage, "cannot read the \(what) \(path): \(reason)")
        }
        let text = trimmed(decode([UInt8](data)))
        guard !text.isEmpty else { throw HavenError(.usage, "the \(what) \(path) is empty (or only white space)") }
        return text
    }

    /// The password a shell command prints on stdout. With `timeout`, the command (and all it started) is
    /// killed after that many seconds and that is an error; without one, the command shares the terminal
    /// (it may ask for a passphrase) and its error messages go to this process's stderr.
    public static func fromCommand(_ command: String, timeout: Double? = nil) throws -> String {
        let child = try Subprocess(["/bin/sh", "-c", command], newProcessGroup: timeout != nil,
                                   sharesTerminal: timeout == nil)
        child.closeStdin()
        if let timeout { child.signal(SIGKILL, ifRunningAfter: timeout) }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(child.stdout, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            output += buffer[0..<n]
            guard output.count <= 1 << 20 else {
                child.terminate(grace: 1)
                throw HavenError(.usage, "the password command printed more than 1 MiB; it should print only the password")
            }
        }
        let code = child.wait(seconds: .infinity) ?? -1
        if child.timerFired {
            throw HavenError(.usage, "the password command did not finish within \(Int(timeout ?? 0)) s and was stopped")
        }
        guard code == 0 else {
            throw HavenError(.usage, "the password command failed with exit code \(code)" + (child.exit?.signaled == true ? " (a signal)" : ""))
        }
        let text = trimmed(decode(output))
        guard !text.isEmpty else { throw HavenError(.usage, "the password command printed nothing") }
        return text
    }

    /// The bytes as text: without a UTF-8 byte order mark, or decoded from UTF-16 when one leads them.
    static func decode(_ bytes: [UInt8]) -> String {
        if bytes.starts(with: [0xef, 0xbb, 0xbf]) { return String(decoding: bytes.dropFirst(3), as: UTF8.self) }
        let bigEndian = bytes.starts(with: [0xfe, 0xff]), littleEndian = bytes.starts(with: [0xff, 0xfe])
        guard bigEndian || littleEndian else { return String(decoding: bytes, as: UTF8.self) }
        var units: [UInt16] = []
        units.reserveCapacity(bytes.count / 2)
        var i = 2
        while i + 1 < bytes.count {
            let (hi, lo) = bigEndian ? (bytes[i], bytes[i + 1]) : (bytes[i + 1], bytes[i])
            units.append(UInt16(hi) << 8 | UInt16(lo))
            i += 2
        }
        return String(decoding: units, as: UTF16.self)
    }

    /// Without white space (Unicode's, as Go's `strings.TrimSpace`) at either end.
    static func trimmed(_ s: String) -> String {
        let scalars = s.unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(scalars[first...last])
    }
}
