"""The stock-converter baseline: what users do today to get a full-integer TFLite ViT.

    PyTorch --torch.onnx.export--> ONNX --onnx2tf -oiqt--> full-integer int8 TFLite --> LiteRT (ai-edge-litert)

onnx2tf quantizes with TFLite's own converter (per-channel int8 weights, int8 activations calibrated on a
representative dataset: here the same calibration images tsptq uses). What a ViT needs for the recipe to run at all
(failures seen with the plain recipe, here or in docs of earlier attempts), and what the produced model looks like:

- Exact-erf GELU would become ``FlexErf``, which no Python interpreter runs: the model is exported with tanh-GELU
  (``nn.GELU(approximate='tanh')``, within ~1e-3 of erf-GELU), which stays an int8 chain
  MUL MUL MUL ADD MUL TANH ADD MUL.
- ``F.scaled_dot_product_attention`` is exported by the TorchScript exporter (opset 17) as MatMul / Softmax /
  MatMul: int8 BATCH_MATMUL and SOFTMAX (its output forced to scale 1/256, zero point -128).
- Batch 1, static shapes (a dynamic batch breaks the class-token CONCATENATION), and onnx2tf's onnxsim pass on:
  it folds the traced shape arithmetic (without it, ``-nuo``, onnx2tf fails on the first LayerNormalization).
  onnx2tf shells out to the ``onnxsim`` command, so the venv's bin goes first on its PATH.
- Offline: onnx2tf reads ``calibration_image_sample_data_20x128x128x3_float32.npy`` from its working directory for
  its test inference and downloads it when absent; this module writes one made of the calibration images.
- LayerNorm has no int8 kernel: each becomes MEAN SQUARED_DIFFERENCE MEAN ADD RSQRT MUL MUL MUL SUB ADD, in int8.
- ``-oiqt`` also writes int16-activation variants (half of onnx2tf's time); LiteRT 2.3.0 cannot run them
  (no int16 SQUARED_DIFFERENCE). Only ``*_full_integer_quant.tflite`` (int8 input and output) is kept.

The converter's dependencies pin old exact versions (numpy 1.26, tensorflow 2.19), so the ``converter`` extra holds
the packages that install normally and onnx2tf plus tf-keras go in with ``--no-deps`` (see INSTALL_HINT; the
Makefile's ``.venv/.converter`` target does both).
"""
from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tsptq.atomic import atomic_write, make_dir
from tsptq.data import datasets
from tsptq.errors import DataError, TsptqError

ONNX2TF_VERSION = "1.29.24"  # the last onnx2tf for Python 3.11 (2.x needs 3.12)
INSTALL_HINT = (f"pip install -e '.[converter]' && pip install --no-deps onnx2tf=={ONNX2TF_VERSION} tf-keras==2.21.0 "
                "(or: make .venv/.converter)")
# Modules the conversion needs (import name -> PyPI name), checked before any work starts.
REQUIRED = {"onnx2tf": "onnx2tf", "tensorflow": "tensorflow-cpu", "tf_keras": "tf-keras", "onnx": "onnx",
            "onnxruntime": "onnxruntime", "onnx_graphsurgeon": "onnx-graphsurgeon", "sng4onnx": "sng4onnx",
            "onnxsim": "onnxsim", "psutil": "psutil", "ai_edge_litert": "ai-edge-litert"}
OPSET = 17  # LayerNormalization exists from 17; the TorchScript exporter decomposes SDPA at this opset
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
QDQ = ("QUANTIZE", "DEQUANTIZE")


class ConverterError(TsptqError):
    """The stock converter is not installed, or onnx2tf / LiteRT failed on the model."""


def missing_packages() -> list[str]:
    """PyPI names of the converter's packages that are not importable here."""
    return [pypi for mod, pypi in REQUIRED.items() if importlib.util.find_spec(mod) is None]


