import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A point in time with nanosecond precision and the UTC offset it was recorded in, formatted as Go's
/// RFC 3339 with nanoseconds (what restic writes: `2014-12-22T14:47:59.912418701+01:00`).
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var seconds: Int64
    public var nanoseconds: Int32
    /// Offset from UTC in seconds, used for formatting only.
    public var utcOffset: Int32

    public init(seconds: Int64, nanoseconds: Int32 = 0, utcOffset: Int32 = 0) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
        self.utcOffset = utcOffset
    }

    public static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(seconds: Int64(ts.tv_sec), nanoseconds: Int32(ts.tv_nsec), utcOffset: localOffset(at: Int64(ts.tv_sec)))
    }

    /// The local time zone's offset at `seconds`. A backup asks this for three timestamps of every
    /// entry, and localtime_r takes a lock and re-checks the zone each time, so offsets are remembered per
    /// hour: an hour whose start and end have the same offset holds no transition (zones change at most
    /// once in any hour).
    public static func localOffset(at seconds: Int64) -> Int32 {
        let hour = seconds >= 0 ? seconds / 3600 : (seconds - 3599) / 3600
        if let known = offsetCache.withLock({ $0[hour] }) { return known }
        let offset = systemOffset(at: seconds)
        if systemOffset(at: hour * 3600) == offset && systemOffset(at: hour * 3600 + 3599) == offset {
            offsetCache.withLock { cache in
                if cache.count >= 4096 { cache.removeAll(keepingCapacity: true) }
                cache[hour] = offset
            }
        }
        return offset
    }

    private static func systemOffset(at seconds: Int64) -> Int32 {
        var t = time_t(seconds)
        var tmv = tm()
        localtime_r(&t, &tmv)
        return Int32(tmv.tm_gmtoff)
    }

    /// Offsets of whole hours without a transition, by hour since the epoch.
    private static let offsetCache = Mutex<[Int64: Int32]>([:])

    public static func == (a: Timestamp, b: Timestamp) -> Bool {
        a.seconds == b.seconds && a.nanoseconds == b.nanoseconds
    }
    public func hash(into h: inout Hasher) { h.combine(seconds); h.combine(nanoseconds) }
    public static func < (a: Timestamp, b: Timestamp) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }

    /// Seconds since the epoch as a floating-point value.
    public var timeInterval: Double { Double(seconds) + Double(nanoseconds) / 1e9 }

    public func adding(seconds s: Int64) -> Timestamp {
        Timestamp(seconds: seconds + s, nanoseconds: nanoseconds, utcOffset: utcOffset)
    }

    /// Broken-down civil time in the timestamp's own offset.
    public var civil: (year: Int64, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
        let local = seconds + Int64(utcOffset)
        var days = local / 86400
        var rem = local % 86400
        if rem < 0 { rem += 86400; days -= 1 }
        let (y, m, d) = Self.civilFromDays(days)
        return (y, m, d, Int(rem / 3600), Int(rem % 3600 / 60), Int(rem % 60))
    }

    /// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
    static func civilFromDays(_ z0: Int64) -> (Int64, Int, Int) {
        let z = z0 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, Int(m), Int(d))
    }

    static func daysFromCivil(_ y0: Int64, _ m: Int, _ d: Int) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mm = Int64(m)
        let doy = (153 * (mm > 2 ? mm - 3 : mm + 9) + 2) / 5 + Int64(d) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    /// RFC 3339 with as many fractional digits as needed (none for whole seconds), like Go's RFC3339Nano.
    public var rfc3339: String {
        String(unsafeUninitializedCapacity: Self.maxRFC3339Length) { buf in writeRFC3339(to: buf.baseAddress!) }
    }

    /// The longest text `writeRFC3339(to:)` produces, for any field values.
    static let maxRFC3339Length = 64

    /// Writes `rfc3339` to `p` (room for `maxRFC3339Length` bytes) and returns the byte count. No allocation.
    func writeRFC3339(to p: UnsafeMutablePointer<UInt8>) -> Int {
        let c = civil
        if (0...9999).contains(c.year), (0..<1_000_000_000).contains(nanoseconds), (-359_999...359_999).contains(utcOffset) {
            return writeFixedWidthRFC3339(c, to: p)
        }
        var n = Self.writePadded(c.year, width: 4, to: p)
        p[n] = UInt8(ascii: "-")
        n += 1 + Self.writePadded(Int64(c.month), width: 2, to: p + n + 1)
        p[n] = UInt8(ascii: "-")
        n += 1 + Self.writePadded(Int64(c.day), width: 2, to: p + n + 1)
        p[n] = UInt8(ascii: "T")
        n += 1 + Self.writePadded(Int64(c.hour), width: 2, to: p + n + 1)
        p[n] = UInt8(ascii: ":")
        n += 1 + Self.writePadded(Int64(c.minute), width: 2, to: p + n + 1)
        p[n] = UInt8(ascii: ":")
        n += 1 + Self.writePadded(Int64(c.second), width: 2, to: p + n + 1)
        if nanoseconds != 0 {
            p[n] = UInt8(ascii: ".")
            n += 1 + Self.writePadded(Int64(nanoseconds), width: 9, to: p + n + 1)
            while p[n - 1] == UInt8(ascii: "0") { n -= 1 }
        }
        if utcOffset == 0 {
            p[n] = UInt8(ascii: "Z")
            n += 1
        } else {
            let off = abs(Int64(utcOffset))
            p[n] = utcOffset < 0 ? UInt8(ascii: "-") : UInt8(ascii: "+")
            n += 1 + Self.writePadded(off / 3600, width: 2, to: p + n + 1)
            p[n] = UInt8(ascii: ":")
            n += 1 + Self.writePadded(off % 3600 / 60, width: 2, to: p + n + 1)
        }
        return n
    }

    /// `writeRFC3339` for the usual case, where every field has its minimum width: digits in pairs at
    /// fixed positions.
    @inline(__always)
    private func writeFixedWidthRFC3339(_ c: (year: Int64, month: Int, day: Int, hour: Int, minute: Int, second: Int),
                                        to p: UnsafeMutablePointer<UInt8>) -> Int {
        let year = Int(c.year)
        DecimalDigits.writePair(year / 100, to: p)
        DecimalDigits.writePair(year % 100, to: p + 2)
        p[4] = UInt8(ascii: "-")
        DecimalDigits.writePair(c.month, to: p + 5)
        p[7] = UInt8(ascii: "-")
        DecimalDigits.writePair(c.day, to: p + 8)
        p[10] = UInt8(ascii: "T")
        DecimalDigits.writePair(c.hour, to: p + 11)
        p[13] = UInt8(ascii: ":")
        DecimalDigits.writePair(c.minute, to: p + 14)
        p[16] = UInt8(ascii: ":")
        DecimalDigits.writePair(c.second, to: p + 17)
        var n = 19
        if nanoseconds != 0 {
            p[19] = UInt8(ascii: ".")
            let ns = Int(nanoseconds)
            DecimalDigits.writePair(ns / 10_000_000, to: p + 20)
            DecimalDigits.writePair(ns / 100_000 % 100, to: p + 22)
            DecimalDigits.writePair(ns / 1_000 % 100, to: p + 24)
            DecimalDigits.writePair(ns / 10 % 100, to: p + 26)
            p[28] = UInt8(truncatingIfNeeded: ns % 10) &+ UInt8(ascii: "0")
            n = 29
            while p[n - 1] == UInt8(ascii: "0") { n -= 1 }
        }
        if utcOffset == 0 {
            p[n] = UInt8(ascii: "Z")
            return n + 1
        }
        let off = Int(utcOffset.magnitude)
        p[n] = utcOffset < 0 ? UInt8(ascii: "-") : UInt8(ascii: "+")
        DecimalDigits.writePair(off / 3600, to: p + n + 1)
        p[n + 3] = UInt8(ascii: ":")
        DecimalDigits.writePair(off % 3600 / 60, to: p + n + 4)
        return n + 6
    }

    /// Writes `v` in decimal with at least `width` digits (zero-padded), a minus sign before the
    /// padding when negative. Returns the byte count.
    @inline(__always)
    static func writePadded(_ v: Int64, width: Int, to p: UnsafeMutablePointer<UInt8>) -> Int {
        var n = 0
        if v < 0 { p[0] = UInt8(ascii: "-"); n = 1 }
        let magnitude = v.magnitude
        let digits = DecimalDigits.digitCount(magnitude)
        var k = n
        if digits < width {
            for _ in 0..<(width - digits) { p[k] = UInt8(ascii: "0"); k += 1 }
        }
        DecimalDigits.write(magnitude, digits: digits, to: p + k)
        return k + digits
    }

    /// "2006-01-02 15:04:05" in the timestamp's offset, as restic prints snapshot times.
    public var display: String {
        let c = civil
        return pad(c.year, 4) + "-" + pad(Int64(c.month), 2) + "-" + pad(Int64(c.day), 2) + " "
            + pad(Int64(c.hour), 2) + ":" + pad(Int64(c.minute), 2) + ":" + pad(Int64(c.second), 2)
    }

    public var description: String { rfc3339 }

    private func pad(_ v: Int64, _ width: Int) -> String {
        let s = String(abs(v))
        let padded = s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        return v < 0 ? "-" + padded : padded
    }

    /// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`); nil when malformed.
    public init?(rfc3339 text: String) {
        var text = text
        guard let t = text.withUTF8({ Timestamp(rfc3339Bytes: $0) }) else { return nil }
        self = t
    }

    /// Parses RFC 3339 from UTF-8 bytes without copying them; nil when malformed.
    init?(rfc3339Bytes b: UnsafeBufferPointer<UInt8>) {
        let n = b.count
        // The fixed part, "YYYY-MM-DDTHH:MM:SS", and at least one byte of zone.
        guard n >= 20, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"),
              b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == UInt8(ascii: " "),
              b[13] == UInt8(ascii: ":"), b[16] == UInt8(ascii: ":") else { return nil }
        let year = Self.digits(b, 0, 4), month = Self.digits(b, 5, 2), day = Self.digits(b, 8, 2)
        let hour = Self.digits(b, 11, 2), minute = Self.digits(b, 14, 2), second = Self.digits(b, 17, 2)
        guard year | month | day | hour | minute | second >= 0 else { return nil }
        guard (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        // Reject days the month does not have (Go does; otherwise "02-30" would silently become March).
        guard day <= Self.daysIn(month: month, year: year) else { return nil }
        var i = 19
        var nanos: Int64 = 0
        if b[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            // Up to nine digits count; Go accepts and ignores more.
            let end = min(n, start + 9)
            while i < end {
                let d = b[i] &- UInt8(ascii: "0")
                guard d < 10 else { break }
                nanos = nanos &* 10 &+ Int64(d)
                i += 1
            }
            let count = i - start
            guard count > 0 else { return nil }
            for _ in count..<9 { nanos &*= 10 }
            while i < n, b[i] &- UInt8(ascii: "0") < 10 { i += 1 }
        }
        var offset: Int64 = 0
        guard i < n else { return nil }
        switch b[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            guard i + 1 == n else { return nil }
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard i + 6 == n, b[i + 3] == UInt8(ascii: ":") else { return nil }
            let oh = Self.digits(b, i + 1, 2), om = Self.digits(b, i + 4, 2)
            guard oh >= 0, om >= 0, oh <= 24, om < 60 else { return nil }
            offset = (oh * 3600 + om * 60) * (b[i] == UInt8(ascii: "-") ? -1 : 1)
        default:
            return nil
        }
        let days = Self.daysFromCivil(year, Int(month), Int(day))
        let local = days * 86400 + hour * 3600 + minute * 60 + second
        self.init(seconds: local - offset, nanoseconds: Int32(nanos), utcOffset: Int32(offset))
    }

    /// The decimal value of `count` digits at `at`, or -1 if one of them is not a digit.
    @inline(__always)
    private static func digits(_ b: UnsafeBufferPointer<UInt8>, _ at: Int, _ count: Int) -> Int64 {
        var v: Int64 = 0
        for k in at..<(at + count) {
            let d = b[k] &- UInt8(ascii: "0")
            if d > 9 { return -1 }
            v = v &* 10 &+ Int64(d)
        }
        return v
    }

    private static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}

