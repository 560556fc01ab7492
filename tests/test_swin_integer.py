"""Swin's integer model (tsptq.intmodel.lower_swin): the data movement is exactly the float model's, the two new ops
(TSPTQ_BMM_BIAS, TSPTQ_SOFTMAX_MASK_2S) give the simulator's codes from the simulator's inputs, and the whole
integer model follows the float32 simulator, closely enough that dropping the position bias, the mask or the shift
is seen."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_swin_quant import NORM, ONE_WINDOW, PADDED, SHIFTED, images, tiny
from tsptq.data.datasets import to_model_input
from tsptq.errors import QuantizationError
from tsptq.intmodel import kernels as K
from tsptq.intmodel import lower_swin
from tsptq.intmodel.fixedpoint import fixed_multiplier, quantize_multiplier
from tsptq.intmodel.graph import IntModel, QuantParams
from tsptq.intmodel.lower import _Builder, lower
from tsptq.intmodel.ops import ALL_OPS
from tsptq.model.swin import create_model, merge_2x2, window_partition, window_reverse
from tsptq.quant.observers import record
from tsptq.quant.qswin import SwinGraph
from tsptq.quant.quantize import quantize
from tsptq.quant.qvit import SimHook


from test_swin_quant import one_thread  # noqa: E402,F401  (autouse: one torch thread for these small tensors)


def sharp(cfg=SHIFTED):
    """The tiny Swin with attention that matters: a wide position-bias table, larger q/k and attention outputs
    (random Swins attend almost uniformly, and their residual stream hides the attention branch)."""
    model = tiny(cfg)
    with torch.no_grad():
        torch.manual_seed(1)
        for stage in model.layers:
            for blk in stage.blocks:
                blk.attn.relative_position_bias_table.normal_(0, 1.0)
                D = blk.attn.qkv.weight.shape[1]
                blk.attn.qkv.weight[: 2 * D] *= 3
                blk.attn.proj.weight *= 4
    return model


class CodeHook(SimHook):
    """The simulator, keeping every point's codes."""

    def __init__(self, q):
        super().__init__(q)
        self.codes = {}

    def act(self, name, kind, x):
        if name in self.q:
            self.codes[name] = self.q[name].encode(x).numpy()
        return super().act(name, kind, x)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return F.cosine_similarity(torch.tensor(a).double(), torch.tensor(b).double(), dim=-1).numpy()


def fitted(model, method="tsptq", size=32):
    graph = SwinGraph.from_model(model)
    return quantize(graph, record(graph, images(8, size), 8, False), method, progress=False)


def run_both(qm, im, x):
    """(integer logits, every integer tensor by name, simulator logits, simulator codes by point)."""
    hook = CodeHook(qm.acts)
    sim = qm(x, hook).numpy()
    out, vals = im.run(im.quantize_input(x.numpy()), keep=True)
    named = {t.name: vals[i] for i, t in enumerate(im.tensors) if i in vals}
    return im.dequantize_output(out), named, sim, hook.codes


# --- data movement ---------------------------------------------------------------------------------------------------

def test_data_movement_is_the_float_models():
    """roll, padding, window partition / reverse and the 2x2 gather, as integer byte moves, on random codes."""
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (2, 6, 6, 5)).astype(np.int8)
    t = torch.from_numpy(x.astype(np.int64))
    b = lower_swin._SwinBuilder(_Builder(None))
    details = {"kind": "channel_pow2", "bits": 8, "base_scale": 0.1, "shifts": [0, 1, 2, 0, 1]}
    q = QuantParams((0.1 * 2.0 ** np.array(details["shifts"])).astype(np.float32), np.full(5, 3, np.int64), -1, details)
    xi = b.add("x", (1, 6, 6, 5), "int8", q)
    outs = {"roll": b.roll("r", xi, -2), "unroll": b.roll("u", xi, 2),
            "windows": b.partition("w", b.pad_zero("pw", b.pad_zero("ph", xi, 1, 2), 2, 2), 4),
            "merged": b.merge_2x2("m", xi)}
    outs["reversed"] = b.reverse("rv", b.partition("w3", xi, 3), 3, 6, 6)
    for name, i in outs.items():
        got = IntModel(b.tensors, b.ops, [xi], [i]).run(x)
        if name == "roll":
            want = torch.roll(t, (-2, -2), (1, 2))
        elif name == "unroll":
            want = torch.roll(t, (2, 2), (1, 2))
        elif name == "windows":  # padded with the zero point (the code of 0), as F.pad pads the real values
            want = window_partition(F.pad(t, (0, 0, 0, 2, 0, 2), value=3), 4).reshape(2, 4, 16, 5)
        elif name == "merged":
            want = merge_2x2(t)
        else:
            want = window_reverse(window_partition(t, 3), 3, 6, 6)
        assert np.array_equal(got, want.numpy()), name
    merged = b.t(outs["merged"]).quant  # the LayerNorm reads the stored channel code, tiled over the 4 neighbours
    assert merged.details["shifts"] == [0, 1, 2, 0, 1] * 4 and np.array_equal(merged.scale, np.tile(q.scale, 4))


