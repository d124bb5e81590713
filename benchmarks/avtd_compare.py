"""AVTD vs each regularised agent alone and vs AVTD with the paper's raw-MSE argmin: one vmapped population, a table.

    python benchmarks/avtd_compare.py --out runs/avtd-compare                 # CPU defaults: ~30-40 min on 2 cores
    python benchmarks/avtd_compare.py --out runs/avtd-compare --report-only   # rebuild table.md and curves.png
    python benchmarks/avtd_compare.py --out runs/avtd-utd8 --updates-per-step 8 --batch-size 128   # UTD 8: ~2x time
    python benchmarks/avtd_compare.py --out runs/avtd-hopper --preset paper --env hopper --num-seeds 10 \
        --total-steps 1000000                                                 # GPU scale (these flags win)

Runs `experiments/avtd.py` ONCE with `--raw-baseline`: AVTD (normalised validation TD error, switching margin 0.1:
the defaults), AVTD (raw validation MSE, plain argmin: the paper's rule) and each of the 4 agents alone (none | ln |
ln+do0.01 | wd0.1), times --num-seeds, all in one compiled program; seeds are shared across methods (member j of
every method starts from the same key). Defaults: MJX `inverted_pendulum`, `--preset high-utd` (1 env, 100 steps
per chunk, (64, 64) nets) with 4 critic steps per env step (UTD 4, 4x the old table's UTD 1) and batch 64, 8
seeds (48 members), 3000 env steps (1000 uniform-random start steps), evaluation every 10 chunks (1000 steps).
Measured on this 2-core machine under load from other jobs (the process got about one core): compile ~80 s, one
chunk of 100 steps ~70 s, one evaluation of all agents ~46 s: ~39 min in all; UTD 8 with batch 128 costs ~200 s
per chunk. `--preset paper` keeps the preset's UTD 20 and batch 256 unless --updates-per-step / --batch-size are
given. Flags this script does not know are passed on to experiments/avtd.py (e.g. --agent.eval-episodes 16).

Writes <out>/run/ (the experiment's own logs, avtd.png and table.md), <out>/table.md (per method, on the final
evaluation: mean ± std over seeds, IQM with its 95% stratified-bootstrap percentile interval, the probability that
default AVTD beats the method with its interval (benchmarks/stats.py, rliable's conventions), data-collector
switches and how often each AVTD variant chose each agent) and <out>/curves.png (IQM of the evaluation return
over env steps with its 95% interval, per method; the acting agent's normalised validation TD error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import comparison, stats  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/avtd-compare", help="output directory (must not exist unless --report-only)")
    p.add_argument("--env", default="inverted_pendulum")
    p.add_argument("--preset", default="high-utd", help="experiments/avtd.py preset: cpu | high-utd | paper")
    p.add_argument("--num-seeds", type=int, default=8)
    p.add_argument("--total-steps", type=int, default=3000, help="env steps per member")
    p.add_argument("--eval-every", type=int, default=10, help="chunks between evaluations")
    p.add_argument("--updates-per-step", type=int, default=None,
                   help="critic steps per (1-env) step, i.e. the UTD (default 4; the preset's for --preset paper)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch (default 64; the preset's for paper)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap replicates")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report-only", action="store_true", help="only rebuild table.md and curves.png from --out")
    args, passthrough = p.parse_known_args(argv)
    out = Path(args.out)
    if not args.report_only and out.exists():
        sys.exit(f"error: {out} exists; choose another --out (runs are never overwritten), or --report-only.")
    return args, passthrough, out


def run(args, passthrough: list[str], out: Path) -> None:
    from experiments import avtd as experiment

    cpu = args.preset != "paper"
    utd = args.updates_per_step if args.updates_per_step is not None else (4 if cpu else None)
    batch = args.batch_size if args.batch_size is not None else (64 if cpu else None)
    sizes = ((["--agent.updates-per-step", str(utd)] if utd else []) +
             (["--agent.batch-size", str(batch)] if batch else []))
    flags = ["--preset", args.preset, *sizes, "--env", args.env, "--num-seeds", str(args.num_seeds), "--total-steps",
             str(args.total_steps), "--eval-every", str(args.eval_every), "--raw-baseline", "--no-tensorboard",
             *passthrough, "--run-dir", str(out / "run")]
    if args.no_progress:
        flags.append("--no-progress")
    out.mkdir(parents=True)
    (out / "command.txt").write_text("python experiments/avtd.py " + " ".join(flags) + "\n")
    experiment.main(flags)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def report(args, out: Path) -> None:
    from experiments import avtd as experiment

    root = out / "run"
    config = json.loads((root / "config.json").read_text())
    names, groups = experiment.method_groups(config)
    evals, metrics = _records(root / "eval.jsonl"), _records(root / "metrics.jsonl")
    steps = sorted({r["env_steps"] for r in evals})
    table = {}  # method -> (members, eval steps) of eval_return / eval_success
    for key in ("eval_return", "eval_success"):
        for method, ids in groups.items():
            t = np.full((len(ids), len(steps)), np.nan)
            for r in evals:
                if r["member"] in ids and key in r:
                    t[ids.index(r["member"]), steps.index(r["env_steps"])] = r[key]
            table[method, key] = t
    avtd_groups = [g for g in groups if g.startswith("AVTD")]
    main_avtd = avtd_groups[0]
    actors = {g: experiment.actor_history(metrics, groups[g]) for g in avtd_groups}
    has_success = bool(np.nanmax(np.abs(table[main_avtd, "eval_success"]))) if evals else False
    final = {m: table[m, "eval_return"][:, -1] for m in groups}

    seeds = {len(ids) for ids in groups.values()}
    lines = [f"Final evaluation at {steps[-1]} env steps; env {config['args']['env']} "
             f"{' '.join(config['args']['env_options'])}; {'/'.join(map(str, sorted(seeds)))} seeds per method "
             f"(one vmapped population); command in command.txt. IQM and P(improvement) with 95% stratified-bootstrap "
             f"percentile intervals ({args.reps} replicates). P(A > method): probability that a seed of {main_avtd} "
             f"beats a seed of the method. 'chosen by': % of chunks in which that AVTD variant's data collector was "
             f"this agent; 'switches': changes of the data collector per seed (mean ± std).", "",
             "| method | seeds | final return, mean ± std | final return, IQM [95% CI] | P(A > method) [95% CI] |" +
             (" final success, mean ± std |" if has_success else "") + " switches | " +
             " | ".join(f"chosen by {g} (%)" for g in avtd_groups) + " |",
             "|---|---:|---:|---:|---:|" + ("---:|" if has_success else "") + "---:|" + "---:|" * len(avtd_groups)]
    for method, ids in groups.items():
        cells = stats.describe(final[method], digits=1, reps=args.reps)
        if method == main_avtd:
            poi = "—"
        else:
            p, lo, hi = stats.probability_of_improvement_ci(final[main_avtd], final[method], reps=args.reps)
            poi = f"{p:.2f} [{lo:.2f}, {hi:.2f}]"
        row = [method, str(len(ids)), cells["mean_std"], cells["iqm_ci"], poi]
        if has_success:
            s = table[method, "eval_success"][:, -1]
            row.append(f"{s.mean():.2f} ± {s.std():.2f}")
        if method in actors:
            sw = np.sum(np.diff(actors[method], axis=1) != 0, axis=1).astype(float)
            row.append(f"{sw.mean():.1f} ± {sw.std():.1f}")
        else:
            row.append("—")
        for g in avtd_groups:
            row.append(f"{100.0 * np.nanmean(actors[g] == names.index(method[: -len(' alone')])):.0f}"
                       if method.endswith(" alone") else "—")
        lines.append("| " + " | ".join(row) + " |")

    fig, (ax1, ax2) = comparison.two_panels()
    for method in groups:
        t = table[method, "eval_return"]
        ci = np.array([stats.bootstrap_ci(t[:, i], stats.iqm, reps=min(args.reps, 500))
                       for i in range(len(steps))])
        ax1.plot(steps, ci[:, 0], lw=2 if method.startswith("AVTD") else 1, label=method)
        ax1.fill_between(steps, ci[:, 1], ci[:, 2], alpha=0.15)
    for g in avtd_groups:  # the acting agent's normalised validation TD error, IQM over seeds
        msteps = sorted({r["env_steps"] for r in metrics})
        t = np.full((len(groups[g]), len(msteps)), np.nan)
        for r in metrics:
            if r["member"] in groups[g]:
                t[groups[g].index(r["member"]), msteps.index(r["env_steps"])] = r[f"val_td_norm_{int(r['actor'])}"]
        ax2.plot(msteps, [stats.iqm(t[:, i]) for i in range(len(msteps))], label=g)
    ax2.set_yscale("log")
    ax1.set(xlabel="environment steps", ylabel="evaluation return (IQM, 95% CI)", title=config["args"]["env"])
    ax2.set(xlabel="environment steps", ylabel="normalised validation TD of the acting agent (IQM)",
            title="validation TD (MSE / Var of own targets)")
    comparison.save_outputs(fig, (ax1, ax2), out, lines)


def main(argv=None):
    args, passthrough, out = parse(argv)
    if not args.report_only:
        run(args, passthrough, out)
    report(args, out)


if __name__ == "__main__":
    main()
