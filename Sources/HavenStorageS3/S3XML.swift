/// A tiny, forgiving scanner for the flat XML documents S3 returns (no DTDs, no namespaces needed).
enum S3XML {
    /// The text content of every `<tag>…</tag>` (or `<tag attr="…">…</tag>`) in `xml`, entities decoded.
    static func values(_ tag: String, in xml: Substring) -> [String] {
        var out: [String] = []
        let open = "<" + tag
        let close = "</" + tag + ">"
        var rest = xml[...]
        while let start = rest.range(of: open) {
            // The character after the tag name must end the name (">" or whitespace), or it is a longer tag.
            var after = start.upperBound
            guard after < rest.endIndex else { break }
            let c = rest[after]
            if c == "/" {  // <Tag/>: empty element
                out.append("")
                rest = rest[after...]
                continue
            }
            guard c == ">" || c == " " || c == "\t" || c == "\n" || c == "\r" else {
                rest = rest[after...]
                continue
            }
            guard let gt = rest[after...].firstIndex(of: ">") else { break }
            if rest[rest.index(before: gt)] == "/" {
                out.append("")
                rest = rest[rest.index(after: gt)...]
                continue
            }
            after = rest.index(after: gt)
            guard let end = rest[after...].range(of: close) else { break }
            out.append(decode(rest[after..<end.lowerBound]))
            rest = rest[end.upperBound...]
        }
        return out
    }

    static func values(_ tag: String, in xml: String) -> [String] { values(tag, in: xml[...]) }

    static func first(_ tag: String, in xml: String) -> String? { values(tag, in: xml).first }

    /// The raw inner XML of every `<tag>…</tag>` block (not decoded), for nested structures.
    static func blocks(_ tag: String, in xml: String) -> [Substring] {
        var out: [Substring] = []
        let open = "<" + tag + ">"
        let close = "</" + tag + ">"
        var rest = xml[...]
        while let start = rest.range(of: open), let end = rest[start.upperBound...].range(of: close) {
            out.append(rest[start.upperBound..<end.lowerBound])
            rest = rest[end.upperBound...]
        }
        return out
    }

    static func decode(_ s: Substring) -> String {
        guard s.contains("&") else { return String(s) }
        var out = ""
        var i = s.startIndex
        while i < s.endIndex {
            let c = s[i]
            if c == "&", let semi = s[i...].firstIndex(of: ";"), s.distance(from: i, to: semi) <= 10 {
                let entity = s[s.index(after: i)..<semi]
                var replacement: String?
                switch entity {
                case "amp": replacement = "&"
                case "lt": replacement = "<"
                case "gt": replacement = ">"
                case "quot": replacement = "\""
                case "apos": replacement = "'"
                default:
                    if entity.hasPrefix("#x") || entity.hasPrefix("#X"), let v = UInt32(entity.dropFirst(2), radix: 16), let u = Unicode.Scalar(v) {
                        replacement = String(Character(u))
                    } else if entity.hasPrefix("#"), let v = UInt32(entity.dropFirst(1)), let u = Unicode.Scalar(v) {
                        replacement = String(Character(u))
                    }
                }
                if let replacement {
                    out += replacement
                    i = s.index(after: semi)
                    continue
                }
            }
            out.append(c)
            i = s.index(after: i)
        }
        return out
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(c)
            }
        }
        return out
    }
}
