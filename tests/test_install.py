"""The install story: .venv holds exactly the tested set (requirements.lock), pyproject.toml admits it, the
Makefile's Pythons are requires-python's, and every locked release has a wheel for each of them
(tools/check_wheels.py, which needs the network to ask the package index)."""

import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = pathlib.Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
CHECK = REPO / "tools" / "check_wheels.py"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# What `pip freeze` leaves out of a freeze, and the project itself (installed editable, on top of the lock).
NOT_LOCKED = {"pip", "setuptools", "wheel", "distribute", "headstart"}


def locked() -> dict[str, tuple[str, str]]:
    """canonical name -> (name, version) of each lock line whose marker holds here."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate():
                (spec,) = req.specifier
                assert spec.operator == "==", line
                pins[canonicalize_name(req.name)] = (req.name, spec.version)
    return pins


def check_wheels(*args, env=None):
    out = subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True, env=env, timeout=900)
    return out.returncode, out.stdout + out.stderr


def test_venv_matches_lock():
    if pathlib.Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip(f"the lock describes the repository's .venv, and this is {sys.prefix}")
    pins = locked()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    wrong = [f"{name}=={v} (installed: {installed.get(key, 'none')})" for key, (name, v) in sorted(pins.items())
             if installed.get(key) != v]
    extra = [f"{key}=={v}" for key, v in sorted(installed.items()) if key not in pins and key not in NOT_LOCKED]
    assert not wrong and not extra, (f"\n.venv differs from {LOCK.name}: locked but not installed as locked: {wrong}; "
                                     f"installed but not locked: {extra}. Rebuild (make clean; make) or, after a "
                                     f"deliberate change, re-freeze: .venv/bin/pip freeze --exclude-editable")


def test_lock_satisfies_pyproject():
    pins = locked()
    for line in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]:
        req = Requirement(line)
        key = canonicalize_name(req.name)
        assert key in pins, f"pyproject.toml needs {req}, which {LOCK.name} does not pin"
        assert req.specifier.contains(pins[key][1], prereleases=True), f"pyproject.toml needs {req}, lock has {pins[key]}"


def admitted() -> list[str]:
    """The 3.x that requires-python admits, newest first."""
    return [f"3.{m}" for m in range(40, -1, -1) if SpecifierSet(PROJECT["requires-python"]).contains(f"3.{m}")]


def test_makefile_pythons_are_requires_python():
    (line,) = re.findall(r"^SUPPORTED\s*:=(.*)$", (REPO / "Makefile").read_text(), re.M)
    assert line.split() == admitted(), f"Makefile SUPPORTED = {line.split()}, requires-python admits {admitted()}"


@pytest.mark.slow
def test_every_locked_release_has_a_wheel_for_every_python():
    rc, out = check_wheels()
    assert rc == 0, out
    for python in admitted():
        assert f"Python {python}: ok" in out, out


def test_wheel_check_names_the_releases_without_a_wheel(tmp_path):
    # numpy 1.24.4 has wheels for CPython 3.8-3.11, MarkupSafe 2.1.1 for 3.7-3.10 only; tqdm is pure Python.
    reqs = tmp_path / "fabricated.txt"
    reqs.write_text("tqdm==4.70.1\nnumpy==1.24.4\nMarkupSafe==2.1.1\n")
    rc, out = check_wheels("-r", str(reqs), "--python", "3.11", "--python", "3.12")
    assert rc == 1, out
    assert re.search(r"NO WHEEL: numpy==1\.24\.4 \(fabricated\.txt\) has no wheel for Python 3\.12 \(", out), out
    assert re.search(r"NO WHEEL: MarkupSafe==2\.1\.1 \(fabricated\.txt\) has no wheel for Python 3\.11, 3\.12 ", out), out
    assert "tqdm" not in out.split("Python 3.12:")[1], out


def test_wheel_check_names_an_unlocked_dependency(tmp_path):
    reqs = tmp_path / "partial.txt"
    reqs.write_text("rich==15.0.0\npygments==2.21.0\n")  # rich also needs markdown-it-py
    rc, out = check_wheels("-r", str(reqs), "--python", "3.13")
    assert rc == 1, out
    assert re.search(r"NOT LOCKED: on Python 3\.13: rich==15\.0\.0 needs markdown-it-py\S*, which partial\.txt", out), out
    assert "pygments" not in out.split("Python 3.13:")[1], out


def test_wheel_check_says_when_it_is_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "pip_index_url")}
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")  # nothing listens on port 9
    rc, out = check_wheels("-r", str(LOCK), env=env)
    assert rc == 2, out
    assert "cannot reach the package index" in out and "needs the network" in out, out
