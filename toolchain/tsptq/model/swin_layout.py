"""Swin Transformer state dicts: recognise them by their keys, bring older layouts to timm >= 0.9's, and read the
:class:`~tsptq.model.swin.SwinConfig` from the tensor shapes.

Layouts read:

* timm >= 0.9 (what :mod:`tsptq.model.swin` builds): patch merging at the start of stages 1.. as
  ``layers.N.downsample``, classifier ``head.fc``;
* the Microsoft Swin release and timm < 0.9: patch merging at the END of stages 0..n-2 and classifier ``head``
  (renamed as timm's own checkpoint filter does: ``layers.N.downsample`` -> ``layers.N+1.downsample``);
* timm < 0.9.6 and the Microsoft release saved the ``relative_position_index`` and ``attn_mask`` buffers: they are
  dropped (the model computes them), after checking that a stored mask fits the image size.

From the shapes: patch size and input channels (``patch_embed.proj``), depths (blocks per stage), stage widths
(``norm1``; each stage doubles the last), heads per stage (``relative_position_bias_table``'s columns), window
(its rows are (2w-1)^2), MLP ratio (``fc1``), classes (``head.fc``). The image size is not in timm >= 0.9.6's
weights: it is ``img_size`` when given, else what a stored ``attn_mask`` says (its window count), else the smallest
size whose last stage is exactly one window (its window * 2^(stages-1) * patch: 224 for timm's ``*_window7_224``,
384 for ``*_window12_384``; exact whenever the last stage's table is for a window smaller than the first's).
"""
from __future__ import annotations

import math
import re

import torch

from tsptq.errors import ModelError, some_of
from tsptq.model.swin import SwinConfig

_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")
_BUFFERS = ("relative_position_index", "attn_mask")  # persistent in timm 0.9.0-0.9.5 and the Microsoft release


def is_swin(sd: dict) -> bool:
    """Keys of the timm / Microsoft Swin family (``layers.N.blocks.M.``)."""
    return any(_BLOCK.match(k) for k in sd)


def to_timm(sd: dict[str, torch.Tensor], source: object = "checkpoint"
            ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[int, ...]]]:
    """(the timm >= 0.9 state dict, the shapes of any stored ``attn_mask`` buffers by block prefix)."""
    if v2 := [k for k in sd if k.endswith((".logit_scale", ".cpb_mlp.0.weight"))]:
        raise ModelError(f"{source}: a Swin V2 checkpoint ({some_of(v2, 2)}) is not supported; supported: Swin "
                         "(V1) in the timm or Microsoft layout")
    masks = {k[: -len(".attn_mask")]: tuple(v.shape) for k, v in sd.items() if k.endswith(".attn_mask")}
    sd = {k: v for k, v in sd.items() if k.rsplit(".", 1)[-1] not in _BUFFERS}
    if "layers.0.downsample.reduction.weight" in sd:  # stage 0 merges at its end: the old layout
        sd = {_new_name(k): v for k, v in sd.items()}
    return sd, masks


def _new_name(key: str) -> str:
    key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) + 1}.downsample.", key)
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


