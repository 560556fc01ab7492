"""The error budget of a quantization: which codes cost the accuracy, point by point.

For each unit (one quantization point, a weight, the position embedding; or a block's or a role's worth of them)
two runs of the fast simulator on the same images:

- ``alone``: only that unit quantized, everything else float: what the unit costs on its own;
- ``left_float``: everything quantized except that unit: what leaving it in float would win back.

Each run is measured against FP32 by top-1 agreement and the final-norm class-token cosine (a Swin: the pooled
final-norm features its head reads). Runs start at the block (a unit of the graph: ``graph.units()``, the
embedding, each block, each Swin patch merging, the final norm and head) that holds the unit's first point, from the
cached residual stream entering it (float for ``alone``, quantized for ``left_float``), so a point late in the
network costs a fraction of a whole forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from tsptq.evaluation import stats
from tsptq.atomic import atomic_write
from tsptq.evaluation.engines import class_token_tap
from tsptq.errors import TsptqError
from tsptq.quant.qvit import QuantizedViT, SimHook

GROUPINGS = ("point", "block", "role")


@dataclass(frozen=True)
class Unit:
    name: str
    points: tuple[str, ...]  # activation quantization points
    layers: tuple[str, ...]  # linear layers whose weights (and int32 biases) are quantized
    consts: tuple[str, ...]  # quantized constants (the position embedding, Swin's relative position biases)
    kind: str  # the point's kind, 'weight', 'const', or 'group'
    code: str  # the code the method chose ('uniform', 'two_scale', 'channel_pow2', ...), or 'mixed'
    first_block: int  # where its runs start: the graph unit of its first member, numbered from -1 (the embedding)


def units(qm: QuantizedViT, by: str = "point") -> list[Unit]:
    """The units of the budget: every point, weight and constant alone (``point``), or grouped per block
    (``embed``, ``blocks.i``, ..., ``final``) or per role (``norm1``, ``softmax``, ``qkv.weight`` ... over all
    blocks: ``graph.role_of``)."""
    if by not in GROUPINGS:
        raise TsptqError(f"unknown grouping {by!r} (known: {', '.join(GROUPINGS)})")
    g = qm.graph
    blocks = [name for name, _, _ in g.units()]
    start = {name: k - 1 for k, name in enumerate(blocks)}
    singles = [Unit(name, (name,), (), (), kind, qm.acts[name].to_dict()["kind"], start[g.unit_of(name)])
               for name, kind in g.points() if name in qm.acts]
    singles += [Unit(f"{layer}.weight", (), (layer,), (), "weight", "uniform", start[g.unit_of(layer)])
                for layer in qm.weights]
    singles += [Unit(c, (), (), (c,), "const", "uniform", start[g.unit_of(c)]) for c in g.int8_consts if c in qm.consts]
    if by == "point":
        return singles

    def key(u: Unit) -> str:
        return blocks[u.first_block + 1] if by == "block" else g.role_of(u.name)

    groups: dict[str, list[Unit]] = {}
    for u in singles:
        groups.setdefault(key(u), []).append(u)
    out = []
    for name, members in groups.items():
        if len(members) == 1:
            out.append(members[0])
            continue
        codes = {m.code for m in members}
        kinds = {m.kind for m in members}
        out.append(Unit(name, sum((m.points for m in members), ()), sum((m.layers for m in members), ()),
                        sum((m.consts for m in members), ()), kinds.pop() if len(kinds) == 1 else "group",
                        codes.pop() if len(codes) == 1 else "mixed", min(m.first_block for m in members)))
    return out


class _Runs:
    """Forward passes of one configuration (which points, weights and constants are quantized), from any block on,
    with the residual stream entering each block cached for the all-float and the all-quantized configurations."""

    def __init__(self, qm: QuantizedViT, batches: list[torch.Tensor]):
        self.qm, self.g, self.batches = qm, qm.graph, batches
        self.ref = self._cache(set(), set(), set())
        self.quant = self._cache(set(qm.acts), set(qm.weights), set(qm.consts))

    def _config(self, points, layers, consts):
        """(hook that quantizes ``points`` and keeps the class token, linear layers, constants)."""
        qm = self.qm
        hook = class_token_tap(SimHook)({p: qm.acts[p] for p in points})
        hook.cls, hook.features = [], self.g.features
        linears = {k: (qm._linears[k] if k in layers else v) for k, v in self.g.linears.items()}
        cs = {k: (qm._consts[k] if k in consts else v) for k, v in self.g.consts.items()}
        return hook, linears, cs

    @torch.no_grad()
    def _cache(self, points, layers, consts):
        """(the residual streams entering each block after the embedding, per batch; logits; class tokens) of one
        configuration."""
        hook, linears, cs = self._config(points, layers, consts)
        *blocks, (_, final, _) = self.g.units(cs)
        streams, logits = [], []
        for x in self.batches:
            per_block = []
            for _, run, _ in blocks:
                per_block.append(run(per_block[-1] if per_block else x, hook, linears))
            logits.append(final(per_block[-1], hook, linears).float().numpy())
            streams.append(per_block)
        return streams, np.concatenate(logits), torch.cat(hook.cls).numpy()

    @torch.no_grad()
    def run(self, points, layers, consts, start: int, cache) -> tuple[np.ndarray, np.ndarray]:
        """(logits, class tokens) over every batch, starting at block ``start`` (-1: from the image)."""
        hook, linears, cs = self._config(points, layers, consts)
        units = self.g.units(cs)
        logits = []
        for x, streams in zip(self.batches, cache[0]):
            if start < 0:
                t, first = x, 0
            else:  # streams[i] enters unit i + 1 (block i of a ViT)
                i = min(start, len(units) - 2)
                t, first = streams[i], i + 1
            for _, run, _ in units[first:]:
                t = run(t, hook, linears)
            logits.append(t.float().numpy())
        return np.concatenate(logits), torch.cat(hook.cls).numpy()


def _measure(logits, cls, ref_logits, ref_cls, headed: bool) -> dict:
    """Agreement of the top-1 class (None without a head: the output is the class token) and class-token cosine."""
    cos = stats.cosine(cls, ref_cls)
    agree = round(100.0 * float((logits.argmax(-1) == ref_logits.argmax(-1)).mean()), 2) if headed else None
    return {"agreement": agree, "cosine_mean": round(float(cos.mean()), 5)}


def diagnose(qm: QuantizedViT, batches: list[torch.Tensor], by: str = "point", progress: bool = True) -> dict:
    """The error budget of ``qm`` on the given (normalized) image batches: one row per unit, sorted with the
    costliest alone (lowest cosine) first, plus the whole quantized model's own agreement and cosine."""
    if qm.method == "fp32":
        raise TsptqError("diagnose needs a quantization method, not fp32")
    if not batches:
        raise TsptqError("diagnose: no images")
    todo = units(qm, by)  # before the caches: a bad grouping fails at once
    headed = "head" in qm.graph.linears
    runs = _Runs(qm, batches)
    _, ref_logits, ref_cls = runs.ref
    full = _measure(*runs.quant[1:], ref_logits, ref_cls, headed)
    everything = (set(qm.acts), set(qm.weights), set(qm.consts))
    rows = []
    for u in tqdm(todo, desc=f"diagnose {qm.method}", unit="unit", disable=not progress, leave=False):
        start = u.first_block
        alone = _measure(*runs.run(set(u.points), set(u.layers), set(u.consts), start, runs.ref), ref_logits, ref_cls,
                         headed)
        rest = [s - set(part) for s, part in zip(everything, (u.points, u.layers, u.consts))]
        left = _measure(*runs.run(*rest, start, runs.quant), ref_logits, ref_cls, headed)
        rows.append({"unit": u.name, "kind": u.kind, "code": u.code,
                     "alone_agreement": alone["agreement"], "alone_cosine": alone["cosine_mean"],
                     "left_float_agreement": left["agreement"], "left_float_cosine": left["cosine_mean"]})
    rows.sort(key=lambda r: (r["alone_cosine"], r["alone_agreement"] or 0.0, r["unit"]))
    return {"method": qm.method, "bits": f"W{qm.w_bits}A{qm.a_bits}", "by": by,
            "images": int(sum(len(x) for x in batches)), "quantized": full, "units": rows}


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}%"


