"""SUPE: skills from a trajectory VAE on reward-free prior data, then online high-level RL over them, one file.

    python experiments/supe.py                                    # large point maze, 1 seed
    python experiments/supe.py --num-seeds 4
    python experiments/supe.py --num-seeds 4 --no-prior-online    # baseline: the skills, but no prior data online
    python experiments/supe.py --num-seeds 4 --skills-from runs/supe-A      # reuse A's VAE: online phase only
    python experiments/supe.py --resume runs/supe-A               # continue a killed run (either phase)

Two phases, each with its own logs and checkpoints under the run directory:
  skills/  the VAE (segments of H = 4 steps, latent 8, GRU encoder, state-conditioned prior, KL weight 0.1),
           trained once and shared by every member of the population (`--skill-steps` gradient steps);
  online/  high-level SAC/RLPD over skills u = tanh(z) (one action = H env steps, low-level actions sampled from
           the decoder), with the prior data as high-level transitions (s_0, tanh(mu_q), s_H) labelled as the
           reference does on antmaze: the "min" label r_min + beta RND(s, u) on prior rows, beta RND(s, u) added to
           online rows too (beta = 8), soft terminations from a classifier trained on online data; early actions
           are skills drawn from the VAE prior. `first_success_step` in online/metrics.jsonl counts LOW-level steps.

Task convention (the reference's antmaze one, see algos/explore.py): -1 per low-level step inside the skill's
discounted sum, 0 on the step that reaches the goal, which terminates the episode. Discounts: gamma = 0.99^(1/4)
per low-level step, so a full skill discounts by gamma^H = 0.99 (the reference's high-level discount) and a skill
cut short after k steps by gamma^k. `--hp.min-reward` is the min label of a full skill, sum_{i<H} gamma^i (0 - 1).

The prior data is the point maze's generated "diverse" dataset without its rewards and terminals (see
experiments/explore.py). `--total-steps` counts low-level env steps. CPU-sized defaults: VAE of 128x128 trained
for 6k steps; high-level agent of 4 LayerNorm critics of 128x128 (target: one random critic), 8 envs, batch 128,
4 critic steps per vectorised high-level step, initial temperature 0.05 (the reference's), no entropy backup.
`--preset paper` is the reference's scale (GPU; 4 x 20 critic steps per skill, 100k VAE steps, 300k env steps);
its flags are listed at the end of --help. Extending a run (`--resume DIR --total-steps N`) extends the ONLINE
phase: the skills are trained and kept.
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
import tyro  # noqa: E402

import envs  # noqa: E402
from algos import explore, sac, supe  # noqa: E402
from envs import datasets, maze_data  # noqa: E402
from experiments import runner  # noqa: E402

CPU_AGENT = sac.Config(num_envs=8, chunk_steps=25, batch_size=128, hidden_sizes=(128, 128), num_critics=4,
                       num_target_critics=1, critic_layernorm=True, updates_per_step=4, start_steps=500,
                       buffer_capacity=100_000, eval_episodes=8, backup_entropy=False)
# --preset NAME puts these flags before the user's own (flags given on the command line win); --help lists them.
PRESETS = {
    "cpu": runner.Preset((), "the CPU-sized defaults described above."),
    "paper": runner.Preset(
        ("--skills.hidden-sizes", "256", "256", "--skill-steps", "100000", "--agent.num-envs", "1",
         "--agent.chunk-steps", "250", "--agent.updates-per-step", "80", "--agent.num-critics", "10",
         "--agent.hidden-sizes", "256", "256", "256", "--agent.batch-size", "256", "--labeler-hidden-sizes", "256",
         "256", "256", "--total-steps", "300000"),
        "the reference's scale (GPU): one env, 80 critic steps per skill, a 256 x 2 VAE, 300k low-level steps."),
}


@dataclasses.dataclass(frozen=True)
class Args:
    """SUPE: a skill VAE on reward-free prior data, then online high-level RL with optimistic relabelling."""

    preset: Literal["cpu", "paper"] = "cpu"
    """Named set of flags (listed at the end of --help) placed before yours: cpu (the defaults), paper."""
    env: str = "pointmaze-large-jax"
    """Environment (a point maze generates its own prior data; see envs.registered())."""
    env_options: tuple[str, ...] = ()
    """Environment options as key=value. On the large maze the goal defaults to cell (7, 4) (see
    maze_data.EXPLORATION_GOALS); goal_cell=7,9 gives the layout's own G."""
    dataset: str = ""
    """Prior data (HDF5/.npz with D4RL keys; rewards/terminals are ignored). Default for point mazes:
    data/<env>-diverse-<size>.hdf5, generated on first use."""
    dataset_size: int = 1_000_000
    """Transitions in the generated point-maze prior data (when --dataset is not given)."""
    no_prior_online: bool = False
    """Baseline: use the skills but no prior data online (the high-level agent learns from its own data only,
    with the RND bonus on its rewards; the reference's "online w/ trajectory skills")."""
    skills: supe.SkillConfig = supe.SkillConfig(hidden_sizes=(128, 128))
    """The skill VAE (static)."""
    skill_hp: supe.SkillHParams = supe.SkillHParams()
    """VAE learning rate and KL weight."""
    skill_steps: int = 6000
    """VAE gradient steps (trained once, shared by the population)."""
    skills_from: str = ""
    """Skip VAE training: use the final skills/ checkpoint of this earlier run directory (same --skills)."""
    discount: float = supe.Config.discount
    """Low-level discount gamma inside a skill (0.99^(1/4)). The high level's --hp.discount must be gamma^H."""
    reward_shift: float = -1.0
    """Added to every low-level reward (-1: the antmaze convention; 0: the raw 0/1 reward)."""
    deterministic_skills: bool = False
    """Run skills with the decoder mean instead of sampled low-level actions (the reference samples)."""
    agent: sac.Config = CPU_AGENT
    """The high-level agent (static); its action is a skill."""
    labeler_hidden_sizes: tuple[int, ...] = (128, 128, 128)
    """Hidden widths of the reward model and termination classifier (on (s, u); the reference: 256 x 3)."""
    rnd_hidden_sizes: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of the RND networks (on (s, u); the reference's)."""
    hp: explore.HParams = explore.HParams(
        discount=supe.high_level_discount(supe.Config()), init_temperature=0.05, rnd_coef=8.0,
        min_reward=supe.min_skill_reward(supe.Config()))
    """Sweepable high-level hyperparameters: discount = gamma^H = 0.99 per full skill, beta = 8, alpha_0 = 0.05,
    min_reward = sum_{i<H} gamma^i (-1) (change it with --discount / --reward-shift)."""
    run: Annotated[runner.RunConfig, tyro.conf.OmitArgPrefixes] = runner.RunConfig(total_steps=60_000,
                                                                                  eval_every=5)
    """Online budget in low-level env steps, seeds, logging and checkpointing."""

    def config(self) -> supe.Config:
        return supe.Config(skills=self.skills, discount=self.discount, reward_shift=self.reward_shift,
                           sample_actions=not self.deterministic_skills, explore=explore.Config(
                               agent=self.agent, prior_label="min", online_bonus=True,
                               labeler_hidden_sizes=self.labeler_hidden_sizes,
                               rnd_hidden_sizes=self.rnd_hidden_sizes))


def load_segments(args: Args, env: envs.Env) -> dict:
    try:
        data = maze_data.load_reward_free(args.env, env, args.dataset_size, args.dataset,
                                          log=lambda m: print(m, file=sys.stderr))
        return supe.segments(data, args.skills.horizon)
    except (ValueError, datasets.DatasetError) as e:
        raise runner.UserError(f"Prior data: {e}") from None


def train_skills(args: Args, env: envs.Env, segs: dict, root: Path):
    """The VAE phase (one member, seed --seed), or the final skills of --skills-from. Returns the VAE params."""
    trainer = runner.Trainer(*supe.make_vae_pretrain(args.skills, env.observation_size, env.action_size),
                             steps_per_chunk=args.skills.updates_per_chunk,
                             shared={k: jnp.asarray(segs[k]) for k in ("obs", "action")})
    population = runner.make_population(args.skill_hp, [{}], args.run.seed, 1, flag="--skill-hp")
    if args.skills_from:
        directory = Path(args.skills_from) / "skills" / "checkpoints"
        _, carry = runner.restore_checkpoint(directory, runner.Runner(trainer, population).abstract_carry())
        print(f"Using the skills of {args.skills_from}.", file=sys.stderr)
    else:
        run = dataclasses.replace(args.run, total_steps=args.skill_steps, num_seeds=1)
        carry = runner.run_phase("skills", trainer, population, root / "skills", run,
                                 runner.num_chunks_for(run, args.skills.updates_per_chunk))
    return jax.tree.map(lambda x: x[0], carry.params)


@runner.exits_on_user_error
def main(argv: list[str] | None = None) -> Path:
    args, sweep, settings, resuming = runner.parse_args(Args, argv, __doc__, presets=PRESETS)
    try:
        env = envs.make(args.env, **maze_data.exploration_task(args.env, runner.parse_env_options(args.env_options)))
        cfg = args.config()
    except ValueError as e:
        raise runner.UserError(str(e)) from None
    steps_per_chunk = cfg.explore.agent.num_envs * cfg.explore.agent.chunk_steps * cfg.skills.horizon
    online_chunks = runner.num_chunks_for(args.run, steps_per_chunk)
    population = runner.make_population(args.hp, settings, args.run.seed, args.run.num_seeds)  # checks the values
    runner.check_hparams(args.skill_hp, {"member": 0, "seed": args.run.seed}, {}, "--skill-hp")
    segs = load_segments(args, env)
    root = runner.open_run("supe", args, sweep, population, resuming)

    vae_params = train_skills(args, env, segs, root)
    prior = None
    if not args.no_prior_online:
        high = supe.high_level_transitions(vae_params, segs, cfg.skills, env.action_size, cfg.discount)
        prior = jax.tree.map(jnp.asarray, explore.unlabeled_prior(high["obs"], high["action"], high["next_obs"]))
    del segs
    trainer = runner.Trainer(*supe.make_train(cfg, env, vae_params), steps_per_chunk=steps_per_chunk, shared=prior)
    runner.run_phase("online", trainer, population, root / "online", args.run, online_chunks)
    print(f"done: {root}/online/curves.png", file=sys.stderr)
    return root


if __name__ == "__main__":
    main()
