"""The quantization methods: which code and which search each one uses for each kind of tensor.

Every method except ``fp32`` is fully quantized: every quantization point of the graph (``qvit`` for a ViT,
``qswin`` for a Swin) gets a code. TSPTQ's ablation variants are methods too (``tsptq-no-o2sf``,
``tsptq-no-v2sf``, ...), so the harness, the benchmarks and the CLI treat them alike.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from tsptq.errors import QuantizationError


@dataclass(frozen=True)
class Method:
    name: str
    generic: str  # every 'act' point and the non-special kinds: minmax | percentile | mse
    residual: str  # residual stream / LayerNorm inputs: uniform | ptf | o2sf
    softmax: str  # post-Softmax: uniform | log2 | twin | v2sf
    gelu: str  # post-GELU: uniform | twin | v2sf
    branch: str = "uniform"  # attention/MLP outputs added into the residual stream: uniform | o2sf
    norm_out: str = "uniform"  # LayerNorm outputs: uniform | o2sf
    weight_search: bool = False  # per-channel clip search for weights (else plain max)
    output_search: bool = True  # score 2SF candidates by the consumer's output error (else by the tensor's own)
    select: str = "local"  # local: keep each local search's pick | block: choose by the block-output error
    o2sf_levels: bool = False  # O-2SF may give each outlier channel its own shift (else one shift for all)
    # Uniform codes of GELU and Softmax inputs (fc1 outputs, attention scores), scored through the nonlinearity on
    # its consumer's output: none (one common clip of both ends, scored on the tensor) | low (the low end clipped
    # alone) | both (each end clipped on its own)
    nonlinear_input_clip: str = "none"
    # Bias correction (issue 13's candidate): each block linear's bias absorbs the mean shift its quantized input and
    # weights cause on the calibration tokens (quantize.bias_corrected)
    bias_correction: bool = False
    # fc1 outputs (GELU inputs): uniform | o2sf (per-channel power-of-two steps, scored through GELU and fc2; the
    # integer GELU reads a table of 256 entries per shift level)
    fc1_code: str = "uniform"
    # Attention scores (Softmax inputs): tensor (one uniform code) | head (one uniform code per head, each head's low
    # end clipped through the Softmax on its own; where the graph has no integer model for it, one code per tensor)
    scores_code: str = "tensor"
    description: str = ""


# The GELU and Softmax inputs' low end is clipped through the nonlinearity (issue 13): under the robustness protocol
# it kept tsptq's agreement at or above minmax's on every model, where the common clip did not (fashion-vit).
_TSPTQ = Method("tsptq", "mse", "o2sf", "v2sf", "v2sf", branch="o2sf", norm_out="o2sf", weight_search=True,
                select="block", o2sf_levels=True, nonlinear_input_clip="low",
                description="TSPTQ-ViT: V-2SF on post-Softmax/post-GELU, O-2SF on LayerNorm inputs and outputs and "
                            "on the branches that feed them, consumer-output searches, block-output selection, "
                            "GELU/Softmax inputs' low end clipped through the nonlinearity")

METHODS: dict[str, Method | None] = {
    "fp32": None,
    "minmax": Method("minmax", "minmax", "uniform", "uniform", "uniform",
                     description="per-tensor uniform from min/max everywhere, per-channel weights"),
    "percentile": Method("percentile", "percentile", "uniform", "uniform", "uniform",
                         description="per-tensor uniform clipped at the 0.01/99.99 percentiles"),
    "ptf-log2": Method("ptf-log2", "minmax", "ptf", "log2", "uniform",
                       description="FQ-ViT: power-of-two factor LayerNorm inputs, log2 softmax"),
    "twin": Method("twin", "minmax", "uniform", "twin", "twin",
                   description="PTQ4ViT twin uniform on post-Softmax and post-GELU"),
    "tsptq": _TSPTQ,
    # Ablations: each switches one part of TSPTQ off.
    "tsptq-no-o2sf": replace(_TSPTQ, name="tsptq-no-o2sf", residual="uniform", branch="uniform",
                             norm_out="uniform", description="TSPTQ without O-2SF"),
    "tsptq-no-v2sf-softmax": replace(_TSPTQ, name="tsptq-no-v2sf-softmax", softmax="uniform",
                                     description="TSPTQ without V-2SF on post-Softmax"),
    "tsptq-no-v2sf-gelu": replace(_TSPTQ, name="tsptq-no-v2sf-gelu", gelu="uniform",
                                  description="TSPTQ without V-2SF on post-GELU"),
    "tsptq-tensor-search": replace(_TSPTQ, name="tsptq-tensor-search", output_search=False,
                                   description="TSPTQ with 2SF scales scored on the tensor, not the consumer output"),
    "tsptq-local": replace(_TSPTQ, name="tsptq-local", select="local", o2sf_levels=False,
                           description="TSPTQ without block-output selection (local picks kept), two-level O-2SF"),
    "tsptq-self-clip": replace(_TSPTQ, name="tsptq-self-clip", nonlinear_input_clip="none",
                               description="TSPTQ with the GELU and Softmax inputs clipped at both ends by one "
                                           "factor scored on the tensor itself (tsptq's default before issue 13's "
                                           "second stop)"),
    "tsptq-nl-both": replace(_TSPTQ, name="tsptq-nl-both", nonlinear_input_clip="both",
                             description="TSPTQ with both ends of the GELU and Softmax inputs' range clipped, each "
                                         "on its own, scored through the nonlinearity (a candidate that overfits: "
                                         "docs/method.md)"),
    "tsptq-bc": replace(_TSPTQ, name="tsptq-bc", bias_correction=True,
                        description="TSPTQ with bias correction: each block linear's bias absorbs the mean output "
                                    "shift that its quantized input and weights cause on the calibration tokens"),
    "tsptq-fc1-o2sf": replace(_TSPTQ, name="tsptq-fc1-o2sf", fc1_code="o2sf",
                              description="TSPTQ with O-2SF (per-channel power-of-two steps) on the fc1 outputs, "
                                          "scored through GELU and fc2"),
    "tsptq-heads": replace(_TSPTQ, name="tsptq-heads", fc1_code="o2sf", scores_code="head",
                           description="tsptq-fc1-o2sf with one uniform code per attention head on the scores "
                                       "(DINOv2's heads differ up to 40x in their score ranges)"),
    "tsptq-two-level": replace(_TSPTQ, name="tsptq-two-level", o2sf_levels=False,
                               description="TSPTQ with one shift for every O-2SF outlier channel"),
    "tsptq-base": replace(_TSPTQ, name="tsptq-base", residual="uniform", softmax="uniform", gelu="uniform",
                          branch="uniform", norm_out="uniform",
                          description="TSPTQ's searches with no two-scale code at all"),
}

MAIN_METHODS = ("fp32", "minmax", "percentile", "ptf-log2", "twin", "tsptq")
ABLATIONS = ("tsptq", "tsptq-self-clip", "tsptq-local", "tsptq-two-level", "tsptq-no-o2sf", "tsptq-no-v2sf-softmax", "tsptq-no-v2sf-gelu", "tsptq-tensor-search", "tsptq-base")


def get_method(name: str) -> Method | None:
    if name not in METHODS:
        raise QuantizationError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def parse_methods(spec: str) -> list[str]:
    names = [m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        raise QuantizationError("no method given")
    for n in names:
        get_method(n)
    return names


def parse_bits(spec: str) -> tuple[int, int]:
    """'W8A8' -> (8, 8)."""
    s = spec.upper().strip()
    try:
        w, a = s[1:].split("A")
        if s[0] != "W":
            raise ValueError
        w_bits, a_bits = int(w), int(a)
    except ValueError:
        raise QuantizationError(f"bit widths look like W8A8 or W4A8, got {spec!r}") from None
    if not (2 <= w_bits <= 8 and 3 <= a_bits <= 8):
        raise QuantizationError(f"supported: weights 2-8 bits, activations 3-8 bits; got {spec!r}")
    return w_bits, a_bits