# --- the two new ops --------------------------------------------------------------------------------------------------

def test_masked_softmax_gives_masked_pairs_probability_zero():
    rng = np.random.default_rng(1)
    lut = np.round(np.exp(-0.05 * np.arange(256)) * 2.0**K.EXP_FRAC_BITS).astype(np.int32)
    x = rng.integers(-128, 128, (2, 3, 2, 5, 5)).astype(np.int8)
    mask = (rng.random((3, 5, 5)) < 0.5).astype(np.int8)
    mask[:, np.arange(5), np.arange(5)] = 1
    args = (K.UNIFORM, *fixed_multiplier(255 / 2.0**K.PROB_FRAC_BITS), -128, 8, 0, False)  # step 1/255
    y = K.softmax_mask_2s(x, mask, lut, *args)
    keep = np.broadcast_to(mask[:, None].astype(bool), x.shape)
    assert (y[~keep] == -128).all() and (y[keep] > -128).any()
    # each row: TSPTQ_SOFTMAX_2S over its kept pairs alone
    for idx in np.ndindex(x.shape[:-1]):
        k = keep[idx]
        assert np.array_equal(y[idx][k], K.softmax_2s(x[idx][k][None], lut, *args)[0])
    assert np.array_equal(K.softmax_mask_2s(x, np.ones_like(mask), lut, *args), K.softmax_2s(x, lut, *args))


def test_bmm_bias_adds_the_bias_below_the_accumulators_unit():
    rng = np.random.default_rng(2)
    a, b = (rng.integers(-128, 128, (1, 3, 2, 4, 8)).astype(np.int8) for _ in range(2))
    bias = rng.integers(-5000, 5000, (2, 4, 4)).astype(np.int32)
    mult, shift = quantize_multiplier(0.01)
    y = K.bmm_bias(a, 3, b, -2, bias, 4, mult, shift, 5)
    acc = np.einsum("...ik,...jk->...ij", a.astype(np.int64) - 3, b.astype(np.int64) + 2)
    v = (acc + bias / 16.0) * (mult * 2.0 ** (shift - 31))  # exact in float64 here
    assert np.abs(np.abs(v - np.floor(v)) - 0.5).min() > 1e-6  # no ties, where half away and half even differ
    assert np.array_equal(y, np.clip(np.round(v) + 5, -128, 127))
    assert not np.array_equal(y, K.bmm_bias(a, 3, b, -2, np.zeros_like(bias), 4, mult, shift, 5))


@pytest.mark.parametrize("method", ["minmax", "tsptq"])
def test_new_ops_give_the_simulators_codes_from_its_inputs(method):
    """Fed with the simulator's q, k (and scores) codes, TSPTQ_BMM_BIAS and TSPTQ_SOFTMAX_MASK_2S give its scores and
    probability codes (measured: all but 1 in 10^5; rounding the bias to the q.k unit alone moved 1 in 500)."""
    model = sharp()
    qm = fitted(model, method)
    im = lower(qm)
    hook = CodeHook(qm.acts)
    qm(to_model_input(images(8, seed=1).images, SHIFTED), hook)
    seen = set()
    for op in im.ops:
        if op.kind not in ("TSPTQ_BMM_BIAS", "TSPTQ_SOFTMAX_MASK_2S"):
            continue
        seen.add(op.kind)
        out = im.tensors[op.outputs[0]]
        ins = [t.data if t.data is not None else hook.codes[t.name.split(".bwhnd")[0]].astype(t.dtype)
               for t in (im.tensors[i] for i in op.inputs)]
        y = ALL_OPS[op.kind].kernel(im, op, ins)
        ref = hook.codes[out.name].astype(y.dtype)
        assert (y == ref).mean() > 0.9999 and np.abs(y.astype(int) - ref.astype(int)).max() <= 1, out.name
    assert seen == {"TSPTQ_BMM_BIAS", "TSPTQ_SOFTMAX_MASK_2S"}


