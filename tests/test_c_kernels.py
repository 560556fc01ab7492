"""The C kernels (runtime_c/) against the Python integer reference (tsptq.intmodel.kernels), byte for byte.

A test-backend-ops style matrix: every kernel, random shapes and random quantization parameters made the way
tsptq.intmodel.lower makes them, edge cases (extreme zero points, multipliers > 1, saturation, D = 1, one row, sizes that
leave SIMD tails), for every build variant: ``reference`` (portable C), ``avx2`` (when the CPU has it),
``avx512vnni`` (skipped when the CPU lacks AVX-512 VNNI) and ``amx`` (its tiles where the CPU has AMX-INT8 and Linux
grants the tile state, else its AVX-512 VNNI fallback; skipped without either) in this process, and ``sanitize`` /
``sanitize-avx2`` / ``sanitize-avx512vnni`` / ``sanitize-amx`` (ASan + UBSan, aborting on any report) in a child
Python that LD_PRELOADs the ASan runtime (this file run as a script). FULLY_CONNECTED and TSPTQ_FC_2S run both as
they are and with their weights prepacked first (tq_fc_prepack, as tsptq_prepare does in the AVX-512 VNNI and AMX
builds). Every output must be 100% equal.
"""
from __future__ import annotations

import ctypes
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tsptq.runtime import c_build
from tsptq.intmodel import kernels as K
from tsptq.intmodel.fixedpoint import fixed_multiplier, quantize_multiplier

ACC_LIMIT = 2**31 - 1
P = ctypes.c_void_p
I32, I64, SZ, INT = ctypes.c_int32, ctypes.c_int64, ctypes.c_size_t, ctypes.c_int
SIGNATURES = {
    "tq_conv2d_patches": [P, I32, I32, I32, I32, I32, P, I32, I32, P, P, P, I32, P],
    "tq_fully_connected": [P, I32, I32, I32, P, I32, P, P, P, I32, INT, I32, P],
    "tq_batch_matmul": [P, P, I32, I32, I32, I32, INT, I32, I32, I32, I32, I32, P],
    "tq_bmm_heads": [P, P, I64, I64, I32, I32, I32, I32, I32, I32, I32, P, P, P, P],
    "tq_bmm_bias": [P, P, I32, I32, I32, I64, I64, I32, I32, P, I64, I32, I32, I32, I32, P],
    "tq_add": [P, P, I32, I32, I32, I32, P, I32, I32, P],
    "tq_transpose": [P, P, I32, P, P],
    "tq_concatenation": [P, P, I32, I32, I32, P],
    "tq_strided_slice": [P, P, I32, P, P, P, P],
    "tq_layernorm_2s": [P, I32, I32, I32, P, P, P, I64, I32, I32, P],
    "tq_softmax_2s": [P, I32, I32, P, I32, I32, I32, I32, I32, I32, I32, P, P],
    "tq_softmax_2s_heads": [P, I64, I64, I32, I64, I32, P, I32, I32, I32, I32, I32, I32, I32, P, P],
    "tq_lookup": [P, SZ, INT, P, P],
    "tq_lookup_channels": [P, SZ, SZ, INT, P, P, P],
    "tq_fc_2s": [P, I32, I32, I32, I32, P, I32, I32, I32, I32, I32, P, I32, P, P, P, I32, P, P],
    "tq_fully_connected_pre": [P, I32, I32, I32, P, I32, P, P, P, I32, INT, I32, P, P],
    "tq_fc_2s_pre": [P, I32, I32, I32, I32, P, I32, I32, I32, I32, I32, P, I32, P, P, P, I32, P, P, P],
    "tq_fc_prepack": [P, I32, I32, P],
    "tq_fc_2s_prepack": [P, I32, I32, I32, P, P],
    "tq_bmm_2s": [P, P, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, P, P],
    "tq_relu": [P, I32, I32, I32, I32, I32, P],
    "tq_token_mean": [P, I32, I32, I32, I32, I32, P],
    "tq_quantize_multiplier": [ctypes.c_double, P, P],
}

pytestmark = pytest.mark.cc  # every test here builds the kernels


