"""tsptq.model.swin / swin_layout: timm's Swin layout, the window geometry, checkpoints, and FP32 evaluation
(quantization: tests/test_swin_quant.py)."""
import itertools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tsptq.data.datasets import ImageSet
from tsptq.errors import ModelError
from tsptq.model.checkpoint import load_checkpoint, resolve_model
from tsptq.model.swin import (MASK_VALUE, NAMED_CONFIGS, SwinBlock, SwinConfig, SwinTransformer, merge_2x2,
                              relative_position_index, shifted_window_mask)

# The brief's tiny Swin: 16x16 patches, window 4 (shifted in both stages), dims 32/64.
TINY = SwinConfig(img_size=32, patch_size=2, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4),
                  num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)


def tiny(cfg: SwinConfig = TINY) -> SwinTransformer:
    torch.manual_seed(0)
    model = SwinTransformer(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a wrong load would show in the logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def logits(model, seed: int = 1) -> torch.Tensor:
    cfg = model.cfg
    x = torch.randn(2, cfg.in_chans, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


def timm_keys(depths) -> list[str]:
    """timm's SwinTransformer state-dict keys in order, as read from timm/models/swin_transformer.py (timm 1.0.x,
    huggingface/pytorch-image-models aa4b585; the same names since 0.9): PatchMerging is `layers.N.downsample` at the
    start of stages 1.., relative_position_index and attn_mask are non-persistent buffers (since 0.9.6)."""
    wb = lambda p: [f"{p}.weight", f"{p}.bias"]  # noqa: E731
    keys = wb("patch_embed.proj") + wb("patch_embed.norm")
    for i, depth in enumerate(depths):
        if i:
            keys += wb(f"layers.{i}.downsample.norm") + [f"layers.{i}.downsample.reduction.weight"]
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}"
            keys += (wb(f"{p}.norm1") + [f"{p}.attn.relative_position_bias_table"] + wb(f"{p}.attn.qkv")
                     + wb(f"{p}.attn.proj") + wb(f"{p}.norm2") + wb(f"{p}.mlp.fc1") + wb(f"{p}.mlp.fc2"))
    return keys + wb("norm") + wb("head.fc")


def test_swin_tiny_has_timm_keys_and_shapes():
    model = resolve_model("swin_tiny_patch4_window7_224")
    sd = model.state_dict()
    assert isinstance(model, SwinTransformer) and not model.training
    assert list(sd) == timm_keys((2, 2, 6, 2))  # 173 keys: exactly timm's, in timm's order
    assert sd["patch_embed.proj.weight"].shape == (96, 3, 4, 4)
    assert sd["layers.1.downsample.reduction.weight"].shape == (192, 384)  # no bias, 4C -> 2C
    assert sd["layers.3.blocks.1.attn.relative_position_bias_table"].shape == (169, 24)  # (2*7-1)^2 x heads
    assert sd["head.fc.weight"].shape == (1000, 768)
    # timm's geometry at 224: grids 56, 28, 14, 7; the last stage is one window, never shifted
    shifts = [(b.window, b.shift) for stage in model.layers for b in stage.blocks]
    assert shifts == [(7, 0), (7, 3)] * 3 + [(7, 0), (7, 3)] * 2 + [(7, 0), (7, 0)]
    assert list(NAMED_CONFIGS["swin_small_patch4_window7_224"].depths) == [2, 2, 18, 2]


def test_relative_position_index_matches_offsets():
    for w in (1, 2, 3, 4, 7):
        expected = torch.zeros(w * w, w * w, dtype=torch.long)
        for i, (r1, c1) in enumerate(itertools.product(range(w), range(w))):
            for j, (r2, c2) in enumerate(itertools.product(range(w), range(w))):
                expected[i, j] = (r1 - r2 + w - 1) * (2 * w - 1) + (c1 - c2 + w - 1)
        assert torch.equal(relative_position_index(w), expected)
    assert relative_position_index(7).max() == 13 * 13 - 1


@pytest.mark.parametrize("size,window,shift", [(8, 4, 2), (12, 4, 2), (14, 7, 3), (6, 3, 1)])
def test_shift_mask_blocks_exactly_the_wrapped_pairs(size, window, shift):
    """After the roll by -shift, two tokens of a window may attend iff they were neighbours in the image: along each
    axis both wrapped around the edge or neither did."""
    mask = shifted_window_mask(size, window, shift)
    n = size // window
    assert mask.shape == (n * n, window * window, window * window)
    assert set(mask.unique().tolist()) <= {0.0, MASK_VALUE}
    for wr, wc in itertools.product(range(n), range(n)):
        cells = [(wr * window + r, wc * window + c) for r, c in itertools.product(range(window), range(window))]
        wrapped = [((r + shift) >= size, (c + shift) >= size) for r, c in cells]  # rolled position -> wrapped?
        for i, j in itertools.product(range(len(cells)), repeat=2):
            allowed = wrapped[i] == wrapped[j]
            assert mask[wr * n + wc, i, j].item() == (0.0 if allowed else MASK_VALUE), (wr, wc, cells[i], cells[j])


def test_shifted_block_keeps_regions_apart():
    """End to end through a shifted block: a token in the image's top-left corner shares its rolled window with the
    bottom and right edges, yet changes only the outputs of its own 2x2 region."""
    torch.manual_seed(0)
    block = SwinBlock(dim=8, num_heads=2, resolution=8, window=4, shift=2, hidden=16, eps=1e-5).eval()
    x = torch.randn(1, 8, 8, 8)
    y = x.clone()
    y[0, 0, 0] += torch.randn(8)  # not a constant: LayerNorm would not see it
    with torch.no_grad():
        changed = (block(x) - block(y)).abs().amax(-1)[0] > 1e-6
    assert changed.nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    unshifted = SwinBlock(dim=8, num_heads=2, resolution=8, window=4, shift=0, hidden=16, eps=1e-5).eval()
    unshifted.load_state_dict(block.state_dict())
    with torch.no_grad():
        changed = (unshifted(x) - unshifted(y)).abs().amax(-1)[0] > 1e-6
    assert changed.sum() == 16 and changed[:4, :4].all()  # its whole (unshifted) window


def test_patch_merging_order():
    x = torch.arange(2 * 4 * 6 * 3, dtype=torch.float32).reshape(2, 4, 6, 3)
    out = merge_2x2(x)
    assert out.shape == (2, 2, 3, 12)
    for b, i, j in itertools.product(range(2), range(2), range(3)):
        expected = torch.cat([x[b, 2 * i, 2 * j], x[b, 2 * i + 1, 2 * j], x[b, 2 * i, 2 * j + 1],
                              x[b, 2 * i + 1, 2 * j + 1]])
        assert torch.equal(out[b, i, j], expected)


def test_tiny_forward_and_features():
    model = tiny()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert model.forward_features(x).shape == (3, 8, 8, 64)
        assert model(x).shape == (3, 10)
        assert torch.allclose(model.head.fc(model.forward_pooled(x)), model(x))
    assert [b.attn_mask.shape for s in model.layers for b in s.blocks if b.attn_mask is not None] == [(16, 16, 16),
                                                                                                      (4, 16, 16)]
    with pytest.raises(ModelError, match="cannot be halved"):
        SwinTransformer(SwinConfig(img_size=36, patch_size=4, depths=(2, 2), num_heads=(1, 2)))


def test_safetensors_round_trip(tmp_path):
    model = tiny()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, tmp_path / "plain.safetensors")
    loaded = load_checkpoint(tmp_path / "plain.safetensors", img_size=32)  # the weights cannot tell the image size
    assert isinstance(loaded, SwinTransformer) and not loaded.training
    assert (loaded.cfg.depths, loaded.cfg.num_heads, loaded.cfg.embed_dim, loaded.cfg.window_size,
            loaded.cfg.patch_size, loaded.cfg.num_classes, loaded.cfg.mlp_ratio) == ((2, 2), (2, 4), 32, 4, 2, 10, 4.0)
    assert torch.equal(logits(loaded), logits(model))
    # tsptq's own files carry the config (image size and preprocessing) in the metadata, as zoo.save_reference writes
    save_file(sd, tmp_path / "own.safetensors", metadata={"tsptq_config": json.dumps(model.cfg.to_dict())})
    own = load_checkpoint(tmp_path / "own.safetensors")
    assert own.cfg == TINY
    assert torch.equal(logits(own), logits(model))
    # without either: the smallest size whose last stage is one window (timm's *_window7_224 naming rule)
    assert load_checkpoint(tmp_path / "plain.safetensors").cfg.img_size == 16


