"""The NPU variant in TensorFlow Lite Micro (issue 18): the tflite-micro wheel's interpreter with tsptq's custom ops
as TFLM kernels (runtime_c/tflm/, tsptq.npu.tflm).

- a tiny ViT's variant with forged V-2SF/O-2SF codes (every decode: int16 LayerNorm outputs, the int16 GELU table,
  TSPTQ_ADD_2S_I16, TSPTQ_SOFTMAX_2S into TSPTQ_BMM_2S) runs in TFLM and gives, byte for byte, the integer model with
  TFLM's FULLY_CONNECTED 16x8 rounding (``run_tflm_arithmetic``); every custom op alone gives the Python kernel's bytes;
- TFLM's 16x8 FC alone, at random and at the rounding's ties: its 16-bit multiplier, half-up form, not the variant's
  (LiteRT's) single rounding of the 31-bit multiplier;
- TFLM refuses the split P x V file's int8 x int8 -> int32 BATCH_MATMUL, in one line;
- TFLM's arena: its planned head is tsptq's planner's activation plan of the same file (the same greedy planner);
- the pinned wheel: another version, and a registerer handed something that is not the wheel's resolver, are one-line
  refusals, never a crash.
- ``tsptq tflm FILE``: what it prints and writes matches a direct run; a variant's integer model is rebuilt from the
  file's recorded source only when it writes the file's bytes; refused files and a missing wheel are one-line errors;
- benchmarks/report.py's NPU section (benchmarks/npu.py's results): the bars, a missing stock file, a skipped TFLM
  block, a refused model;
- the LayerNorm on the NPU (``layernorm_npu``): the file runs as ``run_tflm_arithmetic``, tensor for tensor;
  TSPTQ_LN_NEG_MEAN and TSPTQ_LN_RSTD alone give the Python kernels' bytes and refuse what they do not define in one
  line; TFLM's int16 MUL takes its multiplier from double scales (the integer model, as LiteRT, from float32 ones)
  and wraps its left shift in 32 bits, its 1x1 DEPTHWISE_CONV_2D 16x8 is the integer model's.

Skipped (with the reason) without the wheel or with another version of it, except under CI=true, where that fails.
"""
from __future__ import annotations

import ctypes
import os
from collections import Counter

import numpy as np
import pytest

from tsptq.errors import ModelFileError
from tsptq.data import datasets
from tsptq.intmodel import planner
from tsptq.intmodel.graph import IntModel, Op, QuantParams, Tensor
from tsptq.intmodel.lower import lower
from tsptq.intmodel.ops import ALL_OPS
from tsptq.npu import tflm
from tsptq.npu.litert_check import single_op_model
from tsptq.quant.quantize import quantize
from tsptq.tflite.writer import to_tflite

_why = tflm.unavailable_reason()
pytestmark = [pytest.mark.cc, pytest.mark.skipif(_why is not None and os.environ.get("CI") != "true",
                                                 reason=_why or "")]


def _forged(tiny_vits):
    from test_npu_variant import _forge_two_scale_codes

    cfg, graph, cal, imgs = tiny_vits(8)
    qm = _forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False))
    im = lower(qm, npu=True, split_pv=False)
    x = im.quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())
    return im, x


def test_tiny_variant_runs_in_tflm_with_tflm_fc_rounding_byte_for_byte(tiny_vits):
    im, x = _forged(tiny_vits)
    kinds = {o.kind for o in im.ops}
    assert {"TSPTQ_LAYERNORM_2S_I16", "TSPTQ_GELU_2S", "TSPTQ_ADD_2S_I16", "TSPTQ_SOFTMAX_2S", "TSPTQ_BMM_2S",
            "FULLY_CONNECTED_16X8", "QUANTIZE"} <= kinds
    assert im.tensor("blocks.0.gelu").dtype == "int16"
    got = tflm.TflmModel(to_tflite(im)).run(x)
    assert got.dtype == np.int8 and got.shape == (len(x), im.output.shape[-1])
    assert np.array_equal(got, tflm.run_tflm_arithmetic(im, x))
    # against the variant's own definition the only difference is the FCs' rounding: within a few codes
    assert np.abs(got.astype(int) - im.run(x).astype(int)).max() <= 8


def _token_avg_variant(split_pv: bool = False):
    """A tiny ViT with a head over [class token, patch-token mean] (dinov2-s14's token+avg) as the NPU variant."""
    from test_npu_variant import _forge_two_scale_codes
    from tiny_vit import tiny_vit

    cfg, graph, cal, imgs = tiny_vit(8, global_pool="token+avg")
    im = lower(_forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False)), npu=True, split_pv=split_pv)
    return im, im.quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())


