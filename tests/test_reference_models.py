"""The committed reference models: size, and FP32 accuracy measured here (not read from their records)."""
import json

import pytest
import torch

from tsptq.calib import datasets, zoo
from tsptq.calib.train_reference import evaluate as _top1  # the same measurement the training run recorded
from tsptq.errors import ModelError


def test_cifar10_vit_is_microcontroller_sized_and_recorded():
    model = zoo.load_reference("cifar10-vit")
    params = sum(p.numel() for p in model.parameters())
    assert params <= 1_050_000
    record = json.loads(zoo.REFERENCE_MODELS["cifar10-vit"].record_path.read_text())
    assert record["params"] == params and record["seed"] == 0


def test_cifar10_vit_on_the_bundled_sample():
    assert _top1(zoo.load_reference("cifar10-vit"), datasets.load_bundled_sample("test")) >= 70.0


@pytest.mark.skipif(not datasets.CIFAR10_TARBALL.exists(), reason="needs ../shared/data/cifar10")
def test_cifar10_vit_full_test_set_accuracy_is_the_recorded_one():
    """The committed weights, loaded and preprocessed here, give exactly the top-1 the training run recorded."""
    record = json.loads(zoo.REFERENCE_MODELS["cifar10-vit"].record_path.read_text())
    top1 = _top1(zoo.load_reference("cifar10-vit"), datasets.load_cifar10("test"))
    assert top1 == pytest.approx(record["test_top1"], abs=0.011)
    assert top1 >= 75.0  # the issue asks for at least 75%


@pytest.mark.skipif(not datasets.FASHION_DIR.exists(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_vit_accuracy():
    assert _top1(zoo.load_reference("fashion-vit"), datasets.load_fashion_mnist("test")) >= 85.0


def test_unknown_reference_model_is_a_clear_error():
    with pytest.raises(ModelError, match="unknown reference model"):
        zoo.load_reference("imagenet-vit-huge")


def test_weights_load_into_the_timm_layout():
    model = zoo.load_reference("fashion-vit")
    keys = set(model.state_dict())
    assert {"patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.0.attn.qkv.weight", "blocks.3.mlp.fc2.bias",
            "norm.weight", "head.weight"} <= keys
    assert torch.isfinite(model(torch.zeros(1, 1, 28, 28))).all()
