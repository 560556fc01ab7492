/* The NPU variant's CPU steps that the C runtime has no kernel for, timed on the Cortex-M55 of QEMU's mps3-an547
 * (issue 18's whole-model estimate; benchmarks/npu_cpu.py writes the steps' file, runs this under `-icount shift=0`
 * in that file's folder and reads one line per step through semihosting).
 *
 * Each step is the function of runtime_c/tflm/variant_kernels.h that runtime_c/tflm/tflm_ops.c runs for the op
 * (npu_cpu.py checks every step's output bytes against the Python integer model); built for the Cortex-M55 these
 * are their Helium (MVE) forms, byte-identical to the scalar ones (tests/test_mve_variant_kernels.py,
 * tests/test_ln_stats_kernels.py):
 *   1 LN_TAIL       tq_layernorm_2s_i16_tail: TSPTQ_LAYERNORM_2S_I16 after tq_layernorm_2s, (y_c - out_zp) << k_c
 *   2 ADD_SAT       tq_add_2s_i16_code: TSPTQ_ADD_2S_I16 before tq_add, the int16 branch saturated into its int8 code
 *   3 GELU16        tq_lookup_i16: TSPTQ_GELU_2S with an int16 table (the whole op)
 *   4 PLANE         tq_plane_2s: TSPTQ_PLANE_2S (the whole op)
 *   5 PV_SUM        tq_pv_sum_2s: TSPTQ_PV_SUM_2S (the whole op)
 *   6 TOKEN_MEAN16  tq_token_mean_i16: TSPTQ_TOKEN_MEAN_I16 (the whole op)
 *   7 LN16          TSPTQ_LAYERNORM_2S_I16 with an int16 x (the whole op, as tflm_ops.c's ln_eval runs it: each row's
 *                   tq_layernorm_2s_x16 into a row of codes, then tq_layernorm_2s_i16_tail). tq_layernorm_2s_x16 is
 *                   the C runtime's (runtime_c/src/ops/layernorm_2s.c, built into this program: npu_cpu.py's
 *                   STEPS_SOURCES). Integers rows, D, eps (low, high words), out_zp, out_shift; arrays x (int16),
 *                   gamma_mul (int32, D) then beta_bias (int64, D) in one, out_ch_shift (int8, D). Its row of codes
 *                   (D bytes) lies in the arena past the output.
 *   8 LN_NEG_MEAN   tq_ln_neg_mean_i16: TSPTQ_LN_NEG_MEAN (the whole op). Integers rows, D; array x (int16).
 *   9 LN_RSTD       tq_ln_rstd_i16: TSPTQ_LN_RSTD (the whole op). Integers rows, D, eps (low, high words), c; array x
 *                   (int16).
 *
 * The steps' file (STEPS_FILE, little-endian int32 words): the number of steps, then per step STEP_ARGS words (the
 * kind, then its integers), STEP_DATA byte lengths and the data arrays themselves, each padded to 4 bytes. Output:
 * "empty 0 ticks T crc 0" (what the timing itself costs), then per step "step K ticks T crc C": SysTick ticks at
 * 32 MHz (31.25 instructions each under -icount shift=0) and the CRC-32 of its output. A step whose header or arrays
 * run past the file's end, of an unknown kind, or whose output (written into the arena) exceeds TQ_ARENA_CAPACITY
 * stops the run with "npu_cpu_steps: step K: WHY" as the last line (QEMU exits with 1; npu_cpu.py reports it). */
#include <stddef.h>
#include <stdint.h>

#include "cortex_m.h"
#include "qemu_fault.h" /* tq_semihost: the steps' file, the lines, the exit */
#include "kernels.h"          /* tq_layernorm_2s_x16 (runtime_c/src: on the target's include path) */
#include "variant_kernels.h" /* runtime_c/tflm: npu_cpu.py adds it to the include path */

#define STEPS_FILE "npu-cpu-steps.bin"
#define STEP_ARGS 12
#define STEP_DATA 3

const char tq_board_name[] = "mps3-an547 (npu_cpu_steps)"; /* qemu_fault.c's fault messages */
void UART0RX_Handler(void);
void UART0RX_Handler(void) {} /* startup.c's vector table; no UART here */


/* The steps' file from the host's working folder into the upload buffer; its length in bytes (0: none). */
static uint32_t load_steps(void) {
    static const char name[] = STEPS_FILE;
    uint32_t open_args[3] = {(uint32_t)(uintptr_t)name, 1u /* "rb" */, sizeof(name) - 1u}, fd_args[1], read_args[3];
    int fd = tq_semihost(0x01, open_args), len; /* SYS_OPEN */
    if (fd < 0) return 0;
    fd_args[0] = (uint32_t)fd;
    len = tq_semihost(0x0C, fd_args); /* SYS_FLEN */
    if (len <= 0 || (uint32_t)len > TQ_MODEL_CAPACITY) return 0;
    read_args[0] = (uint32_t)fd;
    read_args[1] = (uint32_t)(uintptr_t)tq_cm_model_buf;
    read_args[2] = (uint32_t)len;
    if (tq_semihost(0x06, read_args) != 0) return 0; /* SYS_READ: the bytes not read */
    tq_semihost(0x02, fd_args);                      /* SYS_CLOSE */
    return (uint32_t)len;
}

