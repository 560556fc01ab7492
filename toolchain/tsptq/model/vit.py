"""A timm-compatible Vision Transformer.

Same module tree and state-dict keys as timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``,
``dist_token``, ``pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``,
``norm``, ``head``, ``head_dist``) so timm/DeiT checkpoints load without timm installed.
Only the inference path matters here: no dropout, no drop-path.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


GLOBAL_POOLS = ("token", "token+avg")


@dataclass(frozen=True)
class ViTConfig:
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden: int = 3072
    layer_scale: bool = False  # LayerScale ls1/ls2 (DINOv2, CaiT-style)
    dist_token: bool = False  # DeiT distillation token + head_dist
    # What the head reads: "token" = the final-norm class token (timm's default); "token+avg" = the class token and
    # the mean of the patch tokens, concatenated (2 x embed_dim: the input of DINOv2's linear classifiers)
    global_pool: str = "token"
    ln_eps: float = 1e-6
    # Preprocessing the model was trained with (applied by the data loaders, not by forward()).
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"  # resize filter of the preprocessing: bicubic, bilinear or nearest
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + int(self.dist_token)

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid + self.num_prefix_tokens

    @property
    def head_features(self) -> int:
        return self.embed_dim * (2 if self.global_pool == "token+avg" else 1)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ViTConfig":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


_IMAGENET_DEFAULT = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.875)
_IMAGENET_INCEPTION = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.9)

# timm's named configs (the architecture; weights are random unless a checkpoint is given).
NAMED_CONFIGS: dict[str, ViTConfig] = {
    "deit_tiny_patch16_224": ViTConfig(embed_dim=192, depth=12, num_heads=3, mlp_hidden=768, **_IMAGENET_DEFAULT),
    "deit_small_patch16_224": ViTConfig(embed_dim=384, depth=12, num_heads=6, mlp_hidden=1536, **_IMAGENET_DEFAULT),
    "deit_base_patch16_224": ViTConfig(embed_dim=768, depth=12, num_heads=12, mlp_hidden=3072, **_IMAGENET_DEFAULT),
    "vit_small_patch16_224": ViTConfig(embed_dim=384, depth=12, num_heads=6, mlp_hidden=1536, **_IMAGENET_INCEPTION),
    "vit_base_patch16_224": ViTConfig(embed_dim=768, depth=12, num_heads=12, mlp_hidden=3072, **_IMAGENET_INCEPTION),
}


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.scale = cfg.head_dim ** -0.5
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # fused softmax(q k^T * scale) v
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.mlp_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(cfg.mlp_hidden, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.ln_eps)
        self.attn = Attention(cfg)
        self.ls1 = LayerScale(cfg.embed_dim) if cfg.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.ln_eps)
        self.mlp = Mlp(cfg)
        self.ls2 = LayerScale(cfg.embed_dim) if cfg.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def pool_tokens(tokens: torch.Tensor, cfg: ViTConfig) -> torch.Tensor:
    """The head's input from the final-norm tokens (B, N, D): the class token, or it and the patch-token mean."""
    if cfg.global_pool == "token+avg":
        return torch.cat([tokens[:, 0], tokens[:, cfg.num_prefix_tokens:].mean(1)], -1)
    return tokens[:, 0]


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.dist_token else None
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_tokens, D) * 0.02)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(D, eps=cfg.ln_eps)
        if cfg.global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {', '.join(GLOBAL_POOLS)}, got {cfg.global_pool!r}")
        if cfg.global_pool != "token" and (cfg.dist_token or not cfg.num_classes):
            raise ValueError("global_pool 'token+avg' needs one head (a distilled model reads the class and "
                             "distillation tokens; a headless model outputs the class token): use 'token'")
        self.head = nn.Linear(cfg.head_features, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.head_dist = nn.Linear(D, cfg.num_classes) if cfg.dist_token and cfg.num_classes else None
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        return torch.cat(prefix + [x], dim=1) + self.pos_embed

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final-norm tokens (B, N, D)."""
        return self.norm(self.blocks(self.embed(x)))

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.head_dist is not None:  # DeiT distilled: average of the two heads at inference
            return (self.head(tokens[:, 0]) + self.head_dist(tokens[:, 1])) / 2
        return self.head(pool_tokens(tokens, self.cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def create_model(name: str, **overrides) -> VisionTransformer:
    """A named timm config with random weights (``overrides`` change config fields, e.g. num_classes)."""
    if name not in NAMED_CONFIGS:
        from tsptq.errors import ModelError

        raise ModelError(f"unknown model config {name!r}; known: {', '.join(sorted(NAMED_CONFIGS))}")
    return VisionTransformer(ViTConfig.from_dict({**NAMED_CONFIGS[name].to_dict(), **overrides}))


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, as timm's nn.GELU default."""
    return F.gelu(x)
