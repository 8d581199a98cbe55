// scrypt's ROMix (RFC 7914 section 5) for up to four lanes at once, with AVX-512F.
//
// Salsa20/8 is a chain of dependent additions, rotations and XORs, so one lane on 128-bit vectors waits
// on latency most of the time. Here each 512-bit register holds the same state vector of four lanes, one
// lane per 128-bit slot, and AVX-512's rotate instruction replaces a shift-shift-or sequence: four lanes
// cost less time than one did. The state words of each Salsa block are kept in "diagonal" order (as in
// HavenKDF's Swift code): with x0..x15 the block's words, a = (x0,x5,x10,x15), b = (x4,x9,x14,x3),
// c = (x8,x13,x2,x7), d = (x12,x1,x6,x11); a column round and a row round are then four vector steps
// each, with lane rotations inside each 128-bit slot in between.
//
// Memory: every lane has its own table V, and the caller picks `store_every`: a lane stores only every
// s-th block of V and recomputes the others when they are read (scrypt's time-memory trade-off; the
// result is the same). Each lane follows its own schedule of recomputations (see the second loop), so a
// call costs about the time of one lane.
#include "CHavenShims.h"
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

int haven_scrypt_avx512_available(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if ((b & bit_AVX512F) == 0) return 0;
    // The OS must save the 512-bit state: XCR0 bits 1, 2 (SSE, AVX) and 5, 6, 7 (opmask, ZMM upper halves).
    if (!__get_cpuid(1, &a, &b, &c, &d) || (c & bit_OSXSAVE) == 0) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xe6) == 0xe6;
}

#define HW __attribute__((target("avx512f")))

// Word k of a block in diagonal order is word kDiagonal[k] of the block in natural order.
static const int kDiagonal[16] = {0, 5, 10, 15, 4, 9, 14, 3, 8, 13, 2, 7, 12, 1, 6, 11};

// In-slot lane rotations (immediates for _mm512_shuffle_epi32): by one, two and three words.
#define ROT1 0x39  // (v1, v2, v3, v0)
#define ROT2 0x4e  // (v2, v3, v0, v1)
#define ROT3 0x93  // (v3, v0, v1, v2)

// Four Salsa20/8 double rounds on (a, b, c, d), then the input added back.
#define STEP(x, y, z, n) x = _mm512_xor_si512(x, _mm512_rol_epi32(_mm512_add_epi32(y, z), n))
HW static inline void salsa8(__m512i *pa, __m512i *pb, __m512i *pc, __m512i *pd) {
    __m512i a = *pa, b = *pb, c = *pc, d = *pd;
    const __m512i a0 = a, b0 = b, c0 = c, d0 = d;
    for (int i = 0; i < 4; i++) {
        STEP(b, a, d, 7);
        STEP(c, b, a, 9);
        STEP(d, c, b, 13);
        STEP(a, d, c, 18);
        d = _mm512_shuffle_epi32(d, ROT1);
        c = _mm512_shuffle_epi32(c, ROT2);
        b = _mm512_shuffle_epi32(b, ROT3);
        STEP(d, a, b, 7);
        STEP(c, d, a, 9);
        STEP(b, c, d, 13);
        STEP(a, b, c, 18);
        d = _mm512_shuffle_epi32(d, ROT3);
        c = _mm512_shuffle_epi32(c, ROT2);
        b = _mm512_shuffle_epi32(b, ROT1);
    }
    *pa = _mm512_add_epi32(a, a0);
    *pb = _mm512_add_epi32(b, b0);
    *pc = _mm512_add_epi32(c, c0);
    *pd = _mm512_add_epi32(d, d0);
}

// Where one scrypt block's vector comes from for each of the four slots (a lane's 128-bit vectors, in
// diagonal order, 8r of them per block).
typedef struct { const __m128i *slot[4]; } Sources;

HW static inline __m512i gather(const Sources *s, size_t v) {
    __m512i x = _mm512_castsi128_si512(_mm_loadu_si128(s->slot[0] + v));
    x = _mm512_inserti32x4(x, _mm_loadu_si128(s->slot[1] + v), 1);
    x = _mm512_inserti32x4(x, _mm_loadu_si128(s->slot[2] + v), 2);
    return _mm512_inserti32x4(x, _mm_loadu_si128(s->slot[3] + v), 3);
}

