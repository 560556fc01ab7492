"""Heads that read the class token and the mean of the patch tokens (``global_pool="token+avg"``: DINOv2's linear
classifiers, Hugging Face's Dinov2ForImageClassification, the dinov2-s14 probe), through the chain: the model and its
checkpoint, the simulator, the integer model (TSPTQ_TOKEN_MEAN, runtime_c/src/ops/token_mean.c), the file, both
loaders, the C runtime and LiteRT with the delegate, byte for byte."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tsptq.data import datasets
from tsptq.errors import ModelError
from tsptq.intmodel import kernels as K
from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
from tsptq.intmodel.lower import lower
from tsptq.model.checkpoint import infer_config
from tsptq.model.vit import ViTConfig, VisionTransformer
from tsptq.quant.observers import record
from tsptq.quant.quantize import quantize
from tsptq.quant.qvit import Graph
from tsptq.runtime.c_build import have_compiler
from tsptq.tflite.reader import parse_tflite
from tsptq.tflite.writer import to_tflite

CFG = ViTConfig(img_size=16, patch_size=4, in_chans=3, num_classes=3, embed_dim=16, depth=1, num_heads=2,
                mlp_hidden=32, mean=(0.5,) * 3, std=(0.25,) * 3, crop_pct=1.0, global_pool="token+avg")


@pytest.fixture(scope="module")
def pooled():
    """(model, graph, calibration record, 24 random images as model input), seeded."""
    torch.manual_seed(0)
    model = VisionTransformer(CFG).eval()
    rng = np.random.default_rng(0)
    imgs = datasets.ImageSet(rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8), np.zeros(24, np.int64), "random")
    graph = Graph.from_model(model)
    return model, graph, record(graph, imgs.take(16), 8, False), datasets.to_model_input(imgs.images, CFG)


def test_the_head_reads_the_class_token_and_the_patch_mean(pooled):
    model, graph, _, x = pooled
    assert model.head.in_features == 2 * CFG.embed_dim
    with torch.no_grad():
        tokens = model.forward_features(x)
        want = model.head(torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], -1))
        torch.testing.assert_close(model(x), want)
        fp32 = quantize(graph, None, "fp32")  # the simulator's float forward is the model's
        torch.testing.assert_close(fp32(x), want, rtol=1e-5, atol=1e-5)


def test_a_checkpoint_says_its_pool_by_its_head_width(pooled):
    sd = pooled[0].state_dict()
    assert infer_config(sd, heads=2).global_pool == "token+avg"
    token = VisionTransformer(ViTConfig(**{**CFG.to_dict(), "global_pool": "token"})).state_dict()
    assert infer_config(token, heads=2).global_pool == "token"
    sd = dict(sd, **{"head.weight": torch.zeros(3, 3 * CFG.embed_dim)})
    with pytest.raises(ModelError, match=r"head.weight reads 48 features; .* the class token: 16, or the class "
                                         r"token and the patch-token mean: 32"):
        infer_config(sd, heads=2)
    with pytest.raises(ValueError, match="global_pool"):
        VisionTransformer(ViTConfig(**{**CFG.to_dict(), "global_pool": "avg"}))


def test_token_mean_rounds_half_away_from_zero_around_the_zero_point():
    x = np.array([[[1, -1, 0, 0, -128], [2, -2, 1, 1, -128]]], np.int8)  # (1, 2 tokens, 5 channels)
    # means of x - zp with zp 0: 1.5 -> 2, -1.5 -> -2, 0.5 -> 1; with zp 1: -0.5 -> -1 (+1 = 0) ...
    np.testing.assert_array_equal(K.token_mean(x, 0, 0), [[[2, -2, 1, 1, -128]]])
    np.testing.assert_array_equal(K.token_mean(x, 0, 1), [[[2, -2, 0, 0, -128]]])
    np.testing.assert_array_equal(K.token_mean(x, 1, 0), x[:, 1:])  # one token: itself
    x = np.full((1, 255, 1), 127, np.int8)
    np.testing.assert_array_equal(K.token_mean(x, 0, -128), [[[127]]])  # the largest sums stay in range


@pytest.mark.parametrize("method", ["minmax", "tsptq"])
def test_the_integer_model_runs_byte_for_byte_everywhere(pooled, method, tmp_path):
    """minmax: the norm's per-tensor code, a builtin FULLY_CONNECTED head; tsptq: its channel code (O-2SF), read by
    TSPTQ_FC_2S through a (1, 2D) row whose scales are the norm's twice."""
    _, graph, cal, x = pooled
    qm = quantize(graph, cal, method, progress=False)
    im = lower(qm)
    assert [op.kind for op in im.ops][-5:-1] == ["STRIDED_SLICE", "TSPTQ_TOKEN_MEAN", "CONCATENATION", "RESHAPE"]
    head_input = im.tensors[im.ops[-1].inputs[0]]
    assert head_input.shape == (1, 32) and head_input.n_scales == (32 if method == "tsptq" else 1)
    data = to_tflite(im)
    back = parse_tflite(data)
    xi = im.quantize_input(x.numpy())
    ref = im.run(xi)
    np.testing.assert_array_equal(back.run(xi), ref)
    # the head's input row: the class token, then the mean of tokens 1.. (not 0..) of the norm's codes
    out, values = im.run(xi, keep=True)
    norm = im.tensor("norm")
    codes = values[im.tensors.index(norm)]
    row = values[im.ops[-1].inputs[0]]
    np.testing.assert_array_equal(row[:, :16], codes[:, 0])
    np.testing.assert_array_equal(row[:, 16:], K.token_mean(codes, 1, norm.zp)[:, 0])
    assert not np.array_equal(K.token_mean(codes, 1, norm.zp), K.token_mean(codes, 0, norm.zp))
    # the faithful simulator runs the same kernel: the same logits, given the file's input codes
    from tsptq.intmodel.faithful import faithful_logits

    x_codes = torch.from_numpy(im.quantize_input(x.numpy()).astype(np.float32)).permute(0, 3, 1, 2)
    x_in = (x_codes - float(im.input.quant.zero_point[0])) * float(im.input.quant.scale[0])
    faithful = faithful_logits(qm, x_in).numpy()
    np.testing.assert_array_equal(qm.acts["head"].encode(torch.from_numpy(faithful)).numpy(), ref.astype(np.int32))
    # and the float32 simulator is the same model up to rounding: the same top class on most images
    assert np.mean(im.dequantize_output(ref).argmax(1) == qm(x).numpy().argmax(1)) >= 0.9
    if not have_compiler():
        pytest.skip("no C compiler (set CC or install gcc)")
    from tsptq.runtime.c_binding import CModel
    from tsptq.runtime.litert import make_interpreter

    np.testing.assert_array_equal(CModel(data).run(xi), ref)
    # tsptq eval's c engine: the logits, and the class token (the first half of the head's input row)
    from tsptq.evaluation.engines import CRunner

    logits, cls = CRunner(data)(x)
    want = (values[im.tensors.index(norm)][:, 0].astype(np.float32) - norm.zp) * norm.quant.scale.astype(np.float32)
    np.testing.assert_array_equal(cls, want)
    np.testing.assert_array_equal(logits, im.dequantize_output(ref))
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    path = tmp_path / f"pooled-{method}.tflite"
    path.write_bytes(data)
    from test_litert_delegate import _run

    it = make_interpreter(path, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    np.testing.assert_array_equal(_run(it, xi), ref)  # LiteRT's reference kernels + the delegate


def _mean_model(y_q, y_shape=(1, 1, 3), first=1) -> IntModel:
    """A (1, 2, 2, 3) int8 image reshaped to 4 tokens of 3 channels, then TSPTQ_TOKEN_MEAN."""
    x_q = QuantParams(np.array([0.05], np.float32), np.array([-3], np.int64))
    tensors = [Tensor("x", (1, 2, 2, 3), "int8", x_q),
               Tensor("shape", (3,), "int32", None, np.array([1, 4, 3], np.int32)),
               Tensor("tokens", (1, 4, 3), "int8", x_q), Tensor("y", tuple(y_shape), "int8", y_q)]
    ops_ = [Op("RESHAPE", [0, 1], [2], {"new_shape": [1, 4, 3]}), Op("TSPTQ_TOKEN_MEAN", [2], [3], {"first": first})]
    return IntModel(tensors, ops_, [0], [3], {"method": "test"})


@pytest.mark.parametrize("case,message", [
    ("another scale", "op 1 (TSPTQ_TOKEN_MEAN): output must have the quantization of the input (the mean keeps the "
                      "input's code)"),
    ("another zero point", "op 1 (TSPTQ_TOKEN_MEAN): output must have the quantization of the input (the mean keeps "
                           "the input's code)"),
    ("first past the tokens", "op 1 (TSPTQ_TOKEN_MEAN): first token 4 out of range for 4 tokens (at most 1048576)"),
    ("two tokens out", "op 1 (TSPTQ_TOKEN_MEAN): output shape [1, 2, 3] is not [1, 1, 3]"),
])
def test_both_loaders_refuse_a_bad_token_mean_with_the_same_message(case, message):
    from tsptq.errors import ModelFileError, RuntimeCError

    same = QuantParams(np.array([0.05], np.float32), np.array([-3], np.int64))
    model = {"another scale": lambda: _mean_model(QuantParams(np.array([0.06], np.float32), np.array([-3], np.int64))),
             "another zero point": lambda: _mean_model(QuantParams(np.array([0.05], np.float32), np.array([0], np.int64))),
             "first past the tokens": lambda: _mean_model(same, first=4),
             "two tokens out": lambda: _mean_model(same, y_shape=(1, 2, 3))}[case]()
    data = to_tflite(model)
    with pytest.raises(ModelFileError) as py:
        parse_tflite(data)
    assert str(py.value).startswith(message), str(py.value)
    if have_compiler():
        from tsptq.runtime.c_binding import CModel

        with pytest.raises(RuntimeCError) as c:
            CModel(data, name="f")
        assert str(c.value)[3:].rsplit(" [", 1)[0] == str(py.value)
    good = to_tflite(_mean_model(same))
    x = np.random.default_rng(0).integers(-128, 128, (5, 2, 2, 3)).astype(np.int8)
    np.testing.assert_array_equal(parse_tflite(good).run(x), K.token_mean(x.reshape(5, 4, 3), 1, -3))