def test_every_custom_op_alone_gives_the_python_kernels_bytes(tiny_vits):
    """Each custom op in a file of its own, fed the integer model's inputs: the `--pv-on-cpu` file's ops, the split
    file's P planes and plane sum (TFLM refuses that whole file at its int32 BATCH_MATMUL, not at these), the
    token+avg head's mean and the NPU LayerNorm's two statistics."""
    from test_npu_variant import _forge_two_scale_codes

    cfg, graph, cal, imgs = tiny_vits(8)
    split = lower(_forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False)), npu=True)
    from test_ln_stats_kernels import layernorm_npu_variant

    models = [_forged(tiny_vits), (split, split.quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())),
              _token_avg_variant(), layernorm_npu_variant(tiny_vits)]
    checked = set()
    for im, x in models:
        _, vals = im.run(x[:2], keep=True)
        for op in im.ops:
            if not ALL_OPS[op.kind].custom or op.kind in checked:
                continue
            t = tflm.TflmModel(to_tflite(single_op_model(im, op)))
            for b in range(2):
                acts = list(dict.fromkeys(i for i in op.inputs if im.tensors[i].data is None))
                for j, i in enumerate(acts):
                    t.it.set_input(np.ascontiguousarray(vals[i][b:b + 1]), j)
                t.it.invoke()
                want = vals[op.outputs[0]][b:b + 1]
                got = np.asarray(t.it.get_output(0))
                assert got.dtype == want.dtype and np.array_equal(got.reshape(want.shape), want), op.kind
            checked.add(op.kind)
    assert checked == {"TSPTQ_ADD_2S", "TSPTQ_LAYERNORM_2S_I16", "TSPTQ_ADD_2S_I16", "TSPTQ_SOFTMAX_2S",
                       "TSPTQ_BMM_2S", "TSPTQ_GELU_2S", "TSPTQ_PLANE_2S", "TSPTQ_PV_SUM_2S", "TSPTQ_TOKEN_MEAN_I16",
                       "TSPTQ_LN_NEG_MEAN", "TSPTQ_LN_RSTD"}


def test_a_token_avg_variant_runs_in_tflm():
    """dinov2-s14's head form (TSPTQ_TOKEN_MEAN_I16 on the int16 final norm) through TFLM: the integer model with
    TFLM's FC rounding, byte for byte."""
    im, x = _token_avg_variant()
    assert "TSPTQ_TOKEN_MEAN_I16" in {o.kind for o in im.ops}
    assert np.array_equal(tflm.TflmModel(to_tflite(im)).run(x), tflm.run_tflm_arithmetic(im, x))


def _fc(x_scale, w, w_scale, bias, y_scale) -> IntModel:
    O, I = w.shape
    ws = np.asarray(w_scale, np.float32)
    z = np.zeros
    tensors = [Tensor("x", (1, 4, I), "int16", QuantParams(np.array([x_scale], np.float32), z(1, np.int64))),
               Tensor("w", (O, I), "int8", QuantParams(ws, z(len(ws), np.int64)), w),
               Tensor("b", (O,), "int64", QuantParams(np.float32(x_scale) * ws, z(len(ws), np.int64)), bias),
               Tensor("y", (1, 4, O), "int16", QuantParams(np.array([y_scale], np.float32), z(1, np.int64)))]
    return IntModel(tensors, [Op("FULLY_CONNECTED_16X8", [0, 1, 2], [3], {"keep_num_dims": True})], [0], [3],
                    {"method": "fc16x8"})


def test_tflm_fully_connected_16x8_rounds_its_own_way():
    """TFLM's 16x8 FC is tflm.fully_connected_16x8 (16-bit multiplier, half up), at random and at exact ties; it
    differs from the variant's definition (LiteRT's reference kernel) at some of them."""
    from tsptq.intmodel.ops import _conv_fc_multipliers

    rng = np.random.default_rng(0)
    I, O = 16, 8
    w = rng.integers(-127, 128, (O, I)).astype(np.int8)
    m = _fc(0.02, w, rng.uniform(0.001, 0.01, O), rng.integers(-5000, 5000, O).astype(np.int64), 0.05)
    x = rng.integers(-3000, 3000, (1, 4, I)).astype(np.int16)
    mult, shift = _conv_fc_multipliers(m, m.ops[0])
    t = tflm.TflmModel(to_tflite(m))
    t.it.set_input(x, 0)
    t.it.invoke()
    assert np.array_equal(t.it.get_output(0), tflm.fully_connected_16x8(x, w, m.tensors[2].data, mult, shift))
    # exact ties of the variant's rounding: w = 1 on one input, multiplier 1/2 (M = 2^30, shift 0): acc / 2
    w1 = np.zeros((2, I), np.int8)
    w1[:, 0] = 1
    tie = _fc(1.0, w1, [0.5, 0.5], np.zeros(2, np.int64), 1.0)
    xt = np.zeros((1, 4, I), np.int16)
    xt[0, :, 0] = [3, -3, 5, -5]
    t = tflm.TflmModel(to_tflite(tie))
    t.it.set_input(xt, 0)
    t.it.invoke()
    got = np.asarray(t.it.get_output(0))[..., 0].ravel().tolist()
    mult, shift = _conv_fc_multipliers(tie, tie.ops[0])
    assert got == tflm.fully_connected_16x8(xt, w1, tie.tensors[2].data, mult, shift)[..., 0].ravel().tolist()
    assert got == [2, -1, 3, -2]  # half up, where the variant's definition rounds half away: [2, -2, 3, -3]
    assert ALL_OPS["FULLY_CONNECTED_16X8"].kernel(tie, tie.ops[0], [xt, w1, tie.tensors[2].data])[
        ..., 0].ravel().tolist() == [2, -2, 3, -3]


