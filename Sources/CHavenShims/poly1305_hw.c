// Poly1305 one-time authenticator (RFC 8439 section 2.5), written from the definition.
//
// The tag is ((m_1 r^n + m_2 r^(n-1) + ... + m_n r) mod p + s) mod 2^128 with p = 2^130 - 5, where m_i is
// the i-th 16-byte block read as a little-endian number with one more byte of value 1 appended (so a
// full block gets 2^128 added, and a short last block gets 2^(8·length) added), r is the first key half
// with the RFC's clamping mask applied, and s the second key half.
//
// Three evaluators share the key set-up and the final reduction:
//
// - A portable scalar one (Horner's rule, one block at a time) that keeps the accumulator as three
//   64-bit words h0 + h1·2^64 + h2·2^128 and multiplies with 64×64→128-bit products. Clamping makes
//   r's high word a multiple of 4 and both words below 2^60, so the parts of the product at 2^128 and
//   above fold back cheaply: 2^130 ≡ 5 (mod p), hence r1·2^128 ≡ 5·(r1/4).
//
// - On x86-64 with AVX2, a 4-way one for the bulk of long messages. Blocks i, i+4, i+8, ... go to lane
//   i mod 4, each lane runs Horner's rule with r^4 instead of r, and at the end the lanes are multiplied
//   by r^4, r^3, r^2 and r^1 respectively and added: that is exactly the sum above regrouped, and it
//   turns one long chain of dependent multiplications into four independent ones. Numbers are held
//   in radix 2^26 (five limbs of 26 bits), because VPMULUDQ multiplies 32-bit halves of 64-bit lanes:
//   products of 26-bit limbs leave room to add a dozen of them without overflow. Vector register k
//   holds limb k of the four lanes. The main loop consumes 8 blocks (128 bytes) per step as
//   H·r^8 + A·r^4 + B (A and B the next two groups of four blocks), so only one multiplication per
//   128 bytes sits on the dependency chain through H. Reduction in the loop is partial: limbs are
//   carried back to about 26 bits, not to a canonical value mod p. The last < 64 bytes go through the
//   scalar evaluator, which continues from the vector result.
//
// - On x86-64 with AVX-512 IFMA (52-bit multiply-add), the same scheme 8 lanes wide in radix 2^44
//   (three limbs), 16 blocks per step as H·r^16 + A·r^8 + B. It is about 2.5 times as fast as the
//   AVX2 one and is preferred where present; see the section below for its limb arithmetic.
//
// Final reduction: the evaluators leave the accumulator only partially reduced, below 5·2^128. Bits
// from 2^130 up are folded once more (times 5), leaving h below 2^130 + 5 < 2p; then h + 5 is computed, and if it reaches 2^130 then h ≥ p and
// h + 5 - 2^130 = h - p is the reduced value. The choice is made with a mask, not a branch, so timing
// does not depend on the data. Adding s modulo 2^128 gives the tag.
#include "CHavenShims.h"
#include <string.h>

typedef unsigned __int128 poly_u128;

