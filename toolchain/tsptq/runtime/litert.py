"""Run a tsptq ``.tflite`` inside stock LiteRT / TFLite: the ``TSPTQ_*`` custom ops are claimed by an external
delegate (``libtsptq_delegate.so``: the C runtime plus ``runtime_c/delegate/``), the interpreter runs the builtins.

    from tsptq.runtime.litert import make_interpreter
    it = make_interpreter("model.tflite")            # delegate attached, tensors allocated
    it.set_tensor(it.get_input_details()[0]["index"], x_int8_nhwc); it.invoke()

Two Python runtimes are supported (``RUNTIMES``): ``ai-edge-litert`` 2.3.0 (TFLite 2.22.0-dev0), preferred when it is
importable, and ``tflite-runtime`` 2.14.0 (the last tflite-runtime release; it needs numpy < 2, so it lives in its own
venv: ``make tflite214``). ``make_interpreter(..., runtime="tflite_runtime")`` chooses one explicitly.

Without the delegate, the interpreter accepts the file but ``allocate_tensors()`` fails on the unresolved custom ops.
The delegate takes the model path as its ``model`` option (it loads the file with the C runtime to get the custom ops'
parameters) and refuses runtimes whose TFLite structs it was not built for (``runtime_version`` option, plus a layout
check of the interpreter's tensors).

This module imports only ``tsptq.errors`` at import time (no torch), so it also works in the tflite-runtime venv with
``toolchain/`` mapped to the ``tsptq`` package; pass ``delegate_path`` there to use a library built elsewhere.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from tsptq.errors import TsptqError

DELEGATE_LIB = "libtsptq_delegate.so"
SUPPORTED_LITERT = ("2.3.0",)
SUPPORTED_TFLITE_RUNTIME = ("2.14.0",)
# runtime name -> (PyPI distribution, interpreter module, supported versions of that distribution)
RUNTIMES = {
    "ai_edge_litert": ("ai-edge-litert", "ai_edge_litert.interpreter", SUPPORTED_LITERT),
    "tflite_runtime": ("tflite-runtime", "tflite_runtime.interpreter", SUPPORTED_TFLITE_RUNTIME),
}
_ALIASES = {"ai-edge-litert": "ai_edge_litert", "litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}
_INSTALL_HINT = ("pip install ai-edge-litert==2.3.0, or tflite-runtime==2.14.0 \"numpy<2\" in a Python <= 3.11 venv "
                 "(make tflite214)")


class LiteRTError(TsptqError):
    """No supported runtime is installed, or its version is not one the delegate's struct declarations are pinned
    to."""


def build_delegate(variant: str | None = None) -> Path:
    """Compile the C runtime and the delegate glue into a cached ``libtsptq_delegate.so``."""
    from tsptq.runtime.c_build import RUNTIME_DIR, build_library, runtime_sources
    from tsptq.runtime.c_binding import default_variant

    core = [str(p.relative_to(RUNTIME_DIR)) for p in runtime_sources()]
    return build_library(variant or os.environ.get("TSPTQ_C_VARIANT") or default_variant(), name=DELEGATE_LIB,
                         sources=core + ["delegate/delegate.c"], extra_flags=["-I", str(RUNTIME_DIR / "delegate")])


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError as e:
        raise LiteRTError(f"{dist} is not installed (pip install {dist})") from e


def litert_version() -> str:
    """The installed ai-edge-litert version (LiteRTError when it is not installed)."""
    return _dist_version("ai-edge-litert")


def tflite_runtime_version() -> str:
    """The installed tflite-runtime version (LiteRTError when it is not installed)."""
    return _dist_version("tflite-runtime")


def _pinned() -> str:
    return " and ".join(f"{dist} {'/'.join(vers)}" for dist, _, vers in RUNTIMES.values())


def resolve_runtime(runtime: str | None = None):
    """``(name, interpreter module, version)`` of the runtime to use: ``runtime`` ("ai_edge_litert" or
    "tflite_runtime", dashes accepted), or when None ai-edge-litert if it is importable, else tflite-runtime.
    LiteRTError when it is not installed or its version is not one the delegate is pinned to."""
    if runtime is None:
        for name, (_, module, _) in RUNTIMES.items():
            try:
                tfl = importlib.import_module(module)
                break
            except ImportError:
                continue
        else:
            raise LiteRTError(f"neither ai-edge-litert nor tflite-runtime is installed ({_INSTALL_HINT})")
    else:
        name = _ALIASES.get(runtime, runtime)
        if name not in RUNTIMES:
            raise LiteRTError(f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
        try:
            tfl = importlib.import_module(RUNTIMES[name][1])
        except ImportError as e:
            raise LiteRTError(f"{RUNTIMES[name][0]} is not installed in this Python ({_INSTALL_HINT})") from e
    dist, _, supported = RUNTIMES[name]
    ver = litert_version() if name == "ai_edge_litert" else tflite_runtime_version()
    if ver not in supported:
        raise LiteRTError(f"{dist} {ver} is not supported by the tsptq delegate (its TFLite struct declarations are "
                          f"pinned to {_pinned()})")
    return name, tfl, ver


def _op_resolver(tfl, resolver):
    """The runtime's own OpResolverType member for ``resolver``: a member of either runtime's enum, or its name."""
    name = resolver if isinstance(resolver, str) else getattr(resolver, "name", None)
    try:
        return tfl.OpResolverType[name]
    except KeyError:
        raise LiteRTError(f"unknown op resolver type {resolver!r} (known: "
                          f"{', '.join(m.name for m in tfl.OpResolverType)})") from None


def make_interpreter(model_path: str | Path, experimental_op_resolver_type=None, variant: str | None = None,
                     num_threads: int | None = None, runtime: str | None = None,
                     delegate_path: str | Path | None = None):
    """An interpreter (``ai_edge_litert`` or ``tflite_runtime``, see ``resolve_runtime``) for a tsptq file with the
    delegate attached, tensors allocated. ``experimental_op_resolver_type`` may be either runtime's OpResolverType
    member or its name ("BUILTIN_REF"); ``delegate_path`` uses a prebuilt library instead of ``build_delegate``.
    The interpreter's ``_tsptq_runtime`` is ``(runtime name, version)``."""
    name, tfl, ver = resolve_runtime(runtime)
    path = str(Path(model_path).resolve())
    lib = str(delegate_path) if delegate_path is not None else str(build_delegate(variant))
    delegate = tfl.load_delegate(lib, options={"model": path, "runtime_version": f"{RUNTIMES[name][0]} {ver}"})
    kw = {}
    if experimental_op_resolver_type is not None:
        kw["experimental_op_resolver_type"] = _op_resolver(tfl, experimental_op_resolver_type)
    if num_threads is not None:
        kw["num_threads"] = num_threads
    it = tfl.Interpreter(model_path=path, experimental_delegates=[delegate], **kw)
    it.allocate_tensors()
    it._tsptq_delegate = delegate  # keep the delegate alive as long as the interpreter
    it._tsptq_runtime = (name, ver)
    return it
