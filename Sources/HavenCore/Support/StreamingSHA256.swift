import CHavenShims
import Crypto

/// SHA-256 of a message given in pieces, for pack IDs (the hash of a whole pack as it is written or
/// read). With the SHA extensions it runs on CHavenShims' code, like `ID.hash`; elsewhere on
/// swift-crypto's.
final class StreamingSHA256 {
    /// The eight state words, then up to 63 bytes that do not yet fill a block.
    private let storage = UnsafeMutableRawPointer.allocate(byteCount: 32 + 64, alignment: 16)
    private var pending = 0
    private var total: UInt64 = 0
    private var fallback: SHA256?

    init() {
        if ID.hashesInHardware {
            Self.initialState.withUnsafeBytes { storage.copyMemory(from: $0.baseAddress!, byteCount: 32) }
        } else {
            fallback = SHA256()
        }
    }

    deinit { storage.deallocate() }

    /// FIPS 180-4's initial hash value H(0).
    static let initialState: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]

    private var state: UnsafeMutablePointer<UInt32> { storage.assumingMemoryBound(to: UInt32.self) }
    private var tail: UnsafeMutablePointer<UInt8> { (storage + 32).assumingMemoryBound(to: UInt8.self) }

    func update(_ bytes: UnsafeRawBufferPointer) {
        if fallback != nil {
            fallback!.update(bufferPointer: bytes)
            return
        }
        guard var p = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), !bytes.isEmpty else { return }
        var left = bytes.count
        total += UInt64(left)
        if pending > 0 {
            let take = min(64 - pending, left)
            (tail + pending).update(from: p, count: take)
            pending += take
            p += take
            left -= take
            guard pending == 64 else { return }
            haven_sha256_blocks(state, tail, 1)
            pending = 0
        }
        let whole = left / 64
        if whole > 0 { haven_sha256_blocks(state, p, whole) }
        pending = left - whole * 64
        if pending > 0 { tail.update(from: p + whole * 64, count: pending) }
    }

    func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The digest of everything given so far; more may be given after it.
    func finalize() -> ID {
        if let fallback {
            return fallback.finalize().withUnsafeBytes { ID(bytes: $0) }
        }
        var id = ID(w0: 0, w1: 0, w2: 0, w3: 0)
        withUnsafeTemporaryAllocation(byteCount: 64, alignment: 16) { scratch in
            // Padding runs on a copy of the state, so the hasher itself is unchanged.
            let copy = scratch.baseAddress!.assumingMemoryBound(to: UInt32.self)
            copy.update(from: state, count: 8)
            let digest = (scratch.baseAddress! + 32).assumingMemoryBound(to: UInt8.self)
            haven_sha256_finish(copy, tail, pending, total, digest)
            id = ID(bytes: UnsafeRawBufferPointer(rebasing: scratch[32..<64]))
        }
        return id
    }
}

/// SHA-256 of a run of messages, two at a time, interleaved (about twice as fast as one after the other).
/// As soon as one of the two is done, the next message joins, so both lanes stay busy until the run's
/// last message, whatever the messages' lengths. Holds at most two messages: each
/// `add` returns once one of the two it holds is done (or the other lane was empty). Without the SHA
/// extensions, each message is hashed on its own as it is added.
final class SHA256Lanes<Tag, Message: BlobPlaintext> {
    /// Each lane's eight state words.
    private let states = UnsafeMutablePointer<UInt32>.allocate(capacity: 16)
    private var lanes: [(tag: Tag, message: Message, blocksDone: Int)?] = [nil, nil]

    init() {}

    deinit { states.deallocate() }

    /// Adds `message`; calls `completed` with the tag, message and digest of each message done by then.
    func add(_ message: Message, _ tag: Tag, _ completed: (Tag, Message, ID) throws -> Void) rethrows {
        guard ID.hashesInHardware else { return try completed(tag, message, message.withUnsafeBytes { ID.hash($0) }) }
        let free = lanes[0] == nil ? 0 : 1
        StreamingSHA256.initialState.withUnsafeBufferPointer { states.advanced(by: 8 * free).update(from: $0.baseAddress!, count: 8) }
        lanes[free] = (tag, message, 0)
        guard let a = lanes[0], let b = lanes[1] else { return }
        let count = min(a.message.count / 64 - a.blocksDone, b.message.count / 64 - b.blocksDone)
        if count > 0 {
            a.message.withUnsafeBytes { pa in
                b.message.withUnsafeBytes { pb in
                    haven_sha256_blocks_pair(states, pa.baseAddress!.assumingMemoryBound(to: UInt8.self) + 64 * a.blocksDone,
                                             states + 8, pb.baseAddress!.assumingMemoryBound(to: UInt8.self) + 64 * b.blocksDone,
                                             count)
                }
            }
        }
        lanes[0]!.blocksDone += count
        lanes[1]!.blocksDone += count
        for k in 0..<2 where lanes[k]!.blocksDone == lanes[k]!.message.count / 64 {
            try complete(k, completed)
        }
    }

    /// Hashes what the lanes still hold, calling `completed` for each.
    func finish(_ completed: (Tag, Message, ID) throws -> Void) rethrows {
        for k in 0..<2 where lanes[k] != nil {
            let lane = lanes[k]!
            let left = lane.message.count / 64 - lane.blocksDone
            if left > 0 {
                lane.message.withUnsafeBytes {
                    haven_sha256_blocks(states + 8 * k, $0.baseAddress!.assumingMemoryBound(to: UInt8.self) + 64 * lane.blocksDone, left)
                }
                lanes[k]!.blocksDone += left
            }
            try complete(k, completed)
        }
    }

    /// Pads lane `k`'s last partial block, empties the lane and hands its message on.
    private func complete(_ k: Int, _ completed: (Tag, Message, ID) throws -> Void) rethrows {
        let lane = lanes[k]!
        lanes[k] = nil
        var id = ID(w0: 0, w1: 0, w2: 0, w3: 0)
        withUnsafeTemporaryAllocation(byteCount: 32, alignment: 8) { out in
            lane.message.withUnsafeBytes { m in
                let whole = 64 * lane.blocksDone
                haven_sha256_finish(states + 8 * k, m.baseAddress.map { $0.assumingMemoryBound(to: UInt8.self) + whole },
                                    m.count - whole, UInt64(m.count), out.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
            id = ID(bytes: UnsafeRawBufferPointer(out))
        }
        try completed(lane.tag, lane.message, id)
    }
}
