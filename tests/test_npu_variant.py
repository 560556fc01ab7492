"""The NPU variant (issue 18, first working step): ``lower(qm, npu=True)`` / ``tsptq export --npu ethos-u``.

Every multiply-accumulate op is a builtin that Vela maps to an Ethos-U55 (FULLY_CONNECTED, 16x8 where a two-scale code
feeds it; attention x V of a V-2SF softmax as two int8 BATCH_MATMULs with int32 outputs on its fine and coarse
planes, summed and requantized once by TSPTQ_PV_SUM_2S); LayerNorm, Softmax, GELU and the residual adds stay TSPTQ_*
ops.

- every builtin op of the variant, run by LiteRT's reference kernels (``OpResolverType.BUILTIN_REF``) inside a whole
  model run (``tsptq.npu.litert_check.MixedRun``: builtins by LiteRT, custom ops by the Python kernels), gives the
  Python integer model's bytes: a tiny random ViT, and cifar10-vit (V-2SF GELU into fc2, O-2SF LayerNorm outputs
  into qkv/fc1/head) on 2 bundled test images (slow);
- single FULLY_CONNECTED 16x8 files (per-channel and per-tensor weights, ties of the rounding, saturation) against
  LiteRT's reference kernel;
- the variant gives the default file's bytes, with the P x V split and without it (``split_pv=False``,
  ``--pv-on-cpu``): tiny ViT with forged V-2SF/O-2SF codes; cifar10-vit on 100 bundled images (slow);
- BATCH_MATMUL int8 x int8 -> int32 (the planes' products) against LiteRT's reference kernel: raw products, no zero
  point;
- Vela puts every MAC of the tiny variant on an Ethos-U55-128, and `tsptq export --npu ethos-u` writes the variant,
  the compiled file and the report with >= 95% of fashion-vit's MACs on the NPU (skip without ethos-u-vela);
- a token+avg head (dinov2-s14's): TSPTQ_TOKEN_MEAN_I16 on the int16 final norm, the default file's bytes;
- one-line refusals: --npu with W4A8, with the stock converter, an unknown accelerator, --pv-on-cpu without --npu.
"""
from __future__ import annotations

import numpy as np
import pytest

from tsptq.cli.main import main
from tsptq.data import datasets
from tsptq.errors import ModelFileError, QuantizationError
from tsptq.intmodel import kernels as K
from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
from tsptq.intmodel.lower import lower
from tsptq.intmodel.ops import ALL_OPS
from tsptq.npu import vela
from tsptq.npu.litert_check import MixedRun
from tsptq.quant.quantize import quantize
from tsptq.tflite.writer import to_tflite

litert = pytest.importorskip("ai_edge_litert.interpreter")
needs_vela = pytest.mark.skipif(vela.vela_version() is None,
                                reason=f"ethos-u-vela is not importable (the 'npu' extra: {vela.INSTALL_HINT})")
slow = pytest.mark.slow

MAC_OPS = {"CONV_2D", "FULLY_CONNECTED", "FULLY_CONNECTED_16X8", "BATCH_MATMUL", "TSPTQ_FC_2S", "TSPTQ_BMM_2S"}


@pytest.fixture(scope="module")
def tiny(tiny_vits):
    cfg, graph, cal, imgs = tiny_vits(8)
    qm = quantize(graph, cal, "tsptq", progress=False)
    x = lower(qm).quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())
    return qm, x


def test_every_fc_of_the_variant_is_a_builtin(tiny):
    qm, _ = tiny
    im = lower(qm, npu=True)
    kinds = [o.kind for o in im.ops]
    assert "TSPTQ_FC_2S" not in kinds and "FULLY_CONNECTED_16X8" in kinds
    assert im.metadata["variant"] == "npu-ethos-u-step1"
    for o in im.ops:  # 16x8: int16 input and output, zero point 0, int64 bias
        if o.kind == "FULLY_CONNECTED_16X8":
            x, w, b, y = (im.tensors[i] for i in (*o.inputs, o.outputs[0]))
            assert (x.dtype, w.dtype, b.dtype, y.dtype) == ("int16", "int8", "int64", "int16")
            assert x.zp == 0 and y.zp == 0


