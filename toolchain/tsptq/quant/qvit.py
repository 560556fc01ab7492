"""The quantized ViT simulator: one functional forward, with a named quantization point at every tensor the
integer model stores.

``run(graph, x, hook)`` is the ViT forward written as the integer model will execute it: LayerScale folded
into the preceding linear layer, the class token concatenated with the patch embedding under the patch
embedding's code, every op's output passed through ``hook.act(name, kind, x)``. Three hooks share it:
the float pass (identity), the calibration recorder (keeps the tensors) and the simulator (fake-quantizes
them with the fitted quantizers). Kinds: ``residual`` (the residual stream = LayerNorm inputs), ``branch``
(attention and MLP outputs, added into the residual stream), ``norm_out`` (LayerNorm outputs), ``softmax`` and
``gelu`` (post-Softmax / post-GELU values), ``act`` (everything else: uniform in every method), and
``same_code`` for a tensor that is not a point of its own but keeps another point's code (``SAME_CODE``: the
patch-token mean of a ``token+avg`` head keeps the final norm's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from tsptq.quant.quantizers import Quantizer, Uniform
from tsptq.model.vit import VisionTransformer


@dataclass
class Graph:
    """The float model flattened for quantization: linear layers with LayerScale folded in, constants, norms."""

    cfg: object
    linears: dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (weight, bias); patch_embed is a conv weight
    consts: dict[str, torch.Tensor]  # "prefix" (class/dist tokens), "pos_embed"
    norms: dict[str, tuple[torch.Tensor, torch.Tensor]]  # "blocks.i.norm1" ... "norm" -> (gamma, beta)

    @classmethod
    def from_model(cls, model: VisionTransformer) -> "Graph":
        cfg = model.cfg
        lin, norms = {}, {}
        with torch.no_grad():
            pe = model.patch_embed.proj
            lin["patch_embed"] = (pe.weight.clone(), pe.bias.clone())
            for i, blk in enumerate(model.blocks):
                p = f"blocks.{i}"
                g1 = blk.ls1.gamma if cfg.layer_scale else torch.ones(cfg.embed_dim)
                g2 = blk.ls2.gamma if cfg.layer_scale else torch.ones(cfg.embed_dim)
                lin[f"{p}.qkv"] = (blk.attn.qkv.weight.clone(), blk.attn.qkv.bias.clone())
                lin[f"{p}.proj"] = (blk.attn.proj.weight * g1[:, None], blk.attn.proj.bias * g1)
                lin[f"{p}.fc1"] = (blk.mlp.fc1.weight.clone(), blk.mlp.fc1.bias.clone())
                lin[f"{p}.fc2"] = (blk.mlp.fc2.weight * g2[:, None], blk.mlp.fc2.bias * g2)
                norms[f"{p}.norm1"] = (blk.norm1.weight.clone(), blk.norm1.bias.clone())
                norms[f"{p}.norm2"] = (blk.norm2.weight.clone(), blk.norm2.bias.clone())
            norms["norm"] = (model.norm.weight.clone(), model.norm.bias.clone())
            if cfg.num_classes:
                lin["head"] = (model.head.weight.clone(), model.head.bias.clone())
                if model.head_dist is not None:
                    lin["head_dist"] = (model.head_dist.weight.clone(), model.head_dist.bias.clone())
            prefix = [model.cls_token] + ([model.dist_token] if model.dist_token is not None else [])
            consts = {"prefix": torch.cat(prefix, 1).clone(), "pos_embed": model.pos_embed.clone()}
        return cls(cfg, lin, consts, norms)

    def consumer_norm(self, residual_point: str) -> str:
        """The LayerNorm that reads a residual-stream point (its output error scores O-2SF candidates)."""
        if residual_point == "norm.in":
            return "norm"
        blk, which = residual_point.rsplit(".", 1)
        return f"{blk}.norm1" if which == "in" else f"{blk}.norm2"


    def consumer_linear(self, point: str) -> str | None:
        """The linear layer that reads a post-GELU or LayerNorm-output point (None: no single layer reads it alone)."""
        if point == "norm":  # a head that reads the class token alone (not two heads, not a pooled pair)
            alone = "head_dist" not in self.linears and self.cfg.global_pool == "token"
            return "head" if "head" in self.linears and alone else None
        blk, which = point.rsplit(".", 1)
        return {"gelu": f"{blk}.fc2", "norm1": f"{blk}.qkv", "norm2": f"{blk}.fc1"}[which]

    # --- the interface the calibration, the searches, block-output selection and the engines use, shared with the
    # Swin graph (tsptq.quant.qswin.SwinGraph) ----------------------------------------------------------------------

    int8_consts = ("pos_embed",)  # the constants the methods quantize to int8 (symmetric, per tensor)
    no_faithful = None  # (the Swin graph says here why the faithful simulator does not cover it)
    # The axis of the attention scores that holds the heads, where a per-head scores code has an integer model
    # (TSPTQ_BMM_HEADS and a softmax table per head); None where it has none (the Swin graph)
    scores_head_axis = 1

    @property
    def tokens_per_image(self) -> int:
        return self.cfg.num_tokens

    def points(self) -> list[tuple[str, str]]:
        return point_names(self.cfg)

    def forward(self, x: torch.Tensor, hook, linears=None, consts=None) -> torch.Tensor:
        return run(self, x, hook, linears, consts)

    def units(self, consts=None) -> list[tuple[str, object, str | None]]:
        """The forward cut where the residual stream is stored: (name, run(t, hook, linears), the point that stores
        its output, None for the last). Block-output selection scores each unit's output at that point's consumer."""
        depth = self.cfg.depth
        units = [("embed", lambda t, hook, lin: embed(self, t, hook, lin, consts),
                  "blocks.0.in" if depth else "norm.in")]
        for i in range(depth):
            units.append((f"blocks.{i}", lambda t, hook, lin, i=i: block(self, i, t, hook, lin),
                          f"blocks.{i + 1}.in" if i + 1 < depth else "norm.in"))
        units.append(("final", lambda t, hook, lin: final(self, t, hook, lin), None))
        return units

    def unit_of(self, name: str) -> str:
        """The unit (see ``units``) a point, a linear layer or a constant belongs to."""
        b = -1 if name in self.consts else block_of(name)
        return "embed" if b < 0 else "final" if b >= self.cfg.depth else f"blocks.{b}"

    def role_of(self, name: str) -> str:
        """What a point, weight or constant is in every block alike (``blocks.3.norm1`` -> ``norm1``)."""
        return ".".join(name.split(".")[2:]) if name.startswith("blocks.") else name

    def norm_input(self, residual_point: str, x: torch.Tensor) -> torch.Tensor:
        """What the consuming LayerNorm reads, from the point's tensor: the tensor itself in a ViT."""
        return x

    def linear_input(self, layer: str) -> str:
        return linear_input(self.cfg, layer)

    def score_mask(self, scores_point: str) -> None:
        """The additive mask the Softmax sees after a ``.scores`` point: none in a ViT."""
        return None

    def features(self, name: str, x: torch.Tensor) -> torch.Tensor | None:
        """What evaluation compares as the class token: the final-norm class token."""
        return x[:, 0] if name == "norm" else None


