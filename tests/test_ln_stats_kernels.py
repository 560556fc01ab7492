"""The NPU LayerNorm's two CPU ops (``lower(..., layernorm_npu=)``): runtime_c/tflm/variant_kernels.h's
tq_ln_neg_mean_i16 (TSPTQ_LN_NEG_MEAN) and tq_ln_rstd_i16 (TSPTQ_LN_RSTD) against the Python integer model
(tsptq.intmodel.kernels.ln_neg_mean, ln_rstd), byte for byte:

- the cases: rows of D 1..4096 (every 8-lane tail), the int16 ends (all 32767, all -32768, exactly alternating),
  constant rows (V = eps), eps 0..2^62, c 0..42, and rows built to reach every branch of the arithmetic (checked here
  in Python first): the mean's ties and its one saturating row, V = 0 (sigma clamped to 1), bit_length(V) at 61, 62
  and 63 (e = 0 from a negative (62 - bit_length) / 2), e clamped at 20, the quotient's ties and its saturation at
  32767 (32767 itself and 32768), r = 0, sq at 2^42;
- a host build (the system compiler, then clang, each with ASan + UBSan and -Wall -Wextra -Werror) and QEMU's
  mps3-an547 (Cortex-M55: the Helium sums) and mps2-an386 (Cortex-M4: the portable bodies) on those cases (the Python
  model's bytes baked into the program), both forms (the unsuffixed one and *_scalar), the int16s past each output
  checked untouched; then random rounds of the unsuffixed form against the scalar one (D 1..4096, rows 1..3);
- benchmarks/npu_cpu.py: the two ops are CPU ops whose steps (8 ln_neg_mean, 9 ln_rstd) are built from the variant's
  tensors, Vela leaves exactly them (and the other custom ops) on the CPU, and npu_cpu_steps.c computes their bytes on
  mps3-an547.
"""
from __future__ import annotations

import platform
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tsptq.intmodel import kernels as K

from test_c_kernels import semihost_prologue
from test_layernorm_x16 import N_KINDS, Rows, _c_array, _qemu, pick, random_shape, rows_of

ROOT = Path(__file__).resolve().parents[1]
LN_MAX_D = K.LN_MAX_CHANNELS
I16_MIN, I16_MAX = -32768, 32767
DS = (1, 2, 3, 7, 8, 9, 15, 16, 17, 64, 192, 384, 768)
EPS_EDGES = (0, 1, 3, 2**20, 2**40, 2**54, 2**61, 2**62)
C_EDGES = (0, 1, 20, 41, 42)
C_MAX = 62 - K.SIGMA_EXTRA_BITS  # 42

pytestmark = pytest.mark.cc


class Case(Rows):
    """One call of each op: x (rows, D) int16, and TSPTQ_LN_RSTD's eps and c."""

    def __init__(self, name, x, eps, c):
        self.name = name
        self.x = np.ascontiguousarray(np.asarray(x).reshape(-1, np.shape(x)[-1]), np.int16)
        self.eps, self.c = int(eps), int(c)
        assert 1 <= self.D <= LN_MAX_D and 0 <= self.eps <= 2**62 and 0 <= self.c <= C_MAX
        assert np.array_equal(self.x, np.asarray(x).reshape(self.x.shape))  # every value an int16

    def want_neg_mean(self) -> np.ndarray:
        return K.ln_neg_mean(self.x).reshape(-1).astype(np.int16)

    def want_rstd(self) -> np.ndarray:
        return K.ln_rstd(self.x, self.eps, self.c).reshape(-1).astype(np.int16)


