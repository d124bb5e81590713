"""Interval estimates for a finished ROLLIN comparison (`experiments/rollin.py compare --out DIR`).

    python benchmarks/rollin_stats.py runs/rollin-maze-8 --budgets 83000,167000,250000

`experiments/rollin.py compare` writes mean ± std; this adds, per method, the IQM of final-task success with its
95% stratified-bootstrap interval at each budget and over the whole run (the mean of all evaluations, an area
under the curve), steps to solve with unsolved seeds counted at the run's budget (a censored value, so the IQM is
a lower bound where seeds did not solve), and P(row > other) for every pair of methods over the whole run
(`benchmarks/stats.py`, rliable's conventions). Writes <DIR>/stats.md and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import stats  # noqa: E402
from experiments import runner  # noqa: E402
from experiments.rollin import methods_of, solve_step  # noqa: E402


def method_scores(run_dirs: list[Path], budgets: list[int], threshold: float) -> dict[str, dict[str, np.ndarray]]:
    """{method: {"@<budget>": success per seed, "run": mean success over all evaluations, "solve": steps}}."""
    scores = {}
    for run_dir in run_dirs:
        steps, success = runner.read_metric(run_dir / "eval.jsonl", "eval_success")
        total = json.loads((run_dir / "config.json").read_text())["args"]["run"]["total_steps"]
        for label, ids in methods_of(run_dir).items():
            s = success[ids]
            row = {f"@{b}": s[:, max(int(np.searchsorted(steps, b, side="right")) - 1, 0)] for b in budgets}
            row["run"] = s.mean(axis=1)
            solve = np.array([solve_step(steps, seed, threshold) for seed in s])
            row["solved"] = np.isfinite(solve)
            row["solve"] = np.where(np.isfinite(solve), solve, total)
            scores[label] = row
    return scores


def make_stats(run_dirs: list[Path], budgets: list[int], threshold: float = 0.8) -> str:
    scores = method_scores(run_dirs, budgets, threshold)
    head = ("| method | seeds | solved | env steps to solve (unsolved = budget): mean ± std / IQM [95% CI] | "
            + " | ".join(f"success @ {b:,}: mean ± std / IQM [95% CI]" for b in budgets)
            + " | mean success over the run: mean ± std / IQM [95% CI] |")
    lines = [head, "|---" * (len(budgets) + 5) + "|"]
    for label, row in scores.items():
        cells = [stats.describe(row[f"@{b}"], digits=2) for b in budgets] + [stats.describe(row["run"], digits=2)]
        solve = stats.describe(row["solve"] / 1000, digits=0)
        lines.append(f"| {label} | {len(row['run'])} | {int(row['solved'].sum())}/{len(row['run'])} | "
                     f"{solve['mean_std']}k / {solve['iqm_ci']}k | "
                     + " | ".join(f"{c['mean_std']} / {c['iqm_ci']}" for c in cells) + " |")
    lines += ["", "| P(row > column), mean success over the run [95% CI] | " + " | ".join(scores) + " |",
              "|---" * (len(scores) + 1) + "|"]
    for a in scores:
        cells = []
        for b in scores:
            if a == b:
                cells.append("—")
                continue
            p, lo, hi = stats.probability_of_improvement_ci(scores[a]["run"], scores[b]["run"])
            cells.append(f"{p:.2f} [{lo:.2f}, {hi:.2f}]")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the --out directory of `experiments/rollin.py compare`")
    p.add_argument("--budgets", required=True, help="comma-separated env steps")
    p.add_argument("--solve-threshold", type=float, default=0.8)
    args = p.parse_args(argv)
    out = Path(args.out)
    run_dirs = [d for d in (out / "curriculum", out / "no_curriculum") if (d / "eval.jsonl").exists()]
    if not run_dirs:
        sys.exit(f"error: no finished runs under {out} (expected curriculum/ and no_curriculum/ with eval.jsonl)")
    text = make_stats(run_dirs, [int(b) for b in args.budgets.split(",")], args.solve_threshold)
    (out / "stats.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