def test_split_pv_variant_is_refused_in_one_line(tiny_vits):
    from test_npu_variant import _forge_two_scale_codes

    cfg, graph, cal, imgs = tiny_vits(8)
    im = lower(_forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False)), npu=True)
    with pytest.raises(tflm.TflmError) as e:
        tflm.TflmModel(to_tflite(im))
    msg = str(e.value)
    assert "\n" not in msg and "batch_matmul.cc" in msg and "lhs_data->type == output->type" in msg


@pytest.mark.parametrize("op_kind,slot,value,why", [
    ("TSPTQ_LAYERNORM_2S_I16", 4, 9, "channel 0: output shift 9 outside 0..7"),
    ("TSPTQ_LAYERNORM_2S_I16", 1, -1, "channel 0: shift or beta out of range"),
    ("TSPTQ_ADD_2S_I16", 2, 5, "rescaling parameters of channel 0 out of range"),
])
def test_a_crafted_constant_is_refused_in_one_line(tiny_vits, op_kind, slot, value, why):
    """The file is untrusted: the ops check what the C runtime's prepares check before any kernel shifts by it."""
    im, x = _forged(tiny_vits)
    op = next(o for o in im.ops if o.kind == op_kind)
    t = im.tensors[op.inputs[slot]]
    data = t.data.copy()
    data.reshape(-1)[0 if slot != 2 else data.shape[-1] * 1] = value  # ADD params: row 1 (a_shift) of channel 0
    im.tensors[op.inputs[slot]] = Tensor(t.name, t.shape, t.dtype, t.quant, data)
    with pytest.raises(tflm.TflmError) as e:
        tflm.TflmModel(to_tflite(im)).run(x[:1])
    msg = str(e.value)
    assert "\n" not in msg and op_kind in msg and why in msg


@pytest.mark.parametrize("op_kind,key,value", [("TSPTQ_SOFTMAX_2S", "bits", 40),
                                               ("TSPTQ_SOFTMAX_2S", "ratio_log2", 60),
                                               ("TSPTQ_BMM_2S", "ratio_log2", 20)])
def test_crafted_options_are_refused_in_one_line(tiny_vits, op_kind, key, value):
    im, x = _forged(tiny_vits)
    op = next(o for o in im.ops if o.kind == op_kind)
    op.options = {**op.options, key: value}
    with pytest.raises(tflm.TflmError) as e:
        tflm.TflmModel(to_tflite(im)).run(x[:1])
    msg = str(e.value)
    assert "\n" not in msg and op_kind in msg and "out of range" in msg


def test_a_constant_buffer_shorter_than_its_shape_is_refused_in_one_line(tiny_vits):
    """Neither TFLM nor the ops' prepares compare a buffer's length with its shape: tsptq.npu.tflm does, first."""
    from tsptq.npu.graph_ops import S, parse_model

    im, _ = _forged(tiny_vits)
    m = parse_model(to_tflite(im))
    lut = next(i for i, t in enumerate(m.subgraphs[0].tensors) if t.buffer and m.buffers[t.buffer].data is not None
               and t.type == S.TensorType.INT32 and list(t.shape) == [256])
    m.buffers[m.subgraphs[0].tensors[lut].buffer].data = np.zeros(4, np.uint8)
    b = __import__("flatbuffers").Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    with pytest.raises(tflm.TflmError, match=r"^tensor \d+ \(.*\): its buffer holds 4 bytes, its shape needs 1024$"):
        tflm.TflmModel(bytes(b.Output()))


def test_tflm_arena_head_is_the_planners_activation_plan(tiny_vits):
    im, x = _forged(tiny_vits)
    data = to_tflite(im)
    t = tflm.TflmModel(data)
    t.run(x[:1])
    a = t.allocations()
    assert a.total == a.head + a.tail and a.tail > 0
    assert a.head == planner.plan(im).activation_size
    # the smallest arena TFLM prepares the file in: at least the recorded total (while it plans, the planner's own
    # bookkeeping takes arena too: equal for cifar10-vit, 13,328 vs 9,152 bytes here)
    assert tflm.min_arena_size(data, hi=4 << 20) >= a.total


def test_the_arena_search_survives_the_wheels_crash(tiny_vits, tmp_path):
    """The pinned wheel crashes (SIGSEGV) tearing down some interpreters whose allocation failed, a 16-byte arena
    among them: each size is tried in a child process, so such a size only counts as one TFLM does not prepare in."""
    import subprocess
    import sys

    im, _ = _forged(tiny_vits)
    path = tmp_path / "m.tflite"
    path.write_bytes(to_tflite(im))
    crashed = subprocess.run([sys.executable, "-c", tflm._ARENA_PROBE, str(path), "16"], capture_output=True)
    assert crashed.returncode in (3, -11)  # refused, or the crash this guards against
    assert tflm._fits_in_child(str(path), 16) is False
    assert tflm._fits_in_child(str(path), 4 << 20) is True


