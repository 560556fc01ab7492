"""``tsptq export --npu ethos-u``: the NPU variant's ``.tflite`` and, when Vela is installed, its compiled file and
report beside it.

The variant (``tsptq.intmodel.lower.lower(qm, npu=True)``, docs/integer-semantics.md "The NPU variant") makes every
multiply-accumulate op a TFLite builtin that Vela maps to an Ethos-U55 (FULLY_CONNECTED, 16x8 where a two-scale
code feeds it; attention x V as two int8 BATCH_MATMULs with int32 outputs, summed and requantized once by
``TSPTQ_PV_SUM_2S`` on the CPU, or a ``TSPTQ_BMM_2S`` custom op with ``split_pv=False``: the same bytes either way);
Softmax and GELU stay ``TSPTQ_*`` custom ops on the CPU. ``residual16`` makes the residual stream int16 (its adds
builtin int16 ADDs) and ``layernorm_npu`` the LayerNorms NPU builtins around two row statistics on the CPU, the
command's default (``npu_form``); without them the LayerNorms and the adds of a two-scale residual code are custom
ops too and the file computes the default file's bytes. Files written next to
``out`` (``model.tflite``), all or none:

- ``model.tflite``: the variant;
- ``model_vela.tflite``: Vela's compiled file (for TFLite Micro with the Ethos-U driver; the custom ops still need
  kernels there), and Vela's CSVs (``model_summary_*.csv``, ``model_per-layer.csv`` ...);
- ``model_npu.json``: the report (``tsptq.npu.vela.VelaReport.to_json``).

Vela compiles a staged copy first, so a Vela failure writes nothing. Without Vela only the variant is written, and
the result says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tsptq.errors import TsptqError

NPU_TARGETS = ("ethos-u",)


@dataclass
class NpuExport:
    path: Path
    size: int
    report: object | None  # tsptq.npu.vela.VelaReport, None without Vela
    written: list[Path]
    note: str = ""  # why there is no report


def npu_form(residual: str | None, layernorm: str | None) -> tuple[bool, bool]:
    """``(residual16, layernorm_npu)`` of an NPU variant from the command line's ``--residual`` and ``--layernorm``
    (None where not given). By default the residual stream is int16 and the LayerNorms are NPU builtins: the form
    that meets issue 18's bars and is the most accurate (docs/npu.md); ``--residual code`` gives the default file's
    bytes, with the LayerNorms as CPU ops."""
    residual16 = (residual or "int16") == "int16"
    layernorm_npu = (layernorm or ("npu" if residual16 else "cpu")) == "npu"
    if layernorm_npu and not residual16:
        raise TsptqError("--layernorm npu reads the int16 residual stream: drop --residual code (int16 is the default)")
    return residual16, layernorm_npu


def check_npu_request(target: str, method: str, bits: str, accelerator: str | None = None) -> None:
    """The one-line refusals that need no calibration: an unknown target or accelerator, the stock converter, a bit
    setting other than W8A8, a method whose codes have no NPU form (the model's own: ``lower.require_npu_config``,
    checked by ``build`` before calibrating)."""
    from tsptq.npu.vela import ACCELERATORS
    from tsptq.quant.methods import get_method, parse_bits

    if accelerator is not None and accelerator not in ACCELERATORS:
        raise TsptqError(f"--accelerator: unknown Ethos-U configuration {accelerator!r} (one of {', '.join(ACCELERATORS)})")
    if target not in NPU_TARGETS:
        raise TsptqError(f"--npu: unknown NPU target {target!r} (supported: {', '.join(NPU_TARGETS)})")
    if method == "tflite-converter":
        raise TsptqError("--npu applies to tsptq's own export; the tflite-converter file is already all builtins "
                         "(run tsptq npu-report on it)")
    w, a = parse_bits(bits)
    if (w, a) != (8, 8):
        raise TsptqError(f"--npu {target}: the NPU variant is W8A8 only (Ethos-U's FULLY_CONNECTED takes 8-bit "
                         f"weights and 8/16-bit activations), got {bits.upper()}")
    spec = get_method(method) if method != "fp32" else None
    if spec is not None and spec.gelu == "twin":  # checked before calibration; lowering refuses it too
        raise TsptqError(f"--npu {target}: {method}'s sign-split GELU code has no NPU form (use tsptq or minmax)")
    if spec is not None and spec.scores_code != "tensor":  # before fc1_code: tsptq-heads has both
        raise TsptqError(f"--npu {target}: {method}'s per-head scores code has no NPU form yet (use tsptq or minmax)")
    if spec is not None and spec.fc1_code != "uniform":
        raise TsptqError(f"--npu {target}: {method}'s per-channel fc1 code (the GELU input) has no NPU form yet (use "
                         "tsptq or minmax)")


def export_npu(src, out: str | Path, target: str = "ethos-u", accelerator: str | None = None,
               progress: bool = True, run_vela: bool = True, split_pv: bool = True,
               residual16: bool = False, layernorm_npu: bool = False) -> NpuExport:
    """Calibrate, quantize, lower to the NPU variant, write it, and run Vela on it when it is installed.
    ``split_pv=False`` keeps attention x V of a V-2SF probability code as TSPTQ_BMM_2S on the CPU (the same bytes,
    fewer MACs on the NPU: docs/npu.md). ``residual16``: the residual stream int16 and its adds builtin int16 ADDs
    on the NPU (a finer residual stream: not the default file's bytes). ``layernorm_npu`` (with ``residual16``): the
    LayerNorms as NPU builtins around two row statistics on the CPU."""
    import json
    import tempfile

    from tsptq.atomic import atomic_write_group, make_dir
    from tsptq.intmodel.integer import build
    from tsptq.npu.vela import DEFAULT_ACCELERATOR, compile_report, output_files, vela_version
    from tsptq.tflite.writer import to_tflite

    check_npu_request(target, src.method, src.bits, accelerator)
    src.validate()
    im, _ = build(src, progress=progress, npu=True, split_pv=split_pv, residual16=residual16,
                  layernorm_npu=layernorm_npu)
    out = Path(out)
    data = to_tflite(im)
    items = [(out, data)]
    report, note = None, ""
    if not run_vela:
        note = "Vela not run"
    elif vela_version() is None:
        note = "Vela (ethos-u-vela) is not installed: no compiled file (pip install -e '.[npu]')"
    else:  # Vela compiles a staged copy first: if it fails, nothing is written and no old report is left beside
        with tempfile.TemporaryDirectory(prefix="tsptq-npu-") as tmp:
            staged = Path(tmp) / out.name
            staged.write_bytes(data)
            report = compile_report(staged, accelerator or DEFAULT_ACCELERATOR)
        report.file = str(out)
        items += output_files(report, out.parent)
        items.append((out.parent / f"{out.stem}_npu.json", json.dumps(report.to_json(), indent=1).encode()))
    make_dir(out.parent)
    atomic_write_group((p, (lambda tmp, d=d: Path(tmp).write_bytes(d))) for p, d in items)
    return NpuExport(out, len(data), report, [p for p, _ in items], note)
