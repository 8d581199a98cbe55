/// The kinds of files a repository stores, with the directory each lives in.
public enum FileType: String, Sendable, CaseIterable {
    case config, key, snapshot, index, pack, lock

    /// The directory below the repository root (restic's default layout).
    public var directory: String {
        switch self {
        case .config: return ""
        case .key: return "keys"
        case .snapshot: return "snapshots"
        case .index: return "index"
        case .pack: return "data"
        case .lock: return "locks"
        }
    }
}

/// One stored file: its type and name (the hex storage ID, or "config").
public struct Handle: Hashable, Sendable, CustomStringConvertible {
    public var type: FileType
    public var name: String
    public init(_ type: FileType, _ name: String) { self.type = type; self.name = name }
    public init(_ type: FileType, _ id: ID) { self.init(type, id.hex) }
    public static let config = Handle(.config, "config")

    /// The path relative to the repository root, as restic lays files out.
    public var path: String {
        switch type {
        case .config: return "config"
        case .pack: return "data/\(name.prefix(2))/\(name)"
        default: return "\(type.directory)/\(name)"
        }
    }
    public var description: String { path }
}

public struct StoredFile: Sendable, Hashable {
    public var name: String
    public var size: Int
    public init(name: String, size: Int) { self.name = name; self.size = size }
}

/// What a storage backend can do, so callers can adapt (e.g. how many transfers to run at once).
public struct StorageProperties: Sendable {
    /// Parallel transfers worth running.
    public var connections: Int
    /// Whether `save` replaces an existing file atomically.
    public var atomicReplace: Bool
    /// Whether a `list` started after a `save` returned always includes that file (a file system; not
    /// every object store). Locking skips its settling pause on such storage.
    public var consistentListing: Bool
    /// Whether reading a range through one `reader` costs less than loading its pieces one by one (each
    /// load is a request, waited for and billed, on an object store). Restore then reads nearby ranges of
    /// a pack through one reader.
    public var streamedReads: Bool
    public init(connections: Int, atomicReplace: Bool, consistentListing: Bool = false, streamedReads: Bool = false) {
        self.connections = connections
        self.atomicReplace = atomicReplace
        self.consistentListing = consistentListing
        self.streamedReads = streamedReads
    }
}

/// Where a repository's files live: a local directory, memory, or a remote store.
///
/// Implementations make `save` atomic and durable: a reader never sees a partial file, and once `save`
/// returns, the file survives a crash. Missing files are reported as `HavenError` with code `.notFound`.
public protocol Storage: Sendable {
    /// A human-readable location for messages (a path or URL).
    var location: String { get }
    var properties: StorageProperties { get }
    /// Creates the repository's directory structure. Fails if a config already exists.
    func create() async throws
    func save(_ handle: Handle, _ data: [UInt8]) async throws
    /// Stores a complete spool file as `handle`. A storage may take the file over (local storage gives it
    /// its name without copying); the caller closes the spool afterwards either way.
    func save(_ handle: Handle, spooled file: SpoolFile) async throws
    /// Where spool files for this storage are best written (nil: the system's temporary directory).
    var spoolDirectory: String? { get }
    /// Reads `length` bytes at `offset` (to the end when nil).
    func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8]
    /// Opens `length` bytes at `offset` for reading front to back, in pieces of the caller's choosing. A
    /// remote store may serve the whole range from one request (an object store bills and waits per
    /// request); the default reads each piece with `load`. Use `withReader`, which closes it.
    func reader(_ handle: Handle, offset: Int, length: Int) async throws -> any StorageReader
    /// The file's size.
    func stat(_ handle: Handle) async throws -> Int
    func list(_ type: FileType) async throws -> [StoredFile]
    func remove(_ handle: Handle) async throws
}

extension Storage {
    public func save(_ handle: Handle, spooled file: SpoolFile) async throws {
        try await save(handle, try file.readAll())
    }

