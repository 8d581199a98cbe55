import Testing
@testable import HavenCore

private func id(_ s: String) -> ID { ID.hash(Array(s.utf8)) }

private func blob(_ name: String, _ type: BlobType = .data, at offset: UInt32, _ length: UInt32 = 100) -> PackedBlob {
    PackedBlob(id: id(name), type: type, offset: offset, length: length, uncompressedLength: 0)
}

@Suite("Pack listing and index slots")
struct PackListingTests {
    @Test("the listing merges packs listed by several files, sorts packs and blobs, and names each pack's first file")
    func listingMergesAndSorts() {
        let p1 = id("pack 1"), p2 = id("pack 2"), p3 = id("pack 3")
        let f1 = IndexFile(packs: [IndexFile.Pack(id: p1, blobs: [blob("b", at: 100), blob("a", at: 0)]),
                                   IndexFile.Pack(id: p2, blobs: [])])
        let f2 = IndexFile(packs: [IndexFile.Pack(id: p1, blobs: [blob("a", at: 0), blob("c", .tree, at: 200)]),
                                   IndexFile.Pack(id: p3, blobs: [blob("a", at: 0)])])
        let (n1, n2) = (id("index 1"), id("index 2"))
        let builder = PackListing.Builder()
        builder.add(f2, id: max(n1, n2))
        builder.add(f1, id: min(n1, n2))
        let listing = builder.finish()
        #expect(listing.packs == [p1, p2, p3].sorted())
        for (k, pack) in listing.packs.enumerated() {
            #expect(listing.position(of: pack) == k)
            let offsets = listing.blobs(ofPackAt: k).map(\.blob.offset)
            #expect(listing.blobs(ofPackAt: k).allSatisfy { Int($0.pack) == k })
            switch pack {
            case p1:
                #expect(offsets == [0, 100, 200], "the entry both files list is kept once")
                #expect(listing.namedBy[k] == min(n1, n2))
            case p2:
                #expect(offsets.isEmpty, "a pack listed without blobs has an empty range")
                #expect(listing.namedBy[k] == min(n1, n2))
            default:
                #expect(offsets == [0])
                #expect(listing.namedBy[k] == max(n1, n2))
            }
        }
        #expect(listing.entries.count == 4)
        #expect(listing.position(of: id("no such pack")) == nil)
    }

    @Test("after seal every blob has one slot: data first, then trees, dense, including blobs added one pack at a time")
    func slotsAreDense() {
        let index = MasterIndex(overlayLimit: 1 << 20)
        let file = IndexFile(packs: [IndexFile.Pack(id: id("p"), blobs: (0..<50).map { blob("d\($0)", at: UInt32($0) * 100) }
                                                    + (0..<7).map { blob("t\($0)", .tree, at: 10_000 + UInt32($0) * 100) })])
        index.add(file)
        _ = index.has(id("d0"), .data)
        index.add(pack: id("q"), blobs: (50..<60).map { blob("d\($0)", at: UInt32($0) * 100) })  // stays in the overlay
        index.seal()
        #expect(index.slotCount == 67)
        var seen = Set<Int>()
        for i in 0..<60 {
            let s = index.slot(id("d\(i)"), .data)
            #expect(s != nil && s! < 60, "data blob \(i): \(String(describing: s))")
            if let s { seen.insert(s) }
        }
        for i in 0..<7 {
            let s = index.slot(id("t\(i)"), .tree)
            #expect(s != nil && s! >= 60 && s! < 67)
            if let s { seen.insert(s) }
        }
        #expect(seen.count == 67)
        #expect(index.slot(id("t0"), .data) == nil && index.slot(id("d0"), .tree) == nil)
        #expect(index.lookup(id("d55"), .data)?.pack == id("q"), "sealing keeps every location")
    }

    @Test("used blobs: a bit per indexed blob, a set for the rest, counted by type")
    func usedBlobs() {
        let index = MasterIndex()
        index.add(IndexFile(packs: [IndexFile.Pack(id: id("p"), blobs: [blob("a", at: 0), blob("t", .tree, at: 100)])]))
        index.seal()
        var used = UsedBlobs(index: index)
        let first = used.insert(id("a"), .data, slot: index.slot(id("a"), .data))
        let again = used.insert(id("a"), .data, slot: index.slot(id("a"), .data))
        let outside = used.insert(id("x"), .data, slot: nil)
        let outsideAgain = used.insert(id("x"), .data, slot: nil)
        #expect(first && !again, "a second insert is not new")
        #expect(outside && !outsideAgain)
        #expect(used.contains(id("a"), .data) && used.contains(id("x"), .data))
        #expect(!used.contains(id("t"), .tree) && !used.contains(id("a"), .tree))
        #expect(used.dataCount == 2 && used.treeCount == 0 && used.indexedCount == 1)
        #expect(used.notIndexed == [BlobKey(id: id("x"), type: .data)])
    }
}
