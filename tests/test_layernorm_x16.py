"""tq_layernorm_2s_x16 (TSPTQ_LAYERNORM_2S_I16 on the NPU variant's int16 residual stream: an int16 input, zero point
0, no channel shifts) against the Python integer model (tsptq.intmodel.kernels.layernorm_2s with in_zp 0 and every
in_shift 0), byte for byte:

- the host builds (runtime_c, ``reference`` and ``avx2``) on directed rows (D 1..4096, values at the int16 ends,
  constant, two-valued, spiked and narrow rows, eps 0..2^62, out_shift at the Arm forms' ends, beta up to 2^62) and
  random ones, plus rows built to show every quotient (gamma 2^k, out_shift k, beta -2^k n_c: the output is n_c
  itself, give or take a tie) and rows whose v = n g + beta sits at the output steps' ends;
- the same cases (the Python model's bytes baked into the firmware) on QEMU's mps3-an547 (Cortex-M55: the Helium
  sums and output loop) and mps2-an386 (Cortex-M4: the DSP build's 32-bit division), with random rounds against
  the reference build of the same sources and the bytes past each output checked untouched;
- TFLite Micro (the tflite-micro wheel with runtime_c/tflm's ops): TSPTQ_LAYERNORM_2S_I16 alone on an int16 x gives
  the Python model's bytes, and a non-zero in_zp or in_shift with an int16 x is a one-line refusal;
- benchmarks/npu_cpu.py: an int16-input LayerNorm is costed as the ``ln16`` step (the whole op), built from the
  variant's tensors, and benchmarks/npu_cpu_steps.c computes its bytes on mps3-an547;
- (``python tests/test_layernorm_x16.py bench [SRC_DIR [int8only]]``, not a test) its QEMU instruction counts per
  element on mps3-an547, with tq_layernorm_2s's on the same rows.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tsptq.intmodel import kernels as K

import test_c_kernels as TCK
from test_c_kernels import semihost_prologue

ROOT = Path(__file__).resolve().parents[1]
LN_MAX_D = K.LN_MAX_CHANNELS
DS = (1, 2, 3, 7, 64, 192, 384, 4096)
SHIFTS = (0, 1, 2, 31, 32, 33, 61, 62)
I16_MIN, I16_MAX = -32768, 32767

pytestmark = pytest.mark.cc


# ---- the cases ------------------------------------------------------------------------------------------------------

class Rows:
    """The shape of a case's x (rows, D): shared with tests/test_ln_stats_kernels.py's cases."""

    @property
    def rows(self):
        return self.x.shape[0]

    @property
    def D(self):
        return self.x.shape[1]


class Case(Rows):
    """One call: x (rows, D) int16, gamma_mul (D) int32, beta_bias (D) int64, eps, out_zp, out_shift."""

    def __init__(self, name, x, g, bb, eps, out_zp, out_shift):
        self.name = name
        self.x = np.ascontiguousarray(x, np.int16)
        self.g = np.ascontiguousarray(g, np.int32)
        self.bb = np.ascontiguousarray(bb, np.int64)
        self.eps, self.out_zp, self.out_shift = int(eps), int(out_zp), int(out_shift)
        D = self.x.shape[-1]
        assert 1 <= D <= LN_MAX_D and self.g.shape == (D,) and self.bb.shape == (D,)
        assert 0 <= self.eps <= 2**62 and -128 <= self.out_zp <= 127 and 0 <= self.out_shift <= 62
        assert np.abs(self.bb).max() <= 2**62

    def want(self) -> np.ndarray:
        """The Python integer model's bytes."""
        return K.layernorm_2s(self.x, 0, np.zeros(self.D, np.int8), self.g, self.bb, self.eps, self.out_zp,
                              self.out_shift).astype(np.int8)


