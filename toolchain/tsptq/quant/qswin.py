"""The quantized Swin simulator: the Swin forward with a named quantization point at every tensor the integer model
will store, behind the same interface as the ViT's graph (:mod:`tsptq.quant.qvit`).

``SwinGraph.forward(x, hook)`` is :class:`~tsptq.model.swin.SwinTransformer`'s forward written as an integer model
would execute it, every stored tensor passed through ``hook.act(name, kind, x)`` with the ViT's kinds, so the
calibration recorder, every method's searches, block-output selection and the float32 simulator (``SimHook``) run on
it unchanged. Points, in execution order (``S`` = ``layers.s``, ``B`` = ``layers.s.blocks.j``):

- ``input`` (act); ``patch_embed`` (residual: the conv output is the patch-embedding LayerNorm's input, O-2SF kind).
  That LayerNorm writes its output straight into the first block's ``.in`` code: it is the residual stream, one
  stored tensor, one code.
- per block: ``B.in`` (residual: norm1's input), ``B.norm1`` (norm_out), ``B.q``/``B.k``/``B.v`` (act),
  ``B.scores`` (act: q.k^T / sqrt(d) plus the relative position bias, see below), ``B.softmax`` (softmax: V-2SF),
  ``B.ctx`` (attn x V), ``B.proj`` (branch), ``B.mid`` (residual: the add, norm2's input), ``B.norm2``,
  ``B.fc1`` (act), ``B.gelu`` (gelu: V-2SF), ``B.fc2`` (branch). The block's output (``mid + fc2``) is stored in
  the code of whatever reads it next: the next block's ``.in``, a patch merging's ``.in`` or ``norm.in``.
- patch merging at the start of stages 1..: ``S.downsample.in`` (residual: the merging LayerNorm's input, stored
  before the 2x2 gather, so an O-2SF code keeps one shift per channel of the stored tensor and the LayerNorm reads
  it tiled over the four neighbours), ``S.downsample.norm`` (norm_out, 4C channels); the bias-free
  ``S.downsample.reduction`` writes into the stage's first block's ``.in`` code.
- ``norm.in`` (residual), ``norm`` (norm_out), ``norm.patch_mean`` (same_code: the average pool keeps the final
  norm's code, as the ViT's ``token+avg`` patch mean), ``head`` (act).

The cyclic shift, the window partition and reverse, the padding to whole windows and the 2x2 gather of patch
merging move data only: no point, the codes pass through. The integer model is built from this design by
:mod:`tsptq.intmodel.lower_swin`.

Where the relative position bias and the shifted-window mask sit: the bias (a constant per block, gathered from
the table) is quantized to int8 on its own (like the ViT's position embedding) and added to q.k^T / sqrt(d) BEFORE
the ``.scores`` point: the integer model adds it to the int32 accumulator of q.k^T (rescaled to its scale) and
requantizes the sum once, so the scores code covers exactly what the Softmax reads, with one rounding. The mask
is added AFTER the ``.scores`` point: it is structure, not a value. Its -100 would stretch the scores' range
(minmax would spend the whole 8-bit code on it); in the integer model a masked pair simply takes no part in the
Softmax (probability 0), which adding -100 to the fake-quantized scores reproduces in float (exp(-100) ~ 0). The
searches that score a scores code through the Softmax add the same mask (``score_mask``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tsptq.model.swin import SwinConfig, SwinTransformer, merge_2x2, window_partition, window_reverse

NO_FAITHFUL = ("Swin: the faithful simulator covers the ViT layout only (issue 19); --engine c runs Swin's integer "
               "model, --engine float32 the simulator")


@dataclass(frozen=True)
class BlockGeometry:
    """What a Swin block's forward needs beyond its weights."""

    name: str  # layers.s.blocks.j
    heads: int
    window: int
    shift: int


