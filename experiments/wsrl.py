"""WSRL on a point maze (or any env with a D4RL-style dataset): Cal-QL pretraining, warmup, online SAC.

    python experiments/wsrl.py --demo                                    # small CPU budget (what `make demo` runs)
    python experiments/wsrl.py --env pointmaze-medium-jax --seed 3
    python experiments/wsrl.py --num-seeds 4 --pretrained runs/wsrl-A    # reuse A's pretraining: fine-tune only
    python experiments/wsrl.py --num-seeds 4 --warmup-steps 0 --pretrained runs/wsrl-A    # no warmup
    python experiments/wsrl.py --num-seeds 4 --retain-offline --pretrained runs/wsrl-A    # keep offline data
    python experiments/wsrl.py --num-seeds 4 --from-scratch               # no pretraining
    python experiments/wsrl.py --resume runs/wsrl-A                       # continue a killed run (either phase)

The offline dataset for a point maze is generated on first use (a noisy waypoint controller, D4RL
antmaze-"diverse"-like; see envs/maze_data.py) and cached under data/; other envs need --dataset PATH (HDF5 or
.npz with D4RL keys). Outputs: <run>/pretrain/ and <run>/online/, each with metrics.jsonl, eval.jsonl, tb/,
checkpoints/ and curves.png. The online metrics' `q_mean` shows the Q-values around the switch to online.

`--preset paper` (GPU scale; its flags are listed at the end of --help): the reference's agent (algos/wsrl.py's
PAPER_AGENT: 10 LayerNorm critics, one env, 4 critic steps of 256 per transition) with 4 x 256 networks, 1M
Cal-QL steps on a 1M-transition dataset of the large maze, a 5000-transition warmup and 1M online steps.
Extending a run (`--resume DIR --total-steps N`) extends the ONLINE phase: pretraining is finished and kept.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

import envs  # noqa: E402
from algos import calql, sac, wsrl  # noqa: E402
from envs import datasets, maze_data  # noqa: E402
from experiments import runner  # noqa: E402

# CPU-sized defaults: 4 critics of 128x128, 4 CQL actions, batch 128, 4 envs with 4 critic steps per vectorised
# step = UTD 1 per transition (the paper: 4). At UTD 0.25 (8 envs, 2 steps) online learning was too slow to beat
# the pretrained policy within 20k steps on the medium maze; at UTD 1 it does within 10k (benchmarks/RESULTS.md).
CPU_AGENT = dataclasses.replace(wsrl.PAPER_AGENT, num_critics=4, hidden_sizes=(128, 128), batch_size=128,
                                num_envs=4, chunk_steps=50, buffer_capacity=200_000, updates_per_step=4,
                                eval_episodes=16)

# --preset NAME puts these flags before the user's own (flags given on the command line win); --help lists them.
PRESETS = {
    "cpu": runner.Preset((), "the CPU-sized defaults shown below (`--demo` is smaller still)."),
    "paper": runner.Preset(
        tuple(runner.config_flags("agent", dataclasses.replace(wsrl.PAPER_AGENT, hidden_sizes=(256,) * 4,
                                                               buffer_capacity=1_000_000, chunk_steps=1000),
                                  CPU_AGENT))
        + ("--cql.num-cql-actions", "10", "--env", "pointmaze-large-jax", "--dataset-size", "1000000",
           "--pretrain-steps", "1000000", "--warmup-steps", "5000", "--total-steps", "1000000", "--eval-every", "10"),
        "the reference's WSRL at GPU scale: PAPER_AGENT with 4 x 256 networks, 1M Cal-QL steps, 1M online steps."),
}


@dataclasses.dataclass(frozen=True)
class Args:
    """WSRL: offline Cal-QL pretraining, a warmup of pretrained-policy rollouts, then online SAC with no offline
    data. --warmup-steps 0, --retain-offline and --from-scratch give the paper's comparisons."""

    preset: Literal["cpu", "paper"] = "cpu"
    """Named set of flags (listed at the end of --help) placed before yours: cpu (the defaults), paper."""
    env: str = "pointmaze-medium-jax"
    """Environment name (see envs.registered())."""
    env_options: tuple[str, ...] = ()
    """Environment options as key=value (e.g. max_steps=300)."""
    dataset: str = ""
    """Offline dataset (HDF5/.npz, D4RL keys). Default for point mazes: data/<env>-diverse-<size>.hdf5, made on
    first use."""
    dataset_size: int = 200_000
    """Transitions in the generated point-maze dataset (when --dataset is not given)."""
    pretrain_steps: int = 20_000
    """Cal-QL gradient steps before fine-tuning (paper: 1,000,000)."""
    pretrained: str = ""
    """Skip pretraining and start from the final pretraining checkpoint of this earlier run directory (same
    population size and agent shapes)."""
    demo: bool = False
    """A short CPU demo (~2-3 minutes): random start cells, 2k pretraining steps, 12k online steps, evaluation
    every 5 chunks, and a closing summary of success before and after fine-tuning."""
    warmup_steps: int = 2000
    """Online transitions collected by the pretrained policy before the first update (0 = the no-warmup
    baseline; paper: 5000). A multiple of --agent.num-envs."""
    retain_offline: bool = False
    """Baseline: keep the offline data; every online minibatch is half offline, half online (RLPD-style)."""
    from_scratch: bool = False
    """Baseline: no pretraining (the warmup transitions then use uniform-random actions)."""
    agent: sac.Config = CPU_AGENT
    """The SAC agent, shared by both phases (the handoff needs identical networks)."""
    cql: calql.Config = calql.Config(num_cql_actions=4, updates_per_chunk=250, lagrange=True)
    """Cal-QL's conservative term (pretraining only)."""
    hp: wsrl.HParams = wsrl.HParams(reward_scale=10.0, reward_bias=-5.0, actor_lr=1e-4, temp_lr=1e-4,
                                    init_temperature=0.1)
    """Sweepable hyperparameters of both phases (Cal-QL's AntMaze reward transform: 10 r - 5). The reference
    starts the temperature at 1 and pretrains for 1M steps, by when it has fallen far; after our few thousand
    pretraining steps at temp_lr 1e-4 it would still be ~0.8 at the handoff, so it starts at 0.1 here."""
    run: Annotated[runner.RunConfig, tyro.conf.OmitArgPrefixes] = runner.RunConfig(total_steps=40_000,
                                                                                  eval_every=5)
    """Online budget (--total-steps), seeds, logging and checkpointing."""