static inline uint64_t poly_load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void poly_store64(uint8_t *p, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

// Accumulator h0 + h1·2^64 + h2·2^128 (h2 small) and clamped key r0 + r1·2^64.
typedef struct {
    uint64_t h0, h1, h2;
    uint64_t r0, r1;
} poly_state;

// h ← h·r mod p, partially reduced (h2 ≤ 4 afterwards). Needs h2 ≤ 7 on entry.
//   h·r = h0·r0 + (h0·r1 + h1·r0)·2^64 + (h1·r1 + h2·r0)·2^128 + h2·r1·2^192
// and with r1 = 4·q: h1·r1·2^128 = h1·q·2^130 ≡ 5q·h1, h2·r1·2^192 ≡ 5q·h2·2^64. 5q = r1 + r1/4.
static inline void poly_mul_r(uint64_t *h0p, uint64_t *h1p, uint64_t *h2p, uint64_t r0, uint64_t r1) {
    uint64_t h0 = *h0p, h1 = *h1p, h2 = *h2p;
    uint64_t f1 = r1 + (r1 >> 2);
    poly_u128 d0 = (poly_u128)h0 * r0 + (poly_u128)h1 * f1;
    poly_u128 d1 = (poly_u128)h0 * r1 + (poly_u128)h1 * r0 + (poly_u128)(h2 * f1);
    uint64_t d2 = h2 * r0;
    d1 += (uint64_t)(d0 >> 64);
    d2 += (uint64_t)(d1 >> 64);
    h0 = (uint64_t)d0;
    h1 = (uint64_t)d1;
    // d2 sits at 2^128: its bits from 2^130 up come back multiplied by 5.
    uint64_t fold = (d2 >> 2) * 5;
    h2 = d2 & 3;
    poly_u128 t = (poly_u128)h0 + fold;
    h0 = (uint64_t)t;
    t = (poly_u128)h1 + (uint64_t)(t >> 64);
    h1 = (uint64_t)t;
    h2 += (uint64_t)(t >> 64);
    *h0p = h0; *h1p = h1; *h2p = h2;
}

// Horner's rule over `blocks` 16-byte blocks; `pad` is 1 for full blocks (adds 2^128), 0 for a last
// block the caller already padded.
static void poly_blocks_scalar(poly_state *st, const uint8_t *m, size_t blocks, uint64_t pad) {
    uint64_t h0 = st->h0, h1 = st->h1, h2 = st->h2;
    const uint64_t r0 = st->r0, r1 = st->r1;
    while (blocks--) {
        poly_u128 t = (poly_u128)h0 + poly_load64(m);
        h0 = (uint64_t)t;
        t = (poly_u128)h1 + poly_load64(m + 8) + (uint64_t)(t >> 64);
        h1 = (uint64_t)t;
        h2 += (uint64_t)(t >> 64) + pad;
        poly_mul_r(&h0, &h1, &h2, r0, r1);
        m += 16;
    }
    st->h0 = h0; st->h1 = h1; st->h2 = h2;
}

// Reduces h (h2 ≤ 15) to its canonical value below p, without branches.
static inline void poly_reduce_full(uint64_t *h0p, uint64_t *h1p, uint64_t *h2p) {
    uint64_t h0 = *h0p, h1 = *h1p, h2 = *h2p;
    // Fold bits 130 and up (at most 3·5 comes back): now h < 2^130 + 15 < 2p.
    uint64_t fold = (h2 >> 2) * 5;
    h2 &= 3;
    poly_u128 t = (poly_u128)h0 + fold;
    h0 = (uint64_t)t;
    t = (poly_u128)h1 + (uint64_t)(t >> 64);
    h1 = (uint64_t)t;
    h2 += (uint64_t)(t >> 64);
    // g = h + 5; g ≥ 2^130 exactly when h ≥ p, and then g - 2^130 = h - p.
    t = (poly_u128)h0 + 5;
    uint64_t g0 = (uint64_t)t;
    t = (poly_u128)h1 + (uint64_t)(t >> 64);
    uint64_t g1 = (uint64_t)t;
    uint64_t g2 = h2 + (uint64_t)(t >> 64);
    uint64_t use_g = 0 - (g2 >> 2);
    *h0p = (h0 & ~use_g) | (g0 & use_g);
    *h1p = (h1 & ~use_g) | (g1 & use_g);
    *h2p = (h2 & ~use_g) | (g2 & 3 & use_g);
}

#if defined(__x86_64__)
#include <immintrin.h>

int haven_poly1305_avx2_available(void) {
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}

#define AVX2 __attribute__((target("avx2")))
#define AVX2_INLINE __attribute__((target("avx2"), always_inline)) static inline

#define LIMB_MASK ((1ull << 26) - 1)

// Hides a vector's value from the optimiser. Without it clang proves that some VPMULUDQ operands
// (the accumulator, carried around the loop) already fit in 32 bits, drops the implied masking, and
// then, not seeing that proof across the loop edge, emits each as a full 64-bit multiplication
// (three VPMULUDQs plus shifts).
#define OPAQUE(v) __asm__("" : "+x"(v))

// Splits a canonical value (h2 ≤ 3) into five 26-bit limbs.
static inline void poly_to_limbs(uint64_t h0, uint64_t h1, uint64_t h2, uint64_t l[5]) {
    l[0] = h0 & LIMB_MASK;
    l[1] = (h0 >> 26) & LIMB_MASK;
    l[2] = ((h0 >> 52) | (h1 << 12)) & LIMB_MASK;
    l[3] = (h1 >> 14) & LIMB_MASK;
    l[4] = (h1 >> 40) | (h2 << 24);
}

// Vectors of a multiplier: its limbs r[0..4] and 5·r[1..4] (s[0] unused), used where a product
// term lands at 2^130 or above and wraps around to the bottom times 5.
typedef struct {
    __m256i r[5], s[5];
} vec_mult;

// Unreduced product of the four-lane number h by m: d[k] = Σ h[i]·m[j] over i + j ≡ k (mod 5), with
// the wrapped terms using 5·m[j]. Each lane of h[i] must be below 2^32 (VPMULUDQ reads the low half).
AVX2_INLINE void vec_mul(__m256i d[5], const __m256i hin[5], const vec_mult *m) {
    __m256i h[5];
    for (int k = 0; k < 5; k++) {
        h[k] = hin[k];
        OPAQUE(h[k]);
    }
    d[0] = _mm256_mul_epu32(h[0], m->r[0]);
    d[1] = _mm256_mul_epu32(h[0], m->r[1]);
    d[2] = _mm256_mul_epu32(h[0], m->r[2]);
    d[3] = _mm256_mul_epu32(h[0], m->r[3]);
    d[4] = _mm256_mul_epu32(h[0], m->r[4]);

    d[0] = _mm256_add_epi64(d[0], _mm256_mul_epu32(h[1], m->s[4]));
    d[1] = _mm256_add_epi64(d[1], _mm256_mul_epu32(h[1], m->r[0]));
    d[2] = _mm256_add_epi64(d[2], _mm256_mul_epu32(h[1], m->r[1]));
    d[3] = _mm256_add_epi64(d[3], _mm256_mul_epu32(h[1], m->r[2]));
    d[4] = _mm256_add_epi64(d[4], _mm256_mul_epu32(h[1], m->r[3]));

    d[0] = _mm256_add_epi64(d[0], _mm256_mul_epu32(h[2], m->s[3]));
    d[1] = _mm256_add_epi64(d[1], _mm256_mul_epu32(h[2], m->s[4]));
    d[2] = _mm256_add_epi64(d[2], _mm256_mul_epu32(h[2], m->r[0]));
    d[3] = _mm256_add_epi64(d[3], _mm256_mul_epu32(h[2], m->r[1]));
    d[4] = _mm256_add_epi64(d[4], _mm256_mul_epu32(h[2], m->r[2]));

    d[0] = _mm256_add_epi64(d[0], _mm256_mul_epu32(h[3], m->s[2]));
    d[1] = _mm256_add_epi64(d[1], _mm256_mul_epu32(h[3], m->s[3]));
    d[2] = _mm256_add_epi64(d[2], _mm256_mul_epu32(h[3], m->s[4]));
    d[3] = _mm256_add_epi64(d[3], _mm256_mul_epu32(h[3], m->r[0]));
    d[4] = _mm256_add_epi64(d[4], _mm256_mul_epu32(h[3], m->r[1]));

    d[0] = _mm256_add_epi64(d[0], _mm256_mul_epu32(h[4], m->s[1]));
    d[1] = _mm256_add_epi64(d[1], _mm256_mul_epu32(h[4], m->s[2]));
    d[2] = _mm256_add_epi64(d[2], _mm256_mul_epu32(h[4], m->s[3]));
    d[3] = _mm256_add_epi64(d[3], _mm256_mul_epu32(h[4], m->s[4]));
    d[4] = _mm256_add_epi64(d[4], _mm256_mul_epu32(h[4], m->r[0]));
}

// Carries the 64-bit limb sums d back to about 26 bits each: two interleaved carry chains
// (0→1→2→3 and 3→4→0·5→1) so that consecutive steps are independent. With inputs below 2^59 the
// results are below 2^26 except limbs 1 and 4, which exceed it by less than 2^10.
AVX2_INLINE void vec_carry(__m256i h[5], const __m256i d[5]) {
    const __m256i mask = _mm256_set1_epi64x((long long)LIMB_MASK);
    __m256i d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3], d4 = d[4], c;
    c = _mm256_srli_epi64(d0, 26); d0 = _mm256_and_si256(d0, mask); d1 = _mm256_add_epi64(d1, c);
    c = _mm256_srli_epi64(d3, 26); d3 = _mm256_and_si256(d3, mask); d4 = _mm256_add_epi64(d4, c);
    c = _mm256_srli_epi64(d1, 26); d1 = _mm256_and_si256(d1, mask); d2 = _mm256_add_epi64(d2, c);
    c = _mm256_srli_epi64(d4, 26); d4 = _mm256_and_si256(d4, mask);
    d0 = _mm256_add_epi64(d0, _mm256_add_epi64(c, _mm256_slli_epi64(c, 2)));
    c = _mm256_srli_epi64(d2, 26); d2 = _mm256_and_si256(d2, mask); d3 = _mm256_add_epi64(d3, c);
    c = _mm256_srli_epi64(d0, 26); d0 = _mm256_and_si256(d0, mask); d1 = _mm256_add_epi64(d1, c);
    c = _mm256_srli_epi64(d3, 26); d3 = _mm256_and_si256(d3, mask); d4 = _mm256_add_epi64(d4, c);
    h[0] = d0; h[1] = d1; h[2] = d2; h[3] = d3; h[4] = d4;
}