class FloatHook:
    def act(self, name: str, kind: str, x: torch.Tensor) -> torch.Tensor:
        return x


def run(g: Graph, x: torch.Tensor, hook, linears=None, consts=None) -> torch.Tensor:
    """The ViT forward with a quantization point after every op. ``linears``/``consts`` override the float ones."""
    t = embed(g, x, hook, linears, consts)
    for i in range(g.cfg.depth):
        t = block(g, i, t, hook, linears)
    return final(g, t, hook, linears)


def embed(g: Graph, x: torch.Tensor, hook, linears=None, consts=None) -> torch.Tensor:
    """Image -> the residual stream entering block 0 (patch embedding, prefix tokens, position embedding)."""
    L, C, act = linears or g.linears, consts or g.consts, hook.act
    x = act("input", "act", x)
    w, b = L["patch_embed"]
    t = F.conv2d(x, w, b, stride=g.cfg.patch_size).flatten(2).transpose(1, 2)
    t = act("patch_embed", "act", torch.cat([C["prefix"].expand(x.shape[0], -1, -1), t], 1))
    return t + C["pos_embed"]


def block(g: Graph, i: int, t: torch.Tensor, hook, linears=None) -> torch.Tensor:
    """Transformer block ``i``: residual stream in, residual stream out (before the next block's ``.in`` code)."""
    cfg, L, act = g.cfg, linears or g.linears, hook.act
    B, H, hd, D = t.shape[0], cfg.num_heads, cfg.head_dim, cfg.embed_dim
    p = f"blocks.{i}"
    r = act(f"{p}.in", "residual", t)
    a = act(f"{p}.norm1", "norm_out", F.layer_norm(r, (D,), *g.norms[f"{p}.norm1"], eps=cfg.ln_eps))
    qkv = F.linear(a, *L[f"{p}.qkv"]).reshape(B, -1, 3, H, hd).permute(2, 0, 3, 1, 4)
    q = act(f"{p}.q", "act", qkv[0])
    k = act(f"{p}.k", "act", qkv[1])
    v = act(f"{p}.v", "act", qkv[2])
    s = act(f"{p}.scores", "act", (q @ k.transpose(-2, -1)) * (hd ** -0.5))
    pr = act(f"{p}.softmax", "softmax", s.softmax(-1))
    c = act(f"{p}.ctx", "act", pr @ v).transpose(1, 2).reshape(B, -1, D)
    o = act(f"{p}.proj", "branch", F.linear(c, *L[f"{p}.proj"]))
    m = act(f"{p}.mid", "residual", r + o)
    a = act(f"{p}.norm2", "norm_out", F.layer_norm(m, (D,), *g.norms[f"{p}.norm2"], eps=cfg.ln_eps))
    h = act(f"{p}.fc1", "act", F.linear(a, *L[f"{p}.fc1"]))
    h = act(f"{p}.gelu", "gelu", F.gelu(h))
    f = act(f"{p}.fc2", "branch", F.linear(h, *L[f"{p}.fc2"]))
    return m + f


