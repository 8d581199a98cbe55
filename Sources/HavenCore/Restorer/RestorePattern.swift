/// A glob pattern for restore includes and excludes, matched against paths split into components.
///
/// Syntax: components separated by "/"; a leading "/" anchors the pattern at the snapshot root, otherwise
/// it may match starting at any depth. In a component, `*` matches any run of bytes, `?` one byte,
/// `[…]` a class (`!` or `^` negates, `a-z` ranges), `\` escapes the next byte. A `**` component matches
/// any number of components. A pattern matching a directory also matches everything beneath it.
struct RestorePattern: Sendable {
    enum Component: Sendable {
        case anyDepth
        case glob([UInt8])
    }

    let components: [Component]

    init(_ text: String) {
        let bytes = Array(text.utf8)
        let anchored = bytes.first == UInt8(ascii: "/")
        var comps: [Component] = []
        for part in bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            let p = Array(part)
            if p == [UInt8(ascii: "*"), UInt8(ascii: "*")] {
                if case .anyDepth? = comps.last { continue }
                comps.append(.anyDepth)
            } else {
                comps.append(.glob(p))
            }
        }
        if !anchored, !comps.isEmpty, case .glob = comps[0] { comps.insert(.anyDepth, at: 0) }
        components = comps
    }

    /// Whether the pattern matches `path` or one of its ancestors.
    func matches(_ path: [[UInt8]]) -> Bool {
        guard !components.isEmpty else { return false }
        return match(0, 0, path, child: false)
    }

    /// Whether the pattern could match something strictly beneath directory `path` (or the directory).
    func childMayMatch(_ path: [[UInt8]]) -> Bool {
        guard !components.isEmpty else { return false }
        return match(0, 0, path, child: true)
    }

    private func match(_ pi: Int, _ si: Int, _ path: [[UInt8]], child: Bool) -> Bool {
        if pi == components.count { return true }
        if si == path.count { return child }
        switch components[pi] {
        case .anyDepth:
            return match(pi + 1, si, path, child: child) || match(pi, si + 1, path, child: child)
        case .glob(let g):
            return Self.glob(g, path[si]) && match(pi + 1, si + 1, path, child: child)
        }
    }

    /// Matches one component against a glob (no "/" inside either).
    static func glob(_ p: [UInt8], _ s: [UInt8]) -> Bool {
        var pi = 0, si = 0
        var starP = -1, starS = 0
        while si < s.count {
            if pi < p.count {
                if p[pi] == UInt8(ascii: "*") {
                    starP = pi
                    starS = si
                    pi += 1
                    continue
                }
                if let next = matchOne(p, pi, s[si]) {
                    pi = next
                    si += 1
                    continue
                }
            }
            guard starP >= 0 else { return false }
            starS += 1
            si = starS
            pi = starP + 1
        }
        while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }

    /// When the pattern element at `pi` (not `*`) matches byte `c`, the index after the element.
    private static func matchOne(_ p: [UInt8], _ pi: Int, _ c: UInt8) -> Int? {
        switch p[pi] {
        case UInt8(ascii: "?"):
            return pi + 1
        case UInt8(ascii: "\\") where pi + 1 < p.count:
            return p[pi + 1] == c ? pi + 2 : nil
        case UInt8(ascii: "["):
            if let (matched, next) = matchClass(p, pi, c) { return matched ? next : nil }
            return c == p[pi] ? pi + 1 : nil
        default:
            return c == p[pi] ? pi + 1 : nil
        }
    }

    /// Evaluates a bracket class starting at `p[start] == "["`; nil when it is not closed (then "[" is literal).
    private static func matchClass(_ p: [UInt8], _ start: Int, _ c: UInt8) -> (Bool, Int)? {
        var i = start + 1
        var negate = false
        if i < p.count && (p[i] == UInt8(ascii: "!") || p[i] == UInt8(ascii: "^")) {
            negate = true
            i += 1
        }
        var matched = false
        var first = true
        while i < p.count {
            if p[i] == UInt8(ascii: "]") && !first { return (matched != negate, i + 1) }
            first = false
            var lo = p[i]
            if lo == UInt8(ascii: "\\") && i + 1 < p.count { i += 1; lo = p[i] }
            i += 1
            var hi = lo
            if i + 1 < p.count && p[i] == UInt8(ascii: "-") && p[i + 1] != UInt8(ascii: "]") {
                hi = p[i + 1]
                i += 2
                if hi == UInt8(ascii: "\\") && i < p.count { hi = p[i]; i += 1 }
            }
            if lo <= c && c <= hi { matched = true }
        }
        return nil
    }
}

/// The include/exclude/filter decision for one entry.
struct RestoreSelector: Sendable {
    let includes: [RestorePattern]
    let excludes: [RestorePattern]
    let filter: (@Sendable ([UInt8], Bool) -> RestoreSelection)?

    init(_ options: RestoreOptions) {
        includes = options.includes.map(RestorePattern.init).filter { !$0.components.isEmpty }
        excludes = options.excludes.map(RestorePattern.init).filter { !$0.components.isEmpty }
        filter = options.filter
    }

    /// Whether every entry is restored (no patterns, no filter), so every directory is visited.
    var selectsEverything: Bool { includes.isEmpty && excludes.isEmpty && filter == nil }

    struct Decision {
        /// Restore this entry.
        var restore: Bool
        /// Visit the directory's children.
        var descend: Bool
        /// Children are selected by the include patterns without further matching.
        var childrenSelected: Bool
    }

    /// Decides for the entry at `components` (from the snapshot root), `path` the same joined with "/".
    func decide(components: [[UInt8]], path: [UInt8], isDirectory: Bool, parentSelected: Bool) -> Decision {
        if excludes.contains(where: { $0.matches(components) }) {
            return Decision(restore: false, descend: false, childrenSelected: false)
        }
        var d: Decision
        if includes.isEmpty || parentSelected || includes.contains(where: { $0.matches(components) }) {
            d = Decision(restore: true, descend: isDirectory, childrenSelected: true)
        } else {
            let deeper = isDirectory && includes.contains(where: { $0.childMayMatch(components) })
            d = Decision(restore: false, descend: deeper, childrenSelected: false)
        }
        if let filter {
            switch filter(path, isDirectory) {
            case .restore: break
            case .descend: d.restore = false
            case .skip: return Decision(restore: false, descend: false, childrenSelected: false)
            }
        }
        return d
    }
}
