"""Run tsptq's NPU variant (``tsptq export --npu ethos-u``) in TensorFlow Lite Micro: the PyPI ``tflite-micro`` wheel's
Python interpreter (TFLM's builtin kernels) with tsptq's custom ops as TFLM kernels (``runtime_c/tflm/``).

``TflmModel(data).run(x)`` runs a ``.tflite`` file on int8 images; ``TflmModel.allocations()`` is TFLM's own arena
account (its RecordingMicroAllocator), ``min_arena_size(data)`` the smallest arena TFLM accepts the file in, and
``compare_ops`` finds the first op whose TFLM output differs from the Python integer model's (``IntModel.run``).
``verify_tflm(file, data)`` is ``tsptq tflm FILE``: the file in TFLM on evaluation images against its Python integer
model (``file_int_model``: read, or for a variant rebuilt from the recorded source and checked against the file's
bytes) and against ``run_tflm_arithmetic``, with TFLM's arena.

**One wheel only.** No TFLM headers exist for the wheel, so ``runtime_c/tflm/tflm_abi.h`` declares the few layouts and
exported functions the ops use, read from that build's binary. They are guaranteed for no other build: the library
is used with ``tflite-micro==0.dev20261023182759`` (``tflite_micro.__version__`` ``PINNED_BUILD``) only, and any other
version, or a ``_runtime.so`` without one of the symbols, is refused with one line (``TflmError``) before anything is
loaded into the process. The registerer checks the layout again at run time (the resolver's vtable, TfLiteType names,
the wheel's own FindOp) and registers nothing on a mismatch.

The library (``build_library``) is compiled by the system C compiler as ``tsptq.runtime.c_build`` compiles the C
runtime (cached by the hash of its sources and flags): ``runtime_c/tflm/tflm_ops.c`` plus the C runtime's kernels it
reuses. It is loaded with ``RTLD_GLOBAL``, since the wheel finds a registerer by ``dlsym(RTLD_DEFAULT, name)``.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsptq.errors import TsptqError

PINNED_VERSION = "0.dev20261023182759"
PINNED_BUILD = "0.dev20261023182759-g8f6596d"  # tflite_micro.__version__ of that wheel
INSTALL_HINT = f"pip install -e '.[tflm]' (or pip install tflite-micro=={PINNED_VERSION})"
REGISTERER = "tsptq_tflm_register"
# What the ops library looks up in the wheel's _runtime.so (runtime_c/tflm/tflm_abi.h says where each was checked).
RUNTIME_SYMBOLS = (
    "_ZN6tflite5micro25MicroContextGetEvalTensorEPKNS0_13TfLiteContextEi",
    "_ZN6tflite5micro36MicroContextAllocatePersistentBufferEPNS0_13TfLiteContextEm",
    "_ZN6tflite5micro39MicroContextRequestScratchBufferInArenaEPNS0_13TfLiteContextEmPi",
    "_ZN6tflite5micro28MicroContextGetScratchBufferEPNS0_13TfLiteContextEi",
    "_ZN6tflite5micro25MicroContextReportOpErrorEPNS0_13TfLiteContextEPKcz",
    "_ZN6tflite5micro17TfLiteTypeGetNameENS0_10TfLiteTypeE",
    "_ZNK6tflite5micro22MicroMutableOpResolverILj200EE6FindOpEPKc",
    "_ZTVN6tflite17PythonOpsResolverE",
)
# runtime_c/ sources of the ops library: the TFLM glue (with tflm/variant_kernels.h, static inline, the variant-only
# kernels), and the C runtime's kernels it calls.
SOURCES = ["tflm/tflm_ops.c", "src/ops/layernorm_2s.c", "src/ops/add.c", "src/ops/softmax_2s.c", "src/ops/lookup.c",
           "src/ops/bmm_2s.c", "src/flexbuffer.c", "src/quantize_multiplier.c"]
# only the three entry points are exported: the kernels inside stay private to the library under RTLD_GLOBAL
EXTRA_FLAGS = ["-fvisibility=hidden"]


class TflmError(TsptqError):
    """The tflite-micro wheel is missing or another version, or TFLM refused or failed a model (one line)."""


def wheel_version() -> str | None:
    """``tflite_micro.__version__`` of the installed wheel, None when it is not importable."""
    if importlib.util.find_spec("tflite_micro") is None:
        return None
    try:
        import tflite_micro
    except Exception:  # noqa: BLE001 - a broken install is "not usable"
        return None
    return str(getattr(tflite_micro, "__version__", "unknown"))


def check_wheel(version: str | None = None) -> None:
    """Refuse, in one line, anything but the pinned wheel: not installed, another version, or a ``_runtime.so`` that
    lacks a symbol the ops library looks up. ``version``: the version to judge (default: the installed one)."""
    found = wheel_version() if version is None else version
    if found is None:
        raise TflmError(f"TensorFlow Lite Micro (tflite-micro) is not installed: {INSTALL_HINT}")
    if found != PINNED_BUILD:
        raise TflmError(f"tflite-micro {found} is installed, but tsptq's TFLM ops are built against the binary "
                        f"interface of tflite-micro=={PINNED_VERSION} ({PINNED_BUILD}) only: pip install "
                        f"tflite-micro=={PINNED_VERSION}")
    path = runtime_path()
    lib = ctypes.CDLL(path)  # already loaded by the import: the same handle
    missing = [s for s in RUNTIME_SYMBOLS if not _has(lib, s)]
    if missing:
        raise TflmError(f"{path} lacks {len(missing)} TFLM symbol(s) tsptq's TFLM ops need ({missing[0]}, ...): "
                        f"reinstall tflite-micro=={PINNED_VERSION}")


def unavailable_reason() -> str | None:
    """Why TFLM cannot run tsptq's ops here, in one line (the wheel missing or another version, no C compiler for
    the ops library), or None."""
    from tsptq.runtime import c_build

    found = wheel_version()
    if found is None:
        return f"tflite-micro is not installed ({INSTALL_HINT})"
    if found != PINNED_BUILD:
        return f"tflite-micro {found} is installed, not the pinned {PINNED_BUILD}"
    return None if c_build.have_compiler() else "no C compiler for the TFLM ops library"


def _has(lib, name: str) -> bool:
    try:
        lib[name]
        return True
    except AttributeError:
        return False


def runtime_path() -> str:
    from tflite_micro.python.tflite_micro import _runtime

    return _runtime.__file__


def build_library(variant: str = "reference") -> Path:
    """Compile the TFLM ops library (cached, as tsptq.runtime.c_build does the C runtime) and return its path."""
    from tsptq.runtime import c_build

    return c_build.build_library(variant, extra_flags=EXTRA_FLAGS, sources=SOURCES, name="libtsptq_tflm.so")


def load_library(variant: str = "reference") -> ctypes.CDLL:
    """Check the wheel (every call), build the ops library and load it RTLD_GLOBAL (the wheel dlsym's the registerer
    by name). One variant per process: a second would register under the same names."""
    check_wheel()
    return _load(variant)


@functools.lru_cache(maxsize=None)
def _load(variant: str) -> ctypes.CDLL:
    if _load.cache_info().currsize:
        raise TflmError("the TFLM ops library is loaded already in another build variant (one per process)")
    lib = ctypes.CDLL(str(build_library(variant)), mode=os.RTLD_GLOBAL)
    lib.tsptq_tflm_last_error.restype = ctypes.c_char_p
    lib.tsptq_tflm_op_name.restype = ctypes.c_char_p
    lib.tsptq_tflm_op_name.argtypes = [ctypes.c_int]
    lib.tsptq_tflm_register.restype = ctypes.c_bool
    lib.tsptq_tflm_register.argtypes = [ctypes.c_void_p]
    return lib


def op_names(lib: ctypes.CDLL | None = None) -> list[str]:
    """The custom ops the library registers."""
    lib = lib or load_library()
    names, i = [], 0
    while (n := lib.tsptq_tflm_op_name(i)) is not None:
        names.append(n.decode())
        i += 1
    return names


@contextlib.contextmanager
def _captured():
    """TFLM prints its errors and reports on the process's stdout/stderr (C level): collect them into a list of lines."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as f:
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            f.seek(0)
            lines.extend(ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip())


