"""Lowering: a fitted QuantizedViT -> the integer model (``IntModel``), op by op as the file will hold it.

Ops whose codes TFLite can express (per-tensor int8 activations, per-channel int8 weights) become builtins; the
ops that produce or consume a two-scale code, and LayerNorm/Softmax/GELU, become ``TSPTQ_*`` custom ops whose
integer parameters are computed here once, from the same float32 scales the simulator used.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from tsptq.intmodel import kernels as K
from tsptq.errors import QuantizationError
from tsptq.intmodel.fixedpoint import fixed_multiplier, quantize_multiplier
from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
from tsptq.quant.quantizers import ChannelPow2, Log2, SignSplit, TwoScale, Uniform
from tsptq.quant.qswin import SwinGraph
from tsptq.quant.qvit import QuantizedViT

ACC_LIMIT = 2**31 - 1  # every accumulator is an int32 in the C runtime


def patch_embed_codes(qm: QuantizedViT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 weight codes OHWI, float32 per-channel weight scales, int32 bias codes) of the patch embedding."""
    w, bias = qm.graph.linears["patch_embed"]
    wq = qm.weights["patch_embed"]
    bias_q = Uniform(qm.acts["input"].base_scale * wq.scale, torch.zeros_like(bias), 32, axis=0)
    return (wq.encode(w).permute(0, 2, 3, 1).numpy().astype(np.int8), wq.scale.numpy().astype(np.float32),
            bias_q.encode(bias).numpy().astype(np.int32))


def per_head_code(q) -> bool:
    """Whether an attention scores code is a per-head one (tsptq-heads: a uniform code with a scale per head)."""
    return isinstance(q, Uniform) and q.scale.ndim > 0


def scores_scales(qm: QuantizedViT, block: int) -> np.ndarray:
    """The scores tensor's declared scales (float32), one per head for a per-head code, else one: each holds q.k
    (beta = hd^-0.5 is applied by the softmax)."""
    q = qm.acts[f"blocks.{block}.scores"]
    root = math.sqrt(qm.graph.cfg.head_dim)
    return np.array([np.float32(float(s) * root) for s in np.atleast_1d(q.scale.numpy())], np.float32)


def scores_scale(qm: QuantizedViT, block: int) -> float:
    """The scores tensor's declared scale, for a per-tensor code (a per-head code: ``scores_scales``)."""
    if per_head_code(qm.acts[f"blocks.{block}.scores"]):
        raise QuantizationError(f"blocks.{block}.scores: a per-head code has one scale per head (scores_scales)")
    return float(scores_scales(qm, block)[0])


def scores_params(qm: QuantizedViT, block: int) -> QuantParams:
    """The scores tensor's quantization: per tensor, or per head along the heads axis (1 of (1, H, T, T))."""
    q = qm.acts[f"blocks.{block}.scores"]
    scales = scores_scales(qm, block)
    if not per_head_code(q):
        return QuantParams(scales, np.array([int(q.zero_point)], np.int64))
    H, axis = qm.graph.cfg.num_heads, qm.graph.scores_head_axis
    if q.axis != axis or len(scales) != H or q.zero_point.shape != q.scale.shape:
        raise QuantizationError(f"blocks.{block}.scores: a per-head code needs {H} scales and zero points along axis "
                                f"{axis}, got {len(scales)} along axis {q.axis}")
    return QuantParams(scales, np.array([int(z) for z in q.zero_point.tolist()], np.int64), axis=axis)


def code_params(q, channels: int) -> tuple[str, QuantParams]:
    """A quantizer -> (dtype, TFLite quantization parameters with the two-scale description in ``details``)."""
    if isinstance(q, Uniform):
        if q.scale.ndim:
            raise QuantizationError("activations are per-tensor or two-scale codes")
        return "int8", QuantParams(np.array([float(q.scale)], np.float32), np.array([int(q.zero_point)], np.int64))
    if isinstance(q, ChannelPow2):
        shifts = q.shifts.numpy().astype(np.int64)
        return "int8", QuantParams(np.float32(q.scale) * np.exp2(shifts).astype(np.float32),
                                   np.full(channels, q.zero_point, np.int64), axis=-1,
                                   details={"kind": "channel_pow2", "bits": q.bits, "base_scale": float(np.float32(q.scale)),
                                            "shifts": shifts.tolist()})
    if isinstance(q, TwoScale):
        return "uint8", QuantParams(np.array([q.s], np.float32), np.zeros(1, np.int64),
                                    details={"kind": "two_scale", "bits": q.bits, "fine_scale": float(np.float32(q.s)),
                                             "ratio_log2": q.m, "signed_fine": bool(q.signed_fine),
                                             "layout": f"flag:1|field:{q.bits - 1}"})
    if isinstance(q, SignSplit):
        return "uint8", QuantParams(np.array([q.step_pos], np.float32), np.zeros(1, np.int64),
                                    details={"kind": "sign_split", "bits": q.bits, "step_neg": float(np.float32(q.step_neg)),
                                             "layout": f"sign:1|magnitude:{q.bits - 1}"})
    if isinstance(q, Log2):
        return "uint8", QuantParams(np.ones(1, np.float32), np.zeros(1, np.int64),
                                    details={"kind": "log2", "bits": q.bits})
    raise QuantizationError(f"no integer form for the code {type(q).__name__}")


def _channel_scales(t: Tensor) -> np.ndarray:
    """Real step per channel (per-tensor codes: one value)."""
    return t.quant.scale.astype(np.float32)


def _unit(t: Tensor) -> float:
    """The real value of one integer unit of the decoded operand d (see tsptq.intmodel.kernels.decode_operand)."""
    d = t.quant.details
    if d is None:
        return float(t.quant.scale[0])
    return {"channel_pow2": lambda: d["base_scale"], "two_scale": lambda: d["fine_scale"],
            "sign_split": lambda: float(t.quant.scale[0]), "log2": lambda: 1.0}[d["kind"]]()


def _max_operand(t: Tensor) -> int:
    """Largest |d| an operand of this code can take."""
    d = t.quant.details
    if d is None:
        return 255
    if d["kind"] == "channel_pow2":
        return 255 << max(d["shifts"])
    if d["kind"] == "two_scale":
        return ((1 << (d["bits"] - 1)) - 1) << d["ratio_log2"]
    return 255