def final(g: Graph, t: torch.Tensor, hook, linears=None) -> torch.Tensor:
    """The residual stream after the last block -> logits (or the final-norm class token for a headless model)."""
    cfg, L, act = g.cfg, linears or g.linears, hook.act
    r = act("norm.in", "residual", t)
    n = act("norm", "norm_out", F.layer_norm(r, (cfg.embed_dim,), *g.norms["norm"], eps=cfg.ln_eps))
    if "head" not in L:
        return n[:, 0]
    if "head_dist" in L:  # DeiT distilled: mean of the two heads
        return act("head", "act", (F.linear(n[:, 0], *L["head"]) + F.linear(n[:, 1], *L["head_dist"])) / 2)
    if cfg.global_pool == "token+avg":
        # The patch-token mean keeps the final norm's code: its integer op rounds the mean of the codes
        # (TSPTQ_TOKEN_MEAN), which is the code of the mean of their values.
        mean = act("norm.patch_mean", "same_code", n[:, cfg.num_prefix_tokens:].mean(1))
        return act("head", "act", F.linear(torch.cat([n[:, 0], mean], -1), *L["head"]))
    return act("head", "act", F.linear(n[:, 0], *L["head"]))


def block_of(point: str) -> int:
    """The block a quantization point belongs to: -1 for the embedding points, depth-or-more for the final ones."""
    if point.startswith("blocks."):
        return int(point.split(".")[1])
    return -1 if point in ("input", "patch_embed") else 1 << 30


