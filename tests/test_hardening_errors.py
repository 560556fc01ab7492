"""Issue 14, items 4, 5 and 8: a user's mistake is one line `tsptq: error: ...` (exit 2) that names the path, never a
traceback; emit-c writes model.h and model.c as a pair; `tsptq inspect` does not load torch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fault_injection import fail_nth_replace

from tsptq.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def files(tiny_vits, tmp_path_factory):
    """Two small .tflite files (a 1-block 8x8 ViT, two methods): different bytes, so different emit-c pairs."""
    from tsptq.intmodel.lower import lower
    from tsptq.quant.quantize import quantize
    from tsptq.tflite.writer import to_tflite

    _, graph, cal, _ = tiny_vits(8)
    d = tmp_path_factory.mktemp("models")
    out = {}
    for method in ("tsptq", "minmax"):
        out[method] = d / f"{method}.tflite"
        out[method].write_bytes(to_tflite(lower(quantize(graph, cal, method, progress=False))))
    return out


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tsptq: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# --- item 4: outputs in a missing, non-directory or read-only place --------------------------------------------------

def _commands(model: str, bad: str) -> list[list[str]]:
    """Every command with an output option, pointed at ``bad``. The other arguments would fail later (an unknown
    model, a missing file) or take long: the output is checked first."""
    return [
        ["eval", "--model", "no-such-model", "--quiet", "--json", bad],
        ["eval", "--model", "no-such-model", "--quiet", "--plot", bad],
        ["export", "--model", "no-such-model", "--quiet", "--out", bad],
        ["inspect", model, "--brief", "--json", bad],
        ["verify", str(Path(model).with_name("missing.tflite")), "--quiet", "--json", bad],
        ["verify", "--runtime", "c", model, "--quiet", "--json", bad],
        ["emit-c", model, "--out", bad],
        ["profile", model, "--target", "host", "--json", bad],
        ["profile", model, "--target", "host", "--report", bad],
    ]


# emit-c --out and profile --report (k 6 and 8) are directories, created when missing: only "under a file" fails
@pytest.mark.parametrize("k, where", [(k, "under a file") for k in range(9)]
                         + [(k, "missing directory") for k in range(9) if k not in (6, 8)])
def test_an_unwritable_output_is_one_line_naming_it(files, tmp_path, capsys, k, where):
    (tmp_path / "file").write_text("not a directory")
    bad = tmp_path / "file" / "out" if where == "under a file" else tmp_path / "none" / "out.json"
    argv = _commands(str(files["tsptq"]), str(bad))[k]
    assert main(argv) == 2
    why = f"{tmp_path / 'file'} is a file, not a directory" if where == "under a file" else f"no directory {tmp_path / 'none'}"
    one_line_error(capsys, str(bad), why)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing left behind


def test_an_output_that_is_a_directory_is_one_line(files, tmp_path, capsys):
    assert main(["inspect", str(files["tsptq"]), "--brief", "--json", str(tmp_path)]) == 2
    one_line_error(capsys, f"--json: cannot write {tmp_path}: it is a directory")


def test_a_write_that_fails_late_is_one_line_too(files, tmp_path, capsys, monkeypatch):
    """The output check at the start can pass and the write still fail (the directory removed meanwhile, a full
    disk): atomic_write's error is a TsptqError naming the path."""
    import tsptq.cli.main as cli

    monkeypatch.setattr(cli, "check_outputs", lambda args: None)
    (tmp_path / "file").write_text("x")
    bad = tmp_path / "file" / "i.json"
    assert main(["inspect", str(files["tsptq"]), "--brief", "--json", str(bad)]) == 2
    one_line_error(capsys, f"cannot write {bad}: {tmp_path / 'file'} is a file, not a directory")
    out = tmp_path / "file" / "fw"
    assert main(["emit-c", str(files["tsptq"]), "--out", str(out), "--no-runtime"]) == 2
    one_line_error(capsys, f"cannot create directory {out}: {tmp_path / 'file'} is a file, not a directory")


