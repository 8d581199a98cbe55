import Foundation

/// A job waiting in, or taken from, the queue.
public struct QueuedJob: Sendable, Hashable, Identifiable {
    public var id: Int64
    public var kind: JobKind
    /// The backup definition (or repository, for repository-level jobs) the job works on.
    public var target: String
    /// Repositories the job locks while it runs.
    public var repositories: Set<String>
    public var priority: Priority
    public var enqueuedAt: Date
    public var trigger: Trigger

    public init(id: Int64, kind: JobKind, target: String, repositories: Set<String>, priority: Priority,
                enqueuedAt: Date, trigger: Trigger) {
        self.id = id; self.kind = kind; self.target = target; self.repositories = repositories
        self.priority = priority; self.enqueuedAt = enqueuedAt; self.trigger = trigger
    }
}

/// A request to queue a job.
public struct JobRequest: Sendable, Hashable {
    public var kind: JobKind
    public var target: String
    public var repositories: Set<String>
    public var priority: Priority
    public var trigger: Trigger

    public init(kind: JobKind, target: String, repositories: Set<String>, priority: Priority, trigger: Trigger) {
        self.kind = kind; self.target = target; self.repositories = repositories
        self.priority = priority; self.trigger = trigger
    }
}

/// What to do with a request.
public enum Admission: Sendable, Hashable {
    /// Queue it as a new pending job.
    case insert
    /// The same job is already pending: keep that one, raising its priority to the given one when not nil.
    case merge(existingID: Int64, raiseTo: Priority?)
}

/// The queue's rules as pure functions over the pending and running jobs.
public enum QueuePolicy {
    /// The same kind of job for the same target asked twice is queued once, at the higher priority.
    /// Only pending jobs merge: a request for a job that is running queues a new one to run after it.
    public static func admit(_ request: JobRequest, pending: [QueuedJob]) -> Admission {
        let same = pending.filter { $0.kind == request.kind && $0.target == request.target }
        guard let existing = same.max(by: { order($1, before: $0) }) else { return .insert }
        return .merge(existingID: existing.id, raiseTo: request.priority > existing.priority ? request.priority : nil)
    }

    /// Start order: higher priority first, then first queued, then lower id.
    public static func order(_ a: QueuedJob, before b: QueuedJob) -> Bool {
        if a.priority != b.priority { return a.priority > b.priority }
        if a.enqueuedAt != b.enqueuedAt { return a.enqueuedAt < b.enqueuedAt }
        return a.id < b.id
    }

    /// The pending jobs to start now, in start order.
    ///
    /// Rules: a job locks all its repositories, and at most one job uses a repository at a time; a job
    /// waiting for a busy repository reserves its repositories, so lower-ranked jobs cannot take them first;
    /// at most `maxConcurrent` jobs run (at least 1), except that `immediate` jobs may exceed it; `idle` jobs
    /// start only when nothing is running and no other job is pending, one at a time.
    public static func startable(pending: [QueuedJob], running: [QueuedJob], maxConcurrent: Int) -> [QueuedJob] {
        let limit = max(1, maxConcurrent)
        var busy = Set(running.flatMap(\.repositories))
        var reserved = Set<String>()
        var active = running.count
        var started: [QueuedJob] = []
        let sorted = pending.sorted(by: order)
        let othersPending = sorted.contains { !$0.priority.isIdle }
        for job in sorted {
            let blockedByRepository = !job.repositories.isDisjoint(with: busy) || !job.repositories.isDisjoint(with: reserved)
            if job.priority.isIdle {
                guard active == 0, !othersPending, !blockedByRepository else { continue }
            } else if blockedByRepository {
                reserved.formUnion(job.repositories)
                continue
            } else if active >= limit && !job.priority.isImmediate {
                reserved.formUnion(job.repositories)
                continue
            }
            started.append(job)
            busy.formUnion(job.repositories)
            active += 1
        }
        return started
    }
}
