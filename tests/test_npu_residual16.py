"""The NPU variant with an int16 residual stream (``tsptq export --npu ethos-u --residual int16``, issue 18).

The residual stream (every LayerNorm input) and the branch outputs that add into it are int16 tensors with zero point
0, and the residual adds are builtin int16 ADDs (LiteRT's general form, ``pot_scale_int16`` off), which Vela maps to
the NPU. The checks:

- the int16 ADD of the integer model (``kernels.add`` with left shift 15) is LiteRT's reference kernel, byte for byte,
  at scales of every kind (near powers of two included, where LiteRT would take another form with the flag on);
- the variant in LiteRT's reference kernels (builtins) plus the Python custom kernels gives ``IntModel.run``'s bytes;
- the branch FCs' multipliers are exact (why LiteRT, which multiplies in double, and requant1 agree there);
- the grid of each residual point holds its 8-bit code's whole range;
- Vela puts every residual add on the NPU; the CLI writes it and refuses ``--residual`` without ``--npu``.
"""
from __future__ import annotations

import numpy as np
import pytest

from tsptq.cli.main import main as cli_main
from tsptq.data import datasets
from tsptq.intmodel import kernels as K
from tsptq.intmodel.lower import lower, residual16_scale
from tsptq.intmodel.ops import _conv_fc_multipliers
from tsptq.npu import vela
from tsptq.npu.litert_check import MixedRun
from tsptq.quant.quantize import quantize
from tsptq.quant.quantizers import ChannelPow2, Uniform
from tsptq.tflite.writer import to_tflite

from int16_add_model import add16_model

litert = pytest.importorskip("ai_edge_litert.interpreter")
needs_vela = pytest.mark.skipif(vela.vela_version() is None,
                                reason=f"ethos-u-vela is not importable (the 'npu' extra: {vela.INSTALL_HINT})")

RESIDUAL_POINTS = ("in", "mid")


@pytest.mark.parametrize("sa,sb,sy", [
    (0.0123, 0.0071, 0.0150),          # plain scales
    (2.0**-7, 2.0**-5, 2.0**-6),       # powers of two: with the flag on LiteRT would shift instead
    (0.25 * 1.0004, 0.5, 0.5 * 0.9997),  # within 1e-3 of a power of two in log2
    (0.0031, 0.0031, 0.0007),          # a fine output: saturates
    (1e-3, 0.9, 0.05),                 # one operand far smaller than the other
])
def test_int16_add_is_litert_reference_byte_for_byte(sa, sb, sy):
    rng = np.random.default_rng(int(sa * 1e6) % 1000)
    im = add16_model(sa, sb, sy)
    a = rng.integers(-32768, 32768, (6, 5, 48)).astype(np.int16)
    b = rng.integers(-32768, 32768, (6, 5, 48)).astype(np.int16)
    a[0], b[0] = rng.integers(-40, 41, (5, 48)), rng.integers(-40, 41, (5, 48))  # small values: ties of the rescale
    a[1, 0], b[1, 0] = 32767, 32767
    a[1, 1], b[1, 1] = -32768, -32768
    run = MixedRun(im)
    got = []
    for i in range(len(a)):  # MixedRun.run feeds one graph input; this file has two, so both are set here
        vals = {0: a[i:i + 1], 1: b[i:i + 1]}
        it = run._interpreter(0)
        for d, t in zip(it.get_input_details(), (0, 1)):
            it.set_tensor(d["index"], vals[t])
        it.invoke()
        got.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
    got = np.concatenate(got)
    params = K.add_params(np.float32(sa), np.float32(sb), np.float32(sy), left_shift=15)
    want = K.add(a, 0, b, 0, params, 0, left_shift=15, dtype=np.int16)
    assert got.dtype == want.dtype == np.int16 and np.array_equal(got, want)
    if sy == 0.0007:
        assert np.any(np.abs(want) == 32767) or np.any(want == -32768)


