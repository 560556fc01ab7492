"""benchmarks/report.py's sections for a second model (the Swin): the C-runtime-vs-integer-model section, the boards
table of another model with a row for a board it does not fit, and boards.py --model writing those results apart
from cifar10-vit's. Synthetic results: nothing is measured."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
STAMP = {"date": "2026-01-01", "machine": "2 cores, x86_64"}


@pytest.fixture
def report(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import report

    return report


def bitexact(differing: int, same: bool = True) -> dict:
    c = {"images": 1000, "bit_exact_fraction": (1000 - differing) / 1000, "equal_byte_fraction": 1 - differing / 1e5,
         "top1_c": 41.2, "top1_reference": 41.2, "c_ms_per_image": 1.234, "arena_bytes": 123456, "data": "cifar10-test"}
    v = {"eval_images": 1000, "top1_file": 41.2, "bytes_equal_to_in_memory": same,
         "simulator": {"images": 1000, "agreement": 99.1, "logit_abs_err_mean": 0.01, "logit_abs_err_max": 0.2,
                       "top1_integer": 41.2, "top1_simulator": 41.0}}
    return {"section": "bitexact-cifar10-swin", "model": "cifar10-swin", "data": "cifar10-test", "eval_images": 1000,
            "calib_images": 32, "rows": [{"method": "tsptq", "bits": "W8A8", "images": 1000,
                                          "images_differing": differing, "c_runtime": c, "verify": v}], **STAMP}


def test_bitexact_section_counts_differing_images_and_says_whether_the_bar_is_met(report):
    lines = report.render_bitexact({"bitexact-cifar10-swin": bitexact(0)})
    assert lines[0] == "## bitexact-cifar10-swin: the C runtime against the Python integer model"
    row = next(line for line in lines if line.startswith("| tsptq W8A8"))
    assert row == ("| tsptq W8A8 | 1,000 | 0 | 100.0000% | yes | 41.20 | 41.20 | 41.00 | 99.10 | 0.0100 | 0.2000 | "
                   "1.23 | 123,456 |")
    assert any(line.endswith("every image: met.") for line in lines)
    assert any("**not met**" in line for line in report.render_bitexact({"bitexact-cifar10-swin": bitexact(3)}))
    assert any("**not met**" in line
               for line in report.render_bitexact({"bitexact-cifar10-swin": bitexact(0, same=False)}))
    assert report.render_bitexact({}) == []


def board(target: str, model: str, fits: bool = True) -> dict:
    mem = {"model_bytes": 2_000_000, "arena_bytes": 300_000, "io_bytes": 4_000, "activation_lower_bound": 290_000,
           "model_capacity": 4_194_304, "arena_capacity": 4_194_304}
    r = {"target": target, "runtime": "tsptq", "model": model, "method": "tsptq", "bits": "W8A8", "calib_images": 32,
         "memory": mem, **STAMP}
    if not fits:
        return {**r, "does_not_fit": f"{target}: does not fit: the model is 5,000,000 B but the flash holds 4,194,304 B"}
    return {**r, "memory": {**mem, "firmware": {}},
            "result": {"images": 10, "top1_board": 40.0, "top1_reference": 40.0, "bit_exact_fraction": 1.0,
                       "max_abs_diff_codes": 0, "ops": [],
                       "latency": {"unit": "ms", "median": 2.5, "p90": 2.7}}}


def test_a_second_model_gets_its_own_boards_section_with_a_does_not_fit_row(report):
    results = {"board-host": board("host", "cifar10-vit"), "board-host-cifar10-swin": board("host", "cifar10-swin"),
               "board-mps2-an386-cifar10-swin": board("mps2-an386", "cifar10-swin", fits=False)}
    page = report.render(results)
    vit = page.index("## On the boards: cifar10-vit")
    swin = page.index("## On the boards: cifar10-swin")
    assert vit < swin
    vit_part, swin_part = page[vit:swin], page[swin:]
    assert vit_part.count("| host | tsptq |") == 1 and "mps2-an386" not in vit_part.split("|---|")[-1]
    assert "`python benchmarks/boards.py --model cifar10-swin`" in swin_part
    assert "| host | tsptq | 10 | 40.00 | 40.00 | 1.0000 | 0 | 2.5 ms | 2.7 | 2,000,000 | 304,000 | - |" in swin_part
    assert ("| mps2-an386 | tsptq | - | - | - | - | - | mps2-an386: does not fit: the model is 5,000,000 B but the "
            "flash holds 4,194,304 B | - | 2,000,000 (4,194,304) | 304,000 (4,194,304) | - | 2026-01-01 |") in swin_part
    # the Swin's results alone: no cifar10-vit section
    assert "## On the boards: cifar10-vit" not in report.render({k: v for k, v in results.items() if "swin" in k})


def test_boards_model_option_writes_its_own_files_and_a_row_for_a_board_it_does_not_fit(report, monkeypatch,
                                                                                          tmp_path):
    import boards
    from tsptq.deploy.pipeline import DoesNotFitError
    from tsptq.errors import TsptqError
    from tsptq.intmodel import integer
    from tsptq.tflite import writer

    needs = {"model_bytes": 5_000_000, "arena_bytes": 300_000, "io_bytes": 4_000, "activation_lower_bound": 1}
    monkeypatch.setattr(integer, "build", lambda src, progress=True: (src, None))
    monkeypatch.setattr(writer, "to_tflite", lambda im: b"")
    monkeypatch.setattr(boards, "memory_needs", lambda im, data: needs)
    monkeypatch.setattr(boards, "macs_by_op", lambda im: {"TSPTQ_FC_2S": 7})
    monkeypatch.setattr(boards, "RESULTS", tmp_path)
    monkeypatch.setattr(boards.report, "main", lambda argv: 0)
    seen = []

    def deploy(src, opts):
        seen.append((src.model, opts.target))
        if opts.target == "mps2-an386":
            raise DoesNotFitError("mps2-an386: does not fit: the model is 5,000,000 B but the flash holds 4,194,304 B")
        if opts.target == "rpi":
            raise TsptqError("qemu-aarch64-static: not found")
        return {"target": opts.target, "result": {}}

    monkeypatch.setattr(boards, "deploy", deploy)
    rc = boards.main(["--model", "cifar10-swin", "--only", "host", "--only", "rpi", "--only", "mps2-an386"])
    assert rc == 1  # rpi failed
    assert seen == [("cifar10-swin", "host"), ("cifar10-swin", "rpi"), ("cifar10-swin", "mps2-an386")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board-host-cifar10-swin.json",
                                                          "board-mps2-an386-cifar10-swin.json"]
    row = json.loads((tmp_path / "board-mps2-an386-cifar10-swin.json").read_text())
    assert row["does_not_fit"].startswith("mps2-an386: does not fit") and "result" not in row
    assert row["memory"] == {**needs, "model_capacity": 4_194_304, "arena_capacity": 4_194_304}
    assert row["macs_by_op"] == {"TSPTQ_FC_2S": 7} and row["model"] == "cifar10-swin"
    # cifar10-vit keeps its file names
    assert boards.main(["--only", "host"]) == 0
    assert (tmp_path / "board-host.json").exists()


def test_the_swin_accuracy_section_says_whether_its_bars_are_met(report):
    rows = [{"method": "fp32", "top1": 81.5, "drop": 0.0, "agreement": 100.0, "cosine_mean": 1.0, "cosine_min": 1.0},
            {"method": "tsptq", "top1": 81.0, "drop": 0.5, "agreement": 96.5, "cosine_mean": 0.99, "cosine_min": 0.9,
             "engine": "c"}]
    r = {"model": "cifar10-swin", "data": "cifar10-test", "eval_images": 2000, "calib_images": 32,
         "tables": {"W8A8": rows, "W6A6": rows}, **STAMP}
    page = report.render({"cifar10-swin": r})
    line = ("Bars: FP32 top-1 >= 80%: 81.50, met; tsptq W8A8 agreement with FP32 >= 97%: 96.50, **not met**.")
    assert page.count(line) == 1 and page.index(line) < page.index("**W6A6**")
    assert "Bars:" not in report.render({"cifar10-vit": {**r, "model": "cifar10-vit"}})
