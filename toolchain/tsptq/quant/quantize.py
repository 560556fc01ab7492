"""Calibrate and quantize: float ViT or Swin + calibration images + method -> QuantizedViT.

1. record every quantization point's float tensor on the calibration images (``calib.observers``);
2. fit each point's code with the method's search for its kind (``calib.search``);
3. fit the weight codes (symmetric per output channel) and the constants.

The model is first flattened into its simulator graph (``graph_of``: ``qvit.Graph`` or ``qswin.SwinGraph``); every
step below reads the graph through the interface the two share (points, consumers, units), never the architecture.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch
from tqdm import tqdm

from tsptq.quant import block_select

from tsptq.quant import search
from tsptq.data.datasets import ImageSet
from tsptq.errors import QuantizationError
from tsptq.model.swin import SwinTransformer
from tsptq.quant.observers import Calibration, record
from tsptq.quant.methods import Method, get_method, parse_bits
from tsptq.quant.quantizers import ChannelPow2, Quantizer, Uniform, max_two_scale_ratio
from tsptq.quant.qswin import SwinGraph
from tsptq.quant.qvit import Graph, QuantizedViT
from tsptq.model.vit import VisionTransformer

# Output-error searches look at a subsample (enough to rank candidates, bounded cost on large models).
SEARCH_IMAGES = 8  # post-Softmax: attn x V error over this many images
SEARCH_ROWS = 2048  # residual, LayerNorm-output and branch codes: scored over this many tokens
SEARCH_ROWS_GELU = 1024  # post-GELU: fc2 output error over this many tokens (the costliest score)


def graph_of(model: VisionTransformer | SwinTransformer | Graph | SwinGraph) -> Graph | SwinGraph:
    """The simulator graph of a model (a graph is returned as it is)."""
    if isinstance(model, (Graph, SwinGraph)):
        return model
    return SwinGraph.from_model(model) if isinstance(model, SwinTransformer) else Graph.from_model(model)


def quantize(model: VisionTransformer | SwinTransformer | Graph | SwinGraph, calib: ImageSet | Calibration,
             method: str, bits: str = "W8A8", batch_size: int = 16, progress: bool = True) -> QuantizedViT:
    """Fit ``method``'s codes on the calibration images (or on tensors already recorded from them)."""
    graph = graph_of(model)
    spec = get_method(method)
    w_bits, a_bits = parse_bits(bits)
    if spec is None:  # fp32: the same graph, no codes
        return QuantizedViT(graph, "fp32", 32, 32, {}, {}, {})
    if spec.bias_correction and isinstance(graph, SwinGraph):
        raise QuantizationError(f"{method}: bias correction covers the ViT layout only, not a Swin")
    cal = calib if isinstance(calib, Calibration) else record(graph, calib, batch_size, progress)
    t0 = time.perf_counter()
    acts: dict[str, Quantizer] = {}
    points = graph.points()
    candidates = {}
    for name, kind in tqdm(points, desc=f"search {method}", unit="tensor", disable=not progress, leave=False):
        candidates[name] = fit_candidates(spec, name, kind, cal.tensors, graph, a_bits)
    weights = {layer: search.weight_code(w, w_bits, spec.weight_search) for layer, (w, _) in graph.linears.items()}
    consts = {k: _int8_const(graph.consts[k]) for k in graph.int8_consts}
    info = {"calib_images": cal.images}
    if spec.select == "block":
        weight_cands = {layer: block_select.unique([q, search.weight_code(graph.linears[layer][0], w_bits, False)])
                        for layer, q in weights.items()}
        fake_consts = {k: (consts[k].fake(v) if k in consts else v) for k, v in graph.consts.items()}
        acts, weights, changed = block_select.select(graph, cal.tensors, candidates, weight_cands, fake_consts,
                                                     progress)
        info["block_select"] = {"images": block_select.scoring_images(graph, cal.images), "changed": changed}
    else:
        acts = {name: c[0] for name, c in candidates.items()}
    if spec.bias_correction:
        graph, info["bias_correction"] = bias_corrected(graph, cal.tensors, acts, weights)
    info["calib_seconds"] = round(cal.seconds + time.perf_counter() - t0, 2)
    info["two_scale"] = _two_scale_summary(acts)
    return QuantizedViT(graph, method, w_bits, a_bits, acts, weights, consts, info)


def _tokens_by_channels(x: torch.Tensor, point: str) -> torch.Tensor:
    """A recorded linear input as (tokens, channels): the attention context is recorded per head (B, H, T, hd)."""
    if point.endswith(".ctx"):
        x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)
    return x.reshape(-1, x.shape[-1])


