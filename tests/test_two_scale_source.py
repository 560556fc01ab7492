"""Issue 15, item 4: one source of truth per two-scale tensor, and a C loader that no longer parses JSON.

An O-2SF (`channel_pow2`) tensor's shifts are written four times: its scale vector (`s * 2^k_c`, the source of truth),
its CustomQuantization `details`, the `tsptq` metadata JSON, and the `in_shift` constant of the TSPTQ_FC_2S /
TSPTQ_LAYERNORM_2S it feeds (the only copy the C kernels read). The C loader and its Python mirror
(tsptq.tflite.checks) refuse a file whose `in_shift` disagrees with the input's scale vector, with the same message;
the Python reader also holds the details and the metadata to the scale vector and to `in_shift`.

The C loader reads only the 8-byte `tsptq_format` metadata entry (`TQFM` + u32 version): a file without it (written
before it existed), or with a bad one, is refused by both readers with the same message; a file whose JSON is garbage
but whose `tsptq_format` entry is right loads and runs in C (the runtime needs nothing from the JSON) and is refused by
the Python reader (its tools need the method, config and two-scale descriptions).
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from tflite_edit import repack
from tsptq.errors import ModelFileError
from tsptq.runtime.c_build import have_compiler
from tsptq.tflite import checks, reader
from tsptq.tflite.reader import parse_tflite
from tsptq.tflite.writer import FORMAT_NAME, format_entry, to_tflite

pytestmark = pytest.mark.skipif(not have_compiler(), reason="no C compiler (set CC or install gcc)")

METHODS = ("tsptq", "minmax", "twin")


@pytest.fixture(scope="module")
def models():
    from tiny_vit import tiny_vit
    from tsptq.intmodel.lower import lower
    from tsptq.quant.quantize import quantize

    _, graph, cal, _ = tiny_vit(16)
    return {m: lower(quantize(graph, cal, m, progress=False)) for m in METHODS}


def python_form(name: str, message: str) -> str:
    """The Python readers' text of a C refusal: the same words, with "bad quantization: " after the op where C's code
    is TSPTQ_ERR_BAD_QUANTIZATION, and "this tsptq ... upgrade tsptq" where C says "this runtime ... upgrade the
    runtime"."""
    if name == "TSPTQ_ERR_BAD_QUANTIZATION":
        where, _, rest = message.partition("): ")
        message = f"{where}): bad quantization: {rest}"
    return message.replace("this runtime reads", "this tsptq reads").replace("upgrade the runtime", "upgrade tsptq")


def refused_alike(c_load, data: bytes, code: str, message: str) -> None:
    """C refuses with `code` and exactly `message`; the mirror (c_loader_checks) and the reader with its Python form."""
    assert c_load(data) == (code, message)
    expected = python_form(code, message)
    with pytest.raises(ModelFileError) as e:
        checks.c_loader_checks(data)
    assert str(e.value) == expected
    with pytest.raises(ModelFileError) as e:
        parse_tflite(data)
    assert str(e.value) == expected


# ---- in_shift against the input's scale vector ---------------------------------------------------------------------

def _ops(im, kind: str, pow2: bool):
    """(op index, op) of `kind` whose input x is (pow2) or is not (not pow2) an O-2SF tensor."""
    for k, op in enumerate(im.ops):
        x = im.tensors[op.inputs[0]]
        if op.kind == kind and ((x.quant.details or {}).get("kind") == "channel_pow2") == pow2:
            yield k, op


def _in_shift(op) -> int:
    return op.inputs[5] if op.kind == "TSPTQ_FC_2S" else op.inputs[1]


def _first_reader(im, x: int) -> int:
    """The first TSPTQ_FC_2S / TSPTQ_LAYERNORM_2S that reads tensor x (where the loader meets a bad x first)."""
    return next(k for k, op in enumerate(im.ops) if op.kind in ("TSPTQ_FC_2S", "TSPTQ_LAYERNORM_2S")
                and op.inputs[0] == x)


@pytest.mark.parametrize("kind", ["TSPTQ_LAYERNORM_2S", "TSPTQ_FC_2S"])
def test_an_in_shift_that_disagrees_with_the_scales_is_refused_by_all_readers(models, c_load, kind):
    im = copy.deepcopy(models["tsptq"])
    k, op = next(_ops(im, kind, pow2=True))
    t = im.tensors[_in_shift(op)]
    c = 3
    t.data = t.data.copy()
    t.data[c] = (int(t.data[c]) + 1) % 8
    x = im.tensors[op.inputs[0]].name
    refused_alike(c_load, to_tflite(im), "TSPTQ_ERR_BAD_QUANTIZATION",
                  f"op {k} ({kind}): in_shift disagrees with the scales of input '{x}' at channel {c}")


