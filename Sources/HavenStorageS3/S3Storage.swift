import AsyncHTTPClient
import Crypto
import Foundation
import HavenCore
import NIOCore
import NIOHTTP1
import Synchronization

/// A repository in an S3 bucket (AWS, MinIO, SeaweedFS, ...), laid out like restic's: `<prefix>/data/ab/<id>`,
/// `<prefix>/keys/<id>`, `<prefix>/config`, ...
///
/// Owns one HTTP client; call `shutdown()` when done (a forgotten shutdown is done in the background on deinit).
public final class S3Storage: Storage, @unchecked Sendable {
    public let endpoint: S3Location
    public let credentials: S3Credentials
    /// Sent as x-amz-storage-class for data packs only (other files stay in the default class for fast access).
    public let storageClass: String?
    /// Objects larger than this are uploaded in parts.
    public let multipartThreshold: Int
    /// The size of each part of a multipart upload (at least 5 MiB for AWS).
    public let partSize: Int
    /// How many attempts a request gets when the server answers 5xx or the connection fails.
    public let maxAttempts: Int
    private let connectionCount: Int
    private let client: HTTPClient
    private let state = ShutdownState()
    private let requestCount = Atomic<Int>(0)

    /// HTTP requests sent so far, retries included (each is a round trip, and object stores bill by request).
    public var requestsSent: Int { requestCount.load(ordering: .relaxed) }

    public var location: String { endpoint.description }
    public var properties: StorageProperties { StorageProperties(connections: connectionCount, atomicReplace: true, streamedReads: true) }

