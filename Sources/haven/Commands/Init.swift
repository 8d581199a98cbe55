import ArgumentParser
import Foundation
import HavenCore

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a new repository.",
        discussion: """
        Examples:
          haven init -r /srv/backup --password-file ~/.haven-pass
          haven init -r /mnt/nas/haven --copy-chunker-params --from-repo /srv/backup
        """
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("Repository format version: 1, 2, latest or stable.", valueName: "VERSION"))
    var repositoryVersion = "2"

    @Flag(help: "Use the chunker polynomial of the repository given by --from-repo, so both deduplicate alike.")
    var copyChunkerParams = false

    @Option(help: ArgumentHelp("Source repository for --copy-chunker-params.", valueName: "REPO"))
    var fromRepo: String?

    @Option(help: ArgumentHelp("Password file of the --from-repo repository.", valueName: "FILE"))
    var fromPasswordFile: String?

    func run() async throws {
        let version: Int
        switch repositoryVersion {
        case "1": version = 1
        case "2", "latest", "stable": version = 2
        default: throw HavenError(.usage, "invalid --repository-version \"\(repositoryVersion)\": use 1, 2, latest or stable")
        }
        var polynomial: Polynomial?
        if copyChunkerParams {
            guard let fromRepo else { throw HavenError(.usage, "--copy-chunker-params needs --from-repo") }
            let pw = try fromPasswordFile.map { try PasswordText.fromFile($0, what: "source password file") }
                ?? ProcessInfo.processInfo.environment["HAVEN_FROM_PASSWORD"]
                ?? global.password(prompt: "enter password for source repository: ")
            let source = try await Repository.open(storage: GlobalOptions.storage(for: fromRepo), password: pw)
            polynomial = source.config.chunkerPolynomial
        } else if fromRepo != nil {
            throw HavenError(.usage, "--from-repo is only used with --copy-chunker-params")
        }
        let storage = try global.storage()
        let password = try global.password(prompt: "enter password for new repository: ", confirm: true)
        let repo = try await Repository.initialize(storage: storage, password: password, version: version,
                                                   polynomial: polynomial, kdf: Init.kdfOverride())
        let out = global.output
        if global.json {
            out.printJSON(["message_type": "initialized", "id": repo.config.id, "repository": storage.location])
        } else {
            out.info("created restic repository \(repo.config.id.prefix(10)) at \(storage.location)")
            out.info("")
            out.info("Please note that knowledge of your password is required to access")
            out.info("the repository. Losing your password means that your data is")
            out.info("irrecoverably lost.")
        }
    }

    /// `HAVEN_KDF_PARAMS=N,r,p` sets scrypt parameters for new keys (for tests; the default calibrates).
    static func kdfOverride() throws -> KDFParameters? {
        guard let s = ProcessInfo.processInfo.environment["HAVEN_KDF_PARAMS"] else { return nil }
        let parts = s.split(separator: ",").compactMap { Int($0) }
        guard parts.count == 3, parts[0] >= 2, parts[0] & (parts[0] - 1) == 0, parts[1] >= 1, parts[2] >= 1 else {
            throw HavenError(.usage, "HAVEN_KDF_PARAMS must be N,r,p with N a power of two, e.g. 1024,8,1")
        }
        return KDFParameters(n: parts[0], r: parts[1], p: parts[2])
    }
}

struct Version: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print version information.")
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        if global.json {
            global.output.printJSON(["message_type": "version", "version": HavenVersion.string, "repository_versions": [1, 2]])
        } else {
            print("haven \(HavenVersion.string) (restic repository format 1 and 2) on Linux")
        }
    }
}