/// Decimal digits of unsigned integers, written into raw memory without going through `String`.
enum DecimalDigits {
    /// The number of decimal digits of `v` (1 for zero), from its bit length without a loop.
    @inline(__always)
    static func digitCount(_ v: UInt64) -> Int {
        let w = v | 1  // same count, and zero counts as one digit
        let bits = 64 - w.leadingZeroBitCount
        let guess = (bits * 1233) >> 12  // floor(bits · log10 2): the count, or one less
        return guess + (w >= powerOf10(guess) ? 1 : 0)
    }

    @inline(__always)
    private static func powerOf10(_ k: Int) -> UInt64 {
        switch k {
        case 0: return 1
        case 1: return 10
        case 2: return 100
        case 3: return 1_000
        case 4: return 10_000
        case 5: return 100_000
        case 6: return 1_000_000
        case 7: return 10_000_000
        case 8: return 100_000_000
        case 9: return 1_000_000_000
        case 10: return 10_000_000_000
        case 11: return 100_000_000_000
        case 12: return 1_000_000_000_000
        case 13: return 10_000_000_000_000
        case 14: return 100_000_000_000_000
        case 15: return 1_000_000_000_000_000
        case 16: return 10_000_000_000_000_000
        case 17: return 100_000_000_000_000_000
        case 18: return 1_000_000_000_000_000_000
        default: return 10_000_000_000_000_000_000
        }
    }

