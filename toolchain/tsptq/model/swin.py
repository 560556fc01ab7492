"""A timm-compatible Swin Transformer (the float model; :mod:`tsptq.quant.qswin` is its quantization graph,
:mod:`tsptq.intmodel.lower_swin` its integer model).

Same module tree and state-dict keys as timm's ``SwinTransformer`` (timm >= 0.9 layout, read from
timm/models/swin_transformer.py): ``patch_embed.{proj,norm}``; per stage ``layers.N.downsample.{norm,reduction}``
(the 2x2 patch merging at the START of every stage but the first) and ``layers.N.blocks.M.{norm1,
attn.qkv, attn.proj, attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}``; ``norm``; ``head.fc``.
``relative_position_index`` and ``attn_mask`` are non-persistent buffers, as in timm >= 0.9.6 (older timm saved
them; :mod:`tsptq.model.swin_layout` drops them when loading). Stages run channels-last (B, H, W, C) like timm.

Window geometry follows timm: a stage whose resolution is at most the window size uses one window of the whole
resolution and no shift; otherwise odd blocks shift by window // 2 (cyclic roll) and mask the attention between
tokens the roll brought together. Only the inference path is here: no dropout, no drop-path.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tsptq.errors import ModelError

# timm adds -100 (not -inf) between tokens of different regions: exp(-100) is far below what a float32 softmax
# weight next to an unmasked one can resolve, and the same constant keeps the logits equal to timm's.
MASK_VALUE = -100.0


@dataclass(frozen=True)
class SwinConfig:
    img_size: int = 224
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96  # stage i has embed_dim * 2**i channels (timm's scalar embed_dim)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    ln_eps: float = 1e-5  # timm's Swin uses nn.LayerNorm's default
    # Preprocessing the model was trained with (applied by the data loaders, not by forward()): timm's Swin cfg.
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.9
    interpolation: str = "bicubic"

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def num_features(self) -> int:
        return self.stage_dim(self.num_stages - 1)

    def stage_dim(self, i: int) -> int:
        return self.embed_dim * 2 ** i

    def stage_resolution(self, i: int) -> int:
        """Side of the token grid the blocks of stage i see (after that stage's patch merging)."""
        return self.grid // 2 ** i

    def stage_window(self, i: int) -> tuple[int, int]:
        """(window, shift) of stage i's shifted blocks: timm's rule, one unshifted window when the grid fits in it."""
        res = self.stage_resolution(i)
        return (res, 0) if res <= self.window_size else (self.window_size, self.window_size // 2)

    def check(self) -> None:
        """One-line errors for geometry the model cannot run (instead of a reshape error inside forward)."""
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ModelError(f"Swin: depths {self.depths} and num_heads {self.num_heads} need one entry per stage")
        if self.img_size % self.patch_size:
            raise ModelError(f"Swin: img_size {self.img_size} is not a multiple of the patch size {self.patch_size}")
        if self.grid % 2 ** (self.num_stages - 1):
            raise ModelError(f"Swin: the {self.grid}x{self.grid} patch grid cannot be halved {self.num_stages - 1} "
                             f"times (img_size / patch_size must be a multiple of {2 ** (self.num_stages - 1)})")
        for i, heads in enumerate(self.num_heads):
            if heads <= 0 or self.stage_dim(i) % heads:
                raise ModelError(f"Swin: stage {i} has {self.stage_dim(i)} channels, not divisible by {heads} heads")
        if self.window_size < 1:
            raise ModelError(f"Swin: window_size must be positive, got {self.window_size}")

    def describe(self) -> str:
        return (f"Swin (img {self.img_size}, patch {self.patch_size}, dim {self.embed_dim}, depths "
                f"{list(self.depths)}, heads {list(self.num_heads)}, window {self.window_size}, "
                f"{self.num_classes} classes)")

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("mean", "std", "depths", "num_heads"):
            d[k] = list(d[k])
        d["arch"] = "swin"  # tells a stored config from a ViTConfig
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SwinConfig":
        d = {k: v for k, v in d.items() if k != "arch"}
        for k in ("mean", "std", "depths", "num_heads"):
            d[k] = tuple(d[k])
        return cls(**d)


# timm's named configs (architecture and pretrained_cfg preprocessing; weights are random unless a checkpoint is given)
NAMED_CONFIGS: dict[str, SwinConfig] = {
    "swin_tiny_patch4_window7_224": SwinConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "swin_small_patch4_window7_224": SwinConfig(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
}


# --- window geometry (functions of the sizes alone, so they can be tested on their own) ------------------------------

def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w): for tokens i = (r1, c1) and j = (r2, c2) of a window (row-major), the row of the bias table that
    holds their offset: (r1 - r2 + w - 1) * (2w - 1) + (c1 - c2 + w - 1)."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    r, c = rows.flatten(), cols.flatten()
    dr = r[:, None] - r[None, :] + window - 1
    dc = c[:, None] - c[None, :] + window - 1
    return dr * (2 * window - 1) + dc


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, window * window, C), windows in row-major order per image."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C).transpose(2, 3)
    return x.reshape(-1, window * window, C)


def window_reverse(windows: torch.Tensor, window: int, H: int, W: int) -> torch.Tensor:
    """The inverse of :func:`window_partition`: (B * windows, window * window, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // window, W // window, window, window, C).transpose(2, 3)
    return x.reshape(-1, H, W, C)


def shifted_window_mask(size: int, window: int, shift: int) -> torch.Tensor:
    """(windows, w*w, w*w) additive mask for the windows of a (size x size) grid rolled by -shift: 0 between tokens of
    the same region, MASK_VALUE between tokens the roll brought together from opposite edges of the image.

    Along each axis the rolled grid has three regions: [0, size - window) (whole windows, never split),
    [size - window, size - shift) and [size - shift, size) (what wrapped around from the start)."""
    band = torch.zeros(size, dtype=torch.long)
    band[size - window:] = 1
    band[size - shift:] = 2
    region = band[:, None] * 3 + band[None, :]  # 9 regions of the 2-D grid
    labels = window_partition(region[None, :, :, None], window).squeeze(-1)  # windows, w*w
    same = labels[:, :, None] == labels[:, None, :]
    return torch.where(same, 0.0, MASK_VALUE)


def merge_2x2(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, H/2, W/2, 4C): each 2x2 neighbourhood's channels concatenated in timm's (and the Swin
    paper code's) order (row, col) = (0, 0), (1, 0), (0, 1), (1, 1)."""
    return torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)


