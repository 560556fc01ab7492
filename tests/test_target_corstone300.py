"""The Corstone-300 target (targets/corstone-300: Cortex-M55 + Ethos-U55-128, MPS3 AN552 or the Corstone-300 FVP).

It cannot run here (no simulator of the Ethos-U55; the CPU part runs on mps3-an547). What is checked:
- its target.toml parses, and its [npu] table holds the settings `tsptq npu-report` uses for an Ethos-U55-128;
- its firmware builds with arm-none-eabi-gcc (skipped without it) and lands where the linker script says: code in
  the ITCM, .data/.bss/stack in the DTCM, the arena in the SSE-300's 4 MiB internal SRAM, buffers in DDR4;
- the fit check: rows for the model, the arena and the NPU variant's Vela figures; a model too large is refused in
  one line, before anything is built (`tsptq-deploy --build-only`);
- running on it is refused in one line that points at mps3-an547;
- `tsptq-deploy --target corstone-300 --build-only --npu ethos-u` end to end (slow; needs Vela).
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from types import SimpleNamespace

import pytest

from tsptq.cli.deploy import main as deploy_main
from tsptq.deploy import pipeline
from tsptq.deploy.pipeline import DoesNotFitError, board_fit_rows, npu_fit_rows, require_fit
from tsptq.deploy.targets import build, load_target
from tsptq.npu import vela

NAME = "corstone-300"
MiB = 1 << 20


def test_target_parses_with_the_npu_settings_of_npu_report():
    t = load_target(NAME)
    assert t.kind == "board" and t.link == "port" and t.tick_unit == "cycles" and t.tick_hz == 32_000_000
    assert "-mcpu=cortex-m55" in t.cflags
    assert f"-DTQ_ARENA_CAPACITY={t.arena_capacity}" in t.cflags and t.arena_capacity == 4 * MiB
    assert f"-DTQ_MODEL_CAPACITY={t.model_capacity}" in t.cflags
    npu = t.extra["npu"]
    assert npu["target"] == "ethos-u" and npu["accelerator"] == vela.DEFAULT_ACCELERATOR
    assert (npu["system_config"], npu["memory_mode"]) == vela.system_config_for(npu["accelerator"])
    assert npu["sram_capacity"] == 4 * MiB and npu["flash_capacity"] > 0


def _sections(exe) -> dict[str, tuple[int, int]]:
    out = subprocess.run(["arm-none-eabi-size", "-A", str(exe)], capture_output=True, text=True, check=True).stdout
    rows = (line.split() for line in out.splitlines())
    return {p[0]: (int(p[1]), int(p[2])) for p in rows if len(p) == 3 and p[0].startswith(".") and p[1].isdigit()}


@pytest.mark.slow  # a firmware build: about 30 s on 2 cores when not cached
def test_firmware_builds_into_the_sse300_memories():
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("arm-none-eabi-size") is None:
        pytest.skip("arm-none-eabi-gcc not installed (apt-get install --no-install-recommends gcc-arm-none-eabi "
                    "libnewlib-arm-none-eabi)")
    t = load_target(NAME)
    s = _sections(build(t))
    itcm, dtcm, isram, ddr = (0, 512 << 10), (0x20000000, 512 << 10), (0x21000000, 4 * MiB), (0x60000000, 256 * MiB)

    def inside(section, region):
        size, addr = s[section]
        return region[0] <= addr and addr + size <= region[0] + region[1]

    assert s[".isr_vector"][1] == 0 and inside(".text", itcm)
    assert inside(".bss", dtcm) and s[".bss"][0] + 64 * 1024 <= dtcm[1]  # the stack's 64 KiB on top
    assert inside(".arena", isram) and s[".arena"][0] == t.arena_capacity
    assert inside(".rodata", ddr) and inside(".model_buf", ddr) and s[".model_buf"][0] == t.model_capacity


def test_fit_check_refuses_a_model_too_large_in_one_line():
    t = load_target(NAME)
    needs = {"model_bytes": 40 * MiB, "arena_bytes": 1 * MiB, "io_bytes": 4096, "activation_lower_bound": 0}
    rows = board_fit_rows(t, needs, "flash")
    assert [r.fits for r in rows] == [False, True]
    with pytest.raises(DoesNotFitError) as e:
        require_fit(t, rows)
    msg = str(e.value)
    assert msg == (f"{NAME}: does not fit: model (.tflite) needs 41,943,040 B but the flash holds "
                   f"{t.flash_capacity:,} B")
    # the NPU variant's Vela figures against the board's [npu] memories
    report = SimpleNamespace(sram_bytes=5 * MiB, off_chip_flash_bytes=3 * MiB, compiled=b"\0" * 100)
    npu_rows = npu_fit_rows(t.extra["npu"], report)
    assert [r.fits for r in npu_rows] == [False, True, True]
    with pytest.raises(DoesNotFitError, match="Vela's SRAM needs 5,242,880 B but the NPU SRAM holds 4,194,304 B"):
        require_fit(t, board_fit_rows(t, dict(needs, model_bytes=1000), "flash") + npu_rows)


def test_build_only_refuses_before_building(monkeypatch, capsys):
    """cifar10-vit (1.2 MB) against a corstone-300 whose flash is made too small: one line, and no firmware is
    built."""
    small = dataclasses.replace(load_target(NAME), flash_capacity=100_000)
    monkeypatch.setattr("tsptq.deploy.targets.load_target", lambda name: small)
    built = []
    monkeypatch.setattr(pipeline, "device_program", lambda *a, **k: built.append(a))
    if small.missing_tools():
        pytest.skip(f"{', '.join(small.missing_tools())} not installed")
    rc = deploy_main(["--target", NAME, "--build-only", "--calib-images", "2", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not built
    assert err.startswith(f"tsptq-deploy: error: {NAME}: does not fit: model (.tflite) needs ") and "\n" not in err
    assert "but the flash holds 100,000 B" in err


@pytest.mark.skipif(vela.vela_version() is None, reason=f"ethos-u-vela is not importable ({vela.INSTALL_HINT})")
def test_with_the_npu_variant_a_default_file_too_big_is_refused_before_vela_compiles(monkeypatch, capsys):
    """The firmware is built with or without --npu, so its fit is checked before Vela's (slower) compile."""
    small = dataclasses.replace(load_target(NAME), flash_capacity=100_000)
    monkeypatch.setattr("tsptq.deploy.targets.load_target", lambda name: small)
    compiled = []
    monkeypatch.setattr("tsptq.npu.vela.compile_report", lambda *a, **k: compiled.append(a))
    if small.missing_tools():
        pytest.skip(f"{', '.join(small.missing_tools())} not installed")
    rc = deploy_main(["--target", NAME, "--build-only", "--npu", "ethos-u", "--calib-images", "2", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not compiled
    assert "does not fit: model (.tflite) needs " in err and "but the flash holds 100,000 B" in err


def test_running_on_it_is_refused_in_one_line(capsys):
    assert deploy_main(["--target", NAME, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no simulator of its ethos-u55-128 NPU exists here" in err and "--target mps3-an547" in err
    assert "\n" not in err


def test_npu_needs_build_only_and_an_npu_board(capsys):
    assert deploy_main(["--target", NAME, "--npu", "ethos-u", "--quiet"]) == 2
    assert "--npu checks the NPU variant's fit with --build-only" in capsys.readouterr().err
    assert deploy_main(["--target", "mps3-an547", "--build-only", "--npu", "ethos-u", "--quiet"]) == 2
    assert "target mps3-an547 has no ethos-u NPU" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(vela.vela_version() is None, reason=f"ethos-u-vela is not importable ({vela.INSTALL_HINT})")
@pytest.mark.parametrize("residual,layernorm", [("code", "cpu"), ("int16", "cpu"), ("int16", "npu")])
def test_build_only_with_the_npu_variant_prints_the_fit_table(residual, layernorm, capsys):
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    rc = deploy_main(["--target", NAME, "--build-only", "--npu", "ethos-u", "--residual", residual,
                      "--layernorm", layernorm, "--calib-images", "4", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for row in ("model (.tflite)", "arena (planned + input/output/profile)", "NPU variant: Vela's SRAM",
                "NPU variant: Vela's off-chip flash", "NPU variant: Vela's compiled file"):
        line = next(x for x in out.splitlines() if x.startswith(row))
        assert line.endswith("fits"), line
    assert "MACs on the NPU" in out and "Ethos_U55_High_End_Embedded" in out and "built " in out