def test_int16_add_with_the_flag_on_and_unequal_scales_is_refused():
    """LiteRT's power-of-two form is not what the integer model defines: a file that asks for it is refused."""
    from tsptq.errors import ModelFileError
    from tsptq.intmodel.ops import ALL_OPS

    im = add16_model(0.25, 0.5, 0.5)
    im.ops[0].options["pot_scale_int16"] = True
    with pytest.raises(ModelFileError, match="equal scales"):
        ALL_OPS["ADD"].kernel(im, im.ops[0], [np.zeros((1, 5, 48), np.int16)] * 2)


@pytest.fixture(scope="module")
def tiny16(tiny_vits):
    from test_npu_variant import _forge_two_scale_codes

    cfg, graph, cal, imgs = tiny_vits(8)
    qm = _forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False))
    D = cfg.embed_dim
    # an O-2SF residual code with outlier channels on block 0's input, so a per-channel code becomes one int16 grid
    u = qm.acts["blocks.0.in"]
    qm.acts["blocks.0.in"] = ChannelPow2(float(u.base_scale), int(getattr(u, "zero_point", 0)),
                                         [3 if c % 7 == 0 else 0 for c in range(D)])
    x = lower(qm).quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())
    return qm, x


def test_the_residual_stream_is_int16_and_its_adds_are_builtins(tiny16):
    qm, _ = tiny16
    im = lower(qm, npu=True, residual16=True)
    kinds = [o.kind for o in im.ops]
    assert "TSPTQ_ADD_2S" not in kinds and "TSPTQ_ADD_2S_I16" not in kinds
    assert im.metadata["residual"] == "int16"
    depth = qm.graph.cfg.depth
    points = [f"blocks.{i}.{p}" for i in range(depth) for p in RESIDUAL_POINTS] + ["norm.in"]
    for p in points:
        t = im.tensor(p)
        assert t.dtype == "int16" and t.zp == 0 and t.n_scales == 1, p
        producer = next(o for o in im.ops if im.tensors[o.outputs[0]].name == p)
        assert producer.kind == "ADD" and producer.options["pot_scale_int16"] is False
        assert all(im.tensors[i].dtype == "int16" for i in producer.inputs)
    for o in im.ops:  # every LayerNorm reads an int16 residual tensor
        if o.kind == "TSPTQ_LAYERNORM_2S_I16":
            assert im.tensors[o.inputs[0]].dtype == "int16" and o.options["in_zp"] == 0
            assert not np.any(im.tensors[o.inputs[1]].data)


def test_residual16_variant_in_litert_reference_kernels_is_byte_identical(tiny16):
    qm, x = tiny16
    im = lower(qm, npu=True, residual16=True)
    got = MixedRun(im).run(x, check=True)  # check: every builtin op's LiteRT output = its Python kernel's
    assert got.dtype == np.int8 and np.array_equal(got, im.run(x))


def test_branch_fc_multipliers_are_exact(tiny16):
    """LiteRT's reference 16x8 FULLY_CONNECTED multiplies the accumulator by the real multiplier in double; the integer
    model uses the 31-bit one. On a branch FC of the int16 residual stream the two are the same number."""
    qm, _ = tiny16
    im = lower(qm, npu=True, residual16=True)
    branches = [o for o in im.ops if o.kind == "FULLY_CONNECTED_16X8"
                and im.tensors[o.outputs[0]].name.endswith((".proj", ".fc2"))]
    assert len(branches) == 2 * qm.graph.cfg.depth
    for o in branches:
        x, w, y = (im.tensors[i] for i in (o.inputs[0], o.inputs[1], o.outputs[0]))
        mult, shift = _conv_fc_multipliers(im, o)
        real = float(x.quant.scale[0]) * w.quant.scale.astype(np.float64) / float(y.quant.scale[0])
        assert np.array_equal(np.ldexp(mult.astype(np.float64), shift - 31), real)


