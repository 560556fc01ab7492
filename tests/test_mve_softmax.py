"""TSPTQ_SOFTMAX_2S's Helium (MVE) path against the reference build, on QEMU's mps3-an547 (Cortex-M55), and its
Cortex-M4 (DSP extension) path on mps2-an386.

The kernels are built twice into one bare-metal firmware (tests/test_c_kernels.py's mve_firmware: the reference
build renamed ref_*, and the Cortex-M55 build with TQ_SIMD_MVE); the driver below calls tq_softmax_2s_heads and
tq_softmax_2s of both on random cases and compares every output byte (and the bytes outside the rows asked for).
test_mve_elementwise.m4_firmware links the same driver with the Cortex-M4 build (TQ_SIMD_DSP, no MVE)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from test_c_kernels import driver_prologue, mve_firmware, semihost_prologue
from test_mve_elementwise import m4_firmware

SOFTMAX_DRIVER = r"""
/* Random TSPTQ_SOFTMAX_2S cases, the MVE build against the reference build: row lengths with every tail (1..2047),
 * several heads with one table each or one shared table, scores over the whole int8 range, constant rows (-128 and
 * 127 among them), narrow and two-valued rows; uniform, two-scale and log2 codes with every option at the ends of
 * what the op's prepare accepts (mult 0..2^31 - 1, shift 0..62, zero point -128..127, bits 2..8, ratio 0..8,
 * signed_fine 0/1), exp tables from steep to flat, random ones in [0, 2^20] starting at 2^20, and (a direct call of
 * the kernel, not the op) tables the vector path refuses (small, negative, above 2^20: the scalar fallback). */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "kernels.h"
#include "qemu_fault.h"

""" + semihost_prologue("mps3-an547 (MVE softmax test)") + driver_prologue("0x9E3779B97F4A7C15ull") + r"""
void ref_softmax_2s_heads(const int8_t *, int64_t, int64_t, int32_t, int64_t, int32_t, const int32_t *, int32_t,
                          int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, uint8_t *, int32_t *);
void ref_softmax_2s(const int8_t *, int32_t, int32_t, const int32_t *, int32_t, int32_t, int32_t, int32_t, int32_t,
                    int32_t, int32_t, uint8_t *, int32_t *);

#define CAP 24000
#define MAXL 6
static int8_t X[CAP];
static uint8_t Y1[CAP + 16], Y2[CAP + 16]; /* 16 guard bytes past any case */
static int32_t LUT[256 * MAXL], SC1[2048 + 4], SC2[2048 + 4]; /* 4 guard words past the longest row */

static int32_t pick(const int32_t *edge, int n, int32_t lo, int32_t hi) {
    return ri(0, 1) ? edge[rnd() % (uint32_t)n] : ri(lo, hi);
}
static int32_t length(void) {
    static const int32_t edge[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129,
                                   196, 197, 255, 256, 257, 1023, 2047};
    return pick(edge, 27, 1, 300);
}

/* one head's table: exp(-step i) in Q20 (steep to flat), or random entries; entry 0 is 2^20 (prepare) unless odd */
static void table(int32_t *t, int odd, int32_t N) {
    int i, how = ri(0, 5);
    double step = how == 0 ? 8.0 : how == 1 ? 1e-4 : pow(10.0, -2.5 * (double)(rnd() % 1000001u) / 1e6);
    for (i = 0; i < 256; i++) {
        if (how == 5) t[i] = ri(0, 3) ? ri(0, 1 << 20) : (ri(0, 1) ? 0 : 1 << 20);
        else t[i] = (int32_t)floor(exp(-step * i) * 1048576.0 + 0.5);
    }
    t[0] = 1 << 20;
    if (odd) { /* small tables (the sum E about 2^19, where 2^50 // E crosses 2^31, the vector codes' limit, or
                * below 2^18), or one entry out of [0, 2^20] (the scalar path) */
        switch (ri(0, 3)) {
        case 0: for (i = 0; i < 256; i++) t[i] = ri(0, 300); t[0] = ri(1, 300); break;
        case 1: for (i = 0; i < 256; i++) t[i] = ri(0, (1 << 20) / N); t[0] = ri(1, (1 << 20) / N); break;
        case 2: t[ri(1, 255)] = -ri(1, 1000); break;
        default: t[ri(0, 255)] = (1 << 20) + ri(1, 1000); break;
        }
    }
}

