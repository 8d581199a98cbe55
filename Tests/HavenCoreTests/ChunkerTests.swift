import Foundation
import Testing

@testable import HavenCore

// MARK: - Helpers

/// SplitMix64: a tiny seeded generator, so test data is the same on every run and platform.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private func pseudoRandomBytes(count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { p in
        var i = 0
        while i + 8 <= count {
            p.storeBytes(of: rng.next().littleEndian, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < count {
            p[i] = UInt8(truncatingIfNeeded: rng.next())
            i += 1
        }
    }
    return bytes
}

/// restic's test polynomial (irreducible, degree 53).
private let testPolynomial = Polynomial(0x3DA3_358B_4DC1_73)

private let kiB = 1024
private let miB = 1024 * 1024

/// Cuts `data` feeding the chunker pieces of `pieceSize(pieceIndex)` bytes. Each piece is copied
/// into a scratch buffer after 64 bytes that differ from the real preceding data, so a chunker that
/// reads before the start of a piece gets wrong results. Returns the chunk lengths; the last chunk
/// ends at the end of `data`.
private func chunkLengths(_ data: [UInt8], _ chunker: Chunker, pieceSize: (Int) -> Int) -> [Int] {
    var chunker = chunker
    var lengths: [Int] = []
    var current = 0
    var offset = 0
    var pieceIndex = 0
    let guardSize = 64
    var scratch = [UInt8](repeating: 0, count: guardSize)
    data.withUnsafeBytes { source in
        while offset < source.count {
            let size = min(max(pieceSize(pieceIndex), 1), source.count - offset)
            pieceIndex += 1
            if size < 64 {
                // Too short for the chunker to look back into the piece: feed it in place.
                var rest = UnsafeRawBufferPointer(rebasing: source[offset..<(offset + size)])
                while let cut = chunker.nextBoundary(in: rest) {
                    precondition(cut > 0 && cut <= rest.count)
                    lengths.append(current + cut)
                    current = 0
                    rest = UnsafeRawBufferPointer(rebasing: rest[cut...])
                }
                current += rest.count
                offset += size
                continue
            }
            if scratch.count < guardSize + size {
                scratch = [UInt8](repeating: 0, count: guardSize + max(size, 2 * scratch.count))
            }
            scratch.withUnsafeMutableBytes { buffer in
                for k in 0..<guardSize {
                    let real = offset - guardSize + k
                    buffer[k] = real >= 0 ? ~source[real] : 0xA5
                }
                buffer.baseAddress!.advanced(by: guardSize).copyMemory(
                    from: source.baseAddress!.advanced(by: offset), byteCount: size)
                var rest = UnsafeRawBufferPointer(buffer)[guardSize..<(guardSize + size)]
                while let cut = chunker.nextBoundary(in: UnsafeRawBufferPointer(rebasing: rest)) {
                    precondition(cut > 0 && cut <= rest.count)
                    lengths.append(current + cut)
                    current = 0
                    rest = rest[(rest.startIndex + cut)...]
                }
                current += rest.count
            }
            offset += size
        }
    }
    if current > 0 { lengths.append(current) }
    return lengths
}

private func chunkLengths(_ data: [UInt8], _ chunker: Chunker) -> [Int] {
    chunkLengths(data, chunker) { _ in data.count }
}

/// Splits `data` at `lengths`.
private func chunks(_ data: [UInt8], _ lengths: [Int]) -> [ArraySlice<UInt8>] {
    var result: [ArraySlice<UInt8>] = []
    var offset = 0
    for length in lengths {
        result.append(data[offset..<(offset + length)])
        offset += length
    }
    return result
}

private func sha256Hex(_ bytes: ArraySlice<UInt8>) -> String {
    bytes.withUnsafeBytes { ID.hash($0).hex }
}

/// A deliberately plain restatement of restic's algorithm, without lookup tables: the fingerprint
/// is the 64-byte window read as a polynomial, reduced modulo the polynomial with `mod`.
private struct ReferenceChunker {
    let polynomial: Polynomial
    let minSize: Int
    let maxSize: Int
    let mask: UInt64
    /// `outTerm[b]` = b·x^(8·63) mod P: byte b's share of the fingerprint when it is the oldest.
    let outTerm: [UInt64]

    init(polynomial: Polynomial, minSize: Int, maxSize: Int, averageBits: Int) {
        self.polynomial = polynomial
        self.minSize = minSize
        self.maxSize = maxSize
        mask = (1 << UInt64(averageBits)) - 1
        var x504 = Polynomial(1)
        for _ in 0..<(8 * 63) { x504 = x504.mulMod(Polynomial(2), polynomial) }
        outTerm = (0..<256).map { Polynomial(UInt64($0)).mulMod(x504, polynomial).rawValue }
    }