def test_a_scale_vector_that_disagrees_with_in_shift_is_refused_by_all_readers(models, c_load):
    """The other side: the input's scale of one channel doubled (its details and metadata left as they were)."""
    im = copy.deepcopy(models["tsptq"])
    _, op = next(_ops(im, "TSPTQ_FC_2S", pow2=True))
    x = op.inputs[0]
    q = im.tensors[x].quant
    q.scale = q.scale.copy()
    q.scale[5] *= np.float32(2)
    k = _first_reader(im, x)
    refused_alike(c_load, to_tflite(im), "TSPTQ_ERR_BAD_QUANTIZATION",
                  f"op {k} ({im.ops[k].kind}): in_shift disagrees with the scales of input '{im.tensors[x].name}' at "
                  "channel 5")


@pytest.mark.parametrize("method, kind", [("minmax", "TSPTQ_LAYERNORM_2S"), ("twin", "TSPTQ_FC_2S")],
                         ids=["uniform-layernorm", "sign-split-fc"])
def test_a_per_tensor_input_needs_in_shift_zero(models, c_load, method, kind):
    im = copy.deepcopy(models[method])
    k, op = next(_ops(im, kind, pow2=False))
    t = im.tensors[_in_shift(op)]
    t.data = t.data.copy()
    t.data[2] = 1
    x = im.tensors[op.inputs[0]].name
    refused_alike(c_load, to_tflite(im), "TSPTQ_ERR_BAD_QUANTIZATION",
                  f"op {k} ({kind}): input '{x}' has a per-tensor code, but in_shift shifts its channel 2")


def test_an_fc_over_per_channel_scales_must_decode_them(models, c_load):
    """TSPTQ_FC_2S reads in_shift only for in_kind channel_pow2: another in_kind over per-channel scales is refused."""
    im = copy.deepcopy(models["tsptq"])
    k, op = next(_ops(im, "TSPTQ_FC_2S", pow2=True))
    op.options = dict(op.options, in_kind=0)
    x = im.tensors[op.inputs[0]].name
    refused_alike(c_load, to_tflite(im), "TSPTQ_ERR_BAD_QUANTIZATION",
                  f"op {k} (TSPTQ_FC_2S): input '{x}' has per-channel scales, but in_kind 0 is not channel_pow2")


def test_the_python_reader_holds_details_and_metadata_to_the_scales(models, c_load):
    """What the C runtime does not read (details, metadata) the Python reader checks against the scale vector and
    in_shift. Every in_shift + 1 keeps scale[c] = base * 2^in_shift[c] (another base): only the details tell."""
    im0 = models["tsptq"]
    _, op = next(_ops(im0, "TSPTQ_LAYERNORM_2S", pow2=True))
    xi, si = op.inputs[0], _in_shift(op)
    if int(im0.tensors[si].data.max()) >= 7:
        pytest.skip("a shift of 7 cannot grow")
    name = im0.tensors[xi].name

    im = copy.deepcopy(im0)  # in_shift + 1 everywhere
    im.tensors[si].data = im.tensors[si].data + np.int8(1)
    data = to_tflite(im)
    assert c_load(data) is None
    with pytest.raises(ModelFileError, match=rf"in_shift disagrees with the quantization details of input '{name}' at "
                                             r"channel 0"):
        parse_tflite(data)

    im = copy.deepcopy(im0)  # details: base_scale / 2 with shifts + 1 (the scales still fit them; in_shift does not)
    d = im.tensors[xi].quant.details
    d["base_scale"] /= 2
    d["shifts"] = [s + 1 for s in d["shifts"]]
    data = to_tflite(im)
    assert c_load(data) is None
    with pytest.raises(ModelFileError, match="in_shift disagrees with the quantization details"):
        parse_tflite(data)

    im = copy.deepcopy(im0)  # details: another base_scale
    im.tensors[xi].quant.details["base_scale"] *= 3
    data = to_tflite(im)
    assert c_load(data) is None
    with pytest.raises(ModelFileError, match=rf"\({name}\): bad two-scale code description: scale 0 is not "
                                             r"base_scale \* 2\^shifts\[0\]"):
        parse_tflite(data)


# ---- the 'tsptq_format' entry -------------------------------------------------------------------------------------

def _name(e) -> str:
    return e.name.decode() if isinstance(e.name, bytes) else e.name


def with_format(data: bytes, raw: bytes | None) -> bytes:
    """The file with its 'tsptq_format' entry's bytes replaced (None: the entry removed)."""
    def edit(m):
        e = next(e for e in m.metadata if _name(e) == FORMAT_NAME)
        if raw is None:
            m.metadata = [x for x in m.metadata if x is not e]
        else:
            m.buffers[e.buffer].data = np.frombuffer(raw, np.uint8)
    return repack(data, edit)


