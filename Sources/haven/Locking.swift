import HavenCore

/// Runs `body` holding a repository lock (unless --no-lock was given for a read-only command).
func withRepositoryLock<R: Sendable>(_ repo: Repository, exclusive: Bool, global: GlobalOptions,
                                     _ body: @Sendable () async throws -> R) async throws -> R {
    // TODO(lead): wire to HavenCore Locks once landed.
    return try await body()
}
