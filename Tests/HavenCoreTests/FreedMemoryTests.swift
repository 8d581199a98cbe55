#if canImport(Glibc)
import Glibc
#endif
import Testing

@testable import HavenCore

@Suite("Freed memory is reused")
struct FreedMemoryTests {
    #if canImport(Glibc)
    /// Minor page faults taken by the calling thread so far.
    static func threadFaults() -> Int {
        var usage = rusage()
        getrusage(1, &usage)  // 1 is RUSAGE_THREAD (Linux), which Glibc does not export to Swift
        return usage.ru_minflt
    }

    @Test("blocks of growing size, each freed before the next, reuse the same pages instead of faulting in new ones")
    func growingBlocksReusePages() throws {
        #expect(FreedMemory.keepForReuse())
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        // Each block is larger than any freed before it, so glibc's default maps each one afresh: like the
        // plaintexts of restore, whose sizes vary from blob to blob.
        let sizes = (1...8).map { $0 << 20 }
        #expect(sizes.max()! + 64 < FreedMemory.largestReused && sizes.max()! < FreedMemory.keptFree)
        let before = Self.threadFaults()
        for size in sizes {
            let block = try #require(malloc(size))
            memset(block, 0x5a, size)
            free(block)
        }
        let faults = Self.threadFaults() - before
        let everyPage = sizes.reduce(0, +) / page  // every block faulted in whole: 9,216 pages
        let largest = sizes.max()! / page  // the largest block once: 2,048 pages
        #expect(faults < everyPage / 3, "\(faults) page faults; reused memory needs about \(largest), fresh \(everyPage)")
    }
    #endif
}
