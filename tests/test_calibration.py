"""Calibration and scale search: determinism, bad input, and that each two-scale search finds what it should."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tsptq.quant import search
from tsptq.data.datasets import ImageSet, to_model_input
from tsptq.errors import DataError, QuantizationError
from tsptq.quant.methods import METHODS, parse_bits, parse_methods
from tsptq.quant.quantize import quantize
from tsptq.quant.qvit import FloatHook, Graph, point_names, run
from tsptq.model.vit import ViTConfig, VisionTransformer

CFG = ViTConfig(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_hidden=96, num_classes=10,
                layer_scale=True, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return VisionTransformer(CFG).eval()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return ImageSet(rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 24), "random")


def _dicts(qm):
    return {k: v.to_dict() for k, v in qm.acts.items()}, {k: v.to_dict() for k, v in qm.weights.items()}


def test_functional_forward_equals_the_module(tiny, images):
    x = to_model_input(images.images[:4], CFG)
    assert torch.allclose(run(Graph.from_model(tiny), x, FloatHook()), tiny(x), atol=1e-5)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "fp32"])
def test_every_method_quantizes_every_point_deterministically(tiny, images, method):
    a = quantize(tiny, images, method, progress=False)
    b = quantize(tiny, images, method, progress=False)
    assert set(a.acts) == {name for name, _ in point_names(CFG)}
    assert _dicts(a) == _dicts(b)
    x = to_model_input(images.images[:4], CFG)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("bits", ["W8A8", "W6A6", "W4A8"])
def test_bit_widths_run_and_codes_respect_them(tiny, images, bits):
    w_bits, a_bits = parse_bits(bits)
    qm = quantize(tiny, images, "tsptq", bits, progress=False)
    assert all(q.bits == a_bits for q in qm.acts.values())
    for layer, (w, _) in qm.graph.linears.items():
        codes = qm.weights[layer].encode(w)
        assert int(codes.abs().max()) <= (1 << (w_bits - 1))
    assert torch.isfinite(qm(to_model_input(images.images[:2], CFG))).all()


def test_bad_input_gives_specific_errors(tiny, images):
    with pytest.raises(QuantizationError, match="empty"):
        quantize(tiny, images.take(0), "minmax", progress=False)
    with pytest.raises(QuantizationError, match="unknown method"):
        quantize(tiny, images, "nope", progress=False)
    with pytest.raises(QuantizationError, match="W8A8"):
        parse_bits("8bit")
    with pytest.raises(QuantizationError):
        parse_methods(" , ")
    with pytest.raises(DataError, match="channel"):
        quantize(tiny, ImageSet(np.zeros((4, 32, 32, 1), np.uint8), np.zeros(4, np.int64), "gray"), "minmax",
                 progress=False)
    for shape in ((4, 32, 16, 3), (4, 64, 64, 3)):
        with pytest.raises(DataError, match="model expects 32x32"):
            quantize(tiny, ImageSet(np.zeros(shape, np.uint8), np.zeros(4, np.int64), "odd"), "minmax", progress=False)


def _residual_with_outliers(seed=0, outliers=(5, 17), factor=30.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, 48, generator=gen)
    x[:, list(outliers)] *= factor
    return x


def test_o2sf_finds_the_outlier_channels_and_beats_uniform():
    x = _residual_with_outliers()
    gamma, beta = torch.ones(48), torch.zeros(48)
    err = search.layernorm_output_error(x, gamma, beta, 1e-6)
    q = search.o2sf(x, 8, err, x)
    assert q.outlier_mask.nonzero().flatten().tolist() == [5, 17]
    assert int(q.shifts.max()) >= 3  # 30x range needs at least 2^3 to 2^5
    uniform = search.mse_uniform(x, 8, err, x)
    assert err(q.fake(x)) < 0.5 * err(uniform.fake(x))


def test_o2sf_levels_give_each_outlier_channel_the_shift_its_range_needs():
    """Outlier channels two orders of magnitude apart (DINOv2's case): one common shift crushes the smaller one,
    per-channel levels keep it, and the two-level code stays a candidate."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4096, 48, generator=gen)
    x[:, 5] *= 8.0
    x[:, 17] *= 300.0
    err = search.layernorm_output_error(x, torch.ones(48), torch.zeros(48), 1e-6)
    two = search.o2sf(x, 8, err, x)
    levels = search.o2sf(x, 8, err, x, levels=True)
    assert len(set(two.shifts.tolist())) == 2
    assert 0 < int(levels.shifts[5]) < int(levels.shifts[17])
    assert err(levels.fake(x)) < 0.9 * err(two.fake(x))


def test_o2sf_without_outliers_is_a_plain_uniform_code():
    x = torch.randn(2048, 48, generator=torch.Generator().manual_seed(1))
    q = search.o2sf(x, 8, search.layernorm_output_error(x, torch.ones(48), torch.zeros(48), 1e-6), x)
    assert not q.outlier_mask.any()


def _attention(seed=0, tokens=197, heads=3):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(2, heads, tokens, tokens, generator=gen) * 2.5
    v = torch.randn(2, heads, tokens, 16, generator=gen)
    return scores.softmax(-1), v


def test_v2sf_softmax_beats_uniform_on_attention_output():
    probs, v = _attention()
    err = search.attention_output_error(probs, v)
    q = search.v2sf(probs, 8, False, err, probs, m_max=8)
    uniform = search.minmax(probs, 8)
    assert q.m >= 2  # long sequences: most probabilities are tiny, the fine region must be much finer
    assert err(q.fake(probs)) < 0.5 * err(uniform.fake(probs))


def _gelu_case(heavy: bool, seed=2):
    gen = torch.Generator().manual_seed(seed)
    pre = torch.randn(4096, 96, generator=gen) - (1.5 if heavy else 0.0)
    if heavy:  # a few large activations, as in pretrained ViTs (post-GELU up to ~14 while most are near 0)
        pre += (torch.rand(4096, 96, generator=gen) < 0.002) * 12.0
    return F.gelu(pre), torch.randn(48, 96, generator=gen) * 0.1


def test_v2sf_gelu_keeps_sign_and_beats_uniform_on_heavy_tails():
    h, w = _gelu_case(heavy=True)
    err = search.linear_output_error(h, w)
    q = search.v2sf(h, 8, True, err, h, m_max=8)
    assert q.signed_fine and q.fake(torch.tensor([-0.1])).item() < 0
    assert err(q.fake(h)) < 0.7 * err(search.mse_uniform(h, 8, err, h).fake(h))


@pytest.mark.parametrize("high", [True, False])
def test_gelu_input_code_clips_the_flat_negative_side_and_beats_one_common_clip(high):
    """A pre-GELU tensor with a long negative tail (DINOv2's fc1 outputs reach -18 where GELU is 0): scored through
    GELU and fc2, the low end is clipped far more than the high end, and the fc2 error falls well below the best
    common clip of both ends scored the same way."""
    gen = torch.Generator().manual_seed(3)
    pre = torch.randn(2048, 96, generator=gen) - 1.0
    pre[:, :4] -= 12 * torch.rand(2048, 4, generator=gen)  # a few channels deep in GELU's flat region
    pre += (torch.rand(2048, 96, generator=gen) < 0.002) * 6.0
    w = torch.randn(48, 96, generator=gen) * 0.1
    err = search.gelu_output_error(pre, w)
    q = search.asymmetric_uniform(pre, 8, err, pre, high=high)
    lo, hi = float(pre.min()), float(pre.max())
    q_lo, q_hi = q.decode(torch.tensor(-128)).item(), q.decode(torch.tensor(127)).item()
    assert q_lo / lo < q_hi / hi  # the low end gave up more of its range
    assert err(q.fake(pre)) < 0.6 * err(search.mse_uniform(pre, 8, err, pre).fake(pre))


def test_attention_scores_code_keeps_the_top_of_the_range():
    """Scored through Softmax x V, the scores' code may clip the very negative scores (probability ~0) but keeps
    their maximum, which the Softmax depends on; and it is no worse than the min/max code."""
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(2, 3, 50, 50, generator=gen) * 2
    scores[..., 0] += 6  # one key every query attends to strongly
    scores[:, :, :, 1] -= 20  # a key no query attends to
    v = torch.randn(2, 3, 50, 16, generator=gen)
    err = search.softmax_output_error(scores, v)
    q = search.asymmetric_uniform(scores, 8, err, scores, high=False)  # tsptq's search
    assert abs(q.decode(torch.tensor(127)).item() - float(scores.max())) <= float(q.scale)
    assert q.decode(torch.tensor(-128)).item() > 0.8 * float(scores.min())
    assert err(q.fake(scores)) <= err(search.minmax(scores, 8).fake(scores))


@pytest.mark.parametrize("variant", ["tsptq", "tsptq-nl-both"])
def test_nonlinear_input_variants_fit_gelu_and_softmax_inputs_through_them(tiny, images, variant):
    from tsptq.quant.methods import get_method
    from tsptq.quant.observers import record
    from tsptq.quant.quantize import fit_point
    graph = Graph.from_model(tiny)
    cal = record(graph, images, progress=False)
    fc2 = graph.linears["blocks.0.fc2"][0]
    x = cal.tensors["blocks.0.fc1"].reshape(-1, CFG.mlp_hidden)
    err = search.gelu_output_error(x, fc2)
    new = fit_point(get_method(variant), "blocks.0.fc1", "act", cal.tensors, graph, 8)
    old = fit_point(get_method("tsptq-self-clip"), "blocks.0.fc1", "act", cal.tensors, graph, 8)
    assert old.to_dict() == search.mse_uniform(x, 8).to_dict()
    assert new.to_dict() != old.to_dict() and err(new.fake(x)) <= err(search.minmax(x, 8).fake(x))
    s = cal.tensors["blocks.1.scores"]
    new_s = fit_point(get_method(variant), "blocks.1.scores", "act", cal.tensors, graph, 8)
    if variant == "tsptq":  # the high end stays at the observed maximum
        assert new_s.decode(torch.tensor(127)).item() >= float(s.max()) - float(new_s.scale)
    err_s = search.softmax_output_error(s[:8], cal.tensors["blocks.1.v"][:8])
    assert err_s(new_s.fake(s[:8])) <= err_s(search.minmax(s, 8).fake(s[:8]))


def test_tsptq_keeps_a_uniform_code_where_two_scales_do_not_pay(tiny, images):
    """On a mild post-GELU distribution a flag bit costs more than it gives: the fit must not be worse than uniform."""
    from tsptq.quant.quantize import fit_point

    h, w = _gelu_case(heavy=False)
    graph = Graph.from_model(tiny)
    graph.linears["blocks.0.fc2"] = (w, torch.zeros(48))
    q = fit_point(METHODS["tsptq"], "blocks.0.gelu", "gelu", {"blocks.0.gelu": h}, graph, 8)
    err = search.linear_output_error(h, w)
    assert err(q.fake(h)) <= err(search.minmax(h, 8).fake(h))


def _scoring(tiny, images):
    from tsptq.quant.observers import record
    from tsptq.quant.quantizers import Uniform

    graph = Graph.from_model(tiny)
    cal = record(graph, images, progress=False)
    fits = quantize(graph, cal, "minmax", progress=False)
    weights = {k: [q] for k, q in fits.weights.items()}
    broken = Uniform(torch.tensor(10.0), torch.tensor(0.0), 8)  # a step far above every value: all zeros
    return graph, cal, fits, weights, broken


def test_block_output_selection_discards_a_code_that_breaks_the_block_and_keeps_a_good_local_pick(tiny, images):
    """Each point's candidates are run through the rest of its block: a local pick that zeroes the tensor loses
    to the min/max code; a sound local pick is kept (it is first, and wins ties)."""
    from tsptq.quant import block_select

    graph, cal, fits, linears, broken = _scoring(tiny, images)
    cands = {p: [fits.acts[p]] for p in fits.acts}
    cands["blocks.0.fc1"] = [broken, fits.acts["blocks.0.fc1"]]
    cands["blocks.1.softmax"] = [fits.acts["blocks.1.softmax"], broken]
    chosen, _, changed = block_select.select(graph, cal.tensors, cands, linears, graph.consts, progress=False)
    assert chosen["blocks.0.fc1"] is fits.acts["blocks.0.fc1"] and changed == {"blocks.0.fc1": "uniform"}
    assert chosen["blocks.1.softmax"] is fits.acts["blocks.1.softmax"]


def test_block_output_selection_judges_the_head_by_the_likely_classes(tiny, images):
    """After the last block the error is on the logits, weighted by the float class probabilities."""
    from tsptq.quant import block_select

    graph, cal, fits, linears, broken = _scoring(tiny, images)
    cands = {p: [fits.acts[p]] for p in fits.acts}
    cands["head"] = [broken, fits.acts["head"]]
    chosen, _, _ = block_select.select(graph, cal.tensors, cands, linears, graph.consts, progress=False)
    assert chosen["head"] is fits.acts["head"]


def test_block_output_selection_chooses_weights_too(tiny, images):
    """A weight code that zeroes a layer loses to the plain per-channel code."""
    from tsptq.quant import block_select
    from tsptq.quant.quantizers import Uniform

    graph, cal, fits, weights, _ = _scoring(tiny, images)
    zeroing = Uniform(torch.full((96,), 10.0), torch.zeros(96), 8, axis=0)
    weights["blocks.1.fc1"] = [zeroing, fits.weights["blocks.1.fc1"]]
    cands = {p: [fits.acts[p]] for p in fits.acts}
    _, chosen_w, changed = block_select.select(graph, cal.tensors, cands, weights, graph.consts, progress=False)
    assert chosen_w["blocks.1.fc1"] is fits.weights["blocks.1.fc1"] and changed == {"blocks.1.fc1.weight": "uniform"}
    assert chosen_w["blocks.0.qkv"] is fits.weights["blocks.0.qkv"]


def test_tsptq_records_its_selection_and_tsptq_local_keeps_every_local_pick(tiny, images):
    from tsptq.quant.observers import record
    from tsptq.quant.quantize import fit_candidates, fit_point

    graph = Graph.from_model(tiny)
    cal = record(graph, images, progress=False)
    full = quantize(graph, cal, "tsptq", progress=False)
    local = quantize(graph, cal, "tsptq-local", progress=False)
    assert set(full.info["block_select"]) == {"images", "changed"}
    assert "block_select" not in local.info
    for name, kind in point_names(CFG):
        assert local.acts[name].to_dict() == fit_point(METHODS["tsptq-local"], name, kind, cal.tensors, graph, 8).to_dict()
        first = fit_candidates(METHODS["tsptq"], name, kind, cal.tensors, graph, 8)[0]
        assert (full.acts[name].to_dict() == first.to_dict()) == (name not in full.info["block_select"]["changed"])
        if kind in ("residual", "norm_out", "branch"):  # a plain pick stays a channel code: TSPTQ_* ops in the file
            assert full.acts[name].to_dict()["kind"] == "channel_pow2"


def test_bias_correction_gives_each_block_linear_the_float_mean_output_on_the_calibration_tokens(tiny, images):
    from tsptq.quant.observers import record

    def tokens_by_channels(t, point):  # the layer's input as it reads it: the context is recorded per head (B,H,T,hd)
        if point.endswith(".ctx"):
            t = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1)
        return t.reshape(-1, t.shape[-1])

    graph = Graph.from_model(tiny)
    cal = record(graph, images, 8, False)
    plain = quantize(graph, cal, "tsptq", progress=False)
    bc = quantize(graph, cal, "tsptq-bc", progress=False)
    assert _dicts(bc) == _dicts(plain)  # the same codes: only the biases move
    assert set(bc.info["bias_correction"]) == {k for k in graph.linears if k.startswith("blocks.")}
    assert graph.linears["head"][1] is bc.graph.linears["head"][1]  # the head and the patch embedding stay
    for layer in ("blocks.0.qkv", "blocks.0.proj", "blocks.1.fc2"):
        w, b = graph.linears[layer]
        point = graph.linear_input(layer)
        x = tokens_by_channels(cal.tensors[point], point).double()
        x_hat = tokens_by_channels(bc.acts[point].fake(cal.tensors[point]), point).double()
        w_hat = bc.weights[layer].fake(w).double()
        want = (x @ w.double().T + b.double()).mean(0)
        before = (x_hat @ w_hat.T + b.double()).mean(0)
        after = (x_hat @ w_hat.T + bc.graph.linears[layer][1].double()).mean(0)
        assert (after - want).abs().max() < 1e-5 * max(1.0, float(want.abs().max()))
        assert (before - want).abs().max() > 10 * (after - want).abs().max()  # there was a shift to correct