def _require(mods=REQUIRED) -> None:
    missing = [REQUIRED[m] for m in mods if importlib.util.find_spec(m) is None]
    if missing:
        raise ConverterError(f"the stock converter needs {', '.join(missing)}, not installed "
                             f"(the optional 'converter' extra: {INSTALL_HINT})")


# --- PyTorch -> ONNX ------------------------------------------------------------------------------------------------

def exportable_copy(model: nn.Module) -> nn.Module:
    """A float32 eval copy of ``model`` with every exact-erf ``nn.GELU`` replaced by the tanh form."""
    m = copy.deepcopy(model).float().eval()
    for parent in list(m.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.GELU) and child.approximate == "none":
                setattr(parent, name, nn.GELU(approximate="tanh"))
    return m


def export_onnx(model: nn.Module, path: str | Path, opset: int = OPSET) -> dict:
    """Export at batch 1 (input ``input``, output ``logits``) with the TorchScript exporter; Counter of ONNX ops."""
    import onnx

    cfg = model.cfg
    m = exportable_copy(model)
    x = torch.zeros(1, cfg.in_chans, cfg.img_size, cfg.img_size)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated in favour of dynamo (needs onnxscript)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            torch.onnx.export(m, (x,), str(path), opset_version=opset, dynamo=False, input_names=["input"],
                              output_names=["logits"], do_constant_folding=True)
        except Exception as e:  # torch raises several internal error types here
            raise ConverterError(f"torch.onnx.export failed: {type(e).__name__}: {e}") from e
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    if ops.get("Erf"):
        raise ConverterError(f"the exported graph still has {ops['Erf']} Erf node(s): onnx2tf would make them FlexErf, "
                             "which LiteRT cannot run")
    return dict(ops)


# --- onnx2tf ------------------------------------------------------------------------------------------------------

def _model_input(images, cfg) -> torch.Tensor:
    """Raw uint8 images (N, H, W, C), e.g. an ImageSet's ``.images``, or an ImageSet -> normalized float NCHW.
    A float array/tensor of shape (N, C, img, img) is taken as already normalized model input."""
    if isinstance(images, datasets.ImageSet):
        images = images.images
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if t.ndim == 4 and t.is_floating_point() and tuple(t.shape[1:]) == (cfg.in_chans, cfg.img_size, cfg.img_size):
        return t.float()
    if t.dtype != torch.uint8:
        raise DataError(f"expected uint8 images (N, H, W, {cfg.in_chans}) or normalized float input "
                        f"(N, {cfg.in_chans}, {cfg.img_size}, {cfg.img_size}), got {t.dtype} {tuple(t.shape)}")
    return datasets.to_model_input(t, cfg)


def _unit_range_nhwc(x: torch.Tensor, cfg) -> np.ndarray:
    """Undo the mean/std normalization: the [0, 1] NHWC images onnx2tf's ``-cind`` expects."""
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x * std + mean).permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def _sample_file(x01: np.ndarray) -> np.ndarray:
    """onnx2tf's stand-in test images (20 x 128 x 128 x 3, [0, 1]): the calibration images, cycled and resized."""
    t = torch.from_numpy(x01[np.arange(20) % len(x01)]).permute(0, 3, 1, 2)
    t = t[:, :3] if t.shape[1] >= 3 else t.repeat(1, 3, 1, 1)[:, :3]
    t = F.interpolate(t, size=(128, 128), mode="bilinear", align_corners=False).clamp_(0, 1)
    return t.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def _log_tail(log: str, lines: int = 30) -> str:
    """onnx2tf's ERROR lines and 'output failed' warnings (it exits 0 when only a quantized variant fails), then
    the last ``lines`` lines, colour codes removed."""
    clean = re.sub(r"\x1b\[[0-9;]*m", "", log or "").strip().splitlines()
    flagged = list(dict.fromkeys(l for l in clean[:-lines] if l.startswith("ERROR:") or "output failed" in l))[:10]
    return "\n".join(flagged + (["..."] if flagged else []) + clean[-lines:])


