"""set.mm from Debian's `metamath-databases`, its propositional part, and the reference C verifier.

The CPU-sized part follows REFACTOR's `raw_dataset/propositional.mm` (jinpz/refactor): set.mm cut right after
the `$p` statement `xorexmid` (the end of the propositional-calculus sections before the conditional operator
`if-`; in the 2021-01-01 set.mm of Debian bookworm that is line 22719, 1402 `$p`). The reference file also drops
comments; here they are kept. The C `metamath` program needs every `$( Begin $[ f $] $)` marker closed, so the
cut appends the matching `$( End $[ f $] $)` comments.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from envs.metamath.database import MMError

SET_MM_CANDIDATES = ("/usr/share/metamath/databases/set.mm", "/usr/share/metamath/set.mm")
PROPOSITIONAL_LAST = "xorexmid"
INSTALL_HINT = ("set.mm is not installed: run `make metamath` (installs the Debian packages metamath-databases "
                "and metamath; without root: `sudo apt-get install -y metamath-databases metamath`), or set "
                "METAMATH_SET_MM=/path/to/set.mm")


def find_set_mm() -> str | None:
    path = os.environ.get("METAMATH_SET_MM")
    if path:
        return path if os.path.exists(path) else None
    return next((p for p in SET_MM_CANDIDATES if os.path.exists(p)), None)


def truncate(src: str, dst: str, last_label: str = PROPOSITIONAL_LAST) -> str:
    """Write `src` cut after the statement `last_label` (ending at its `$.`) to `dst`; returns `dst`."""
    with open(src, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    start = next((i for i, ln in enumerate(lines) if ln.split()[:2] == [last_label, "$p"]), None)
    if start is None:
        raise MMError(f"{src}: no '$p' statement labelled '{last_label}' to cut after")
    end = next(i for i in range(start, len(lines)) if "$." in lines[i].split())
    kept = lines[:end + 1]
    open_files = []
    for ln in kept:
        m = re.match(r"^\$\( (Begin|End) \$\[ (\S+) \$\] \$\)", ln)
        if m and m.group(1) == "Begin":
            open_files.append(m.group(2))
        elif m and open_files and open_files[-1] == m.group(2):
            open_files.pop()
    kept += [f"$( End $[ {f} $] $)" for f in reversed(open_files)]
    with open(dst, "w", encoding="utf-8") as fh:
        fh.write("\n".join(kept) + "\n")
    return dst


def metamath_verify(path: str, timeout: float = 600) -> dict:
    """Run the C `metamath` on `path` ('verify proof *'); returns {'ok': bool, 'failed': set of labels,
    'output': text}. Raises FileNotFoundError with the install hint when the program is absent."""
    exe = shutil.which("metamath")
    if exe is None:
        raise FileNotFoundError("the `metamath` program is not installed: run `make metamath`")
    d, f = os.path.split(os.path.abspath(path))
    out = subprocess.run([exe, f"read \"{f}\"", "verify proof *", "exit"], cwd=d, capture_output=True,
                         text=True, timeout=timeout).stdout
    if "Source was not read" in out or "No source file has been read" in out:
        raise MMError(f"{path}: the metamath program could not read the file:\n{out[-2000:]}")
    failed = set(re.findall(r'\?Error on line \d+ of file "[^"]*" at statement \d+, label "([^"]+)"', out))
    failed |= set(re.findall(r'The proof of "([^"]+)"', out))
    return {"ok": "All proofs in the database were verified" in out, "failed": failed, "output": out}
