/// The error every Haven operation throws.
///
/// `code` says what kind of failure it was (and picks the process exit code), `message` says what
/// failed, on which object or path, and what to do; `cause` keeps the underlying error when one exists.
public struct HavenError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case fatal, usage, repositoryNotFound, lockFailed, wrongPassword, notARepository
            case corrupt, notFound, io, noSpace, invalidArgument, cancelled, unsupported, partialBackup
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// Anything not covered by a more specific code.
        public static let fatal = Code(.fatal)
        /// Bad flags or arguments.
        public static let usage = Code(.usage)
        /// The repository location holds no repository.
        public static let repositoryNotFound = Code(.repositoryNotFound)
        /// The repository could not be locked (another process holds a conflicting lock).
        public static let lockFailed = Code(.lockFailed)
        /// No key file opens with the given password.
        public static let wrongPassword = Code(.wrongPassword)
        /// Something is there, but it is not a repository Haven understands.
        public static let notARepository = Code(.notARepository)
        /// Stored bytes failed authentication, decoding or a consistency rule.
        public static let corrupt = Code(.corrupt)
        /// A named object (snapshot, blob, file) does not exist.
        public static let notFound = Code(.notFound)
        /// The operating system refused an I/O operation.
        public static let io = Code(.io)
        /// The disk is full.
        public static let noSpace = Code(.noSpace)
        /// A value given by the user is out of range or malformed.
        public static let invalidArgument = Code(.invalidArgument)
        /// The operation was cancelled.
        public static let cancelled = Code(.cancelled)
        /// The repository uses a feature this version does not support.
        public static let unsupported = Code(.unsupported)
        /// A backup finished but some source files could not be read.
        public static let partialBackup = Code(.partialBackup)

        public var description: String { "\(base)" }

        /// The process exit code restic documents for this kind of failure.
        public var exitCode: Int32 {
            switch base {
            case .repositoryNotFound: return 10
            case .lockFailed: return 11
            case .wrongPassword: return 12
            case .partialBackup: return 3
            case .cancelled: return 130
            default: return 1
            }
        }
    }

    public var code: Code
    public var message: String
    public var cause: (any Error & Sendable)?
    /// Whether trying the same operation again may succeed (a dropped connection, a timeout, HTTP 5xx or
    /// SlowDown). Backends set it; `RetryingStorage` retries only such failures.
    public var isTransient: Bool

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil, transient: Bool = false) {
        self.code = code
        self.message = message
        self.cause = cause
        self.isTransient = transient
    }

    public var description: String {
        if let cause { return "\(message): \(cause)" }
        return message
    }

    static func corrupt(_ what: String, _ detail: String) -> HavenError {
        HavenError(.corrupt, "\(what) is damaged: \(detail)")
    }
}

/// An OS error number with its text, as a cause for `HavenError`.
public struct Errno: Error, CustomStringConvertible, Sendable, Equatable {
    public let value: Int32
    public init(_ value: Int32) { self.value = value }
    public var description: String { String(cString: strerror(value)) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension HavenError {
    /// An error for a failed system call on `path`, with the current `errno`.
    public static func system(_ operation: String, _ path: String, errno err: Int32 = errno) -> HavenError {
        let code: Code = err == ENOSPC ? .noSpace : (err == ENOENT ? .notFound : .io)
        return HavenError(code, "\(operation) \(path)", cause: Errno(err))
    }
}