def residual16_scale(q, channels: int) -> float:
    """The int16 step of a residual-stream (or branch) point under ``residual16``: the finest that holds the point's
    8-bit code's whole range, |real| <= step * 32767 (float32). A uniform code's range is scale * (q - zp) for q in
    -128..127; an O-2SF code's widest channel has the step base * 2^max(shift)."""
    _, quant = code_params(q, channels)
    zp = int(quant.zero_point[0])
    units = max(128 + zp, 127 - zp)  # the largest |q - zp|
    step = float(np.max(quant.scale.astype(np.float64)))
    return float(np.float32(step * units / 32767.0))


def _i16(scale: float) -> QuantParams:
    """An int16 tensor's quantization: one scale, zero point 0 (TFLite's int16 activations are symmetric)."""
    return QuantParams(np.array([scale], np.float32), np.zeros(1, np.int64))


class _Builder:
    """The default lowering. The NPU variant is ``_NpuBuilder``, which overrides the steps it changes."""

    def __init__(self, qm: QuantizedViT):
        self.qm = qm
        self.tensors: list[Tensor] = []
        self.ops: list[Op] = []

    def add(self, name, shape, dtype, quant=None, data=None) -> int:
        if data is not None:
            data = np.ascontiguousarray(np.asarray(data).astype(dtype).reshape(shape))
        self.tensors.append(Tensor(name, tuple(int(s) for s in shape), dtype, quant, data))
        return len(self.tensors) - 1

    def act(self, point: str, shape) -> int:
        dtype, quant = code_params(self.qm.acts[point], shape[-1])
        return self.add(point, shape, dtype, quant)

    def like(self, name: str, src: int, shape) -> int:
        s = self.tensors[src]
        return self.add(name, shape, s.dtype, s.quant)

    def const_i32(self, name, values) -> int:
        v = np.asarray(values, np.int32)
        return self.add(name, v.shape, "int32", data=v)

    def op(self, kind, inputs, output, **options) -> int:
        self.ops.append(Op(kind, list(inputs), [output], options))
        return output

    def t(self, i) -> Tensor:
        return self.tensors[i]

    # --- composite steps -------------------------------------------------------------------------------------------

    def linear(self, layer: str, x: int, out_point: str, out_shape, rows=slice(None), name=None) -> int:
        """FULLY_CONNECTED (or TSPTQ_FC_2S when the input or output code is not per-tensor int8)."""
        qm = self.qm
        w, b = qm.graph.linears[layer]
        wq = qm.weights[layer]
        codes = wq.encode(w)[rows].numpy()
        w_scale = wq.scale[rows].numpy().astype(np.float32)
        in_q = qm.acts[qm.graph.linear_input(layer)]
        bias_q = Uniform(in_q.base_scale * wq.scale, torch.zeros_like(b), 32, axis=0)
        bias = bias_q.encode(b)[rows].numpy()
        name = name or layer
        xt = self.t(x)
        fan_in = codes.shape[1]
        # an int16 input (the NPU variant) holds the decoded value of its producer's code: bound it by that code
        bound = Tensor("", (fan_in,), *code_params(in_q, fan_in)) if xt.dtype == "int16" else xt
        if fan_in * _max_operand(bound) * 128 > ACC_LIMIT:
            raise QuantizationError(f"{name}: the int32 accumulator could overflow (fan-in {fan_in})")
        return self._fc(name, x, codes, w_scale, bias, out_point, out_shape)

    def _fc(self, name, x, codes, w_scale, bias, out_point, out_shape) -> int:
        """The FC op of ``linear``: FULLY_CONNECTED for per-tensor int8 codes in and out, else TSPTQ_FC_2S."""
        xt = self.t(x)
        fan_in = codes.shape[1]
        wi = self.add(f"{name}.weight", codes.shape, "int8",
                      QuantParams(w_scale, np.zeros(len(w_scale), np.int64), axis=0), codes)
        bi = self.add(f"{name}.bias", bias.shape, "int32",
                      QuantParams((np.float32(_unit(xt)) * w_scale).astype(np.float32), np.zeros(len(w_scale), np.int64)),
                      bias)
        y = self.act(out_point, out_shape)
        yt = self.t(y)
        if xt.quant.details is None and yt.quant.details is None:
            return self.op("FULLY_CONNECTED", [x, wi, bi], y, keep_num_dims=True)
        mult, shift = K.builtin_multipliers(_unit(xt), w_scale, np.broadcast_to(_channel_scales(yt), w_scale.shape))
        kind = xt.quant.kind
        details = xt.quant.details or {}
        in_shift = np.asarray(details.get("shifts", [0] * fan_in), np.int8)
        neg = quantize_multiplier(details["step_neg"] / float(xt.quant.scale[0])) if kind == "sign_split" else (0, 0)
        return self.op("TSPTQ_FC_2S", [x, wi, bi, self.const_i32(f"{name}.out_mult", mult),
                                       self.const_i32(f"{name}.out_shift", shift),
                                       self.add(f"{name}.in_shift", in_shift.shape, "int8", data=in_shift)], y,
                       in_kind=K.CODE_KINDS[kind], in_zp=xt.zp, bits=details.get("bits", 8),
                       ratio_log2=details.get("ratio_log2", 0), signed_fine=int(details.get("signed_fine", False)),
                       neg_mult=neg[0], neg_shift=neg[1], out_zp=yt.zp)

    def residual_add(self, a: int, b: int, out_point: str, shape) -> int:
        y = self.act(out_point, shape)
        ta, tb, ty = self.t(a), self.t(b), self.t(y)
        if all(t.quant.details is None for t in (ta, tb, ty)):
            return self.op("ADD", [a, b], y)
        params = K.add_params(_channel_scales(ta), _channel_scales(tb), _channel_scales(ty))
        pi = self.const_i32(f"{out_point}.add_params", params)
        return self.op("TSPTQ_ADD_2S", [a, b, pi], y, a_zp=ta.zp, b_zp=tb.zp, out_zp=ty.zp)

    def layernorm(self, norm: str, x: int, shape, out_point: str | None = None) -> int:
        qm = self.qm
        gamma, beta = (t.double().numpy() for t in qm.graph.norms[norm])
        xt = self.t(x)
        y = self.act(out_point or norm, shape)  # (Swin's patch embedding norm writes the next point's code)
        yt = self.t(y)
        D = shape[-1]
        if D > K.LN_MAX_CHANNELS:
            raise QuantizationError(f"{norm}: the integer LayerNorm is bounded to {K.LN_MAX_CHANNELS} channels, "
                                    f"got {D}")
        shifts = np.asarray((xt.quant.details or {}).get("shifts", [0] * D), np.int8)
        s_out = np.broadcast_to(_channel_scales(yt).astype(np.float64), (D,))
        ratio = np.abs(gamma / s_out).max()
        g_bits = 30 - max(0, math.ceil(math.log2(max(ratio, 1e-30))))  # g_c = gamma_c / s_out_c in Q(g_bits), < 2^31
        if g_bits < 0:
            raise QuantizationError(f"{norm}: gamma / output scale ({ratio:.3g}) too large for the integer LayerNorm")
        out_shift = K.NORM_FRAC_BITS + g_bits
        if out_shift > 62:
            g_bits, out_shift = 62 - K.NORM_FRAC_BITS, 62
        g = np.round(gamma / s_out * 2.0**g_bits)
        b = np.round(beta / s_out * 2.0**out_shift)
        if np.abs(b).max() >= 2**62:
            raise QuantizationError(f"{norm}: beta / output scale too large for the integer LayerNorm")
        eps = min(round(D * D * qm.graph.cfg.ln_eps / _unit(xt) ** 2), 2**62)
        ins = [x, self.add(f"{norm}.in_shift", (D,), "int8", data=shifts), self.const_i32(f"{norm}.gamma_mul", g),
               self.add(f"{norm}.beta_bias", (D,), "int64", data=b.astype(np.int64))]
        return self._layernorm_op(norm, ins, y, in_zp=xt.zp, eps=int(eps), out_zp=yt.zp, out_shift=out_shift)

    def _layernorm_op(self, norm: str, ins: list, y: int, **options) -> int:
        return self.op("TSPTQ_LAYERNORM_2S", ins, y, **options)

    def softmax(self, point: str, scores: int, shape, beta: float) -> int:
        """TSPTQ_SOFTMAX_2S: an exp table from the scores' step, or one per head (256 entries each) for a per-head
        scores code."""
        st = self.t(scores)
        if st.n_scales > 1 and st.quant.axis % len(shape) != len(shape) - 3:
            raise QuantizationError(f"{point}: per-head scores scales must lie along the heads axis")
        lut = np.concatenate([np.round(np.exp(-(float(s) * beta) * np.arange(256, dtype=np.float64))  # s * beta: a
                                       * 2.0**K.EXP_FRAC_BITS) for s in st.quant.scale])  # score code's real step
        y = self.act(point, shape)
        yt = self.t(y)
        kind = yt.quant.kind
        d = yt.quant.details or {}
        out_kind = {"uniform": K.UNIFORM, "two_scale": K.TWO_SCALE, "log2": K.LOG2}.get(kind)
        if out_kind is None:
            raise QuantizationError(f"{point}: no integer softmax for a {kind} output code")
        mult, shift = 0, 0
        if out_kind == K.UNIFORM:
            mult, shift = fixed_multiplier(1.0 / (2.0**K.PROB_FRAC_BITS * float(yt.quant.scale[0])))
        elif out_kind == K.TWO_SCALE:
            mult, shift = fixed_multiplier(1.0 / (2.0**K.PROB_FRAC_BITS * d["fine_scale"]), K.TWO_SCALE_FRAC_BITS)
        if shape[-1] << K.EXP_FRAC_BITS > ACC_LIMIT:
            raise QuantizationError(f"{point}: {shape[-1]} tokens overflow the integer softmax's int32 sum")
        return self.op("TSPTQ_SOFTMAX_2S", [scores, self.const_i32(f"{point}.exp_lut", lut)], y, out_kind=out_kind,
                       mult=mult, shift=shift, out_zp=yt.zp if kind == "uniform" else 0, bits=d.get("bits", 8),
                       ratio_log2=d.get("ratio_log2", 0), signed_fine=int(d.get("signed_fine", False)), beta=beta)

    def gelu(self, point: str, x: int, shape) -> int:
        """GELU_2S: a 256-entry table from the int8 input code to the output code, made with the simulator's math.
        A per-channel power-of-two input (O-2SF on the fc1 outputs) gets 256 entries per shift level 0..max, and
        the in_shift input tells each channel its level."""
        qm = self.qm
        in_q, out_q = qm.acts[self.t(x).name], qm.acts[point]
        codes = torch.arange(-128, 128, dtype=torch.int32)
        if isinstance(in_q, ChannelPow2):
            levels = torch.arange(int(in_q.shifts.max()) + 1)
            per_level = ChannelPow2(in_q.scale, in_q.zero_point, levels, in_q.bits)  # column k decodes at shift k
            real = per_level.decode(codes[:, None].expand(256, len(levels))).T.reshape(-1)
        else:
            real = in_q.decode(codes)
        table = out_q.encode(F.gelu(real)).numpy()
        y = self.act(point, shape)
        table = self._gelu_table(point, y, table, out_q)
        ins = [x, self.add(f"{point}.lut", table.shape, self.t(y).dtype, data=table)]
        if isinstance(in_q, ChannelPow2):
            shifts = in_q.shifts.numpy().astype(np.int8)
            ins.append(self.add(f"{point}.in_shift", shifts.shape, "int8", data=shifts))
        return self.op("TSPTQ_GELU_2S", ins, y)

    def _gelu_table(self, point: str, y: int, table: np.ndarray, out_q) -> np.ndarray:
        """The GELU table's entries for the output tensor ``y`` (the default: the output codes themselves)."""
        return table

    def attention_values(self, point: str, probs: int, v: int, shape) -> int:
        pt, vt = self.t(probs), self.t(v)
        y = self.act(point, shape)
        yt = self.t(y)
        if pt.quant.details is None:
            return self.op("BATCH_MATMUL", [probs, v], y, adj_x=False, adj_y=False)
        d = pt.quant.details
        kind = K.CODE_KINDS[d["kind"]]
        tokens = shape[-2]
        log2_frac = 0
        if kind == K.LOG2:  # d = 2^(frac - q): the largest frac whose accumulator stays an int32
            log2_frac = min(15, int(math.floor(math.log2(ACC_LIMIT / (tokens * 255)))))
            unit = 2.0**-log2_frac
        elif kind == K.TWO_SCALE:
            unit = d["fine_scale"]
            if tokens * _max_operand(pt) * 255 > ACC_LIMIT:
                raise QuantizationError(f"{point}: the int32 accumulator could overflow ({tokens} tokens)")
        else:
            raise QuantizationError(f"{point}: no integer attention x V for a {d['kind']} code")
        mult, shift = K.builtin_multipliers(unit, vt.quant.scale[:1], yt.quant.scale[:1])
        if kind == K.TWO_SCALE and self._splits_pv():
            return self._attention_values_planes(point, probs, v, y, d, int(mult[0]), int(shift[0]))
        return self.op("TSPTQ_BMM_2S", [probs, v], y, a_kind=kind, bits=d["bits"], ratio_log2=d.get("ratio_log2", 0),
                       signed_fine=int(d.get("signed_fine", False)), log2_frac=log2_frac, b_zp=vt.zp,
                       mult=int(mult[0]), shift=int(shift[0]), out_zp=yt.zp)

    def pooled_features(self, n: int, cls: int, n_prefix: int, D: int) -> int:
        """The head's input of a ``token+avg`` model: [class token, patch-token mean], both in the final norm's code
        (TOKEN_MEAN keeps it), side by side as tokens, then one (1, 2D) row whose channel code is the norm's twice."""
        mean = self._patch_mean(n, n_prefix, D)
        pair = self.op("CONCATENATION", [cls, mean], self.like("norm.pooled_tokens", n, (1, 2, D)), axis=1)
        q = self.t(n).quant
        if len(q.scale) > 1:  # per channel: the row's 2D channels are the norm's D channels twice
            details = dict(q.details, shifts=list(q.details["shifts"]) * 2) if q.details else None
            q = QuantParams(np.tile(q.scale, 2), np.tile(q.zero_point, 2), q.axis, details)
        row = self.add("norm.pooled", (1, 2 * D), self.t(n).dtype, q)
        return self.op("RESHAPE", [pair, self.const_i32("norm.pooled.shape", (1, 2 * D))], row, new_shape=[1, 2 * D])

    def _patch_mean(self, n: int, n_prefix: int, D: int) -> int:
        """The mean of the patch tokens in the final norm's code (TSPTQ_TOKEN_MEAN)."""
        return self.op("TSPTQ_TOKEN_MEAN", [n], self.like("norm.patch_mean", n, (1, 1, D)), first=n_prefix)

    def _splits_pv(self) -> bool:
        """Whether attention x V of a V-2SF P is split into its planes (the NPU variant) instead of TSPTQ_BMM_2S."""
        return False

    def reshape(self, name: str, x: int, shape) -> int:
        y = self.like(name, x, shape)
        return self.op("RESHAPE", [x, self.const_i32(f"{name}.shape", shape)], y, new_shape=list(shape))

    def transpose(self, name: str, x: int, perm) -> int:
        shape = [self.t(x).shape[p] for p in perm]
        y = self.like(name, x, shape)
        return self.op("TRANSPOSE", [x, self.const_i32(f"{name}.perm", perm)], y)


