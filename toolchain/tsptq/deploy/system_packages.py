"""The Debian packages the README's commands need, installed before they run (``make demo`` / ``make test`` and
``.ci/run`` all come through here, via ``python3 -m tsptq.cli.system_setup``).

What is needed is read from ``tsptq.deploy.doctor.diagnose()``: every finding of the scope's features that is missing
and that a Debian package provides (``Finding.apt``) or a dpkg foreign architecture enables (``Finding.dpkg_arch``).
Pip packages are the Makefile's business (its venv stamps); data sets outside the registries and real-board tools
(``Finding.hardware_only``) are not installed. As root on a machine with apt-get the packages are installed; otherwise
:class:`SystemSetupError` carries the exact command to run. Standard library only: this runs under the system Python
before the venv exists.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass

from tsptq.deploy.doctor import Finding, Report, diagnose
from tsptq.errors import TsptqError

# What each README command exercises. `test` is every feature the report knows (all targets, fuzzing, the Arm SIMD
# kernels, the data sets, ...); `demo` is the accuracy table in the C engine and the two boards it deploys to.
SCOPES = {"demo": ("make", "C runtime", "rpi", "mps2-an386"), "test": None}


class SystemSetupError(TsptqError):
    """Debian packages are missing and cannot be installed here (not root, no apt-get) or did not install."""


@dataclass(frozen=True)
class Plan:
    scope: str
    missing: tuple[Finding, ...]   # what the scope lacks that Debian provides
    packages: tuple[str, ...]      # apt-get install these
    architectures: tuple[str, ...]  # dpkg --add-architecture these first

    @property
    def empty(self) -> bool:
        return not self.packages and not self.architectures


def plan(scope: str, report: Report | None = None) -> Plan:
    if scope not in SCOPES:
        raise SystemSetupError(f"unknown scope {scope!r}: choose {' or '.join(SCOPES)}")
    report = report or diagnose()
    names = SCOPES[scope]
    features = [ft for ft in report.features if names is None or ft.name in names]
    missing = {}
    for ft in features:
        for f in report.of(ft):
            if not f.ok and not f.hardware_only and (f.apt or f.dpkg_arch):
                missing[f.what] = f
    # a finding whose package depends on another missing one (the libFuzzer runtime of the clang to come) waits for
    # the next round, when its package can be named
    missing = {w: f for w, f in missing.items() if f.depends_on not in missing}
    found = tuple(missing.values())
    packages = tuple(dict.fromkeys(p for f in found for p in f.apt))
    arches = tuple(dict.fromkeys(f.dpkg_arch for f in found if f.dpkg_arch))
    return Plan(scope, found, packages, arches)


def commands(p: Plan) -> list[list[str]]:
    """The commands that install the plan, in order (apt-get update after any new architecture, and always before
    installing: a fresh machine's package lists are empty)."""
    cmds = [["dpkg", "--add-architecture", a] for a in p.architectures]
    if not p.empty:
        cmds.append(["apt-get", "update", "-qq"])
    if p.packages:
        cmds.append(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *p.packages])
    return cmds


def command_line(p: Plan) -> str:
    """The plan as one shell line a user can paste (as root)."""
    return " && ".join(shlex.join(c) for c in commands(p))


def _can_install() -> str | None:
    """Why this process cannot install Debian packages, or None when it can."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return "this machine has no apt-get (not Debian or Ubuntu)"
    if os.geteuid() != 0:
        return "installing them needs root"
    return None


def ensure(scope: str, mode: str = "install", run=subprocess.run, log=print) -> Plan:
    """Make the scope's Debian packages present. ``mode``: ``install`` (as root with apt-get), ``check`` (never
    install: fail with the command when something is missing). Returns the plan that was carried out (empty when
    nothing was missing); raises :class:`SystemSetupError` with the exact command otherwise."""
    if mode not in ("install", "check"):
        raise SystemSetupError(f"unknown mode {mode!r}: choose install or check")
    p = plan(scope)
    if p.empty:
        return p
    done = _install(scope, p, mode, run, log)
    left = plan(scope)
    if not left.empty and {f.what for f in left.missing}.isdisjoint(f.what for f in p.missing):
        # what could only be named once the first round was in (see plan): a second round
        more = _install(scope, left, mode, run, log)
        done = Plan(scope, done.missing + more.missing, done.packages + more.packages,
                    done.architectures + more.architectures)
        left = plan(scope)
    if not left.empty:
        raise SystemSetupError(f"after installing {' '.join(done.packages)}, make {scope} still lacks "
                               f"{', '.join(f.what for f in left.missing)}")
    return done


def _install(scope: str, p: Plan, mode: str, run, log) -> Plan:
    what = ", ".join(f.what for f in p.missing)
    why = "check only" if mode == "check" else _can_install()
    if why is not None:
        hint = ("" if shutil.which("apt-get") else
                f"install the equivalents with your package manager (Debian names: {' '.join(p.packages)}), or ")
        raise SystemSetupError(f"make {scope} needs {what} ({why}); {hint}as root run: {command_line(p)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in commands(p):
        log(f"[system] {shlex.join(cmd)}")
        proc = run(cmd, env=env)
        if proc.returncode != 0:
            raise SystemSetupError(f"`{shlex.join(cmd)}` failed with exit status {proc.returncode} while installing "
                                   f"what make {scope} needs ({what})")
    return p