def test_tiny_variant_in_litert_reference_kernels_is_byte_identical(tiny):
    qm, x = tiny
    im = lower(qm, npu=True)
    got = MixedRun(im).run(x, check=True)  # check: every builtin op's LiteRT output = its Python kernel's
    want = im.run(x)
    assert got.dtype == want.dtype == np.int8
    assert np.array_equal(got, want)


def _forge_two_scale_codes(qm):
    """The tiny model's calibration picks uniform softmax and GELU codes: give it the V-2SF and O-2SF codes
    cifar10-vit uses (softmax V-2SF m=4, GELU V-2SF signed fine m=3, LayerNorm outputs O-2SF with shifts 0/1/2), so
    every decode of the variant runs: the softmax planes (TSPTQ_PLANE_2S into two int32 BATCH_MATMULs and
    TSPTQ_PV_SUM_2S), the
    int16 GELU table, the int16 LayerNorm outputs."""
    from tsptq.quant.quantizers import ChannelPow2, TwoScale

    qm.acts["blocks.0.softmax"] = TwoScale(1.0 / (127 << 4), 4, 8)
    g = qm.acts["blocks.0.gelu"]
    qm.acts["blocks.0.gelu"] = TwoScale(float(g.scale) * (127 - int(g.zero_point)) / (63 << 3), 3, 8, True)
    for norm in ("blocks.0.norm1", "blocks.0.norm2", "norm"):
        u = qm.acts[norm]
        D = qm.graph.cfg.embed_dim
        qm.acts[norm] = ChannelPow2(float(u.base_scale) / 2, int(getattr(u, "zero_point", 0)), [c % 3 for c in range(D)])
    return qm


def test_two_scale_decodes_in_litert_reference_kernels_are_byte_identical(tiny_vits):
    cfg, graph, cal, imgs = tiny_vits(8)
    qm = _forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False))
    im = lower(qm, npu=True)
    kinds = [o.kind for o in im.ops]
    assert kinds.count("TSPTQ_PLANE_2S") == 2 and "TSPTQ_BMM_2S" not in kinds
    assert kinds.count("TSPTQ_PV_SUM_2S") == 1
    assert im.tensor("blocks.0.ctx.fine").dtype == im.tensor("blocks.0.ctx.coarse").dtype == "int32"
    # V's tensors declare zero point 0 (an int16 ADD of the code's zero point before its QUANTIZE): the int32
    # products take V's bytes as they are in LiteRT and on an Ethos-U alike; TSPTQ_PV_SUM_2S subtracts the zero point
    assert im.tensor("blocks.0.v.bhtd").zp == 0
    v_zp = int(qm.acts["blocks.0.v"].zero_point)
    assert v_zp != 0 and [o.options["b_zp"] for o in im.ops if o.kind == "TSPTQ_PV_SUM_2S"] == [v_zp]
    assert "ADD" in kinds and set(im.tensor("blocks.0.v.zero_point").data.ravel().tolist()) == {v_zp}
    assert im.tensor("blocks.0.gelu").dtype == im.tensor("blocks.0.norm1").dtype == "int16"
    x = im.quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())
    assert np.array_equal(MixedRun(im).run(x, check=True), im.run(x))
    # the split computes TSPTQ_BMM_2S's accumulator and its one rounding: the default file's bytes
    assert np.array_equal(im.run(x), lower(qm).run(x))
    # the planes are the V-2SF decode: fine + (coarse << m) = d, and without the split TSPTQ_BMM_2S stays
    _, vals = im.run(x, keep=True)
    from tsptq.intmodel import kernels as K

    code = vals[im.tensors.index(im.tensor("blocks.0.softmax"))]
    fine, coarse = (vals[im.tensors.index(im.tensor(f"blocks.0.ctx.p_{p}"))] for p in ("fine", "coarse"))
    assert np.array_equal(fine.astype(np.int64) + (coarse.astype(np.int64) << 4), K.decode_two_scale(code, 8, 4, False))
    whole = lower(qm, npu=True, split_pv=False)
    assert "TSPTQ_BMM_2S" in [o.kind for o in whole.ops]
    # without the split the variant computes the default file's bytes: the FCs' accumulators and roundings are
    # TSPTQ_FC_2S's, the decoded int16 operands exact, the O-2SF branches saturated into their codes by the add
    assert np.array_equal(whole.run(x), lower(qm).run(x))
    assert np.array_equal(MixedRun(whole).run(x, check=True), lower(qm).run(x))