_RO_SCRIPT = r"""
import json, sys
from tsptq.atomic import atomic_write
from tsptq.cli.main import main
ro, model = sys.argv[1], sys.argv[2]
rc = [main(["inspect", model, "--brief", "--json", ro + "/i.json"]),
      main(["emit-c", model, "--out", ro + "/fw", "--no-runtime"])]
try:
    atomic_write(ro + "/direct.json", lambda tmp: tmp.write_text("{}"))
    late = "written"
except Exception as e:
    late = f"{type(e).__name__}: {e}"
print(json.dumps({"rc": rc, "late": late}))
"""


def test_a_read_only_file_system_is_one_line(files, tmp_path):
    """A real read-only mount (a tmpfs, in a private mount namespace: root ignores permission bits, not `ro`)."""
    if not shutil.which("unshare") or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for a private read-only mount")
    ro = tmp_path / "ro"
    ro.mkdir()
    cmd = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o ro,size=64k tmpfs "$1" || exit 77; shift; exec "$@"',
           "sh", str(ro), sys.executable, "-c", _RO_SCRIPT, str(ro), str(files["tsptq"])]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if p.returncode == 77 or "Operation not permitted" in p.stderr and not p.stdout:
        pytest.skip(f"cannot mount a read-only tmpfs here: {p.stderr.strip()}")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["rc"] == [2, 2]
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert lines == [f"tsptq: error: --json: cannot write {ro}/i.json: read-only file system",
                     f"tsptq: error: --out: cannot create directory {ro}/fw: read-only file system"], p.stderr
    assert report["late"] == f"OutputError: cannot write {ro}/direct.json: read-only file system"


# --- item 4: bad numbers and missing inputs ---------------------------------------------------------------------------

@pytest.mark.parametrize("runtime", ["python", "c"])
@pytest.mark.parametrize("n", ["0", "-5"])
def test_verify_batch_size_below_one_is_one_line(files, capsys, runtime, n):
    assert main(["verify", str(files["tsptq"]), "--runtime", runtime, "--batch-size", n, "--quiet"]) == 2
    one_line_error(capsys, f"--batch-size must be at least 1 (got {n})")


def test_profile_of_a_missing_file_is_one_line_before_anything_starts(tmp_path, capsys, monkeypatch):
    import tsptq.deploy.pipeline as deploy

    monkeypatch.setattr(deploy, "profile", lambda *a, **k: pytest.fail("profile() ran on a missing file"))
    missing = tmp_path / "missing.tflite"
    assert main(["profile", str(missing), "--target", "host"]) == 2
    one_line_error(capsys, f"{missing}: cannot read (No such file or directory)")
    assert main(["profile", str(tmp_path), "--target", "host"]) == 2
    one_line_error(capsys, f"{tmp_path}: cannot read (Is a directory)")


def test_any_file_error_with_a_name_is_one_line(files, capsys, monkeypatch):
    """The last resort: an OSError about a named file (a label file the user cannot read, a device that went
    away) is one line naming it, not a traceback."""
    import tsptq.tflite.inspect_file as I

    def unreadable(*a, **kw):
        raise PermissionError(13, "Permission denied", "/data/labels.txt")

    monkeypatch.setattr(I, "report", unreadable)
    assert main(["inspect", str(files["tsptq"])]) == 2
    one_line_error(capsys, "tsptq: error: /data/labels.txt: permission denied")


# --- item 5: emit-c's pair ----------------------------------------------------------------------------------------

def test_emit_c_keeps_the_old_pair_when_the_second_file_fails(files, tmp_path, monkeypatch):
    from tsptq.runtime.emit_c import emit_c

    out = tmp_path / "fw"
    emit_c(files["minmax"], out, copy_runtime=False, check_with_c=False)
    old = {n: (out / n).read_bytes() for n in ("model.h", "model.c")}
    fail_nth_replace(monkeypatch, 2, OSError(28, "No space left on device"))
    with pytest.raises(OSError, match=r"model\.c: no space left on device"):
        emit_c(files["tsptq"], out, copy_runtime=False, check_with_c=False)
    assert {n: (out / n).read_bytes() for n in ("model.h", "model.c")} == old
    assert sorted(p.name for p in out.iterdir()) == ["model.c", "model.h"]  # no temporary or kept files


