/* tsptq runtime: the blocked int8 products of vnni.h on Intel AMX tiles (internal to src/ops; compiled only with
 * -DTSPTQ_USE_AMX, see dot.h; included by vnni.h, whose tqv_gemm_run calls tqa_gemm_run first).
 *
 * A tile is 16 rows of 64 bytes; TDPBSUD / TDPBSSD multiply the (signed) bytes of a row tile by the (unsigned /
 * signed) bytes of a column tile, four at a time, into a 16 x 16 int32 accumulator tile. A pass computes 32 kernel
 * rows x 32 channels in four accumulator tiles, K going by in steps of 64 (two row tiles, two column tiles per step).
 * The 32 kernel rows are four vnni.h tiles of TQV_MR rows, filled by the op's `rows` function; the sums of each are
 * handed to the op's `emit` as vnni.h's raw sums, raw[r][n] = sum_k a_r[k] * (b[n][k] + 128) modulo 2^32, so every
 * op's rows and emit functions are the VNNI path's, unchanged, and so are the output bytes (the same integer sums,
 * added in another order). Two drivers:
 *
 *   tqa_gemm_packed  B packed as vnni.h packs it (b + 128, [groups of 4 k][32 channels][4 bytes], zero up to a whole
 *                    step): the kernel rows are the row tiles (read where they are, up to tqv_kspan(K), a multiple
 *                    of 64), the block's two halves the column tiles (stride 128), TDPBSUD: the product tile is raw.
 *                    For B stored as columns (probabilities x V), with extension columns, or small enough for one
 *                    64 KB panel (each panel decodes the kernel rows again).
 *   tqa_gemm_rows    B stored as rows, read in place as the row tiles (16 channels x 64 k at B's row stride; its last
 *                    rows from a zero-padded copy where a whole-step read would pass B's end): no packing of B at all.
 *                    The kernel rows are packed instead, as the column tiles, once per pass; TDPBSSD gives the exact
 *                    sums channel by row, which are transposed and given 128 * the row's sum to make raw.
 * Neither reads B prepacked at prepare time: where the tiles run, tqv_prepack_size asks for none (vnni.h).
 *
 * Tile state: Linux hands a process the AMX tile data only after arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
 * (a tile instruction before that faults); tq_amx_ready (amx.c) asks once per process and says whether the tiles
 * may be used. When they may not (no AMX, another OS, the request refused), tqa_gemm_run declines and the AVX-512
 * VNNI kernel runs, as it does for products of fewer than TQA_MIN_ROWS kernel rows. The tile configuration is loaded
 * at the start of each product and released at its end, so a thread holds no tile state between ops.
 */
#ifndef TSPTQ_AMX_H
#define TSPTQ_AMX_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <immintrin.h>

#define TQA_ROWS 32                      /* kernel rows per pass: two row tiles */
#define TQA_SUB (TQA_ROWS / TQV_MR)      /* vnni.h tiles per pass */
#define TQA_STEP_BYTES 2048              /* packed bytes per 64 k of a block (16 groups x 128 bytes) */
#define TQA_PANEL_BYTES 65536            /* packed B per panel (tqa_gemm_packed) */
#define TQA_PANEL_BLOCKS 32              /* at most this many blocks per panel (their column sums live on the stack) */
#define TQA_MIN_ROWS 16 /* fewer kernel rows than this: the VNNI kernel (a pass would be mostly padding) */

/* amx.c: 1 when this process may use the AMX tiles (asked for once, lazily), 0 otherwise. */
int tq_amx_ready(void);

/* Whether a product of M output rows, planes kernel rows each, runs on the tiles. */
static inline int tqa_takes(int32_t M, int planes) { return (int64_t)M * planes >= TQA_MIN_ROWS && tq_amx_ready(); }

/* the palette-1 configuration of ldtilecfg (64 bytes) */
typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16]; /* bytes per row of tile i */
    uint8_t rows[16];   /* rows of tile i */
} tqa_config;

/* tmm0-3: the accumulators (rows 0-15 | 16-31) x (channels 0-15 | 16-31); tmm4, tmm5: the two row tiles; tmm6, tmm7:
 * the two column tiles. All eight are 16 rows of 64 bytes. */
static inline void tqa_configure(void) {
    tqa_config c;
    int i;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (i = 0; i < 8; i++) {
        c.colsb[i] = 64;
        c.rows[i] = 16;
    }
    /* GCC's _tile_loadconfig tells the compiler it reads 8 bytes only: the barrier keeps the stores above */
    __asm__ volatile("" ::: "memory");
    _tile_loadconfig(&c);
}