// Loads four consecutive full blocks (64 bytes) as limbs with the 2^128 pad bit. Unpacking the two
// 32-byte loads puts the blocks in lane order 1, 3, 2, 4 (VPUNPCK works within 128-bit halves); the
// final multipliers are arranged to match.
AVX2_INLINE void vec_load_blocks(__m256i m[5], const uint8_t *p) {
    const __m256i mask = _mm256_set1_epi64x((long long)LIMB_MASK);
    __m256i a = _mm256_loadu_si256((const __m256i *)p);
    __m256i b = _mm256_loadu_si256((const __m256i *)(p + 32));
    __m256i lo = _mm256_unpacklo_epi64(a, b);
    __m256i hi = _mm256_unpackhi_epi64(a, b);
    m[0] = _mm256_and_si256(lo, mask);
    m[1] = _mm256_and_si256(_mm256_srli_epi64(lo, 26), mask);
    m[2] = _mm256_and_si256(_mm256_or_si256(_mm256_srli_epi64(lo, 52), _mm256_slli_epi64(hi, 12)), mask);
    m[3] = _mm256_and_si256(_mm256_srli_epi64(hi, 14), mask);
    m[4] = _mm256_or_si256(_mm256_srli_epi64(hi, 40), _mm256_set1_epi64x(1ll << 24));
}

