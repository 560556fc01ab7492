"""The .tflite file: schema-valid for standard tooling, a faithful round trip of the integer model, clear errors on
every kind of bad file, and a reader that raises only the project's errors on mutated files."""
from __future__ import annotations

import json

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as S
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsptq.data import datasets

from tsptq.model import zoo
from tsptq.quant.observers import record
from tsptq.cli.main import main
from tsptq.errors import ModelFileError, UnsupportedOpError
from tsptq.intmodel.lower import lower
from tsptq.quant.quantize import quantize
from tsptq.quant.qvit import Graph
from tsptq.tflite.writer import export, to_tflite
from tsptq.tflite.reader import parse_tflite, read_tflite
from tflite_edit import edit_metadata, repack


@pytest.fixture(scope="module")
def tsptq_model():
    model = zoo.load_reference("cifar10-vit")
    graph = Graph.from_model(model)
    cal = record(graph, datasets.load_bundled_sample("train").balanced(32), 16, False)
    im = lower(quantize(graph, cal, "tsptq", progress=False))
    x = datasets.to_model_input(datasets.load_bundled_sample("test").take(64).images, model.cfg).numpy()
    return im, to_tflite(im), im.quantize_input(x)


@pytest.mark.slow  # builds cifar10-vit tsptq
def test_file_is_schema_valid_for_standard_tooling(tsptq_model):
    import tflite

    im, data, _ = tsptq_model
    assert data[4:8] == b"TFL3"
    m = tflite.Model.GetRootAsModel(data, 0)
    g = m.Subgraphs(0)
    assert g.OperatorsLength() == len(im.ops) and g.TensorsLength() == len(im.tensors)
    customs = {m.OperatorCodes(i).CustomCode() for i in range(m.OperatorCodesLength())} - {None}
    assert customs == {b"TSPTQ_LAYERNORM_2S", b"TSPTQ_SOFTMAX_2S", b"TSPTQ_GELU_2S", b"TSPTQ_FC_2S", b"TSPTQ_BMM_2S",
                       b"TSPTQ_ADD_2S"}
    for i in range(m.BuffersLength()):  # every non-empty buffer starts on a 16-byte boundary
        buf = m.Buffers(i)
        if buf.DataLength():
            o = flatbuffers.number_types.UOffsetTFlags.py_type(buf._tab.Offset(4))
            assert buf._tab.Vector(o) % 16 == 0
    assert m.Metadata(0).Name() == b"tsptq"
    sig = m.SignatureDefs(0)
    assert sig.Inputs(0).Name() == b"image" and sig.Outputs(0).Name() == b"logits"


@pytest.mark.slow  # builds cifar10-vit tsptq
def test_file_constructs_in_litert_and_names_the_custom_ops(tsptq_model):
    from ai_edge_litert.interpreter import Interpreter

    _, data, _ = tsptq_model
    it = Interpreter(model_content=data)
    assert tuple(it.get_input_details()[0]["shape"]) == (1, 32, 32, 3)
    assert it.get_signature_list() == {"serving_default": {"inputs": ["image"], "outputs": ["logits"]}}
    with pytest.raises(RuntimeError, match="TSPTQ_"):
        it.allocate_tensors()  # until a delegate runs the custom ops


@pytest.mark.slow  # builds cifar10-vit tsptq
def test_round_trip_is_byte_exact(tsptq_model):
    im, data, x = tsptq_model
    back = parse_tflite(data)
    assert [op.kind for op in back.ops] == [op.kind for op in im.ops]
    for a, b in zip(im.tensors, back.tensors):
        assert (a.name, a.shape, a.dtype) == (b.name, b.shape, b.dtype)
        assert (a.data is None) == (b.data is None) and (a.data is None or np.array_equal(a.data, b.data))
    np.testing.assert_array_equal(back.run(x), im.run(x))
    assert back.metadata["method"] == "tsptq" and back.metadata["bits"] == "W8A8"


@pytest.mark.slow  # builds cifar10-vit tsptq
def test_metadata_describes_every_two_scale_tensor(tsptq_model):
    im, data, _ = tsptq_model
    m = S.ModelT.InitFromPackedBuf(data, 0)
    meta = json.loads(bytes(m.buffers[m.metadata[0].buffer].data))
    assert meta["format"] == "tsptq" and meta["version"] == 1
    assert meta["calibration"]["calib_images"] == 32
    entries = meta["two_scale"]
    kinds = {e["kind"] for e in entries.values()}
    assert "channel_pow2" in kinds  # O-2SF LayerNorm inputs/outputs
    for name, e in entries.items():
        t = im.tensor(name)
        if e["kind"] == "two_scale":
            assert e["layout"] == "flag:1|field:7" and 0 <= e["ratio_log2"] <= 8 and e["fine_scale"] > 0
            assert t.dtype == "uint8"
        if e["kind"] == "channel_pow2":
            assert len(e["outlier_mask"]) == t.shape[-1]
            np.testing.assert_allclose(t.quant.scale, e["base_scale"] * np.exp2(e["shifts"]), rtol=1e-6)


@pytest.mark.slow  # builds cifar10-vit tsptq
def test_cli_export_inspect_verify(tmp_path, capsys):
    out = tmp_path / "m.tflite"
    assert main(["export", "--model", "cifar10-vit", "--method", "minmax", "--data", "bundled", "--out", str(out),
                 "--quiet"]) == 0
    assert out.read_bytes()[4:8] == b"TFL3"
    assert main(["inspect", str(out), "--brief", "--json", str(tmp_path / "i.json")]) == 0
    text = capsys.readouterr().out
    assert "TSPTQ_LAYERNORM_2S" in text and "weight bytes" in text
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["weight_bytes"] > 800_000 and info["custom_ops"] > 0
    assert main(["verify", str(out), "--eval-images", "40", "--quiet", "--json", str(tmp_path / "v.json")]) == 0
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["bytes_equal_to_in_memory"] is True and v["eval_images"] == 40