def test_the_writer_puts_the_format_entry_next_to_the_json(models):
    import flatbuffers  # noqa: F401  (the schema bindings need it)
    from ai_edge_litert import schema_py_generated as S

    m = S.ModelT.InitFromPackedBuf(to_tflite(models["tsptq"]), 0)
    names = [_name(e) for e in m.metadata]
    assert names == ["tsptq", FORMAT_NAME]
    assert bytes(m.buffers[m.metadata[1].buffer].data) == b"TQFM\x01\x00\x00\x00" == format_entry()
    assert json.loads(bytes(m.buffers[m.metadata[0].buffer].data))["version"] == 1


@pytest.mark.parametrize("raw, code, message", [
    (None, "TSPTQ_ERR_INVALID_MODEL", "no 'tsptq_format' metadata entry: written by an older tsptq, re-export it"),
    (b"TQFM", "TSPTQ_ERR_INVALID_MODEL", "the 'tsptq_format' metadata holds 4 bytes, expected 8"),
    (b"TQFX\x01\x00\x00\x00", "TSPTQ_ERR_INVALID_MODEL", "the 'tsptq_format' metadata does not start with 'TQFM'"),
    (format_entry(2), "TSPTQ_ERR_VERSION", "the file's tsptq format is version 2; this runtime reads up to version 1: "
                                           "upgrade the runtime"),
    (format_entry(0xFFFFFFFF), "TSPTQ_ERR_VERSION", "the file's tsptq format is version 4294967295; this runtime reads "
                                                    "up to version 1: upgrade the runtime"),
    (format_entry(0), "TSPTQ_ERR_INVALID_MODEL", "unknown tsptq format version 0"),
    (format_entry() + b"\0\0\0\0", "TSPTQ_ERR_INVALID_MODEL", "the 'tsptq_format' metadata holds 12 bytes, expected 8"),
], ids=["missing", "short", "magic", "newer", "u32-max", "zero", "long"])
def test_a_bad_format_entry_is_refused_by_all_readers(models, c_load, raw, code, message):
    refused_alike(c_load, with_format(to_tflite(models["minmax"]), raw), code, message)


def test_no_metadata_at_all_and_an_empty_format_buffer(models, c_load):
    data = to_tflite(models["minmax"])
    refused_alike(c_load, repack(data, lambda m: setattr(m, "metadata", [])), "TSPTQ_ERR_INVALID_MODEL",
                  "no 'tsptq_format' metadata entry: not a file written by tsptq export")

    def empty(m):
        next(e for e in m.metadata if _name(e) == FORMAT_NAME).buffer = 0
    refused_alike(c_load, repack(data, empty), "TSPTQ_ERR_INVALID_MODEL",
                  "the 'tsptq_format' metadata points to buffer 0, which does not exist or is empty")


def _with_json(data: bytes, raw: bytes | None) -> bytes:
    def edit(m):
        e = next(e for e in m.metadata if _name(e) == "tsptq")
        if raw is None:
            m.metadata = [x for x in m.metadata if x is not e]
        else:
            m.buffers[e.buffer].data = np.frombuffer(raw, np.uint8)
    return repack(data, edit)


def test_the_c_runtime_does_not_read_the_json(models):
    """JSON garbage (or no JSON entry) with a right 'tsptq_format' entry: the C runtime loads and runs the file as
    before (bytewise the same outputs); the Python reader refuses it, its tools need the JSON."""
    from tsptq.runtime.c_binding import CModel

    im = models["tsptq"]
    data = to_tflite(im)
    x = np.random.default_rng(0).integers(-128, 128, (2, *im.input.shape[1:]), dtype=np.int8)
    want = CModel(data).run(x)
    for raw, problem in ((b"{not json", "the 'tsptq' metadata is not valid JSON"),
                         (b'{"format": "tsptq", "version": "1"}', "the 'tsptq' metadata has no format/version fields"),
                         (None, "no 'tsptq' metadata entry: the JSON the Python tools read")):
        bad = _with_json(data, raw)
        np.testing.assert_array_equal(CModel(bad).run(x), want)
        with pytest.raises(ModelFileError, match=problem):
            parse_tflite(bad)


def test_the_json_version_must_be_the_format_entry_version(models, c_load, monkeypatch):
    """With a (future) runtime that reads version 2: a file whose entry says 2 and whose JSON says 1 is refused by the
    Python reader (C reads only the entry)."""
    monkeypatch.setattr(checks, "METADATA_VERSION", 2)
    monkeypatch.setattr(reader, "METADATA_VERSION", 2)
    data = with_format(to_tflite(models["minmax"]), format_entry(2))
    checks.c_loader_checks(data)  # the mirror: version 2 is known now
    with pytest.raises(ModelFileError, match="the 'tsptq' metadata is version 1, its 'tsptq_format' entry version 2: "
                                             "they must agree"):
        parse_tflite(data)


def test_exported_files_load_in_both(models, c_load):
    for im in models.values():
        data = to_tflite(im)
        assert c_load(data) is None
        parse_tflite(data)