@torch.no_grad()
def bias_corrected(graph: Graph, tensors: dict, acts: dict[str, Quantizer],
                   weights: dict[str, Quantizer]) -> tuple[Graph, dict]:
    """A copy of the graph whose block linears' biases absorb their mean output error on the calibration tokens:
    b' = b + E[x] W^T - E[x_hat] W_hat^T, with x_hat the input's code applied to the recorded float input and W_hat
    the weight code (a linear layer's mean output is linear in its mean input, so the means suffice). The patch
    embedding and the head are left as they are (the head sees one token per image: 32 samples are too few).
    Returns the graph and {layer: mean |correction| / mean |bias|}."""
    linears, report = dict(graph.linears), {}
    for layer, (w, b) in graph.linears.items():
        if not layer.startswith("blocks."):
            continue
        point = graph.linear_input(layer)
        x = _tokens_by_channels(tensors[point], point).double()
        x_hat = _tokens_by_channels(acts[point].fake(tensors[point]), point).double()
        shift = x.mean(0) @ w.double().T - x_hat.mean(0) @ weights[layer].fake(w).double().T
        linears[layer] = (w, (b.double() + shift).to(b.dtype))
        report[layer] = round(float(shift.abs().mean() / b.double().abs().mean().clamp_min(1e-12)), 4)
    return (replace(graph, linears=linears) if report else graph), report


def _int8_const(c: torch.Tensor) -> Uniform:
    """A constant's code: symmetric int8, per tensor (the position embedding, Swin's relative position biases)."""
    return Uniform(c.abs().max().clamp_min(1e-8) / 127, torch.tensor(0.0), 8)


def fit_candidates(spec: Method, name: str, kind: str, tensors: dict, graph: Graph, bits: int) -> list[Quantizer]:
    """The codes block-output selection chooses from for one point: the local pick first, then the runner-up of
    the local search where it compared two codes, then the plain min/max code (which never clips what calibration
    saw). Without selection, the local pick alone."""
    local = _local_candidates(spec, name, kind, tensors, graph, bits)
    if spec.select != "block":
        return local[:1]
    plain = search.minmax(tensors[name], bits)
    if _code_for(spec, kind) == "o2sf":
        # The same values as a channel code with every shift 0 (as O-2SF's no-outlier candidate): the point keeps
        # its TSPTQ_* ops in the file, whose per-channel kernels every runtime has (a per-channel builtin
        # FULLY_CONNECTED fed by a uniform LayerNorm output runs wrong in tflite-runtime 2.14).
        plain = ChannelPow2(float(plain.scale), int(plain.zero_point),
                            torch.zeros(tensors[name].shape[-1], dtype=torch.int64), bits)
    extra = [plain]
    if name == "head":  # only the top logits decide: codes that spend their steps on the top of the range
        extra += search.top_range_codes(tensors[name], bits)
    return block_select.unique(local + extra)


def fit_point(spec: Method, name: str, kind: str, tensors: dict, graph: Graph, bits: int) -> Quantizer:
    """Fit one quantization point's code with the method's local search for its kind."""
    return _local_candidates(spec, name, kind, tensors, graph, bits)[0]


def _local_candidates(spec: Method, name: str, kind: str, tensors: dict, graph: Graph, bits: int) -> list[Quantizer]:
    """The local search's pick, followed by its runner-up where it compared a two-scale and a uniform code."""
    x = tensors[name]
    code = _code_for(spec, kind)
    if spec.fc1_code == "o2sf" and name.endswith(".fc1") and (nl := _nonlinearity_error(name, tensors, graph)):
        return [search.o2sf(x, bits, *nl, spec.o2sf_levels),
                search.asymmetric_uniform(x, bits, *nl, high=spec.nonlinear_input_clip == "both")]
    if spec.scores_code == "head" and name.endswith(".scores") and graph.scores_head_axis is not None and \
            (nl := _nonlinearity_error(name, tensors, graph)):
        per_tensor = search.asymmetric_uniform(x, bits, *nl, high=spec.nonlinear_input_clip == "both")
        return [_per_head_scores(spec, name, x, tensors, graph, bits), per_tensor]
    if code == "uniform":
        if spec.generic == "mse" and kind in ("residual", "softmax", "gelu"):  # ablations: scored like 2SF codes
            return [search.mse_uniform(x, bits, *_consumer_error(spec, name, kind, x, tensors, graph))]
        if spec.generic == "mse" and spec.nonlinear_input_clip != "none" and \
                (nl := _nonlinearity_error(name, tensors, graph)):
            # the code scored on the tensor itself stays as the runner-up for block-output selection
            return [search.asymmetric_uniform(x, bits, *nl, high=spec.nonlinear_input_clip == "both"),
                    _fit_uniform(spec.generic, x, bits)]
        return [_fit_uniform(spec.generic, x, bits)]
    if code == "ptf":
        return [search.ptf(x, bits)]
    if code == "log2":
        return [search.log2_code(bits)]
    err, data = _consumer_error(spec, name, kind, x, tensors, graph)
    if code == "o2sf":
        return [search.o2sf(x, bits, err, data, spec.o2sf_levels)]
    m_max = max_two_scale_ratio(x.shape[-1])  # fan-in of the consumer: tokens for attn x V, hidden width for fc2
    if code == "twin":
        return [search.twin_softmax(bits, err, data, m_max) if kind == "softmax" else search.twin_gelu(x, bits, err, data)]
    # V-2SF spends a flag bit; on a tensor without a heavy tail a uniform code of the same width is better, so the
    # consumer decides (O-2SF does the same through its tau = inf candidate).
    two_scale = search.v2sf(x, bits, kind == "gelu", err, data, m_max)
    uniform = search.mse_uniform(x, bits, err, data)
    best = search.best_of([two_scale, uniform], err, data)
    return [best, uniform if best is two_scale else two_scale]


