"""``--runtime litert`` on the Linux targets (host, rpi): the board runs the model in stock LiteRT with the tsptq
delegate instead of the tsptq C agent, behind the same serial protocol, so deployment and report are the same.

The device program is a folder of three files (what ``--ssh`` copies to the Pi):
``litert_agent.py`` (targets/common/), ``wire.py`` (the protocol's framing, toolchain/tsptq/deploy/wire.py) and
``libtsptq_delegate.so`` built with the target's compiler and CPU flags (aarch64, Cortex-A72, NEON for the Pi).
Here the Pi's Python is emulated (tsptq.deploy.pi_userland); on a real Pi it is the Pi's ``python3`` with
``pip install ai-edge-litert``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tsptq.deploy.targets import ROOT, TARGETS_DIR, Target, TargetError, cache_dir, compile_program

AGENT = TARGETS_DIR / "common" / "litert_agent.py"
WIRE = ROOT / "toolchain" / "tsptq" / "deploy" / "wire.py"
DELEGATE_LIB = "libtsptq_delegate.so"
KERNELS = ("reference", "optimized")


def build_bundle(target: Target) -> Path:
    """The LiteRT device program for ``target``: a cached folder with the agent, wire.py and the delegate library."""
    if target.kind != "posix":
        raise TargetError(f"--runtime litert needs a Linux target (host, rpi); {target.name} is {target.kind}")
    core = sorted((ROOT / "runtime_c" / "src").rglob("*.c"))
    lib = compile_program(target, core + [ROOT / "runtime_c" / "delegate" / "delegate.c"], DELEGATE_LIB,
                          ("-I", str(ROOT / "runtime_c" / "delegate")), shared=True)
    h = hashlib.sha256(lib.read_bytes() + AGENT.read_bytes() + WIRE.read_bytes()).hexdigest()[:20]
    bundle = cache_dir() / f"{target.name}-litert-{h}"
    if bundle.is_dir():
        return bundle
    bundle.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=bundle.parent, prefix=".litert-"))
    try:  # built aside, renamed into place: never a half-copied bundle
        for src in (AGENT, WIRE, lib):
            shutil.copy2(src, tmp / src.name)
        os.replace(tmp, bundle)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not bundle.is_dir():  # (another process may have renamed its copy first)
            raise
    return bundle


def agent_args(bundle: Path | str, kernels: str, threads: int = 1) -> list[str]:
    if kernels not in KERNELS:
        raise TargetError(f"--litert-kernels must be one of {', '.join(KERNELS)}, not {kernels!r}")
    return [f"{bundle}/litert_agent.py", "--delegate", f"{bundle}/{DELEGATE_LIB}", "--kernels", kernels,
            "--threads", str(threads)]


def local_command(target: Target, bundle: Path, kernels: str) -> list[str]:
    """How to start the LiteRT agent here: this Python for ``host``; the emulated Pi userland for ``rpi``."""
    if not target.runner:
        return [sys.executable, *agent_args(bundle, kernels)]
    if target.runner[0] == "qemu-aarch64-static":
        from tsptq.deploy.pi_userland import command, provision

        return [*command(provision()), *agent_args(bundle, kernels)]
    raise TargetError(f"target {target.name}: no Python to run the LiteRT agent under {target.runner[0]}")


def remote_command(target: Target, kernels: str) -> str:
    """The command that starts the agent on a real board over SSH (``{dir}``: where its files were copied)."""
    python = target.extra.get("litert", {}).get("python", "python3")
    return " ".join([python, *agent_args("{dir}", kernels)])


def bundle_files(bundle: Path) -> list[Path]:
    return [bundle / AGENT.name, bundle / WIRE.name, bundle / DELEGATE_LIB]
