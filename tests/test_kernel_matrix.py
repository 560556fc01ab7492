"""The kernel matrix: every op of the op table, in every code kind the methods produce, on every build of the C
runtime, byte for byte against the Python integer model.

The cases are declared once, from exported models rather than from kernel signatures: each exported tiny ViT (one per
method, so every code kind appears) is cut after the first op of each (op kind, code kinds) pair, so that op's
output is the cut model's output; TSPTQ_TOKEN_MEAN comes from a tiny ViT whose head reads the patch-token mean,
TSPTQ_BMM_HEADS and a TSPTQ_SOFTMAX_2S with an exp table per head from one with a per-head scores code
(tsptq-heads), TSPTQ_BMM_BIAS and TSPTQ_SOFTMAX_MASK_2S from a tiny Swin (tests/test_swin_integer.py); RELU,
which no model uses yet, from tests/test_op_table.py. A new op in
``tsptq.intmodel.ops.OPS`` without a case fails ``test_every_op_has_a_case``.

Builds: the x86 variants in process (ctypes); the Arm SIMD paths (NEON on AArch64, the DSP extension's SMLAD on
ARMv7-A as on a Cortex-M4) as static ``runtime_c/tools/run_model`` programs under QEMU user mode.
"""
from __future__ import annotations

import functools
import shutil
import subprocess

import numpy as np
import pytest

from tsptq.intmodel.graph import IntModel
from tsptq.intmodel.ops import OPS
from tsptq.runtime import c_build
from tsptq.tflite.reader import parse_tflite
from tsptq.tflite.writer import to_tflite

pytestmark = [pytest.mark.cc, pytest.mark.skipif(not c_build.have_compiler(), reason="no C compiler")]

METHODS = ("tsptq", "minmax", "ptf-log2", "twin")  # between them: every code kind of every custom op
CODE_OPTIONS = ("in_kind", "out_kind", "a_kind")  # the options that select a kernel's code path


def _cut(im: IntModel, k: int) -> IntModel:
    """The model up to op k, with op k's output as the model's output."""
    return IntModel(im.tensors, im.ops[:k + 1], im.inputs, [im.ops[k].outputs[0]], dict(im.metadata))


