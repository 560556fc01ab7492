"""Evaluation engines: what runs a quantized model on images for ``tsptq eval``.

An engine turns a fitted quantization into a *runner*: a picklable callable that maps a batch of model inputs to
(logits, final-norm class token), both float32 numpy arrays. Runners are shipped to worker processes and ranks
(``tsptq.evaluation.shards``, ``tsptq.evaluation.distributed``), so they hold plain data and build their native state lazily.

- ``c``: the method's integer model exported to ``.tflite`` bytes and run by the C runtime (``tsptq.runtime.c_binding``),
  image by image: the outputs are the bytes ``tsptq verify --runtime c`` checks. The class token is read from the
  head's input after each invoke (``tsptq_tensor_data``).
- ``faithful``: the float64 simulator with TFLite's rounding at the builtin ops (``tsptq.intmodel.faithful``).
- ``float32``: the fake-quantized float32 simulator (``tsptq.quant.qvit``, ``tsptq.quant.qswin``); also the FP32
  reference and every A<8 method. A Swin's "class token" is the pooled final-norm features its head reads.

Not every method has an integer model (A<8, distilled DeiT), and the faithful simulator covers the ViT layout only
(not a Swin: issue 19): ``resolve`` falls back c -> faithful -> float32 and each row says which engine measured it.
"""
from __future__ import annotations

import functools

import numpy as np

from tsptq.errors import QuantizationError, TsptqError

# (torch and the simulators are imported where used: the CLI reads ENGINES without loading torch)
ENGINES = ("auto", "c", "faithful", "float32")


@functools.lru_cache(maxsize=None)
def class_token_tap(base):
    """A simulator hook class that also keeps the final-norm class token. The caller sets ``hook.features`` to the
    graph's ``features``, which picks it from the points (a Swin's is the pooled final-norm features), and
    ``hook.cls = []``."""

    class Tap(base):
        def act(self, name, kind, x):
            x = super().act(name, kind, x)
            if (feature := self.features(name, x)) is not None:
                self.cls.append(feature.float().clone())
            return x

    return Tap


class SimulatorRunner:
    """The float32 simulator (``faithful=False``) or the faithful one, on CPU or CUDA (float32 only)."""

    def __init__(self, qm, faithful: bool, device: str = "cpu"):
        self.qm, self.faithful, self.device = qm, faithful, device
        self.engine = "faithful" if faithful else "float32"
        self._moved = device == "cpu"

    def __getstate__(self):
        return {"qm": self.qm, "faithful": self.faithful, "device": self.device}

    def __setstate__(self, state):
        self.__init__(state["qm"], state["faithful"], state["device"])

    def __call__(self, x) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from tsptq.intmodel.faithful import FaithfulHook, faithful_logits
        from tsptq.quant.qvit import SimHook

        if not self._moved:
            self.qm = _to_device(self.qm, self.device)
            self._moved = True
        hook = class_token_tap(FaithfulHook)(self.qm) if self.faithful else class_token_tap(SimHook)(self.qm.acts)
        hook.cls, hook.features = [], self.qm.graph.features
        with torch.no_grad():
            x = x.to(self.device)
            logits = faithful_logits(self.qm, x, hook).float() if self.faithful else self.qm(x, hook)
            return logits.cpu().numpy(), torch.cat(hook.cls).cpu().numpy()


