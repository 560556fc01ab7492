"""The peer toolchains for benchmarks/latency.py (the `peers` extra: pip install -e '.[peers]').

Each function converts the same torch model with one peer toolchain, calibrated on the same images latency.py gives
tsptq, and times it on the same image with one thread:

- litert_torch_pt2e_int8: litert-torch's PT2E flow (litert_torch.quantize.PT2EQuantizer, static, per-channel
  symmetric int8 weights, int8 activations; prepare_pt2e, calibrate, convert_pt2e, litert_torch.convert). What the
  quantizer does not annotate stays float (LayerNorm among them): a mixed file; the row's note counts its float ops.
- litert_torch_fp32: litert_torch.convert of the float model.
- litert_torch_aeq_int8: that float file through ai-edge-quantizer's static_wi8_ai8 recipe (int8 weights and
  activations for every op it supports, calibrated on the same images): the fully-int8 peer.
- executorch_xnnpack_int8: ExecuTorch's XNNPACKQuantizer (static, per-channel), to_edge_transform_and_lower with the
  XNNPACK partitioner, run by executorch.runtime with its threadpool reset to one thread.
- executorch_xnnpack_int8_written_out: the same, with the attention's F.scaled_dot_product_attention written out as
  softmax(q k^T * scale) v (the same math). ExecuTorch 1.5.1 decomposes the fused call into a masked ("safe") softmax
  (eq, logical_not, any, where, full_like) that XNNPACK does not take: those run in ExecuTorch's portable kernels
  (on a shared 2-core host: 2.4 against 1.3 ms on cifar10-vit, 162 against 57 ms on dinov2-s14). This row is
  ExecuTorch's best case on these models.

The .tflite files run in LiteRT (ai-edge-litert, XNNPACK, num_threads=1), like latency.py's stock int8 row. Each
function returns a row: runtime, median_ms, p90_ms, file_bytes, agree_fp32 (top-1 same as torch FP32 on the
calibration images: a sanity check of the conversion, not an accuracy) and a note. rows() turns a peer's failure into
a row with a note instead of an exception.
"""
from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import re
import tempfile
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import torch

# The `peers` extra in pyproject.toml pins these.
PACKAGES = {"litert_torch": "litert-torch", "ai_edge_quantizer": "ai-edge-quantizer", "executorch": "executorch"}
INSTALL_HINT = "pip install -e '.[peers]'"
# runtime label -> (function name, the import names it needs)
PEERS = {
    "LiteRT (litert-torch PT2E int8)": ("litert_torch_pt2e_int8", ("litert_torch",)),
    "LiteRT (litert-torch FP32)": ("litert_torch_fp32", ("litert_torch",)),
    "LiteRT (litert-torch + ai-edge-quantizer full int8)": ("litert_torch_aeq_int8",
                                                            ("litert_torch", "ai_edge_quantizer")),
    "ExecuTorch XNNPACK (int8)": ("executorch_xnnpack_int8", ("executorch",)),
    "ExecuTorch XNNPACK (int8, attention written out)": ("executorch_xnnpack_int8_written_out", ("executorch",)),
}


def missing() -> list[str]:
    """The PyPI names of the peer packages this Python cannot import."""
    return [pypi for mod, pypi in PACKAGES.items() if importlib.util.find_spec(mod) is None]


def versions() -> dict:
    out = {}
    for mod, pypi in PACKAGES.items():
        try:
            out[pypi] = importlib.metadata.version(pypi)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def skip_message(absent: list[str]) -> str:
    """One line: which peer rows are skipped and how to get them."""
    skipped = [label for label, (_, mods) in PEERS.items() if any(PACKAGES[m] in absent for m in mods)]
    return (f"[latency] peer rows skipped ({', '.join(absent)} not installed): {'; '.join(skipped)}. "
            f"For them: {INSTALL_HINT}")