/* ---- the steps (variant_kernels.h's functions) ------------------------------------------------------------------ */

/* A step's output size in bytes from its kind and integers, before it runs, into *bytes (a negative size is
 * UINT64_MAX, which no arena holds; each factor is below 2^31, so no product wraps); 0: an unknown kind. */
static int step_output_bytes(const int32_t *a, uint64_t *bytes) {
    uint64_t n;
    switch (a[0]) {
    case 1: /* rows * D int16 */
        n = a[1] < 0 || a[2] < 0 ? UINT64_MAX : (uint64_t)a[1] * (uint64_t)a[2] * 2u;
        break;
    case 2: /* rows * C int8 */
        n = a[1] < 0 || a[2] < 0 ? UINT64_MAX : (uint64_t)a[1] * (uint64_t)a[2];
        break;
    case 3: /* n int16 */
        n = a[1] < 0 ? UINT64_MAX : (uint64_t)a[1] * 2u;
        break;
    case 4: /* n int8 */
        n = a[1] < 0 ? UINT64_MAX : (uint64_t)a[1];
        break;
    case 5: /* rows * M int8 */
        n = a[1] < 0 || a[3] < 0 ? UINT64_MAX : (uint64_t)a[1] * (uint64_t)a[3];
        break;
    case 6: /* B * D int16 */
        n = a[1] < 0 || a[3] < 0 ? UINT64_MAX : (uint64_t)a[1] * (uint64_t)a[3] * 2u;
        break;
    case 7: /* rows * D int16 (and, past it, the row of codes: step_scratch_bytes) */
        n = a[1] < 0 || a[2] < 1 ? UINT64_MAX : (uint64_t)a[1] * (uint64_t)a[2] * 2u;
        break;
    case 8: /* rows int16 (one per row of D >= 1) */
    case 9:
        n = a[1] < 0 || a[2] < 1 ? UINT64_MAX : (uint64_t)a[1] * 2u;
        break;
    default:
        return 0;
    }
    *bytes = n;
    return 1;
}

/* What a step needs of the arena past its output: LN16's row of codes (D bytes). */
static uint64_t step_scratch_bytes(const int32_t *a) { return a[0] == 7 && a[2] > 0 ? (uint64_t)a[2] : 0u; }

/* TSPTQ_LAYERNORM_2S_I16 on an int16 x, row by row as tflm_ops.c's ln_eval: a[1] rows of D = a[2], eps a[3] (low
 * word), a[4] (high), out_zp a[5], out_shift a[6]; d[1]: gamma_mul (D int32) then beta_bias (D int64). */
static void ln16(const int32_t *a, const void *const *d, int16_t *out) {
    const int32_t rows = a[1], D = a[2];
    const int64_t eps = (int64_t)(((uint64_t)(uint32_t)a[4] << 32) | (uint32_t)a[3]);
    const int16_t *x = (const int16_t *)d[0];
    const int32_t *g = (const int32_t *)d[1];
    const int64_t *bb = (const int64_t *)(const void *)(g + D);
    int8_t *row = (int8_t *)(out + (ptrdiff_t)rows * D);
    int32_t r;
    for (r = 0; r < rows; r++) {
        tq_layernorm_2s_x16(x + (ptrdiff_t)r * D, 1, D, g, bb, eps, a[5], a[6], row);
        tq_layernorm_2s_i16_tail(row, 1, D, a[5], (const int8_t *)d[2], out + (ptrdiff_t)r * D);
    }
}

/* One step on its data, writing to out (step_output_bytes(a) bytes, checked against the arena by the caller). */
static void run_step(const int32_t *a, const void *const *d, void *out) {
    switch (a[0]) {
    case 1:
        tq_layernorm_2s_i16_tail((const int8_t *)d[0], a[1], a[2], a[3], (const int8_t *)d[1], (int16_t *)out);
        break;
    case 2:
        tq_add_2s_i16_code((const int16_t *)d[0], (int64_t)a[1] * a[2], a[3], (int8_t *)out);
        break;
    case 3:
        tq_lookup_i16((const uint8_t *)d[0], a[1], a[2], (const int16_t *)d[1], (int16_t *)out);
        break;
    case 4:
        tq_plane_2s((const uint8_t *)d[0], a[1], a[2], a[3], a[4], (int8_t *)out);
        break;
    case 5:
        tq_pv_sum_2s((const int32_t *)d[0], (const int32_t *)d[1], (const uint8_t *)d[2], a[1], a[2], a[3], a[4], a[5],
                     a[6], a[7], a[8], a[9], a[10], (int8_t *)out);
        break;
    case 6:
        tq_token_mean_i16((const int16_t *)d[0], a[1], a[2], a[3], a[4], (const int8_t *)d[1], (int16_t *)out);
        break;
    case 7:
        ln16(a, d, (int16_t *)out);
        break;
    case 8:
        tq_ln_neg_mean_i16((const int16_t *)d[0], a[1], a[2], (int16_t *)out);
        break;
    case 9:
        tq_ln_rstd_i16((const int16_t *)d[0], a[1], a[2], (int64_t)(((uint64_t)(uint32_t)a[4] << 32) | (uint32_t)a[3]),
                       a[5], (int16_t *)out);
        break;
    default:
        break;
    }
}