AVX2_INLINE void vec_add(__m256i d[5], const __m256i m[5]) {
    for (int k = 0; k < 5; k++) d[k] = _mm256_add_epi64(d[k], m[k]);
}

// Multiplier with the same value in all four lanes (from 26-bit limbs l).
AVX2_INLINE void vec_mult_broadcast(vec_mult *m, const uint64_t l[5]) {
    for (int k = 0; k < 5; k++) {
        m->r[k] = _mm256_set1_epi64x((long long)l[k]);
        m->s[k] = _mm256_set1_epi64x((long long)(l[k] * 5));
        OPAQUE(m->r[k]);
        OPAQUE(m->s[k]);
    }
}

// Runs the 4-way evaluation over `length` bytes (a positive multiple of 64) and leaves the result,
// partially reduced, in st's accumulator, which it also takes as the starting value.
AVX2 static void poly_blocks_avx2(poly_state *st, const uint8_t *m, size_t length) {
    // Powers r^1..r^4, canonical, as 26-bit limbs: pw[k] holds r^(k+1).
    uint64_t pw[4][5];
    {
        uint64_t h0 = st->r0, h1 = st->r1, h2 = 0;
        for (int k = 0; k < 4; k++) {
            if (k > 0) poly_mul_r(&h0, &h1, &h2, st->r0, st->r1);
            uint64_t c0 = h0, c1 = h1, c2 = h2;
            poly_reduce_full(&c0, &c1, &c2);
            poly_to_limbs(c0, c1, c2, pw[k]);
        }
    }
    vec_mult r4, r8, last;
    vec_mult_broadcast(&r4, pw[3]);
    // r^8 = (r^4)^2, squared in the vector unit (all lanes alike). After the carry its limbs may
    // exceed 2^26 by less than 2^10, which the bounds below allow for.
    {
        __m256i sq[5];
        vec_mul(sq, r4.r, &r4);
        vec_carry(r8.r, sq);
        for (int k = 0; k < 5; k++) {
            r8.s[k] = _mm256_add_epi64(r8.r[k], _mm256_slli_epi64(r8.r[k], 2));
            OPAQUE(r8.r[k]);
            OPAQUE(r8.s[k]);
        }
    }
    // Lanes hold blocks 1, 3, 2, 4 of each group of four, which need r^4, r^2, r^3, r^1 at the end.
    for (int k = 0; k < 5; k++) {
        last.r[k] = _mm256_setr_epi64x((long long)pw[3][k], (long long)pw[1][k], (long long)pw[2][k], (long long)pw[0][k]);
        last.s[k] = _mm256_setr_epi64x((long long)(pw[3][k] * 5), (long long)(pw[1][k] * 5),
                                       (long long)(pw[2][k] * 5), (long long)(pw[0][k] * 5));
    }

    // First group; the incoming accumulator joins block 1 (lane 0), as Horner's rule would add it.
    __m256i h[5], a[5], b[5], d[5];
    vec_load_blocks(h, m);
    {
        uint64_t l[5];
        // st->h is partially reduced (h2 ≤ 4): its top limb stays below 2^27.
        poly_to_limbs(st->h0, st->h1, st->h2, l);
        for (int k = 0; k < 5; k++) h[k] = _mm256_add_epi64(h[k], _mm256_setr_epi64x((long long)l[k], 0, 0, 0));
    }
    m += 64;
    length -= 64;

    // H ← H·r^8 + A·r^4 + B. Limbs of H are below 2^27 and multipliers below 5·(2^26 + 2^10) < 2^28.4,
    // so a sum of five products is below 2^57.7 and a whole limb sum below 2^58.4.
    while (length >= 128) {
        vec_load_blocks(a, m);
        vec_load_blocks(b, m + 64);
        vec_mul(d, a, &r4);
        vec_add(d, b);
        __m256i e[5];
        vec_mul(e, h, &r8);
        vec_add(d, e);
        vec_carry(h, d);
        m += 128;
        length -= 128;
    }
    if (length >= 64) {
        vec_load_blocks(a, m);
        vec_mul(d, h, &r4);
        vec_add(d, a);
        vec_carry(h, d);
    }

    // Lane-wise multiply by r^4, r^2, r^3, r^1, then add the lanes: each sum is below 4·2^57.7 < 2^60.
    vec_mul(d, h, &last);
    uint64_t sum[5];
    for (int k = 0; k < 5; k++) {
        __m128i x = _mm_add_epi64(_mm256_castsi256_si128(d[k]), _mm256_extracti128_si256(d[k], 1));
        x = _mm_add_epi64(x, _mm_unpackhi_epi64(x, x));
        sum[k] = (uint64_t)_mm_cvtsi128_si64(x);
    }
    // Back to radix 2^64: Σ sum[k]·2^(26k), then fold the bits from 2^130 up.
    poly_u128 t = (poly_u128)sum[0] + ((poly_u128)sum[1] << 26) + ((poly_u128)sum[2] << 52);
    uint64_t h0 = (uint64_t)t;
    t = (t >> 64) + ((poly_u128)sum[3] << 14) + ((poly_u128)sum[4] << 40);
    uint64_t h1 = (uint64_t)t;
    uint64_t h2 = (uint64_t)(t >> 64);
    uint64_t fold = (h2 >> 2) * 5;
    h2 &= 3;
    t = (poly_u128)h0 + fold;
    h0 = (uint64_t)t;
    t = (poly_u128)h1 + (uint64_t)(t >> 64);
    h1 = (uint64_t)t;
    h2 += (uint64_t)(t >> 64);
    st->h0 = h0; st->h1 = h1; st->h2 = h2;
}

