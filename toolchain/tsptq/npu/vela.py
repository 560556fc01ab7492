"""Run Arm's Vela compiler (``ethos-u-vela``, the ``npu`` extra) on a .tflite file and report what it put on the NPU.

``compile_report(path)`` runs ``python -m ethosu.vela`` in a fresh temporary directory, for an accelerator
(``--accelerator-config``, default ethos-u55-128) and the system configuration and memory mode of Vela's own
``Arm/vela.ini`` that fit a Corstone-300 class board (Ethos-U55 next to a Cortex-M55: ``Ethos_U55_High_End_Embedded``,
500 MHz, SRAM for the tensor arena and off-chip flash for the weights; memory mode ``Shared_Sram``, the NPU and the
CPU sharing the SRAM: the pairing Arm's ML evaluation kit uses for Corstone-300). It reads back:

- Vela's summary CSV (``<name>_summary_<system config>.csv``): estimated inference time of the NPU part, SRAM,
  off-chip flash and DRAM used (by what Vela compiled: the constants of the ops left to the CPU stay in the file);
- the compiled file (``<name>_vela.tflite``): every part Vela compiled is one ``ethos-u`` custom op, every op it left
  to the CPU stays as it was. The ops on the CPU are therefore the compiled file's other ops, the ops on the NPU the
  input's ops less those, and the CPU<->NPU switches the changes between the two along the execution order;
- Vela's warnings (why each op stays on the CPU: ``Warning (supported operators) operator: X, ofm: 'y'`` then
  ``Reason: ...``).

MACs are counted by ``tsptq.npu.graph_ops`` on both files, since Vela counts only the MACs it compiles: the CPU's
MACs are those of the compiled file's non-``ethos-u`` ops, the NPU's the rest of the input's.

Nothing is left behind: Vela writes into the temporary directory, which is removed; ``write_outputs`` copies the
compiled file (and Vela's CSVs) out atomically.
"""
from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tsptq.errors import TsptqError
from tsptq.npu.graph_ops import ETHOS_U_OP, count_types, graph_ops, parse_model, read_model

VELA_PACKAGE = "ethos-u-vela"
VELA_VERSION = "5.2.0"  # the pin of pyproject.toml's `npu` extra
INSTALL_HINT = f"pip install -e '.[npu]' (or pip install {VELA_PACKAGE}=={VELA_VERSION})"
# Vela's --accelerator-config choices (ethos-u-vela 5.2.0)
ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
                "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")
DEFAULT_ACCELERATOR = "ethos-u55-128"  # the Ethos-U55 of Corstone-300 (MPS3 AN547/AN552)
VELA_CONFIG = "Arm/vela.ini"  # the configuration file inside the wheel (vela --list-config-files)
# System configuration and memory mode of Arm/vela.ini per NPU family: the Corstone-300 pairing for the U55 (the one
# Arm's ML evaluation kit uses), the corresponding high-end ones for the U65 and U85.
SYSTEM_CONFIGS = {"ethos-u55": ("Ethos_U55_High_End_Embedded", "Shared_Sram"),
                  "ethos-u65": ("Ethos_U65_High_End", "Dedicated_Sram"),
                  "ethos-u85": ("Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram")}
TIMEOUT_S = 600


class VelaError(TsptqError):
    """Vela is not installed, or it failed on the file (the message is its last error line)."""


@dataclass
class VelaReport:
    """What Vela made of one .tflite file. Ops are counted by type in the input file; MACs by ``graph_ops``."""
    file: str
    accelerator: str
    system_config: str
    memory_mode: str
    vela_version: str
    ops_total: int
    ops_npu: dict[str, int]  # op type -> how many of the input's ops Vela compiled for the NPU
    ops_cpu: dict[str, int]  # op type -> how many stay on the CPU
    macs_total: int
    macs_npu: int
    npu_parts: int  # `ethos-u` ops in the compiled file: separately compiled NPU parts of the graph
    switches: int  # changes between the NPU and the CPU along the compiled file's execution order
    inference_time_s: float  # Vela's estimate for the NPU part only (the CPU ops are not timed)
    core_clock_hz: float
    sram_bytes: int
    off_chip_flash_bytes: int
    dram_bytes: int  # used by the U65/U85 system configurations (weights and arena in DRAM); 0 on a U55 here
    vela_macs: int  # Vela's own count (nn_macs) of what it compiled
    cpu_reasons: dict[str, list[str]] = field(default_factory=dict)  # Vela's reasons -> the outputs of those ops
    compiled: bytes = field(default=b"", repr=False)  # the *_vela.tflite file
    vela_files: dict[str, bytes] = field(default_factory=dict, repr=False)  # Vela's CSVs, by name less "<stem>_"

    @property
    def ops_on_npu(self) -> int:
        return sum(self.ops_npu.values())

    @property
    def ops_on_cpu(self) -> int:
        return sum(self.ops_cpu.values())

    @property
    def npu_mac_fraction(self) -> float:
        return self.macs_npu / self.macs_total if self.macs_total else 0.0

    def to_json(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("compiled", "vela_files")}
        d.update(ops_on_npu=self.ops_on_npu, ops_on_cpu=self.ops_on_cpu, npu_mac_fraction=self.npu_mac_fraction)
        return d