@pytest.mark.parametrize("code", [Uniform(0.02, -17, 8), Uniform(0.5, 100, 8), ChannelPow2(0.01, 5, [0, 2, 7, 1])])
def test_the_int16_grid_holds_the_codes_range(code):
    channels = 4
    step = residual16_scale(code, channels)
    if isinstance(code, ChannelPow2):
        steps = 0.01 * 2.0 ** np.array([0, 2, 7, 1])
        zp = 5
    else:
        steps, zp = np.array([float(code.scale)]), int(code.zero_point)
    widest = np.abs(np.outer(steps, [-128 - zp, 127 - zp])).max()
    assert widest / step <= 32767.5            # nothing of the code's range saturates
    assert widest / step >= 32766              # and the grid is the finest that holds it


def test_residual16_refused_outside_the_npu_variant(tiny16):
    from tsptq.errors import QuantizationError

    qm, _ = tiny16
    with pytest.raises(QuantizationError, match="NPU variant"):
        lower(qm, residual16=True)


@needs_vela
def test_vela_puts_every_residual_add_on_the_npu(tiny16, tmp_path):
    qm, _ = tiny16
    im = lower(qm, npu=True, residual16=True)
    path = tmp_path / "r16.tflite"
    path.write_bytes(to_tflite(im))
    r = vela.compile_report(path)
    adds = sum(1 for o in im.ops if o.kind == "ADD")
    assert r.ops_npu.get("ADD", 0) == adds and "ADD" not in r.ops_cpu
    assert not any(k.startswith("TSPTQ_ADD") for k in r.ops_cpu)
    assert r.npu_mac_fraction == 1.0


def test_cli_residual_needs_npu(tmp_path, capsys):
    assert cli_main(["export", "--model", "cifar10-vit", "--residual", "int16", "--out", str(tmp_path / "m.tflite"),
                     "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--residual" in err[0] and "--npu" in err[0]
    assert not (tmp_path / "m.tflite").exists()


def _decoded(t, v) -> np.ndarray:
    """Real values of an integer tensor (per-channel steps along the last axis)."""
    scale = t.quant.scale.astype(np.float64)
    return (v.astype(np.float64) - t.quant.zero_point.astype(np.float64)) * scale


def test_the_int16_stream_stays_within_a_step_of_the_default_files(tiny16):
    """The int16 residual stream computes what the default file's 8-bit code does, on a finer grid: at the first
    residual point (the same inputs) within half a code step plus half an int16 step, further on within a few code
    steps (the finer grid's differences propagate), wherever the 8-bit code does not saturate (the int16 grid covers
    the widest channel's range on every channel); each LayerNorm's eps is on the int16 step."""
    qm, x = tiny16
    d, r = lower(qm), lower(qm, npu=True, residual16=True)
    _, dv = d.run(x, keep=True)
    _, rv = r.run(x, keep=True)
    depth = qm.graph.cfg.depth
    for p in [f"blocks.{i}.{q}" for i in range(depth) for q in RESIDUAL_POINTS] + ["norm.in"]:
        td, tr = d.tensor(p), r.tensor(p)
        i_d, i_r = d.tensors.index(td), r.tensors.index(tr)
        diff = np.abs(_decoded(td, dv[i_d]) - _decoded(tr, rv[i_r]))
        step = td.quant.scale.astype(np.float64)  # the default code's channel steps
        bound = 0.5 * step + 0.5 * float(tr.quant.scale[0]) + 1e-9 if p == "blocks.0.in" else 4 * step
        inside = (dv[i_d] > -128) & (dv[i_d] < 127)  # where the 8-bit code saturates the int16 grid need not
        if p == "blocks.0.in":
            assert inside.mean() > 0.9 and np.all((diff <= bound) | ~inside), (p, float((diff / step)[inside].max()))
        else:  # a token whose residual saturated upstream differs further on: bound the bulk
            ratio = (diff / step)[inside]
            assert np.median(ratio) <= 0.5 and np.percentile(ratio, 99) <= 4, (p, np.percentile(ratio, [50, 99]))
    ln_eps = qm.graph.cfg.ln_eps
    for o in r.ops:
        if o.kind == "TSPTQ_LAYERNORM_2S_I16":
            xt = r.tensors[o.inputs[0]]
            D = xt.shape[-1]
            assert o.options["eps"] == min(round(D * D * ln_eps / float(xt.quant.scale[0]) ** 2), 2**62)


def test_a_token_avg_head_with_an_int16_residual_stream_in_litert(tiny_vits):
    """dinov2-s14's head ([class token, patch-token mean] of the final LayerNorm) on an int16 residual stream."""
    from test_npu_variant import _forge_two_scale_codes
    from tiny_vit import tiny_vit

    cfg, graph, cal, imgs = tiny_vit(8, global_pool="token+avg")
    qm = _forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False))
    im = lower(qm, npu=True, residual16=True)
    assert "TSPTQ_TOKEN_MEAN_I16" in {o.kind for o in im.ops} and im.tensor("norm.in").dtype == "int16"
    x = im.quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())
    assert np.array_equal(MixedRun(im).run(x, check=True), im.run(x))


