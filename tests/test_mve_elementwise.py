"""The Arm M-profile paths of tq_add (ADD, TSPTQ_ADD_2S) and tq_layernorm_2s (TSPTQ_LAYERNORM_2S) against the
reference build of the same sources: the Helium (MVE) build on QEMU's mps3-an547 (Cortex-M55) and the DSP build on
mps2-an386 (Cortex-M4), each linked with the renamed reference build into one bare-metal firmware
(test_c_kernels.mve_firmware and its mps2-an386 form here)."""
import shutil
import subprocess
from pathlib import Path

import pytest

from test_c_kernels import (_reference_and_variant_objects, c_build, driver_prologue, kernel_sources,
                            mve_firmware, semihost_prologue)

ELEMENTWISE_DRIVER = r"""
/* tq_add and tq_layernorm_2s of the build under test against ref_add, ref_layernorm_2s (the reference build), and
 * dot.h's tq_div32_q against the 64-bit division. tq_add: random cases with every tail (C around the lane counts),
 * one and C parameter sets, zero points and multipliers / shifts at the ends of what the ops' prepare accepts (and
 * past the fast paths' range, which must fall back to the scalar loop), inputs at -128 / 127. Bytes past the output
 * must stay as they were. Reports through semihosting; QEMU exits with 0 when every byte agrees. */
#include <stdint.h>
#include <string.h>
#include "kernels.h"
#include "fixedpoint.h"
#include "ops/dot.h"
#include "qemu_fault.h"

""" + semihost_prologue("elementwise kernel test") + r"""
void ref_add(const int8_t *, const int8_t *, int32_t, int32_t, int32_t, int32_t, const int32_t *, int32_t, int32_t,
             int8_t *);
void ref_layernorm_2s(const int8_t *, int32_t, int32_t, int32_t, const int8_t *, const int32_t *, const int64_t *,
                      int64_t, int32_t, int32_t, int8_t *);
""" + driver_prologue("0x853C49E6748FEA9Bull") + r"""
#define MAXE (12 * 300)
#define MAXD 4096 /* LN_MAX_D */
static int8_t A[2 * MAXD], B[MAXE], Y1[2 * MAXD + 32], Y2[2 * MAXD + 32], INS[MAXD];
static int32_t P[6 * 300], G[MAXD];
static int64_t BB[MAXD];

static int32_t size(void) { /* around the lane counts (4, 8, 16) and the model's widths */
    static const int32_t edge[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 192, 255, 300};
    return ri(0, 1) ? edge[rnd() % 20u] : ri(1, 300);
}
static int32_t pick_zp(void) { return ri(0, 2) ? ri(-128, 127) : (ri(0, 1) ? -128 : 127); }
static int8_t pick_q(int mode) {
    switch (mode) {
    case 0: return (int8_t)rnd();
    case 1: return (int8_t)(ri(0, 1) ? -128 : 127);
    default: return (int8_t)(ri(0, 3) ? (int32_t)rnd() : (ri(0, 1) ? -128 : 127));
    }
}
static int32_t pick_mult(void) {
    switch (rnd() % 5u) {
    case 0: return ri(0, 3) ? (int32_t)(1u << ri(0, 30)) : 0;
    case 1: return ri(0, 1) ? INT32_MAX : INT32_MAX - ri(0, 1000);
    case 2: return ri(0, 1 << 20);
    default: return ri(1 << 30, INT32_MAX);
    }
}
/* k: 0, 1 the inputs (prepare: -31..0), 2 the output (-31..31; left shifts take the scalar loop) */
static int32_t pick_shift(int k) {
    switch (rnd() % 4u) {
    case 0: return ri(0, 1) ? -31 : 0;
    case 1: return k == 2 && ri(0, 1) ? ri(1, 31) : ri(-31, 0);
    default: return ri(-12, 0);
    }
}

static int64_t r64(void) { return (int64_t)(((uint64_t)rnd() << 43) ^ ((uint64_t)rnd() << 21) ^ rnd()); }

/* LAYERNORM_2S: rows of every spread (constant, a few codes apart: a small sigma and many extra bits e; full range),
 * D around the lane counts and up to LN_MAX_D, the parameters over prepare's ranges (in_shift 0..7, |beta| <= 2^62,
 * 0 <= eps <= 2^62, out_shift 0..62) */
static int check_layernorm(int t) {
    const int32_t D = ri(0, 30) ? size() : ri(1, MAXD), rows = D > 300 ? ri(1, 2) : ri(1, 6), n = rows * D;
    const int32_t in_zp = pick_zp(), out_zp = pick_zp(), shifts = ri(0, 2), kind = ri(0, 4);
    static const int32_t edge_shift[] = {0, 1, 2, 31, 32, 33, 61, 62}; /* the Helium forms' ends (n 2..31, 32..61) */
    const int32_t pick = ri(0, 3), out_shift = pick == 0 ? ri(20, 40) : pick == 1 ? ri(1, 6) /* ties */
                                                                  : pick == 2 ? ri(0, 62) : edge_shift[rnd() % 8u];
    const int64_t eps = ri(0, 1) ? ri(0, 1000) : (ri(0, 1) ? r64() & (((int64_t)1 << 62) - 1) : (int64_t)1 << 62);
    int32_t i, base = ri(-128, 127), width = ri(1, 4), big_beta = ri(0, 3) == 0;
    for (i = 0; i < D; i++) {
        INS[i] = (int8_t)(shifts == 0 ? 0 : (shifts == 1 ? ri(0, 7) : (ri(0, 5) ? 0 : 7)));
        G[i] = ri(0, 9) ? ri(-(1 << 20), 1 << 20) : (ri(0, 1) ? (int32_t)rnd() : (ri(0, 1) ? INT32_MIN : INT32_MAX));
        BB[i] = ri(0, 9) ? r64() >> ri(20, 40) : !big_beta ? (ri(0, 3) ? r64() >> 3 /* |beta| <= 2^61: the one-sum
                                                                                     * rounding, and its ends */
                                                                     : (ri(0, 1) ? 1 : -1) * ((int64_t)1 << 61))
                : (ri(0, 1) ? r64() >> 1 : (ri(0, 1) ? 1 : -1) * ((int64_t)1 << 62));
        if (ri(0, 4) == 0) { /* gamma 0 and beta m 2^(out_shift - 1): the output is beta's rounding, a tie for odd m */
            const int32_t mlim = out_shift > 54 ? 1 << (63 - out_shift) : 300;
            G[i] = 0;
            BB[i] = out_shift ? ri(-mlim, mlim) * ((int64_t)1 << (out_shift - 1)) : ri(-300, 300);
        }
    }
    for (i = 0; i < n; i++) {
        switch (kind) {
        case 0: A[i] = (int8_t)base; break; /* constant rows */
        case 1: A[i] = (int8_t)(base + ri(0, width) > 127 ? 127 : base + ri(0, width)); break;
        case 2: A[i] = (int8_t)(ri(0, 1) ? -128 : 127); break;
        default: A[i] = (int8_t)rnd();
        }
    }
    memset(Y1, 0x5A, sizeof Y1);
    memset(Y2, 0x5A, sizeof Y2);
    tq_layernorm_2s(A, rows, D, in_zp, INS, G, BB, eps, out_zp, out_shift, Y1);
    ref_layernorm_2s(A, rows, D, in_zp, INS, G, BB, eps, out_zp, out_shift, Y2);
    if (memcmp(Y1, Y2, sizeof Y1)) {
        say("MISMATCH layernorm case "); say_int(t); say(" rows "); say_int(rows); say(" D "); say_int(D);
        say(" kind "); say_int(kind); say("\n");
        return 1;
    }
    return 0;
}

/* dot.h's tq_div32_q (and, with Helium, tq_div32_q2_mve, four dividends a divisor) against the 64-bit division:
 * divisors near 2^31, 2^32 and anywhere between, dividends q dn + r with the remainder at its ends (where the
 * corrections happen) and anywhere, every high word below dn */
static int check_div32(void) {
    int i, j, bad = 0;
    for (i = 0; i < 200000; i++) {
        const uint32_t dn = ri(0, 2) == 0 ? (ri(0, 1) ? 0x80000000u + rnd() % 64u : 0xFFFFFFFFu - rnd() % 64u)
                                          : 0x80000000u | rnd() | (rnd() << 21);
        const tq_div32 d = tq_div32_init(dn);
        uint32_t qs[4], u1[4], u0[4];
        for (j = 0; j < 4; j++) {
            const uint32_t q = ri(0, 3) == 0 ? 0xFFFFFFFFu - rnd() % 4u
                                             : (ri(0, 1) ? rnd() | (rnd() << 21) : rnd() % 4096u);
            const uint32_t r = ri(0, 1) ? (ri(0, 1) ? rnd() % 4u : dn - 1u - rnd() % 4u)
                                        : (rnd() | (rnd() << 21)) % dn;
            const uint64_t u = (uint64_t)q * dn + r;
            bad += tq_div32_q(u, &d) != q;
            qs[j] = q, u1[j] = (uint32_t)(u >> 32), u0[j] = (uint32_t)u;
        }
#if defined(TQ_SIMD_MVE)
        {
            uint32_t got[4];
            vst1q_u32(got, tq_div32_q2_mve(vld1q_u32(u1), vld1q_u32(u0), vdupq_n_u32(d.v), dn));
            for (j = 0; j < 4; j++) bad += got[j] != qs[j];
        }
#else
        (void)qs, (void)u1, (void)u0;
#endif
    }
    if (bad) { say("MISMATCH div32: "); say_int(bad); say("\n"); }
    return bad;
}

/* LAYERNORM_2S's quotients one by one: most outputs saturate or hide a quotient off by one (nrm g / 2^out_shift is
 * coarse), so one row's nrm_c are found first through the reference (gamma 1, out_shift 0: the output is
 * sat8(nrm_c + beta_c), a binary search over beta_c), then both builds run with gamma 2^k, out_shift k and beta_c =
 * -2^k nrm_c plus a little (a few multiples of 2^(k - 1), ties, give or take 1): every output is in range and shows
 * its quotient exactly, and the rounding (k 0, 1: the scalar loops; 2..29: Helium's for rows from 4 channels). */
#define PROBE_D 1024
static int64_t LO[PROBE_D], HI[PROBE_D];
static int check_layernorm_quotients(int t) {
    const int32_t D = ri(0, 3) ? size() : ri(300, PROBE_D), in_zp = pick_zp(), shifts = ri(0, 2), mode = ri(0, 3);
    const int32_t k = mode < 3 ? mode : ri(3, 29);
    const int64_t eps = ri(0, 1) ? ri(0, 1000) : r64() & (((int64_t)1 << 62) - 1);
    int32_t i, it, open = D;
    for (i = 0; i < D; i++) {
        INS[i] = (int8_t)(shifts == 0 ? 0 : (shifts == 1 ? ri(0, 7) : (ri(0, 5) ? 0 : 7)));
        A[i] = (int8_t)(ri(0, 4) ? (int32_t)rnd() : (ri(0, 1) ? -128 : 127));
        G[i] = 1, LO[i] = -((int64_t)1 << 31), HI[i] = (int64_t)1 << 31; /* |nrm| < 2^31 */
    }
    for (it = 0; it < 40 && open; it++) {
        for (i = 0; i < D; i++) BB[i] = -(LO[i] + (HI[i] - LO[i]) / 2);
        ref_layernorm_2s(A, 1, D, in_zp, INS, G, BB, eps, 0, 0, Y2);
        for (open = 0, i = 0; i < D; i++) {
            if (LO[i] == HI[i]) continue;
            if (Y2[i] == 127) LO[i] = 127 - BB[i];
            else if (Y2[i] == -128) HI[i] = -128 - BB[i];
            else LO[i] = HI[i] = Y2[i] - BB[i];
            open += LO[i] != HI[i];
        }
    }
    if (open) { say("PROBE FAILED layernorm case "); say_int(t); say("\n"); return 1; }
    for (i = 0; i < D; i++) {
        G[i] = 1 << k;
        BB[i] = -G[i] * LO[i] + (k < 2 ? ri(-100, 100) : ri(-100, 100) * ((int64_t)1 << (k - 1)) + ri(-1, 1));
    }
    memset(Y1, 0x5A, sizeof Y1);
    memset(Y2, 0x5A, sizeof Y2);
    tq_layernorm_2s(A, 1, D, in_zp, INS, G, BB, eps, 0, k, Y1);
    ref_layernorm_2s(A, 1, D, in_zp, INS, G, BB, eps, 0, k, Y2);
    if (memcmp(Y1, Y2, sizeof Y1)) {
        say("MISMATCH layernorm quotients case "); say_int(t); say(" D "); say_int(D); say("\n");
        return 1;
    }
    return 0;
}

/* LAYERNORM_2S's output pass at the ends of the Arm forms' steps (the Helium one: ln_mve_out): each row's nrm_c found
 * here as the reference does (checked against it: the reference's bytes from nrm_c), then gamma and beta chosen so
 * that v = nrm g + beta lands where a step changes: W >> n at the int8 clamp's ends after out_zp (-128 / 127 among
 * them), at the rounding's ties (and one off), at the int32 saturation of the n <= 31 shift (VQSHL; n = 1, where
 * the saturation argument fails, must stay scalar), beta at ln_short_ok's ends (+-2^61); gamma INT32_MIN, INT32_MAX,
 * +-1, 0; out_shift at the three forms' ends; D % 4 = 0..3
 * (the scalar tail) up to LN_MAX_D; spike rows (one or a few channels apart: |nrm| at its largest, near 2^30). */
static int64_t NRM[MAXD];
static void nrm_ref(const int8_t *xr, int32_t D, int32_t in_zp, const int8_t *ins, int64_t eps) {
    int64_t S = 0, sq = 0, V, sigma;
    int32_t c;
    int e;
    for (c = 0; c < D; c++) {
        const int64_t x = tq_shl64((int64_t)xr[c] - in_zp, ins[c]);
        S += x, sq += x * x;
    }
    V = (int64_t)D * sq - S * S + eps;
    e = (62 - tq_bit_length64((uint64_t)V)) / 2;
    e = e < 0 ? 0 : (e > 20 ? 20 : e);
    sigma = tq_isqrt64((uint64_t)tq_shl64(V, 2 * e));
    if (sigma < 1) sigma = 1;
    for (c = 0; c < D; c++)
        NRM[c] = tq_div_round(tq_shl64((int64_t)D * tq_shl64((int64_t)xr[c] - in_zp, ins[c]) - S, 24 + e), sigma);
}
static int check_layernorm_edges(int t) {
    static const int32_t nsh[] = {1, 2, 3, 30, 31, 32, 33, 34, 60, 61};
    static const int32_t gs[] = {INT32_MIN, INT32_MAX, INT32_MIN + 1, 1, -1, 0};
    const int32_t D = ri(0, 2) ? ri(1, 24) : (ri(0, 1) ? MAXD - ri(0, 3) : ri(25, MAXD));
    const int32_t in_zp = pick_zp(), out_zp = ri(0, 1) ? (ri(0, 1) ? -128 : 127) : pick_zp();
    const int32_t n = ri(0, 1) ? nsh[rnd() % 10u] : ri(1, 61), shape = ri(0, 3), shifts = ri(0, 2);
    const int64_t eps = ri(0, 2) ? ri(0, 3) : (ri(0, 1) ? (int64_t)1 << 62 : r64() & (((int64_t)1 << 62) - 1));
    const int64_t B61 = (int64_t)1 << 61, half = (int64_t)1 << (n - 1);
    const int64_t dlt[] = {-half - 1, -half, -half + 1, -1, 0, 1, half - 1, half, half + 1};
    const int64_t sat[] = {INT32_MAX, (int64_t)INT32_MAX + 1, INT32_MIN, (int64_t)INT32_MIN - 1, INT32_MAX - 127,
                           INT32_MIN + 128, 1 << 30, -(1 << 30)};
    const int32_t base = ri(-128, 127), other = ri(0, 1) ? (base < 0 ? 127 : -128) : ri(-128, 127);
    int32_t i, spikes = ri(1, 3);
    for (i = 0; i < D; i++) {
        INS[i] = (int8_t)(shifts == 0 ? 0 : shifts == 1 ? 7 : ri(0, 7));
        A[i] = (int8_t)(shape == 2 ? (int32_t)rnd() : shape == 3 ? (ri(0, 1) ? base : other) : base);
    }
    if (shape < 2)
        for (i = 0; i < (shape ? spikes : 1); i++) A[ri(0, 1) ? ri(0, D - 1) : (i ? 0 : D - 1)] = (int8_t)other;
    nrm_ref(A, D, in_zp, INS, eps);
    for (i = 0; i < D; i++) {
        const int32_t g = ri(0, 2) ? gs[rnd() % 6u] : (int32_t)rnd(), mode = ri(0, 3);
        const int64_t p = NRM[i] * g;
        int64_t bb = 0;
        if (mode == 0 && n <= 52) /* W >> n + out_zp at -129..128 */
            bb = (int64_t)(ri(-129, 128) - out_zp) * ((int64_t)1 << n) + dlt[rnd() % 9u] - p;
        else if (mode == 1 && n <= 30) /* W >> n at the int32 ends */
            bb = sat[rnd() % 8u] * ((int64_t)1 << n) + dlt[rnd() % 9u] - p;
        else if (mode == 2)
            bb = (ri(0, 1) ? B61 : -B61) + (ri(0, 1) ? 0 : (ri(0, 1) ? -1 : 1) * ri(0, 3)) * (ri(0, 1) ? 1 : half);
        else
            bb = r64() >> ri(3, 40);
        if (bb > B61 || bb < -B61) bb = ri(0, 1) ? (bb > 0 ? B61 : -B61) : r64() >> 3;
        G[i] = g, BB[i] = bb;
    }
    memset(Y1, 0x5A, sizeof Y1);
    memset(Y2, 0x5A, sizeof Y2);
    tq_layernorm_2s(A, 1, D, in_zp, INS, G, BB, eps, out_zp, n, Y1);
    ref_layernorm_2s(A, 1, D, in_zp, INS, G, BB, eps, out_zp, n, Y2);
    for (i = 0; i < D; i++)
        if (Y2[i] != tq_sat8(tq_rshift_round(NRM[i] * G[i] + BB[i], n) + out_zp)) {
            say("HARNESS layernorm edges case "); say_int(t); say("\n");
            return 1;
        }
    if (memcmp(Y1, Y2, sizeof Y1)) {
        say("MISMATCH layernorm edges case "); say_int(t); say(" D "); say_int(D); say(" n "); say_int(n);
        say(" shape "); say_int(shape); say("\n");
        return 1;
    }
    return 0;
}

int main(void) {
    int t, i, k, bad = check_div32(), cases = 0;
    for (t = 0; t < ROUNDS; t++) {
        const int32_t rows = ri(0, 3) ? ri(1, 12) : 1, C = size(), per = ri(0, 1), np = per ? C : 1;
        const int mode = ri(0, 2);
        int32_t a_zp = pick_zp(), b_zp = pick_zp(), out_zp = pick_zp();
        int32_t unit = ri(0, 3) == 0; /* TFLite's ADD: the larger-scale input at M = 2^30, shift 0 */
        const int32_t n = rows * C;
        if (n > MAXE) continue;
        if (!per && ri(0, 5) == 0) { /* ADD's zero points are the tensors': wider ones (the fast paths' limits) */
            out_zp = ri(0, 1) ? ri(-(1 << 30), 1 << 30) : (ri(0, 1) ? (1 << 30) + ri(0, 5) : -(1 << 30) - ri(0, 5));
            if (ri(0, 2) == 0) a_zp = ri(0, 1) ? 128 : -129;
            if (ri(0, 2) == 0) b_zp = ri(0, 1) ? 128 : -129; /* either input's (review) */
        }
        for (i = 0; i < np; i++)
            for (k = 0; k < 3; k++) {
                P[2 * k * np + i] = pick_mult();
                P[(2 * k + 1) * np + i] = pick_shift(k);
            }
        if (unit)
            for (i = 0; i < np; i++) P[i] = 1 << 30, P[np + i] = 0;
        for (i = 0; i < n; i++) A[i] = pick_q(mode), B[i] = pick_q(mode);
        memset(Y1, 0x5A, sizeof Y1);
        memset(Y2, 0x5A, sizeof Y2);
        tq_add(A, B, rows, C, a_zp, b_zp, P, np, out_zp, Y1);
        ref_add(A, B, rows, C, a_zp, b_zp, P, np, out_zp, Y2);
        if (memcmp(Y1, Y2, sizeof Y1)) {
            say("MISMATCH add case "); say_int(t); say(" rows "); say_int(rows); say(" C "); say_int(C);
            say(" per "); say_int(per); say("\n");
            bad++;
        }
        cases++;
        bad += check_layernorm(t);
        if (t % 4 == 0) bad += check_layernorm_quotients(t);
        bad += check_layernorm_edges(t);
    }
    say_int(ROUNDS); say(" rounds ("); say_int(cases); say(" cases), "); say_int(bad); say(" mismatches\n");
    tq_semihost_exit(bad ? 0x20023 : 0x20026); /* QEMU exits with 1 / 0 */
}
"""