def _why(lines: list[str], lib) -> str:
    """The most telling of TFLM's printed lines, and the ops library's own error."""
    own = lib.tsptq_tflm_last_error().decode(errors="replace")
    told = [ln for ln in lines if "was not true" in ln or "failed to prepare" in ln.lower() or "Failed to get" in ln
            or "Didn't find op" in ln]
    parts = told[:2] or lines[-2:]
    if own and own not in " ".join(parts):
        parts.append(own)
    return "; ".join(parts)


@dataclass
class Allocations:
    """TFLM's RecordingMicroAllocator account (bytes): ``total`` = ``head`` (the planned non-persistent tensors and
    scratch buffers) + ``tail`` (persistent: eval tensors, node structs, the kernels' persistent buffers such as the
    per-channel multipliers); ``parts`` the tail's recorded kinds."""

    total: int
    head: int
    tail: int
    parts: dict


def _itemsize(tensor_type: int) -> int:
    """Bytes per element of a schema TensorType a tsptq variant file uses (1 for any other: still a lower bound)."""
    from tsptq.npu.graph_ops import S

    return {S.TensorType.FLOAT32: 4, S.TensorType.INT32: 4, S.TensorType.UINT8: 1, S.TensorType.INT64: 8,
            S.TensorType.INT16: 2, S.TensorType.INT8: 1}.get(tensor_type, 1)


