"""From a model name and a method to the integer model, and running integer models on image sets.

``build`` records in the metadata where the model and the calibration images came from, so ``tsptq verify`` can
rebuild the same in-memory integer model from a file alone and compare the two byte for byte.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from tsptq.data import datasets
from tsptq.intmodel.graph import IntModel
from tsptq.quant.qvit import QuantizedViT


@dataclass
class Source:
    """Where a quantized model came from (stored in the file's metadata)."""

    model: str | None = "cifar10-vit"
    checkpoint: str | None = None
    heads: int | None = None
    img_size: int | None = None
    method: str = "tsptq"
    bits: str = "W8A8"
    data: str = "auto"
    calib_images: int = 32
    folder: str | None = None
    labels: str | None = None  # label file of a flat image folder
    calib_folder: str | None = None  # image folder the calibration images came from (else the first of ``folder``)
    preprocess: dict | None = None  # mean / std / crop_pct / interpolation given instead of the model's own

    def to_dict(self) -> dict:
        return dict(vars(self))

    def validate(self) -> None:
        """The checks of the source's own values (bits, calibration images), as one-line errors."""
        from tsptq.errors import TsptqError
        from tsptq.quant.methods import parse_bits

        parse_bits(self.bits)
        if self.calib_images < 1:
            raise TsptqError("--calib-images must be at least 1")


def build(src: Source, progress: bool = True, npu: bool = False,
          split_pv: bool = True, residual16: bool = False,
          layernorm_npu: bool = False) -> tuple[IntModel, QuantizedViT]:
    """Calibrate, quantize and lower: the in-memory integer model and the simulator it was lowered from. ``npu``,
    ``split_pv``, ``residual16``: lower to the NPU variant (``tsptq.intmodel.lower.lower(qm, npu=True, ...)``);
    ``layernorm_npu``: with ``residual16``, its LayerNorms as NPU builtins (sized on the calibration images)."""
    from tsptq.intmodel.lower import lower

    src.validate()
    if residual16 and not npu:
        from tsptq.errors import TsptqError

        raise TsptqError("an int16 residual stream is a form of the NPU variant (--npu ethos-u) only")
    if layernorm_npu and not residual16:
        from tsptq.errors import TsptqError

        raise TsptqError("the LayerNorm on the NPU reads the int16 residual stream: --layernorm npu needs --npu "
                         "ethos-u --residual int16")
    qm, calib = quantize_source(src, progress, npu)
    if npu:
        sigma = layernorm_sigmas(qm, calib) if layernorm_npu else None
        im = lower(qm, npu=True, split_pv=split_pv, residual16=residual16, layernorm_npu=sigma)
    else:
        im = lower(qm)
    im.metadata["source"] = src.to_dict()
    return im, qm


def quantize_source(src: Source, progress: bool = True, npu: bool = False) -> tuple[QuantizedViT, datasets.ImageSet]:
    """Calibrate and quantize ``src``: the simulator and the calibration images it was fitted on (``npu``: refuse a
    model the NPU variant cannot hold before calibrating)."""
    from tsptq.model.checkpoint import resolve_model
    from tsptq.quant.quantize import quantize

    model = resolve_model(src.model, src.checkpoint, src.heads, src.img_size, preprocess=src.preprocess)
    if npu:
        from tsptq.intmodel.lower import require_npu_config

        require_npu_config(model.cfg)
    calib = calibration_set(src, model.cfg)
    return quantize(model, calib, src.method, src.bits, progress=progress), calib


def layernorm_sigmas(qm: QuantizedViT, calib: datasets.ImageSet) -> dict[str, float]:
    """The smallest token deviation at each LayerNorm input over the calibration images (``lower``'s
    ``layernorm_npu``)."""
    return qm.residual_sigma_min(datasets.iterate_batches(calib.images, qm.graph.cfg, 16))


def calibration_set(src: Source, cfg) -> datasets.ImageSet:
    """The calibration images ``build`` draws for ``src`` (the same deterministic draw)."""
    from tsptq.model.model_data import resolve_data

    calib, _, _ = resolve_data(src.model, cfg, src.data, src.calib_images, 1, src.folder, labels=src.labels,
                               calib_folder=src.calib_folder)
    return calib


def run_batches(im: IntModel, images: datasets.ImageSet, cfg, batch: int = 50, progress: bool = True,
                desc: str = "integer model") -> np.ndarray:
    """Output codes of the integer model on every image (float images are quantized with the model's input code)."""
    outs = []
    bar = tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False)
    for x in datasets.iterate_batches(images.images, cfg, batch):
        outs.append(im.run(im.quantize_input(x.numpy())))
        bar.update(len(x))
    bar.close()
    return np.concatenate(outs)


@torch.no_grad()
def run_simulator(qm: QuantizedViT, images: datasets.ImageSet, batch: int = 50, progress: bool = True) -> np.ndarray:
    outs = []
    bar = tqdm(total=len(images), desc="simulator", unit="img", disable=not progress, leave=False)
    for x in datasets.iterate_batches(images.images, qm.graph.cfg, batch):
        outs.append(qm(x).numpy())
        bar.update(len(x))
    bar.close()
    return np.concatenate(outs)


def run_faithful(qm: QuantizedViT, images: datasets.ImageSet, batch: int = 50, progress: bool = True) -> np.ndarray:
    """Logits of the faithful simulator (``tsptq.intmodel.faithful``: float64, TFLite's rounding at the builtin ops)."""
    from tsptq.intmodel.faithful import faithful_logits

    outs = []
    bar = tqdm(total=len(images), desc="faithful simulator", unit="img", disable=not progress, leave=False)
    for x in datasets.iterate_batches(images.images, qm.graph.cfg, batch):
        outs.append(faithful_logits(qm, x).numpy())
        bar.update(len(x))
    bar.close()
    return np.concatenate(outs)


def compare(int_logits: np.ndarray, sim_logits: np.ndarray, labels: np.ndarray | None) -> dict:
    """Integer model against the simulator: top-1 of each, prediction agreement, logit error."""
    a, b = int_logits.argmax(-1), sim_logits.argmax(-1)
    diff = np.abs(int_logits.astype(np.float64) - sim_logits)
    out = {"images": len(a), "agreement": round(float(np.mean(a == b)) * 100, 3),
           "logit_abs_err_mean": float(diff.mean()), "logit_abs_err_max": float(diff.max())}
    if labels is not None:
        out["top1_integer"] = round(float(np.mean(a == labels)) * 100, 3)
        out["top1_simulator"] = round(float(np.mean(b == labels)) * 100, 3)
    return out