STOCK_SWIN = ("Swin: the stock converter's export (PyTorch -> ONNX -> onnx2tf) covers the ViT layout only; a Swin "
              "has no stock int8 file here yet (issue 19)")


def require_convertible(model) -> None:
    """Refuse, before any work, a model the stock export does not cover (a Swin), in its own words: it is the
    converter's export that lacks it, not tsptq's integer model."""
    from tsptq.model.swin import SwinTransformer

    if isinstance(model, SwinTransformer):
        raise TsptqError(STOCK_SWIN)


def convert(model: nn.Module, calib_images, out_path: str | Path, work_dir: str | Path | None = None,
            threads: int | None = None, timeout: float = 3600.0) -> dict:
    """PyTorch ViT -> ONNX -> onnx2tf full-integer int8 TFLite at ``out_path`` (written atomically).

    ``calib_images``: the calibration images (an ImageSet, its uint8 ``.images``, or normalized float NCHW), fed to
    TFLite's quantizer as onnx2tf's representative dataset. ``work_dir`` keeps the ONNX file, the onnx2tf outputs
    and its log (``onnx2tf.log``); by default a temporary folder is used and removed. ``threads`` sets the
    converter's OMP/TF thread counts (default: inherited). Returns op histogram, float ops and timings (see analyze).
    """
    require_convertible(model)
    _require()
    cfg = model.cfg
    x = _model_input(calib_images, cfg)
    if len(x) == 0:
        raise DataError("the calibration set is empty")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # for `onnxsim`
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = "-1"
    if threads is not None:
        for k in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            env[k] = str(threads)
    if shutil.which("onnxsim", path=env["PATH"]) is None:
        raise ConverterError(f"onnx2tf shells out to the `onnxsim` command, which is not on PATH ({INSTALL_HINT})")
    out_path = Path(out_path)
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tsptq-stock-")
        work = Path(tmp.name)
    else:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        onnx_ops = export_onnx(model, work / "export.onnx")
        shutil.copyfile(work / "export.onnx", work / "model.onnx")  # onnx2tf simplifies its input in place
        t_export = time.perf_counter() - t0

        x01 = _unit_range_nhwc(x, cfg)
        np.save(work / "calib.npy", x01)
        np.save(work / SAMPLE_FILE, _sample_file(x01))
        mean = repr([[[[float(v) for v in cfg.mean]]]])  # (1, 1, 1, C): onnx2tf computes (calib - mean) / std in NHWC
        std = repr([[[[float(v) for v in cfg.std]]]])
        out_dir = work / "onnx2tf"
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [sys.executable, "-m", "onnx2tf", "-i", "model.onnx", "-o", out_dir.name, "-oiqt",
               "-cind", "input", "calib.npy", mean, std]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired as e:
            log = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode(errors="replace")
            raise ConverterError(f"onnx2tf did not finish within {timeout:.0f} s; last lines:\n{_log_tail(log)}") from e
        t_convert = time.perf_counter() - t0
        (work / "onnx2tf.log").write_text(proc.stdout)
        produced = out_dir / "model_full_integer_quant.tflite"
        if proc.returncode != 0 or not produced.is_file():
            where = f" (full log: {work / 'onnx2tf.log'})" if tmp is None else ""
            why = f"exit status {proc.returncode}" if proc.returncode else "no full-integer model was written"
            raise ConverterError(f"onnx2tf failed ({why}){where}; last lines:\n{_log_tail(proc.stdout)}")
        data = produced.read_bytes()
        info = analyze(data)
        make_dir(out_path.parent)
        atomic_write(out_path, lambda p: p.write_bytes(data))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {"path": str(out_path), **info, "onnx_ops": onnx_ops, "calib_images": len(x), "opset": OPSET,
            "onnx2tf_version": _version("onnx2tf"), "tensorflow_version": _version("tensorflow-cpu"),
            "seconds": {"export": round(t_export, 2), "onnx2tf": round(t_convert, 1)}}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# --- Reading the produced model --------------------------------------------------------------------------------------

