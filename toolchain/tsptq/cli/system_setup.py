"""``python3 -m tsptq.cli.system_setup --for test``: install the Debian packages a README command needs.

Run by ``make demo`` and ``make test`` (and so by ``.ci/run``) with the system Python and ``PYTHONPATH=toolchain``,
before the venv exists: standard library only. As root with apt-get it installs what is missing; otherwise it stops
at once (exit status 2) with the exact command to run. What is needed comes from ``tsptq doctor``'s findings
(tsptq.deploy.system_packages).
"""
from __future__ import annotations

import argparse
import sys

from tsptq.deploy.system_packages import SCOPES, SystemSetupError, ensure


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python3 -m tsptq.cli.system_setup", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--for", dest="scope", choices=list(SCOPES), required=True,
                    help="demo: the C runtime and the rpi and mps2-an386 boards; test: everything the tests use "
                         "(every target, fuzzing, the Arm SIMD kernels, Fashion-MNIST, the arm64 package lists)")
    ap.add_argument("--mode", choices=("install", "check", "skip"), default="install",
                    help="install (default: as root with apt-get, else stop with the command), check (never "
                         "install, stop with the command when something is missing), skip (do nothing: the tests "
                         "that need a missing package then skip, and say so)")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.mode == "skip":
        print(f"[system] not checking the Debian packages make {args.scope} needs (SYSTEM_PACKAGES=skip): tests and "
              "demo steps that need a missing one will skip or fail", file=sys.stderr)
        return 0
    try:
        done = ensure(args.scope, args.mode, log=lambda line: print(line, file=sys.stderr, flush=True))
    except SystemSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if done.empty:
        print(f"[system] every Debian package make {args.scope} needs is present", file=sys.stderr)
    else:
        print(f"[system] installed {' '.join(done.packages) or 'nothing'}"
              + (f"; added dpkg architecture {' '.join(done.architectures)}" if done.architectures else ""),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