class CRunner:
    """The C runtime on the method's ``.tflite`` bytes."""

    engine = "c"

    def __init__(self, data: bytes):
        self.data = data
        self._state = None

    def __getstate__(self):
        return {"data": self.data}

    def __setstate__(self, state):
        self.__init__(state["data"])

    def prepare(self):
        """Parse the file, load it into the C runtime and find the class-token tensor (once per process)."""
        from tsptq.runtime.c_binding import CModel
        from tsptq.tflite.reader import parse_tflite

        fm = parse_tflite(self.data)
        cm = CModel(self.data, name="tsptq eval (c engine)")
        # The head reads the final-norm class token (first); a model without a head outputs it.
        head = fm.ops[-1]
        has_head = head.kind in ("FULLY_CONNECTED", "TSPTQ_FC_2S") and fm.metadata.get("config", {}).get("num_classes")
        tap = head.inputs[0] if has_head else fm.outputs[0]
        t = fm.tensors[tap]
        # The class token's code is affine: per tensor (uniform) or per channel (O-2SF/PTF channel_pow2: scale[c]).
        if t.quant is None or t.quant.kind not in ("uniform", "channel_pow2") or t.dtype != "int8":
            raise TsptqError(f"c engine: the class token ({t.name}) has a {t.quant.kind if t.quant else 'missing'} "
                             "code, not an affine int8 one")
        # A head on [class token, patch-token mean] (global_pool token+avg) reads the class token first; a Swin's
        # head reads the pooled features alone.
        config = fm.metadata.get("config", {})
        width = t.shape[-1] if config.get("arch") == "swin" else config.get("embed_dim", t.shape[-1])
        scale = np.broadcast_to(np.asarray(t.quant.scale, np.float32), (t.shape[-1],))[:width].copy()
        self._state = (fm, cm, tap, scale, int(t.quant.zero_point[0]))

    def __call__(self, x) -> tuple[np.ndarray, np.ndarray]:
        if self._state is None:
            self.prepare()
        fm, cm, tap, scale, zp = self._state
        out, tapped = cm.run(fm.quantize_input(x.numpy()), tap=tap)
        cls = (tapped.view(np.int8)[:, :len(scale)].astype(np.float32) - zp) * scale
        return fm.dequantize_output(out).reshape(len(out), -1), cls


def c_available() -> str | None:
    """None when the C runtime can be built here, else why not."""
    from tsptq.runtime.c_binding import build

    try:
        build()
    except (TsptqError, OSError) as e:
        return str(e).splitlines()[0]
    return None


def resolve(qm, engine: str, device: str = "cpu") -> tuple[object, str | None]:
    """(runner, note): the requested engine where the method has what it needs, else the next one down; the note
    says why a fallback was taken (None when none was)."""
    from tsptq.intmodel.faithful import applies as faithful_applies, has_integer_model

    if qm.method == "fp32":
        return SimulatorRunner(qm, faithful=False, device=device), None
    want = "c" if engine == "auto" else engine
    note = None
    if want == "c":
        if not has_integer_model(qm):
            why = f"{qm.method} W{qm.w_bits}A{qm.a_bits}: no integer model"
            want, note = "faithful", why
        else:
            try:
                from tsptq.intmodel.lower import lower
                from tsptq.tflite.writer import to_tflite

                runner = CRunner(to_tflite(lower(qm)))
                runner.prepare()  # here, not first in a worker: a file the C runtime refuses falls back now
                return runner, None
            except TsptqError as e:  # QuantizationError (no integer model), RuntimeCError (refused by the runtime)
                kind = "no integer model" if isinstance(e, QuantizationError) else "the C runtime refused its file"
                want, note = "faithful", f"{qm.method}: {kind} ({str(e).splitlines()[0]})"
    if want == "faithful" and not faithful_applies(qm):
        want, note = "float32", note or qm.graph.no_faithful or \
            f"{qm.method} W{qm.w_bits}A{qm.a_bits}: no integer model to be faithful to"
    # The faithful simulator decodes codes through numpy: it runs on the CPU whatever --device says.
    return SimulatorRunner(qm, faithful=want == "faithful", device="cpu" if want == "faithful" else device), note


def _to_device(obj, device: str, _seen=None):
    """A copy of a simulator state with every tensor on ``device`` (dataclasses, dicts, lists, plain objects)."""
    import copy

    import torch

    _seen = {} if _seen is None else _seen
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if id(obj) in _seen:
        return _seen[id(obj)]
    if isinstance(obj, dict):
        out = {k: _to_device(v, device, _seen) for k, v in obj.items()}
    elif isinstance(obj, (list, tuple)):
        out = type(obj)(_to_device(v, device, _seen) for v in obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        out = copy.copy(obj)
        _seen[id(obj)] = out
        for k, v in vars(obj).items():  # (object.__setattr__: frozen dataclasses too, the model configs)
            object.__setattr__(out, k, _to_device(v, device, _seen))
        return out
    else:
        return obj
    _seen[id(obj)] = out
    return out