/* raw[r][n] for the 32 kernel rows a0 + r * l0 (r < 16) and a1 + (r - 16) * l1 against the packed block bp of
 * `steps` steps. GCC's tile load and store intrinsics declare no memory access (plain volatile asm), so the barriers
 * order them after the stores that made the operands and before the loads of raw. Never inlined, as tqv_kernel. */
static __attribute__((noinline, unused)) void tqa_kernel(const int8_t *a0, ptrdiff_t l0, const int8_t *a1,
                                                        ptrdiff_t l1, const uint8_t *bp, int32_t steps,
                                                        int32_t raw[TQA_ROWS][TQV_NR]) {
    int32_t s;
    __asm__ volatile("" ::: "memory");
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (s = 0; s < steps; s++, a0 += 64, a1 += 64, bp += TQA_STEP_BYTES) {
        _tile_loadd(4, a0, l0);
        _tile_loadd(6, bp, 128);
        _tile_loadd(7, bp + 64, 128);
        _tile_dpbsud(0, 4, 6);
        _tile_dpbsud(1, 4, 7);
        _tile_loadd(5, a1, l1);
        _tile_dpbsud(2, 5, 6);
        _tile_dpbsud(3, 5, 7);
    }
    _tile_stored(0, raw[0], 4 * TQV_NR);
    _tile_stored(1, raw[0] + 16, 4 * TQV_NR);
    _tile_stored(2, raw[16], 4 * TQV_NR);
    _tile_stored(3, raw[16] + 16, 4 * TQV_NR);
    __asm__ volatile("" ::: "memory");
}

/* The 16 kernel rows of row tile h (vnni.h tiles 2h and 2h + 1) as a base and a row stride: the rows where they are
 * when all 16 are in use at one stride (a matrix read in place, or rows decoded into the tiles' buffers), else
 * gathered into the tiles' buffers (rows in use copied, tqv_kspan(K) bytes; unused ones zero). */
static inline const int8_t *tqa_row_tile(tqv_tile *t, int h, int32_t tile_rows, int32_t span, ptrdiff_t *ld) {
    const tqv_tile *t0 = &t[2 * h];
    int32_t r, all = t0->nr > 0;
    /* as addresses: the rows may lie in different objects (the matrix, the buffers) */
    const uintptr_t base = all ? (uintptr_t)t0->a[0] : 0, step = all ? (uintptr_t)t0->a[1] - base : 0;
    for (r = 0; r < 16 && all; r++) {
        const tqv_tile *tr = &t[2 * h + r / TQV_MR];
        all = r % TQV_MR % tile_rows < tr->nr && (uintptr_t)tr->a[r % TQV_MR] == base + (uintptr_t)r * step;
    }
    if (all) {
        *ld = (ptrdiff_t)step;
        return t0->a[0];
    }
    for (r = 0; r < 16; r++) {
        tqv_tile *tr = &t[2 * h + r / TQV_MR];
        int8_t *dst = tr->buf[r % TQV_MR];
        /* a row in use is the op's own buffer row or memory outside the buffers (the rows functions of vnni.h and
         * the ops), so copying one never overwrites another */
        if (r % TQV_MR % tile_rows >= tr->nr)
            memset(dst, 0, (size_t)span);
        else if (tr->a[r % TQV_MR] != dst)
            memcpy(dst, tr->a[r % TQV_MR], (size_t)span);
    }
    *ld = TQV_ROW_BYTES;
    return t0->buf[0];
}

/* ---- B packed (columns of B, extension columns) ---------------------------------------------------------------- */

/* The product with B packed as vnni.h packs it. Stack: the packed panel (64 KB), 32 decode rows (about 66 KB), the
 * raw sums (4 KB) and the column sums. */