def test_another_wheel_version_is_refused_in_one_line(monkeypatch):
    for v in ("0.dev20250101000000-gabcdef0", tflm.PINNED_VERSION, None):
        if v is None:
            monkeypatch.setattr(tflm, "wheel_version", lambda: None)
        with pytest.raises(tflm.TflmError) as e:
            tflm.check_wheel(v)
        msg = str(e.value)
        assert "\n" not in msg and f"tflite-micro=={tflm.PINNED_VERSION}" in msg
    import tflite_micro

    monkeypatch.setattr(tflite_micro, "__version__", "0.dev20991231000000-g0000000")
    monkeypatch.setattr(tflm, "wheel_version", lambda: tflite_micro.__version__)
    with pytest.raises(tflm.TflmError, match=r"^tflite-micro 0\.dev20991231000000-g0000000 is installed, but"):
        tflm.TflmModel(b"TFL3")


def test_registerer_refuses_what_is_not_the_wheels_resolver():
    lib = tflm.load_library()
    fake = ctypes.create_string_buffer(0x2bd0)  # a zeroed "resolver": no vtable
    assert lib.tsptq_tflm_register(ctypes.addressof(fake)) is False
    assert lib.tsptq_tflm_last_error().decode() == "the resolver's vtable lies in no loaded library"
    assert tflm.op_names(lib) == ["TSPTQ_LAYERNORM_2S_I16", "TSPTQ_GELU_2S", "TSPTQ_ADD_2S_I16", "TSPTQ_ADD_2S",
                                  "TSPTQ_PLANE_2S", "TSPTQ_PV_SUM_2S", "TSPTQ_SOFTMAX_2S", "TSPTQ_BMM_2S",
                                  "TSPTQ_TOKEN_MEAN_I16", "TSPTQ_LN_NEG_MEAN", "TSPTQ_LN_RSTD"]


# --- `tsptq tflm FILE` -----------------------------------------------------------------------------------------------