class _NpuBuilder(_Builder):
    """The NPU variant (docs/integer-semantics.md "The NPU variant"): every MAC op a builtin. It overrides the steps
    that change (the FCs, the LayerNorm and GELU outputs, the residual adds of int16 branches, attention x V of a V-2SF
    P, the patch-token mean of the int16 final norm); everything else is the default lowering's."""

    def __init__(self, qm: QuantizedViT, split_pv: bool = True, residual16: bool = False,
                 layernorm_npu: dict[str, float] | None = None):
        super().__init__(qm)
        self.split_pv = split_pv  # P x V of a V-2SF P as two int8 BATCH_MATMULs with int32 outputs (else TSPTQ_BMM_2S)
        self.residual16 = residual16  # the residual stream and the branches int16, the residual adds builtin ADDs
        self.ln_sigma_min = layernorm_npu  # residual point -> smallest token deviation: the LayerNorms as builtins
        self.code_of: dict[int, QuantParams] = {}  # int16 FC outputs -> the O-2SF code they stand for

    def _splits_pv(self) -> bool:
        return self.split_pv

    def _fc(self, name, x, codes, w_scale, bias, out_point, out_shape) -> int:
        return self._linear_npu(name, x, codes, w_scale, bias, out_point, out_shape,
                                zp_free=self._split_values(out_point))

    def residual_add(self, a: int, b: int, out_point: str, shape) -> int:
        if self.residual16:
            return self._residual_add_i16(a, b, out_point, shape)
        if self.t(b).dtype == "int16":
            return self._residual_add_npu(a, b, out_point, shape)
        return super().residual_add(a, b, out_point, shape)

    def _residual_add_i16(self, a: int, b: int, out_point: str, shape) -> int:
        """``residual16``: the residual stream is an int16 tensor (zero point 0) on the finest step that covers its
        code's range (``residual16_scale``), and the add a builtin int16 ADD (LiteRT's general form: left shift 15,
        one rescaling per operand and one for the sum, ``pot_scale_int16`` off). An int8 operand (the patch embedding's
        code, the position embedding) becomes int16 on its own scale first, exactly."""
        ops = [self._as_i16(x, f"{out_point}.operand{j}") for j, x in enumerate((a, b))]
        y = self.add(out_point, shape, "int16", _i16(residual16_scale(self.qm.acts[out_point], shape[-1])))
        scales = [float(self.t(i).quant.scale[0]) for i in (*ops, y)]
        if 2 * max(scales[:2]) >= (1 << 15) * scales[2]:  # TFLite's output multiplier must stay below 1
            raise QuantizationError(f"--residual int16: {out_point}: its operands' steps are too coarse for its "
                                    "int16 step (the int16 ADD's output multiplier would reach 1; --residual code "
                                    "keeps the 8-bit residual code)")
        return self.op("ADD", ops, y, pot_scale_int16=False)

    def _as_i16(self, x: int, name: str) -> int:
        """An int16 operand with zero point 0 holding the same values: int16 as it is, a per-tensor int8 code q as
        q - zp on its scale (a QUANTIZE for an activation, the values themselves for a constant)."""
        xt = self.t(x)
        if xt.dtype == "int16":
            return x
        if xt.dtype != "int8" or xt.quant.details is not None or xt.n_scales != 1:
            raise QuantizationError(f"--npu: {xt.name}: an int16 residual stream needs a per-tensor int8 operand here")
        if xt.data is not None:  # the constant itself becomes int16 (its only reader is this add)
            self.tensors[x] = Tensor(xt.name, xt.shape, "int16", _i16(_unit(xt)),
                                     (xt.data.astype(np.int64) - int(xt.zp)).astype(np.int16))
            return x
        return self.op("QUANTIZE", [x], self.add(f"{name}.i16", xt.shape, "int16", _i16(_unit(xt))))

    # the int16 tensors of the NPU LayerNorm (tsptq.intmodel.lower_layernorm_npu, which writes through these)
    def add_i16(self, name: str, shape, scale: float) -> int:
        """An int16 activation on one scale, zero point 0."""
        return self.add(name, shape, "int16", _i16(scale))

    def code_unit(self, point: str, channels: int) -> float:
        """One integer unit of ``point``'s code, decoded (its base step)."""
        return _unit(Tensor(point, (channels,), *code_params(self.qm.acts[point], channels)))

    def act_i16(self, point: str, shape) -> int:
        """``point``'s tensor as int16 on its code's unit, zero point 0 (the code decoded, or finer)."""
        return self.add_i16(point, shape, self.code_unit(point, shape[-1]))

    def layernorm(self, norm: str, x: int, shape, out_point: str | None = None) -> int:
        pooled = norm == "norm" and self.qm.graph.cfg.global_pool == "token+avg"  # its mean needs the code's steps
        if self.ln_sigma_min is None or pooled:
            return super().layernorm(norm, x, shape, out_point)
        from tsptq.intmodel.lower_layernorm_npu import layernorm_builtins

        return layernorm_builtins(self, norm, x, shape, self.ln_sigma_min)

    def _layernorm_op(self, norm: str, ins: list, y: int, **options) -> int:
        """The output code decoded onto its base scale, int16: (y_c - zp) << k_c (O-2SF: base scale s; uniform: its
        scale), zero point 0."""
        yt = self.t(y)
        self.tensors[y] = Tensor(yt.name, yt.shape, "int16", _i16(_unit(yt)))
        D = yt.shape[-1]
        ins.append(self.add(f"{norm}.out_shift", (D,), "int8",
                            data=np.asarray((yt.quant.details or {}).get("shifts", [0] * D), np.int8)))
        return self.op("TSPTQ_LAYERNORM_2S_I16", ins, y, **options)

    def _patch_mean(self, n: int, n_prefix: int, D: int) -> int:
        """The final norm's output is its code decoded, (q_c - zp) << k_c (int16): TSPTQ_TOKEN_MEAN_I16 rounds the
        mean onto the channel's step 2^k_c, which is TSPTQ_TOKEN_MEAN's code decoded the same way."""
        shifts = np.asarray((code_params(self.qm.acts["norm"], D)[1].details or {}).get("shifts", [0] * D), np.int8)
        return self.op("TSPTQ_TOKEN_MEAN_I16", [n, self.add("norm.patch_mean.shift", (D,), "int8", data=shifts)],
                       self.like("norm.patch_mean", n, (1, 1, D)), first=n_prefix)

    def _gelu_table(self, point: str, y: int, table: np.ndarray, out_q) -> np.ndarray:
        """A V-2SF output: the table holds the decoded value d on the fine scale, int16."""
        if isinstance(out_q, TwoScale):
            yt = self.t(y)
            self.tensors[y] = Tensor(yt.name, yt.shape, "int16", _i16(_unit(yt)))
            return K.decode_two_scale(table, out_q.bits, out_q.m, bool(out_q.signed_fine))
        if not isinstance(out_q, Uniform):
            raise QuantizationError(f"--npu: {point}: no NPU form for a {type(out_q).__name__} GELU output code")
        return table

    def _split_values(self, point: str) -> bool:
        """Whether ``point`` is the V of an attention x V that the NPU variant splits (a V-2SF softmax code)."""
        parts = point.split(".")
        if not (self.split_pv and len(parts) == 3 and parts[0] == "blocks" and parts[2] == "v"):
            return False
        return isinstance(self.qm.acts.get(f"blocks.{parts[1]}.softmax"), TwoScale)

    def _linear_npu(self, name, x, codes, w_scale, bias, out_point, out_shape, zp_free: bool = False) -> int:
        """The NPU variant's FC: a builtin FULLY_CONNECTED, int8 when input and output are per-tensor int8 codes, else
        16x8. The int16 input holds the decoded operand d on its unit (the two-scale producers write it); the int8
        weights and the bias are TSPTQ_FC_2S's, so the accumulator is TSPTQ_FC_2S's, and LiteRT's 16x8 rounding is
        TSPTQ_FC_2S's (requant1). The int16 output holds TSPTQ_FC_2S's output code before its zero point and its int8
        saturation:
        - uniform output code: the int16 output has the code's scale, then QUANTIZE int16 -> int8 at that scale adds
          the zero point and saturates: TSPTQ_FC_2S's bytes;
        - O-2SF output code (steps s * 2^k_o): the int16 output has the base scale s, and the weight scales carry
          2^-k_o (exact in float32), which gives TSPTQ_FC_2S's multipliers; TSPTQ_ADD_2S_I16 saturates it into the
          code.
        ``zp_free`` (V of a split attention x V): the int8 output holds the code's bytes q but declares zero point 0,
        so that the int32 BATCH_MATMULs of the planes take q as it is on every engine (LiteRT's int32 BATCH_MATMUL
        applies no zero point, the Ethos-U applies the declared one): an int16 ADD of the constant zp (exact) before
        the QUANTIZE; TSPTQ_PV_SUM_2S subtracts zp times P's row sums."""
        xt = self.t(x)
        out_q = self.qm.acts[out_point]
        out_kind = "uniform" if isinstance(out_q, Uniform) else type(out_q).__name__
        if zp_free and out_kind != "uniform":  # the int32 BATCH_MATMULs read V's int8 bytes: a uniform code's only
            raise QuantizationError(f"--npu: {name}: a split attention x V needs a uniform V code, not {out_kind}")
        if out_kind not in ("uniform", "ChannelPow2"):
            raise QuantizationError(f"--npu: {name}: no NPU form for a {out_kind} output code")
        branch16 = self.residual16 and out_point.startswith("blocks.") and out_point.endswith((".proj", ".fc2"))
        if xt.dtype == "int8" and xt.quant.details is None and out_kind == "uniform" and not branch16:
            wi = self.add(f"{name}.weight", codes.shape, "int8",
                          QuantParams(w_scale, np.zeros(len(w_scale), np.int64), axis=0), codes)
            bi = self.add(f"{name}.bias", bias.shape, "int32",
                          QuantParams((np.float32(_unit(xt)) * w_scale).astype(np.float32),
                                      np.zeros(len(w_scale), np.int64)), bias)
            return self.op("FULLY_CONNECTED", [x, wi, bi], self.act(out_point, out_shape), keep_num_dims=True)
        if xt.dtype == "int8" and xt.quant.details is None:  # a uniform int8 code: x - zp as int16, exactly
            x = self.op("QUANTIZE", [x], self.add(f"{name}.in16", xt.shape, "int16", _i16(_unit(xt))))
            xt = self.t(x)
        if xt.dtype != "int16":
            raise QuantizationError(f"--npu: {name}: no NPU form for a {xt.quant.kind} input code "
                                    "(its producer has no int16 decoded output)")
        unit = float(xt.quant.scale[0])
        if out_kind == "ChannelPow2" and not branch16:  # fold the output code's channel steps 2^k_o into the weights
            shifts = out_q.shifts.numpy().astype(np.int64)
            w0 = np.broadcast_to(w_scale, shifts.shape).astype(np.float64)
            w_scale = np.ldexp(w0, -shifts).astype(np.float32)
            if np.any(np.ldexp(w_scale.astype(np.float64), shifts) != w0):  # exact: no float32 underflow
                raise QuantizationError(f"--npu: {name}: cannot fold the output's channel steps into the weights")
        wi = self.add(f"{name}.weight", codes.shape, "int8",
                      QuantParams(w_scale, np.zeros(len(w_scale), np.int64), axis=0), codes)
        bi = self.add(f"{name}.bias", bias.shape, "int64",
                      QuantParams((np.float32(unit) * w_scale).astype(np.float32), np.zeros(len(w_scale), np.int64)),
                      bias.astype(np.int64))
        if branch16:  # an int16 branch for the int16 ADD: input scale * 2^j, the finest such step covering the code
            # The FC's real multipliers are then w_scale * 2^-j, exact in float32, so its 31-bit multipliers are exact
            # too: LiteRT's reference 16x8 FULLY_CONNECTED, which multiplies by the real multiplier in double
            # (docs/integer-semantics.md), and the integer model's requant1 give the same value, ties included.
            j = math.ceil(math.log2(residual16_scale(out_q, out_shape[-1]) / unit))
            y16 = self.add(out_point, out_shape, "int16", _i16(float(np.ldexp(np.float32(unit), j))))
            return self.op("FULLY_CONNECTED_16X8", [x, wi, bi], y16, keep_num_dims=True)
        if out_kind == "uniform":
            y16 = self.add(f"{name}.out16", out_shape, "int16", _i16(float(out_q.scale)))
            self.op("FULLY_CONNECTED_16X8", [x, wi, bi], y16, keep_num_dims=True)
            zp = int(out_q.zero_point)
            if zp_free and zp:  # q = sat8(y16 + zp), declared with zero point 0
                # LiteRT takes its power-of-two int16 ADD for a scale within 1e-3 of 2^k in log2, which refuses
                # broadcasting (it aborts): give that case the constant at full shape
                frac = abs(math.log2(float(out_q.scale)) - round(math.log2(float(out_q.scale))))
                zshape = tuple(out_shape) if frac < 2e-3 else (1,)
                zc = self.add(f"{name}.zero_point", zshape, "int16", _i16(float(out_q.scale)), np.full(zshape, zp))
                y16 = self.op("ADD", [y16, zc], self.add(f"{name}.out16_zp", out_shape, "int16",
                                                          _i16(float(out_q.scale))))
                q0 = QuantParams(np.array([float(out_q.scale)], np.float32), np.zeros(1, np.int64))  # zero point 0
                return self.op("QUANTIZE", [y16], self.add(out_point, out_shape, "int8", q0))
            return self.op("QUANTIZE", [y16], self.act(out_point, out_shape))
        y16 = self.add(out_point, out_shape, "int16", _i16(float(np.float32(out_q.scale))))
        self.code_of[y16] = code_params(out_q, out_shape[-1])[1]  # the O-2SF code TSPTQ_ADD_2S_I16 saturates into
        return self.op("FULLY_CONNECTED_16X8", [x, wi, bi], y16, keep_num_dims=True)

    def _attention_values_planes(self, point: str, probs: int, v: int, y: int, d: dict, mult: int, shift: int) -> int:
        """P x V for a V-2SF P on the NPU (int8 x int8 BATCH_MATMUL only, on a U55), with TSPTQ_BMM_2S's one rounding:
        P's fine and coarse planes (d = fine + (coarse << m), TSPTQ_PLANE_2S) each times V in a BATCH_MATMUL with an
        int32 output (the raw products, no requantization; V's tensor holds its code's bytes with zero point 0, see
        _linear_npu), then TSPTQ_PV_SUM_2S adds them (the coarse one shifted by m), subtracts V's zero point times P's
        row sums and requantizes once, as TSPTQ_BMM_2S does: the same bytes."""
        pt, vt = self.t(probs), self.t(v)
        if vt.zp:
            raise QuantizationError(f"--npu: {point}: V's tensor must declare zero point 0 for the int32 products")
        s = np.float32(d["fine_scale"])
        parts = []
        for plane, (label, scale) in enumerate((("fine", s), ("coarse", s * np.float32(2.0 ** d["ratio_log2"])))):
            a = self.op("TSPTQ_PLANE_2S", [probs], self.add(f"{point}.p_{label}", pt.shape, "int8",
                                                             QuantParams(np.array([scale], np.float32),
                                                                         np.zeros(1, np.int64))),
                        plane=plane, bits=d["bits"], signed_fine=int(d.get("signed_fine", False)))
            acc = QuantParams(np.array([np.float32(scale * vt.quant.scale[0])], np.float32), np.zeros(1, np.int64))
            parts.append(self.op("BATCH_MATMUL", [a, v], self.add(f"{point}.{label}", self.t(y).shape, "int32", acc),
                                 adj_x=False, adj_y=False))
        v_zp = int(self.qm.acts[vt.name.rsplit(".", 1)[0]].zero_point)  # the code's own (V's tensors declare 0)
        return self.op("TSPTQ_PV_SUM_2S", [*parts, probs], y, bits=d["bits"], ratio_log2=d["ratio_log2"],
                       signed_fine=int(d.get("signed_fine", False)), b_zp=v_zp, mult=mult, shift=shift,
                       out_zp=self.t(y).zp)

    def _residual_add_npu(self, a: int, b: int, out_point: str, shape) -> int:
        """The residual add of an int16 branch (an FC's output before its O-2SF code's zero point and saturation):
        TSPTQ_ADD_2S_I16, which is TSPTQ_ADD_2S on that code, sat8(b + b_zp)."""
        y = self.act(out_point, shape)
        ta, ty = self.t(a), self.t(y)
        code = self.code_of[b]
        params = K.add_params(_channel_scales(ta), code.scale.astype(np.float32), _channel_scales(ty))
        pi = self.const_i32(f"{out_point}.add_params", params)
        return self.op("TSPTQ_ADD_2S_I16", [a, b, pi], y, a_zp=ta.zp, b_zp=int(code.zero_point[0]), out_zp=ty.zp)


