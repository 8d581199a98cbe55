import Foundation
import HavenTestSupport
import Testing

@testable import HavenCore

@Suite("Reading chunks in place")
struct ChunkPoolTests {
    static let polynomial = Polynomial(0x3DA3_358B_4DC1_73)

    /// Chunk lengths from feeding all of `data` to a fresh chunker at once.
    static func referenceLengths(_ data: [UInt8], _ chunker: Chunker) -> [Int] {
        var chunker = chunker
        var lengths: [Int] = []
        var start = 0
        data.withUnsafeBytes { all in
            while start < all.count {
                if let cut = chunker.nextBoundary(in: UnsafeRawBufferPointer(rebasing: all[start...])) {
                    lengths.append(cut)
                    start += cut
                } else {
                    lengths.append(all.count - start)
                    start = all.count
                }
            }
        }
        return lengths
    }

    /// Random data with runs of zeros (cut exactly at the minimum, which leaves bytes read past the cut)
    /// between random stretches.
    static func corpus() -> [UInt8] {
        SeededRandom.bytes(seed: 1, 3 << 20 + 17) + [UInt8](repeating: 0, count: 2 << 20)
            + SeededRandom.bytes(seed: 2, 9 << 20) + [UInt8](repeating: 0, count: 700_001)
            + SeededRandom.bytes(seed: 3, 123_457)
    }

    @Test("chunks read in place are the chunker's chunks, with or without bytes read before, at any limits",
          arguments: [
              (Chunker.minSize, Chunker.maxSize, 20, 0),
              (Chunker.minSize, Chunker.maxSize, 20, 300_000),  // a prefix read before (a file that grew)
              (Chunker.minSize, 1 << 20, 30, 0),  // every chunk forced at the maximum
              (64, 4096, 8, 5000),  // chunks smaller than a read: cuts inside the carried bytes
              (4096, 64 << 10, 14, 1),
          ])
    func readChunkMatchesChunker(minSize: Int, maxSize: Int, averageBits: Int, prefixLength: Int) throws {
        let data = Self.corpus()
        let chunker = Chunker(polynomial: Self.polynomial, minSize: minSize, maxSize: maxSize, averageBits: averageBits)
        let expected = Self.referenceLengths(data, chunker)
        #expect(expected.count > 3)

        let dir = TempDir()
        let path = dir.sub("file")
        try Data(data).write(to: URL(fileURLWithPath: path))
        let fd = open(path, O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(lseek(fd, off_t(prefixLength), SEEK_SET) == off_t(prefixLength))

        let space = UnsafeMutableRawBufferPointer.allocate(byteCount: maxSize, alignment: 16)
        defer { space.deallocate() }
        var reader = chunker
        var carry = Array(data[0..<prefixLength])
        var atEnd = false
        var bytesRead = 0
        var lengths: [Int] = []
        var offset = 0
        var rounds = 0
        while !(atEnd && carry.isEmpty) {
            rounds += 1
            try #require(rounds <= expected.count + 1, "reading does not end")
            let (count, touched) = try Archiver.readChunk(into: space, chunker: &reader, carry: &carry, from: fd,
                                                          atEnd: &atEnd, bytesRead: &bytesRead)
            #expect(count <= touched && touched <= maxSize)
            if count == 0 { break }
            // Every chunk holds the stream's next bytes, and the bytes read past it are carried over.
            let chunk = UnsafeRawBufferPointer(rebasing: space[0..<count])
            try #require(offset + count <= data.count)
            let same = chunk.elementsEqual(data[offset..<(offset + count)])
            #expect(same, "chunk \(lengths.count) at \(offset)")
            // (A prefix longer than the buffer is still partly carried, after the bytes read past the cut.)
            let carried = carry.starts(with: UnsafeRawBufferPointer(rebasing: space[count..<touched]))
            #expect(carried, "bytes past chunk \(lengths.count) are carried over")
            lengths.append(count)
            offset += count
        }
        #expect(lengths == expected)
        #expect(bytesRead == data.count - prefixLength)
    }

    /// One `readChunk` from `fd` with a fresh chunker and nothing carried.
    static func readFirstChunk(_ fd: Int32) throws -> (count: Int, touched: Int, atEnd: Bool, carry: [UInt8], bytesRead: Int) {
        let space = UnsafeMutableRawBufferPointer.allocate(byteCount: Chunker.maxSize, alignment: 16)
        defer { space.deallocate() }
        var chunker = Chunker(polynomial: polynomial)
        var carry: [UInt8] = []
        var atEnd = false
        var bytesRead = 0
        let result = try Archiver.readChunk(into: space, chunker: &chunker, carry: &carry, from: fd,
                                            atEnd: &atEnd, bytesRead: &bytesRead)
        return (result.count, result.touched, atEnd, carry, bytesRead)
    }

    @Test("an empty stream gives no chunk")
    func emptyStream() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        close(fds[1])
        defer { close(fds[0]) }
        let r = try Self.readFirstChunk(fds[0])
        #expect(r.count == 0 && r.touched == 0 && r.atEnd && r.carry.isEmpty && r.bytesRead == 0)
    }