@pytest.mark.slow  # builds cifar10-vit tsptq
def test_export_is_atomic(tsptq_model, tmp_path, monkeypatch):
    im, _, _ = tsptq_model
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old")
    import tsptq.tflite.writer as E

    monkeypatch.setattr(E, "to_tflite", lambda model: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        export(im, path)
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]


# --- bad files ------------------------------------------------------------------------------------------------------

@pytest.mark.slow  # builds cifar10-vit tsptq
def test_truncated_and_foreign_files(tsptq_model, tmp_path):
    _, data, _ = tsptq_model
    with pytest.raises(ModelFileError, match="truncated"):
        parse_tflite(data[:5])
    with pytest.raises(ModelFileError, match="corrupted|truncated|metadata|buffer"):
        parse_tflite(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="identifier"):
        parse_tflite(data[:4] + b"XXXX" + data[8:])
    with pytest.raises(ModelFileError, match="cannot read"):
        read_tflite(tmp_path / "missing.tflite")


@pytest.mark.slow  # builds cifar10-vit tsptq
def test_metadata_problems(tsptq_model):
    _, data, _ = tsptq_model
    with pytest.raises(ModelFileError, match="version 99.*upgrade"):
        parse_tflite(repack(data, edit_metadata(lambda m: m.update(version=99))))
    name = next(iter(json.loads(bytes(S.ModelT.InitFromPackedBuf(data, 0).buffers[-1].data))["two_scale"]))

    def change_scale(m):
        e = m["two_scale"][name]
        e["fine_scale" if "fine_scale" in e else "base_scale"] = 123.0
    with pytest.raises(ModelFileError, match=f"disagree.*{name}"):
        parse_tflite(repack(data, edit_metadata(change_scale)))
    with pytest.raises(ModelFileError, match="does not describe"):
        parse_tflite(repack(data, edit_metadata(lambda m: m["two_scale"].pop(name))))
    with pytest.raises(ModelFileError, match="no 'tsptq_format' metadata entry: not a file written by tsptq export"):
        parse_tflite(repack(data, lambda m: setattr(m, "metadata", [])))


@pytest.mark.slow  # builds cifar10-vit tsptq
def test_unsupported_op_is_named(tsptq_model):
    _, data, _ = tsptq_model

    def to_softmax(m):
        for c in m.operatorCodes:
            if c.builtinCode == S.BuiltinOperator.TRANSPOSE:
                c.builtinCode = c.deprecatedBuiltinCode = S.BuiltinOperator.SOFTMAX
    with pytest.raises(UnsupportedOpError, match="SOFTMAX"):
        parse_tflite(repack(data, to_softmax))

    def unknown_custom(m):
        for c in m.operatorCodes:
            if c.customCode == b"TSPTQ_GELU_2S":
                c.customCode = "MY_GELU"
    with pytest.raises(UnsupportedOpError, match="MY_GELU"):
        parse_tflite(repack(data, unknown_custom))


@pytest.mark.slow  # builds cifar10-vit tsptq
def test_graph_inconsistencies(tsptq_model):
    _, data, _ = tsptq_model

    def bad_index(m):
        op = m.subgraphs[0].operators[3]
        op.inputs = [99999] + list(op.inputs[1:])
    with pytest.raises(ModelFileError, match="tensor 99999"):
        parse_tflite(repack(data, bad_index))

    def short_buffer(m):
        t = next(t for t in m.subgraphs[0].tensors if t.buffer)
        m.buffers[t.buffer].data = m.buffers[t.buffer].data[:-1]
    with pytest.raises(ModelFileError, match="buffer holds"):
        parse_tflite(repack(data, short_buffer))

    def bad_scale(m):
        m.subgraphs[0].tensors[0].quantization.scale = [-1.0]
    with pytest.raises(ModelFileError, match="quantization"):
        parse_tflite(repack(data, bad_scale))


@pytest.fixture(scope="module")
def small_file():
    model = zoo.load_reference("fashion-vit")
    rng = np.random.default_rng(0)
    calib = datasets.ImageSet(rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8), np.zeros(8, np.int64), "noise")
    return to_tflite(lower(quantize(model, calib, "tsptq", progress=False)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_files_raise_only_project_errors(small_file, data):
    buf = bytearray(small_file)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        buf = buf[: data.draw(st.integers(0, len(buf)))]
    try:
        parse_tflite(bytes(buf))
    except ModelFileError:
        pass


def test_the_same_model_method_and_images_give_the_same_bytes(tiny_vits, monkeypatch):
    """No wall-clock figure reaches the file: `tsptq export` and `tsptq-deploy` of one model are one file (the
    calibration time differed between two exports before)."""
    _, graph, cal, _ = tiny_vits(16)
    first = quantize(graph, cal, "tsptq", progress=False)
    clock = iter(range(1000, 10**6, 977))
    monkeypatch.setattr("tsptq.quant.quantize.time.perf_counter", lambda: float(next(clock)))
    second = quantize(graph, cal, "tsptq", progress=False)
    assert first.info["calib_seconds"] != second.info["calib_seconds"]  # the clock did move
    assert to_tflite(lower(first)) == to_tflite(lower(second))
