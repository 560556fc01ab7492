"""tsptq diagnose: the error budget per quantization point."""
import dataclasses
import json

import pytest
import torch

from tsptq.evaluation import diagnose as dg
from tsptq.data import datasets
from tsptq.model import zoo
from tsptq.cli.main import main
from tsptq.quant.quantize import quantize
from tsptq.quant.quantizers import Uniform
from tsptq.quant.qvit import point_names

# Tier (tests/conftest.py): fashion-vit on Fashion-MNIST: `data`.
pytestmark = [pytest.mark.skipif(not datasets.FASHION_DIR.exists(), reason="apt-get install dataset-fashion-mnist"),
              pytest.mark.data]


@pytest.fixture(scope="module")
def setup():
    model = zoo.load_reference("fashion-vit")
    calib = datasets.load_fashion_mnist("train").balanced(16, 0)
    test = datasets.load_fashion_mnist("test").balanced(64, 0)
    qm = quantize(model, calib, "minmax", progress=False)
    batches = list(datasets.iterate_batches(test.images, model.cfg, 32))
    return qm, batches


def test_point_units_cover_every_point_weight_and_constant_once(setup):
    qm, _ = setup
    units = dg.units(qm, "point")
    names = [u.name for u in units]
    assert len(names) == len(set(names))
    assert {p for u in units for p in u.points} == {p for p, _ in point_names(qm.graph.cfg)}
    assert {layer for u in units for layer in u.layers} == set(qm.graph.linears)
    grouped = dg.units(qm, "block")
    assert [u.name for u in grouped][:2] == ["embed", "blocks.0"] and grouped[-1].name == "final"
    assert sorted(p for u in grouped for p in u.points) == sorted(p for u in units for p in u.points)
    embed, final = grouped[0], grouped[-1]
    assert embed.layers == ("patch_embed",) and embed.consts == ("pos_embed",) and embed.first_block == -1
    assert set(final.layers) == {"head"} and set(final.points) == {"norm.in", "norm", "head"}


def test_starting_from_a_cached_block_equals_a_whole_forward(setup):
    qm, batches = setup
    runs = dg._Runs(qm, batches)
    everything = (set(qm.acts), set(qm.weights), set(qm.consts))
    rest = (everything[0] - {"blocks.2.gelu"}, everything[1] - {"blocks.2.fc2"}, everything[2])
    for start in (2, 3):  # block 2 holds the left-out points; block 3 starts after them (and must differ)
        cached = runs.run(*rest, start, runs.quant)
        whole = runs.run(*rest, -1, runs.quant)
        if start == 2:
            assert all((a == b).all() for a, b in zip(cached, whole))
        else:
            assert not (cached[1] == whole[1]).all()


def test_a_broken_code_tops_the_budget(setup):
    qm, batches = setup
    broken = Uniform(torch.tensor(1.0), torch.tensor(0.0), 8)  # step 1.0: fc1 mostly rounds to 0
    qm = dataclasses.replace(qm, acts={**qm.acts, "blocks.1.fc1": broken})
    result = dg.diagnose(qm, batches, "point", progress=False)
    first = result["units"][0]
    assert first["unit"] == "blocks.1.fc1"
    assert first["alone_cosine"] < min(0.999, result["units"][1]["alone_cosine"])
    assert first["left_float_cosine"] > result["quantized"]["cosine_mean"]
    assert result["images"] == 64


def test_cli_diagnose_writes_table_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "budget.json", tmp_path / "budget.png"
    assert main(["diagnose", "--model", "fashion-vit", "--method", "tsptq", "--images", "40", "--calib-images", "8",
                 "--by", "role", "--json", str(out), "--plot", str(png), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "whole model agreement" in text and "softmax" in text
    data = json.loads(out.read_text())
    assert data["by"] == "role" and data["images"] == 40
    assert {u["unit"] for u in data["units"]} >= {"softmax", "gelu", "qkv.weight", "norm1"}
    assert png.stat().st_size > 1000


def test_fp32_and_unknown_grouping_are_clear_errors(setup):
    from tsptq.errors import TsptqError

    qm, batches = setup
    with pytest.raises(TsptqError, match="unknown grouping"):
        dg.units(qm, "layer")
    with pytest.raises(TsptqError, match="not fp32"):
        dg.diagnose(quantize(qm.graph, None, "fp32"), batches)