def format_budget(result: dict, top: int | None = None) -> str:
    full = result["quantized"]
    lines = [f"{result['method']} {result['bits']} on {result['images']} images: whole model agreement "
             f"{_pct(full['agreement'])}, class-token cosine {full['cosine_mean']:.5f}",
             "(alone: only this unit quantized; left float: everything else quantized)",
             f"{'unit':<26}{'kind':<10}{'code':<14}{'alone agr':>10}{'alone cos':>11}{'left-float agr':>16}"
             f"{'left-float cos':>16}"]
    for r in result["units"][:top]:
        lines.append(f"{r['unit']:<26}{r['kind']:<10}{r['code']:<14}{_pct(r['alone_agreement']):>10}"
                     f"{r['alone_cosine']:>11.5f}{_pct(r['left_float_agreement']):>16}{r['left_float_cosine']:>16.5f}")
    return "\n".join(lines)


def plot_budget(result: dict, path, top: int = 25) -> None:
    """Two panels over the ``top`` costliest units: 1 - cosine alone, and the cosine gained by leaving it float."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["units"][:top][::-1]
    names = [r["unit"] for r in rows]
    full_cos = result["quantized"]["cosine_mean"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.28 * len(rows) + 1.6), sharey=True)
    colors = ["#c44e52" if r["code"] not in ("uniform", "mixed") else "#4c72b0" for r in rows]
    ax1.barh(names, [1 - r["alone_cosine"] for r in rows], color=colors)
    ax1.set_xlabel("1 - class-token cosine, only this unit quantized", fontsize=8)
    ax2.barh(names, [r["left_float_cosine"] - full_cos for r in rows], color=colors)
    ax2.set_xlabel("cosine gained by leaving this unit float", fontsize=8)
    for ax in (ax1, ax2):
        ax.tick_params(labelsize=7)
        ax.axvline(0, color="black", linewidth=0.6)
    fig.suptitle(f"{result['method']} {result['bits']}, {result['images']} images: error budget "
                 f"(whole model: agreement {_pct(result['quantized']['agreement'])}, cosine {full_cos:.5f}; "
                 "red = two-scale code)", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