def check_constant_buffers(data: bytes) -> None:
    """Refuse, in one line, a file whose constant tensor holds fewer bytes than its shape needs: neither TFLM nor the
    ops' prepares check it, and the kernels would read past the buffer (the file is untrusted)."""
    from tsptq.npu.graph_ops import parse_model

    m = parse_model(data)
    buffers = m.buffers or []
    for g in m.subgraphs:
        for i, t in enumerate(g.tensors or []):
            if not t.buffer or t.buffer >= len(buffers) or buffers[t.buffer].data is None:
                continue
            n = int(np.prod([int(d) for d in (t.shape if t.shape is not None else [])], dtype=np.int64))
            need = n * _itemsize(int(t.type))
            have = len(buffers[t.buffer].data)
            if 0 < have < need:
                name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name)
                raise TflmError(f"tensor {i} ({name}): its buffer holds {have} bytes, its shape needs {need}")


class TflmModel:
    """A ``.tflite`` file in TFLM's Python interpreter with tsptq's custom ops. ``preserve_all``: keep every tensor
    (TFLM's kPreserveAllTensors: ``tensor(i)`` after ``run``, for op-by-op comparisons; no allocation record)."""

    def __init__(self, data: bytes, arena_size: int | None = None, preserve_all: bool = False,
                 variant: str = "reference"):
        self.lib = load_library(variant)  # refuses another wheel first
        check_constant_buffers(data)
        from tflite_micro import runtime

        self.preserve_all = preserve_all
        self.arena_size = arena_size if arena_size is not None else max(len(data) * 2, 1 << 20)
        cfg = runtime.InterpreterConfig.kPreserveAllTensors if preserve_all else \
            runtime.InterpreterConfig.kAllocationRecording
        with _captured() as lines:
            try:
                self.it = runtime.Interpreter.from_bytes(data, custom_op_registerers=[REGISTERER],
                                                         arena_size=self.arena_size, intrepreter_config=cfg)
                err = None
            except (RuntimeError, ValueError) as e:
                err = e
        if err is not None:
            raise TflmError(f"TFLM refused the model ({err}): {_why(lines, self.lib)}") from None
        self.input_shape = tuple(int(d) for d in self.it.get_input_details(0)["shape"])

    def run(self, x: np.ndarray) -> np.ndarray:
        """The output codes for int8 images (B, H, W, C), one invoke per image (the files have batch 1)."""
        if x.dtype != np.int8 or tuple(x.shape[1:]) != self.input_shape[1:]:
            raise TflmError(f"input must be int8 of shape (batch, {', '.join(map(str, self.input_shape[1:]))}), "
                            f"got {x.dtype} {tuple(x.shape)}")
        outs = []
        for b in range(len(x)):
            self.it.set_input(np.ascontiguousarray(x[b:b + 1]), 0)
            with _captured() as lines:
                try:
                    self.it.invoke()
                    err = None
                except RuntimeError as e:
                    err = e
            if err is not None:
                raise TflmError(f"TFLM invoke failed ({err}): {_why(lines, self.lib)}")
            outs.append(np.array(self.it.get_output(0), copy=True))
        return np.concatenate(outs)

    def tensor(self, index: int) -> np.ndarray:
        """Tensor ``index`` of the last run (``preserve_all`` only)."""
        if not self.preserve_all:
            raise TflmError("tensor() needs TflmModel(..., preserve_all=True)")
        return np.array(self.it.GetTensor(index, 0)["tensor_data"], copy=True)

    def allocations(self) -> Allocations:
        """TFLM's arena account (after a run; not with ``preserve_all``)."""
        if self.preserve_all:
            raise TflmError("TFLM records allocations only without preserve_all")
        with _captured() as lines:
            self.it.print_allocations()
        text = "\n".join(lines)

        def grab(what: str) -> int:
            m = re.search(rf"Arena allocation {what} (\d+) bytes", text)
            if not m:
                raise TflmError(f"TFLM's allocation report has no '{what}' line")
            return int(m.group(1))

        parts = {m.group(1): int(m.group(2)) for m in re.finditer(r"'([^']+)' used (\d+) bytes", text)}
        return Allocations(grab("total"), grab("head"), grab("tail"), parts)