    func lengths(_ data: [UInt8]) -> [Int] {
        var result: [Int] = []
        var window = [UInt8](repeating: 0, count: 64)
        var wpos = 0
        var digest: UInt64 = 0
        var count = 0
        func reset() {
            // The window starts holding a single 1 byte (newest) after 63 zeros.
            window = [UInt8](repeating: 0, count: 64)
            window[0] = 1
            wpos = 1
            digest = 1
            count = 0
        }
        reset()
        for b in data {
            count += 1
            if count <= minSize - 64 { continue }  // not hashed
            let o = window[wpos]
            window[wpos] = b
            wpos = (wpos + 1) % 64
            digest = Polynomial(((digest ^ outTerm[Int(o)]) << 8) | UInt64(b)).mod(polynomial).rawValue
            if (digest & mask == 0 || count >= maxSize) && count >= minSize {
                result.append(count)
                reset()
            }
        }
        if count > 0 { result.append(count) }
        return result
    }
}

/// Piece-size patterns the chunker must be indifferent to.
private func feedPatterns(total: Int) -> [(String, (Int) -> Int)] {
    var rng = SplitMix64(seed: 99)
    let randomSizes: [Int] = (0..<200_000).map { i in
        switch i % 4 {
        case 0: Int(rng.next() % 63) + 1  // shorter than the window
        case 1: Int(rng.next() % 200) + 1
        case 2: Int(rng.next() % (300 * 1024)) + 1
        default: Int(rng.next() % (3 * 1024 * 1024)) + 1
        }
    }
    return [
        ("whole", { _ in total }),
        ("7 bytes", { _ in 7 }),
        ("64 bytes", { _ in 64 }),
        ("65 bytes", { _ in 65 }),
        ("64 KiB", { _ in 64 * 1024 }),
        ("random", { randomSizes[$0 % randomSizes.count] }),
    ]
}

// MARK: - restic as an oracle

private func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for dir in path.split(separator: ":") {
        let candidate = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

private let resticPath = findExecutable("restic")

/// Runs restic and returns its standard output; fails the test on a non-zero exit.
private func restic(_ arguments: [String]) throws -> Data {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: resticPath!)
    process.arguments = ["--no-cache", "--quiet"] + arguments
    var environment = ProcessInfo.processInfo.environment
    environment["RESTIC_PASSWORD"] = "x"
    environment.removeValue(forKey: "RESTIC_REPOSITORY")
    environment.removeValue(forKey: "RESTIC_PASSWORD_FILE")
    environment.removeValue(forKey: "RESTIC_PASSWORD_COMMAND")
    process.environment = environment
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    try #require(process.terminationStatus == 0, "restic \(arguments.joined(separator: " ")) failed")
    return data
}

@Suite struct ChunkerTests {

    // MARK: - Polynomials

    @Test func polynomialDegree() {
        #expect(Polynomial(0).degree == -1)
        #expect(Polynomial(1).degree == 0)
        #expect(Polynomial(2).degree == 1)
        #expect(Polynomial(3).degree == 1)
        #expect(Polynomial(0xFF).degree == 7)
        #expect(Polynomial(0x100).degree == 8)
        #expect(testPolynomial.degree == 53)
        #expect(Polynomial(1 << 63).degree == 63)
        #expect(Polynomial(UInt64.max).degree == 63)
    }

    @Test func polynomialDivMod() {
        // x^3 = (x + 1)(x^2 + x + 1) + 1
        let (q, r) = Polynomial(0b1000).divMod(Polynomial(0b111))
        #expect(q == Polynomial(0b11))
        #expect(r == Polynomial(1))
        // x^2 + 1 = (x + 1)^2
        #expect(Polynomial(0b101).mod(Polynomial(0b11)) == Polynomial(0))
        #expect(Polynomial(0b101).divMod(Polynomial(0b11)).quotient == Polynomial(0b11))
        // Smaller degree: the dividend is the remainder.
        #expect(Polynomial(0x1234).mod(testPolynomial) == Polynomial(0x1234))
        #expect(Polynomial(0).mod(testPolynomial) == Polynomial(0))
        #expect(testPolynomial.mod(testPolynomial) == Polynomial(0))
        // x^53 mod P = P - x^53.
        #expect(Polynomial(1 << 53).mod(testPolynomial) == Polynomial(testPolynomial.rawValue ^ (1 << 53)))

        // q·d + r == x with deg r < deg d, on pseudo-random operands.
        var rng = SplitMix64(seed: 7)
        for _ in 0..<500 {
            let x = Polynomial(rng.next())
            let d = Polynomial(rng.next() >> (rng.next() % 63))
            guard d.rawValue != 0 else { continue }
            let (q, r) = x.divMod(d)
            #expect(r.degree < d.degree)
            let product = q.multiplied(by: d)
            #expect(product != nil)
            #expect(Polynomial(product!.rawValue ^ r.rawValue) == x)
        }
    }