/* ---- reporting (not timed) -------------------------------------------------------------------------------------- */

static uint32_t crc32(const uint8_t *p, size_t n) { /* zlib's CRC-32 */
    uint32_t c = 0xFFFFFFFFu;
    size_t i;
    int b;
    for (i = 0; i < n; i++)
        for (c ^= p[i], b = 0; b < 8; b++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    return ~c;
}

static char *put_text(char *p, const char *s) {
    while (*s) *p++ = *s++;
    return p;
}

static char *put_uint(char *p, uint64_t v) {
    char digits[24];
    int n = 0;
    do digits[n++] = (char)('0' + v % 10u);
    while ((v /= 10u) != 0u);
    while (n) *p++ = digits[--n];
    return p;
}

/* "WHAT K ticks T crc C" */
static void report(const char *what, int32_t k, uint64_t ticks, uint32_t crc) {
    char line[96], *p = line;
    p = put_text(p, what);
    p = put_uint(p, (uint64_t)k);
    p = put_text(p, " ticks ");
    p = put_uint(p, ticks);
    p = put_text(p, " crc ");
    p = put_uint(p, crc);
    *p++ = '\n';
    *p = 0;
    tq_semihost_write0(line);
}

/* "npu_cpu_steps: step K: WHY" as the last line, then QEMU exits with 1 (npu_cpu.py reports the line). */
static void fail(int32_t k, const char *why) {
    char line[160], *p = line;
    p = put_text(p, "npu_cpu_steps: step ");
    p = put_uint(p, (uint64_t)k);
    p = put_text(p, ": ");
    p = put_text(p, why);
    *p++ = '\n';
    *p = 0;
    tq_semihost_write0(line);
    tq_semihost_exit(0x20023); /* ADP_Stopped_RunTimeErrorUnknown: QEMU exits with 1 */
}

int main(void) {
    const uint32_t len = load_steps();
    const int32_t *w = (const int32_t *)(const void *)tq_cm_model_buf;
    uint32_t at = 1; /* in words */
    int32_t k, n_steps = len >= 4 ? w[0] : 0;
    uint64_t t0, t1;
    if (len < 4) {
        tq_semihost_write0("npu_cpu_steps: cannot read " STEPS_FILE " in QEMU's working folder\n");
        tq_semihost_exit(0x20023); /* ADP_Stopped_RunTimeErrorUnknown: QEMU exits with 1 */
    }
    tq_cm_systick_start();
    t0 = tq_cm_systick_ticks();
    t1 = tq_cm_systick_ticks();
    report("empty ", 0, t1 - t0, 0);
    for (k = 0; k < n_steps; k++) {
        const int32_t *args = w + at;
        const void *data[STEP_DATA];
        uint64_t n;
        int i;
        /* at <= len / 4 <= TQ_MODEL_CAPACITY / 4 here, and each array adds at most 2^29 words: no wrap in uint32 */
        if (len / 4u - at < STEP_ARGS + STEP_DATA) fail(k, STEPS_FILE " ends inside the step's header");
        at += STEP_ARGS + STEP_DATA;
        for (i = 0; i < STEP_DATA; i++) {
            if (args[STEP_ARGS + i] < 0) fail(k, "a negative array length");
            data[i] = w + at;
            at += ((uint32_t)args[STEP_ARGS + i] + 3u) / 4u;
            if (at > len / 4u) fail(k, STEPS_FILE " ends inside the step's arrays");
        }
        if (!step_output_bytes(args, &n)) fail(k, "an unknown step kind");
        if (n > (uint64_t)TQ_ARENA_CAPACITY || step_scratch_bytes(args) > (uint64_t)TQ_ARENA_CAPACITY - n)
            fail(k, "its output does not fit the arena (TQ_ARENA_CAPACITY)");
        t0 = tq_cm_systick_ticks();
        run_step(args, data, tq_cm_arena);
        t1 = tq_cm_systick_ticks();
        report("step ", k, t1 - t0, crc32(tq_cm_arena, (size_t)n));
    }
    tq_semihost_exit(0x20026); /* ADP_Stopped_ApplicationExit: QEMU exits with 0 */
}
