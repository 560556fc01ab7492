"""Lowering of a fitted quantized Swin (``QuantizedViT`` over a ``qswin.SwinGraph``) to the integer model.

The linears, LayerNorms, Softmax, GELU, residual adds and attention x V are the ViT's steps (``lower._Builder``);
what is Swin's own is here (the design is ``tsptq.quant.qswin``'s docstring; docs/integer-semantics.md "Swin"):

- the patch embedding: its patches (RESHAPE, TRANSPOSE) through a fully connected layer, not CONV_2D: Swin stores
  the conv output as a residual-kind point (the patch-embedding LayerNorm's input), whose O-2SF code has one step
  per channel, which TSPTQ_FC_2S writes and the builtin CONV_2D (one output scale) cannot;
- data movement, all of it builtin byte moves the C runtime has: the cyclic shift is two STRIDED_SLICEs and a
  CONCATENATION per axis, the window partition / reverse and patch merging's 2x2 gather are RESHAPE - TRANSPOSE -
  RESHAPE (rank <= 6), the padding to whole windows a CONCATENATION with a constant of zero-point codes and its crop
  a STRIDED_SLICE. No gather op: every move is a regular stride pattern, and these builtins are already in the
  runtime, the planner and the file checks;
- the scores: TSPTQ_BMM_BIAS, q.k^T's int32 accumulator plus the relative position bias (its int8 code rescaled
  once, at lowering, into an int32 constant in the accumulator's unit), requantized once to the ``.scores`` code.
  The scores tensor declares the ``.scores`` point's own scale (q.k^T / sqrt(d) + B), so the Softmax's beta is 1;
- the shifted-window mask: TSPTQ_SOFTMAX_MASK_2S, TSPTQ_SOFTMAX_2S with a constant 0/1 mask (windows, N, N) as a
  third input: a masked pair takes no part in the maximum or the sum and gets probability 0 exactly;
- patch merging's LayerNorm reads the stored O-2SF code gathered over the 4 neighbours: the gathered tensor's
  channel code is the stored one tiled 4 times (scales, zero points, shifts).

Layouts (batch 1 in the file): the residual stream (1, H, W, C); windows (1, nW, N, C), N = w * w; q, k, v
(1, nW, heads, N, hd); scores and probabilities (1, nW, heads, N, N).
"""
from __future__ import annotations

import math

import numpy as np

from tsptq.errors import QuantizationError
from tsptq.intmodel.fixedpoint import quantize_multiplier
from tsptq.intmodel.graph import IntModel, QuantParams
from tsptq.intmodel.ops import ACC_LIMIT
from tsptq.quant.qswin import BlockGeometry, SwinGraph
from tsptq.quant.quantizers import Uniform

BIAS_SHIFT_MAX = 16  # the position bias's extra fraction bits below the q.k unit (TSPTQ_BMM_BIAS)
NO_NPU = "--npu ethos-u: Swin has no NPU variant yet (issue 19)"


