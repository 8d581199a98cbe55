import Foundation
import HavenTestSupport
import Testing

/// `--cache-dir` and `--no-cache` through the built binary (on a local repository, which is cached only
/// when `--cache-dir` is given).
@Suite("Cache options")
struct CacheCommandTests {
    @Test("--cache-dir fills a tagged cache that later commands use; --no-cache and the default leave it alone")
    func cacheDir() async throws {
        let cli = try CLI()
        let tmp = TempDir("cache-cli")
        let src = tmp.sub("src"), repo = tmp.sub("repo"), cache = tmp.sub("cache")
        try Fixture.standardTree(at: src, seed: 5)
        try await cli.ok(["init", "-r", repo])
        try await cli.ok(["-r", repo, "backup", src])

        // A local repository without --cache-dir: no cache (HAVEN_CACHE_DIR points at `cache`).
        let plain = try await cli.ok(["-r", repo, "ls", "latest"], env: ["HAVEN_CACHE_DIR": cache])
        #expect(!FileManager.default.fileExists(atPath: cache))

        let first = try await cli.ok(["-r", repo, "--cache-dir", cache, "ls", "latest"])
        #expect(first.stdout == plain.stdout)
        let tag = try String(contentsOfFile: cache + "/CACHEDIR.TAG", encoding: .utf8)
        #expect(tag.hasPrefix("Signature: 8a477f597d28d172789f06886806bc55\n"))
        let ids = try FileManager.default.contentsOfDirectory(atPath: cache).filter { $0 != "CACHEDIR.TAG" }
        #expect(ids.count == 1)
        let dir = cache + "/" + (ids.first ?? "")
        let indexFiles = try FileManager.default.contentsOfDirectory(atPath: repo + "/index").sorted()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/index").sorted() == indexFiles)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/snapshots").count == 1)
        let cachedPacks = try FileManager.default.subpathsOfDirectory(atPath: dir + "/data").filter { $0.count > 3 }
        #expect(!cachedPacks.isEmpty)
        for p in cachedPacks {
            // Byte for byte the repository's (encrypted) pack.
            expectFileBytes(dir + "/data/" + p, try #require(FileManager.default.contents(atPath: repo + "/data/" + p)))
        }

        // The second run reads through the cache; a forgotten snapshot leaves it on the next listing.
        let second = try await cli.ok(["-r", repo, "--cache-dir", cache, "ls", "latest"])
        #expect(second.stdout == plain.stdout)
        try await cli.ok(["-r", repo, "backup", src])
        try await cli.ok(["-r", repo, "--cache-dir", cache, "snapshots"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/snapshots").count == 2)
        try await cli.ok(["-r", repo, "forget", "--keep-last", "1"])
        try await cli.ok(["-r", repo, "--cache-dir", cache, "snapshots"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/snapshots").count == 1)

        let both = try await cli.run(["-r", repo, "--cache-dir", cache, "--no-cache", "snapshots"])
        #expect(both.status != 0)
        #expect(both.stderr.contains("--no-cache"))
    }

    @Test("`cache` lists the repositories' caches with their age; --cleanup removes only the old ones")
    func listAndCleanUp() async throws {
        let cli = try CLI()
        let tmp = TempDir("cache-cli-list")
        let src = tmp.sub("src"), repo = tmp.sub("repo"), cache = tmp.sub("cache")
        try Fixture.standardTree(at: src, seed: 7)
        try await cli.ok(["init", "-r", repo])
        try await cli.ok(["-r", repo, "--cache-dir", cache, "backup", src])
        let live = try #require(try FileManager.default.contentsOfDirectory(atPath: cache).first { $0.count == 64 })
        // A cache last used 40 days ago, one 10 days ago, and things that are not caches.
        let old = String(repeating: "a", count: 64), recent = String(repeating: "b", count: 64)
        for (name, days) in [(old, 40.0), (recent, 10.0)] {
            try FileManager.default.createDirectory(atPath: cache + "/" + name + "/index", withIntermediateDirectories: true)
            try Data(count: 3000).write(to: URL(fileURLWithPath: cache + "/" + name + "/index/x"))
            try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-days * 86_400)],
                                                  ofItemAtPath: cache + "/" + name)
        }
        // Opening the repository marks its cache as used, however old it looked.
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-90 * 86_400)], ofItemAtPath: cache + "/" + live)
        try await cli.ok(["-r", repo, "--cache-dir", cache, "snapshots"])
        try FileManager.default.createDirectory(atPath: cache + "/not-a-cache", withIntermediateDirectories: true)
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-400 * 86_400)],
                                              ofItemAtPath: cache + "/not-a-cache")

        let listed = try await cli.ok(["cache"], env: ["HAVEN_CACHE_DIR": cache])
        let lines = listed.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix(String(live.prefix(8))) && $0.contains("  0  ") })
        #expect(lines.contains { $0.hasPrefix("aaaaaaaa") && $0.contains("  40  ") && $0.contains("yes") && $0.contains("2.930 KiB") })
        #expect(lines.contains { $0.hasPrefix("bbbbbbbb") && $0.contains("  10  ") && !$0.contains("yes") })
        #expect(listed.stdout.contains("3 caches in \(cache), 1 old (not used for 30 days); remove it with: haven cache --cleanup"))
        #expect(!listed.stdout.contains("not-a-cache"))

        let json = try #require(CLI.lastJSON(try await cli.ok(["--json", "cache", "--max-age", "5", "--cache-dir", cache])))
        let caches = try #require(json["caches"] as? [[String: Any]])
        #expect(caches.compactMap { $0["id"] as? String } == [live, recent, old])
        #expect(caches.compactMap { $0["old"] as? Bool } == [false, true, true])

        let cleaned = try await cli.ok(["cache", "--cleanup", "--cache-dir", cache])
        #expect(cleaned.stdout.contains("removed 1 old cache (2.930 KiB)"))
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: cache))
        #expect(left == [live, recent, "not-a-cache", "CACHEDIR.TAG"])
        // The live cache still serves its repository.
        try await cli.ok(["-r", repo, "--cache-dir", cache, "snapshots"])

        let bad = try await cli.run(["cache", "--max-age", "-1", "--cache-dir", cache])
        #expect(bad.status != 0 && bad.stderr.contains("--max-age"))
    }

    @Test("a cache directory that cannot be created is a warning, not an error")
    func unusableCacheDir() async throws {
        let cli = try CLI()
        let tmp = TempDir("cache-cli-bad")
        let src = tmp.sub("src"), repo = tmp.sub("repo")
        try Fixture.standardTree(at: src, seed: 6)
        try await cli.ok(["init", "-r", repo])
        try Fixture.write(tmp.sub("file"), [1])
        let r = try await cli.ok(["-r", repo, "--cache-dir", tmp.sub("file") + "/cache", "backup", src])
        #expect(r.stderr.contains("continuing without a cache"), "\(r.stderr)")
        let check = try await cli.ok(["-r", repo, "--cache-dir", tmp.sub("file") + "/cache", "check"])
        #expect(check.stderr.contains("continuing without a cache"), "\(check.stderr)")
    }
}
