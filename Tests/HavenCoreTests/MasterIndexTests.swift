import Foundation
import Testing
@testable import HavenCore

/// SplitMix64: fast, seeded, good enough for synthetic IDs.
private struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    mutating func id() -> ID { ID(w0: next(), w1: next(), w2: next(), w3: next()) }
}

private func blob(_ id: ID, _ type: BlobType = .data, offset: UInt32 = 0, length: UInt32 = 100, uncompressed: UInt32 = 0) -> PackedBlob {
    PackedBlob(id: id, type: type, offset: offset, length: length, uncompressedLength: uncompressed)
}

/// `packs` packs of `perPack` blobs each, every third blob a tree, with distinct offsets and sizes.
private func syntheticIndex(_ rng: inout SplitMix, packs: Int, perPack: Int) -> IndexFile {
    var out: [IndexFile.Pack] = []
    out.reserveCapacity(packs)
    for _ in 0..<packs {
        var blobs: [PackedBlob] = []
        blobs.reserveCapacity(perPack)
        var offset: UInt32 = 0
        for k in 0..<perPack {
            let length = UInt32(40 + rng.next() % 5000)
            let uncompressed = k % 2 == 0 ? UInt32(rng.next() % 9000) : 0
            blobs.append(blob(rng.id(), k % 3 == 0 ? .tree : .data, offset: offset, length: length, uncompressed: uncompressed))
            offset += length
        }
        out.append(IndexFile.Pack(id: rng.id(), blobs: blobs))
    }
    return IndexFile(packs: out)
}

/// Checks every blob of `files` is found where the file says (each blob appears once in `files`).
private func expectIndexed(_ index: MasterIndex, _ files: [IndexFile], sourceLocation: SourceLocation = #_sourceLocation) {
    var misses = 0
    for f in files {
        for p in f.packs {
            for b in p.blobs where index.lookup(b.id, b.type) != BlobLocation(pack: p.id, blob: b) || !index.has(b.id, b.type) {
                misses += 1
            }
        }
    }
    #expect(misses == 0, sourceLocation: sourceLocation)
}

/// The pre-streaming decoder (a JSONValue tree, then checks), kept to test the streaming one against it.
private func treeDecode(_ bytes: [UInt8], id: ID) throws -> IndexFile {
    let what = "index \(id.short)"
    func list(_ v: JSONValue?, _ field: String) throws -> [JSONValue] {
        guard let v, !v.isNull else { return [] }
        guard let a = v.array else { throw HavenError(.corrupt, "\(what) has a \(field) field that is not a list") }
        return a
    }
    let json: JSONValue
    do { json = try JSONValue.parse(bytes) } catch { throw HavenError(.corrupt, "\(what) is not valid JSON: \(error)") }
    var result = IndexFile()
    let packList: [JSONValue]
    if case .array(let legacy) = json {
        packList = legacy
    } else {
        guard case .object = json else { throw HavenError(.corrupt, "\(what) is not a JSON object") }
        for s in try list(json["supersedes"], "supersedes") {
            guard let str = s.string, let sid = ID(hex: str) else { throw HavenError(.corrupt, "\(what) has an invalid supersedes entry") }
            result.supersedes.append(sid)
        }
        packList = try list(json["packs"], "packs")
    }
    for p in packList {
        guard let ph = p["id"]?.string, let pid = ID(hex: ph) else { throw HavenError(.corrupt, "\(what) has a pack without a valid id") }
        var blobs: [PackedBlob] = []
        for b in try list(p["blobs"], "blobs") {
            guard let bh = b["id"]?.string, let bid = ID(hex: bh),
                  let t = b["type"]?.string.flatMap(BlobType.init(rawValue:)),
                  let off = b["offset"]?.uint64, let len = b["length"]?.uint64,
                  off <= UInt64(UInt32.max), len <= UInt64(UInt32.max), len >= UInt64(MasterKey.overhead)
            else { throw HavenError(.corrupt, "\(what) has an invalid blob entry in pack \(pid.short)") }
            var ulen: UInt64 = 0
            if let u = b["uncompressed_length"], !u.isNull {
                guard let n = u.uint64 else { throw HavenError(.corrupt, "\(what) has an invalid uncompressed_length") }
                ulen = n
            }
            guard ulen <= UInt64(UInt32.max) else { throw HavenError(.corrupt, "\(what) has an invalid uncompressed_length") }
            blobs.append(PackedBlob(id: bid, type: t, offset: UInt32(off), length: UInt32(len), uncompressedLength: UInt32(ulen)))
        }
        result.packs.append(IndexFile.Pack(id: pid, blobs: blobs))
    }
    return result
}

