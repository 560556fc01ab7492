"""Model formats users have: Hugging Face ViT/DeiT/DINOv2 checkpoints (built with the real `transformers`, random
weights) load and give transformers' own outputs; timm hub folders bring their preprocessing; torch's
TransformerEncoder is refused with what is supported; --mean/--std/--crop-pct/--interpolation reach the model."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tsptq.cli.main import build_parser
from tsptq.cli.model_args import preprocess_from_args, source_from_args
from tsptq.data import datasets
from tsptq.errors import ModelError
from tsptq.model.checkpoint import load_checkpoint, resolve_model
from tsptq.model.vit import create_model

transformers = pytest.importorskip("transformers")  # the `test` extra pins it: installed wherever `make test` runs

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
             patch_size=8)


def _random(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


def _images(n=3, size=32):
    torch.manual_seed(1)
    return torch.randn(n, 3, size, size)


def test_hf_distilled_deit_folder_gives_transformers_logits(tmp_path):
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    hf = _random(DeiTForImageClassificationWithTeacher(DeiTConfig(**SMALL, num_labels=5)))
    hf.save_pretrained(tmp_path)  # the hub layout: deit.encoder.layer.N.attention.attention.query.weight ...
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3, "do_center_crop": True,
         "size": {"height": 256, "width": 256}, "crop_size": {"height": 224, "width": 224}}))
    ours = load_checkpoint(tmp_path)
    assert ours.cfg.dist_token and ours.cfg.num_heads == 2 and ours.cfg.ln_eps == 1e-12
    assert ours.cfg.mean == (0.5, 0.5, 0.5) and ours.cfg.crop_pct == 0.875 and ours.cfg.interpolation == "bicubic"
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(pixel_values=x).logits, rtol=1e-5, atol=1e-5)
    # the command line wins over the folder's preprocessing
    assert load_checkpoint(tmp_path, preprocess={"mean": (0.1,), "interpolation": "bilinear"}).cfg.mean == (0.1,) * 3


def test_hf_vit_state_dict_in_transformers_5_names_without_qkv_bias(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    hf = _random(ViTForImageClassification(ViTConfig(**SMALL, num_labels=4, qkv_bias=False)))
    assert any(".layers.0.attention.q_proj.weight" in k for k in hf.state_dict())  # the in-memory names of v5
    torch.save(hf.state_dict(), tmp_path / "weights.bin")
    (tmp_path / "config.json").write_text(json.dumps(hf.config.to_dict()))
    ours = load_checkpoint(tmp_path / "weights.bin")
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(pixel_values=x).logits, rtol=1e-5, atol=1e-5)


def test_hf_dinov2_backbone_with_its_position_grid_resized(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    hf = _random(Dinov2Model(Dinov2Config(**{k: v for k, v in SMALL.items() if k != "intermediate_size"})))
    hf.save_pretrained(tmp_path)
    ours = load_checkpoint(tmp_path, img_size=48)  # transformers interpolates the 4x4 grid to 6x6 for 48 px inputs
    assert ours.cfg.layer_scale and ours.cfg.num_classes == 0 and ours.cfg.img_size == 48
    x = _images(size=48)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x)[:, 0], hf(pixel_values=x).pooler_output,
                                   rtol=1e-4, atol=1e-4)


def test_hf_dinov2_classifier_reads_the_class_token_and_the_patch_mean(tmp_path):
    """Dinov2ForImageClassification's head reads [class token, mean of the patch tokens]: global_pool token+avg."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    hf = _random(Dinov2ForImageClassification(Dinov2Config(**{k: v for k, v in SMALL.items()
                                                               if k != "intermediate_size"}, num_labels=3)))
    hf.save_pretrained(tmp_path)
    ours = load_checkpoint(tmp_path)
    assert ours.cfg.global_pool == "token+avg" and ours.head.in_features == 64
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(pixel_values=x).logits, rtol=1e-4, atol=1e-4)


def test_what_cannot_be_mapped_is_named(tmp_path):
    from transformers import DeiTConfig, DeiTForImageClassification

    hf = DeiTForImageClassification(DeiTConfig(**SMALL, num_labels=3))  # dist token, one head on the class token
    hf.save_pretrained(tmp_path / "deit")
    with pytest.raises(ModelError, match="DeiTForImageClassification.*not supported"):
        load_checkpoint(tmp_path / "deit")
    sd = {k: v for k, v in hf.state_dict().items()}
    sd["deit.encoder.layer.0.attention.attention.rel_pos_bias"] = torch.zeros(3)
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "odd.safetensors")
    with pytest.raises(ModelError, match=r"could not be mapped to a ViT: deit\.encoder\.layer\.0\.attention\.attention"
                                         r"\.rel_pos_bias"):
        load_checkpoint(tmp_path / "odd.safetensors")
    (tmp_path / "swin").mkdir()
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, tmp_path / "swin" / "model.safetensors")
    (tmp_path / "swin" / "config.json").write_text(json.dumps({"model_type": "swin"}))
    with pytest.raises(ModelError, match="model_type 'swin' is not supported"):
        load_checkpoint(tmp_path / "swin")


