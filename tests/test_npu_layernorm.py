"""The NPU variant's LayerNorm as builtins (``tsptq export --npu ethos-u --residual int16 --layernorm npu``, issue 18).

Each LayerNorm of the int16 residual stream becomes two row statistics on the CPU (TSPTQ_LN_NEG_MEAN, TSPTQ_LN_RSTD)
and three builtins Vela maps to the NPU: an int16 ADD (x minus the row mean), an int16 MUL (times the reciprocal
deviation) and a 1x1 16x8 DEPTHWISE_CONV_2D (gamma and beta). The checks:

- the two builtins new to the variant are LiteRT's reference kernels byte for byte, at the cases that decide it: the
  MUL's multiplier is computed from the float32 scales in float32 (a multiplier just off a power of two rounds a tie
  the other way in double), the DEPTHWISE's 64-bit requantization keeps the multiplier's top 16 bits and wraps to
  int32 before saturating;
- the whole variant in LiteRT's reference kernels (builtins) plus the Python custom kernels gives ``IntModel.run``'s
  bytes, and it computes a LayerNorm: the output is within a step or so of the float LayerNorm of its int16 input;
- the reciprocal deviation is sized from the calibration's smallest token deviation, and saturates below it;
- Vela puts every builtin of the LayerNorm on the NPU; refusals are one line.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from tsptq.cli.main import main as cli_main
from tsptq.data import datasets
from tsptq.errors import QuantizationError
from tsptq.intmodel import kernels as K
from tsptq.intmodel.fixedpoint import quantize_multiplier
from tsptq.intmodel.lower import lower
from tsptq.intmodel.lower_layernorm_npu import LN_RSTD_MARGIN
from tsptq.npu import vela
from tsptq.npu.litert_check import MixedRun
from tsptq.npu.single_op import TensorSpec, single_op_tflite
from tsptq.quant.quantize import quantize
from tsptq.quant.quantizers import ChannelPow2
from tsptq.tflite.writer import to_tflite

litert = pytest.importorskip("ai_edge_litert.interpreter")
needs_vela = pytest.mark.skipif(vela.vela_version() is None,
                                reason=f"ethos-u-vela is not importable (the 'npu' extra: {vela.INSTALL_HINT})")

DW_OPTIONS = {"padding": 1, "strideW": 1, "strideH": 1, "depthMultiplier": 1, "dilationWFactor": 1,
              "dilationHFactor": 1}


def _litert(data: bytes, feeds) -> np.ndarray:
    it = litert.Interpreter(model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    for d, f in zip(it.get_input_details(), feeds):
        it.set_tensor(d["index"], f)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _mul_reference(a, b, sa, sb, sy):
    from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
    from tsptq.intmodel.ops import ALL_OPS

    q = [QuantParams(np.array([s], np.float32), np.zeros(1, np.int64)) for s in (sa, sb, sy)]
    im = IntModel([Tensor("a", a.shape, "int16", q[0]), Tensor("b", b.shape, "int16", q[1]),
                   Tensor("y", a.shape, "int16", q[2])], [Op("MUL", [0, 1], [2])], [0, 1], [2])
    return ALL_OPS["MUL"].kernel(im, im.ops[0], [a, b])


@pytest.mark.parametrize("sa,sb,sy", [
    (0.00042053163633681834, 0.00907113030552864, 2.0**-12),  # float32 product 2^-6, in double just above it
    (2.0**-3, 2.0**-3, 1.0),                                    # an exact power of two: ties of the two roundings
    (0.0123, 0.0071, 0.0150),                                   # plain scales
])
def test_int16_mul_is_litert_reference_byte_for_byte(sa, sb, sy):
    rng = np.random.default_rng(7)
    a = rng.integers(-32768, 32768, (1, 64, 48)).astype(np.int16)
    a[0, :8] = np.arange(-8 * 48, 0).reshape(8, 48) * 2 + 1  # odd products: halves, then ties at 2^-6
    b = rng.integers(-32768, 32768, (1, 64, 1)).astype(np.int16)
    b[0, :8, 0] = [185, 1, -1, 3, 7, -7, 32767, -32768]
    data = single_op_tflite("MUL", [TensorSpec(a.shape, "int16", sa, 0), TensorSpec(b.shape, "int16", sb, 0)],
                            [TensorSpec(a.shape, "int16", sy, 0)], version=4)
    want = _mul_reference(a, b, sa, sb, sy)
    assert np.array_equal(_litert(data, [a, b]), want)
    if sa == 0.00042053163633681834:  # the multiplier from double scales would differ on some of these
        real = float(np.float64(np.float32(sa)) * np.float64(np.float32(sb)) / np.float64(np.float32(sy)))
        m, s = quantize_multiplier(real)
        assert not np.array_equal(K.mul_int16(a, b, m, s), want)


@pytest.mark.parametrize("seed", range(4))
def test_depthwise_16x8_is_litert_reference_byte_for_byte(seed):
    rng = np.random.default_rng(seed)
    T, D = int(rng.integers(1, 40)), int(rng.integers(1, 64))
    sx, sy = (float(np.float32(v)) for v in rng.uniform(1e-4, 1e-2, 2))
    sw = rng.uniform(1e-4, 2e-2, D).astype(np.float32)
    w = rng.integers(-127, 128, (1, 1, 1, D)).astype(np.int8)
    big = seed % 2 == 1  # biases whose scaled value passes int32: TFLite wraps it before it saturates
    bias = rng.integers(-2**40 if big else -2**20, 2**40 if big else 2**20, D).astype(np.int64)
    x = rng.integers(-32768, 32768, (1, T, 1, D)).astype(np.int16)
    data = single_op_tflite("DEPTHWISE_CONV_2D", [
        TensorSpec(x.shape, "int16", sx, 0), TensorSpec(w.shape, "int8", list(sw), 0, axis=3, data=w),
        TensorSpec((D,), "int64", list((np.float32(sx) * sw).astype(np.float32)), 0, data=bias)],
        [TensorSpec(x.shape, "int16", sy, 0)], DW_OPTIONS, version=5)
    mult, shift = K.builtin_multipliers(sx, sw, sy)
    want = K.depthwise_16x8(x, w.reshape(-1), bias, mult, shift)
    assert np.array_equal(_litert(data, [x]), want)
    if big:
        assert np.any(np.abs(want) < 32767)  # not all saturated: the wrap is what is checked


def test_the_row_statistics():
    rng = np.random.default_rng(3)
    x = rng.integers(-3000, 3000, (2, 17, 96)).astype(np.int16)
    x[0, 0] = 5                     # a constant row: sigma from eps alone
    x[0, 1] = np.arange(96) * 300 - 14000
    D, eps, c = 96, 1000, 30
    m = K.ln_neg_mean(x)
    assert m.shape == (2, 17, 1) and m.dtype == np.int16
    assert np.all(np.abs(m[..., 0] + x.mean(-1)) <= 0.5)
    r = K.ln_rstd(x, eps, c)
    real = 2.0**c / np.sqrt(D * D * x.astype(np.float64).var(-1) + eps)
    expect = np.minimum(real, 32767)
    assert np.all(np.abs(r[..., 0] - expect) <= 0.5 + 1e-6 * expect)
    assert r[0, 0, 0] == 32767          # 2^30 / sqrt(1000) saturates: the documented clip
    assert K.ln_neg_mean(np.full((1, 1, 4), -32768, np.int16))[0, 0, 0] == 32767


@pytest.fixture(scope="module")
def tiny_ln(tiny_vits):
    from test_npu_variant import _forge_two_scale_codes

    cfg, graph, cal, imgs = tiny_vits(8)
    qm = _forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False))
    D = cfg.embed_dim
    u = qm.acts["blocks.0.in"]  # outlier channels on block 0's input, as in test_npu_residual16
    qm.acts["blocks.0.in"] = ChannelPow2(float(u.base_scale), int(getattr(u, "zero_point", 0)),
                                         [3 if c % 7 == 0 else 0 for c in range(D)])
    xin = datasets.to_model_input(imgs.images, cfg)
    sigma = qm.residual_sigma_min([xin])
    return qm, sigma, lower(qm).quantize_input(xin.numpy())


def test_every_layernorm_is_builtins_around_two_cpu_statistics(tiny_ln):
    qm, sigma, _ = tiny_ln
    im = lower(qm, npu=True, residual16=True, layernorm_npu=sigma)
    kinds = [o.kind for o in im.ops]
    norms = 2 * qm.graph.cfg.depth + 1
    assert "TSPTQ_LAYERNORM_2S_I16" not in kinds and "TSPTQ_LAYERNORM_2S" not in kinds
    assert kinds.count("TSPTQ_LN_NEG_MEAN") == kinds.count("TSPTQ_LN_RSTD") == norms
    assert kinds.count("DEPTHWISE_CONV_2D_16X8") == kinds.count("MUL") == norms
    assert im.metadata["layernorm"] == "npu" and im.metadata["residual"] == "int16"
    for norm in ("blocks.0.norm1", "blocks.0.norm2", "norm"):
        y = im.tensor(norm)
        assert y.dtype == "int16" and y.zp == 0 and y.n_scales == 1


def test_the_variant_in_litert_reference_kernels_is_byte_identical(tiny_ln):
    qm, sigma, x = tiny_ln
    im = lower(qm, npu=True, residual16=True, layernorm_npu=sigma)
    got = MixedRun(im).run(x, check=True)  # check: every builtin op's LiteRT output = its Python kernel's
    assert got.dtype == np.int8 and np.array_equal(got, im.run(x))


def test_it_computes_the_layernorm_of_its_input(tiny_ln):
    """Each LayerNorm's int16 output against the float LayerNorm of its own int16 input: within about one output
    step (the roundings of the mean, the reciprocal, n and the 16-bit multiplier) where the int16 output does not
    saturate, and closer than the 8-bit code form of --residual int16 (whose output is the code's per-channel step)."""
    qm, sigma, x = tiny_ln
    im = lower(qm, npu=True, residual16=True, layernorm_npu=sigma)
    code = lower(qm, npu=True, residual16=True)
    _, v = im.run(x, keep=True)
    _, vc = code.run(x, keep=True)
    eps = qm.graph.cfg.ln_eps
    for norm, point in (("blocks.0.norm1", "blocks.0.in"), ("blocks.0.norm2", "blocks.0.mid"), ("norm", "norm.in")):
        gamma, beta = (t.double().numpy() for t in qm.graph.norms[norm])
        xt, yt = im.tensor(point), im.tensor(norm)
        xr = v[im.tensors.index(xt)].astype(np.float64) * float(xt.quant.scale[0])
        ref = (xr - xr.mean(-1, keepdims=True)) / np.sqrt(xr.var(-1, keepdims=True) + eps) * gamma + beta
        step = float(yt.quant.scale[0])
        y = v[im.tensors.index(yt)].astype(np.float64) * step
        inside = np.abs(ref) < 32000 * step
        err = np.abs(y - ref)[inside] / step
        assert inside.mean() > 0.99 and err.max() <= 2.0, (norm, float(err.max()))
        ct = code.tensor(norm)
        yc = vc[code.tensors.index(ct)].astype(np.float64) * float(ct.quant.scale[0])
        code_point = code.tensor(point)  # the code form reads its own residual stream: compare on its input
        xc = vc[code.tensors.index(code_point)].astype(np.float64) * float(code_point.quant.scale[0])
        refc = (xc - xc.mean(-1, keepdims=True)) / np.sqrt(xc.var(-1, keepdims=True) + eps) * gamma + beta
        assert np.mean(np.abs(y - ref)) < np.mean(np.abs(yc - refc)), norm


def test_the_reciprocal_is_sized_from_the_calibration(tiny_ln):
    qm, sigma, x = tiny_ln
    im = lower(qm, npu=True, residual16=True, layernorm_npu=sigma)
    _, v = im.run(x, keep=True)
    op = next(o for o in im.ops if o.kind == "TSPTQ_LN_RSTD" and im.tensors[o.inputs[0]].name == "blocks.0.in")
    xt = im.tensors[op.inputs[0]]
    D = xt.shape[-1]
    c = op.options["c"]
    assert c == math.floor(math.log2(32767 / LN_RSTD_MARGIN * D * sigma["blocks.0.in"] / float(xt.quant.scale[0])))
    r = v[op.outputs[0]]
    assert r.max() <= 32767 // LN_RSTD_MARGIN * 2 + 1 and r.min() > 0  # the calibration images: never saturated
    # half the calibration's smallest deviation still fits; a token a LN_RSTD_MARGIN-th of it saturates
    tiny = np.zeros((1, 1, D), np.int16)
    tiny[0, 0, ::2], tiny[0, 0, 1::2] = 1, -1
    assert K.ln_rstd(tiny, op.options["eps"], c)[0, 0, 0] == 32767


def test_refusals(tiny_ln, tmp_path, capsys):
    qm, sigma, _ = tiny_ln
    with pytest.raises(QuantizationError, match="int16 residual"):
        lower(qm, npu=True, layernorm_npu=sigma)
    with pytest.raises(QuantizationError, match="no calibration deviation"):
        lower(qm, npu=True, residual16=True, layernorm_npu={})
    from tsptq.cli.deploy import main as deploy_main

    assert deploy_main(["--target", "corstone-300", "--build-only", "--npu", "ethos-u", "--residual", "code",
                        "--layernorm", "npu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tsptq-deploy: error: --layernorm npu reads the int16 residual stream: drop --residual code (int16 "
                   "is the default)"]
    assert deploy_main(["--target", "corstone-300", "--build-only", "--layernorm", "npu", "--quiet"]) == 2
    assert "--residual and --layernorm apply to --npu only" in capsys.readouterr().err
    out = tmp_path / "m.tflite"
    for args in (["--npu", "ethos-u", "--residual", "code", "--layernorm", "npu"], ["--layernorm", "npu"]):
        assert cli_main(["export", "--model", "cifar10-vit", *args, "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--layernorm" in err[0] and not out.exists()


def test_a_token_avg_model_keeps_its_final_norm_on_the_cpu(tiny_vits):
    """A [class token, patch-token mean] head rounds the mean on the final norm's code steps: that norm stays
    TSPTQ_LAYERNORM_2S_I16; the blocks' LayerNorms are builtins. LiteRT agrees byte for byte."""
    from test_npu_variant import _forge_two_scale_codes
    from tiny_vit import tiny_vit

    cfg, graph, cal, imgs = tiny_vit(8, global_pool="token+avg")
    qm = _forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False))
    xin = datasets.to_model_input(imgs.images, cfg)
    im = lower(qm, npu=True, residual16=True, layernorm_npu=qm.residual_sigma_min([xin]))
    kinds = [o.kind for o in im.ops]
    assert kinds.count("TSPTQ_LAYERNORM_2S_I16") == 1 and kinds.count("TSPTQ_LN_RSTD") == 2 * cfg.depth
    x = im.quantize_input(xin.numpy())
    assert np.array_equal(MixedRun(im).run(x, check=True), im.run(x))


@needs_vela
def test_vela_puts_the_layernorms_on_the_npu(tiny_ln, tmp_path):
    qm, sigma, _ = tiny_ln
    im = lower(qm, npu=True, residual16=True, layernorm_npu=sigma)
    path = tmp_path / "ln.tflite"
    path.write_bytes(to_tflite(im))
    r = vela.compile_report(path)
    kinds = [o.kind for o in im.ops]
    assert r.ops_npu.get("MUL", 0) == kinds.count("MUL")
    assert r.ops_npu.get("DEPTHWISE_CONV_2D", 0) == kinds.count("DEPTHWISE_CONV_2D_16X8")
    assert r.ops_npu.get("ADD", 0) == kinds.count("ADD")
    assert set(r.ops_cpu) <= {"TSPTQ_LN_NEG_MEAN", "TSPTQ_LN_RSTD", "TSPTQ_GELU_2S", "TSPTQ_SOFTMAX_2S",
                              "TSPTQ_PLANE_2S", "TSPTQ_PV_SUM_2S"}
    assert r.npu_mac_fraction == 1.0


def test_cli_export_records_the_form_and_the_file_rebuilds(tmp_path, capsys):
    from tsptq.npu.graph_ops import parse_model
    from tsptq.npu.tflm import file_int_model, file_metadata

    out = tmp_path / "ln.tflite"
    # the form --npu writes when --residual and --layernorm are not given
    assert cli_main(["export", "--model", "cifar10-vit", "--npu", "ethos-u", "--calib-images", "4", "--out", str(out),
                     "--quiet"]) == 0
    assert "an int16 residual stream" in capsys.readouterr().out
    data = out.read_bytes()
    meta = file_metadata(parse_model(data, out.name))
    assert (meta["residual"], meta["layernorm"]) == ("int16", "npu")
    im, how = file_int_model(data, out.name)  # rebuilt from the recorded source: must write these bytes
    assert "the file's bytes" in how and im.metadata["layernorm"] == "npu"


def test_gamma_and_beta_stay_in_velas_bias_range():
    """A tiny gamma next to a large beta: the weight shrinks so that the bias keeps Vela's 40 bits; a gamma that
    cannot move the output by half a step becomes 0; beta alone past 40 bits is refused."""
    from tsptq.intmodel.lower_layernorm_npu import BIAS_LIMIT, _gamma_beta

    D, s_n, unit = 4, 2.0**-11, 1e-5
    gamma = np.array([1.0, -1e-6, 2e-4, 0.0])
    beta = np.array([0.3, 5.0, 1000.0, -0.2])
    w_scale, w, bias = _gamma_beta(gamma, beta, s_n, unit, D)
    w = w.reshape(-1)
    assert w[0] == 127 and w[2] != 0 and abs(w[2]) < 127  # shrunk: 127 would need a bias past 2^39
    assert w[1] == 0 and w[3] == 0                        # |gamma| sqrt(D) < unit / 2: no effect on the output
    assert np.abs(bias).max() < BIAS_LIMIT
    for c in range(D):  # what the channel computes: gamma_c n + beta_c on the accumulator's unit
        real_gamma = w[c] * float(w_scale[c]) if w[c] else 0.0
        assert real_gamma == pytest.approx(gamma[c] if w[c] else 0.0, rel=1e-6)
        assert bias[c] * s_n * float(w_scale[c]) == pytest.approx(beta[c], rel=1e-6, abs=s_n * float(w_scale[c]))
    with pytest.raises(QuantizationError, match="40 bits"):
        _gamma_beta(np.zeros(2), np.array([0.0, 2.0**30]), s_n, unit, 2)


def test_the_lowering_refuses_what_it_cannot_size(tiny_ln):
    qm, sigma, _ = tiny_ln
    tiny = {k: v * 1e-9 for k, v in sigma.items()}  # deviations far below a residual step: no MUL multiplier < 1
    with pytest.raises(QuantizationError, match="too small against the residual step|no int16 reciprocal"):
        lower(qm, npu=True, residual16=True, layernorm_npu=tiny)
    huge = {k: v * 1e12 for k, v in sigma.items()}  # c past 42
    with pytest.raises(QuantizationError, match="no int16 reciprocal"):
        lower(qm, npu=True, residual16=True, layernorm_npu=huge)


def test_wide_accumulators_of_the_16x8_fc_round_exactly():
    """An int16 LayerNorm output near full scale on a wide row takes the 16x8 FC's accumulator past 2^32, where
    acc * M would pass int64: the kernel then rounds on Python integers, the same rule (requant1)."""
    rng = np.random.default_rng(0)
    x = rng.integers(-32768, 32768, (2, 3, 1300)).astype(np.int16)
    w = rng.integers(-127, 128, (5, 1300)).astype(np.int8)
    x[0, 0], w[0] = 32767, 127
    bias = rng.integers(-2**31, 2**31, 5).astype(np.int64)
    mult, shift = rng.integers(2**30, 2**31, 5).astype(np.int64), rng.integers(-30, -20, 5)
    acc = K._accumulate(x, 0, w, bias)
    assert np.abs(acc).max() >= 2**32
    want = np.empty(acc.shape, np.int64)
    for i in np.ndindex(acc.shape):
        v, n = int(acc[i]) * int(mult[i[-1]]), 31 - int(shift[i[-1]])
        q = (abs(v) + (1 << (n - 1))) >> n
        want[i] = max(-32768, min(32767, -q if v < 0 else q))
    assert np.array_equal(K.fully_connected_16x8(x, w, bias, mult, shift), want)