# --- the whole integer model ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [SHIFTED, PADDED], ids=["shifted", "padded"])
def test_integer_model_follows_the_simulator(cfg):
    # measured (tsptq W8A8, 16 images): logit cosine to the simulator 0.99990 (shifted) / 0.99993 (padded); the same
    # class for 16 / 15 images (the other's top two simulator logits are one output code apart); the simulator to
    # FP32: 0.9996 / 0.9985
    model = tiny(cfg)
    qm = fitted(model, size=cfg.img_size)
    im = lower(qm)
    kinds = {op.kind for op in im.ops}
    assert {"TSPTQ_BMM_BIAS", "TSPTQ_SOFTMAX_MASK_2S", "CONCATENATION", "STRIDED_SLICE"} <= kinds
    x = to_model_input(images(16, cfg.img_size, seed=1).images, cfg)
    out, _, sim, _ = run_both(qm, im, x)
    assert cosines(out, sim).mean() > 0.9995 and (out.argmax(-1) == sim.argmax(-1)).mean() >= 0.9


def test_the_patch_embedding_writes_a_channel_code():
    """An outlier channel of the patch embedding gets its own step in the O-2SF code of the conv output (a
    residual-kind point), which the integer model writes exactly (a fully connected layer on the patches; CONV_2D has
    one output scale). Measured: every code equal to the simulator's, logit cosine 0.99995."""
    model = tiny()
    with torch.no_grad():
        model.patch_embed.proj.weight[3] *= 40
    qm = fitted(model)
    assert qm.acts["patch_embed"].shifts.tolist() == [0, 0, 0, 4] + [0] * 12
    out, named, sim, codes = run_both(qm, lower(qm), to_model_input(images(16, seed=1).images, SHIFTED))
    for point in ("patch_embed", "layers.0.blocks.0.in"):
        assert (named[point] == codes[point]).mean() > 0.9999, point
    assert cosines(out, sim).mean() > 0.9995


def test_dropping_the_bias_the_mask_or_the_shift_is_seen(monkeypatch):
    """The sharp model: the integer model against the simulator, as lowered and with one Swin piece broken. Measured
    (32 images): logit cosine 0.99992 as lowered, 0.9954 without the bias, 0.9974 without the mask, 0.9961 without the
    shift; the codes of the first shifted block's attention x V equal the simulator's for 99.9% of them as lowered,
    3%, 57% and 1% when broken."""
    qm = fitted(sharp())
    x = to_model_input(images(32, seed=1).images, SHIFTED)
    ctx = "layers.0.blocks.1.ctx"

    def measure(im):
        out, named, sim, codes = run_both(qm, im, x)
        return 1 - cosines(out, sim).mean(), (named[ctx] == codes[ctx]).mean()

    err, same = measure(lower(qm))
    assert err < 2e-4 and same > 0.99
    no_bias = lower(qm)
    for t in no_bias.tensors:
        if t.name.endswith(".rel_bias"):
            t.data = np.zeros_like(t.data)
    no_mask = lower(qm)
    for t in no_mask.tensors:
        if t.name.endswith(".attn_mask"):
            t.data = np.ones_like(t.data)
    monkeypatch.setattr(lower_swin._SwinBuilder, "roll", lambda self, name, x, shift: x)
    no_shift = lower(qm)
    for broken in (no_bias, no_mask, no_shift):
        e, s = measure(broken)
        assert e > 20 * err and s < 0.75


def test_a_swin_tiny_layout_shrunk_runs_in_integers():
    """swin_tiny_patch4_window7_224's layout (patch 4, dim 96, heads 3/6, MLP x4) at 64 px, window 4, two stages: the
    shifted blocks of both stages are masked. Measured (8 images): logit cosine to the simulator 0.9996 (minmax; 16
    images: 0.9996 minmax, 0.9997 tsptq, every class the same)."""
    torch.manual_seed(0)
    model = create_model("swin_tiny_patch4_window7_224", img_size=64, window_size=4, depths=(2, 2), num_heads=(3, 6),
                         num_classes=10, **NORM).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    qm = fitted(model, "minmax", 64)
    im = lower(qm)
    assert sum(op.kind == "TSPTQ_SOFTMAX_MASK_2S" for op in im.ops) == 2
    x = to_model_input(images(8, 64, seed=1).images, model.cfg)
    out, _, sim, _ = run_both(qm, im, x)
    assert cosines(out, sim).mean() > 0.999 and (out.argmax(-1) == sim.argmax(-1)).all()


