"""Threads in the C runtime (tsptq_set_threads, runtime_c/src/threads.c): the matrix products and the row-wise ops
split over a static pthread pool give the one-thread bytes, on every host build; bad counts are refused; a build
without TSPTQ_THREADS (bare metal's) has no pool and refuses n > 1; the pool under ASan + UBSan and under
ThreadSanitizer (a standalone run_model, `--threads 3`).

The model is a random 2-block ViT on 32x32 inputs (65 tokens, 4 heads): enough rows that the split ops split (FC
blocks of 16 rows on AVX-512 VNNI, 32 on AMX; the tests count the pool's jobs), small enough to calibrate in a
second. A random tiny Swin (tests/test_swin_quant.py's) checks Swin's two ops, TSPTQ_BMM_BIAS and
TSPTQ_SOFTMAX_MASK_2S, split by rows the same way.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tsptq.errors import RuntimeCError
from tsptq.runtime import c_build
from tsptq.runtime.c_build import build_library, compiler, cpu_has, have_compiler

RUNTIME = Path(__file__).resolve().parent.parent / "runtime_c"
CORE_SOURCES = sorted(str(p) for p in (RUNTIME / "src").rglob("*.c"))

pytestmark = [pytest.mark.skipif(not have_compiler(), reason="no C compiler (set CC or install gcc)"), pytest.mark.cc]
slow = pytest.mark.slow

from tsptq.runtime.c_binding import MAX_THREADS, CModel, default_variant  # noqa: E402


@pytest.fixture(scope="module")
def vit():
    """(.tflite bytes, 4 quantized inputs, the Python integer model's outputs)."""
    import torch

    from tsptq.data import datasets
    from tsptq.intmodel.lower import lower
    from tsptq.model.vit import ViTConfig, VisionTransformer
    from tsptq.quant.observers import record
    from tsptq.quant.qvit import Graph
    from tsptq.quant.quantize import quantize
    from tsptq.tflite.reader import parse_tflite
    from tsptq.tflite.writer import to_tflite

    torch.manual_seed(0)
    cfg = ViTConfig(img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=64, depth=2, num_heads=4,
                    mlp_hidden=128, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)
    graph = Graph.from_model(VisionTransformer(cfg).eval())
    rng = np.random.default_rng(0)
    imgs = datasets.ImageSet(rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), np.zeros(12, np.int64), "random")
    data = to_tflite(lower(quantize(graph, record(graph, imgs, 8, False), "tsptq", progress=False)))
    fm = parse_tflite(data)
    x = fm.quantize_input(datasets.to_model_input(imgs.images[8:], cfg).numpy())
    vit_parts["cfg"], vit_parts["images"] = cfg, datasets.ImageSet(imgs.images[8:], imgs.labels[8:], "random")
    return data, x, fm.run(x)


vit_parts: dict = {}  # the vit fixture's config and evaluation images (for verify_c)


def _variants():
    out = ["reference"]
    if cpu_has("avx2"):
        out.append("avx2")
    if default_variant() not in out:
        out.append(default_variant())
    return out


def _jobs(cm) -> int:
    """Jobs the library's pool has run split (tq_pool_jobs): the byte checks below mean something only if ops split."""
    import ctypes

    cm.lib.tq_pool_jobs.restype = ctypes.c_uint32
    return int(cm.lib.tq_pool_jobs())


@pytest.mark.parametrize("variant", _variants())
def test_threads_give_the_one_thread_bytes(vit, variant):
    data, x, want = vit
    for n in (1, 2, 3, 4):
        cm = CModel(data, variant=variant, threads=n)
        assert cm.threads == n
        before = _jobs(cm)
        got = cm.run(x)
        assert np.array_equal(got, want), f"{variant}, {n} threads"
        split = _jobs(cm) - before
        # one thread never uses the pool; more split every FC, BATCH_MATMUL, softmax, LayerNorm and ADD of each image
        assert split == 0 if n == 1 else split >= 2 * 4 * len(x), f"{variant}, {n} threads: {split} split ops"
    cm.set_threads(1)  # back to one thread: the same bytes again
    assert cm.threads == 1 and np.array_equal(cm.run(x), want)


