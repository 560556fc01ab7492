"""``tsptq export --npu ethos-u``: the NPU variant's ``.tflite`` and, when Vela is installed, its compiled file and
report beside it.

The variant (``tsptq.intmodel.lower.lower(qm, npu=True)``, docs/integer-semantics.md "The NPU variant") makes every
multiply-accumulate op a TFLite builtin that Vela maps to an Ethos-U55 (FULLY_CONNECTED, 16x8 where a two-scale
code feeds it); LayerNorm, Softmax, GELU, the residual adds and attention x V stay ``TSPTQ_*`` custom ops on the CPU
for now. Files written next to ``out`` (``model.tflite``):

- ``model.tflite``: the variant;
- ``model_vela.tflite``: Vela's compiled file (for TFLite Micro with the Ethos-U driver; the custom ops still need
  kernels there), and Vela's CSVs (``model_summary_*.csv``, ``model_per-layer.csv`` ...);
- ``model_npu.json``: the report (``tsptq.npu.vela.VelaReport.to_json``).

Without Vela only the variant is written, and the result says so.
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


def check_npu_request(target: str, method: str, bits: str, accelerator: str | None = None) -> None:
    """The one-line refusals that need no calibration: an unknown target or accelerator, the stock converter, a bit
    setting other than W8A8."""
    from tsptq.npu.vela import ACCELERATORS
    from tsptq.quant.methods import parse_bits

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


def export_npu(src, out: str | Path, target: str = "ethos-u", accelerator: str | None = None,
               progress: bool = True, run_vela: bool = True, split_pv: bool = True) -> NpuExport:
    """Calibrate, quantize, lower to the NPU variant, write it, and run Vela on it when it is installed.
    ``split_pv=False`` keeps attention x V of a V-2SF probability code as TSPTQ_BMM_2S on the CPU: the file then
    computes the default file's bytes (docs/npu.md)."""
    from tsptq.atomic import write_json_atomic
    from tsptq.intmodel.integer import build
    from tsptq.npu.vela import DEFAULT_ACCELERATOR, compile_report, vela_version, write_outputs
    from tsptq.tflite.writer import export

    check_npu_request(target, src.method, src.bits, accelerator)
    src.validate()
    im, _ = build(src, progress=progress, npu=True, split_pv=split_pv)
    out = Path(out)
    size = export(im, out)
    if not run_vela:
        return NpuExport(out, size, None, [out], "Vela not run")
    if vela_version() is None:
        return NpuExport(out, size, None, [out], "Vela (ethos-u-vela) is not installed: no compiled file "
                                                 "(pip install -e '.[npu]')")
    report = compile_report(out, accelerator or DEFAULT_ACCELERATOR)
    written = [out] + write_outputs(report, out.parent)
    js = out.parent / f"{out.stem}_npu.json"
    write_json_atomic(js, report.to_json())
    return NpuExport(out, size, report, written + [js])
