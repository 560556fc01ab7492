"""Python binding (ctypes) of the C runtime (``runtime_c/``): build it for the host, load a ``.tflite`` file into it and
run batches in-process, image by image, exactly as firmware would.

    from tsptq.runtime.c_binding import CModel
    m = CModel.from_file("model.tflite")      # parse + validate + plan (C), arena allocated here
    out = m.run(x_int8_nhwc)                   # (B, ...) int8 output codes
    m.arena_size, m.activation_lower_bound     # the static plan

Every C error (corrupted file, unsupported op, bad quantization, newer metadata version, arena too small, wrong
input size) is raised as ``RuntimeCError`` with the C runtime's own message and error code.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from tsptq.errors import RuntimeCError, TsptqError

MESSAGE_SIZE = 256  # TSPTQ_MESSAGE_SIZE
# TSPTQ_MAX_THREADS of the builds with the thread pool (runtime_c/include/tsptq.h; tests/test_c_threads.py checks the
# header and the built library against it): the one bound of every --threads (pipeline, benchmarks/latency.py)
MAX_THREADS = 8
ERROR_NAMES = ("TSPTQ_OK", "TSPTQ_ERR_ARGUMENT", "TSPTQ_ERR_BAD_IDENTIFIER", "TSPTQ_ERR_CORRUPTED",
               "TSPTQ_ERR_INVALID_MODEL", "TSPTQ_ERR_UNSUPPORTED_OP", "TSPTQ_ERR_BAD_QUANTIZATION", "TSPTQ_ERR_VERSION",
               "TSPTQ_ERR_TOO_MANY", "TSPTQ_ERR_ALIGNMENT", "TSPTQ_ERR_ARENA_TOO_SMALL", "TSPTQ_ERR_INPUT_SIZE",
               "TSPTQ_ERR_OUTPUT_SIZE")
ERRORS = {name: code for code, name in enumerate(ERROR_NAMES)}
DTYPES = {2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
LIB_NAME = "libtsptq.so"


class Status(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * MESSAGE_SIZE)]


_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL] = {}


def default_variant() -> str:
    """The fastest build the host runs: AMX tiles, AVX-512 VNNI, AVX2, NEON (native) or the portable C."""
    from tsptq.runtime.c_build import amx_usable, cpu_has, have_avx512vnni

    if have_avx512vnni():
        return "amx" if amx_usable()[0] else "avx512vnni"
    return "avx2" if cpu_has("avx2") else "native" if cpu_has("asimd") else "reference"


def build(variant: str | None = None) -> Path:
    """Compile the whole runtime (loader, planner, interpreter, kernels) into a cached shared library."""
    from tsptq.runtime.c_build import RUNTIME_DIR, build_library, runtime_sources

    core = [str(p.relative_to(RUNTIME_DIR)) for p in runtime_sources()]
    return build_library(variant or os.environ.get("TSPTQ_C_VARIANT") or default_variant(), name=LIB_NAME,
                         sources=core + ["host/host_clock.c"])


def load_library(variant: str | None = None, path: str | Path | None = None) -> ctypes.CDLL:
    """The runtime as a ctypes library: built for `variant` (cached), or the already built library at `path`."""
    path = str(path) if path is not None else str(build(variant))
    with _lock:
        if path not in _libs:
            lib = ctypes.CDLL(path)
            _declare(lib)
            _libs[path] = lib
        return _libs[path]


def _declare(lib: ctypes.CDLL) -> None:
    vp, sz, st = ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(Status)
    sigs = {
        "tsptq_load": (ctypes.c_int, [vp, vp, sz, st]),
        "tsptq_prepare": (ctypes.c_int, [vp, vp, sz, st]),
        "tsptq_prepare_with_params": (ctypes.c_int, [vp, vp, sz, vp, sz, st]),
        "tsptq_invoke": (ctypes.c_int, [vp, vp, sz, vp, sz, st]),
        "tsptq_arena_size": (sz, [vp]), "tsptq_persistent_size": (sz, [vp]), "tsptq_activation_size": (sz, [vp]),
        "tsptq_prepacked_size": (sz, [vp]),
        "tsptq_activation_lower_bound": (sz, [vp]), "tsptq_input_bytes": (sz, [vp]), "tsptq_output_bytes": (sz, [vp]),
        "tsptq_input_shape": (ctypes.c_int, [vp, ctypes.POINTER(ctypes.c_int32)]),
        "tsptq_output_shape": (ctypes.c_int, [vp, ctypes.POINTER(ctypes.c_int32)]),
        "tsptq_input_type": (ctypes.c_int, [vp]), "tsptq_output_type": (ctypes.c_int, [vp]),
        "tsptq_input_quantization": (ctypes.c_int, [vp, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int32)]),
        "tsptq_output_quantization": (ctypes.c_int, [vp, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int32)]),
        "tsptq_tensor_data": (vp, [vp, sz, ctypes.POINTER(sz)]),
        "tsptq_num_tensors": (sz, [vp]), "tsptq_num_ops": (sz, [vp]), "tsptq_model_size": (sz, []),
        "tsptq_error_name": (ctypes.c_char_p, [ctypes.c_int]), "tsptq_version": (ctypes.c_char_p, []),
        "tsptq_set_profiler": (None, [vp, vp, vp]), "tsptq_op_name": (ctypes.c_char_p, [vp, sz]),
        "tsptq_op_table_size": (ctypes.c_uint32, []),
        "tsptq_set_threads": (ctypes.c_int, [vp, ctypes.c_int, st]), "tsptq_threads": (ctypes.c_int, [vp]),
        "tsptq_max_threads": (ctypes.c_int, []),
        "tsptq_op_info": (ctypes.c_int, [ctypes.c_uint32, ctypes.POINTER(OpInfo)]),
    }
    for name, (res, args) in sigs.items():
        if name in _OPTIONAL and not hasattr(lib, name):
            continue
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args


# Functions a library built from an older runtime may lack (a same-process A/B of two builds loads one)
_OPTIONAL = ("tsptq_prepacked_size",)


class OpInfo(ctypes.Structure):
    """``tsptq_op_info_t`` (runtime_c/include/tsptq.h): one row of the C runtime's op table."""
    _fields_ = [("name", ctypes.c_char_p), ("builtin_code", ctypes.c_int32), ("min_inputs", ctypes.c_uint32),
                ("max_inputs", ctypes.c_uint32), ("n_outputs", ctypes.c_uint32), ("n_option_keys", ctypes.c_uint32),
                ("option_keys", ctypes.POINTER(ctypes.c_char_p)), ("elementwise", ctypes.c_uint32)]


