import Foundation

/// How urgent a job is: higher values start first. Integers 0…100, with names for the usual levels.
///
/// `immediate` (100) may start even when the concurrency limit is reached; `idle` (0) starts only when
/// nothing else is running or pending.
public struct Priority: Sendable, Hashable, Comparable, CustomStringConvertible, Codable {
    public var value: Int

    /// The accepted range of integer priorities.
    public static let range = 0...100

    public static let idle = Priority(0)
    public static let low = Priority(25)
    public static let normal = Priority(50)
    public static let high = Priority(75)
    public static let next = Priority(90)
    public static let immediate = Priority(100)

    /// The named levels, lowest first.
    public static let named: [(name: String, priority: Priority)] = [
        ("idle", .idle), ("low", .low), ("normal", .normal), ("high", .high), ("next", .next), ("immediate", .immediate),
    ]

    /// A priority from an integer; values outside `range` are clamped.
    public init(_ value: Int) {
        self.value = min(max(value, Priority.range.lowerBound), Priority.range.upperBound)
    }

    /// Parses a name (`immediate`, `next`, `high`, `normal`, `low`, `idle`, any case) or an integer 0…100.
    /// Throws `PriorityError` otherwise.
    public static func parse(_ text: String) throws -> Priority {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        if let match = named.first(where: { $0.name == t }) { return match.priority }
        guard let n = Int(t) else {
            throw PriorityError(message: "unknown priority '\(text)': use immediate, next, high, normal, low, idle or an integer 0–100")
        }
        guard range.contains(n) else {
            throw PriorityError(message: "priority \(n) is out of range: use an integer 0–100 (idle 0, low 25, normal 50, high 75, next 90, immediate 100)")
        }
        return Priority(n)
    }

    /// May start beyond the concurrency limit.
    public var isImmediate: Bool { self >= .immediate }
    /// Starts only when nothing else is running or pending.
    public var isIdle: Bool { self <= .idle }

    /// The name for a named level, else the integer.
    public var description: String {
        Priority.named.first(where: { $0.priority == self })?.name ?? String(value)
    }

    public static func < (lhs: Priority, rhs: Priority) -> Bool { lhs.value < rhs.value }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let n = try? container.decode(Int.self) {
            self.init(n)
        } else {
            let text = try container.decode(String.self)
            do { self = try Priority.parse(text) } catch let e as PriorityError {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: e.message)
            }
        }
    }

    /// Encodes as the name when there is one, else the integer.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        if Priority.named.contains(where: { $0.priority == self }) {
            try container.encode(description)
        } else {
            try container.encode(value)
        }
    }
}

/// A priority that could not be parsed.
public struct PriorityError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
