"""`make demo` / `make test` install their Debian packages through tsptq.cli.system_setup (so does .ci/run): what is
missing comes from `tsptq doctor`, root installs it, anyone else gets the exact command, and the entry point runs
under the system Python before the venv exists."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tsptq.cli.system_setup import main as system_setup
from tsptq.deploy import doctor, system_packages
from tsptq.deploy.doctor import Finding, Report
from tsptq.deploy.system_packages import SystemSetupError, command_line, commands, ensure, plan
from tsptq.paths import REPO_ROOT


@pytest.fixture
def bare_path(tmp_path, monkeypatch):
    """A PATH with only apt-get and dpkg (the real ones): every compiler and QEMU is missing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("apt-get", "dpkg"):
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if real:
            (bin_dir / tool).symlink_to(real)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_the_test_plan_is_every_debian_package_doctor_finds_missing(bare_path):
    p = plan("test")
    for package in ("gcc", "make", "clang", "gcc-aarch64-linux-gnu", "qemu-user-static", "gcc-arm-linux-gnueabihf",
                    "gcc-arm-none-eabi", "qemu-system-arm"):
        assert package in p.packages
    assert len(p.packages) == len(set(p.packages))
    assert all(not f.hardware_only and (f.apt or f.dpkg_arch) for f in p.missing)
    # real-board tools (pyocd, ssh) and pip packages are not Debian's to install here
    assert not {"pyocd", "ssh"} & {f.what for f in p.missing}


def test_the_demo_plan_is_the_boards_it_deploys_to_and_the_c_engine(bare_path):
    demo, test = plan("demo"), plan("test")
    assert set(demo.packages) < set(test.packages)
    assert {"gcc", "gcc-aarch64-linux-gnu", "qemu-user-static", "gcc-arm-none-eabi", "qemu-system-arm"} <= set(demo.packages)
    assert "clang" not in demo.packages and "gcc-arm-linux-gnueabihf" not in demo.packages  # fuzzing, DSP kernel tests


def _missing(what, apt=(), arch=None, hardware_only=False):
    return Finding(what, "program", None, False, ("f",), "x", True, apt=apt, dpkg_arch=arch, hardware_only=hardware_only)


def _report(*findings):
    r = Report()
    r.features.append(doctor.Feature("f", "a feature", tuple(f.what for f in findings)))
    r.findings = {f.what: f for f in findings}
    return r


def test_a_new_architecture_comes_before_the_update_and_the_update_before_the_install():
    p = plan("test", _report(_missing("cc", ("gcc",)), _missing("lists", arch="arm64"),
                             _missing("flasher", ("openocd",), hardware_only=True), _missing("cc2", ("gcc",))))
    assert p.packages == ("gcc",) and p.architectures == ("arm64",)
    assert commands(p) == [["dpkg", "--add-architecture", "arm64"], ["apt-get", "update", "-qq"],
                           ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "gcc"]]
    assert command_line(p) == ("dpkg --add-architecture arm64 && apt-get update -qq && "
                               "apt-get install -y -qq --no-install-recommends gcc")
    assert plan("test", _report()).empty and commands(plan("test", _report())) == []


def test_without_root_it_stops_at_once_with_the_exact_command(bare_path, monkeypatch):
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 1000)
    ran = []
    with pytest.raises(SystemSetupError) as e:
        ensure("demo", run=lambda *a, **k: ran.append(a))
    assert not ran
    message = str(e.value)
    assert "\n" not in message and "installing them needs root" in message
    assert message.endswith("as root run: " + command_line(plan("demo")))


def test_check_mode_never_installs_even_as_root(bare_path, monkeypatch):
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 0)
    with pytest.raises(SystemSetupError, match="check only.*as root run: apt-get update"):
        ensure("test", mode="check", run=lambda *a, **k: pytest.fail("check mode ran a command"))


def test_without_apt_get_it_names_the_debian_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemSetupError, match="no apt-get.*your package manager \\(Debian names: .*gcc-arm-none-eabi"):
        ensure("demo")