def test_the_file_writes_version_3_for_the_general_int16_add_and_no_dead_constant(tiny16):
    from ai_edge_litert import schema_py_generated as S

    qm, _ = tiny16
    im = lower(qm, npu=True, residual16=True)
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(to_tflite(im), 0))
    g = m.subgraphs[0]
    versions = {}
    for op in g.operators:
        oc = m.operatorCodes[op.opcodeIndex]
        if oc.builtinCode == S.BuiltinOperator.ADD:
            pot = op.builtinOptions.potScaleInt16
            versions.setdefault(pot, set()).add(oc.version)
    assert versions[False] == {3}
    used = {i for op in g.operators for i in list(op.inputs) + list(op.outputs)}
    assert all(i in used for i in range(len(g.tensors)))  # the position embedding is written once, as int16
    assert im.tensor("pos_embed").dtype == "int16"


def test_bad_int16_files_are_refused_in_one_line(tiny16):
    from tsptq.errors import ModelFileError
    from tsptq.intmodel.ops import ALL_OPS

    im = add16_model(0.5, 0.5, 1e-6)  # output multiplier 2 * 0.5 / (2^15 * 1e-6) >= 1
    with pytest.raises(ModelFileError, match="output multiplier"):
        ALL_OPS["ADD"].kernel(im, im.ops[0], [np.zeros((1, 5, 48), np.int16)] * 2)
    qm, x = tiny16
    r = lower(qm, npu=True, residual16=True)
    ln = next(o for o in r.ops if o.kind == "TSPTQ_LAYERNORM_2S_I16")
    ln.options["in_zp"] = 3
    with pytest.raises(ModelFileError, match="in_zp 0"):
        r.run(x[:1])


def test_cli_export_records_the_form_and_tflm_rebuilds_it(tmp_path, capsys):
    from tsptq.npu.tflm import file_int_model, file_metadata
    from tsptq.npu.graph_ops import parse_model

    out = tmp_path / "r16.tflite"
    assert cli_main(["export", "--model", "cifar10-vit", "--npu", "ethos-u", "--residual", "int16", "--layernorm",
                     "cpu", "--pv-on-cpu", "--out", str(out), "--quiet"]) == 0
    assert "an int16 residual stream" in capsys.readouterr().out
    data = out.read_bytes()
    assert file_metadata(parse_model(data, out.name))["residual"] == "int16"
    im, how = file_int_model(data, out.name)  # rebuilt from the recorded source: must write these bytes
    assert "the file's bytes" in how and im.metadata["residual"] == "int16"


def test_deploy_residual_needs_npu(capsys):
    from tsptq.cli.deploy import main as deploy_main

    assert deploy_main(["--target", "corstone-300", "--build-only", "--residual", "int16", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--residual and --layernorm apply to --npu only" in err[0]
