import Synchronization

/// The two lookup tables of the rolling hash for one polynomial, computed once and shared.
///
/// Immutable after `init`, so sharing one instance between threads is safe.
final class ChunkerTables: @unchecked Sendable {
    /// Bytes in the sliding window.
    static let windowSize = 64

    let polynomial: Polynomial
    /// `degree - 8`: shifting the digest right by this gives its top byte.
    let polShift: UInt64
    /// `out[b]` is the hash of byte `b` followed by 63 zero bytes: XOR-ing it into the digest removes
    /// `b` from the window after it has slid 64 positions.
    let out: UnsafeMutablePointer<UInt64>
    /// `mod[b] = ((b << degree) mod polynomial) | (b << degree)`: XOR-ing it into a digest shifted left
    /// by 8 clears the 8 bits above the degree and adds their remainder.
    let mod: UnsafeMutablePointer<UInt64>
    private let storage: UnsafeMutablePointer<UInt64>

    private init(polynomial: Polynomial) {
        let degree = polynomial.degree
        precondition((8...53).contains(degree), "chunker polynomial must have a degree between 8 and 53")
        self.polynomial = polynomial
        polShift = UInt64(degree - 8)
        storage = .allocate(capacity: 512)
        out = storage
        mod = storage + 256

        for b in 0..<256 {
            var h = Polynomial(0)
            h = Self.appendByte(h, UInt8(b), polynomial)
            for _ in 0..<(Self.windowSize - 1) {
                h = Self.appendByte(h, 0, polynomial)
            }
            out[b] = h.rawValue
        }
        for b in 0..<256 {
            let shifted = UInt64(b) << UInt64(degree)
            mod[b] = Polynomial(shifted).mod(polynomial).rawValue | shifted
        }
    }

    deinit {
        storage.deallocate()
    }

    private static func appendByte(_ hash: Polynomial, _ b: UInt8, _ pol: Polynomial) -> Polynomial {
        Polynomial((hash.rawValue << 8) | UInt64(b)).mod(pol)
    }

    private static let cache = Mutex<[Polynomial: ChunkerTables]>([:])

    /// The tables for `polynomial`, computed on first use. Precondition: degree in 8...53.
    static func tables(for polynomial: Polynomial) -> ChunkerTables {
        cache.withLock { entries in
            if let tables = entries[polynomial] { return tables }
            let tables = ChunkerTables(polynomial: polynomial)
            entries[polynomial] = tables
            return tables
        }
    }
}
