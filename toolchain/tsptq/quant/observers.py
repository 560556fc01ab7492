"""Calibration observers: run the float model on the calibration images and keep every quantization point's tensor.

The scale searches need the tensors themselves (percentiles, output-error searches), not just running min/max,
so the recorder keeps them all: 32 images through DINOv2-S at 224x224 take about 8 GB.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from tsptq.data.datasets import ImageSet, iterate_batches
from tsptq.errors import QuantizationError
from tsptq.quant.qvit import Graph


class Recorder:
    def __init__(self):
        self.tensors: dict[str, list[torch.Tensor]] = {}

    def act(self, name: str, kind: str, x: torch.Tensor) -> torch.Tensor:
        self.tensors.setdefault(name, []).append(x.detach().clone())
        return x

    def finish(self) -> dict[str, torch.Tensor]:
        return {name: torch.cat(parts, 0) for name, parts in self.tensors.items()}


@dataclass
class Calibration:
    """The float tensors at every quantization point over a calibration set, recorded once and shared by every
    method fitted on it."""

    tensors: dict[str, torch.Tensor]
    images: int
    seconds: float


@torch.no_grad()
def record(graph: Graph, calib: ImageSet, batch_size: int = 16, progress: bool = True) -> Calibration:
    if len(calib) == 0:
        raise QuantizationError("the calibration set is empty: give at least one image")
    t0 = time.perf_counter()
    rec = Recorder()
    batches = iterate_batches(calib.images, graph.cfg, batch_size)
    total = -(-len(calib) // batch_size)
    for x in tqdm(batches, total=total, desc="calibrate", unit="batch", disable=not progress, leave=False):
        graph.forward(x, rec)
    return Calibration(rec.finish(), len(calib), time.perf_counter() - t0)