def vela_version() -> str | None:
    """The installed ethos-u-vela's version; None when it is not importable."""
    if importlib.util.find_spec("ethosu") is None or importlib.util.find_spec("ethosu.vela") is None:
        return None
    try:
        return importlib.metadata.version(VELA_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def require_vela() -> str:
    version = vela_version()
    if version is None:
        raise VelaError(f"Vela ({VELA_PACKAGE}) is not installed: {INSTALL_HINT}")
    return version


def system_config_for(accelerator: str) -> tuple[str, str]:
    """(system config, memory mode) of Arm/vela.ini for an accelerator configuration."""
    if accelerator not in ACCELERATORS:
        raise VelaError(f"unknown accelerator {accelerator!r}; Vela knows {', '.join(ACCELERATORS)}")
    return SYSTEM_CONFIGS[accelerator.rsplit("-", 1)[0]]


def vela_command(network: Path, out_dir: Path, accelerator: str, system_config: str, memory_mode: str) -> list[str]:
    return [sys.executable, "-m", "ethosu.vela", str(network), "--output-dir", str(out_dir),
            "--accelerator-config", accelerator, "--config", VELA_CONFIG, "--system-config", system_config,
            "--memory-mode", memory_mode, "--verbose-performance"]


_ERROR = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception)\b|error\b)", re.IGNORECASE)


def last_error_line(*texts: str) -> str:
    """Vela's last error: the last line of a traceback, else the last line that starts with "error", in the first
    text that has one (stderr, then stdout); else the last line of the first text that is not empty."""
    for text in texts:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        for ln in reversed(lines):
            if _ERROR.match(ln):
                return ln
    for text in texts:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if lines:
            return lines[-1]
    return "no output"


_WARNING = re.compile(r"Warning \(supported operators\) operator: (\S+), ofm: '([^']*)'\s*\nReason: ([^\n]*)")


