"""ROLLIN curricula (Li et al., ICML 2023) on the large point maze and on brax locomotion, as one file.

    python experiments/rollin.py                                        # ROLLIN (beta 0.5), large maze, 7 goals
    python experiments/rollin.py --sweep.beta 0,0.5 --num-seeds 3        # plain curriculum AND ROLLIN, one program
    python experiments/rollin.py --num-stages 1 --num-seeds 3            # no curriculum: the final goal only
    python experiments/rollin.py --env halfcheetah --env-options max_steps=250 --max-velocity 3 \\
        --num-stages 3 --hp.reward-bias 0                                 # target-velocity curriculum
    python experiments/rollin.py compare --out runs/rollin-maze          # all three methods, then table + PNG
    python experiments/rollin.py table runs/A runs/B --out runs/AB       # table + PNG from finished runs

Tasks. Point mazes (`pointmaze-*`): K goals at cell centres evenly spaced along the shortest path from the start
(S, or --start-cell) to G; goal K = G is the task of interest. Sparse reward (1 on reaching the goal, which ends the
episode) shifted by the default --hp.reward-bias -1 to -1 per step and 0 at the goal (a shortest-time reward; the
zero-initialised critic is then optimistic). Note: in the large maze, S -> G is monotone in x and y and walls are
frictionless, so a CONSTANT action (1, 0.5) reaches G (both simulators); a goal-conditioned policy can hit G by
extrapolation before the curriculum gets there. --start-cell 7 1 (bottom-left) gives a path that goes up, then down,
which no constant action solves (harder: our 150k-step trials stalled at stage 4 of 9).
brax envs (`halfcheetah`, `hopper`): K target speeds max_velocity/K, ..., max_velocity; reward
max(0, 1 - |v_x - v*|); success when the smoothed speed is within 0.5 of v* at the end of an episode; the default
per-step penalty is refused there (pass --hp.reward-bias 0: a penalty would reward the hopper for falling).
The context (goal or target speed) is part of the observation. Evaluation is ALWAYS on the final task
(`eval_success`; `eval_stage_success` is the current stage's); metrics.jsonl logs `stage`, `stage_success`,
`rollin_fraction` per chunk.

CPU-sized defaults: 8 envs, (128, 128) networks, batch 128, one update per vectorised step (UTD 1/8), no entropy
term in the critic target, initial temperature 0.1, 250k steps per member (~45-70 s per member and 100k steps on a
2-core CPU). `--preset paper` is GPU scale: 256 x 2 networks, batch 256, one env (one update per transition, as
SAC is usually run), 1M steps, 5 seeds of beta in {0, 0.1, 0.2, 0.5, 0.75, 0.9}; its flags are listed at the end
of --help.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tyro  # noqa: E402

import envs  # noqa: E402
from algos import rollin  # noqa: E402
from experiments import runner  # noqa: E402

CPU_AGENT = rollin.Config(num_envs=8, chunk_steps=50, hidden_sizes=(128, 128), batch_size=128,
                          buffer_capacity=200_000, start_steps=2000, backup_entropy=False, eval_episodes=16)
# --preset NAME puts these flags before the user's own (flags given on the command line win); --help lists them.
PRESETS = {
    "cpu": runner.Preset((), "the CPU-sized defaults described above."),
    "paper": runner.Preset(
        ("--agent.hidden-sizes", "256", "256", "--agent.batch-size", "256", "--agent.num-envs", "1",
         "--agent.chunk-steps", "1000", "--total-steps", "1000000", "--num-seeds", "5",
         "--sweep.beta", "0,0.1,0.2,0.5,0.75,0.9"),
        "GPU scale: one env (one update per transition), 1M steps, 5 seeds x 6 values of beta."),
}


@dataclasses.dataclass(frozen=True)
class Args:
    """ROLLIN: a curriculum of K tasks; each episode of task k starts, with probability beta, by rolling in the
    policy of task k-1 for h ~ Geometric(1 - gamma) steps. beta = 0 is the plain curriculum, K = 1 no curriculum."""

    preset: Literal["cpu", "paper"] = "cpu"
    """Named set of flags (listed at the end of --help) placed before yours: cpu (the defaults), paper."""
    env: str = "pointmaze-large-jax"
    """pointmaze-{umaze,medium,large}[-jax] (goal curriculum) or halfcheetah / hopper (target-velocity curriculum)."""
    env_options: tuple[str, ...] = ()
    """Environment options as key=value, e.g. max_steps=250."""
    num_stages: int = 7
    """K, the number of tasks (the last is the task of interest); 1 = no curriculum. Static."""
    start_cell: tuple[int, ...] = ()
    """Point mazes: start in this cell (row col) instead of S, e.g. 7 1 in the large maze (see the docstring)."""
    max_velocity: float = 3.0
    """Locomotion: the final target speed (m/s); the targets are evenly spaced up to it."""
    agent: rollin.Config = CPU_AGENT
    """Static settings: the SAC learner, the roll-in switches, episodes per stage. Changing any recompiles."""
    hp: rollin.HParams = rollin.HParams(reward_bias=-1.0, init_temperature=0.1)
    """Sweepable: SAC's scalars, beta, rollin_gamma, advance_threshold, success_ema."""
    run: Annotated[runner.RunConfig, tyro.conf.OmitArgPrefixes] = runner.RunConfig(total_steps=250_000,
                                                                                  eval_every=10)
    """Budgets, seeds, logging and checkpointing."""