# One arena size, tried in a child process: the pinned TFLM wheel can crash (SIGSEGV) while it tears down an
# interpreter whose allocation failed (seen at 16 bytes and at ~45 KB for cifar10-vit's variant files), which would
# take the whole command down. Exit status 0: it prepares; 3: TFLM refused it.
_ARENA_PROBE = """
import sys
from tsptq.npu.tflm import TflmError, TflmModel
data = open(sys.argv[1], "rb").read()
try:
    TflmModel(data, arena_size=int(sys.argv[2]))
except TflmError:
    sys.exit(3)
"""


def _fits_in_child(path: str, n: int) -> bool:
    import signal
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _ARENA_PROBE, path, str(n)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    if proc.returncode == 0:
        return True
    if proc.returncode in (3, -signal.SIGSEGV):  # refused, or crashed tearing down a failed allocation
        return False
    raise TflmError(f"the arena probe failed ({proc.returncode}): {(proc.stderr.strip().splitlines() or ['?'])[-1]}")


def min_arena_size(data: bytes, hi: int = 64 << 20, step: int = 16) -> int:
    """The smallest arena (to ``step`` bytes) in which TFLM prepares the file, by bisection, each size tried in a
    child process (``_ARENA_PROBE``: a size at which the wheel crashes counts as one it does not prepare in; the
    crashes seen all followed a failed allocation)."""
    with tempfile.TemporaryDirectory(prefix="tsptq-arena-") as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as f:
            f.write(data)
        if not _fits_in_child(path, hi):
            raise TflmError(f"the model does not fit a {hi}-byte arena")
        lo = 0
        while hi - lo > step:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if _fits_in_child(path, mid) else (mid, hi)
        return hi


def fully_connected_16x8(x, w, bias, mult, shift) -> np.ndarray:
    """FULLY_CONNECTED 16x8 as this TFLM build computes it (measured: every output of cifar10-vit's 37 FCs on 4 images,
    fed with the integer model's inputs): TFLite's 64-bit MultiplyByQuantizedMultiplier, which first rounds the
    multiplier to 16 bits, ``r = (M + 2^15) >> 16`` (``0x7FFF`` for ``M >= 0x7FFF0000``), then rounds once, half up:
    ``y = sat16((acc * r + 2^(14 - shift)) >> (15 - shift))``. The variant's definition (LiteRT's reference kernel,
    ``tsptq.intmodel.kernels.fully_connected_16x8``) keeps the 31-bit multiplier and rounds half away from zero."""
    from tsptq.intmodel import kernels as K

    acc = K._accumulate(x, 0, w, bias)
    M, S = np.asarray(mult, np.int64), np.asarray(shift, np.int64)
    r = np.where(M < 0x7FFF0000, (M + (1 << 15)) >> 16, 0x7FFF)
    return K.saturate((acc * r + (np.int64(1) << (14 - S))) >> (15 - S), np.int16)


