import ArgumentParser
import HavenCore

struct Unlock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unlock",
        abstract: "Remove stale locks (or all locks with --remove-all).",
        discussion: """
        A lock is stale when it is older than 30 minutes or belongs to a process on this host that no \
        longer runs. Remove all locks only when no other process uses the repository.

        Examples:
          haven -r /srv/backup unlock
          haven -r /srv/backup unlock --remove-all
        """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Remove all locks, even those of live processes.")
    var removeAll = false

    func run() async throws {
        let repo = try await global.openRepository(index: false)
        let n = removeAll ? try await Lock.removeAll(repository: repo) : try await Lock.removeStale(repository: repo)
        if global.json {
            global.output.printJSON(["message_type": "unlock", "removed": n])
        } else {
            global.output.info(n == 0 ? "no locks to remove" : "removed \(n) lock\(n == 1 ? "" : "s")")
        }
    }
}