// ---- AVX-512 IFMA: 8 lanes, radix 2^44 ----
//
// VPMADD52LUQ/VPMADD52HUQ multiply the low 52 bits of two 64-bit lanes and add the low or the high
// 52 bits of the 104-bit product to a third. With three limbs of 44, 44 and 42 bits, each product
// of limbs fits, and the accumulators have 12 bits of headroom. A product's high half weighs
// 2^52 = 2^44·2^8 relative to its low half, so it is added into the next limb shifted left by 8;
// the high half of the top limb's products weighs 2^(88+52) = 2^140 ≡ 5·2^10 (mod p) and comes back
// into limb 0. Product terms at 2^132 and 2^176 fold down by 2^132 ≡ 20, so multipliers carry 20×
// copies of their upper limbs. The structure is the AVX2 one with twice the lanes: blocks i, i+8, ...
// go to lane i mod 8, the loop takes 16 blocks as H·r^16 + A·r^8 + B, and the lanes are multiplied
// by r^8..r^1 at the end.

int haven_poly1305_avx512_available(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512ifma") ? 1 : 0;
}

#define IFMA __attribute__((target("avx512f,avx512ifma")))
#define IFMA_INLINE __attribute__((target("avx512f,avx512ifma"), always_inline)) static inline
#define M44 ((1ull << 44) - 1)
#define M42 ((1ull << 42) - 1)

// A multiplier: limbs r[0..2] and 20·r[1], 20·r[2] in t[1], t[2] (t[0] unused).
typedef struct {
    __m512i r[3], t[3];
} z_mult;

