"""`tsptq-deploy --runtime litert`: the board runs the model in stock LiteRT with libtsptq_delegate.so, behind the same
serial protocol (the protocol itself is tested against this agent in tests/test_board_host.py).

rpi: the aarch64 delegate and the LiteRT agent in an emulated Raspberry Pi userland (Debian arm64 Python 3.11 with
the aarch64 ai-edge-litert and numpy wheels, under qemu-aarch64-static -cpu cortex-a72; tsptq.deploy.pi_userland). With
LiteRT's reference kernels the outputs must be bit-exact with the host integer reference; with its optimized kernels
(XNNPACK, ruy) the report gives the agreement and the largest difference. host + --ssh: the three files are copied and
started through an ssh shim, as on a real Pi.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tsptq.cli.deploy import main as deploy_main
from tsptq.deploy.targets import load_target

pytest.importorskip("ai_edge_litert.interpreter")

from test_deploy import _check_report, _tools_or_skip, fake_ssh  # noqa: E402


def _run(tmp_path: Path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "report.json"
    rc = deploy_main([*args, "--json", str(out), "--report", str(tmp_path / "report"), "--quiet"])
    return rc, json.loads(out.read_text())


@pytest.fixture(scope="module")
def pi_userland():
    """The emulated Pi's Python with LiteRT (provisioned once, cached). In CI it must be there: .ci/run enables Debian's
    arm64 package lists; elsewhere a machine without them skips."""
    from tsptq.deploy.pi_userland import UserlandError, provision

    _tools_or_skip("rpi")
    try:
        return provision(quiet=True)
    except UserlandError as e:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no emulated Pi userland: {e}")


@pytest.mark.slow
@pytest.mark.qemu
def test_rpi_litert_reference_kernels_are_bit_exact(tmp_path, pi_userland):
    rc, report = _run(tmp_path, "--target", "rpi", "--runtime", "litert", "--eval-images", "6")
    assert rc == 0
    _check_report(report, 6, "ms")
    assert report["runtime"] == "litert (reference kernels)"
    assert report["board"]["runtime_version"] == "ai-edge-litert 2.3.0 + tsptq delegate (reference kernels)"
    assert report["board"]["board"] == "rpi"
    # The delegate's ops, profiled one by one, are the file's custom ops: the same file `tsptq export` writes with the
    # same data and defaults (calibration is deterministic); LiteRT's builtins are one entry.
    from tsptq.cli.main import main as cli_main
    from tsptq.tflite.inspect_file import summary
    from tsptq.tflite.reader import read_tflite

    assert cli_main(["export", "--model", "cifar10-vit", "--method", "tsptq", "--data", "bundled",
                     "--out", str(tmp_path / "m.tflite")]) == 0
    assert report["memory"]["model_bytes"] == (tmp_path / "m.tflite").stat().st_size
    expected = {k: v for k, v in summary(read_tflite(tmp_path / "m.tflite"))["op_counts"].items() if k.startswith("TSPTQ_")}
    ops = {o["op"]: o for o in report["result"]["ops"]}
    assert "LITERT_BUILTINS" in ops and expected["TSPTQ_FC_2S"] >= 1
    assert {k: o["count"] for k, o in ops.items() if k != "LITERT_BUILTINS"} == expected
    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "report" / "ops.png").is_file()


@pytest.mark.slow
@pytest.mark.qemu
def test_rpi_litert_optimized_kernels_report_the_difference(tmp_path, pi_userland):
    """LiteRT's optimized aarch64 kernels requantize the builtins their own way (docs/integer-semantics.md): the run
    completes (exit 0), the report says how far the outputs are from the reference. Measured on these 6 images: no
    output byte-identical, top-1 agreement 100%, largest difference a few codes (x86 XNNPACK, 10,000 images: 14)."""
    rc, report = _run(tmp_path, "--target", "rpi", "--runtime", "litert", "--litert-kernels", "optimized",
                      "--eval-images", "6")
    r = report["result"]
    assert rc == 0 and report["runtime"] == "litert (optimized kernels)"
    assert r["top1_agreement"] >= 5 / 6 and 0 <= r["max_abs_diff_codes"] <= 32
    assert (r["bit_exact_fraction"] == 1.0) == (r["max_abs_diff_codes"] == 0)


@pytest.mark.slow
@pytest.mark.cc
def test_litert_over_ssh_copies_three_files(tmp_path, monkeypatch):
    """--ssh with --runtime litert: copy the agent, wire.py and the delegate over ssh, start `python3 litert_agent.py --stdio`.
    The shims run the commands locally; `python3` is this venv's (it has ai-edge-litert), as a Pi's would be."""
    _tools_or_skip("host")
    fake_ssh(tmp_path, monkeypatch, python3=f'exec {sys.executable} "$@"')
    remote = tmp_path / "remote"
    rc, report = _run(tmp_path, "--target", "host", "--runtime", "litert", "--ssh", "pi@raspberrypi",
                      "--ssh-dir", str(remote), "--eval-images", "3")
    assert rc == 0
    _check_report(report, 3, "ms")
    assert report["port"] == "ssh://pi@raspberrypi" and report["runtime"] == "litert (reference kernels)"
    assert sorted(p.name for p in remote.iterdir()) == ["libtsptq_delegate.so", "litert_agent.py", "wire.py"]


@pytest.mark.slow
@pytest.mark.cc
def test_a_board_without_litert_says_so(tmp_path, monkeypatch, capsys):
    """The Pi's python3 lacks ai-edge-litert: the agent still speaks the protocol and the commit is refused with the
    fix, instead of a dead link."""
    _tools_or_skip("host")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3")
    fake_ssh(tmp_path, monkeypatch, python3=f'exec {python} -I "$@"')  # -I: no user site, no PYTHONPATH
    rc = deploy_main(["--target", "host", "--runtime", "litert", "--ssh", "pi@raspberrypi", "--ssh-dir",
                      str(tmp_path / "remote"), "--eval-images", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "MODEL_REJECTED" in err and "pip install ai-edge-litert" in err, err


@pytest.mark.parametrize("args, message", [
    (["--target", "mps2-an386", "--runtime", "litert"], "--runtime litert runs on the Linux targets"),
    (["--target", "host", "--runtime", "litert", "--load", "flash"], "--load flash does not apply"),
    (["--target", "host", "--litert-kernels", "optimized"], "--litert-kernels applies to --runtime litert only"),
])
def test_litert_runtime_choices_are_checked(args, message, capsys):
    assert deploy_main([*args, "--quiet"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("diff, agreement, ok", [(0, 1.0, True), (14, 0.985, True), (33, 0.99, False),
                                                  (9, 0.90, False)])
def test_optimized_kernels_pass_only_within_bounds(diff, agreement, ok):
    """LiteRT's optimized kernels need not be bit-exact, but a run far from the reference fails (exit code 1)."""

    from tsptq.deploy.pipeline import BoardOptions, deployment_ok

    result = {"bit_exact_fraction": 1.0 if diff == 0 else 0.0, "max_abs_diff_codes": diff, "top1_agreement": agreement}
    assert deployment_ok(result, BoardOptions("rpi", runtime="litert", litert_kernels="optimized")) is ok
    assert deployment_ok(result, BoardOptions("rpi", runtime="litert", litert_kernels="reference")) is (diff == 0)
    assert deployment_ok(result, BoardOptions("rpi")) is (diff == 0)


