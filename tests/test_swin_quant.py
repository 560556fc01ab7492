"""Swin in the quantization simulator (tsptq.quant.qswin): the graph's forward is the model's, every method fits
and runs on it, W8A8 stays close to FP32, diagnose's budget runs on it; the CLI exports, verifies and deploys its
integer model (tests/test_swin_integer.py tests that model), and what covers the ViT layout only (the faithful
simulator, the NPU variant, the stock converter) refuses a Swin in one line."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tsptq.data.datasets import ImageSet, to_model_input
from tsptq.errors import QuantizationError, TsptqError
from tsptq.model.swin import MASK_VALUE, SwinConfig, SwinTransformer
from tsptq.quant.methods import METHODS
from tsptq.quant.observers import record
from tsptq.quant.qswin import NO_FAITHFUL, SwinGraph
from tsptq.quant.qvit import FloatHook
from tsptq.quant.quantize import quantize

NORM = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)
# 16x16 patches, window 4: both stages' odd blocks are shifted (the mask is exercised), patch merging between them.
SHIFTED = SwinConfig(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
                     num_classes=10, **NORM)
# The last stage's 4x4 grid is one window (no shift there); three stages, two patch mergings.
ONE_WINDOW = SwinConfig(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2, 1, 1), num_heads=(2, 2, 4),
                        num_classes=10, **NORM)
# A 12x12 grid in windows of 5: padded to whole windows (and shifted) in stage 0, 6x6 padded to 10x10 in stage 1.
PADDED = SwinConfig(img_size=24, patch_size=2, window_size=5, embed_dim=16, depths=(2, 2), num_heads=(2, 2),
                    num_classes=10, **NORM)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tensors this small run 10x slower on two threads of a loaded machine than on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(cfg: SwinConfig = SHIFTED) -> SwinTransformer:
    torch.manual_seed(0)
    model = SwinTransformer(cfg).eval()
    with torch.no_grad():  # non-trivial norms, biases and position-bias tables
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def images(n: int, size: int = 32, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    return ImageSet(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 10, "random")


@pytest.fixture(scope="module")
def swin():
    return tiny()


@pytest.fixture(scope="module")
def calib():
    return images(8)


@pytest.fixture(scope="module")
def x():
    return to_model_input(images(8, seed=1).images, SHIFTED)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=-1).mean())


@pytest.mark.parametrize("cfg", [SHIFTED, ONE_WINDOW, PADDED], ids=["shifted", "one-window", "padded"])
def test_identity_hook_forward_is_the_model(cfg):
    model = tiny(cfg)
    graph = SwinGraph.from_model(model)
    x = to_model_input(images(3, cfg.img_size).images, cfg)
    with torch.no_grad():
        assert torch.allclose(graph.forward(x, FloatHook()), model(x), atol=1e-5)
    shifted = {b.name for stage in graph.stages for b in stage if b.shift}
    assert set(graph.masks) == shifted
    assert shifted == ({"layers.0.blocks.1", "layers.1.blocks.1"} if cfg is not ONE_WINDOW else {"layers.0.blocks.1"})


def test_points_and_their_consumers_are_found_from_the_names(swin):
    graph = SwinGraph.from_model(swin)
    points = dict(graph.points())
    assert len(points) == len(graph.points())  # no name twice
    for layer in graph.linears:  # every linear reads a point
        assert graph.linear_input(layer) in points
    for name, kind in points.items():
        if kind == "residual":  # every LayerNorm input has its LayerNorm
            assert graph.consumer_norm(name) in graph.norms
        if kind in ("gelu", "norm_out") and name != "norm":
            assert graph.linear_input(graph.consumer_linear(name)) == name
    assert points["patch_embed"] == "residual" and graph.consumer_norm("patch_embed") == "patch_embed.norm"
    # patch merging: its LayerNorm input is stored before the 2x2 gather, the LayerNorm reads four neighbours' channels
    assert points["layers.1.downsample.in"] == "residual" and points["layers.1.downsample.norm"] == "norm_out"
    assert graph.consumer_norm("layers.1.downsample.in") == "layers.1.downsample.norm"
    assert graph.consumer_linear("layers.1.downsample.norm") == "layers.1.downsample.reduction"
    t = torch.randn(2, 16, 16, 16)
    assert graph.norm_input("layers.1.downsample.in", t).shape == (2, 8, 8, 64)
    assert graph.norms["layers.1.downsample.norm"][0].shape == (64,)
    # the units block-output selection scores: each ends at the point that stores the residual stream
    assert [(name, target) for name, _, target in graph.units()] == [
        ("embed", "layers.0.blocks.0.in"), ("layers.0.blocks.0", "layers.0.blocks.1.in"),
        ("layers.0.blocks.1", "layers.1.downsample.in"), ("layers.1.downsample", "layers.1.blocks.0.in"),
        ("layers.1.blocks.0", "layers.1.blocks.1.in"), ("layers.1.blocks.1", "norm.in"), ("final", None)]
    assert {graph.unit_of(p) for p in points} == {name for name, _, _ in graph.units()}


def test_position_bias_is_in_the_scores_code_and_the_mask_is_not(swin, calib):
    """The bias is added before the scores point (one rounding of q.k^T/sqrt(d) + B in the integer model), the mask
    after it: the scores' range never holds the -100, and the masked pairs still get no probability."""
    graph = SwinGraph.from_model(swin)
    t = record(graph, calib, 8, False).tensors
    p = "layers.0.blocks.1"
    q, k = t[f"{p}.q"], t[f"{p}.k"]
    expected = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5) + graph.consts[f"{p}.rel_bias"]
    assert torch.allclose(t[f"{p}.scores"], expected, atol=1e-5)
    assert float(t[f"{p}.scores"].min()) > MASK_VALUE / 10
    masked = (graph.masks[p] < 0).expand_as(t[f"{p}.softmax"])
    assert masked.any() and float(t[f"{p}.softmax"][masked].max()) < 1e-30
    qm = quantize(graph, calib, "minmax", progress=False)
    assert float(qm.acts[f"{p}.scores"].scale) < 0.1  # 8 bits over the scores' own range, not over -100
    assert set(qm.consts) == {name for name in graph.consts if name.endswith(".rel_bias")}
    assert all(c.bits == 8 for c in qm.consts.values())


