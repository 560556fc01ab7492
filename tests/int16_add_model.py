"""A one-op integer model of the int16 residual stream's ADD (TFLite's general int16 form), for the LiteRT and TFLM
tests (tests/test_npu_residual16.py, tests/test_tflm.py)."""
from __future__ import annotations

import numpy as np

from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor


def add16_model(sa: float, sb: float, sy: float, shape=(1, 5, 48)) -> IntModel:
    q = [QuantParams(np.array([s], np.float32), np.zeros(1, np.int64)) for s in (sa, sb, sy)]
    tensors = [Tensor("a", shape, "int16", q[0]), Tensor("b", shape, "int16", q[1]), Tensor("y", shape, "int16", q[2])]
    return IntModel(tensors, [Op("ADD", [0, 1], [2], {"pot_scale_int16": False})], [0, 1], [2], {"method": "test"})
