"""The C runtime (runtime_c/): loader, planner, interpreter and the ctypes binding against the Python integer model.

(a) byte-identical outputs to the Python integer model on 100 bundled CIFAR-10 test images, for every method's file;
(b) the arena equals the Python planner's (plus, in the AVX-512 VNNI and AMX builds, exactly the FC weights they
    prepack) and the activation plan is within 10% of the lower bound;
(c) bad files and bad calls give the specific error code and a readable message, never a crash;
(d) `emit-c` output compiles with -std=c99 -Wall -Wextra -Werror into a program whose outputs equal Python's;
(e) the core under AddressSanitizer + UBSan, as a standalone program, on valid and bad files;
(f) a short libFuzzer run of the loader (clang), seeded with valid exported models.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as S

from tsptq.runtime import c_build
from tsptq.runtime.c_build import build_library, compiler, cpu_has, have_compiler
from tsptq.data import datasets
from tsptq.errors import RuntimeCError, TsptqError
from tsptq.intmodel.lower import lower
from tsptq.intmodel.planner import persistent_params, plan
from tsptq.quant.quantize import quantize
from tsptq.tflite.writer import to_tflite
from tsptq.tflite.reader import parse_tflite
from tflite_edit import edit_metadata, repack

RUNTIME = Path(__file__).resolve().parent.parent / "runtime_c"
METHODS = ("tsptq", "minmax", "ptf-log2", "twin")
CORE_SOURCES = sorted(str(p) for p in (RUNTIME / "src").rglob("*.c"))


# Tiers (tests/conftest.py): every test needs a C compiler; the cifar10-vit ones (its calibration and 100 images), the
# sanitizer builds and the libFuzzer run take seconds each and are `slow`; the tiny-model ones are the fast tier.
pytestmark = [pytest.mark.skipif(not have_compiler(), reason="no C compiler (set CC or install gcc)"), pytest.mark.cc]
slow = pytest.mark.slow

from tsptq.runtime.c_binding import CModel, verify_c  # noqa: E402


@pytest.fixture(scope="module")
def cifar(cifar_vit):
    """cifar10-vit exported with each method (one calibration: conftest's cifar_vit), and 100 test images quantized
    with each file's input code."""
    files = {m: cifar_vit.tflite(m) for m in METHODS}
    test = cifar_vit.test.take(100)
    x = datasets.to_model_input(test.images, cifar_vit.cfg).numpy()
    return files, {m: parse_tflite(files[m]).quantize_input(x) for m in METHODS}, test, cifar_vit.cfg


@pytest.fixture(scope="module")
def tiny(tiny_vits):
    """A 1-block random ViT (8x8 input) exported with each method: small files for many-mutation tests and fuzzing."""
    cfg, graph, cal, imgs = tiny_vits(16)
    files = {m: to_tflite(lower(quantize(graph, cal, m, progress=False))) for m in METHODS}
    x = parse_tflite(files["tsptq"]).quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())
    return files, x


def c_error(data: bytes, **kw) -> RuntimeCError:
    with pytest.raises(RuntimeCError) as e:
        CModel(data, **kw)
    return e.value


# --- (a) outputs ---------------------------------------------------------------------------------------------------

@slow
@pytest.mark.parametrize("method", METHODS)
def test_c_outputs_equal_python_integer_model(cifar, method):
    files, xs, _, _ = cifar
    x = xs[method]
    out_c = CModel(files[method]).run(x)
    out_py = parse_tflite(files[method]).run(x)
    assert out_c.dtype == out_py.dtype and out_c.shape == out_py.shape == (100, 10)
    assert np.array_equal(out_c, out_py), f"{method}: {np.mean(out_c != out_py):.4%} of output bytes differ"


@pytest.mark.parametrize("method", METHODS)
def test_tiny_models_equal_python(tiny, method):
    files, x = tiny
    assert np.array_equal(CModel(files[method]).run(x), parse_tflite(files[method]).run(x))


@slow
def test_verify_c_reports_bit_exact_and_top1(cifar, tmp_path):
    files, _, test, cfg = cifar
    path = tmp_path / "m.tflite"
    path.write_bytes(files["twin"])
    r = verify_c(path, test.take(20), cfg)
    assert r["images"] == 20 and r["bit_exact_fraction"] == 1.0 and r["top1_c"] == r["top1_reference"]
    assert r["c_ms_per_image"] > 0


