// scrypt's ROMix (RFC 7914 section 5) for up to four lanes at once, with AVX-512F or AVX2.
//
// Salsa20/8 is a chain of dependent additions, rotations and XORs, so one lane on 128-bit vectors waits
// on latency most of the time. Here the same state vector of four lanes, one lane per 128-bit slot, is
// mixed at once: in one 512-bit register (AVX-512's rotate instruction replacing a shift-shift-or
// sequence), or in two 256-bit registers whose two dependency chains interleave. Four lanes cost about
// the time one did. The state words of each Salsa block are kept in "diagonal" order (as in
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

// Whether the CPU has `feature` (CPUID leaf 7, EBX) and the OS saves the register state XCR0 `mask` names.
static int has_leaf7_feature(unsigned feature, unsigned mask) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if ((b & feature) == 0) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || (c & bit_OSXSAVE) == 0) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & mask) == mask;
}

// XCR0 bits 1, 2 (SSE, AVX) and, for AVX-512, 5, 6, 7 (opmask, ZMM upper halves).
int haven_scrypt_avx512_available(void) { return has_leaf7_feature(bit_AVX512F, 0xe6); }
int haven_scrypt_avx2_available(void) { return has_leaf7_feature(bit_AVX2, 0x06); }

// Word k of a block in diagonal order is word kDiagonal[k] of the block in natural order.
static const int kDiagonal[16] = {0, 5, 10, 15, 4, 9, 14, 3, 8, 13, 2, 7, 12, 1, 6, 11};

// In-slot lane rotations (immediates for _mm512_shuffle_epi32): by one, two and three words.
#define ROT1 0x39  // (v1, v2, v3, v0)
#define ROT2 0x4e  // (v2, v3, v0, v1)
#define ROT3 0x93  // (v3, v0, v1, v2)

// AVX-512: one register holds the four slots.
#define HW __attribute__((target("avx512f")))
#define VEC __m512i
#define NAME(x) x##_avx512
#define V_XOR(a, b) _mm512_xor_si512(a, b)
#define V_ADD(a, b) _mm512_add_epi32(a, b)
#define V_ROL(a, n) _mm512_rol_epi32(a, n)
#define V_SHUF(a, imm) _mm512_shuffle_epi32(a, imm)
#define V_FROM4(q0, q1, q2, q3) \
    _mm512_inserti32x4(_mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(q0), q1, 1), q2, 2), q3, 3)
#define V_GET(v, k) get_slot_avx512(v, k)
#define V_SET(v, q, k) set_slot_avx512(v, q, k)

// The instructions take the slot as an immediate.
HW static inline __m128i get_slot_avx512(__m512i v, int k) {
    switch (k) {
    case 0: return _mm512_extracti32x4_epi32(v, 0);
    case 1: return _mm512_extracti32x4_epi32(v, 1);
    case 2: return _mm512_extracti32x4_epi32(v, 2);
    default: return _mm512_extracti32x4_epi32(v, 3);
    }
}

HW static inline __m512i set_slot_avx512(__m512i v, __m128i lane, int k) {
    switch (k) {
    case 0: return _mm512_inserti32x4(v, lane, 0);
    case 1: return _mm512_inserti32x4(v, lane, 1);
    case 2: return _mm512_inserti32x4(v, lane, 2);
    default: return _mm512_inserti32x4(v, lane, 3);
    }
}

#include "scrypt_romix.h"

#undef HW
#undef VEC
#undef NAME
#undef V_XOR
#undef V_ADD
#undef V_ROL
#undef V_SHUF
#undef V_FROM4
#undef V_GET
#undef V_SET

// AVX2: slots 0 and 1 in one register, 2 and 3 in the other.
typedef struct { __m256i lo, hi; } vec2x256;
#define HW __attribute__((target("avx2")))
#define VEC vec2x256
#define NAME(x) x##_avx2
#define BOTH(op, a, b) ((vec2x256){ op((a).lo, (b).lo), op((a).hi, (b).hi) })
#define V_XOR(a, b) BOTH(_mm256_xor_si256, a, b)
#define V_ADD(a, b) BOTH(_mm256_add_epi32, a, b)
#define ROL256(x, n) _mm256_or_si256(_mm256_slli_epi32(x, n), _mm256_srli_epi32(x, 32 - (n)))
#define V_ROL(a, n) ((vec2x256){ ROL256((a).lo, n), ROL256((a).hi, n) })
#define V_SHUF(a, imm) ((vec2x256){ _mm256_shuffle_epi32((a).lo, imm), _mm256_shuffle_epi32((a).hi, imm) })
#define V_FROM4(q0, q1, q2, q3) ((vec2x256){ _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1), \
                                             _mm256_inserti128_si256(_mm256_castsi128_si256(q2), q3, 1) })
#define V_GET(v, k) get_slot_avx2(v, k)
#define V_SET(v, q, k) set_slot_avx2(v, q, k)

HW static inline __m128i get_slot_avx2(vec2x256 v, int k) {
    switch (k) {
    case 0: return _mm256_extracti128_si256(v.lo, 0);
    case 1: return _mm256_extracti128_si256(v.lo, 1);
    case 2: return _mm256_extracti128_si256(v.hi, 0);
    default: return _mm256_extracti128_si256(v.hi, 1);
    }
}

HW static inline vec2x256 set_slot_avx2(vec2x256 v, __m128i lane, int k) {
    switch (k) {
    case 0: v.lo = _mm256_inserti128_si256(v.lo, lane, 0); break;
    case 1: v.lo = _mm256_inserti128_si256(v.lo, lane, 1); break;
    case 2: v.hi = _mm256_inserti128_si256(v.hi, lane, 0); break;
    default: v.hi = _mm256_inserti128_si256(v.hi, lane, 1); break;
    }
    return v;
}

#include "scrypt_romix.h"

#else

int haven_scrypt_avx512_available(void) { return 0; }
int haven_scrypt_avx2_available(void) { return 0; }

int haven_scrypt_romix_avx512(uint8_t *lanes, int count, uint32_t n, uint32_t r, uint32_t store_every) {
    (void)lanes; (void)count; (void)n; (void)r; (void)store_every;
    return -1;
}

int haven_scrypt_romix_avx2(uint8_t *lanes, int count, uint32_t n, uint32_t r, uint32_t store_every) {
    (void)lanes; (void)count; (void)n; (void)r; (void)store_every;
    return -1;
}

#endif
