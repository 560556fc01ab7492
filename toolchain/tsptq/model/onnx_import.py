"""ONNX exports of pre-norm ViTs (timm's and transformers' ``torch.onnx.export`` graphs) as a timm-layout state dict.

The graph is read by its data flow, not by tensor names (exporters rename, fold and de-duplicate initializers):

- the first ``Conv`` is the patch embedding; the ``Concat`` before the first ``LayerNormalization`` holds the class
  (and distillation) token, the ``Add`` of a constant (1, N, D) after it the position embeddings;
- a *linear* is a ``MatMul`` with a constant 2-D operand or a ``Gemm``, with the ``Add`` of a constant bias after it;
- each block is ``LayerNormalization`` -> attention linears -> ``LayerNormalization`` -> fc1 -> GELU -> fc2; the
  attention's query, key and value are told apart by where they meet the ``Softmax`` (one fused linear is timm's
  ``qkv``), a ``Mul`` by a constant (D,) after proj or fc2 is LayerScale; heads come from the attention ``Reshape``;
- after the last ``LayerNormalization``, the linears on token 0 and token 1 are ``head`` and ``head_dist``.

GELU must be the exact (erf) one. What does not fit is refused, naming the node; the mapped model is then checked
against onnxruntime on random images (``check_against_onnxruntime``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tsptq.errors import ModelError

_PASS_THROUGH = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Mul", "Div", "Split", "Gather", "Slice",
                 "Cast", "Flatten")


class _Graph:
    def __init__(self, path: Path):
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError:
            raise ModelError("reading ONNX needs the onnx package: pip install onnx onnxruntime "
                             "(the project's `dinov2` extra)") from None
        try:
            model = onnx.load(str(path))
        except Exception as e:  # noqa: BLE001 -- protobuf and OS errors alike: not a model file
            raise ModelError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:120]})") from None
        self.path, self.nodes = path, list(model.graph.node)
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.producer, self.consumers = {}, {}
        for n in self.nodes:
            if n.op_type == "Constant":
                value = next((a for a in n.attribute if a.name == "value"), None)
                if value is not None:
                    self.consts[n.output[0]] = numpy_helper.to_array(value.t)
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.order = {id(n): k for k, n in enumerate(self.nodes)}

    def const(self, name: str) -> np.ndarray | None:
        while name not in self.consts and name in self.producer and self.producer[name].op_type == "Identity":
            name = self.producer[name].input[0]
        return self.consts.get(name)

    def attr(self, node, name: str, default=None):
        from onnx import helper

        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)

    def only_consumer(self, tensor: str, op: str):
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None


class _Linear:
    """y = x @ weight.T + bias, found at ``node``; ``out`` is the tensor after the bias."""

    def __init__(self, g: _Graph, node):
        self.node = node
        if node.op_type == "Gemm":
            if g.attr(node, "transA", 0) or g.attr(node, "alpha", 1.0) != 1.0 or g.attr(node, "beta", 1.0) != 1.0:
                raise ModelError(f"{g.path}: Gemm {node.name or ''} with transA, alpha or beta != 1 is not mapped")
            w = g.const(node.input[1])
            self.weight = w if g.attr(node, "transB", 0) else w.T
            self.data = node.input[0]
            bias = g.const(node.input[2]) if len(node.input) > 2 else None
            self.out = node.output[0]
        else:
            a, b = g.const(node.input[0]), g.const(node.input[1])
            self.weight, self.data = (b.T, node.input[0]) if b is not None else (a, node.input[1])
            bias, self.out = None, node.output[0]
            add = g.only_consumer(node.output[0], "Add")
            if add is not None:
                other = next((i for i in add.input if i != node.output[0]), None)
                c = g.const(other) if other is not None else None
                if c is not None and c.ndim == 1 and c.shape[0] == self.weight.shape[0]:
                    bias, self.out = c, add.output[0]
        self.bias = bias if bias is not None else np.zeros(self.weight.shape[0], np.float32)


def _is_linear(g: _Graph, n) -> bool:
    if n.op_type == "Gemm":
        return g.const(n.input[1]) is not None and g.const(n.input[1]).ndim == 2
    if n.op_type != "MatMul":
        return False
    consts = [g.const(i) for i in n.input]
    return sum(c is not None for c in consts) == 1 and any(c is not None and c.ndim == 2 for c in consts)


def _source_linear(g: _Graph, tensor: str, linears: dict) -> "_Linear | None":
    """The linear a tensor comes from through reshapes, transposes, splits and scalings."""
    seen = 0
    while seen < 64:
        seen += 1
        node = g.producer.get(tensor)
        if node is None:
            return None
        for lin in linears.values():
            if tensor == lin.out or tensor == lin.node.output[0]:
                return lin
        if node.op_type not in _PASS_THROUGH:
            return None
        tensor = next((i for i in node.input if g.const(i) is None), node.input[0])
    return None


def _layer_scale(g: _Graph, lin: _Linear, dim: int) -> np.ndarray | None:
    mul = g.only_consumer(lin.out, "Mul")
    if mul is None:
        return None
    other = next((i for i in mul.input if i != lin.out), None)
    c = g.const(other) if other is not None else None
    return c.reshape(-1) if c is not None and c.size == dim and c.ndim >= 1 else None


def _token_const(g: _Graph, tensor: str) -> np.ndarray | None:
    for _ in range(16):
        c = g.const(tensor)
        if c is not None:
            return c
        node = g.producer.get(tensor)
        if node is None or node.op_type not in ("Expand", "Tile", "Identity", "Where", "Cast"):
            return None
        tensor = node.input[1] if node.op_type == "Where" else node.input[0]  # Where(cond, x, y): timm's expand
    return None


def _token_index(g: _Graph, tensor: str, final_out: str) -> int | None:
    """Which token a head reads: a Gather/Slice on axis 1 of the final LayerNorm's output."""
    for _ in range(8):
        node = g.producer.get(tensor)
        if node is None:
            return None
        if node.op_type in ("Gather", "Slice") and node.input[0] == final_out:
            idx = g.const(node.input[1])
            return int(np.asarray(idx).reshape(-1)[0]) if idx is not None else None
        if node.op_type not in ("Reshape", "Squeeze", "Flatten", "Identity"):
            return None
        tensor = node.input[0]
    return None