class _SwinBuilder:
    """Swin's data movement, scores and masked Softmax, on the ViT's builder (``lower._Builder``, passed in: this
    module does not import ``lower``, which calls it): every other attribute is the builder's own (its tensors,
    ops and steps)."""

    def __init__(self, builder):
        self.builder = builder

    def __getattr__(self, name):
        return getattr(self.builder, name)

    # --- data movement (codes pass through unchanged) ---------------------------------------------------------------

    def slice(self, name: str, x: int, begin, end) -> int:
        shape = [e - b for b, e in zip(begin, end)]
        y = self.like(name, x, shape)
        return self.op("STRIDED_SLICE", [x, self.const_i32(f"{name}.begin", begin), self.const_i32(f"{name}.end", end),
                                         self.const_i32(f"{name}.strides", [1] * len(begin))], y)

    def concat(self, name: str, a: int, b: int, axis: int) -> int:
        shape = list(self.t(a).shape)
        shape[axis] += self.t(b).shape[axis]
        return self.op("CONCATENATION", [a, b], self.like(name, a, shape), axis=axis)

    def roll(self, name: str, x: int, shift: int) -> int:
        """torch.roll(x, (shift, shift), dims=(1, 2)) of (1, H, W, C): y[i] = x[(i - shift) mod H] on each axis."""
        for axis in (1, 2):
            shape = list(self.t(x).shape)
            n = shape[axis]
            cut = (-shift) % n  # y = concat(x[cut:], x[:cut])
            if cut == 0:
                continue
            lo, hi = [0] * 4, list(shape)
            hi[axis] = cut
            head = self.slice(f"{name}.{axis}.head", x, lo, hi)
            lo, hi = [0] * 4, list(shape)
            lo[axis] = cut
            tail = self.slice(f"{name}.{axis}.tail", x, lo, hi)
            x = self.concat(f"{name}.{axis}", tail, head, axis)
        return x

    def pad_zero(self, name: str, x: int, axis: int, n: int) -> int:
        """Append n tokens of real value 0 (the code's zero point) along axis 1 or 2 of (1, H, W, C)."""
        t = self.t(x)
        shape = list(t.shape)
        shape[axis] = n
        zeros = self.add(f"{name}.zeros", shape, t.dtype, t.quant,
                         np.broadcast_to(t.quant.zero_point.astype(np.int64), shape))
        return self.concat(name, x, zeros, axis)

    def partition(self, name: str, x: int, w: int) -> int:
        """(1, Hp, Wp, C) -> (1, nW, w*w, C), windows row-major (model.swin.window_partition)."""
        _, H, W, C = self.t(x).shape
        y = self.reshape(f"{name}.grid", x, (1, H // w, w, W // w, w, C))
        y = self.transpose(f"{name}.windows", y, (0, 1, 3, 2, 4, 5))
        return self.reshape(name, y, (1, (H // w) * (W // w), w * w, C))

    def reverse(self, name: str, x: int, w: int, H: int, W: int) -> int:
        """(1, nW, w*w, C) -> (1, H, W, C) (model.swin.window_reverse)."""
        C = self.t(x).shape[-1]
        y = self.reshape(f"{name}.windows", x, (1, H // w, W // w, w, w, C))
        y = self.transpose(f"{name}.grid", y, (0, 1, 3, 2, 4, 5))
        return self.reshape(name, y, (1, H, W, C))

    def merge_2x2(self, name: str, x: int) -> int:
        """(1, H, W, C) -> (1, H/2, W/2, 4C) in timm's neighbour order (0,0), (1,0), (0,1), (1,1)
        (model.swin.merge_2x2): channel (dc * 2 + dr) * C + c of token (i, j) is x[2i + dr, 2j + dc, c]. The code is the stored one tiled."""
        t = self.t(x)
        _, H, W, C = t.shape
        y = self.reshape(f"{name}.pairs", x, (1, H // 2, 2, W // 2, 2, C))  # (1, i, dr, j, dc, c)
        y = self.transpose(f"{name}.neighbours", y, (0, 1, 3, 4, 2, 5))  # (1, i, j, dc, dr, c)
        q = t.quant
        if len(q.scale) > 1:
            details = dict(q.details, shifts=list(q.details["shifts"]) * 4) if q.details else None
            q = QuantParams(np.tile(q.scale, 4), np.tile(q.zero_point, 4), q.axis, details)
        out = self.add(name, (1, H // 2, W // 2, 4 * C), t.dtype, q)
        return self.op("RESHAPE", [y, self.const_i32(f"{name}.shape", (1, H // 2, W // 2, 4 * C))], out,
                       new_shape=[1, H // 2, W // 2, 4 * C])

    def patch_embed(self, x: int, codes) -> int:
        """The patch embedding as its patches (RESHAPE, TRANSPOSE: (1, gh, gw, p*p*C) in the filter's OHWI order) and
        a fully connected layer: its output is a residual-kind point, whose O-2SF code has one step per channel,
        which the builtin CONV_2D (one output scale) cannot write; TSPTQ_FC_2S can (FULLY_CONNECTED for a per-tensor
        code)."""
        cfg = self.qm.graph.cfg
        p, C, g = cfg.patch_size, cfg.in_chans, cfg.grid
        if C * p * p * 255 * 128 > ACC_LIMIT:
            raise QuantizationError("patch_embed: the int32 accumulator could overflow")
        y = self.reshape("patch_embed.rows", x, (1, g, p, g, p, C))
        y = self.transpose("patch_embed.cells", y, (0, 1, 3, 2, 4, 5))
        y = self.reshape("patch_embed.patches", y, (1, g, g, p * p * C))
        w_codes, w_scale, bias = codes  # lower.patch_embed_codes: OHWI
        return self._fc("patch_embed", y, w_codes.reshape(len(w_codes), -1), w_scale, bias, "patch_embed",
                        (1, g, g, cfg.embed_dim))

    # --- attention --------------------------------------------------------------------------------------------------

    def scores(self, p: str, q: int, k: int, shape, hd: int) -> int:
        """TSPTQ_BMM_BIAS: (q - zq).(k - zk) + bias, one rounding to the .scores code. The accumulator's unit is
        u = s_q s_k / sqrt(hd); the int8 bias code b (scale s_b) becomes round(b s_b 2^e / u), in units of u / 2^e,
        with the largest e <= BIAS_SHIFT_MAX that keeps (acc << e) + bias an int32: rounding the bias to u alone
        (about 1/150 of a scores step here) moved 1 in 500 scores one code off the simulator's."""
        qm = self.qm
        qt, kt = self.t(q), self.t(k)
        y = self.act(f"{p}.scores", shape)
        yt = self.t(y)
        unit = float(np.float32(float(qt.quant.scale[0]) * float(kt.quant.scale[0]) / math.sqrt(hd)))
        bq = qm.consts[f"{p}.rel_bias"]
        codes = bq.encode(qm.graph.consts[f"{p}.rel_bias"]).numpy().astype(np.float64)  # (heads, N, N)
        max_acc = hd * 255 * 255  # |q - zq|, |k - zk| <= 255
        for e in range(BIAS_SHIFT_MAX, -1, -1):
            bias = np.sign(codes) * np.floor(np.abs(codes) * float(bq.scale) * 2.0**e / unit + 0.5)
            if (max_acc << e) + np.abs(bias).max() <= ACC_LIMIT:
                break
        else:
            raise QuantizationError(f"{p}.scores: the position bias overflows the int32 accumulator (bias scale "
                                    f"{float(bq.scale):.3g} against the q.k unit {unit:.3g})")
        bi = self.add(f"{p}.rel_bias", bias.shape, "int32",
                      QuantParams(np.array([unit * 2.0**-e], np.float32), np.zeros(1, np.int64)), bias.astype(np.int32))
        mult, shift = quantize_multiplier(unit / float(yt.quant.scale[0]))
        if not (-31 <= shift <= 31 and 1 <= 31 - shift + e <= 62 and 0 <= mult <= ACC_LIMIT):  # the op's bounds
            raise QuantizationError(f"{p}.scores: the scores scale ({float(yt.quant.scale[0]):.3g}) is out of the "
                                    f"requantization's range for the q.k unit ({unit:.3g})")
        return self.op("TSPTQ_BMM_BIAS", [q, k, bi], y, a_zp=qt.zp, b_zp=kt.zp, bias_shift=e, mult=mult, shift=shift,
                       out_zp=yt.zp)

    def masked_softmax(self, p: str, scores: int, shape, mask) -> int:
        """TSPTQ_SOFTMAX_MASK_2S: TSPTQ_SOFTMAX_2S's parameters (beta 1: the scores hold the point's value) and the
        mask, 1 where the pair takes part (the float mask's 0), 0 where it is masked (its -100)."""
        keep = (mask[:, 0] == 0).numpy().astype(np.int8)  # (windows, N, N)
        if not keep.any(-1).all():
            raise QuantizationError(f"{p}: a row of the shifted-window mask masks every pair")
        y = self.softmax(f"{p}.softmax", scores, shape, 1.0)
        op = self.ops.pop()
        mi = self.add(f"{p}.attn_mask", keep.shape, "int8", data=keep)
        return self.op("TSPTQ_SOFTMAX_MASK_2S", [*op.inputs, mi], y, **op.options)

    def block(self, g: SwinGraph, b: BlockGeometry, r: int, out_point: str) -> int:
        """One (shifted) window-attention block on (1, H, W, C): the ``.in`` tensor in, ``out_point``'s out."""
        p, w, heads = b.name, b.window, b.heads
        _, H, W, D = self.t(r).shape
        hd = D // heads
        a = self.layernorm(f"{p}.norm1", r, (1, H, W, D))
        if b.shift:
            a = self.roll(f"{p}.shifted", a, -b.shift)
        pad_h, pad_w = -H % w, -W % w
        if pad_h:  # zero tokens at the bottom/right, after the roll (as the float model and timm)
            a = self.pad_zero(f"{p}.pad_h", a, 1, pad_h)
        if pad_w:
            a = self.pad_zero(f"{p}.pad_w", a, 2, pad_w)
        Hp, Wp = H + pad_h, W + pad_w
        win = self.partition(f"{p}.windows", a, w)
        nW, N = (Hp // w) * (Wp // w), w * w
        parts = {}
        for j, part in enumerate("qkv"):
            y = self.linear(f"{p}.qkv", win, f"{p}.{part}", (1, nW, N, D), rows=slice(j * D, (j + 1) * D),
                            name=f"{p}.{part}")
            y = self.reshape(f"{p}.{part}.heads", y, (1, nW, N, heads, hd))
            parts[part] = self.transpose(f"{p}.{part}.bwhnd", y, (0, 1, 3, 2, 4))
        s = self.scores(p, parts["q"], parts["k"], (1, nW, heads, N, N), hd)
        if p in g.masks:
            probs = self.masked_softmax(p, s, (1, nW, heads, N, N), g.masks[p])
        else:
            probs = self.softmax(f"{p}.softmax", s, (1, nW, heads, N, N), 1.0)
        ctx = self.attention_values(f"{p}.ctx", probs, parts["v"], (1, nW, heads, N, hd))
        ctx = self.transpose(f"{p}.ctx.bwnhd", ctx, (0, 1, 3, 2, 4))
        ctx = self.reshape(f"{p}.ctx.tokens", ctx, (1, nW, N, D))
        o = self.linear(f"{p}.proj", ctx, f"{p}.proj", (1, nW, N, D))
        o = self.reverse(f"{p}.proj.grid", o, w, Hp, Wp)
        if pad_h or pad_w:
            o = self.slice(f"{p}.proj.crop", o, [0, 0, 0, 0], [1, H, W, D])
        if b.shift:
            o = self.roll(f"{p}.proj.unshifted", o, b.shift)
        m = self.residual_add(r, o, f"{p}.mid", (1, H, W, D))
        a = self.layernorm(f"{p}.norm2", m, (1, H, W, D))
        hidden = g.linears[f"{p}.fc1"][0].shape[0]
        h = self.linear(f"{p}.fc1", a, f"{p}.fc1", (1, H, W, hidden))
        h = self.gelu(f"{p}.gelu", h, (1, H, W, hidden))
        f = self.linear(f"{p}.fc2", h, f"{p}.fc2", (1, H, W, D))
        return self.residual_add(m, f, out_point, (1, H, W, D))


def lower_swin(builder, patch_codes, npu: bool = False) -> IntModel:
    """The integer model of a fitted Swin quantization, built with ``builder`` (a fresh ``lower._Builder`` of it;
    ``lower.lower`` checked the method and the bits); ``patch_codes``: ``lower.patch_embed_codes``'s."""
    if npu:
        raise QuantizationError(NO_NPU)
    qm = builder.qm
    # the Swin graph has no scores head axis (qswin.SwinGraph.scores_head_axis), so no method fits one; refuse any
    per_head = [n for n, q in qm.acts.items() if n.endswith(".scores") and isinstance(q, Uniform) and q.scale.ndim]
    if per_head:
        raise QuantizationError(f"{per_head[0]}: a per-head scores code has no Swin integer model (TSPTQ_BMM_BIAS "
                                "takes one scores code per tensor)")
    g: SwinGraph = qm.graph
    cfg = g.cfg
    b = _SwinBuilder(builder)
    # where each unit's output is stored: the next unit's input point (the graph's own list)
    stored_at = {name: target for name, _, target in g.units()}
    gh, D = cfg.grid, cfg.embed_dim

    x = b.act("input", (1, cfg.img_size, cfg.img_size, cfg.in_chans))
    t = b.patch_embed(x, patch_codes)
    # the patch embedding's LayerNorm writes the residual stream, in the code of the point that stores it
    t = b.layernorm("patch_embed.norm", t, (1, gh, gh, D), out_point=stored_at["embed"])

    for s, blocks in enumerate(g.stages):
        if s > 0:
            d = f"layers.{s}.downsample"
            merged = b.merge_2x2(f"{d}.merged", t)
            shape = b.t(merged).shape
            a = b.layernorm(f"{d}.norm", merged, shape)
            t = b.linear(f"{d}.reduction", a, stored_at[d], (*shape[:3], cfg.stage_dim(s)))
        for blk in blocks:
            t = b.block(g, blk, t, stored_at[blk.name])

    _, H, W, C = b.t(t).shape
    n = b.layernorm("norm", t, (1, H, W, C))
    tokens = b.reshape("norm.tokens", n, (1, H * W, C))
    mean = b.op("TSPTQ_TOKEN_MEAN", [tokens], b.like("norm.patch_mean", n, (1, 1, C)), first=0)
    features = b.reshape("norm.pooled", mean, (1, C))
    out = b.linear("head", features, "head", (1, cfg.num_classes)) if cfg.num_classes else features
    calibration = {k: v for k, v in qm.info.items() if k != "calib_seconds"}
    meta = {"method": qm.method, "bits": f"W{qm.w_bits}A{qm.a_bits}", "calibration": calibration,
            "config": cfg.to_dict()}
    return IntModel(b.tensors, b.ops, [x], [out], meta)
