import HavenCore

/// Runs `body` holding a repository lock, or without one when `--no-lock` was given and the command
/// only reads (`readOnly`).
func withRepositoryLock<R: Sendable>(_ repo: Repository, exclusive: Bool, global: GlobalOptions, readOnly: Bool = false,
                                     _ body: (Lock?) async throws -> R) async throws -> R {
    if global.noLock {
        guard readOnly else {
            throw HavenError(.usage, "--no-lock is only allowed for commands that do not change the repository")
        }
        return try await body(nil)
    }
    let out = global.output
    return try await withLock(repository: repo, exclusive: exclusive, warning: { out.warning($0) }) { lock in
        try await body(lock)
    }
}