@dataclass
class SwinGraph:
    """The float Swin flattened for quantization: linear layers, norms, the per-block relative position biases
    (``consts``, quantized to int8) and shifted-window masks (``masks``: structure, never quantized)."""

    cfg: SwinConfig
    linears: dict[str, tuple[torch.Tensor, torch.Tensor]]  # patch_embed is the conv weight; reduction bias = 0
    consts: dict[str, torch.Tensor]  # "layers.s.blocks.j.rel_bias" -> (heads, N, N)
    norms: dict[str, tuple[torch.Tensor, torch.Tensor]]
    masks: dict[str, torch.Tensor]  # block name -> (windows, 1, N, N) additive mask (0 / MASK_VALUE)
    stages: list[list[BlockGeometry]]

    no_faithful = NO_FAITHFUL  # why the faithful simulator (tsptq.intmodel.faithful) refuses it
    scores_head_axis = None  # per-head scores codes: no integer model for a Swin's windowed scores yet

    @classmethod
    def from_model(cls, model: SwinTransformer) -> "SwinGraph":
        cfg = model.cfg
        lin, norms, consts, masks, stages = {}, {}, {}, {}, []
        with torch.no_grad():
            pe = model.patch_embed
            lin["patch_embed"] = (pe.proj.weight.clone(), pe.proj.bias.clone())
            norms["patch_embed.norm"] = (pe.norm.weight.clone(), pe.norm.bias.clone())
            for s, stage in enumerate(model.layers):
                if s > 0:
                    d = f"layers.{s}.downsample"
                    red = stage.downsample.reduction.weight
                    norms[f"{d}.norm"] = (stage.downsample.norm.weight.clone(), stage.downsample.norm.bias.clone())
                    lin[f"{d}.reduction"] = (red.clone(), torch.zeros(red.shape[0]))
                geometry = []
                for j, blk in enumerate(stage.blocks):
                    p = f"layers.{s}.blocks.{j}"
                    lin[f"{p}.qkv"] = (blk.attn.qkv.weight.clone(), blk.attn.qkv.bias.clone())
                    lin[f"{p}.proj"] = (blk.attn.proj.weight.clone(), blk.attn.proj.bias.clone())
                    lin[f"{p}.fc1"] = (blk.mlp.fc1.weight.clone(), blk.mlp.fc1.bias.clone())
                    lin[f"{p}.fc2"] = (blk.mlp.fc2.weight.clone(), blk.mlp.fc2.bias.clone())
                    norms[f"{p}.norm1"] = (blk.norm1.weight.clone(), blk.norm1.bias.clone())
                    norms[f"{p}.norm2"] = (blk.norm2.weight.clone(), blk.norm2.bias.clone())
                    consts[f"{p}.rel_bias"] = blk.attn.position_bias().clone()
                    if blk.attn_mask is not None:
                        masks[p] = blk.attn_mask[:, None].clone()
                    geometry.append(BlockGeometry(p, blk.attn.num_heads, blk.window, blk.shift))
                stages.append(geometry)
            norms["norm"] = (model.norm.weight.clone(), model.norm.bias.clone())
            if cfg.num_classes:
                lin["head"] = (model.head.fc.weight.clone(), model.head.fc.bias.clone())
        return cls(cfg, lin, consts, norms, masks, stages)

    # --- the graph interface (shared with qvit.Graph) ----------------------------------------------------------------

    @property
    def int8_consts(self) -> tuple[str, ...]:
        """The constants the methods quantize to int8 (symmetric, per tensor, as the ViT's position embedding)."""
        return tuple(self.consts)

    @property
    def tokens_per_image(self) -> int:
        return self.cfg.grid * self.cfg.grid

    def points(self) -> list[tuple[str, str]]:
        """Every quantization point (name, kind) in execution order."""
        names = [("input", "act"), ("patch_embed", "residual")]
        for s, blocks in enumerate(self.stages):
            if s > 0:
                names += [(f"layers.{s}.downsample.in", "residual"), (f"layers.{s}.downsample.norm", "norm_out")]
            for b in blocks:
                p = b.name
                names += [(f"{p}.in", "residual"), (f"{p}.norm1", "norm_out"), (f"{p}.q", "act"), (f"{p}.k", "act"),
                          (f"{p}.v", "act"), (f"{p}.scores", "act"), (f"{p}.softmax", "softmax"), (f"{p}.ctx", "act"),
                          (f"{p}.proj", "branch"), (f"{p}.mid", "residual"), (f"{p}.norm2", "norm_out"),
                          (f"{p}.fc1", "act"), (f"{p}.gelu", "gelu"), (f"{p}.fc2", "branch")]
        names += [("norm.in", "residual"), ("norm", "norm_out")]
        if "head" in self.linears:
            names.append(("head", "act"))
        return names

    def forward(self, x: torch.Tensor, hook, linears=None, consts=None) -> torch.Tensor:
        """Logits (the pooled final-norm features without a head). ``linears``/``consts`` override the float ones."""
        t = x
        for _, run, _ in self.units(consts):
            t = run(t, hook, linears)
        return t

    def units(self, consts=None) -> list[tuple[str, object, str | None]]:
        """The forward cut where the residual stream is stored: (name, run(t, hook, linears), the point that stores
        its output, None for the last). Block-output selection scores each unit's output at that point's consumer."""
        C = consts or self.consts
        runs = [("embed", self._embed)]
        for s, blocks in enumerate(self.stages):
            if s > 0:
                runs.append((f"layers.{s}.downsample", lambda t, h, L, s=s: self._merge(s, t, h, L)))
            runs += [(b.name, lambda t, h, L, b=b: self._block(b, t, h, L, C)) for b in blocks]
        runs.append(("final", self._final))
        stored_at = [f"{name}.in" for name, _ in runs[1:-1]] + ["norm.in", None]
        return [(name, run, target) for (name, run), target in zip(runs, stored_at)]

    def unit_of(self, name: str) -> str:
        """The unit a point, a linear layer or a constant belongs to (see ``units``)."""
        if name in ("input", "patch_embed"):
            return "embed"
        if name.startswith("layers."):
            parts = name.split(".")
            return ".".join(parts[:4] if parts[2] == "blocks" else parts[:3])
        return "final"

    def role_of(self, name: str) -> str:
        """What a point, weight or constant is in every block alike: ``layers.1.blocks.0.norm1`` -> ``norm1``,
        ``layers.2.downsample.in`` -> ``downsample.in``."""
        return re.sub(r"^layers\.\d+\.(blocks\.\d+\.)?", "", name)

    def consumer_norm(self, residual_point: str) -> str:
        """The LayerNorm that reads a residual-kind point (its output error scores O-2SF candidates)."""
        if residual_point == "patch_embed":
            return "patch_embed.norm"
        if residual_point == "norm.in":
            return "norm"
        unit, which = residual_point.rsplit(".", 1)
        if unit.endswith(".downsample"):
            return f"{unit}.norm"
        return f"{unit}.norm1" if which == "in" else f"{unit}.norm2"

    def norm_input(self, residual_point: str, x: torch.Tensor) -> torch.Tensor:
        """What the consuming LayerNorm reads, from the point's tensor: patch merging reads the 2x2 gather."""
        return merge_2x2(x) if residual_point.endswith(".downsample.in") else x

    def consumer_linear(self, point: str) -> str | None:
        """The linear layer that reads a post-GELU or LayerNorm-output point alone (None: the final norm, which
        the head reads averaged over the tokens)."""
        if point == "norm":
            return None
        unit, which = point.rsplit(".", 1)
        if unit.endswith(".downsample"):
            return f"{unit}.reduction"
        return {"gelu": f"{unit}.fc2", "norm1": f"{unit}.qkv", "norm2": f"{unit}.fc1"}[which]

    def linear_input(self, layer: str) -> str:
        """The point that feeds a linear layer (its code's base scale sets the int32 bias scale)."""
        if layer == "patch_embed":
            return "input"
        if layer == "head":
            return "norm"  # through the pool, which keeps the final norm's code
        unit, op = layer.rsplit(".", 1)
        return {"qkv": f"{unit}.norm1", "proj": f"{unit}.ctx", "fc1": f"{unit}.norm2", "fc2": f"{unit}.gelu",
                "reduction": f"{unit}.norm"}[op]

    def score_mask(self, scores_point: str) -> torch.Tensor | None:
        """The additive mask the Softmax sees after a ``.scores`` point (None: an unshifted block)."""
        return self.masks.get(scores_point.rsplit(".", 1)[0])

    def features(self, name: str, x: torch.Tensor) -> torch.Tensor | None:
        """What evaluation compares as the 'class token': the pooled final-norm features the head reads."""
        return x if name == "norm.patch_mean" else None

    # --- the forward, unit by unit -------------------------------------------------------------------------------

    def _norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.norms[name]
        return F.layer_norm(x, gamma.shape, gamma, beta, eps=self.cfg.ln_eps)

    def _embed(self, x: torch.Tensor, hook, linears=None) -> torch.Tensor:
        """Image -> the residual stream entering stage 0 (B, H, W, C), before the first block's ``.in`` code."""
        L, act = linears or self.linears, hook.act
        x = act("input", "act", x)
        t = F.conv2d(x, *L["patch_embed"], stride=self.cfg.patch_size).permute(0, 2, 3, 1)
        return self._norm("patch_embed.norm", act("patch_embed", "residual", t))

    def _merge(self, s: int, t: torch.Tensor, hook, linears=None) -> torch.Tensor:
        """Stage s's patch merging: (B, H, W, C) -> (B, H/2, W/2, 2C), before the stage's first ``.in`` code."""
        L, act, d = linears or self.linears, hook.act, f"layers.{s}.downsample"
        r = act(f"{d}.in", "residual", t)
        a = act(f"{d}.norm", "norm_out", self._norm(f"{d}.norm", merge_2x2(r)))
        return F.linear(a, *L[f"{d}.reduction"])

    def _block(self, b: BlockGeometry, t: torch.Tensor, hook, linears=None, consts=None) -> torch.Tensor:
        """One (shifted) window-attention block on (B, H, W, C): residual stream in, residual stream out."""
        L, C, act, p = linears or self.linears, consts or self.consts, hook.act, b.name
        B, H, W, D = t.shape
        w, heads = b.window, b.heads
        hd = D // heads
        r = act(f"{p}.in", "residual", t)
        a = act(f"{p}.norm1", "norm_out", self._norm(f"{p}.norm1", r))
        if b.shift:
            a = torch.roll(a, shifts=(-b.shift, -b.shift), dims=(1, 2))
        pad_h, pad_w = -H % w, -W % w
        if pad_h or pad_w:  # zero tokens at the bottom/right (after the roll), as the float model and timm
            a = F.pad(a, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = H + pad_h, W + pad_w
        windows = window_partition(a, w)  # (B * nW, N, D)
        nW, N = windows.shape[0] // B, w * w
        qkv = F.linear(windows, *L[f"{p}.qkv"]).reshape(B, nW, N, 3, heads, hd).permute(3, 0, 1, 4, 2, 5)
        q = act(f"{p}.q", "act", qkv[0])  # (B, nW, heads, N, hd)
        k = act(f"{p}.k", "act", qkv[1])
        v = act(f"{p}.v", "act", qkv[2])
        s = act(f"{p}.scores", "act", (q @ k.transpose(-2, -1)) * (hd ** -0.5) + C[f"{p}.rel_bias"])
        if p in self.masks:  # after the point: masked pairs take no part in the Softmax (see the module docstring)
            s = s + self.masks[p]
        pr = act(f"{p}.softmax", "softmax", s.softmax(-1))
        c = act(f"{p}.ctx", "act", pr @ v).permute(0, 1, 3, 2, 4).reshape(B * nW, N, D)
        o = act(f"{p}.proj", "branch", F.linear(c, *L[f"{p}.proj"]))
        o = window_reverse(o, w, Hp, Wp)[:, :H, :W]
        if b.shift:
            o = torch.roll(o, shifts=(b.shift, b.shift), dims=(1, 2))
        m = act(f"{p}.mid", "residual", r + o)
        a = act(f"{p}.norm2", "norm_out", self._norm(f"{p}.norm2", m))
        h = act(f"{p}.fc1", "act", F.linear(a, *L[f"{p}.fc1"]))
        h = act(f"{p}.gelu", "gelu", F.gelu(h))
        f = act(f"{p}.fc2", "branch", F.linear(h, *L[f"{p}.fc2"]))
        return m + f

    def _final(self, t: torch.Tensor, hook, linears=None) -> torch.Tensor:
        """The residual stream after the last block -> logits (the pooled features without a head)."""
        L, act = linears or self.linears, hook.act
        r = act("norm.in", "residual", t)
        n = act("norm", "norm_out", self._norm("norm", r))
        # The pool keeps the final norm's code: its integer op rounds the mean of the codes (TSPTQ_TOKEN_MEAN).
        pooled = act("norm.patch_mean", "same_code", n.mean(dim=(1, 2)))
        if "head" not in L:
            return pooled
        return act("head", "act", F.linear(pooled, *L["head"]))