def point_names(cfg) -> list[tuple[str, str]]:
    """Every quantization point (name, kind) in execution order."""
    names = [("input", "act"), ("patch_embed", "act")]
    for i in range(cfg.depth):
        p = f"blocks.{i}"
        names += [(f"{p}.in", "residual"), (f"{p}.norm1", "norm_out"), (f"{p}.q", "act"), (f"{p}.k", "act"),
                  (f"{p}.v", "act"), (f"{p}.scores", "act"), (f"{p}.softmax", "softmax"), (f"{p}.ctx", "act"),
                  (f"{p}.proj", "branch"), (f"{p}.mid", "residual"), (f"{p}.norm2", "norm_out"), (f"{p}.fc1", "act"),
                  (f"{p}.gelu", "gelu"), (f"{p}.fc2", "branch")]
    names += [("norm.in", "residual"), ("norm", "norm_out")]
    if cfg.num_classes:
        names.append(("head", "act"))
    return names


def linear_input(cfg, layer: str) -> str:
    """The quantization point that feeds a linear layer (its code's base scale sets the int32 bias scale)."""
    if layer == "patch_embed":
        return "input"
    if layer in ("head", "head_dist"):
        return "norm"
    blk, op = layer.rsplit(".", 1)
    return {"qkv": f"{blk}.norm1", "proj": f"{blk}.ctx", "fc1": f"{blk}.norm2", "fc2": f"{blk}.gelu"}[op]


# Tensors that are not quantization points of their own: they keep the code of the point named here (kind "same_code").
SAME_CODE = {"norm.patch_mean": "norm"}


class SimHook:
    def __init__(self, quantizers: dict[str, Quantizer]):
        self.q = quantizers

    def act(self, name: str, kind: str, x: torch.Tensor) -> torch.Tensor:
        quant = self.q.get(SAME_CODE.get(name, name))
        return x if quant is None else quant.fake(x)


class _SigmaHook(SimHook):
    """SimHook that also keeps, per residual point (a LayerNorm input), the smallest token deviation it saw."""

    def __init__(self, quantizers: dict[str, Quantizer], eps: float):
        super().__init__(quantizers)
        self.eps, self.sigma_min = eps, {}

    def act(self, name: str, kind: str, x: torch.Tensor) -> torch.Tensor:
        y = super().act(name, kind, x)
        if kind == "residual":
            s = float(torch.sqrt(y.double().var(-1, unbiased=False) + self.eps).min())
            self.sigma_min[name] = min(self.sigma_min.get(name, math.inf), s)
        return y


@dataclass
class QuantizedViT:
    """A fitted quantization of a ViT (or a Swin: ``graph`` is then a ``qswin.SwinGraph``): activation codes per
    point, weight codes per layer, fake-quantized params."""

    graph: Graph
    method: str
    w_bits: int
    a_bits: int
    acts: dict[str, Quantizer]
    weights: dict[str, Uniform]
    consts: dict[str, Uniform]
    info: dict = field(default_factory=dict)  # calibration record: images, seconds, search choices

    def __post_init__(self):
        self._linears = {}
        for name, (w, b) in self.graph.linears.items():
            wq = self.weights[name].fake(w) if name in self.weights else w
            in_q = self.acts.get(self.graph.linear_input(name))
            if in_q is not None and name in self.weights:  # int32 bias at scale s_in * s_w
                bias_q = Uniform(in_q.base_scale * self.weights[name].scale, torch.zeros_like(b), 32, axis=0)
                b = bias_q.fake(b)
            self._linears[name] = (wq, b)
        self._consts = {k: (self.consts[k].fake(v) if k in self.consts else v) for k, v in self.graph.consts.items()}
        self._hook = SimHook(self.acts)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, hook: SimHook | None = None) -> torch.Tensor:
        """Logits of the quantized model; ``hook`` (a SimHook over ``self.acts``) can also observe the points."""
        return self.graph.forward(x, hook or self._hook, self._linears, self._consts)

    @torch.no_grad()
    def residual_sigma_min(self, batches) -> dict[str, float]:
        """The smallest token deviation sqrt(var + eps) at each residual point (each LayerNorm's input) of the
        quantized model over ``batches`` of model inputs (the calibration images): what the NPU LayerNorm's
        reciprocal-deviation code is sized from (``lower(..., layernorm_npu=)``)."""
        hook = _SigmaHook(self.acts, self.graph.cfg.ln_eps)
        for x in batches:
            self(x, hook)
        return hook.sigma_min
