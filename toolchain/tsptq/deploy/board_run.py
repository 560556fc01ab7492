"""Run evaluation images on a board and measure it against the host integer reference.

Shared by ``tsptq-deploy`` (after it built and flashed) and ``tsptq profile`` (an already flashed board): the
images are quantized on the host with the model's input code, the host integer reference (``IntModel.run``) gives
the bytes the board must return, and every board output is compared with them byte for byte.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from tsptq.data import datasets
from tsptq.intmodel.graph import IntModel


@dataclass(frozen=True)
class TickUnit:
    """How to read a board's tick counts: the unit name in reports and the factor from ticks to it."""

    name: str
    per_tick: float
    kind: str  # "time" (milliseconds), "cycles", or "instructions" (QEMU -icount: not a time)

    @staticmethod
    def of(tick_unit: str, tick_hz: int, instructions_per_tick: int = 0) -> "TickUnit":
        if tick_unit == "ns":
            return TickUnit("ms", 1e-6, "time")
        if tick_unit == "cycles":
            return TickUnit("cycles", 1.0, "cycles")
        if tick_unit == "systick" and instructions_per_tick:
            return TickUnit("instructions", float(instructions_per_tick), "instructions")
        if tick_hz:
            return TickUnit("ms", 1e3 / tick_hz, "time")
        return TickUnit(tick_unit, 1.0, "ticks")


def reference_outputs(im: IntModel, images: datasets.ImageSet, cfg, batch: int = 50,
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(int8 input codes NHWC, the integer reference's output codes) for every image."""
    codes, outs = [], []
    bar = tqdm(total=len(images), desc="host reference", unit="img", disable=not progress, leave=False)
    for x in datasets.iterate_batches(images.images, cfg, batch):
        q = im.quantize_input(x.numpy())
        codes.append(q)
        outs.append(im.run(q))
        bar.update(len(x))
    bar.close()
    return np.concatenate(codes), np.concatenate(outs)


def evaluate_on_board(board, im: IntModel, images: datasets.ImageSet, cfg, labelled: bool, unit: TickUnit,
                      progress: bool = True) -> dict:
    """Every image through the board: top-1, bit-exact fraction against the host reference, latency, per-op share."""
    codes, expected = reference_outputs(im, images, cfg, progress=progress)
    outputs, ticks = [], []
    for q in tqdm(codes, desc=f"on {board.info.board}", unit="img", disable=not progress, leave=False):
        r = board.infer(q.tobytes())
        outputs.append(np.frombuffer(r.output, dtype=expected.dtype).reshape(expected.shape[1:]))
        ticks.append(r.ticks)
    outputs = np.stack(outputs)
    exact = np.all(outputs.reshape(len(outputs), -1) == expected.reshape(len(expected), -1), axis=1)
    pred = im.dequantize_output(outputs).argmax(-1)
    ref_pred = im.dequantize_output(expected).argmax(-1)
    lat = np.asarray(ticks, dtype=np.float64) * unit.per_tick
    result = {
        "images": len(images), "data": images.name,
        "bit_exact_fraction": float(exact.mean()), "mismatched_images": [int(i) for i in np.flatnonzero(~exact)[:20]],
        "max_abs_diff_codes": int(np.abs(outputs.astype(np.int32) - expected.astype(np.int32)).max()),
        "top1_agreement": float((pred == ref_pred).mean()),
        "top1_board": round(100.0 * float((pred == images.labels).mean()), 2) if labelled else None,
        "top1_reference": round(100.0 * float((ref_pred == images.labels).mean()), 2) if labelled else None,
        "latency": {"unit": unit.name, "kind": unit.kind, "median": float(np.median(lat)),
                    "p90": float(np.percentile(lat, 90)), "min": float(lat.min()), "max": float(lat.max())},
        "ops": op_shares(board.profile(), unit),
    }
    return result


def op_shares(profile: list[tuple[str, int]], unit: TickUnit) -> list[dict]:
    """Per-op-type totals of the last inference's profile, largest first, with their share of the sum."""
    totals: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for name, ticks in profile:
        totals[name] += ticks
        counts[name] += 1
    whole = sum(totals.values()) or 1
    return [{"op": name, "count": counts[name], "ticks": t, unit.name: t * unit.per_tick,
             "share": round(t / whole, 4)} for name, t in sorted(totals.items(), key=lambda kv: -kv[1])]