def mul_int16_multiplier(a_scale, b_scale, y_scale) -> tuple[int, int]:
    """(M, shift) of this TFLM build's int16 MUL: its Prepare (``mul_common.cc``) widens the three float32 scales to
    double and computes ``s_a * s_b / s_y`` in double, where LiteRT (and the variant's definition,
    ``tsptq.intmodel.ops._mul``) multiplies and divides them in float32 first. The two multipliers differ in their low
    bits for most scales (the float32 product keeps 24 bits)."""
    from tsptq.intmodel.fixedpoint import quantize_multiplier

    return quantize_multiplier(float(np.float32(a_scale)) * float(np.float32(b_scale)) / float(np.float32(y_scale)))


def mul_int16(a, b, mult: int, shift: int) -> np.ndarray:
    """MUL int16 (zero points 0, broadcasting) as this TFLM build computes it (measured against the wheel, random
    operands at many scales): TFLite's double-rounding MultiplyByQuantizedMultiplier on ``a * b`` in int32. With
    ``shift <= 0`` that is ``kernels.mul_int16`` itself; a larger multiplier (``shift > 0``, which the integer model
    refuses) shifts the int32 product left first and wraps around in 32 bits; then saturated to int16."""
    from tsptq.intmodel import kernels as K
    from tsptq.intmodel.fixedpoint import multiply_by_quantized_multiplier

    if shift <= 0:
        return K.mul_int16(a, b, mult, shift)
    x = (((np.asarray(a, np.int64) * np.asarray(b, np.int64) << shift) + 2**31) & 0xFFFFFFFF) - 2**31  # low 32 bits
    return K.saturate(multiply_by_quantized_multiplier(x, mult, 0), np.int16)


def run_tflm_arithmetic(model, x: np.ndarray, keep: bool = False):
    """``model.run(x)`` with the builtins whose TFLM arithmetic is not the variant's computed as TFLM computes them,
    every other op as the integer model defines it: what TFLM gives for the variant, byte for byte. They are
    FULLY_CONNECTED 16x8 (``fully_connected_16x8``: a 16-bit multiplier, rounded half up) and the int16 MUL of the
    LayerNorm on the NPU (``mul_int16``: its multiplier from double scales, ``mul_int16_multiplier``). The 1x1
    DEPTHWISE_CONV_2D 16x8 of that LayerNorm and the int16 ADD are the integer model's in TFLM too (measured).
    ``keep``: also every tensor's value (as ``IntModel.run``), ``(output, values)``."""
    from tsptq.intmodel.ops import ALL_OPS, _conv_fc_multipliers

    vals = {model.inputs[0]: x}
    for op in model.ops:
        ins = [model._value(i, vals) for i in op.inputs]
        if op.kind == "FULLY_CONNECTED_16X8":
            mult, shift = _conv_fc_multipliers(model, op)
            vals[op.outputs[0]] = fully_connected_16x8(ins[0], ins[1], ins[2], mult, shift)
        elif op.kind == "MUL" and all(t.dtype == "int16" and not t.zp and t.n_scales == 1 for t in
                                      (model.tensors[i] for i in (*op.inputs[:2], op.outputs[0]))):
            scales = (model.tensors[i].quant.scale[0] for i in (*op.inputs[:2], op.outputs[0]))
            vals[op.outputs[0]] = mul_int16(ins[0], ins[1], *mul_int16_multiplier(*scales))
        else:
            vals[op.outputs[0]] = ALL_OPS[op.kind].kernel(model, op, ins)
    return (vals[model.outputs[0]], vals) if keep else vals[model.outputs[0]]


def compare_ops(model, data: bytes, x: np.ndarray) -> list[dict]:
    """Run one image (``x`` of batch 1) in TFLM keeping every tensor and in ``model`` (the IntModel ``data`` was
    written from, tensors in the same order): per op, its output's differing values and largest difference."""
    t = TflmModel(data, arena_size=max(len(data) * 4, 16 << 20), preserve_all=True)
    t.run(x)
    _, vals = model.run(x, keep=True)
    rows = []
    for k, op in enumerate(model.ops):
        i = op.outputs[0]
        want, got = vals[i], t.tensor(i)
        if got.shape != want.shape:
            got = got.reshape(want.shape) if got.size == want.size else got
        if got.shape != want.shape or got.dtype != want.dtype:
            rows.append(dict(op=k, kind=op.kind, tensor=model.tensors[i].name, differ=-1, max_diff=-1,
                             note=f"TFLM {got.dtype} {got.shape} vs {want.dtype} {want.shape}"))
            continue
        d = np.abs(got.astype(np.int64) - want.astype(np.int64))
        rows.append(dict(op=k, kind=op.kind, tensor=model.tensors[i].name, differ=int((d > 0).sum()),
                         max_diff=int(d.max(initial=0)), size=int(d.size)))
    return rows


