"""The Helium (MVE) forms of runtime_c/tflm/variant_kernels.h (the NPU variant's CPU-only loops) give their scalar
forms' bytes: one bare-metal program for QEMU's mps3-an547 (Cortex-M55) calls both on random inputs with every tail,
extreme values and every option combination, and compares the outputs, the bytes past them included (a predicated
store must not write past the end)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from test_c_kernels import semihost_prologue

ROOT = Path(__file__).resolve().parents[1]
MPS3 = ROOT / "targets" / "mps3-an547"

DRIVER = r"""
#include <stdint.h>
#include <string.h>
#include "qemu_fault.h"
#include "variant_kernels.h"

#if !defined(TQ_VARIANT_MVE)
#error "the mps3-an547 flags do not take variant_kernels.h's MVE forms"
#endif

""" + semihost_prologue("mps3-an547 (MVE variant kernels test)") + r"""
static uint64_t s = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)(s >> 32); }
static int32_t ri(int32_t lo, int32_t hi) { return lo + (int32_t)(rnd() % (uint32_t)(hi - lo + 1)); }

/* lengths with every tail of 8 and 16 lanes, and random ones */
static const int32_t LENS[] = {0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 23, 31, 32, 33, 47, 63, 64, 65, 100, 127, 128, 129,
                               197, 255, 256, 257, 511, 600};
static int32_t pick_len(int32_t max) {
    int32_t n = ri(0, 2) ? LENS[ri(0, (int32_t)(sizeof LENS / sizeof LENS[0]) - 1)] : ri(0, max);
    return n > max ? max : n;
}

/* bytes: random, or one extreme repeated, or a mix of extremes */
static uint8_t pick_byte(int mode) {
    static const uint8_t ext[] = {0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0x81, 0xBF, 0xC0, 0xFE, 0xFF};
    if (mode == 0) return (uint8_t)rnd();
    if (mode == 1) return ext[ri(0, 10)];
    return ext[(mode - 2) % 11];
}
static int16_t pick_i16(int mode) {
    static const int16_t ext[] = {-32768, -32767, -32640, -256, -129, -128, -127, -1, 0, 1, 126, 127, 128, 255,
                                  32512, 32766, 32767};
    if (mode == 0) return (int16_t)rnd();
    if (mode == 1) return (int16_t)ri(-300, 300);
    return ext[ri(0, 16)];
}
static int32_t pick_i32(void) {
    static const int32_t ext[] = {-2147483647 - 1, -2147483647, -65536, -1, 0, 1, 65535, 2147483646, 2147483647};
    int k = ri(0, 3);
    if (k == 0) return ext[ri(0, 8)];
    if (k == 1) return (int32_t)rnd();
    return ri(-100000, 100000);
}

#define CAP 2048
#define BIG 70000
static uint8_t XU[CAP], CODE[BIG];
static int8_t XS[CAP], KS[CAP];
static int16_t B16[CAP], TABLE[256];
static int32_t FINE[CAP], COARSE[CAP];
static uint8_t O1[2 * CAP + 64], O2[2 * CAP + 64];

static int same(const char *what, int64_t t) {
    if (!memcmp(O1, O2, sizeof O1)) return 1;
    say("MISMATCH ");
    say(what);
    say(" round ");
    say_int(t);
    say("\n");
    return 0;
}
static void clear(void) { memset(O1, 0xA5, sizeof O1); memset(O2, 0xA5, sizeof O2); }

