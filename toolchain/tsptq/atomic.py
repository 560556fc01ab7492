"""Atomic file writes: a reader sees the old file or the new one, never half of one, even after an interrupt.

Each write goes to a temporary file made by ``tempfile.mkstemp`` in the target's own directory (``O_CREAT|O_EXCL``,
a random name): a file or symlink planted beside the output is never followed or overwritten. ``os.replace`` then
renames it over the target. A target that cannot be written raises ``OutputError`` (a ``TsptqError`` and an
``OSError``) whose message names the target and why, e.g. ``cannot write out/r.json: no directory out``; removing the
temporary file afterwards never hides that error (on a read-only file system the removal fails too).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from tsptq.errors import TsptqError


class OutputError(TsptqError, OSError):
    """An output file or directory that cannot be written; the message names it and says why (``errno``,
    ``strerror`` and ``filename`` are the underlying error's, ``filename`` being the output's path)."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno N] ...: filename"
        return str(self.args[0]) if self.args else ""


def _why(path: Path, e: OSError) -> str:
    parent = path.parent
    if e.errno == errno.ENOTDIR:
        for p in (path, *path.parents):  # the ancestor that is a file, not a directory
            if p.exists() and not p.is_dir():
                return f"{p} is a file, not a directory"
    if e.errno == errno.ENOENT and not os.path.lexists(parent):
        return f"no directory {parent}"
    if e.errno == errno.EISDIR or (e.errno in (errno.EEXIST, errno.ENOTEMPTY) and path.is_dir()):
        return "it is a directory"
    return e.strerror.lower() if e.strerror else str(e)


def output_error(path: str | Path, e: OSError, what: str = "cannot write") -> OutputError:
    """An ``OutputError`` ``"<what> <path>: <why>"`` for the ``OSError`` ``e`` (its errno and filename kept)."""
    path = Path(path)
    err = OutputError(f"{what} {path}: {_why(path, e)}")
    err.errno, err.strerror, err.filename = e.errno, e.strerror, str(path)
    return err


def _mode() -> int:
    """The mode ``open()`` gives a new file (0o666 less the umask); mkstemp's files are 0o600."""
    try:
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _temp_beside(path: Path, mode: int | None = None) -> Path:
    """A new empty file in ``path``'s directory with a random name that keeps ``path``'s suffix (savez and savefig
    choose their format by it): ``.<name>.<random>.tmp<suffix>``."""
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    except OSError as e:
        raise output_error(path, e) from e
    try:
        os.fchmod(fd, _mode() if mode is None else mode)
    except OSError:
        pass  # a file system without modes (FAT): keep what it gives
    finally:
        os.close(fd)
    return Path(name)


def _discard(tmp: Path | None) -> None:
    """Remove a temporary file; its own failure (a read-only file system) must not replace the error being raised."""
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _write(path: Path, tmp: Path, write: Callable[[Path], None]) -> None:
    try:
        write(tmp)
    except OSError as e:
        if e.filename not in (None, str(tmp), tmp):  # about another file (e.g. a source being copied): not ours
            raise
        raise output_error(path, e) from e


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a new temporary file beside ``path`` (same suffix, so savez/savefig keep their
    format), then rename it over ``path``. The temporary file is removed if anything fails. Raises ``OutputError``
    naming ``path`` when it cannot be written (missing or read-only directory, a directory in the way, disk full)."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        _write(path, tmp, write)
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise output_error(path, e) from e
        tmp = None
    finally:
        _discard(tmp)


def write_json_atomic(path: str | Path, obj) -> None:
    """``obj`` as indented JSON at ``path``, written atomically (``atomic_write``)."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))


def _keep_old(path: Path) -> Path | None:
    """A second name for ``path``'s current file (a hard link, or else a copy), so it can be put back; None when
    there is no such file."""
    if not os.path.lexists(path):
        return None
    for _ in range(100):
        old = path.with_name(f".{path.name}.{secrets.token_hex(8)}.old")
        try:
            os.link(path, old, follow_symlinks=False)  # fails (EEXIST) rather than follow anything planted there
            return old
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
                raise output_error(path, e) from e
            break  # no hard links here (FAT, some network file systems): copy instead
    old = _temp_beside(path)
    try:
        shutil.copy2(path, old)
    except OSError as e:
        _discard(old)
        raise output_error(path, e) from e
    return old


def atomic_write_group(items: Iterable[tuple[str | Path, Callable[[Path], None]]]) -> None:
    """Write several files as a group: a failure leaves every one of them as it was.

    Every file is first written to its own temporary file (``atomic_write``'s); then they are renamed over their
    targets in order. If a rename fails, the targets already replaced get their old files back (kept as hard links,
    or copies, taken just before) or are removed when they did not exist, and the error names the file that failed.
    Only a crash between two renames (microseconds) can leave some files new and the others old: put the biggest
    file last (the old files of all but the last one are kept). ``OutputError`` as for ``atomic_write``."""
    items = [(Path(p), write) for p, write in items]
    temps: dict[Path, Path] = {}
    kept: dict[Path, Path | None] = {}
    try:
        for path, write in items:
            temps[path] = _temp_beside(path)
            _write(path, temps[path], write)
        for path, _ in items[:-1]:
            kept[path] = _keep_old(path)
        replaced: list[Path] = []
        try:
            for path, _ in items:
                os.replace(temps[path], path)
                del temps[path]
                replaced.append(path)
        except BaseException as e:  # a failed rename, or an interrupt between two: the old files go back
            lost = _put_back(replaced, kept)
            if not isinstance(e, OSError):
                raise
            err = output_error(path, e)
            if lost:
                err.args = (f"{err}; could not put back the old {', '.join(map(str, lost))}",)
            raise err from e
    finally:
        for tmp in [*temps.values(), *kept.values()]:
            _discard(tmp)


def _put_back(replaced: list[Path], kept: dict[Path, Path | None]) -> list[Path]:
    """Undo the renames of ``replaced`` (latest first); returns the paths that could not be restored."""
    lost = []
    for path in reversed(replaced):
        old = kept.get(path)
        try:
            if old is None:
                os.unlink(path)
            else:
                os.replace(old, path)
                kept[path] = None
        except OSError:
            lost.append(path)
    return lost


def make_dir(path: str | Path) -> Path:
    """``mkdir -p path``; ``OutputError`` naming it when that is impossible (a file in the way, read-only)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if isinstance(e, FileExistsError):  # path itself is a file
            raise OutputError(f"cannot create directory {path}: a file of that name exists") from e
        raise output_error(path, e, "cannot create directory") from e
    return path


def check_writable(path: str | Path, *, directory: bool = False) -> None:
    """Fail early, before hours of work, when ``path`` could not be written later: a file's directory must exist
    and take a new file (probed with a temporary file, removed at once) and ``path`` must not be a directory; a
    directory (``directory=True``) may be missing, but then its nearest existing ancestor must take one."""
    path = Path(path)
    if not directory:
        if path.is_dir():
            raise OutputError(f"cannot write {path}: it is a directory")
        _discard(_temp_beside(path))
        return
    base = path
    while not os.path.lexists(base) and base != base.parent:
        base = base.parent
    if not base.is_dir():
        what = "a file of that name exists" if base == path else f"{base} is a file, not a directory"
        raise OutputError(f"cannot create directory {path}: {what}")
    try:
        _discard(_temp_beside(base / ".tsptq-probe"))
    except OutputError as e:
        what = "cannot write into directory" if base == path else "cannot create directory"
        raise output_error(path, OSError(e.errno, e.strerror), what) from e