def norm_q24(x: np.ndarray, eps: int) -> np.ndarray:
    """The reference's n_c (Q24 normalized values), as tsptq.intmodel.kernels.layernorm_2s computes them."""
    D = x.shape[-1]
    xs = x.astype(np.int64)
    S = xs.sum(-1, keepdims=True)
    var = D * (xs * xs).sum(-1, keepdims=True) - S * S + eps
    extra = np.clip((62 - K.bit_length(var)) // 2, 0, K.SIGMA_EXTRA_BITS)
    sigma = np.maximum(K.isqrt(var << (2 * extra)), 1)
    return K.div_round((D * xs - S) << (K.NORM_FRAC_BITS + extra), sigma)


def rows_of(rng, kind: int, rows: int, D: int) -> np.ndarray:
    """Input rows: 0 random int16, 1 all -32768, 2 all 32767, 3 the two ends, 4 constant, 5 constant with 1..3
    spikes at the other end, 6 narrow (a few codes apart: a small sigma, many extra bits), 7 small (|x| < 300, the
    residual stream's usual spread), 8 wide normal."""
    if kind == 0:
        return rng.integers(I16_MIN, I16_MAX + 1, (rows, D))
    if kind == 1:
        return np.full((rows, D), I16_MIN)
    if kind == 2:
        return np.full((rows, D), I16_MAX)
    if kind == 3:
        return rng.choice([I16_MIN, I16_MAX], (rows, D))
    if kind == 4:
        return np.repeat(rng.integers(I16_MIN, I16_MAX + 1, (rows, 1)), D, 1)
    if kind == 5:
        base = int(rng.choice([I16_MIN, I16_MAX, int(rng.integers(I16_MIN, I16_MAX + 1))]))
        x = np.full((rows, D), base)
        other = I16_MAX if base < 0 else I16_MIN
        for r in range(rows):
            x[r, rng.integers(0, D, int(rng.integers(1, 4)))] = other
        return x
    if kind == 6:
        base = int(rng.integers(I16_MIN, I16_MAX - 4))
        return base + rng.integers(0, int(rng.integers(1, 5)) + 1, (rows, D))
    if kind == 7:
        return rng.integers(-300, 300, (rows, D))
    return np.clip(np.round(rng.normal(0, 6000, (rows, D))), I16_MIN, I16_MAX)


N_KINDS = 9


def pick(rng, edges, lo, hi, p=0.5):
    return int(rng.choice(edges)) if rng.random() < p else int(rng.integers(lo, hi + 1))


def r64(rng, bits=62):
    return int(rng.integers(-(2**bits), 2**bits, dtype=np.int64, endpoint=True))


def params(rng, x: np.ndarray, mode: str):
    """gamma, beta, eps, out_zp, out_shift for rows x. mode: "typical" (the lowering's: out_shift 24 + g_bits, beta on
    that scale), "extreme" (anything prepare accepts), "quotient" (gamma 2^k, out_shift k, beta -2^k n_c plus a few
    half steps: every output shows its quotient, ties included), "edges" (v = n g + beta at the clamp's ends and
    ties, at the int32 ends of the Helium form's shift, beta at +-2^61 (the one-sum rounding's limit) and past it)."""
    D = x.shape[-1]
    eps = pick(rng, [0, 1, 3, 2**20, 2**40, 2**61, 2**62], 0, 2**62)
    out_zp = pick(rng, [-128, 127, 0], -128, 127)
    if mode == "typical":
        s_out = float(10 ** rng.uniform(-2.5, -1))
        gamma, beta = rng.normal(1.0, 0.5, D), rng.normal(0.0, 0.5, D)
        g_bits = 30 - max(0, int(np.ceil(np.log2(max(np.abs(gamma / s_out).max(), 1e-30)))))
        out_shift = min(K.NORM_FRAC_BITS + g_bits, 62)
        g_bits = out_shift - K.NORM_FRAC_BITS
        g = np.round(gamma / s_out * 2.0**g_bits).astype(np.int64)
        bb = np.round(beta / s_out * 2.0**out_shift).astype(np.int64)
        eps = pick(rng, [0, 1], 0, 2**20)
        return g, np.clip(bb, -(2**62), 2**62), eps, out_zp, out_shift
    if mode == "extreme":
        out_shift = pick(rng, SHIFTS, 0, 62)
        g = np.where(rng.random(D) < 0.3, rng.choice([-(2**31), 2**31 - 1, -(2**31) + 1, 1, -1, 0], D),
                     rng.integers(-(2**31), 2**31, D) >> int(rng.integers(0, 24)))
        bb = rng.integers(-(2**62), 2**62, D, dtype=np.int64, endpoint=True) >> int(rng.integers(0, 45))
        if rng.random() < 0.3:
            bb = np.where(rng.random(D) < 0.5, rng.choice([2**62, -(2**62), 2**61, -(2**61), 2**61 + 1], D), bb)
        return g, bb, eps, out_zp, out_shift
    n = norm_q24(x[:1], eps)[0]
    if mode == "quotient":
        k = pick(rng, [0, 1, 2, 3, 29, 31], 0, 31)
        half = 2 ** (k - 1) if k else 1
        g = np.full(D, 2**k if k < 31 else 2**31 - 1, np.int64)
        off = rng.integers(-100, 101, D) * half + (rng.integers(-1, 2, D) if k > 1 else 0)
        return g, -g * n + off, eps, out_zp, k
    # edges
    out_shift = pick(rng, [1, 2, 3, 30, 31, 32, 33, 34, 60, 61], 1, 61)
    half = 2 ** (out_shift - 1)
    g = np.where(rng.random(D) < 0.7, rng.choice([-(2**31), 2**31 - 1, -(2**31) + 1, 1, -1, 0], D),
                 rng.integers(-(2**31), 2**31, D))
    p = n * g
    dlt = rng.choice([-half - 1, -half, -half + 1, -1, 0, 1, half - 1, half, half + 1], D)
    which = rng.integers(0, 4, D)
    bb = rng.integers(-(2**62), 2**62, D, dtype=np.int64) >> rng.integers(3, 41, D)
    if out_shift <= 52:  # W >> n + out_zp at -129..128
        at = (rng.integers(-129, 129, D) - out_zp) * (2**out_shift) + dlt - p
        bb = np.where(which == 0, at, bb)
    if out_shift <= 30:  # W >> n at the int32 ends (the Helium form's saturating shift)
        sat = rng.choice([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**31 - 128, -(2**31) + 128, 2**30, -(2**30)], D)
        bb = np.where(which == 1, sat * (2**out_shift) + dlt - p, bb)
    lim = rng.choice([2**61, -(2**61), 2**61 + 1, -(2**61) - 1, 2**61 - half, -(2**61) + half], D)
    bb = np.where(which == 2, lim, bb)
    bb = np.where(np.abs(bb) > 2**62, r64(rng, 61), bb)
    return g, bb, eps, out_zp, out_shift


MODES = ("typical", "extreme", "quotient", "edges")


def directed_cases(seed: int = 1, big_kinds: int = N_KINDS) -> list[Case]:
    """Every D of DS with every row kind and every parameter mode (D = 4096: the first ``big_kinds`` row kinds), and
    the named extremes."""
    rng = np.random.default_rng(seed)
    out = []
    for D in DS:
        for kind in range(N_KINDS if D < 4096 else big_kinds):
            for mode in MODES:
                rows = 1 if D >= 1024 else int(rng.integers(1, 4))
                x = rows_of(rng, kind, rows, D)
                out.append(Case(f"D={D} kind={kind} {mode}", x, *params(rng, x, mode)))
    # -32768 everywhere at every D, eps 0 (V = 0: sigma 1, n = 0) and 2^62; out_shift at every end
    for D in DS:
        for eps in (0, 2**62):
            for sh in SHIFTS:
                bb = np.full(D, -(2**62) if sh % 2 else 2**62, np.int64)
                out.append(Case(f"all -32768 D={D} eps={eps} shift={sh}", np.full((1, D), I16_MIN),
                                np.full(D, 2**31 - 1), bb, eps, 127 if sh % 3 else -128, sh))
    # one beta at the one-sum rounding's limit (+-2^61: in) or just past it (out), the others small: in the Helium
    # check's vectors or its tail
    rng2 = np.random.default_rng(seed + 100)
    for D in (4, 7, 64, 67):
        for at in (0, D - 1):
            for b in (2**61, -(2**61), 2**61 + 1, -(2**61) - 1, 2**61 - 1):
                x = rows_of(rng2, 0, 2, D)
                g, bb, eps, out_zp, _ = params(rng2, x, "typical")
                bb = np.clip(bb, -(2**40), 2**40)
                bb[at] = b
                sh = int(rng2.choice([2, 47, 61]))
                out.append(Case(f"beta limit D={D} at={at} b={b}", x, g, bb, eps, out_zp, sh))
    # the widest spread at the widest row: half -32768, half 32767, and one 32767 among -32768
    for D in (4095, 4096):
        x = np.where(np.arange(D) % 2 == 0, I16_MIN, I16_MAX)[None]
        out.append(Case(f"alternating D={D}", x, np.full(D, 2**31 - 1), np.zeros(D, np.int64), 2**62, 0, 62))
        y = np.full((1, D), I16_MIN)
        y[0, D // 2] = I16_MAX
        for sh in (33, 40, 55):
            g = np.full(D, -(2**31), np.int64)
            out.append(Case(f"spike D={D} shift={sh}", y, g, np.full(D, 2**61, np.int64), 0, 5, sh))
    return out


def random_shape(rng, max_d: int) -> tuple[int, int]:
    """(D, rows) of a random case: mostly D < 400 with 1-4 rows, else one row up to max_d channels."""
    D = int(rng.integers(1, 400)) if rng.random() < 0.8 else int(rng.integers(1, max_d + 1))
    return D, int(rng.integers(1, 5)) if D < 400 else 1


def random_cases(seed: int, n: int, max_d: int = LN_MAX_D) -> list[Case]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        D, rows = random_shape(rng, max_d)
        kind, mode = int(rng.integers(N_KINDS)), MODES[int(rng.integers(len(MODES)))]
        x = rows_of(rng, kind, rows, D)
        out.append(Case(f"random {i} D={D} kind={kind} {mode}", x, *params(rng, x, mode)))
    return out


# ---- host builds ----------------------------------------------------------------------------------------------------

def _load(variant: str):
    import ctypes

    lib = TCK.load(TCK.build(variant))
    P = ctypes.c_void_p
    I32, I64 = ctypes.c_int32, ctypes.c_int64
    lib.tq_layernorm_2s_x16.argtypes = [P, I32, I32, P, P, I64, I32, I32, P]
    lib.tq_layernorm_2s_x16.restype = None
    return lib


def run_host(lib, c: Case) -> np.ndarray:
    y = np.full(c.rows * c.D + 16, 0x5A, np.uint8)
    lib.tq_layernorm_2s_x16(TCK.ptr(c.x), c.rows, c.D, TCK.ptr(c.g), TCK.ptr(c.bb), c.eps, c.out_zp, c.out_shift,
                            TCK.ptr(y))
    assert (y[c.rows * c.D:] == 0x5A).all(), f"{c.name}: wrote past its output"
    return y[:c.rows * c.D].view(np.int8).reshape(c.rows, c.D)


@pytest.fixture(scope="module", params=[v for v in TCK._variants() if v in ("reference", "avx2")])
def host_lib(request):
    TCK.skip_unless_runnable(request.param)
    return _load(request.param)


def _check_host(lib, cases):
    bad = [c.name for c in cases if not np.array_equal(run_host(lib, c), c.want())]
    assert not bad, f"{len(bad)} of {len(cases)} cases differ: {bad[:10]}"


def test_directed_rows_match_the_python_model(host_lib):
    _check_host(host_lib, directed_cases())


def test_random_rows_match_the_python_model(host_lib):
    _check_host(host_lib, random_cases(2, 400))


def test_an_int16_row_is_the_int8_kernels_row_where_both_exist(host_lib):
    """Where the int16 value is an int8 code's aligned value ((q - zp) << k with zp 0, k 0), both kernels agree."""
    rng = np.random.default_rng(3)
    for D in DS:
        q = rng.integers(-128, 128, (2, D)).astype(np.int8)
        g, bb, eps, out_zp, sh = params(rng, q.astype(np.int16), "typical")
        c = Case("int8 codes", q, g, bb, eps, out_zp, sh)
        y8, shifts = np.empty((2, D), np.int8), np.zeros(D, np.int8)  # kept alive across the call
        host_lib.tq_layernorm_2s(TCK.ptr(q), 2, D, 0, TCK.ptr(shifts), TCK.ptr(c.g), TCK.ptr(c.bb), eps, out_zp, sh,
                                 TCK.ptr(y8))
        assert np.array_equal(run_host(host_lib, c), y8), D


# ---- QEMU: mps3-an547 (Helium) and mps2-an386 (DSP) -----------------------------------------------------------------

def _c_array(ctype: str, name: str, values, suffix: str = "") -> str:
    vals = [f"{int(v)}{suffix}" for v in np.asarray(values).ravel()]
    body = ",\n".join(",".join(vals[i:i + 24]) for i in range(0, len(vals), 24)) or "0"
    return f"static const {ctype} {name}[] = {{\n{body}\n}};\n"


def qemu_cases(budget: int = 160_000) -> list[Case]:
    """The directed cases (D = 4096 with fewer row kinds) and random ones, within ``budget`` elements."""
    out, n = [], 0
    for c in directed_cases(big_kinds=4) + random_cases(5, 600, max_d=1024):
        if n + c.x.size <= budget:
            out.append(c)
            n += c.x.size
    return out


QEMU_DRIVER = r"""
/* tq_layernorm_2s_x16 of the build under test on the cases baked in below (the Python model's bytes: WANT) and the
 * reference build's (ref_layernorm_2s_x16) on them too; then ROUNDS random cases against the reference build. Bytes
 * past each output must stay as they were. Reports through semihosting; QEMU exits with 0 when every byte agrees. */
#include <stdint.h>
#include <string.h>
#include "kernels.h"
#include "qemu_fault.h"
""" + semihost_prologue("layernorm_x16 test") + TCK.driver_prologue("0x2545F4914F6CDD1Dull") + r"""
void ref_layernorm_2s_x16(const int16_t *, int32_t, int32_t, const int32_t *, const int64_t *, int64_t, int32_t,
                          int32_t, int8_t *);
typedef struct { int32_t rows, D, x, p, out_zp, out_shift; int64_t eps; } ln_case;
@DATA@
#define GUARD 32
#define MAXD 4096
static int8_t Y1[MAXN + GUARD], Y2[MAXN + GUARD];
static int16_t RX[4 * MAXD];
static int32_t RG[MAXD];
static int64_t RB[MAXD];

static int64_t r64(void) { return (int64_t)(((uint64_t)rnd() << 43) ^ ((uint64_t)rnd() << 21) ^ rnd()); }
static int guards_ok(int32_t n) {
    int32_t i;
    for (i = 0; i < GUARD; i++)
        if (Y1[n + i] != 0x5A || Y2[n + i] != 0x5A) return 0;
    return 1;
}

/* random rows of every kind (as the Python cases'), parameters anywhere in prepare's ranges */
static int random_case(int t) {
    static const int32_t edge_d[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 192, 384, 4095, 4096};
    static const int32_t edge_shift[] = {0, 1, 2, 31, 32, 33, 61, 62};
    const int32_t D = ri(0, 1) ? edge_d[rnd() % 18u] : (ri(0, 5) ? ri(1, 400) : ri(1, MAXD));
    const int32_t rows = D > 1024 ? 1 : ri(1, 4), n = rows * D, kind = ri(0, 6);
    const int32_t out_zp = ri(0, 2) ? ri(-128, 127) : (ri(0, 1) ? -128 : 127);
    const int32_t out_shift = ri(0, 1) ? edge_shift[rnd() % 8u] : ri(0, 62);
    const int64_t eps = ri(0, 1) ? ri(0, 1000) : (ri(0, 1) ? r64() & (((int64_t)1 << 62) - 1) : (int64_t)1 << 62);
    const int32_t base = ri(-32768, 32767), other = ri(0, 1) ? (base < 0 ? 32767 : -32768) : ri(-32768, 32767);
    const int32_t width = ri(1, 4), amp = ri(0, 1) ? 300 : 32767;
    int32_t i;
    for (i = 0; i < D; i++) {
        RG[i] = ri(0, 3) ? ri(-(1 << 24), 1 << 24) : (ri(0, 1) ? (int32_t)rnd() : (ri(0, 1) ? INT32_MIN : INT32_MAX));
        RB[i] = ri(0, 3) ? r64() >> ri(10, 40) : (ri(0, 1) ? r64() >> 2 : (ri(0, 1) ? 1 : -1) * ((int64_t)1 << 61));
    }
    for (i = 0; i < n; i++) {
        switch (kind) {
        case 0: RX[i] = (int16_t)base; break;
        case 1: RX[i] = (int16_t)(base > 32760 ? 32767 - ri(0, width) : base + ri(0, width)); break;
        case 2: RX[i] = (int16_t)(ri(0, 1) ? -32768 : 32767); break;
        case 3: RX[i] = (int16_t)(ri(0, 50) ? base : other); break;
        case 4: RX[i] = (int16_t)ri(-amp, amp); break;
        default: RX[i] = (int16_t)rnd();
        }
    }
    memset(Y1, 0x5A, sizeof Y1);
    memset(Y2, 0x5A, sizeof Y2);
    tq_layernorm_2s_x16(RX, rows, D, RG, RB, eps, out_zp, out_shift, Y1);
    ref_layernorm_2s_x16(RX, rows, D, RG, RB, eps, out_zp, out_shift, Y2);
    if (memcmp(Y1, Y2, (size_t)n) || !guards_ok(n)) {
        say("MISMATCH random case "); say_int(t); say(" D "); say_int(D); say(" kind "); say_int(kind);
        say(" shift "); say_int(out_shift); say("\n");
        return 1;
    }
    return 0;
}

int main(void) {
    int32_t k, bad = 0;
    int t;
    for (k = 0; k < NCASES; k++) {
        const ln_case *c = &CASES[k];
        const int32_t n = c->rows * c->D;
        memset(Y1, 0x5A, sizeof Y1);
        memset(Y2, 0x5A, sizeof Y2);
        tq_layernorm_2s_x16(X + c->x, c->rows, c->D, G + c->p, BB + c->p, c->eps, c->out_zp, c->out_shift, Y1);
        ref_layernorm_2s_x16(X + c->x, c->rows, c->D, G + c->p, BB + c->p, c->eps, c->out_zp, c->out_shift, Y2);
        if (memcmp(Y1, WANT + c->x, (size_t)n) || memcmp(Y2, WANT + c->x, (size_t)n) || !guards_ok(n)) {
            say("MISMATCH case "); say_int(k);
            say(memcmp(Y1, WANT + c->x, (size_t)n) ? " (build under test)" : "");
            say(memcmp(Y2, WANT + c->x, (size_t)n) ? " (reference build)" : "");
            say("\n");
            bad++;
        }
    }
    for (t = 0; t < ROUNDS; t++) bad += random_case(t);
    say_int(NCASES); say(" cases, "); say_int(ROUNDS); say(" rounds, "); say_int(bad); say(" mismatches\n");
    tq_semihost_exit(bad ? 0x20023 : 0x20026); /* QEMU exits with 1 / 0 */
}
"""


def qemu_driver(cases: list[Case]) -> str:
    xs, gs, bs, want, table = [], [], [], [], []
    xo = po = 0
    for c in cases:
        table.append(f"{{{c.rows}, {c.D}, {xo}, {po}, {c.out_zp}, {c.out_shift}, {c.eps}LL}}")
        xs.append(c.x.ravel())
        want.append(c.want().ravel())
        gs.append(c.g)
        bs.append(c.bb)
        xo += c.x.size
        po += c.D
    data = (_c_array("int16_t", "X", np.concatenate(xs)) + _c_array("int32_t", "G", np.concatenate(gs))
            .replace("-2147483648", "(-2147483647 - 1)")
            + _c_array("int64_t", "BB", np.concatenate(bs), "LL") + _c_array("int8_t", "WANT", np.concatenate(want))
            + "static const ln_case CASES[] = {\n" + ",\n".join(table) + "\n};\n"
            + f"#define NCASES {len(cases)}\n#define MAXN {max(max(c.x.size for c in cases), 4 * 4096)}\n")
    return QEMU_DRIVER.replace("@DATA@", data)


QEMU_ROUNDS = 1500


def _need_tools():
    if not shutil.which("arm-none-eabi-gcc") or not shutil.which("qemu-system-arm"):
        pytest.skip("needs gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")


def _qemu(machine: str, exe: Path) -> str:
    proc = subprocess.run(["qemu-system-arm", "-M", machine, "-display", "none", "-monitor", "none", "-serial",
                           "null", "-semihosting-config", "enable=on,target=native", "-kernel", str(exe)],
                          capture_output=True, text=True, timeout=900)
    return proc.stdout + proc.stderr + f"\nexit {proc.returncode}"


@pytest.mark.qemu
@pytest.mark.slow
def test_helium_build_matches_the_python_model(tmp_path):
    """mps3-an547 (Cortex-M55, TQ_SIMD_MVE: the Helium sums and output loop, ln_mve_rows_x16)."""
    _need_tools()
    cases = qemu_cases()
    exe = TCK.mve_firmware(tmp_path, QEMU_ROUNDS, driver=qemu_driver(cases))
    out = _qemu("mps3-an547", exe)
    assert "exit 0" in out and f"{len(cases)} cases, {QEMU_ROUNDS} rounds, 0 mismatches" in out, out[-3000:]


@pytest.mark.qemu
@pytest.mark.slow
def test_dsp_build_matches_the_python_model(tmp_path):
    """mps2-an386 (Cortex-M4, TQ_SIMD_DSP without MVE: the 32-bit division of ln_arm_out)."""
    _need_tools()
    from test_mve_elementwise import m4_firmware

    cases = qemu_cases(budget=120_000)
    exe = m4_firmware(tmp_path, QEMU_ROUNDS, qemu_driver(cases))
    out = _qemu("mps2-an386", exe)
    assert "exit 0" in out and f"{len(cases)} cases, {QEMU_ROUNDS} rounds, 0 mismatches" in out, out[-3000:]


# ---- TFLite Micro: TSPTQ_LAYERNORM_2S_I16 with an int16 x ----------------------------------------------------------

def _tflm_or_skip():
    import os

    from tsptq.npu import tflm

    why = tflm.unavailable_reason()
    if why and os.environ.get("CI") != "true":
        pytest.skip(why)
    return tflm


def _ln16_model(c: Case, out_ch_shift: np.ndarray, in_zp: int = 0, in_shift: np.ndarray | None = None) -> bytes:
    """TSPTQ_LAYERNORM_2S_I16 alone on an int16 (1, rows, D) x, built by hand (each case's own parameters)."""
    from tsptq.tflite.writer import to_tflite

    return to_tflite(_ln16_intmodel(c, out_ch_shift, in_zp, in_shift))


def test_tflm_runs_an_int16_layernorm_as_the_python_model():
    tflm = _tflm_or_skip()
    rng = np.random.default_rng(11)
    for D, T in ((1, 3), (7, 4), (64, 5), (192, 3), (384, 2)):
        for mode in MODES:
            x = rows_of(rng, int(rng.integers(N_KINDS)), T, D)
            c = Case(f"D={D} {mode}", x, *params(rng, x, mode))
            ksh = rng.integers(0, 8, D).astype(np.int8)
            t = tflm.TflmModel(_ln16_model(c, ksh))
            t.it.set_input(c.x[None], 0)
            t.it.invoke()
            got = np.asarray(t.it.get_output(0))
            want = K.layernorm_2s_i16(c.x[None], 0, np.zeros(D, np.int8), c.g, c.bb, c.eps, c.out_zp, c.out_shift, ksh)
            assert got.dtype == np.int16 and np.array_equal(got.reshape(want.shape), want), c.name


@pytest.mark.parametrize("in_zp,shift_at,why", [
    (1, None, "an int16 x takes in_zp 0, not 1"),
    (-128, None, "an int16 x takes in_zp 0, not -128"),
    (0, 3, "channel 3: an int16 x takes in_shift 0, not 2"),
])
def test_tflm_refuses_an_int16_x_with_a_zero_point_or_shifts(in_zp, shift_at, why):
    tflm = _tflm_or_skip()
    rng = np.random.default_rng(12)
    x = rows_of(rng, 0, 2, 8)
    c = Case("refused", x, *params(rng, x, "typical"))
    in_shift = np.zeros(8, np.int8)
    if shift_at is not None:
        in_shift[shift_at] = 2
    with pytest.raises(tflm.TflmError) as e:
        t = tflm.TflmModel(_ln16_model(c, np.zeros(8, np.int8), in_zp, in_shift))
        t.it.set_input(c.x[None], 0)
        t.it.invoke()
    msg = str(e.value)
    assert "\n" not in msg and "TSPTQ_LAYERNORM_2S_I16" in msg and why in msg, msg


# ---- benchmarks/npu_cpu.py: the int16-input LayerNorm is a step of its own ---------------------------------------

def test_an_int16_input_layernorm_is_costed_as_the_ln16_step(npu_cpu):
    assert npu_cpu.cost_key("TSPTQ_LAYERNORM_2S_I16", "int16", "int16") == "TSPTQ_LAYERNORM_2S_I16 x16"
    assert npu_cpu.parts_of("TSPTQ_LAYERNORM_2S_I16 x16") == (None, "ln16")
    assert npu_cpu.cost_key("TSPTQ_LAYERNORM_2S_I16", "int16", "int8") == "TSPTQ_LAYERNORM_2S_I16"
    assert npu_cpu.cost_key("TSPTQ_LAYERNORM_2S_I16", "int16") == "TSPTQ_LAYERNORM_2S_I16"
    assert npu_cpu.parts_of("TSPTQ_LAYERNORM_2S_I16") == ("TSPTQ_LAYERNORM_2S", "ln_tail")


def ln16_step(npu_cpu, c: Case, ksh: np.ndarray):
    want = K.layernorm_2s_i16(c.x, 0, np.zeros(c.D, np.int8), c.g, c.bb, c.eps, c.out_zp, c.out_shift, ksh)
    lo, hi = (int(w) for w in np.array([c.eps], "<i8").view("<i4"))
    params = np.concatenate([c.g.view(np.uint8), c.bb.view(np.uint8)])
    return npu_cpu.Step(0, "ln16", [c.rows, c.D, lo, hi, c.out_zp, c.out_shift], [c.x, params, ksh],
                        want.astype(np.int16).tobytes())


def _ln16_intmodel(c: Case, ksh: np.ndarray, in_zp: int = 0, in_shift: np.ndarray | None = None):
    from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor

    D = c.D
    qp = QuantParams(np.array([2.0**-8], np.float32), np.zeros(1, np.int64))
    tensors = [Tensor("x", (1, c.rows, D), "int16", qp),
               Tensor("in_shift", (D,), "int8", None, np.zeros(D, np.int8) if in_shift is None else in_shift),
               Tensor("gamma_mul", (D,), "int32", None, c.g), Tensor("beta_bias", (D,), "int64", None, c.bb),
               Tensor("out_ch_shift", (D,), "int8", None, ksh), Tensor("y", (1, c.rows, D), "int16", qp)]
    op = Op("TSPTQ_LAYERNORM_2S_I16", [0, 1, 2, 3, 4], [5],
            {"in_zp": in_zp, "eps": c.eps, "out_zp": c.out_zp, "out_shift": c.out_shift})
    return IntModel(tensors, [op], [0], [5], {"method": "layernorm-x16"})


def test_the_ln16_step_is_built_from_the_variants_tensors(npu_cpu):
    rng = np.random.default_rng(22)
    x = rows_of(rng, 0, 3, 8)
    c = Case("step", x, *params(rng, x, "typical"))
    c.eps = 2**40 + 2**31 + 7
    ksh = rng.integers(0, 8, 8).astype(np.int8)
    im = _ln16_intmodel(c, ksh)
    y = K.layernorm_2s_i16(c.x[None], 0, np.zeros(8, np.int8), c.g, c.bb, c.eps, c.out_zp, c.out_shift, ksh)
    s = npu_cpu.StepInputs(im, {0: c.x[None], 5: y}, None, {})
    assert npu_cpu.op_key(im, 0) == "TSPTQ_LAYERNORM_2S_I16 x16"
    (st,) = npu_cpu.steps_for(s, [0])
    assert st.name == "ln16" and st.args == [3, 8, 2**31 + 7 - 2**32, 2**8, c.out_zp, c.out_shift]
    assert st.data[1].tobytes() == c.g.tobytes() + c.bb.tobytes() and st.expected == y.tobytes()
    assert npu_cpu.steps_file([st])  # packs (each integer an int32)
    bad = _ln16_intmodel(c, ksh, in_zp=1)
    with pytest.raises(npu_cpu.TsptqError, match="an int16 x takes in_zp 0 and every in_shift 0"):
        npu_cpu.steps_for(npu_cpu.StepInputs(bad, {0: c.x[None], 5: y}, None, {}), [0])


@pytest.mark.qemu
def test_the_ln16_step_computes_the_python_models_bytes_on_the_board(npu_cpu):
    why = npu_cpu.missing_tools()
    if why:
        pytest.skip(why)
    rng = np.random.default_rng(21)
    steps = []
    for D, rows, mode in ((5, 3, "typical"), (192, 7, "typical"), (384, 2, "extreme"), (4096, 1, "edges")):
        x = rows_of(rng, 0, rows, D)
        c = Case(f"D={D}", x, *params(rng, x, mode))
        if mode == "typical":
            c.eps = 3 * 2**33 + 5  # both words of eps
        steps.append(ln16_step(npu_cpu, c, rng.integers(0, 8, D).astype(np.int8)))
    assert all(len(set(st.expected)) > 1 for st in steps)
    counts = npu_cpu.run_steps(steps)  # every output's CRC checked against the Python model's bytes
    assert len(counts) == len(steps) and all(n > 0 for n in counts), counts
    wrong = steps[1]
    wrong.expected = bytes([wrong.expected[0] ^ 1]) + wrong.expected[1:]
    with pytest.raises(npu_cpu.TsptqError, match=r"step 0 \(ln16\) does not compute the integer model's bytes"):
        npu_cpu.run_steps([wrong])


# ---- instruction counts on mps3-an547 (python tests/test_layernorm_x16.py bench) -----------------------------------

BENCH_DRIVER = r"""
/* tq_layernorm_2s (int8 codes, in_zp -3, a tenth of the channels shifted by 1..3) and tq_layernorm_2s_x16 (the same
 * rows' aligned values as int16, and full-range int16 rows) on 197 rows of D channels with the lowering's kind of
 * parameters (gamma about 2^21, beta about 2^45, out_shift 47: the Helium output loop), timed by SysTick under
 * -icount shift=0 (31.25 instructions a tick): once over all rows, and row by row (as TFLM's op calls it). */
#include <stdint.h>
#include <string.h>
#include "cortex_m.h"
#include "kernels.h"
#include "qemu_fault.h"
""" + semihost_prologue("layernorm_x16 bench") + r"""
#define ROWS 197
#define MAXD 768
static int8_t Q[ROWS * MAXD], SH[MAXD], Y[ROWS * MAXD];
static int16_t X16[ROWS * MAXD], R16[ROWS * MAXD];
static int32_t G[MAXD];
static int64_t BB[MAXD];
static uint64_t s = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)(s >> 32); }

static void line(const char *what, int32_t D, int per_row, uint64_t ticks) {
    say(what); say(" D "); say_int(D); say(per_row ? " per-row" : " all-rows"); say(" ticks "); say_int((int64_t)ticks);
    say("\n");
}

int main(void) {
    static const int32_t DS[] = {192, 384, 768};
    int i, k, per_row;
    tq_cm_systick_start();
    for (k = 0; k < 3; k++) {
        const int32_t D = DS[k], n = ROWS * D;
        for (i = 0; i < D; i++) {
            SH[i] = (int8_t)(rnd() % 10u == 0 ? 1 + rnd() % 3u : 0);
            G[i] = (int32_t)((1u << 21) + rnd() % (1u << 20));
            BB[i] = ((int64_t)(int32_t)rnd()) << 13;
        }
        for (i = 0; i < n; i++) {
            Q[i] = (int8_t)rnd();
            X16[i] = (int16_t)((Q[i] + 3) * (1 << SH[i % D]));
            R16[i] = (int16_t)rnd();
        }
        for (per_row = 0; per_row < 2; per_row++) {
            uint64_t t0, t1;
            int32_t r;
            t0 = tq_cm_systick_ticks();
            if (per_row)
                for (r = 0; r < ROWS; r++) tq_layernorm_2s(Q + r * D, 1, D, -3, SH, G, BB, 5, 2, 47, Y + r * D);
            else tq_layernorm_2s(Q, ROWS, D, -3, SH, G, BB, 5, 2, 47, Y);
            t1 = tq_cm_systick_ticks();
            line("int8", D, per_row, t1 - t0);
#if !defined(NO_X16)
            t0 = tq_cm_systick_ticks();
            if (per_row) for (r = 0; r < ROWS; r++) tq_layernorm_2s_x16(X16 + r * D, 1, D, G, BB, 5, 2, 47, Y + r * D);
            else tq_layernorm_2s_x16(X16, ROWS, D, G, BB, 5, 2, 47, Y);
            t1 = tq_cm_systick_ticks();
            line("x16-aligned", D, per_row, t1 - t0);
            t0 = tq_cm_systick_ticks();
            if (per_row) for (r = 0; r < ROWS; r++) tq_layernorm_2s_x16(R16 + r * D, 1, D, G, BB, 5, 2, 47, Y + r * D);
            else tq_layernorm_2s_x16(R16, ROWS, D, G, BB, 5, 2, 47, Y);
            t1 = tq_cm_systick_ticks();
            line("x16-random", D, per_row, t1 - t0);
#endif
        }
    }
    tq_semihost_exit(0x20026);
}
"""


def bench(src_dir: Path = ROOT / "runtime_c" / "src", int8_only: bool = False, tmp: Path | None = None) -> dict:
    """Each line's instructions per element (ticks * 31.25 / (197 D)): {(what, D, per_row): instructions}."""
    import re
    import tempfile

    from tsptq.deploy.targets import load_target

    target = load_target("mps3-an547")
    tmp = Path(tempfile.mkdtemp()) if tmp is None else tmp
    mps3, common = ROOT / "targets" / "mps3-an547", ROOT / "targets" / "common"
    (tmp / "bench.c").write_text(BENCH_DRIVER)
    exe = tmp / "bench.elf"
    cmd = [target.cc, "-std=c99", "-Wall", "-Wextra", "-Werror", *target.cflags, *(["-DNO_X16"] if int8_only else []),
           "-I", str(src_dir), "-I", str(ROOT / "runtime_c" / "include"), "-I", str(common), str(tmp / "bench.c"),
           str(src_dir / "ops" / "layernorm_2s.c"), str(mps3 / "startup.c"), str(common / "cortex_m.c"),
           str(common / "qemu_fault.c"), "-T", str(mps3 / "mps3-an547.ld"), "-nostartfiles", "--specs=nano.specs",
           "-Wl,--gc-sections", "-o", str(exe), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    proc = subprocess.run([*target.qemu, "-serial", "null", "-kernel", str(exe)], capture_output=True, text=True,
                          timeout=900)
    out = {}
    for what, D, per, ticks in re.findall(r"^(\S+) D (\d+) (\S+) ticks (\d+)$", proc.stdout + proc.stderr, re.M):
        out[(what, int(D), per)] = int(ticks) * float(target.instructions_per_tick) / (197 * int(D))
    return out


if __name__ == "__main__" and sys.argv[1:2] == ["bench"]:
    src = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "runtime_c" / "src"
    for key, v in bench(src, int8_only=len(sys.argv) > 3).items():
        print(*key, f"{v:.2f} instructions/element")
