"""Check that every pinned release has a wheel for every Python that `requires-python` admits.

    python tools/check_wheels.py                      # requirements.lock + benchmarks/requirements-peers.txt
    python tools/check_wheels.py -r other.txt --python 3.12 --python 3.13 -v

For each Python version V (default: every 3.x that `requires-python` in pyproject.toml admits; the range must
have an upper bound) it asks pip which file it would install for each `name==version` line, without installing
anything and without following dependencies:

    pip install --dry-run --report R --ignore-installed --no-deps --only-binary=:all: \
        --implementation cp --python-version V --platform manylinux_2_28_x86_64 ... -r FILE

so a pure-Python package passes with its py3-none-any wheel and a compiled one needs a cp3V (or abi3) wheel
for Linux x86_64 with glibc <= 2.28 (`--glibc`, `--arch`; 2.28 is what the locked set needs: glfw and h5py
publish manylinux_2_28 wheels only). pip stops at the first requirement it cannot satisfy; the script then
drops that one and asks again, so the failure names every release that lacks a wheel, and for which Pythons
(a release that is not on the index at all reads the same, for every Python).

It also checks, from the metadata in pip's report, that each file is closed under dependencies on V: every
`Requires-Dist` whose environment marker holds on V (Linux, CPython V) names a package the file pins, at a
version the requirement admits; for requirements.lock the roots are pyproject.toml's `dependencies` and its
`test` extra. `NOT_INSTALLED` names the few requirements left out on purpose (playground's warp-lang and mediapy,
dm-control's dm-env, dm-tree, labmaze and setuptools, which pip freeze leaves out: `make` installs the lock with
--no-deps). (pip itself evaluates markers for the running interpreter even with `--python-version`, so a dependency
that only Python 3.13 needs would go unnoticed without this.)

Why `install --dry-run --report` rather than `pip download -d DIR`: measured on the 2-core build machine with
this index (no PEP 658 metadata, so pip fetches each wheel to read it), one Python version takes 4.5 s either
way for the 71 locked releases with `--dry-run`, 7.3 s with `download` (which also writes 236 MB to disk). With
`--no-cache-dir` nothing stays behind. Running the versions in parallel was slower (59 s for 8 runs against
36 s one after another), so they run one after another. On an index that serves PEP 658 metadata (PyPI does)
pip fetches only the metadata files.

Exit status: 0 all good; 1 a release lacks a wheel or a file is not closed under dependencies (each one named);
2 the package index cannot be reached, or pip failed for another reason (its message is shown).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a bare interpreter: pip carries its own copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

REPO = pathlib.Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
PEERS = REPO / "benchmarks" / "requirements-peers.txt"
PYPROJECT = REPO / "pyproject.toml"
# Requirements that requirements.lock leaves out on purpose (make installs it with --no-deps): whose, and what.
# MuJoCo Playground declares its Warp backend and video rendering, which headstart never imports (envs/dmc.py).
NOT_INSTALLED = {"playground": {"warp-lang", "mediapy"}, "dm-control": {"dm-env", "dm-tree", "labmaze", "setuptools"}}
NETWORK_ERRORS = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
                  "Name or service not known", "Network is unreachable", "ProxyError", "ConnectTimeout",
                  "Max retries exceeded", "Connection refused")


class Pin:
    """One `name==version [; marker]` line of a requirements file."""

    def __init__(self, line: str, source: str):
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version or req.url:
            die(f"{source}: expected `name==version`, got `{line}`")
        self.name, self.key, self.version = req.name, canonicalize_name(req.name), specs[0].version
        self.marker, self.source = req.marker, source

    def __str__(self):
        return f"{self.name}=={self.version}"


def read_pins(path: pathlib.Path) -> list[Pin]:
    pins = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split(" #")[0].strip()
        if line and not line.startswith("#"):
            pins.append(Pin(line, f"{path.name}:{n}"))
    return pins


def pyproject_roots() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project.get("optional-dependencies", {}).get("test", [])]


def pythons_in_range() -> list[str]:
    """Every 3.x that requires-python admits, oldest first; an open upper end is an error (the list would not end)."""
    spec = SpecifierSet(tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"])
    if not any(s.operator in ("<", "<=", "==", "~=") for s in spec):
        die(f"requires-python = '{spec}' has no upper bound: pass the versions with --python")
    return [f"3.{m}" for m in range(0, 100) if spec.contains(f"3.{m}", prereleases=True)]


def target_env(python: str, arch: str) -> dict[str, str]:
    env = dict(default_environment())
    env.update(python_version=python, python_full_version=f"{python}.0", implementation_name="cpython",
               platform_python_implementation="CPython", sys_platform="linux", platform_system="Linux",
               os_name="posix", platform_machine=arch)
    return env


def platform_args(glibc: str, arch: str) -> list[str]:
    """pip matches --platform tags exactly, so list every manylinux tag a glibc of that version accepts."""
    major, minor = map(int, glibc.split("."))
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    tags += [f"{legacy}_{arch}" for legacy, m in (("manylinux2014", 17), ("manylinux2010", 12), ("manylinux1", 5))
             if minor >= m]
    return [arg for tag in tags for arg in ("--platform", tag)]


def die(message: str):
    print(f"check_wheels: {message}", file=sys.stderr)
    sys.exit(2)


def index_url() -> str:
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/")


def check_network():
    url = index_url()
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15).close()
    except (urllib.error.URLError, OSError) as e:
        if isinstance(e, urllib.error.HTTPError) and e.code < 500:
            return  # reachable; the index just does not answer HEAD on its root
        reason = getattr(e, "reason", e)
        die(f"cannot reach the package index {url} ({reason}); this check needs the network (CI has it) -- "
            f"nothing was checked")


def pip_dry_run(pins: list[Pin], python: str, plat: list[str], tmp: pathlib.Path):
    """(metadata by (key, version), the pins that have no wheel): pip is asked again without each one it names."""
    todo, missing, meta = list(pins), [], {}
    while todo:
        reqs, report = tmp / "reqs.txt", tmp / "report.json"
        reqs.write_text("".join(f"{p}\n" for p in todo))
        report.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-cache-dir", "--no-input",
               "--disable-pip-version-check", "--ignore-installed", "--no-deps", "--only-binary=:all:",
               "--implementation", "cp", "--python-version", python, *plat, "--report", str(report), "-r", str(reqs)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode == 0:
            for item in json.loads(report.read_text())["install"]:
                m = item["metadata"]
                meta[(canonicalize_name(m["name"]), m["version"])] = (m, item["download_info"]["url"])
            return meta, missing
        log = out.stdout + out.stderr
        failed = re.findall(r"No matching distribution found for (\S+)", log)
        named = [p for p in todo if failed and canonicalize_name(re.split(r"[=<>!~;\[ ]", failed[0])[0]) == p.key]
        if not named:
            network = any(s in log for s in NETWORK_ERRORS)
            tail = "\n".join(line[:300] for line in log.splitlines() if "is ignored: it is neither" not in line)[-3000:]
            die(f"pip failed on Python {python}{' (network trouble: this check needs the network)' if network else ''}"
                f":\n  {' '.join(cmd)}\n{tail}")
        missing += named
        todo = [p for p in todo if p not in named]
    return meta, missing


def is_universal(url: str) -> bool:
    """A wheel for every Python 3 on every platform (its Requires-Python aside): py3-none-any, py2.py3-none-any."""
    tags = url.rsplit("/", 1)[-1].removesuffix(".whl").split("-")[-3:]
    return "py3" in tags[0].split(".") and tags[1:] == ["none", "any"]


def closure_problems(pins: list[Pin], roots: list[Requirement], meta: dict, env: dict, fname: str) -> list[str]:
    """Requirements (of the roots and of every pinned release, markers evaluated on the target) the pins miss."""
    pinned = {p.key: p for p in pins}
    problems, extras = [], {p.key: set() for p in pins}
    wanted = [("the project", r, {""}) for r in roots] + [(p, None, None) for p in pins]
    seen = set()
    while wanted:
        who, req, who_extras = wanted.pop()
        if req is None:  # expand a pinned release with the extras asked of it so far
            key = (who.key, frozenset(extras[who.key]))
            if key in seen or (who.key, who.version) not in meta:
                continue
            seen.add(key)
            requires = meta[(who.key, who.version)][0].get("requires_dist") or []
            wanted += [(who, Requirement(r), {""} | extras[who.key]) for r in requires]
            continue
        if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in who_extras):
            continue
        dep = pinned.get(canonicalize_name(req.name))
        if dep is None and isinstance(who, Pin) and canonicalize_name(req.name) in NOT_INSTALLED.get(who.key, ()):
            continue
        if dep is None:
            problems.append(f"{who} needs {req}, which {fname} does not pin")
        elif not req.specifier.contains(Version(dep.version), prereleases=True):
            problems.append(f"{who} needs {req}, but {dep.source} pins {dep}")
        elif not req.extras <= extras[dep.key]:
            extras[dep.key] |= req.extras
            wanted.append((dep, None, None))
    return sorted(set(problems))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-r", "--requirements", action="append", type=pathlib.Path,
                    help=f"a file of name==version lines (default: {LOCK.name} and benchmarks/{PEERS.name}); repeat")
    ap.add_argument("--python", action="append", help="a Python version such as 3.12 (default: every 3.x that "
                                                      "requires-python in pyproject.toml admits); repeat")
    ap.add_argument("--glibc", default="2.28", help="oldest glibc to support (default 2.28)")
    ap.add_argument("--arch", default="x86_64")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the wheel chosen for each release")
    args = ap.parse_args(argv)

    files = args.requirements or [LOCK, PEERS]
    pythons = args.python or pythons_in_range()
    sets = [(f, read_pins(f), pyproject_roots() if f.resolve() == LOCK else []) for f in files]
    plat = platform_args(args.glibc, args.arch)
    check_network()
    print(f"check_wheels: {', '.join(str(f.relative_to(REPO) if f.is_relative_to(REPO) else f) for f in files)} "
          f"on Python {', '.join(pythons)}, Linux {args.arch} with glibc >= {args.glibc}", flush=True)

    no_wheel: dict[str, list[str]] = {}  # "name==version (file)" -> Pythons
    closure: dict[str, list[str]] = {}
    universal = {}  # (key, version) -> (metadata, url) of releases whose chosen wheel is py3-none-any
    with tempfile.TemporaryDirectory(prefix="check_wheels-") as tmp:
        for python in pythons:
            t0, env, meta, missing, count, asked = time.time(), target_env(python, args.arch), {}, [], 0, 0
            checked = set()  # a release pinned by two files is asked about once
            for _, pins, _ in sets:
                active = [p for p in pins if p.marker is None or p.marker.evaluate(env)]
                batch = [p for p in active if (p.key, p.version) not in checked]
                checked |= {(p.key, p.version) for p in batch}
                count += len(batch)
                # A py3-none-any wheel found for one Python serves every other one its Requires-Python admits:
                # only the other releases (compiled ones) are asked of pip again.
                for p in [p for p in batch if (p.key, p.version) in universal]:
                    m, url = meta[(p.key, p.version)] = universal[(p.key, p.version)]
                    if not SpecifierSet(m.get("requires_python") or "").contains(python, prereleases=True):
                        missing.append(p)
                batch = [p for p in batch if (p.key, p.version) not in universal]
                asked += len(batch)
                got, lost = pip_dry_run(batch, python, plat, pathlib.Path(tmp))
                meta.update(got)
                missing += lost
                universal.update({k: v for k, v in got.items() if is_universal(v[1])})
            for pin in missing:
                no_wheel.setdefault(f"{pin} ({pin.source.split(':')[0]})", []).append(python)
            for f, pins, roots in sets:
                active = [p for p in pins if p.marker is None or p.marker.evaluate(env)]
                for problem in closure_problems(active, roots, meta, env, f.name):
                    closure.setdefault(problem, []).append(python)
            bad = f"{len(missing)} without a wheel" if missing else "ok"
            print(f"  Python {python}: {bad} ({count} releases, {asked} asked of pip, {time.time() - t0:.1f} s)",
                  flush=True)
            if args.verbose:
                for (_, version), (m, url) in sorted(meta.items()):
                    print(f"    {m['name']}=={version}: {url.rsplit('/', 1)[-1]}")
    for what, pys in sorted(no_wheel.items()):
        print(f"NO WHEEL: {what} has no wheel for Python {', '.join(pys)} (Linux {args.arch}, glibc "
              f"{args.glibc})")
    for what, pys in sorted(closure.items()):
        print(f"NOT LOCKED: on Python {', '.join(pys)}: {what}")
    if no_wheel or closure:
        print(f"check_wheels: FAILED ({len(no_wheel)} releases without a wheel, {len(closure)} dependency problems)")
        return 1
    print("check_wheels: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
