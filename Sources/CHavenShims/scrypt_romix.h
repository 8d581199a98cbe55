// The body of scrypt_hw.c's ROMix, included once per instruction set. The includer defines:
//   HW                      the target attribute of the functions
//   VEC                     a vector holding one 128-bit vector of each of four lanes ("slots")
//   NAME(x)                 x with the instruction set's suffix
//   V_XOR, V_ADD(a, b)      per 32-bit word; V_ROL(a, n) rotates each word left by n
//   V_SHUF(a, imm)          _mm_shuffle_epi32(slot, imm) of every slot
//   V_FROM4(q0, q1, q2, q3) a vector from four 128-bit slots
//   V_GET(v, k), V_SET(v, q, k)  slot k (0...3) of v, and v with slot k replaced by q
// and, once, kDiagonal and ROT1…ROT3. A VEC's bytes are its slots in order, 16 bytes each.

// Four Salsa20/8 double rounds on (a, b, c, d), then the input added back.
#define STEP(x, y, z, n) x = V_XOR(x, V_ROL(V_ADD(y, z), n))
HW static inline void NAME(salsa8)(VEC *pa, VEC *pb, VEC *pc, VEC *pd) {
    VEC a = *pa, b = *pb, c = *pc, d = *pd;
    const VEC a0 = a, b0 = b, c0 = c, d0 = d;
    for (int i = 0; i < 4; i++) {
        STEP(b, a, d, 7);
        STEP(c, b, a, 9);
        STEP(d, c, b, 13);
        STEP(a, d, c, 18);
        d = V_SHUF(d, ROT1);
        c = V_SHUF(c, ROT2);
        b = V_SHUF(b, ROT3);
        STEP(d, a, b, 7);
        STEP(c, d, a, 9);
        STEP(b, c, d, 13);
        STEP(a, b, c, 18);
        d = V_SHUF(d, ROT3);
        c = V_SHUF(c, ROT2);
        b = V_SHUF(b, ROT1);
    }
    *pa = V_ADD(a, a0);
    *pb = V_ADD(b, b0);
    *pc = V_ADD(c, c0);
    *pd = V_ADD(d, d0);
}
#undef STEP

// Where one scrypt block's vector comes from for each of the four slots (a lane's 128-bit vectors, in
// diagonal order, 8r of them per block).
typedef struct { const __m128i *slot[4]; } NAME(Sources);

HW static inline VEC NAME(gather)(const NAME(Sources) *s, size_t v) {
    return V_FROM4(_mm_loadu_si128(s->slot[0] + v), _mm_loadu_si128(s->slot[1] + v),
                   _mm_loadu_si128(s->slot[2] + v), _mm_loadu_si128(s->slot[3] + v));
}

// scryptBlockMix of `in` (XORed first with the blocks `xor` names, when given) into `out`: Salsa block i
// of the result goes to position i/2 when i is even and r + i/2 when odd.
HW static void NAME(block_mix)(const VEC *in, const NAME(Sources) *xor, VEC *out, size_t r) {
    const size_t last = 8 * r - 4;
    VEC a = in[last], b = in[last + 1], c = in[last + 2], d = in[last + 3];
    if (xor) {
        a = V_XOR(a, NAME(gather)(xor, last));
        b = V_XOR(b, NAME(gather)(xor, last + 1));
        c = V_XOR(c, NAME(gather)(xor, last + 2));
        d = V_XOR(d, NAME(gather)(xor, last + 3));
    }
    for (size_t i = 0; i < 2 * r; i++) {
        const size_t at = 4 * i;
        if (xor) {
            a = V_XOR(a, V_XOR(in[at], NAME(gather)(xor, at)));
            b = V_XOR(b, V_XOR(in[at + 1], NAME(gather)(xor, at + 1)));
            c = V_XOR(c, V_XOR(in[at + 2], NAME(gather)(xor, at + 2)));
            d = V_XOR(d, V_XOR(in[at + 3], NAME(gather)(xor, at + 3)));
        } else {
            a = V_XOR(a, in[at]);
            b = V_XOR(b, in[at + 1]);
            c = V_XOR(c, in[at + 2]);
            d = V_XOR(d, in[at + 3]);
        }
        NAME(salsa8)(&a, &b, &c, &d);
        const size_t to = 4 * ((i & 1) * r + (i >> 1));
        out[to] = a;
        out[to + 1] = b;
        out[to + 2] = c;
        out[to + 3] = d;
    }
}