    @Test("a read error is thrown, not taken for the end of the file")
    func readError() throws {
        let dir = TempDir()
        let fd = open(dir.path, O_RDONLY | O_DIRECTORY)  // read(2) on a directory fails with EISDIR
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(throws: Archiver.SourceReadError.self) { _ = try Self.readFirstChunk(fd) }
    }

    @Test("a buffer that cannot be mapped is an error that says what to do")
    func mapFailure() throws {
        // 1 PiB is beyond any x86-64 or arm64 user address space, so mmap fails with ENOMEM whatever
        // the overcommit policy.
        let pool = ChunkPool(capacity: 1 << 50)
        let error = try #require(throws: HavenError.self) { _ = try pool.take() }
        #expect(error.code == .fatal)
        #expect(error.message.contains("cannot map 1073741824 MiB for reading a file"), "\(error)")
        #expect(error.message.contains("lower --read-concurrency"), "\(error)")
        #expect(pool.idleCount == 0)
    }

    /// Which of the pages of `length` bytes at `address` are resident.
    static func residentPages(_ address: UnsafeRawPointer, _ length: Int) -> [Bool] {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var vec = [UInt8](repeating: 0, count: (length + page - 1) / page)
        #expect(mincore(UnsafeMutableRawPointer(mutating: address), length, &vec) == 0)
        return vec.map { $0 & 1 != 0 }
    }

    @Test("a returned buffer is reused, keeps its first pages and hands the rest back to the kernel")
    func poolReusesAndTrims() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let pool = ChunkPool(capacity: 8 << 20, residentLimit: 1 << 20, idleLimit: 1)
        var first: ChunkBuffer? = try pool.take()
        let address = first!.address
        first!.fill { space in
            memset(space.baseAddress!, 0xA5, 5 << 20)
            return (count: 3 << 20, touched: 5 << 20)
        }
        #expect(first!.count == 3 << 20)
        first!.withUnsafeBytes { #expect($0.count == 3 << 20 && $0.allSatisfy { $0 == 0xA5 }) }
        #expect(Self.residentPages(address, 5 << 20).allSatisfy { $0 })
        first = nil
        #expect(pool.idleCount == 1)

        let again = try pool.take()
        #expect(again.address == address && again.count == 0)
        #expect(pool.idleCount == 0)
        let resident = Self.residentPages(address, 5 << 20)
        let kept = (1 << 20) / page
        #expect(resident[..<kept].allSatisfy { $0 }, "the first MiB stays")
        #expect(resident[kept...].allSatisfy { !$0 }, "pages past the limit are given back")
        // The kept pages still hold what was written; the dropped ones read as zeros again.
        #expect(UnsafeRawBufferPointer(start: address, count: 1 << 20).allSatisfy { $0 == 0xA5 })
        #expect(UnsafeRawBufferPointer(start: address + (1 << 20), count: 4 << 20).allSatisfy { $0 == 0 })

        // Beyond the idle limit, buffers are unmapped rather than kept.
        var a: ChunkBuffer? = try pool.take()
        var b: ChunkBuffer? = try pool.take()
        #expect(a!.address != b!.address)
        a = nil
        b = nil
        #expect(pool.idleCount == 1)
        _ = again
    }
}