def test_token_mean_i16_is_the_decoded_token_mean():
    """TSPTQ_TOKEN_MEAN_I16 on decoded codes (q - zp) << k rounds the mean onto the step 2^k, half away from zero: the
    default TSPTQ_TOKEN_MEAN's code, decoded the same way (ties included: two tokens, odd sums)."""
    from tsptq.intmodel import kernels as K

    rng = np.random.default_rng(0)
    for tokens, first, zp in ((2, 0, 0), (3, 1, -3), (257, 1, 5), (5, 0, -128)):
        q = rng.integers(-128, 128, (2, tokens, 12)).astype(np.int8)
        k = np.arange(12) % 8
        d = ((q.astype(np.int64) - zp) << k).astype(np.int16)
        want = ((K.token_mean(q, first, zp).astype(np.int64) - zp) << k).astype(np.int16)
        np.testing.assert_array_equal(K.token_mean_i16(d, k.astype(np.int8), first), want)
    d = np.array([[[1, -1, 3, -3], [2, -2, 0, 0]]], np.int16)  # sums 3, -3, 3, -3 over 2 tokens: ties
    np.testing.assert_array_equal(K.token_mean_i16(d, np.zeros(4, np.int8), 0), [[[2, -2, 2, -2]]])


def test_token_avg_head_in_the_variant_gives_the_default_bytes():
    """A head over [class token, patch-token mean] (global_pool token+avg, dinov2-s14's): the variant's final
    LayerNorm writes its O-2SF code decoded (int16), TSPTQ_TOKEN_MEAN_I16 takes the mean on each channel's step, and
    the head is a 16x8 FULLY_CONNECTED on the int16 row: the default file's bytes, in LiteRT's reference kernels too."""
    from tiny_vit import tiny_vit

    cfg, graph, cal, imgs = tiny_vit(8, global_pool="token+avg")
    qm = _forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False))  # norm: O-2SF, shifts 0/1/2
    im0, im = lower(qm), lower(qm, npu=True)
    kinds = [o.kind for o in im.ops]
    assert kinds[-6:] == ["STRIDED_SLICE", "TSPTQ_TOKEN_MEAN_I16", "CONCATENATION", "RESHAPE",
                          "FULLY_CONNECTED_16X8", "QUANTIZE"]
    assert "TSPTQ_FC_2S" not in kinds and "TSPTQ_TOKEN_MEAN" not in kinds
    assert im.tensor("norm.pooled").dtype == "int16" and im.tensor("norm.pooled").n_scales == 1
    x = im0.quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())
    assert np.array_equal(im.run(x), im0.run(x))
    assert np.array_equal(MixedRun(im).run(x, check=True), im0.run(x))
    # the mean itself: the default file's TSPTQ_TOKEN_MEAN code, decoded onto the norm's base scale
    (_, v0), (_, v1) = im0.run(x, keep=True), im.run(x, keep=True)
    mean0, mean1 = (v[m.tensors.index(m.tensor("norm.patch_mean"))] for m, v in ((im0, v0), (im, v1)))
    shifts = np.arange(cfg.embed_dim) % 3
    zp = im0.tensor("norm.patch_mean").zp
    np.testing.assert_array_equal(mean1, (mean0.astype(np.int64) - zp) << shifts)


