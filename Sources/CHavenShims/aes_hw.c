// AES with the x86-64 AES instructions (AES-NI), for the two uses of restic's format: AES-256 in CTR
// mode over blob contents, and AES-128 on one block (Poly1305-AES's s = AES_k(nonce)). The key
// schedules follow the key expansion of FIPS-197 computed with AESKEYGENASSIST, as described in Intel's
// "Advanced Encryption Standard (AES) New Instructions Set" white paper. Callers check
// haven_aes_hw_available() first; elsewhere the functions are not called (Swift falls back to
// swift-crypto).
#include "CHavenShims.h"
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

int haven_aes_hw_available(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c & bit_AES) != 0 && (c & bit_SSSE3) != 0;
}

#define HW __attribute__((target("aes,ssse3")))

// Folds the previous round key's words: w0, w0^w1, w0^w1^w2, w0^w1^w2^w3.
HW static inline __m128i fold(__m128i k) {
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    return _mm_xor_si128(k, _mm_slli_si128(k, 4));
}

#define EXPAND128(prev, rcon) \
    _mm_xor_si128(fold(prev), _mm_shuffle_epi32(_mm_aeskeygenassist_si128(prev, rcon), 0xff))

HW void haven_aes128_expand(const uint8_t *key, uint8_t *schedule) {
    __m128i *rk = (__m128i *)schedule;
    __m128i k = _mm_loadu_si128((const __m128i *)key);
    _mm_storeu_si128(rk + 0, k);
    k = EXPAND128(k, 0x01); _mm_storeu_si128(rk + 1, k);
    k = EXPAND128(k, 0x02); _mm_storeu_si128(rk + 2, k);
    k = EXPAND128(k, 0x04); _mm_storeu_si128(rk + 3, k);
    k = EXPAND128(k, 0x08); _mm_storeu_si128(rk + 4, k);
    k = EXPAND128(k, 0x10); _mm_storeu_si128(rk + 5, k);
    k = EXPAND128(k, 0x20); _mm_storeu_si128(rk + 6, k);
    k = EXPAND128(k, 0x40); _mm_storeu_si128(rk + 7, k);
    k = EXPAND128(k, 0x80); _mm_storeu_si128(rk + 8, k);
    k = EXPAND128(k, 0x1b); _mm_storeu_si128(rk + 9, k);
    k = EXPAND128(k, 0x36); _mm_storeu_si128(rk + 10, k);
}

// AES-256: even round keys use RotWord+SubWord+Rcon of the previous odd key's last word, odd round keys
// SubWord only of the previous even key's last word. EXPAND256_PAIR stores round keys i and i + 1.
#define EXPAND256_EVEN(even, odd, rcon) \
    _mm_xor_si128(fold(even), _mm_shuffle_epi32(_mm_aeskeygenassist_si128(odd, rcon), 0xff))
#define EXPAND256_ODD(odd, even) \
    _mm_xor_si128(fold(odd), _mm_shuffle_epi32(_mm_aeskeygenassist_si128(even, 0x00), 0xaa))
#define EXPAND256_PAIR(i, rcon) do { \
        a = EXPAND256_EVEN(a, b, rcon); _mm_storeu_si128(rk + (i), a); \
        b = EXPAND256_ODD(b, a);        _mm_storeu_si128(rk + (i) + 1, b); \
    } while (0)

HW void haven_aes256_expand(const uint8_t *key, uint8_t *schedule) {
    __m128i *rk = (__m128i *)schedule;
    __m128i a = _mm_loadu_si128((const __m128i *)key);
    __m128i b = _mm_loadu_si128((const __m128i *)(key + 16));
    _mm_storeu_si128(rk + 0, a);
    _mm_storeu_si128(rk + 1, b);
    EXPAND256_PAIR(2, 0x01);
    EXPAND256_PAIR(4, 0x02);
    EXPAND256_PAIR(6, 0x04);
    EXPAND256_PAIR(8, 0x08);
    EXPAND256_PAIR(10, 0x10);
    EXPAND256_PAIR(12, 0x20);
    a = EXPAND256_EVEN(a, b, 0x40); _mm_storeu_si128(rk + 14, a);
}

HW void haven_aes128_encrypt_block(const uint8_t *schedule, const uint8_t *in, uint8_t *out) {
    const __m128i *rk = (const __m128i *)schedule;
    __m128i x = _mm_xor_si128(_mm_loadu_si128((const __m128i *)in), _mm_loadu_si128(rk));
    for (int r = 1; r < 10; r++) x = _mm_aesenc_si128(x, _mm_loadu_si128(rk + r));
    x = _mm_aesenclast_si128(x, _mm_loadu_si128(rk + 10));
    _mm_storeu_si128((__m128i *)out, x);
}

// The counter block for counter value (hi, lo), stored big-endian: byte 0 is the top byte of hi.
HW static inline __m128i counter_block(uint64_t hi, uint64_t lo) {
    return _mm_set_epi64x((long long)__builtin_bswap64(lo), (long long)__builtin_bswap64(hi));
}

// The 512-bit AES instructions (VAES with AVX-512F and BW); the runtime's CPU check also requires the OS
// to save the 512-bit state, and reads flags filled in at start-up, so it is cheap on every call.
int haven_aes_vaes_available(void) {
    return __builtin_cpu_supports("vaes") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") ? 1 : 0;
}

// The counter is one 128-bit big-endian integer (hi, lo), incremented per block and wrapping at 2^128.
#define NEXT(hi, lo) do { if (++(lo) == 0) (hi)++; } while (0)