# the 'variant' of the metadata: FCs and attention x V's products as builtins; LayerNorm, Softmax, GELU, the residual
# adds (builtin int16 ADDs with residual16, recorded as the metadata's 'residual'), the sum of attention x V's two
# products, the patch-token mean of a token+avg head (and attention x V with split_pv=False) still TSPTQ_* ops
NPU_VARIANT = "npu-ethos-u-step1"


def require_npu_config(cfg) -> None:
    """The model shapes the NPU variant covers, as one-line errors (checked before calibration too)."""
    if not hasattr(cfg, "global_pool"):  # a Swin
        from tsptq.intmodel.lower_swin import NO_NPU

        raise QuantizationError(NO_NPU)
    if not cfg.num_classes:  # the final LayerNorm would be the output, as an int16 decoded value
        raise QuantizationError("--npu ethos-u: models without a classifier head have no NPU variant yet")


def require_npu_variant(qm: QuantizedViT) -> None:
    """The NPU variant's preconditions, as one-line errors."""
    if (qm.w_bits, qm.a_bits) != (8, 8):
        raise QuantizationError(f"--npu ethos-u: the NPU variant is W8A8 only (Ethos-U's FULLY_CONNECTED takes 8-bit "
                                f"weights and 8/16-bit activations), got W{qm.w_bits}A{qm.a_bits}")
    require_npu_config(qm.graph.cfg)
    if any(per_head_code(q) for name, q in qm.acts.items() if name.endswith(".scores")):
        raise QuantizationError(f"--npu ethos-u: {qm.method}'s per-head scores code has no NPU form yet (use tsptq or "
                                "minmax)")
    if any(isinstance(q, ChannelPow2) for name, q in qm.acts.items() if name.endswith(".fc1")):
        raise QuantizationError(f"--npu ethos-u: {qm.method}'s per-channel fc1 code (the GELU input) has no NPU form "
                                "yet (use tsptq or minmax)")


