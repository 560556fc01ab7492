"""Atomic writes: an interrupted write leaves the old file (or none) and no temporary file behind."""
import pytest
from fault_injection import fail_nth_replace

from tsptq.atomic import atomic_write


def test_replaces_the_file_in_one_step(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    atomic_write(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")

    def half_then_crash(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


# --- temporary files: unpredictable, never following anything planted (issue 14, item 5) -------------------------

def test_a_symlink_planted_at_the_old_temp_name_is_not_followed(tmp_path):
    """The old temporary name was `.<stem>.tmp<pid><suffix>`: anyone who can write the directory could plant a
    symlink there and have the output written through it."""
    import os

    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "out.json"
    planted = tmp_path / f".out.tmp{os.getpid()}.json"
    planted.symlink_to(victim)
    atomic_write(path, lambda tmp: tmp.write_text("new"))
    assert victim.read_text() == "precious"
    assert path.read_text() == "new" and not path.is_symlink()
    assert planted.is_symlink() and os.readlink(planted) == str(victim)  # left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".out.tmp%d.json" % os.getpid(), "out.json", "victim"])


def test_the_temporary_file_is_made_by_mkstemp_in_the_target_directory(tmp_path, monkeypatch):
    import tempfile

    calls = []
    real = tempfile.mkstemp

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    seen = []
    atomic_write(tmp_path / "plot.png", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"png")))
    assert len(calls) == 1 and calls[0]["dir"] == tmp_path
    assert seen[0].parent == tmp_path and seen[0].name.endswith(".png")  # savefig/savez pick the format by suffix


def test_new_files_get_the_usual_mode_not_mkstemps_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "r.json", lambda tmp: tmp.write_text("{}"))
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


# --- errors: one that names the output, never hidden by the cleanup (issue 14, item 4) ------------------------------

def test_a_missing_or_non_directory_parent_is_an_output_error_naming_the_path(tmp_path):
    from tsptq.errors import TsptqError

    (tmp_path / "file").write_text("x")
    for path, why in [(tmp_path / "file" / "x.json", f"{tmp_path / 'file'} is a file, not a directory"),
                      (tmp_path / "none" / "x.json", f"no directory {tmp_path / 'none'}")]:
        with pytest.raises(OSError) as e:  # still an OSError, for callers that catch those
            atomic_write(path, lambda tmp: tmp.write_text("new"))
        assert str(e.value) == f"cannot write {path}: {why}"
        assert isinstance(e.value, TsptqError)  # the CLI prints it as one line


def test_the_cleanups_own_error_does_not_hide_the_real_one(tmp_path, monkeypatch):
    """On a read-only or failing file system removing the temporary file fails too; the user must see why the
    write failed (here: disk full), not the failed removal."""
    import errno
    import os

    def disk_full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    def unlink_fails(p, *a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(p))

    path = tmp_path / "out.json"
    monkeypatch.setattr(os, "unlink", unlink_fails)
    with pytest.raises(OSError) as e:
        atomic_write(path, disk_full)
    assert str(e.value) == f"cannot write {path}: no space left on device"


def test_an_error_about_another_file_is_not_blamed_on_the_output(tmp_path):
    import shutil

    with pytest.raises(FileNotFoundError) as e:
        atomic_write(tmp_path / "copy.c", lambda tmp: shutil.copyfile(tmp_path / "missing.c", tmp))
    assert e.value.filename == str(tmp_path / "missing.c")
    assert [p.name for p in tmp_path.iterdir()] == []


# --- a group of files: all new or all old (emit-c's model.h + model.c) -----------------------------------------------

def test_group_write_replaces_every_file(tmp_path):
    from tsptq.atomic import atomic_write_group

    (tmp_path / "a.h").write_text("old a")
    atomic_write_group([(tmp_path / "a.h", lambda t: t.write_text("new a")),
                        (tmp_path / "b.c", lambda t: t.write_text("new b"))])
    assert (tmp_path / "a.h").read_text() == "new a" and (tmp_path / "b.c").read_text() == "new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h", "b.c"]


@pytest.mark.parametrize("existed", [True, False])
def test_group_write_puts_the_old_files_back_when_a_rename_fails(tmp_path, monkeypatch, existed):
    from tsptq.atomic import OutputError, atomic_write_group

    a, b = tmp_path / "a.h", tmp_path / "b.c"
    if existed:
        a.write_text("old a")
        b.write_text("old b")
    fail_nth_replace(monkeypatch, 2, OSError(5, "Input/output error"))
    with pytest.raises(OutputError, match=f"cannot write {b}: input/output error"):
        atomic_write_group([(a, lambda t: t.write_text("new a")), (b, lambda t: t.write_text("new b"))])
    if existed:
        assert a.read_text() == "old a" and b.read_text() == "old b"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h", "b.c"]
    else:
        assert list(tmp_path.iterdir()) == []


def test_group_write_puts_the_old_files_back_on_an_interrupt_between_renames(tmp_path, monkeypatch):
    from tsptq.atomic import atomic_write_group

    a, b = tmp_path / "a.h", tmp_path / "b.c"
    a.write_text("old a")
    b.write_text("old b")
    fail_nth_replace(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        atomic_write_group([(a, lambda t: t.write_text("new a")), (b, lambda t: t.write_text("new b"))])
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h", "b.c"]