    private static let pairs: StaticString = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"

    /// Writes `v` (0…99) as two digits.
    @inline(__always)
    static func writePair(_ v: Int, to p: UnsafeMutablePointer<UInt8>) {
        let table = pairs.utf8Start
        p[0] = table[2 * v]
        p[1] = table[2 * v + 1]
    }

    /// Writes exactly `digits` decimal digits of `v` (the caller got `digits` from `digitCount`) to `p`.
    @inline(__always)
    static func write(_ v: UInt64, digits: Int, to p: UnsafeMutablePointer<UInt8>) {
        let table = pairs.utf8Start
        var v = v
        var k = digits
        while k >= 2 {
            let pair = Int(truncatingIfNeeded: v % 100)
            v /= 100
            k -= 2
            p[k] = table[2 * pair]
            p[k + 1] = table[2 * pair + 1]
        }
        if k == 1 { p[0] = UInt8(truncatingIfNeeded: v) &+ UInt8(ascii: "0") }
    }

    /// Writes `v` in decimal to `p` (room for 20 bytes) and returns the byte count.
    @inline(__always)
    static func write(_ v: UInt64, to p: UnsafeMutablePointer<UInt8>) -> Int {
        let digits = digitCount(v)
        write(v, digits: digits, to: p)
        return digits
    }
}