MPS2 = c_build.RUNTIME_DIR.parent / "targets" / "mps2-an386"


def m4_firmware(tmp_path, rounds: int, driver: str) -> Path:
    """mve_firmware's build for mps2-an386 (Cortex-M4: the DSP paths, no MVE)."""
    from tsptq.deploy.targets import load_target

    target = load_target("mps2-an386")
    src = c_build.RUNTIME_DIR / "src"
    common = MPS2.parent / "common"
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", *target.cflags, "-I", str(src), "-I",
             str(src.parent / "include"), "-I", str(common)]
    probe = subprocess.run([target.cc, *flags, "-dM", "-E", str(src / "ops" / "dot.h")], capture_output=True,
                           text=True, check=True)
    assert "#define TQ_SIMD_DSP 1" in probe.stdout and "TQ_SIMD_MVE" not in probe.stdout
    objs = _reference_and_variant_objects(target.cc, flags, [str(c_build.RUNTIME_DIR / s) for s in kernel_sources()],
                                          tmp_path, "dsp", [])
    (tmp_path / "driver.c").write_text(driver)
    exe = tmp_path / "drv.elf"
    board = [str(MPS2 / "startup.c"), str(common / "cortex_m.c"), str(common / "qemu_fault.c")]
    link = subprocess.run([target.cc, *flags, f"-DROUNDS={rounds}", str(tmp_path / "driver.c"), *board, *objs,
                           "-T", str(MPS2 / "mps2-an386.ld"), "-nostartfiles", "--specs=nano.specs",
                           "-Wl,--gc-sections", "-o", str(exe), "-lm"], capture_output=True, text=True)
    assert link.returncode == 0, link.stderr[-3000:]
    return exe


