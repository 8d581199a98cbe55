import ArgumentParser
import CHavenShims
import Foundation
import HavenCore
#if canImport(Glibc)
import Glibc
#endif

@main
struct Main {
    static func main() async {
        _ = haven_trim_code_pages()
        // restic accepts global flags before the command name; ArgumentParser wants them after it.
        let args = GlobalOptions.reorder(Array(CommandLine.arguments.dropFirst()))
        // A reader that went away (a dead daemon, `| head`) must not kill a command holding a lock: writes
        // then fail quietly and the command finishes or stops cleanly.
        signal(SIGPIPE, SIG_IGN)
        // A job the daemon started stops when the daemon dies, rather than writing on behind its back.
        if let parent = ProcessInfo.processInfo.environment["HAVEN_PARENT_PID"].flatMap(Int32.init) {
            _ = haven_set_parent_death_signal(SIGTERM)
            if getppid() != parent { exit(130) }
        }
        do {
            var command = try Haven.parseAsRoot(args)
            // A command reuses the memory it frees rather than faulting it in again (restore, check);
            // the daemon idles between jobs, which run as commands of their own, and keeps the default.
            if !(command is DaemonCommand) { FreedMemory.keepForReuse() }
            if let asyncCommand = command as? AsyncParsableCommand {
                // SIGINT and SIGTERM cancel the command, which releases its lock and leaves the repository
                // consistent (what was uploaded is reused next time); a second signal exits at once.
                nonisolated(unsafe) var running = asyncCommand
                let task = Task {
                    do {
                        try await running.run()
                    } catch {
                        await OpenedStorages.closeAll()
                        throw error
                    }
                    await OpenedStorages.closeAll()
                }
                let signals = SignalWatcher([SIGINT, SIGTERM]) { _ in
                    if task.isCancelled { exit(130) }
                    task.cancel()
                }
                defer { signals.cancel() }
                try await task.value
            } else {
                try command.run()
            }
        } catch is CancellationError {
            FileHandleOutput.stderr("haven: interrupted")
            exit(130)
        } catch let error as HavenError {
            Output.error(error)
            exit(error.code.exitCode)
        } catch let exit as ExitStatus {
            Glibc.exit(exit.code)
        } catch {
            let code = Haven.exitCode(for: error)
            if code == .success {
                print(Haven.fullMessage(for: error))
                exit(0)
            }
            let message = Haven.fullMessage(for: error)
            FileHandleOutput.stderr(message.hasPrefix("Error:") ? "haven: " + message.dropFirst(7) : message)
            if code == .validationFailure {
                FileHandleOutput.stderr("Run 'haven --help' or 'haven COMMAND --help' for usage.")
            }
            // restic's convention: any failure that is not one of the specific codes is 1.
            exit(1)
        }
    }
}

/// Ends a command with a specific exit code after it printed its own result (e.g. 3 for a partial backup).
struct ExitStatus: Error {
    var code: Int32
}

struct Haven: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "haven",
        abstract: "Supervised backups into restic-compatible repositories.",
        discussion: """
        Haven reads and writes restic repositories (format versions 1 and 2): restic and rustic can read \
        what Haven writes, and Haven can read theirs.

        GLOBAL OPTIONS (accepted before or after the command):
          -r, --repo REPO          repository location (or HAVEN_REPOSITORY, RESTIC_REPOSITORY)
          --password-file FILE     read the password from FILE (or HAVEN_PASSWORD_FILE)
          --password-command CMD   run CMD and read the password from its output
                                   (the password can also come from HAVEN_PASSWORD or RESTIC_PASSWORD,
                                   or from a prompt on a terminal)
          --json                   print results as JSON (progress as JSON lines)
          -q, --quiet              print nothing but errors and requested results
          -v, --verbose            print more detail
          --no-lock                do not lock the repository (read-only commands only)
          --cache-dir DIR          keep the local metadata cache in DIR (default: HAVEN_CACHE_DIR, else
                                   $XDG_CACHE_HOME/haven, else ~/.cache/haven; local repositories
                                   are cached only when --cache-dir is given)
          --no-cache               do not use a local metadata cache
          --limit-upload KiB/s     limit uploads to a maximum rate (default: unlimited)
          --limit-download KiB/s   limit downloads to a maximum rate (default: unlimited)
          -o KEY=VALUE             backend option: s3.storage-class=CLASS, sftp.command=CMD,
                                   local.connections=N, s3.connections=N, sftp.connections=N

        EXIT CODES:
          0   success
          1   fatal error (bad arguments, damaged repository, I/O error, …)
          3   backup finished, but some source files could not be read
          10  the repository does not exist
          11  the repository could not be locked
          12  wrong password
          130 interrupted
        """,
        version: HavenVersion.string,
        subcommands: [
            Init.self, Backup.self, Snapshots.self, Ls.self, Find.self, Diff.self, Cat.self, Stats.self,
            Restore.self, Check.self, Forget.self, Prune.self, Copy.self, Unlock.self, KeyCommand.self, Version.self,
            CacheCommand.self,
            StatusCommand.self, RunCommand.self, JobsCommand.self, LogCommand.self, CancelCommand.self,
            DaemonCommand.self, ConfigCommand.self,
        ]
    )
}