#define VAES __attribute__((target("vaes,avx512f,avx512bw,aes,ssse3")))

// CTR over whole groups of 16 blocks, four in each 512-bit register, while no group makes the low 64
// bits of the counter wrap (the caller's 128-bit loop takes that block). Advances *done and the counter.
VAES static void ctr_vaes(const uint8_t *schedule, uint64_t *hi, uint64_t *lo, const uint8_t *in, uint8_t *out,
                          size_t length, size_t *done) {
    __m512i rk[15];
    for (int r = 0; r < 15; r++) rk[r] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)schedule + r));
    // Each 128-bit lane holds a counter as (lo, hi) little-endian words; reversing its 16 bytes gives
    // the big-endian counter block.
    const __m512i reverse = _mm512_broadcast_i32x4(_mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m512i four = _mm512_set_epi64(0, 4, 0, 4, 0, 4, 0, 4);
    uint64_t h = *hi, l = *lo;
    size_t d = *done;
    while (length - d >= 256 && l <= UINT64_MAX - 16) {
        __m512i c = _mm512_set_epi64((long long)h, (long long)(l + 3), (long long)h, (long long)(l + 2),
                                     (long long)h, (long long)(l + 1), (long long)h, (long long)l);
        __m512i x[4];
        for (int i = 0; i < 4; i++) {
            x[i] = _mm512_xor_si512(_mm512_shuffle_epi8(c, reverse), rk[0]);
            c = _mm512_add_epi64(c, four);
        }
        for (int r = 1; r < 14; r++) {
            for (int i = 0; i < 4; i++) x[i] = _mm512_aesenc_epi128(x[i], rk[r]);
        }
        for (int i = 0; i < 4; i++) {
            x[i] = _mm512_aesenclast_epi128(x[i], rk[14]);
            __m512i p = _mm512_loadu_si512((const void *)(in + d + 64 * i));
            _mm512_storeu_si512((void *)(out + d + 64 * i), _mm512_xor_si512(p, x[i]));
        }
        l += 16;
        d += 256;
    }
    *hi = h;
    *lo = l;
    *done = d;
}

// CTR with the 128-bit instructions from block *done on, eight blocks at a time, then one.
HW static void ctr_ni(const uint8_t *schedule, uint64_t hi, uint64_t lo, const uint8_t *in, uint8_t *out,
                      size_t length, size_t done, int wide) {
    __m128i rk[15];
    for (int r = 0; r < 15; r++) rk[r] = _mm_loadu_si128((const __m128i *)schedule + r);
    while (length - done >= 128) {
        if (wide && length - done >= 256) {
            ctr_vaes(schedule, &hi, &lo, in, out, length, &done);
            if (length - done < 128) break;
        }
        __m128i x[8];
        for (int i = 0; i < 8; i++) {
            x[i] = _mm_xor_si128(counter_block(hi, lo), rk[0]);
            NEXT(hi, lo);
        }
        for (int r = 1; r < 14; r++) {
            for (int i = 0; i < 8; i++) x[i] = _mm_aesenc_si128(x[i], rk[r]);
        }
        for (int i = 0; i < 8; i++) {
            x[i] = _mm_aesenclast_si128(x[i], rk[14]);
            __m128i p = _mm_loadu_si128((const __m128i *)(in + done) + i);
            _mm_storeu_si128((__m128i *)(out + done) + i, _mm_xor_si128(p, x[i]));
        }
        done += 128;
    }
    while (done < length) {
        __m128i x = _mm_xor_si128(counter_block(hi, lo), rk[0]);
        NEXT(hi, lo);
        for (int r = 1; r < 14; r++) x = _mm_aesenc_si128(x, rk[r]);
        x = _mm_aesenclast_si128(x, rk[14]);
        size_t n = length - done < 16 ? length - done : 16;
        if (n == 16) {
            _mm_storeu_si128((__m128i *)(out + done), _mm_xor_si128(_mm_loadu_si128((const __m128i *)(in + done)), x));
        } else {
            uint8_t ks[16];
            _mm_storeu_si128((__m128i *)ks, x);
            for (size_t i = 0; i < n; i++) out[done + i] = in[done + i] ^ ks[i];
        }
        done += n;
    }
}

void haven_aes256_ctr(const uint8_t *schedule, const uint8_t *iv, const uint8_t *in, uint8_t *out, size_t length,
                      int wide) {
    uint64_t hi, lo;
    memcpy(&hi, iv, 8);
    memcpy(&lo, iv + 8, 8);
    ctr_ni(schedule, __builtin_bswap64(hi), __builtin_bswap64(lo), in, out, length, 0, wide && haven_aes_vaes_available());
}

#undef NEXT

#else

int haven_aes_hw_available(void) { return 0; }
void haven_aes128_expand(const uint8_t *key, uint8_t *schedule) { (void)key; (void)schedule; __builtin_trap(); }
void haven_aes256_expand(const uint8_t *key, uint8_t *schedule) { (void)key; (void)schedule; __builtin_trap(); }
void haven_aes128_encrypt_block(const uint8_t *schedule, const uint8_t *in, uint8_t *out) {
    (void)schedule; (void)in; (void)out; __builtin_trap();
}
int haven_aes_vaes_available(void) { return 0; }
void haven_aes256_ctr(const uint8_t *schedule, const uint8_t *iv, const uint8_t *in, uint8_t *out, size_t length,
                      int wide) {
    (void)schedule; (void)iv; (void)in; (void)out; (void)length; (void)wide; __builtin_trap();
}

#endif