@needs_vela
def test_vela_puts_every_mac_of_a_token_avg_variant_on_the_npu(tmp_path):
    from tiny_vit import tiny_vit

    cfg, graph, cal, _ = tiny_vit(8, global_pool="token+avg")
    path = tmp_path / "tiny-avg-npu.tflite"
    path.write_bytes(to_tflite(lower(quantize(graph, cal, "tsptq", progress=False), npu=True)))
    r = vela.compile_report(path)
    assert r.npu_mac_fraction >= 0.999, vela.format_report(r)
    assert r.ops_cpu.get("TSPTQ_TOKEN_MEAN_I16") == 1 and "TSPTQ_FC_2S" not in r.ops_cpu


@slow
def test_cifar10_vit_variant_in_litert_reference_kernels_is_byte_identical(cifar_vit):
    """cifar10-vit's tsptq codes exercise both decodes: the O-2SF LayerNorm outputs (TSPTQ_LAYERNORM_2S_I16) and the
    V-2SF GELU table (int16 decoded values) into 16x8 FCs."""
    qm = cifar_vit.quantized("tsptq")
    im = lower(qm, npu=True)
    gelu = [im.tensors[o.outputs[0]] for o in im.ops if o.kind == "TSPTQ_GELU_2S"]
    assert gelu and all(t.dtype == "int16" for t in gelu)
    assert "TSPTQ_LAYERNORM_2S_I16" in {o.kind for o in im.ops}
    test = cifar_vit.test.take(2)
    x = im.quantize_input(datasets.to_model_input(test.images, cifar_vit.cfg).numpy())
    assert np.array_equal(MixedRun(im).run(x, check=True), im.run(x))


@slow
def test_cifar10_vit_variant_agrees_with_the_custom_op_file(cifar_vit):
    """The variant gives the default file's bytes, with the P x V split (int32 plane products, one rounding in
    TSPTQ_PV_SUM_2S) and without it (docs/npu.md has the 1000-image numbers)."""
    qm = cifar_vit.quantized("tsptq")
    im0 = lower(qm)
    test = cifar_vit.test.take(100)
    x = im0.quantize_input(datasets.to_model_input(test.images, cifar_vit.cfg).numpy())
    ref = im0.run(x)
    assert np.array_equal(lower(qm, npu=True, split_pv=False).run(x), ref)
    assert np.array_equal(lower(qm, npu=True).run(x), ref)


def _fc16x8_model(x_scale, w, w_scale, bias, y_scale) -> IntModel:
    O, I = w.shape
    ws = np.atleast_1d(np.asarray(w_scale, np.float32))
    tensors = [Tensor("x", (1, 4, I), "int16", QuantParams(np.array([x_scale], np.float32), np.zeros(1, np.int64))),
               Tensor("w", (O, I), "int8", QuantParams(ws, np.zeros(len(ws), np.int64)), w),
               Tensor("b", (O,), "int64", QuantParams((np.float32(x_scale) * ws).astype(np.float32),
                                                      np.zeros(len(ws), np.int64)), bias.astype(np.int64)),
               Tensor("y", (1, 4, O), "int16", QuantParams(np.array([y_scale], np.float32), np.zeros(1, np.int64)))]
    return IntModel(tensors, [Op("FULLY_CONNECTED_16X8", [0, 1, 2], [3], {"keep_num_dims": True})], [0], [3],
                    {"method": "test"})


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("y_scale", [1.0, 0.25, 0.004])  # exact ties (power-of-two ratios), plain, saturating
def test_fully_connected_16x8_matches_litert_reference(per_channel, y_scale):
    rng = np.random.default_rng(int(y_scale * 1000) + per_channel)
    O, I = 24, 40
    w = rng.integers(-127, 128, (O, I)).astype(np.int8)
    w_scale = np.exp2(rng.integers(-9, -5, O)).astype(np.float32) if per_channel else np.float32(2.0**-7)
    im = _fc16x8_model(2.0**-5, w, w_scale, rng.integers(-5000, 5000, O), y_scale)
    x = rng.integers(-32640, 32641, (6, 4, I)).astype(np.int16)  # (images, tokens, features): batch 1 per file
    x[0] = rng.integers(-3, 4, (4, I))  # small values: many exact halves at the power-of-two scales
    got = MixedRun(im).run(x, check=True)  # check: LiteRT's output = the kernel's, op by op
    op = im.ops[0]
    want = ALL_OPS[op.kind].kernel(im, op, [x, im.tensors[1].data, im.tensors[2].data])
    assert got.dtype == want.dtype == np.int16 and np.array_equal(got, want)
    if y_scale == 0.004:
        assert np.any(np.abs(want) == 32767)  # the saturation is exercised


