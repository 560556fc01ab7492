"""The quantizers: how a real tensor becomes integer codes and back.

Each quantizer is the *definition* of a code: ``encode`` gives the integer codes the integer model stores,
``decode`` gives the real value a code stands for, ``fake(x) == decode(encode(x))`` is what the simulator uses.
Rounding is half away from zero everywhere (C's ``round()``, TFLite's ``TfLiteRound``). ``docs/method.md``
describes each code; ``to_dict`` is the form the exporter and metadata will carry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tsptq.errors import QuantizationError


def round_half_away(v: torch.Tensor) -> torch.Tensor:
    """sign(v) * floor(|v| + 0.5), in place on a fresh tensor (7x faster than a torch.where of floor/ceil)."""
    return v.abs().add_(0.5).floor_().copysign_(v)


def signed_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _check_bits(bits: int) -> None:
    if not 2 <= bits <= 32:
        raise QuantizationError(f"bit width must be between 2 and 32, got {bits}")


@dataclass
class Uniform:
    """Affine uniform code: real = scale * (q - zero_point), q in [-2^(b-1), 2^(b-1)-1].

    Per-tensor when ``scale`` is a scalar tensor; per-channel along ``axis`` otherwise (weights: axis 0,
    symmetric, zero_point 0).
    """

    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int = 8
    axis: int | None = None

    def __post_init__(self):
        _check_bits(self.bits)
        self.scale = torch.as_tensor(self.scale, dtype=torch.float32)
        self.zero_point = torch.as_tensor(self.zero_point, dtype=torch.float32)
        if not torch.all(self.scale > 0):
            raise QuantizationError("uniform quantizer needs a positive scale")

    def _shape(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None or t.ndim == 0:
            return t
        shape = [1] * x.ndim
        shape[self.axis] = -1
        return t.reshape(shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = signed_range(self.bits)
        q = round_half_away(x / self._shape(self.scale, x)) + self._shape(self.zero_point, x)
        return q.clamp_(qmin, qmax).to(torch.int32)

    def decode(self, q: torch.Tensor) -> torch.Tensor:
        return (q.float() - self._shape(self.zero_point, q)) * self._shape(self.scale, q)

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = signed_range(self.bits)
        s, zp = self._shape(self.scale, x), self._shape(self.zero_point, x)
        return (round_half_away(x / s).add_(zp).clamp_(qmin, qmax).sub_(zp)).mul_(s)

    @property
    def base_scale(self) -> torch.Tensor:
        return self.scale

    def to_dict(self) -> dict:
        return {"kind": "uniform", "bits": self.bits, "axis": self.axis,
                "scale": self.scale.tolist(), "zero_point": self.zero_point.int().tolist()}


@dataclass
class ChannelPow2:
    """Per-channel power-of-two scales with one shared zero point (last axis = channels).

    real_c = scale * 2^shift_c * (q - zero_point). O-2SF uses shift_c in {0, n} (outlier channels get n);
    FQ-ViT's PTF uses shift_c in {0..3}. The integer LayerNorm aligns channels by ``(q - zp) << shift_c``.
    """

    scale: float
    zero_point: int
    shifts: torch.Tensor  # int, one per channel
    bits: int = 8

    def __post_init__(self):
        _check_bits(self.bits)
        self.shifts = torch.as_tensor(self.shifts, dtype=torch.int64)
        if self.scale <= 0 or int(self.shifts.min()) < 0:
            raise QuantizationError("power-of-two channel quantizer needs scale > 0 and shifts >= 0")

    def channel_scales(self) -> torch.Tensor:
        return self.scale * torch.pow(2.0, self.shifts.float())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = signed_range(self.bits)
        return (round_half_away(x / self.channel_scales()) + self.zero_point).clamp_(qmin, qmax).to(torch.int32)

    def decode(self, q: torch.Tensor) -> torch.Tensor:
        return (q.float() - self.zero_point) * self.channel_scales()

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        return Uniform(self.channel_scales(), torch.tensor(float(self.zero_point)), self.bits, axis=-1).fake(x)

    @property
    def base_scale(self) -> torch.Tensor:
        return torch.tensor(self.scale)

    @property
    def outlier_mask(self) -> torch.Tensor:
        return self.shifts > 0

    def to_dict(self) -> dict:
        return {"kind": "channel_pow2", "bits": self.bits, "scale": self.scale, "zero_point": self.zero_point,
                "shifts": self.shifts.tolist()}


@dataclass
class TwoScale:
    """V-2SF code: 1 flag bit + (b-1)-bit field. Value = s * field (fine, flag 0) or s * (field << m) (coarse, flag 1).

    The code is the b-bit pattern ``flag << (b-1) | field``. With ``signed_fine`` (post-GELU) the fine field is a
    (b-1)-bit two's complement number, so the small negative tail stays in the fine region; the coarse field is
    always unsigned. Each value takes the nearest representable value (ties to the larger), so the code is
    monotonic. The integer consumer decodes a code to ``d = field << (m * flag)`` (fits int16 for m <= 8).
    PTQ4ViT's twin-uniform softmax code is this code with the coarse step fixed to 1/2^(b-1).
    """

    s: float
    m: int
    bits: int = 8
    signed_fine: bool = False

    def __post_init__(self):
        _check_bits(self.bits)
        if self.s <= 0 or not 0 <= self.m <= 8:
            raise QuantizationError(f"two-scale code needs s > 0 and 0 <= m <= 8, got s={self.s}, m={self.m}")

    @property
    def field_max(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def fine_range(self) -> tuple[int, int]:
        if self.signed_fine:
            return -(1 << (self.bits - 2)), (1 << (self.bits - 2)) - 1
        return 0, self.field_max

    @property
    def first_coarse(self) -> int:
        """Smallest coarse field whose value lies above the largest fine value."""
        return (self.fine_range[1] >> self.m) + 1

    def decode_int(self, code: torch.Tensor) -> torch.Tensor:
        """Code -> integer value d (real = s * d)."""
        code = code.to(torch.int32)
        flag, field = code >> (self.bits - 1), code & self.field_max
        if self.signed_fine:
            half = 1 << (self.bits - 2)
            fine = torch.where(field >= half, field - (1 << (self.bits - 1)), field)
        else:
            fine = field
        return torch.where(flag == 1, field << self.m, fine)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.decode_int(code).float() * self.s

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.fine_range
        c0 = self.first_coarse
        v = x / self.s
        fine = round_half_away(v).clamp_(lo, hi)
        coarse = round_half_away(v / (1 << self.m)).clamp_(c0, self.field_max)
        # Coarse when v is nearer the first coarse value than the largest fine value.
        use_coarse = v >= (hi + (c0 << self.m)) / 2
        fine_bits = fine.to(torch.int32) & self.field_max  # two's complement field for signed fine
        coarse_bits = coarse.to(torch.int32) | (1 << (self.bits - 1))
        return torch.where(use_coarse, coarse_bits, fine_bits)

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.fine_range
        c0 = self.first_coarse
        v = x / self.s
        step = float(1 << self.m)
        fine = round_half_away(v).clamp_(lo, hi)
        coarse = round_half_away(v / step).clamp_(c0, self.field_max).mul_(step)
        return torch.where(v >= (hi + c0 * step) / 2, coarse, fine).mul_(self.s)

    @property
    def base_scale(self) -> torch.Tensor:
        return torch.tensor(self.s)

    @property
    def max_value(self) -> float:
        return self.s * (self.field_max << self.m)

    def to_dict(self) -> dict:
        return {"kind": "two_scale", "bits": self.bits, "fine_scale": self.s, "ratio_log2": self.m,
                "signed_fine": self.signed_fine, "layout": f"flag:1|field:{self.bits - 1}"}


@dataclass
class SignSplit:
    """PTQ4ViT's twin-uniform post-GELU code: a sign bit + (b-1)-bit magnitude, each sign with its own step.

    real = -field * step_neg (sign 1) or field * step_pos (sign 0).
    """

    step_neg: float
    step_pos: float
    bits: int = 8

    def __post_init__(self):
        _check_bits(self.bits)
        if self.step_neg <= 0 or self.step_pos <= 0:
            raise QuantizationError("sign-split code needs positive steps")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        fmax = (1 << (self.bits - 1)) - 1
        pos = round_half_away(x / self.step_pos).clamp_(0, fmax).to(torch.int32)
        neg = round_half_away(-x / self.step_neg).clamp_(0, fmax).to(torch.int32) | (1 << (self.bits - 1))
        return torch.where(x >= 0, pos, neg)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        code = code.to(torch.int32)
        field = (code & ((1 << (self.bits - 1)) - 1)).float()
        return torch.where(code >> (self.bits - 1) == 1, -field * self.step_neg, field * self.step_pos)

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @property
    def base_scale(self) -> torch.Tensor:
        return torch.tensor(self.step_pos)

    def to_dict(self) -> dict:
        return {"kind": "sign_split", "bits": self.bits, "step_neg": self.step_neg, "step_pos": self.step_pos}


@dataclass
class Log2:
    """FQ-ViT's log2 softmax code: q = min(round(-log2 p), 2^b - 1), real = 2^-q, except code 2^b - 1 means 0.

    attn x V becomes a sum of V >> q in the integer model.
    """

    bits: int = 8

    def __post_init__(self):
        _check_bits(self.bits)

    @property
    def zero_code(self) -> int:
        return (1 << self.bits) - 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        q = round_half_away(-torch.log2(x.clamp_min(1e-30))).clamp_(0, self.zero_code)
        return torch.where(x > 0, q, torch.full_like(q, self.zero_code)).to(torch.int32)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return torch.where(code == self.zero_code, torch.zeros_like(code, dtype=torch.float32),
                           torch.pow(2.0, -code.float()))

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @property
    def base_scale(self) -> torch.Tensor:
        return torch.tensor(1.0)

    def to_dict(self) -> dict:
        return {"kind": "log2", "bits": self.bits}


Quantizer = Uniform | ChannelPow2 | TwoScale | SignSplit | Log2


def uniform_from_range(lo: float, hi: float, bits: int) -> Uniform:
    """Asymmetric per-tensor code covering [lo, hi] (widened to include 0, as TFLite requires)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-12:
        hi = lo + 1e-6
    qmin, qmax = signed_range(bits)
    scale = (hi - lo) / (qmax - qmin)
    zp = min(max(round(qmin - lo / scale), qmin), qmax)
    return Uniform(torch.tensor(scale), torch.tensor(float(zp)), bits)


def symmetric_per_channel(w: torch.Tensor, bits: int, clip: torch.Tensor | None = None) -> Uniform:
    """Symmetric per-output-channel weight code (axis 0), scale = clip * max|w_c| / (2^(b-1)-1)."""
    absmax = w.detach().reshape(w.shape[0], -1).abs().amax(1).clamp_min(1e-8)
    if clip is not None:
        absmax = absmax * clip
    return Uniform(absmax / ((1 << (bits - 1)) - 1), torch.zeros(w.shape[0]), bits, axis=0)


def max_two_scale_ratio(fan_in: int, field_max: int = 127, weight_max: int = 128) -> int:
    """Largest m for which a consumer's int32 accumulator cannot overflow: fan_in * (field_max << m) * 128 < 2^31."""
    budget = (2**31 - 1) / (fan_in * field_max * weight_max)
    return max(0, min(8, int(math.floor(math.log2(budget))) if budget >= 1 else 0))
