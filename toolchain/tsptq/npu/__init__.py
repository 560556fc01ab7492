"""NPUs: what Arm's Vela compiler makes of a .tflite file for an Ethos-U NPU (docs/npu.md).

- ``tsptq.npu.vela``: run Vela (the ``npu`` extra) on a file and read its outputs into a ``VelaReport``;
- ``tsptq.npu.graph_ops``: the ops and MACs of any .tflite file, read with the schema bindings (Vela counts only the
  MACs it places on the NPU);
- ``tsptq.npu.single_op``: one-op .tflite files, for measuring which op and dtype Vela maps;
- ``tsptq.npu.op_support``: those measurements (``python -m tsptq.npu.op_support`` prints docs/npu.md's table);
- ``tsptq.npu.export``: ``tsptq export --npu ethos-u``, the NPU variant (``tsptq.intmodel.lower.lower(qm, npu=True)``)
  and Vela's compiled file and report beside it;
- ``tsptq.npu.litert_check``: the variant run with its builtins in LiteRT's reference kernels, op by op.
"""