    @Test func polynomialMulModAgreesWithMultiplyThenMod() {
        var rng = SplitMix64(seed: 8)
        for _ in 0..<500 {
            let a = Polynomial(rng.next() >> 33)  // degree <= 30
            let b = Polynomial(rng.next() >> 34)  // degree <= 29
            let product = a.multiplied(by: b)!
            #expect(a.mulMod(b, testPolynomial) == product.mod(testPolynomial))
        }
    }

    @Test func polynomialIrreducibility() {
        #expect(testPolynomial.isIrreducible)
        // Small irreducible polynomials.
        for p: UInt64 in [0b11, 0b111, 0b1011, 0b1101, 0b10011, 0b11001, 0x11B, 0x11D] {
            #expect(Polynomial(p).isIrreducible, "\(Polynomial(p)) is irreducible")
        }
        // Reducible ones: x^2, x^2 + 1 = (x+1)^2, x^4 + x^2 + 1 = (x^2+x+1)^2, anything divisible by x.
        for p: UInt64 in [0b100, 0b101, 0b10101, 0b1010, 0x3DA3_358B_4DC1_72] {
            #expect(!Polynomial(p).isIrreducible, "\(Polynomial(p)) is reducible")
        }
        // Products of two non-constant polynomials are reducible.
        var rng = SplitMix64(seed: 9)
        for _ in 0..<50 {
            let a = Polynomial((rng.next() >> 38) | (1 << 25) | 1)  // degree 25
            let b = Polynomial((rng.next() >> 37) | (1 << 26) | 1)  // degree 26
            let product = a.multiplied(by: b)!
            #expect(product.degree == 51)
            #expect(!product.isIrreducible)
        }
        #expect(!Polynomial(0b111).multiplied(by: testPolynomial)!.isIrreducible)
    }

    @Test func randomPolynomialsAreIrreducibleOfDegree53() {
        for _ in 0..<10 {
            let p = Polynomial.random()
            #expect(p.degree == 53)
            #expect(p.rawValue & 1 == 1)
            #expect(p.isIrreducible)
            #expect(p.isUsableForChunking)
        }
        var a = SplitMix64(seed: 42), b = SplitMix64(seed: 42)
        let p = Polynomial.random(using: &a)
        #expect(p == Polynomial.random(using: &b))
        #expect(p.degree == 53 && p.isIrreducible)
    }

    @Test func polynomialHex() {
        #expect(Polynomial(0x25_b468_838d_cb75).hex == "25b468838dcb75")
        #expect(Polynomial(0x25_b468_838d_cb75).description == "25b468838dcb75")
        #expect(Polynomial(hex: "25b468838dcb75") == Polynomial(0x25_b468_838d_cb75))
        #expect(Polynomial(hex: "3DA3358B4DC173") == testPolynomial)
        #expect(Polynomial(hex: "ffffffffffffffff") == Polynomial(UInt64.max))
        #expect(Polynomial(hex: "0") == Polynomial(0))
        var rng = SplitMix64(seed: 10)
        for _ in 0..<100 {
            let p = Polynomial.random(using: &rng)
            #expect(Polynomial(hex: p.hex) == p)
            #expect(p.hex == p.hex.lowercased())
            #expect(!p.hex.hasPrefix("0"))
        }
        let garbage = [
            "", "0x25b468838dcb75", "25b468838dcb7g", "-1", "+1", " 1", "1 ", "10000000000000000", "\"25b4\"", "é",
        ]
        for garbage in garbage {
            #expect(Polynomial(hex: garbage) == nil, "\(garbage) is rejected")
        }
    }

    // MARK: - Chunk boundaries