def test_litert_fully_connected_16x8_multiplies_by_the_real_multiplier_in_double():
    """What LiteRT 2.3's reference 16x8 FULLY_CONNECTED computes away from exact ties: round_half_away(acc * r) with
    r = double(s_in) * double(s_w) / double(s_out), not the 31-bit multiplier M of requant1 (the integer model's
    definition). The two differ only where acc * r lies within |acc| * |r - M 2^(shift-31)| of a half: outputs picked
    here so that they do, where requant1, a truncated M and the 16-bit M all disagree with some of them."""
    from tsptq.intmodel.fixedpoint import quantize_multiplier

    rng = np.random.default_rng(5)
    O = 16
    xs, ys = np.float32(2**-5 * 0.77), np.float32(2**-6 * 0.61)
    ws = (rng.uniform(0.5, 1, O) * 2.0**-7).astype(np.float32)
    real = np.array([float(xs) * float(w) / float(ys) for w in ws])
    picks = []
    for c in range(O):  # accumulators whose two roundings differ, output within int16
        M, S = quantize_multiplier(real[c])
        acc = rng.integers(-127 * 32767, 127 * 32767, 2_000_000)
        exact = acc * real[c]
        away = np.sign(exact) * np.floor(np.abs(exact) + 0.5)
        pick = acc[(away != K.rshift_round(acc * M, 31 - S)) & (np.abs(away) < 32767)]
        picks.append(pick[:4])
    n = max(len(p) for p in picks)
    assert sum(len(p) for p in picks) >= 16
    w = np.zeros((O, 2 * O), np.int8)  # acc_c = 127 * x_2c + x_2c+1
    for c in range(O):
        w[c, 2 * c], w[c, 2 * c + 1] = 127, 1
    x = np.zeros((n, 1, 2 * O), np.int16)
    acc = np.zeros((n, 1, O), np.int64)
    for c, p in enumerate(picks):
        for j, v in enumerate(p):
            q, r = divmod(int(v), 127)
            x[j, 0, 2 * c], x[j, 0, 2 * c + 1], acc[j, 0, c] = q, r, v
    im = _fc16x8_model(xs, w, ws, np.zeros(O, np.int64), ys)
    im.tensors[0] = Tensor("x", (1, 1, 2 * O), "int16", im.tensors[0].quant)
    im.tensors[3] = Tensor("y", (1, 1, O), "int16", im.tensors[3].quant)
    got = MixedRun(im).run(x)
    exact = acc * real
    litert_form = np.sign(exact) * np.floor(np.abs(exact) + 0.5)
    requant1 = ALL_OPS[im.ops[0].kind].kernel(im, im.ops[0], [x, w, im.tensors[2].data])
    picked = np.zeros(acc.shape, bool)
    for c, p in enumerate(picks):
        picked[:len(p), 0, c] = True
    assert np.array_equal(got[picked], litert_form[picked])
    assert np.all(got[picked] != requant1[picked])  # the integer model's definition rounds these the other way