def test_as_root_it_runs_the_plan_and_checks_the_result(bare_path, monkeypatch):
    """The commands go to apt-get in order; an install that leaves something missing (here: nothing is really
    installed) is an error naming it, and a failing command stops the rest."""
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 0)
    ran = []

    def run(cmd, env):
        ran.append(cmd)
        assert env["DEBIAN_FRONTEND"] == "noninteractive"
        return subprocess.CompletedProcess(cmd, 0)

    with pytest.raises(SystemSetupError, match="still lacks .*arm-none-eabi-gcc"):
        ensure("demo", run=run)
    assert ran == commands(plan("demo"))
    with pytest.raises(SystemSetupError, match=r"`apt-get update -qq` failed with exit status 100"):
        ensure("demo", run=lambda cmd, env: subprocess.CompletedProcess(cmd, 100))


def test_every_apt_install_command_has_its_packages_in_structured_form(bare_path):
    for f in doctor.diagnose().findings.values():
        if f.install and f.install.startswith("apt-get install"):
            assert f.install.split()[4:] == list(f.apt), f
        else:
            assert not f.apt, f


def test_the_entry_point_runs_under_the_system_python_with_the_standard_library_only(tmp_path):
    """make runs it before .venv exists: no numpy, torch or anything else from the venv."""
    python = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT / "toolchain"), "HOME": str(tmp_path)}
    proc = subprocess.run([python, "-S", "-c", "import sys, runpy; sys.argv = ['x', '--for', 'test', '--mode', 'check']; "
                           "runpy.run_module('tsptq.cli.system_setup', run_name='__main__')"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode in (0, 2), proc.stderr  # 2: something is missing here, said in one line
    assert "Traceback" not in proc.stderr
    assert re.search(r"\[system\] every Debian package make test needs is present|error: make test needs", proc.stderr)
    loaded = subprocess.run([python, "-S", "-c", "import sys, tsptq.cli.system_setup; "
                             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                             "('numpy', 'torch', 'tqdm', 'matplotlib', 'yaml')))"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stderr


def test_skip_mode_says_so(capsys):
    assert system_setup(["--for", "test", "--mode", "skip"]) == 0
    assert "not checking the Debian packages make test needs" in capsys.readouterr().err


def test_the_makefile_and_ci_go_through_it():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "python3 -m tsptq.cli.system_setup" in makefile
    for target in ("demo", "test"):
        assert re.search(rf"^{target}: system-{target}\b", makefile, re.M), target
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "apt-get install" in ci  # only make itself, bootstrapped
    assert "qemu" not in ci and "gcc" not in ci  # the package list lives in doctor, not here


def test_libraries_data_and_settings_are_planned_too(bare_path, monkeypatch):
    """With no C library headers, no Fashion-MNIST, no arm64 package lists and no ensurepip either, the plan names
    each Debian package that .ci/run used to list; the libFuzzer runtime waits for clang (its version names it)."""
    class NothingUnderUsr(type(Path())):
        def is_file(self):
            return False if str(self).startswith(("/usr", "/var/lib/dpkg")) else super().is_file()

    monkeypatch.setattr(doctor, "Path", NothingUnderUsr)
    monkeypatch.setattr(doctor, "FASHION_DIR", NothingUnderUsr("/usr/share/datasets/fashion-mnist"))
    real_find_spec = doctor.importlib.util.find_spec
    monkeypatch.setattr(doctor.importlib.util, "find_spec",
                        lambda name, *a: None if name == "ensurepip" else real_find_spec(name, *a))
    p = plan("test")
    for package in ("libc6-dev", "libc6-dev-arm64-cross", "libc6-dev-armhf-cross", "libnewlib-arm-none-eabi",
                    "dataset-fashion-mnist", "python3-venv", "clang"):
        assert package in p.packages, package
    assert p.architectures == ("arm64",)
    # the libFuzzer runtime's package is named by the clang that gets installed: it waits for the next round
    clang, runtime = _missing("clang", ("clang",)), Finding("libFuzzer runtime", "C library", None, False, ("f",), "x",
                                                            True, apt=("libclang-rt-14-dev",), depends_on="clang")
    assert plan("test", _report(clang, runtime)).packages == ("clang",)
    assert plan("test", _report(runtime)).packages == ("libclang-rt-14-dev",)