static __attribute__((noinline, unused)) int tqa_gemm_packed(const tqv_gemm *g) {
    uint8_t bp[TQA_PANEL_BYTES] __attribute__((aligned(64)));
    int8_t buf[TQA_ROWS][TQV_ROW_BYTES] __attribute__((aligned(64)));
    int32_t raw[TQA_ROWS][TQV_NR] __attribute__((aligned(64)));
    int32_t colsum[TQA_PANEL_BLOCKS][TQV_NR];
    tqv_tile t[TQA_SUB];
    const int32_t ng = tqv_groups(g->K, g->n_ext), steps = (ng + 15) / 16, block = steps * TQA_STEP_BYTES;
    const int32_t span = 64 * steps, tile_rows = TQV_MR / g->planes, pass_rows = TQA_SUB * tile_rows;
    int32_t per_panel = TQA_PANEL_BYTES / block, n0, r0, i, j;
    if (per_panel > TQA_PANEL_BLOCKS) per_panel = TQA_PANEL_BLOCKS;
    for (j = 0; j < TQA_SUB; j++) {
        t[j].raw = raw + TQV_MR * j;
        t[j].buf = buf + TQV_MR * j;
        t[j].rqc = NULL;
        t[j].bp = NULL;
    }
    tqa_configure();
    for (n0 = 0; n0 < g->N; n0 += per_panel * TQV_NR) {
        const int32_t left = (g->N - n0 + TQV_NR - 1) / TQV_NR, nb = left < per_panel ? left : per_panel;
        for (i = 0; i < nb; i++) {
            const int32_t c0 = n0 + i * TQV_NR;
            uint8_t *bi = bp + (size_t)i * block;
            tqv_pack_block(g, c0, g->N - c0 < TQV_NR ? g->N - c0 : TQV_NR, bi, colsum[i]);
            memset(bi + (size_t)ng * 128, 0, (size_t)(block - ng * 128)); /* to a whole step */
        }
        for (r0 = 0; r0 < g->M; r0 += pass_rows) {
            const int8_t *a0, *a1;
            ptrdiff_t l0, l1;
            for (j = 0; j < TQA_SUB; j++) {
                t[j].r0 = r0 + j * tile_rows;
                t[j].nr = g->M - t[j].r0 < tile_rows ? g->M - t[j].r0 : tile_rows;
                if (t[j].nr > 0)
                    g->rows(g, &t[j]);
                else
                    t[j].nr = 0;
            }
            a0 = tqa_row_tile(t, 0, tile_rows, span, &l0);
            a1 = tqa_row_tile(t, 1, tile_rows, span, &l1);
            for (i = 0; i < nb; i++) {
                const int32_t c0 = n0 + i * TQV_NR;
                tqa_kernel(a0, l0, a1, l1, bp + (size_t)i * block, steps, raw);
                for (j = 0; j < TQA_SUB && t[j].nr > 0; j++)
                    g->emit(g, &t[j], c0, g->N - c0 < TQV_NR ? g->N - c0 : TQV_NR, colsum[i]);
            }
        }
    }
    _tile_release();
    return 1;
}

/* ---- B in place (rows of B) ------------------------------------------------------------------------------------- */

/* The 32 kernel rows as the column tiles of TDPBSSD: [groups of 4 k][32 rows][4 bytes], the k of steps * 64; rows
 * 0-15 are one column tile (bytes 0-63 of each 128), rows 16-31 the other. This packs 16 of them (ap: the first
 * byte of theirs), zero past n and for a NULL row; only the n bytes of a row are read. */
static inline void tqa_pack_half(const int8_t *const row[16], int32_t n, int32_t steps, uint8_t *ap) {
    int32_t s, c, t;
    for (s = 0; s < steps; s++) {
        const int32_t k0 = 64 * s, left = n - k0;
        const __mmask64 valid = left >= 64 ? ~(__mmask64)0 : left > 0 ? (((__mmask64)1 << left) - 1) : 0;
        __m512i r[16];
        TQV_UNROLL
        for (c = 0; c < 16; c++)
            r[c] = row[c] ? _mm512_maskz_loadu_epi8(valid, row[c] + k0) : _mm512_setzero_si512();
        tqv_transpose16(r); /* r[t]: dword t (k0 + 4t .. k0 + 4t + 3) of the 16 rows */
        TQV_UNROLL
        for (t = 0; t < 16; t++) _mm512_storeu_si512((void *)(ap + (size_t)(16 * s + t) * 128), r[t]);
    }
}

/* Start the four accumulator tiles for channels (16 rows of B at w0, 16 at w1, row stride ldw) against the 32 packed
 * kernel rows ap: tile 2i + j gets [c][r] = sum_k b[16i + c][k] * a_{16j + r}[k], exact (TDPBSSD, signed by signed).
 * The products run on while the caller goes on (the requantization of the previous block); tqa_store_b waits for
 * them. */
