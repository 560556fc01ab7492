"""Where the checkout's non-Python parts are: the C runtime, the target descriptions, the bundled weights and images.

tsptq runs from a clone (``pip install -e .``): the package is ``toolchain/tsptq/`` and these folders sit beside
``toolchain/`` at the repository root.
"""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_DIR = REPO_ROOT / "runtime_c"
TARGETS_DIR = REPO_ROOT / "targets"
CALIB_DIR = REPO_ROOT / "calib"
MODELS_DIR = CALIB_DIR / "models"      # the reference models' weights and records
SAMPLE_DATA_DIR = CALIB_DIR / "data"   # the bundled sample images, the ImageNet-1k synset list