/// The outcome of a decode, comparable: the decoded content or the error message.
private func outcome(_ body: () throws -> IndexFile) -> String {
    do {
        let f = try body()
        return "ok \(f.supersedes) " + f.packs.map { "\($0.id):\($0.blobs.map { "\($0.id)/\($0.type)/\($0.offset)/\($0.length)/\($0.uncompressedLength)" })" }.joined(separator: ";")
    } catch let e as HavenError {
        return "\(e.code) \(e.message)"
    } catch {
        return "other \(error)"
    }
}

@Suite("MasterIndex")
struct MasterIndexTests {
    @Test("index files added concurrently are all found, each blob where its file says")
    func concurrentBulkAdd() async {
        var rng = SplitMix(1)
        let files = (0..<8).map { _ in syntheticIndex(&rng, packs: 50, perPack: 100) }
        let index = MasterIndex()
        await withTaskGroup(of: Void.self) { group in
            for f in files { group.addTask { index.add(f) } }
        }
        expectIndexed(index, files)
        #expect(index.blobCount == 40_000)
        #expect(index.packCount == 400)
        #expect(index.packIDs == Set(files.flatMap { $0.packs.map(\.id) }))
        let data = index.allBlobs(.data), tree = index.allBlobs(.tree)
        let all = files.flatMap { $0.packs.flatMap(\.blobs) }
        #expect(data.count + tree.count == all.count)
        let expected = Dictionary(uniqueKeysWithValues: all.filter { $0.type == .data }.map { ($0.id, $0.dataLength) })
        #expect(data.allSatisfy { expected[$0.0] == $0.1 })
        #expect(Set(tree.map(\.0)) == Set(all.filter { $0.type == .tree }.map(\.id)))
        // Unknown blobs.
        for _ in 0..<1000 {
            let id = rng.id()
            #expect(!index.has(id, .data) && index.lookup(id, .tree) == nil)
        }
    }

    @Test("the first location seen wins and is never replaced")
    func firstLocationWins() {
        var rng = SplitMix(2)
        let (a, b, c, d) = (rng.id(), rng.id(), rng.id(), rng.id())
        let (p1, p2, p3, p4, p5) = (rng.id(), rng.id(), rng.id(), rng.id(), rng.id())
        let index = MasterIndex()
        // Within one file: the earlier pack wins.
        index.add(IndexFile(packs: [.init(id: p1, blobs: [blob(a, offset: 1)]), .init(id: p2, blobs: [blob(a, offset: 2), blob(b, offset: 3)])]))
        // Duplicates in a later file, not yet sorted in: the pack registered first still wins.
        index.add(IndexFile(packs: [.init(id: p3, blobs: [blob(a, offset: 4), blob(b, offset: 5), blob(c, offset: 6)])]))
        #expect(index.lookup(a, .data)?.pack == p1)
        #expect(index.lookup(b, .data)?.pack == p2)
        #expect(index.lookup(c, .data)?.pack == p3)
        // After a read, nothing replaces a known blob: not a pack, not an index file.
        index.add(pack: p4, blobs: [blob(a, offset: 7), blob(d, offset: 8)])
        index.add(IndexFile(packs: [.init(id: p5, blobs: [blob(a, offset: 9), blob(c, offset: 10), blob(d, offset: 11)])]))
        index.add(pack: p5, blobs: [blob(d, offset: 12)])
        #expect(index.lookup(a, .data) == BlobLocation(pack: p1, blob: blob(a, offset: 1)))
        #expect(index.lookup(c, .data)?.blob.offset == 6)
        #expect(index.lookup(d, .data) == BlobLocation(pack: p4, blob: blob(d, offset: 8)))
        #expect(index.blobCount == 4)
        // p5 holds only duplicates: it is not a pack of the index.
        #expect(index.packIDs == [p1, p2, p3, p4])
        #expect(index.packCount == 4)
    }

