"""benchmarks/latency.py's peer toolchains (benchmarks/peers.py) without the peers installed: the one-line skip
message, a failing peer as a row note, --no-peers, and how report.py renders such rows."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def peers(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import peers

    return peers


def test_missing_peers_are_one_line_naming_the_rows_and_the_extra(peers, monkeypatch):
    monkeypatch.setattr(peers, "missing", lambda: ["litert-torch", "ai-edge-quantizer", "executorch"])
    lines = []
    assert peers.rows(None, torch.zeros(1), torch.zeros(1), 3, None, log=lines.append) == []
    assert len(lines) == 1 and "\n" not in lines[0]
    assert all(label in lines[0] for label in peers.PEERS)
    assert peers.INSTALL_HINT in lines[0] and ".[peers]" in lines[0]


def test_one_missing_package_skips_only_its_rows(peers):
    msg = peers.skip_message(["executorch"])
    assert "ExecuTorch" in msg and "litert-torch PT2E" not in msg


def test_a_failing_peer_is_a_row_with_a_note(peers, monkeypatch):
    monkeypatch.setattr(peers, "missing", lambda: [])

    def boom(*args):
        raise RuntimeError("no lowering for aten.frobnicate")

    def fine(model, calib_x, x, repeats, timer, tmp, cache):
        med, p90 = timer(lambda: None, repeats)
        return {"median_ms": med, "p90_ms": p90, "file_bytes": 10, "agree_fn": lambda xi: model(xi)}

    monkeypatch.setattr(peers, "boom", boom, raising=False)
    monkeypatch.setattr(peers, "fine", fine, raising=False)
    monkeypatch.setattr(peers, "PEERS", {"Boom": ("boom", ()), "Fine": ("fine", ())})
    model = torch.nn.Linear(4, 3)
    rows = peers.rows(model, torch.randn(5, 4), torch.randn(1, 4), 3, lambda fn, n: (1.0, 2.0), log=lambda _: None)
    assert rows[0] == {"runtime": "Boom", "median_ms": None, "p90_ms": None,
                       "note": "failed: RuntimeError: no lowering for aten.frobnicate"}
    assert rows[1] == {"runtime": "Fine", "median_ms": 1.0, "p90_ms": 2.0, "file_bytes": 10, "agree_fp32": 1.0}


def test_report_renders_peer_rows_and_keeps_the_old_table_without_them(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import report

    old = [{"runtime": "torch FP32", "median_ms": 3.0, "p90_ms": 3.5, "ratio_to_litert_int8": 0.8}]
    assert report._latency_table(old) == ["| runtime | median ms | p90 ms | ratio to LiteRT int8 |",
                                          "|---|---:|---:|---:|", "| torch FP32 | 3.00 | 3.50 | 0.80x |"]
    rows = old + [{"runtime": "ExecuTorch XNNPACK (int8)", "median_ms": None, "p90_ms": None,
                   "ratio_to_litert_int8": None, "note": "failed: ValueError: a|b"},
                  {"runtime": "LiteRT (litert-torch FP32)", "median_ms": 1.4, "p90_ms": 1.5, "file_bytes": 3336848,
                   "ratio_to_litert_int8": 0.4, "agree_fp32": 1.0, "note": "335 of 335 ops in float"}]
    table = report._latency_table(rows)
    assert table[0].endswith("| file bytes | note |")
    assert table[2] == "| torch FP32 | 3.00 | 3.50 | 0.80x | - |  |"
    assert table[3] == "| ExecuTorch XNNPACK (int8) | - | - | - | - | failed: ValueError: a/b |"
    assert table[4] == ("| LiteRT (litert-torch FP32) | 1.40 | 1.50 | 0.40x | 3,336,848 | agreement 100%; "
                        "335 of 335 ops in float |")
    intro = report._latency_peers({"peers": {"litert-torch": "0.10.0", "executorch": "1.5.1"},
                                   "peers_skipped": "peer rows skipped (ai-edge-quantizer not installed): ..."})
    assert "litert-torch 0.10.0" in intro and "ExecuTorch 1.5.1" in intro and "peer rows skipped" in intro
    assert report._latency_peers({}) == ""


def test_no_peers_option_skips_them(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import latency

    seen = {}

    def bench_model(name, *args):
        seen[name] = latency.RUN_PEERS
        return {}

    monkeypatch.setattr(latency, "RUN_PEERS", True)
    monkeypatch.setattr(latency, "RESULTS", tmp_path)
    monkeypatch.setattr(latency, "bench_model", bench_model)
    monkeypatch.setattr(latency.report, "main", lambda argv: 0)
    assert latency.main(["--no-peers", "--only", "cifar10-vit", "--repeats", "1"]) == 0
    assert seen == {"cifar10-vit": False}
    assert latency._peer_rows(None, None, None, 1, {}) == []