@pytest.fixture(scope="module")
def swin():
    """A random tiny Swin (tests/test_swin_quant.py's shifted 32x32 one: stage 0 has 16 windows of 16 tokens, 2
    heads, so its TSPTQ_BMM_BIAS and TSPTQ_SOFTMAX_MASK_2S have rows enough to split): (.tflite bytes, 4 quantized
    inputs, the Python integer model's outputs)."""
    from test_swin_integer import fitted
    from test_swin_quant import SHIFTED, images, tiny
    from tsptq.data.datasets import to_model_input
    from tsptq.intmodel.lower import lower
    from tsptq.tflite.writer import to_tflite

    im = lower(fitted(tiny(SHIFTED)))
    x = im.quantize_input(to_model_input(images(4, SHIFTED.img_size, seed=1).images, SHIFTED).numpy())
    return to_tflite(im), x, im.run(x)


SWIN_OPS = ("TSPTQ_BMM_BIAS", "TSPTQ_SOFTMAX_MASK_2S")


@pytest.mark.parametrize("variant", _variants())
def test_swin_ops_split_and_give_the_one_thread_bytes(swin, variant):
    """Swin's scores (TSPTQ_BMM_BIAS) and masked softmax (TSPTQ_SOFTMAX_MASK_2S) split by rows: 1, 2 and 3 threads
    give the same bytes, and each of the two ops, run alone (tq_run_one) on 2 threads, runs split jobs."""
    import ctypes

    data, x, want = swin
    for n in (1, 2, 3):
        assert np.array_equal(CModel(data, variant=variant, threads=n).run(x), want), f"{variant}, {n} threads"
    cm = CModel(data, variant=variant, threads=2)
    cm.run(x)
    cm.lib.tq_run_one.restype = ctypes.c_int
    cm.lib.tq_run_one.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    split = dict.fromkeys(SWIN_OPS, 0)
    for k in range(cm.num_ops):
        name = cm.lib.tsptq_op_name(cm._m, k).decode()
        if name in split:  # its inputs are whatever the arena holds now: only the job count matters here
            before = _jobs(cm)
            assert cm.lib.tq_run_one(cm._m, k) == 0
            split[name] += _jobs(cm) - before
    assert all(split[op] >= 1 for op in SWIN_OPS), f"{variant}: split jobs {split}"
    assert np.array_equal(cm.run(x), want)  # the invoke after them writes the bytes again


def test_two_models_with_different_counts_share_the_pool(vit):
    data, x, want = vit
    a, b = CModel(data, threads=4), CModel(data, threads=2)
    for _ in range(3):
        assert np.array_equal(a.run(x), want) and np.array_equal(b.run(x), want)


def test_models_invoked_from_two_python_threads_at_once_give_their_bytes(vit):
    """One job at a time: the second caller finds the pool busy and runs its op alone (the same bytes)."""
    from concurrent.futures import ThreadPoolExecutor

    data, x, want = vit
    models = [CModel(data, threads=2), CModel(data, threads=3)]

    def work(cm):
        return all(np.array_equal(cm.run(x), want) for _ in range(5))

    with ThreadPoolExecutor(2) as ex:  # ctypes releases the GIL during the call: the two invokes overlap
        assert all(ex.map(work, models))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_starts_its_own_pool(vit):
    """The pool's fork handlers: the child has none of the parent's workers, starts its own, and gets the bytes."""
    data, x, want = vit
    cm = CModel(data, threads=3)
    assert np.array_equal(cm.run(x), want)
    pid = os.fork()
    if pid == 0:  # the child: no pytest from here on, only an exit status
        ok = False
        try:
            cm.set_threads(2)
            before = _jobs(cm)
            ok = np.array_equal(cm.run(x), want) and _jobs(cm) > before and \
                np.array_equal(CModel(data, threads=4).run(x), want)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert np.array_equal(cm.run(x), want)  # the parent's pool still runs