    @Test("blobs added pack by pack go through the overlay and merge into the base", arguments: [1, 7, 100])
    func overlayMerges(limit: Int) {
        var rng = SplitMix(UInt64(3 + limit))
        let index = MasterIndex(overlayLimit: limit)
        let loaded = syntheticIndex(&rng, packs: 20, perPack: 50)
        index.add(loaded)
        var added: [IndexFile] = [loaded]
        for round in 0..<60 {
            let f = syntheticIndex(&rng, packs: 1, perPack: 1 + round % 13)
            index.add(pack: f.packs[0].id, blobs: f.packs[0].blobs)
            added.append(f)
            // A later index file repeating a blob of the overlay must not move it.
            if round % 10 == 0 {
                let repeated = f.packs[0].blobs[0]
                index.add(IndexFile(packs: [.init(id: rng.id(), blobs: [blob(repeated.id, repeated.type, offset: 999_999)])]))
                added.append(syntheticIndex(&rng, packs: 2, perPack: 9))
                index.add(added.last!)
            }
            if round % 7 == 0 { expectIndexed(index, added) }
        }
        expectIndexed(index, added)
        let total = added.reduce(0) { $0 + $1.blobCount }
        #expect(index.blobCount == total)
        #expect(index.allBlobs(.data).count + index.allBlobs(.tree).count == total)
        #expect(index.packCount == added.reduce(0) { $0 + $1.packs.count })
    }

    @Test("reserve: exactly one of many concurrent callers wins each new blob")
    func reserveExactlyOnce() async {
        var rng = SplitMix(4)
        let known = syntheticIndex(&rng, packs: 4, perPack: 50)
        let fresh = (0..<2000).map { _ in rng.id() }
        let index = MasterIndex()
        index.add(known)
        let wins = await withTaskGroup(of: [Int].self) { group in
            for t in 0..<16 {
                group.addTask {
                    var won = [Int](repeating: 0, count: fresh.count * 2)
                    // Different orders per task, so that tasks collide on the same IDs.
                    for k in 0..<fresh.count {
                        let i = t % 2 == 0 ? k : fresh.count - 1 - k
                        if index.reserve(fresh[i], .data) { won[i] += 1 }
                        if index.reserve(fresh[i], .tree) { won[fresh.count + i] += 1 }
                    }
                    for p in known.packs { for b in p.blobs where index.reserve(b.id, b.type) { won[0] += 1_000_000 } }
                    return won
                }
            }
            var total = [Int](repeating: 0, count: fresh.count * 2)
            for await w in group { for i in w.indices { total[i] += w[i] } }
            return total
        }
        #expect(wins.allSatisfy { $0 == 1 })
        // Stored: no longer pending, and known.
        index.add(pack: rng.id(), blobs: fresh.prefix(10).map { blob($0) })
        #expect(fresh.prefix(10).allSatisfy { !index.reserve($0, .data) && index.has($0, .data) })
        #expect(!index.has(fresh[0], .tree))
        #expect(index.blobCount == known.blobCount + 10)
    }

    @Test("data and tree blobs with the same ID are kept apart")
    func typesAreSeparate() {
        var rng = SplitMix(5)
        let (x, y, pack) = (rng.id(), rng.id(), rng.id())
        let index = MasterIndex(overlayLimit: 2)
        index.add(IndexFile(packs: [.init(id: pack, blobs: [blob(x, .data, offset: 10)])]))
        index.add(pack: pack, blobs: [blob(y, .tree, offset: 20)])
        #expect(index.has(x, .data) && !index.has(x, .tree))
        #expect(index.has(y, .tree) && !index.has(y, .data))
        #expect(index.lookup(x, .tree) == nil && index.lookup(y, .data) == nil)
        #expect(index.lookup(y, .tree) == BlobLocation(pack: pack, blob: blob(y, .tree, offset: 20)))
        #expect(index.reserve(x, .tree) && !index.reserve(x, .data))
        index.add(pack: pack, blobs: [blob(x, .tree, offset: 30)])
        #expect(index.lookup(x, .tree)?.blob.offset == 30 && index.lookup(x, .data)?.blob.offset == 10)
        #expect(index.allBlobs(.data).map(\.0) == [x])
        #expect(Set(index.allBlobs(.tree).map(\.0)) == [x, y])
        #expect(index.blobCount == 3 && index.packCount == 1 && index.packIDs == [pack])
    }

    @Test("an empty index answers every query")
    func emptyIndex() {
        let index = MasterIndex()
        let id = ID.hash([1])
        index.finishLoading()
        #expect(!index.has(id, .data) && index.lookup(id, .tree) == nil)
        #expect(index.blobCount == 0 && index.packCount == 0 && index.packIDs.isEmpty && index.allBlobs(.data).isEmpty)
        index.add(pack: id, blobs: [])
        #expect(index.packCount == 0 && index.packIDs.isEmpty)
    }