def rstd_parts(c: Case) -> dict:
    """TSPTQ_LN_RSTD's intermediate values per row (exact Python integers): V, bit_length(V), e, sigma, the quotient
    before the clamp and whether its division was a tie."""
    out = []
    for row in c.x.astype(object):
        S, sq, D = sum(row), sum(v * v for v in row), c.D
        V = D * sq - S * S + c.eps
        e = min(max((62 - V.bit_length()) // 2, 0), K.SIGMA_EXTRA_BITS)
        sigma = max(int(np.floor(np.sqrt(float(V << 2 * e)))), 1)
        while sigma * sigma > V << 2 * e:
            sigma -= 1
        while (sigma + 1) ** 2 <= V << 2 * e:
            sigma += 1
        sigma = max(sigma, 1)
        num = 1 << (c.c + e)
        out.append(dict(V=V, bits=V.bit_length(), e=e, room=62 - V.bit_length(), sigma=sigma, sq=sq,
                        q=(num + sigma // 2) // sigma, tie=2 * (num % sigma) == sigma))
    return out


# ---- the cases ------------------------------------------------------------------------------------------------------

def _eps_c(rng):
    return pick(rng, EPS_EDGES, 0, 2**62), pick(rng, C_EDGES, 0, C_MAX)


def _tie_rows(rng, rows: int, D: int, sign: int) -> np.ndarray:
    """Rows whose sum S is an odd multiple of D / 2 (D even): S / D exactly halfway, positive (sign 1) or negative;
    the first value moves by at most D to get there."""
    x = rng.integers(0, 3000, (rows, D)) * sign
    for r in range(rows):
        S = int(x[r].sum())
        x[r, 0] += (S // D) * D + (D // 2 if sign > 0 else -(D // 2)) - S
    assert np.all(2 * (np.abs(x.sum(-1)) % D) == D) and np.all(np.sign(x.sum(-1)) == sign)
    return x


def directed_cases(seed: int = 1) -> list[Case]:
    rng = np.random.default_rng(seed)
    out = []
    # every row kind at every D (test_layernorm_x16's kinds: random, all -32768, all 32767, the two ends, constant,
    # spiked, narrow, small, wide), eps and c at their edges or anywhere
    for D in DS + (4095, 4096):
        for kind in range(N_KINDS if D != 4095 else 4):
            rows = 1 if D >= 1024 else int(rng.integers(1, 4))
            out.append(Case(f"D={D} kind={kind}", rows_of(rng, kind, rows, D), *_eps_c(rng)))
    # the int16 ends at the widest row: sq = 2^42 (all -32768), exactly alternating (the largest variance term), with
    # eps 0 and 2^62 (bit_length(V) = 63: e from a negative (62 - 63) / 2)
    for D in (4095, 4096):
        alt = np.where(np.arange(D) % 2 == 0, I16_MIN, I16_MAX)[None]
        for eps in (0, 2**62):
            for c in (0, C_MAX):
                out.append(Case(f"alternating D={D} eps={eps} c={c}", alt, eps, c))
        out.append(Case(f"all -32768 D={D}", np.full((1, D), I16_MIN), 2**62, C_MAX))
        out.append(Case(f"all 32767 D={D}", np.full((1, D), I16_MAX), 0, 0))
    # eps x c on a few rows: a constant one (V = D^2 * 0 + eps), a random one, a small one
    for eps in EPS_EDGES:
        for c in C_EDGES:
            x = np.concatenate([np.full((1, 64), int(rng.integers(I16_MIN, I16_MAX + 1))), rows_of(rng, 0, 1, 64),
                                rows_of(rng, 7, 1, 64)])
            out.append(Case(f"eps={eps} c={c}", x, eps, c))
    # V = 0: constant rows and eps 0 (sigma clamped to 1, e = 20)
    for D in (1, 2, 9, 64):
        out.append(Case(f"V=0 D={D}", np.repeat(rng.integers(I16_MIN, I16_MAX + 1, (3, 1)), D, 1), 0,
                        pick(rng, C_EDGES, 0, C_MAX)))
    # the quotient's ties: a constant row has V = eps; eps = 4^(c + 1) gives sigma = 2^(c + 1 + e), so
    # 2^(c + e) / sigma = 1/2 exactly (and eps next to it, no tie)
    for c in range(0, 30):
        for d_eps in (0, 0, -1, 1):
            D = int(rng.choice([1, 2, 5]))
            out.append(Case(f"rstd tie c={c} {d_eps:+d}", np.full((1, D), int(rng.integers(-9, 10))),
                            4 ** (c + 1) + d_eps, c))
    # the clamp at 32767: eps around (2^c / 32767.5)^2 puts the quotient at 32767 or 32768
    for c in range(26, C_MAX + 1):
        base = (2**c * 2) ** 2 // (65535**2)
        for k in (-3, -2, -1, 0, 1, 2, 3):
            eps = max(base + k * max(base >> 16, 1), 0)
            out.append(Case(f"rstd clamp c={c} k={k}", np.zeros((1, 1 + c % 3)), eps, c))
    # the mean's ties (S an odd multiple of D / 2), both signs
    for D in (2, 4, 64, 192, 768):
        for sign in (1, -1):
            out.append(Case(f"mean tie D={D} sign={sign}", _tie_rows(rng, 3, D, sign), *_eps_c(rng)))
    out.append(Case("mean tie D=2 small", [[0, 1], [0, -1], [1, 2], [-1, -2], [-32768, -32767], [32767, 32766]], 0, 3))
    return out


def random_cases(seed: int, n: int, max_d: int = LN_MAX_D) -> list[Case]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        D, rows = random_shape(rng, max_d)
        kind = int(rng.integers(N_KINDS))
        out.append(Case(f"random {i} D={D} kind={kind}", rows_of(rng, kind, rows, D), *_eps_c(rng)))
    return out


def all_cases(budget: int = 220_000) -> list[Case]:
    out, n = [], 0
    for c in directed_cases() + random_cases(2, 500, max_d=1024):
        if n + c.x.size <= budget:
            out.append(c)
            n += c.x.size
    return out


def test_the_cases_reach_every_branch():
    """The directed cases show every branch of the arithmetic (else a wrong branch could pass unseen)."""
    cases = directed_cases()
    kept = {c.name for c in all_cases()}
    assert all(c.name in kept for c in cases), "a directed case fell out of the budget"
    parts = [(c, p) for c in cases for p in rstd_parts(c)]
    seen = {
        "V = 0 (sigma clamped to 1)": any(p["V"] == 0 for _, p in parts),
        "bit_length(V) = 63": any(p["bits"] == 63 for _, p in parts),
        "bit_length(V) = 62": any(p["bits"] == 62 for _, p in parts),
        "bit_length(V) = 61": any(p["bits"] == 61 for _, p in parts),
        "e clamped at 20": any(p["room"] // 2 > K.SIGMA_EXTRA_BITS for _, p in parts),
        "e between 1 and 19": any(0 < p["e"] < K.SIGMA_EXTRA_BITS for _, p in parts),
        "a quotient tie": any(p["tie"] for _, p in parts),
        "quotient 32767": any(p["q"] == 32767 for _, p in parts),
        "quotient 32768 (clamped)": any(p["q"] == 32768 for _, p in parts),
        "quotient far past 32767": any(p["q"] > 2**20 for _, p in parts),
        "r = 0": any(p["q"] == 0 for _, p in parts),
        "sq = 2^42": any(p["sq"] == 2**42 for _, p in parts),
        "c = 0 and c = 42": {c.c for c in cases} >= {0, C_MAX},
        "eps = 0 and eps = 2^62": {c.eps for c in cases} >= {0, 2**62},
        "every D up to 17, 4095, 4096": {c.D for c in cases} >= set(range(1, 4)) | {7, 8, 9, 15, 16, 17, 4095, 4096},
    }
    sums = [(int(s), c.D) for c in cases for s in c.x.astype(np.int64).sum(-1)]
    seen["a mean tie, S > 0"] = any(D % 2 == 0 and s > 0 and 2 * (s % D) == D for s, D in sums)
    seen["a mean tie, S < 0"] = any(D % 2 == 0 and s < 0 and 2 * (-s % D) == D for s, D in sums)
    seen["the mean saturating (all -32768)"] = any(s == -32768 * D for s, D in sums)
    assert all(seen.values()), [k for k, v in seen.items() if not v]
    # and the Python model itself: the tie rounds away from zero, the saturations hold
    assert K.ln_neg_mean(np.array([[0, 1], [0, -1], [-32768, -32768]])).ravel().tolist() == [-1, 1, 32767]
    assert K.ln_rstd(np.zeros((1, 1), np.int16), 4, 0).ravel().tolist() == [1]  # 2^20 / 2^21: a tie, up to 1
    assert K.ln_rstd(np.zeros((1, 1), np.int16), 0, 0).ravel().tolist() == [32767]  # sigma 1: 2^20, clamped


# ---- the C program: host, mps3-an547, mps2-an386 ---------------------------------------------------------------------

DRIVER = r"""
/* tq_ln_neg_mean_i16 and tq_ln_rstd_i16 (and their *_scalar forms) on the cases baked in below (the Python model's
 * int16s: WANT_NM, WANT_RS), the GUARD int16s past each output checked untouched; then ROUNDS random cases of the
 * unsuffixed forms against the scalar ones. Prints "N cases, R rounds, M mismatches". */
#include <stdint.h>
#include <string.h>
@PROLOGUE@
#include "variant_kernels.h"

#if defined(EXPECT_MVE) && !defined(TQ_VARIANT_MVE)
#error "these flags do not take variant_kernels.h's Helium forms"
#endif
#if defined(EXPECT_SCALAR) && defined(TQ_VARIANT_MVE)
#error "these flags take variant_kernels.h's Helium forms"
#endif

typedef struct { int32_t rows, D, x, w, c; int64_t eps; } st_case;
@DATA@
#define GUARD 16
#define MAXD 4096
static int16_t Y1[MAXROWS + GUARD], Y2[MAXROWS + GUARD], RX[3 * MAXD];
static uint64_t s = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)(s >> 11); }
static int32_t ri(int32_t lo, int32_t hi) { return lo + (int32_t)(rnd() % (uint32_t)(hi - lo + 1)); }

static void clear(void) { memset(Y1, 0x5A, sizeof Y1); memset(Y2, 0x5A, sizeof Y2); }
static int same(const int16_t *y, const int16_t *want, int32_t rows) {
    int32_t i;
    if (memcmp(y, want, (size_t)rows * 2u)) return 0;
    for (i = rows; i < rows + GUARD; i++)
        if ((uint16_t)y[i] != 0x5A5Au) return 0;
    return 1;
}
static int report(const char *what, int32_t k, int ok) {
    if (ok) return 0;
    say("MISMATCH "); say(what); say(" "); say_int(k); say("\n");
    return 1;
}

/* a random case: D with every tail and at the ends, rows 1..3, values random / at the int16 ends / small / constant */
static const int32_t LENS[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 191, 192, 193, 767, 768, 4095, 4096};
static const int64_t EPS[] = {0, 1, 3, 1048576, 1099511627776LL, 4611686018427387904LL};
static int random_round(int32_t t) {
    const int32_t D = ri(0, 2) ? LENS[ri(0, (int32_t)(sizeof LENS / sizeof LENS[0]) - 1)] : ri(1, MAXD);
    const int32_t rows = ri(1, 3), mode = ri(0, 4), c = ri(0, 3) ? ri(0, 42) : (ri(0, 1) ? 42 : 0);
    const int64_t eps = ri(0, 1) ? EPS[ri(0, 5)] : (int64_t)(((uint64_t)rnd() << 31) ^ rnd()) & ((1LL << 62) - 1);
    const int16_t base = (int16_t)rnd();
    int32_t i, bad = 0;
    for (i = 0; i < rows * D; i++)
        RX[i] = mode == 0 ? (int16_t)rnd() : mode == 1 ? (ri(0, 1) ? 32767 : -32768)
              : mode == 2 ? (int16_t)ri(-300, 300) : mode == 3 ? base : (int16_t)(base / 2 + ri(-2, 2));
    clear();
    tq_ln_neg_mean_i16(RX, rows, D, Y1);
    tq_ln_neg_mean_i16_scalar(RX, rows, D, Y2);
    bad += report("random neg_mean", t, same(Y1, Y2, rows));
    clear();
    tq_ln_rstd_i16(RX, rows, D, eps, c, Y1);
    tq_ln_rstd_i16_scalar(RX, rows, D, eps, c, Y2);
    bad += report("random rstd", t, same(Y1, Y2, rows));
    return bad;
}

/* tq_isqrt64 (a hardware square root's estimate, corrected: the FPU's on an Arm core with one, the double one on
 * x86-64) against tq_isqrt64_ref (the bit loop): every
 * bit length, perfect squares and their neighbours, and the largest inputs the row statistics make (V << 2e < 2^63) */
static int isqrt_round(int32_t t) {
    const int bits = t % 64;
    uint64_t n = bits ? (((uint64_t)rnd() << 32) ^ rnd()) >> (64 - bits) : 0u, q = (uint64_t)rnd() % 3037000500u;
    int bad = 0, j;
    if (bits == 63 || (t & 7) == 7) n |= (uint64_t)1 << 62;
    bad += report("isqrt", t, tq_isqrt64(n) == tq_isqrt64_ref(n));
    for (j = -1; j <= 1; j++) { /* around a square: q^2 - 1, q^2, q^2 + 1 (q <= floor(sqrt(2^63 - 1)): q^2 + 1 < 2^63) */
        const uint64_t m = q * q + (uint64_t)(int64_t)j;
        bad += report("isqrt square", t, m > q * q + 1u || tq_isqrt64(m) == tq_isqrt64_ref(m));
    }
    return bad;
}

int main(void) {
    int32_t k, t, bad = 0;
    for (t = 0; t < 64 * ISQRT_ROUNDS; t++) bad += isqrt_round(t);
    bad += report("isqrt max", 0, tq_isqrt64(0x7FFFFFFFFFFFFFFFull) == tq_isqrt64_ref(0x7FFFFFFFFFFFFFFFull));
    for (k = 0; k < NCASES; k++) {
        const st_case *c = &CASES[k];
        clear();
        tq_ln_neg_mean_i16(X + c->x, c->rows, c->D, Y1);
        tq_ln_neg_mean_i16_scalar(X + c->x, c->rows, c->D, Y2);
        bad += report("neg_mean case", k, same(Y1, WANT_NM + c->w, c->rows));
        bad += report("neg_mean_scalar case", k, same(Y2, WANT_NM + c->w, c->rows));
        clear();
        tq_ln_rstd_i16(X + c->x, c->rows, c->D, c->eps, c->c, Y1);
        tq_ln_rstd_i16_scalar(X + c->x, c->rows, c->D, c->eps, c->c, Y2);
        bad += report("rstd case", k, same(Y1, WANT_RS + c->w, c->rows));
        bad += report("rstd_scalar case", k, same(Y2, WANT_RS + c->w, c->rows));
    }
    for (t = 0; t < ROUNDS; t++) bad += random_round(t);
#if defined(TQ_ISQRT_FLOAT)
    say("isqrt: float estimate\n");
#elif defined(TQ_ISQRT_DOUBLE)
    say("isqrt: double estimate\n");
#else
    say("isqrt: bit loop\n");
#endif
    say_int(NCASES); say(" cases, "); say_int(ROUNDS); say(" rounds, "); say_int(bad); say(" mismatches\n");
    FINISH(bad);
    return 0;
}
"""

HOST_PROLOGUE = r"""
#include <stdio.h>
static void say(const char *s) { fputs(s, stdout); }
static void say_int(int64_t v) { printf("%lld", (long long)v); }
#define FINISH(bad) do { fflush(stdout); if (bad) return 1; } while (0)
"""

BOARD_PROLOGUE = '#include "qemu_fault.h"\n' + semihost_prologue("ln_stats test") + \
    "#define FINISH(bad) tq_semihost_exit((bad) ? 0x20023u : 0x20026u) /* QEMU exits with 1 / 0 */\n"


def driver(cases: list[Case], board: bool) -> str:
    xs, nm, rs, table = [], [], [], []
    xo = wo = 0
    for c in cases:
        table.append(f"{{{c.rows}, {c.D}, {xo}, {wo}, {c.c}, {c.eps}LL}}")
        xs.append(c.x.ravel())
        nm.append(c.want_neg_mean())
        rs.append(c.want_rstd())
        xo += c.x.size
        wo += c.rows
    data = (_c_array("int16_t", "X", np.concatenate(xs)) + _c_array("int16_t", "WANT_NM", np.concatenate(nm))
            + _c_array("int16_t", "WANT_RS", np.concatenate(rs))
            + "static const st_case CASES[] = {\n" + ",\n".join(table) + "\n};\n"
            + f"#define NCASES {len(cases)}\n#define MAXROWS {max(max(c.rows for c in cases), 3)}\n"
            + "#define ISQRT_ROUNDS 400\n")
    return DRIVER.replace("@PROLOGUE@", BOARD_PROLOGUE if board else HOST_PROLOGUE).replace("@DATA@", data)


def c_flags() -> list[str]:
    return ["-std=c99", "-Wall", "-Wextra", "-Werror", "-I", str(ROOT / "runtime_c" / "src"), "-I",
            str(ROOT / "runtime_c" / "tflm")]


HOST_ROUNDS = 400
QEMU_ROUNDS = 1500
SANITIZE = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


@pytest.fixture(scope="module")
def cases():
    return all_cases()


@pytest.mark.slow
@pytest.mark.parametrize("compiler,host_sqrtf", [("cc", False), ("clang", False), ("cc", True)])
def test_host_build_matches_the_python_model_under_sanitizers(tmp_path, cases, compiler, host_sqrtf):
    """The portable bodies (the x86 build of tflm_ops.c), ASan + UBSan aborting on the first report. ``host_sqrtf``:
    the FPU square root's algorithm (tq_isqrt64's 32-bit Arm form, on the host's sqrtf instead of VSQRT.F32; without it
    the x86-64 double form) against tq_isqrt64_ref and in the row statistics."""
    cc = shutil.which(compiler)
    if not cc:
        pytest.skip(f"needs {compiler}")
    probe = subprocess.run([cc, *SANITIZE, "-x", "c", "-", "-o", str(tmp_path / "probe")], input="int main(void){}",
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{compiler} cannot build with -fsanitize=address,undefined")
    (tmp_path / "drv.c").write_text(driver(cases, board=False))
    exe = tmp_path / "drv"
    build = subprocess.run([cc, *c_flags(), *SANITIZE, "-DEXPECT_SCALAR", f"-DROUNDS={HOST_ROUNDS}",
                            *(["-DTSPTQ_TEST_HOST_SQRTF"] if host_sqrtf else []), str(tmp_path / "drv.c"), "-o",
                            str(exe), "-lm"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and f"{len(cases)} cases, {HOST_ROUNDS} rounds, 0 mismatches" in out, out[-3000:]
    # the estimate really was taken (else the loop would be compared with itself)
    x86_64 = platform.machine() in ("x86_64", "AMD64")
    assert ("isqrt: float estimate" if host_sqrtf else "isqrt: double estimate" if x86_64 else "isqrt:") in out


@pytest.mark.parametrize("compiler", ["cc", "clang"])
def test_the_tflm_ops_build_warning_free(tmp_path, compiler):
    """The TFLM ops library (tflm_ops.c with variant_kernels.h, and the runtime sources tsptq.npu.tflm adds) builds
    and links with -Wall -Wextra -Werror, and the two kernels compile -Wpedantic clean on their own."""
    cc = shutil.which(compiler)
    if not cc:
        pytest.skip(f"needs {compiler}")
    from tsptq.npu import tflm

    srcs = [str(ROOT / "runtime_c" / s) for s in tflm.SOURCES]
    proc = subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
                           "-fvisibility=hidden", "-pthread", "-I", str(ROOT / "runtime_c" / "src"), "-I",
                           str(ROOT / "runtime_c" / "include"), *srcs, "-o", str(tmp_path / "lib.so"), "-lm"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-I",
                           str(ROOT / "runtime_c" / "src"), "-I", str(ROOT / "runtime_c" / "tflm"), "-x", "c", "-c",
                           "-", "-o", str(tmp_path / "probe.o")],
                          input='#include "variant_kernels.h"\nvoid f(const int16_t *x, int16_t *y);\n'
                                "void f(const int16_t *x, int16_t *y) { tq_ln_neg_mean_i16(x, 1, 8, y); "
                                "tq_ln_rstd_i16(x, 1, 8, 0, 42, y + 1); }\n", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("target", ["aarch64-linux-gnu-gcc", "arm-none-eabi-gcc"])
def test_the_kernels_compile_for_other_arm_hosts(tmp_path, target):
    """The header compiles for a 64-bit Arm Linux host (a Pi: the FPU square root is 32-bit Arm's, not taken there)
    and for a Cortex-M4F (where it is)."""
    cc = shutil.which(target)
    if not cc:
        pytest.skip(f"needs {target}")
    arch = [] if target.startswith("aarch64") else ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                                                    "-mfpu=fpv4-sp-d16"]
    proc = subprocess.run([cc, *arch, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I",
                           str(ROOT / "runtime_c" / "src"), "-I", str(ROOT / "runtime_c" / "tflm"), "-x", "c", "-S",
                           "-", "-o", str(tmp_path / "probe.s")],
                          input='#include "variant_kernels.h"\nint64_t f(uint64_t n);\n'
                                "int64_t f(uint64_t n) { return tq_isqrt64(n); }\n", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("vsqrt.f32" in (tmp_path / "probe.s").read_text()) == target.startswith("arm-none")


def _need_arm_tools():
    if not shutil.which("arm-none-eabi-gcc") or not shutil.which("qemu-system-arm"):
        pytest.skip("needs gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")


def board_firmware(tmp_path: Path, board: str, cases: list[Case], rounds: int, expect: str) -> Path:
    """The driver with the board's flags, start-up code and linker script."""
    from tsptq.deploy.targets import load_target

    target = load_target(board)
    bdir, common = ROOT / "targets" / board, ROOT / "targets" / "common"
    (tmp_path / "drv.c").write_text(driver(cases, board=True))
    exe = tmp_path / "drv.elf"
    link = subprocess.run([target.cc, *c_flags(), *target.cflags, "-I", str(ROOT / "runtime_c" / "include"), "-I",
                           str(common), f"-D{expect}", f"-DROUNDS={rounds}", str(tmp_path / "drv.c"),
                           str(bdir / "startup.c"), str(common / "cortex_m.c"), str(common / "qemu_fault.c"),
                           "-T", str(bdir / f"{board}.ld"), "-nostartfiles", "--specs=nano.specs",
                           "-Wl,--gc-sections", "-o", str(exe), "-lm"], capture_output=True, text=True)
    assert link.returncode == 0, link.stderr[-3000:]
    return exe


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("board,expect", [("mps3-an547", "EXPECT_MVE"), ("mps2-an386", "EXPECT_SCALAR")])
def test_board_build_matches_the_python_model(tmp_path, cases, board, expect):
    """mps3-an547 (Cortex-M55: the Helium row sums) and mps2-an386 (Cortex-M4: the portable bodies, its UDIV and
    64-bit library calls)."""
    _need_arm_tools()
    exe = board_firmware(tmp_path, board, cases, QEMU_ROUNDS, expect)
    out = _qemu(board, exe)
    assert "exit 0" in out and f"{len(cases)} cases, {QEMU_ROUNDS} rounds, 0 mismatches" in out, out[-3000:]
    assert "isqrt: float estimate" in out  # both boards have a single-precision FPU: VSQRT.F32


# ---- benchmarks/npu_cpu.py: the two ops are steps of their own ------------------------------------------------------

def _stats_intmodel(x: np.ndarray, eps: int, c: int):
    """TSPTQ_LN_NEG_MEAN and TSPTQ_LN_RSTD on one int16 (1, T, D) x, as the lowering writes them."""
    from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor

    _, T, D = x.shape
    qp = QuantParams(np.array([2.0**-8], np.float32), np.zeros(1, np.int64))
    tensors = [Tensor("x", (1, T, D), "int16", qp), Tensor("neg_mean", (1, T, 1), "int16", qp),
               Tensor("rstd", (1, T, 1), "int16", qp)]
    ops = [Op("TSPTQ_LN_NEG_MEAN", [0], [1], {}), Op("TSPTQ_LN_RSTD", [0], [2], {"eps": eps, "c": c})]
    return IntModel(tensors, ops, [0], [1, 2], {"method": "ln-stats"})


def _stats_values(im, x: np.ndarray) -> dict:
    """Every tensor's value on x (IntModel.run takes int8 images only): the ops' Python kernels."""
    from tsptq.intmodel.ops import ALL_OPS

    vals = {0: x}
    for op in im.ops:
        vals[op.outputs[0]] = ALL_OPS[op.kind].kernel(im, op, [x])
    return vals


def test_the_two_ops_are_cpu_steps_built_from_the_variants_tensors(npu_cpu):
    rng = np.random.default_rng(31)
    x = rng.integers(I16_MIN, I16_MAX + 1, (1, 5, 24)).astype(np.int16)
    eps = 2**40 + 2**31 + 7
    im = _stats_intmodel(x, eps, 29)
    vals = _stats_values(im, x)
    assert npu_cpu.cpu_ops(im, {"TSPTQ_LN_NEG_MEAN": 1, "TSPTQ_LN_RSTD": 1}) == [0, 1]
    assert npu_cpu.parts_of(npu_cpu.op_key(im, 0)) == (None, "ln_neg_mean")
    assert npu_cpu.parts_of(npu_cpu.op_key(im, 1)) == (None, "ln_rstd")
    nm, rs = npu_cpu.steps_for(npu_cpu.StepInputs(im, vals, None, {}), [0, 1])
    assert (nm.name, nm.op, nm.args) == ("ln_neg_mean", 0, [5, 24])
    assert (rs.name, rs.op, rs.args) == ("ln_rstd", 1, [5, 24, 2**31 + 7 - 2**32, 2**8, 29])
    assert nm.data[0].tobytes() == rs.data[0].tobytes() == x.tobytes()
    assert nm.expected == K.ln_neg_mean(x).astype(np.int16).tobytes()
    assert rs.expected == K.ln_rstd(x, eps, 29).astype(np.int16).tobytes()
    blob = npu_cpu.steps_file([nm, rs])
    assert np.frombuffer(blob, "<i4")[[1, 1 + npu_cpu.STEP_ARGS + npu_cpu.STEP_DATA + 24 * 5 // 2]].tolist() == [8, 9]


@pytest.mark.slow
def test_vela_leaves_exactly_the_custom_ops_on_the_cpu(npu_cpu, tiny_vits, tmp_path):
    """A layernorm_npu file through Vela: its ADD, MUL and DEPTHWISE_CONV_2D go to the NPU, the two statistics stay on
    the CPU with the other custom ops, so npu_cpu.cpu_ops (what npu.py's estimate counts) takes the file."""
    from tsptq.npu import vela
    from tsptq.tflite.writer import to_tflite

    if vela.vela_version() is None:
        pytest.skip(f"ethos-u-vela is not importable ({vela.INSTALL_HINT})")
    im, _ = layernorm_npu_variant(tiny_vits)
    path = tmp_path / "ln-npu.tflite"
    path.write_bytes(to_tflite(im))
    r = vela.compile_report(path)
    idx = npu_cpu.cpu_ops(im, r.ops_cpu)
    kinds = Counter(im.ops[i].kind for i in idx)
    assert kinds["TSPTQ_LN_NEG_MEAN"] == kinds["TSPTQ_LN_RSTD"] == 3  # norm1, norm2 of one block, and the final norm
    assert "TSPTQ_LAYERNORM_2S_I16" not in kinds
    assert r.ops_npu["MUL"] == r.ops_npu["DEPTHWISE_CONV_2D"] == 3 and "MUL" not in r.ops_cpu


def layernorm_npu_variant(tiny_vits, split_pv: bool = False):
    """tests/test_npu_residual16.py's tiny16 model lowered with every LayerNorm on the NPU (``--pv-on-cpu`` by default:
    TFLM refuses the split P x V's int32 BATCH_MATMUL); and its int8 images."""
    from test_npu_variant import _forge_two_scale_codes

    from tsptq.data import datasets
    from tsptq.intmodel.lower import lower
    from tsptq.quant.quantize import quantize
    from tsptq.quant.quantizers import ChannelPow2

    cfg, graph, cal, imgs = tiny_vits(8)
    qm = _forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False))
    u = qm.acts["blocks.0.in"]
    qm.acts["blocks.0.in"] = ChannelPow2(float(u.base_scale), int(getattr(u, "zero_point", 0)),
                                         [3 if c % 7 == 0 else 0 for c in range(cfg.embed_dim)])
    images = datasets.to_model_input(imgs.images, cfg)
    sigma = qm.residual_sigma_min([images])
    im = lower(qm, npu=True, residual16=True, layernorm_npu=sigma, split_pv=split_pv)
    return im, im.quantize_input(images.numpy())


@pytest.mark.qemu
def test_the_steps_compute_the_python_models_bytes_on_the_board(npu_cpu):
    why = npu_cpu.missing_tools()
    if why:
        pytest.skip(why)
    rng = np.random.default_rng(32)
    steps = []
    for D, T, kind, eps, c in ((5, 3, 0, 2**33 * 3 + 5, 29), (192, 17, 7, 1448, 22), (384, 4, 8, 0, 42),
                               (4096, 1, 3, 2**62, 40), (768, 2, 1, 2**20, 41)):
        x = rows_of(rng, kind, T, D).astype(np.int16)[None]
        im = _stats_intmodel(x, eps, c)
        vals = _stats_values(im, x)
        steps += npu_cpu.steps_for(npu_cpu.StepInputs(im, vals, None, {}), [0, 1])
    counts = npu_cpu.run_steps(steps)  # every output's CRC checked against the Python model's bytes
    assert len(counts) == len(steps) and all(n > 0 for n in counts), counts
    for name in ("ln_neg_mean", "ln_rstd"):
        wrong = next(st for st in steps if st.name == name)
        wrong.expected = bytes([wrong.expected[0] ^ 1]) + wrong.expected[1:]
        with pytest.raises(npu_cpu.TsptqError, match=rf"step 0 \({name}\) does not compute the integer model's bytes"):
            npu_cpu.run_steps([wrong])