def test_fc1_o2sf_fits_a_per_channel_fc1_code_and_has_an_integer_model(tiny, images):
    from tsptq.evaluation.engines import resolve
    from tsptq.intmodel.faithful import applies
    from tsptq.quant.methods import get_method
    from tsptq.quant.observers import record
    from tsptq.quant.quantize import fit_candidates
    from tsptq.quant.quantizers import ChannelPow2, Uniform

    graph = Graph.from_model(tiny)
    cal = record(graph, images, 8, False)
    cands = fit_candidates(get_method("tsptq-fc1-o2sf"), "blocks.0.fc1", "act", cal.tensors, graph, 8)
    assert isinstance(cands[0], ChannelPow2) and cands[0].shifts.numel() == CFG.mlp_hidden  # per channel first
    assert any(isinstance(c, Uniform) for c in cands[1:])  # the uniform low-end clip stays for selection to pick
    assert isinstance(fit_candidates(get_method("tsptq"), "blocks.0.fc1", "act", cal.tensors, graph, 8)[0], Uniform)
    qm = quantize(graph, cal, "tsptq-fc1-o2sf", progress=False)
    assert applies(qm)  # the integer model's GELU reads a table per shift level (tests/test_gelu_channels.py)
    runner, note = resolve(qm, "faithful")
    assert runner.engine == "faithful" and note is None
