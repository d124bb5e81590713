"""Behaviour cloning from multimodal maze demonstrations, with an AdaCat or a Gaussian action head, as one file.

    python experiments/bc.py                                        # AdaCat head, the two-forks maze, 1 seed
    python experiments/bc.py --model.head gaussian --num-seeds 8    # the baseline, 8 seeds in one program
    python experiments/bc.py --tie-break step --sweep.smoothing 1e-4,1e-3,1e-2
    python experiments/bc.py --maze large --model.head mog --model.num-bins 4
    python benchmarks/bc_compare.py                                 # AdaCat vs Gaussian, 8 seeds each: table, PNG

The demonstrations (`envs.maze_data.goal_demonstrations`) drive from S to G of the evaluation task along one of
the shortest routes. `--maze two-forks` (the default) is built so that the routes matter:

    #######
    #OOGOO#     G above a block: around it on the left or on the right, equally short
    #O###O#
    #OOOOO#     fork 2, at (3, 3): arrived at from below, going up, the block straight ahead
    ###O###
    #OOOOO#
    #O###O#
    #OOSOO#     fork 1, at S: left or right around the lower block
    #######

At each fork half the demonstrations go left and half go right (`--tie-break episode`: a route per episode,
consistently; `step`: a fresh coin at every step in a fork cell, so the actions there are multimodal whatever the
state). The average of "left" and "right" is "neither": at S it stalls, at fork 2 it drives into the block. The
policy sees the env's observation (position, velocity, goal), so with per-episode routes the modes separate one
step after a fork (the velocity tells them apart); with per-step coins they do not. `--maze` also takes a
registered layout (umaze, medium, large, giant) or a layout string (rows separated by newlines or by \\n).

`--total-steps` counts gradient steps. Evaluation (every `--eval-every` chunks and at the end): success, return
and episode length of `--model.eval-episodes` episodes from S with SAMPLED actions (`eval_success`: the policy
the likelihood defines), the same with the greedy per-dimension decode (`eval_success_greedy`: mode of each
conditional for AdaCat, the mean for the Gaussian; see algos/bc.py), and the held-out NLL per action dimension
(`test_nll`). The closing lines say per member how often each policy reached G, and how multimodal the
demonstrations are. Outputs as for every experiment: config.json, metrics.jsonl, eval.jsonl, tb/, checkpoints/,
curves.png (`--resume` continues a killed run).
"""

from __future__ import annotations

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
from algos import bc  # noqa: E402
from envs.pointmaze import LAYOUTS  # noqa: E402
from experiments import runner  # noqa: E402

MAZES = {
    "two-forks": "\n".join(("#######", "#OOGOO#", "#O###O#", "#OOOOO#", "###O###", "#OOOOO#", "#O###O#",
                            "#OOSOO#", "#######")),
    "fork": "\n".join(("#######", "#OOGOO#", "#O###O#", "#O###O#", "#OOSOO#", "#######")),
}
"""Layouts made for this experiment (the module docstring draws two-forks; fork is its lower half, one fork)."""


@dataclasses.dataclass(frozen=True)
class Args:
    """Behaviour cloning from maze demonstrations. Every flag below is documented; --sweep.<hparam> takes comma
    lists."""

    maze: str = "two-forks"
    """The maze: two-forks or fork (this file's layouts), a registered layout (umaze, medium, large, giant), or a
    layout string (# wall, O or . free, S start, G goal; rows separated by newlines or \\n)."""
    num_demos: int = 300
    """Demonstration episodes to generate (the last 10% are held out for test_nll)."""
    demo_seed: int = 0
    """Seed of the demonstrations (the population's seeds vary the policy only)."""
    tie_break: Literal["episode", "step", "first"] = "episode"
    """Where routes are equally short: a random route per episode, a fresh coin every step, or always the
    first move in (up, down, left, right) order (one route: unimodal demonstrations)."""
    action_noise: float = 0.2
    """Demonstrator's Gaussian action noise (before clipping to [-1, 1])."""
    random_start: bool = False
    """Start demonstrations anywhere in the maze (evaluation always starts at S)."""
    max_steps: int = 0
    """Episode length of demonstrations and evaluation (0: the maze's default)."""
    model: bc.Config = bc.Config(hidden_sizes=(128, 128))
    """Static policy settings: changing any of them recompiles."""
    hp: bc.HParams = bc.HParams()
    """Sweepable hyperparameters (vmapped over the population)."""
    run: Annotated[runner.RunConfig, tyro.conf.OmitArgPrefixes] = runner.RunConfig(total_steps=3000, eval_every=4)
    """Budgets (gradient steps), seeds, logging and checkpointing."""

    @property
    def env(self) -> str:  # names the default run directory, runs/bc-<maze>-<time>
        return self.maze if self.maze in MAZES or self.maze in LAYOUTS else "custom"


