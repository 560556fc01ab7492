"""Scale searches: from calibration tensors to fitted quantizers, one function per code and criterion.

Output-error searches score a candidate by the error it causes in the *consuming* layer's output
(attn x V for post-Softmax, fc2 for post-GELU, the LayerNorm for residual-stream codes), as TSPTQ-ViT asks;
the plain ones score the tensor itself. Big tensors are subsampled with a fixed seed, so calibration is
deterministic.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from tsptq.quant.quantizers import (ChannelPow2, Log2, SignSplit, TwoScale, Uniform, round_half_away, signed_range,
                              symmetric_per_channel, uniform_from_range)

ErrorFn = Callable[[torch.Tensor], float]
CLIP_GRID = torch.linspace(1.0, 0.3, 15).tolist()
MAX_ELEMENTS = 1 << 18
REFINE_GRID = CLIP_GRID[:10:2]  # 1.0, 0.9, ..., 0.6: the second, finer pass of the two-scale searches
# Each end of a nonlinearity's input range is clipped on its own: 1.0, 0.95, ..., 0.1 of the observed end.
END_GRID = torch.linspace(1.0, 0.1, 19).tolist()


def subsample(x: torch.Tensor, n: int = MAX_ELEMENTS, seed: int = 0) -> torch.Tensor:
    flat = x.reshape(-1)
    if flat.numel() <= n:
        return flat
    gen = torch.Generator().manual_seed(seed)
    return flat[torch.randint(0, flat.numel(), (n,), generator=gen)]


def subsample_rows(x: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[0] <= n:
        return rows
    gen = torch.Generator().manual_seed(seed)
    return rows[torch.randperm(rows.shape[0], generator=gen)[:n]]


def tensor_error(x: torch.Tensor) -> ErrorFn:
    return lambda xq: float((xq - x).square().sum())


def best_of(candidates, err: ErrorFn, data: torch.Tensor):
    """The candidate quantizer with the smallest err(fake(data)) (first wins ties, so results are deterministic)."""
    scored = [(err(q.fake(data)), i, q) for i, q in enumerate(candidates)]
    return min(scored, key=lambda t: (t[0], t[1]))[2]


# --- uniform codes ----------------------------------------------------------------------------------------------

def minmax(x: torch.Tensor, bits: int) -> Uniform:
    return uniform_from_range(float(x.min()), float(x.max()), bits)


def percentile(x: torch.Tensor, bits: int, pct: float = 99.99) -> Uniform:
    s = subsample(x)
    q = torch.quantile(s, torch.tensor([1 - pct / 100, pct / 100]))
    return uniform_from_range(float(q[0]), float(q[1]), bits)


def mse_uniform(x: torch.Tensor, bits: int, err: ErrorFn | None = None, data: torch.Tensor | None = None) -> Uniform:
    """Clip the min/max range by a common factor, keep the factor with the smallest error."""
    data = subsample(x) if data is None else data
    lo, hi = float(x.min()), float(x.max())
    cands = [uniform_from_range(lo * a, hi * a, bits) for a in CLIP_GRID]
    return best_of(cands, err or tensor_error(data), data)


def asymmetric_uniform(x: torch.Tensor, bits: int, err: ErrorFn, data: torch.Tensor, high: bool = True) -> Uniform:
    """Clip the low and the high end of the min/max range independently, by coordinate descent (low end, high end,
    low end again over ``END_GRID``), keeping the pair with the smallest ``err``; with ``high=False`` only the low end
    (the high end stays at the observed maximum). For the input of a nonlinearity that flattens its low side (GELU
    below about -3, Softmax far below the row maximum), the consumer's error lets the flat side go and spends the
    steps where the output moves."""
    lo, hi = float(x.min()), float(x.max())
    a = b = 1.0
    for end in ("low", "high", "low") if high else ("low",):
        cands = [(f, b) if end == "low" else (a, f) for f in END_GRID]
        scored = [(err(uniform_from_range(lo * fa, hi * fb, bits).fake(data)), i) for i, (fa, fb) in enumerate(cands)]
        a, b = cands[min(scored)[1]]
    return uniform_from_range(lo * a, hi * b, bits)


def top_range_codes(x: torch.Tensor, bits: int, fractions=(0.75, 0.5, 0.35)) -> list[Uniform]:
    """Uniform codes over the top ``fraction`` of the min/max range (for logits: the bottom ones are clamped, the
    top ones, which decide the class, get a finer step and fewer ties)."""
    lo, hi = float(x.min()), float(x.max())
    return [uniform_from_range(hi - f * (hi - lo), hi, bits) for f in fractions]


def weight_code(w: torch.Tensor, bits: int, search: bool) -> Uniform:
    """Symmetric per-output-channel code; with ``search`` each channel's clip minimizes its own squared error."""
    if not search:
        return symmetric_per_channel(w, bits)
    rows = w.reshape(w.shape[0], -1)
    qmax = (1 << (bits - 1)) - 1
    absmax = rows.abs().amax(1).clamp_min(1e-8)
    grid = torch.linspace(1.0, 0.5, 21)
    errs = []
    for a in grid:
        s = (absmax * a / qmax)[:, None]
        errs.append((round_half_away(rows / s).clamp_(-qmax - 1, qmax) * s - rows).square().sum(1))
    best = torch.stack(errs).argmin(0)  # first (least clipping) wins ties
    return symmetric_per_channel(w, bits, clip=grid[best])