def _run(machine: str, exe: Path) -> str:
    proc = subprocess.run(["qemu-system-arm", "-M", machine, "-display", "none", "-monitor", "none", "-serial",
                           "null", "-semihosting-config", "enable=on,target=native", "-kernel", str(exe)],
                          capture_output=True, text=True, timeout=600)
    return proc.stdout + proc.stderr + f"\nexit {proc.returncode}"


def _need_tools():
    if not shutil.which("arm-none-eabi-gcc") or not shutil.which("qemu-system-arm"):
        pytest.skip("needs gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")


ROUNDS = 3000


@pytest.mark.qemu
@pytest.mark.slow
def test_mve_elementwise_matches_reference(tmp_path):
    """tq_add's Helium branch and tq_layernorm_2s's Arm one (Cortex-M55, mps3-an547) give the reference path's
    bytes."""
    _need_tools()
    out = _run("mps3-an547", mve_firmware(tmp_path, ROUNDS, driver=ELEMENTWISE_DRIVER))
    assert "exit 0" in out and f"{ROUNDS} rounds" in out and " 0 mismatches" in out, out[-3000:]


@pytest.mark.qemu
@pytest.mark.slow
def test_dsp_elementwise_matches_reference(tmp_path):
    """tq_add's and tq_layernorm_2s's DSP branches (Cortex-M4, mps2-an386: 32x32 products, no MVE) give the
    reference path's bytes."""
    _need_tools()
    out = _run("mps2-an386", m4_firmware(tmp_path, ROUNDS, ELEMENTWISE_DRIVER))
    assert "exit 0" in out and f"{ROUNDS} rounds" in out and " 0 mismatches" in out, out[-3000:]