@functools.lru_cache(maxsize=1)
def cases() -> dict[str, tuple[bytes, np.ndarray]]:
    """name -> (.tflite bytes, int8 inputs): one cut model per (op kind, code kinds), plus RELU."""
    from test_op_table import RELU_CASES, qp, relu_inputs, relu_model
    from tiny_vit import tiny_vit

    from tsptq.data import datasets
    from tsptq.intmodel.lower import lower
    from tsptq.quant.quantize import quantize

    cfg, graph, cal, imgs = tiny_vit(16)
    out = {}
    for method in METHODS:
        im = lower(quantize(graph, cal, method, progress=False))
        x = im.quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())
        for k, op in enumerate(im.ops):
            kinds = ",".join(f"{o}={op.options[o]}" for o in CODE_OPTIONS if o in op.options)
            name = f"{op.kind}[{kinds}]" if kinds else op.kind
            if name not in out:
                out[name] = (to_tflite(_cut(im, k)), x)
    # the head on [class token, patch-token mean]: TSPTQ_TOKEN_MEAN on a channel code (tsptq) and a per-tensor one
    cfg, graph, cal, imgs = tiny_vit(16, global_pool="token+avg")
    for method in ("tsptq", "minmax"):
        im = lower(quantize(graph, cal, method, progress=False))
        x = im.quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())
        k = next(k for k, op in enumerate(im.ops) if op.kind == "TSPTQ_TOKEN_MEAN")
        out[f"TSPTQ_TOKEN_MEAN[{method}]"] = (to_tflite(_cut(im, k)), x)
    # a per-head scores code (tsptq-heads): TSPTQ_BMM_HEADS and TSPTQ_SOFTMAX_2S with an exp table per head, the heads'
    # steps forced apart
    from tiny_vit import force_per_head_scores

    cfg, graph, cal, imgs = tiny_vit(16)
    im = lower(force_per_head_scores(quantize(graph, cal, "tsptq-heads", progress=False)))
    x = im.quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())
    for k, op in enumerate(im.ops):
        if op.kind == "TSPTQ_BMM_HEADS" or (op.kind == "TSPTQ_SOFTMAX_2S" and im.tensors[op.inputs[1]].shape[0] > 256):
            name = op.kind + ("" if op.kind == "TSPTQ_BMM_HEADS" else f"[heads,out_kind={op.options['out_kind']}]")
            out.setdefault(name, (to_tflite(_cut(im, k)), x))
    # Swin's scores and masked Softmax (TSPTQ_BMM_BIAS, TSPTQ_SOFTMAX_MASK_2S), in every softmax code kind
    from test_swin_integer import sharp
    from test_swin_quant import SHIFTED, images

    from tsptq.quant.observers import record
    from tsptq.quant.qswin import SwinGraph

    graph = SwinGraph.from_model(sharp())  # its tsptq Softmax codes are V-2SF
    cal = record(graph, images(8), 8, False)
    x_swin = datasets.to_model_input(images(4, seed=1).images, SHIFTED).numpy()
    for method in ("tsptq", "minmax", "ptf-log2"):
        im = lower(quantize(graph, cal, method, progress=False))
        for k, op in enumerate(im.ops):
            if op.kind in ("TSPTQ_BMM_BIAS", "TSPTQ_SOFTMAX_MASK_2S"):
                kinds = ",".join(f"{o}={op.options[o]}" for o in CODE_OPTIONS if o in op.options)
                name = f"{op.kind}[{kinds}]" if kinds else op.kind
                if name not in out:
                    out[name] = (to_tflite(_cut(im, k)), im.quantize_input(x_swin))
    for case in ("4d_down", "4d_up", "2d_out_zp_-128"):
        rank, s_in, z_in, s_out, z_out = RELU_CASES[case]
        out[f"RELU[{case}]"] = (to_tflite(relu_model(rank, qp(s_in, z_in), qp(s_out, z_out))), relu_inputs())
    # LayerNorm rows wider than any tiny model's, up to the bound (4096): the SIMD rows (<= 2048 on x86) and the
    # reference ones, on O-2SF inputs with every shift 0..7
    for D in (1536, 2049, 4096):
        out[f"TSPTQ_LAYERNORM_2S[D={D}]"] = wide_layernorm(D)
    return out


def wide_layernorm(D: int) -> tuple[bytes, np.ndarray]:
    """A lone TSPTQ_LAYERNORM_2S over D channels of a (1, 2, 3, D) O-2SF image (shifts 0..7, as the exporter's
    gamma/beta folding), and 8 images: random, constant rows, rows at the code's two ends."""
    from tsptq.intmodel import kernels as K
    from tsptq.intmodel.graph import Op, QuantParams, Tensor

    rng = np.random.default_rng(D)
    shifts = np.where(rng.random(D) < 0.5, rng.integers(0, 8, D), 0)
    s_in, zp = 0.02, -3
    x_q = QuantParams(np.float32(s_in) * np.exp2(shifts).astype(np.float32), np.full(D, zp, np.int64), axis=-1,
                      details={"kind": "channel_pow2", "bits": 8, "base_scale": float(np.float32(s_in)),
                               "shifts": shifts.tolist()})
    s_out = 0.03
    gamma, beta = rng.normal(1.0, 0.5, D), rng.normal(0.0, 0.5, D)
    g_bits = 30 - max(0, int(np.ceil(np.log2(np.abs(gamma / s_out).max()))))
    out_shift = K.NORM_FRAC_BITS + g_bits
    tensors = [Tensor("x", (1, 2, 3, D), "int8", x_q),
               Tensor("in_shift", (D,), "int8", None, shifts.astype(np.int8)),
               Tensor("gamma_mul", (D,), "int32", None, np.round(gamma / s_out * 2.0**g_bits).astype(np.int32)),
               Tensor("beta_bias", (D,), "int64", None, np.round(beta / s_out * 2.0**out_shift).astype(np.int64)),
               Tensor("y", (1, 2, 3, D), "int8", QuantParams(np.array([s_out], np.float32), np.array([5], np.int64)))]
    eps = round(D * D * 1e-5 / s_in**2)
    op = Op("TSPTQ_LAYERNORM_2S", [0, 1, 2, 3], [4], {"in_zp": zp, "eps": eps, "out_zp": 5, "out_shift": out_shift})
    x = rng.integers(-128, 128, (8, 2, 3, D))
    x[1, 0, 0] = 17  # a constant row
    x[2] = np.where(rng.random((2, 3, D)) < 0.5, -128, 127)  # two values at the ends: the widest variance
    return to_tflite(IntModel(tensors, [op], [0], [4], {"method": "test"})), x.astype(np.int8)