def make_env(args: Args) -> rollin.ContextEnv:
    env = envs.make(args.env, **runner.parse_env_options(args.env_options))
    if args.env.startswith("pointmaze"):
        if args.start_cell and len(args.start_cell) != 2:
            raise ValueError(f"--start-cell takes a row and a column, got {args.start_cell}.")
        return rollin.maze_goals(env, args.num_stages, tuple(args.start_cell) or None)
    if args.env in ("halfcheetah", "hopper", "ant"):
        return rollin.target_velocity(env, args.max_velocity, args.num_stages)
    raise ValueError(f"experiments/rollin.py has curricula for point mazes and halfcheetah/hopper/ant, not "
                     f"{args.env!r}.")


def build(args: Args) -> runner.Trainer:
    if not args.env.startswith("pointmaze") and args.hp.reward_bias < 0:
        raise ValueError(f"--hp.reward-bias is {args.hp.reward_bias:g}: a per-step penalty rewards ending episodes "
                         f"early (a falling hopper); pass --hp.reward-bias 0 for {args.env}.")
    env = make_env(args)
    init_carry, train_chunk, evaluate = rollin.make_train(args.agent, env)
    return runner.Trainer(init_carry, train_chunk, evaluate, args.agent.num_envs * args.agent.chunk_steps)


# ---- the comparison: runs, table, curves --------------------------------------------------------------------


def methods_of(run_dir: Path) -> dict[str, list[int]]:
    """Method label -> member ids of one run directory: 'no curriculum' (K = 1), else 'ROLLIN beta=b' or
    'curriculum (beta=0)' per beta value."""
    config = json.loads((run_dir / "config.json").read_text())
    args, out = config["args"], {}
    beta_default = args["hp"]["beta"] if args["agent"]["rollin"] else 0.0
    for m in config["members"]:
        beta = m.get("beta", beta_default)
        if args["num_stages"] == 1:
            label = "no curriculum"
        elif beta == 0 or not args["agent"]["rollin"]:
            label = "curriculum (beta=0)"
        else:
            label = f"ROLLIN beta={beta:g}"
        out.setdefault(label, []).append(m["member"])
    return out


def solve_step(steps: np.ndarray, success: np.ndarray, threshold: float) -> float:
    """Env steps of the first evaluation with success >= threshold that the next evaluation confirms (the last
    evaluation counts alone); nan if never. One lucky evaluation is not "solved": in the large maze a
    goal-conditioned policy can reach G by extrapolation for a moment (see the module docstring)."""
    ok = success >= threshold
    hits = ok & np.append(ok[1:], True)
    return float(steps[np.argmax(hits)]) if hits.any() else np.nan