def test_bad_thread_counts_are_refused(vit):
    data, x, want = vit
    cm = CModel(data, threads=2)
    top = cm.max_threads()
    # the one Python bound of --threads (tsptq.runtime.c_binding.MAX_THREADS: the pipeline's, benchmarks/latency.py's)
    # is the header's TSPTQ_MAX_THREADS and the built library's
    header = (RUNTIME / "include" / "tsptq.h").read_text()
    assert re.search(r"#define TSPTQ_MAX_THREADS (\d+)", header).group(1) == str(MAX_THREADS) == str(top)
    from tsptq.deploy import pipeline
    assert pipeline.MAX_THREADS is MAX_THREADS
    for n in (0, -1, top + 1, 2**40):
        with pytest.raises(RuntimeCError) as e:
            cm.set_threads(n)
        assert e.value.name == "TSPTQ_ERR_ARGUMENT" and "threads" in str(e.value) and f"1 to {top}" in str(e.value)
        assert cm.threads == 2  # unchanged
    with pytest.raises(RuntimeCError, match="1 to 8"):
        CModel(data, threads=0)
    cm.set_threads(top)
    assert cm.threads == top and np.array_equal(cm.run(x), want)


def test_build_without_the_pool(vit, tmp_path):
    """TSPTQ_THREADS left at 0 (what every bare-metal target builds): no pthread symbol, one thread only."""
    data, x, want = vit

    core = [str(p.relative_to(c_build.RUNTIME_DIR)) for p in c_build.runtime_sources()]
    lib = build_library("reference", extra_flags=["-UTSPTQ_THREADS"], sources=core + ["host/host_clock.c"],
                        name="libtsptq_nothreads.so")
    nm = subprocess.run(["nm", "-D", str(lib)], capture_output=True, text=True)
    if nm.returncode == 0:
        assert "pthread" not in nm.stdout
    cm = CModel(data, library=lib)
    assert cm.max_threads() == 1 and cm.threads == 1
    with pytest.raises(RuntimeCError, match="built without TSPTQ_THREADS"):
        cm.set_threads(2)
    cm.set_threads(1)
    assert np.array_equal(cm.run(x), want)