// scryptBlockMix of `in` (XORed first with the blocks `xor` names, when given) into `out`: Salsa block i
// of the result goes to position i/2 when i is even and r + i/2 when odd.
HW static void block_mix(const __m512i *in, const Sources *xor, __m512i *out, size_t r) {
    const size_t last = 8 * r - 4;
    __m512i a = in[last], b = in[last + 1], c = in[last + 2], d = in[last + 3];
    if (xor) {
        a = _mm512_xor_si512(a, gather(xor, last));
        b = _mm512_xor_si512(b, gather(xor, last + 1));
        c = _mm512_xor_si512(c, gather(xor, last + 2));
        d = _mm512_xor_si512(d, gather(xor, last + 3));
    }
    for (size_t i = 0; i < 2 * r; i++) {
        const size_t at = 4 * i;
        if (xor) {
            a = _mm512_xor_si512(a, _mm512_xor_si512(in[at], gather(xor, at)));
            b = _mm512_xor_si512(b, _mm512_xor_si512(in[at + 1], gather(xor, at + 1)));
            c = _mm512_xor_si512(c, _mm512_xor_si512(in[at + 2], gather(xor, at + 2)));
            d = _mm512_xor_si512(d, _mm512_xor_si512(in[at + 3], gather(xor, at + 3)));
        } else {
            a = _mm512_xor_si512(a, in[at]);
            b = _mm512_xor_si512(b, in[at + 1]);
            c = _mm512_xor_si512(c, in[at + 2]);
            d = _mm512_xor_si512(d, in[at + 3]);
        }
        salsa8(&a, &b, &c, &d);
        const size_t to = 4 * ((i & 1) * r + (i >> 1));
        out[to] = a;
        out[to + 1] = b;
        out[to + 2] = c;
        out[to + 3] = d;
    }
}

// Slot k of v, and v with slot k replaced (the instructions take the slot as an immediate).
HW static inline __m128i get_slot(__m512i v, int k) {
    switch (k) {
    case 0: return _mm512_extracti32x4_epi32(v, 0);
    case 1: return _mm512_extracti32x4_epi32(v, 1);
    case 2: return _mm512_extracti32x4_epi32(v, 2);
    default: return _mm512_extracti32x4_epi32(v, 3);
    }
}

HW static inline __m512i set_slot(__m512i v, __m128i lane, int k) {
    switch (k) {
    case 0: return _mm512_inserti32x4(v, lane, 0);
    case 1: return _mm512_inserti32x4(v, lane, 1);
    case 2: return _mm512_inserti32x4(v, lane, 2);
    default: return _mm512_inserti32x4(v, lane, 3);
    }
}

// Slot `slot` of each of `count` vectors at `from` into the lane vectors at `to`.
HW static void extract_slot(const __m512i *from, int slot, __m128i *to, size_t count) {
    for (size_t v = 0; v < count; v++) _mm_storeu_si128(to + v, get_slot(from[v], slot));
}

// Word 0 of the last Salsa block of slot `slot` in `x` (integerify, RFC 7914 section 5).
static inline uint32_t integerify(const __m512i *x, size_t r, int slot) {
    const uint32_t *words = (const uint32_t *)(x + 8 * r - 4);
    return words[4 * slot];
}

