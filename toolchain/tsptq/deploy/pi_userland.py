"""An emulated Raspberry Pi OS userland for the rpi target's LiteRT runtime (``tsptq-deploy --target rpi --runtime
litert`` without a Pi): Debian bookworm's arm64 Python 3.11 (Raspberry Pi OS 64-bit is Debian bookworm) and the aarch64
wheels of ai-edge-litert and numpy from PyPI, run under ``qemu-aarch64-static``. A real Pi needs none of this: there
``pip install ai-edge-litert`` is enough.

    python -m tsptq.deploy.pi_userland          # provision (once; about 90 MB, cached in ~/.cache/tsptq/pi-userland)

Provisioning needs Debian's arm64 package lists (as root, once: ``dpkg --add-architecture arm64 && apt-get update``),
``apt-get download`` (no root needed), ``dpkg-deb``, the aarch64 cross compiler (for the /proc/cpuinfo shim) and pip
with access to PyPI. The folder is built aside and renamed
into place, so an interrupted run leaves nothing half-made.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tsptq.errors import TsptqError

PYTHON = "python3.11"
# Python's runtime closure in bookworm arm64 (what python3.11-minimal and libpython3.11-stdlib need for the
# interpreter, ctypes, zlib, ssl-free pip-less use); libstdc++/libgcc for the LiteRT and numpy extension modules.
DEBS = ("libc6", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libexpat1", "zlib1g",
        "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libstdc++6", "libgcc-s1")
WHEELS = ("ai-edge-litert==2.3.0", "numpy==2.4.6")
# qemu-aarch64 shows programs the host's /proc/cpuinfo, on which LiteRT's ARM CPU detection crashes: an LD_PRELOAD shim
# shows them a Pi 4's instead (targets/rpi/qemu_cpuinfo_shim.c), and QEMU emulates the Pi 4's Cortex-A72.
from tsptq.paths import TARGETS_DIR

RPI_DIR = TARGETS_DIR / "rpi"
SHIM_SOURCE, CPUINFO = RPI_DIR / "qemu_cpuinfo_shim.c", RPI_DIR / "pi4_cpuinfo.txt"
CROSS_CC = "aarch64-linux-gnu-gcc"
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64")


class UserlandError(TsptqError):
    """The emulated Pi userland could not be provisioned (names the missing tool or the failed step)."""


def home() -> Path:
    base = os.environ.get("TSPTQ_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "tsptq") / "pi-userland"


def _recipe() -> str:
    """What the userland is made of: a changed package list, wheel pin, shim or cpuinfo file provisions it anew."""
    import hashlib

    h = hashlib.sha256("\0".join(DEBS + WHEELS + PLATFORMS).encode())
    for f in (SHIM_SOURCE, CPUINFO):
        h.update(f.read_bytes())
    return h.hexdigest()


def is_ready(root: Path | None = None) -> bool:
    root = root or home()
    stamp = root / "recipe"
    try:
        return ((root / "sysroot" / "usr" / "bin" / PYTHON).is_file() and (root / "site" / "ai_edge_litert").is_dir()
                and (root / "cpuinfo_shim.so").is_file() and stamp.is_file() and stamp.read_text() == _recipe())
    except OSError:  # e.g. another user's cache folder (HOME kept by sudo/setpriv): not ready for this user
        return False


def command(root: Path | None = None) -> list[str]:
    """The argv prefix that runs the emulated Pi's Python (ai_edge_litert and numpy importable)."""
    root = root or provision()
    sysroot = root / "sysroot"
    return ["qemu-aarch64-static", "-cpu", "cortex-a72", "-L", str(sysroot), "-E", f"PYTHONPATH={root / 'site'}",
            "-E", "PYTHONNOUSERSITE=1", "-E", f"LD_PRELOAD={root / 'cpuinfo_shim.so'}",
            "-E", f"TSPTQ_CPUINFO={root / 'cpuinfo'}", str(sysroot / "usr" / "bin" / PYTHON)]


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    except OSError as e:
        raise UserlandError(f"{what}: {e}") from None
    if proc.returncode != 0:
        raise UserlandError(f"{what} failed ({proc.returncode}):\n$ {' '.join(cmd)}\n{(proc.stdout + proc.stderr)[-2000:]}")


def provision(root: Path | None = None, quiet: bool = False) -> Path:
    """Build the userland once (cached); returns its folder."""
    root = root or home()
    if is_ready(root):
        return root
    for tool in ("apt-get", "dpkg-deb", "dpkg", "qemu-aarch64-static", CROSS_CC):
        if shutil.which(tool) is None:
            raise UserlandError(f"{tool} not found: the emulated Pi userland needs Debian's apt/dpkg, qemu-user-static "
                                "and the aarch64 cross compiler (apt-get install qemu-user-static "
                                "gcc-aarch64-linux-gnu libc6-dev-arm64-cross)")
    arches = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout.split()
    if "arm64" not in arches:
        raise UserlandError("Debian's arm64 packages are not enabled here; as root run once: "
                            "dpkg --add-architecture arm64 && apt-get update")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".pi-userland-") as tmp:
        tmp = Path(tmp)
        debs, new = tmp / "debs", tmp / "userland"
        debs.mkdir()
        (new / "sysroot").mkdir(parents=True)
        if not quiet:
            print(f"[pi-userland] downloading {len(DEBS)} Debian arm64 packages", file=sys.stderr, flush=True)
        _run(["apt-get", "download", *(f"{p}:arm64" for p in DEBS)], "apt-get download (arm64)", cwd=debs)
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(new / "sysroot")], f"unpacking {deb.name}")
        if not quiet:
            print(f"[pi-userland] installing aarch64 wheels: {', '.join(WHEELS)}", file=sys.stderr, flush=True)
        _run([sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--only-binary=:all:",
              *(a for p in PLATFORMS for a in ("--platform", p)), "--python-version", "3.11", "--implementation",
              "cp", "--target", str(new / "site"), *WHEELS], "pip install (aarch64 wheels)")
        _run([CROSS_CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o",
              str(new / "cpuinfo_shim.so"), str(SHIM_SOURCE), "-ldl"], "building the /proc/cpuinfo shim")
        shutil.copyfile(CPUINFO, new / "cpuinfo")
        (new / "recipe").write_text(_recipe())
        if not is_ready(new):
            raise UserlandError(f"the provisioned userland in {new} lacks {PYTHON} or ai_edge_litert")
        _run(command(new) + ["-c", "import numpy, ai_edge_litert.interpreter"], "importing LiteRT in the emulated Pi")
        try:
            if root.exists():
                shutil.rmtree(root)
            os.replace(new, root)
        except OSError as e:
            if is_ready(root):  # another process provisioned it at the same time
                return root
            raise UserlandError(f"cannot move the userland into {root}: {e}") from None
    return root


def main(argv=None) -> int:
    import argparse

    argparse.ArgumentParser(prog="python -m tsptq.deploy.pi_userland", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    try:
        print(provision())
    except TsptqError as e:
        print(f"pi_userland: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
