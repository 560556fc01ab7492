"""tsptq eval's engines, workers and ranks: the C engine is the integer model, and the results do not depend on how
many processes computed them."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tsptq.data import datasets
from tsptq.cli.main import main
from tsptq.evaluation.engines import CRunner, SimulatorRunner, resolve
from tsptq.intmodel.lower import lower
from tsptq.quant.quantize import quantize
from tsptq.evaluation.shards import ShardPool, split_range

# Tiers (tests/conftest.py): the C engine needs a C compiler (`cc`); those tests, the worker pools and torchrun are `slow`.
needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")


@pytest.fixture(scope="module")
def setup(cifar_vit):
    """cifar10-vit (resolve_model("cifar10-vit"): tests/conftest.py's shared one), the first 32 bundled training
    images and the first 90 bundled test images."""
    return cifar_vit.model, cifar_vit.train.take(32), cifar_vit.test.take(90)


@needs_cc
@pytest.mark.cc
@pytest.mark.slow
@pytest.mark.parametrize("method", ["minmax", "tsptq"])
def test_c_engine_gives_the_integer_models_logits_and_class_token(setup, method):
    model, calib, test = setup
    qm = quantize(model, calib, method, progress=False)
    runner, note = resolve(qm, "c")
    assert isinstance(runner, CRunner) and note is None
    x = datasets.to_model_input(test.images[:12], model.cfg)
    logits, cls = runner(x)
    im = lower(qm)
    out, vals = im.run(im.quantize_input(x.numpy()), keep=True)
    np.testing.assert_array_equal(logits, im.dequantize_output(out).reshape(len(out), -1))
    # The class token read from the C arena after each invoke is the head's input, decoded.
    head = im.ops[-1]
    t = im.tensors[head.inputs[0]]
    assert t.name == "norm.class_vector"
    expected = (vals[head.inputs[0]].reshape(len(x), -1).astype(np.float32) - t.zp) * np.asarray(t.quant.scale, np.float32)
    np.testing.assert_array_equal(cls, expected)
    # ... and it is the class token: close to the float model's final-norm class token.
    fp32_cls = SimulatorRunner(quantize(model, calib, "fp32"), faithful=False)(x)[1]
    cos = (cls * fp32_cls).sum(-1) / np.linalg.norm(cls, axis=-1) / np.linalg.norm(fp32_cls, axis=-1)
    assert cos.min() > 0.95


def test_methods_without_an_integer_model_fall_back_and_say_so(setup):
    model, calib, _ = setup
    qm = quantize(model, calib, "minmax", "W6A6", progress=False)
    runner, note = resolve(qm, "c")
    assert isinstance(runner, SimulatorRunner) and runner.engine == "float32"
    assert "no integer model" in note


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 40])
def test_split_range_covers_every_batch_once(parts):
    pieces = split_range(3, 20, parts)
    assert pieces[0][0] == 3 and pieces[-1][1] == 20
    assert all(a < b for a, b in pieces) and all(p[1] == q[0] for p, q in zip(pieces, pieces[1:]))


@needs_cc
@pytest.mark.cc
@pytest.mark.slow
@pytest.mark.parametrize("engine", ["c", "faithful", "float32"])
def test_two_workers_give_exactly_what_one_gives(setup, engine):
    model, calib, test = setup
    runner, _ = resolve(quantize(model, calib, "tsptq", progress=False), engine)
    assert runner.engine == engine
    with ShardPool(test, model.cfg, 20, workers=1, progress=False) as one:
        a = one.run(runner)
    with ShardPool(test, model.cfg, 20, workers=2, progress=False) as two:
        b = two.run(runner)
        c = two.run(runner, 20, 80)  # a rank's share of the batch grid
    for x, y in zip(a, b):
        assert x.shape == y.shape and np.array_equal(x, y)
    assert np.array_equal(c[0], a[0][20:80]) and np.array_equal(c[1], a[1][20:80])
    with pytest.raises(ValueError, match="batch grid"):
        ShardPool(test, model.cfg, 20).run(runner, 10, 30)


def _eval_args(out: Path, *extra, images: int = 120, batch: int = 20):
    return ["eval", "--model", "cifar10-vit", "--data", "bundled", "--methods", "fp32,minmax,tsptq",
            "--calib-images", "16", "--eval-images", str(images), "--batch-size", str(batch), "--quiet", "--json",
            str(out), *extra]


@needs_cc
@pytest.mark.cc
@pytest.mark.slow
@pytest.mark.parametrize("images, batch", [(120, 20), (30, 50)])  # (30, 50): one batch, so rank 0 has no share
def test_torchrun_with_two_gloo_ranks_writes_the_same_json_as_one_process(tmp_path, images, batch):
    one = tmp_path / "one.json"
    assert main(_eval_args(one, "--workers", "1", "--compare", "tsptq,minmax", images=images, batch=batch)) == 0
    two = tmp_path / "two.json"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "tsptq.cli.main",
                           *_eval_args(two, "--workers", "1", "--compare", "tsptq,minmax", images=images, batch=batch)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 ranks" in proc.stderr
    assert two.read_bytes() == one.read_bytes()
    report = json.loads(one.read_text())
    assert [r["method"] for r in report["results"]] == ["fp32", "minmax", "tsptq"]
    assert all(r["engine"] == "c" for r in report["results"][1:])
    assert report["comparisons"][0]["a"] == "tsptq" and "mcnemar_p" in report["comparisons"][0]


@needs_cc
@pytest.mark.cc
@pytest.mark.slow
def test_eval_rows_carry_intervals_and_compare_prints_the_paired_difference(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(_eval_args(out, "--workers", "2", "--compare", "tsptq,minmax", "--json-timings")) == 0
    printed = capsys.readouterr().out
    assert "tsptq - minmax (top-1, paired over 120 images)" in printed and "McNemar p" in printed
    rows = json.loads(out.read_text())["results"]
    for r in rows[1:]:
        lo, hi = r["drop_ci"]
        assert lo <= r["drop"] <= hi
        lo, hi = r["agreement_ci"]
        assert lo <= r["agreement"] <= hi and (hi > lo or r["agreement"] == 100.0)
        assert "seconds" in r and "calib_seconds" in r


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--compare", "tsptq"], "--compare takes two methods"),
    (["--compare", "tsptq,twin", "--methods", "fp32,tsptq"], "'twin' is not among --methods"),
])
def test_bad_eval_options_are_one_line_errors(args, message, capsys):
    assert main(["eval", "--quiet", "--data", "bundled", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_engine_c_without_a_compiler_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("CC", "no-such-compiler")
    assert main(["eval", "--quiet", "--data", "bundled", "--eval-images", "10", "--methods", "fp32,minmax",
                 "--engine", "c"]) == 2
    assert "--engine c: the C runtime cannot be built here" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_device_cuda_without_a_gpu_is_a_clear_error(capsys):
    assert main(["eval", "--quiet", "--data", "bundled", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_the_simulator_state_copies_to_a_device(tiny_vits):
    """What --device cuda does first (here onto the CPU): the model config inside is a frozen dataclass."""
    from tsptq.evaluation.engines import _to_device

    cfg, graph, cal, images = tiny_vits(4)
    qm = quantize(graph, cal, "tsptq", progress=False)
    moved = _to_device(qm, "cpu")
    x = datasets.to_model_input(images.images, cfg)
    assert moved is not qm and moved.graph.cfg == cfg and torch.equal(moved(x), qm(x))


@pytest.mark.slow
def test_when_rank_0_fails_every_rank_stops_with_its_error(tmp_path):
    """Only rank 0 calibrates: its failure must reach the other ranks instead of leaving them in a broadcast."""
    script = tmp_path / "ranks.py"
    # Each rank writes its own file: two processes printing to one pipe interleave their writes.
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from tsptq.evaluation.distributed import from_environment\n"
        "c = from_environment()\n"
        "lines = []\n"
        "try:\n"
        "    c.share_result(lambda: (_ for _ in ()).throw(ValueError('calibration broke')))\n"
        "except Exception as e:\n"
        "    lines.append(f'{type(e).__name__}: {e}')\n"
        "lines.append(f'then got {c.share_result(lambda: \"runner\")}')\n"
        "Path(sys.argv[1], f'rank{c.rank}.txt').write_text('\\n'.join(lines))\n"
        "c.close()\n")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "rank0.txt").read_text().splitlines() == ["ValueError: calibration broke", "then got runner"]
    assert (tmp_path / "rank1.txt").read_text().splitlines() == [
        "TsptqError: rank 0 failed, so rank 1 stops: ValueError: calibration broke", "then got runner"]