// lo[k], hi[k] += low and high halves of the products landing on limb k of h·m (mod p).
IFMA_INLINE void z_mul_acc(__m512i lo[3], __m512i hi[3], const __m512i h[3], const z_mult *m) {
    lo[0] = _mm512_madd52lo_epu64(lo[0], h[0], m->r[0]);
    hi[0] = _mm512_madd52hi_epu64(hi[0], h[0], m->r[0]);
    lo[1] = _mm512_madd52lo_epu64(lo[1], h[0], m->r[1]);
    hi[1] = _mm512_madd52hi_epu64(hi[1], h[0], m->r[1]);
    lo[2] = _mm512_madd52lo_epu64(lo[2], h[0], m->r[2]);
    hi[2] = _mm512_madd52hi_epu64(hi[2], h[0], m->r[2]);

    lo[0] = _mm512_madd52lo_epu64(lo[0], h[1], m->t[2]);
    hi[0] = _mm512_madd52hi_epu64(hi[0], h[1], m->t[2]);
    lo[1] = _mm512_madd52lo_epu64(lo[1], h[1], m->r[0]);
    hi[1] = _mm512_madd52hi_epu64(hi[1], h[1], m->r[0]);
    lo[2] = _mm512_madd52lo_epu64(lo[2], h[1], m->r[1]);
    hi[2] = _mm512_madd52hi_epu64(hi[2], h[1], m->r[1]);

    lo[0] = _mm512_madd52lo_epu64(lo[0], h[2], m->t[1]);
    hi[0] = _mm512_madd52hi_epu64(hi[0], h[2], m->t[1]);
    lo[1] = _mm512_madd52lo_epu64(lo[1], h[2], m->t[2]);
    hi[1] = _mm512_madd52hi_epu64(hi[1], h[2], m->t[2]);
    lo[2] = _mm512_madd52lo_epu64(lo[2], h[2], m->r[0]);
    hi[2] = _mm512_madd52hi_epu64(hi[2], h[2], m->r[0]);
}

// Merges the halves into three limb sums (not carried): the high halves move up one limb (×2^8),
// the top one wraps to limb 0 (×5·2^10).
IFMA_INLINE void z_merge(__m512i t[3], const __m512i lo[3], const __m512i hi[3]) {
    t[0] = _mm512_add_epi64(lo[0], _mm512_add_epi64(_mm512_slli_epi64(hi[2], 12), _mm512_slli_epi64(hi[2], 10)));
    t[1] = _mm512_add_epi64(lo[1], _mm512_slli_epi64(hi[0], 8));
    t[2] = _mm512_add_epi64(lo[2], _mm512_slli_epi64(hi[1], 8));
}

// One round of carries, all three at once (limb 2's carry wraps to limb 0 times 5). With limb sums
// below 2^57, the results exceed 2^44 (limb 2: 2^42) by less than 2^18.
IFMA_INLINE void z_carry(__m512i h[3], const __m512i t[3]) {
    const __m512i m44 = _mm512_set1_epi64((long long)M44), m42 = _mm512_set1_epi64((long long)M42);
    __m512i c0 = _mm512_srli_epi64(t[0], 44), c1 = _mm512_srli_epi64(t[1], 44), c2 = _mm512_srli_epi64(t[2], 42);
    h[0] = _mm512_add_epi64(_mm512_and_si512(t[0], m44), _mm512_add_epi64(c2, _mm512_slli_epi64(c2, 2)));
    h[1] = _mm512_add_epi64(_mm512_and_si512(t[1], m44), c0);
    h[2] = _mm512_add_epi64(_mm512_and_si512(t[2], m42), c1);
}

// Eight consecutive full blocks (128 bytes) as limbs with the 2^128 pad bit (2^40 in limb 2). The
// unpacks work within 128-bit quarters, so lanes hold blocks 1, 5, 2, 6, 3, 7, 4, 8.
IFMA_INLINE void z_load_blocks(__m512i m[3], const uint8_t *p) {
    const __m512i m44 = _mm512_set1_epi64((long long)M44);
    __m512i a = _mm512_loadu_si512((const void *)p);
    __m512i b = _mm512_loadu_si512((const void *)(p + 64));
    __m512i lo = _mm512_unpacklo_epi64(a, b);
    __m512i hi = _mm512_unpackhi_epi64(a, b);
    m[0] = _mm512_and_si512(lo, m44);
    m[1] = _mm512_and_si512(_mm512_or_si512(_mm512_srli_epi64(lo, 44), _mm512_slli_epi64(hi, 20)), m44);
    m[2] = _mm512_or_si512(_mm512_srli_epi64(hi, 24), _mm512_set1_epi64(1ll << 40));
}

// Multiplier from limb vectors.
IFMA_INLINE void z_mult_from(z_mult *m, const __m512i l[3]) {
    for (int k = 0; k < 3; k++) {
        m->r[k] = l[k];
        // 20·x = 16x + 4x
        m->t[k] = _mm512_add_epi64(_mm512_slli_epi64(l[k], 4), _mm512_slli_epi64(l[k], 2));
    }
}