    public init(location: S3Location, credentials: S3Credentials, storageClass: String? = nil,
                multipartThreshold: Int = 64 << 20, partSize: Int = 16 << 20, connections: Int = 5, maxAttempts: Int = 3,
                connectTimeoutSeconds: Int64 = 30) {
        self.endpoint = location
        self.credentials = credentials
        self.storageClass = storageClass
        self.multipartThreshold = max(1, multipartThreshold)
        self.partSize = max(1, partSize)
        self.connectionCount = connections
        self.maxAttempts = max(1, maxAttempts)
        let config = HTTPClient.Configuration(
            tlsConfiguration: nil,
            redirectConfiguration: .disallow,
            timeout: HTTPClient.Configuration.Timeout(connect: .seconds(connectTimeoutSeconds), read: .seconds(300)),
            connectionPool: HTTPClient.Configuration.ConnectionPool(idleTimeout: .seconds(60)))
        self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    /// Parses a restic `s3:` location and takes credentials and region from `environment`.
    ///
    /// `maxAttempts` 1 leaves retrying to a wrapping `RetryingStorage` (failures are then marked transient
    /// or not, and not retried here).
    public convenience init(url: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                            storageClass: String? = nil, pathStyle: Bool = true, connections: Int = 5,
                            maxAttempts: Int = 3) throws {
        var loc = try S3Location.parse(url, environment: environment)
        loc.pathStyle = pathStyle
        self.init(location: loc, credentials: try S3Credentials.fromEnvironment(environment), storageClass: storageClass,
                  connections: connections, maxAttempts: maxAttempts)
    }

    deinit {
        if state.markShutDown() {
            client.shutdown { _ in }
        }
    }

    /// Closes the HTTP client's connections. The storage cannot be used afterwards.
    public func shutdown() async throws {
        guard state.markShutDown() else { return }
        try await client.shutdown()
    }

    // MARK: Storage

    public func create() async throws {
        try await ensureBucket()
        if try await exists(.config) {
            throw HavenError(.invalidArgument, "a repository already exists at \(location): config file found; choose another location")
        }
    }

    /// Makes sure the bucket exists, creating it when missing. Another client may be creating the same bucket
    /// at the same moment (two repositories under one new bucket, initialised together): servers then answer
    /// the PUT with 409 OperationAborted, or (SeaweedFS) with 404 NoSuchBucket while the other creation is
    /// under way. Those answers are retried from the HEAD a few times before they count as failures.
    private func ensureBucket() async throws {
        var attempt = 0
        while true {
            attempt += 1
            let head = try await send(.HEAD, key: nil, what: "bucket \(endpoint.bucket)")
            switch head.status {
            case 200:
                return
            case 404:
                var body: [UInt8] = []
                if endpoint.region != "us-east-1" {
                    body = Array("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>\(S3XML.escape(endpoint.region))</LocationConstraint></CreateBucketConfiguration>".utf8)
                }
                let r = try await send(.PUT, key: nil, body: body[...], what: "creating bucket \(endpoint.bucket)")
                if r.status == 200 || (r.status == 409 && r.errorCode == "BucketAlreadyOwnedByYou") { return }
                let racing = r.status == 404 || (r.status == 409 && r.errorCode == "OperationAborted")
                if racing && attempt < maxAttempts {
                    try await backoff(attempt)
                    continue
                }
                throw failure(r, "creating bucket \(endpoint.bucket)")
            default:
                throw failure(head, "bucket \(endpoint.bucket)")
            }
        }
    }

    public func save(_ handle: Handle, _ data: [UInt8]) async throws {
        let key = endpoint.key(handle.path)
        var headers: [(String, String)] = [("content-type", "application/octet-stream")]
        if handle.type == .pack, let storageClass { headers.append(("x-amz-storage-class", storageClass)) }
        if data.count > multipartThreshold {
            try await multipartUpload(handle, key: key, size: data.count, headers: headers) { .bytes(data[$0]) }
            return
        }
        let r = try await send(.PUT, key: key, headers: headers, body: data[...], what: "saving \(handle)")
        guard r.status == 200 else { throw failure(r, "saving \(handle)") }
    }

    /// Uploads a pack straight from its spool file, in pieces, so an upload holds about a megabyte
    /// instead of the whole pack twice (read into an array, then copied into the request). The payload
    /// hash that signs the request is the spool's own SHA-256, already computed as the pack was written,
    /// and the server checks the body against it. A pack large enough for a multipart upload is sent
    /// part by part the same way, each part hashed from the file first.
    public func save(_ handle: Handle, spooled file: SpoolFile) async throws {
        let key = endpoint.key(handle.path)
        var headers: [(String, String)] = [("content-type", "application/octet-stream")]
        if handle.type == .pack, let storageClass { headers.append(("x-amz-storage-class", storageClass)) }
        if file.size > multipartThreshold {
            try await multipartUpload(handle, key: key, size: file.size, headers: headers) { range in
                let pieces = SpoolPieces(spool: file, range: range)
                return .file(pieces, sha256: try await pieces.sha256Hex())
            }
            return
        }
        let body = RequestBody.file(SpoolPieces(spool: file, range: 0..<file.size), sha256: try file.id().hex)
        let r = try await send(.PUT, key: key, headers: headers, body: body, what: "saving \(handle)")
        guard r.status == 200 else { throw failure(r, "saving \(handle)") }
    }

    public func load(_ handle: Handle, offset: Int, length: Int?) async throws -> [UInt8] {
        guard offset >= 0, (length ?? 0) >= 0 else {
            throw HavenError(.invalidArgument, "invalid range for \(handle): offset \(offset) length \(length.map(String.init) ?? "nil")")
        }
        if length == 0 {
            let size = try await stat(handle)
            if offset > size { throw short(handle, offset: offset, wanted: 0, got: 0) }
            return []
        }
        let key = endpoint.key(handle.path)
        var headers: [(String, String)] = []
        let ranged = offset > 0 || length != nil
        if ranged {
            headers.append(("range", "bytes=\(offset)-" + (length.map { String(offset + $0 - 1) } ?? "")))
        }
        let r = try await send(.GET, key: key, headers: headers, what: "reading \(handle)")
        switch r.status {
        case 200, 206:
            if r.status == 206 { try checkRange(r.headers, handle, offset: offset) }
            var body = r.body
            if r.status == 200 && ranged {  // the server ignored the range
                guard offset <= body.count else { throw short(handle, offset: offset, wanted: length ?? 0, got: 0) }
                body = Array(body[offset...])
            }
            if let length {
                if body.count < length { throw short(handle, offset: offset, wanted: length, got: body.count) }
                if body.count > length { body = Array(body[..<length]) }
            }
            return body
        case 416:
            let size = try await stat(handle)
            if length == nil && offset == size { return [] }
            throw short(handle, offset: offset, wanted: length ?? 0, got: max(0, size - offset))
        default:
            throw failure(r, "reading \(handle)")
        }
    }

    /// One GET for the whole range, its body consumed as the reader asks for it (the HTTP client stops
    /// reading from the connection while the reader does not ask, so memory stays bounded).
    public func reader(_ handle: Handle, offset: Int, length: Int) async throws -> any StorageReader {
        guard offset >= 0, length >= 0 else {
            throw HavenError(.invalidArgument, "invalid range for \(handle): offset \(offset) length \(length)")
        }
        return S3Reader(self, handle, offset: offset, length: length)
    }

    /// Opens the body of `length` bytes of `handle` at `offset`, and how many leading bytes of it to skip
    /// (a server that ignores the range sends the whole object).
    fileprivate func openRange(_ handle: Handle, offset: Int, length: Int) async throws -> (HTTPClientResponse.Body, skip: Int) {
        let headers = [("range", "bytes=\(offset)-\(offset + length - 1)")]
        let (r, response) = try await sendStreaming(.GET, key: endpoint.key(handle.path), headers: headers, what: "reading \(handle)")
        if let response, r.status == 200 || r.status == 206 {
            if r.status == 206 { try checkRange(r.headers, handle, offset: offset) }
            return (response.body, r.status == 200 ? offset : 0)
        }
        if r.status == 416 {
            let size = try await stat(handle)
            throw short(handle, offset: offset, wanted: length, got: max(0, size - offset))
        }
        throw failure(r, "reading \(handle)")
    }

    /// A partial answer (206) must start where it was asked to: bytes from elsewhere in the object would
    /// fail decryption and be reported as damage that is not there.
    private func checkRange(_ headers: HTTPHeaders, _ handle: Handle, offset: Int) throws {
        guard let range = headers.first(name: "content-range") else { return }  // length is checked instead
        let spec = range.lowercased().hasPrefix("bytes ") ? range.dropFirst(6) : Substring(range)
        guard let start = spec.split(separator: "-", maxSplits: 1).first.flatMap({ Int($0) }), start == offset else {
            throw HavenError(.io, "S3 answered a request for \(handle) at offset \(offset) with the wrong range (Content-Range: \(range)) "
                             + "in \(location); a proxy or cache between Haven and the server may be changing requests")
        }
    }

    fileprivate func connectionFailure(_ error: any Error, reading handle: Handle) -> HavenError {
        if error is CancellationError { return HavenError(.cancelled, "reading \(handle) in \(location) was cancelled") }
        if let e = error as? HavenError { return e }
        return HavenError(.io, "the connection to \(endpoint.scheme)://\(endpoint.hostHeader) failed while reading \(handle)",
                          cause: error, transient: true)
    }

    public func stat(_ handle: Handle) async throws -> Int {
        let r = try await send(.HEAD, key: endpoint.key(handle.path), what: "\(handle)")
        guard r.status == 200 else { throw failure(r, "\(handle)") }
        guard let text = r.headers.first(name: "content-length"), let size = Int(text) else {
            throw HavenError(.io, "S3 answered HEAD for \(handle) in \(location) without a valid Content-Length")
        }
        return size
    }

    public func list(_ type: FileType) async throws -> [StoredFile] {
        if type == .config {
            do {
                return [StoredFile(name: "config", size: try await stat(.config))]
            } catch let e as HavenError where e.code == .notFound {
                return []
            }
        }
        let dirPrefix = endpoint.key(type.directory) + "/"
        var out: [StoredFile] = []
        var token: String?
        repeat {
            var query = [("list-type", "2"), ("prefix", dirPrefix)]
            if let token { query.append(("continuation-token", token)) }
            let r = try await send(.GET, key: nil, query: query, what: "listing \(type.directory)/")
            guard r.status == 200 else { throw failure(r, "listing \(type.directory)/") }
            let xml = String(decoding: r.body, as: UTF8.self)
            for block in S3XML.blocks("Contents", in: xml) {
                guard let key = S3XML.values("Key", in: block).first, key.hasPrefix(dirPrefix),
                      let size = S3XML.values("Size", in: block).first.flatMap({ Int($0) }) else { continue }
                let rel = key.dropFirst(dirPrefix.count)
                if rel.isEmpty || rel.hasSuffix("/") { continue }
                let parts = rel.split(separator: "/", omittingEmptySubsequences: false)
                if type == .pack {
                    guard parts.count <= 2, let name = parts.last, !name.isEmpty else { continue }
                    out.append(StoredFile(name: String(name), size: size))
                } else {
                    guard parts.count == 1 else { continue }
                    out.append(StoredFile(name: String(rel), size: size))
                }
            }
            if S3XML.first("IsTruncated", in: xml) == "true" {
                guard let next = S3XML.first("NextContinuationToken", in: xml), !next.isEmpty else {
                    throw HavenError(.io, "S3 listing of \(type.directory)/ in \(location) is truncated but has no continuation token")
                }
                token = next
            } else {
                token = nil
            }
        } while token != nil
        return out
    }

    public func remove(_ handle: Handle) async throws {
        _ = try await stat(handle)  // S3 deletes missing keys silently; report them like the other backends
        let r = try await send(.DELETE, key: endpoint.key(handle.path), what: "removing \(handle)")
        guard r.status == 204 || r.status == 200 else { throw failure(r, "removing \(handle)") }
    }

    // MARK: Multipart upload

    /// Uploads `size` bytes in parts of `partSize`; `part` gives the body of each range.
    private func multipartUpload(_ handle: Handle, key: String, size: Int, headers: [(String, String)],
                                 part: (Range<Int>) async throws -> RequestBody) async throws {
        let what = "saving \(handle) (multipart)"
        let initiated = try await send(.POST, key: key, query: [("uploads", "")], headers: headers, body: [][...], what: what)
        guard initiated.status == 200 else { throw failure(initiated, what) }
        guard let uploadID = S3XML.first("UploadId", in: String(decoding: initiated.body, as: UTF8.self)), !uploadID.isEmpty else {
            throw HavenError(.io, "S3 did not return an upload ID when starting a multipart upload of \(handle) to \(location)")
        }
        do {
            var etags: [String] = []
            var start = 0
            while start < size {
                let end = min(start + partSize, size)
                let number = etags.count + 1
                let r = try await send(.PUT, key: key, query: [("partNumber", String(number)), ("uploadId", uploadID)],
                                       body: try await part(start..<end), what: "\(what), part \(number)")
                guard r.status == 200 else { throw failure(r, "\(what), part \(number)") }
                guard let etag = r.headers.first(name: "etag") else {
                    throw HavenError(.io, "S3 returned no ETag for part \(number) of \(handle) in \(location)")
                }
                etags.append(etag)
                start = end
            }
            var xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
            for (i, etag) in etags.enumerated() {
                xml += "<Part><PartNumber>\(i + 1)</PartNumber><ETag>\(S3XML.escape(etag))</ETag></Part>"
            }
            xml += "</CompleteMultipartUpload>"
            let r = try await send(.POST, key: key, query: [("uploadId", uploadID)], headers: [("content-type", "application/xml")],
                                   body: Array(xml.utf8)[...], what: "\(what), completing")
            // S3 may answer 200 with an error document when completion fails late.
            guard r.status == 200, r.errorCode == nil else { throw failure(r, "\(what), completing") }
        } catch {
            _ = try? await send(.DELETE, key: key, query: [("uploadId", uploadID)], what: "\(what), aborting")
            throw error
        }
    }

    // MARK: HTTP

    struct Response {
        var status: Int
        var headers: HTTPHeaders
        var body: [UInt8]

        var errorCode: String? {
            guard !body.isEmpty, body.count < 1 << 20 else { return nil }
            let text = String(decoding: body, as: UTF8.self)
            guard text.contains("<Error>") else { return nil }
            return S3XML.first("Code", in: text)
        }
        var errorMessage: String? {
            guard !body.isEmpty, body.count < 1 << 20 else { return nil }
            let text = String(decoding: body, as: UTF8.self)
            guard text.contains("<Error>") else { return nil }
            return S3XML.first("Message", in: text)
        }
    }

    fileprivate func short(_ handle: Handle, offset: Int, wanted: Int, got: Int) -> HavenError {
        HavenError(.corrupt, "\(handle) in \(location) is shorter than expected: wanted \(wanted) bytes at offset \(offset), got \(got)")
    }

    private var gaveUp: String { maxAttempts > 1 ? ", gave up after \(maxAttempts) attempts" : "" }

    /// A HavenError for an unsuccessful answer. 5xx, 429 and 408 answers are marked transient.
    func failure(_ r: Response, _ what: String) -> HavenError {
        var detail = ""
        if let code = r.errorCode {
            detail = " (\(code)" + (r.errorMessage.map { ": \($0)" } ?? "") + ")"
        }
        switch r.status {
        case 404:
            return HavenError(.notFound, "\(what) not found in \(location)\(detail)")
        case 401, 403:
            return HavenError(.io, "access denied to \(what) in \(location) (check the credentials)\(detail)")
        case 500..., 429:
            return HavenError(.io, "temporary S3 server failure (HTTP \(r.status)) for \(what) in \(location)\(gaveUp)\(detail)",
                              transient: true)
        case 408:
            return HavenError(.io, "S3 request for \(what) in \(location) timed out (HTTP 408)\(gaveUp)\(detail)", transient: true)
        default:
            return HavenError(.io, "S3 request for \(what) in \(location) failed with HTTP \(r.status)\(detail)")
        }
    }

    /// A request's body: bytes in memory, or a spool file read in pieces as it is sent (each attempt
    /// reads it again from the start), with its SHA-256.
    enum RequestBody {
        case bytes(ArraySlice<UInt8>)
        case file(SpoolPieces, sha256: String)
    }

    func send(_ method: HTTPMethod, key: String?, query: [(String, String)] = [], headers: [(String, String)] = [],
              body: ArraySlice<UInt8>?, what: String) async throws -> Response {
        try await send(method, key: key, query: query, headers: headers, body: body.map { RequestBody.bytes($0) }, what: what)
    }

    /// Sends one signed request, retrying 5xx answers and connection failures with backoff.
    func send(_ method: HTTPMethod, key: String?, query: [(String, String)] = [], headers: [(String, String)] = [],
              body: RequestBody? = nil, what: String) async throws -> Response {
        try await exchange(method, key: key, query: query, headers: headers, body: body, what: what, streaming: false).0
    }

    /// `send`, but a successful (2xx) answer comes back with its body not read yet (the `Response`'s body
    /// is then empty): the caller reads it from the `HTTPClientResponse` as it arrives.
    func sendStreaming(_ method: HTTPMethod, key: String?, headers: [(String, String)] = [],
                       what: String) async throws -> (Response, HTTPClientResponse?) {
        try await exchange(method, key: key, headers: headers, what: what, streaming: true)
    }

    private func exchange(_ method: HTTPMethod, key: String?, query: [(String, String)] = [], headers: [(String, String)] = [],
                          body: RequestBody? = nil, what: String, streaming: Bool) async throws -> (Response, HTTPClientResponse?) {
        let uriPath = endpoint.uriPath(key: key)
        var url = "\(endpoint.scheme)://\(endpoint.hostHeader)\(uriPath)"
        if !query.isEmpty {
            url += "?" + query.map { (SigV4.uriEncode($0.0), SigV4.uriEncode($0.1)) }
                .sorted { $0.0 < $1.0 }
                .map { $0.1.isEmpty ? $0.0 : "\($0.0)=\($0.1)" }
                .joined(separator: "&")
        }
        let payloadHash: String
        switch body {
        case nil: payloadHash = SigV4.emptyPayloadHash
        case .bytes(let bytes): payloadHash = SigV4.sha256Hex(bytes)
        case .file(_, let sha256): payloadHash = sha256
        }
        var attempt = 0
        while true {
            attempt += 1
            let signed = SigV4.sign(method: method.rawValue, uriPath: uriPath, query: query,
                                    headers: [("host", endpoint.hostHeader)] + headers, payloadHash: payloadHash,
                                    credentials: credentials, region: endpoint.region, date: Date())
            var request = HTTPClientRequest(url: url)
            request.method = method
            for (name, value) in signed { request.headers.add(name: name, value: value) }
            switch body {
            case nil: break
            // Copied into the request a few megabytes at a time, as it is sent.
            case .bytes(let bytes): request.body = .bytes(bytes)
            case .file(let pieces, _): request.body = .stream(pieces, length: .known(Int64(pieces.range.count)))
            }
            do {
                requestCount.add(1, ordering: .relaxed)
                let response = try await client.execute(request, timeout: .minutes(30))
                let status = Int(response.status.code)
                if streaming && (200..<300).contains(status) {
                    return (Response(status: status, headers: response.headers, body: []), response)
                }
                let result = Response(status: status, headers: response.headers, body: try await Self.collect(response))
                if (result.status >= 500 || result.status == 429 || result.status == 408) && attempt < maxAttempts {
                    try await backoff(attempt)
                    continue
                }
                return (result, nil)
            } catch let e as HavenError {
                throw e
            } catch is CancellationError {
                throw HavenError(.cancelled, "\(what) in \(location) was cancelled")
            } catch {
                if attempt < maxAttempts {
                    try await backoff(attempt)
                    continue
                }
                throw HavenError(.io, "temporary connection failure for \(what) to \(endpoint.scheme)://\(endpoint.hostHeader)\(gaveUp)",
                                 cause: error, transient: true)
            }
        }
    }

    /// Largest response body accepted.
    static let maxBodySize = Int(Int32.max)

    /// A response's body, appended to one array as it arrives, sized up front from Content-Length: no
    /// buffer grown by doubling and copied out again, so a pack read holds its bytes once.
    static func collect(_ response: HTTPClientResponse) async throws -> [UInt8] {
        var body: [UInt8] = []
        if let declared = response.headers.first(name: "content-length").flatMap(Int.init) {
            guard declared <= maxBodySize else { throw NIOTooManyBytesError(maxBytes: maxBodySize) }
            body.reserveCapacity(declared)
        }
        for try await piece in response.body {
            guard piece.readableBytes <= maxBodySize - body.count else { throw NIOTooManyBytesError(maxBytes: maxBodySize) }
            body.append(contentsOf: piece.readableBytesView)
        }
        return body
    }

    private func backoff(_ attempt: Int) async throws {
        // 0.25 s, 1 s, 4 s, ...
        let ms = 250 * (1 << (2 * min(attempt - 1, 4)))
        try await Task.sleep(nanoseconds: UInt64(ms) * 1_000_000)
    }
}

/// Remembers whether the HTTP client was shut down, so it happens exactly once.
private final class ShutdownState: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false

