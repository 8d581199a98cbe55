// Arithmetic on polynomials over GF(2) packed into a UInt64 (bit i = coefficient of x^i).
// Addition and subtraction are both XOR; there are no carries.

extension Polynomial {
    /// The degree of a raw polynomial; -1 for the zero polynomial.
    @inline(__always)
    static func degree(of value: UInt64) -> Int {
        value == 0 ? -1 : 63 - value.leadingZeroBitCount
    }

    /// Quotient and remainder of `self / divisor`. Precondition: `divisor` is not zero.
    func divMod(_ divisor: Polynomial) -> (quotient: Polynomial, remainder: Polynomial) {
        precondition(divisor.rawValue != 0, "polynomial division by zero")
        let d = divisor.rawValue
        let dDeg = Polynomial.degree(of: d)
        var x = rawValue
        var q: UInt64 = 0
        var diff = Polynomial.degree(of: x) - dDeg
        while diff >= 0 {
            x ^= d << UInt64(diff)
            q |= 1 << UInt64(diff)
            diff = Polynomial.degree(of: x) - dDeg
        }
        return (Polynomial(q), Polynomial(x))
    }

    /// The remainder of `self / divisor`. Precondition: `divisor` is not zero.
    func mod(_ divisor: Polynomial) -> Polynomial {
        divMod(divisor).remainder
    }

    /// The carry-less product `self * other`, or nil when it does not fit in 64 bits.
    func multiplied(by other: Polynomial) -> Polynomial? {
        let a = rawValue, b = other.rawValue
        if a == 0 || b == 0 { return Polynomial(0) }
        if Polynomial.degree(of: a) + Polynomial.degree(of: b) > 63 { return nil }
        var result: UInt64 = 0
        var bits = b
        while bits != 0 {
            let i = UInt64(bits.trailingZeroBitCount)
            result ^= a << i
            bits &= bits - 1
        }
        return Polynomial(result)
    }

    /// `(self * other) mod modulus`. Precondition: `modulus` is not zero.
    func mulMod(_ other: Polynomial, _ modulus: Polynomial) -> Polynomial {
        let g = modulus.rawValue
        precondition(g != 0, "polynomial division by zero")
        let gDeg = Polynomial.degree(of: g)
        if gDeg == 0 { return Polynomial(0) }  // everything is 0 modulo a constant
        var a = mod(modulus).rawValue  // degree < gDeg, so a << 1 never loses a bit
        var f = other.mod(modulus).rawValue
        let top: UInt64 = 1 << UInt64(gDeg)
        var result: UInt64 = 0
        while f != 0 {
            if f & 1 != 0 { result ^= a }
            f >>= 1
            a <<= 1
            if a & top != 0 { a ^= g }
        }
        return Polynomial(result)
    }

    /// The greatest common divisor (Euclid).
    func gcd(_ other: Polynomial) -> Polynomial {
        var x = self, f = other
        while true {
            if f.rawValue == 0 { return x }
            if x.rawValue == 0 { return f }
            if x.degree < f.degree { swap(&x, &f) }
            (x, f) = (f, x.mod(f))
        }
    }

    /// `(x^(2^p) - x) mod g`, the term of Ben-Or's irreducibility test.
    static func qp(_ p: Int, _ g: Polynomial) -> Polynomial {
        var result = Polynomial(2)  // x
        for _ in 0..<p {
            result = result.mulMod(result, g)
        }
        return Polynomial(result.rawValue ^ 2).mod(g)
    }
}
