"""Build the C runtime (``runtime_c/``) into a shared library, cached by the hash of its sources and flags.

``build_library(variant)`` compiles every ``runtime_c/src/**/*.c`` (or the given sources, relative to
``runtime_c/``) with the variant's flags into ``<cache>/<hash>/<name>`` and returns that path; a second call with the
same sources and flags returns the cached file without running the compiler. The cache is
``$TSPTQ_CACHE/build`` (default ``~/.cache/tsptq/build``); each library is written under a temporary name and renamed
into place, so concurrent builds and interrupted ones never leave a half-written file behind.

Variants (``VARIANTS``): ``reference`` (portable C only), ``avx2`` (x86 AVX2), ``avx512vnni`` (x86 AVX-512 VNNI
matrix products, AVX2 elsewhere), ``amx`` (the matrix products on Intel AMX-INT8 tiles where the CPU and the OS
allow them at run time, else the ``avx512vnni`` code), ``native`` (whatever the host CPU offers, NEON included on
ARM), ``sanitize`` / ``sanitize-avx2`` / ``sanitize-avx512vnni`` / ``sanitize-amx`` (ASan + UBSan, aborting on the
first report; a process that loads them needs ``sanitizer_preload()`` in ``LD_PRELOAD``); every variant has the
thread pool (``THREAD_FLAGS``: ``tsptq_set_threads``, ``CModel(threads=N)``). ``amx_usable()`` says
whether this machine runs the AMX code (``have_avx512vnni()``: the AVX-512 VNNI code, which ``amx`` needs too).
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tsptq.errors import TsptqError

from tsptq.paths import RUNTIME_DIR

# The Arm SIMD paths checked under QEMU user mode (tests/test_c_kernels.py, tests/test_kernel_matrix.py; listed by
# `tsptq doctor`): path -> (cross compiler, its flags, the QEMU that runs it, the dot.h macro the path defines,
# Debian packages). ARMv7-A without NEON has the DSP extension's 32-bit SIMD (SXTAB16, SMLAD): the instructions of the
# Cortex-M4/M7 path, run in user mode (QEMU's Cortex-M models have no Linux user mode).
ARM_SIMD_BUILDS = {
    "neon": ("aarch64-linux-gnu-gcc", [], "qemu-aarch64-static", "TQ_SIMD_NEON",
             "gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static"),
    "dsp": ("arm-linux-gnueabihf-gcc", ["-march=armv7-a", "-mfpu=vfpv3-d16"], "qemu-arm-static", "TQ_SIMD_DSP",
            "gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static"),
    # the DSP kernels' C bodies, which run where their inline assembly cannot (-O0, frame pointers, A32 mode)
    "dsp-c": ("arm-linux-gnueabihf-gcc", ["-march=armv7-a", "-mfpu=vfpv3-d16", "-DTSPTQ_NO_INLINE_ASM"],
              "qemu-arm-static", "TQ_SIMD_DSP", "gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static"),
}
BASE_FLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC"]
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
AVX512VNNI_FLAGS = ["-mavx2", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni",
                    "-DTSPTQ_USE_AVX512VNNI"]
AMX_FLAGS = AVX512VNNI_FLAGS + ["-mamx-tile", "-mamx-int8", "-DTSPTQ_USE_AMX"]
# Every variant is a build for this (Linux/POSIX) host: the static thread pool of tsptq_set_threads is in
# (runtime_c/src/threads.c; bare-metal builds leave TSPTQ_THREADS at 0 and never see pthreads). build_library adds
# these after the variant's own flags.
THREAD_FLAGS = ["-pthread", "-DTSPTQ_THREADS=1"]
# The variants' own flags: the SIMD path (and the sanitizers).
VARIANTS: dict[str, list[str]] = {
    "reference": ["-DTSPTQ_REFERENCE_ONLY"],
    "avx2": ["-mavx2", "-DTSPTQ_USE_AVX2"],
    "avx512vnni": AVX512VNNI_FLAGS,
    "amx": AMX_FLAGS,
    "native": ["-march=native"],
    "sanitize": SANITIZE_FLAGS + ["-DTSPTQ_REFERENCE_ONLY"],
    "sanitize-avx2": SANITIZE_FLAGS + ["-mavx2", "-DTSPTQ_USE_AVX2"],
    "sanitize-avx512vnni": SANITIZE_FLAGS + AVX512VNNI_FLAGS,
    "sanitize-amx": SANITIZE_FLAGS + AMX_FLAGS,
}
AVX512VNNI_CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni")
AMX_CPU_FLAGS = ("amx_tile", "amx_int8")


class BuildError(TsptqError):
    """The C compiler is missing or rejected the runtime sources (the message carries its output)."""


def compiler() -> str:
    cc = os.environ.get("CC", "cc")
    path = shutil.which(cc)
    if path is None:
        raise BuildError(f"no C compiler: {cc!r} is not on PATH (set CC, or install gcc/clang)")
    return path


def have_compiler() -> bool:
    """Whether a C compiler is available (tests skip the C parts without one)."""
    try:
        compiler()
        return True
    except BuildError:
        return False


def runtime_sources(sources: list[str] | None = None) -> list[Path]:
    """The given sources (relative to runtime_c/) or every .c file under runtime_c/src, sorted."""
    if sources is None:
        found = sorted((RUNTIME_DIR / "src").rglob("*.c"))
    else:
        found = [RUNTIME_DIR / s for s in sources]
    missing = [str(p) for p in found if not p.is_file()]
    if missing:
        raise BuildError(f"missing runtime sources: {', '.join(missing)}")
    if not found:
        raise BuildError(f"no C sources under {RUNTIME_DIR / 'src'}")
    return found


def cache_root() -> Path:
    base = os.environ.get("TSPTQ_CACHE")
    return Path(base) / "build" if base else Path.home() / ".cache" / "tsptq" / "build"


def _digest(cc: str, flags: list[str], sources: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(cc.encode() + b"\0" + "\0".join(flags).encode() + b"\0")
    # every header too: a change in kernels.h or fixedpoint.h must rebuild
    headers = sorted(RUNTIME_DIR.rglob("*.h"))
    for p in sorted(set(sources)) + headers:
        h.update(str(p.relative_to(RUNTIME_DIR)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:24]


def build_library(variant: str = "reference", extra_flags: list[str] | None = None,
                  sources: list[str] | None = None, name: str = "libtsptq_kernels.so") -> Path:
    """Compile the runtime into a cached shared library and return its path.

    variant: a key of VARIANTS (its flags come after BASE_FLAGS, then THREAD_FLAGS); extra_flags: appended (e.g.
    ``-DNDEBUG``);
    sources: .c files relative to runtime_c/ (default: all of runtime_c/src/**/*.c).
    """
    if variant not in VARIANTS:
        raise BuildError(f"unknown build variant {variant!r} (known: {', '.join(VARIANTS)})")
    cc = compiler()
    srcs = runtime_sources(sources)
    flags = BASE_FLAGS + VARIANTS[variant] + THREAD_FLAGS + list(extra_flags or [])
    out_dir = cache_root() / f"{variant}-{_digest(cc, flags, srcs)}"
    target = out_dir / name
    if target.is_file():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    cmd = [cc, *flags, "-shared", "-I", str(RUNTIME_DIR / "src"), "-o", tmp, *map(str, srcs), "-lm"]
    if (RUNTIME_DIR / "include").is_dir():
        cmd[cmd.index("-o"):cmd.index("-o")] = ["-I", str(RUNTIME_DIR / "include")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"compiling the C runtime ({variant}) failed:\n$ {' '.join(cmd)}\n"
                             f"{proc.stdout}{proc.stderr}")
        os.replace(tmp, target)
    except OSError as e:
        raise BuildError(f"compiling the C runtime ({variant}) failed: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def cpu_has(feature: str) -> bool:
    """Whether /proc/cpuinfo lists a CPU flag (Linux; False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return feature in line.split(":", 1)[1].split()
    except OSError:
        pass
    return False


def have_avx512vnni() -> bool:
    """Whether the CPU runs the ``avx512vnni`` build (and the AVX-512 code of ``amx``)."""
    return all(cpu_has(f) for f in AVX512VNNI_CPU_FLAGS)


_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA, _SYS_ARCH_PRCTL_X86_64 = 0x1023, 18, 158


@functools.lru_cache(maxsize=None)
def amx_usable() -> tuple[bool, str]:
    """Whether the ``amx`` build runs its AMX code here, and if not, why: the CPU must list AMX-TILE and AMX-INT8 (and
    AVX-512 VNNI, the rest of that build) and Linux must grant the tile data state to this process, the request the C
    runtime makes itself (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); granting it here changes nothing for
    Python). Where it does not, the ``amx`` build runs its AVX-512 VNNI code (if the CPU has that)."""
    import ctypes
    import platform

    missing = [f for f in AMX_CPU_FLAGS + AVX512VNNI_CPU_FLAGS if not cpu_has(f)]
    if missing:
        return False, f"the CPU lacks {', '.join(missing)} (/proc/cpuinfo)"
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False, f"the tile state request is Linux x86-64 only ({platform.system()} {platform.machine()})"
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.syscall(ctypes.c_long(_SYS_ARCH_PRCTL_X86_64), ctypes.c_long(_ARCH_REQ_XCOMP_PERM),
                      ctypes.c_long(_XFEATURE_XTILEDATA))
    if rc != 0:
        return False, f"Linux refused the AMX tile state: arch_prctl(ARCH_REQ_XCOMP_PERM) = {rc}, " \
                      f"{os.strerror(ctypes.get_errno())}"
    why = _compiler_lacks_amx()
    if why:
        return False, why
    return True, "AMX-TILE + AMX-INT8, tile state granted"


@functools.lru_cache(maxsize=None)
def _compiler_lacks_amx() -> str | None:
    """None when the C compiler builds AMX intrinsics (gcc >= 11, clang >= 12), else why not: an older compiler on an
    AMX machine keeps the avx512vnni build instead of failing every build."""
    try:
        cc = compiler()
    except BuildError as e:
        return str(e)
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "amx_probe.c"
        src.write_text("#include <immintrin.h>\nvoid f(void) { _tile_zero(0); _tile_release(); }\n")
        proc = subprocess.run([cc, *AMX_FLAGS, "-c", str(src), "-o", str(Path(d) / "amx_probe.o")],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        return f"{cc} does not build AMX intrinsics ({last})"
    return None


def sanitizer_preload() -> str:
    """The ASan runtime a non-ASan process must LD_PRELOAD before it can dlopen a sanitized library."""
    cc = compiler()
    proc = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = proc.stdout.strip()
    if proc.returncode != 0 or not os.path.isabs(path) or not os.path.exists(path):
        raise BuildError(f"{cc} has no AddressSanitizer runtime (libasan.so): {proc.stdout}{proc.stderr}")
    return os.path.realpath(path)