def test_cifar_recipe_config_infers_its_own_size(tmp_path):
    from tsptq.model import zoo

    cfg = zoo.REFERENCE_MODELS["cifar10-swin"].config
    model = tiny(cfg)
    torch.save({"model": model.state_dict()}, tmp_path / "swin.pth")
    loaded = load_checkpoint(tmp_path / "swin.pth", preprocess={"mean": cfg.mean, "std": cfg.std, "crop_pct": 1.0})
    assert loaded.cfg == cfg
    assert torch.equal(logits(loaded), logits(model))


def test_microsoft_layout_with_buffers_loads(tmp_path):
    """The Microsoft release / timm < 0.9: merging at the end of the previous stage, head.weight, and the two
    buffers saved; a stored attn_mask pins the image size."""
    model = tiny()
    old = {}
    for k, v in model.state_dict().items():
        if k.startswith("layers.1.downsample."):
            k = k.replace("layers.1.", "layers.0.")
        old[k.replace("head.fc.", "head.")] = v
    for name, m in model.named_modules():
        if hasattr(m, "relative_position_index"):
            old[f"{name}.relative_position_index"] = m.relative_position_index
        if getattr(m, "attn_mask", None) is not None:
            old[f"{name}.attn_mask"] = m.attn_mask
    torch.save({"model": old}, tmp_path / "ms.pth")
    loaded = load_checkpoint(tmp_path / "ms.pth")  # the image size read from the stored masks' window count
    assert loaded.cfg.img_size == 32
    assert torch.equal(logits(loaded), logits(model))
    with pytest.raises(ModelError, match=r"layers\.0\.blocks\.1\.attn_mask \(16, 16, 16\) was saved for another "
                                         r"image size than 16 \(this model's mask: \(4, 16, 16\)\)"):
        load_checkpoint(tmp_path / "ms.pth", img_size=16)


