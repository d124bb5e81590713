"""The RLDG table from a finished `experiments/rldg.py` run: success and cycle time per arm with intervals, the
experts, data efficiency, the swap ablation, action statistics near contact and state coverage.

    python benchmarks/rldg_compare.py --run runs/rldg            # writes runs/rldg/table.md and rldg_efficiency.png

Scores per member are the final evaluation (`--generalist.eval-episodes` episodes per task): success averaged
over the seen tasks, success on the held-out task(s), and the cycle time (steps to insert, over successful
episodes, averaged over the seen tasks). Cells: mean ± std over seeds and IQM [95% stratified bootstrap interval]
(benchmarks/stats.py, rliable's conventions); P(X > Y) is the probability of improvement over seeds.

Data statistics (from the episode files, the fine-tuning data itself):
- near contact = steps whose observed wrench is nonzero or whose tip is within 1 cm of the socket top; per source
  the mean |action| per dimension, the action std per dimension, and the fraction of saturated entries (|a| > 0.99);
- coverage = distinct cells visited, the relative pose (x, y, height) binned at 2 mm and yaw at 0.02 rad, over all
  steps and near contact.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import stats  # noqa: E402
from envs import episodes as episode_files  # noqa: E402
from envs import insertion  # noqa: E402
from experiments import rldg, runner  # noqa: E402


def source_statistics(root: Path, source: str, tasks, only_success: bool = True) -> dict:
    obs, act, lengths = [], [], []
    for task in tasks:
        eps = episode_files.load_episodes(root / "data" / source / task, only_success=only_success)
        real = eps["mask"] > 0
        obs.append(eps["observations"][real])
        act.append(eps["actions"][real])
        lengths.append(eps["lengths"])
    obs, act, lengths = np.concatenate(obs), np.concatenate(act), np.concatenate(lengths)
    pose, wrench = obs[:, slice(*insertion.OBS_LAYOUT["pose"])], obs[:, slice(*insertion.OBS_LAYOUT["wrench"])]
    near = (np.abs(wrench).sum(1) > 1e-6) | (pose[:, 2] < 0.01)
    cells = lambda p: len({tuple(r) for r in np.floor(p / np.array([0.002, 0.002, 0.002, 0.02])).astype(int)})
    some = near.any()  # (a tiny run may never come near the socket: NaN, not a warning)
    nan = np.full(act.shape[1], np.nan)
    return {"steps": len(obs), "near": int(near.sum()), "length": lengths,
            "abs_action_near": np.abs(act[near]).mean(0) if some else nan,
            "std_action_near": act[near].std(0) if some else nan,
            "saturated_near": float((np.abs(act[near]) > 0.99).mean()) if some else float("nan"),
            "cells": cells(pose), "cells_near": cells(pose[near])}


def cell(x, digits=2) -> str:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return "—"
    d = stats.describe(x, digits=digits)
    return f"{d['mean_std']} | {d['iqm_ci']}"


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished experiments/rldg.py run directory")
    parser.add_argument("--out", default="", help="the Markdown table (default: <run>/table.md)")
    a = parser.parse_args(argv)
    root = Path(a.run)
    if not (root / "config.json").exists():
        raise SystemExit(f"{root} is not an experiments/rldg.py run (no config.json).")
    args, _, _ = runner.load_run_args(root, rldg.Args)
    data_root = Path(args.data) if args.data else root
    lines = [f"Run: `{root}`; seen tasks {', '.join(args.tasks)}, held out {', '.join(args.heldout)}; "
             f"{args.episodes_per_task} episodes per task and source; {args.run.num_seeds} seeds per arm; "
             f"{args.finetune_steps} fine-tuning steps; expert {args.expert_steps} env steps.", ""]
    lines += ["| arm | seen success: mean ± std | IQM [95% CI] | held-out success: mean ± std | IQM [95% CI] "
              "| cycle time (seen): mean ± std | IQM [95% CI] |", "|---|---|---|---|---|---|---|"]
    results = {}
    for mode in ("full", "adapters"):
        if not (root / f"finetune-{mode}" / "members.json").exists():
            continue
        for row in rldg.arm_results(root, mode, args):
            results[(mode, row["arm"])] = row
            held = cell(row["heldout"]) if row["heldout"] is not None else "— | —"
            lines.append(f"| {row['arm']} ({mode}) | {cell(row['seen'])} | {held} | {cell(row['cycle_seen'], 1)} |")
    experts_root = Path(args.experts) if args.experts else root
    for task in args.tasks:
        path = experts_root / "experts" / task / "eval.jsonl"
        if path.exists():
            s = runner.read_metric(path, "eval_success")[1][:, -1]
            lines.append(f"| RL expert {task} (best of {len(s)} seeds) | {np.max(s):.2f} | | | | | |")
    every = tuple(args.tasks) + tuple(args.heldout)
    if results:
        held = ", ".join(args.heldout or ["none"])
        lines += ["", f"Per task (held out: {held}), success mean ± std over seeds, cycle time in steps over "
                  "successful episodes:", "",
                  "| arm | " + " | ".join(every) + " | " + " | ".join(f"cycle {t}" for t in every) + " |",
                  "|---|" + "---|" * (2 * len(every))]
        for (mode, arm), row in results.items():
            succ = [f"{np.mean(row['per_task'][t][0]):.2f} ± {np.std(row['per_task'][t][0]):.2f}" for t in every]
            cyc = [f"{np.nanmean(c):.1f}" if np.isfinite(c).any() else "—"
                   for c in (row["per_task"][t][1] for t in every)]
            lines.append(f"| {arm} ({mode}) | " + " | ".join(succ + cyc) + " |")
    lines += ["", *[line.strip() for line in rldg.collection_lines(data_root, args.tasks)]]
    lines.append("")
    for x, y in (("rl", "proxy"), ("mix", "proxy"), ("rl", "mix"), ("rl_on_proxy", "proxy"),
                 ("proxy_on_rl", "rl")):
        if ("full", x) in results and ("full", y) in results:
            p = stats.probability_of_improvement(results[("full", x)]["seen"], results[("full", y)]["seen"])
            lines.append(f"- P({x} > {y}) on seen-task success (full fine-tuning): {p:.2f}")
    lines += ["", "| data | steps | mean episode length | steps near contact | mean abs action near contact "
              "(x, y, z, yaw) | action std near contact | saturated near contact | cells visited | cells near "
              "contact |", "|---|---|---|---|---|---|---|---|---|"]
    for source in ("rl", "proxy"):
        s = source_statistics(data_root, source, args.tasks, only_success=not args.allow_failed_episodes)
        fmt = lambda v: "(" + ", ".join(f"{x:.2f}" for x in v) + ")"
        lines.append(f"| {source} | {s['steps']} | {s['length'].mean():.1f} ± {s['length'].std():.1f} | {s['near']} | "
                     f"{fmt(s['abs_action_near'])} | {fmt(s['std_action_near'])} | {s['saturated_near']:.2f} | "
                     f"{s['cells']} | {s['cells_near']} |")
    out = Path(a.out) if a.out else root / "table.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot_efficiency(results, root / "rldg_efficiency.png", args.episodes_per_task * len(args.tasks))
    return out


def plot_efficiency(results: dict, png: Path, n: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for source in ("rl", "proxy"):
        xs, ys, es = [], [], []
        for frac, label in ((4, f"{source} 1/4"), (2, f"{source} 1/2"), (1, source)):
            if ("full", label) in results:
                s = results[("full", label)]["seen"]
                xs.append(max(1, n // frac))
                ys.append(np.mean(s))
                es.append(np.std(s))
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f"fine-tuned on {source} data")
    ax.set_xlabel("training episodes (all seen tasks)")
    ax.set_ylabel("success on seen tasks")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