def analyze(model: str | Path | bytes) -> dict:
    """Op histogram (op name -> count), the ops that stayed float (any op other than QUANTIZE/DEQUANTIZE with a
    float32 input or output, in graph order), and the model's input/output tensors."""
    _require(["ai_edge_litert"])
    from ai_edge_litert import schema_py_generated as schema

    data = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ConverterError(f"not a TFLite flatbuffer (identifier {bytes(data[4:8])!r}, expected b'TFL3')")
    m = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    if len(m.subgraphs) != 1:
        raise ConverterError(f"expected one subgraph, the model has {len(m.subgraphs)}")
    sg = m.subgraphs[0]
    hist, float_ops = Counter(), []
    for i, op in enumerate(sg.operators):
        code = m.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)  # codes >= 127 live only in builtinCode
        name = op_names.get(builtin, str(builtin))
        if name == "CUSTOM":
            name = f"CUSTOM:{code.customCode.decode()}"
        hist[name] += 1
        tensors = [sg.tensors[t] for t in [*op.inputs, *op.outputs] if t >= 0]
        if name not in QDQ and any(t.type == schema.TensorType.FLOAT32 for t in tensors):
            float_ops.append({"index": i, "op": name})

    def io(indices):
        out = []
        for t in (sg.tensors[i] for i in indices):
            q = t.quantization
            scale = list(q.scale) if q is not None and q.scale is not None else []
            zp = list(q.zeroPoint) if q is not None and q.zeroPoint is not None else []
            out.append({"name": t.name.decode(), "dtype": type_names[t.type].lower(), "shape": [int(s) for s in t.shape],
                        "scale": float(scale[0]) if scale else None, "zero_point": int(zp[0]) if zp else None})
        return out

    return {"bytes": len(data), "num_ops": sum(hist.values()), "op_histogram": dict(hist.most_common()),
            "float_ops": float_ops, "inputs": io(sg.inputs), "outputs": io(sg.outputs)}


# --- Running it with LiteRT ---------------------------------------------------------------------------------------

def run_tflite(path: str | Path, images, cfg, threads: int = 1, chunk: int = 256) -> np.ndarray:
    """Float logits (N, classes) of the TFLite model at ``path`` on ``images`` (raw uint8 (N, H, W, C) / ImageSet,
    normalized with ``cfg`` as tsptq does, or normalized float NCHW). One image per invoke (the model has batch 1);
    int8/uint8 input and output are (de)quantized with the model's own scale and zero point."""
    _require(["ai_edge_litert"])
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ConverterError(f"LiteRT cannot load {path}: {e}") from e
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    want = (1, cfg.img_size, cfg.img_size, cfg.in_chans)
    if tuple(inp["shape"]) != want:
        raise ConverterError(f"{path}: input shape {tuple(inp['shape'])}, expected NHWC {want} for this config")
    if isinstance(images, datasets.ImageSet):
        images = images.images
    logits = []
    for start in range(0, len(images), chunk):  # normalize a chunk at a time (DINOv2 inputs are 0.6 MB each)
        xs = _model_input(images[start : start + chunk], cfg).permute(0, 2, 3, 1).contiguous().numpy()
        for k in range(len(xs)):
            try:
                logits.append(_invoke(interp, inp, out, xs[k : k + 1]))
            except RuntimeError as e:  # e.g. a kernel without the tensor type: int16 SQUARED_DIFFERENCE
                raise ConverterError(f"LiteRT failed to run {path}: {e}") from e
    return np.stack(logits) if logits else np.zeros((0, cfg.num_classes), np.float32)


def _invoke(interp, inp, out, x: np.ndarray) -> np.ndarray:
    dtype = np.dtype(inp["dtype"])
    if dtype != np.float32:
        scale, zp = inp["quantization"]
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    y = interp.get_tensor(out["index"])
    if np.dtype(out["dtype"]) != np.float32:
        scale, zp = out["quantization"]
        y = (y.astype(np.float32) - zp) * scale
    return y.reshape(-1).astype(np.float32)
