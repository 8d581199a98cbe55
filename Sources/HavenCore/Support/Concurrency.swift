import Synchronization

/// A value behind a mutex, for collecting results from concurrent tasks.
public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    public init(_ value: Value) { mutex = Mutex(value) }
    public func withLock<R: Sendable>(_ body: (inout Value) throws -> R) rethrows -> R {
        try mutex.withLock { try body(&$0) }
    }
}

/// Runs `body` for each element with at most `limit` running at once. The first error cancels the rest
/// and is rethrown.
public func forEachConcurrently<S: Sequence>(
    _ items: S, limit: Int, _ body: @escaping @Sendable (S.Element) async throws -> Void
) async throws where S.Element: Sendable {
    try await withThrowingTaskGroup(of: Void.self) { group in
        var running = 0
        for item in items {
            if running >= limit {
                try await group.next()
                running -= 1
            }
            group.addTask { try await body(item) }
            running += 1
        }
        try await group.waitForAll()
    }
}
