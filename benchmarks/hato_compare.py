"""HATO's sensing ablation at CPU scale: the diffusion policy with touch vs without touch (and binarised touch).

    .venv/bin/python benchmarks/hato_compare.py --out runs/hato-compare              # the RESULTS.md table
    .venv/bin/python benchmarks/hato_compare.py --methods touch,no-touch --num-seeds 2 --steps 400

Every method is one `experiments/hato.py` run: the same demonstrations (`--num-demos` scripted episodes,
`data/hato-lift-<N>-seed0/`, collected once), a population of `--num-seeds` policies (seeds vary the network's
initialisation, minibatches and diffusion noise), `--steps` gradient steps, then `--eval-episodes` fresh episodes
per seed in the MJX env. Per method: the success rate per seed, IQM [95% stratified-bootstrap CI], mean ± std,
and P(touch > X). Writes `<out>/results.json` and `<out>/table.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import stats  # noqa: E402
from experiments import hato  # noqa: E402

METHODS = {"touch": [], "no-touch": ["--policy.no-use-touch"], "binary-touch": ["--policy.binarize-touch"]}


def final_success(root: Path) -> np.ndarray:
    rows = [json.loads(line) for line in (root / "eval.jsonl").read_text().splitlines()]
    last = max(r["chunk"] for r in rows)
    return np.array([r["success"] for r in sorted((r for r in rows if r["chunk"] == last), key=lambda r: r["member"])])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/hato-compare")
    p.add_argument("--methods", default="touch,no-touch")
    p.add_argument("--num-seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--num-demos", type=int, default=100)
    p.add_argument("--eval-episodes", type=int, default=16)
    p.add_argument("--extra", default="", help="more experiments/hato.py flags, space separated")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for method in a.methods.split(","):
        start = time.time()
        argv = ["--num-demos", str(a.num_demos), "--num-seeds", str(a.num_seeds), "--total-steps", str(a.steps),
                "--eval-episodes", str(a.eval_episodes), "--eval-every", "0", "--no-progress",
                "--run-dir", str(out / method), *METHODS[method], *a.extra.split()]
        root = hato.main(argv)
        scores = final_success(root)
        results[method] = {"success": scores.tolist(), "seconds": time.time() - start, "argv": argv}
        print(f"{method}: success per seed {scores}, {time.time() - start:.0f} s", file=sys.stderr)
    lines = [f"| method | IQM success [95% CI] | mean ± std | P(touch > method) [95% CI] | seconds |",
             "|---|---|---|---|---:|"]
    for method, r in results.items():
        x = np.array(r["success"])
        _, lo, hi = stats.bootstrap_ci(x)
        if method != "touch" and "touch" in results:
            t = np.array(results["touch"]["success"])
            pt, plo, phi = stats.probability_of_improvement_ci(t, x)
            poi = f"{pt:.2f} [{plo:.2f}, {phi:.2f}]"
        else:
            poi = "-"
        lines.append(f"| {method} | {stats.iqm(x):.2f} [{lo:.2f}, {hi:.2f}] | {x.mean():.2f} ± {x.std():.2f} | "
                     f"{poi} | {r['seconds']:.0f} |")
    table = "\n".join(lines)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
