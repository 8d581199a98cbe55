import Foundation
import Testing
import HavenCore
import HavenTestSupport
@testable import HavenDaemon

/// The daemon opens repositories itself (API browsing) and through `haven` jobs; both must get the same
/// password from the same config.
@Suite("Password sources")
struct PasswordSourceTests {
    @Test("file and command passwords are read as the haven command line reads them; values stay as given")
    func sameAsCommandLine() throws {
        let tmp = TempDir("password-source")
        try Fixture.write(tmp.sub("pw"), Array("  first\nsecond \n".utf8))
        #expect(try PasswordSource.file(tmp.sub("pw")).resolve(repository: "r") == PasswordText.fromFile(tmp.sub("pw")))
        #expect(try PasswordSource.file(tmp.sub("pw")).resolve(repository: "r") == "first\nsecond")
        #expect(try PasswordSource.command("printf 'a\\nb\\n'").resolve(repository: "r") == "a\nb")
        #expect(try PasswordSource.environment("PW").resolve(repository: "r", environment: ["PW": " spaced "]) == " spaced ")
        #expect(try PasswordSource.literal("lit").resolve(repository: "r") == "lit")
    }

    @Test("a missing variable, an empty value or a slow command is an error naming the repository")
    func errors() throws {
        let sources: [(PasswordSource, [String: String], String)] = [
            (.environment("PW"), [:], "not set"),
            (.environment("PW"), ["PW": ""], "empty"),
            (.file("/nonexistent/pw"), [:], "does not exist"),
            (.command("sleep 30"), [:], "did not finish"),
        ]
        for (source, env, words) in sources {
            let error = try #require(throws: HavenError.self) {
                try source.resolve(repository: "nas", environment: env, commandTimeout: 0.5)
            }
            #expect(error.message.contains("repository nas") && error.message.contains(words), "\(error.message)")
        }
    }
}