static __attribute__((noinline, unused)) void tqa_start_b(const int8_t *w0, const int8_t *w1, ptrdiff_t ldw,
                                                         const uint8_t *ap, int32_t steps) {
    int32_t s;
    __asm__ volatile("" ::: "memory");
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (s = 0; s < steps; s++, w0 += 64, w1 += 64, ap += TQA_STEP_BYTES) {
        _tile_loadd(6, ap, 128);
        _tile_loadd(7, ap + 64, 128);
        _tile_loadd(4, w0, ldw);
        _tile_dpbssd(0, 4, 6);
        _tile_dpbssd(1, 4, 7);
        _tile_loadd(5, w1, ldw);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
    }
}

static inline void tqa_store_b(int32_t ct[4][16][16]) {
    _tile_stored(0, ct[0], 64);
    _tile_stored(1, ct[1], 64);
    _tile_stored(2, ct[2], 64);
    _tile_stored(3, ct[3], 64);
    __asm__ volatile("" ::: "memory");
}

/* raw[r][n] (the raw sums of vnni.h, which count b + 128) from the exact sums: the tiles transposed, plus 128 times
 * the kernel row's sum (modulo 2^32). */
static inline void tqa_raw_from_tiles(int32_t ct[4][16][16], const int32_t rowsum[TQA_ROWS],
                                      int32_t raw[TQA_ROWS][TQV_NR]) {
    int32_t i, j, r;
    for (i = 0; i < 2; i++)
        for (j = 0; j < 2; j++) {
            __m512i v[16];
            TQV_UNROLL
            for (r = 0; r < 16; r++) v[r] = _mm512_loadu_si512((const void *)ct[2 * i + j][r]);
            tqv_transpose16(v);
            TQV_UNROLL
            for (r = 0; r < 16; r++)
                _mm512_storeu_si512((void *)(raw[16 * j + r] + 16 * i),
                                    _mm512_add_epi32(v[r], _mm512_set1_epi32((int32_t)((uint32_t)rowsum[16 * j + r]
                                                                                        << 7))));
        }
}

#define TQA_MAX_N 4096        /* tqa_gemm_rows: the column sums of B on the stack */

/* tqa_start_b for block i of B: its rows in place, or from the tail copy (row stride span) from block first_tail on */
static inline void tqa_start_block(const tqv_gemm *g, int32_t i, int32_t first_tail, const int8_t *tail, int32_t span,
                                   const uint8_t *ap, int32_t steps) {
    const int8_t *w0 = i < first_tail ? g->b + (int64_t)TQV_NR * i * g->ldb
                                      : tail + (ptrdiff_t)(TQV_NR * (i - first_tail)) * span;
    const ptrdiff_t ldw = i < first_tail ? (ptrdiff_t)g->ldb : span;
    tqa_start_b(w0, w0 + 16 * ldw, ldw, ap, steps);
}
#define TQA_TAIL_BYTES 65536  /* tqa_gemm_rows: B's last rows, copied where a whole-step read would pass its end */

/* The product with B's rows read in place as the row tiles (16 channels x 64 k, stride ldb): no packing of B; the
 * kernel rows are packed instead, once per pass of 32. A tile row reads 64 * steps bytes of a row of B: past K it
 * meets the next row (or the tail copy's zeros) against the kernel rows' zeros. The rows of B from the first block
 * whose read would pass B's end (or whose channels pass N) are copied, zero-padded, into a tail buffer, once. 0 when
 * B is too wide or that tail too long for the stack buffers. Stack: the packed kernel rows (64 KB), the tail
 * (64 KB), the column sums (16 KB), two vnni.h tiles' decode rows (about 33 KB) and the sums (8 KB). */
