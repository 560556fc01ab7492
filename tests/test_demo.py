"""`make demo` (tsptq.cli.demo): every step of the chain runs as its own command, the deployed bytes are the exported
file, both boards are bit-exact, and the summary and the plot say so. Run here with fewer images than the default."""
import json
import re

import pytest

from tsptq.cli import demo


@pytest.mark.slow
@pytest.mark.qemu
def test_the_demo_reaches_both_boards_and_sums_up(tmp_path, capsys):
    out = tmp_path / "out"
    assert demo.main(["--out", str(out), "--images", "60", "--dinov2-images", "0", "--rpi-images", "4",
                      "--mcu-images", "2"]) == 0
    text = capsys.readouterr().out
    plan = demo.steps(out, 60, 0, {"rpi": 4, "mps2-an386": 2})
    assert [s.program for s in plan] == ["tsptq"] * 4 + ["tsptq-deploy"] * 2
    for k, step in enumerate(plan, 1):
        assert f"=== [{k}/6] {step.title}" in text and f"$ {step.shown()}" in text
    summary = (out / "summary.md").read_text()
    assert summary.strip() in text.replace("\r", "")
    rows = {m.group(1): m.groups() for m in re.finditer(
        r"^  (rpi|mps2-an386)\s+(\d+)\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)\s+(\S+)\s+(.*)$", summary, re.M)}
    assert set(rows) == {"rpi", "mps2-an386"}
    for board, images, top1, ref, exact, same, latency in rows.values():
        report = json.loads((out / f"deploy-{board}.json").read_text())
        assert int(images) == report["result"]["images"] and float(exact) == 1.0 and top1 == ref
        assert same == "yes"  # tsptq-deploy ran the very bytes `tsptq export` wrote
    assert "M instructions median (QEMU -icount" in rows["mps2-an386"][-1]
    assert "emulation on this machine: not a Pi's speed" in rows["rpi"][-1]
    assert "cifar10-vit (60 images" in summary and "tsptq - minmax, paired over the images: top-1" in summary
    assert "dinov2-s14" not in summary  # left out with --dinov2-images 0
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the summary of an earlier run, again, without running anything
    assert demo.main(["--out", str(out), "--summary-only"]) == 0
    assert (out / "summary.md").read_text().split("\n", 2)[2] == summary.split("\n", 2)[2]  # all but the run time


def test_a_failing_step_stops_the_demo_with_its_command(tmp_path):
    step = demo.Step("inspect a missing file", "tsptq", ("inspect", str(tmp_path / "missing.tflite")))
    with pytest.raises(SystemExit) as e:
        demo.run_steps([step, demo.Step("never reached", "tsptq", ("models",))])
    message = str(e.value)
    assert "step 1 (inspect a missing file) failed with exit status 2" in message
    assert message.endswith(step.shown())


def test_bad_options_are_refused(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--rpi-images", "0"]) == 2
    assert "--rpi-images must be at least 1" in capsys.readouterr().err
    assert demo.main(["--out", str(tmp_path / "nothing-here"), "--summary-only"]) == 2
    assert "run the demo first" in capsys.readouterr().err
