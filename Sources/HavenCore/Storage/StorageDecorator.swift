/// A storage that wraps another one and adds a behaviour (retries, rate limits, a connection limit).
public protocol StorageDecorator: Storage {
    /// The wrapped storage.
    var base: any Storage { get }
}

extension StorageDecorator {
    public var location: String { base.location }
    public var spoolDirectory: String? { base.spoolDirectory }
}

/// The innermost storage below any decorators (e.g. to release a remote backend's connections).
public func undecorated(_ storage: any Storage) -> any Storage {
    var s = storage
    while let d = s as? any StorageDecorator { s = d.base }
    return s
}