@functools.lru_cache(maxsize=None)
def reference(name: str) -> np.ndarray:
    data, x = cases()[name]
    return parse_tflite(data).run(x)


def test_every_op_has_a_case():
    covered = {name.split("[")[0] for name in cases()}
    assert covered == set(OPS)


def test_the_cut_models_end_where_they_should():
    """The case's output is its last op's output, and it is not a constant of the model."""
    for name, (data, x) in cases().items():
        fm = parse_tflite(data)
        assert fm.outputs == [fm.ops[-1].outputs[0]] and fm.ops[-1].kind == name.split("[")[0], name
        assert reference(name).shape[0] == len(x)


def _x86_variants():
    out = ["reference"]
    if c_build.cpu_has("avx2"):
        out.append("avx2")
    if c_build.have_avx512vnni():
        out.append("avx512vnni")
    return out + ["amx"]  # skipped below unless the AMX code runs here


@pytest.mark.parametrize("variant", _x86_variants())
def test_every_op_on_every_x86_build(variant, tmp_path):
    from tsptq.runtime.c_binding import CModel

    if variant == "amx" and not c_build.amx_usable()[0]:
        pytest.skip(f"no AMX here: {c_build.amx_usable()[1]}")
    bad = []
    for name, (data, x) in cases().items():
        path = tmp_path / "m.tflite"
        path.write_bytes(data)
        got = CModel.from_file(path, variant=variant).run(x)
        if not np.array_equal(got, reference(name)):
            bad.append(name)
    assert bad == []


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("path", list(c_build.ARM_SIMD_BUILDS))
def test_every_op_on_every_arm_build(path, tmp_path):
    compiler, flags, runner, macro, apt = c_build.ARM_SIMD_BUILDS[path]
    cc, qemu = shutil.which(compiler), shutil.which(runner)
    if not cc or not qemu:
        pytest.skip(f"needs {apt}")
    rt = c_build.RUNTIME_DIR
    probe = subprocess.run([cc, "-std=c99", *flags, "-dM", "-E", str(rt / "src" / "ops" / "dot.h")],
                           capture_output=True, text=True)
    assert f"#define {macro} 1" in probe.stdout, f"{compiler} {flags} does not take the {path} path"
    exe = tmp_path / "run_model"
    sources = sorted(str(p) for p in (rt / "src").rglob("*.c"))
    subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *flags, "-static", "-I", str(rt / "include"),
                    "-I", str(rt / "src"), str(rt / "tools" / "run_model.c"), *sources, "-lm", "-o", str(exe)],
                   check=True, capture_output=True)
    bad = []
    for name, (data, x) in cases().items():
        model, xin, yout = tmp_path / "m.tflite", tmp_path / "x.bin", tmp_path / "y.bin"
        model.write_bytes(data)
        xin.write_bytes(np.ascontiguousarray(x).tobytes())
        proc = subprocess.run([qemu, str(exe), str(model), str(xin), str(yout)], capture_output=True, text=True,
                              timeout=300)
        want = reference(name)
        if proc.returncode != 0:
            bad.append(f"{name}: exit {proc.returncode}: {proc.stderr.strip()[-200:]}")
        elif yout.read_bytes() != np.ascontiguousarray(want).tobytes():
            bad.append(f"{name}: output bytes differ")
    assert bad == []