@slow
def test_accessors(cifar):
    files, _, _, _ = cifar
    cm = CModel(files["tsptq"])
    fm = parse_tflite(files["tsptq"])
    assert cm.input_shape == fm.input.shape and cm.output_shape == fm.output.shape
    assert cm.input_dtype == np.int8 and cm.input_bytes == 32 * 32 * 3 and cm.num_ops == len(fm.ops)
    scale, zp = cm.quantization("input")
    assert np.float32(scale) == fm.input.quant.scale[0] and zp == fm.input.zp


@slow
def test_per_op_profile_covers_every_op_and_leaves_outputs_unchanged(cifar):
    from tsptq.runtime.c_binding import profile

    files, xs, _, _ = cifar
    cm = CModel(files["tsptq"])
    before = cm.run(xs["tsptq"][:2])
    rows = profile(cm, xs["tsptq"], repeats=3)
    kinds = {op.kind for op in parse_tflite(files["tsptq"]).ops}
    assert {r["op"] for r in rows} == kinds
    assert abs(sum(r["share"] for r in rows) - 1) < 1e-6 and rows[0]["ms"] > 0
    np.testing.assert_array_equal(cm.run(xs["tsptq"][:2]), before)


# --- (b) the plan ----------------------------------------------------------------------------------------------------

@slow
@pytest.mark.parametrize("method", METHODS)
def test_arena_equals_python_planner_and_is_near_the_bound(cifar, tiny, method):
    for data in (cifar[0][method], tiny[0][method]):
        cm, p = CModel(data), plan(parse_tflite(data))
        # the prepacked FC weights of the AVX-512 VNNI / AMX builds come on top (test_prepacked_weights_*)
        assert (cm.arena_size - cm.prepacked_size, cm.persistent_size, cm.activation_size,
                cm.activation_lower_bound) == (p.arena_size, p.persistent_size, p.activation_size, p.lower_bound)
        assert p.lower_bound <= p.activation_size <= 1.10 * p.lower_bound, p.to_dict()
    # measured on cifar10-vit: 50,736 B planned for a 50,700 B bound (+0.07%)
    assert CModel(cifar[0][method]).activation_size <= 1.001 * CModel(cifar[0][method]).activation_lower_bound


@slow
def test_plan_never_overlaps_live_buffers(cifar):
    """Two buffers alive during the same op never share bytes (checked on the Python mirror of the C plan)."""
    for data in cifar[0].values():
        m = parse_tflite(data)
        p = plan(m)
        spans = [(o, o + m.tensors[i].nbytes, *p.lifetimes[i]) for i, o in p.tensor_offsets.items() if i in p.lifetimes]
        spans += [(o, o + 4 * m.tensors[m.ops[k].inputs[0]].shape[-1], k, k) for k, o in p.scratch_offsets.items()]
        for a in range(len(spans)):
            for b in range(a + 1, len(spans)):
                (s0, e0, f0, l0), (s1, e1, f1, l1) = spans[a], spans[b]
                if f0 <= l1 and f1 <= l0:
                    assert e0 <= s1 or e1 <= s0
                assert e0 <= p.activation_size


# --- (c) bad input ---------------------------------------------------------------------------------------------------

@slow
def test_truncated_files_are_corrupted_errors(cifar, tiny):
    for data in (tiny[0]["tsptq"], cifar[0]["twin"]):
        cuts = sorted(set(range(0, 40)) | set(np.linspace(40, len(data) - 1, 120).astype(int).tolist()))
        for cut in cuts:
            e = c_error(data[:cut])
            assert e.name == "TSPTQ_ERR_CORRUPTED", (cut, str(e))
            assert "truncated" in str(e)


def test_misaligned_model_buffer(tiny):
    """Constant buffers that are not aligned in the file are refused (the runtime reads weights in place)."""
    m = S.ModelT.InitFromPackedBuf(tiny[0]["tsptq"], 0)
    b = flatbuffers.Builder(1 << 20)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")  # the object API packs buffers 1-byte aligned
    e = c_error(bytes(b.Output()))
    assert e.name == "TSPTQ_ERR_ALIGNMENT" and "aligned" in str(e)


def test_wrong_identifier(tiny):
    data = bytearray(tiny[0]["tsptq"])
    data[4:8] = b"XXXX"
    e = c_error(bytes(data))
    assert e.name == "TSPTQ_ERR_BAD_IDENTIFIER" and "TFL3" in str(e)