@pytest.mark.slow
@pytest.mark.cc
def test_a_board_with_tflite_runtime_214(tmp_path, monkeypatch):
    """The agent on a board whose Python has tflite-runtime 2.14 instead of ai-edge-litert (the .venv-tflite214 venv
    of `make tflite214` plays the Pi's python3): same protocol, bit-exact with the reference kernels."""
    _tools_or_skip("host")
    python = Path(__file__).resolve().parents[1] / ".venv-tflite214" / "bin" / "python"
    if not python.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{python} is missing (`make tflite214`)")
        pytest.skip(f"{python} is missing (`make tflite214`)")
    fake_ssh(tmp_path, monkeypatch, python3=f'exec {python} "$@"')
    rc, report = _run(tmp_path, "--target", "host", "--runtime", "litert", "--ssh", "pi@raspberrypi",
                      "--ssh-dir", str(tmp_path / "remote"), "--eval-images", "3")
    assert rc == 0
    _check_report(report, 3, "ms")
    assert report["board"]["runtime_version"] == "tflite-runtime 2.14.0 + tsptq delegate (reference kernels)"


@pytest.mark.slow
@pytest.mark.cc
def test_a_device_program_that_dies_is_reported_with_its_stderr(tmp_path, monkeypatch, capsys):
    """The agent cannot start on the board (here: a delegate built for another machine): the link error comes with the
    program's exit code and its message, not only 'no reply'."""
    import tsptq.deploy.litert_board as lb

    _tools_or_skip("host")
    wrong = tmp_path / "bundle"
    wrong.mkdir()
    for f in lb.bundle_files(lb.build_bundle(load_target("host")))[:2]:
        (wrong / f.name).write_bytes(f.read_bytes())
    (wrong / lb.DELEGATE_LIB).write_bytes(b"\x7fELF not a library")
    monkeypatch.setattr(lb, "build_bundle", lambda target: wrong)
    rc = deploy_main(["--target", "host", "--runtime", "litert", "--eval-images", "1", "--retries", "1",
                      "--timeout", "0.5", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "exited with code 1" in err and "cannot use --delegate" in err, err


def test_the_agent_runs_from_the_source_tree():
    """`python targets/common/litert_agent.py` finds wire.py in toolchain/ (on a board it lies beside the agent)."""
    import subprocess

    agent = Path(__file__).resolve().parents[1] / "targets" / "common" / "litert_agent.py"
    proc = subprocess.run([sys.executable, str(agent), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--delegate" in proc.stdout, proc.stderr
