import CHavenShims

/// How the C allocator treats large blocks a command frees: kept for reuse rather than handed back.
///
/// By default glibc maps a block above its threshold (128 KiB, raised to the largest block freed so far,
/// at most 32 MiB) with a mapping of its own and unmaps it when freed, and it hands a heap's top back to
/// the kernel once more than twice that threshold is free there. Restore and check allocate every pack's
/// bytes and every blob's plaintext afresh (up to 8 MiB, of varying sizes, on several threads), so the
/// same memory was unmapped and faulted in again zero-filled, page by page, all the time.
///
/// Measured on the Swift toolchain's binaries (1.84 GiB; release build, alternating runs): restore took
/// 1.39–1.62 s with 86,800–90,300 page faults and 0.70–0.99 s of system time by default, 1.31–1.43 s
/// with about 15,000 and 0.49–0.70 s with these settings; `check --read-data` 48,100–63,700 faults and
/// 0.14–0.22 s of system time, about 11,000 and 0.04–0.07 s. Peak RSS grows by 1–5 MB. Larger settings
/// (32 MiB blocks, 64 MiB kept) fault a little less (11,000) but are no faster, and they raised the peak
/// RSS of a first backup of 200,000 tiny files from 105 to 135 MB: memory an arena kept after a burst is
/// not there for another arena to reuse. Backups read files into reused buffers (`ChunkPool`) already.
public enum FreedMemory {
    /// Blocks below this size come from the heap, so that their memory is reused once freed: the largest
    /// chunk's plaintext (8 MiB) with its array's header and the allocator's own.
    public static let largestReused = (8 << 20) + (64 << 10)
    /// Freed memory up to this much stays at a heap's top for the next allocations.
    public static let keptFree = 16 << 20

    /// Keeps freed memory for reuse for the rest of the process (see the type). Meant for a command that
    /// runs once and exits; a long-running process that idles between bursts should not, since it would
    /// hold up to `keptFree` per allocator arena while idle. Returns false when the allocator refused.
    @discardableResult
    public static func keepForReuse() -> Bool {
        haven_keep_freed_memory(largestReused, keptFree) == 0
    }
}