def test_flipped_bytes_never_crash(tiny):
    """Each single-byte corruption is rejected with an error or still loads and runs (weights may change)."""
    data = tiny[0]["tsptq"]
    x = tiny[1][:1]
    rng = np.random.default_rng(1)
    seen = set()
    for pos in rng.integers(0, len(data), 600):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            CModel(bytes(bad)).run(x)
            seen.add("ok")
        except RuntimeCError as e:
            assert e.code > 0 and str(e)
            seen.add(e.name)
    assert len(seen) >= 3  # the corruptions hit more than one kind of check


def test_newer_metadata_version(tiny):
    """The version the runtime reads is the 'tsptq_format' entry's (tests/test_two_scale_source.py: the entry's
    other problems)."""
    from tsptq.tflite.writer import FORMAT_NAME, format_entry

    def edit(m):
        e = next(e for e in m.metadata if e.name in (FORMAT_NAME, FORMAT_NAME.encode()))
        m.buffers[e.buffer].data = np.frombuffer(format_entry(2), np.uint8)
    e = c_error(repack(tiny[0]["tsptq"], edit))
    assert e.name == "TSPTQ_ERR_VERSION" and "version 2" in str(e)


def test_the_runtime_does_not_read_the_json_metadata(tiny):
    """The two-scale descriptions and the JSON's format/version are the Python tools' (tsptq.tflite.reader refuses
    these files); the C runtime reads only the 'tsptq_format' entry, and loads them."""
    data = tiny[0]["tsptq"]
    for change in (lambda meta: meta["two_scale"].update(ghost={"kind": "log2"}),
                   lambda meta: meta["two_scale"].popitem(), lambda meta: meta.update(format="other"),
                   lambda meta: meta.update(version=2)):
        bad = repack(data, edit_metadata(change))
        CModel(bad)
        with pytest.raises(TsptqError):
            parse_tflite(bad)


def test_newer_schema_version(tiny):
    def edit(m):
        m.version = 4
    assert c_error(repack(tiny[0]["tsptq"], edit)).name == "TSPTQ_ERR_VERSION"


def test_unknown_custom_op_is_named(tiny):
    def edit(m):
        for c in m.operatorCodes:
            if c.customCode == b"TSPTQ_GELU_2S":
                c.customCode = b"TSPTQ_MYSTERY"
    e = c_error(repack(tiny[0]["tsptq"], edit))
    assert e.name == "TSPTQ_ERR_UNSUPPORTED_OP" and "TSPTQ_MYSTERY" in str(e)


def test_unknown_builtin_op_is_named(tiny):
    def edit(m):
        for c in m.operatorCodes:
            if c.builtinCode == S.BuiltinOperator.TRANSPOSE:
                c.builtinCode = c.deprecatedBuiltinCode = S.BuiltinOperator.SOFTMAX
    e = c_error(repack(tiny[0]["minmax"], edit))
    assert e.name == "TSPTQ_ERR_UNSUPPORTED_OP" and "SOFTMAX" in str(e)


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), float("inf")])
def test_bad_scales(tiny, bad):
    def edit(m):
        t = next(t for t in m.subgraphs[0].tensors if t.name == b"blocks.0.norm1")
        t.quantization.scale = np.array([bad], np.float32)
    e = c_error(repack(tiny[0]["minmax"], edit))
    assert e.name == "TSPTQ_ERR_BAD_QUANTIZATION" and "blocks.0.norm1" in str(e)


def test_bad_zero_point_and_custom_option_range(tiny):
    def zp(m):
        next(t for t in m.subgraphs[0].tensors if t.name == b"blocks.0.q").quantization.zeroPoint = np.array([300])
    assert c_error(repack(tiny[0]["minmax"], zp)).name == "TSPTQ_ERR_BAD_QUANTIZATION"


def test_arena_too_small_names_the_size(tiny):
    cm = CModel(tiny[0]["tsptq"])
    need = cm.arena_size - cm.prepacked_size  # the least it runs in (without the prepacked weights, test_prepacked_*)
    e = c_error(tiny[0]["tsptq"], arena_size=need - 16)
    assert e.name == "TSPTQ_ERR_ARENA_TOO_SMALL" and f"{need} bytes needed" in str(e)


