"""The stock-converter baseline (PyTorch -> ONNX -> onnx2tf full-integer int8 -> LiteRT) on the bundled cifar10-vit.

One onnx2tf run (about a minute: it also writes float, float16, dynamic-range and int16-activation models) feeds
every test. `make test` installs the converter (.venv/.converter); elsewhere these tests are skipped, except in CI.
"""
import os
import sys

import numpy as np
import pytest
import torch

from tsptq.evaluation import stock_converter
from tsptq.data import datasets
from tsptq.model import zoo
from tsptq.errors import DataError
from tsptq.evaluation.stock_converter import ConverterError

MISSING = stock_converter.missing_packages()
needs_converter = pytest.mark.skipif(bool(MISSING) and not os.environ.get("CI"),
                                     reason=f"converter not installed ({', '.join(MISSING)}): make .venv/.converter")
EVAL_N = 200
DEPTH, LAYERNORMS = 6, 13  # cifar10-vit: 6 blocks, 2 LayerNorms each + the final one


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    model = zoo.load_reference("cifar10-vit")
    out = tmp_path_factory.mktemp("stock") / "cifar10-vit-int8.tflite"
    info = stock_converter.convert(model, datasets.load_bundled_sample("train").images, out)
    return model, out, info


@pytest.mark.slow
@needs_converter
def test_full_integer_model_with_layernorm_and_gelu_split(converted):
    model, out, info = converted
    assert out.read_bytes()[4:8] == b"TFL3"
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # atomic write leaves no temporary file
    assert info["calib_images"] == 64
    hist = info["op_histogram"]
    # Every op runs in int8: no float op, not even a QUANTIZE/DEQUANTIZE pair at the edges.
    assert info["float_ops"] == []
    assert "QUANTIZE" not in hist and "DEQUANTIZE" not in hist
    assert not [op for op in hist if op.startswith("CUSTOM") or "FLEX" in op.upper()]
    assert [(t["dtype"], t["shape"]) for t in info["inputs"]] == [("int8", [1, 32, 32, 3])]
    assert [(t["dtype"], t["shape"]) for t in info["outputs"]] == [("int8", [1, 10])]
    # LayerNorm has no int8 kernel: each one becomes MEAN, SQUARED_DIFFERENCE, MEAN, RSQRT, SUB, MUL...
    assert hist["MEAN"] == 2 * LAYERNORMS
    assert hist["SQUARED_DIFFERENCE"] == hist["RSQRT"] == hist["SUB"] == LAYERNORMS
    # ...tanh-GELU is a TANH chain, attention is int8 BATCH_MATMUL + SOFTMAX.
    assert hist["TANH"] == hist["SOFTMAX"] == DEPTH
    assert hist["BATCH_MATMUL"] == 2 * DEPTH
    assert "GELU" not in hist and "LAYER_NORM" not in hist
    assert hist["FULLY_CONNECTED"] == 4 * DEPTH + 1 and hist["CONV_2D"] == 1
    assert info["onnx_ops"].get("Erf", 0) == 0 and info["onnx_ops"]["Tanh"] == DEPTH


@pytest.mark.slow
@needs_converter
def test_int8_tflite_tracks_fp32_on_bundled_test_images(converted):
    model, out, _ = converted
    test = datasets.load_bundled_sample("test").take(EVAL_N)
    logits = stock_converter.run_tflite(out, test.images, model.cfg)
    assert logits.shape == (EVAL_N, 10) and logits.dtype == np.float32
    with torch.no_grad():
        ref = model(datasets.to_model_input(test.images, model.cfg)).numpy()
    agreement = float((logits.argmax(1) == ref.argmax(1)).mean())
    top1, ref_top1 = float((logits.argmax(1) == test.labels).mean()), float((ref.argmax(1) == test.labels).mean())
    # Measured: 98.0% agreement, top-1 74.0% vs FP32 73.5% (8-bit on this small ViT loses next to nothing).
    assert agreement >= 0.95
    assert abs(top1 - ref_top1) <= 0.03
    # The logits stay close to FP32's (measured: mean |error| 5% of mean |logit|; the float32 TFLite: 0.05%).
    assert np.abs(logits - ref).mean() < 0.1 * np.abs(ref).mean()
    # Same answer from normalized float NCHW input.
    again = stock_converter.run_tflite(out, datasets.to_model_input(test.images[:8], model.cfg), model.cfg)
    np.testing.assert_array_equal(again, logits[:8])


@pytest.mark.slow
@needs_converter
def test_run_tflite_rejects_a_model_for_another_input_size(converted):
    model, out, _ = converted
    fashion = zoo.REFERENCE_MODELS["fashion-vit"].config
    with pytest.raises(ConverterError, match="expected NHWC"):
        stock_converter.run_tflite(out, np.zeros((1, 28, 28, 1), np.uint8), fashion)


def test_missing_onnx2tf_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx2tf", None)  # find_spec -> None: as if not installed
    model = zoo.load_reference("cifar10-vit")
    with pytest.raises(ConverterError, match=r"onnx2tf.*'converter' extra.*--no-deps onnx2tf=="):
        stock_converter.convert(model, datasets.load_bundled_sample("train").images[:2], tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()


def test_not_a_tflite_file_is_a_clear_error(tmp_path):
    pytest.importorskip("ai_edge_litert")
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(ConverterError, match="TFL3"):
        stock_converter.analyze(bad)


@pytest.mark.slow
@needs_converter
def test_onnx2tf_failure_reports_the_log_tail(monkeypatch, tmp_path):
    # An unrunnable model: onnx2tf exits with an error; the message carries its last log lines.
    def broken_export(model, path, opset=stock_converter.OPSET):
        path.write_bytes(b"not an onnx file")
        return {}

    monkeypatch.setattr(stock_converter, "export_onnx", broken_export)
    model = zoo.load_reference("cifar10-vit")
    with pytest.raises(ConverterError, match=r"onnx2tf failed .*last lines:\n") as e:
        stock_converter.convert(model, datasets.load_bundled_sample("train").images[:2], tmp_path / "m.tflite",
                                work_dir=tmp_path / "work")
    assert "onnx2tf.log" in str(e.value) and (tmp_path / "work" / "onnx2tf.log").is_file()
    assert not (tmp_path / "m.tflite").exists()


def test_calibration_images_must_be_images():
    model = zoo.load_reference("cifar10-vit")
    with pytest.raises(DataError):
        stock_converter._model_input(np.zeros((2, 32, 32, 3), np.float64), model.cfg)