def lower(qm: QuantizedViT, npu: bool = False, split_pv: bool = True, residual16: bool = False,
          layernorm_npu: dict[str, float] | None = None) -> IntModel:
    """The integer model of a fitted quantization (W<=8, A8). ``npu``: the NPU variant (``tsptq export --npu
    ethos-u``), W8A8 only: every FC a builtin FULLY_CONNECTED (16x8 where a two-scale code feeds it), the two-scale
    producers writing the decoded int16 value (docs/integer-semantics.md "The NPU variant"). ``split_pv`` (NPU variant
    only, ignored otherwise): attention x V of a V-2SF softmax as two int8 x int8 -> int32 BATCH_MATMULs summed by
    TSPTQ_PV_SUM_2S (else the custom TSPTQ_BMM_2S, on the CPU: ``--pv-on-cpu``). ``residual16`` (NPU variant only):
    the residual stream and the branch outputs int16 per tensor, the residual adds builtin int16 ADDs (``--residual
    int16``; not the default file's bytes: a finer residual stream). ``layernorm_npu`` (with ``residual16``): the
    smallest token deviation per residual point, ``qm.residual_sigma_min`` over the calibration images: every
    LayerNorm as builtins around two row statistics on the CPU (``--layernorm npu``; a ``token+avg`` model's final
    norm stays TSPTQ_LAYERNORM_2S_I16)."""
    cfg = qm.graph.cfg
    if qm.method == "fp32" or not qm.acts:
        raise QuantizationError("fp32 has no integer model: pick a quantization method")
    if qm.a_bits != 8:
        raise QuantizationError(f"the integer model and the .tflite file hold 8-bit activations; A{qm.a_bits} "
                                "is simulated only")
    if residual16 and not npu:
        raise QuantizationError("an int16 residual stream is a form of the NPU variant (--npu ethos-u) only")
    if layernorm_npu is not None and not residual16:
        raise QuantizationError("the LayerNorm on the NPU reads the int16 residual stream: --layernorm npu needs "
                                "--residual int16")
    if isinstance(qm.graph, SwinGraph):  # the same steps, its own graph (tsptq.intmodel.lower_swin)
        from tsptq.intmodel.lower_swin import lower_swin

        return lower_swin(_Builder(qm), patch_embed_codes(qm), npu)
    if "head_dist" in qm.graph.linears:
        raise QuantizationError("distilled DeiT models (two heads) have no integer export yet")
    if npu:
        require_npu_variant(qm)
    b = _NpuBuilder(qm, split_pv, residual16, layernorm_npu) if npu else _Builder(qm)
    H, D, hd, p = cfg.num_heads, cfg.embed_dim, cfg.head_dim, cfg.patch_size
    gh, gw = cfg.img_size // p, cfg.img_size // p
    n_prefix = qm.graph.consts["prefix"].shape[1]
    T = n_prefix + gh * gw

    x = b.act("input", (1, cfg.img_size, cfg.img_size, cfg.in_chans))
    # Patch embedding: CONV_2D (NHWC input, OHWI filter), tokens, class token, position embedding.
    w_codes, w_scale, bias_codes = patch_embed_codes(qm)
    s_in = float(b.t(x).quant.scale[0])
    wi = b.add("patch_embed.weight", (D, p, p, cfg.in_chans), "int8",
               QuantParams(w_scale, np.zeros(D, np.int64), axis=0), w_codes)
    bi = b.add("patch_embed.bias", (D,), "int32", QuantParams((np.float32(s_in) * w_scale).astype(np.float32),
                                                                np.zeros(D, np.int64)), bias_codes)
    if cfg.in_chans * p * p * 255 * 128 > ACC_LIMIT:
        raise QuantizationError("patch_embed: the int32 accumulator could overflow")
    conv = b.add("patch_embed.conv", (1, gh, gw, D), *code_params(qm.acts["patch_embed"], D))
    b.op("CONV_2D", [x, wi, bi], conv, stride_h=p, stride_w=p, padding="VALID")
    tokens = b.reshape("patch_embed.tokens", conv, (1, gh * gw, D))
    pe_q = qm.acts["patch_embed"]
    prefix = b.add("prefix_tokens", (1, n_prefix, D), b.t(conv).dtype, b.t(conv).quant,
                   pe_q.encode(qm.graph.consts["prefix"]).numpy())
    t = b.op("CONCATENATION", [prefix, tokens], b.act("patch_embed", (1, T, D)), axis=1)
    pos_q = qm.consts["pos_embed"]
    pos = b.add("pos_embed", (1, T, D), "int8", QuantParams(np.array([float(pos_q.scale)], np.float32), np.zeros(1, np.int64)),
                pos_q.encode(qm.graph.consts["pos_embed"]).numpy())
    residual_point = "blocks.0.in" if cfg.depth else "norm.in"
    t = b.residual_add(t, pos, residual_point, (1, T, D))

    for i in range(cfg.depth):
        pfx = f"blocks.{i}"
        r = t
        a = b.layernorm(f"{pfx}.norm1", r, (1, T, D))
        heads = {}
        for j, part in enumerate("qkv"):
            y = b.linear(f"{pfx}.qkv", a, f"{pfx}.{part}", (1, T, D), rows=slice(j * D, (j + 1) * D),
                         name=f"{pfx}.{part}")
            y = b.reshape(f"{pfx}.{part}.heads", y, (1, T, H, hd))
            heads[part] = b.transpose(f"{pfx}.{part}.bhtd", y, (0, 2, 1, 3))
        # The scores tensor holds q.k (its declared scale includes sqrt(hd)); the softmax applies beta = hd^-0.5.
        # A per-head code (tsptq-heads): a scale per head, which TSPTQ_BMM_HEADS requantizes to (BATCH_MATMUL has one).
        scores = b.add(f"{pfx}.scores", (1, H, T, T), "int8", scores_params(qm, i))
        if b.t(scores).n_scales > 1:
            b.op("TSPTQ_BMM_HEADS", [heads["q"], heads["k"]], scores)
        else:
            b.op("BATCH_MATMUL", [heads["q"], heads["k"]], scores, adj_x=False, adj_y=True)
        probs = b.softmax(f"{pfx}.softmax", scores, (1, H, T, T), hd ** -0.5)
        ctx = b.attention_values(f"{pfx}.ctx", probs, heads["v"], (1, H, T, hd))
        ctx = b.transpose(f"{pfx}.ctx.bthd", ctx, (0, 2, 1, 3))
        ctx = b.reshape(f"{pfx}.ctx.tokens", ctx, (1, T, D))
        o = b.linear(f"{pfx}.proj", ctx, f"{pfx}.proj", (1, T, D))
        m = b.residual_add(r, o, f"{pfx}.mid", (1, T, D))
        a = b.layernorm(f"{pfx}.norm2", m, (1, T, D))
        h = b.linear(f"{pfx}.fc1", a, f"{pfx}.fc1", (1, T, cfg.mlp_hidden))
        h = b.gelu(f"{pfx}.gelu", h, (1, T, cfg.mlp_hidden))
        f = b.linear(f"{pfx}.fc2", h, f"{pfx}.fc2", (1, T, D))
        t = b.residual_add(m, f, f"blocks.{i + 1}.in" if i + 1 < cfg.depth else "norm.in", (1, T, D))

    n = b.layernorm("norm", t, (1, T, D))
    cls = b.like("norm.class_token", n, (1, 1, D))
    b.op("STRIDED_SLICE", [n, b.const_i32("norm.slice_begin", [0, 0, 0]), b.const_i32("norm.slice_end", [1, 1, D]),
                           b.const_i32("norm.slice_strides", [1, 1, 1])], cls)
    if cfg.global_pool == "token+avg" and cfg.num_classes:
        features = b.pooled_features(n, cls, n_prefix, D)
    else:
        features = b.reshape("norm.class_vector", cls, (1, D))
    out = b.linear("head", features, "head", (1, cfg.num_classes)) if cfg.num_classes else features
    # No wall-clock figures in the file: the same model, method and images give the same bytes.
    calibration = {k: v for k, v in qm.info.items() if k != "calib_seconds"}
    meta = {"method": qm.method, "bits": f"W{qm.w_bits}A{qm.a_bits}", "calibration": calibration,
            "config": cfg.to_dict()}
    if npu:
        meta["variant"] = NPU_VARIANT
        if residual16:
            meta["residual"] = "int16"
        if layernorm_npu is not None:
            meta["layernorm"] = "npu"
    return IntModel(b.tensors, b.ops, [x], [out], meta)
