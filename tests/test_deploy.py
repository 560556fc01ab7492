"""tsptq-deploy end to end on the boards that run here, and the link under faults.

host: the device program built natively behind a pty pair (made in Python, tsptq.deploy.pty_pair); rpi: the aarch64
agent under qemu-aarch64-static behind one too; mps2-an386: Cortex-M4F firmware (model flashed into it) under
qemu-system-arm on a TCP serial port. Each deployment must be bit-exact with the host integer reference on every
image. The faulty-link tests put tsptq.deploy.fault_proxy between host and board.
"""
from __future__ import annotations

import dataclasses
import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from tsptq.deploy.board import Board
from tsptq.data import datasets
from tsptq.cli.deploy import main as deploy_main
from tsptq.deploy.pipeline import DoesNotFitError, check_fits, memory_needs
from tsptq.deploy.fault_proxy import FaultProxy, Faults
from tsptq.intmodel.integer import Source
from tsptq.intmodel.lower import lower
from tsptq.deploy.serial_link import Link, LinkError
from tsptq.deploy.targets import build, load_target, start_board
from tsptq.tflite.writer import to_tflite

# Tiers (tests/conftest.py): the board tests need the host agent (a C compiler) or QEMU and take seconds (`slow`).
slow = pytest.mark.slow


def _tools_or_skip(name: str):
    target = load_target(name)
    missing = target.missing_tools()
    if missing:
        pytest.skip(f"{name}: {', '.join(missing)} not installed (apt-get install {' '.join(target.apt)})")
    return target