def test_o2sf_at_patch_merging_is_scored_through_the_merged_layernorm(calib):
    """An outlier channel in the stream entering patch merging gets its own shift, one per stored channel, and the
    code beats the uniform one on the 4C-wide LayerNorm's output (the consumer error reads the 2x2 gather)."""
    from tsptq.quant import search

    model = tiny()
    with torch.no_grad():  # channel 3 of stage 0's output: a wide-ranging outlier
        model.layers[0].blocks[1].mlp.fc2.weight[3] *= 60
    graph = SwinGraph.from_model(model)
    cal = record(graph, calib, 8, False)
    qm = quantize(graph, cal, "tsptq-local", progress=False)
    code = qm.acts["layers.1.downsample.in"]
    assert code.to_dict()["kind"] == "channel_pow2"
    shifts = code.shifts.tolist()
    assert len(shifts) == SHIFTED.embed_dim and shifts[3] > 0 and not any(shifts[:3] + shifts[4:])
    x = cal.tensors["layers.1.downsample.in"]
    rows = graph.norm_input("layers.1.downsample.in", x).reshape(-1, 4 * SHIFTED.embed_dim)
    err = search.layernorm_output_error(rows, *graph.norms["layers.1.downsample.norm"], SHIFTED.ln_eps)
    # measured: 1.85 against 7.21
    assert err(code.fake(rows.reshape(-1, SHIFTED.embed_dim))) < err(search.minmax(x, 8).fake(rows)) / 2


@pytest.mark.parametrize("method", [m for m in METHODS if m != "fp32"])
def test_every_method_fits_every_point_and_runs_deterministically(swin, calib, x, method):
    graph = SwinGraph.from_model(swin)
    cal = record(graph, calib, 8, False)
    if METHODS[method].bias_correction:  # the ViT layout only: refused in one line
        with pytest.raises(QuantizationError, match=f"^{method}: bias correction covers the ViT layout only"):
            quantize(graph, cal, method, progress=False)
        return
    a = quantize(graph, cal, method, progress=False)
    b = quantize(SwinGraph.from_model(swin), record(SwinGraph.from_model(swin), calib, 8, False), method,
                 progress=False)
    assert set(a.acts) == {name for name, _ in graph.points()}
    assert {k: v.to_dict() for k, v in a.acts.items()} == {k: v.to_dict() for k, v in b.acts.items()}
    assert {k: v.to_dict() for k, v in a.weights.items()} == {k: v.to_dict() for k, v in b.weights.items()}
    ya, yb = a(x), b(x)
    assert torch.equal(ya, yb) and torch.isfinite(ya).all()
    if method == "tsptq":  # what --device cuda does to the simulator state (here onto the CPU again)
        from tsptq.evaluation.engines import _to_device

        assert torch.equal(_to_device(a, "cpu")(x), ya)
    if method in ("tsptq", "tsptq-no-v2sf-gelu"):  # the O-2SF code of patch merging's input: one shift per channel
        code = a.acts["layers.1.downsample.in"].to_dict()
        assert code["kind"] != "channel_pow2" or len(code["shifts"]) == SHIFTED.embed_dim