    @Test func boundariesDoNotDependOnFeedSizes() {
        let data = pseudoRandomBytes(count: 20 * miB, seed: 1)
        let chunker = Chunker(polynomial: testPolynomial)
        let expected = chunkLengths(data, chunker)
        #expect(expected.count > 5)
        #expect(expected.reduce(0, +) == data.count)
        for length in expected.dropLast() {
            #expect(length >= Chunker.minSize && length <= Chunker.maxSize)
        }
        #expect(expected.last! <= Chunker.maxSize)
        for (name, pattern) in feedPatterns(total: data.count) {
            #expect(chunkLengths(data, chunker, pieceSize: pattern) == expected, "feeding \(name)")
        }
    }

    @Test func boundariesDoNotDependOnFeedSizesByteByByte() {
        let data = pseudoRandomBytes(count: 20 * miB, seed: 1)
        let chunker = Chunker(polynomial: testPolynomial)
        #expect(chunkLengths(data, chunker) { _ in 1 } == chunkLengths(data, chunker))
    }

    @Test(arguments: [
        (64, 100, 20),  // nothing skipped; every chunk forced at maxSize
        (64, 4096, 8),
        (100, 70_000, 10),
        (200, 201, 12),
        (4096, 64 * 1024, 14),
        (8192, 8192, 6),  // min == max
        (512 * 1024, 8 * 1024 * 1024, 16),
    ])
    func matchesPlainReference(minSize: Int, maxSize: Int, averageBits: Int) {
        let data = pseudoRandomBytes(count: max(miB, 4 * minSize) + 12345, seed: UInt64(minSize * 31 + averageBits))
        let chunker = Chunker(polynomial: testPolynomial, minSize: minSize, maxSize: maxSize, averageBits: averageBits)
        let reference = ReferenceChunker(
            polynomial: testPolynomial, minSize: minSize, maxSize: maxSize, averageBits: averageBits
        ).lengths(data)
        #expect(reference.count > 1)
        #expect(chunkLengths(data, chunker) == reference)
        for length in reference.dropLast() {
            #expect(length >= minSize && length <= maxSize)
        }
        for (name, pattern) in feedPatterns(total: data.count) {
            #expect(chunkLengths(data, chunker, pieceSize: pattern) == reference, "feeding \(name)")
        }
        #expect(chunkLengths(data, chunker) { _ in 1 } == reference)
    }

    @Test func zeroBytesAreCutAtMinSize() {
        // restic's chunks2: the window of zeros has fingerprint 0, so a chunk of zeros ends as soon as it
        // may, at minSize (restic's known answer, including the SHA-256 of 512 KiB of zeros).
        let zeros = [UInt8](repeating: 0, count: 4 * Chunker.minSize)
        let lengths = chunkLengths(zeros, Chunker(polynomial: testPolynomial))
        #expect(lengths == [Int](repeating: Chunker.minSize, count: 4))
        for chunk in chunks(zeros, lengths) {
            #expect(sha256Hex(chunk) == "07854d2fef297a06ba81685e660c332de36d5d18d546927d30daad6d7fda1541")
        }
        // The same for any polynomial and however the zeros are fed.
        let more = [UInt8](repeating: 0, count: 20 * miB + 5)
        let chunker = Chunker(polynomial: Polynomial.random())
        let expected = [Int](repeating: Chunker.minSize, count: 40) + [5]
        #expect(chunkLengths(more, chunker) == expected)
        #expect(chunkLengths(more, chunker) { _ in 100_000 } == expected)
    }