# --- `tsptq tflm FILE`: a variant file in TFLM against its Python integer model --------------------------------------


def file_metadata(m) -> dict:
    """The 'tsptq' metadata JSON of a file read with the schema bindings ({} when there is none or it is unreadable)."""
    import json

    from tsptq.tflite.writer import METADATA_NAME

    for e in m.metadata or []:
        if e.name in (METADATA_NAME, METADATA_NAME.encode()) and 0 <= e.buffer < len(m.buffers or []):
            raw = m.buffers[e.buffer].data
            try:
                meta = json.loads(bytes(raw if raw is not None else b"").decode())
            except (UnicodeDecodeError, json.JSONDecodeError):
                return {}
            return meta if isinstance(meta, dict) else {}
    return {}


def file_int_model(data: bytes, name: str, m=None, progress: bool = False):
    """(IntModel, how): the Python integer model of the file ``data``. A file the reader takes (``parse_tflite``) is
    read. An NPU variant is not (the reader refuses int16 tensors): its model is rebuilt from the source recorded in
    its metadata (``build(src, npu=True, split_pv=..., residual16=...)``, a calibration) and used only if it writes
    the file's bytes exactly; otherwise ``TflmError``."""
    from tsptq.errors import ModelFileError, UnsupportedOpError
    from tsptq.npu.graph_ops import count_types, graph_ops, parse_model
    from tsptq.tflite.reader import parse_tflite

    from ai_edge_litert import schema_py_generated as S

    m = m if m is not None else parse_model(data, name)
    if not any(t.type == S.TensorType.INT16 for t in m.subgraphs[0].tensors or []):
        try:
            return parse_tflite(data), "read from the file"
        except (ModelFileError, UnsupportedOpError) as e:
            raise TflmError(f"{name}: {e}") from None
    from tsptq.intmodel.integer import Source, build
    from tsptq.tflite.writer import to_tflite

    meta = file_metadata(m)
    if not meta.get("source"):
        raise TflmError(f"{name}: an NPU variant without a recorded source in its tsptq metadata: its integer model "
                        "cannot be rebuilt (tsptq's reader does not read int16 tensors)")
    try:
        src = Source(**meta["source"])
    except TypeError as e:
        raise TflmError(f"{name}: unreadable source in the tsptq metadata ({e})") from None
    split = "TSPTQ_BMM_2S" not in count_types(graph_ops(m, name))  # --pv-on-cpu keeps TSPTQ_BMM_2S
    if progress:
        import sys

        print(f"{name}: an NPU variant: rebuilding its integer model from the recorded source (calibrating)",
              file=sys.stderr)
    what = f"{src.model or src.checkpoint}, {src.method} {src.bits}, {src.calib_images} calibration images"
    try:
        im, _ = build(src, progress=progress, npu=True, split_pv=split, residual16=meta.get("residual") == "int16",
                      layernorm_npu=meta.get("layernorm") == "npu")
    except (TsptqError, OSError, TypeError, ValueError, AttributeError) as e:  # a recorded field of the wrong kind
        raise TflmError(f"{name}: cannot rebuild the variant's integer model from its recorded source ({what}): "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if to_tflite(im) != data:
        # Also what a file exported on another CPU gives: the calibration's float searches can pick other codes there.
        raise TflmError(f"{name}: the NPU variant rebuilt from the file's recorded source ({what}) does not write the "
                        "file's bytes (another tsptq version, another calibration, or another CPU's float rounding): "
                        "its integer model is unknown here")
    how = f"rebuilt from the recorded source ({what}): the file's bytes"
    return im, how


def _agreement(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.int64) - b.astype(np.int64)).reshape(len(a), -1)
    return {"images": len(a), "identical_images": int((d.max(axis=1, initial=0) == 0).sum()),
            "differing_values": int((d > 0).sum()), "values": int(d.size), "max_abs_diff_codes": int(d.max(initial=0)),
            "top1_agreement": round(float(np.mean(a.argmax(-1) == b.argmax(-1))) * 100, 3)}


