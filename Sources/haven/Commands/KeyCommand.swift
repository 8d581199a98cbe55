import ArgumentParser
import Foundation
import HavenCore
#if canImport(Glibc)
import Glibc
#endif

struct KeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Manage the keys (passwords) that open the repository.",
        discussion: """
        Every key file holds the repository's master key encrypted with one password; any of them opens \
        the repository. Adding a key adds a password; removing it revokes that password.

        Examples:
          haven -r /srv/backup key list
          haven -r /srv/backup key add --new-password-file ~/.new-pass --user ops
          haven -r /srv/backup key remove 1a2b3c4d
          haven -r /srv/backup key passwd
        """,
        subcommands: [List.self, Add.self, Remove.self, Passwd.self]
    )

    /// Accepted so that `haven -r REPO key` (global options moved after "key") shows this help instead of
    /// failing; each subcommand reads its own copy.
    @OptionGroup(visibility: .hidden) var global: GlobalOptions
}

extension KeyCommand {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List the repository's keys.",
            discussion: """
            The key used to open the repository (the one your password matches) is marked with "*".

            Examples:
              haven -r /srv/backup key list
              haven -r /srv/backup key list --json
            """
        )

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let repo = try await global.openRepository(index: false)
            let out = global.output
            let json = global.json
            try await withRepositoryLock(repo, exclusive: false, global: global) { _ in
                var rows: [(current: Bool, id: ID, user: String, host: String, created: String, sortKey: Timestamp)] = []
                for f in try await repo.storage.list(.key) {
                    guard let id = ID(hex: f.name) else { continue }
                    do {
                        let key = try KeyFile.decode(try await repo.storage.load(Handle(.key, id)))
                        let t = Timestamp(rfc3339: key.created)
                        let shown = t.map { Timestamp(seconds: $0.seconds, utcOffset: Timestamp.localOffset(at: $0.seconds)).display } ?? key.created
                        rows.append((id == repo.keyID, id, key.username, key.hostname, shown, t ?? Timestamp(seconds: 0)))
                    } catch let e as HavenError {
                        out.warning("key \(id.short) cannot be read: \(e.message)")
                        rows.append((id == repo.keyID, id, "", "", "(damaged)", Timestamp(seconds: 0)))
                    }
                }
                rows.sort { ($0.sortKey, $0.id) < ($1.sortKey, $1.id) }
                if json {
                    out.printJSON(rows.map { ["current": $0.current, "id": $0.id.short, "userName": $0.user,
                                              "hostName": $0.host, "created": $0.created] as [String: Any] })
                    return
                }
                print(Format.table([" ID", "User", "Host", "Created"],
                                   rows.map { [($0.current ? "*" : " ") + $0.id.short, $0.user, $0.host, $0.created] }))
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add",
            abstract: "Add a key (a new password) to the repository.",
            discussion: """
            The new password is read from --new-password-file, or asked for twice on the terminal. The \
            repository itself is opened with the current password (--password-file, HAVEN_PASSWORD, …).

            Examples:
              haven -r /srv/backup key add
              haven -r /srv/backup key add --new-password-file ~/.new-pass --user ops
            """
        )

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("File to read the new password from (required without a terminal).", valueName: "FILE"))
        var newPasswordFile: String?

        @Option(help: ArgumentHelp("Host name to record in the new key (default: this host).", valueName: "HOST"))
        var host: String?

        @Option(help: ArgumentHelp("User name to record in the new key (default: the current user).", valueName: "USER"))
        var user: String?

        func run() async throws {
            let repo = try await global.openRepository(index: false)
            let password = try KeyCommand.newPassword(file: newPasswordFile)
            let (host, user) = (host, user)
            let id = try await withRepositoryLock(repo, exclusive: false, global: global) { _ in
                try await KeyCommand.addKey(repo, password: password, host: host, user: user).0
            }
            if global.json {
                global.output.printJSON(["message_type": "key_added", "id": id.hex])
            } else {
                global.output.info("saved new key with ID \(id.hex)")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "remove",
            abstract: "Remove a key from the repository.",
            discussion: """
            ID is the key's ID or a unique prefix (see `haven key list`). The key that opened the repository \
            cannot be removed: open it with another key's password to remove this one.

            Examples:
              haven -r /srv/backup key remove 1a2b3c4d
            """
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The key's ID or unique ID prefix.", valueName: "ID"))
        var id: String

        func run() async throws {
            let repo = try await global.openRepository(index: false)
            let arg = id
            let removed = try await withRepositoryLock(repo, exclusive: true, global: global) { _ in
                let kid = try await Inspect.resolveFile(repo.storage, .key, arg)
                guard kid != repo.keyID else {
                    throw HavenError(.invalidArgument, "refusing to remove key \(kid.short): it is the key this password opened; "
                        + "open the repository with another key's password to remove it (or use `haven key passwd` to change the password)")
                }
                try await repo.storage.remove(Handle(.key, kid))
                return kid
            }
            if global.json {
                global.output.printJSON(["message_type": "key_removed", "id": removed.hex])
            } else {
                global.output.info("removed key \(removed.hex)")
            }
        }
    }

    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "passwd",
            abstract: "Change the password of the key in use.",
            discussion: """
            Adds a key with the new password, checks that it opens the repository, then removes the key that \
            the current password opened. Other keys are not affected.

            Examples:
              haven -r /srv/backup key passwd
              haven -r /srv/backup key passwd --new-password-file new.txt
            """
        )

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("File to read the new password from (required without a terminal).", valueName: "FILE"))
        var newPasswordFile: String?

        @Option(help: ArgumentHelp("Host name to record in the new key (default: this host).", valueName: "HOST"))
        var host: String?

        @Option(help: ArgumentHelp("User name to record in the new key (default: the current user).", valueName: "USER"))
        var user: String?

        func run() async throws {
            let repo = try await global.openRepository(index: false)
            let password = try KeyCommand.newPassword(file: newPasswordFile)
            let (host, user) = (host, user)
            let id = try await withRepositoryLock(repo, exclusive: true, global: global) { _ in
                let (id, bytes) = try await KeyCommand.addKey(repo, password: password, host: host, user: user)
                // Only remove the old key once the new one is known to open the repository.
                do {
                    guard try KeyFile.decode(bytes).open(password: password) == repo.key else {
                        throw HavenError(.fatal, "the new key does not hold the repository's master key")
                    }
                    _ = try await repo.storage.load(Handle(.key, id))
                } catch {
                    try? await repo.storage.remove(Handle(.key, id))
                    throw HavenError(.fatal, "the new key could not be verified, so the password was not changed", cause: error as? HavenError)
                }
                try await repo.storage.remove(Handle(.key, repo.keyID))
                return id
            }
            if global.json {
                global.output.printJSON(["message_type": "key_changed", "id": id.hex, "removed": repo.keyID.hex])
            } else {
                global.output.info("saved new key as \(id.hex)")
                global.output.info("removed old key \(repo.keyID.short)")
            }
        }
    }

    /// Wraps the repository's master key under `password` and stores the new key file.
    static func addKey(_ repo: Repository, password: String, host: String?, user: String?) async throws -> (ID, [UInt8]) {
        let params = try Init.kdfOverride() ?? KDFParameters.calibrate()
        let file = try KeyFile.create(password: password, master: repo.key, parameters: params,
                                      hostname: host ?? Host.name, username: user ?? Host.user)
        let bytes = try file.encoded()
        let id = ID.hash(bytes)
        try await repo.storage.save(Handle(.key, id), bytes)
        return (id, bytes)
    }

    /// The new password: from `file`, or asked twice on the terminal.
    static func newPassword(file: String?) throws -> String {
        if let file { return try PasswordText.fromFile(file, what: "new password file") }
        // Ask only when a person is there: stdin or stderr is a terminal and /dev/tty can be opened.
        let fd = isatty(0) == 1 || isatty(2) == 1 ? open("/dev/tty", O_RDWR) : -1
        guard fd >= 0 else {
            throw HavenError(.usage, "no new password given: use --new-password-file FILE (there is no terminal to ask on)")
        }
        close(fd)
        let pw = try Terminal.readPassword("enter new password: ")
        guard !pw.isEmpty else { throw HavenError(.usage, "an empty password is not allowed") }
        let again = try Terminal.readPassword("enter password again: ")
        guard pw == again else { throw HavenError(.usage, "the passwords do not match; nothing was changed") }
        return pw
    }
}