    public var spoolDirectory: String? { nil }

    public func reader(_ handle: Handle, offset: Int, length: Int) async throws -> any StorageReader {
        RangedReader(self, handle, offset: offset, length: length)
    }

    /// Runs `body` with a reader of `length` bytes of `handle` at `offset`, and closes the reader after it
    /// (whether `body` returns or throws), so a remote connection held by it is released.
    public func withReader<R>(_ handle: Handle, offset: Int, length: Int,
                              _ body: (any StorageReader) async throws -> R) async throws -> R {
        let reader = try await self.reader(handle, offset: offset, length: length)
        do {
            let result = try await body(reader)
            await reader.close()
            return result
        } catch {
            await reader.close()
            throw error
        }
    }

    public func load(_ handle: Handle) async throws -> [UInt8] {
        try await load(handle, offset: 0, length: nil)
    }

    public func exists(_ handle: Handle) async throws -> Bool {
        do {
            _ = try await stat(handle)
            return true
        } catch let error as HavenError where error.code == .notFound {
            return false
        }
    }
}

/// An open range of a stored file, read front to back (see `Storage.reader`). One task uses it at a time.
public protocol StorageReader: AnyObject {
    /// The bytes of the range not read yet.
    var remaining: Int { get }
    /// The next `count` bytes of the range (`count` at most `remaining`). A file shorter than the range
    /// throws `.corrupt`. After a throw the reader is unusable, except for `close`.
    func read(_ count: Int) async throws -> [UInt8]
    /// Ends the read, early or not, and releases what it holds (a connection, a permit).
    func close() async
}

/// Groups spans of one file (in file order) into runs that one reader can serve front to back: a span
/// joins the run before it when it starts at or after that run's end and at most `maxGap` bytes later (the
/// gap is read and dropped). Returns the runs as index ranges into `spans`.
func runsOfNearbySpans(_ spans: [Range<Int>], maxGap: Int) -> [Range<Int>] {
    var runs: [Range<Int>] = []
    var end = 0
    for (i, span) in spans.enumerated() {
        if let last = runs.last, span.lowerBound >= end, span.lowerBound - end <= maxGap {
            runs[runs.count - 1] = last.lowerBound..<(i + 1)
        } else {
            runs.append(i..<(i + 1))
        }
        end = span.upperBound
    }
    return runs
}

/// Where a reader stands in its range: the part of `handle` not read yet.
public struct ReadRange: Sendable {
    public let handle: Handle
    public private(set) var offset: Int
    public private(set) var remaining: Int

    public init(_ handle: Handle, offset: Int, length: Int) {
        self.handle = handle
        self.offset = offset
        self.remaining = length
    }

    /// Checks that `count` bytes are left to read (reading past the range is the caller's mistake).
    public func check(_ count: Int) {
        precondition(count >= 0 && count <= remaining, "read beyond the reader's range")
    }

    /// Moves past `count` bytes that were read.
    public mutating func advance(_ count: Int) {
        offset += count
        remaining -= count
    }
}

/// A reader that loads each piece with its own `load` (storage where a request costs little).
final class RangedReader<S: Storage>: StorageReader {
    let storage: S
    private var range: ReadRange

    init(_ storage: S, _ handle: Handle, offset: Int, length: Int) {
        self.storage = storage
        self.range = ReadRange(handle, offset: offset, length: length)
    }

    var remaining: Int { range.remaining }

    func read(_ count: Int) async throws -> [UInt8] {
        range.check(count)
        guard count > 0 else { return [] }
        let bytes = try await storage.load(range.handle, offset: range.offset, length: count)
        guard bytes.count == count else {
            throw HavenError(.corrupt, "\(range.handle) in \(storage.location) is shorter than expected: wanted \(count) bytes at offset \(range.offset), got \(bytes.count)")
        }
        range.advance(count)
        return bytes
    }

    func close() async {}
}