def cpu_reasons(log: str, types: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Vela's reasons for leaving ops on the CPU: ``"OP: reason"`` -> the output tensors of those ops. ``types``
    (output tensor -> op type) names a CUSTOM op by its code."""
    out: dict[str, list[str]] = {}
    for op, ofm, reason in _WARNING.findall(log):
        if op == "CUSTOM" and types and ofm in types:
            op = f"CUSTOM {types[ofm]}"
        out.setdefault(f"{op}: {reason.strip()}", []).append(ofm)
    return out


def _summary(out_dir: Path, stem: str) -> dict[str, str]:
    found = sorted(out_dir.glob(f"{stem}_summary_*.csv"))
    if not found:
        raise VelaError(f"Vela wrote no summary CSV ({stem}_summary_*.csv) into its output directory")
    with found[0].open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise VelaError(f"Vela's summary CSV {found[0].name} is empty")
    return rows[0]


def _switches(targets: list[str]) -> int:
    return sum(a != b for a, b in zip(targets, targets[1:]))


def compile_report(path: str | Path, accelerator: str = DEFAULT_ACCELERATOR, system_config: str | None = None,
                   memory_mode: str | None = None, timeout: float = TIMEOUT_S) -> VelaReport:
    """Run Vela on ``path`` and return its report (with the compiled file's bytes in ``compiled``).

    ``ModelFileError`` when the file cannot be read or is not a TFLite file; ``VelaError`` when Vela is missing or
    fails."""
    path = Path(path)
    default_config, default_mode = system_config_for(accelerator)
    system_config, memory_mode = system_config or default_config, memory_mode or default_mode
    data, source = read_model(path)  # a missing or non-TFLite file is refused before Vela is looked for
    version = require_vela()
    ops_in = graph_ops(source, str(path))
    # Vela names its outputs after the input's stem: give it a plain name in its own directory
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "model"
    with tempfile.TemporaryDirectory(prefix="tsptq-vela-") as tmp:
        tmp = Path(tmp)
        network, out_dir = tmp / f"{stem}.tflite", tmp / "out"
        network.write_bytes(data)
        cmd = vela_command(network, out_dir, accelerator, system_config, memory_mode)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VelaError(f"{path}: Vela did not finish within {timeout:.0f} s") from None
        log = proc.stdout + "\n" + proc.stderr
        if proc.returncode != 0:
            raise VelaError(f"{path}: Vela failed: {last_error_line(proc.stderr, proc.stdout)}")
        compiled_path = out_dir / f"{stem}_vela.tflite"
        if not compiled_path.is_file():
            raise VelaError(f"{path}: Vela wrote no compiled file ({compiled_path.name}): "
                            f"{last_error_line(proc.stderr, proc.stdout)}")
        compiled = compiled_path.read_bytes()
        summary = _summary(out_dir, stem)
        vela_files = {p.name[len(stem) + 1:]: p.read_bytes() for p in sorted(out_dir.glob(f"{stem}_*.csv"))}

    ops_out = graph_ops(parse_model(compiled, f"{path} (compiled by Vela)"), f"{path} (compiled by Vela)")
    cpu_ops = [o for o in ops_out if o.type != ETHOS_U_OP]
    ops_cpu = count_types(cpu_ops)
    all_types = count_types(ops_in)
    ops_npu = {k: n - ops_cpu.get(k, 0) for k, n in all_types.items() if n - ops_cpu.get(k, 0) > 0}
    macs_total = sum(o.macs for o in ops_in)
    macs_cpu = sum(o.macs for o in cpu_ops)
    kib = 1024.0
    return VelaReport(
        file=str(path), accelerator=accelerator, system_config=system_config, memory_mode=memory_mode,
        vela_version=version, ops_total=len(ops_in), ops_npu=ops_npu, ops_cpu=ops_cpu, macs_total=macs_total,
        macs_npu=macs_total - macs_cpu, npu_parts=sum(o.type == ETHOS_U_OP for o in ops_out),
        switches=_switches(["npu" if o.type == ETHOS_U_OP else "cpu" for o in ops_out]),
        inference_time_s=float(summary.get("inference_time", 0.0)),
        core_clock_hz=float(summary.get("core_clock", 0.0)),
        sram_bytes=round(float(summary.get("sram_memory_used", 0.0)) * kib),
        off_chip_flash_bytes=round(float(summary.get("off_chip_flash_memory_used", 0.0)) * kib),
        dram_bytes=round(float(summary.get("dram_memory_used", 0.0)) * kib),
        vela_macs=int(float(summary.get("nn_macs", 0))),
        cpu_reasons=cpu_reasons(log, {o.output: o.type for o in ops_in}), compiled=compiled, vela_files=vela_files)


def compiled_name(path: str | Path) -> str:
    return f"{Path(path).stem}_vela.tflite"


def output_files(report: VelaReport, out_dir: Path) -> list[tuple[Path, bytes]]:
    """Vela's CSVs and, last, its compiled file, as (path in ``out_dir``, bytes)."""
    stem = Path(report.file).stem
    items = [(out_dir / f"{stem}_{suffix}", data) for suffix, data in report.vela_files.items()]
    return items + [(out_dir / compiled_name(report.file), report.compiled)]


def write_outputs(report: VelaReport, out_dir: str | Path) -> list[Path]:
    """Write the compiled file and Vela's CSVs into ``out_dir`` (created), all or none (``atomic_write_group``);
    the compiled file is written last. Returns their paths."""
    from tsptq.atomic import atomic_write_group, make_dir

    items = output_files(report, make_dir(out_dir))
    atomic_write_group((p, (lambda tmp, d=d: Path(tmp).write_bytes(d))) for p, d in items)
    return [p for p, _ in items]


def _types(ops: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def format_report(r: VelaReport, reasons: int = 10) -> str:
    """The report as a short table (and Vela's most frequent reasons for the CPU ops)."""
    ms = r.inference_time_s * 1e3
    pin = "" if r.vela_version == VELA_VERSION else f" (tsptq's npu extra pins {VELA_VERSION})"
    rows = [
        ("file", r.file),
        ("accelerator", f"{r.accelerator}, {r.system_config} ({r.core_clock_hz / 1e6:.0f} MHz), {r.memory_mode}; "
                        f"Vela {r.vela_version}{pin}"),
        ("ops on the NPU", f"{r.ops_on_npu} of {r.ops_total} ({_types(r.ops_npu)})"),
        ("ops on the CPU", f"{r.ops_on_cpu} of {r.ops_total} ({_types(r.ops_cpu)})"),
        ("MACs on the NPU", f"{r.macs_npu:,} of {r.macs_total:,} ({100 * r.npu_mac_fraction:.1f}%)"),
        ("NPU parts", f"{r.npu_parts} (CPU<->NPU switches: {r.switches})"),
        ("estimated time", f"{ms:.3f} ms on the NPU (Vela's estimate; the CPU ops are not included)"),
        ("SRAM", f"{r.sram_bytes / 1024:,.1f} KiB"),
        ("off-chip flash", f"{r.off_chip_flash_bytes / 1024:,.1f} KiB"),
    ] + ([("DRAM", f"{r.dram_bytes / 1024:,.1f} KiB")] if r.dram_bytes else [])
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    if r.cpu_reasons:
        lines.append("why ops stay on the CPU (Vela):")
        ranked = sorted(r.cpu_reasons.items(), key=lambda kv: -len(kv[1]))
        for reason, outs in ranked[:reasons]:
            lines.append(f"  {len(outs):>4} x {reason}")
        if len(ranked) > reasons:
            lines.append(f"  ... ({len(ranked) - reasons} more reasons)")
    return "\n".join(lines)