def test_what_is_not_built_is_refused_in_one_line():
    qm = fitted(tiny())
    with pytest.raises(QuantizationError, match="^--npu ethos-u: Swin has no NPU variant yet"):
        lower(qm, npu=True)


# --- the file and the C runtime ---------------------------------------------------------------------------------------

@pytest.mark.cc
@pytest.mark.parametrize("cfg,method", [(SHIFTED, "tsptq"), (SHIFTED, "ptf-log2"), (PADDED, "minmax"),
                                        (ONE_WINDOW, "twin")], ids=["shifted-tsptq", "shifted-ptf-log2",
                                                                    "padded-minmax", "one-window-twin"])
def test_the_file_runs_in_the_c_runtime_byte_for_byte(cfg, method):
    from tsptq.runtime.c_build import have_compiler

    if not have_compiler():
        pytest.skip("no C compiler")
    from tsptq.intmodel.planner import plan
    from tsptq.runtime.c_binding import CModel
    from tsptq.tflite.reader import parse_tflite
    from tsptq.tflite.writer import to_tflite

    im = lower(fitted(sharp(cfg), method, cfg.img_size))
    data = to_tflite(im)
    back = parse_tflite(data)  # the Python reader, with the C loader's checks mirrored
    x = im.quantize_input(to_model_input(images(8, cfg.img_size, seed=1).images, cfg).numpy())
    want = im.run(x)
    assert np.array_equal(back.run(x), want)
    for variant in ("reference", None):  # the portable C and this machine's fastest build
        cm = CModel(data, variant=variant)
        assert np.array_equal(cm.run(x), want), variant
    p = plan(back)
    # the arena is the Python planner's, plus the FC weights a host SIMD build prepacks (none in the reference one)
    assert (cm.arena_size, cm.activation_size) == (p.arena_size + cm.prepacked_size, p.activation_size)


@pytest.mark.cc
def test_both_loaders_refuse_a_mask_row_that_keeps_nothing():
    from tsptq.errors import ModelFileError, RuntimeCError
    from tsptq.runtime.c_build import have_compiler

    if not have_compiler():
        pytest.skip("no C compiler")
    from tsptq.runtime.c_binding import CModel
    from tsptq.tflite.reader import parse_tflite
    from tsptq.tflite.writer import to_tflite

    im = lower(fitted(tiny()))
    mask = next(t for t in im.tensors if t.name.endswith(".attn_mask"))
    good = mask.data.copy()
    for fault, message in (("empty row", "a mask row keeps no pair"),
                           ("empty row, then an entry 2", "mask entries must be 0 or 1")):  # entries are checked first
        mask.data = good.copy()
        mask.data[0, 0] = 0
        if fault != "empty row":
            mask.data.reshape(-1)[-1] = 2
        data = to_tflite(im)
        with pytest.raises(ModelFileError, match=rf"\(TSPTQ_SOFTMAX_MASK_2S\): {message}$"):
            parse_tflite(data)
        with pytest.raises(RuntimeCError, match=rf"\(TSPTQ_SOFTMAX_MASK_2S\): {message}"):
            CModel(data)


@pytest.mark.cc
def test_evaluate_measures_a_swin_with_the_c_engine():
    """``tsptq eval``'s C engine on a Swin: its logits and pooled features (the head's input, read from the C arena)
    follow the float32 simulator's. Measured (8 images): feature cosine to FP32 0.99971 (c) and 0.99972 (float32)."""
    from tsptq.evaluation.evaluate import evaluate
    from tsptq.runtime.c_build import have_compiler

    if not have_compiler():
        pytest.skip("no C compiler")
    model, calib, ev = tiny(), images(8), images(8, seed=2)
    rows = {engine: {r["method"]: r for r in evaluate(model, calib, ev, ["fp32", "tsptq"], engine=engine, workers=1,
                                                      progress=False, timings=False).rows}["tsptq"]
            for engine in ("c", "float32")}
    assert rows["c"]["engine"] == "c" and rows["float32"]["engine"] == "float32"
    assert rows["c"]["agreement"] == rows["float32"]["agreement"]
    assert abs(rows["c"]["cosine_mean"] - rows["float32"]["cosine_mean"]) < 1e-3 and rows["c"]["cosine_mean"] > 0.999


