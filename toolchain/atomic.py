"""Atomic file writes: a reader sees the old file or the new one, never half of one, even after an interrupt."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (same suffix, so savez/savefig keep their format),
    then rename it over ``path``. The temporary file is removed if writing fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
