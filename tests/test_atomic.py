"""Atomic writes: an interrupted write leaves the old file (or none) and no temporary file behind."""
import pytest

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
