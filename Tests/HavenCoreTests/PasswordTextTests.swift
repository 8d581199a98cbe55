import Foundation
import Testing
@testable import HavenCore
import HavenTestSupport

/// Password files and commands are read by restic's rules, so one password file opens a repository in both.
@Suite("Password text")
struct PasswordTextTests {
    @Test("a password file loses white space at both ends and a byte order mark; its inner lines are kept")
    func files() throws {
        let tmp = TempDir("password-text")
        let cases: [([UInt8], String)] = [
            (Array("secret\n".utf8), "secret"),
            (Array("  secret with spaces \t\r\n\n".utf8), "secret with spaces"),
            ([0xef, 0xbb, 0xbf] + Array("bom\n".utf8), "bom"),
            ([0xff, 0xfe] + Array("ü!\n".utf16).flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] }, "ü!"),
            ([0xfe, 0xff] + Array("ü!\n".utf16).flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }, "ü!"),
            (Array("line one\nline two\n".utf8), "line one\nline two"),
            (Array("\u{00A0}nbsp\u{3000}".utf8), "nbsp"),
        ]
        for (k, (bytes, expected)) in cases.enumerated() {
            let path = tmp.sub("pw\(k)")
            try Fixture.write(path, bytes)
            #expect(try PasswordText.fromFile(path) == expected, "case \(k)")
        }
    }

    @Test("an empty, missing or unreadable password file is an error that names it")
    func badFiles() throws {
        let tmp = TempDir("password-text-bad")
        try Fixture.write(tmp.sub("blank"), Array(" \n\t\n".utf8))
        for (path, words) in [(tmp.sub("blank"), "empty"), (tmp.sub("missing"), "does not exist"), (tmp.path, "directory")] {
            let error = try #require(throws: HavenError.self) { try PasswordText.fromFile(path) }
            #expect(error.code == .usage)
            #expect(error.message.contains(path) && error.message.contains(words), "\(error.message)")
        }
    }

    @Test("a password command's output is trimmed; a failing, silent or slow command is an error")
    func commands() throws {
        #expect(try PasswordText.fromCommand("printf '  two\\nlines \\n\\n'") == "two\nlines")
        #expect(try PasswordText.fromCommand("echo from-daemon", timeout: 10) == "from-daemon")
        let failed = try #require(throws: HavenError.self) { try PasswordText.fromCommand("echo nope; exit 3", timeout: 10) }
        #expect(failed.message.contains("exit code 3"))
        let silent = try #require(throws: HavenError.self) { try PasswordText.fromCommand("printf '\\n'", timeout: 10) }
        #expect(silent.message.contains("printed nothing"))
        // The shell starts a child that keeps stdout open: the whole group must be stopped for the read to end.
        let start = Date()
        let slow = try #require(throws: HavenError.self) { try PasswordText.fromCommand("sleep 30 | cat", timeout: 0.5) }
        #expect(slow.message.contains("did not finish within"))
        #expect(Date().timeIntervalSince(start) < 20, "the timeout did not stop the command")
    }
}