# --- modules -----------------------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.ln_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, H, W, C)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned bias per head and relative offset."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        """(heads, w*w, w*w)."""
        n = self.window * self.window
        return self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * windows, N, C); mask: (windows, N, N) or None."""
        Bw, N, C = x.shape
        qkv = self.qkv(x).reshape(Bw, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B * windows, heads, N, d)
        bias = self.position_bias()
        if mask is not None:  # one mask per window position, the same for every image: split the batch axis
            windows = mask.shape[0]
            q, k, v = (t.reshape(-1, windows, *t.shape[1:]) for t in (q, k, v))
            bias = bias + mask[:, None]  # (windows, heads, N, N), broadcast over images
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        return self.proj(x.reshape(Bw, self.num_heads, N, -1).transpose(1, 2).reshape(Bw, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm block on (B, H, W, C): (shifted) window attention, then the MLP."""

    def __init__(self, dim: int, num_heads: int, resolution: int, window: int, shift: int, hidden: int, eps: float):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden)
        padded = -(-resolution // window) * window  # as timm: a grid that is no multiple of the window is padded
        mask = shifted_window_mask(padded, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        s, w = self.shift, self.window
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        pad_h, pad_w = -H % w, -W % w
        if pad_h or pad_w:  # zero tokens at the bottom/right (after the roll, as timm)
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        windows = self.attn(window_partition(x, w), self.attn_mask)
        x = window_reverse(windows, w, H + pad_h, W + pad_w)[:, :H, :W]
        return torch.roll(x, shifts=(s, s), dims=(1, 2)) if s else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbours -> one token: LayerNorm over the 4C concatenation, then a bias-free linear to ``out_dim``."""

    def __init__(self, dim: int, out_dim: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(merge_2x2(x)))


class SwinStage(nn.Module):
    def __init__(self, cfg: SwinConfig, i: int):
        super().__init__()
        dim = cfg.stage_dim(i)
        self.downsample = PatchMerging(cfg.stage_dim(i - 1), dim, cfg.ln_eps) if i > 0 else nn.Identity()
        window, shift = cfg.stage_window(i)
        res, hidden = cfg.stage_resolution(i), int(dim * cfg.mlp_ratio)
        self.blocks = nn.Sequential(*[
            SwinBlock(dim, cfg.num_heads[i], res, window, shift if j % 2 else 0, hidden, cfg.ln_eps)
            for j in range(cfg.depths[i])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ClassifierHead(nn.Module):
    """timm's head: global average pool over the grid, then ``fc`` (Identity without classes)."""

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(1, 2)))


class SwinTransformer(nn.Module):
    def __init__(self, cfg: SwinConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.layers = nn.Sequential(*[SwinStage(cfg, i) for i in range(cfg.num_stages)])
        self.norm = nn.LayerNorm(cfg.num_features, eps=cfg.ln_eps)
        self.head = ClassifierHead(cfg.num_features, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for name, p in self.named_parameters():
            if name.endswith("relative_position_bias_table"):
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final-norm tokens (B, H, W, C) of the last stage."""
        return self.norm(self.layers(self.patch_embed(x)))

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """What the classifier reads (B, C): the final-norm tokens averaged over the grid."""
        return self.forward_features(x).mean(dim=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def create_model(name: str, **overrides) -> SwinTransformer:
    """A named timm Swin config with random weights (``overrides`` change config fields, e.g. num_classes)."""
    if name not in NAMED_CONFIGS:
        raise ModelError(f"unknown Swin config {name!r}; known: {', '.join(sorted(NAMED_CONFIGS))}")
    return SwinTransformer(SwinConfig.from_dict({**NAMED_CONFIGS[name].to_dict(), **overrides}))
