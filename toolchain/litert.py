"""Run a tsptq ``.tflite`` inside stock LiteRT (``ai-edge-litert``): the ``TSPTQ_*`` custom ops are claimed by an
external delegate (``libtsptq_delegate.so``: the C runtime plus ``runtime_c/delegate/``), LiteRT runs the builtins.

    from tsptq.litert import make_interpreter
    it = make_interpreter("model.tflite")            # delegate attached, tensors allocated
    it.set_tensor(it.get_input_details()[0]["index"], x_int8_nhwc); it.invoke()

Without the delegate, LiteRT accepts the file but ``allocate_tensors()`` fails on the unresolved custom ops. The delegate
takes the model path as its ``model`` option (it loads the file with the C runtime to get the custom ops'
parameters) and refuses runtimes whose TFLite structs it was not built for (pinned: ai-edge-litert 2.3.0).
"""
from __future__ import annotations

import os
from pathlib import Path

from tsptq.errors import TsptqError

DELEGATE_LIB = "libtsptq_delegate.so"
SUPPORTED_LITERT = ("2.3.0",)


class LiteRTError(TsptqError):
    """LiteRT is missing, or its version is not one the delegate's struct declarations are pinned to."""


def build_delegate(variant: str | None = None) -> Path:
    """Compile the C runtime and the delegate glue into a cached ``libtsptq_delegate.so``."""
    from tsptq.c_build import RUNTIME_DIR, build_library, runtime_sources
    from tsptq.runtime_c import default_variant

    core = [str(p.relative_to(RUNTIME_DIR)) for p in runtime_sources()]
    return build_library(variant or os.environ.get("TSPTQ_C_VARIANT") or default_variant(), name=DELEGATE_LIB,
                         sources=core + ["delegate/delegate.c"], extra_flags=["-I", str(RUNTIME_DIR / "delegate")])


def litert_version() -> str:
    try:
        from importlib.metadata import version

        return version("ai-edge-litert")
    except Exception as e:  # noqa: BLE001
        raise LiteRTError("ai-edge-litert is not installed (pip install ai-edge-litert)") from e


def make_interpreter(model_path: str | Path, experimental_op_resolver_type=None, variant: str | None = None,
                     num_threads: int | None = None):
    """An ``ai_edge_litert.interpreter.Interpreter`` for a tsptq file with the delegate attached, tensors allocated."""
    from ai_edge_litert import interpreter as tfl

    ver = litert_version()
    if ver not in SUPPORTED_LITERT:
        raise LiteRTError(f"ai-edge-litert {ver} is not supported by the tsptq delegate (its TFLite struct "
                          f"declarations are pinned to {', '.join(SUPPORTED_LITERT)})")
    path = str(Path(model_path).resolve())
    delegate = tfl.load_delegate(str(build_delegate(variant)), options={"model": path, "runtime_version": ver})
    kw = {}
    if experimental_op_resolver_type is not None:
        kw["experimental_op_resolver_type"] = experimental_op_resolver_type
    if num_threads is not None:
        kw["num_threads"] = num_threads
    it = tfl.Interpreter(model_path=path, experimental_delegates=[delegate], **kw)
    it.allocate_tensors()
    it._tsptq_delegate = delegate  # keep the delegate alive as long as the interpreter
    return it
