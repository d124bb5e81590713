"""WSRL vs its baselines on a point maze: one vmapped population of seeds per method, a table and curves.

    python benchmarks/wsrl_compare.py --out runs/wsrl-compare                  # CPU-sized, ~30-40 minutes
    python benchmarks/wsrl_compare.py --out runs/wsrl-compare --extra --pretrain-steps 1000000 ...   # GPU-scale

Runs `experiments/wsrl.py` once with pretraining (WSRL), then the baselines reusing that pretraining
(`--pretrained`): no warmup, retain offline data; and from scratch (plain SAC with the same ensemble) and RLPD
(from scratch, retaining offline data). Writes <out>/table.md and <out>/curves.png (success over online steps,
mean and min-max over seeds, and the ensemble's mean Q on online minibatches around the switch to online).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import comparison, stats  # noqa: E402
from experiments import runner  # noqa: E402

METHODS = {  # name -> extra flags for experiments/wsrl.py (the pretrained run is added for the first three)
    "WSRL": [],
    "no warmup": ["--warmup-steps", "0"],
    "retain offline": ["--retain-offline"],
    "from scratch": ["--from-scratch"],
    "RLPD (scratch + offline)": ["--from-scratch", "--retain-offline"],
}


def main():
    def arguments(p):
        p.add_argument("--out", default="runs/wsrl-compare", help="output directory (must not exist)")
        p.add_argument("--env", default="pointmaze-medium-jax")
        p.add_argument("--pretrain-steps", type=int, default=5000)
        p.add_argument("--total-steps", type=int, default=30000, help="online env steps per seed")
        p.add_argument("--budgets", default="4000,12000,30000", help="online steps at which the table reports")

    args, methods, passthrough, out = comparison.parse(__doc__, METHODS, list(METHODS), arguments)
    if not args.report_only:
        run_all(args, methods, passthrough, out)
    report(args, methods, out)


def run_dir_of(out: Path, name: str) -> Path:
    return out / name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "and")


def run_all(args, methods, passthrough, out: Path):
    from experiments import wsrl as experiment

    common = ["--env", args.env, "--num-seeds", str(args.num_seeds), "--pretrain-steps", str(args.pretrain_steps),
              "--total-steps", str(args.total_steps), "--no-tensorboard", *passthrough]
    if args.no_progress:
        common.append("--no-progress")
    pretrained = run_dir_of(out, "WSRL")
    for name in methods:
        flags = METHODS[name]
        reuse = [] if name == "WSRL" or "--from-scratch" in flags else ["--pretrained", str(pretrained)]
        print(f"=== {name}", file=sys.stderr, flush=True)
        experiment.main(common + flags + reuse + ["--run-dir", str(run_dir_of(out, name))])


def report(args, methods, out: Path):
    """table.md and curves.png from the runs under `out`. Q-values are those of chunks with updates only.

    Per budget: success mean ± std over seeds and IQM with its 95% stratified-bootstrap interval; then the mean
    success over the whole online run (area under the curve / steps) with the same statistics and the probability
    that WSRL beats the method, P(WSRL > X), with its interval (benchmarks/stats.py, rliable's conventions)."""
    budgets = [int(b) for b in args.budgets.split(",")]
    lines = ["| method | seeds | " + " | ".join(f"success @ {b // 1000}k: mean ± std / IQM [95% CI]" for b in budgets)
             + " | mean success over the run: mean ± std / IQM [95% CI] | P(WSRL > method) [95% CI] "
             "| mean Q, first chunk with updates | min mean Q, first 5k steps of updates |",
             "|---" * (len(budgets) + 6) + "|"]
    curves, auc = {}, {}
    for name in methods:
        run_dir = run_dir_of(out, name)
        steps, success = runner.read_metric(run_dir / "online" / "eval.jsonl", "eval_success")
        auc[name] = success.mean(1)
    for name in methods:
        run_dir = run_dir_of(out, name)
        steps, success = runner.read_metric(run_dir / "online" / "eval.jsonl", "eval_success")
        mstep, q = runner.read_metric(run_dir / "online" / "metrics.jsonl", "q_mean")
        _, updates = runner.read_metric(run_dir / "online" / "metrics.jsonl", "updates_in_chunk")
        q = np.where(updates > 0, q, np.nan)  # q_mean is 0 in chunks without updates (warmup)
        curves[name] = (steps, success, mstep, q, updates)
        cells = [str(success.shape[0])]
        for b in budgets:
            i = min(int(np.searchsorted(steps, b)), len(steps) - 1)
            d = stats.describe(success[:, i], digits=2)
            cells.append(f"{d['mean_std']} / {d['iqm_ci']}")
        d = stats.describe(auc[name], digits=2)
        cells.append(f"{d['mean_std']} / {d['iqm_ci']}")
        if name != "WSRL" and "WSRL" in auc:
            p, lo, hi = stats.probability_of_improvement_ci(auc["WSRL"], auc[name])
            cells.append(f"{p:.2f} [{lo:.2f}, {hi:.2f}]")
        else:
            cells.append("—")
        first = int(np.argmax(updates.mean(0) > 0))
        window = (mstep >= mstep[first]) & (mstep < mstep[first] + 5000)
        cells.append(f"{q[:, first].mean():.1f}")
        cells.append(f"{np.nanmin(q[:, window], 1).mean():.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    pre = run_dir_of(out, "WSRL") / "pretrain" / "eval.jsonl"
    if pre.exists():
        _, pre_success = runner.read_metric(pre, "eval_success")
        _, pre_q = runner.read_metric(pre.with_name("metrics.jsonl"), "q_mean")
        lines.append(f"\nPretrained policy (Cal-QL, {args.pretrain_steps} steps): success "
                     f"{pre_success[:, -1].mean():.2f} ± {pre_success[:, -1].std():.2f}; mean Q on offline "
                     f"minibatches in its last chunk: {pre_q[:, -1].mean():.1f}. Mean ± std over "
                     f"{pre_success.shape[0]} seeds.")
    fig, (ax1, ax2) = comparison.two_panels()
    for name, (steps, success, mstep, q, _) in curves.items():
        ax1.plot(steps, success.mean(0), label=name)
        ax1.fill_between(steps, success.min(0), success.max(0), alpha=0.15)
        with np.errstate(all="ignore"):
            ax2.plot(mstep, np.nanmean(q, 0), label=name)
    ax1.set(xlabel="online environment steps", ylabel="success rate (deterministic eval)", title=args.env)
    ax2.set(xlabel="online environment steps", ylabel="mean Q on online minibatches", title="Q-values after the switch")
    comparison.save_outputs(fig, (ax1, ax2), out, lines)


if __name__ == "__main__":
    main()