def test_bad_swin_checkpoints_name_the_problem(tmp_path):
    sd = tiny().state_dict()
    broken = {k: v for k, v in sd.items() if not k.startswith("layers.1.blocks.1.mlp")}
    save_file({k: v.contiguous() for k, v in broken.items()}, tmp_path / "broken.safetensors")
    with pytest.raises(ModelError, match="layers.1.blocks.1 lacks"):
        load_checkpoint(tmp_path / "broken.safetensors", img_size=32)
    no_norm = {k: v.contiguous() for k, v in sd.items() if not k.startswith("patch_embed.norm")}
    save_file(no_norm, tmp_path / "no_norm.safetensors")
    with pytest.raises(ModelError, match="missing keys: patch_embed.norm.bias, patch_embed.norm.weight"):
        load_checkpoint(tmp_path / "no_norm.safetensors", img_size=32)
    with pytest.raises(ModelError, match="--heads does not apply"):
        load_checkpoint(tmp_path / "no_norm.safetensors", heads=2)
    # grids 4 and 2: stage 1's table is for a 2x2 window, which at img_size 64 (grids 32, 16) it would not have
    small = tiny(SwinConfig(img_size=8, patch_size=2, window_size=4, embed_dim=8, depths=(1, 1), num_heads=(1, 1),
                            num_classes=3))
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, tmp_path / "small.safetensors")
    with pytest.raises(ModelError, match=r"windows per stage \[4, 2\] .* do not fit img_size 64, which gives \[4, 4\]"):
        load_checkpoint(tmp_path / "small.safetensors", img_size=64)
    assert load_checkpoint(tmp_path / "small.safetensors").cfg.img_size == 8
    v2 = {**{k: v.contiguous() for k, v in sd.items()}, "layers.0.blocks.0.attn.logit_scale": torch.zeros(2, 1, 1)}
    save_file(v2, tmp_path / "v2.safetensors")
    with pytest.raises(ModelError, match="Swin V2 checkpoint .* is not supported"):
        load_checkpoint(tmp_path / "v2.safetensors")
    with pytest.raises(ModelError, match="swin_small_patch4_window7_224, swin_tiny_patch4_window7_224"):
        resolve_model("swin_huge_patch4_window7_224")
    with pytest.raises(ModelError, match="--heads does not apply to a Swin"):
        resolve_model("swin_tiny_patch4_window7_224", heads=4)


def test_fp32_evaluation_and_cli(tmp_path):
    from tsptq.cli.main import main
    from tsptq.evaluation.evaluate import evaluate

    model = tiny()
    rng = np.random.default_rng(0)
    images = ImageSet(rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), np.arange(6) % 10, "random")
    result = evaluate(model, images, images, ["fp32"], workers=1, progress=False, timings=False)
    [row] = result.rows
    assert row["method"] == "fp32" and row["agreement"] == 100.0 and row["cosine_min"] == pytest.approx(1.0)

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "swin.safetensors",
              metadata={"tsptq_config": json.dumps(model.cfg.to_dict())})
    args = ["eval", "--checkpoint", str(tmp_path / "swin.safetensors"), "--data", "bundled", "--eval-images", "10",
            "--calib-images", "2", "--workers", "1", "--quiet"]
    assert main(args + ["--methods", "fp32", "--json", str(tmp_path / "out.json")]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["results"][0]["method"] == "fp32"
    # Quantized methods, the integer engines and export: tests/test_swin_quant.py