def demo_args(args: Args) -> Args:
    """`make demo`: the medium maze from random start cells (so success is a fraction of start cells, not all or
    nothing), a short pretraining that leaves the policy at roughly half, then 12k online steps."""
    return dataclasses.replace(args, pretrain_steps=2000, dataset_size=100_000,
                               env_options=args.env_options or ("task=random_start",),
                               run=dataclasses.replace(args.run, total_steps=12_000, eval_every=5))


def load_offline_data(args: Args, env: envs.Env, discount: float) -> dict:
    if not args.dataset and args.env.startswith("pointmaze") and (
            env.unwrapped.reward_type != "sparse" or env.unwrapped.task not in ("fixed", "random_start")
            or env.unwrapped.goal_cell is not None):
        raise runner.UserError("The generated point-maze dataset is labelled with the sparse reward of the "
                               "layout's G goal (task fixed or random_start); drop reward_type/goal_cell and "
                               "task=random from --env-options, or pass --dataset.")
    try:
        path = maze_data.cached_dataset_path(args.env, args.dataset_size, args.dataset,
                                             log=lambda m: print(m, file=sys.stderr),
                                             layout=getattr(env.unwrapped, "layout", None))
    except ValueError as e:
        raise runner.UserError(f"--dataset is required here: {e}") from None
    try:
        data = datasets.load_dataset(path, env.observation_size, env.action_size)
    except datasets.DatasetError as e:
        raise runner.UserError(str(e)) from None
    return jax.tree.map(jnp.asarray, wsrl.offline_transitions(data, discount))


def restore_pretrained(directory: str, trainer: runner.Trainer, population: runner.Population,
                       health: runner.Health | None = None):
    """The final pretraining carry of an earlier run; `health` gets that run's diverged members."""
    path = Path(directory) / "pretrain" / "checkpoints"
    r = runner.Runner(trainer, population)
    step, carry = runner.restore_checkpoint(path, r.abstract_carry())
    if health is not None:
        vars(health).update(vars(runner.restore_health(path, step, population.size)))
    print(f"Using the pretraining of {directory} (chunk {step}).", file=sys.stderr)
    return carry