def test_w8a8_is_close_to_fp32_and_w4a4_minmax_is_not(swin, calib, x):
    # Measured on this model and these images: logit cosine to FP32 0.99954 (minmax W8A8), 0.99960 (tsptq W8A8),
    # 0.916 (minmax W4A4): the thresholds leave room for platform noise, and the last two would fail if the
    # simulator stopped quantizing (a W4A4 that matched FP32 as well as W8A8).
    with torch.no_grad():
        ref = swin(x)
    cal = record(SwinGraph.from_model(swin), calib, 8, False)
    graph = SwinGraph.from_model(swin)
    cos = {(m, bits): cosine(quantize(graph, cal, m, bits, progress=False)(x), ref)
           for m, bits in [("tsptq", "W8A8"), ("minmax", "W8A8"), ("minmax", "W4A4")]}
    assert cos["tsptq", "W8A8"] > 0.999 and cos["minmax", "W8A8"] > 0.999
    assert cos["minmax", "W4A4"] < 0.98
    assert 1 - cos["minmax", "W4A4"] > 20 * (1 - cos["minmax", "W8A8"])


def test_evaluate_runs_every_main_method_in_the_float32_simulator(swin, calib):
    from tsptq.evaluation.evaluate import evaluate

    ev = images(6, seed=2)
    result = evaluate(swin, calib, ev, ["fp32", "minmax", "tsptq"], engine="float32", workers=1, progress=False,
                      timings=False)
    rows = {r["method"]: r for r in result.rows}
    assert rows["fp32"]["cosine_min"] == pytest.approx(1.0) and rows["fp32"]["agreement"] == 100.0
    assert rows["minmax"]["engine"] == rows["tsptq"]["engine"] == "float32"
    assert rows["tsptq"]["cosine_mean"] > 0.99  # the pooled final-norm features, what the head reads
    with pytest.raises(TsptqError, match=r"^--engine faithful: Swin: the faithful simulator covers the ViT layout"):
        evaluate(swin, calib, ev, ["fp32", "minmax"], engine="faithful", workers=1, progress=False)
    assert evaluate(swin, calib, ev, ["fp32"], engine="faithful", workers=1, progress=False).rows[0]["method"] == "fp32"


def test_the_error_budget_runs_unit_by_unit(swin, calib):
    from tsptq.evaluation import diagnose as dg

    qm = quantize(swin, calib, "tsptq", progress=False)
    blocks = dg.units(qm, "block")
    assert [(u.name, u.first_block) for u in blocks] == [
        ("embed", -1), ("layers.0.blocks.0", 0), ("layers.0.blocks.1", 1), ("layers.1.downsample", 2),
        ("layers.1.blocks.0", 3), ("layers.1.blocks.1", 4), ("final", 5)]
    assert set(blocks[1].consts) == {"layers.0.blocks.0.rel_bias"}
    roles = {u.name: u for u in dg.units(qm, "role")}
    assert set(roles["rel_bias"].consts) == {n for n in qm.consts} and len(roles["norm1"].points) == 4
    batches = [to_model_input(images(4, seed=3).images, SHIFTED)]
    runs = dg._Runs(qm, batches)
    everything = (set(qm.acts), set(qm.weights), set(qm.consts))
    rest = (everything[0] - {"layers.1.blocks.0.gelu"}, everything[1] - {"layers.1.blocks.0.fc2"}, everything[2])
    for start in (3, 4):  # unit 3 holds the left-out points; unit 4 starts after them (and must differ)
        cached, whole = runs.run(*rest, start, runs.quant), runs.run(*rest, -1, runs.quant)
        assert all((a == b).all() for a, b in zip(cached, whole)) == (start == 3)
    result = dg.diagnose(qm, batches, "point", progress=False)
    assert len(result["units"]) == len(qm.acts) + len(qm.weights) + len(qm.consts)
    assert result["quantized"]["agreement"] == 100.0 and result["quantized"]["cosine_mean"] > 0.99