def test_wrong_input_and_output_size(tiny):
    cm = CModel(tiny[0]["tsptq"])
    for n in (0, cm.input_bytes - 1, cm.input_bytes + 1):
        with pytest.raises(RuntimeCError) as e:
            cm.invoke_raw(np.zeros(n, np.int8))
        assert e.value.name == "TSPTQ_ERR_INPUT_SIZE" and str(cm.input_bytes) in str(e.value)
    with pytest.raises(RuntimeCError) as e:
        cm.invoke_raw(np.zeros(cm.input_bytes, np.int8), out_len=cm.output_bytes + 1)
    assert e.value.name == "TSPTQ_ERR_OUTPUT_SIZE"
    with pytest.raises(RuntimeCError):
        cm.run(np.zeros((2, 8, 8, 4), np.int8))
    assert isinstance(e.value, TsptqError)


@slow
@pytest.mark.parametrize("method", METHODS)
def test_precomputed_params_match_and_shrink_the_arena(cifar, method):
    """tsptq_prepare_with_params (emit-c's path): Python's multipliers are the C runtime's, byte for byte, and the
    arena then holds the activations only; wrong params are refused."""
    files, xs, _, _ = cifar
    x = xs[method]
    m = parse_tflite(files[method])
    params = persistent_params(m)
    cm = CModel(files[method])
    cm.use_params(params, arena_size=cm.activation_size)
    assert np.array_equal(cm.run(x[:5]), m.run(x[:5]))
    if params:
        bad = bytearray(params)
        bad[0] ^= 1
        with pytest.raises(RuntimeCError) as e:
            cm.use_params(bytes(bad))
        assert e.value.name == "TSPTQ_ERR_BAD_QUANTIZATION"
    with pytest.raises(RuntimeCError) as e:
        cm.use_params(params, arena_size=cm.activation_size - 16)
    assert e.value.name == "TSPTQ_ERR_ARENA_TOO_SMALL" and f"{cm.activation_size} bytes needed" in str(e.value)