@runner.exits_on_user_error
def main(argv: list[str] | None = None) -> Path:
    args, sweep, settings, resuming = runner.parse_args(Args, argv, __doc__, presets=PRESETS)
    if args.demo and not resuming:
        args = demo_args(args)
    if any("discount" in s for s in settings):
        raise runner.UserError("--sweep.discount is not supported by WSRL: the Monte-Carlo returns of the "
                               "offline data (Cal-QL's floor) are computed once with --hp.discount.")
    try:
        env = envs.make(args.env, **runner.parse_env_options(args.env_options))
        cfg = wsrl.Config(agent=args.agent, cql=args.cql, warmup_steps=args.warmup_steps,
                          retain_offline=args.retain_offline, from_scratch=args.from_scratch)
        pretrain, online, handoff = wsrl.make(cfg, env)
    except ValueError as e:
        raise runner.UserError(str(e)) from None
    population = runner.make_population(args.hp, settings, args.run.seed, args.run.num_seeds)
    online_chunks = runner.num_chunks_for(args.run, cfg.agent.num_envs * cfg.agent.chunk_steps)
    needs_data = not cfg.from_scratch or cfg.retain_offline
    data = load_offline_data(args, env, float(args.hp.discount)) if needs_data else None
    root = runner.open_run("wsrl", args, sweep, population, resuming)

    pretrained = None
    health = runner.Health.healthy(population.size)  # a member that diverges in pretraining stays frozen online
    if not cfg.from_scratch:
        pre_trainer = runner.Trainer(*pretrain, steps_per_chunk=cfg.cql.updates_per_chunk, shared=data)
        if args.pretrained:
            pretrained = restore_pretrained(args.pretrained, pre_trainer, population, health)
        else:
            pre_run = dataclasses.replace(args.run, total_steps=args.pretrain_steps)
            pre_chunks = runner.num_chunks_for(pre_run, cfg.cql.updates_per_chunk)
            pretrained = runner.run_phase("pretrain", pre_trainer, population, root / "pretrain", pre_run,
                                          pre_chunks, health=health)

    prior = {k: data[k] for k in wsrl.ONLINE_KEYS} if cfg.retain_offline else None
    online_trainer = runner.Trainer(*online, steps_per_chunk=cfg.agent.num_envs * cfg.agent.chunk_steps,
                                    shared=prior)
    initial = None
    if pretrained is not None:
        initial = lambda r: jax.jit(jax.vmap(handoff))(r.init_carry(), pretrained)
    runner.run_phase("online", online_trainer, population, root / "online", args.run, online_chunks, initial,
                     health=health)
    print(summary(root, args, cfg), file=sys.stderr)
    return root


def summary(root: Path, args: Args, cfg: wsrl.Config) -> str:
    """What ran and what it achieved, in words: success of the deterministic policy before and after fine-tuning.

    "Before" is the pretrained policy (the pretraining phase's final evaluation, or the first online evaluation
    when pretraining was reused or skipped); "after" is the mean of the last three online evaluations, so one
    unlucky evaluation neither makes nor breaks the verdict. Members that diverged are left out."""
    _, online = runner.read_metric(root / "online" / "eval.jsonl", "eval_success")
    pre_path = root / "pretrain" / "eval.jsonl"
    before = runner.read_metric(pre_path, "eval_success")[1][:, -1] if pre_path.exists() else online[:, 0]
    dead = set(runner.diverged_members(root / "online" / "eval.jsonl")) | set(runner.diverged_members(pre_path))
    keep = [i for i in range(len(online)) if i not in dead]
    before, after = before[keep], np.nanmean(online[keep][:, -3:], axis=1)
    method = ("from scratch (no pretraining)" if cfg.from_scratch else
              f"Cal-QL pretraining ({args.pretrain_steps} steps)" if not args.pretrained else
              f"the pretraining of {args.pretrained}")
    data = "keeping the offline data (half of every minibatch)" if cfg.retain_offline else "with NO offline data"
    lines = [f"WSRL on {args.env}: {method}, then {args.run.total_steps} online env steps {data} "
             f"(warmup {cfg.warmup_steps} transitions, UTD {cfg.agent.updates_per_step / cfg.agent.num_envs:g} "
             f"per transition).",
             f"Goal-reaching success of the deterministic policy ({cfg.agent.eval_episodes} episodes, mean over "
             f"{len(after)} seed(s)): {np.mean(before):.0%} before fine-tuning, {np.mean(after):.0%} after "
             f"(mean of the last 3 evaluations).",
             f"Curves: {root / 'online' / 'curves.png'}"]
    if dead:
        lines.insert(2, f"{len(dead)} member(s) diverged and are left out: {sorted(dead)} (listed above).")
    if np.mean(after) >= np.mean(before) + 0.25:
        lines.append("WSRL is working: fine-tuning without the offline data improved the pretrained policy."
                     if not (cfg.retain_offline or cfg.from_scratch) else
                     "Online training clearly improved on where it started.")
    elif np.mean(after) >= 0.9:
        lines.append("The policy solves the task after fine-tuning (it already did, or nearly, before).")
    else:
        lines.append("Fine-tuning did NOT clearly improve on the pretrained policy in this run; see the curves "
                     "(benchmarks/RESULTS.md reports what to expect over many seeds).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
