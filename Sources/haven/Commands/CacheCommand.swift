import ArgumentParser
import Foundation
import HavenCore

struct CacheCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "List the local caches of repositories, and remove old ones.",
        discussion: """
        Haven keeps a cache of each remote repository's index, snapshots and tree packs in a directory named \
        by the repository's ID, below --cache-dir, $HAVEN_CACHE_DIR, $XDG_CACHE_HOME/haven or ~/.cache/haven. \
        A cache no command has opened for --max-age days is "old": its repository is most likely gone or \
        moved. --cleanup removes the old caches; anything else in the directory is left alone. No \
        repository or password is needed.

        Examples:
          haven cache
          haven cache --cleanup
          haven cache --cleanup --max-age 7 --json
        """
    )

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Remove the old caches.")
    var cleanup = false

    @Option(help: ArgumentHelp("A cache not used for this many days is old.", valueName: "days"))
    var maxAge = 30

    @Flag(help: "Do not add up the caches' sizes.")
    var noSize = false

    func validate() throws {
        guard maxAge >= 0 else { throw ValidationError("--max-age must be 0 or more days, got \(maxAge)") }
    }

    func run() async throws {
        guard let base = global.cacheDir ?? RepositoryCache.defaultBase(environment: global.environment) else {
            throw HavenError(.usage, "no cache directory is known: set HOME or HAVEN_CACHE_DIR, or pass --cache-dir")
        }
        let now = Date()
        let maxAgeSeconds = TimeInterval(maxAge) * 86_400
        func isOld(_ e: RepositoryCache.Entry) -> Bool { now.timeIntervalSince(e.lastUsed) > maxAgeSeconds }
        let removed = cleanup ? try RepositoryCache.removeOld(in: base, olderThan: maxAgeSeconds, now: now) : []
        let remaining = try RepositoryCache.entries(in: base, sizes: !noSize)
        func days(_ e: RepositoryCache.Entry) -> Int { max(0, Int(now.timeIntervalSince(e.lastUsed) / 86_400)) }
        if global.json {
            func object(_ e: RepositoryCache.Entry) -> [String: Any] {
                var o: [String: Any] = ["id": e.repositoryID, "path": e.path, "last_used": Self.rfc3339(e.lastUsed),
                                        "age_days": days(e), "old": isOld(e)]
                if let size = e.size { o["size"] = size }
                return o
            }
            global.output.printJSON(["message_type": "cache", "base": base, "max_age_days": maxAge,
                                     "caches": remaining.map(object), "removed": removed.map(object)])
            return
        }
        let out = global.output
        if !remaining.isEmpty {
            let rows = remaining.map { e -> [String] in
                [String(e.repositoryID.prefix(8)), Self.display(e.lastUsed), "\(days(e))", isOld(e) ? "yes" : ""]
                    + (noSize ? [] : [e.size.map(Format.bytes) ?? ""])
            }
            out.result(Format.table(["Repository ID", "Last used", "Days", "Old"] + (noSize ? [] : ["Size"]), rows))
        }
        let old = remaining.filter(isOld)
        var summary = "\(remaining.count) cache\(remaining.count == 1 ? "" : "s") in \(base)"
        if !old.isEmpty {
            summary += ", \(old.count) old (not used for \(maxAge) days); remove \(old.count == 1 ? "it" : "them") with: haven cache --cleanup"
            if maxAge != 30 { summary += " --max-age \(maxAge)" }
            if let dir = global.cacheDir { summary += " --cache-dir \(dir)" }
        }
        out.result(summary)
        if cleanup {
            let freed = removed.reduce(UInt64(0)) { $0 + ($1.size ?? 0) }
            out.result(removed.isEmpty ? "no old caches to remove"
                       : "removed \(removed.count) old cache\(removed.count == 1 ? "" : "s") (\(Format.bytes(freed)))")
        }
    }

    private static func timestamp(_ date: Date) -> Timestamp {
        let t = date.timeIntervalSince1970.rounded(.down)
        return Timestamp(seconds: Int64(t), nanoseconds: Int32((date.timeIntervalSince1970 - t) * 1e9),
                         utcOffset: Int32(TimeZone.current.secondsFromGMT(for: date)))
    }

    static func rfc3339(_ date: Date) -> String { timestamp(date).rfc3339 }
    static func display(_ date: Date) -> String { timestamp(date).display }
}
