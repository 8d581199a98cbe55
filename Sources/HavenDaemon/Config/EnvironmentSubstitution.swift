/// `${VAR}` and `${VAR:-default}` substitution in config values; `$$` writes a literal `$`. A `$` not followed
/// by `{` or `$` is kept as it is.
public enum EnvironmentSubstitution {
    public struct Failure: Error, Sendable, Equatable {
        public var variable: String
        public var message: String
    }

    /// The text with variables replaced, or the first failure (an unset variable without default, or an
    /// unterminated `${`).
    public static func apply(_ text: String, _ environment: [String: String]) -> Result<String, Failure> {
        var out = ""
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            guard c == "$" else { out.append(c); i = text.index(after: i); continue }
            let next = text.index(after: i)
            if next < text.endIndex, text[next] == "$" {
                out.append("$"); i = text.index(after: next); continue
            }
            guard next < text.endIndex, text[next] == "{" else { out.append(c); i = next; continue }
            guard let close = text[next...].firstIndex(of: "}") else {
                return .failure(Failure(variable: "", message: "unterminated '${' in '\(text)': close it with '}' or write '$$' for a literal '$'"))
            }
            let inner = text[text.index(after: next)..<close]
            var name = Substring(inner), fallback: Substring? = nil
            if let sep = inner.range(of: ":-") {
                name = inner[..<sep.lowerBound]; fallback = inner[sep.upperBound...]
            }
            guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
                return .failure(Failure(variable: String(name), message: "'${\(inner)}' is not a variable reference: use ${NAME} or ${NAME:-default}"))
            }
            if let value = environment[String(name)], !(fallback != nil && value.isEmpty) {
                out += value
            } else if let fallback {
                out += fallback
            } else {
                return .failure(Failure(variable: String(name),
                    message: "environment variable '\(name)' is not set: set it, or give a default with ${\(name):-default}"))
            }
            i = text.index(after: close)
        }
        return .success(out)
    }
}
