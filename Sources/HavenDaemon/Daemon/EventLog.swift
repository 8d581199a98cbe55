import Foundation
import HavenCore

/// The daemon's log: one line per event on stderr, as JSON (for log collectors) or text.
///
/// Every line about a job carries `job`, `backup`, `kind`, `trigger`, and where it applies `repository`
/// and `step`, so a collector can alert on failures per backup and repository.
public final class EventLog: Sendable {
    public enum Value: Sendable, Equatable {
        case string(String), int(Int), double(Double), bool(Bool), null
    }

    public let format: LogFormat
    public let level: LogLevel
    let sink: @Sendable (String) -> Void

    public init(format: LogFormat, level: LogLevel, sink: (@Sendable (String) -> Void)? = nil) {
        self.format = format
        self.level = level
        self.sink = sink ?? { line in try? FileHandle.standardError.write(contentsOf: Data((line + "\n").utf8)) }
    }

    static func rank(_ level: String) -> Int {
        switch level {
        case "debug": return 0
        case "info": return 1
        case "warning": return 2
        default: return 3
        }
    }

    public func log(_ level: String, _ message: String, fields: [String: Value] = [:]) {
        guard Self.rank(level) >= Self.rank(self.level.rawValue) else { return }
        let time = ISO8601.format(Date())
        switch format {
        case .json:
            var object: [String: Any] = ["time": time, "level": level, "msg": message]
            for (k, v) in fields {
                switch v {
                case .string(let s): object[k] = s
                case .int(let i): object[k] = i
                case .double(let d): object[k] = d
                case .bool(let b): object[k] = b
                case .null: break
                }
            }
            guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
            sink(String(decoding: data, as: UTF8.self))
        case .text:
            var line = "\(time) \(level.uppercased()) \(message)"
            let extra = fields.sorted(by: { $0.key < $1.key }).compactMap { k, v -> String? in
                switch v {
                case .string(let s): return "\(k)=\(s)"
                case .int(let i): return "\(k)=\(i)"
                case .double(let d): return "\(k)=\(d)"
                case .bool(let b): return "\(k)=\(b)"
                case .null: return nil
                }
            }
            if !extra.isEmpty { line += " [" + extra.joined(separator: " ") + "]" }
            sink(line)
        }
    }
}
