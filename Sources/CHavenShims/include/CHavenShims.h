#ifndef HAVEN_SHIMS_H
#define HAVEN_SHIMS_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/xattr.h>

/// O_NOATIME is only visible with _GNU_SOURCE, which Swift's Glibc module does not set.
int haven_o_noatime(void);
/// O_TMPFILE (an unnamed file in a directory), or 0 where the system has none.
int haven_o_tmpfile(void);
/// O_DIRECT where the system has it, else 0.
int haven_o_direct(void);
/// posix_fadvise(POSIX_FADV_SEQUENTIAL) wrapper.
int haven_fadvise_sequential(int fd);
/// Asks the kernel to send `sig` to this process when its parent dies (Linux prctl PR_SET_PDEATHSIG).
/// Returns 0 on success, -1 where unsupported.
int haven_set_parent_death_signal(int sig);
/// Installs a handler for `sig` that writes the signal number (one byte) to a new pipe, and returns the
/// pipe's read end (-1 on error). Async-signal-safe; a program that execs keeps the default disposition.
int haven_signal_pipe(int sig);
/// Unmaps the pages of this process's executable code mappings (binary and shared libraries) and turns
/// off the kernel's fault-around for them, so only code that actually runs from now on is resident.
/// Returns the number of mappings trimmed (-1 if /proc is unavailable). Linux only; 0 elsewhere.
int haven_trim_code_pages(void);
/// Tells the C allocator to serve blocks up to `largest_reused` bytes from its heap rather than from
/// mappings of their own, and to keep up to `kept_free` bytes of freed memory at a heap's top instead of
/// handing it back to the kernel, so that a buffer freed and allocated again is not faulted in again page
/// by page. Returns 0, or -1 when the allocator refused a setting. glibc only; 0 elsewhere.
int haven_keep_freed_memory(size_t largest_reused, size_t kept_free);
/// Fills `buffer` with `count` bytes from the kernel's CSPRNG (getrandom(2)). Returns 0, or -1 on error.
int haven_random_bytes(void *buffer, size_t count);

/// 1 when this CPU has the AES instructions the functions below use (x86-64 AES-NI with SSSE3), else 0.
/// The other haven_aes_* functions may only be called when it returns 1.
int haven_aes_hw_available(void);
/// Expands a 16-byte AES-128 key into its 176-byte round-key schedule.
void haven_aes128_expand(const uint8_t *key, uint8_t *schedule);
/// Expands a 32-byte AES-256 key into its 240-byte round-key schedule.
void haven_aes256_expand(const uint8_t *key, uint8_t *schedule);
/// Encrypts one 16-byte block with an AES-128 schedule (in and out may be the same).
void haven_aes128_encrypt_block(const uint8_t *schedule, const uint8_t *in, uint8_t *out);
/// AES-256-CTR: XORs `length` bytes of `in` with the keystream for the 16-byte initial counter block
/// `iv`, counting as one 128-bit big-endian integer that wraps at 2^128. `in` and `out` may be the same.
/// With `wide` 1 it also uses the 512-bit AES instructions where the CPU has them (four blocks per
/// instruction); 0 keeps to the 128-bit ones (tests compare both paths).
void haven_aes256_ctr(const uint8_t *schedule, const uint8_t *iv, const uint8_t *in, uint8_t *out, size_t length,
                      int wide);
/// 1 when the CPU has the 512-bit AES instructions (VAES with AVX-512F/BW, and the OS saving the
/// 512-bit state), else 0.
int haven_aes_vaes_available(void);

/// 1 when the CPU and OS run AVX-512F (haven_scrypt_romix_avx512 may be called), else 0.
int haven_scrypt_avx512_available(void);
/// scrypt's ROMix (RFC 7914) of `count` (1 to 4) lanes of 128·r bytes each, back to back at `lanes`, in
/// place, all at once on AVX-512F. Each lane's table keeps every `store_every`-th block (memory:
/// count·ceil(n/store_every)·128·r bytes). n must be a power of two. Returns 0, or -1 when the
/// arguments are out of range or memory is short (the lanes are then unchanged or partly mixed).
int haven_scrypt_romix_avx512(uint8_t *lanes, int count, uint32_t n, uint32_t r, uint32_t store_every);
/// 1 when the CPU and OS run AVX2 (haven_scrypt_romix_avx2 may be called), else 0.
int haven_scrypt_avx2_available(void);
/// haven_scrypt_romix_avx512 on AVX2: the same arguments, results and memory.
int haven_scrypt_romix_avx2(uint8_t *lanes, int count, uint32_t n, uint32_t r, uint32_t store_every);

/// 1 when this CPU can run haven_poly1305_mac's AVX2 path (x86-64 with AVX2), else 0.
int haven_poly1305_avx2_available(void);
/// 1 when this CPU can run haven_poly1305_mac's AVX-512 IFMA path (x86-64 with AVX-512F and IFMA, and
/// the OS saving the 512-bit state), else 0. haven_poly1305_mac prefers it to the AVX2 path.
int haven_poly1305_avx512_available(void);
/// Poly1305 tag of `message` (length bytes) under the 32-byte one-time key r||s given as r (16 bytes,
/// clamped inside this function per RFC 8439) and s (16 bytes); writes 16 bytes to tag.
/// Uses AVX-512 IFMA or AVX2 for the bulk when available and the message is long enough to pay for it
/// (256 and 384 bytes), a portable 64-bit scalar path otherwise. Any CPU, any architecture.
void haven_poly1305_mac(const uint8_t *message, size_t length, const uint8_t r[16], const uint8_t s[16], uint8_t tag[16]);

/// 1 when this CPU has the SHA extensions and SSE4.1 (x86-64), so the haven_sha256 functions
/// may be called; else 0 (they must not be called).
int haven_sha256_hw_available(void);
/// SHA-256 of `length` bytes at `message`; writes 32 bytes to `digest`.
void haven_sha256(const uint8_t *message, size_t length, uint8_t digest[32]);
/// SHA-256 in pieces: `state` starts as FIPS 180-4's initial hash value H(0) (eight words) and takes
/// `count` whole 64-byte blocks at a time; haven_sha256_finish pads the last `tail_length` (< 64) bytes
/// of a message of `total` bytes and writes its digest.
void haven_sha256_blocks(uint32_t state[8], const uint8_t *blocks, size_t count);
void haven_sha256_finish(uint32_t state[8], const uint8_t *tail, size_t tail_length, uint64_t total,
                         uint8_t digest[32]);
/// haven_sha256_blocks on two states at once, `count` blocks of each, interleaved instruction by
/// instruction so the rounds of one fill the latency of the other's.
void haven_sha256_blocks_pair(uint32_t a_state[8], const uint8_t *a, uint32_t b_state[8], const uint8_t *b,
                              size_t count);
#endif
