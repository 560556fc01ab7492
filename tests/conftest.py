"""Session-wide fixtures shared by several test modules, and the test tiers.

Tiers are pytest markers (registered in pyproject.toml): ``cc`` needs a C compiler, ``qemu`` needs QEMU or an Arm
cross toolchain, ``data`` needs the shared data sets (../shared/data) or Debian's Fashion-MNIST, ``slow`` takes more
than a few seconds. ``make check`` runs ``-m "not slow and not qemu and not data"`` (30-40 s on 2 cores); ``make test``
runs everything. Modules mark themselves (``pytestmark`` or per test).

The fixtures build each expensive thing once per session, not once per module:

- ``cifar_vit``: the bundled cifar10-vit, its Graph, the calibration record on the 32 class-balanced bundled training
  images (batch 16), the bundled train and test sets; ``cifar_vit.quantized(method)`` and ``cifar_vit.tflite(method)``
  quantize and export once per method. Modules take what they need from it and derive their own exports.
- ``tiny_vits``: ``tiny_vits(n)`` is tests/tiny_vit.py's ``tiny_vit(n)``, built once per ``n``.
- ``npu_cpu``: benchmarks/npu_cpu.py (the NPU variant's CPU steps on the Cortex-M55), imported from benchmarks/.

Everything these fixtures hand out is shared: tests must not modify it (copy first).
"""
from __future__ import annotations

import dataclasses
import functools

import pytest


@dataclasses.dataclass
class CifarViT:
    """cifar10-vit and the bundled sample; the Graph, the calibration record, quantized models and .tflite bytes are
    made on first use (a module that needs only the float model and the images pays for nothing else)."""

    model: object  # VisionTransformer (trained reference weights)
    train: object  # ImageSet: the 64 bundled training images
    test: object  # ImageSet: the 500 bundled test images
    _quantized: dict = dataclasses.field(default_factory=dict, repr=False)
    _tflite: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def cfg(self):
        return self.model.cfg

    @functools.cached_property
    def graph(self):
        """tsptq.quant.qvit.Graph.from_model(model)."""
        from tsptq.quant.qvit import Graph

        return Graph.from_model(self.model)

    @functools.cached_property
    def cal(self):
        """The calibration record: record(graph, train.balanced(32), 16, progress=False)."""
        from tsptq.quant.observers import record

        return record(self.graph, self.train.balanced(32), 16, False)

    def quantized(self, method: str):
        """``quantize(graph, cal, method)`` (W8A8), once per method: the QuantizedViT is shared, do not modify it."""
        if method not in self._quantized:
            from tsptq.quant.quantize import quantize

            self._quantized[method] = quantize(self.graph, self.cal, method, progress=False)
        return self._quantized[method]

    def tflite(self, method: str) -> bytes:
        """``to_tflite(lower(quantized(method)))``, once per method."""
        if method not in self._tflite:
            from tsptq.intmodel.lower import lower
            from tsptq.tflite.writer import to_tflite

            self._tflite[method] = to_tflite(lower(self.quantized(method)))
        return self._tflite[method]


@pytest.fixture(scope="session")
def cifar_vit() -> CifarViT:
    from tsptq.data import datasets
    from tsptq.model import zoo

    return CifarViT(zoo.load_reference("cifar10-vit"), datasets.load_bundled_sample("train"),
                    datasets.load_bundled_sample("test"))


@pytest.fixture(scope="session")
def tiny_vits():
    """``tiny_vits(n)``: tiny_vit(n) (config, graph, calibration record, images), built once per ``n``."""
    from tiny_vit import tiny_vit

    built: dict[int, tuple] = {}

    def get(n_images: int):
        if n_images not in built:
            built[n_images] = tiny_vit(n_images)
        return built[n_images]

    return get


@pytest.fixture(scope="session")
def c_load():
    """tsptq_load of the C runtime (ctypes): None when it accepts the bytes, else (error name, message)."""
    import ctypes

    import numpy as np

    from tsptq.runtime.c_binding import ERROR_NAMES, Status, load_library

    lib = load_library()
    model = np.zeros(lib.tsptq_model_size() + 64, np.uint8)
    mp = model.ctypes.data + (-model.ctypes.data) % 64

    def load(data: bytes):
        raw = np.zeros(len(data) + 64, np.uint8)
        off = (-raw.ctypes.data) % 64
        raw[off:off + len(data)] = np.frombuffer(data, np.uint8)
        st = Status()
        rc = lib.tsptq_load(mp, raw.ctypes.data + off, len(data), ctypes.byref(st))
        return None if rc == 0 else (ERROR_NAMES[rc], st.message.decode(errors="replace"))

    load.model = model  # the tsptq_model lives in this buffer: it must outlive every call
    return load


@pytest.fixture
def npu_cpu(monkeypatch):
    """benchmarks/npu_cpu.py, importable for the test (benchmarks/ on sys.path while it runs)."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import npu_cpu

    return npu_cpu
