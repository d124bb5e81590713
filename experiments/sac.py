"""SAC / RLPD online training on any registered environment, as one file.

    python experiments/sac.py --env pointmaze-umaze-jax --env-options reward_type=dense --total-steps 50000
    python experiments/sac.py --sweep.actor-lr 1e-4,3e-4,1e-3 --num-seeds 4      # 12 runs, ONE compiled program
    python experiments/sac.py --preset paper                                     # RLPD's agent, GPU scale
    python experiments/sac.py --resume runs/sac-...                               # continue a killed run

Static settings (`--agent.*`, `--env`, budgets) change the compiled program; `--hp.*` are sweepable
hyperparameters and `--sweep.<hparam> v1,v2,...` runs all their values side by side. Outputs under the run
directory: config.json, metrics.jsonl (per chunk), eval.jsonl, tb/ (TensorBoard), checkpoints/, curves.png.
This file is the template every other experiment copies: Args, build(), main().
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Annotated, Literal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tyro  # noqa: E402

import envs  # noqa: E402
from algos import sac  # noqa: E402
from experiments import runner  # noqa: E402


# --preset NAME puts these flags before the user's own (flags given on the command line win); --help lists them.
PRESETS = {
    "cpu": runner.Preset((), "the defaults: plain SAC, 16 envs x 50 steps per chunk, one critic step per vectorised "
                             "step."),
    "paper": runner.Preset(
        ("--agent.num-envs", "1", "--agent.chunk-steps", "1000", "--agent.num-critics", "10",
         "--agent.num-target-critics", "2", "--agent.critic-layernorm", "--agent.updates-per-step", "20",
         "--agent.buffer-capacity", "1000000", "--agent.start-steps", "5000", "--total-steps", "1000000",
         "--eval-every", "10"),
        "RLPD's agent (Ball et al. 2023), GPU scale: one env, UTD 20, 10 LayerNorm critics with the target a min "
        "over 2 random ones, 1M steps."),
}


@dataclasses.dataclass(frozen=True)
class Args:
    """SAC / RLPD online training. Every flag below is documented; --sweep.<hparam> takes comma-separated values."""

    preset: Literal["cpu", "paper"] = "cpu"
    """Named set of flags (listed at the end of --help) placed before yours: cpu (the defaults), paper."""
    env: str = "pointmaze-umaze-jax"
    """Environment name: one of envs.registered() (pointmaze-{umaze,medium,large}[-jax], ant, halfcheetah, ...)."""
    env_options: tuple[str, ...] = ()
    """Environment options as key=value, e.g. reward_type=dense task=random max_steps=200."""
    agent: sac.Config = sac.Config()
    """Static agent settings: changing any of them recompiles."""
    hp: sac.HParams = sac.HParams()
    """Sweepable hyperparameters (vmapped over the population)."""
    run: Annotated[runner.RunConfig, tyro.conf.OmitArgPrefixes] = runner.RunConfig()
    """Budgets, seeds, logging and checkpointing."""


def build(args: Args) -> runner.Trainer:
    env = envs.make(args.env, **runner.parse_env_options(args.env_options))
    init_carry, train_chunk, evaluate = sac.make_train(args.agent, env)
    return runner.Trainer(init_carry, train_chunk, evaluate, args.agent.num_envs * args.agent.chunk_steps)


if __name__ == "__main__":
    runner.main("sac", Args, build, description=__doc__, presets=PRESETS)