    @Test("a million blobs take at most 64 bytes each")
    func memoryPerBlob() {
        #expect(MemoryLayout<MasterIndex.Record>.stride == 48)
        var rng = SplitMix(6)
        let index = MasterIndex()
        var sample: [(ID, ID, PackedBlob)] = []
        for _ in 0..<20 {
            let f = syntheticIndex(&rng, packs: 100, perPack: 500)
            sample.append((f.packs[7].id, f.packs[7].blobs[3].id, f.packs[7].blobs[3]))
            index.add(f)
        }
        index.finishLoading()
        let count = index.blobCount
        #expect(count == 1_000_000)
        let perBlob = Double(index.memoryBytes) / Double(count)
        #expect(perBlob <= 64, "\(perBlob) bytes per blob")
        for (pack, id, b) in sample { #expect(index.lookup(id, b.type) == BlobLocation(pack: pack, blob: b)) }
        // New blobs on top stay within bounds too.
        for _ in 0..<200 {
            let f = syntheticIndex(&rng, packs: 1, perPack: 500)
            index.add(pack: f.packs[0].id, blobs: f.packs[0].blobs)
        }
        #expect(Double(index.memoryBytes) / Double(index.blobCount) <= 64)
    }

    // MARK: Index file decoding

    @Test("the streaming index decoder agrees with the tree decoder, also on damaged files")
    func decoderMatchesTreeDecoder() {
        var rng = SplitMix(7)
        let id = ID.hash([9])
        var file = syntheticIndex(&rng, packs: 3, perPack: 4)
        file.supersedes = [rng.id()]
        let good = file.encoded()
        let text = String(decoding: good, as: UTF8.self)
        let h = ID.hash([1]).hex
        var cases: [[UInt8]] = [good, Array(text.uppercased().utf8), Array(text.replacingOccurrences(of: ",", with: " ,\n\t").utf8)]
        cases += [
            #"{"packs":[{"blobs":[{"id":"\#(h)","type":"tree","length":40,"offset":1,"x":[{}]}],"id":"\#(h)"}],"supersedes":["\#(h)"]}"#,
            #"{"packs":[{"id":"\#(h)","blobs":[{"id":"\#(h)","type":"data","offset":00,"length":1e2}]}]}"#,
            #"{"packs":[{"id":"\#(h)","blobs":[{"id":"\#(h)","type":"data","offset":+5,"length":40}]}]}"#,
            #"{"packs":[{"id":"\#(h)","blobs":[{"i\u0064":"\#(h)","type":"d\u0061ta","offset":5,"length":40,"uncompressed_length":null}]}]}"#,
            #"{"packs":[{"id":"\#(h)","id":7,"blobs":[{"id":"\#(h)","id":1,"type":"data","offset":5,"offset":-1,"length":40}]}],"packs":7}"#,
            #"{"packs":[{"id":"zz","blobs":7}],"supersedes":[1]}"#,
            #"{"packs":[{"id":"\#(h)","blobs":[{"id":"\#(h)","type":"data","offset":5,"length":40,"uncompressed_length":"1"},7]}]}"#,
            #"{"packs":[{"id":"\#(h)","blobs":[{"id":"\#(h)","type":"data","offset":18446744073709551615,"length":99999999999999999999}]}]}"#,
            #"[{"id":"\#(h)","blobs":null},{"id":"\#(h)"}] "#, "{}", "[]", " ", "{\"packs\":[1,]}", "{\"a\":1 \"b\":2}",
            String(repeating: "[", count: 300), "{\"x\":" + String(repeating: "[", count: 255) + String(repeating: "]", count: 255) + "}",
        ].map { Array($0.utf8) }
        for i in 0..<3000 {
            var bytes = good
            switch i % 3 {
            case 0: bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
            case 1: bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count))))
            default:
                // Swap in a byte that matters to the structure.
                let specials = Array("{}[],:\" 0-.e\\n".utf8)
                bytes[Int(rng.next() % UInt64(bytes.count))] = specials[Int(rng.next() % UInt64(specials.count))]
            }
            cases.append(bytes)
        }
        var differ = 0
        for c in cases {
            let streamed = outcome { try IndexFile.decode(c, id: id) }
            let tree = outcome { try treeDecode(c, id: id) }
            if streamed != tree {
                differ += 1
                if differ <= 3 { Issue.record("\(String(decoding: c.prefix(200), as: UTF8.self))\nstreamed: \(streamed.prefix(300))\ntree: \(tree.prefix(300))") }
            }
        }
        #expect(differ == 0)
    }
}
