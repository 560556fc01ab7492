"""Hugging Face ``transformers`` checkpoints of ViT, DeiT and DINOv2, renamed to the timm layout tsptq's ViT uses.

Both key layouts are read: the one ``save_pretrained`` writes and the hub serves
(``vit.encoder.layer.N.attention.attention.query.weight``, ``...intermediate.dense``, ``...output.dense``) and the
module names of transformers 5 (``vit.layers.N.attention.q_proj.weight``, ``...mlp.fc1``), e.g. from
``torch.save(model.state_dict())``. Query, key and value are concatenated into timm's fused ``qkv``. What shapes
cannot tell comes from the ``config.json`` beside the weights (heads, LayerNorm eps, activation) and the
``preprocessor_config.json`` (mean, std, resize and crop, interpolation).

Supported: ``ViTModel`` / ``ViTForImageClassification`` (and DeiT without a distillation token, which the hub stores
as ViT), ``DeiTForImageClassificationWithTeacher`` (two heads averaged, as timm's distilled DeiT), ``Dinov2Model``
(its position grid is resized bicubically to ``img_size`` as transformers does). Anything else is refused with the
keys that could not be mapped.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from tsptq.errors import ModelError, some_of

MODEL_TYPES = ("vit", "deit", "dinov2")
# HF's resample codes (PIL's) -> interpolation names (tsptq does nearest, bilinear and bicubic; the others are refused
# when checked, unless --interpolation replaces them)
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
DEFAULT_LN_EPS = {"vit": 1e-12, "deit": 1e-12, "dinov2": 1e-6}  # transformers' config defaults
HF_DEFAULT_CROP = 224  # transformers' image processors crop to 224 when crop_size is not given

# (HF name inside a layer, timm name inside blocks.N), both layouts
_LAYER_KEYS = [
    (r"attention\.attention\.(query|key|value)\.(weight|bias)", None),  # fused below
    (r"attention\.(q|k|v)_proj\.(weight|bias)", None),
    (r"attention\.output\.dense\.(weight|bias)", r"attn.proj.\1"),
    (r"attention\.o_proj\.(weight|bias)", r"attn.proj.\1"),
    (r"(?:layernorm_before|norm1)\.(weight|bias)", r"norm1.\1"),
    (r"(?:layernorm_after|norm2)\.(weight|bias)", r"norm2.\1"),
    (r"intermediate\.dense\.(weight|bias)", r"mlp.fc1.\1"),
    (r"output\.dense\.(weight|bias)", r"mlp.fc2.\1"),
    (r"mlp\.fc([12])\.(weight|bias)", r"mlp.fc\1.\2"),
    (r"layer_scale([12])\.lambda1", r"ls\1.gamma"),
]
_QKV = {"query": 0, "key": 1, "value": 2, "q": 0, "k": 1, "v": 2}
_TOP_KEYS = {
    "embeddings.cls_token": "cls_token", "embeddings.distillation_token": "dist_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
}
_IGNORED = ("embeddings.mask_token", "pooler.dense.weight", "pooler.dense.bias")  # not on the classification path
_HEADS = {"classifier.weight": "head.weight", "classifier.bias": "head.bias",
          "cls_classifier.weight": "head.weight", "cls_classifier.bias": "head.bias",
          "distillation_classifier.weight": "head_dist.weight", "distillation_classifier.bias": "head_dist.bias"}


def is_hf_layout(sd: dict) -> bool:
    return any(re.match(r"^(?:(?:vit|deit|dinov2)\.)?(?:encoder\.layer|layers)\.\d+\.attention\.", k) for k in sd)


def model_type_of(sd: dict, config: dict) -> str:
    """config.json's model_type, else what the keys say (a prefix-less layout with LayerScale is DINOv2's)."""
    if config.get("model_type"):
        return config["model_type"]
    prefix = _prefix(sd)
    if prefix:
        return prefix[:-1]
    return "dinov2" if any("layer_scale1" in k for k in sd) else "vit"


def _prefix(sd: dict) -> str:
    for p in ("vit.", "deit.", "dinov2."):
        if any(k.startswith(p) for k in sd):
            return p
    return ""


def to_timm(sd: dict[str, torch.Tensor], config: dict | None = None, source: object = "checkpoint"
            ) -> dict[str, torch.Tensor]:
    """The timm-layout state dict of an HF ViT/DeiT/DINOv2 state dict; every key is accounted for or refused."""
    model_type = (config or {}).get("model_type")
    if model_type is not None and model_type not in MODEL_TYPES:
        raise ModelError(f"{source}: model_type {model_type!r} is not supported; supported Hugging Face models: "
                         f"{', '.join(MODEL_TYPES)} (Swin and others: not yet)")
    act = (config or {}).get("hidden_act", "gelu")
    if act != "gelu":
        raise ModelError(f"{source}: hidden_act {act!r} is not supported (tsptq's MLP is the exact erf GELU, 'gelu')")
    if (config or {}).get("use_swiglu_ffn"):
        raise ModelError(f"{source}: DINOv2 with a SwiGLU MLP (use_swiglu_ffn) is not supported")
    prefix = _prefix(sd)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    unmapped = []
    for key, value in sd.items():
        name = key[len(prefix):] if key.startswith(prefix) else key
        if name in _TOP_KEYS:
            out[_TOP_KEYS[name]] = value
        elif name in _HEADS and key == name:
            out[_HEADS[name]] = value
        elif name in _IGNORED:
            continue
        elif m := re.match(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)$", name):
            block, rest = m.groups()
            for pattern, target in _LAYER_KEYS:
                if q := re.fullmatch(pattern, rest):
                    if target is None:
                        qkv.setdefault((block, q[2]), {})[_QKV[q[1]]] = value
                    else:
                        out[f"blocks.{block}.{q.expand(target)}"] = value
                    break
            else:
                unmapped.append(key)
        else:
            unmapped.append(key)
    if unmapped:
        raise ModelError(f"{source}: these Hugging Face keys could not be mapped to a ViT: {some_of(unmapped, 8)}")
    for (block, kind), parts in qkv.items():
        if sorted(parts) != [0, 1, 2]:
            raise ModelError(f"{source}: layer {block} lacks some of query/key/value {kind}")
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts[0], parts[1], parts[2]], 0)
    for block in {k.split(".")[1] for k in out if k.startswith("blocks.")}:
        w = out.get(f"blocks.{block}.attn.qkv.weight")
        if w is not None and f"blocks.{block}.attn.qkv.bias" not in out:  # qkv_bias=False: a zero bias is the same
            out[f"blocks.{block}.attn.qkv.bias"] = torch.zeros(w.shape[0], dtype=w.dtype)
    _check_heads(out, source)
    return out


def _check_heads(out: dict, source: object) -> None:
    if "dist_token" in out and "head.weight" in out and "head_dist.weight" not in out:
        raise ModelError(f"{source}: a DeiT with a distillation token but one classifier on the class token "
                         "(DeiTForImageClassification) is not supported; use DeiTForImageClassificationWithTeacher "
                         "(the hub's distilled DeiTs) or a DeiT without a distillation token")
    head, norm = out.get("head.weight"), out.get("norm.weight")
    if head is not None and norm is not None and head.shape[1] not in (norm.shape[0], 2 * norm.shape[0]):
        raise ModelError(f"{source}: the classifier reads {head.shape[1]} features, neither the class token's "
                         f"{norm.shape[0]} nor the class token and mean patch token's {2 * norm.shape[0]}")


def resize_position_grid(sd: dict[str, torch.Tensor], patch: int, prefix_tokens: int, img_size: int) -> None:
    """DINOv2: resize the position grid to ``img_size`` in place (transformers interpolates it for any input size)."""
    from tsptq.model.dinov2 import resize_pos_grid

    pos = sd["pos_embed"]
    grid = round((pos.shape[1] - prefix_tokens) ** 0.5)
    if grid * patch == img_size:
        return
    if img_size % patch:
        raise ModelError(f"img_size {img_size} is not a multiple of the patch size {patch}")
    patches = resize_pos_grid(pos[:, prefix_tokens:].numpy(), img_size // patch)
    sd["pos_embed"] = torch.cat([pos[:, :prefix_tokens], torch.from_numpy(patches).to(pos.dtype)], 1)


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _side(size) -> float | None:
    if isinstance(size, dict):
        size = size.get("shortest_edge") or size.get("height")
    return float(size) if isinstance(size, (int, float)) and size > 0 else None


def processor_input_size(cfg: dict) -> int | None:
    """The side of the image the processor hands the model: the crop when it crops, else the resize."""
    side = _side(cfg.get("crop_size")) or (HF_DEFAULT_CROP if cfg.get("do_center_crop") else _side(cfg.get("size")))
    return int(side) if side else None


def preprocess_from_processor(cfg: dict, source: object = "preprocessor_config.json") -> dict:
    """mean, std, crop_pct and interpolation from an HF ``preprocessor_config.json`` (checked by the caller, after
    the command line's options have replaced what they name)."""
    out = {}
    if "image_mean" in cfg and "image_std" in cfg:
        out["mean"], out["std"] = cfg["image_mean"], cfg["image_std"]
    if "resample" in cfg:
        out["interpolation"] = RESAMPLE.get(cfg["resample"], f"resample code {cfg['resample']!r}")
    side = _side(cfg.get("size"))
    if side and cfg.get("do_center_crop"):
        out["crop_pct"] = (_side(cfg.get("crop_size")) or HF_DEFAULT_CROP) / side
    elif side:
        out["crop_pct"] = 1.0  # resized straight to the input size (tsptq keeps the aspect and crops the center)
    return out