static __attribute__((noinline, unused)) int tqa_gemm_rows(const tqv_gemm *g) {
    uint8_t ap[TQV_MAX_K * TQA_ROWS] __attribute__((aligned(64)));
    int8_t tail[TQA_TAIL_BYTES] __attribute__((aligned(64)));
    int8_t buf[2 * TQV_MR][TQV_ROW_BYTES] __attribute__((aligned(64)));
    int32_t colsum[TQA_MAX_N + TQV_NR], ct[4][16][16] __attribute__((aligned(64)));
    int32_t raw[TQA_ROWS][TQV_NR] __attribute__((aligned(64))), rowsum[TQA_ROWS];
    const int8_t *row[TQA_ROWS];
    tqv_tile t[TQA_SUB];
    const int32_t steps = (g->K + 63) / 64, span = 64 * steps, tile_rows = TQV_MR / g->planes;
    const int32_t nblocks = (g->N + TQV_NR - 1) / TQV_NR, pass_rows = TQA_SUB * tile_rows;
    const int64_t ldb = g->ldb, end = (int64_t)(g->N - 1) * ldb + g->K; /* B's bytes from g->b */
    int32_t first_tail = 0, r0, i, j, r, n, h;
    if (g->N > TQA_MAX_N) return 0;
    /* the first block read from the tail copy: a block is read in place when its 32 rows exist and the last one's
     * read ends within B */
    while (first_tail < nblocks && TQV_NR * (first_tail + 1) <= g->N &&
           (int64_t)(TQV_NR * first_tail + TQV_NR - 1) * ldb + span <= end)
        first_tail++;
    if ((int64_t)(nblocks - first_tail) * TQV_NR * span > TQA_TAIL_BYTES) return 0;
    for (n = TQV_NR * first_tail, i = 0; n < TQV_NR * nblocks; n++, i++) {
        int8_t *dst = tail + (ptrdiff_t)i * span;
        memset(dst, 0, (size_t)span);
        if (n < g->N) memcpy(dst, g->b + n * ldb, (size_t)g->K);
    }
    /* column sums of B over its K values: vpdpbusd of ones (unsigned) by b (signed) */
    for (n = 0; n < g->N; n++) {
        const int8_t *bn = g->b + n * ldb;
        __m512i sum = _mm512_setzero_si512();
        int32_t k;
        for (k = 0; k < g->K; k += 64) {
            const __mmask64 m = g->K - k >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (g->K - k)) - 1);
            sum = _mm512_dpbusd_epi32(sum, _mm512_set1_epi8(1), _mm512_maskz_loadu_epi8(m, bn + k));
        }
        colsum[n] = _mm512_reduce_add_epi32(sum);
    }
    for (; n < TQV_NR * nblocks; n++) colsum[n] = 0;
    for (j = 0; j < TQA_SUB; j++) {
        t[j].raw = raw + TQV_MR * j;
        t[j].buf = buf + TQV_MR * (j % 2);
        t[j].rqc = NULL;
        t[j].bp = NULL;
    }
    tqa_configure();
    for (r0 = 0; r0 < g->M; r0 += pass_rows) {
        /* the pass's four vnni.h tiles, two at a time through the decode rows, packed while those hold them */
        for (h = 0; h < 2; h++) {
            for (j = 2 * h; j < 2 * h + 2; j++) {
                t[j].r0 = r0 + j * tile_rows;
                t[j].nr = g->M - t[j].r0 < tile_rows ? g->M - t[j].r0 : tile_rows;
                if (t[j].nr < 0) t[j].nr = 0;
                if (t[j].nr > 0) g->rows(g, &t[j]);
                for (r = 0; r < TQV_MR; r++) {
                    const int used = r % tile_rows < t[j].nr;
                    row[TQV_MR * j + r] = used ? t[j].a[r] : NULL;
                    rowsum[TQV_MR * j + r] = used ? t[j].rowsum[r] : 0;
                }
            }
            tqa_pack_half(row + 16 * h, g->K, steps, ap + 64 * h);
        }
        /* block i + 1's products are started before block i's sums are requantized: they overlap */
        tqa_start_block(g, 0, first_tail, tail, span, ap, steps);
        for (i = 0; i < nblocks; i++) {
            const int32_t c0 = TQV_NR * i;
            tqa_store_b(ct);
            if (i + 1 < nblocks) tqa_start_block(g, i + 1, first_tail, tail, span, ap, steps);
            tqa_raw_from_tiles(ct, rowsum, raw);
            for (j = 0; j < TQA_SUB && t[j].nr > 0; j++)
                g->emit(g, &t[j], c0, g->N - c0 < TQV_NR ? g->N - c0 : TQV_NR, colsum + c0);
        }
    }
    _tile_release();
    return 1;
}

/* tqv_gemm_run on AMX tiles; 0 (nothing done) when the tiles may not be used, the product is too short for them, or
 * the stack buffers too small. Each driver is a function of its own (not inlined): their frames and the VNNI
 * driver's are never on the stack together. */
static inline int tqa_gemm_run(const tqv_gemm *g) {
    const int64_t block = (int64_t)(tqv_groups(g->K, g->n_ext) + 15) / 16 * TQA_STEP_BYTES;
    const int64_t blocks = (g->N + TQV_NR - 1) / TQV_NR;
    if (!tqa_takes(g->M, g->planes)) return 0;
    /* B in place where packing it would take more than one panel (each panel decodes the kernel rows again) */
    if (!g->b_cols && !g->n_ext && blocks * block > TQA_PANEL_BYTES && tqa_gemm_rows(g)) return 1;
    return tqa_gemm_packed(g);
}

#endif