int main(void) {
    int64_t t, bad = 0;
    int32_t i;
    for (t = 0; t < ROUNDS; t++) {
        const int mode = ri(0, 14);
        /* TSPTQ_PLANE_2S: both planes, bits 3..8, signed_fine 0 / 1 / other nonzero values */
        {
            int32_t n = pick_len(CAP), plane = ri(0, 1), bits = ri(3, 8);
            static const int32_t sfs[] = {0, 1, 2, -1};
            int32_t sf = sfs[ri(0, 3)];
            for (i = 0; i < n; i++) XU[i] = pick_byte(mode);
            clear();
            tq_plane_2s(XU, n, plane, bits, sf, (int8_t *)O1);
            tq_plane_2s_scalar(XU, n, plane, bits, sf, (int8_t *)O2);
            bad += !same("plane", t);
        }
        /* TSPTQ_PV_SUM_2S: rows of N codes, every option in its prepare range, int32 accumulators with extremes */
        {
            int32_t rows = ri(1, 4), N = pick_len(CAP / 4), M = ri(1, 40), bits = ri(3, 8), m = ri(0, 8), sf = ri(0, 1);
            static const int32_t zps[] = {-32768, 32767, -40000, 40000, -1000, 1000};
            int32_t b_zp = ri(0, 3) ? ri(-128, 127) : (ri(0, 1) ? -128 : 127);
            int32_t out_zp = ri(0, 5) ? ri(-128, 127) : zps[ri(0, 5)]; /* beyond int8: the MVE form's clamp */
            /* multipliers: large, any, powers of two (exact ties), the ends; accumulators: small, wide, near the
             * int32 ends (some rows overflow int32 part way: the MVE form's scalar redo), anything */
            static const int32_t mults[] = {0, 1, 2147483647, 1 << 30};
            int32_t k = ri(0, 3), acc_mode = ri(0, 3), shift = ri(-31, 30);
            int32_t mult = k == 0 ? ri(1 << 29, 2147483647) : k == 1 ? (int32_t)(rnd() >> 1)
                                                         : k == 2 ? 1 << ri(0, 30) : mults[ri(0, 3)];
            if (N < 1) N = 1;
            for (i = 0; i < rows * N; i++) CODE[i] = pick_byte(mode);
            for (i = 0; i < rows * M; i++) {
                if (acc_mode == 0) {
                    FINE[i] = ri(-5000, 5000);
                    COARSE[i] = ri(-500, 500);
                } else if (acc_mode == 1) {
                    FINE[i] = ri(-(1 << 20), 1 << 20);
                    COARSE[i] = ri(-(1 << 20), 1 << 20);
                } else if (acc_mode == 2) {
                    FINE[i] = ri(0, 1) ? 2147483647 - ri(0, 1 << 20) : -2147483647 + ri(0, 1 << 20);
                    COARSE[i] = ri(-(1 << 10), 1 << 10);
                } else {
                    FINE[i] = ri(0, 1) ? ri(-5000, 5000) : pick_i32();
                    COARSE[i] = ri(0, 1) ? ri(-500, 500) : pick_i32();
                }
            }
            clear();
            tq_pv_sum_2s(FINE, COARSE, CODE, rows, N, M, bits, m, sf, b_zp, mult, shift, out_zp, (int8_t *)O1);
            tq_pv_sum_2s_scalar(FINE, COARSE, CODE, rows, N, M, bits, m, sf, b_zp, mult, shift, out_zp, (int8_t *)O2);
            bad += !same("pv_sum", t);
        }
        /* TSPTQ_LAYERNORM_2S_I16's tail: rows of D codes, out_zp in int8 (and beyond: only its low 16 bits count),
         * shifts 0..7 (and up to 63) */
        {
            int32_t rows = ri(1, 3), D = pick_len(CAP / 4), out_zp = ri(0, 5) ? ri(-128, 127) : pick_i32();
            int32_t kmax = ri(0, 3) ? 7 : 63;
            if (D < 1) D = 1;
            for (i = 0; i < rows * D; i++) XS[i] = (int8_t)pick_byte(mode);
            for (i = 0; i < D; i++) KS[i] = (int8_t)ri(0, kmax);
            clear();
            tq_layernorm_2s_i16_tail(XS, rows, D, out_zp, KS, (int16_t *)(void *)O1);
            tq_layernorm_2s_i16_tail_scalar(XS, rows, D, out_zp, KS, (int16_t *)(void *)O2);
            bad += !same("ln_tail", t);
        }
        /* TSPTQ_ADD_2S_I16's saturation: b_zp in int8, at the int16 ends and outside int16 (the scalar fallback) */
        {
            static const int32_t zps[] = {-128, 127, -32768, 32767, -40000, 70000};
            int32_t n = pick_len(CAP), b_zp = ri(0, 3) ? ri(-128, 127) : zps[ri(0, 5)];
            for (i = 0; i < n; i++) B16[i] = pick_i16(mode % 3);
            clear();
            tq_add_2s_i16_code(B16, n, b_zp, (int8_t *)O1);
            tq_add_2s_i16_code_scalar(B16, n, b_zp, (int8_t *)O2);
            bad += !same("add_sat", t);
        }
        /* TSPTQ_GELU_2S's int16 table: int8 and uint8 codes */
        {
            int32_t n = pick_len(CAP), sgn = ri(0, 2);
            for (i = 0; i < 256; i++) TABLE[i] = pick_i16(0);
            for (i = 0; i < n; i++) XU[i] = pick_byte(mode);
            clear();
            tq_lookup_i16(XU, n, sgn, TABLE, (int16_t *)(void *)O1);
            tq_lookup_i16_scalar(XU, n, sgn, TABLE, (int16_t *)(void *)O2);
            bad += !same("gelu16", t);
        }
    }
    /* one row longer than the MVE sum's int32 chunk (2^16 codes), all at the largest coarse value, and all at the
     * most negative fine one */
    for (i = 0; i < 2; i++) {
        int32_t j, bits = 8;
        for (j = 0; j < BIG; j++) CODE[j] = i ? 0x40 : 0xFF;
        FINE[0] = 0;
        COARSE[0] = 0;
        clear();
        tq_pv_sum_2s(FINE, COARSE, CODE, 1, BIG, 1, bits, 8, i, 127, 1 << 30, -31, 0, (int8_t *)O1);
        tq_pv_sum_2s_scalar(FINE, COARSE, CODE, 1, BIG, 1, bits, 8, i, 127, 1 << 30, -31, 0, (int8_t *)O2);
        bad += !same("pv_sum long row", i);
    }
    /* the dsum itself across the 2^16-code chunks, random codes, lengths with tails */
    {
        static const int32_t NS[] = {65535, 65536, 65537, 65551, 70001, 69999};
        int32_t q, j;
        for (q = 0; q < 24; q++) {
            int32_t N = NS[q % 6], bits = ri(3, 8), m = ri(0, 8), sf = ri(0, 1);
            int64_t ref = 0, got;
            for (j = 0; j < N; j++) CODE[j] = (uint8_t)rnd();
            for (j = 0; j < N; j++) ref += tq_decode_two_scale(CODE[j], bits, m, sf);
            got = tq_pv_dsum_2s(CODE, N, bits, m, sf);
            if (got != ref) { say("MISMATCH dsum N="); say_int(N); say("\n"); bad++; }
        }
    }
    say_int(ROUNDS);
    say(" rounds, ");
    say_int(bad);
    say(" mismatches\n");
    tq_semihost_exit(bad ? 0x20023u : 0x20026u);
}
"""


def variant_firmware(tmp_path: Path, rounds: int) -> Path:
    """The driver with the target's flags (-mcpu=cortex-m55: the MVE forms) and start-up code, for mps3-an547."""
    from tsptq.deploy.targets import load_target

    target = load_target("mps3-an547")
    common = MPS3.parent / "common"
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", *target.cflags, "-I", str(ROOT / "runtime_c" / "src"),
             "-I", str(ROOT / "runtime_c" / "include"), "-I", str(ROOT / "runtime_c" / "tflm"), "-I", str(common)]
    (tmp_path / "driver.c").write_text(DRIVER)
    exe = tmp_path / "variant.elf"
    board = [str(MPS3 / "startup.c"), str(common / "cortex_m.c"), str(common / "qemu_fault.c")]
    link = subprocess.run([target.cc, *flags, f"-DROUNDS={rounds}", str(tmp_path / "driver.c"), *board,
                           "-T", str(MPS3 / "mps3-an547.ld"), "-nostartfiles", "--specs=nano.specs",
                           "-Wl,--gc-sections", "-o", str(exe)], capture_output=True, text=True)
    assert link.returncode == 0, link.stderr[-3000:]
    return exe


