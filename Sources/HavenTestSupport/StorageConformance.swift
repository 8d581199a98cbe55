import Foundation
import HavenCore
import Testing

/// A storage under test, with the backend-specific hooks the conformance cases use.
public struct StorageUnderTest: Sendable {
    public var storage: any Storage
    /// Temporary files an interrupted or finished `save` left behind (a backend without them returns []).
    public var leftovers: @Sendable () -> [String]
    /// Whether a handle is stored at restic's path for it; nil when the backend has no paths to look at.
    public var storedAtLayoutPath: (@Sendable (Handle) -> Bool)?
    /// Releases what the storage holds (connections, a server, a directory); called once, also on failure.
    public var finish: @Sendable () async -> Void

    public init(storage: any Storage, leftovers: @escaping @Sendable () -> [String] = { [] },
                storedAtLayoutPath: (@Sendable (Handle) -> Bool)? = nil, finish: @escaping @Sendable () async -> Void = {}) {
        self.storage = storage
        self.leftovers = leftovers
        self.storedAtLayoutPath = storedAtLayoutPath
        self.finish = finish
    }
}

/// The behaviour every `Storage` must show, as one list of cases that each backend's tests run
/// (`@Test(arguments: StorageConformance.allCases)`). Failures are recorded as Swift Testing issues at the
/// line of the check, with the backend's location in the message.
public enum StorageConformance: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case saveLoadStat
    case loadRange
    case emptyFile
    case missingFiles
    case listEachType
    case saveReplaces
    case concurrentSaves
    case createTwice
    case largeFile
    case spooledSave
    case sequentialRead

    public var testDescription: String {
        switch self {
        case .saveLoadStat: return "save, load, stat and exists for every file type"
        case .loadRange: return "load with offset and length; reading past the end is .corrupt"
        case .emptyFile: return "an empty file is a file"
        case .missingFiles: return "missing files: load, stat and remove report .notFound"
        case .listEachType: return "list returns exactly the files of each type with their sizes"
        case .saveReplaces: return "save replaces an existing file completely"
        case .concurrentSaves: return "48 concurrent saves, no temporary files left"
        case .createTwice: return "create succeeds on an empty location and fails once a config exists"
        case .largeFile: return "20 MiB file round trip"
        case .spooledSave: return "a pack saved from a spool file is stored byte for byte"
        case .sequentialRead: return "a range read front to back in uneven pieces; short and missing files are errors; closed readers let go"
        }
    }

    /// Runs this case on a fresh storage from `make` (which must not have called `create()`), then calls its
    /// `finish`, also when the case throws.
    public func run(_ make: () async throws -> StorageUnderTest) async throws {
        let s = try await make()
        do {
            if self != .createTwice { try await s.storage.create() }
            try await body(s)
        } catch {
            await s.finish()
            throw error
        }
        await s.finish()
    }

    private func body(_ s: StorageUnderTest) async throws {
        let storage = s.storage
        let at = storage.location
        switch self {
        case .saveLoadStat:
            var rng = SeededRandom(seed: 1)
            var saved: [(Handle, [UInt8])] = [(.config, rng.bytes(155))]
            for type in FileType.allCases where type != .config {
                saved.append((Handle(type, ID(rng.bytes(32))), rng.bytes(Int(rng.next() % 3000) + 1)))
            }
            for (h, data) in saved { try await storage.save(h, data) }
            for (h, data) in saved {
                try await expectSameBytes(storage.load(h), data, "\(at): content of \(h)")
                #expect(try await storage.stat(h) == data.count, "\(at): size of \(h)")
                #expect(try await storage.exists(h), "\(at): \(h) does not exist")
                if let atPath = s.storedAtLayoutPath { #expect(atPath(h), "\(at): \(h) is not stored at \(h.path)") }
            }
            #expect(s.leftovers().isEmpty, "\(at): temporary files left: \(s.leftovers())")

        case .loadRange:
            // Large enough that a backend reading in chunks crosses chunk boundaries.
            let data = SeededRandom.bytes(seed: 2, 100_000)
            let h = Handle(.pack, ID.hash(data))
            try await storage.save(h, data)
            let ranges = [(0, 100_000), (0, 1), (1, 1), (4321, 1234), (99_999, 1), (100_000, 0), (0, 0), (5000, 50_000), (32_767, 32_770)]
            for (offset, length) in ranges {
                try await expectSameBytes(storage.load(h, offset: offset, length: length), data[offset..<(offset + length)],
                                          "\(at): offset \(offset) length \(length)")
            }
            for offset in [0, 1, 90_000, 100_000] {
                try await expectSameBytes(storage.load(h, offset: offset, length: nil), data[offset...], "\(at): offset \(offset) to the end")
            }
            // Reading past the end is an error, not a short read.
            for (offset, length) in [(90_000, 10_001), (0, 100_001), (100_000, 1), (200_000, 5)] {
                let e = await expectHavenError("\(at): load offset \(offset) length \(length)") {
                    _ = try await storage.load(h, offset: offset, length: length)
                }
                #expect(e?.code == .corrupt, "\(at): offset \(offset) length \(length): \(e.map { "\($0.code): \($0.message)" } ?? "")")
            }

        case .emptyFile:
            let h = Handle(.snapshot, ID.hash([]))
            try await storage.save(h, [])
            #expect(try await storage.load(h) == [], "\(at)")
            #expect(try await storage.load(h, offset: 0, length: 0) == [], "\(at)")
            #expect(try await storage.stat(h) == 0, "\(at)")
            #expect(try await storage.exists(h), "\(at)")
            #expect(try await storage.list(.snapshot) == [StoredFile(name: h.name, size: 0)], "\(at)")
            let e = await expectHavenError("\(at): reading 1 byte of an empty file") { _ = try await storage.load(h, offset: 0, length: 1) }
            #expect(e?.code == .corrupt, "\(at): \(e.map { "\($0.code): \($0.message)" } ?? "")")
            try await storage.remove(h)
            #expect(try await storage.exists(h) == false, "\(at)")

        case .missingFiles:
            for h in [Handle.config, Handle(.pack, ID.hash([1])), Handle(.snapshot, ID.hash([2])), Handle(.key, ID.hash([3])), Handle(.lock, ID.hash([4]))] {
                let load = await expectHavenError("\(at): load \(h)") { _ = try await storage.load(h) }
                #expect(load?.code == .notFound, "\(at): load \(h): \(load.map { "\($0.code)" } ?? "")")
                let ranged = await expectHavenError("\(at): ranged load \(h)") { _ = try await storage.load(h, offset: 10, length: 5) }
                #expect(ranged?.code == .notFound, "\(at): ranged load \(h)")
                let stat = await expectHavenError("\(at): stat \(h)") { _ = try await storage.stat(h) }
                #expect(stat?.code == .notFound, "\(at): stat \(h)")
                let remove = await expectHavenError("\(at): remove \(h)") { try await storage.remove(h) }
                #expect(remove?.code == .notFound, "\(at): remove \(h)")
                #expect(try await storage.exists(h) == false, "\(at): \(h)")
            }

        case .listEachType:
            for type in FileType.allCases { #expect(try await storage.list(type).isEmpty, "\(at): \(type) not empty after create") }
            var rng = SeededRandom(seed: 3)
            var expected: [FileType: Set<StoredFile>] = [:]
            try await storage.save(.config, [1, 2, 3])
            expected[.config] = [StoredFile(name: "config", size: 3)]
            for type in FileType.allCases where type != .config {
                var files: Set<StoredFile> = []
                // Packs: enough IDs to land in several data/XX/ directories, two sharing a prefix.
                let count = type == .pack ? 40 : 5
                var first: ID?
                for i in 0..<count {
                    var id = ID(rng.bytes(32))
                    if type == .pack, i == 1, let first { id = ID(Array(first.bytes.prefix(1)) + rng.bytes(31)) }
                    if i == 0 { first = id }
                    let data = rng.bytes(Int(rng.next() % 500))
                    try await storage.save(Handle(type, id), data)
                    files.insert(StoredFile(name: id.hex, size: data.count))
                }
                expected[type] = files
            }
            for type in FileType.allCases {
                let listed = try await storage.list(type)
                #expect(Set(listed) == expected[type], "\(at): list(\(type))")
                #expect(listed.count == expected[type]?.count, "\(at): \(type) listed a file twice")
            }
            if let atPath = s.storedAtLayoutPath {
                for f in expected[.pack]! {
                    #expect(atPath(Handle(.pack, f.name)), "\(at): pack \(f.name) is not under data/\(f.name.prefix(2))/")
                }
            }
            // Removing makes a file disappear from its list only.
            let victim = try #require(expected[.index]?.first)
            try await storage.remove(Handle(.index, victim.name))
            #expect(Set(try await storage.list(.index)) == expected[.index]!.subtracting([victim]), "\(at)")
            #expect(Set(try await storage.list(.snapshot)) == expected[.snapshot], "\(at)")
            let gone = await expectHavenError("\(at): load of a removed file") { _ = try await storage.load(Handle(.index, victim.name)) }
            #expect(gone?.code == .notFound, "\(at)")

        case .saveReplaces:
            let h = Handle(.lock, ID.hash([9]))
            let long = SeededRandom.bytes(seed: 4, 5000), short = SeededRandom.bytes(seed: 5, 10)
            try await storage.save(h, long)
            try await storage.save(h, short)
            #expect(try await storage.load(h) == short, "\(at)")
            #expect(try await storage.stat(h) == short.count, "\(at)")
            #expect(try await storage.list(.lock) == [StoredFile(name: h.name, size: short.count)], "\(at)")
            try await storage.save(.config, long)
            try await storage.save(.config, short)
            #expect(try await storage.load(.config) == short, "\(at)")
            #expect(s.leftovers().isEmpty, "\(at): temporary files left: \(s.leftovers())")

        case .concurrentSaves:
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<48 {
                    group.addTask {
                        let data = SeededRandom.bytes(seed: UInt64(i), 20_000 + i)
                        let type: FileType = [.pack, .index, .snapshot][i % 3]
                        try await storage.save(Handle(type, ID.hash(data)), data)
                    }
                }
                try await group.waitForAll()
            }
            #expect(s.leftovers().isEmpty, "\(at): temporary files left: \(s.leftovers())")
            #expect(try await storage.list(.pack).count == 16, "\(at)")
            #expect(try await storage.list(.index).count == 16, "\(at)")
            #expect(try await storage.list(.snapshot).count == 16, "\(at)")
            for f in try await storage.list(.pack) {
                let data = try await storage.load(Handle(.pack, f.name))
                #expect(ID.hash(data).hex == f.name, "\(at): content of \(f.name) is not what was saved")
            }

        case .createTwice:
            try await storage.create()
            #expect(try await storage.list(.pack).isEmpty, "\(at)")
            try await storage.save(.config, [1, 2, 3])
            let e = await expectHavenError("\(at): second create") { try await storage.create() }
            #expect(e?.code == .invalidArgument, "\(at): \(e.map { "\($0.code)" } ?? "")")
            let trimmed = at.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            #expect(e?.message.contains(trimmed) == true, "the message should name \(trimmed): \(e?.message ?? "")")
            // The existing repository is untouched.
            #expect(try await storage.load(.config) == [1, 2, 3], "\(at)")

        case .largeFile:
            let data = SeededRandom.bytes(seed: 20, 20 << 20)
            let h = Handle(.pack, ID.hash(data))
            try await storage.save(h, data)
            #expect(try await storage.stat(h) == data.count, "\(at)")
            let back = try await storage.load(h)
            #expect(back.count == data.count, "\(at)")
            #expect(ID.hash(back) == ID.hash(data), "\(at): content differs")
            let mid = (10 << 20) - 7
            try await expectSameBytes(storage.load(h, offset: mid, length: 1 << 20), data[mid..<(mid + (1 << 20))], "\(at): ranged read")
            #expect(try await storage.list(.pack) == [StoredFile(name: h.name, size: data.count)], "\(at)")
            #expect(s.leftovers().isEmpty, "\(at): temporary files left: \(s.leftovers())")

        case .spooledSave:
            // Written as a pack is, many small pieces then a large one; not a whole number of the pieces
            // a storage may read it back in.
            let data = SeededRandom.bytes(seed: 21, (3 << 20) + 12345)
            let spool = try SpoolFile.forPack(of: storage)
            defer { spool.close() }
            var written = 0
            while written < 100_000 {
                try spool.write(Array(data[written..<(written + 1000)]))
                written += 1000
            }
            try spool.write(Array(data[written...]))
            let h = Handle(.pack, try spool.id())
            #expect(h.name == ID.hash(data).hex, "\(at): the spool's hash")
            try await storage.save(h, spooled: spool)
            #expect(try await storage.stat(h) == data.count, "\(at)")
            try await expectSameBytes(storage.load(h), data[...], "\(at): a spooled pack read back")
            #expect(try await storage.list(.pack) == [StoredFile(name: h.name, size: data.count)], "\(at)")
            #expect(s.leftovers().isEmpty, "\(at): temporary files left: \(s.leftovers())")

        case .sequentialRead:
            let data = SeededRandom.bytes(seed: 22, (5 << 20) + 777)
            let h = Handle(.pack, ID.hash(data))
            try await storage.save(h, data)
            // From an offset to the end, in pieces that do not line up with any size a storage reads in.
            let offset = 4099
            let pieces = [1, 70_000, 1 << 20, 3, (2 << 20) + 5]
            let back = try await storage.withReader(h, offset: offset, length: data.count - offset) { reader in
                var out: [UInt8] = []
                var k = 0
                while reader.remaining > 0 {
                    let before = reader.remaining
                    out += try await reader.read(min(before, pieces[k % pieces.count]))
                    #expect(reader.remaining == before - min(before, pieces[k % pieces.count]), "\(at): remaining")
                    k += 1
                }
                return out
            }
            expectSameBytes(back, data[offset...], "\(at): a range read in pieces")
            // A range past the end fails at the read that runs out of bytes.
            for (o, l) in [(data.count - 10, 11), (data.count + 5, 1)] {
                let e = await expectHavenError("\(at): reader at \(o) length \(l)") {
                    try await storage.withReader(h, offset: o, length: l) { _ = try await $0.read(l) }
                }
                #expect(e?.code == .corrupt, "\(at): reader at \(o) length \(l): \(e.map { "\($0.code): \($0.message)" } ?? "")")
            }
            let missing = await expectHavenError("\(at): reader of a missing file") {
                try await storage.withReader(Handle(.pack, ID.hash([9])), offset: 0, length: 10) { _ = try await $0.read(10) }
            }
            #expect(missing?.code == .notFound, "\(at): \(missing.map { "\($0.code): \($0.message)" } ?? "")")
            // Readers closed after their first piece, more of them than a remote storage keeps connections:
            // each must let go of what it holds, or these (and the load after them) would wait for ever.
            for i in 0..<12 {
                let first = try await storage.withReader(h, offset: i * 1000, length: 4 << 20) { try await $0.read(100) }
                expectSameBytes(first, data[(i * 1000)..<(i * 1000 + 100)], "\(at): abandoned reader \(i)")
            }
            try await expectSameBytes(storage.load(h, offset: 77, length: 1000), data[77..<1077], "\(at): a load after the readers")
        }
    }
}

/// Runs `body`, expecting it to throw a `HavenError`; records an issue (naming `what`) when it does not.
public func expectHavenError(_ what: String = "", sourceLocation: SourceLocation = #_sourceLocation,
                       _ body: () async throws -> Void) async -> HavenError? {
    do {
        try await body()
        Issue.record("\(what): expected a HavenError, nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as HavenError {
        return e
    } catch {
        Issue.record("\(what): expected a HavenError, got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
    }
    return nil
}
