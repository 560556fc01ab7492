"""tsptq.model.checkpoint: checkpoint files, names and errors -> VisionTransformer."""
import pytest
import torch
from safetensors.torch import save_file

from tsptq.model.checkpoint import infer_config, load_checkpoint, load_state_dict, resolve_model
from tsptq.errors import ModelError
from tsptq.model.vit import NAMED_CONFIGS, ViTConfig, VisionTransformer

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_hidden=96, num_classes=10)


def tiny(**overrides) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():  # make LayerScale/tokens non-trivial so a wrong load would show in the outputs
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def assert_same_outputs(a: VisionTransformer, b: VisionTransformer) -> None:
    x = torch.randn(2, a.cfg.in_chans, a.cfg.img_size, a.cfg.img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def save(sd: dict, path) -> None:
    if str(path).endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    else:
        torch.save(sd, path)


@pytest.mark.parametrize("name,wrap", [
    ("plain.pth", lambda sd: sd),
    ("wrapped.pt", lambda sd: {"model": sd, "epoch": torch.tensor(3)}),
    ("ema.pth", lambda sd: {"model_ema": sd}),
    ("nested.bin", lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}),
    ("dataparallel.pth", lambda sd: {f"module.{k}": v for k, v in sd.items()}),
    ("weights.safetensors", lambda sd: sd),
])
def test_round_trip(tmp_path, name, wrap):
    model = tiny()
    save(wrap(model.state_dict()), tmp_path / name)
    loaded = load_checkpoint(tmp_path / name, heads=3)
    cfg = loaded.cfg
    assert (cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_hidden,
            cfg.num_classes, cfg.layer_scale, cfg.dist_token) == (32, 8, 3, 48, 2, 3, 96, 10, False, False)
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.crop_pct == 0.875
    assert not loaded.training
    assert_same_outputs(model, loaded)


def test_distilled_round_trip(tmp_path):
    model = tiny(dist_token=True)
    save(model.state_dict(), tmp_path / "deit_distilled.pth")
    loaded = load_checkpoint(tmp_path / "deit_distilled.pth", heads=3)
    assert loaded.cfg.dist_token and loaded.head_dist is not None and loaded.cfg.img_size == 32
    assert_same_outputs(model, loaded)


@pytest.mark.parametrize("old_names", [False, True])
def test_layer_scale_round_trip(tmp_path, old_names):
    model = tiny(layer_scale=True)
    sd = model.state_dict()
    if old_names:  # CaiT / older DINO naming
        sd = {k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2"): v for k, v in sd.items()}
        assert "blocks.1.gamma_2" in sd
    save(sd, tmp_path / "ls.safetensors")
    loaded = load_checkpoint(tmp_path / "ls.safetensors", heads=3)
    assert loaded.cfg.layer_scale
    assert_same_outputs(model, loaded)


def test_headless_feature_model():
    cfg = infer_config(tiny(num_classes=0).state_dict(), heads=3)
    assert cfg.num_classes == 0


def test_named_config_at_real_size(tmp_path):
    model = resolve_model("deit_tiny_patch16_224", seed=0)
    save(model.state_dict(), tmp_path / "deit_tiny.pth")
    loaded = load_checkpoint(tmp_path / "deit_tiny.pth")  # heads inferred: 192 // 64
    cfg = loaded.cfg
    assert (cfg.embed_dim, cfg.depth, cfg.patch_size, cfg.img_size, cfg.num_classes, cfg.num_heads, cfg.mlp_hidden) == \
        (192, 12, 16, 224, 1000, 3, 768)
    assert cfg == NAMED_CONFIGS["deit_tiny_patch16_224"]
    assert_same_outputs(model, loaded)


def test_preprocess_override():
    cfg = infer_config(tiny().state_dict(), heads=3, preprocess=dict(mean=(0.5,) * 3, std=[0.5] * 3, crop_pct=0.9))
    assert cfg.mean == cfg.std == (0.5, 0.5, 0.5) and cfg.crop_pct == 0.9
    assert infer_config(tiny().state_dict(), heads=3, preprocess=dict(interpolation="bilinear")).interpolation == "bilinear"
    with pytest.raises(ModelError, match="preprocess takes mean, std, crop_pct, interpolation; unknown: resize$"):
        infer_config(tiny().state_dict(), heads=3, preprocess=dict(resize=256))


def test_named_models_are_deterministic():
    a, b, c = (resolve_model("deit_tiny_patch16_224", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.pos_embed, b.pos_embed) and not torch.equal(a.pos_embed, c.pos_embed)


def test_checkpoint_wins_and_reference_names(tmp_path, monkeypatch):
    model = tiny()
    save(model.state_dict(), tmp_path / "m.pth")
    assert_same_outputs(model, resolve_model("no-such-name", checkpoint=tmp_path / "m.pth", heads=3))
    from tsptq.model import zoo

    monkeypatch.setattr(zoo, "load_reference", lambda name: f"loaded {name}")  # no trained weights needed
    assert resolve_model("cifar10-vit") == "loaded cifar10-vit"


def test_missing_and_unexpected_keys(tmp_path):
    sd = tiny().state_dict()
    del sd["blocks.1.attn.proj.bias"]
    sd["blocks.0.attn.rel_pos"] = torch.zeros(3)
    sd["fc_norm.weight"] = torch.ones(48)
    save(sd, tmp_path / "bad.pth")
    with pytest.raises(ModelError) as e:
        load_checkpoint(tmp_path / "bad.pth", heads=3)
    msg = str(e.value)
    assert "bad.pth" in msg and "missing keys: blocks.1.attn.proj.bias" in msg
    assert "unexpected keys: blocks.0.attn.rel_pos, fc_norm.weight" in msg


def test_wrong_shape(tmp_path):
    sd = tiny().state_dict()
    sd["cls_token"] = torch.zeros(1, 1, 64)
    save(sd, tmp_path / "shape.pth")
    with pytest.raises(ModelError, match=r"shape mismatches: cls_token \(1, 1, 64\) vs model \(1, 1, 48\)"):
        load_checkpoint(tmp_path / "shape.pth", heads=3)


@pytest.mark.parametrize("name", ["m.pth", "m.safetensors"])
def test_truncated_file(tmp_path, name):
    save(tiny().state_dict(), tmp_path / name)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=f"{name}: not a readable .*corrupt or truncated"):
        load_state_dict(tmp_path / name)


@pytest.mark.parametrize("name", ["junk.pth", "junk.safetensors", "empty.pt"])
def test_random_bytes(tmp_path, name):
    (tmp_path / name).write_bytes(b"" if name == "empty.pt" else bytes(range(256)) * 8)
    with pytest.raises(ModelError, match=f"{name}: not a readable"):
        load_state_dict(tmp_path / name)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pth")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown checkpoint format '.onnx'"):
        load_state_dict(tmp_path / "m.onnx")
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "notsd.pth")
    with pytest.raises(ModelError, match="not tensors: epoch, weights"):
        load_state_dict(tmp_path / "notsd.pth")


