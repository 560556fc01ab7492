"""Properties of every code: encode/decode round trip, code range, monotonicity, nearest-value rounding."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsptq.errors import QuantizationError
from tsptq.quant.quantizers import (ChannelPow2, Log2, SignSplit, TwoScale, Uniform, max_two_scale_ratio,
                              round_half_away, symmetric_per_channel, uniform_from_range)

BITS = st.sampled_from([4, 6, 8])


def _values(seed: int, n: int = 4000, lo: float = -1.0, hi: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=gen) * (hi - lo) + lo


def _representable(q) -> torch.Tensor:
    """Every value the code can stand for."""
    return torch.unique(q.decode(torch.arange(0, 1 << q.bits)))


def test_round_half_away_from_zero():
    assert round_half_away(torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 0.49])).tolist() == [1, 2, 3, -1, -2, 0]


@settings(max_examples=40, deadline=None)
@given(s=st.floats(1e-4, 0.05), m=st.integers(1, 8), bits=BITS, signed=st.booleans(), seed=st.integers(0, 99))
def test_two_scale_round_trip_and_code_range(s, m, bits, signed, seed):
    q = TwoScale(s, m, bits, signed)
    x = _values(seed, lo=-0.2 if signed else 0.0, hi=q.max_value * 1.2)
    codes = q.encode(x)
    assert int(codes.min()) >= 0 and int(codes.max()) < (1 << bits)
    assert torch.equal(q.decode(codes), q.fake(x))
    # Re-encoding a decoded value gives back the same code (codes are canonical).
    assert torch.equal(q.encode(q.decode(codes)), codes)
    assert int(q.decode_int(codes).abs().max()) <= 127 << 8  # fits int16 for the consumer


@settings(max_examples=40, deadline=None)
@given(s=st.floats(1e-4, 0.05), m=st.integers(1, 8), bits=BITS, signed=st.booleans(), seed=st.integers(0, 99))
def test_two_scale_is_monotonic_and_nearest(s, m, bits, signed, seed):
    q = TwoScale(s, m, bits, signed)
    x = _values(seed, lo=-0.2 if signed else 0.0, hi=q.max_value).sort().values
    y = q.fake(x)
    assert torch.all(y[1:] >= y[:-1])
    # Inside the covered range each value takes the nearest representable value.
    values = _representable(q)
    inside = (x >= values.min()) & (x <= values.max())
    nearest = values[(x[inside, None] - values[None]).abs().argmin(1)]
    # A value within float32 rounding of the midpoint of two codes may go either way (seen: x = 20.5658, one ulp
    # from the midpoint of 20.4702 and 20.6615): allow a few ulps of x on top of the fixed tolerance.
    slack = s * 1e-4 + 4 * torch.finfo(torch.float32).eps * x[inside].abs()
    assert torch.all(((y[inside] - x[inside]).abs() - (nearest - x[inside]).abs()).abs() <= slack)


def test_two_scale_keeps_small_values_fine_and_large_values_coarse():
    q = TwoScale(1 / (127 * 16), 4, 8)  # fine step 1/2032 up to 1/16, coarse step 1/127 up to 1
    assert q.fake(torch.tensor([0.0004])).item() == pytest.approx(1 / 2032)
    assert q.fake(torch.tensor([0.9])).item() == pytest.approx(round(0.9 * 127) / 127)
    assert q.fake(torch.tensor([1.0])).item() == pytest.approx(1.0)
    assert q.encode(torch.tensor([0.9])).item() >> 7 == 1 and q.encode(torch.tensor([0.0004])).item() >> 7 == 0


def test_signed_two_scale_keeps_the_gelu_tail():
    q = TwoScale(0.003, 6, 8, signed_fine=True)
    assert q.fake(torch.tensor([-0.17])).item() == pytest.approx(-0.17, abs=0.0015)
    assert TwoScale(0.003, 6, 8, signed_fine=False).fake(torch.tensor([-0.17])).item() == 0.0


@settings(max_examples=30, deadline=None)
@given(lo=st.floats(-50, 0), width=st.floats(0.01, 100), bits=BITS, seed=st.integers(0, 99))
def test_uniform_round_trip_range_and_step(lo, width, bits, seed):
    q = uniform_from_range(lo, lo + width, bits)
    x = _values(seed, lo=lo, hi=lo + width)
    codes = q.encode(x)
    assert int(codes.min()) >= -(1 << (bits - 1)) and int(codes.max()) <= (1 << (bits - 1)) - 1
    assert torch.equal(q.decode(codes), q.fake(x))
    assert float((q.fake(x) - x).abs().max()) <= float(q.scale) * 0.5001 + 1e-6
    xs = x.sort().values
    assert torch.all(q.fake(xs)[1:] >= q.fake(xs)[:-1])
    assert q.fake(torch.tensor([0.0])).item() == 0.0  # zero is exact (padding, ReLU-free graphs need it)


def test_per_channel_weights_are_symmetric_per_row():
    w = torch.randn(16, 32) * torch.linspace(0.01, 3, 16)[:, None]
    q = symmetric_per_channel(w, 8)
    codes = q.encode(w)
    assert torch.equal(codes.abs().amax(1), torch.full((16,), 127, dtype=torch.int32))
    assert torch.all((q.fake(w) - w).abs() <= q.scale[:, None] * 0.5001)


@settings(max_examples=30, deadline=None)
@given(shift=st.integers(1, 6), bits=BITS, seed=st.integers(0, 99))
def test_channel_pow2_scales_outliers_by_power_of_two(shift, bits, seed):
    shifts = torch.zeros(12, dtype=torch.int64)
    shifts[[2, 7]] = shift
    q = ChannelPow2(0.05, 3, shifts, bits)
    x = torch.randn(64, 12, generator=torch.Generator().manual_seed(seed))
    codes = q.encode(x)
    assert torch.equal(q.decode(codes), q.fake(x))
    assert torch.allclose(q.channel_scales()[[2, 7]], torch.tensor([0.05 * 2**shift] * 2))
    assert q.outlier_mask.nonzero().flatten().tolist() == [2, 7]


def test_log2_code():
    q = Log2(4)
    p = torch.tensor([1.0, 0.5, 0.3, 2.0**-14, 1e-9, 0.0])
    assert q.encode(p).tolist() == [0, 1, 2, 14, 15, 15]
    assert q.fake(p).tolist() == [1.0, 0.5, 0.25, 2.0**-14, 0.0, 0.0]


def test_sign_split_code():
    q = SignSplit(0.16997 / 128, 0.05, 8)
    x = torch.tensor([-0.17, -0.01, 0.0, 0.07, 100.0])
    codes = q.encode(x)
    assert torch.equal(q.decode(codes), q.fake(x))
    assert q.fake(x)[-1].item() == pytest.approx(127 * 0.05)
    assert codes[0].item() >> 7 == 1 and codes[3].item() >> 7 == 0


@pytest.mark.parametrize("fan_in", [64, 256, 1536, 3072, 1 << 20])
def test_two_scale_ratio_bound_keeps_int32_accumulators_safe(fan_in):
    m = max_two_scale_ratio(fan_in)
    assert 0 <= m <= 8
    if m > 0:
        assert fan_in * (127 << m) * 128 < 2**31


def test_bad_parameters_raise_project_errors():
    with pytest.raises(QuantizationError):
        TwoScale(0.01, 9)
    with pytest.raises(QuantizationError):
        TwoScale(-1.0, 2)
    with pytest.raises(QuantizationError):
        Uniform(torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(QuantizationError):
        ChannelPow2(0.1, 0, torch.tensor([-1]))
    with pytest.raises(QuantizationError):
        Log2(1)


def test_to_dict_is_json_ready():
    import json

    for q in (TwoScale(0.001, 3), uniform_from_range(-1, 2, 8), ChannelPow2(0.1, 0, torch.tensor([0, 3])), Log2(8),
              SignSplit(0.001, 0.02)):
        d = json.loads(json.dumps(q.to_dict()))
        assert d["kind"] and d["bits"] in (8,)
        assert not math.isnan(float(d.get("fine_scale", 0.0)))