def make_table(run_dirs: list[Path], out: Path, budgets: list[int], solve_threshold: float = 0.8) -> str:
    """table.md and curves.png: env steps until the final task is solved (`solve_step`), final-task success at
    the last evaluation at or before each budget, the stage reached at the end; mean ± std over seeds."""
    out.mkdir(parents=True, exist_ok=True)
    head = (f"| method | seeds | env steps to solve (2 evals in a row >= {solve_threshold:g}) | "
            + " | ".join(f"success @ {b:,}" for b in budgets) + " | final stage (of K) |")
    lines = [head, "|---" * (len(budgets) + 4) + "|"]
    curves = {}
    for run_dir in run_dirs:
        steps, success = runner.read_metric(run_dir / "eval.jsonl", "eval_success")
        msteps, stage = runner.read_metric(run_dir / "metrics.jsonl", "stage")
        _, stage_success = runner.read_metric(run_dir / "metrics.jsonl", "stage_success")
        num_stages = json.loads((run_dir / "config.json").read_text())["args"]["num_stages"]
        for label, ids in methods_of(run_dir).items():
            s = success[ids]
            solved = [t for t in (solve_step(steps, row, solve_threshold) for row in s) if np.isfinite(t)]
            solve = (f"{np.mean(solved):,.0f} ± {np.std(solved):,.0f}" if solved else "not solved") + \
                    f" ({len(solved)}/{len(ids)} solved)"
            cells = []
            for b in budgets:
                i = max(int(np.searchsorted(steps, b, side="right")) - 1, 0)
                cells.append(f"{s[:, i].mean():.2f} ± {s[:, i].std():.2f}")
            final_stage = stage[ids][:, -1] + 1
            lines.append(f"| {label} | {len(ids)} | {solve} | " + " | ".join(cells) +
                         f" | {final_stage.mean():.1f} ± {final_stage.std():.1f} (of {num_stages}) |")
            curves[label] = (steps, s, msteps, stage[ids] + 1, stage_success[ids])
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, (steps, s, msteps, stage, stage_success) in curves.items():
        for ax, x, y in ((axes[0], steps, s), (axes[1], msteps, stage), (axes[2], msteps, stage_success)):
            ax.plot(x, y.mean(0), label=f"{label} (n={len(y)})")
            ax.fill_between(x, y.min(0), y.max(0), alpha=0.15)
    titles = ("final-task success (deterministic eval)", "curriculum stage (1..K)", "current-stage success (EMA)")
    for ax, title in zip(axes, titles):
        ax.set(xlabel="environment steps", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    return text


def compare(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="experiments/rollin.py compare", description=(
        "ROLLIN vs the plain curriculum (beta = 0, same population) vs no curriculum (K = 1): two runs, then "
        "<out>/table.md and <out>/curves.png. Unknown flags go to both runs (e.g. --env, --total-steps)."))
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--betas", default="0,0.5", help="beta values of the curriculum run (0 = plain curriculum)")
    p.add_argument("--num-seeds", type=int, default=3)
    p.add_argument("--budgets", default="", help="env steps at which the table reports success (default: "
                                                    "about 1/3, 2/3 and all of --total-steps)")
    p.add_argument("--solve-threshold", type=float, default=0.8)
    args, passthrough = p.parse_known_args(argv)
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"error: {out} exists; choose another --out (runs are never overwritten).")
    common = ["--num-seeds", str(args.num_seeds), "--no-tensorboard", *passthrough]
    curriculum = main(common + ["--sweep.beta", args.betas, "--run-dir", str(out / "curriculum")])
    flat = main(common + ["--num-stages", "1", "--run-dir", str(out / "no_curriculum")])
    total = json.loads((curriculum / "config.json").read_text())["args"]["run"]["total_steps"]
    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else \
        [int(round(total / 3, -3)), int(round(2 * total / 3, -3)), total]
    print(make_table([curriculum, flat], out, budgets, args.solve_threshold))
    print(f"wrote {out / 'table.md'} and {out / 'curves.png'}", file=sys.stderr)


def table(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="experiments/rollin.py table", description="Table and curves of finished runs.")
    p.add_argument("runs", nargs="+", help="run directories of experiments/rollin.py")
    p.add_argument("--out", required=True)
    p.add_argument("--budgets", required=True, help="comma-separated env steps")
    p.add_argument("--solve-threshold", type=float, default=0.8)
    args = p.parse_args(argv)
    print(make_table([Path(r) for r in args.runs], Path(args.out), [int(b) for b in args.budgets.split(",")],
                     args.solve_threshold))


def main(argv: list[str] | None = None) -> Path:
    return runner.main("rollin", Args, build, argv=argv, description=__doc__, presets=PRESETS)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["compare"]:
        compare(argv[1:])
    elif argv[:1] == ["table"]:
        table(argv[1:])
    else:
        main(argv)
