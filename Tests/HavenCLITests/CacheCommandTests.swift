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
            #expect(FileManager.default.contents(atPath: dir + "/data/" + p) == FileManager.default.contents(atPath: repo + "/data/" + p))
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