@pytest.mark.qemu
@pytest.mark.slow
def test_mve_variant_kernels_match_their_scalar_forms(tmp_path):
    cc, qemu = shutil.which("arm-none-eabi-gcc"), shutil.which("qemu-system-arm")
    if not cc or not qemu:
        pytest.skip("needs gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")
    exe = variant_firmware(tmp_path, 1500)
    proc = subprocess.run([qemu, "-M", "mps3-an547", "-display", "none", "-monitor", "none", "-serial", "null",
                           "-semihosting-config", "enable=on,target=native", "-kernel", str(exe)],
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "1500 rounds, 0 mismatches" in out, out[-3000:]


def test_the_x86_build_keeps_the_scalar_forms(tmp_path):
    """Off Helium (here the host compiler) the unsuffixed names are the scalar bodies: no MVE form is compiled."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("needs a C compiler")
    src = tmp_path / "probe.c"
    src.write_text('#include "variant_kernels.h"\n#ifdef TQ_VARIANT_MVE\n#error "MVE forms off Helium"\n#endif\n'
                   "int main(void) { return 0; }\n")
    proc = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-I", str(ROOT / "runtime_c" / "src"),
                           "-I", str(ROOT / "runtime_c" / "tflm"), "-c", str(src), "-o", str(tmp_path / "probe.o")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