def test_a_post_norm_torch_encoder_is_refused_with_what_is_supported(tmp_path):
    layer = torch.nn.TransformerEncoderLayer(32, 2, 64, batch_first=True, norm_first=False)
    encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    sd = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    sd["patch_embed.proj.weight"] = torch.zeros(32, 3, 8, 8)
    torch.save(sd, tmp_path / "postnorm.pth")
    with pytest.raises(ModelError, match="TransformerEncoder.*post-norm.*supported: timm ViT/DeiT layouts and Hugging "
                                         "Face ViT/DeiT/DINOv2") as e:
        load_checkpoint(tmp_path / "postnorm.pth")
    assert "\n" not in str(e.value)


def test_a_timm_hub_folder_brings_its_pretrained_cfg(tmp_path):
    model = create_model("deit_tiny_patch16_224")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(
        {"architecture": "deit_tiny_patch16_224", "num_classes": 1000,
         "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_pct": 0.9,
                            "interpolation": "bilinear", "license": "apache-2.0"}}))
    cfg = load_checkpoint(tmp_path, heads=3).cfg
    assert (cfg.mean, cfg.std, cfg.crop_pct, cfg.interpolation) == ((0.5,) * 3, (0.5,) * 3, 0.9, "bilinear")


def test_preprocessing_options_reach_every_model_kind():
    ap = build_parser()
    args = ap.parse_args(["export", "--model", "cifar10-vit", "--mean", "0.5", "--std", "0.25,0.5,0.5",
                          "--crop-pct", "0.9", "--interpolation", "nearest", "--out", "x.tflite"])
    pre = preprocess_from_args(args)
    assert pre == {"mean": (0.5,), "std": (0.25, 0.5, 0.5), "crop_pct": 0.9, "interpolation": "nearest"}
    assert source_from_args(args).preprocess == pre
    cfg = resolve_model("cifar10-vit", preprocess=pre).cfg
    assert (cfg.mean, cfg.std, cfg.crop_pct, cfg.interpolation) == ((0.5,) * 3, (0.25, 0.5, 0.5), 0.9, "nearest")
    assert resolve_model("cifar10-vit").cfg.mean != (0.5,) * 3  # the reference model itself is untouched
    assert resolve_model("deit_tiny_patch16_224", preprocess={"std": (0.3,)}).cfg.std == (0.3,) * 3
    assert preprocess_from_args(ap.parse_args(["export", "--out", "x.tflite"])) is None
    for bad, message in (({"mean": (0.1, 0.2)}, "needs 3 value"), ({"std": (0.0,)}, "must be positive"),
                         ({"crop_pct": 1.5}, r"must be a number in \(0, 1\]"), ({"interpolation": "lanczos"}, "one of")):
        with pytest.raises(ModelError, match=message):
            resolve_model("cifar10-vit", preprocess=bad)
    with pytest.raises(SystemExit):
        ap.parse_args(["export", "--mean", "0.5,abc", "--out", "x.tflite"])


def test_the_interpolation_changes_the_resize():
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    cfg = resolve_model("deit_tiny_patch16_224", img_size=32).cfg
    bicubic = datasets.preprocess_image(img, cfg)
    bilinear = datasets.preprocess_image(img, resolve_model("deit_tiny_patch16_224", img_size=32,
                                                            preprocess={"interpolation": "bilinear"}).cfg)
    assert bicubic.shape == bilinear.shape == (32, 32, 3) and not np.array_equal(bicubic, bilinear)


def test_processor_configs_in_their_variants():
    from tsptq.model.hf_layout import preprocess_from_processor, processor_input_size

    dinov2 = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3,
              "do_center_crop": True, "size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}}
    assert preprocess_from_processor(dinov2)["crop_pct"] == 0.875 and processor_input_size(dinov2) == 224
    squash = {"do_resize": True, "size": {"height": 384, "width": 384}, "resample": 2}
    assert preprocess_from_processor(squash) == {"interpolation": "bilinear", "crop_pct": 1.0}
    assert processor_input_size(squash) == 384
    default_crop = {"do_center_crop": True, "size": 256}  # no crop_size: transformers crops to 224
    assert preprocess_from_processor(default_crop)["crop_pct"] == 224 / 256
    assert preprocess_from_processor({"resample": 1})["interpolation"] == "lanczos"  # refused when checked


