"""The tsptq .tflite inside stock LiteRT (ai-edge-litert) with the external delegate libtsptq_delegate.so (issue 6).

(a) with LiteRT's reference kernels (BUILTIN_REF) for the builtins and the delegate for the TSPTQ_* ops, the outputs are
    byte-identical to the Python integer reference (IntModel.run) on 100 bundled CIFAR-10 test images;
(b) with the default resolver (optimized builtins + XNNPACK) LiteRT's own requantization of the builtins differs from
    TFLite's reference arithmetic by a few output codes: top-1 agreement is asserted >= 97% (measured 99/100) and the
    largest output difference <= 16 codes (measured 9);
(c) without the 'model' option the delegate refuses with a clear message; an unsupported runtime version is refused;
(d) without the delegate, LiteRT accepts the file but allocate_tensors() fails on the unresolved TSPTQ_* custom ops:
    that is why the delegate is needed.
"""
from __future__ import annotations

import numpy as np
import pytest

litert = pytest.importorskip("ai_edge_litert.interpreter")

from tsptq.c_build import have_compiler  # noqa: E402


pytestmark = pytest.mark.skipif(not have_compiler(), reason="no C compiler (set CC or install gcc)")

from tsptq.calib import datasets, zoo  # noqa: E402
from tsptq.calib.observers import record  # noqa: E402
from tsptq.litert import LiteRTError, build_delegate, make_interpreter  # noqa: E402
from tsptq.lower import lower  # noqa: E402
from tsptq.quantize import quantize  # noqa: E402
from tsptq.qvit import Graph  # noqa: E402
from tsptq.tflite_export import to_tflite  # noqa: E402
from tsptq.tflite_import import parse_tflite  # noqa: E402
from tiny_vit import tiny_vit  # noqa: E402

N_IMAGES = 100


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """cifar10-vit exported with the tsptq method, 100 test images quantized with the file's input code, and the
    Python integer reference's outputs."""
    model = zoo.load_reference("cifar10-vit")
    graph = Graph.from_model(model)
    cal = record(graph, datasets.load_bundled_sample("train").balanced(32), 16, False)
    data = to_tflite(lower(quantize(graph, cal, "tsptq", progress=False)))
    path = tmp_path_factory.mktemp("litert") / "cifar10-vit-tsptq.tflite"
    path.write_bytes(data)
    test = datasets.load_bundled_sample("test").take(N_IMAGES)
    im = parse_tflite(data)
    x = im.quantize_input(datasets.to_model_input(test.images, model.cfg).numpy())
    return path, x, im.run(x)


def _run(it, x: np.ndarray) -> np.ndarray:
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    outs = []
    for k in range(len(x)):
        it.set_tensor(i, x[k:k + 1])
        it.invoke()
        outs.append(it.get_tensor(o).copy())
    return np.concatenate(outs)


def test_builtin_ref_is_bit_exact_with_the_integer_reference(cifar):
    path, x, ref = cifar
    it = make_interpreter(path, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    out = _run(it, x)
    assert out.dtype == ref.dtype and out.shape == ref.shape == (N_IMAGES, 10)
    assert np.array_equal(out, ref), f"{np.mean(out != ref):.4%} of output bytes differ"


def test_default_resolver_agreement(cifar):
    path, x, ref = cifar
    out = _run(make_interpreter(path), x)
    top1 = float(np.mean(out.argmax(1) == ref.argmax(1)))
    max_diff = int(np.abs(out.astype(np.int32) - ref.astype(np.int32)).max())
    print(f"default resolver (XNNPACK): top-1 agreement {top1:.2%}, largest output difference {max_diff} codes, "
          f"{np.mean([np.array_equal(a, b) for a, b in zip(out, ref)]):.0%} of images byte-identical")
    assert top1 >= 0.97
    assert max_diff <= 16


def test_missing_model_option_is_a_clear_error():
    with pytest.raises(ValueError, match="option 'model'"):
        litert.load_delegate(str(build_delegate()))


def test_unknown_runtime_version_is_refused(cifar):
    path, _, _ = cifar
    with pytest.raises(ValueError, match="runtime version '9.9.9' is not supported"):
        litert.load_delegate(str(build_delegate()), options={"model": str(path), "runtime_version": "9.9.9"})


def test_unsupported_litert_version_refused_in_python(cifar, monkeypatch):
    import tsptq.litert as tl

    monkeypatch.setattr(tl, "litert_version", lambda: "9.9.9")
    with pytest.raises(LiteRTError, match="not supported"):
        make_interpreter(cifar[0])


def test_delegate_refuses_another_model(cifar, tmp_path):
    """The delegate checks the interpreter's tensors against the file it loaded: a different model is refused."""
    path, _, _ = cifar
    other = tmp_path / "tiny.tflite"
    _, graph, cal, _ = tiny_vit(8)
    other.write_bytes(to_tflite(lower(quantize(graph, cal, "tsptq", progress=False))))
    d = litert.load_delegate(str(build_delegate()), options={"model": str(path)})
    with pytest.raises((RuntimeError, ValueError), match="refusing to run"):
        litert.Interpreter(model_path=str(other), experimental_delegates=[d]).allocate_tensors()


def test_without_the_delegate_allocate_tensors_fails(cifar):
    """Stock LiteRT parses the file (builtins + CUSTOM ops) but cannot prepare TSPTQ_* nodes without the delegate."""
    path, _, _ = cifar
    it = litert.Interpreter(model_path=str(path))
    with pytest.raises(RuntimeError, match="TSPTQ_"):
        it.allocate_tensors()