// Limbs of a value below 2^131 (h2 ≤ 7): 44, 44 and up to 43 bits.
static inline void poly_to_limbs44(uint64_t h0, uint64_t h1, uint64_t h2, uint64_t l[3]) {
    l[0] = h0 & M44;
    l[1] = ((h0 >> 44) | (h1 << 20)) & M44;
    l[2] = (h1 >> 24) | (h2 << 40);
}

// Runs the 8-way evaluation over `length` bytes (a positive multiple of 128), starting from and
// leaving the (partially reduced) result in st's accumulator.
IFMA static void poly_blocks_ifma(poly_state *st, const uint8_t *m, size_t length) {
    const __m512i zero = _mm512_setzero_si512();
    // r^1..r^4 canonical, from the scalar code; then [r..r^4, r..r^4] × [1 ×4, r^4 ×4] = r^1..r^8.
    uint64_t pw[4][3];
    {
        uint64_t h0 = st->r0, h1 = st->r1, h2 = 0;
        for (int k = 0; k < 4; k++) {
            if (k > 0) poly_mul_r(&h0, &h1, &h2, st->r0, st->r1);
            uint64_t c0 = h0, c1 = h1, c2 = h2;
            poly_reduce_full(&c0, &c1, &c2);
            poly_to_limbs44(c0, c1, c2, pw[k]);
        }
    }
    __m512i powers[3], lo[3], hi[3], t[3];
    z_mult step;
    for (int k = 0; k < 3; k++) {
        // _mm512_set_epi64 lists lanes from 7 down to 0.
        powers[k] = _mm512_set_epi64((long long)pw[3][k], (long long)pw[2][k], (long long)pw[1][k], (long long)pw[0][k],
                                     (long long)pw[3][k], (long long)pw[2][k], (long long)pw[1][k], (long long)pw[0][k]);
        uint64_t one = k == 0 ? 1 : 0;
        step.r[k] = _mm512_set_epi64((long long)pw[3][k], (long long)pw[3][k], (long long)pw[3][k], (long long)pw[3][k],
                                     (long long)one, (long long)one, (long long)one, (long long)one);
        lo[k] = hi[k] = zero;
    }
    z_mult_from(&step, step.r);
    z_mul_acc(lo, hi, powers, &step);
    z_merge(t, lo, hi);
    z_carry(powers, t);  // lane j now holds r^(j+1), limbs within 2^18 of their nominal size

    // Broadcast r^8 (lane 7) and square it for r^16; final multipliers in lane order 1,5,2,6,3,7,4,8
    // of the blocks, i.e. r^8, r^4, r^7, r^3, r^6, r^2, r^5, r^1.
    z_mult r8, r16, last;
    {
        const __m512i all7 = _mm512_set1_epi64(7);
        const __m512i order = _mm512_set_epi64(0, 4, 1, 5, 2, 6, 3, 7);
        __m512i l8[3], lastl[3], sq[3];
        for (int k = 0; k < 3; k++) {
            l8[k] = _mm512_permutexvar_epi64(all7, powers[k]);
            lastl[k] = _mm512_permutexvar_epi64(order, powers[k]);
        }
        z_mult_from(&r8, l8);
        z_mult_from(&last, lastl);
        for (int k = 0; k < 3; k++) lo[k] = hi[k] = zero;
        z_mul_acc(lo, hi, l8, &r8);
        z_merge(t, lo, hi);
        z_carry(sq, t);
        z_mult_from(&r16, sq);
    }

    // First eight blocks; the incoming accumulator joins block 1 (lane 0).
    __m512i h[3], a[3], b[3];
    z_load_blocks(h, m);
    {
        uint64_t l[3];
        poly_to_limbs44(st->h0, st->h1, st->h2, l);
        for (int k = 0; k < 3; k++) h[k] = _mm512_add_epi64(h[k], _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, (long long)l[k]));
    }
    m += 128;
    length -= 128;

    // H ← H·r^16 + A·r^8 + B. Limbs of H are below 2^45 and multipliers below 20·(2^44 + 2^18) <
    // 2^48.4, so each high half is below 2^41.4; six of them and six low halves (each < 2^52) plus B
    // keep every merged limb sum below 2^56.5.
    while (length >= 256) {
        z_load_blocks(a, m);
        z_load_blocks(b, m + 128);
        for (int k = 0; k < 3; k++) { lo[k] = b[k]; hi[k] = zero; }
        z_mul_acc(lo, hi, a, &r8);
        z_mul_acc(lo, hi, h, &r16);
        z_merge(t, lo, hi);
        z_carry(h, t);
        m += 256;
        length -= 256;
    }
    if (length >= 128) {
        z_load_blocks(a, m);
        for (int k = 0; k < 3; k++) { lo[k] = a[k]; hi[k] = zero; }
        z_mul_acc(lo, hi, h, &r8);
        z_merge(t, lo, hi);
        z_carry(h, t);
    }

    // Lane-wise multiply by the final powers, merge, and add the lanes (each sum below 2^60).
    for (int k = 0; k < 3; k++) lo[k] = hi[k] = zero;
    z_mul_acc(lo, hi, h, &last);
    z_merge(t, lo, hi);
    uint64_t s0 = (uint64_t)_mm512_reduce_add_epi64(t[0]);
    uint64_t s1 = (uint64_t)_mm512_reduce_add_epi64(t[1]);
    uint64_t s2 = (uint64_t)_mm512_reduce_add_epi64(t[2]);
    // Back to radix 2^64: s0 + s1·2^44 + s2·2^88, then fold the bits from 2^130 up.
    poly_u128 x = (poly_u128)s0 + ((poly_u128)s1 << 44);
    uint64_t h0 = (uint64_t)x;
    x = (x >> 64) + ((poly_u128)s2 << 24);
    uint64_t h1 = (uint64_t)x;
    uint64_t h2 = (uint64_t)(x >> 64);
    uint64_t fold = (h2 >> 2) * 5;
    h2 &= 3;
    x = (poly_u128)h0 + fold;
    h0 = (uint64_t)x;
    x = (poly_u128)h1 + (uint64_t)(x >> 64);
    h1 = (uint64_t)x;
    h2 += (uint64_t)(x >> 64);
    st->h0 = h0; st->h1 = h1; st->h2 = h2;
}

