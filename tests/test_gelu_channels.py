"""A per-channel power-of-two GELU input (O-2SF on the fc1 outputs, ``tsptq-fc1-o2sf``) through the chain: the
lowering's table of 256 entries per shift level, both loaders' checks of it, and the Python integer model, the C
runtime and LiteRT with the delegate, byte for byte."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tsptq.data import datasets
from tsptq.errors import ModelFileError, QuantizationError
from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
from tsptq.intmodel.lower import lower
from tsptq.model.vit import ViTConfig, VisionTransformer
from tsptq.quant.observers import record
from tsptq.quant.quantize import quantize
from tsptq.quant.quantizers import ChannelPow2
from tsptq.quant.qvit import Graph
from tsptq.runtime.c_build import have_compiler
from tsptq.tflite.reader import parse_tflite
from tsptq.tflite.writer import to_tflite

CFG = ViTConfig(img_size=16, patch_size=4, in_chans=3, num_classes=3, embed_dim=16, depth=2, num_heads=2,
                mlp_hidden=32, mean=(0.5,) * 3, std=(0.25,) * 3, crop_pct=1.0)


@pytest.fixture(scope="module")
def fitted():
    """(tsptq-fc1-o2sf quantization of a tiny random ViT whose fc1 codes are per-channel with shifts 0..2, the model
    input of 24 random images)."""
    torch.manual_seed(0)
    model = VisionTransformer(CFG).eval()
    rng = np.random.default_rng(0)
    imgs = datasets.ImageSet(rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8), np.zeros(24, np.int64), "random")
    graph = Graph.from_model(model)
    qm = quantize(graph, record(graph, imgs.take(16), 8, False), "tsptq-fc1-o2sf", progress=False)
    for b in range(CFG.depth):  # three shift levels on every fc1 output, whatever the selection kept
        q = qm.acts[f"blocks.{b}.fc1"]
        scale = float(q.scale) if not isinstance(q, ChannelPow2) else q.scale
        qm.acts[f"blocks.{b}.fc1"] = ChannelPow2(scale / 4, int(q.zero_point), torch.arange(CFG.mlp_hidden) % 3)
    return qm, datasets.to_model_input(imgs.images, CFG)


def _gelu_ops(im: IntModel):
    return [op for op in im.ops if op.kind == "TSPTQ_GELU_2S"]


def test_the_table_holds_one_row_per_shift_level_made_with_the_simulators_math(fitted):
    qm, _ = fitted
    im = lower(qm)
    ops = _gelu_ops(im)
    assert len(ops) == CFG.depth
    for b, op in enumerate(ops):
        x, lut, in_shift = (im.tensors[i] for i in op.inputs)
        in_q, out_q = qm.acts[f"blocks.{b}.fc1"], qm.acts[f"blocks.{b}.gelu"]
        assert x.quant.details["kind"] == "channel_pow2"
        np.testing.assert_array_equal(in_shift.data, np.arange(CFG.mlp_hidden) % 3)
        assert lut.shape == (3 * 256,)
        codes = torch.arange(-128, 128, dtype=torch.float32)
        for k in range(3):  # row k: GELU of the code's value at shift k, encoded in the output code
            real = (codes - in_q.zero_point) * np.float32(in_q.scale * 2.0**k)
            np.testing.assert_array_equal(lut.data[256 * k:256 * (k + 1)], out_q.encode(F.gelu(real)).numpy())
        assert not np.array_equal(lut.data[:256], lut.data[256:512])  # the rows differ: the levels matter


def test_the_integer_model_runs_byte_for_byte_everywhere(fitted, tmp_path):
    qm, x = fitted
    im = lower(qm)
    data = to_tflite(im)
    xi = im.quantize_input(x.numpy())
    ref = im.run(xi)
    np.testing.assert_array_equal(parse_tflite(data).run(xi), ref)
    # each channel's output is its own level's entry: a table read at one level for all channels would differ
    out, values = im.run(xi, keep=True)
    op = _gelu_ops(im)[0]
    codes, lut, in_shift = values[op.inputs[0]], im.tensors[op.inputs[1]].data, im.tensors[op.inputs[2]].data
    got = values[op.outputs[0]]
    np.testing.assert_array_equal(got, lut[256 * in_shift.astype(np.int64) + codes.astype(np.int64) + 128])
    assert not np.array_equal(got, lut[codes.astype(np.int64) + 128])
    # the faithful simulator: the same logits' codes
    from tsptq.intmodel.faithful import applies, faithful_logits

    assert applies(qm)
    x_codes = torch.from_numpy(xi.astype(np.float32)).permute(0, 3, 1, 2)
    x_in = (x_codes - float(im.input.quant.zero_point[0])) * float(im.input.quant.scale[0])
    faithful = qm.acts["head"].encode(faithful_logits(qm, x_in)).numpy()
    assert np.mean(faithful == ref.astype(np.int32)) >= 0.95  # float64 GELU there, the float32 table here
    if not have_compiler():
        pytest.skip("no C compiler (set CC or install gcc)")
    from tsptq.runtime.c_binding import CModel

    np.testing.assert_array_equal(CModel(data).run(xi), ref)
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    from test_litert_delegate import _run

    from tsptq.runtime.litert import make_interpreter

    path = tmp_path / "gelu-channels.tflite"
    path.write_bytes(data)
    it = make_interpreter(path, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    np.testing.assert_array_equal(_run(it, xi), ref)  # LiteRT's reference kernels + the delegate


def test_the_npu_variant_refuses_it_in_one_line(fitted):
    qm, _ = fitted
    with pytest.raises(QuantizationError, match=r"^--npu ethos-u: tsptq-fc1-o2sf's per-channel fc1 code \(the GELU "
                                                r"input\) has no NPU form yet \(use tsptq or minmax\)$"):
        lower(qm, npu=True)


def _gelu_model(in_shift=None, lut_len=None, in_scales=None) -> IntModel:
    """x (1, 2, 4) int8 -> TSPTQ_GELU_2S -> y int8; ``in_shift``: the third input (None: two inputs)."""
    shifts = np.array([0, 1, 2, 0]) if in_shift is None else np.asarray(in_shift)
    scales = np.float32(0.05) * np.exp2(shifts).astype(np.float32) if in_scales is None else in_scales
    details = {"kind": "channel_pow2", "bits": 8, "base_scale": 0.05, "shifts": shifts.tolist()}
    x_q = QuantParams(np.asarray(scales, np.float32), np.zeros(len(scales), np.int64), axis=-1,
                      details=details if len(scales) > 1 else None)
    levels = int(shifts.max()) + 1
    lut = np.arange(lut_len or 256 * levels).astype(np.int8)
    tensors = [Tensor("x", (1, 2, 4), "int8", x_q), Tensor("lut", lut.shape, "int8", None, lut),
               Tensor("y", (1, 2, 4), "int8", QuantParams(np.array([0.1], np.float32), np.zeros(1, np.int64)))]
    inputs = [0, 1]
    if in_shift is not None:
        tensors.append(Tensor("in_shift", (len(shifts),), "int8", None, shifts.astype(np.int8)))
        inputs.append(3)
    return IntModel(tensors, [Op("TSPTQ_GELU_2S", inputs, [2])], [0], [2], {"method": "test"})


@pytest.mark.parametrize("case,message", [
    ("no in_shift", "op 0 (TSPTQ_GELU_2S): a per-channel input code needs the in_shift input"),
    ("short table", "op 0 (TSPTQ_GELU_2S): the lookup table must have 768 entries (256 per shift level)"),
    ("in_shift past 7", "op 0 (TSPTQ_GELU_2S): in_shift entries must be in 0..7"),
    ("in_shift disagrees", "op 0 (TSPTQ_GELU_2S): bad quantization: in_shift disagrees with the scales of input 'x' "
                           "at channel 1"),
])
def test_both_loaders_refuse_a_bad_table_in_the_same_words(case, message):
    if case == "no in_shift":
        im = _gelu_model()
    elif case == "short table":
        im = _gelu_model([0, 1, 2, 0], lut_len=512)
    elif case == "in_shift past 7":
        im = _gelu_model([0, 1, 8, 0], in_scales=np.float32(0.05) * np.exp2([0, 1, 2, 0]).astype(np.float32))
    else:
        im = _gelu_model([0, 2, 2, 0], in_scales=np.float32(0.05) * np.exp2([0, 1, 2, 0]).astype(np.float32))
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