def _ln_params(g: _Graph, ln) -> tuple:
    """A LayerNormalization's scale and bias (the bias is optional in opset 17: zeros)."""
    scale = g.const(ln.input[1])
    bias = g.const(ln.input[2]) if len(ln.input) > 2 and ln.input[2] else None
    if bias is None and scale is not None:
        bias = np.zeros_like(scale)
    return scale, bias


def _heads(g: _Graph, lo: int, hi: int, dim: int) -> int | None:
    """From the first 4-D+ Reshape in the attention: (..., heads, head_dim), heads possibly -1 (transformers)."""
    for n in g.nodes[lo:hi]:
        if n.op_type == "Reshape":
            shape = g.const(n.input[1])
            if shape is None or shape.size < 4:
                continue
            head_dim, heads = int(shape[-1]), int(shape[-2])
            if head_dim > 0 and dim % head_dim == 0 and heads in (-1, dim // head_dim):
                return dim // head_dim
    return None


def state_dict_from_onnx(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The timm-layout state dict of a ViT ONNX export, and what shapes cannot tell (``num_heads``, ``ln_eps``)."""
    g = _Graph(Path(path))
    where = g.path
    convs = [n for n in g.nodes if n.op_type == "Conv"]
    lns = [n for n in g.nodes if n.op_type == "LayerNormalization"]
    if not convs or len(lns) < 3 or (len(lns) - 1) % 2:
        raise ModelError(f"{where}: not a pre-norm ViT export: needs a patch-embedding Conv and 2 LayerNormalization "
                         f"ops per block plus a final one (found {len(convs)} Conv, {len(lns)} LayerNormalization; "
                         "export with opset >= 17 so LayerNorm stays one op)")
    if any(n.op_type == "Tanh" for n in g.nodes):
        raise ModelError(f"{where}: a Tanh in the graph (tanh-approximate GELU?): tsptq's MLP is the exact erf GELU")
    sd: dict[str, np.ndarray] = {}
    conv = convs[0]
    sd["patch_embed.proj.weight"] = g.const(conv.input[1])
    if sd["patch_embed.proj.weight"] is None or sd["patch_embed.proj.weight"].ndim != 4:
        raise ModelError(f"{where}: the patch-embedding Conv's weight is not a constant 4-D tensor (a quantized "
                         "or otherwise transformed export?): export the float model")
    dim = sd["patch_embed.proj.weight"].shape[0]
    sd["patch_embed.proj.bias"] = g.const(conv.input[2]) if len(conv.input) > 2 else np.zeros(dim, np.float32)
    first_ln = g.order[id(lns[0])]
    def is_token(t):
        c = _token_const(g, t)
        return c is not None and c.size == dim

    concat = next((n for n in g.nodes[:first_ln] if n.op_type == "Concat" and len(n.input) in (2, 3)
                   and all(is_token(i) for i in n.input[:-1]) and not is_token(n.input[-1])), None)
    if concat is None:
        raise ModelError(f"{where}: no Concat of a class token and the patch tokens before the first LayerNormalization")
    tokens = [_token_const(g, i) for i in concat.input[:-1]]
    sd["cls_token"] = tokens[0].reshape(1, 1, dim)
    if len(tokens) == 2:
        sd["dist_token"] = tokens[1].reshape(1, 1, dim)
    pos = next((g.const(i) for n in g.nodes[:first_ln] if n.op_type == "Add" for i in n.input
                if g.const(i) is not None and g.const(i).ndim == 3 and g.const(i).shape[-1] == dim
                and g.const(i).shape[1] > len(tokens)), None)
    if pos is None:
        raise ModelError(f"{where}: no position-embedding Add of a (1, N, {dim}) constant before the first LayerNorm")
    sd["pos_embed"] = pos
    linears = {id(n): _Linear(g, n) for n in g.nodes if _is_linear(g, n)}
    by_pos = sorted(linears.values(), key=lambda lin: g.order[id(lin.node)])
    eps = {float(f"{g.attr(n, 'epsilon', 1e-5):.6g}") for n in lns}  # stored as float32: 1e-6 reads 9.99999997e-07
    if len(eps) != 1:
        raise ModelError(f"{where}: LayerNorms with different eps {sorted(eps)}: not supported")
    depth = (len(lns) - 1) // 2
    heads = None
    for i in range(depth):
        ln1, ln2, ln_next = (g.order[id(n)] for n in (lns[2 * i], lns[2 * i + 1], lns[2 * i + 2]))
        for name, ln in (("norm1", lns[2 * i]), ("norm2", lns[2 * i + 1])):
            sd[f"blocks.{i}.{name}.weight"], sd[f"blocks.{i}.{name}.bias"] = _ln_params(g, ln)
        attn = [lin for lin in by_pos if ln1 < g.order[id(lin.node)] < ln2]
        mlp = [lin for lin in by_pos if ln2 < g.order[id(lin.node)] < ln_next]
        if len(mlp) != 2 or len(attn) not in (2, 4):
            raise ModelError(f"{where}: block {i} has {len(attn)} attention and {len(mlp)} MLP linears; expected qkv + "
                             "proj (or query, key, value + proj) and fc1 + fc2")
        if not any(n.op_type in ("Erf", "Gelu") for n in g.nodes[g.order[id(mlp[0].node)]:g.order[id(mlp[1].node)]]):
            raise ModelError(f"{where}: block {i}'s MLP has no erf GELU between fc1 and fc2")
        proj = attn[-1]
        if len(attn) == 2:
            qkv_w, qkv_b = attn[0].weight, attn[0].bias
        else:
            qkv_w, qkv_b = _split_qkv(g, attn[:3], ln1, ln2, where, i)
        sd[f"blocks.{i}.attn.qkv.weight"], sd[f"blocks.{i}.attn.qkv.bias"] = qkv_w, qkv_b
        for key, lin in (("attn.proj", proj), ("mlp.fc1", mlp[0]), ("mlp.fc2", mlp[1])):
            sd[f"blocks.{i}.{key}.weight"], sd[f"blocks.{i}.{key}.bias"] = lin.weight, lin.bias
        for k, lin in (("ls1", proj), ("ls2", mlp[1])):
            gamma = _layer_scale(g, lin, dim)
            if gamma is not None:
                sd[f"blocks.{i}.{k}.gamma"] = gamma
        heads = heads or _heads(g, ln1, ln2, dim)
    final = lns[-1]
    sd["norm.weight"], sd["norm.bias"] = _ln_params(g, final)
    for lin in (lin for lin in by_pos if g.order[id(lin.node)] > g.order[id(final)]):
        token = _token_index(g, lin.data, final.output[0])
        key = {0: "head", 1: "head_dist"}.get(token)
        if key is None or f"{key}.weight" in sd:
            raise ModelError(f"{where}: a linear after the final LayerNorm ({lin.node.name or lin.node.op_type}) does "
                             "not read the class or distillation token alone (pooled heads load from PyTorch and Hugging Face "
                             "checkpoints, not yet from ONNX)")
        sd[f"{key}.weight"], sd[f"{key}.bias"] = lin.weight, lin.bias
    missing = [k for k, v in sd.items() if v is None]
    if missing:
        raise ModelError(f"{where}: these parameters are not constants in the graph: {', '.join(missing[:8])}")
    out = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd.items()}  # a writable copy
    return out, {"num_heads": heads, "ln_eps": eps.pop()}


def _split_qkv(g: _Graph, three: list, lo: int, hi: int, where, block: int):
    """Order separate query/key/value linears by where they meet: scores = q @ k^T, context = softmax @ v."""
    softmax = next((n for n in g.nodes[lo:hi] if n.op_type == "Softmax"), None)
    if softmax is None:
        raise ModelError(f"{where}: block {block}: no Softmax in the attention")
    linears = {id(lin.node): lin for lin in three}
    scores = g.producer.get(softmax.input[0])
    while scores is not None and scores.op_type != "MatMul":
        scores = g.producer.get(next((i for i in scores.input if g.const(i) is None), scores.input[0]))
    context = next((n for n in g.consumers.get(softmax.output[0], []) if n.op_type == "MatMul"), None)
    if scores is None or context is None:
        raise ModelError(f"{where}: block {block}: the attention's score and context MatMuls were not found")
    q, k = (_source_linear(g, t, linears) for t in scores.input)
    v = _source_linear(g, context.input[1], linears)
    if len({id(x) for x in (q, k, v) if x is not None}) != 3:
        raise ModelError(f"{where}: block {block}: query, key and value could not be told apart")
    return np.concatenate([q.weight, k.weight, v.weight], 0), np.concatenate([q.bias, k.bias, v.bias], 0)


def check_against_onnxruntime(model, path: str | Path, images: int = 2, tol: float = 1e-3) -> float:
    """The largest |output difference| between the mapped model and onnxruntime on random inputs, relative to the
    outputs' scale; raises when it exceeds ``tol``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError("checking an ONNX import needs onnxruntime: pip install onnxruntime") from None
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        batch = inp.shape[0] if isinstance(inp.shape[0], int) else images
        x = torch.randn(batch, model.cfg.in_chans, model.cfg.img_size, model.cfg.img_size,
                        generator=torch.Generator().manual_seed(0))
        ref = sess.run(None, {inp.name: x.numpy()})[0]
    except Exception as e:  # noqa: BLE001 -- onnxruntime's own error types: the graph does not run as mapped
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise ModelError(f"{path}: onnxruntime could not run the graph at {model.cfg.img_size} px to check the "
                         f"import ({first})") from None
    with torch.no_grad():
        ours = (model(x) if model.cfg.num_classes else model.forward_features(x)[:, 0]).numpy()
    if ours.shape != ref.reshape(ours.shape[0], -1).shape:
        raise ModelError(f"{path}: the graph's output has shape {ref.shape}, the mapped model's {ours.shape}")
    err = float(np.abs(ours - ref.reshape(ours.shape)).max() / max(np.abs(ref).max(), 1e-12))
    if err > tol:
        raise ModelError(f"{path}: the mapped model differs from onnxruntime by {err:.2e} (relative): the export has "
                         "a pattern tsptq does not map")
    return err