def load(path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, args in SIGNATURES.items():
        f = getattr(lib, name)
        f.argtypes, f.restype = args, None
    lib.tq_fc_prepack_size.argtypes, lib.tq_fc_prepack_size.restype = [I32, I32], ctypes.c_uint64
    lib.tq_fc_2s_prepack_size.argtypes, lib.tq_fc_2s_prepack_size.restype = [I32, I32, I32, P], ctypes.c_uint64
    return lib


def prepacked(lib, w, I, O, fc_2s=None):
    """w's prepacked bytes (tq_fc_prepack; fc_2s = (in_kind, in_shift): tq_fc_2s_prepack) in a 64-byte aligned
    buffer, every byte first set to garbage, or None where the build does not prepack; and the allocation that holds
    them."""
    code = () if fc_2s is None else (fc_2s[0], ptr(fc_2s[1]))
    n = int((lib.tq_fc_2s_prepack_size if code else lib.tq_fc_prepack_size)(I, O, *code))
    if n == 0:
        return None, None
    raw = np.empty(n + 64, np.uint8)
    buf = raw[(-raw.ctypes.data) % 64:][:n]
    buf[:] = 0xA5
    (lib.tq_fc_2s_prepack if code else lib.tq_fc_prepack)(ptr(w), I, O, *code, ptr(buf))
    return buf, raw


def ptr(a):
    return None if a is None else a.ctypes.data


def arr(a, dtype):
    """A fresh, exactly sized C-contiguous buffer (so ASan's redzones sit right after the data)."""
    return np.array(a, dtype=dtype, order="C", copy=True)


# --- parameters the way tsptq.intmodel.lower makes them ----------------------------------------------------------------------

def f32(x):
    return np.asarray(x, np.float32)


def log_uniform(rng, lo, hi, n=None):
    return f32(10.0 ** rng.uniform(lo, hi, n))


def zero_point(rng, edge):
    return int(rng.choice([-128, 127, -127, 126])) if edge else int(rng.integers(-128, 128))


def out_scale(rng, unit, acc, edge):
    """An output scale for an accumulator `acc` (integers) of real unit `unit`: usually about 8 to 50 codes per
    standard deviation; on edge cases a multiplier > 1 (shift > 0, saturation) or a scale so coarse that everything
    rounds to the zero point."""
    std = max(float(np.std(np.asarray(acc, np.float64))), 1.0)
    r = rng.random()
    if edge and r < 0.25:
        return f32(unit * 10.0 ** rng.uniform(-1.3, -0.05))
    if edge and r < 0.45:
        return f32(unit * std * 10.0 ** rng.uniform(2, 4))
    return f32(unit * std / rng.uniform(8, 50))


def rand_bias(rng, O, fan_in):
    """A bias about as large as the accumulator's spread (x - zp ~ 150, w ~ 74 rms)."""
    return arr(rng.normal(0, 150 * 74 * math.sqrt(fan_in), O).clip(-(2**30), 2**30), np.int32)


def acc_of(a, b):
    return a.astype(np.float64) @ b.astype(np.float64)


def sizes(rng, edge, lo, hi):
    if edge == "big":  # the last case of each kernel: large enough for the SIMD main loops and blocking
        return 3 * hi + int(rng.integers(0, 3))
    if edge:
        return int(rng.choice([lo, lo + 1, 15, 16, 17, 31, 33, hi]))
    return int(rng.integers(lo, hi + 1))


# --- the cases: each returns (name, C output bytes, Python output bytes) --------------------------------------------

def case_fully_connected(lib, rng, edge, pre=False):
    rows, I, O = sizes(rng, edge, 1, 70), sizes(rng, edge, 1, 200), sizes(rng, edge, 1, 40)
    x = arr(rng.integers(-128, 128, (rows, I)), np.int8)
    w = arr(rng.integers(-128, 128, (O, I)), np.int8)
    if edge and rng.random() < 0.3:
        x[:] = rng.choice([-128, 127])
        w[:] = rng.choice([-128, 127])
    in_zp, out_zp = zero_point(rng, edge), zero_point(rng, edge)
    s_in = log_uniform(rng, -3, -1)
    mode = rng.integers(3)  # 0: per-channel, 1: per-tensor (MBQM), 2: per-channel rounding with one multiplier
    per_channel = mode != 1
    w_scale = log_uniform(rng, -2.2, -1.8, O if mode == 0 else 1)
    s_out = out_scale(rng, float(s_in) * float(np.median(w_scale)), acc_of(x.astype(np.int64) - in_zp, w.T), edge)
    mult, shift = K.builtin_multipliers(s_in, w_scale, s_out)
    mult, shift = arr(mult, np.int32), arr(shift, np.int32)
    bias = None if rng.random() < 0.2 else rand_bias(rng, O, I)
    y = np.empty((rows, O), np.int8)
    if pre:  # the weights prepacked once (tq_fc_prepack), as tsptq_prepare does
        packed, _keep = prepacked(lib, w, I, O)
        lib.tq_fully_connected_pre(ptr(x), rows, I, in_zp, ptr(w), O, ptr(bias), ptr(mult), ptr(shift), len(mult),
                                   int(per_channel), out_zp, ptr(y), ptr(packed))
    else:
        lib.tq_fully_connected(ptr(x), rows, I, in_zp, ptr(w), O, ptr(bias), ptr(mult), ptr(shift), len(mult),
                               int(per_channel), out_zp, ptr(y))
    want = K.fully_connected(x, in_zp, w, bias, mult.astype(np.int64), shift.astype(np.int64), out_zp, per_channel)
    return f"fc rows={rows} I={I} O={O} mode={mode}{' prepacked' if pre else ''}", y, want


def case_conv2d_patches(lib, rng, edge):
    p = int(rng.choice([1, 2, 3, 4, 7] if edge else [2, 4, 5, 8]))
    B = int(rng.integers(1, 3))
    H, W = p * int(rng.integers(1, 5)) + int(rng.integers(0, p)), p * int(rng.integers(1, 5)) + int(rng.integers(0, p))
    C, O = sizes(rng, edge, 1, 6), sizes(rng, edge, 1, 24)
    x = arr(rng.integers(-128, 128, (B, H, W, C)), np.int8)
    w = arr(rng.integers(-128, 128, (O, p, p, C)), np.int8)
    in_zp, out_zp = zero_point(rng, edge), zero_point(rng, edge)
    s_in, w_scale = log_uniform(rng, -3, -1), log_uniform(rng, -2.2, -1.8, O)
    s_out = out_scale(rng, float(s_in) * float(np.median(w_scale)),
                      acc_of(x[0, :p, :p].reshape(1, -1).astype(np.int64) - in_zp, w.reshape(O, -1).T), edge)
    mult, shift = (arr(v, np.int32) for v in K.builtin_multipliers(s_in, w_scale, s_out))
    bias = None if rng.random() < 0.2 else rand_bias(rng, O, p * p * C)
    y = np.empty((B, H // p, W // p, O), np.int8)
    lib.tq_conv2d_patches(ptr(x), B, H, W, C, in_zp, ptr(w), O, p, ptr(bias), ptr(mult), ptr(shift), out_zp, ptr(y))
    want = K.conv2d_patches(x, in_zp, w, bias, mult.astype(np.int64), shift.astype(np.int64), out_zp, p)
    return f"conv B={B} H={H} W={W} C={C} O={O} p={p}", y, want


def case_batch_matmul(lib, rng, edge):
    batch, N, Kd, M = int(rng.integers(1, 4)), sizes(rng, edge, 1, 40), sizes(rng, edge, 1, 70), sizes(rng, edge, 1, 40)
    adj_y = bool(rng.integers(2))
    a = arr(rng.integers(-128, 128, (batch, N, Kd)), np.int8)
    b = arr(rng.integers(-128, 128, (batch, M, Kd) if adj_y else (batch, Kd, M)), np.int8)
    a_zp, b_zp, out_zp = zero_point(rng, edge), zero_point(rng, edge), zero_point(rng, edge)
    s_a, s_b = log_uniform(rng, -2, 0), log_uniform(rng, -2, 0)
    bb = b[0].astype(np.int64) - b_zp
    s_out = out_scale(rng, float(s_a) * float(s_b), acc_of(a[0].astype(np.int64) - a_zp, bb.T if adj_y else bb), edge)
    mult, shift = (int(v[0]) for v in K.builtin_multipliers(s_a, s_b, s_out))
    y = np.empty((batch, N, M), np.int8)
    lib.tq_batch_matmul(ptr(a), ptr(b), batch, N, Kd, M, int(adj_y), a_zp, b_zp, mult, shift, out_zp, ptr(y))
    want = K.batch_matmul(a, a_zp, b, b_zp, mult, shift, out_zp, adj_y)
    return f"bmm batch={batch} N={N} K={Kd} M={M} adj_y={adj_y}", y, want


def row_range(rng, rows, edge):
    """Rows [r0, r1) of `rows` for a kernel that runs a part of the thread pool: every row, or a random run of them
    (starting and ending inside a head's rows)."""
    if edge or rows < 2 or rng.random() < 0.3:
        return 0, rows
    r0 = int(rng.integers(0, rows))
    return r0, int(rng.integers(r0 + 1, rows + 1))


def in_rows(want, got_init, r0, r1):
    """The whole output as a kernel writing rows [r0, r1) leaves it: those rows of `want`, elsewhere its first bytes."""
    out = got_init.copy()
    out.reshape(-1, out.shape[-1])[r0:r1] = np.asarray(want).astype(out.dtype).reshape(-1, out.shape[-1])[r0:r1]
    return out


def case_bmm_heads(lib, rng, edge):
    B, H = int(rng.integers(1, 3)), int(rng.integers(1, 5))
    N, Kd, M = sizes(rng, edge, 1, 40), sizes(rng, edge, 1, 70), sizes(rng, edge, 1, 40)
    a = arr(rng.integers(-128, 128, (B, H, N, Kd)), np.int8)
    b = arr(rng.integers(-128, 128, (B, H, M, Kd)), np.int8)
    a_zp, b_zp = zero_point(rng, edge), zero_point(rng, edge)
    out_zp = arr([zero_point(rng, edge) for _ in range(H)], np.int32)
    s_a, s_b = log_uniform(rng, -2, 0), log_uniform(rng, -2, 0)
    s_out = f32([out_scale(rng, float(s_a) * float(s_b),
                           acc_of(a[0, h].astype(np.int64) - a_zp, (b[0, h].astype(np.int64) - b_zp).T), edge)
                 for h in range(H)])
    mult, shift = (arr(v, np.int32) for v in K.bmm_heads_multipliers(s_a, s_b, s_out))
    r0, r1 = row_range(rng, B * H * N, edge)
    y0 = arr(rng.integers(-128, 128, (B, H, N, M)), np.int8)  # rows outside [r0, r1) must keep these bytes
    y = y0.copy()
    lib.tq_bmm_heads(ptr(a), ptr(b), r0, r1, N, Kd, M, H, 1, a_zp, b_zp, ptr(mult), ptr(shift), ptr(out_zp), ptr(y))
    want = K.bmm_heads(a, a_zp, b, b_zp, mult, shift, out_zp)
    return f"bmm_heads B={B} H={H} N={N} K={Kd} M={M} rows={r0}:{r1}", y, in_rows(want, y0, r0, r1)


def case_bmm_bias(lib, rng, edge):
    """TSPTQ_BMM_BIAS (Swin's scores): a (B, H, N, K) . b (B, H, M, K)^T << bias_shift + a bias (H, N, M) or (N, M),
    rounded once; rows [r0, r1) over every batch, most often a run that starts and ends inside a batch (the SIMD
    paths pair rows of one batch: odd runs, runs across batch boundaries). Sometimes Swin's own shapes (windows of
    4 x 4 or 7 x 7 tokens, head dims 16 or 32)."""
    B, H = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    if not edge and rng.random() < 0.25:
        N = M = int(rng.choice([16, 49]))
        Kd = int(rng.choice([16, 32]))
    else:
        N, Kd, M = sizes(rng, edge, 1, 40), sizes(rng, edge, 1, 70), sizes(rng, edge, 1, 40)
    a = arr(rng.integers(-128, 128, (B, H, N, Kd)), np.int8)
    b = arr(rng.integers(-128, 128, (B, H, M, Kd)), np.int8)
    a_zp, b_zp, out_zp = zero_point(rng, edge), zero_point(rng, edge), zero_point(rng, edge)
    bound = Kd * 255 * 255
    e = int(rng.integers(0, max(s for s in range(31) if bound << s <= ACC_LIMIT) + 1))
    acc = acc_of(a[0, 0].astype(np.int64) - a_zp, (b[0, 0].astype(np.int64) - b_zp).T)
    lim = ACC_LIMIT - (bound << e)  # |(acc << e) + bias| < 2^31
    if not edge:
        lim = min(lim, int(max(float(np.std(acc)), 1.0) * 2.0**e * 2))
    bias = arr(rng.integers(-lim, lim + 1, (H, N, M) if rng.random() < 0.7 else (N, M)), np.int32)
    s_a, s_b = log_uniform(rng, -2, 0), log_uniform(rng, -2, 0)
    s_out = out_scale(rng, float(s_a) * float(s_b), acc, edge)
    mult, shift = quantize_multiplier(float(s_a) * float(s_b) / float(s_out))
    while 31 - shift + e > 62 and e > 0:
        e -= 1
    if not (-31 <= shift <= 31 and 1 <= 31 - shift + e <= 62):
        mult, shift = 0, 0
    rows = B * H * N
    r0, r1 = 0, rows
    if rows > 1 and rng.random() >= 0.3:
        r0 = int(rng.integers(0, rows))
        r1 = int(rng.integers(r0 + 1, rows + 1))
    y0 = arr(rng.integers(-128, 128, (B, H, N, M)), np.int8)  # rows outside [r0, r1) must keep these bytes
    y = y0.copy()
    lib.tq_bmm_bias(ptr(a), ptr(b), N, M, Kd, r0, r1, a_zp, b_zp, ptr(bias), bias.size, e, mult, shift, out_zp,
                    ptr(y))
    want = K.bmm_bias(a, a_zp, b, b_zp, bias, e, mult, shift, out_zp)
    return (f"bmm_bias B={B} H={H} N={N} K={Kd} M={M} bias={bias.shape} e={e} rows={r0}:{r1}", y,
            in_rows(want, y0, r0, r1))


def case_softmax_2s_heads(lib, rng, edge):
    """TSPTQ_SOFTMAX_2S over x (B, L, R, N) with one exp table per head (L of them, or one), rows [r0, r1)."""
    B, L, R = int(rng.integers(1, 3)), int(rng.integers(1, 5)), sizes(rng, edge, 1, 12)
    N = int(rng.choice([1, 2, 17, 197])) if edge else int(rng.integers(1, 120))
    tables = 1 if rng.random() < 0.25 else L
    out_kind = int(rng.choice([K.UNIFORM, K.TWO_SCALE, K.LOG2]))
    x = arr(rng.integers(-128, 128, (B, L, R, N)), np.int8)
    steps = [float(v) for v in log_uniform(rng, -2.5, 0, tables)]
    lut = arr(np.concatenate([np.round(np.exp(-s * np.arange(256, dtype=np.float64)) * 2.0**K.EXP_FRAC_BITS)
                              for s in steps]), np.int32)
    mult = shift = out_zp = m = signed = 0
    bits = 8
    if out_kind == K.UNIFORM:
        out_zp = -128 if rng.random() < 0.7 else zero_point(rng, edge)
        mult, shift = fixed_multiplier(1.0 / (2.0**K.PROB_FRAC_BITS * float(f32(10.0 ** rng.uniform(-4, -1.5)))))
    elif out_kind == K.TWO_SCALE:
        m, signed = int(rng.integers(0, 9)), int(rng.integers(2))
        fine = float(f32(10.0 ** rng.uniform(-4.5, -2)))
        mult, shift = fixed_multiplier(1.0 / (2.0**K.PROB_FRAC_BITS * fine), K.TWO_SCALE_FRAC_BITS)
    else:
        bits = int(rng.choice([8, 8, 4]))
    r0, r1 = row_range(rng, B * L * R, edge)
    y0 = arr(rng.integers(0, 256, (B, L, R, N)), np.uint8)
    y = y0.copy()
    scratch = np.empty(N, np.int32)
    lib.tq_softmax_2s_heads(ptr(x), r0, r1, N, R if tables > 1 else int(rng.integers(1, 9)), tables, ptr(lut),
                            out_kind, mult, shift, out_zp, bits, m, signed, ptr(y), ptr(scratch))
    want = K.softmax_2s(x, lut, out_kind, mult, shift, out_zp, bits, m, bool(signed))
    return (f"softmax_2s_heads B={B} L={L} R={R} N={N} tables={tables} kind={out_kind} rows={r0}:{r1}", y,
            in_rows(want, y0, r0, r1))


def case_add(lib, rng, edge):
    rows, C = sizes(rng, edge, 1, 30), sizes(rng, edge, 1, 100)
    per_channel = bool(rng.integers(2))
    a = arr(rng.integers(-128, 128, (rows, C)), np.int8)
    b = arr(rng.integers(-128, 128, (rows, C)), np.int8)
    a_zp, b_zp, out_zp = zero_point(rng, edge), zero_point(rng, edge), zero_point(rng, edge)
    n = C if per_channel else 1
    sa, sb = log_uniform(rng, -3, 0, n), log_uniform(rng, -3, 0, n)
    if per_channel:  # O-2SF: a base step times powers of two per channel
        sa = f32(sa[0] * 2.0 ** rng.integers(0, 4, n))
        if rng.random() < 0.3:  # b's steps below a's in every channel: a's rescaling is 1/2 throughout (add.c add_unit16)
            sb = f32(sa.min() * 10.0 ** rng.uniform(-2, -0.05, n))
    so = f32(np.maximum(sa, sb) * 10.0 ** rng.uniform(-1.5 if edge else -0.3, 0.7, n))
    params = arr(K.add_params(sa, sb, so), np.int32)
    y = np.empty((rows, C), np.int8)
    lib.tq_add(ptr(a), ptr(b), rows, C, a_zp, b_zp, ptr(params), n, out_zp, ptr(y))
    want = K.add(a, a_zp, b, b_zp, params.astype(np.int64), out_zp)
    return f"add rows={rows} C={C} per_channel={per_channel}", y, want


def case_transpose(lib, rng, edge):
    rank = int(rng.integers(1, 7))
    shape = [int(v) for v in rng.integers(1, 5 if rank > 3 else 9, rank)]
    perm = [int(v) for v in rng.permutation(rank)]
    if edge and rank >= 2:  # the attention layout: a contiguous last axis of a head's 16/32/64 channels (fixed copies)
        shape[-1] = int(rng.choice([16, 32, 64]))
        perm = [int(v) for v in rng.permutation(rank - 1)] + [rank - 1]
    x = arr(rng.integers(0, 256, shape), np.uint8)
    y = np.empty([shape[p] for p in perm], np.uint8)
    shape_a, perm_a = arr(shape, np.int32), arr(perm, np.int32)  # kept alive across the call
    lib.tq_transpose(ptr(x), ptr(shape_a), rank, ptr(perm_a), ptr(y))
    return f"transpose {shape} {perm}", y, np.transpose(x, perm)


def case_concatenation(lib, rng, edge):
    rank = int(rng.integers(1, 5))
    axis = int(rng.integers(0, rank))
    base = [int(v) for v in rng.integers(1, 6, rank)]
    n = int(rng.integers(1, 4))
    xs, shapes = [], []
    for _ in range(n):
        s = list(base)
        s[axis] = int(rng.integers(1, 6))
        if axis != 0 and rank > 1 and base[0] > 1 and rng.random() < 0.3:
            s[0] = 1  # broadcast along the leading dim (the class token)
        shapes.append(arr(s, np.int32))
        xs.append(arr(rng.integers(0, 256, s), np.uint8))
    lead = max(x.shape[0] for x in xs)  # the output's leading dim (inputs with 1 there are broadcast)
    want = np.concatenate([np.broadcast_to(x, [lead] + list(x.shape[1:])) if axis != 0 else x for x in xs], axis)
    y = np.empty(want.shape, np.uint8)
    xp = (P * n)(*[ptr(x) for x in xs])
    sp = (P * n)(*[ptr(s) for s in shapes])
    lib.tq_concatenation(ctypes.cast(xp, P), ctypes.cast(sp, P), n, rank, axis, ptr(y))
    return f"concat {[s.tolist() for s in shapes]} axis={axis}", y, want


def case_strided_slice(lib, rng, edge):
    rank = int(rng.integers(1, 6))
    shape = [int(v) for v in rng.integers(1, 8, rank)]
    begin = [int(rng.integers(-d, d + 1)) for d in shape]
    end = [int(rng.integers(-d, d + 2)) for d in shape]
    strides = [int(rng.integers(1, 4)) for _ in shape]
    x = arr(rng.integers(0, 256, shape), np.uint8)
    want = x[tuple(slice(b, e, s) for b, e, s in zip(begin, end, strides))]
    y = np.empty(max(want.size, 1), np.uint8)
    keep = [arr(v, np.int32) for v in (shape, begin, end, strides)]  # kept alive across the call
    lib.tq_strided_slice(ptr(x), ptr(keep[0]), rank, ptr(keep[1]), ptr(keep[2]), ptr(keep[3]), ptr(y))
    return f"slice {shape} {begin}:{end}:{strides}", y[:want.size], want


def case_layernorm_2s(lib, rng, edge):
    rows = sizes(rng, edge, 1, 20)
    D = int(rng.choice([1, 2, 3, 64, 384, 1024, 1536, 2048, 2049, 3072, 4096])) if edge else int(rng.integers(1, 400))
    in_zp, out_zp = zero_point(rng, edge), zero_point(rng, edge)
    pow2 = bool(rng.integers(2))
    shifts = arr(rng.integers(0, 8, D) * (rng.random(D) < 0.1) if pow2 else np.zeros(D), np.int8)
    x = arr(rng.integers(-128, 128, (rows, D)), np.int8)
    if edge and rng.random() < 0.4:
        x[rng.integers(rows)] = rng.integers(-128, 128)  # a constant row: zero variance
    s = float(log_uniform(rng, -2, 0))
    gamma = rng.normal(1.0, 0.5, D)
    beta = rng.normal(0.0, 0.5, D)
    s_out = np.broadcast_to(f32(log_uniform(rng, -2.5, -1) * (2.0 ** rng.integers(0, 3, D) if pow2 else 1.0)),
                            (D,)).astype(np.float64)
    ratio = np.abs(gamma / s_out).max()
    g_bits = 30 - max(0, math.ceil(math.log2(max(ratio, 1e-30))))
    out_shift = K.NORM_FRAC_BITS + g_bits
    if out_shift > 62:
        g_bits, out_shift = 62 - K.NORM_FRAC_BITS, 62
    g = arr(np.round(gamma / s_out * 2.0**g_bits), np.int32)
    bb = arr(np.round(beta / s_out * 2.0**out_shift), np.int64)
    eps = 0 if edge and rng.random() < 0.3 else min(round(D * D * 1e-6 / s**2), 2**62)
    y = np.empty((rows, D), np.int8)
    lib.tq_layernorm_2s(ptr(x), rows, D, in_zp, ptr(shifts), ptr(g), ptr(bb), eps, out_zp, out_shift, ptr(y))
    want = K.layernorm_2s(x, in_zp, shifts, g, bb, eps, out_zp, out_shift)
    return f"layernorm rows={rows} D={D} pow2={pow2} eps={eps}", y, want


def case_softmax_2s(lib, rng, edge, out_kind=None):
    rows, N = sizes(rng, edge, 1, 12), (int(rng.choice([1, 2, 197, 2047])) if edge else int(rng.integers(1, 260)))
    if out_kind is None:
        out_kind = int(rng.choice([K.UNIFORM, K.TWO_SCALE, K.LOG2]))
    x = arr(rng.integers(-128, 128, (rows, N)), np.int8)
    if edge and rng.random() < 0.3:
        x[0] = 127  # a uniform row
    step = float(log_uniform(rng, -2.5, 0))
    lut = arr(np.round(np.exp(-step * np.arange(256, dtype=np.float64)) * 2.0**K.EXP_FRAC_BITS), np.int32)
    mult = shift = out_zp = m = signed = 0
    bits = 8
    if out_kind == K.UNIFORM:
        out_zp = -128 if rng.random() < 0.7 else zero_point(rng, edge)
        s_out = float(f32(10.0 ** rng.uniform(-4, -1.5)))
        mult, shift = fixed_multiplier(1.0 / (2.0**K.PROB_FRAC_BITS * s_out))
    elif out_kind == K.TWO_SCALE:
        m, signed = int(rng.integers(0, 9)), int(rng.integers(2))
        fine = float(f32(10.0 ** rng.uniform(-4.5, -2)))
        mult, shift = fixed_multiplier(1.0 / (2.0**K.PROB_FRAC_BITS * fine), K.TWO_SCALE_FRAC_BITS)
    else:
        bits = int(rng.choice([8, 8, 4]))
    y = np.empty((rows, N), np.uint8)
    scratch = np.empty(N, np.int32)
    lib.tq_softmax_2s(ptr(x), rows, N, ptr(lut), out_kind, mult, shift, out_zp, bits, m, signed, ptr(y), ptr(scratch))
    want = K.softmax_2s(x, lut, out_kind, mult, shift, out_zp, bits, m, bool(signed))
    return f"softmax rows={rows} N={N} kind={out_kind} m={m} signed={signed} bits={bits}", y, want


def case_lookup(lib, rng, edge):
    n = sizes(rng, edge, 1, 5000)
    signed = bool(rng.integers(2))
    x = arr(rng.integers(-128, 128, n) if signed else rng.integers(0, 256, n), np.int8 if signed else np.uint8)
    lut = arr(rng.integers(0, 256, 256), np.uint8)
    y = np.empty(n, np.uint8)
    lib.tq_lookup(ptr(x), n, int(signed), ptr(lut), ptr(y))
    return f"lookup n={n} signed={signed}", y, K.lookup(x, lut)


def case_lookup_channels(lib, rng, edge):
    rows, channels = sizes(rng, edge, 1, 40), sizes(rng, edge, 1, 300)
    signed = bool(rng.integers(2))
    x = arr(rng.integers(-128, 128, (rows, channels)) if signed else rng.integers(0, 256, (rows, channels)),
            np.int8 if signed else np.uint8)
    in_shift = arr(rng.integers(0, int(rng.integers(1, 9)), channels), np.int8)  # levels 0..7
    lut = arr(rng.integers(0, 256, 256 * (int(in_shift.max()) + 1)), np.uint8)
    y = np.empty((rows, channels), np.uint8)
    lib.tq_lookup_channels(ptr(x), rows, channels, int(signed), ptr(lut), ptr(in_shift), ptr(y))
    return f"lookup_channels rows={rows} channels={channels} signed={signed}", y, K.lookup(x, lut, in_shift)


def case_fc_2s(lib, rng, edge, kind=None, pre=False, coarse=None):
    """coarse: for two_scale, the probability of a coarse code (default: uniform random codes, about half coarse);
    a small one takes the x86 sparse form (vnni.h tqv_sparse), rows with more coarse groups than it holds the two
    planes."""
    if kind is None:
        kind = int(rng.choice([K.UNIFORM, K.CHANNEL_POW2, K.TWO_SCALE, K.SIGN_SPLIT]))
    rows, I, O = sizes(rng, edge, 1, 30), sizes(rng, edge, 1, 300), sizes(rng, edge, 1, 40)
    in_zp, out_zp, bits, m, signed = 0, zero_point(rng, edge), 8, 0, 0
    in_shift = arr(np.zeros(I), np.int8)
    neg_mult = neg_shift = 0
    if kind in (K.UNIFORM, K.CHANNEL_POW2):
        x = arr(rng.integers(-128, 128, (rows, I)), np.int8).view(np.uint8)
        in_zp = zero_point(rng, edge)
        if kind == K.CHANNEL_POW2:
            kmax = min(7, int(math.floor(math.log2(ACC_LIMIT / (I * 255 * 128)))))
            in_shift = arr(rng.integers(0, kmax + 1, I) * (rng.random(I) < 0.3), np.int8)
        max_d = 255 << int(in_shift.max())
    else:
        x = arr(rng.integers(0, 256, (rows, I)), np.uint8)
        if coarse is not None:
            p = float(rng.choice(coarse))
            x = arr(rng.integers(0, 128, (rows, I)) | np.where(rng.random((rows, I)) < p, 128, 0), np.uint8)
        if kind == K.TWO_SCALE:
            signed = int(rng.integers(2))
            m = min(8, int(rng.integers(0, 9)), int(math.floor(math.log2(ACC_LIMIT / (I * 127 * 128)))))
            max_d = 127 << m
        else:
            ratio = float(f32(10.0 ** rng.uniform(-2, 0.5)))  # step_neg / step_pos (> 1: shift > 0)
            neg_mult, neg_shift = quantize_multiplier(ratio)
            max_d = 127
    assert I * max_d * 128 <= ACC_LIMIT
    x_c = x.view(np.int8) if kind in (K.UNIFORM, K.CHANNEL_POW2) else x
    w = arr(rng.integers(-128, 128, (O, I)), np.int8)
    unit = float(log_uniform(rng, -3, -1))
    w_scale = log_uniform(rng, -2.2, -1.8, O)
    d = K.decode_operand(x_c, kind if kind != K.SIGN_SPLIT else K.TWO_SCALE, in_zp, in_shift, bits, m, signed, 0)
    s_out = f32(out_scale(rng, unit * float(np.median(w_scale)), acc_of(d, w.T), edge) * 2.0 ** rng.integers(0, 3, O))
    mult, shift = (arr(v, np.int32) for v in K.builtin_multipliers(unit, w_scale, s_out))
    bias = rand_bias(rng, O, I * max_d // 128)
    y = np.empty((rows, O), np.int8)
    scratch = np.empty(I, np.int32)
    if pre:
        packed, _keep = prepacked(lib, w, I, O, (kind, in_shift))
        lib.tq_fc_2s_pre(ptr(x), rows, I, kind, in_zp, ptr(in_shift), bits, m, signed, neg_mult, neg_shift, ptr(w), O,
                         ptr(bias), ptr(mult), ptr(shift), out_zp, ptr(y), ptr(scratch), ptr(packed))
    else:
        lib.tq_fc_2s(ptr(x), rows, I, kind, in_zp, ptr(in_shift), bits, m, signed, neg_mult, neg_shift, ptr(w), O,
                     ptr(bias), ptr(mult), ptr(shift), out_zp, ptr(y), ptr(scratch))
    want = K.fc_2s(x_c, kind, in_zp, in_shift, bits, m, bool(signed), neg_mult, neg_shift, w, bias,
                   mult.astype(np.int64), shift.astype(np.int64), out_zp)
    return f"fc_2s kind={kind} rows={rows} I={I} O={O} m={m} signed={signed}{' prepacked' if pre else ''}", y, want


def case_bmm_2s(lib, rng, edge, kind=None, coarse=None):
    """coarse: as case_fc_2s's (a softmax's two-scale probabilities are mostly fine codes)."""
    if kind is None:
        kind = int(rng.choice([K.TWO_SCALE, K.LOG2]))
    batch, N, M = int(rng.integers(1, 4)), sizes(rng, edge, 1, 80), sizes(rng, edge, 1, 70)
    b = arr(rng.integers(-128, 128, (batch, N, M)), np.int8)
    b_zp, out_zp = zero_point(rng, edge), zero_point(rng, edge)
    m = signed = frac = 0
    if kind == K.LOG2:
        frac = min(15, int(math.floor(math.log2(ACC_LIMIT / (N * 255)))))
        a = arr(np.where(rng.random((batch, N, N)) < 0.4, 255, rng.integers(0, 24, (batch, N, N))), np.uint8)
        unit = 2.0**-frac
    else:
        signed = int(rng.integers(2))
        m = min(8, int(rng.integers(0, 9)), int(math.floor(math.log2(ACC_LIMIT / (N * 127 * 255)))))
        a = arr(rng.integers(0, 256, (batch, N, N)), np.uint8)
        if coarse is not None:
            p = float(rng.choice(coarse))
            a = arr(rng.integers(0, 128, (batch, N, N)) | np.where(rng.random((batch, N, N)) < p, 128, 0), np.uint8)
        unit = float(log_uniform(rng, -4, -2))
    s_v = log_uniform(rng, -2, 0)
    d = K.decode_operand(a[0], kind, 0, None, 8, m, bool(signed), frac)
    s_out = out_scale(rng, unit * float(s_v), acc_of(d, b[0].astype(np.int64) - b_zp), edge)
    mult, shift = (int(v[0]) for v in K.builtin_multipliers(unit, s_v, s_out))
    y = np.empty((batch, N, M), np.int8)
    scratch = np.empty(N, np.int32)
    lib.tq_bmm_2s(ptr(a), ptr(b), batch, N, M, kind, 8, m, signed, frac, b_zp, mult, shift, out_zp, ptr(y),
                  ptr(scratch))
    want = K.bmm_2s(a, kind, 8, m, bool(signed), frac, b, b_zp, mult, shift, out_zp)
    return f"bmm_2s kind={kind} batch={batch} N={N} M={M} m={m} frac={frac}", y, want


def case_relu(lib, rng, edge):
    from tsptq.intmodel.ops import relu_int8, relu_multiplier

    n = sizes(rng, edge, 1, 300)
    x = arr(rng.integers(-128, 128, n), np.int8)
    x[: min(n, 2)] = [-128, 127][: min(n, 2)]
    in_zp, out_zp = zero_point(rng, edge), zero_point(rng, edge)
    s_in = log_uniform(rng, -3, -1)
    s_out = f32(s_in * 10.0 ** rng.uniform(-6.5, 2) if edge else s_in * 10.0 ** rng.uniform(-1, 1))
    mult_shift = relu_multiplier(s_in, s_out) or relu_multiplier(s_in, s_in)  # a shift above 23 is refused
    y = np.empty(n, np.int8)
    lib.tq_relu(ptr(x), n, in_zp, *mult_shift, out_zp, ptr(y))
    return f"relu n={n} shift={mult_shift[1]}", y, relu_int8(x, in_zp, *mult_shift, out_zp)


def case_token_mean(lib, rng, edge):
    B, T, D = int(rng.integers(1, 3)), sizes(rng, edge, 1, 300), sizes(rng, edge, 1, 70)
    first = int(rng.integers(0, min(T, 3)))
    zp = zero_point(rng, edge)
    x = arr(rng.integers(-128, 128, (B, T, D)), np.int8)
    if edge:  # extreme codes: the largest sums (ties of the rounding come with small token counts, T = 2, 3)
        x[:, :, : D // 2 + 1] = rng.choice(np.array([-128, 127], np.int8), (B, T, D // 2 + 1))
    y = np.empty((B, 1, D), np.int8)
    lib.tq_token_mean(ptr(x), B, T, D, first, zp, ptr(y))
    return f"token_mean B={B} T={T} D={D} first={first} zp={zp}", y, K.token_mean(x, first, zp)


def _pick(rng, edges, lo, hi, p_edge=0.5):
    """One of `edges` (with probability p_edge) or a uniform integer in [lo, hi]."""
    return int(rng.choice(edges)) if rng.random() < p_edge else int(rng.integers(lo, hi + 1))


def case_add_extreme(lib, rng, edge):
    """TSPTQ_ADD_2S at the ends of the parameter ranges the x86 paths take, and just past them (multipliers 0, 1..1024,
    2^31 - 1; input shifts 0 and -31; output shifts up to 31; zero points at the ends): every row holds -128 and
    127."""
    rows, C = sizes(rng, edge, 1, 20), int(rng.choice([1, 7, 15, 16, 17, 33, 64, 100]))
    per_channel = bool(rng.integers(2))
    n = C if per_channel else 1
    a = arr(rng.integers(-128, 128, (rows, C)), np.int8)
    b = arr(rng.integers(-128, 128, (rows, C)), np.int8)
    a[:, 0], b[:, -1] = -128, 127
    # mode 0: the whole range; 1: small input multipliers (where SRDHM's result is 0 for some q < zp: the x86 paths
    # take the sign of q - zp for its sign) and an output that keeps every unit; 2: as 1, smaller still, or one
    # channel's output shift > 0 (the scalar loop)
    mode = int(rng.integers(3))
    params = np.zeros((6, n), np.int64)
    for c in range(n):
        for r in range(3):
            if mode == 0:
                params[2 * r, c] = _pick(rng, [0, 1025, 2**30, 2**31 - 1], 2**30, 2**31 - 1)
                params[2 * r + 1, c] = _pick(rng, [0, -1, -31], -31, 0)
            else:
                params[2 * r, c] = int(rng.choice([0, 1025, 2048, 4097])) if r < 2 else int(rng.choice([2**30, 2**31 - 1]))
                params[2 * r + 1, c] = int(rng.integers(-2, 1))
    if mode == 2:
        c, r = int(rng.integers(n)), int(rng.integers(3))
        if r < 2:
            params[2 * r, c] = int(rng.choice([1, 2, 1023, 1024]))
        else:
            params[5, c] = int(rng.integers(1, 32))
    zps = [-128, 127, 0]
    a_zp, b_zp, out_zp = (_pick(rng, zps, -128, 127) for _ in range(3))
    y = np.empty((rows, C), np.int8)
    p32 = arr(params, np.int32)
    lib.tq_add(ptr(a), ptr(b), rows, C, a_zp, b_zp, ptr(p32), n, out_zp, ptr(y))
    want = K.add(a, a_zp, b, b_zp, params, out_zp)
    return f"add_extreme rows={rows} C={C} per_channel={per_channel} zps={a_zp},{b_zp},{out_zp}", y, want


def case_softmax_extreme(lib, rng, edge):
    """TSPTQ_SOFTMAX_2S with extreme options: multipliers 0 and 2^31 - 1, shifts 0 and 62 (codes saturated either
    way), every two-scale width and ratio, steep and flat exp tables, tables far below 2^20 (the large 2^50 // E of
    the scalar fallback), uniform rows."""
    rows, N = sizes(rng, edge, 1, 6), int(rng.choice([1, 2, 15, 16, 17, 31, 64, 257] + ([2047] if edge else [])))
    out_kind = int(rng.choice([K.UNIFORM, K.TWO_SCALE, K.LOG2]))
    x = arr(rng.integers(-128, 128, (rows, N)), np.int8)
    if rng.random() < 0.3:
        x[0] = int(rng.integers(-128, 128))  # a uniform row
    table = rng.integers(4)
    if table == 3:  # small entries: E < 2^18
        lut = arr(np.maximum(rng.integers(0, 300, 256), np.arange(256) == 0), np.int32)
    else:
        step = [8.0, 1e-4, float(log_uniform(rng, -2.5, 0))][table]
        lut = arr(np.round(np.exp(-step * np.arange(256, dtype=np.float64)) * 2.0**K.EXP_FRAC_BITS), np.int32)
    mult = _pick(rng, [0, 1, 2**31 - 1], 2**29, 2**31 - 1)
    shift = _pick(rng, [0, 1, 30, 62], 0, 62)
    out_zp = _pick(rng, [-128, 127], -128, 127)
    bits, m, signed = int(rng.integers(2, 9)), int(rng.integers(0, 9)), int(rng.integers(2))
    if out_kind == K.LOG2:
        bits = int(rng.choice([8, 4]))
    y = np.empty((rows, N), np.uint8)
    scratch = np.empty(N, np.int32)
    lib.tq_softmax_2s(ptr(x), rows, N, ptr(lut), out_kind, mult, shift, out_zp, bits, m, signed, ptr(y), ptr(scratch))
    want = K.softmax_2s(x, lut, out_kind, mult, shift, out_zp, bits, m, bool(signed))
    return (f"softmax_extreme rows={rows} N={N} kind={out_kind} table={table} mult={mult} shift={shift} bits={bits} "
            f"m={m} signed={signed}"), y, want


def case_layernorm_extreme(lib, rng, edge):
    """TSPTQ_LAYERNORM_2S with every channel shift 0..7, zero points at the ends, constant and two-valued rows, eps 0
    to 2^61, gamma up to 2^31 - 1, beta up to 2^62 and output shifts 0..62."""
    rows = sizes(rng, edge, 1, 8)
    D = int(rng.choice([1, 2, 15, 16, 17, 31, 33, 383, 384] + ([1024, 1536, 2047, 2048, 2049, 4096] if edge else [])))
    in_zp, out_zp = _pick(rng, [-128, 127], -128, 127), _pick(rng, [-128, 127], -128, 127)
    shifts = arr(rng.integers(0, 8, D) if rng.random() < 0.5 else np.zeros(D), np.int8)
    x = arr(rng.integers(-128, 128, (rows, D)), np.int8)
    kind = rng.integers(3)
    if kind == 1:
        x[0] = int(rng.integers(-128, 128))  # constant: d = 0
    elif kind == 2:
        x[0] = rng.choice([-128, 127], D)  # two values at the ends
    g = arr(rng.integers(-(2**31) + 1, 2**31, D) if rng.random() < 0.5 else rng.integers(-(2**20), 2**20, D), np.int32)
    bb = arr(rng.integers(-(2**62), 2**62, D, dtype=np.int64) >> int(rng.integers(0, 40)), np.int64)
    eps = _pick(rng, [0, 1, 2**40, 2**61], 0, 2**30)
    out_shift = _pick(rng, [0, 1, 30, 47, 62], 0, 62)
    y = np.empty((rows, D), np.int8)
    lib.tq_layernorm_2s(ptr(x), rows, D, in_zp, ptr(shifts), ptr(g), ptr(bb), eps, out_zp, out_shift, ptr(y))
    want = K.layernorm_2s(x, in_zp, shifts, g, bb, eps, out_zp, out_shift)
    return f"layernorm_extreme rows={rows} D={D} eps={eps} out_shift={out_shift} kind={kind}", y, want


def case_layernorm_many_rows(lib, rng, edge):
    """TSPTQ_LAYERNORM_2S over many rows (about 2^19 lanes in all cases): the x86 quotients' certainty test
    (layernorm_2s.c ln_out8, ln_out8s) meets lanes near an integer, whose rows take the reference path."""
    rows, D = int(rng.integers(32, 96)), int(rng.choice([64, 128, 200, 256]))
    in_zp, out_zp = zero_point(rng, edge), zero_point(rng, edge)
    shifts = arr(rng.integers(0, 2, D) * (rng.random(D) < 0.05), np.int8)
    x = arr(rng.integers(-128, 128, (rows, D)), np.int8)
    g = arr(rng.integers(2**20, 2**24, D), np.int32)
    bb = arr(rng.integers(-(2**46), 2**46, D, dtype=np.int64), np.int64)
    eps, out_shift = int(rng.integers(0, 2**20)), int(rng.choice([1, 30, 47, 48, 49, 61]))
    y = np.empty((rows, D), np.int8)
    lib.tq_layernorm_2s(ptr(x), rows, D, in_zp, ptr(shifts), ptr(g), ptr(bb), eps, out_zp, out_shift, ptr(y))
    want = K.layernorm_2s(x, in_zp, shifts, g, bb, eps, out_zp, out_shift)
    return f"layernorm_many_rows rows={rows} D={D} eps={eps} out_shift={out_shift}", y, want


def case_requant_short(lib, rng, edge):
    """The x86 shortest requantization (avx512.h tqv_rqs: shift <= -1, |bias| < 2^30, M >= 0) and the forms it
    leaves to the others, mixed within a block: per-channel FC_2S (REQUANT1) with shifts, multipliers and biases at
    and past those bounds, and BATCH_MATMUL (MBQM) with shifts -31..3 and extreme multipliers; tiles of 1..9 rows,
    blocks of 1..33 channels (the x86 edge kernels)."""
    if rng.integers(2):
        rows, I, O = int(rng.integers(1, 20)), sizes(rng, edge, 1, 70), sizes(rng, edge, 1, 70)
        x = arr(rng.integers(-128, 128, (rows, I)), np.int8)
        w = arr(rng.integers(-128, 128, (O, I)), np.int8)
        in_zp, out_zp = zero_point(rng, edge), zero_point(rng, edge)
        edges = np.array([0, 1, 2**30 - 1, -(2**30 - 1), 2**30, -(2**30), 2**31 - 1, -(2**31)], np.int64)
        bias = arr(np.where(rng.random(O) < 0.5, rng.choice(edges, O), rng.integers(-(2**20), 2**20, O)), np.int32)
        mult = arr(np.where(rng.random(O) < 0.5, rng.choice([0, 1, 2**30, 2**31 - 1], O),
                            rng.integers(2**30, 2**31, O)), np.int32)
        shift = arr(rng.choice([-31, -20, -12, -2, -1, 0, 1, 30], O) if rng.random() < 0.7
                    else np.full(O, int(rng.choice([-1, -12]))), np.int32)
        in_shift = arr(np.zeros(I), np.int8)
        y = np.empty((rows, O), np.int8)
        scratch = np.empty(I, np.int32)
        lib.tq_fc_2s(ptr(x.view(np.uint8)), rows, I, K.UNIFORM, in_zp, ptr(in_shift), 8, 0, 0, 0, 0, ptr(w), O,
                     ptr(bias), ptr(mult), ptr(shift), out_zp, ptr(y), ptr(scratch))
        want = K.fc_2s(x, K.UNIFORM, in_zp, in_shift, 8, 0, False, 0, 0, w, bias, mult.astype(np.int64),
                       shift.astype(np.int64), out_zp)
        return f"requant_short fc_2s rows={rows} I={I} O={O}", y, want
    batch, N, Kd, M = int(rng.integers(1, 3)), int(rng.integers(1, 20)), sizes(rng, edge, 1, 70), sizes(rng, edge, 1, 70)
    a = arr(rng.integers(-128, 128, (batch, N, Kd)), np.int8)
    b = arr(rng.integers(-128, 128, (batch, M, Kd)), np.int8)
    a_zp, b_zp, out_zp = zero_point(rng, edge), zero_point(rng, edge), zero_point(rng, edge)
    mult = int(rng.choice([0, 1, 2**30, 2**31 - 1, int(rng.integers(2**30, 2**31))]))
    shift = int(rng.choice([-31, -20, -12, -2, -1, 0, 1, 3]))
    if rng.random() < 0.4:  # the kernel takes any int32 zero point: where the 16-bit forms stop being exact
        out_zp = int(rng.choice([-32768, -32767, -32641, -32640, 32640, 32641, 32767, 2**20]))
    y = np.empty((batch, N, M), np.int8)
    lib.tq_batch_matmul(ptr(a), ptr(b), batch, N, Kd, M, 1, a_zp, b_zp, mult, shift, out_zp, ptr(y))
    want = K.batch_matmul(a, a_zp, b, b_zp, mult, shift, out_zp, True)
    return f"requant_short bmm batch={batch} N={N} K={Kd} M={M} mult={mult} shift={shift} out_zp={out_zp}", y, want


def case_quantize_multiplier(lib, rng, edge):
    reals = np.concatenate([10.0 ** rng.uniform(-12, 4, 200), [0.0, 1.0, 0.5, 2.0**-31, 2.0**-32, 1 - 2.0**-40,
                                                                 -0.3, 3.0 * 2**20]])
    m, s = np.zeros(1, np.int32), np.zeros(1, np.int32)
    got, want = [], []
    for r in reals.tolist():
        lib.tq_quantize_multiplier(r, ptr(m), ptr(s))
        got.append((int(m[0]), int(s[0])))
        want.append(quantize_multiplier(r))
    return "quantize_multiplier", np.array(got, np.int64), np.array(want, np.int64)


CASES = {
    "fully_connected": (case_fully_connected, 160),
    "fully_connected_prepacked": (lambda l, r, e: case_fully_connected(l, r, e, pre=True), 100),
    "conv2d_patches": (case_conv2d_patches, 100),
    "batch_matmul": (case_batch_matmul, 160),
    "bmm_bias": (case_bmm_bias, 120),
    "bmm_heads": (case_bmm_heads, 100),
    "add": (case_add, 160),
    "transpose": (case_transpose, 120),
    "concatenation": (case_concatenation, 120),
    "strided_slice": (case_strided_slice, 160),
    "layernorm_2s": (case_layernorm_2s, 160),
    "softmax_2s_uniform": (lambda l, r, e: case_softmax_2s(l, r, e, K.UNIFORM), 100),
    "softmax_2s_two_scale": (lambda l, r, e: case_softmax_2s(l, r, e, K.TWO_SCALE), 120),
    "softmax_2s_log2": (lambda l, r, e: case_softmax_2s(l, r, e, K.LOG2), 100),
    "softmax_2s_heads": (case_softmax_2s_heads, 100),
    "lookup": (case_lookup, 80),
    "lookup_channels": (case_lookup_channels, 60),
    "add_extreme": (case_add_extreme, 80),
    "softmax_2s_extreme": (case_softmax_extreme, 100),
    "layernorm_2s_extreme": (case_layernorm_extreme, 80),
    "fc_2s_uniform": (lambda l, r, e: case_fc_2s(l, r, e, K.UNIFORM), 100),
    "fc_2s_channel_pow2": (lambda l, r, e: case_fc_2s(l, r, e, K.CHANNEL_POW2), 100),
    "fc_2s_two_scale": (lambda l, r, e: case_fc_2s(l, r, e, K.TWO_SCALE), 120),
    "fc_2s_sign_split": (lambda l, r, e: case_fc_2s(l, r, e, K.SIGN_SPLIT), 120),
    "fc_2s_prepacked": (lambda l, r, e: case_fc_2s(l, r, e, pre=True), 160),
    "bmm_2s_two_scale": (lambda l, r, e: case_bmm_2s(l, r, e, K.TWO_SCALE), 120),
    "bmm_2s_log2": (lambda l, r, e: case_bmm_2s(l, r, e, K.LOG2), 120),
    "fc_2s_two_scale_sparse": (lambda l, r, e: case_fc_2s(l, r, e, K.TWO_SCALE, coarse=[0.0, 0.01, 0.05, 0.2]), 100),
    "bmm_2s_two_scale_sparse": (lambda l, r, e: case_bmm_2s(l, r, e, K.TWO_SCALE, coarse=[0.0, 0.01, 0.05, 0.2]),
                                100),
    "layernorm_2s_many_rows": (case_layernorm_many_rows, 40),
    "requant_short": (case_requant_short, 160),
    "relu": (case_relu, 60),
    "token_mean": (case_token_mean, 80),
    "quantize_multiplier": (case_quantize_multiplier, 8),
}


def run_kernel(lib, kernel: str, seed: int = 0, scale: float = 1.0) -> tuple[int, list[str]]:
    """Run one kernel's random cases (every third one an edge case); returns (cases, failure descriptions)."""
    fn, n = CASES[kernel]
    n = max(2, int(n * scale))
    rng = np.random.default_rng([seed, sum(map(ord, kernel))])
    failures = []
    for i in range(n):
        name, got, want = fn(lib, rng, "big" if i == n - 1 else i % 3 == 2)
        got_b = np.ascontiguousarray(got).view(np.uint8).ravel()
        want_b = np.ascontiguousarray(np.asarray(want).astype(np.asarray(got).dtype)).view(np.uint8).ravel()
        if got_b.shape != want_b.shape or not np.array_equal(got_b, want_b):
            bad = int(np.sum(got_b != want_b)) if got_b.shape == want_b.shape else -1
            failures.append(f"{kernel} case {i} ({name}): {bad} of {want_b.size} bytes differ")
    return n, failures


# --- pytest ----------------------------------------------------------------------------------------------------------

def kernel_sources() -> list[str]:
    """The kernel library's sources (relative to runtime_c/): the ops and the multiplier helper, not the loader."""
    ops = sorted(str(p.relative_to(c_build.RUNTIME_DIR)) for p in (c_build.RUNTIME_DIR / "src" / "ops").glob("*.c"))
    return ["src/quantize_multiplier.c", *ops]


def build(variant: str) -> Path:
    return c_build.build_library(variant, sources=kernel_sources())


VNNI_CPU_FLAGS = c_build.AVX512VNNI_CPU_FLAGS


def has_vnni() -> bool:
    return c_build.have_avx512vnni()


def has_amx() -> bool:
    return c_build.amx_usable()[0]


def _variants():
    out = ["reference"]
    if c_build.cpu_has("avx2"):
        out.append("avx2")
    return out + ["avx512vnni", "amx"]  # skipped below when the CPU lacks them


def skip_unless_runnable(variant: str) -> None:
    if variant.endswith("avx512vnni") and not has_vnni():
        pytest.skip(f"the CPU lacks AVX-512 VNNI ({', '.join(VNNI_CPU_FLAGS)})")
    if variant.endswith("amx") and not has_vnni():
        # without AMX (tiles, or Linux's grant) the amx build runs its AVX-512 VNNI code: still its own build (the
        # prepacked weights in the AMX layout), so it runs wherever that code does
        pytest.skip(f"the CPU lacks AVX-512 VNNI ({', '.join(VNNI_CPU_FLAGS)}), which the amx build falls back to")


@pytest.fixture(scope="module", params=_variants())
def lib(request):
    skip_unless_runnable(request.param)
    return load(build(request.param))


@pytest.mark.parametrize("kernel", list(CASES))
def test_kernel_matches_python_reference(lib, kernel):
    n, failures = run_kernel(lib, kernel)
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize("out_zp", [-32768, -32767, -32641, -32640, 32640, 32641, 32767])
def test_batch_matmul_with_a_wide_zero_point_saturates_like_the_reference(lib, out_zp):
    """The kernel takes any int32 zero point (the loaders only int8 ones): where a 16-bit form's clamp would eat a
    saturated result (|zp| > 2^15 - 128), the x86 short requantization must not be used."""
    for a_val, zp_a in ((127, -128), (-128, 127)):
        a = arr(np.full((1, 2, 8), a_val), np.int8)
        b = arr(np.full((1, 3, 8), 127), np.int8)
        y = np.empty((1, 2, 3), np.int8)
        lib.tq_batch_matmul(ptr(a), ptr(b), 1, 2, 8, 3, 1, zp_a, -128, 2**31 - 1, -1, out_zp, ptr(y))
        assert np.array_equal(y, K.batch_matmul(a, zp_a, b, -128, 2**31 - 1, -1, out_zp, True)), (a_val, out_zp)


def test_avx2_vs_reference_on_large_fc():
    """A ViT-S sized FULLY_CONNECTED and FC_2S (197 x 384 by 384 x 1152): the SIMD blocks, not only tails."""
    if not c_build.cpu_has("avx2"):
        pytest.skip("no AVX2")
    rng = np.random.default_rng(7)
    x = arr(rng.integers(-128, 128, (197, 384)), np.int8)
    w = arr(rng.integers(-128, 128, (1152, 384)), np.int8)
    bias = arr(rng.integers(-(2**16), 2**16, 1152), np.int32)
    mult, shift = (arr(v, np.int32) for v in K.builtin_multipliers(0.02, log_uniform(rng, -3, -2, 1152), 0.5))
    want = K.fully_connected(x, 3, w, bias, mult.astype(np.int64), shift.astype(np.int64), -5, True)
    variants = ["reference", "avx2"] + (["avx512vnni"] if has_vnni() else []) + (["amx"] if has_amx() else [])
    for variant in variants:
        y = np.empty((197, 1152), np.int8)
        load(build(variant)).tq_fully_connected(ptr(x), 197, 384, 3, ptr(w), 1152, ptr(bias),
                                                                ptr(mult), ptr(shift), 1152, 1, -5, ptr(y))
        assert np.array_equal(y, want), variant


def _sanitized_variants():
    out = ["sanitize"]
    if c_build.cpu_has("avx2"):
        out.append("sanitize-avx2")
    return out + ["sanitize-avx512vnni", "sanitize-amx"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", _sanitized_variants())
def test_sanitized_build_is_clean(variant):
    """The whole matrix (fewer cases) under ASan + UBSan in a child Python that preloads the ASan runtime: any
    sanitizer report aborts the child, any mismatch fails it."""
    skip_unless_runnable(variant)
    try:
        path = build(variant)
        preload = c_build.sanitizer_preload()
    except c_build.BuildError as e:
        pytest.skip(f"no sanitizer toolchain: {e}")
    env = dict(os.environ, LD_PRELOAD=preload, ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, __file__, str(path), "1.0"], env=env, capture_output=True, text=True,
                          timeout=300)
    report = proc.stdout[-4000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, report
    for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
        assert marker not in proc.stderr, report
    assert "ALL OK" in proc.stdout, report


# --- NEON: the SIMD build against the reference build of the same sources, on an emulated AArch64 ----------------------

# What both driver programs below start with: the reference kernels' declarations (the reference build, renamed
# ref_*) and a seeded xorshift.
_C_REF_DECLS = r"""
#define DECL(prefix) \
void prefix##conv2d_patches(const int8_t *, int32_t, int32_t, int32_t, int32_t, int32_t, const int8_t *, int32_t, int32_t, const int32_t *, const int32_t *, const int32_t *, int32_t, int8_t *); \
void prefix##fully_connected(const int8_t *, int32_t, int32_t, int32_t, const int8_t *, int32_t, const int32_t *, const int32_t *, const int32_t *, int32_t, int, int32_t, int8_t *); \
void prefix##batch_matmul(const int8_t *, const int8_t *, int32_t, int32_t, int32_t, int32_t, int, int32_t, int32_t, int32_t, int32_t, int32_t, int8_t *); \
void prefix##fc_2s(const uint8_t *, int32_t, int32_t, int32_t, int32_t, const int8_t *, int32_t, int32_t, int32_t, int32_t, int32_t, const int8_t *, int32_t, const int32_t *, const int32_t *, const int32_t *, int32_t, int8_t *, int32_t *); \
void prefix##bmm_2s(const uint8_t *, const int8_t *, int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, int8_t *, int32_t *);
DECL(ref_)
#define DECL_BB(prefix) \
void prefix##bmm_bias(const int8_t *, const int8_t *, int32_t, int32_t, int32_t, int64_t, int64_t, int32_t, int32_t, const int32_t *, int64_t, int32_t, int32_t, int32_t, int32_t, int8_t *);
DECL_BB(tq_)
DECL_BB(ref_)
"""
# Swin's scores (TSPTQ_BMM_BIAS) in both Arm drivers: a (B, N, K) . b (B, M, K)^T << e + a bias (N, M) or (B, N, M),
# rows [r0, r1) that most often start and end inside a batch; K past the DSP form's 256 at times, M past its 64-column
# chunk; every byte outside the rows must stay as it was.
_C_BMM_BIAS_CASE = r"""
        {
            int32_t B = ri(1, 3), N = ri(1, 30), Kd = ri(0, 4) ? ri(1, 40) : ri(250, 300);
            int32_t M = ri(0, 2) ? ri(1, 30) : ri(60, 80), e = ri(0, 12), heads = ri(0, 1), rows = B * N;
            int32_t r0 = ri(0, 2) ? ri(0, rows - 1) : 0, r1 = ri(r0 + 1, rows);
            int32_t mu = ri(0, 9) ? ri(1 << 30, 2147483647) : ri(0, 1 << 20), sh = ri(-19, 3), lim, nb; /* n 28..62 */
            while (e > 0 && ((int64_t)Kd * 255 * 255 << e) > 2147483647) e--;
            lim = (int32_t)(2147483647 - ((int64_t)Kd * 255 * 255 << e));
            nb = (heads ? B : 1) * N * M;
            if (B * N * Kd <= (int)sizeof(X) && B * M * Kd <= (int)sizeof(W) && B * N * M <= (int)sizeof(Y1) &&
                nb <= (int)(sizeof(BB) / sizeof(BB[0]))) {
                const int32_t big = ri(0, 3) == 0, small = lim < 100000 ? lim : 100000;
                for (i = 0; i < B * N * Kd; i++) X[i] = (int8_t)rnd();
                for (i = 0; i < B * M * Kd; i++) W[i] = (int8_t)rnd();
                for (i = 0; i < nb; i++) /* |(acc << e) + bias| < 2^31, as prepare checks */
                    BB[i] = big ? (int32_t)((int64_t)(rnd() % (2u * (uint32_t)lim + 1u)) - lim) : ri(-small, small);
                memset(Y1, 0x5A, (size_t)(B * N * M));
                memset(Y2, 0x5A, (size_t)(B * N * M));
                tq_bmm_bias(X, W, N, M, Kd, r0, r1, zp, oz, BB, nb, e, mu, sh, oz, Y1);
                ref_bmm_bias(X, W, N, M, Kd, r0, r1, zp, oz, BB, nb, e, mu, sh, oz, Y2);
                bad += cmp("bmm_bias", B * N * M, t);
            }
        }
"""
_C_XORSHIFT = r"""
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)(s >> 11); }
/* lo..hi inclusive; the width in 64 bits (hi - lo + 1 overflows int32 for ranges of 2^31 and more) */
static int32_t ri(int32_t lo, int32_t hi) {
    const uint32_t n = (uint32_t)((int64_t)hi - lo + 1); /* 0: the whole int32 range */
    return (int32_t)((int64_t)lo + (n ? rnd() % n : rnd()));
}
"""


def driver_prologue(seed: str) -> str:
    return _C_REF_DECLS + f"\nstatic uint64_t s = {seed};\n" + _C_XORSHIFT


def semihost_prologue(board: str) -> str:
    """The bare-metal kernel drivers' reporting, after their #includes (qemu_fault.h among them): say() and
    say_int() through semihosting, and the board name and UART handler the start-up code links against."""
    return r"""
static void say(const char *s) { tq_semihost_write0(s); }
static void say_int(int64_t v) {
    char b[24];
    int n = 23;
    uint64_t u = v < 0 ? 0u - (uint64_t)v : (uint64_t)v;
    b[n] = 0;
    do b[--n] = (char)('0' + u % 10u); while ((u /= 10u) && n > 1);
    if (v < 0) b[--n] = '-';
    say(b + n);
}
""" + f'const char tq_board_name[] = "{board}";\n' + r"""void UART0RX_Handler(void);
void UART0RX_Handler(void) {}
"""


NEON_DRIVER = r"""
/* NEON (or any SIMD build) against the reference build of the same kernels, on the target: random cases. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "kernels.h"

""" + driver_prologue("88172645463325252ull") + r"""
static int8_t X[70 * 300], W[70 * 300], Y1[80 * 80 * 3], Y2[80 * 80 * 3];
static uint8_t XU[3 * 80 * 80];
static int32_t BIAS[70], MUL[70], SH[70], SC[600], BB[3 * 30 * 80];
static int8_t INS[300];

static int cmp(const char *what, int n, int t) {
    if (memcmp(Y1, Y2, (size_t)n)) { printf("MISMATCH %s case %d\n", what, t); return 1; }
    return 0;
}

int main(void) {
    int t, i, bad = 0, cases = 0;
    for (t = 0; t < 3000; t++) {
        int32_t rows = ri(1, 9), I = ri(1, 300), O = ri(1, 70), zp = ri(-128, 127), oz = ri(-128, 127);
        int per = ri(0, 1), kind = ri(0, 3), m = ri(0, 3), sf = ri(0, 1), neg_shift = ri(-3, 1);
        for (i = 0; i < rows * I; i++) { X[i] = (int8_t)ri(-128, 127); XU[i] = (uint8_t)ri(0, 255); }
        for (i = 0; i < O * I; i++) W[i] = (int8_t)ri(-128, 127);
        for (i = 0; i < O; i++) { BIAS[i] = ri(-100000, 100000); MUL[i] = ri(1 << 30, 2147483647); SH[i] = ri(-14, 1); }
        for (i = 0; i < I; i++) INS[i] = (int8_t)(ri(0, 9) ? 0 : ri(0, 2));
        tq_fully_connected(X, rows, I, zp, W, O, BIAS, MUL, SH, per ? O : 1, per, oz, (int8_t *)Y1);
        ref_fully_connected(X, rows, I, zp, W, O, BIAS, MUL, SH, per ? O : 1, per, oz, (int8_t *)Y2);
        bad += cmp("fc", rows * O, t);
        ref_fc_2s(kind < 2 ? (const uint8_t *)X : XU, rows, I, kind, zp, INS, 8, m, sf, MUL[0], neg_shift, W, O, BIAS, MUL, SH, oz, Y2, SC);
        tq_fc_2s(kind < 2 ? (const uint8_t *)X : XU, rows, I, kind, zp, INS, 8, m, sf, MUL[0], neg_shift, W, O, BIAS, MUL, SH, oz, Y1, SC);
        bad += cmp("fc_2s", rows * O, t);
        {   /* batch matmul: a (b, N, K), b (b, K, M) or (b, M, K) */
            int32_t B = ri(1, 2), N = ri(1, 20), Kd = ri(1, 40), M = ri(1, 30), adj = ri(0, 1);
            tq_batch_matmul(X, W, B, N, Kd, M, adj, zp, oz, MUL[0], SH[0], oz, Y1);
            ref_batch_matmul(X, W, B, N, Kd, M, adj, zp, oz, MUL[0], SH[0], oz, Y2);
            bad += cmp("bmm", B * N * M, t);
        }""" + _C_BMM_BIAS_CASE + r"""        {   /* attention x V with decoded probabilities */
            int32_t B = ri(1, 3), N = ri(1, 80), M = ri(1, 70), k2 = ri(0, 1) ? TQ_LOG2 : TQ_TWO_SCALE;
            for (i = 0; i < B * N * N; i++) XU[i] = (uint8_t)(k2 == TQ_LOG2 ? (ri(0, 2) ? ri(0, 20) : 255) : ri(0, 255));
            for (i = 0; i < B * N * M && i < (int)sizeof(W); i++) W[i] = (int8_t)ri(-128, 127);
            if (B * N * M <= (int)sizeof(W)) {
                tq_bmm_2s(XU, W, B, N, M, k2, 8, m, sf, 10, zp, MUL[0], SH[0], oz, Y1, SC);
                ref_bmm_2s(XU, W, B, N, M, k2, 8, m, sf, 10, zp, MUL[0], SH[0], oz, Y2, SC);
                bad += cmp("bmm_2s", B * N * M, t);
            }
        }
        {   /* conv patches */
            int32_t p = ri(1, 5), H = p * ri(1, 4) + ri(0, p - 1), Wd = p * ri(1, 4) + ri(0, p - 1), C = ri(1, 3), Oc = ri(1, 20);
            if (H * Wd * C <= (int)sizeof(X) && Oc * p * p * C <= (int)sizeof(W)) {
                tq_conv2d_patches(X, 1, H, Wd, C, zp, W, Oc, p, BIAS, MUL, SH, oz, Y1);
                ref_conv2d_patches(X, 1, H, Wd, C, zp, W, Oc, p, BIAS, MUL, SH, oz, Y2);
                bad += cmp("conv", (H / p) * (Wd / p) * Oc, t);
            }
        }
        cases++;
    }
    printf("%d rounds, %d mismatches\n", cases, bad);
    return bad != 0;
}
"""
# every function the runtime's sources define outside static (the kernels among them; their op definitions are named
# after them, TQ_OP_DEF), so that no symbol is defined by both builds
KERNEL_NAMES = sorted({name for f in (c_build.RUNTIME_DIR / "src").rglob("*.c")
                       for name in re.findall(r"^(?!static)\w[\w ]*\btq_(\w+)\(", f.read_text(), re.M)})


ARM_BUILDS = c_build.ARM_SIMD_BUILDS  # path: (compiler, flags, QEMU, the dot.h macro, Debian packages)


def _reference_and_variant_objects(cc, flags, sources, tmp_path, variant, variant_flags) -> list[str]:
    """The kernel sources compiled twice into tmp_path: the reference build with every tq_* kernel renamed ref_*,
    and the build under test; one driver program links both and compares them call by call."""
    rename = [f"-Dtq_{k}=ref_{k}" for k in KERNEL_NAMES]
    objs = []
    for sub, extra in (("ref", ["-DTSPTQ_REFERENCE_ONLY", *rename]), (variant, variant_flags)):
        d = tmp_path / sub
        d.mkdir()
        subprocess.run([cc, *flags, *extra, "-c", *sources], cwd=d, check=True, capture_output=True)
        objs += sorted(str(p) for p in d.glob("*.o"))
    return objs


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("path", list(ARM_BUILDS))
def test_arm_simd_matches_reference(tmp_path, path):
    """The Arm SIMD paths (NEON, automatic under __ARM_NEON; the DSP extension's SMLAD, automatic under
    __ARM_FEATURE_DSP as on a Cortex-M4) give the reference path's bytes: both builds of the matmul-like kernels
    linked into one static program (the reference one with renamed symbols), random cases, run under QEMU user mode.
    The reference path itself is the portable C checked against Python above."""
    import shutil
    compiler, arch, runner, macro, apt = ARM_BUILDS[path]
    cc, qemu = shutil.which(compiler), shutil.which(runner)
    if not cc or not qemu:
        pytest.skip(f"needs {apt}")
    src = c_build.RUNTIME_DIR / "src"
    sources = [str(c_build.RUNTIME_DIR / s) for s in kernel_sources()]
    flags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *arch, "-I", str(src)]
    probe = subprocess.run([cc, *flags, "-dM", "-E", str(src / "ops" / "dot.h")], capture_output=True, text=True)
    assert f"#define {macro} 1" in probe.stdout, f"{compiler} {arch} does not take the {path} path"
    if macro == "TQ_SIMD_DSP":  # "dsp": the 2x2 kernel's inline assembly; "dsp-c": its C body
        assert f"#define TQ_DSP_ASM {0 if '-DTSPTQ_NO_INLINE_ASM' in arch else 1}" in probe.stdout
    objs = _reference_and_variant_objects(cc, flags, sources, tmp_path, path, [])
    (tmp_path / "driver.c").write_text(NEON_DRIVER)
    exe = tmp_path / "drv"
    subprocess.run([cc, *flags, "-static", str(tmp_path / "driver.c"), *objs, "-o", str(exe), "-lm"], check=True,
                   capture_output=True)
    proc = subprocess.run([qemu, str(exe)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "0 mismatches" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


# --- AMX: the amx build against the reference build of the same kernels, on shapes that stress the tiles ------------

AMX_DRIVER = r"""
/* The amx build against the reference build (renamed ref_*), linked into one program: random shapes with K not a
 * multiple of 64, N not a multiple of 16 or 32, M tails, B small enough to be packed in one panel and too large for
 * that (read in place, its last rows from the tail copy), every input code of FC_2S; requantization parameters both
 * in and out of the short forms' ranges. Prints whether the tiles were used. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "kernels.h"

int tq_amx_ready(void);
""" + driver_prologue("0x9E3779B97F4A7C15ull") + r"""static int32_t pick(const int32_t *v, int n) { return v[rnd() % (uint32_t)n]; }

#define MAXB (1 << 20)
static int8_t X[MAXB], W[MAXB], Y1[MAXB], Y2[MAXB];
static int32_t BIAS[4096], MUL[4096], SH[4096], SC[4096];
static int8_t INS[4096];
static uint8_t PRE[2 * MAXB] __attribute__((aligned(64))); /* tq_fc_prepack's bytes */
static const int32_t KS[] = {1, 3, 4, 60, 63, 64, 65, 100, 127, 128, 129, 191, 257, 384, 588, 1000, 1536, 2047, 2048};
static const int32_t NS[] = {1, 2, 15, 16, 17, 31, 32, 33, 47, 63, 65, 100, 129, 384, 385};
static const int32_t MS[] = {8, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 97, 129, 257};

static int cmp(const char *what, long n, int t, int32_t M, int32_t K, int32_t N) {
    if (memcmp(Y1, Y2, (size_t)n)) {
        printf("MISMATCH %s case %d M=%d K=%d N=%d\n", what, t, M, K, N);
        return 1;
    }
    return 0;
}

/* largest shift s with K * 255 * 128 << s within the int32 accumulator */
static int32_t max_shift(int32_t K) {
    int32_t sh = 0;
    while (sh < 7 && (int64_t)K * 255 * 128 << (sh + 1) <= 2147483647) sh++;
    return sh;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 200, t, i, bad = 0;
    for (t = 0; t < rounds; t++) {
        int32_t M = pick(MS, sizeof MS / 4), K = pick(KS, sizeof KS / 4), N = pick(NS, sizeof NS / 4);
        int32_t zp = ri(-128, 127), oz = ri(-128, 127), per = ri(0, 1), m = ri(0, 3), sf = ri(0, 1);
        int32_t kind = ri(0, 3), big_bias = ri(0, 4) == 0, neg_shift = ri(-3, 1);
        const int32_t *bias = ri(0, 4) ? BIAS : NULL;
        while ((long)M * K > MAXB || (long)N * K > MAXB || (long)M * N > MAXB) M = (M + 1) / 2, N = (N + 1) / 2;
        for (i = 0; i < M * K; i++) X[i] = (int8_t)rnd();
        for (i = 0; i < N * K; i++) W[i] = (int8_t)rnd();
        for (i = 0; i < N; i++) {
            BIAS[i] = big_bias ? (int32_t)(rnd() * 2u) : ri(-100000, 100000);
            MUL[i] = ri(0, 9) ? ri(1 << 30, 2147483647) : ri(0, 1 << 20);
            SH[i] = ri(0, 5) ? ri(-20, -1) : ri(-2, 2);
        }
        for (i = 0; i < K; i++) INS[i] = (int8_t)(ri(0, 3) ? 0 : ri(0, max_shift(K)));
        if (kind == 1) { /* channel_pow2: keep the accumulator in range */
            int64_t sum = 0;
            for (i = 0; i < K; i++) sum += (int64_t)255 * 128 << INS[i];
            if (sum > 2147483647) memset(INS, 0, (size_t)K);
        }
        if ((int64_t)K * (127 << m) * 128 > 2147483647) m = 0;
        tq_fully_connected(X, M, K, zp, W, N, bias, MUL, SH, per ? N : 1, per, oz, Y1);
        ref_fully_connected(X, M, K, zp, W, N, bias, MUL, SH, per ? N : 1, per, oz, Y2);
        bad += cmp("fully_connected", (long)M * N, t, M, K, N);
        tq_fc_2s((const uint8_t *)X, M, K, kind, zp, INS, 8, m, sf, MUL[0], neg_shift, W, N, BIAS, MUL, SH, oz, Y1, SC);
        ref_fc_2s((const uint8_t *)X, M, K, kind, zp, INS, 8, m, sf, MUL[0], neg_shift, W, N, BIAS, MUL, SH, oz, Y2, SC);
        bad += cmp(kind == 0 ? "fc_2s uniform" : kind == 1 ? "fc_2s channel_pow2" : kind == 2 ? "fc_2s two_scale"
                   : "fc_2s sign_split", (long)M * N, t, M, K, N);
        {   /* the same two with the weights prepacked once (tsptq_prepare's tq_fc_prepack / tq_fc_2s_prepack),
             * every byte of the buffer garbage first; where the tiles run, none is asked for (vnni.h) */
            const uint64_t np = tq_fc_prepack_size(K, N), np2 = tq_fc_2s_prepack_size(K, N, kind, INS);
            if (tq_amx_ready()) {
                if (np || np2) {
                    printf("MISMATCH prepacked bytes %lu, %lu on AMX tiles\n", (unsigned long)np, (unsigned long)np2);
                    bad++;
                }
            } else if (!np || !np2 || np > sizeof PRE || np2 > sizeof PRE) {
                printf("MISMATCH prepacked bytes %lu, %lu for K=%d N=%d\n", (unsigned long)np, (unsigned long)np2, K, N);
                bad++;
            } else {
                memset(PRE, 0xA5, (size_t)np);
                tq_fc_prepack(W, K, N, PRE);
                tq_fully_connected_pre(X, M, K, zp, W, N, bias, MUL, SH, per ? N : 1, per, oz, Y1, PRE);
                ref_fully_connected(X, M, K, zp, W, N, bias, MUL, SH, per ? N : 1, per, oz, Y2);
                bad += cmp("fully_connected prepacked", (long)M * N, t, M, K, N);
                memset(PRE, 0xA5, (size_t)np2);
                tq_fc_2s_prepack(W, K, N, kind, INS, PRE);
                tq_fc_2s_pre((const uint8_t *)X, M, K, kind, zp, INS, 8, m, sf, MUL[0], neg_shift, W, N, BIAS, MUL, SH,
                             oz, Y1, SC, PRE);
                ref_fc_2s((const uint8_t *)X, M, K, kind, zp, INS, 8, m, sf, MUL[0], neg_shift, W, N, BIAS, MUL, SH, oz,
                          Y2, SC);
                bad += cmp("fc_2s prepacked", (long)M * N, t, M, K, N);
            }
        }
        {   /* batch matmul: a (B, M, K) x b (B, K, N) or (B, N, K) */
            int32_t B = ri(1, 3), adj = ri(0, 1);
            while ((long)B * M * K > MAXB || (long)B * N * K > MAXB || (long)B * M * N > MAXB) B = 1, M = (M + 1) / 2;
            for (i = 0; i < B * N * K; i++) W[i] = (int8_t)rnd();
            tq_batch_matmul(X, W, B, M, K, N, adj, zp, oz, MUL[0], SH[0], oz, Y1);
            ref_batch_matmul(X, W, B, M, K, N, adj, zp, oz, MUL[0], SH[0], oz, Y2);
            bad += cmp(adj ? "batch_matmul adj_y" : "batch_matmul", (long)B * M * N, t, M, K, N);
        }
        {   /* attention x V, two-scale probabilities: a (B, K, K) codes, v (B, K, N) */
            int32_t B = ri(1, 2), m2 = ri(0, 3);
            while ((long)B * K * K > MAXB) K = (K + 1) / 2;
            while ((int64_t)K * (127 << m2) * 255 > 2147483647) m2--;
            for (i = 0; i < B * K * K; i++) X[i] = (int8_t)rnd();
            for (i = 0; i < B * K * N && i < MAXB; i++) W[i] = (int8_t)rnd();
            if ((long)B * K * N <= MAXB) {
                tq_bmm_2s((const uint8_t *)X, W, B, K, N, TQ_TWO_SCALE, 8, m2, sf, 10, zp, MUL[0], SH[0], oz, Y1, SC);
                ref_bmm_2s((const uint8_t *)X, W, B, K, N, TQ_TWO_SCALE, 8, m2, sf, 10, zp, MUL[0], SH[0], oz, Y2, SC);
                bad += cmp("bmm_2s", (long)B * K * N, t, K, K, N);
            }
        }
        {   /* patches: p x p x C runs of K = p * p * C */
            int32_t p = ri(1, 14), C = ri(1, 4), O = pick(NS, sizeof NS / 4), H = p * ri(4, 8), Wd = p * ri(4, 8);
            for (i = 0; i < H * Wd * C; i++) X[i] = (int8_t)rnd();
            for (i = 0; i < O * p * p * C; i++) W[i] = (int8_t)rnd();
            tq_conv2d_patches(X, 1, H, Wd, C, zp, W, O, p, BIAS, MUL, SH, oz, Y1);
            ref_conv2d_patches(X, 1, H, Wd, C, zp, W, O, p, BIAS, MUL, SH, oz, Y2);
            bad += cmp("conv2d_patches", (long)(H / p) * (Wd / p) * O, t, (H / p) * (Wd / p), p * p * C, O);
        }
    }
    printf("amx=%d %d rounds, %d mismatches\n", tq_amx_ready(), rounds, bad);
    return bad != 0;
}
"""


def test_amx_matches_reference_on_odd_shapes(tmp_path):
    """The AMX paths (the two drivers of amx.h, FC_2S's channel_pow2 planes) give the reference path's bytes on
    shapes with every tail: the amx build and a reference build with renamed kernels linked into one native program.
    Without AMX (but with AVX-512 VNNI) the same program runs the amx build's VNNI fallback, its prepacked weights in
    the AMX layout included."""
    ok, why = c_build.amx_usable()
    if not ok and not has_vnni():
        pytest.skip(f"no AMX here: {why}")
    cc = c_build.compiler()
    src = c_build.RUNTIME_DIR / "src"
    sources = [str(c_build.RUNTIME_DIR / p) for p in kernel_sources()]
    flags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(src)]
    objs = _reference_and_variant_objects(cc, flags, sources, tmp_path, "amx", c_build.VARIANTS["amx"])
    (tmp_path / "driver.c").write_text(AMX_DRIVER)
    exe = tmp_path / "drv"
    subprocess.run([cc, *flags, "-include", "stdlib.h", str(tmp_path / "driver.c"), *objs, "-o", str(exe), "-lm"],
                   check=True, capture_output=True)
    proc = subprocess.run([str(exe), "120" if ok else "40"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and f"amx={int(ok)}" in proc.stdout and " 0 mismatches" in proc.stdout, \
        proc.stdout[-3000:] + proc.stderr[-3000:]


# --- Helium (MVE): the Cortex-M55 build against the reference build, on QEMU's mps3-an547 ----------------------------

MVE_DRIVER = r"""
/* The Cortex-M55 build (MVE + DSP) against the reference build (renamed ref_*), linked into one bare-metal program
 * for QEMU's mps3-an547 (qemu-arm user mode cannot run M-profile code here): random shapes with every tail (lengths
 * not multiples of 16 or 8, odd row and column counts, channel chunks past 128), every input code of FC_2S (and
 * channel_pow2 with few and with many shifted channels), both BATCH_MATMUL layouts, two_scale and log2 BMM_2S; and
 * dot.h's vector requantizations against fixedpoint.h's. Reports through semihosting; exits QEMU with 0 when every
 * byte agrees. */
#include <stdint.h>
#include <string.h>
#include "fixedpoint.h"
#include "kernels.h"
#include "ops/dot.h"
#include "qemu_fault.h"
""" + semihost_prologue("mps3-an547 (MVE kernel test)") + driver_prologue("0x2545F4914F6CDD1Dull") + r"""
static int8_t X[9 * 300], W[300 * 300], Y1[3 * 100 * 150], Y2[3 * 100 * 150];
static uint8_t XU[3 * 100 * 100];
static int32_t BIAS[300], MUL[300], SH[300], SC[320], BB[3 * 30 * 80];
static int8_t INS[300];

static int cmp(const char *what, int n, int t) {
    if (memcmp(Y1, Y2, (size_t)n)) { say("MISMATCH "); say(what); say(" case "); say_int(t); say("\n"); return 1; }
    return 0;
}

/* The vector requantizations against fixedpoint.h's scalar ones, ties included: multipliers that are powers of two
 * (or 0), accumulators that are multiples of powers of two, plus or minus a little, and the int32 extremes. */
static int32_t pick_x(void) {
    switch (rnd() % 4u) {
    case 0: return (int32_t)(rnd() ^ (rnd() << 21));
    case 1: return (int32_t)((uint32_t)ri(-1000, 1000) << ri(0, 21)) + ri(-1, 1);
    case 2: return ri(0, 1) ? INT32_MIN : INT32_MAX - ri(0, 1);
    default: return ri(-70000, 70000);
    }
}
static int32_t pick_mult(void) {
    switch (rnd() % 3u) {
    case 0: return ri(0, 4) ? (int32_t)(1u << ri(0, 30)) : 0;
    case 1: return (int32_t)((uint32_t)ri(1, 7) << ri(0, 28));
    default: return ri(1 << 30, INT32_MAX);
    }
}
static int check_requant(void) {
    int i, j, bad = 0;
    for (i = 0; i < 20000; i++) {
        int32_t x[4], mu[4], sh[4], sm = ri(-31, 0), m0 = pick_mult(), out[4];
        int32x4_t v;
        for (j = 0; j < 4; j++) x[j] = pick_x(), mu[j] = pick_mult(), sh[j] = ri(-31, -1);
        v = vldrwq_s32(x);
        vstrwq_s32(out, tq_mve_requant1(v, vldrwq_s32(mu), vaddq_n_s32(vldrwq_s32(sh), 1)));
        for (j = 0; j < 4; j++) bad += out[j] != (int32_t)tq_requant1(x[j], mu[j], sh[j]);
        vstrwq_s32(out, tq_mve_mbqm(v, m0, sm));
        for (j = 0; j < 4; j++) bad += out[j] != (int32_t)tq_mbqm(x[j], m0, sm);
    }
    if (bad) { say("MISMATCH requantization: "); say_int(bad); say("\n"); }
    return bad;
}

static int32_t size(void) { /* lengths around the lane counts and the 128-channel chunks */
    static const int32_t edge[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 127, 128, 129, 255, 256, 257, 300};
    return ri(0, 1) ? edge[rnd() % 20u] : ri(1, 300);
}

int main(void) {
    int t, i, bad = check_requant();
    for (t = 0; t < ROUNDS; t++) {
        int32_t rows = ri(1, 9), I = size(), O = size(), zp = ri(-128, 127), oz = ri(-128, 127);
        int per = ri(0, 1), kind = ri(0, 3), m = ri(0, 3), sf = ri(0, 1), neg_shift = ri(-3, 1), dense = ri(0, 1);
        /* right shifts only (the vector requantizations) or some left ones too; biases whose int32 sum with the
         * accumulator can overflow (the int64 fallback) */
        int32_t sh_hi = ri(0, 1) ? -1 : 1, big = ri(0, 3) == 0;
        for (i = 0; i < rows * I; i++) { X[i] = (int8_t)ri(-128, 127); XU[i] = (uint8_t)ri(0, 255); }
        for (i = 0; i < O * I; i++) W[i] = (int8_t)ri(-128, 127);
        for (i = 0; i < O; i++) {
            BIAS[i] = big && ri(0, 1) ? (ri(0, 1) ? INT32_MAX - ri(0, 4000000) : INT32_MIN + ri(0, 4000000)) : ri(-100000, 100000);
            MUL[i] = ri(1 << 30, 2147483647), SH[i] = ri(-14, sh_hi);
        }
        /* channel_pow2: a few shifted channels (the int8 form's fix-ups) or many (the int16 form) */
        for (i = 0; i < I; i++) INS[i] = (int8_t)(ri(0, dense ? 2 : 60) ? 0 : ri(1, 7));
        tq_fully_connected(X, rows, I, zp, W, O, BIAS, MUL, SH, per ? O : 1, per, oz, Y1);
        ref_fully_connected(X, rows, I, zp, W, O, BIAS, MUL, SH, per ? O : 1, per, oz, Y2);
        bad += cmp("fc", rows * O, t);
        ref_fc_2s(kind < 2 ? (const uint8_t *)X : XU, rows, I, kind, zp, INS, 8, m, sf, MUL[0], neg_shift, W, O, BIAS, MUL, SH, oz, Y2, SC);
        tq_fc_2s(kind < 2 ? (const uint8_t *)X : XU, rows, I, kind, zp, INS, 8, m, sf, MUL[0], neg_shift, W, O, BIAS, MUL, SH, oz, Y1, SC);
        bad += cmp("fc_2s", rows * O, t);
        {   /* batch matmul: a (B, N, K), b (B, K, M) or (B, M, K) */
            int32_t B = ri(1, 3), N = ri(1, 30), Kd = ri(1, 100), M = ri(1, 150), adj = ri(0, 1);
            if (B * N * Kd <= (int)sizeof(X) && B * Kd * M <= (int)sizeof(W)) {
                tq_batch_matmul(X, W, B, N, Kd, M, adj, zp, oz, MUL[0], SH[0], oz, Y1);
                ref_batch_matmul(X, W, B, N, Kd, M, adj, zp, oz, MUL[0], SH[0], oz, Y2);
                bad += cmp("bmm", B * N * M, t);
            }
        }""" + _C_BMM_BIAS_CASE + r"""        {   /* attention x V with decoded probabilities: a (B, N, N), V (B, N, M) */
            int32_t B = ri(1, 3), N = ri(0, 1) ? 65 : ri(1, 100), M = ri(1, 150), k2 = ri(0, 1) ? TQ_LOG2 : TQ_TWO_SCALE;
            for (i = 0; i < B * N * N; i++) XU[i] = (uint8_t)(k2 == TQ_LOG2 ? (ri(0, 2) ? ri(0, 20) : 255) : ri(0, 255));
            for (i = 0; i < B * N * M && i < (int)sizeof(W); i++) W[i] = (int8_t)ri(-128, 127);
            if (B * N * M <= (int)sizeof(W)) {
                tq_bmm_2s(XU, W, B, N, M, k2, 8, m, sf, 10, zp, MUL[0], SH[0], oz, Y1, SC);
                ref_bmm_2s(XU, W, B, N, M, k2, 8, m, sf, 10, zp, MUL[0], SH[0], oz, Y2, SC);
                bad += cmp("bmm_2s", B * N * M, t);
            }
        }
    }
    say_int(ROUNDS); say(" rounds, "); say_int(bad); say(" mismatches\n");
    tq_semihost_exit(bad ? 0x20023 : 0x20026); /* QEMU exits with 1 / 0 */
}
"""
MPS3 = c_build.RUNTIME_DIR.parent / "targets" / "mps3-an547"


def mve_firmware(tmp_path, rounds: int, variant_flags=(), driver: str = MVE_DRIVER) -> Path:
    """The MVE driver firmware for mps3-an547: the kernels built with the target's flags (-mcpu=cortex-m55) and,
    renamed, with -DTSPTQ_REFERENCE_ONLY, a driver (MVE_DRIVER's matmul cases unless given), and the target's
    start-up code and linker script."""
    from tsptq.deploy.targets import load_target

    target = load_target("mps3-an547")
    src = c_build.RUNTIME_DIR / "src"
    common = MPS3.parent / "common"
    arch = list(target.cflags)  # the TQ_*_CAPACITY defines too: cortex_m.c, the start-up code, needs them
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", *arch, "-I", str(src), "-I", str(src.parent / "include"),
             "-I", str(common)]
    probe = subprocess.run([target.cc, *flags, *variant_flags, "-dM", "-E", str(src / "ops" / "dot.h")],
                           capture_output=True, text=True, check=True)
    assert "#define TQ_SIMD_MVE 1" in probe.stdout, "the mps3-an547 flags do not take the MVE path"
    # the column-pair loop's inline assembly, or (-DTSPTQ_NO_INLINE_ASM) its C body
    assert f"#define TQ_DSP_ASM {0 if '-DTSPTQ_NO_INLINE_ASM' in variant_flags else 1}" in probe.stdout
    objs = _reference_and_variant_objects(target.cc, flags, [str(c_build.RUNTIME_DIR / s) for s in kernel_sources()],
                                          tmp_path, "mve", list(variant_flags))
    (tmp_path / "driver.c").write_text(driver)
    exe = tmp_path / "drv.elf"
    board = [str(MPS3 / "startup.c"), str(common / "cortex_m.c"), str(common / "qemu_fault.c")]
    link = subprocess.run([target.cc, *flags, f"-DROUNDS={rounds}", str(tmp_path / "driver.c"), *board, *objs,
                           "-T", str(MPS3 / "mps3-an547.ld"), "-nostartfiles", "--specs=nano.specs",
                           "-Wl,--gc-sections", "-o", str(exe), "-lm"],
                          capture_output=True, text=True)
    assert link.returncode == 0, link.stderr[-3000:]
    return exe


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("body", ["asm", "c"])
def test_mve_matches_reference(tmp_path, body):
    """The Helium (MVE) kernels of FC_2S, FULLY_CONNECTED, BATCH_MATMUL and BMM_2S (automatic under
    __ARM_FEATURE_MVE, as with -mcpu=cortex-m55), and BMM_BIAS's DSP form there, give the reference path's bytes: the
    two builds linked into one firmware, random cases with every tail, run on QEMU's mps3-an547 (Cortex-M55); with
    the column-pair loop's inline assembly (DLSTP/LETP) and with its C body (-DTSPTQ_NO_INLINE_ASM)."""
    import shutil
    cc, qemu = shutil.which("arm-none-eabi-gcc"), shutil.which("qemu-system-arm")
    if not cc or not qemu:
        pytest.skip("needs gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")
    exe = mve_firmware(tmp_path, 400, ["-DTSPTQ_NO_INLINE_ASM"] if body == "c" else [])
    proc = subprocess.run([qemu, "-M", "mps3-an547", "-display", "none", "-monitor", "none", "-serial", "null",
                           "-semihosting-config", "enable=on,target=native", "-kernel", str(exe)],
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "400 rounds, 0 mismatches" in out, out[-3000:]

if __name__ == "__main__":  # the sanitized child: python test_c_kernels.py LIB [SCALE]
    library = load(Path(sys.argv[1]))
    frac = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    all_failures, total = [], 0
    for k in CASES:
        count, fails = run_kernel(library, k, seed=1, scale=frac)
        total += count
        all_failures += fails
    print("\n".join(all_failures[:20]))
    print(f"{total} cases, {len(all_failures)} failures")
    if all_failures:
        sys.exit(1)
    print("ALL OK")