static void scores(int8_t *x, int32_t rows, int32_t N) {
    int32_t r, i;
    for (r = 0; r < rows; r++) {
        int8_t *xr = x + (ptrdiff_t)r * N;
        int how = ri(0, 9);
        int32_t c = ri(0, 2) ? ri(-128, 127) : (ri(0, 1) ? -128 : 127), lo = ri(-128, 127), hi = ri(lo, 127);
        for (i = 0; i < N; i++) {
            switch (how) {
            case 0: xr[i] = (int8_t)c; break;                                  /* constant row */
            case 1: xr[i] = (int8_t)(ri(0, 1) ? -128 : 127); break;            /* the ends only */
            case 2: xr[i] = (int8_t)ri(lo, hi); break;                         /* a narrow range */
            case 3: xr[i] = (int8_t)(ri(0, 15) ? -128 : ri(-128, 127)); break; /* mostly -128 */
            default: xr[i] = (int8_t)ri(-128, 127);
            }
        }
    }
}

int main(void) {
    static const int32_t shifts[] = {0, 1, 2, 3, 15, 16, 30, 31, 32, 33, 34, 47, 48, 61, 62};
    static const int32_t mults[] = {0, 1, 2, 255, 65536, 1 << 30, 2147483647};
    long elems = 0;
    int t, i, bad = 0;
    for (t = 0; t < ROUNDS; t++) {
        int32_t N = length(), L = ri(1, MAXL), per_head = ri(0, 3) != 0, maxR = CAP / N / L;
        int32_t R, B, rows, kind = ri(0, 2) == 0 ? TQ_UNIFORM : ri(0, 3) ? TQ_TWO_SCALE : TQ_LOG2;
        int32_t mult, shift, zp = ri(0, 2) ? ri(-128, 127) : (ri(0, 1) ? -128 : 127), bits = ri(0, 1) ? 8 : ri(2, 8),
                m = ri(0, 8), sf = ri(0, 1), direct = ri(0, 5) == 0, odd = direct && ri(0, 1);
        int64_t r0, r1;
        if (maxR < 1) L = 1, maxR = CAP / N;
        R = ri(1, maxR < 12 ? maxR : 12);
        B = ri(1, 2);
        if (B * L * R * N > CAP) B = 1;
        rows = B * L * R;
        /* the multipliers and shifts the toolchain makes (two-scale: shift about 28..40, uniform about 45..58) or
         * anything the op accepts */
        switch (ri(0, 3)) {
        case 0: mult = ri(1 << 30, 2147483647), shift = kind == TQ_UNIFORM ? ri(44, 60) : ri(26, 42); break;
        case 1: mult = pick(mults, 7, 0, 2147483647), shift = pick(shifts, 15, 0, 62); break;
        default: mult = ri(0, 2147483647) >> ri(0, 30), shift = ri(0, 62);
        }
        for (i = 0; i < L; i++) table(LUT + 256 * i, odd, N);
        scores(X, rows, N);
        for (i = 0; i < rows * N + 16; i++) Y1[i] = Y2[i] = (uint8_t)rnd();
        for (i = 0; i < 4; i++) SC1[N + i] = SC2[N + i] = 0x5A5A5A5A;
        if (direct) { /* the kernel itself, one table */
            tq_softmax_2s(X, rows, N, LUT, kind, mult, shift, zp, bits, m, sf, Y1, SC1);
            ref_softmax_2s(X, rows, N, LUT, kind, mult, shift, zp, bits, m, sf, Y2, SC2);
        } else { /* the op's form: rows [r0, r1) of (B, L, R, N), one table per head or one */
            r0 = ri(0, 2) ? 0 : ri(0, rows - 1);
            r1 = ri(0, 2) ? rows : ri((int32_t)r0 + 1, rows);
            tq_softmax_2s_heads(X, r0, r1, N, R, per_head ? L : 1, LUT, kind, mult, shift, zp, bits, m, sf, Y1, SC1);
            ref_softmax_2s_heads(X, r0, r1, N, R, per_head ? L : 1, LUT, kind, mult, shift, zp, bits, m, sf, Y2, SC2);
        }
        elems += (long)rows * N;
        if (memcmp(Y1 + rows * N, Y2 + rows * N, 16) || SC1[N] != 0x5A5A5A5A || SC1[N + 3] != 0x5A5A5A5A) {
            say("WRITE PAST THE END case "); say_int(t); say("\n"); bad++;
        }
        if (memcmp(Y1, Y2, (size_t)(rows * N))) {
            for (i = 0; i < rows * N && Y1[i] == Y2[i]; i++) {}
            say("MISMATCH case "); say_int(t); say(" N="); say_int(N); say(" rows="); say_int(rows);
            say(" kind="); say_int(kind); say(" mult="); say_int(mult); say(" shift="); say_int(shift);
            say(" zp="); say_int(zp); say(" bits="); say_int(bits); say(" m="); say_int(m); say(" sf="); say_int(sf);
            say(" direct="); say_int(direct); say(" odd="); say_int(odd); say(" at "); say_int(i);
            say(" got "); say_int(Y1[i]); say(" want "); say_int(Y2[i]); say("\n");
            bad++;
        }
    }
    { /* directed: v at the two-scale split (v = thr - 1, thr, thr + 1): constant rows of 2^k, shift 30 - k... */
        int32_t b, mm, sf2, d, k2;
        for (b = 2; b <= 8; b++) for (mm = 0; mm <= 8; mm++) for (sf2 = 0; sf2 <= 1; sf2++) for (d = -1; d <= 1; d++)
            for (k2 = 0; k2 <= 3; k2++) {
                int64_t fm = ((int64_t)1 << (b - 1)) - 1, hi2 = sf2 ? ((int64_t)1 << (b - 2)) - 1 : fm;
                int64_t c0 = (hi2 >> mm) + 1, thr = (((hi2 + (c0 << mm)) << 16) + 1) >> 1;
                int32_t N2 = 1 << k2;
                for (i = 0; i < 256; i++) LUT[i] = 1 << 20;
                for (i = 0; i < N2; i++) X[i] = 5;
                memset(Y1, 0, (size_t)N2); memset(Y2, 0, (size_t)N2);
                tq_softmax_2s(X, 1, N2, LUT, TQ_TWO_SCALE, (int32_t)(thr + d), 30 - k2, 0, b, mm, sf2, Y1, SC1);
                ref_softmax_2s(X, 1, N2, LUT, TQ_TWO_SCALE, (int32_t)(thr + d), 30 - k2, 0, b, mm, sf2, Y2, SC2);
                if (memcmp(Y1, Y2, (size_t)N2)) { say("MISMATCH split bits="); say_int(b); say(" m="); say_int(mm);
                    say(" sf="); say_int(sf2); say(" d="); say_int(d); say(" N="); say_int(N2); say("\n"); bad++; }
            }
    }
    { /* directed: p = rshift_round(e recip, 20) at its ties (e recip = 2^19 mod 2^20), made visible: rows
       * {5, 4, 3, ..., 3} (exp values 2^20, e1, f), e1 = odd 2^a; where e1 recip ties, with p = 2^30 e1 // E rounded
       * up in (2^16, 253 2^15], mult = ceil(B 2^30 / p) for B = 2^15 (2k + 1) the first >= p: v = B and the fine code
       * k + 1 (two-scale, 8 bits, ratio 8: below the split), while p - 1 would give v <= B - 1, code k */
        int32_t tries, ties = 0, N2 = 64, kk;
        for (tries = 0; tries < 60000 && ties < 50; tries++) {
            const int32_t a = ri(9, 13), e1 = (2 * ri(0, (1 << (19 - a)) - 1) + 1) << a, f = ri(1 << 12, 1 << 20);
            const int64_t E2 = (1 << 20) + (int64_t)e1 + (int64_t)(N2 - 2) * f, rc = ((int64_t)1 << 50) / E2;
            const int64_t pt = ((int64_t)e1 * rc + (1 << 19)) >> 20;
            int64_t B, mu;
            if ((((int64_t)e1 * rc) & 0xFFFFF) != (1 << 19) || pt <= (1 << 16) || pt > 253 * (1 << 15)) continue;
            for (kk = 0; ((int64_t)(2 * kk + 1) << 15) < pt; kk++) {}
            B = (int64_t)(2 * kk + 1) << 15;
            mu = ((B << 30) + pt - 1) / pt;
            for (i = 0; i < 256; i++) LUT[i] = ri(0, 1 << 20);
            LUT[0] = 1 << 20, LUT[1] = e1, LUT[2] = f;
            X[0] = 5, X[1] = 4;
            for (i = 2; i < N2; i++) X[i] = 3;
            memset(Y1, 0, (size_t)N2); memset(Y2, 0, (size_t)N2);
            tq_softmax_2s(X, 1, N2, LUT, TQ_TWO_SCALE, (int32_t)mu, 30, 0, 8, 8, 0, Y1, SC1);
            ref_softmax_2s(X, 1, N2, LUT, TQ_TWO_SCALE, (int32_t)mu, 30, 0, 8, 8, 0, Y2, SC2);
            if (memcmp(Y1, Y2, (size_t)N2) || Y2[1] != kk + 1) { say("MISMATCH p tie e1="); say_int(e1);
                say(" f="); say_int(f); say(" got "); say_int(Y1[1]); say(" want "); say_int(Y2[1]); say("\n"); bad++; }
            ties++;
        }
        if (ties < 20) { say("TOO FEW p ties: "); say_int(ties); say("\n"); bad++; }
        say_int(ties); say(" p ties, ");
    }
    say_int(ROUNDS); say(" rounds, "); say_int(elems); say(" elements, "); say_int(bad); say(" mismatches\n");
    tq_semihost_exit(bad ? 0x20023 : 0x20026); /* QEMU exits with 1 / 0 */
}
"""


@pytest.mark.qemu
@pytest.mark.slow
def test_mve_softmax_matches_reference(tmp_path):
    """TSPTQ_SOFTMAX_2S's Helium path (the row maximum, the exp values by gathers and their sum, the uniform and
    two-scale codes in uint32 lanes) gives the reference path's bytes on QEMU's mps3-an547, for random cases over
    what the op accepts (and the kernel's scalar fallbacks)."""
    cc, qemu = shutil.which("arm-none-eabi-gcc"), shutil.which("qemu-system-arm")
    if not cc or not qemu:
        pytest.skip("needs gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")
    rounds = 3000
    exe = mve_firmware(tmp_path, rounds, driver=SOFTMAX_DRIVER)
    proc = subprocess.run([qemu, "-M", "mps3-an547", "-display", "none", "-monitor", "none", "-serial", "null",
                           "-semihosting-config", "enable=on,target=native", "-kernel", str(exe)],
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and f"{rounds} rounds, " in out and " 0 mismatches" in out, out[-3000:]


@pytest.mark.qemu
@pytest.mark.slow
def test_dsp_softmax_matches_reference(tmp_path):
    """TSPTQ_SOFTMAX_2S's Cortex-M4 path (SSUB8 / SEL row maximum, the per-row reciprocal from a single-precision
    estimate corrected exactly, the codes from 32 x 32 -> 64-bit products) gives the reference path's bytes on QEMU's
    mps2-an386, for the same random cases (and the scalar fallbacks)."""
    cc, qemu = shutil.which("arm-none-eabi-gcc"), shutil.which("qemu-system-arm")
    if not cc or not qemu:
        pytest.skip("needs gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")
    rounds = 3000
    exe = m4_firmware(tmp_path, rounds, SOFTMAX_DRIVER)
    proc = subprocess.run([qemu, "-M", "mps2-an386", "-display", "none", "-monitor", "none", "-serial", "null",
                           "-semihosting-config", "enable=on,target=native", "-kernel", str(exe)],
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and f"{rounds} rounds, " in out and " 0 mismatches" in out, out[-3000:]
