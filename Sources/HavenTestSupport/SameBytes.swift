import Foundation
import Testing

/// Checks that `actual` holds exactly the bytes of `expected`. On failure it records one issue that names
/// both lengths, the first offset where they differ, and up to eight bytes of each from there; it returns
/// whether they matched.
///
/// Use it instead of `#expect(a == b)` whenever a buffer may be longer than a few hundred bytes (file
/// contents, blobs, packs). A failing `#expect` on two collections prints both in full and computes an
/// element-by-element difference, which takes time quadratic in their length when they differ throughout:
/// measured here, 2,000 bytes take 0.14 s, 8,000 bytes 1.8 s, and 70,000 bytes ran for over 15 minutes
/// before the test was killed. A broken decryption or a shifted offset differs throughout.
///
/// A nil `actual` (a file that could not be read, say) is a failure too.
@discardableResult
public func expectSameBytes<Actual: Sequence<UInt8>, Expected: Sequence<UInt8>>(
    _ actual: Actual?, _ expected: Expected, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation
) -> Bool {
    let problem: String
    if let actual {
        guard let mismatch = ByteMismatch(actual, expected) else { return true }
        problem = mismatch.description
    } else {
        problem = "no bytes (nil), expected \(Array(expected).count) bytes"
    }
    Issue.record(Comment(rawValue: comment.map { "\(problem): \($0.rawValue)" } ?? problem), sourceLocation: sourceLocation)
    return false
}

/// Checks that the file at `path` holds exactly `expected`; a missing or unreadable file is one issue too.
@discardableResult
public func expectFileBytes<Expected: Sequence<UInt8>>(
    _ path: String, _ expected: Expected, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation
) -> Bool {
    guard let contents = FileManager.default.contents(atPath: path) else {
        let problem = "cannot read \(path)"
        Issue.record(Comment(rawValue: comment.map { "\(problem): \($0.rawValue)" } ?? problem), sourceLocation: sourceLocation)
        return false
    }
    return expectSameBytes(contents, expected, comment, sourceLocation: sourceLocation)
}

/// Where two byte sequences first differ: nil from `init` when they are equal.
public struct ByteMismatch: CustomStringConvertible, Sendable {
    public let actualCount: Int
    public let expectedCount: Int
    /// The first offset where the bytes differ, or the shorter length when one is a prefix of the other.
    public let offset: Int
    /// Up to eight bytes of each, from `offset`.
    public let actualBytes: [UInt8]
    public let expectedBytes: [UInt8]

    public init?<Actual: Sequence<UInt8>, Expected: Sequence<UInt8>>(_ actual: Actual, _ expected: Expected) {
        let a = Array(actual), e = Array(expected)
        let shorter = min(a.count, e.count)
        let first = a.withUnsafeBufferPointer { pa in
            e.withUnsafeBufferPointer { pe in (0..<shorter).first { pa[$0] != pe[$0] } }
        }
        guard let offset = first ?? (a.count == e.count ? nil : shorter) else { return nil }
        actualCount = a.count
        expectedCount = e.count
        self.offset = offset
        actualBytes = Array(a[offset..<min(a.count, offset + 8)])
        expectedBytes = Array(e[offset..<min(e.count, offset + 8)])
    }

    public var description: String {
        func hex(_ bytes: [UInt8]) -> String {
            bytes.isEmpty ? "(end)" : bytes.map { String(format: "%02x", $0) }.joined(separator: " ")
        }
        let lengths = actualCount == expectedCount ? "both \(actualCount) bytes"
            : "\(actualCount) bytes, expected \(expectedCount)"
        return "bytes differ at offset \(offset) (\(lengths)): got \(hex(actualBytes)), expected \(hex(expectedBytes))"
    }
}
