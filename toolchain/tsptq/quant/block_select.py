"""Block-output selection: pick each point's code by the error it causes where the network can see it.

The local searches (``calib.search``) score a candidate on the tensor itself or on its one consumer. On a model they
were not tuned on that can mislead: clipping the attention scores by their own squared error cuts off the large
scores the Softmax depends on, a two-scale Softmax code that wins on ``attn x V`` can lose further on. So, in
execution order, each point's candidates (its locally fitted code, the runner-up codes of its local searches and the
plain min/max code of the same width) and each weight's (its clipped and its plain per-channel code) are run through the rest of the point's transformer block, with the points before it at their selected codes and the
points after it at their locally fitted ones, and the candidate with the smallest error at the block output is kept.
"Block" is a unit of the graph (``graph.units()``): the embedding, each transformer block, each Swin patch merging,
the final norm and head; each ends where the residual stream is stored.

Error at the block output = squared error of the next LayerNorm's output, as it reads the stored tensor (so
DINOv2's few huge residual channels and tokens do not drown the rest) against the float model's, over a token budget of calibration images. After the
last block, the squared error of the logits weighted by the float class probabilities (the squared error of the
class token without a head).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tsptq.quant.qvit import FloatHook, Graph, SimHook

SELECT_TOKENS = 1024  # tokens of calibration images the block outputs are compared on (>= 1 image)


def _same(a, b) -> bool:
    return a.to_dict() == b.to_dict()


def scoring_images(graph: Graph, available: int) -> int:
    return max(1, min(available, SELECT_TOKENS // graph.tokens_per_image))


@torch.no_grad()
def select(graph: Graph, tensors: dict, candidates: dict[str, list], weight_candidates: dict[str, list],
           consts: dict, progress: bool = True) -> tuple[dict, dict, dict]:
    """(chosen code per point, chosen code per layer's weight, what won where it was not the local pick).

    ``candidates[point]`` / ``weight_candidates[layer]``: codes to choose from, the local pick first (it wins ties).
    A stage's weights are chosen before its points. ``consts``: the fake-quantized constants."""
    cfg = graph.cfg
    n = scoring_images(graph, tensors["input"].shape[0])
    chosen = {p: c[0] for p, c in candidates.items()}
    chosen_w = {layer: c[0] for layer, c in weight_candidates.items()}
    fake_w = {layer: {id(c): c.fake(graph.linears[layer][0]) for c in cands}
              for layer, cands in weight_candidates.items()}
    changed = {}

    def linears(override=None):
        """The linear layers with each weight at its chosen code (``override``: layer -> another code)."""
        picks = {**chosen_w, **(override or {})}
        return {k: ((fake_w[k][id(picks[k])], b) if k in picks else (w, b)) for k, (w, b) in graph.linears.items()}

    def normed(t, target):
        """The LayerNorm output that reads the stored tensor ``t`` of the residual point ``target``."""
        gamma, beta = graph.norms[graph.consumer_norm(target)]
        return F.layer_norm(graph.norm_input(target, t), gamma.shape, gamma, beta, cfg.ln_eps)

    x = tensors["input"][:n]

    # Stages: (unit, run(stage input, hook, linears) -> stage output, the float tensor its output targets).
    stages = graph.units(consts)
    final_ref = stages[-1][1](tensors[stages[-2][2]][:n], FloatHook(), None)  # the last unit on its float input
    todo = sum(len(c) for c in [*candidates.values(), *weight_candidates.values()] if len(c) > 1)
    with tqdm(total=todo, desc="block-output selection", unit="run", disable=not progress, leave=False) as bar:
        t = x
        for stage, forward, target in stages:
            points = [p for p, _ in graph.points() if graph.unit_of(p) == stage]
            if target is None and "head" in graph.linears:
                # Logits: squared error weighted by the float class probability. The likely classes decide the
                # argmax; an unlikely class's logit may be clamped at no cost.
                weight = final_ref.softmax(-1)
                err = lambda out, weight=weight: float((weight * (out - final_ref).square()).sum())  # noqa: E731
            elif target is None:
                err = lambda out: float((out - final_ref).square().sum())  # noqa: E731
            else:
                ref = normed(tensors[target][:n], target)
                err = lambda out, ref=ref, target=target: float(  # noqa: E731
                    (normed(out, target) - ref).square().sum())

            def pick(cands, run):
                """Index of the candidate with the smallest stage-output error (the first wins ties)."""
                scores = []
                for k, c in enumerate(cands):
                    scores.append((err(run(c)), k))
                    bar.update(1)
                return min(scores)[1]

            for layer in [k for k in weight_candidates if graph.unit_of(k) == stage]:
                cands = weight_candidates[layer]
                best = pick(cands, lambda c: forward(t, SimHook(chosen), linears({layer: c}))) if len(cands) > 1 else 0
                chosen_w[layer] = cands[best]
                if best:
                    changed[f"{layer}.weight"] = "uniform"
            lin = linears()
            for p in points:
                cands = candidates.get(p, [])
                best = pick(cands, lambda c: forward(t, SimHook({**chosen, p: c}), lin)) if len(cands) > 1 else 0
                if cands:
                    chosen[p] = cands[best]
                if best:
                    changed[p] = cands[best].to_dict()["kind"]
            t = forward(t, SimHook(chosen), lin)
    return chosen, chosen_w, changed


def unique(codes: list) -> list:
    """The codes without repeats, first occurrence kept."""
    out = []
    for c in codes:
        if not any(_same(c, o) for o in out):
            out.append(c)
    return out
