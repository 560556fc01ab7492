"""Test helpers: small hand-made .tflite files (written with the project's own exporter) whose sizes sit at the edges
of the runtime's limits, for the hardening tests (tests/test_hardening_memory.py) and the fuzz corpus
(runtime_c/fuzz/corpus/, which holds the files these functions write)."""
from __future__ import annotations

import numpy as np

from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
from tsptq.tflite.writer import to_tflite

# int8 [1, 1657009, 864, 1]: 1,431,655,776 bytes, a multiple of 16 and within the loader's 2 GB tensor limit.
BIG_H, BIG_W = 1657009, 864
BIG_BYTES = BIG_H * BIG_W  # 1,431,655,776


def _q(scale: float = 0.5, zp: int = 0) -> QuantParams:
    return QuantParams(np.array([scale], np.float32), np.array([zp], np.int64))


def arena_wrap_reshape() -> bytes:
    """int8 input [1, 1657009, 864, 1] -> RESHAPE -> [1, 1657009, 864]: the runtime plans 1,431,655,776 B (the
    output aliases the input), which the loader accepts; the device program then needs runtime + input + output =
    3 x 1.43 GB (+ profile), 4,294,967,332 B, which 32-bit arithmetic wraps to 36 B."""
    ts = [Tensor("image", (1, BIG_H, BIG_W, 1), "int8", _q()),
          Tensor("new_shape", (3,), "int32", None, np.array([1, BIG_H, BIG_W], np.int32)),
          Tensor("flat", (1, BIG_H, BIG_W), "int8", _q())]
    return to_tflite(IntModel(ts, [Op("RESHAPE", [0, 1], [2], {"new_shape": [1, BIG_H, BIG_W]})], [0], [2]))


def arena_over_limit_add() -> bytes:
    """The same input added to itself: two 1.43 GB buffers live at once, a 2,863,311,552 B plan, over the runtime's
    2 GB arena limit (TQ_MAX_ARENA) although each tensor is within its own limit."""
    ts = [Tensor("image", (1, BIG_H, BIG_W, 1), "int8", _q()),
          Tensor("sum", (1, BIG_H, BIG_W, 1), "int8", _q())]
    return to_tflite(IntModel(ts, [Op("ADD", [0, 0], [1], {})], [0], [1]))


CORPUS = {"arena_wrap_reshape.tflite": arena_wrap_reshape, "arena_over_limit_add.tflite": arena_over_limit_add}


if __name__ == "__main__":  # rewrite the corpus files: python tests/crafted_models.py runtime_c/fuzz/corpus
    import sys
    from pathlib import Path

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, make in CORPUS.items():
        (out / name).write_bytes(make())
