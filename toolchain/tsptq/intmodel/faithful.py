"""The simulator made faithful to the file: float64, and TFLite's own requantization at the builtin ops.

The plain simulator rounds every op's real result once, in float32. The integer model differs from that in two
places by design: builtin CONV_2D and BATCH_MATMUL (and TSPTQ_BMM_HEADS, BATCH_MATMUL with a multiplier per head
for a per-head scores code) requantize the way TFLite does (two roundings, ``MultiplyByQuantizedMultiplier``), and it
computes exactly. A quantized ViT is sensitive to single-LSB changes (a 1e-7 relative change of the input flips about
1.5% of cifar10-vit's predictions), so the comparison that proves the integer model right uses this simulator:
float64 everywhere, and at the builtin conv and matmul outputs the exact integer accumulator requantized with TFLite's
arithmetic. Everything else stays the simulator's math.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from tsptq.intmodel import kernels as K
from tsptq.quant.quantizers import Uniform
from tsptq.quant.qvit import QuantizedViT, SimHook, run


class FaithfulHook(SimHook):
    def __init__(self, qm: QuantizedViT):
        super().__init__(qm.acts)
        self.qm = qm
        self.codes: dict[str, torch.Tensor] = {}
        from tsptq.intmodel.lower import patch_embed_codes

        self.w_codes, w_scale, self.bias = patch_embed_codes(qm)
        self.pe_mult = K.builtin_multipliers(float(qm.acts["input"].scale), w_scale, float(qm.acts["patch_embed"].scale))

    def act(self, name: str, kind: str, x: torch.Tensor) -> torch.Tensor:
        if name == "norm.patch_mean":  # TOKEN_MEAN on the final norm's codes
            codes = K.token_mean(self.codes["norm"].numpy(), self.qm.graph.cfg.num_prefix_tokens,
                                 int(self.q["norm"].zero_point))[:, 0]
            return self._decode("norm", codes).to(x.dtype)
        quant = self.q[name]
        if name in ("input", "norm") or name.endswith((".q", ".k", ".v", ".softmax")):
            self.codes[name] = quant.encode(x)
        if name == "patch_embed":
            return self._patch_embed(x)
        if name.endswith(".scores"):
            return self._matmul(name, name.replace(".scores", ".q"), name.replace(".scores", ".k"), adj=True)
        probs = name.replace(".ctx", ".softmax")
        if name.endswith(".ctx") and isinstance(self.q[probs], Uniform):  # a builtin BATCH_MATMUL in the file
            return self._matmul(name, probs, name.replace(".ctx", ".v"), adj=False)
        return quant.fake(x).to(x.dtype)  # sign-split and log2 decode in float32

    def _decode(self, name, codes: np.ndarray) -> torch.Tensor:
        return self.q[name].decode(torch.from_numpy(codes.astype(np.int32))).double()

    def _patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.qm.graph.cfg
        q_in = self.q["input"]
        xi = (self.codes["input"].double() - float(q_in.zero_point))
        w = torch.from_numpy(self.w_codes.astype(np.float64)).permute(0, 3, 1, 2)
        acc = F.conv2d(xi, w, stride=cfg.patch_size).flatten(2).transpose(1, 2).round().long().numpy()
        acc = acc + self.bias.astype(np.int64)
        tokens = K.requantize(acc, *self.pe_mult, int(self.q["patch_embed"].zero_point))
        n_prefix = x.shape[1] - tokens.shape[1]
        prefix = self.q["patch_embed"].encode(x[:, :n_prefix]).numpy()
        return self._decode("patch_embed", np.concatenate([prefix, tokens], 1))

    def _matmul(self, name, a_name, b_name, adj: bool) -> torch.Tensor:
        from tsptq.intmodel.lower import scores_params

        qa, qb, qo = self.q[a_name], self.q[b_name], self.q[name]
        if not adj:  # probabilities x V
            a = self.codes[a_name].double() - float(qa.zero_point)
            b = self.codes[b_name].double() - float(qb.zero_point)
            acc = (a @ b).round().long().numpy()
            mult, shift = K.bmm_multiplier(float(qa.scale), float(qb.scale), float(qo.scale))
            return self._decode(name, K.requantize(acc, mult, shift, int(qo.zero_point)))
        # the scores: BATCH_MATMUL, or TSPTQ_BMM_HEADS for a per-head code (a multiplier and zero point per head)
        out = scores_params(self.qm, int(name.split(".")[1]))
        mult, shift = K.bmm_heads_multipliers(float(qa.scale), float(qb.scale), out.scale)  # one: it broadcasts
        return self._decode(name, K.bmm_heads(self.codes[a_name].numpy(), int(qa.zero_point),
                                              self.codes[b_name].numpy(), int(qb.zero_point), mult, shift,
                                              out.zero_point))


def applies(qm: QuantizedViT) -> bool:
    """Whether the quantization has an integer model and this simulator covers its graph (not a Swin)."""
    return has_integer_model(qm) and qm.graph.no_faithful is None


def has_integer_model(qm: QuantizedViT) -> bool:
    """Whether ``lower`` accepts the quantization (A8, one head)."""
    return qm.method != "fp32" and bool(qm.acts) and qm.a_bits == 8 and "head_dist" not in qm.graph.linears


@torch.no_grad()
def faithful_logits(qm: QuantizedViT, x: torch.Tensor, hook: FaithfulHook | None = None) -> torch.Tensor:
    """Logits of the faithful simulator (float64); ``hook``: a FaithfulHook (subclass) to use instead of a new one."""
    linears = {k: (w.double(), b.double()) for k, (w, b) in qm._linears.items()}
    consts = {k: v.double() for k, v in qm._consts.items()}
    graph = replace(qm.graph, norms={k: (w.double(), b.double()) for k, (w, b) in qm.graph.norms.items()})
    return run(graph, x.double(), hook or FaithfulHook(qm), linears, consts)