    @Test func periodicDataIsCutAtMaxSize() {
        // A period-1000 pattern whose fingerprints (also period 1000) miss the split mask: only maxSize cuts.
        var rng = SplitMix64(seed: 5)
        var data: [UInt8] = []
        var found = false
        for _ in 0..<20 where !found {
            let period = (0..<1000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            data = []
            data.reserveCapacity(20 * miB)
            while data.count < 20 * miB { data += period.prefix(20 * miB - data.count) }
            let lengths = chunkLengths(data, Chunker(polynomial: testPolynomial))
            if lengths.dropLast().allSatisfy({ $0 == Chunker.maxSize }) {
                found = true
                #expect(lengths == [Chunker.maxSize, Chunker.maxSize, 20 * miB - 2 * Chunker.maxSize])
                #expect(chunkLengths(data, Chunker(polynomial: testPolynomial)) { _ in 4099 } == lengths)
            }
        }
        #expect(found)
    }

    @Test func shortInputHasNoBoundary() {
        for data in [
            pseudoRandomBytes(count: Chunker.minSize - 1, seed: 3), [UInt8](repeating: 0, count: Chunker.minSize - 1),
            [UInt8](repeating: 7, count: 100), [],
        ] {
            for (_, pattern) in feedPatterns(total: data.count) {
                let lengths = chunkLengths(data, Chunker(polynomial: testPolynomial), pieceSize: pattern)
                #expect(lengths == (data.isEmpty ? [] : [data.count]))
            }
        }
        var chunker = Chunker(polynomial: testPolynomial)
        #expect(chunker.nextBoundary(in: UnsafeRawBufferPointer(start: nil, count: 0)) == nil)
    }

    @Test func resetStartsANewChunk() {
        let data = pseudoRandomBytes(count: 3 * miB, seed: 4)
        let expected = chunkLengths(data, Chunker(polynomial: testPolynomial))
        var chunker = Chunker(polynomial: testPolynomial)
        // Feed an unrelated prefix, then reset: the result must be as for a fresh chunker.
        let prefix = pseudoRandomBytes(count: 700 * kiB, seed: 5)
        prefix.withUnsafeBytes { _ = chunker.nextBoundary(in: $0) }
        chunker.reset()
        #expect(chunkLengths(data, chunker) == expected)
        #expect(chunker.polynomial == testPolynomial)
        #expect(chunker.minimumSize == Chunker.minSize && chunker.maximumSize == Chunker.maxSize)
    }

    // MARK: - Known answer from restic itself

    @Test(.enabled(if: resticPath != nil, "restic is not installed"))
    func sameChunksAsRestic() throws {
        let fm = FileManager.default
        let root = fm.temporaryDirectory.appendingPathComponent("haven-chunker-\(UUID().uuidString)")
        defer { try? fm.removeItem(at: root) }
        let source = root.appendingPathComponent("data")
        let repository = root.appendingPathComponent("repo").path
        try fm.createDirectory(at: source, withIntermediateDirectories: true)

        var files: [String: [UInt8]] = [:]
        files["random-6MiB"] = pseudoRandomBytes(count: 6 * miB, seed: 11)
        files["random-20MiB"] = pseudoRandomBytes(count: 20 * miB, seed: 12)
        // Runs of zeros (cut at minSize) between random stretches.
        var mixed: [UInt8] = []
        let stretches = [(700 * kiB, 3 * miB), (2_500_000, 100), (1, 5 * miB + 17), (3 * miB, 64), (90_000, 0)]
        for (i, (random, zeros)) in stretches.enumerated() {
            mixed += pseudoRandomBytes(count: random, seed: 100 + UInt64(i))
            mixed += [UInt8](repeating: 0, count: zeros)
        }
        files["zeros-and-random"] = mixed
        // A period-1000 pattern: no fingerprint matches, so chunks are cut at maxSize.
        let period = pseudoRandomBytes(count: 1000, seed: 13)
        var periodic: [UInt8] = []
        while periodic.count < 18 * miB { periodic += period.prefix(18 * miB - periodic.count) }
        files["periodic"] = periodic
        files["small"] = pseudoRandomBytes(count: 100 * kiB, seed: 14)
        files["exactly-min"] = pseudoRandomBytes(count: Chunker.minSize, seed: 15)
        files["min-plus-one"] = pseudoRandomBytes(count: Chunker.minSize + 1, seed: 16)
        for (name, bytes) in files {
            try Data(bytes).write(to: source.appendingPathComponent(name))
        }

        _ = try restic(["-r", repository, "init"])
        _ = try restic(["-r", repository, "backup", source.path])

        let configData = try restic(["-r", repository, "cat", "config"])
        let config = try #require(try JSONSerialization.jsonObject(with: configData) as? [String: Any])
        let hex = try #require(config["chunker_polynomial"] as? String)
        let polynomial = try #require(Polynomial(hex: hex))
        #expect(polynomial.hex == hex)
        #expect(polynomial.degree == 53 && polynomial.isIrreducible)

        let listing = try #require(String(data: try restic(["-r", repository, "list", "blobs"]), encoding: .utf8))
        var resticDataBlobs = Set<String>()
        for line in listing.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 2 && fields[0] == "data" { resticDataBlobs.insert(String(fields[1])) }
        }

        var ours = Set<String>()
        var chunkCount = 0
        for (_, bytes) in files {
            let lengths = chunkLengths(bytes, Chunker(polynomial: polynomial)) { _ in 1 * miB + 3 }
            chunkCount += lengths.count
            for chunk in chunks(bytes, lengths) { ours.insert(sha256Hex(chunk)) }
        }
        #expect(chunkCount > 30)
        #expect(resticDataBlobs.count > 20)
        #expect(ours == resticDataBlobs)
    }
}