def layout(args: Args) -> str:
    return MAZES.get(args.maze, args.maze)


def make_env(args: Args) -> envs.Env:
    """The evaluation env: the maze's fixed task (start at S, goal G)."""
    return envs.make("pointmaze-jax", layout=layout(args), task="fixed", max_steps=args.max_steps or None)


def make_demos(args: Args) -> dict:
    from envs import maze_data
    if args.num_demos < 2:
        raise runner.UserError(f"--num-demos {args.num_demos}: need at least 2 episodes (one is held out).")
    return maze_data.goal_demonstrations(layout(args), args.num_demos, seed=args.demo_seed,
                                         action_noise=args.action_noise, tie_break=args.tie_break,
                                         random_start=args.random_start, max_steps=args.max_steps or None)


def action_conflict(demos: dict, k: int = 32, threshold: float = 0.5, num_queries: int = 2000, seed: int = 0) -> float:
    """How multimodal the demonstrations are: the fraction of demonstrated states whose k nearest demonstrated
    states (position and velocity, velocity / 5) took actions that cancel when averaged, |mean a| < threshold ·
    mean |a|. Unimodal, noisy demonstrations score near 0; a fork split 50/50 between opposite moves scores ~1."""
    x = np.asarray(demos["observations"][:, :4]) / np.array([1.0, 1.0, 5.0, 5.0])
    a = np.asarray(demos["actions"])
    q = np.random.default_rng(seed).choice(len(x), min(num_queries, len(x)), replace=False)
    near = np.argpartition(((x[q, None] - x[None]) ** 2).sum(-1), min(k, len(x) - 1), axis=1)[:, :k]
    resultant = np.linalg.norm(a[near].mean(1), axis=-1) / np.maximum(np.linalg.norm(a[near], axis=-1).mean(1), 1e-6)
    return float(np.mean(resultant < threshold))


def build(args: Args) -> runner.Trainer:
    bc.check_config(args.model)  # before generating anything: a bad head fails in a second
    env = make_env(args)  # ValueError (bad layout) -> runner's UserError
    data = bc.prepare(make_demos(args))
    init_carry, train_chunk, evaluate = bc.make_train(args.model, data, env)
    return runner.Trainer(init_carry, train_chunk, evaluate, args.model.updates_per_chunk,
                          shared=bc.shared_data(data))


def summary(root: Path, args: Args) -> str:
    """The closing lines: per member, how often the sampled and the greedy policy reached G, in words."""
    rows = [json.loads(line) for line in (root / "eval.jsonl").read_text().splitlines()]
    last = max(r["chunk"] for r in rows)
    final = sorted((r for r in rows if r["chunk"] == last), key=lambda r: r["member"])
    demos = make_demos(args)
    episodes = len(np.unique(demos["episode_ids"]))
    head = args.model.head
    lines = [f"Behaviour cloning, {head} head ({args.model.hidden_sizes} MADE trunk), {args.maze} maze, "
             f"{episodes} successful demonstrations of {args.num_demos} ({len(demos['actions'])} transitions, "
             f"routes tie-broken per {args.tie_break}; {100 * action_conflict(demos):.1f}% of the demonstrated "
             f"states have neighbours whose actions cancel), after {final[0]['env_steps']} gradient steps:"]
    hp_names = {f.name for f in dataclasses.fields(args.hp)}
    for r in final:
        setting = "".join(f", {k}={v:g}" for k, v in r.items() if k in hp_names)
        lines.append(f"  member {r['member']} (seed {r['seed']}{setting}): sampled actions reach G in "
                     f"{100 * r['eval_success']:.0f}% of {args.model.eval_episodes} episodes (mean length "
                     f"{r['eval_length']:.0f} steps), greedy actions in {100 * r['eval_success_greedy']:.0f}% "
                     f"({r['eval_length_greedy']:.0f} steps); test NLL {r['test_nll']:.3f} nats/dim")
    success = np.array([r["eval_success"] for r in final])
    greedy = np.array([r["eval_success_greedy"] for r in final])
    lines.append(f"{head}: mean success {100 * success.mean():.1f}% with sampled actions, {100 * greedy.mean():.1f}% "
                 f"greedy, over {len(final)} member(s). Compare heads with benchmarks/bc_compare.py.")
    return "\n".join(lines)


@runner.exits_on_user_error
def main(argv: list[str] | None = None) -> Path:
    root = runner.main("bc", Args, build, argv=argv, description=__doc__)
    args, _, _ = runner.load_run_args(root, Args)
    print(summary(root, args))
    return root


if __name__ == "__main__":
    main()