// Slot `slot` of each of `count` vectors at `from` into the lane vectors at `to`.
HW static void NAME(extract_slot)(const VEC *from, int slot, __m128i *to, size_t count) {
    for (size_t v = 0; v < count; v++) _mm_storeu_si128(to + v, V_GET(from[v], slot));
}

// Word 0 of the last Salsa block of slot `slot` in `x` (integerify, RFC 7914 section 5).
static inline uint32_t NAME(integerify)(const VEC *x, size_t r, int slot) {
    const uint32_t *words = (const uint32_t *)(x + 8 * r - 4);
    return words[4 * slot];
}

HW int NAME(haven_scrypt_romix)(uint8_t *lanes, int count, uint32_t n, uint32_t r, uint32_t store_every) {
    if (count < 1 || count > 4 || n < 2 || (n & (n - 1)) != 0 || r < 1 || store_every < 1) return -1;
    const size_t vectors = 8 * (size_t)r;                 // 128-bit vectors per scrypt block
    const size_t lane_bytes = 128 * (size_t)r;
    const size_t entries = (n + store_every - 1) / store_every;
    // x, y: the running state (one block per lane) and its successor; then per-lane scratch; then each
    // lane's table.
    const size_t wide = 2 * vectors * sizeof(VEC);
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
    VEC *x = (VEC *)memory, *y = x + vectors;
    __m128i *parked = (__m128i *)(memory + wide), *results = parked + 4 * vectors;
    const __m128i *zeros = results + 4 * vectors;  // mmap'ed memory starts zeroed
    __m128i *tables = (__m128i *)(memory + wide + lane_scratch);
    memset(x, 0, vectors * sizeof(VEC));
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
                x[4 * blk + v] = V_SET(x[4 * blk + v], _mm_loadu_si128((const __m128i *)(words + 4 * v)), slot);
            }
        }
    }

    // First loop: V_i = X, X = BlockMix(X); only every store_every-th V_i is kept.
    VEC *current = x, *other = y;
    for (uint32_t i = 0; i < n; i++) {
        if (i % store_every == 0) {
            for (int k = 0; k < count; k++) NAME(extract_slot)(current, k, TABLE(k, i / store_every), vectors);
        }
        NAME(block_mix)(current, NULL, other, r);
        VEC *t = current; current = other; other = t;
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
        const uint32_t j = NAME(integerify)((state), r, (k)) & (n - 1); \
        table_block[k] = TABLE((k), j / store_every); \
        const char *block = (const char *)table_block[k]; \
        for (size_t line = 0; line < lane_bytes; line += 64) _mm_prefetch(block + line, _MM_HINT_T0); \
        left[k] = j % store_every; \
        if (left[k] == 0) { \
            mode[k] = kFromTable; \
        } else { \
            mode[k] = kRecomputing; \
            NAME(extract_slot)((state), (k), parked + (size_t)(k) * vectors, vectors); \
            for (size_t v = 0; v < vectors; v++) (state)[v] = V_SET((state)[v], _mm_loadu_si128(table_block[k] + v), (k)); \
        } \
    } while (0)
    for (int k = 0; k < count; k++) { NEXT_BLOCK(current, k); running++; }
    while (running > 0) {
        NAME(Sources) xor;
        int any = 0;
        for (int slot = 0; slot < 4; slot++) {
            switch (mode[slot]) {
            case kFromTable: xor.slot[slot] = table_block[slot]; any = 1; break;
            case kFromParked: xor.slot[slot] = parked + (size_t)slot * vectors; any = 1; break;
            default: xor.slot[slot] = zeros; break;
            }
        }
        NAME(block_mix)(current, any ? &xor : NULL, other, r);
        VEC *t = current; current = other; other = t;
        for (int k = 0; k < count; k++) {
            switch (mode[k]) {
            case kRecomputing:
                if (--left[k] == 0) mode[k] = kFromParked;  // the slot now holds V_j
                break;
            case kFromTable:
            case kFromParked:
                if (++steps[k] == n) {
                    NAME(extract_slot)(current, k, results + (size_t)k * vectors, vectors);
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