def verify_tflm(file, data=None, *, batch_size: int = 25, quiet: bool = False, min_arena: bool = True) -> dict:
    """``tsptq tflm FILE``: run the file in TFLM on the evaluation images (``data``: a ``tsptq.model.model_data.EvalData``,
    the same options as ``tsptq verify``) and compare, image by image, with the file's Python integer model
    (``file_int_model``) and with that model under TFLM's FC 16x8 rounding and int16 MUL multiplier
    (``run_tflm_arithmetic``). Also TFLM's arena account and, with ``min_arena``, the smallest arena TFLM prepares the
    file in. One-line ``TsptqError``s: a file that cannot be read, a missing or other tflite-micro wheel, a file TFLM
    refuses."""
    import sys
    from types import SimpleNamespace

    from tqdm import tqdm

    from tsptq.data import datasets
    from tsptq.evaluation.verify import file_eval_set
    from tsptq.model.model_data import EvalData
    from tsptq.npu.graph_ops import read_model

    if batch_size < 1:
        raise TsptqError(f"--batch-size must be at least 1 (got {batch_size})")
    raw, m = read_model(file)
    check_wheel()
    try:
        t = TflmModel(raw)
    except TflmError as e:
        raise TflmError(f"{file}: {e}") from None
    meta = file_metadata(m)
    if "config" not in meta:
        raise TsptqError(f"{file}: no tsptq metadata with the model config (preprocessing unknown): not a tsptq file")
    _, cfg, test, labelled = file_eval_set(SimpleNamespace(metadata=meta), file, data or EvalData())
    im, how = file_int_model(raw, str(file), m, progress=not quiet)
    print(f"{file}: TFLM (tflite-micro {wheel_version()}) vs the integer model on {len(test)} images ({test.name})",
          file=sys.stderr)
    got, want, arith = [], [], []
    with tqdm(total=len(test), desc="TFLM", unit="img", disable=quiet, leave=False) as bar:
        for x in datasets.iterate_batches(test.images, cfg, batch_size):
            xq = im.quantize_input(x.numpy())
            got.append(t.run(xq))
            want.append(im.run(xq))
            arith.append(run_tflm_arithmetic(im, xq))
            bar.update(len(xq))
    got, want, arith = (np.concatenate(v) for v in (got, want, arith))
    a = t.allocations()
    result = {"file": str(file), "tflite_micro": wheel_version(), "eval_images": len(test), "data": test.name,
              "integer_model": how, "arena": {"total": a.total, "head": a.head, "tail": a.tail, "parts": a.parts},
              "vs_integer": _agreement(got, want), "vs_tflm_arithmetic": _agreement(got, arith)}
    if min_arena:
        result["arena"]["min_arena"] = min_arena_size(raw, hi=max(2 * a.total, 1 << 16))
    if labelled:
        result["top1_tflm"] = round(float(np.mean(got.argmax(-1) == test.labels)) * 100, 3)
        result["top1_integer"] = round(float(np.mean(want.argmax(-1) == test.labels)) * 100, 3)
    return result


def format_verify_tflm(r: dict) -> str:
    def line(c):
        return (f"{c['identical_images']:,} of {c['images']:,} images byte-identical ({c['differing_values']:,} of "
                f"{c['values']:,} values differ, largest difference {c['max_abs_diff_codes']} codes), top-1 agreement "
                f"{c['top1_agreement']:.2f}%")

    a = r["arena"]
    lines = [f"images {r['eval_images']} ({r['data']}), tflite-micro {r['tflite_micro']}",
             f"the file's integer model: {r['integer_model']}",
             f"TFLM arena {a['total']:,} B = planned {a['head']:,} B + persistent {a['tail']:,} B"
             + (f"; smallest arena it prepares the file in: {a['min_arena']:,} B" if "min_arena" in a else ""),
             f"TFLM vs the integer model:                      {line(r['vs_integer'])}",
             f"TFLM vs the integer model, TFLM's rounding:     {line(r['vs_tflm_arithmetic'])}"]
    if "top1_tflm" in r:
        lines.append(f"top-1: TFLM {r['top1_tflm']:.2f}%, the integer model {r['top1_integer']:.2f}%")
    return "\n".join(lines)
