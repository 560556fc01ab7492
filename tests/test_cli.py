"""The command line: the table, the JSON file, the plot, and clear errors for bad arguments."""
import json

import pytest

from tsptq.data import datasets
from tsptq.cli.main import main
from tsptq.model.model_data import resolve_data
from tsptq.model.vit import NAMED_CONFIGS

needs_fashion = pytest.mark.skipif(not datasets.FASHION_DIR.exists(), reason="apt-get install dataset-fashion-mnist")


def test_models_lists_everything(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("cifar10-vit", "fashion-vit", "dinov2-s14", "deit_small_patch16_224", "tsptq", "ptf-log2", "twin"):
        assert name in out


@pytest.mark.slow
@pytest.mark.data
@needs_fashion
def test_eval_writes_table_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(["eval", "--model", "fashion-vit", "--methods", "fp32,minmax,tsptq", "--calib-images", "16",
               "--eval-images", "300", "--json", str(out_json), "--plot", str(out_png), "--quiet"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "tsptq" in table and "agree" in table
    report = json.loads(out_json.read_text())
    assert report["model"] == "fashion-vit" and report["eval_images"] == 300 and report["calib_images"] == 16
    assert [r["method"] for r in report["results"]] == ["fp32", "minmax", "tsptq"]
    for row in report["results"]:
        assert set(row) >= {"method", "top1", "drop", "agreement"}
        assert 0 <= row["top1"] <= 100 and 0 <= row["agreement"] <= 100
    assert report["results"][0]["drop"] == 0.0 and report["results"][0]["agreement"] == 100.0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("args, message", [
    (["--methods", "fp32,bogus"], "unknown method 'bogus'"),
    (["--bits", "W9"], "W8A8"),
    (["--calib-images", "0"], "at least 1"),
    (["--model", "no-such-model"], "unknown model"),
])
def test_eval_bad_arguments_exit_2_with_a_specific_message(args, message, capsys):
    assert main(["eval", "--quiet", *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(datasets, "CIFAR10_TARBALL", tmp_path / "nothing.tar.gz")
    monkeypatch.setenv("TSPTQ_CACHE", str(tmp_path / "cache"))
    assert main(["eval", "--model", "deit_tiny_patch16_224", "--data", "cifar10", "--quiet"]) == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err


def test_bundled_data_needs_nothing_outside_the_package():
    calib, test, labelled = resolve_data("cifar10-vit", NAMED_CONFIGS["deit_tiny_patch16_224"], "bundled", 32, None, None)
    assert len(calib) == 32 and len(test) == 500 and labelled
    assert sorted(set(test.labels.tolist())) == list(range(10))
    assert len(set(map(bytes, calib.images)) & set(map(bytes, test.images))) == 0  # calibration kept out of the eval


@pytest.mark.data
def test_auto_data_follows_the_reference_model_unless_a_checkpoint_replaced_it():
    """--data auto: a reference model's own data set (robust-fashion-deep: Fashion-MNIST); a checkpoint loaded with
    --model left at its default (the config differs) is not taken for that model."""
    from tsptq.model import zoo

    if not datasets.FASHION_DIR.exists():
        pytest.skip("apt-get install dataset-fashion-mnist")
    _, test, _ = resolve_data("robust-fashion-deep", zoo.REFERENCE_MODELS["robust-fashion-deep"].config, "auto", 4, 20)
    assert test.name.startswith("fashion")
    deit = NAMED_CONFIGS["deit_tiny_patch16_224"]
    calib, test, labelled = resolve_data("cifar10-vit", deit, "auto", 2, 5, str(datasets.IMAGENET_SAMPLE)) \
        if datasets.IMAGENET_SAMPLE.exists() else (None, None, None)
    if test is not None:
        assert not test.name.startswith("cifar10") and labelled  # 1000 classes: ImageNet folders, not CIFAR-10


def test_deploy_help_names_every_target(capsys):
    from tsptq.cli.deploy import main as deploy

    with pytest.raises(SystemExit) as e:
        deploy(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for target in ("host", "rpi", "mps2-an386", "stm32f746g-disco", "nucleo-h743zi"):
        assert target in out


def test_deploy_unknown_target_is_refused(capsys):
    from tsptq.cli.deploy import main as deploy

    with pytest.raises(SystemExit):
        deploy(["--target", "esp32"])
    assert "invalid choice: 'esp32'" in capsys.readouterr().err
