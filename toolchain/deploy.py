"""``tsptq-deploy``: take a ViT to a board (export, C runtime, flashing and serial profiling).

The board path (targets, serial protocol, C runtime) is not built yet: this entry point exists so the
command name is stable, and it says so instead of pretending.
"""
from __future__ import annotations

import argparse
import sys

TARGETS = ("host", "rpi", "mps2-an386")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tsptq-deploy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, choices=TARGETS, help="board to deploy to")
    ap.add_argument("--model", default="cifar10-vit")
    ap.add_argument("--method", default="tsptq")
    ap.parse_args(argv)
    print("tsptq-deploy: error: deployment to boards is not available in this version yet; "
          "`tsptq eval` measures the quantized model on the host", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