// Below these lengths the power precomputation costs more than the vector loops save.
#define POLY_AVX2_MIN_LENGTH 384
#define POLY_IFMA_MIN_LENGTH 256

#else

int haven_poly1305_avx2_available(void) { return 0; }
int haven_poly1305_avx512_available(void) { return 0; }

#endif

enum { ENGINE_SCALAR = 0, ENGINE_AVX2 = 1, ENGINE_IFMA = 2 };

// The whole MAC, with the bulk of the message on the given engine (the vector engines take
// multiples of 64 or 128 bytes from the front; the rest goes through the scalar code).
static void poly1305_compute(const uint8_t *message, size_t length, const uint8_t r[16], const uint8_t s[16],
                             uint8_t tag[16], int engine) {
    poly_state st;
    st.r0 = poly_load64(r) & 0x0ffffffc0fffffffull;
    st.r1 = poly_load64(r + 8) & 0x0ffffffc0ffffffcull;
    st.h0 = st.h1 = st.h2 = 0;

#if defined(__x86_64__)
    if (engine == ENGINE_IFMA && length >= 128) {
        size_t bulk = length & ~(size_t)127;
        poly_blocks_ifma(&st, message, bulk);
        message += bulk;
        length -= bulk;
    } else if (engine == ENGINE_AVX2 && length >= 64) {
        size_t bulk = length & ~(size_t)63;
        poly_blocks_avx2(&st, message, bulk);
        message += bulk;
        length -= bulk;
    }
#else
    (void)engine;
#endif

    poly_blocks_scalar(&st, message, length / 16, 1);
    size_t rest = length % 16;
    if (rest != 0) {
        uint8_t last[16] = {0};
        memcpy(last, message + (length - rest), rest);
        last[rest] = 1;
        poly_blocks_scalar(&st, last, 1, 0);
    }

    uint64_t h0 = st.h0, h1 = st.h1, h2 = st.h2;
    poly_reduce_full(&h0, &h1, &h2);
    poly_u128 t = (poly_u128)h0 + poly_load64(s);
    poly_store64(tag, (uint64_t)t);
    poly_store64(tag + 8, h1 + poly_load64(s + 8) + (uint64_t)(t >> 64));
}

void haven_poly1305_mac(const uint8_t *message, size_t length, const uint8_t r[16], const uint8_t s[16], uint8_t tag[16]) {
    int engine = ENGINE_SCALAR;
#if defined(__x86_64__)
    // The CPU checks read flags the runtime filled in at start-up: cheap enough to make every call.
    if (length >= POLY_IFMA_MIN_LENGTH && haven_poly1305_avx512_available()) engine = ENGINE_IFMA;
    else if (length >= POLY_AVX2_MIN_LENGTH && haven_poly1305_avx2_available()) engine = ENGINE_AVX2;
#endif
    poly1305_compute(message, length, r, s, tag, engine);
}