    /// Marks the client as shut down; true when this call did it.
    func markShutDown() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if done { return false }
        done = true
        return true
    }
}

/// A range of a spool file's content as a sequence of buffers of up to `pieceSize` bytes, read when
/// asked for.
struct SpoolPieces: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let spool: SpoolFile
    let range: Range<Int>
    static let pieceSize = 1 << 20

    struct AsyncIterator: AsyncIteratorProtocol {
        let spool: SpoolFile
        let end: Int
        var offset: Int

        mutating func next() async throws -> ByteBuffer? {
            guard offset < end else { return nil }
            let want = Swift.min(SpoolPieces.pieceSize, end - offset)
            var buffer = ByteBufferAllocator().buffer(capacity: want)
            try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: want) { space in
                try spool.read(into: UnsafeMutableRawBufferPointer(rebasing: space[..<want]), at: offset)
                return want
            }
            offset += want
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(spool: spool, end: range.upperBound, offset: range.lowerBound) }

    /// The SHA-256 of the range in hex, read through once.
    func sha256Hex() async throws -> String {
        var hasher = SHA256()
        for try await piece in self { piece.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) } }
        return SigV4.hex(hasher.finalize())
    }
}

/// A range of an object read through one GET (see `S3Storage.reader`). The request is sent at the first
/// read; a failure mid-way leaves the reader unusable (a `RetryingStorage` above opens a new one at the
/// position reached).
final class S3Reader: StorageReader {
    private let storage: S3Storage
    private var range: ReadRange
    private var body: HTTPClientResponse.Body.AsyncIterator?
    private var piece = ByteBuffer()
    private var skip = 0
    private var opened = false