def op_table(variant: str | None = None) -> list[dict]:
    """The C runtime's op table, in its order: name, builtin code (None for a custom op), input counts, outputs,
    option keys and whether the op is elementwise (the output has the shape of input 0)."""
    lib = load_library(variant)
    rows = []
    for i in range(lib.tsptq_op_table_size()):
        info = OpInfo()
        if lib.tsptq_op_info(i, ctypes.byref(info)) != 0:
            raise RuntimeCError(f"tsptq_op_info({i}) failed", code=-1, name="TSPTQ_ERR_ARGUMENT")
        rows.append({"name": info.name.decode(), "builtin_code": None if info.builtin_code < 0 else info.builtin_code,
                     "inputs": (info.min_inputs, info.max_inputs), "outputs": info.n_outputs,
                     "option_keys": tuple(info.option_keys[k].decode() for k in range(info.n_option_keys)),
                     "elementwise": bool(info.elementwise)})
    return rows


def _aligned(nbytes: int, align: int = 64) -> np.ndarray:
    """A zeroed uint8 array of nbytes whose data starts on an `align`-byte boundary."""
    raw = np.zeros(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


def _raise(status: Status, what: str) -> None:
    name = ERROR_NAMES[status.code] if 0 <= status.code < len(ERROR_NAMES) else f"code {status.code}"
    raise RuntimeCError(f"{what}: {status.message.decode(errors='replace')} [{name}]", code=status.code, name=name)


class CModel:
    """One model loaded into the C runtime. The file's bytes (kept here, 64-byte aligned), the model struct and the
    arena are numpy buffers owned by this object. ``threads``: how many threads each invoke uses (tsptq_set_threads:
    the caller's and workers of the runtime's static pool; 1 to ``max_threads()``; the outputs do not depend on it)."""

    def __init__(self, data: bytes, name: str = "model", variant: str | None = None, arena_size: int | None = None,
                 library: str | Path | None = None, threads: int = 1):
        self.lib = load_library(variant, library)
        self.name = name
        self._bytes = _aligned(len(data))
        self._bytes[:] = np.frombuffer(data, np.uint8)
        self._model = _aligned(self.lib.tsptq_model_size())
        self._status = Status()
        rc = self.lib.tsptq_load(self._m, self._bytes.ctypes.data, len(data), ctypes.byref(self._status))
        if rc != 0:
            _raise(self._status, name)
        need = self.arena_size
        self._arena = _aligned(need if arena_size is None else arena_size)
        rc = self.lib.tsptq_prepare(self._m, self._arena.ctypes.data, len(self._arena), ctypes.byref(self._status))
        if rc != 0:
            _raise(self._status, name)
        if threads != 1:
            self.set_threads(threads)
        self.input_shape = self._shape(self.lib.tsptq_input_shape)
        self.output_shape = self._shape(self.lib.tsptq_output_shape)
        self.input_dtype = DTYPES[self.lib.tsptq_input_type(self._m)]
        self.output_dtype = DTYPES[self.lib.tsptq_output_type(self._m)]
        self.input_bytes = self.lib.tsptq_input_bytes(self._m)
        self.output_bytes = self.lib.tsptq_output_bytes(self._m)

    @classmethod
    def from_file(cls, path: str | Path, **kw) -> "CModel":
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise TsptqError(f"{path}: cannot read ({e.strerror})") from None
        return cls(data, name=str(path), **kw)

    @property
    def _m(self) -> int:
        return self._model.ctypes.data

    def _shape(self, fn) -> tuple[int, ...]:
        buf = (ctypes.c_int32 * 6)()
        rank = fn(self._m, buf)
        return tuple(int(buf[i]) for i in range(rank))

    def set_threads(self, n: int) -> None:
        """Use n threads per invoke (tsptq_set_threads); RuntimeCError (TSPTQ_ERR_ARGUMENT) for n < 1 or n >
        ``max_threads()``."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise RuntimeCError(f"{self.name}: threads must be an integer, got {n!r}", code=ERRORS["TSPTQ_ERR_ARGUMENT"],
                                name="TSPTQ_ERR_ARGUMENT")
        n = int(n)
        if not -2**31 <= n < 2**31:
            n = 0 if n < 0 else 2**31 - 1  # out of C int's range: still refused by the runtime, with its message
        if self.lib.tsptq_set_threads(self._m, n, ctypes.byref(self._status)) != 0:
            _raise(self._status, self.name)

    @property
    def threads(self) -> int:
        return int(self.lib.tsptq_threads(self._m))

    def max_threads(self) -> int:
        """The most threads this build runs (TSPTQ_MAX_THREADS; 1 without the pool)."""
        return int(self.lib.tsptq_max_threads())

    @property
    def arena_size(self) -> int:
        return int(self.lib.tsptq_arena_size(self._m))

    @property
    def persistent_size(self) -> int:
        return int(self.lib.tsptq_persistent_size(self._m))

    @property
    def prepacked_size(self) -> int:
        """The arena's prepacked part: the FC weights as the AVX-512 VNNI / AMX builds' products read them, packed
        once by tsptq_prepare (0 in other builds, and in a library from before it)."""
        fn = getattr(self.lib, "tsptq_prepacked_size", None)
        return int(fn(self._m)) if fn is not None else 0

    @property
    def activation_size(self) -> int:
        return int(self.lib.tsptq_activation_size(self._m))

    @property
    def activation_lower_bound(self) -> int:
        return int(self.lib.tsptq_activation_lower_bound(self._m))

    @property
    def num_ops(self) -> int:
        return int(self.lib.tsptq_num_ops(self._m))

    def quantization(self, which: str = "input") -> tuple[float, int] | None:
        scale, zp = ctypes.c_float(), ctypes.c_int32()
        fn = self.lib.tsptq_input_quantization if which == "input" else self.lib.tsptq_output_quantization
        return (float(scale.value), int(zp.value)) if fn(self._m, ctypes.byref(scale), ctypes.byref(zp)) else None

    def use_params(self, params: bytes, arena_size: int | None = None) -> None:
        """Re-prepare with precomputed multipliers (tsptq_prepare_with_params, as emitted C code does): the arena
        then holds the activations only (with ``arena_size`` >= prepacked_size + activation_size, the prepacked
        weights too)."""
        self._params = _aligned(max(len(params), 1))[:len(params)]
        self._params[:] = np.frombuffer(params, np.uint8)
        self._arena = _aligned(self.activation_size if arena_size is None else arena_size)
        rc = self.lib.tsptq_prepare_with_params(self._m, self._params.ctypes.data, len(params), self._arena.ctypes.data,
                                                len(self._arena), ctypes.byref(self._status))
        if rc != 0:
            _raise(self._status, self.name)

    def invoke_raw(self, data: bytes | np.ndarray, out_len: int | None = None) -> np.ndarray:
        """One call of tsptq_invoke on raw input bytes (any length: the C runtime checks it)."""
        x = np.ascontiguousarray(np.frombuffer(bytes(data), np.uint8) if isinstance(data, (bytes, bytearray))
                                 else data)
        out = np.empty(self.output_bytes if out_len is None else out_len, np.uint8)
        rc = self.lib.tsptq_invoke(self._m, x.ctypes.data, x.nbytes, out.ctypes.data, out.nbytes,
                                   ctypes.byref(self._status))
        if rc != 0:
            _raise(self._status, self.name)
        return out

    def tensor_view(self, index: int) -> np.ndarray:
        """The current bytes of tensor ``index`` (tsptq_tensor_data): a live uint8 view into the arena or the model
        buffer. After an invoke, an activation holds that image's value only if nothing later reused its bytes: the
        outputs and the last op's inputs do."""
        n = ctypes.c_size_t()
        p = self.lib.tsptq_tensor_data(self._m, index, ctypes.byref(n))
        if not p:
            raise RuntimeCError(f"{self.name}: no tensor {index} (the model has {self.lib.tsptq_num_tensors(self._m)})",
                                code=ERRORS["TSPTQ_ERR_ARGUMENT"], name="TSPTQ_ERR_ARGUMENT")
        return np.ctypeslib.as_array((ctypes.c_uint8 * n.value).from_address(p))

    def run(self, x: np.ndarray, tap: int | None = None):
        """int8 NHWC input codes (B, H, W, C) -> output codes (B, ...), one tsptq_invoke per image. With ``tap`` (a
        tensor index that survives the invoke, see ``tensor_view``) also that tensor's bytes per image:
        (outputs, (B, nbytes) uint8)."""
        x = np.asarray(x)
        if x.ndim != len(self.input_shape) or x.shape[1:] != self.input_shape[1:] or x.dtype != self.input_dtype:
            raise RuntimeCError(f"{self.name}: input must be {np.dtype(self.input_dtype).name} of shape (batch, "
                                f"{', '.join(map(str, self.input_shape[1:]))}), got {x.dtype} {tuple(x.shape)}",
                                code=ERRORS["TSPTQ_ERR_INPUT_SIZE"], name="TSPTQ_ERR_INPUT_SIZE")
        x = np.ascontiguousarray(x)
        per = self.input_shape[0]  # the file's batch (1)
        n = x.shape[0] // per
        out = np.empty((n * per,) + self.output_shape[1:], self.output_dtype)
        xp, op = x.ctypes.data, out.ctypes.data
        ib, ob = self.input_bytes, self.output_bytes
        st = ctypes.byref(self._status)
        invoke = self.lib.tsptq_invoke
        view = self.tensor_view(tap) if tap is not None else None
        tapped = np.empty((n, view.size), np.uint8) if view is not None else None
        for i in range(n):
            if invoke(self._m, xp + i * ib, ib, op + i * ob, ob, st) != 0:
                _raise(self._status, self.name)
            if view is not None:
                tapped[i] = view
        return out if view is None else (out, tapped)


def profile(cm: "CModel", x: np.ndarray, repeats: int = 20) -> list[dict]:
    """Per-op wall time of the C runtime on one int8 NHWC image (host clock, ns), summed by op kind, largest first."""
    ticks = np.zeros(cm.lib.tsptq_num_ops(cm._m), np.uint32)
    clock = ctypes.cast(cm.lib.tsptq_host_clock_ns, ctypes.c_void_p)
    cm.run(x[:1])  # warm-up
    cm.lib.tsptq_set_profiler(cm._m, clock, ticks.ctypes.data)
    try:
        for _ in range(repeats):
            cm.run(x[:1])
    finally:
        cm.lib.tsptq_set_profiler(cm._m, None, None)
    by_kind: dict[str, float] = {}
    for k, t in enumerate(ticks):
        name = cm.lib.tsptq_op_name(cm._m, k).decode()
        by_kind[name] = by_kind.get(name, 0.0) + float(t) / repeats / 1e6
    total = sum(by_kind.values())
    return [{"op": k, "ms": v, "share": v / total} for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])]