def test_hf_dinov2_takes_the_processors_input_size(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    hf = _random(Dinov2Model(Dinov2Config(**{k: v for k, v in SMALL.items() if k != "intermediate_size"})))
    hf.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"do_center_crop": True, "size": {"shortest_edge": 28}, "crop_size": {"height": 24, "width": 24}}))
    ours = load_checkpoint(tmp_path)  # the grid of 32 px is resized to the 24 px the processor hands the model
    assert ours.cfg.img_size == 24 and ours.cfg.crop_pct == 24 / 28 and ours.cfg.ln_eps == 1e-6
    x = _images(size=24)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x)[:, 0], hf(pixel_values=x).pooler_output,
                                   rtol=1e-4, atol=1e-4)


def test_a_bad_value_in_a_file_is_named_and_the_options_replace_it(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    ViTForImageClassification(ViTConfig(**SMALL, num_labels=3)).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 1, "do_center_crop": True,
         "size": {"shortest_edge": 224}, "crop_size": {"height": 256, "width": 256}}))
    with pytest.raises(ModelError, match=r"mean needs 3 value.*read from .*preprocessor_config\.json; pass --mean"):
        load_checkpoint(tmp_path)
    cfg = load_checkpoint(tmp_path, preprocess={"mean": (0.5,), "crop_pct": 1.0, "interpolation": "bicubic"}).cfg
    assert (cfg.mean, cfg.crop_pct, cfg.interpolation, cfg.ln_eps) == ((0.5,) * 3, 1.0, "bicubic", 1e-12)


def test_a_config_json_beside_a_plain_checkpoint_is_not_read(tmp_path):
    model = create_model("deit_tiny_patch16_224", img_size=32)
    torch.save(model.state_dict(), tmp_path / "m.pth")
    (tmp_path / "config.json").write_text("[1, 2]")  # anything: it is not this checkpoint's
    assert load_checkpoint(tmp_path / "m.pth", heads=3).cfg.embed_dim == 192


def _export(model, path, size=32):
    torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(path), dynamo=False, opset_version=17)
    return path


@pytest.mark.parametrize("kind", ["plain", "layer_scale", "distilled"])
def test_timm_onnx_exports_map_back_exactly(tmp_path, kind):
    model = _random(create_model("deit_tiny_patch16_224", img_size=32, depth=2, num_classes=7,
                                 layer_scale=kind == "layer_scale", dist_token=kind == "distilled"))
    ours = load_checkpoint(_export(model, tmp_path / "m.onnx"))  # checked against onnxruntime inside
    assert (ours.cfg.num_heads, ours.cfg.ln_eps, ours.cfg.layer_scale, ours.cfg.dist_token) == \
        (3, 1e-6, kind == "layer_scale", kind == "distilled")
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), model(x), rtol=0, atol=1e-6)


def test_hf_deit_state_dict_and_its_onnx_export_give_the_same_logits(tmp_path):
    """The issue's bar: an HF-layout DeiT (random weights) and its ONNX export load to the same model."""
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    hf = _random(DeiTForImageClassificationWithTeacher(DeiTConfig(**SMALL, num_labels=5)))
    hf.save_pretrained(tmp_path / "hf")
    torch.onnx.export(hf, (torch.randn(1, 3, 32, 32),), str(tmp_path / "deit.onnx"), dynamo=False, opset_version=17)
    from_dict, from_onnx = load_checkpoint(tmp_path / "hf"), load_checkpoint(tmp_path / "deit.onnx")
    assert from_onnx.cfg.num_heads == 2 and from_onnx.cfg.ln_eps == 1e-12 and from_onnx.cfg.dist_token
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(from_onnx(x), from_dict(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(from_onnx(x), hf(pixel_values=x).logits, rtol=1e-5, atol=1e-5)


def test_onnx_exports_that_do_not_fit_are_refused_with_the_reason(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    tanh = _random(ViTForImageClassification(ViTConfig(**SMALL, num_labels=3, hidden_act="gelu_pytorch_tanh")))
    torch.onnx.export(tanh, (torch.randn(1, 3, 32, 32),), str(tmp_path / "tanh.onnx"), dynamo=False, opset_version=17)
    with pytest.raises(ModelError, match="tanh-approximate GELU"):
        load_checkpoint(tmp_path / "tanh.onnx")
    model = _random(create_model("deit_tiny_patch16_224", img_size=32, depth=1, num_classes=3))
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(tmp_path / "old.onnx"), dynamo=False, opset_version=14)
    with pytest.raises(ModelError, match="export with opset >= 17 so LayerNorm stays one op"):
        load_checkpoint(tmp_path / "old.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07junk" * 10)
    with pytest.raises(ModelError, match="not a readable ONNX model|not a pre-norm ViT export"):
        load_checkpoint(tmp_path / "junk.onnx")
