"""The package layers (DESIGN.md): `envs/` imports nothing from `algos/`, `nets/` or `experiments/`, and `nets/`
imports neither `algos/` nor `experiments/` (`benchmarks/`, the top layer, is out of bounds for both too).

Checked statically over the source with `ast`, so an import hidden inside a function (the lazy kind that slips
past an import-time check), a relative import, `importlib.import_module("...")` / `__import__("...")` with a
constant name, and a registry string naming a module ("algos.x:Class") all count.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "envs": ("algos", "nets", "experiments", "benchmarks"),
    "nets": ("algos", "experiments", "benchmarks"),
}
_MODULE_STRING = re.compile(r"^([A-Za-z_]\w*)(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?$")  # "pkg.mod" or "pkg.mod:Class"


def _package_of(path: Path, root: Path) -> list[str]:
    """The package a module's relative imports start from: its directory (for `__init__.py` too)."""
    return list(path.relative_to(root).parts[:-1])


def imported_modules(source: str, path: Path, root: Path = REPO) -> list[tuple[int, str, str]]:
    """`(line, imported module, what the source says)` for every import in `source` (of the file `path` under
    `root`, which resolves relative imports), in line order."""
    found = []
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source, str(path))):
        text = lines[node.lineno - 1].strip() if hasattr(node, "lineno") else ""
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, text) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(path, root)
                package = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                base = ".".join(package + ([node.module] if node.module else []))
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name, text) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
            found.append((node.lineno, node.value.split(":")[0], text))
    first = {}
    for line, module, text in found:  # import_module("a.b") is also a module-like string: report it once
        first.setdefault((line, module), text)
    return sorted((line, module, text) for (line, module), text in first.items())


def violations(package: str, root: Path = REPO) -> list[str]:
    out = []
    for path in sorted((root / package).rglob("*.py")):
        for line, module, text in imported_modules(path.read_text(), path, root):
            top = module.split(".")[0]
            if top in FORBIDDEN[package]:
                out.append(f"{path.relative_to(root)}:{line} imports {module} ({text})")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_from_the_layers_above(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert len(files) >= 4 and (REPO / package / "__init__.py") in files  # the scan sees the package
    bad = violations(package)
    assert not bad, (f"{package}/ must not import {', '.join(p + '/' for p in FORBIDDEN[package])} (DESIGN.md: "
                     f"envs/ never imports algos/, nets/ or experiments/; nets/ imports neither algos/ nor "
                     f"experiments/). Move the code that needs them up a layer, or pass what it needs in:\n  "
                     + "\n  ".join(bad))


def test_the_checker_sees_every_kind_of_import(tmp_path):
    (tmp_path / "envs" / "sub").mkdir(parents=True)
    (tmp_path / "envs" / "__init__.py").write_text("")
    (tmp_path / "envs" / "sub" / "__init__.py").write_text("")
    (tmp_path / "envs" / "sub" / "mod.py").write_text(
        "import os, algos.sac\n"
        "from envs import core\n"
        "from . import sibling\n"
        "from ...experiments import runner\n"
        "def lazy():\n"
        "    from nets.mlp import MLP\n"
        "    import importlib\n"
        "    importlib.import_module('experiments.sac')\n"
        "    __import__('benchmarks')\n"
        "REGISTRY = {'x': ('algos.rollin:MazeGoals', {})}\n"
        "NOTE = 'see algos/sac.py. It is fine to mention algos in prose.'\n")
    bad = violations("envs", tmp_path)
    assert [b.split(" (")[0] for b in bad] == [
        "envs/sub/mod.py:1 imports algos.sac", "envs/sub/mod.py:4 imports experiments.runner",
        "envs/sub/mod.py:6 imports nets.mlp.MLP", "envs/sub/mod.py:8 imports experiments.sac",
        "envs/sub/mod.py:9 imports benchmarks", "envs/sub/mod.py:10 imports algos.rollin"], bad
    assert "from nets.mlp import MLP" in bad[2]
    resolved = {m for _, m, _ in imported_modules((tmp_path / "envs/sub/mod.py").read_text(),
                                                  tmp_path / "envs/sub/mod.py", tmp_path)}
    assert {"envs.sub.sibling", "envs.core", "os"} <= resolved