# --- two-scale codes (V-2SF, twin) ------------------------------------------------------------------------------

def v2sf(x: torch.Tensor, bits: int, signed_fine: bool, err: ErrorFn, data: torch.Tensor, m_max: int) -> TwoScale:
    """V-2SF: search the ratio exponent m and the fine scale s.

    For each m the coarse region first covers the observed maximum (s = max / (F * 2^m)); the two best m are
    then refined with the maximum clipped by 1.0 ... 0.6. Candidates are scored by ``err`` (the consumer's output error).
    """
    hi = max(float(x.max()), 1e-8)
    fmax = (1 << (bits - 1)) - 1
    ms = list(range(1, m_max + 1)) or [0]
    first = {m: TwoScale(hi / (fmax << m), m, bits, signed_fine) for m in ms}
    scores = sorted((err(q.fake(data)), m) for m, q in first.items())
    cands = [TwoScale(hi * a / (fmax << m), m, bits, signed_fine) for _, m in scores[:2] for a in REFINE_GRID]
    return best_of(cands, err, data)


def twin_softmax(bits: int, err: ErrorFn, data: torch.Tensor, m_max: int) -> TwoScale:
    """PTQ4ViT twin uniform: coarse step fixed at 1/2^(b-1), fine step 2^-m of it, m searched."""
    coarse = 1.0 / (1 << (bits - 1))
    return best_of([TwoScale(coarse / (1 << m), m, bits) for m in range(0, m_max + 1)], err, data)


def twin_gelu(x: torch.Tensor, bits: int, err: ErrorFn, data: torch.Tensor) -> SignSplit:
    """PTQ4ViT twin uniform for post-GELU: negative step fixed so 2^(b-1) codes span [-0.16997, 0], positive searched."""
    step_neg = 0.16997 / (1 << (bits - 1))
    hi = max(float(x.max()), 1e-8)
    fmax = (1 << (bits - 1)) - 1
    return best_of([SignSplit(step_neg, hi * a / fmax, bits) for a in CLIP_GRID], err, data)


# --- per-channel power-of-two codes (O-2SF, PTF) ------------------------------------------------------------------

