"""``tsptq inspect``: what a tsptq ``.tflite`` file holds, from the file alone."""
from __future__ import annotations

from collections import Counter

from tsptq.intmodel.graph import IntModel
from tsptq.intmodel.ops import OPS


def _quant_summary(t) -> str:
    q = t.quant
    if q is None:
        return "-"
    if q.details:
        d = q.details
        if d["kind"] == "two_scale":
            return f"V-2SF s={d['fine_scale']:.3g} m={d['ratio_log2']}{' signed' if d['signed_fine'] else ''}"
        if d["kind"] == "channel_pow2":
            n_out = sum(1 for s in d["shifts"] if s > 0)
            return f"O-2SF s={d['base_scale']:.3g} zp={int(q.zero_point[0])} outliers={n_out} max_shift={max(d['shifts'])}"
        if d["kind"] == "sign_split":
            return f"sign-split pos={float(q.scale[0]):.3g} neg={d['step_neg']:.3g}"
        return d["kind"]
    if len(q.scale) > 1:
        return f"per-channel[{len(q.scale)}] axis={q.axis}"
    return f"s={float(q.scale[0]):.4g} zp={int(q.zero_point[0])}"


def summary(model: IntModel) -> dict:
    weights = sum(t.nbytes for t in model.tensors if t.data is not None)
    activations = sum(t.nbytes for t in model.tensors if t.data is None)
    largest = max((t.nbytes for t in model.tensors if t.data is None), default=0)
    return {"ops": len(model.ops), "custom_ops": sum(OPS[op.kind].custom for op in model.ops),
            "op_counts": dict(Counter(op.kind for op in model.ops)), "tensors": len(model.tensors),
            "weight_bytes": int(weights), "activation_bytes_total": int(activations),
            "largest_activation_bytes": int(largest),
            "two_scale_tensors": sum(1 for t in model.tensors if t.quant is not None and t.quant.details),
            "input": {"name": model.input.name, "shape": list(model.input.shape), "dtype": model.input.dtype},
            "output": {"name": model.output.name, "shape": list(model.output.shape), "dtype": model.output.dtype},
            "metadata": {k: v for k, v in model.metadata.items() if k != "config"}}


def report(model: IntModel, ops: bool = True, tensors: bool = False) -> str:
    s = summary(model)
    meta = model.metadata
    lines = [f"method {meta.get('method', '?')}  bits {meta.get('bits', '?')}  ops {s['ops']} "
             f"({s['custom_ops']} TSPTQ custom)  tensors {s['tensors']}",
             f"input  {s['input']['name']} {tuple(s['input']['shape'])} {s['input']['dtype']}   "
             f"output {s['output']['name']} {tuple(s['output']['shape'])} {s['output']['dtype']}",
             f"weight bytes {s['weight_bytes']:,}   activation bytes (all tensors) {s['activation_bytes_total']:,}   "
             f"largest activation {s['largest_activation_bytes']:,}", "",
             "op counts: " + ", ".join(f"{k} {v}" for k, v in sorted(s["op_counts"].items()))]
    two_scale = [t for t in model.tensors if t.quant is not None and t.quant.details]
    if not ops:
        kinds = Counter(t.quant.details["kind"] for t in two_scale)
        return "\n".join(lines + ["two-scale tensors: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))])
    lines += ["", f"{'#':>4}  {'op':<20}{'inputs':<44}output"]
    for k, op in enumerate(model.ops):
        ins = ", ".join(model.tensors[i].name for i in op.inputs if model.tensors[i].data is None) or "-"
        out = model.tensors[op.outputs[0]]
        lines.append(f"{k:>4}  {op.kind:<20}{ins[:43]:<44}{out.name} {tuple(out.shape)} {out.dtype}")
    lines += ["", "two-scale tensors:"]
    lines += [f"  {t.name:<28}{t.dtype:<7}{_quant_summary(t)}" for t in two_scale]
    if tensors:
        lines += ["", f"{'tensor':<36}{'shape':<20}{'dtype':<7}{'bytes':>10}  quantization"]
        for t in model.tensors:
            kind = "const" if t.data is not None else ""
            lines.append(f"{t.name[:35]:<36}{str(tuple(t.shape)):<20}{t.dtype:<7}{t.nbytes:>10}  {_quant_summary(t)} {kind}")
    return "\n".join(lines)


def to_json(model: IntModel) -> dict:
    s = summary(model)
    s["op_table"] = [{"index": k, "op": op.kind, "inputs": op.inputs, "outputs": op.outputs} for k, op in enumerate(model.ops)]
    s["tensor_table"] = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "bytes": t.nbytes,
                          "constant": t.data is not None, "quantization": _quant_summary(t)} for t in model.tensors]
    s["two_scale"] = {t.name: t.quant.details for t in model.tensors if t.quant is not None and t.quant.details}
    return s