def infer_config(sd: dict[str, torch.Tensor], img_size: int | None = None, preprocess: dict | None = None,
                 ln_eps: float | None = None, masks: dict[str, tuple[int, ...]] | None = None,
                 source: object = "checkpoint") -> SwinConfig:
    """The SwinConfig a timm >= 0.9 layout Swin state dict (see :func:`to_timm`, which also returns ``masks``) was
    saved from."""
    need = ["patch_embed.proj.weight", "layers.0.blocks.0.norm1.weight",
            "layers.0.blocks.0.attn.relative_position_bias_table", "layers.0.blocks.0.mlp.fc1.weight"]
    if missing := [k for k in need if k not in sd]:
        raise ModelError(f"{source}: not a timm-layout Swin state dict: no {', '.join(missing)} "
                         f"(keys: {some_of(sorted(sd))})")
    proj = sd["patch_embed.proj.weight"]
    if proj.ndim != 4 or proj.shape[2] != proj.shape[3]:
        raise ModelError(f"{source}: patch_embed.proj.weight has shape {tuple(proj.shape)}, not a square conv kernel")
    embed_dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    blocks: dict[int, set[int]] = {}
    for k in sd:
        if m := _BLOCK.match(k):
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    stages = len(blocks)
    if sorted(blocks) != list(range(stages)) or any(sorted(b) != list(range(len(b))) for b in blocks.values()):
        raise ModelError(f"{source}: stages and blocks are not numbered 0, 1, ...: "
                         f"{ {s: sorted(b) for s, b in sorted(blocks.items())} }")
    depths = tuple(len(blocks[i]) for i in range(stages))
    heads, windows, ratios = [], [], set()
    for i in range(stages):
        dim = embed_dim * 2 ** i
        width = sd.get(f"layers.{i}.blocks.0.norm1.weight")
        if width is None or width.shape[0] != dim:
            raise ModelError(f"{source}: stage {i} is {None if width is None else width.shape[0]} channels wide, not "
                             f"{dim} (tsptq's Swin doubles embed_dim {embed_dim} at every stage, as timm's)")
        stage_heads, stage_windows = set(), set()
        for j in range(depths[i]):
            p = f"layers.{i}.blocks.{j}"
            table, fc1 = sd.get(f"{p}.attn.relative_position_bias_table"), sd.get(f"{p}.mlp.fc1.weight")
            if table is None or fc1 is None:
                raise ModelError(f"{source}: {p} lacks attn.relative_position_bias_table or mlp.fc1.weight")
            stage_heads.add(table.shape[1])
            stage_windows.add(_window_of(table, p, source))
            ratios.add(fc1.shape[0] / dim)
        if len(stage_heads) != 1 or len(stage_windows) != 1:
            raise ModelError(f"{source}: the blocks of stage {i} disagree on heads {sorted(stage_heads)} or window "
                             f"{sorted(stage_windows)}")
        heads.append(stage_heads.pop())
        windows.append(stage_windows.pop())
    if len(ratios) != 1:
        raise ModelError(f"{source}: MLP ratios differ between stages ({sorted(ratios)}); tsptq's Swin has one")
    window = windows[0]  # the first stage has the largest grid, so its window is the configured one
    if img_size is None and masks:  # a stored mask of stage i has (grid_i / window_i)^2 windows
        prefix, shape = next(iter(masks.items()))
        stage = int(_BLOCK.match(prefix + ".")[1])
        img_size = math.isqrt(shape[0]) * windows[stage] * 2 ** stage * patch
    cfg = SwinConfig(
        img_size=img_size or windows[-1] * 2 ** (stages - 1) * patch, patch_size=patch, in_chans=in_chans,
        num_classes=sd["head.fc.weight"].shape[0] if "head.fc.weight" in sd else 0, embed_dim=embed_dim,
        depths=depths, num_heads=tuple(heads), window_size=window, mlp_ratio=ratios.pop(),
        **({"ln_eps": float(ln_eps)} if ln_eps is not None else {}), **(preprocess or {}))
    cfg.check()
    got = [cfg.stage_window(i)[0] for i in range(stages)]
    if got != windows:
        raise ModelError(f"{source}: windows per stage {windows} (from the bias tables) do not fit img_size "
                         f"{cfg.img_size}, which gives {got}; pass the image size the model was trained at")
    return cfg


def _window_of(table: torch.Tensor, where: str, source: object) -> int:
    side = math.isqrt(table.shape[0])
    if table.ndim != 2 or side * side != table.shape[0] or side % 2 == 0:
        raise ModelError(f"{source}: {where}.attn.relative_position_bias_table has shape {tuple(table.shape)}, "
                         "not ((2w-1)^2, heads) of a square window")
    return (side + 1) // 2


def check_stored_masks(model, masks: dict[str, tuple[int, ...]], source: object) -> None:
    """A stored ``attn_mask`` (older timm) was computed for the image size the model was saved at: its shape must be
    the one this model computes, else the image size is not the trained one."""
    for prefix, shape in masks.items():
        ours = model.get_submodule(prefix).attn_mask if _has(model, prefix) else None
        if ours is None or tuple(ours.shape) != shape:
            raise ModelError(f"{source}: {prefix}.attn_mask {shape} was saved for another image size than "
                             f"{model.cfg.img_size} (this model's mask: {None if ours is None else tuple(ours.shape)}); "
                             "pass the image size the model was trained at")


def _has(model, prefix: str) -> bool:
    try:
        model.get_submodule(prefix)
    except AttributeError:
        return False
    return True