def _deploy(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "report.json"
    rc = deploy_main([*args, "--json", str(out), "--report", str(tmp_path / "report"), "--quiet"])
    report = json.loads(out.read_text())
    assert rc == 0, report["result"]
    return report


def _check_report(report: dict, images: int, unit: str) -> None:
    r = report["result"]
    assert r["images"] == images
    assert r["bit_exact_fraction"] == 1.0 and not r["mismatched_images"]
    assert r["top1_board"] == r["top1_reference"]
    assert r["latency"]["unit"] == unit and 0 < r["latency"]["median"] <= r["latency"]["p90"]
    names = {o["op"] for o in r["ops"]}
    assert {"TSPTQ_LAYERNORM_2S", "TSPTQ_SOFTMAX_2S", "TSPTQ_FC_2S"} <= names
    assert abs(sum(o["share"] for o in r["ops"]) - 1.0) < 1e-3


@pytest.fixture(scope="module")
def cifar_model(cifar_vit):
    """What tsptq.intmodel.integer.build(Source(model="cifar10-vit", data="bundled")) makes (tsptq W8A8 on the 32
    balanced bundled training images, the source in the metadata), lowered from the session's shared quantization."""
    im = lower(cifar_vit.quantized("tsptq"))
    im.metadata["source"] = Source(model="cifar10-vit", data="bundled").to_dict()
    return im, to_tflite(im)


@pytest.mark.cc
@slow
def test_deploy_host_bit_exact_with_reports(tmp_path):
    _tools_or_skip("host")
    report = _deploy(tmp_path, "--target", "host", "--eval-images", "20")
    _check_report(report, 20, "ms")
    assert report["delivery"] == "upload" and report["board"]["board"] == "host"
    assert report["result"]["top1_board"] >= 60  # cifar10-vit is ~75% on CIFAR-10; 20 images are noisy
    md = (tmp_path / "report" / "report.md").read_text()
    assert "bit-exact with host | 1.0000" in md and "TSPTQ_FC_2S" in md
    assert (tmp_path / "report" / "ops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.qemu
@slow
def test_deploy_rpi_emulated(tmp_path):
    _tools_or_skip("rpi")
    report = _deploy(tmp_path, "--target", "rpi", "--eval-images", "8")
    _check_report(report, 8, "ms")
    assert report["board"]["board"] == "rpi"


@pytest.mark.qemu
@slow
def test_deploy_rpi_swin_tiny_emulated(tmp_path):
    """swin_tiny_patch4_window7_224 itself (random weights, 224 px; ~1000 tensors, a 1536-channel LayerNorm) on the
    emulated Pi: the aarch64 agent runs it bit-exact. Measured: ~32 s (about 10 s an image under qemu-aarch64)."""
    _tools_or_skip("rpi")
    report = _deploy(tmp_path, "--target", "rpi", "--model", "swin_tiny_patch4_window7_224", "--method", "minmax",
                     "--calib-images", "2", "--eval-images", "1")
    r = report["result"]
    assert r["images"] == 1 and r["bit_exact_fraction"] == 1.0 and not r["mismatched_images"]
    assert {"TSPTQ_BMM_BIAS", "TSPTQ_SOFTMAX_MASK_2S", "TSPTQ_LAYERNORM_2S"} <= {o["op"] for o in r["ops"]}
    assert report["board"]["board"] == "rpi"


@pytest.mark.qemu
@slow
def test_deploy_mps2_flashed(tmp_path):
    _tools_or_skip("mps2-an386")
    report = _deploy(tmp_path, "--target", "mps2-an386", "--eval-images", "4")
    _check_report(report, 4, "instructions")
    assert report["delivery"] == "flash" and report["memory"]["firmware"]["text"] > report["memory"]["model_bytes"]


@slow
def test_does_not_fit_is_said_before_flashing(cifar_model):
    im, model_bytes = cifar_model
    target = dataclasses.replace(load_target("mps2-an386"), flash_capacity=500_000, arena_capacity=20_000)
    needs = memory_needs(im, model_bytes)
    with pytest.raises(DoesNotFitError) as e:
        check_fits(target, needs, "flash")
    msg = str(e.value)
    assert f"{needs['model_bytes']:,} B" in msg and "500,000 B" in msg and "20,000 B" in msg


def test_real_board_without_port_is_a_clear_error(capsys):
    assert deploy_main(["--target", "nucleo-h743zi", "--quiet"]) == 2
    assert "give its serial port with --port" in capsys.readouterr().err


def _images(im, n):
    test = datasets.load_bundled_sample("test").take(n)
    from tsptq.model.zoo import REFERENCE_MODELS

    cfg = REFERENCE_MODELS["cifar10-vit"].config
    codes = np.concatenate([im.quantize_input(x.numpy()) for x in datasets.iterate_batches(test.images, cfg, 50)])
    return codes, im.run(codes)


@pytest.mark.cc
@slow
def test_faulty_link_completed_inferences_are_bit_exact(cifar_model, tmp_path):
    """About 1% of the bytes damaged (0.33% each dropped, flipped, duplicated, both ways) and a 2.5 s stall: every
    inference completes and is bit-exact, and the link's counters show that it had to work for it. The model is
    given to the agent at start: uploading 1.2 MB through a line this bad takes minutes (each 1 KiB frame survives
    with probability ~0.99^1030), which tests patience, not correctness. At this rate even 64-byte pieces need
    about two tries each, so an image takes ~10 s: two images are enough."""
    target = _tools_or_skip("host")
    im, model_bytes = cifar_model
    model_file = tmp_path / "model.tflite"
    model_file.write_bytes(model_bytes)
    codes, expected = _images(im, 2)
    with start_board(target, build(target), args=("--model", str(model_file))) as running:
        faults = Faults(drop=0.0033, flip=0.0033, dup=0.0033, stall_after=10_000, stall_seconds=2.5, seed=7)
        with FaultProxy(running.serial, faults) as proxy:
            # a pty round trip takes about a millisecond: a short timeout keeps the ~60% of lost frames cheap
            link = Link.open(proxy.url, timeout=0.08, retries=40)
            board = Board(link, invoke_timeout=2.0)
            info = board.hello()
            assert info.model_size == len(model_bytes)
            for q, want in zip(codes, expected):
                assert board.infer(q.tobytes()).output == want.tobytes()
            counters = dict(link.counters)
            link.close()
        assert proxy.counters.dropped > 0 and proxy.counters.flipped > 0 and proxy.counters.duplicated > 0
        assert proxy.counters.stalls == 1 and counters["resent"] > 0


@pytest.mark.cc
@slow
def test_dead_link_ends_in_an_error_naming_the_port(cifar_model):
    target = _tools_or_skip("host")
    with start_board(target, build(target)) as running:
        link = Link(running.serial, running.url, timeout=0.3, retries=2)
        board = Board(link)
        board.hello()
        agent, = running.processes  # the agent dies; the pty pair (in this process) stays
        agent.kill()
        agent.wait()
        t0 = time.monotonic()
        with pytest.raises(LinkError) as e:
            board.hello()
        assert running.url in str(e.value) and time.monotonic() - t0 < 5


def _shim(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def fake_ssh(tmp_path: Path, monkeypatch, python3: str | None = None) -> None:
    """An ssh shim first on PATH that runs the remote command line locally (no sshd in CI; the files go over ssh's
    stdin with `cat >`, as on a real board), and optionally the `python3` the remote side runs (a shell line)."""
    shims = tmp_path / "bin"
    shims.mkdir()
    # ssh [-o opt]... -- destination command  ->  sh -c command
    _shim(shims / "ssh", 'while [ "$1" = "-o" ]; do shift 2; done\n[ "$1" = "--" ] && shift\nshift\nexec sh -c "$*"\n')
    if python3:
        _shim(shims / "python3", python3 + "\n")
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.cc
@slow
def test_ssh_path_copies_and_runs_the_agent_over_stdio(tmp_path, monkeypatch):
    """--ssh: copy the agent and run it with --stdio through ssh. The ssh here is a shim that runs the same command
    lines locally; the bytes go through the agent's stdio exactly as over a real SSH session."""
    _tools_or_skip("host")
    fake_ssh(tmp_path, monkeypatch)
    remote = tmp_path / "remote"
    report = _deploy(tmp_path, "--target", "host", "--ssh", "pi@raspberrypi", "--ssh-dir", str(remote),
                     "--eval-images", "4")
    _check_report(report, 4, "ms")
    assert report["port"] == "ssh://pi@raspberrypi"
    assert [p.name for p in remote.iterdir()] == ["tsptq-agent"]


@pytest.mark.cc
@slow
def test_profile_runs_an_existing_file_on_a_board(cifar_model, tmp_path, capsys):
    """`tsptq profile`: the board part alone, for a .tflite file (the board started here, the model uploaded)."""
    from tsptq.cli.main import main as tsptq_main

    _tools_or_skip("host")
    path = tmp_path / "model.tflite"
    path.write_bytes(cifar_model[1])
    out = tmp_path / "profile.json"
    assert tsptq_main(["profile", str(path), "--target", "host", "--eval-images", "5", "--json", str(out),
                       "--quiet"]) == 0
    report = json.loads(out.read_text())
    _check_report(report, 5, "ms")
    assert "bit-exact with host  1.0000" in capsys.readouterr().out