def _driver(tmp_path: Path, name: str, flags: list[str]) -> Path:
    """runtime_c/tools/run_model.c with the whole runtime and the pool, built with `flags` (a sanitizer)."""
    exe = tmp_path / name
    cmd = [compiler(), "-std=c99", "-g", "-O1", "-Wall", "-Wextra", "-Werror", *flags, "-DTSPTQ_THREADS=1",
           "-pthread", "-I", str(RUNTIME / "include"), "-I", str(RUNTIME / "src"),
           str(RUNTIME / "tools" / "run_model.c"), *CORE_SOURCES, "-lm", "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"the compiler cannot build with {' '.join(flags)}: {proc.stderr[-300:]}")
    return exe


def _run_driver(exe: Path, vit, tmp_path: Path, env: dict, threads: int = 3) -> subprocess.CompletedProcess:
    data, x, want = vit
    model, inp, outp = tmp_path / "m.tflite", tmp_path / "in.bin", tmp_path / "out.bin"
    model.write_bytes(data)
    inp.write_bytes(x.tobytes())
    proc = subprocess.run([str(exe), "--threads", str(threads), str(model), str(inp), str(outp)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert outp.read_bytes() == want.tobytes()
    return proc


SIMD_FLAGS = {"reference": ["-DTSPTQ_REFERENCE_ONLY"], "avx2": ["-mavx2", "-DTSPTQ_USE_AVX2"],
              "avx512vnni": c_build.AVX512VNNI_FLAGS, "amx": c_build.AMX_FLAGS}


@slow
def test_pool_under_asan_ubsan(vit, swin, tmp_path):
    """The split ops (per-thread scratch, row ranges) under AddressSanitizer + UBSan, 3 threads, the host's SIMD: the
    ViT and the Swin (its TSPTQ_BMM_BIAS, TSPTQ_SOFTMAX_MASK_2S)."""
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    exe = _driver(tmp_path, "run_model_asan", flags + SIMD_FLAGS.get(default_variant(), []))
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", UBSAN_OPTIONS="halt_on_error=1")
    for model in (vit, swin):
        proc = _run_driver(exe, model, tmp_path, env)
        assert "AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr


@slow
@pytest.mark.parametrize("simd", ["reference", "host"])
def test_pool_under_thread_sanitizer(vit, swin, tmp_path, simd):
    """No data race in the pool or the split ops (the ViT's, the Swin's): ThreadSanitizer (-fsanitize=thread), 2 and
    3 threads. By hand:
    cc -std=c99 -g -O1 -fsanitize=thread -DTSPTQ_THREADS=1 -pthread -I runtime_c/include -I runtime_c/src
    runtime_c/tools/run_model.c runtime_c/src/*.c runtime_c/src/ops/*.c -lm && ./a.out --threads 3 M.tflite IN OUT"""
    flags = SIMD_FLAGS["reference"] if simd == "reference" else SIMD_FLAGS.get(default_variant(), [])
    exe = _driver(tmp_path, f"run_model_tsan_{simd}", ["-fsanitize=thread", *flags])
    probe = subprocess.run([str(exe)], capture_output=True, text=True)
    if "FATAL: ThreadSanitizer" in probe.stderr:  # e.g. an unsupported memory layout (ASLR) on this kernel
        pytest.skip(f"ThreadSanitizer does not run here: {probe.stderr.strip()[:200]}")
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1:exitcode=66")
    for model in (vit, swin):
        for n in (2, 3):
            proc = _run_driver(exe, model, tmp_path, env, threads=n)
            assert "WARNING: ThreadSanitizer" not in proc.stderr, proc.stderr[-4000:]


def test_verify_c_on_threads(vit, tmp_path, capsys):
    """`tsptq verify --runtime c --threads N`'s library call: bit-exact, the count reported; the CLI refuses
    --threads without --runtime c in one line."""
    from tsptq.cli.main import main as tsptq_main
    from tsptq.runtime.c_binding import verify_c

    data = vit[0]
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    r = verify_c(path, vit_parts["images"], vit_parts["cfg"], batch_size=2, threads=3)
    assert r["bit_exact_fraction"] == 1.0 and r["threads"] == 3 and r["images"] == 4
    capsys.readouterr()
    assert tsptq_main(["verify", str(path), "--threads", "2"]) == 2
    assert "--threads applies to --runtime c" in capsys.readouterr().err


# --- tsptq-deploy --threads (the POSIX agent's --threads) -----------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (("--target", "mps2-an386", "--threads", "2"), "is bare metal: one thread"),
    (("--target", "host", "--threads", "0"), "--threads must be 1 to 8, got 0"),
    (("--target", "host", "--threads", "9"), "--threads must be 1 to 8, got 9"),
    (("--target", "host", "--threads", "2", "--runtime", "litert"), "--threads applies to --runtime tsptq"),
    (("--target", "rpi", "--threads", "2", "--port", "/dev/null"), "start it there with `--threads 2`"),
])
def test_deploy_threads_refused_in_one_line(capsys, args, message):
    from tsptq.cli.deploy import main as deploy_main

    assert deploy_main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


@slow
def test_deploy_host_threads_bit_exact(tmp_path):
    """`tsptq-deploy --target host --threads 2`: the agent runs each image on 2 threads, bit-exact with the host
    integer reference."""
    import json

    from tsptq.cli.deploy import main as deploy_main
    from tsptq.deploy.targets import load_target

    if load_target("host").missing_tools():
        pytest.skip("host: no C compiler")
    out = tmp_path / "report.json"
    rc = deploy_main(["--target", "host", "--threads", "2", "--eval-images", "8", "--json", str(out), "--quiet"])
    report = json.loads(out.read_text())
    assert rc == 0, report["result"]
    assert report["threads"] == 2 and report["result"]["images"] == 8
    assert report["result"]["bit_exact_fraction"] == 1.0 and not report["result"]["mismatched_images"]


def test_agent_refuses_a_bad_thread_count(tmp_path):
    from tsptq.deploy.targets import build, load_target

    target = load_target("host")
    if target.missing_tools():
        pytest.skip("host: no C compiler")
    proc = subprocess.run([str(build(target)), "--stdio", "--threads", "99"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 2 and "--threads 99: this build runs 1 to 8 threads" in proc.stderr