def verify_c(path: str | Path, images, cfg, batch_size: int = 50, progress: bool = False,
             variant: str | None = None, threads: int = 1) -> dict:
    """The C runtime against the Python integer reference (``read_tflite(path).run``) on a whole image set.

    Returns {images, bit_exact_fraction (images whose output bytes are all equal), equal_byte_fraction, top1_c,
    top1_reference (percent, when the set is labelled), c_ms_per_image, reference_ms_per_image}.
    """
    from tsptq.data import datasets
    from tsptq.tflite.reader import read_tflite

    fm = read_tflite(path)
    cm = CModel.from_file(path, variant=variant, threads=threads)
    outs_c, outs_ref = [], []
    t_c = t_ref = 0.0
    done = 0
    for x in datasets.iterate_batches(images.images, cfg, batch_size):
        q = fm.quantize_input(x.numpy())
        t0 = time.perf_counter()
        outs_c.append(cm.run(q))
        t1 = time.perf_counter()
        outs_ref.append(fm.run(q))
        t_ref += time.perf_counter() - t1
        t_c += t1 - t0
        done += len(q)
        if progress:
            print(f"\r{path}: {done}/{len(images)} images", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    c, ref = np.concatenate(outs_c), np.concatenate(outs_ref)
    same = (c.reshape(len(c), -1) == ref.reshape(len(ref), -1))
    n = len(c)
    result = {"file": str(path), "images": n, "bit_exact_fraction": float(same.all(-1).mean()),
              "equal_byte_fraction": float(same.mean()),
              "c_ms_per_image": round(t_c / max(n, 1) * 1e3, 4), "reference_ms_per_image": round(t_ref / max(n, 1) * 1e3, 4),
              "threads": cm.threads, "arena_bytes": cm.arena_size, "activation_bytes": cm.activation_size,
              "activation_lower_bound": cm.activation_lower_bound}
    labels = getattr(images, "labels", None)
    if labels is not None and len(labels) == n and c.ndim == 2:
        result["top1_c"] = round(float(np.mean(c.argmax(-1) == labels)) * 100, 3)
        result["top1_reference"] = round(float(np.mean(ref.argmax(-1) == labels)) * 100, 3)
    return result


def format_verify_c(r: dict) -> str:
    lines = [f"C runtime vs the Python integer reference on {r['images']} images: "
             f"bit-exact {r['bit_exact_fraction'] * 100:.3f}% of images ({r['equal_byte_fraction'] * 100:.4f}% of bytes)"]
    if "top1_c" in r:
        lines.append(f"top-1 C {r['top1_c']:.2f}%   reference {r['top1_reference']:.2f}%")
    threads = f" on {r['threads']} threads" if r.get("threads", 1) > 1 else ""
    lines.append(f"latency per image: C {r['c_ms_per_image']:.3f} ms{threads}, Python reference "
                 f"{r['reference_ms_per_image']:.3f} ms (batched)")
    lines.append(f"arena {r['arena_bytes']:,} B (activations {r['activation_bytes']:,} B, lower bound "
                 f"{r['activation_lower_bound']:,} B)")
    return "\n".join(lines)