HW int haven_scrypt_romix_avx512(uint8_t *lanes, int count, uint32_t n, uint32_t r, uint32_t store_every) {
    if (count < 1 || count > 4 || n < 2 || (n & (n - 1)) != 0 || r < 1 || store_every < 1) return -1;
    const size_t vectors = 8 * (size_t)r;                 // 128-bit vectors per scrypt block
    const size_t lane_bytes = 128 * (size_t)r;
    const size_t entries = (n + store_every - 1) / store_every;
    // x, y: the running state (one block per lane) and its successor; then per-lane scratch; then each
    // lane's table.
    const size_t wide = 2 * vectors * sizeof(__m512i);
    const size_t lane_scratch = 9 * lane_bytes;  // parked X and final X of each lane, and a zero block
    const size_t table_bytes = (size_t)count * entries * lane_bytes;
    const size_t total = wide + lane_scratch + table_bytes;
    uint8_t *memory = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return -1;
    // Every table block gets written, so 2 MiB pages over the whole 2 MiB stretches inside the mapping
    // cost no extra memory and save thousands of page faults (the ends keep small pages, so nothing
    // beyond the mapping is ever counted).
    const uintptr_t huge = 2u << 20, start = ((uintptr_t)memory + huge - 1) & ~(huge - 1);
    const uintptr_t end = ((uintptr_t)memory + total) & ~(huge - 1);
    if (end > start) madvise((void *)start, end - start, MADV_HUGEPAGE);
    __m512i *x = (__m512i *)memory, *y = x + vectors;
    __m128i *parked = (__m128i *)(memory + wide), *results = parked + 4 * vectors;
    const __m128i *zeros = results + 4 * vectors;  // mmap'ed memory starts zeroed
    __m128i *tables = (__m128i *)(memory + wide + lane_scratch);
    memset(x, 0, vectors * sizeof(__m512i));
#define TABLE(k, q) (tables + ((size_t)(k) * entries + (q)) * vectors)

    // Load: lane k's natural-order words into slot k (slots without a lane repeat lane 0).
    uint32_t words[16];
    for (size_t blk = 0; blk < 2 * (size_t)r; blk++) {
        for (int slot = 0; slot < 4; slot++) {
            const uint8_t *src = lanes + (size_t)(slot < count ? slot : 0) * lane_bytes + 64 * blk;
            for (int k = 0; k < 16; k++) {
                uint32_t word;
                memcpy(&word, src + 4 * kDiagonal[k], 4);
                words[k] = word;
            }
            for (int v = 0; v < 4; v++) {
                x[4 * blk + v] = set_slot(x[4 * blk + v], _mm_loadu_si128((const __m128i *)(words + 4 * v)), slot);
            }
        }
    }

    // First loop: V_i = X, X = BlockMix(X); only every store_every-th V_i is kept.
    __m512i *current = x, *other = y;
    for (uint32_t i = 0; i < n; i++) {
        if (i % store_every == 0) {
            for (int k = 0; k < count; k++) extract_slot(current, k, TABLE(k, i / store_every), vectors);
        }
        block_mix(current, NULL, other, r);
        __m512i *t = current; current = other; other = t;
    }

    // Second loop: j = Integerify(X) mod N, X = BlockMix(X xor V_j). Each lane runs its own schedule:
    // while it recomputes a V_j that is not stored, its running X is parked and its slot of the state
    // holds the block being recomputed. So every BlockMix advances every lane, however far each one has
    // to recompute (in lockstep, all lanes would wait for the one with the longest distance).
    enum { kFinished, kFromTable, kRecomputing, kFromParked };
    int mode[4];
    uint32_t steps[4] = {0, 0, 0, 0}, left[4] = {0, 0, 0, 0};
    const __m128i *table_block[4];
    int running = 0;
    for (int slot = 0; slot < 4; slot++) mode[slot] = kFinished;
    // Picks lane k's next V_j from its X in slot k of `state`: straight from the table, or parked to
    // recompute it from the stored block before it.
    #define NEXT_BLOCK(state, k) do { \
        const uint32_t j = integerify((state), r, (k)) & (n - 1); \
        table_block[k] = TABLE((k), j / store_every); \
        const char *block = (const char *)table_block[k]; \
        for (size_t line = 0; line < lane_bytes; line += 64) _mm_prefetch(block + line, _MM_HINT_T0); \
        left[k] = j % store_every; \
        if (left[k] == 0) { \
            mode[k] = kFromTable; \
        } else { \
            mode[k] = kRecomputing; \
            extract_slot((state), (k), parked + (size_t)(k) * vectors, vectors); \
            for (size_t v = 0; v < vectors; v++) (state)[v] = set_slot((state)[v], _mm_loadu_si128(table_block[k] + v), (k)); \
        } \
    } while (0)
    for (int k = 0; k < count; k++) { NEXT_BLOCK(current, k); running++; }
    while (running > 0) {
        Sources xor;
        int any = 0;
        for (int slot = 0; slot < 4; slot++) {
            switch (mode[slot]) {
            case kFromTable: xor.slot[slot] = table_block[slot]; any = 1; break;
            case kFromParked: xor.slot[slot] = parked + (size_t)slot * vectors; any = 1; break;
            default: xor.slot[slot] = zeros; break;
            }
        }
        block_mix(current, any ? &xor : NULL, other, r);
        __m512i *t = current; current = other; other = t;
        for (int k = 0; k < count; k++) {
            switch (mode[k]) {
            case kRecomputing:
                if (--left[k] == 0) mode[k] = kFromParked;  // the slot now holds V_j
                break;
            case kFromTable:
            case kFromParked:
                if (++steps[k] == n) {
                    extract_slot(current, k, results + (size_t)k * vectors, vectors);
                    mode[k] = kFinished;
                    running--;
                } else {
                    NEXT_BLOCK(current, k);
                }
                break;
            default:
                break;
            }
        }
    }
    #undef NEXT_BLOCK
#undef TABLE

    // Store: slot k back into lane k, natural order.
    for (int k = 0; k < count; k++) {
        for (size_t blk = 0; blk < 2 * (size_t)r; blk++) {
            uint32_t diagonal[16];
            for (int v = 0; v < 4; v++) {
                _mm_storeu_si128((__m128i *)(diagonal + 4 * v), _mm_loadu_si128(results + (size_t)k * vectors + 4 * blk + v));
            }
            uint8_t *dst = lanes + (size_t)k * lane_bytes + 64 * blk;
            for (int j = 0; j < 16; j++) memcpy(dst + 4 * kDiagonal[j], &diagonal[j], 4);
        }
    }
    munmap(memory, total);
    return 0;
}

#else

int haven_scrypt_avx512_available(void) { return 0; }

int haven_scrypt_romix_avx512(uint8_t *lanes, int count, uint32_t n, uint32_t r, uint32_t store_every) {
    (void)lanes; (void)count; (void)n; (void)r; (void)store_every;
    return -1;
}

#endif