def rows(model, calib_x: torch.Tensor, x: torch.Tensor, repeats: int, timer, log=print) -> list[dict]:
    """One row per peer whose packages are installed; a peer that fails gives a row with median_ms None and a note."""
    absent = missing()
    if absent:
        log(skip_message(absent))
    if all(any(PACKAGES[m] in absent for m in mods) for _, mods in PEERS.values()):
        return []
    # Contiguous (NCHW) copies: torch.export records the example input's dim order and ExecuTorch's program then
    # expects it; to_model_input gives a permuted (channels-last) view, which would turn into wrong answers.
    calib_x, x = calib_x.contiguous(), x.contiguous()
    with torch.no_grad():
        ref = model(calib_x).argmax(-1).numpy()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        cache: dict = {}
        for label, (fn, mods) in PEERS.items():
            if any(PACKAGES[m] in absent for m in mods):
                continue
            log(f"[latency]   {label}")
            try:
                row = globals()[fn](model, calib_x, x, repeats, timer, Path(tmp), cache)
                out.append({"runtime": label, **row})
            except Exception as e:  # one peer's failure is a note in its row, not the end of the run
                traceback.print_exc()
                out.append({"runtime": label, "median_ms": None, "p90_ms": None,
                            "note": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"})
                continue
            agree = out[-1].pop("agree_fn", None)
            if agree is not None:
                try:
                    with torch.no_grad():
                        got = np.array([np.asarray(agree(calib_x[i: i + 1].clone())).reshape(-1).argmax()
                                        for i in range(len(calib_x))])
                    out[-1]["agree_fp32"] = float((got == ref).mean())
                except Exception as e:
                    out[-1]["note"] = (out[-1].get("note", "") + f" agreement check failed: {type(e).__name__}").strip()
    return out


def _export(model, x):
    return torch.export.export(model, (x,)).module()


def _litert_row(model_bytes: bytes, x: torch.Tensor, repeats: int, timer) -> dict:
    """Time a .tflite file in LiteRT (the default resolver: XNNPACK), one thread, on the float NCHW input."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=bytes(model_bytes), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]

    def feed(xs: np.ndarray) -> np.ndarray:
        if inp["dtype"] != np.float32:  # a quantized input: quantize with the file's own parameters
            s, z = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            xs = np.clip(np.round(xs / s) + z, info.min, info.max).astype(inp["dtype"])
        return xs

    xs = feed(x.numpy())
    if tuple(inp["shape"]) != xs.shape:
        raise ValueError(f"the file's input is {tuple(inp['shape'])}, the image {xs.shape}")

    def run():
        it.set_tensor(inp["index"], xs)
        it.invoke()
        return it.get_tensor(out["index"])

    def agree(xi: torch.Tensor):
        it.set_tensor(inp["index"], feed(xi.numpy()))
        it.invoke()
        y = it.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] != np.float32:
            s, z = out["quantization"]
            y = (y - z) * s
        return y

    med, p90 = timer(run, repeats)
    return {"median_ms": med, "p90_ms": p90, "file_bytes": len(model_bytes), "agree_fn": agree,
            "note": _float_ops(model_bytes)}


def _float_ops(model_bytes: bytes) -> str:
    """Which ops of a .tflite file compute in float (a float32 output; QUANTIZE/DEQUANTIZE not counted)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=bytes(model_bytes),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    dtype = {t["index"]: t["dtype"] for t in it.get_tensor_details()}
    ops = [op for op in it._get_ops_details() if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE", "DELEGATE")]
    flt = Counter(op["op_name"] for op in ops if any(dtype.get(o) == np.float32 for o in op["outputs"]))
    if not flt:
        return f"all {len(ops)} ops int8"
    top = ", ".join(f"{k} {v}" for k, v in flt.most_common(6)) + (", ..." if len(flt) > 6 else "")
    return f"{sum(flt.values())} of {len(ops)} ops in float ({top})"


def _float_tflite(model, x, cache: dict) -> bytes:
    if "fp32" not in cache:
        import litert_torch

        cache["fp32"] = bytes(litert_torch.convert(model.eval(), (x,)).model_content())
    return cache["fp32"]


def litert_torch_pt2e_int8(model, calib_x, x, repeats, timer, tmp: Path, cache: dict) -> dict:
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    m = prepare_pt2e(_export(model, x), quantizer)
    with torch.no_grad():
        for i in range(len(calib_x)):
            m(calib_x[i: i + 1].clone())
    m = convert_pt2e(m, fold_quantize=False)
    edge = litert_torch.convert(m, (x,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    return _litert_row(edge.model_content(), x, repeats, timer)


def litert_torch_fp32(model, calib_x, x, repeats, timer, tmp: Path, cache: dict) -> dict:
    return _litert_row(_float_tflite(model, x, cache), x, repeats, timer)


def litert_torch_aeq_int8(model, calib_x, x, repeats, timer, tmp: Path, cache: dict) -> dict:
    from ai_edge_quantizer import quantizer as aeq, recipe

    qt = aeq.Quantizer(bytearray(_float_tflite(model, x, cache)))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    from ai_edge_litert.interpreter import Interpreter

    sig = Interpreter(model_content=cache["fp32"]).get_signature_runner()
    (name,) = sig.get_input_details().keys()
    key = next(iter(Interpreter(model_content=cache["fp32"]).get_signature_list()))
    data = {key: [{name: calib_x[i: i + 1].clone().numpy()} for i in range(len(calib_x))]}
    result = qt.quantize(qt.calibrate(data, num_threads=1))
    return _litert_row(result.quantized_model, x, repeats, timer)


def executorch_xnnpack_int8_written_out(model, calib_x, x, repeats, timer, tmp: Path, cache: dict) -> dict:
    from tsptq.model import vit

    class WrittenOut(vit.Attention):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            B, N, D = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            a = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
            return self.proj((a @ v).transpose(1, 2).reshape(B, N, D))

    model = copy.deepcopy(model)
    swapped = 0
    for m in model.modules():
        if type(m) is vit.Attention:
            m.__class__ = WrittenOut
            swapped += 1
    if not swapped:
        raise ValueError("no tsptq.model.vit.Attention in this model")
    return executorch_xnnpack_int8(model, calib_x, x, repeats, timer, tmp, cache)


def executorch_xnnpack_int8(model, calib_x, x, repeats, timer, tmp: Path, cache: dict) -> dict:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    m = prepare_pt2e(_export(model, x), quantizer)
    with torch.no_grad():
        for i in range(len(calib_x)):
            m(calib_x[i: i + 1].clone())
    m = convert_pt2e(m)
    edge = to_edge_transform_and_lower(torch.export.export(m, (x,)), partitioner=[XnnpackPartitioner()])
    graph = edge.exported_program().graph
    delegated = sum(n.op == "call_function" and "executorch_call_delegate" in str(n.target) for n in graph.nodes)
    outside = Counter(_op_name(n.target) for n in graph.nodes if n.op == "call_function"
                      and "executorch_call_delegate" not in str(n.target) and "getitem" not in str(n.target))
    note = f"{delegated} XNNPACK partitions"
    if outside:
        top = ", ".join(f"{k} {v}" for k, v in outside.most_common(6)) + (", ..." if len(outside) > 6 else "")
        note += f"; {sum(outside.values())} ops outside them, in ExecuTorch's CPU kernels ({top})"
    program = edge.to_executorch()
    buffer = program.buffer
    portable_lib._unsafe_reset_threadpool(1)  # XNNPACK's threadpool: one thread, like every other row
    threads = portable_lib._threadpool_get_thread_count()
    method = Runtime.get().load_program(buffer).load_method("forward")

    def run():
        return method.execute([x])

    med, p90 = timer(run, repeats)
    row = {"median_ms": med, "p90_ms": p90, "file_bytes": len(buffer),
           "agree_fn": lambda xi: method.execute([xi.contiguous().clone()])[0].numpy(), "note": note}
    if threads != 1:
        row["note"] += f"; ExecuTorch's threadpool has {threads} threads (the reset to 1 did not take)"
    return row


def _op_name(target) -> str:
    """'native_layer_norm' for <EdgeOpOverload: aten.native_layer_norm.default>: schema = ..."""
    m = re.search(r"aten\.(\w+)", str(target))
    return m.group(1) if m else str(target)[:40]