def test_emit_c_keeps_the_old_pair_when_writing_fails(files, tmp_path, monkeypatch):
    from tsptq.runtime.emit_c import emit_c

    out = tmp_path / "fw"
    emit_c(files["minmax"], out, copy_runtime=False, check_with_c=False)
    old = {n: (out / n).read_bytes() for n in ("model.h", "model.c")}
    real_write = Path.write_text

    def full_on_model_c(self, text, *a, **kw):
        if '#include "model.h"' in text:  # model.c's source, whatever the temporary file is called
            raise OSError(28, "No space left on device")
        return real_write(self, text, *a, **kw)

    monkeypatch.setattr(Path, "write_text", full_on_model_c)
    with pytest.raises(OSError, match=r"model\.c: no space left on device"):
        emit_c(files["tsptq"], out, copy_runtime=False, check_with_c=False)
    assert {n: (out / n).read_bytes() for n in ("model.h", "model.c")} == old
    assert sorted(p.name for p in out.iterdir()) == ["model.c", "model.h"]


@pytest.mark.cc
def test_a_mismatched_pair_does_not_compile(files, tmp_path):
    """Only a crash between the two renames can leave one new file with one old one: model.c then refuses to
    compile against that model.h, instead of building firmware with the wrong sizes."""
    from tsptq.runtime.emit_c import emit_c

    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    a, b = tmp_path / "a", tmp_path / "b"
    emit_c(files["tsptq"], a, copy_runtime=False, check_with_c=False)
    emit_c(files["minmax"], b, copy_runtime=False, check_with_c=False)

    def syntax(d):
        return subprocess.run([cc, "-std=c99", "-fsyntax-only", "-I", str(d), "-I", str(ROOT / "runtime_c" / "include"),
                               str(d / "model.c")], capture_output=True, text=True)

    assert syntax(a).returncode == 0, syntax(a).stderr
    shutil.copyfile(b / "model.h", a / "model.h")
    r = syntax(a)
    assert r.returncode != 0 and "different tsptq emit-c runs" in r.stderr


# --- item 8: emit-c errors name the file; inspect without torch --------------------------------------------------

def test_emit_c_errors_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(bytes(40))
    assert main(["emit-c", str(bad), "--out", str(tmp_path / "fw")]) == 2
    one_line_error(capsys, f"{bad}: file identifier is")
    assert not (tmp_path / "fw").exists()


def test_emit_c_c_loader_errors_name_the_file_once(files, tmp_path, monkeypatch):
    import tsptq.runtime.emit_c as E
    from tsptq.errors import RuntimeCError

    def c_refuses(data, path, check_with_c):
        raise RuntimeCError(f"{path}: tensor 3: zero point out of range [TSPTQ_ERR_MODEL]", code=4, name="X")

    monkeypatch.setattr(E, "_check", c_refuses)
    with pytest.raises(RuntimeCError) as e:
        E.emit_c(files["tsptq"], tmp_path / "fw")
    assert str(e.value).count(str(files["tsptq"])) == 1 and e.value.code == 4


def test_inspect_does_not_import_torch(files, tmp_path):
    code = ("import sys; from tsptq.cli.main import main; "
            f"rc = main(['inspect', {str(files['tsptq'])!r}, '--brief', '--json', {str(tmp_path / 'i.json')!r}]); "
            "assert rc == 0, rc; "
            "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
            "assert not loaded, loaded[:5]")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((tmp_path / "i.json").read_text())["ops"] > 0


def test_import_tsptq_is_light_and_the_public_api_still_works():
    code = ("import sys, tsptq; assert 'torch' not in sys.modules; "
            "from tsptq.evaluation.evaluate import write_json_atomic; from tsptq.atomic import write_json_atomic as w; "
            "assert write_json_atomic is w")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