def test_what_swin_still_lacks_is_refused_in_one_line(swin, calib, tmp_path):
    """Swin has an integer model (tests/test_swin_integer.py); the faithful simulator, the NPU variant and the stock
    converter's export cover the ViT layout only."""
    from tsptq.evaluation.engines import resolve
    from tsptq.evaluation.stock_converter import convert
    from tsptq.intmodel.faithful import applies
    from tsptq.intmodel.integer import Source, build
    from tsptq.intmodel.lower import lower

    qm = quantize(swin, calib, "tsptq", progress=False)
    assert not applies(qm)
    assert NO_FAITHFUL == ("Swin: the faithful simulator covers the ViT layout only (issue 19); --engine c runs "
                           "Swin's integer model, --engine float32 the simulator")
    runner, note = resolve(qm, "faithful")
    assert runner.engine == "float32" and note == NO_FAITHFUL
    with pytest.raises(QuantizationError, match="^--npu ethos-u: Swin has no NPU variant yet"):
        lower(qm, npu=True)
    with pytest.raises(TsptqError, match="^Swin: the stock converter's export .* covers the ViT layout only"):
        convert(swin, calib, tmp_path / "stock.tflite")
    assert not (tmp_path / "stock.tflite").exists()
    path = tmp_path / "swin.safetensors"
    save_file({k: v.contiguous() for k, v in swin.state_dict().items()}, path,
              metadata={"tsptq_config": json.dumps(swin.cfg.to_dict())})
    with pytest.raises(QuantizationError, match="^--npu ethos-u: Swin has no NPU variant yet"):  # before calibrating
        build(Source(model=None, checkpoint=str(path), data="bundled", calib_images=2), progress=False, npu=True)


def test_cli_evaluates_exports_and_verifies_a_swin(swin, tmp_path, capsys):
    from tsptq.cli.main import main
    from tsptq.tflite.reader import read_tflite

    path = tmp_path / "swin.safetensors"
    save_file({k: v.contiguous() for k, v in swin.state_dict().items()}, path,
              metadata={"tsptq_config": json.dumps(swin.cfg.to_dict())})
    args = ["--checkpoint", str(path), "--data", "bundled", "--calib-images", "2", "--quiet"]
    ev = ["eval", *args, "--eval-images", "6", "--workers", "1"]
    assert main(ev + ["--methods", "fp32,minmax", "--engine", "float32", "--json", str(tmp_path / "out.json")]) == 0
    rows = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [(r["method"], r["engine"]) for r in rows] == [("fp32", "-"), ("minmax", "float32")]
    capsys.readouterr()
    assert main(ev + ["--methods", "fp32,tsptq", "--engine", "faithful"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"tsptq: error: --engine faithful: {NO_FAITHFUL}"]
    out = tmp_path / "swin.tflite"
    assert main(["export", *args, "--out", str(out)]) == 0
    kinds = {op.kind for op in read_tflite(out).ops}
    assert {"TSPTQ_BMM_BIAS", "TSPTQ_SOFTMAX_MASK_2S"} <= kinds and "CONV_2D" not in kinds
    capsys.readouterr()
    assert main(["verify", str(out), "--quiet", "--eval-images", "20"]) == 0  # rebuilt byte for byte from its source
    assert "output bytes equal to the in-memory integer model: yes" in capsys.readouterr().out
    assert main(["export", *args, "--npu", "ethos-u", "--out", str(tmp_path / "npu.tflite")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "tsptq: error: --npu ethos-u: Swin has no NPU variant yet (issue 19)"]
    assert main(["export", *args, "--method", "tflite-converter", "--out", str(tmp_path / "stock.tflite")]) == 2
    from tsptq.evaluation.stock_converter import STOCK_SWIN

    assert capsys.readouterr().err.strip().splitlines() == [f"tsptq: error: {STOCK_SWIN}"]
    capsys.readouterr()
    assert main(["diagnose", *args, "--method", "minmax", "--images", "2", "--by", "block"]) == 0
    assert "layers.1.downsample" in capsys.readouterr().out


@pytest.mark.cc
def test_deploy_runs_a_swin_on_the_host(swin, tmp_path, capsys):
    from tsptq.cli.deploy import main

    path = tmp_path / "swin.safetensors"
    save_file({k: v.contiguous() for k, v in swin.state_dict().items()}, path,
              metadata={"tsptq_config": json.dumps(swin.cfg.to_dict())})
    assert main(["--target", "host", "--checkpoint", str(path), "--data", "bundled", "--calib-images", "2",
                 "--quiet"]) == 0
    assert "TSPTQ_SOFTMAX_MASK_2S" in capsys.readouterr().out