def _channel_ranges(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = x.reshape(-1, x.shape[-1])
    return rows.amin(0), rows.amax(0)


def _fit_shift(lo_c, hi_c, scale, zp, bits, n_max=7) -> int:
    """Smallest n with every given channel's range inside the code range at scale * 2^n (n <= 7: (q - zp) << n
    stays an int16 for the consumer)."""
    qmin, qmax = signed_range(bits)
    for n in range(1, n_max + 1):
        s = scale * (1 << n)
        if float(hi_c.max()) <= s * (qmax - zp) and float(lo_c.min()) >= s * (qmin - zp):
            return n
    return n_max


def o2sf(x: torch.Tensor, bits: int, err: ErrorFn, data: torch.Tensor, levels: bool = False) -> ChannelPow2:
    """O-2SF: outlier channels (range > tau x median range) get scale s * 2^n, the rest share the fine scale s.

    Searched jointly over tau (inf = no outliers, a plain uniform code), the clip of the normal channels' range,
    and n (the smallest that fits the outliers, or one less), scored by the consuming LayerNorm's output error.
    ``levels``: also, per (tau, clip), the code where each outlier channel gets the smallest shift its own range
    needs (1..n) instead of the common n: DINOv2's outlier channels span two orders of magnitude.
    """
    lo_c, hi_c = _channel_ranges(x)
    width = hi_c - lo_c
    med = float(width.median())
    cands, seen = [], set()
    for tau in (float("inf"), 32, 24, 16, 12, 8, 6, 4, 3, 2):
        outlier = width > tau * med
        key = tuple(outlier.nonzero().flatten().tolist())
        if key in seen or int(outlier.sum()) == width.numel():
            continue
        seen.add(key)
        lo, hi = float(lo_c[~outlier].min()), float(hi_c[~outlier].max())
        for a in REFINE_GRID:
            base = uniform_from_range(lo * a, hi * a, bits)
            s, zp = float(base.scale), int(base.zero_point)
            if not outlier.any():
                cands.append(ChannelPow2(s, zp, torch.zeros_like(width, dtype=torch.int64), bits))
                continue
            n_fit = _fit_shift(lo_c[outlier], hi_c[outlier], s, zp, bits)
            for n in sorted({n_fit, max(1, n_fit - 1)}):
                cands.append(ChannelPow2(s, zp, outlier.long() * n, bits))
            if levels:  # each outlier channel at the smallest shift its own range needs (up to n_fit)
                own = torch.tensor([_fit_shift(lo_c[c:c + 1], hi_c[c:c + 1], s, zp, bits, n_fit) if outlier[c] else 0
                                    for c in range(width.numel())])
                cands.append(ChannelPow2(s, zp, own, bits))
    return best_of(cands, err, data)


def ptf(x: torch.Tensor, bits: int, levels: int = 3) -> ChannelPow2:
    """FQ-ViT Power-of-Two Factor: s = (max - min) / (2^b - 1) / 2^K, per-channel alpha in 0..K by channel L2 error."""
    lo_c, hi_c = _channel_ranges(x)
    lo, hi = min(float(lo_c.min()), 0.0), max(float(hi_c.max()), 0.0)
    qmin, qmax = signed_range(bits)
    top = (hi - lo) / (qmax - qmin)
    scale = top / (1 << levels)
    zp = min(max(round(qmin - lo / top), qmin), qmax)
    rows = subsample_rows(x, 8192)
    errs = []
    for alpha in range(levels + 1):
        q = ChannelPow2(scale, zp, torch.full((x.shape[-1],), alpha), bits)
        errs.append((q.fake(rows) - rows).square().sum(0))
    return ChannelPow2(scale, zp, torch.stack(errs).argmin(0), bits)


def log2_code(bits: int) -> Log2:
    return Log2(bits)


# --- consumer output errors -----------------------------------------------------------------------------------

def attention_output_error(probs: torch.Tensor, v: torch.Tensor) -> ErrorFn:
    """Squared error of attn x V caused by quantizing the attention probabilities."""
    return lambda pq: float(((pq - probs) @ v).square().sum())


def linear_output_error(x: torch.Tensor, weight: torch.Tensor) -> ErrorFn:
    """Squared error of x @ W^T caused by quantizing x (the bias cancels)."""
    return lambda xq: float(((xq - x) @ weight.T).square().sum())


def gelu_output_error(x: torch.Tensor, weight: torch.Tensor) -> ErrorFn:
    """Squared error of GELU(x) @ W^T (the MLP's second layer) caused by quantizing the GELU's input x."""
    ref = F.gelu(x)
    return lambda xq: float(((F.gelu(xq) - ref) @ weight.T).square().sum())


def softmax_output_error(scores: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> ErrorFn:
    """Squared error of softmax(scores) x V caused by quantizing the attention scores. ``mask``: the additive mask
    the Softmax sees after the scores' code (Swin's shifted windows), the same for the float and the quantized."""
    if mask is None:
        ref = scores.softmax(-1)
        return lambda sq: float(((sq.softmax(-1) - ref) @ v).square().sum())
    ref = (scores + mask).softmax(-1)
    return lambda sq: float((((sq + mask).softmax(-1) - ref) @ v).square().sum())


def layernorm_output_error(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> ErrorFn:
    """Squared error of the LayerNorm's output over the rows ``x`` it reads. A candidate may come as the same
    values in rows of fewer channels (Swin's patch merging normalizes four neighbours' channels side by side)."""
    ref = F.layer_norm(x, (x.shape[-1],), gamma, beta, eps)
    return lambda xq: float((F.layer_norm(xq.reshape(x.shape), (x.shape[-1],), gamma, beta, eps) - ref)
                            .square().sum())