def test_int32_batch_matmul_matches_litert_reference():
    """The P x V planes' BATCH_MATMUL int8 x int8 -> int32: LiteRT's reference kernel sums the raw products (no zero
    point of either input, no requantization), and so does the kernel."""
    rng = np.random.default_rng(3)
    qp = lambda s, z: QuantParams(np.array([s], np.float32), np.array([z], np.int64))  # noqa: E731
    tensors = [Tensor("p", (1, 2, 65, 65), "int8", qp(2.0**-11, 0)), Tensor("v", (1, 2, 65, 16), "int8", qp(0.02, 11)),
               Tensor("y", (1, 2, 65, 16), "int32", qp(2.0**-11 * 0.02, 0))]
    im = IntModel(tensors, [Op("BATCH_MATMUL", [0, 1], [2], {"adj_x": False, "adj_y": False})], [0, 1], [2],
                  {"method": "test"})
    p = rng.integers(0, 128, (3, 2, 65, 65)).astype(np.int8)
    v = rng.integers(-128, 128, (3, 2, 65, 16)).astype(np.int8)
    run = MixedRun(im)
    for b in range(3):  # two activation inputs: MixedRun feeds the first only, so run the op's file directly
        it = run._interpreter(0)
        d = it.get_input_details()
        it.set_tensor(d[0]["index"], p[b:b + 1])
        it.set_tensor(d[1]["index"], v[b:b + 1])
        it.invoke()
        got = it.get_tensor(it.get_output_details()[0]["index"])
        assert got.dtype == np.int32 and np.array_equal(got, p[b:b + 1].astype(np.int64) @ v[b:b + 1].astype(np.int64))
    # V's zero point 11 is ignored by LiteRT (above) but applied by Vela on an Ethos-U: the integer model defines the
    # op with zero-point-0 inputs only (the lowering moves V's zero point into an int16 ADD) and refuses the rest
    with pytest.raises(ModelFileError, match="int32 BATCH_MATMUL with zero point 0 inputs"):
        ALL_OPS["BATCH_MATMUL"].kernel(im, im.ops[0], [p[:1], v[:1]])
    im.tensors[1] = Tensor("v", (1, 2, 65, 16), "int8", qp(0.02, 0))
    want = ALL_OPS["BATCH_MATMUL"].kernel(im, im.ops[0], [p[:1], v[:1]])
    assert want.dtype == np.int32 and np.array_equal(want, p[:1].astype(np.int64) @ v[:1].astype(np.int64))


@needs_vela
def test_vela_puts_every_mac_of_the_tiny_variant_on_the_npu(tiny, tmp_path):
    qm, _ = tiny
    path = tmp_path / "tiny-npu.tflite"
    path.write_bytes(to_tflite(lower(qm, npu=True)))
    r = vela.compile_report(path)
    assert r.macs_total > 0
    assert r.npu_mac_fraction >= 0.999, vela.format_report(r)
    assert r.ops_npu.get("FULLY_CONNECTED", 0) == 7  # q, k, v, proj, fc1, fc2, head
    assert set(r.ops_cpu) <= {"TSPTQ_LAYERNORM_2S_I16", "TSPTQ_ADD_2S", "TSPTQ_ADD_2S_I16", "TSPTQ_SOFTMAX_2S",
                              "TSPTQ_GELU_2S", "TSPTQ_BMM_2S"}, r.ops_cpu
    # and the default file leaves its TSPTQ_FC_2S MACs on the CPU
    path0 = tmp_path / "tiny.tflite"
    path0.write_bytes(to_tflite(lower(qm)))
    assert vela.compile_report(path0).npu_mac_fraction < 0.5