    init(_ storage: S3Storage, _ handle: Handle, offset: Int, length: Int) {
        self.storage = storage
        self.range = ReadRange(handle, offset: offset, length: length)
    }

    var remaining: Int { range.remaining }

    func read(_ count: Int) async throws -> [UInt8] {
        range.check(count)
        guard count > 0 else { return [] }
        let handle = range.handle
        if !opened {
            opened = true
            let (response, skip) = try await storage.openRange(handle, offset: range.offset, length: range.remaining)
            body = response.makeAsyncIterator()
            self.skip = skip
        }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            if piece.readableBytes == 0 {
                guard var iterator = body else { throw HavenError(.io, "reading \(handle) after a failed read") }
                body = nil
                let next: ByteBuffer?
                do { next = try await iterator.next() } catch {
                    throw storage.connectionFailure(error, reading: handle)
                }
                guard let next else {
                    throw storage.short(handle, offset: range.offset, wanted: count, got: out.count)
                }
                body = iterator
                piece = next
                if skip > 0 {
                    let n = min(skip, piece.readableBytes)
                    piece.moveReaderIndex(forwardBy: n)
                    skip -= n
                    continue
                }
            }
            let n = min(count - out.count, piece.readableBytes)
            piece.withUnsafeReadableBytes { out.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[..<n])) }
            piece.moveReaderIndex(forwardBy: n)
        }
        range.advance(count)
        return out
    }

    /// Drops the response: a body not read to its end makes the HTTP client close that connection
    /// rather than reuse it.
    func close() async {
        body = nil
        piece = ByteBuffer()
    }
}