def test_cli_tflm_compares_tflm_with_the_integer_model_and_its_fc_rounding(tiny_vits, tmp_path, monkeypatch, capsys):
    """The command on the tiny variant (its integer model handed over: the forged codes cannot be rebuilt from a
    source): TFLM's arena, byte-identical images, largest difference, top-1 agreement; the JSON says the same; exit
    status 0 since TFLM equals run_tflm_arithmetic on every image."""
    import json

    from tsptq.cli.main import main

    im, _ = _forged(tiny_vits)
    path = tmp_path / "tiny-npu.tflite"
    path.write_bytes(to_tflite(im))
    monkeypatch.setattr(tflm, "file_int_model", lambda data, name, m=None, progress=False: (im, "handed over"))
    folder = _image_folder(tmp_path / "images", 8)
    out = tmp_path / "tflm.json"
    assert main(["tflm", str(path), "--images", "6", "--data", "imagenet", "--folder", str(folder), "--quiet",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "TFLM arena" in text and "of 6 images byte-identical" in text and "top-1 agreement" in text
    r = json.loads(out.read_text())
    assert r["eval_images"] == 6 and r["vs_tflm_arithmetic"]["identical_images"] == 6
    assert r["vs_tflm_arithmetic"]["max_abs_diff_codes"] == 0
    a = r["arena"]
    assert a["total"] == a["head"] + a["tail"] and a["head"] == planner.plan(im).activation_size
    assert a["min_arena"] >= a["total"]
    # TFLM against the variant's definition, on the same images computed here
    x = im.quantize_input(datasets.to_model_input(_eval_images(im, folder, 6), tiny_vits(8)[0]).numpy())
    d = np.abs(tflm.TflmModel(to_tflite(im)).run(x).astype(int) - im.run(x).astype(int))
    assert r["vs_integer"]["identical_images"] == int((d.max(axis=1) == 0).sum())
    assert r["vs_integer"]["max_abs_diff_codes"] == int(d.max())


def _image_folder(folder, n):
    """``n`` random 8x8 JPEGs in one ImageNet class folder (the tiny ViT's input size)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    (folder / "n01440764").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "n01440764" / f"{i}.JPEG")
    return folder


def _eval_images(im, folder, n):
    """The evaluation images `tsptq tflm` takes for the in-memory ``im``'s file (what tsptq verify takes)."""
    from types import SimpleNamespace

    from tsptq.evaluation.verify import file_eval_set
    from tsptq.model.model_data import EvalData

    want = EvalData("imagenet", str(folder), None, n)
    return file_eval_set(SimpleNamespace(metadata=im.metadata), "f", want)[2].images


def test_cli_tflm_refusals_are_one_line(tiny_vits, tmp_path, monkeypatch, capsys):
    """A file TFLM refuses (the default tsptq file: its TSPTQ_FC_2S has no TFLM kernel; the split variant: the int32
    BATCH_MATMUL), a file that is not a TFLite file, and a missing wheel: exit status 2 and one line each."""
    from test_npu_variant import _forge_two_scale_codes

    from tsptq.cli.main import main

    cfg, graph, cal, imgs = tiny_vits(8)
    qm = _forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False))
    cases = {"default.tflite": (to_tflite(lower(qm)), "TFLM refused the model"),
             "split.tflite": (to_tflite(lower(qm, npu=True)), "batch_matmul.cc"),
             "not.tflite": (b"PK\x03\x04not a model", "not a TFLite file")}
    for name, (data, want) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert main(["tflm", str(tmp_path / name), "--images", "2", "--quiet"]) == 2, name
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("tsptq: error: ") and want in err, err
    monkeypatch.setattr(tflm, "wheel_version", lambda: None)
    assert main(["tflm", str(tmp_path / "split.tflite"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tflite-micro) is not installed" in err


def test_benchmark_npu_section_states_the_bars_and_the_refusals(monkeypatch):
    """benchmarks/report.py's NPU section (results of benchmarks/npu.py, the stored cifar10-vit run changed here):
    the MAC bar met or not, the stock row that says why it is missing, the TFLM block or its one-line skip, and a
    model the variant refuses. Nothing is measured."""
    import copy
    import json
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    import npu  # noqa: F401 - its page-order check against report.NPU_MODELS runs on import
    import report

    stored = json.loads((bench / "results" / "npu-cifar10-vit.json").read_text())
    page = "\n".join(report.render_npu({"npu-cifar10-vit": stored}))
    assert "## NPU (Ethos-U55, Vela 5.2.0)" in page and "NPU variant 100.0%, met" in page
    assert "Vela times the NPU part only" in page and "1,000 of 1,000 images byte-identical" in page
    assert "1,000 of 1,000 | 0 of 10,000 | 0 codes" in page and "batch_matmul.cc" in page
    # the uniform-P variant (another quantization): its MACs, its Vela line and its accuracy read both ways
    assert "NPU variant, uniform P 100.0%, met" in page and "**The uniform-P variant** (`--method" in page
    assert "Its predictions agree with the default file's on 98.3% of the images: **not within** 1%" in page
    # the int16-residual forms: their MACs, their Vela and whole-model line, their accuracy against the default file
    assert "NPU variant, int16 residual 100.0%, met" in page
    assert "NPU variant, uniform P, int16 residual 100.0%, met" in page
    assert ("- **NPU variant, uniform P, int16 residual** (`--residual int16`: the residual stream int16, its adds "
            "builtin int16 ADDs on the NPU; `--layernorm cpu`") in page
    assert "Top-1 of the NPU variant, int16 residual:" in page
    r = copy.deepcopy(stored)
    r["rows"][1]["npu_mac_fraction"] = 0.9
    r["rows"][3] = {"file": "stock int8 (onnx2tf)", "skipped": "the stock converter needs onnx2tf (the 'converter' extra)"}
    r["tflm"] = {"skipped": "TensorFlow Lite Micro (tflite-micro) is not installed: pip install ..."}
    r["integer"]["vs_default"]["NPU variant"]["top1_agreement"] = 0.98
    del r["whole_model"]  # its bar: tests/test_npu_whole_model.py
    refused = {k: r[k] for k in ("model", "source", "target", "vela", "date", "machine")}
    refused.update(model="dinov2-s14", refused="--npu ethos-u: a model the variant refuses, in its one line")
    page = "\n".join(report.render_npu({"npu-cifar10-vit": r, "npu-dinov2-s14": refused}))
    assert "NPU variant 90.0%, **not met**" in page and "Bar (the NPU variant within 0.2 points" in page
    assert page.count("**not met**") == 2  # the variant's MACs and the agreement bar (--pv-on-cpu's is not a bar)
    assert "NPU variant, --pv-on-cpu 94.4%, below it" in page
    assert "| stock int8 (onnx2tf) | the stock converter needs onnx2tf" in page and "no stock file" in page
    assert "TFLM: not measured: TensorFlow Lite Micro (tflite-micro) is not installed" in page
    assert "### dinov2-s14" in page and "The NPU variant refuses this model: `--npu ethos-u: a model" in page


def test_cli_tflm_rebuilds_a_variants_integer_model_only_when_it_writes_the_files_bytes(tmp_path, capsys):
    """tsptq's reader does not read int16 tensors, so `tsptq tflm` rebuilds a variant's integer model from the
    source recorded in the file (fashion-vit, 8 calibration images: a few seconds) and uses it only when it writes the
    file's exact bytes; a file whose recorded source does not rebuild it is a one-line error."""
    import json

    from tsptq.cli.main import main
    from tsptq.intmodel.integer import Source, build

    src = Source(model="fashion-vit", calib_images=8)
    im, _ = build(src, progress=False, npu=True, split_pv=False)
    good = tmp_path / "fashion-npu.tflite"
    good.write_bytes(to_tflite(im))
    out = tmp_path / "tflm.json"
    assert main(["tflm", str(good), "--images", "4", "--quiet", "--no-min-arena", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["integer_model"].startswith("rebuilt from the recorded source (fashion-vit") and "min_arena" not in r["arena"]
    assert r["vs_tflm_arithmetic"]["identical_images"] == 4 and r["eval_images"] == 4
    capsys.readouterr()
    im.metadata["source"] = {**src.to_dict(), "calib_images": 7}  # a source that does not give these bytes
    bad = tmp_path / "other-source.tflite"
    bad.write_bytes(to_tflite(im))
    assert main(["tflm", str(bad), "--images", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "does not write the file's bytes" in err, err


@pytest.mark.parametrize("sa,sb,sy", [(0.0123, 0.0071, 0.0150), (2.0**-7, 2.0**-5, 2.0**-6), (0.0031, 0.0031, 0.0007)])
def test_tflm_int16_add_is_the_integer_models_general_form(sa, sb, sy):
    """The int16 residual stream's ADD (pot_scale_int16 off): TFLM computes the integer model's general int16 form
    (left shift 15), byte for byte, at plain, power-of-two and saturating scales."""
    from int16_add_model import add16_model
    from tsptq.intmodel import kernels as K

    rng = np.random.default_rng(3)
    t = tflm.TflmModel(to_tflite(add16_model(sa, sb, sy)))
    params = K.add_params(np.float32(sa), np.float32(sb), np.float32(sy), left_shift=15)
    for _ in range(4):
        a, b = (rng.integers(-32768, 32768, (1, 5, 48)).astype(np.int16) for _ in range(2))
        t.it.set_input(a, 0)
        t.it.set_input(b, 1)
        t.it.invoke()
        got = np.asarray(t.it.get_output(0)).reshape(a.shape)
        assert np.array_equal(got, K.add(a, 0, b, 0, params, 0, left_shift=15, dtype=np.int16))


def test_an_int16_residual_variant_runs_in_tflm_with_tflm_fc_rounding_byte_for_byte(tiny_vits):
    """`--residual int16 --pv-on-cpu`: the int16 residual adds are TFLM's builtin ADD, the LayerNorms read int16."""
    from test_npu_variant import _forge_two_scale_codes

    cfg, graph, cal, imgs = tiny_vits(8)
    im = lower(_forge_two_scale_codes(quantize(graph, cal, "tsptq", progress=False)), npu=True, split_pv=False,
               residual16=True)
    assert im.tensor("blocks.0.mid").dtype == "int16" and "TSPTQ_ADD_2S_I16" not in {o.kind for o in im.ops}
    x = im.quantize_input(datasets.to_model_input(imgs.images, cfg).numpy())
    got = tflm.TflmModel(to_tflite(im)).run(x)
    assert np.array_equal(got, tflm.run_tflm_arithmetic(im, x))


# --- the LayerNorm on the NPU (`layernorm_npu`): TSPTQ_LN_NEG_MEAN, TSPTQ_LN_RSTD, int16 MUL, DEPTHWISE_CONV_2D 16x8 -

def _qp16(scale) -> QuantParams:
    return QuantParams(np.array([scale], np.float32), np.zeros(1, np.int64))


def test_a_layernorm_npu_variant_runs_in_tflm_as_run_tflm_arithmetic_tensor_for_tensor(tiny_vits):
    """Every LayerNorm as builtins around the two statistics: TFLM gives run_tflm_arithmetic's bytes, the output on
    every image and every tensor on the first (the LayerNorms' own tensors included); against the variant's own
    definition the differences are the FCs' and the MUL's roundings, a few codes."""
    from test_ln_stats_kernels import layernorm_npu_variant

    im, x = layernorm_npu_variant(tiny_vits)
    kinds = Counter(o.kind for o in im.ops)
    assert kinds["TSPTQ_LN_NEG_MEAN"] == kinds["TSPTQ_LN_RSTD"] == kinds["MUL"] == kinds["DEPTHWISE_CONV_2D_16X8"] == 3
    assert "TSPTQ_LAYERNORM_2S_I16" not in kinds and im.metadata["layernorm"] == "npu"
    data = to_tflite(im)
    got = tflm.TflmModel(data).run(x)
    assert got.dtype == np.int8 and np.array_equal(got, tflm.run_tflm_arithmetic(im, x))
    assert np.abs(got.astype(int) - im.run(x).astype(int)).max() <= 8
    t = tflm.TflmModel(data, arena_size=max(len(data) * 4, 16 << 20), preserve_all=True)
    t.run(x[:1])
    _, vals = tflm.run_tflm_arithmetic(im, x[:1], keep=True)
    for op in im.ops:
        i = op.outputs[0]
        assert np.array_equal(t.tensor(i).reshape(vals[i].shape), vals[i]), (op.kind, im.tensors[i].name)


def _stats_file(x_shape, eps: int, c: int, out_last: int = 1, x_dtype: str = "int16") -> bytes:
    """TSPTQ_LN_NEG_MEAN and TSPTQ_LN_RSTD on one x, both outputs the graph's."""
    out_shape = (*x_shape[:-1], out_last)
    tensors = [Tensor("x", tuple(x_shape), x_dtype, _qp16(2.0**-8)), Tensor("neg_mean", out_shape, "int16",
                                                                             _qp16(2.0**-8)),
               Tensor("rstd", out_shape, "int16", _qp16(2.0**-8))]
    ops = [Op("TSPTQ_LN_NEG_MEAN", [0], [1], {}), Op("TSPTQ_LN_RSTD", [0], [2], {"eps": eps, "c": c})]
    return to_tflite(IntModel(tensors, ops, [0], [1, 2], {"method": "ln-stats"}))


def test_the_ln_statistics_alone_give_the_python_kernels_bytes():
    """TSPTQ_LN_NEG_MEAN and TSPTQ_LN_RSTD in TFLM (tflm_ops.c, the x86 build of variant_kernels.h): D 1..4096, the
    int16 ends, constant rows, eps and c at their ends."""
    from test_layernorm_x16 import rows_of
    from tsptq.intmodel import kernels as K

    rng = np.random.default_rng(41)
    for D, T in ((1, 3), (7, 5), (192, 9), (4096, 2)):
        for eps, c in ((0, 0), (0, 42), (2**62, 42), (2**62, 0), (1448, 22), (2**40, 31)):
            t = tflm.TflmModel(_stats_file((1, T, D), eps, c))
            for kind in (0, 1, 2, 3, 4, 7):
                x = rows_of(rng, kind, T, D).astype(np.int16)[None]
                t.it.set_input(x, 0)
                t.it.invoke()
                nm, rs = (np.asarray(t.it.get_output(k)) for k in (0, 1))
                assert nm.dtype == rs.dtype == np.int16 and nm.shape == rs.shape == (1, T, 1)
                assert np.array_equal(nm, K.ln_neg_mean(x)), (D, kind)
                assert np.array_equal(rs, K.ln_rstd(x, eps, c)), (D, eps, c, kind)


@pytest.mark.parametrize("x_shape,eps,c,out_last,x_dtype,op,why", [
    ((1, 3, 8), 0, 43, 1, "int16", "TSPTQ_LN_RSTD", "options out of range: eps 0 (0..2^62), c 43 (0..42)"),
    ((1, 3, 8), -1, 5, 1, "int16", "TSPTQ_LN_RSTD", "options out of range: eps -1"),
    ((1, 3, 8), 2**62 + 1, 5, 1, "int16", "TSPTQ_LN_RSTD", "options out of range: eps 4611686018427387905"),
    ((1, 3, 8), 0, 5, 2, "int16", "TSPTQ_LN_NEG_MEAN", "the output must have x's shape with a last axis of 1"),
    ((1, 3, 4097), 0, 5, 1, "int16", "TSPTQ_LN_NEG_MEAN", "x's last axis (D = 4097) is outside 1..4096"),
    ((1, 3, 8), 0, 5, 1, "int8", "TSPTQ_LN_NEG_MEAN", "x must be int16, not int8"),
])
def test_the_ln_statistics_refuse_what_they_do_not_define_in_one_line(x_shape, eps, c, out_last, x_dtype, op, why):
    with pytest.raises(tflm.TflmError) as e:
        tflm.TflmModel(_stats_file(x_shape, eps, c, out_last, x_dtype))
    msg = str(e.value)
    assert "\n" not in msg and f"{op}: {why}" in msg, msg


def _mul_model(sa, sb, sy, T: int, D: int, b: np.ndarray | None = None) -> IntModel:
    """The NPU LayerNorm's MUL alone: (1, T, D) int16 times (1, T, 1) int16 (broadcast; a constant when ``b`` is
    given), int16 out."""
    tensors = [Tensor("a", (1, T, D), "int16", _qp16(sa)), Tensor("b", (1, T, 1), "int16", _qp16(sb), b),
               Tensor("y", (1, T, D), "int16", _qp16(sy))]
    return IntModel(tensors, [Op("MUL", [0, 1], [2], {})], [0] if b is not None else [0, 1], [2], {"method": "mul"})


def _run2(t, a, b) -> np.ndarray:
    t.it.set_input(a, 0)
    t.it.set_input(b, 1)
    t.it.invoke()
    return np.asarray(t.it.get_output(0)).reshape(a.shape)


def test_tflm_int16_mul_takes_its_multiplier_from_double_scales():
    """TFLM's int16 MUL (mul_common.cc) computes s_a s_b / s_y in double, LiteRT and the integer model in float32:
    on operands where the two multipliers round apart TFLM gives the double one's bytes (tflm.mul_int16, the integer
    model's kernel with that multiplier), and the integer model's own MUL differs; at the lowering's kind of scales
    (s_b = D / (s_a 2^c), s_y = 2^-k)."""
    from tsptq.intmodel import kernels as K

    from tsptq.intmodel.fixedpoint import quantize_multiplier

    rng = np.random.default_rng(42)
    T, D, differ, tried = 8, 64, 0, 0
    every = np.arange(-32768, 32768, dtype=np.int64)
    while tried < 6:
        sa = np.float32(10 ** rng.uniform(-5, -2))
        d, c, k = int(rng.choice([16, 192, 768])), int(rng.integers(18, 34)), int(rng.integers(9, 13))
        sb, sy = np.float32(d / (float(sa) * 2.0**c)), np.float32(2.0**-k)
        m32 = quantize_multiplier(float(sa * sb / sy))  # float32 arithmetic, as tsptq.intmodel.ops._mul
        m64 = tflm.mul_int16_multiplier(sa, sb, sy)
        if m32 == m64 or m64[1] > 0:  # the same multiplier, or a left shift (the next test's)
            continue
        tried += 1
        a = rng.integers(-32768, 32768, (1, T, D)).astype(np.int16)
        b = rng.integers(1, 32768, (1, T, 1)).astype(np.int16)
        for r in range(T):  # half of each row where the two multipliers round apart, where there are such values
            apart = every[K.mul_int16(every, int(b[0, r, 0]), *m32) != K.mul_int16(every, int(b[0, r, 0]), *m64)]
            if len(apart):
                a[0, r, :D // 2] = rng.choice(apart, D // 2)
        model = _mul_model(sa, sb, sy, T, D)
        got = _run2(tflm.TflmModel(to_tflite(model)), a, b)
        assert np.array_equal(got, tflm.mul_int16(a, b, *m64)) and np.array_equal(got, K.mul_int16(a, b, *m64))
        differ += int((got != ALL_OPS["MUL"].kernel(model, model.ops[0], [a, b])).sum())
    assert differ > 0


def test_tflm_int16_mul_wraps_its_left_shift_in_32_bits():
    """A multiplier of 1 or more (shift > 0): TFLM shifts the int32 product left and wraps around; tflm.mul_int16 is
    TFLM's bytes. The integer model does not define such a MUL (TFLite's kernels overflow there): it refuses it, and
    the lowering never writes one."""
    rng = np.random.default_rng(43)
    sa, sb, sy = np.float32(0.01), np.float32(0.003), np.float32(0.00001)
    mult, shift = tflm.mul_int16_multiplier(sa, sb, sy)
    assert shift > 0
    a = rng.integers(-32768, 32768, (1, 4, 32)).astype(np.int16)
    b = rng.integers(-32768, 32768, (1, 4, 1)).astype(np.int16)
    model = _mul_model(sa, sb, sy, 4, 32, b)
    t = tflm.TflmModel(to_tflite(model))
    t.it.set_input(a, 0)
    t.it.invoke()
    got = np.asarray(t.it.get_output(0)).reshape(a.shape)
    assert np.array_equal(got, tflm.mul_int16(a, b, mult, shift))
    with pytest.raises(ModelFileError, match="multiplier below 1"):
        ALL_OPS["MUL"].kernel(model, model.ops[0], [a, b])


def test_tflm_depthwise_16x8_is_the_integer_models():
    """The NPU LayerNorm's gamma and beta, a 1x1 DEPTHWISE_CONV_2D 16x8 (weights +-127 or 0, per-channel scales,
    int64 bias): TFLM's kernel (its 64-bit MultiplyByQuantizedMultiplier, as LiteRT's) gives the integer model's
    bytes, over the whole int16 input range, saturation and large biases included."""
    rng = np.random.default_rng(44)
    for D, T in ((1, 5), (16, 9), (192, 7)):
        k, unit = int(rng.integers(9, 13)), float(10 ** rng.uniform(-3, -1))
        gamma = rng.normal(1, 0.6, D) * np.where(rng.random(D) < 0.1, 0, 1)
        beta = rng.normal(0, 1, D) * np.where(rng.random(D) < 0.2, 40, 1)
        w_scale = np.where(gamma != 0, np.abs(gamma) / 127, 1.0).astype(np.float32)
        b_scale = (np.float32(2.0**-k) * w_scale).astype(np.float32)
        w = (127 * np.sign(gamma)).astype(np.int8).reshape(1, 1, 1, D)
        bias = np.round(beta / b_scale.astype(np.float64)).astype(np.int64)
        tensors = [Tensor("n", (1, T, 1, D), "int16", _qp16(2.0**-k)),
                   Tensor("gamma", (1, 1, 1, D), "int8", QuantParams(w_scale, np.zeros(D, np.int64), axis=3), w),
                   Tensor("beta", (D,), "int64", QuantParams(b_scale, np.zeros(D, np.int64)), bias),
                   Tensor("y", (1, T, 1, D), "int16", _qp16(unit))]
        model = IntModel(tensors, [Op("DEPTHWISE_CONV_2D_16X8", [0, 1, 2], [3], {})], [0], [3], {"method": "dw"})
        t = tflm.TflmModel(to_tflite(model))
        for r in range(6):
            n = (rng.integers(-32768, 32768, (1, T, 1, D)) if r % 2 else
                 np.clip(np.round(rng.normal(0, 2.0**k, (1, T, 1, D))), -32768, 32767)).astype(np.int16)
            t.it.set_input(n, 0)
            t.it.invoke()
            got = np.asarray(t.it.get_output(0)).reshape(n.shape)
            want = ALL_OPS["DEPTHWISE_CONV_2D_16X8"].kernel(model, model.ops[0], [n, w, bias])
            assert np.array_equal(got, want) and np.array_equal(got, tflm.run_tflm_arithmetic(model, n)), (D, r)
