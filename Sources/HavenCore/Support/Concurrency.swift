import Dispatch
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

/// A counting semaphore for tasks: `acquire` suspends (without blocking a thread) until a permit is free.
public final class AsyncSemaphore: Sendable {
    private struct State {
        var permits: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    public init(permits: Int) { state = Mutex(State(permits: permits)) }

    public func acquire() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { s -> Bool in
                if s.permits > 0 { s.permits -= 1; return true }
                s.waiters.append(c)
                return false
            }
            if resumeNow { c.resume() }
        }
    }

    /// Takes a permit if one is free right now.
    public func tryAcquire() -> Bool {
        state.withLock { s in
            if s.permits > 0 { s.permits -= 1; return true }
            return false
        }
    }

    public func release() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if !s.waiters.isEmpty { return s.waiters.removeFirst() }
            s.permits += 1
            return nil
        }
        waiter?.resume()
    }

    public func withPermit<R: Sendable>(_ body: () async throws -> R) async rethrows -> R {
        await acquire()
        defer { release() }
        return try await body()
    }
}

/// Runs `work` on a thread of its own and suspends until it is done. For system calls that wait for the
/// disk (fsync): Swift's cooperative pool has one thread per core, so a thread waiting there is a core
/// left idle while there is hashing, compressing and encrypting to do.
public func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        // A serial queue of its own runs on the overcommitting root queue: it gets a thread even when
        // every other thread is busy.
        DispatchQueue(label: "haven.blocking").async {
            continuation.resume(with: Result { try work() })
        }
    }
}
