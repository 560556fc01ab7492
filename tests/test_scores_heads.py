"""A per-head attention-scores code (``tsptq-heads``: one uniform code per head on the Softmax input) through the
chain: the lowering's TSPTQ_BMM_HEADS (q.k^T requantized to each head's code) and TSPTQ_SOFTMAX_2S with one exp table
per head, both loaders' checks of them, the faithful simulator, and the Python integer model, the file, the C runtime
and LiteRT with the delegate, byte for byte."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tsptq.data import datasets
from tsptq.errors import ModelFileError, QuantizationError
from tsptq.intmodel import kernels as K
from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
from tsptq.intmodel.lower import lower, scores_scale, scores_scales
from tsptq.model.vit import ViTConfig, VisionTransformer
from tsptq.quant.observers import record
from tsptq.quant.quantize import quantize
from tsptq.quant.quantizers import Uniform
from tsptq.quant.qvit import Graph
from tsptq.runtime.c_build import have_compiler
from tsptq.tflite.reader import parse_tflite
from tsptq.tflite.writer import to_tflite


def _cfg(heads: int) -> ViTConfig:
    return ViTConfig(img_size=16, patch_size=4, in_chans=3, num_classes=3, embed_dim=8 * heads, depth=2,
                     num_heads=heads, mlp_hidden=32, mean=(0.5,) * 3, std=(0.25,) * 3, crop_pct=1.0)


STEPS = {2: [1.0, 3.0], 3: [1.0, 3.0, 0.5]}  # each head's scores step, in units of head 0's
Q_GAIN = [40.0, 120.0, 15.0]  # head h's q rows scaled: scores of clearly different ranges per head


@pytest.fixture(scope="module", params=[2, 3], ids=["2-heads", "3-heads"])
def fitted(request):
    """(tsptq-heads quantization of a tiny random ViT whose heads' scores differ in range, the model input of 24 random
    images). Every block's scores code is forced to one step per head, head 0's step times STEPS (whatever the
    selection kept); with 3 heads, block 1 goes back to one code per tensor (a BATCH_MATMUL and one table)."""
    H = request.param
    cfg = _cfg(H)
    torch.manual_seed(0)
    model = VisionTransformer(cfg).eval()
    with torch.no_grad():
        for blk in model.blocks:
            for h in range(H):
                blk.attn.qkv.weight[h * cfg.head_dim:(h + 1) * cfg.head_dim] *= Q_GAIN[h]
    rng = np.random.default_rng(0)
    imgs = datasets.ImageSet(rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8), np.zeros(24, np.int64), "random")
    graph = Graph.from_model(model)
    qm = quantize(graph, record(graph, imgs.take(16), 8, False), "tsptq-heads", progress=False)
    for b in range(cfg.depth):
        q = qm.acts[f"blocks.{b}.scores"]
        step, zps = float(q.scale.reshape(-1)[0]), q.zero_point.reshape(-1).expand(H).clone()
        if H == 3 and b == 1:
            qm.acts[f"blocks.{b}.scores"] = Uniform(torch.tensor(step), zps[0].clone(), q.bits)
        else:
            qm.acts[f"blocks.{b}.scores"] = Uniform(step * torch.tensor(STEPS[H]), zps, q.bits, axis=1)
    return qm, datasets.to_model_input(imgs.images, cfg)


def _writer(im: IntModel, name: str):
    return next(op for op in im.ops if im.tensors[op.outputs[0]].name == name)


def _per_head(qm, b: int) -> bool:
    return qm.acts[f"blocks.{b}.scores"].scale.ndim > 0


def test_the_lowering_emits_bmm_heads_and_one_exp_table_per_head(fitted):
    qm, _ = fitted
    cfg = qm.graph.cfg
    H, beta = cfg.num_heads, cfg.head_dim ** -0.5
    im = lower(qm)
    for b in range(cfg.depth):
        op = _writer(im, f"blocks.{b}.scores")
        scores = im.tensors[op.outputs[0]]
        softmax = _writer(im, f"blocks.{b}.softmax")
        lut = im.tensors[softmax.inputs[1]].data
        code = qm.acts[f"blocks.{b}.scores"]
        if not _per_head(qm, b):
            assert op.kind == "BATCH_MATMUL" and scores.n_scales == 1 and lut.shape == (256,)
            assert float(scores.quant.scale[0]) == scores_scale(qm, b)
            continue
        assert op.kind == "TSPTQ_BMM_HEADS" and [im.tensors[i].name for i in op.inputs] == \
            [f"blocks.{b}.q.bhtd", f"blocks.{b}.k.bhtd"]
        # the declared scales hold q.k: each head's step times sqrt(hd), along the heads axis
        want = [np.float32(float(s) * math.sqrt(cfg.head_dim)) for s in code.scale.numpy()]
        np.testing.assert_array_equal(scores.quant.scale, np.array(want, np.float32))
        np.testing.assert_array_equal(scores.quant.zero_point, code.zero_point.numpy().astype(np.int64))
        assert scores.quant.axis == 1 and scores.n_scales == H
        np.testing.assert_array_equal(scores_scales(qm, b), scores.quant.scale)
        with pytest.raises(QuantizationError, match="per-head"):
            scores_scale(qm, b)
        # table h: round(2^20 exp(-beta s_h j)) from head h's declared scale
        assert lut.shape == (256 * H,)
        tables = lut.reshape(H, 256)
        for h in range(H):
            step = float(scores.quant.scale[h]) * beta
            np.testing.assert_array_equal(tables[h], np.round(np.exp(-step * np.arange(256.0)) * 2.0**20))
            assert tables[h, 0] == 1 << 20
        assert all(not np.array_equal(tables[0], tables[h]) for h in range(1, H))  # the heads' tables differ
    kinds = [op.kind for op in im.ops]
    assert kinds.count("TSPTQ_BMM_HEADS") == sum(_per_head(qm, b) for b in range(cfg.depth)) >= 1


def test_the_integer_model_runs_byte_for_byte_everywhere(fitted, tmp_path):
    qm, x = fitted
    im = lower(qm)
    data = to_tflite(im)
    xi = im.quantize_input(x.numpy())
    ref, values = im.run(xi, keep=True)
    back = parse_tflite(data)
    np.testing.assert_array_equal(back.run(xi), ref)
    op = _writer(im, "blocks.0.scores")
    read = back.tensors[op.outputs[0]].quant  # the per-head scales and zero points as written
    want = im.tensors[op.outputs[0]].quant
    assert (read.axis, read.scale.tolist(), read.zero_point.tolist()) == (1, want.scale.tolist(),
                                                                          want.zero_point.tolist())
    a, b_, y = (im.tensors[i] for i in (*op.inputs, op.outputs[0]))
    q, k, scores = values[op.inputs[0]], values[op.inputs[1]], values[op.outputs[0]]
    # head h is BATCH_MATMUL with its own output scale and zero point
    for h in range(im.tensors[op.outputs[0]].shape[1]):
        mult, shift = K.bmm_multiplier(a.quant.scale[0], b_.quant.scale[0], y.quant.scale[h])
        np.testing.assert_array_equal(scores[:, h], K.batch_matmul(q[:, h], a.zp, k[:, h], b_.zp, mult, shift,
                                                                    int(y.quant.zero_point[h]), True))
    # each head's rows read its own exp table: one table for every head gives other probabilities
    sm = _writer(im, "blocks.0.softmax")
    lut, o = im.tensors[sm.inputs[1]].data, sm.options
    args = (o["out_kind"], o["mult"], o["shift"], o["out_zp"], o["bits"], o["ratio_log2"], bool(o["signed_fine"]))
    probs = values[sm.outputs[0]]
    tables = lut.reshape(-1, 256)
    for h in range(len(tables)):
        np.testing.assert_array_equal(probs[:, h], K.softmax_2s(scores[:, h], tables[h], *args))
        if h:
            assert not np.array_equal(probs[:, h], K.softmax_2s(scores[:, h], tables[0], *args))
    if not have_compiler():
        pytest.skip("no C compiler (set CC or install gcc)")
    from tsptq.runtime.c_binding import CModel

    for threads in (1, 2, 3):  # TSPTQ_BMM_HEADS splits by rows over the pool: the same bytes
        np.testing.assert_array_equal(CModel(data, threads=threads).run(xi), ref)
    import ctypes

    from test_c_threads import _jobs

    cm = CModel(data, threads=2)
    if cm.max_threads() > 1:  # and it does split: run alone (tq_run_one) on 2 threads, it runs split jobs
        cm.run(xi)
        cm.lib.tq_run_one.restype, cm.lib.tq_run_one.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint32]
        before = _jobs(cm)
        assert cm.lib.tq_run_one(cm._m, im.ops.index(op)) == 0 and _jobs(cm) > before
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    from test_litert_delegate import _run

    from tsptq.runtime.litert import make_interpreter

    path = tmp_path / "scores-heads.tflite"
    path.write_bytes(data)
    it = make_interpreter(path, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    np.testing.assert_array_equal(_run(it, xi), ref)  # LiteRT's reference kernels + the delegate


def test_the_faithful_simulator_is_the_integer_model(fitted):
    """Fed the integer model's q and k codes, the faithful simulator's scores are TSPTQ_BMM_HEADS's codes, head by
    head; its logits' codes are the integer model's."""
    from tsptq.intmodel.faithful import FaithfulHook, applies, faithful_logits

    qm, x = fitted
    assert applies(qm)
    im = lower(qm)
    xi = im.quantize_input(x.numpy())
    ref, values = im.run(xi, keep=True)
    hook = FaithfulHook(qm)
    for b in range(qm.graph.cfg.depth):
        op = _writer(im, f"blocks.{b}.scores")
        for part, i in zip("qk", op.inputs):
            hook.codes[f"blocks.{b}.{part}"] = torch.from_numpy(values[i].astype(np.int32))
        got = qm.acts[f"blocks.{b}.scores"].encode(hook._matmul(f"blocks.{b}.scores", f"blocks.{b}.q",
                                                               f"blocks.{b}.k", adj=True)).numpy()
        np.testing.assert_array_equal(got, values[op.outputs[0]])
    x_codes = torch.from_numpy(xi.astype(np.float32)).permute(0, 3, 1, 2)
    x_in = (x_codes - float(im.input.quant.zero_point[0])) * float(im.input.quant.scale[0])
    faithful = qm.acts["head"].encode(faithful_logits(qm, x_in)).numpy()
    # float64 softmax and GELU there, the integer tables here (as in tests/test_gelu_channels.py): measured 64/72 and
    # 72/72 logit codes equal (2 and 3 heads), the rest one code off, the same with these blocks' scores forced back
    # to one code per tensor; every prediction equal
    diff = np.abs(faithful - ref.astype(np.int32))
    assert np.mean(diff == 0) >= 0.85 and diff.max() <= 1
    assert np.array_equal(faithful.argmax(1), ref.argmax(1))


def test_the_npu_variant_refuses_it_in_one_line(fitted):
    from tsptq.errors import TsptqError
    from tsptq.npu.export import check_npu_request

    qm, _ = fitted
    line = r"^--npu ethos-u: tsptq-heads's per-head scores code has no NPU form yet \(use tsptq or minmax\)$"
    with pytest.raises(QuantizationError, match=line):
        lower(qm, npu=True)
    with pytest.raises(TsptqError, match=line):  # before any calibration
        check_npu_request("ethos-u", "tsptq-heads", "w8a8")


def test_a_swin_refuses_a_per_head_scores_code_in_one_line():
    from test_swin_integer import fitted as swin_fitted
    from test_swin_quant import SHIFTED, tiny

    qm = swin_fitted(tiny(SHIFTED), "minmax")  # the quickest fit: the refusal looks at the scores code alone
    name = next(n for n in qm.acts if n.endswith(".scores"))
    qm.acts[name] = Uniform(torch.full((2,), float(qm.acts[name].scale)), torch.zeros(2), 8, axis=2)
    with pytest.raises(QuantizationError, match=rf"^{name}: a per-head scores code has no Swin integer model "
                                                r"\(TSPTQ_BMM_BIAS takes one scores code per tensor\)$"):
        lower(qm)


# --- both loaders' checks, on a two-op model: x (1, 2, 3, 4) -> TSPTQ_BMM_HEADS with a constant k -> TSPTQ_SOFTMAX_2S

def _qp(scales, zps, axis=0) -> QuantParams:
    return QuantParams(np.asarray(scales, np.float32), np.asarray(zps, np.int64), axis)


def _heads_model(scores_q=None, lut=None, k_q=None) -> IntModel:
    """2 heads, 3 queries, 3 keys, K = 4: scores (1, 2, 3, 3) with a step per head, a table per head."""
    rng = np.random.default_rng(1)
    k = rng.integers(-128, 128, (1, 2, 3, 4)).astype(np.int8)
    scores_q = scores_q or _qp([0.02, 0.06], [3, -5], axis=1)
    if lut is None:
        lut = np.concatenate([np.round(np.exp(-s * np.arange(256.0)) * 2.0**20) for s in (0.02, 0.06)])
    tensors = [Tensor("x", (1, 2, 3, 4), "int8", _qp([0.05], [1])),
               Tensor("k", (1, 2, 3, 4), "int8", k_q or _qp([0.04], [-2]), k),
               Tensor("scores", (1, 2, 3, 3), "int8", scores_q),
               Tensor("exp_lut", (len(lut),), "int32", None, np.asarray(lut, np.int32)),
               Tensor("probs", (1, 2, 3, 3), "int8", _qp([1 / 256], [-128]))]
    ops = [Op("TSPTQ_BMM_HEADS", [0, 1], [2]),
           Op("TSPTQ_SOFTMAX_2S", [2, 3], [4], {"out_kind": K.UNIFORM, "mult": 1 << 30, "shift": 23, "out_zp": -128,
                                               "bits": 8, "ratio_log2": 0, "signed_fine": 0})]
    return IntModel(tensors, ops, [0], [4], {"method": "test"})


def test_a_small_file_with_both_ops_is_the_same_everywhere():
    im = _heads_model()
    data = to_tflite(im)
    x = np.random.default_rng(2).integers(-128, 128, (5, 2, 3, 4)).astype(np.int8)
    ref = im.run(x)
    np.testing.assert_array_equal(parse_tflite(data).run(x), ref)
    if have_compiler():
        from tsptq.runtime.c_binding import CModel

        np.testing.assert_array_equal(CModel(data).run(x), ref)
    one = _heads_model(lut=np.round(np.exp(-0.02 * np.arange(256.0)) * 2.0**20))  # the one-table form still runs
    assert not np.array_equal(one.run(x), ref)


@pytest.mark.parametrize("case,message", [
    ("table length", "op 1 (TSPTQ_SOFTMAX_2S): the lookup table must have 256 or 512 int32 entries (one table, or "
                     "one per head)"),
    ("table start", "op 1 (TSPTQ_SOFTMAX_2S): bad quantization: the exp table of head 1 must start at 2^20"),
    ("table entry", "op 1 (TSPTQ_SOFTMAX_2S): bad quantization: exp table entry 300 out of range"),
    ("scale count", "op 0 (TSPTQ_BMM_HEADS): bad quantization: the output needs 2 scales along its heads axis (1)"),
    ("scales axis", "op 0 (TSPTQ_BMM_HEADS): bad quantization: the output needs 2 scales along its heads axis (1)"),
    ("per-channel k", "op 0 (TSPTQ_BMM_HEADS): bad quantization: the inputs must be quantized per tensor"),
    ("multiplier", "op 0 (TSPTQ_BMM_HEADS): bad quantization: requantization multiplier of head 1 out of range"),
])
def test_both_loaders_refuse_a_bad_file_in_the_same_words(case, message):
    good = np.concatenate([np.round(np.exp(-s * np.arange(256.0)) * 2.0**20) for s in (0.02, 0.06)])
    if case == "table length":
        im = _heads_model(lut=good[:300])
    elif case == "table start":
        im = _heads_model(lut=np.concatenate([good[:256], good[256:] // 2]))
    elif case == "table entry":
        lut = good.copy()
        lut[300] = (1 << 20) + 1
        im = _heads_model(lut=lut)
    elif case == "scale count":
        im = _heads_model(scores_q=_qp([0.02], [3]))
    elif case == "scales axis":  # three scales along the keys axis
        im = _heads_model(scores_q=_qp([0.02, 0.06, 0.04], [3, -5, 0], axis=3))
    elif case == "per-channel k":
        im = _heads_model(k_q=_qp([0.04, 0.05, 0.06, 0.07], [0, 0, 0, 0], axis=3))
    else:  # head 1's multiplier past 2^31 (shift > 31)
        im = _heads_model(scores_q=_qp([0.02, 1e-14], [3, -5], axis=1))
    data = to_tflite(im)
    with pytest.raises(ModelFileError) as py:
        parse_tflite(data)  # the C loader's checks, mirrored
    assert str(py.value) == message
    if have_compiler():
        from tsptq.errors import RuntimeCError
        from tsptq.runtime.c_binding import CModel

        with pytest.raises(RuntimeCError) as c:
            CModel(data, name="f")
        # C says the error's kind by its code (TSPTQ_ERR_BAD_QUANTIZATION), Python in words
        assert str(c.value)[3:].rsplit(" [", 1)[0] == message.replace("bad quantization: ", "")