def test_pickled_objects_are_refused(tmp_path):
    import argparse

    torch.save({"model": tiny().state_dict(), "args": argparse.Namespace(lr=1)}, tmp_path / "train.pth")
    with pytest.raises(ModelError, match="argparse.Namespace.*state_dict"):
        load_state_dict(tmp_path / "train.pth")


def test_unknown_name_lists_known_names():
    with pytest.raises(ModelError) as e:
        resolve_model("vit_huge_patch14_224")
    assert "vit_huge_patch14_224" in str(e.value)
    for known in ["cifar10-vit", "fashion-vit", *NAMED_CONFIGS]:
        assert known in str(e.value)
    with pytest.raises(ModelError, match="no model given"):
        resolve_model(None)


def test_heads():
    sd = tiny().state_dict()
    with pytest.raises(ModelError, match="heads=5 does not divide embed_dim 48"):
        infer_config(sd, heads=5)
    with pytest.raises(ModelError, match="pass heads"):
        infer_config(sd)  # 48 is not a multiple of 64
    with pytest.raises(ModelError, match="heads=5 does not divide embed_dim 192"):
        resolve_model("deit_tiny_patch16_224", heads=5)


def test_img_size():
    sd = tiny().state_dict()
    assert infer_config(sd, heads=3, img_size=32).img_size == 32
    with pytest.raises(ModelError, match="img_size=64 needs 65 position embeddings but the checkpoint has 17"):
        infer_config(sd, heads=3, img_size=64)
    del sd["pos_embed"]
    with pytest.raises(ModelError, match="pass img_size"):
        infer_config(sd, heads=3)
    with pytest.raises(ModelError, match="not a timm-layout ViT"):
        infer_config({"vit.embeddings.cls_token": torch.zeros(1, 1, 48)})


def test_own_reference_checkpoint_loads_with_its_heads_and_preprocessing():
    """dim 128 / 64 would guess 2 heads; the config tsptq stores in the safetensors metadata says 4."""
    from tsptq.model import zoo

    spec = zoo.REFERENCE_MODELS["cifar10-vit"]
    model = load_checkpoint(spec.weights_path)
    assert model.cfg == spec.config
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), zoo.load_reference("cifar10-vit")(x))


class _RunsACommand:
    """What a malicious checkpoint pickles: unpickling it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("how", ["torch.save", "torch.save, top level", "raw pickle, protocol 4"])
def test_a_malicious_pickle_is_refused_and_the_message_names_what(tmp_path, how):
    """Issue 14, item 8: say which object was refused, not "corrupt or truncated?"."""
    import pickle

    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    evil = _RunsACommand(marker)
    if how == "torch.save":
        torch.save({"model": tiny().state_dict(), "x": evil}, path)
    elif how == "torch.save, top level":
        torch.save(evil, path)
    else:
        path.write_bytes(pickle.dumps(evil, protocol=4))
    with pytest.raises(ModelError) as e:
        load_state_dict(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: refused to load os.system (posix.system) from the checkpoint: only tensors and "
                          "plain containers are allowed"), msg
    assert "corrupt" not in msg
    assert not marker.exists()


def test_a_truncated_zip_is_not_mistaken_for_a_malicious_pickle(tmp_path):
    save(tiny().state_dict(), tmp_path / "m.pth")
    data = (tmp_path / "m.pth").read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 30):
        (tmp_path / "cut.pth").write_bytes(data[:cut])
        with pytest.raises(ModelError, match="corrupt or truncated"):
            load_state_dict(tmp_path / "cut.pth")