@pytest.mark.parametrize("args, message", [
    (["--bits", "W4A8"], "--npu ethos-u: the NPU variant is W8A8 only (Ethos-U's FULLY_CONNECTED takes 8-bit "
                         "weights and 8/16-bit activations), got W4A8"),
    (["--method", "tflite-converter"], "--npu applies to tsptq's own export"),
    (["--accelerator", "ethos-u99"], "--accelerator: unknown Ethos-U configuration 'ethos-u99'"),
    (["--method", "twin"], "--npu ethos-u: twin's sign-split GELU code has no NPU form"),
])
def test_cli_refusals_are_one_line(args, message, tmp_path, capsys):
    assert main(["export", "--npu", "ethos-u", "--quiet", "--out", str(tmp_path / "m.tflite"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "m.tflite").exists()


def test_npu_only_options_need_npu(tmp_path, capsys):
    assert main(["export", "--pv-on-cpu", "--quiet", "--out", str(tmp_path / "m.tflite")]) == 2
    assert "--pv-on-cpu, --accelerator, --residual and --layernorm apply to --npu only" in capsys.readouterr().err


def test_library_refuses_what_the_variant_cannot_hold(tiny_vits):
    cfg, graph, cal, _ = tiny_vits(8)
    with pytest.raises(QuantizationError, match="W8A8 only.*got W4A8"):
        lower(quantize(graph, cal, "tsptq", "W4A8", progress=False), npu=True)
    # a headless model: its final LayerNorm would be the output, as an int16 decoded value
    import dataclasses

    headless = quantize(graph, cal, "minmax", progress=False)
    headless.graph = dataclasses.replace(graph, cfg=dataclasses.replace(cfg, num_classes=0))
    with pytest.raises(QuantizationError, match="without a classifier head have no NPU variant yet"):
        lower(headless, npu=True)


def test_a_vela_failure_writes_nothing(tmp_path, monkeypatch):
    """Vela compiles a staged copy: when it fails, neither the variant nor a report is written, and an earlier
    run's report beside it is left as it was."""
    from tsptq.errors import TsptqError
    from tsptq.intmodel.integer import Source
    from tsptq.npu.export import export_npu

    def fail(*a, **k):
        raise TsptqError("m.tflite: Vela failed: RuntimeError: Compilation failed")

    monkeypatch.setattr(vela, "vela_version", lambda: "5.2.0")
    monkeypatch.setattr(vela, "compile_report", fail)
    (tmp_path / "m_npu.json").write_text("{}")
    with pytest.raises(TsptqError, match="Vela failed"):
        export_npu(Source(model="fashion-vit", calib_images=2), tmp_path / "m.tflite", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m_npu.json"]
    assert (tmp_path / "m_npu.json").read_text() == "{}"


@needs_vela
def test_cli_export_npu_writes_the_variant_the_compiled_file_and_the_report(tmp_path, capsys):
    """`tsptq export --npu ethos-u` on fashion-vit (4 blocks, 16 patches): the variant, Vela's compiled file, CSVs
    and the JSON report beside it; at least 95% of the MACs on the NPU (the FCs, q.k^T and the P x V planes)."""
    import json

    out = tmp_path / "fashion-npu.tflite"
    assert main(["export", "--model", "fashion-vit", "--npu", "ethos-u", "--calib-images", "8", "--quiet",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "the NPU variant" in text and "MACs on the NPU" in text
    assert (tmp_path / "fashion-npu_vela.tflite").stat().st_size > 0
    report = json.loads((tmp_path / "fashion-npu_npu.json").read_text())
    assert report["npu_mac_fraction"] >= 0.95, report
    assert "TSPTQ_FC_2S" not in report["ops_cpu"] and report["ops_npu"]["FULLY_CONNECTED"] == 4 * 6 + 1
    # the default form: the residual adds and the blocks' LayerNorms on the NPU, their row statistics on the CPU
    assert not {"TSPTQ_ADD_2S", "TSPTQ_ADD_2S_I16", "TSPTQ_LAYERNORM_2S_I16"} & set(report["ops_cpu"]), report
    assert report["ops_cpu"]["TSPTQ_LN_RSTD"] == 2 * 4 + 1 and report["ops_npu"]["ADD"] >= 2 * 4
    from tsptq.npu.graph_ops import parse_model

    assert parse_model(out.read_bytes()).metadata is not None  # a TFLite file the schema reads


@needs_vela
def test_cli_export_npu_with_a_uniform_softmax_code_runs_attention_x_v_as_one_int8_matmul(tmp_path, capsys):
    """`tsptq export --npu ethos-u --method tsptq-no-v2sf-softmax` (the uniform-P variant, docs/npu.md): with no
    two-scale P there are no planes and no CPU sum; attention x V is one builtin int8 BATCH_MATMUL per block, on the
    NPU with q.k^T, and the command says so."""
    import json

    out = tmp_path / "fashion-up.tflite"
    assert main(["export", "--model", "fashion-vit", "--npu", "ethos-u", "--method", "tsptq-no-v2sf-softmax",
                 "--calib-images", "8", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "attention x V one int8 BATCH_MATMUL (a uniform Softmax code)" in text
    report = json.loads((tmp_path / "fashion-up_npu.json").read_text())
    assert report["npu_mac_fraction"] == 1.0, report
    assert report["ops_npu"]["BATCH_MATMUL"] == 2 * 4  # q.k^T and P x V of the 4 blocks
    assert not {"TSPTQ_PLANE_2S", "TSPTQ_PV_SUM_2S", "TSPTQ_BMM_2S"} & set(report["ops_cpu"]), report["ops_cpu"]


def test_the_uniform_p_variant_computes_its_default_files_bytes_in_litert_too(tiny_vits):
    """`--method tsptq-no-v2sf-softmax` (docs/npu.md's uniform-P variant): attention x V is the builtin int8
    BATCH_MATMUL of the default file, so the variant gives the bytes of the default file of the same quantization,
    with every builtin run by LiteRT's reference kernels too."""
    cfg, graph, cal, imgs = tiny_vits(8)
    qm = quantize(graph, cal, "tsptq-no-v2sf-softmax", progress=False)
    default, im = lower(qm), lower(qm, npu=True)
    x = default.quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())
    kinds = [o.kind for o in im.ops]
    assert "BATCH_MATMUL" in kinds and not {"TSPTQ_PLANE_2S", "TSPTQ_PV_SUM_2S", "TSPTQ_BMM_2S"} & set(kinds)
    want = default.run(x)
    assert np.array_equal(im.run(x), want)
    assert np.array_equal(MixedRun(im).run(x, check=True), want)


def test_cli_residual_code_writes_the_form_with_the_default_files_bytes(tmp_path, capsys):
    """`--residual code` opts out of the default int16 residual stream: the first step's form, whose integer model
    (rebuilt from the file's recorded source) computes the default file's bytes, LayerNorms and adds on the CPU."""
    from tsptq.npu.graph_ops import op_type, parse_model
    from tsptq.npu.tflm import file_int_model, file_metadata

    out = tmp_path / "code.tflite"
    assert main(["export", "--model", "fashion-vit", "--npu", "ethos-u", "--residual", "code", "--calib-images", "8",
                 "--quiet", "--out", str(out)]) == 0
    assert "int16 residual" not in capsys.readouterr().out
    data = out.read_bytes()
    m = parse_model(data, out.name)
    meta = file_metadata(m)
    assert "residual" not in meta and "layernorm" not in meta
    kinds = {op_type(m, op) for op in m.subgraphs[0].operators}
    assert "TSPTQ_LAYERNORM_2S_I16" in kinds and not {"TSPTQ_LN_RSTD", "DEPTHWISE_CONV_2D"} & kinds
    im, how = file_int_model(data, out.name)  # the variant rebuilt from the recorded source writes these bytes
    assert "the file's bytes" in how
    from tsptq.intmodel.integer import Source, build

    im0, _ = build(Source(**meta["source"]), progress=False)  # the default file of the same calibration
    shape = im0.tensors[im0.inputs[0]].shape
    x = np.random.default_rng(0).integers(-128, 128, size=(2, *shape[1:]), dtype=np.int8)
    assert np.array_equal(im.run(x), im0.run(x))
