"""ExPLORe (optimistic relabelling of reward-free prior data) and its baselines on a sparse-reward maze, one file.

    python experiments/explore.py                                   # ExPLORe on the large point maze, 1 seed
    python experiments/explore.py --num-seeds 4 --method naive      # prior data with zero reward
    python experiments/explore.py --num-seeds 4 --method online-rnd # no prior data, RND bonus on online rewards
    python experiments/explore.py --num-seeds 4 --method online     # plain online RLPD/SAC
    python experiments/explore.py --sweep.rnd-coef 0.5,1,2 --num-seeds 4     # 12 runs, ONE compiled program
    python experiments/explore.py --resume runs/explore-...         # continue a killed run

Methods (`--method`): `explore` labels the prior half of every minibatch with r̂(s, a) + beta RND(s, a) (reward
model and termination classifier trained on online data only; soft terminations); `explore-min` with
r_min + beta RND; `naive` keeps the prior data with reward 0, never terminal; `naive-rm` labels it with r̂ and no
bonus (the reference's "naive"); `online-rnd` and `online` use no prior data (with/without the bonus on online
rewards). The prior data is the point maze's generated "diverse" dataset (a noisy waypoint controller driving to
RANDOM goal cells; made on first use under data/) with its rewards and terminals dropped: only (s, a, s').

Task convention (the reference's antmaze one; see algos/explore.py): `--hp.reward-bias -1` makes every step
pay -1 and the goal step 0, and reaching the goal terminates the episode, so ending at the goal is the best
outcome while the positive bonus keeps paying elsewhere (`--hp.reward-bias 0` restores the raw 0/1 reward).

Outputs under the run directory: config.json, metrics.jsonl (per chunk: losses, `prior_reward`, `online_reward`,
`prior_terminated`, RND bonus on prior and online rows `rnd_bonus_prior`/`rnd_bonus_online`,
`first_success_step` = env steps until the goal was first reached by the online agent, -1 before), eval.jsonl,
tb/, checkpoints/, curves.png. `benchmarks/explore_compare.py` runs every method (and SUPE) and writes the
comparison table.

CPU-sized defaults: 8 envs, 4 LayerNorm critics of 128x128 with ONE random target critic (the reference's
num_min_qs=1), batch 128, 4 critic steps per vectorised step (UTD 0.5 per transition) and 4 reward-model steps,
RND of the reference's size (3 x 256, 256 features, mean), reward model 3 x 128, no entropy term in the critic's
backup and an initial temperature of 0.1 (with alpha = 1 the entropy bonus, ~1.4 per step, swamps a sparse
reward and the RND bonus for the first tens of thousands of steps).
`--preset paper` is the reference's scale (GPU; UTD 20, 20 reward-model steps per env step, 10 critics of 256 x 3,
300k steps); its flags are listed at the end of --help.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Annotated, Literal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import tyro  # noqa: E402

import envs  # noqa: E402
from algos import explore, sac  # noqa: E402
from envs import datasets, maze_data  # noqa: E402
from experiments import runner  # noqa: E402

METHODS = {  # method -> (prior_label, online_bonus, uses prior data)
    "explore": ("optimistic", False, True),
    "explore-min": ("min", False, True),
    "naive": ("zero", False, True),
    "naive-rm": ("predicted", False, True),
    "online-rnd": ("zero", True, False),
    "online": ("zero", False, False),
}
CPU_AGENT = sac.Config(num_envs=8, chunk_steps=50, batch_size=128, hidden_sizes=(128, 128), num_critics=4,
                       num_target_critics=1, critic_layernorm=True, updates_per_step=4, start_steps=2000,
                       buffer_capacity=200_000, eval_episodes=8, backup_entropy=False)
# --preset NAME puts these flags before the user's own (flags given on the command line win); --help lists them.
PRESETS = {
    "cpu": runner.Preset((), "the CPU-sized defaults described above."),
    "paper": runner.Preset(
        ("--agent.num-envs", "1", "--agent.chunk-steps", "1000", "--agent.updates-per-step", "20",
         "--agent.num-critics", "10", "--agent.hidden-sizes", "256", "256", "256", "--agent.batch-size", "256",
         "--labeler-hidden-sizes", "256", "256", "256", "--agent.start-steps", "5000", "--hp.init-temperature", "1",
         "--total-steps", "300000"),
        "the reference's scale (GPU): one env, UTD 20 and 20 reward-model steps per env step, 300k steps."),
}


@dataclasses.dataclass(frozen=True)
class Args:
    """ExPLORe and its baselines: reward-free prior data labelled optimistically, trained RLPD-style."""

    preset: Literal["cpu", "paper"] = "cpu"
    """Named set of flags (listed at the end of --help) placed before yours: cpu (the defaults), paper."""
    env: str = "pointmaze-large-jax"
    """Environment (a point maze generates its own prior data; see envs.registered())."""
    env_options: tuple[str, ...] = ()
    """Environment options as key=value. On the large maze the goal defaults to cell (7, 4) (see
    maze_data.EXPLORATION_GOALS); goal_cell=7,9 gives the layout's own G."""
    method: Literal["explore", "explore-min", "naive", "naive-rm", "online-rnd", "online"] = "explore"
    """explore | explore-min | naive (prior data, reward 0, never terminal) | naive-rm (prior labelled by the
    reward model, no bonus: the reference's naive) | online-rnd | online (no prior data)."""
    dataset: str = ""
    """Prior data (HDF5/.npz with D4RL keys; rewards/terminals are ignored). Default for point mazes:
    data/<env>-diverse-<size>.hdf5, generated on first use."""
    dataset_size: int = 1_000_000
    """Transitions in the generated point-maze prior data (when --dataset is not given)."""
    agent: sac.Config = CPU_AGENT
    """The RLPD agent (static)."""
    labeler_hidden_sizes: tuple[int, ...] = (128, 128, 128)
    """Hidden widths of the reward model and termination classifier (the reference: 256 x 3)."""
    rnd_hidden_sizes: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of both RND networks (the reference's)."""
    rnd_features: int = 256
    """Output width of the RND networks; the bonus is the mean over them (the reference's)."""
    labeler_updates_per_step: int | None = None
    """Reward-model steps per vectorised env step (one per critic minibatch; default: all G of them)."""
    hp: explore.HParams = explore.HParams(init_temperature=0.1, reward_bias=-1.0)
    """Sweepable hyperparameters (rnd_coef = beta, min_reward, labeler_lr, and SAC's). reward_bias = -1 is the
    antmaze convention: -1 per step, 0 on the (terminal) goal step."""
    run: Annotated[runner.RunConfig, tyro.conf.OmitArgPrefixes] = runner.RunConfig(total_steps=60_000,
                                                                                  eval_every=5)
    """Budgets, seeds, logging and checkpointing."""

    def config(self) -> explore.Config:
        label, bonus, _ = METHODS[self.method]
        return explore.Config(agent=self.agent, prior_label=label, online_bonus=bonus,
                              labeler_hidden_sizes=self.labeler_hidden_sizes, rnd_hidden_sizes=self.rnd_hidden_sizes,
                              rnd_features=self.rnd_features, labeler_updates_per_step=self.labeler_updates_per_step)


def load_prior(env_name: str, env: envs.Env, dataset: str, dataset_size: int) -> dict:
    """The prior data as reward-free (s, a, s') in the replay layout (jnp arrays, shared by the population)."""
    try:
        data = maze_data.load_reward_free(env_name, env, dataset_size, dataset,
                                          log=lambda m: print(m, file=sys.stderr))
    except (ValueError, datasets.DatasetError) as e:
        raise runner.UserError(f"Prior data: {e}") from None
    prior = explore.unlabeled_prior(data["observations"], data["actions"], data["next_observations"])
    return jax.tree.map(jnp.asarray, prior)


def build(args: Args) -> runner.Trainer:
    env = envs.make(args.env, **maze_data.exploration_task(args.env, runner.parse_env_options(args.env_options)))
    init_carry, train_chunk, evaluate = explore.make_train(args.config(), env)
    prior = load_prior(args.env, env, args.dataset, args.dataset_size) if METHODS[args.method][2] else None
    return runner.Trainer(init_carry, train_chunk, evaluate, args.agent.num_envs * args.agent.chunk_steps,
                          shared=prior)


if __name__ == "__main__":
    runner.main("explore", Args, build, description=__doc__, presets=PRESETS)
