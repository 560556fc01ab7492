"""Check an integer model's builtin ops against LiteRT's reference kernels, op by op, inside a whole-model run.

The NPU variant (``tsptq.intmodel.lower.lower(qm, npu=True)``) cannot run in LiteRT as one file: its remaining
``TSPTQ_*`` custom ops would need the tsptq delegate, and the delegate loads the file with the C runtime, which does
not know the variant's int16 tensors. ``run_mixed`` runs the model instead with **every builtin op executed by
LiteRT** (a one-op ``.tflite`` per op, written by ``tsptq.tflite.writer`` from the op's own tensors, run with
``OpResolverType.BUILTIN_REF`` on the values the previous ops produced) and every custom op by the Python kernels. Its
output is what the file computes in LiteRT plus the tsptq custom kernels; ``tests/test_npu_variant.py`` compares it
byte for byte with ``IntModel.run``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tsptq.intmodel.graph import IntModel, Op, Tensor
from tsptq.intmodel.ops import ALL_OPS


def single_op_model(model: IntModel, op: Op) -> IntModel:
    """The op alone: its activation inputs are the graph's inputs, its constants stay constants."""
    index: dict[int, int] = {}
    tensors: list[Tensor] = []
    for i in list(op.inputs) + list(op.outputs):
        if i not in index:
            index[i] = len(tensors)
            tensors.append(model.tensors[i])
    inputs = [index[i] for i in op.inputs if model.tensors[i].data is None]
    return IntModel(tensors, [Op(op.kind, [index[i] for i in op.inputs], [index[i] for i in op.outputs],
                                 dict(op.options))], list(dict.fromkeys(inputs)), [index[op.outputs[0]]],
                    {"method": "single-op"})


@dataclass
class MixedRun:
    """Builtins through LiteRT's reference kernels, custom ops through the Python kernels."""

    model: IntModel
    _interpreters: dict = field(default_factory=dict, repr=False)

    def _interpreter(self, k: int):
        if k not in self._interpreters:
            from ai_edge_litert import interpreter as litert

            from tsptq.tflite.writer import to_tflite

            data = to_tflite(single_op_model(self.model, self.model.ops[k]))
            it = litert.Interpreter(model_content=data,
                                    experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
            it.allocate_tensors()
            self._interpreters[k] = it
        return self._interpreters[k]

    def run(self, x: np.ndarray, check: bool = False) -> np.ndarray:
        """Run one image after another (the files have batch 1). ``check``: also compare every builtin op's LiteRT
        output with the Python kernel's on the same inputs and raise AssertionError at the first difference."""
        m = self.model
        outs = []
        for b in range(len(x)):
            vals = {m.inputs[0]: x[b:b + 1]}
            for k, op in enumerate(m.ops):
                ins = [vals[i] if i in vals else m.tensors[i].data for i in op.inputs]
                spec = ALL_OPS[op.kind]
                if spec.custom:
                    vals[op.outputs[0]] = spec.kernel(m, op, ins)
                    continue
                it = self._interpreter(k)
                # the one-op file's inputs: the op's activation inputs, each tensor once, in order
                acts = dict.fromkeys(i for i in op.inputs if m.tensors[i].data is None)
                for d, i in zip(it.get_input_details(), acts):
                    v = vals[i]
                    it.set_tensor(d["index"], np.ascontiguousarray(v, dtype=d["dtype"]))
                it.invoke()
                got = it.get_tensor(it.get_output_details()[0]["index"]).copy()
                if check:
                    want = spec.kernel(m, op, ins)
                    if got.dtype != want.dtype or not np.array_equal(got, want):
                        raise AssertionError(
                            f"image {b}, op {k} ({op.kind} -> {m.tensors[op.outputs[0]].name!r}): LiteRT's "
                            f"reference kernel differs from the integer model in "
                            f"{int(np.sum(got != want)) if got.shape == want.shape else 'shape'} values")
                vals[op.outputs[0]] = got
            outs.append(vals[m.outputs[0]])
        return np.concatenate(outs)
