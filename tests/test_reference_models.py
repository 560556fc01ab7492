"""The committed reference models: size, and FP32 accuracy measured here (not read from their records)."""
import json

import pytest
import torch

from tsptq.data import datasets

from tsptq.model import zoo
from tsptq.model.train_reference import evaluate as _top1  # the same measurement the training run recorded
from tsptq.errors import ModelError


def test_cifar10_vit_is_microcontroller_sized_and_recorded():
    model = zoo.load_reference("cifar10-vit")
    params = sum(p.numel() for p in model.parameters())
    assert params <= 1_050_000
    record = json.loads(zoo.REFERENCE_MODELS["cifar10-vit"].record_path.read_text())
    assert record["params"] == params and record["seed"] == 0


def test_cifar10_vit_on_the_bundled_sample():
    assert _top1(zoo.load_reference("cifar10-vit"), datasets.load_bundled_sample("test")) >= 70.0


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not datasets.CIFAR10_TARBALL.exists(), reason="needs ../shared/data/cifar10")
@pytest.mark.parametrize("name,at_least", [("cifar10-vit", 75.0), ("cifar10-swin", None)])
def test_full_test_set_accuracy_is_the_recorded_one(name, at_least):
    """The committed weights, loaded and preprocessed here, give exactly the top-1 the training run recorded (and
    cifar10-vit at least its issue's 75%; cifar10-swin's 80% bar is unmet, README)."""
    record = json.loads(zoo.REFERENCE_MODELS[name].record_path.read_text())
    top1 = _top1(zoo.load_reference(name), datasets.load_cifar10("test"))
    assert top1 == pytest.approx(record["test_top1"], abs=0.011)
    if at_least is not None:
        assert top1 >= at_least


@pytest.mark.data
@pytest.mark.skipif(not datasets.FASHION_DIR.exists(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_vit_accuracy():
    assert _top1(zoo.load_reference("fashion-vit"), datasets.load_fashion_mnist("test")) >= 85.0


def test_cifar10_swin_is_a_timm_swin_recorded_by_its_training_run():
    model = zoo.load_reference("cifar10-swin")
    record = json.loads(zoo.REFERENCE_MODELS["cifar10-swin"].record_path.read_text())
    assert record["params"] == sum(p.numel() for p in model.parameters()) and record["seed"] == 0
    assert {"layers.1.downsample.reduction.weight", "layers.0.blocks.1.attn.relative_position_bias_table",
            "head.fc.weight"} <= set(model.state_dict())


def test_cifar10_swin_on_the_bundled_sample():
    # 500 bundled test images; the full test set gave 72.14% after 20 + 2 epochs (the bar is 80%: unmet)
    assert _top1(zoo.load_reference("cifar10-swin"), datasets.load_bundled_sample("test")) >= 65.0


def test_unknown_reference_model_is_a_clear_error():
    with pytest.raises(ModelError, match="unknown reference model"):
        zoo.load_reference("imagenet-vit-huge")


def test_weights_load_into_the_timm_layout():
    model = zoo.load_reference("fashion-vit")
    keys = set(model.state_dict())
    assert {"patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.0.attn.qkv.weight", "blocks.3.mlp.fc2.bias",
            "norm.weight", "head.weight"} <= keys
    assert torch.isfinite(model(torch.zeros(1, 1, 28, 28))).all()


ROBUSTNESS = ("robust-ls-mlp2", "robust-p8-distilled", "robust-fashion-deep", "robust-heldout-avg")


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("name", ROBUSTNESS)
def test_robustness_models_load_with_their_recipe_and_recorded_accuracy(name):
    """Each robustness model loads, is small, differs from cifar10-vit's recipe, and its committed weights give
    the top-1 its training run recorded on the full test set (when the data set is here)."""
    spec = zoo.REFERENCE_MODELS[name]
    model = zoo.load_reference(name)
    record = json.loads(spec.record_path.read_text())
    assert record["params"] == sum(p.numel() for p in model.parameters()) <= 1_500_000
    assert spec.config != zoo.REFERENCE_MODELS["cifar10-vit"].config
    present = datasets.FASHION_DIR.exists() if spec.data == "fashion" else datasets.CIFAR10_TARBALL.exists()
    if not present:
        pytest.skip(f"needs the {spec.data} data set")
    assert _top1(model, spec.load_data("test")) == pytest.approx(record["test_top1"], abs=0.011)


def test_robustness_recipes_differ_from_each_other():
    from tsptq.model.train_reference import RECIPES

    recipes = [RECIPES[n] for n in ROBUSTNESS + ("cifar10-vit",)]
    configs = [zoo.REFERENCE_MODELS[n].config for n in ROBUSTNESS + ("cifar10-vit",)]
    assert len({json.dumps(r, sort_keys=True) for r in recipes}) == len(recipes)
    assert len({(c.mean, c.embed_dim, c.depth, c.patch_size, c.mlp_hidden) for c in configs}) == len(configs)