@pytest.mark.cc
def test_a_random_swin_tiny_at_224_runs_in_the_c_runtime_byte_for_byte():
    """Issue 19's bar: swin_tiny_patch4_window7_224 itself (timm layout, random weights from tsptq's own configs:
    224 px, embed 96, depths 2/2/6/2, heads 3/6/12/24, window 7), minmax on 2 random images, exported and run by the
    C runtime (the portable build and this machine's fastest) byte for byte as the Python integer model. Its last
    patch merging normalizes 4 * 384 = 1536 channels (the integer LayerNorm's bound was 1024); about 1000 tensors and
    420 ops. Measured: 8 s on 2 shared cores (the C libraries already built)."""
    from tsptq.model.checkpoint import resolve_model
    from tsptq.runtime.c_binding import CModel
    from tsptq.runtime.c_build import have_compiler
    from tsptq.tflite.writer import to_tflite

    if not have_compiler():
        pytest.skip("no C compiler")
    model = resolve_model("swin_tiny_patch4_window7_224")
    cfg = model.cfg
    assert (cfg.img_size, cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.window_size) == (224, 96, (2, 2, 6, 2),
                                                                                        (3, 6, 12, 24), 7)
    graph = SwinGraph.from_model(model)
    im = lower(quantize(graph, record(graph, images(2, 224), 2, False), "minmax", progress=False))
    widths = {im.tensors[op.inputs[0]].shape[-1] for op in im.ops if op.kind == "TSPTQ_LAYERNORM_2S"}
    assert max(widths) == 1536 and sum(op.kind == "TSPTQ_SOFTMAX_MASK_2S" for op in im.ops) == 5
    data = to_tflite(im)
    x = im.quantize_input(to_model_input(images(1, 224, seed=1).images, cfg).numpy())
    want = im.run(x)
    assert want.shape == (1, 1000) and len(np.unique(want)) > 20  # not a constant output
    for variant in ("reference", None):  # the portable C and this machine's fastest build
        assert np.array_equal(CModel(data, variant=variant).run(x), want), variant


@pytest.mark.cc
@pytest.mark.slow
def test_a_swin_small_loads_in_a_hosted_build_and_a_bare_metal_one_says_why_not():
    """swin_small_patch4_window7_224 (depths 2/2/18/2, as Swin-B/L): ~2000 tensors and ~830 ops, past the bare-metal
    default capacity (1024 / 512, tsptq.h), within the hosted one (4096 / 2048): the host library loads and runs it,
    a build at the boards' capacity refuses it in one line naming its limit. Measured: ~6 s."""
    from tsptq.errors import RuntimeCError
    from tsptq.model.checkpoint import resolve_model
    from tsptq.runtime.c_binding import CModel
    from tsptq.runtime.c_build import build_library, have_compiler
    from tsptq.tflite.writer import to_tflite

    if not have_compiler():
        pytest.skip("no C compiler")
    graph = SwinGraph.from_model(resolve_model("swin_small_patch4_window7_224"))
    im = lower(quantize(graph, record(graph, images(2, 224), 2, False), "minmax", progress=False))
    assert 1024 < len(im.tensors) <= 4096 and 512 < len(im.ops) <= 2048
    data = to_tflite(im)
    x = im.quantize_input(to_model_input(images(1, 224, seed=1).images, graph.cfg).numpy())
    assert CModel(data).run(x).shape == (1, 1000)
    lib = build_library("reference", extra_flags=["-DTSPTQ_MAX_TENSORS=1024", "-DTSPTQ_MAX_OPS=512"],
                        name="libtsptq.so")
    with pytest.raises(RuntimeCError) as e:
        CModel(data, library=lib)
    assert e.value.name == "TSPTQ_ERR_TOO_MANY"
    assert f"the model has {len(im.tensors)} tensors; this build holds 1024 (raise TSPTQ_MAX_TENSORS)" in str(e.value)