def _per_head_scores(spec: Method, name: str, x: torch.Tensor, tensors: dict, graph: Graph, bits: int) -> Uniform:
    """One uniform code per attention head (the ``graph.scores_head_axis`` of the scores), each head's ends clipped
    as the per-tensor code's, scored through the Softmax on that head's own attn x V. (A head's high end with
    headroom over its calibration maximum was measured worse on dinov2-s14: docs/method.md.)"""
    axis = graph.scores_head_axis
    v = tensors[name.rpartition(".")[0] + ".v"][:SEARCH_IMAGES]
    scales, zero_points = [], []
    for h in range(x.shape[axis]):
        xh = x.narrow(axis, h, 1)
        data = xh[:SEARCH_IMAGES]
        err = search.softmax_output_error(data, v.narrow(axis, h, 1))
        code = search.asymmetric_uniform(xh, bits, err, data, high=spec.nonlinear_input_clip == "both")
        scales.append(float(code.scale))
        zero_points.append(float(code.zero_point))
    return Uniform(torch.tensor(scales), torch.tensor(zero_points), bits, axis=axis)


def _code_for(spec: Method, kind: str) -> str:
    return {"residual": spec.residual, "softmax": spec.softmax, "gelu": spec.gelu, "branch": spec.branch,
            "norm_out": spec.norm_out}.get(kind, "uniform")


def _fit_uniform(generic: str, x: torch.Tensor, bits: int) -> Uniform:
    if generic == "minmax":
        return search.minmax(x, bits)
    if generic == "percentile":
        return search.percentile(x, bits)
    return search.mse_uniform(x, bits)


def _nonlinearity_error(name: str, tensors: dict, graph: Graph):
    """(error function, data) through the nonlinearity a point feeds: GELU then fc2 for an fc1 output, Softmax
    (after the block's shifted-window mask, if any) then x V for the attention scores; None for every other point."""
    blk, _, which = name.rpartition(".")
    if which == "fc1":
        data = search.subsample_rows(tensors[name], SEARCH_ROWS_GELU)
        return search.gelu_output_error(data, graph.linears[f"{blk}.fc2"][0]), data
    if which == "scores":
        data = tensors[name][:SEARCH_IMAGES]
        return search.softmax_output_error(data, tensors[f"{blk}.v"][:SEARCH_IMAGES], graph.score_mask(name)), data
    return None


def _consumer_error(spec: Method, name: str, kind: str, x: torch.Tensor, tensors: dict, graph: Graph):
    """(error function, the data it scores) for a two-scale point: the consuming layer's output error (attn x V,
    the next linear layer, the LayerNorm), or the tensor's own error when the method says so. Branch outputs are
    scored on themselves: their consumer, the residual add, passes the error on unchanged. A residual point's rows
    are sampled as its LayerNorm reads them (Swin's patch merging: four neighbours' channels side by side), then cut
    back to the point's own channels for the candidates."""
    if kind == "softmax":
        data = x[:SEARCH_IMAGES]
        v = tensors[name.replace(".softmax", ".v")][:SEARCH_IMAGES]
        return (search.attention_output_error(data, v) if spec.output_search else search.tensor_error(data)), data
    if kind == "residual":
        rows = search.subsample_rows(graph.norm_input(name, x), SEARCH_ROWS)
        data = rows.reshape(-1, x.shape[-1])
    else:
        data = search.subsample_rows(x, SEARCH_ROWS_GELU if kind == "gelu" else SEARCH_ROWS)
    if not spec.output_search:
        return search.tensor_error(data), data
    if kind in ("gelu", "norm_out"):
        consumer = graph.consumer_linear(name)
        return (search.linear_output_error(data, graph.linears[consumer][0]) if consumer else search.tensor_error(data)), data
    if kind == "branch":
        return search.tensor_error(data), data
    gamma, beta = graph.norms[graph.consumer_norm(name)]
    return search.layernorm_output_error(rows, gamma, beta, graph.cfg.ln_eps), data


def _two_scale_summary(acts: dict[str, Quantizer]) -> dict:
    """What the searches chose for the two-scale tensors (for reports and metadata)."""
    out = {}
    for name, q in acts.items():
        d = q.to_dict()
        if d["kind"] == "two_scale":
            out[name] = {"fine_scale": d["fine_scale"], "ratio_log2": d["ratio_log2"]}
        elif d["kind"] == "channel_pow2":
            out[name] = {"outliers": int((q.shifts > 0).sum()), "max_shift": int(q.shifts.max())}
    return out