def expected_prepacked(data: bytes, variant: str) -> int:
    """The prepacked bytes a build asks for (runtime_c/src/ops/vnni.h tqv_prepack_size, loader.c): per FC whose
    weights its products take (K = I <= 2048), blocks of 32 channels, each 32 column sums and the packed groups of 4 k
    (128 bytes each), each op's at a multiple of 64 bytes, plus 64 to align the region, with a channel_pow2 FC_2S's
    shifted channels (2^s - 1 columns each, at most 1024) appended as groups of their own. Every other build (reference, AVX2, Arm, bare metal), and the amx
    build where the AMX tiles run (its tile drivers pack per call): 0."""
    if variant not in ("avx512vnni", "amx") or (variant == "amx" and c_build.amx_usable()[0]):
        return 0
    m = parse_tflite(data)
    total = 0
    for op in m.ops:
        if op.kind not in ("FULLY_CONNECTED", "TSPTQ_FC_2S"):
            continue
        O, I = m.tensors[op.inputs[1]].shape
        ng = (I + 3) // 4
        if 4 * ng > 2048:
            continue
        if op.kind == "TSPTQ_FC_2S" and op.options["in_kind"] == 1:
            s = np.asarray(m.tensors[op.inputs[5]].data, np.int64)
            n_ext = int(((1 << s) - 1).sum())
            if 0 < n_ext <= 1024 and 4 * (ng + (n_ext + 3) // 4) <= 2048:
                ng += (n_ext + 3) // 4
        block = ng * 128
        total += -(-((O + 31) // 32 * (128 + block)) // 64) * 64
    return total + 64 if total else 0


def _prepack_variants() -> list[str]:
    from tsptq.runtime.c_build import have_avx512vnni
    return ["reference"] + (["avx2"] if cpu_has("avx2") else []) + (["avx512vnni", "amx"] if have_avx512vnni() else [])


@pytest.mark.parametrize("variant", _prepack_variants())
def test_prepacked_weights_grow_the_arena_by_exactly_their_bytes(tiny, variant):
    """The AVX-512 VNNI and AMX builds prepack the FC weights once, at tsptq_prepare, into the arena's prepacked part:
    the arena grows by exactly those bytes (the activation plan and the multipliers stay the Python planner's), none
    in the other builds; the outputs stay the Python integer model's, on 1 and 2 threads, image after image (the
    activations never overwrite the packed weights); an arena without room for them runs without them (tsptq_prepare
    and tsptq_prepare_with_params alike: emit-c's arena holds the activations only)."""
    files, xs = tiny
    for method in ("tsptq", "minmax"):  # any int8 codes are a valid input: the tsptq file's for both
        data, x = files[method], xs[:4]
        m, p = parse_tflite(data), plan(parse_tflite(data))
        want = m.run(x)
        cm = CModel(data, variant=variant)
        assert cm.prepacked_size == expected_prepacked(data, variant)
        assert (variant in ("avx512vnni", "amx") and not (variant == "amx" and c_build.amx_usable()[0])) == \
            (cm.prepacked_size > 0)
        assert cm.arena_size == p.arena_size + cm.prepacked_size
        assert (cm.persistent_size, cm.activation_size) == (p.persistent_size, p.activation_size)
        for threads in (1, 2):
            cm.set_threads(threads)
            assert np.array_equal(cm.run(x), want), (method, threads)
        cm.set_threads(1)
        if cm.prepacked_size:  # an arena without room for them runs without them; one smaller is refused
            short = cm.persistent_size + cm.activation_size
            for arena in (short, cm.arena_size - 8):
                assert np.array_equal(CModel(data, variant=variant, arena_size=arena).run(x), want), (method, arena)
            e = c_error(data, variant=variant, arena_size=short - 8)
            assert e.name == "TSPTQ_ERR_ARENA_TOO_SMALL" and f"{short} bytes needed" in str(e)
        params = persistent_params(m)
        for arena in (cm.activation_size, cm.activation_size + cm.prepacked_size):
            cm.use_params(params, arena_size=arena)
            assert np.array_equal(cm.run(x), want), (method, arena)


def test_too_many_tensors(tiny):
    lib = build_library("reference", extra_flags=["-DTSPTQ_MAX_TENSORS=40"], name="libtsptq.so")
    e = c_error(tiny[0]["tsptq"], library=lib)
    assert e.name == "TSPTQ_ERR_TOO_MANY" and "TSPTQ_MAX_TENSORS" in str(e)


# --- (d) emit-c ------------------------------------------------------------------------------------------------------

APP = r"""
#include <stdio.h>
#include "model.h"
int main(void) {
    static int8_t in[TSPTQ_MODEL_INPUT_BYTES], out[TSPTQ_MODEL_OUTPUT_BYTES];
    while (fread(in, 1, sizeof in, stdin) == sizeof in) {
        int rc = tsptq_model_invoke(in, out);
        if (rc) { fprintf(stderr, "error %d: %s\n", rc, tsptq_model_message()); return 2; }
        fwrite(out, 1, sizeof out, stdout);
    }
    return 0;
}
"""


@slow
def test_emit_c_compiles_and_matches_python(cifar, tmp_path):
    from tsptq.runtime.emit_c import emit_c

    files, xs, _, _ = cifar
    x = xs["tsptq"]
    src = tmp_path / "m.tflite"
    src.write_bytes(files["tsptq"])
    out = tmp_path / "emitted"
    info = emit_c(src, out)
    header = (out / "model.h").read_text()
    p = plan(parse_tflite(files["tsptq"]))
    assert f"#define TSPTQ_MODEL_ARENA_BYTES {p.activation_size}\n" in header
    assert f"#define TSPTQ_MODEL_PARAMS_BYTES {p.persistent_size}\n" in header
    (out / "app.c").write_text(APP)
    rt = out / "tsptq_runtime"
    exe = tmp_path / "app"
    cmd = [compiler(), "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-I", str(out), "-I", str(rt / "include"),
           "-I", str(rt / "src"), f"-DTSPTQ_MAX_TENSORS={info['tensors']}", f"-DTSPTQ_MAX_OPS={info['ops']}",
           str(out / "app.c"), str(out / "model.c"), *map(str, sorted((rt / "src").rglob("*.c"))), "-lm", "-o",
           str(exe)]
    subprocess.run(cmd, check=True, capture_output=True)
    run = subprocess.run([str(exe)], input=x[:8].tobytes(), capture_output=True, check=True)
    got = np.frombuffer(run.stdout, np.int8).reshape(8, 10)
    assert np.array_equal(got, parse_tflite(files["tsptq"]).run(x[:8]))


# --- (e) sanitizers --------------------------------------------------------------------------------------------------

def _sanitized_driver(tmp_path, simd: bool) -> Path:
    exe = tmp_path / f"run_model_asan{'_avx2' if simd else ''}"
    cmd = [compiler(), "-std=c99", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           "-fno-omit-frame-pointer", *(["-mavx2", "-DTSPTQ_USE_AVX2"] if simd else ["-DTSPTQ_REFERENCE_ONLY"]),
           "-I", str(RUNTIME / "include"), "-I", str(RUNTIME / "src"),
           str(RUNTIME / "tools" / "run_model.c"), *CORE_SOURCES, "-lm", "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"the compiler cannot build with -fsanitize=address,undefined: {proc.stderr[-300:]}")
    return exe


@slow
@pytest.mark.parametrize("simd", [False, True], ids=["reference", "avx2"])
def test_core_under_asan_ubsan(cifar, tiny, tmp_path, simd):
    if simd and not cpu_has("avx2"):
        pytest.skip("the host has no AVX2")
    exe = _sanitized_driver(tmp_path, simd)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", UBSAN_OPTIONS="halt_on_error=1")
    files, xs, _, _ = cifar
    for method in ("tsptq", "twin", "minmax", "ptf-log2"):
        x = xs[method]
        model, inp, outp = tmp_path / f"{method}.tflite", tmp_path / "in.bin", tmp_path / "out.bin"
        model.write_bytes(files[method])
        inp.write_bytes(x[:3].tobytes())
        proc = subprocess.run([str(exe), str(model), str(inp), str(outp)], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert np.array_equal(np.frombuffer(outp.read_bytes(), np.int8).reshape(3, 10),
                              parse_tflite(files[method]).run(x[:3]))
    data = tiny[0]["tsptq"]
    for cut in (9, 100, len(data) // 2, len(data) - 1):
        bad = tmp_path / "bad.tflite"
        bad.write_bytes(data[:cut])
        proc = subprocess.run([str(exe), str(bad)], capture_output=True, text=True, env=env)
        assert proc.returncode == 2 + 3 and "TSPTQ_ERR_CORRUPTED" in proc.stderr, proc.stderr[-2000:]


# --- (f) libFuzzer ---------------------------------------------------------------------------------------------------

FUZZ_SECONDS = int(os.environ.get("TSPTQ_FUZZ_SECONDS", "20"))


@slow
def test_fuzz_loader_smoke(tiny, tmp_path):
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang is not installed (apt-get install clang): no libFuzzer smoke run")
    exe = tmp_path / "fuzz_loader"
    cmd = [clang, "-std=c99", "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
           "-I", str(RUNTIME / "include"), "-I", str(RUNTIME / "src"), str(RUNTIME / "fuzz" / "fuzz_loader.c"),
           *CORE_SOURCES, "-lm", "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"clang cannot build a libFuzzer target here: {proc.stderr[-300:]}")
    seeds, corpus = tmp_path / "seeds", tmp_path / "corpus"
    seeds.mkdir()
    corpus.mkdir()
    for method, data in tiny[0].items():
        (seeds / f"{method}.tflite").write_bytes(data)
    # seeds: the valid files, and the corpus of files that once broke something (runtime_c/fuzz/corpus)
    run = subprocess.run([str(exe), f"-max_total_time={FUZZ_SECONDS}", "-max_len=40000", "-seed=1",
                          "-print_final_stats=1", f"-artifact_prefix={tmp_path}/", str(corpus), str(seeds),
                          str(RUNTIME / "fuzz" / "corpus")],
                         capture_output=True, text=True, timeout=FUZZ_SECONDS + 120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ERROR: AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr
    assert "Done" in run.stderr


# --- the CLI ----------------------------------------------------------------------------------------------------------

@slow
def test_cli_emit_c_and_verify_runtime_c(cifar, tmp_path, capsys):
    from tsptq.cli.main import main

    files, _, _, _ = cifar
    path = tmp_path / "m.tflite"
    path.write_bytes(files["tsptq"])
    assert main(["emit-c", str(path), "--out", str(tmp_path / "fw")]) == 0
    assert (tmp_path / "fw" / "model.c").is_file() and (tmp_path / "fw" / "model.h").is_file()
    # the file records --data bundled via tsptq.intmodel.integer.build only for CLI exports; pass the data explicitly
    assert main(["verify", str(path), "--runtime", "c", "--eval-images", "20", "--data", "bundled",
                 "--json", str(tmp_path / "v.json"), "--quiet"]) == 0
    r = json.loads((tmp_path / "v.json").read_text())
    assert r["bit_exact_fraction"] == 1.0 and r["images"] == 20
