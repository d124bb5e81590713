"""Exploration with reward-free prior data: SUPE, ExPLORe and baselines on the large point maze, a table and curves.

    python benchmarks/explore_compare.py --out runs/explore-compare                 # CPU-sized (see below)
    python benchmarks/explore_compare.py --out runs/explore-compare --report-only   # rebuild table and PNG
    python benchmarks/explore_compare.py --out runs/explore-compare --methods ExPLORe,online --num-seeds 8

Each method is ONE vmapped population of `--num-seeds` seeds (`experiments/supe.py` or `experiments/explore.py`
with the method's flags); "SUPE without prior data online" reuses SUPE's skills (`--skills-from`). Writes
<out>/table.md (env steps until the goal was first reached online, per seed; how many online episodes reached it;
deterministic success at fixed budgets, mean ± std over seeds) and <out>/curves.png (fraction of seeds that have
reached the goal, and success, over env steps). Extra arguments are passed to every run (e.g.
`--agent.updates-per-step 8`).

Cost (measured on 2 CPU cores shared with other jobs, load ~10, 8 seeds per population): SUPE's VAE ~4.5 s per 250
updates (6k: ~2 min), SUPE online ~8 s per 800 low-level steps, ExPLORe-family ~14 s per 400 env steps (the RND
of the reference's size, 3 x 256 with 256 features, dominates). The table with >= 8 seeds in ~30-40 min on 2
unshared cores: --num-seeds 8 --total-steps 40000 --budgets 10000,20000,40000 (see the report of issue 12).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import comparison  # noqa: E402
from experiments import runner  # noqa: E402

METHODS = {  # name -> (experiment module, flags)
    "SUPE": ("supe", []),
    "SUPE without prior data online": ("supe", ["--no-prior-online"]),
    "ExPLORe": ("explore", ["--method", "explore"]),
    "naive (prior data with reward 0)": ("explore", ["--method", "naive"]),
    "online + RND": ("explore", ["--method", "online-rnd"]),
    "online": ("explore", ["--method", "online"]),
    "ExPLORe (min label)": ("explore", ["--method", "explore-min"]),
    "naive (reward model, no RND)": ("explore", ["--method", "naive-rm"]),
}
DEFAULT = [m for m in METHODS if m not in ("ExPLORe (min label)", "naive (reward model, no RND)")]


def main():
    def arguments(p):
        p.add_argument("--out", default="runs/explore-compare", help="output directory (must not exist)")
        p.add_argument("--env", default="pointmaze-large-jax")
        p.add_argument("--total-steps", type=int, default=60000, help="online env steps per seed")
        p.add_argument("--budgets", default="20000,40000,60000", help="env steps at which the table reports")

    args, methods, passthrough, out = comparison.parse(__doc__, METHODS, DEFAULT, arguments)
    if not args.report_only:
        run_all(args, methods, passthrough, out)
    report(args, methods, out)


def run_dir_of(out: Path, name: str) -> Path:
    return out / "".join(c if c.isalnum() else "_" for c in name).strip("_")


def metrics_dir(out: Path, name: str) -> Path:
    return run_dir_of(out, name) / ("online" if METHODS[name][0] == "supe" else "")


def run_all(args, methods, passthrough, out: Path):
    from experiments import explore, supe

    common = ["--env", args.env, "--num-seeds", str(args.num_seeds), "--total-steps", str(args.total_steps),
              "--no-tensorboard", *passthrough] + (["--no-progress"] if args.no_progress else [])
    for name in methods:
        module, flags = METHODS[name]
        if name == "SUPE without prior data online" and "SUPE" in methods:
            flags = flags + ["--skills-from", str(run_dir_of(out, "SUPE"))]
        print(f"=== {name}", file=sys.stderr, flush=True)
        argv = common + flags + ["--run-dir", str(run_dir_of(out, name))]
        if module == "supe":
            supe.main(argv)
        else:
            runner.main("explore", explore.Args, explore.build, argv=argv, description=explore.__doc__)


def read_by_chunk(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, table[member, chunk]) of `key`, aligned by chunk: SUPE's members count slightly different
    low-level steps per chunk (episodes ending inside a skill), so the x value is the members' mean."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    chunks, members = sorted({r["chunk"] for r in rows}), sorted({r["member"] for r in rows})
    table, steps = np.full((len(members), len(chunks)), np.nan), np.zeros((len(members), len(chunks)))
    for r in rows:
        i, j = members.index(r["member"]), chunks.index(r["chunk"])
        table[i, j], steps[i, j] = r[key], r["env_steps"]
    return steps.mean(0), table


def _k(steps: float) -> str:
    return f"{steps / 1000:.1f}k"


def report(args, methods, out: Path):
    budgets = [int(b) for b in args.budgets.split(",")]
    lines = ["| method | goal first reached online (env steps, per seed) | seeds that reached it | mean ± std "
             "(unreached = budget) | online episodes that reached it | " + " | ".join(f"success @ {b // 1000}k"
                                                                       for b in budgets) + " |",
             "|---" * (len(budgets) + 5) + "|"]
    curves = {}
    for name in methods:
        directory = metrics_dir(out, name)
        msteps, first = read_by_chunk(directory / "metrics.jsonl", "first_success_step")
        steps, success = read_by_chunk(directory / "eval.jsonl", "eval_success")
        first = first[:, -1]
        curves[name] = (msteps, first, steps, success)
        per_seed = ", ".join(_k(f) if f >= 0 else "—" for f in first)
        _, rate = read_by_chunk(directory / "metrics.jsonl", "episode_success")
        _, count = read_by_chunk(directory / "metrics.jsonl", "episode_count")
        reached = np.nansum(rate * count, axis=1)  # per seed, over the whole run
        censored = np.where(first >= 0, first, msteps[-1])  # a lower bound where the goal was never reached
        bound = "≥ " if (first < 0).any() else ""
        cells = [per_seed, f"{int((first >= 0).sum())}/{len(first)}",
                 f"{bound}{_k(censored.mean())} ± {_k(censored.std())}", ", ".join(f"{r:.0f}" for r in reached)]
        for b in budgets:
            i = min(int(np.searchsorted(steps, b)), len(steps) - 1)
            cells.append(f"{success[:, i].mean():.2f} ± {success[:, i].std():.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    fig, (ax1, ax2) = comparison.two_panels()
    for name, (msteps, first, steps, success) in curves.items():
        grid = np.unique(np.concatenate([[0.0], msteps]))
        reached = ((first[None, :] >= 0) & (first[None, :] <= grid[:, None])).mean(1)
        line, = ax1.step(grid, reached, where="post", label=name)
        ax2.plot(steps, success.mean(0), color=line.get_color(), label=name)
        ax2.fill_between(steps, success.min(0), success.max(0), color=line.get_color(), alpha=0.12)
    ax1.set(xlabel="environment steps", ylabel="fraction of seeds that reached the goal", title=args.env)
    ax2.set(xlabel="environment steps", ylabel="success rate (deterministic eval)", title="evaluation")
    comparison.save_outputs(fig, (ax1, ax2), out, lines)


if __name__ == "__main__":
    main()
