"""HATO in simulation: scripted demonstrations on the touch-sensing hand, a diffusion policy, success in MJX.

    python experiments/hato.py                                   # 100 demos, touch on, 1 seed
    python experiments/hato.py --num-seeds 8 --policy.no-use-touch   # the no-touch ablation, 8 seeds
    python experiments/hato.py --num-demos 25 --policy.binarize-touch
    python experiments/hato.py --resume runs/hato-...            # continue a killed run

Collect: `--num-demos` episodes of `envs.hands.scripted_expert` on `hand-lift` (one jitted, vmapped rollout),
written one `.npz` per episode with metadata under `--demo-dir` (default `data/hato-lift-<N>-seed<S>/`); an
existing directory is reused (validated by `envs.episodes.load_episodes`, failed demonstrations filtered out).
Train: `algos/diffusion_policy.py` on the successful demos; `--total-steps` counts gradient steps. Evaluate:
`--eval-episodes` fresh episodes per member in the MJX env under receding-horizon control with the EMA weights
(`success`: the fraction that lifted the ball). Outputs as for every experiment: config.json, metrics.jsonl,
eval.jsonl, tb/, checkpoints/, curves.png.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

from algos import diffusion_policy as dp  # noqa: E402
from envs import episodes, hands  # noqa: E402
from experiments import runner  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Args:
    """Diffusion policy on scripted hand demonstrations. --sweep.<hparam> takes comma lists."""

    num_demos: int = 100
    """Demonstrations to collect (failed ones are recorded but filtered out by the loader)."""
    demo_seed: int = 0
    """Seed of the demonstrations (the population's seeds vary the policy only)."""
    demo_dir: str = ""
    """Directory of episode files (default data/hato-lift-<num_demos>-seed<demo_seed>)."""
    max_demos: int = 0
    """Train on the first this many successful demos (0 = all): the dataset-size study."""
    expert_noise: float = 0.03
    """Gaussian action noise of the scripted expert."""
    max_steps: int = 60
    """Control steps per episode (demos and evaluation; 25 Hz)."""
    eval_episodes: int = 16
    """Evaluation episodes per member."""
    policy: dp.Config = dp.Config()
    """Static policy settings: changing any of them recompiles."""
    hp: dp.HParams = dp.HParams()
    """Sweepable hyperparameters (vmapped over the population)."""
    run: Annotated[runner.RunConfig, tyro.conf.OmitArgPrefixes] = runner.RunConfig(total_steps=2000, eval_every=5)
    """Budgets (gradient steps), seeds, logging and checkpointing."""


def expert_rollouts(env: hands.HandLift, num: int, key: jax.Array, max_steps: int, noise: float):
    """Observations (num, T, D), actions, rewards, success and length of `num` scripted episodes (one program)."""

    def one(key):
        state = env.reset(key)

        def body(carry, k):
            state, expert, done, length = carry
            action, expert = hands.scripted_expert(env, state, expert, k, noise=noise)
            nxt = env.step(state, action)
            out = (state.obs, action, nxt.reward, done)
            length = length + (~done).astype(jnp.int32)
            return (nxt, expert, done | nxt.terminated, length), out

        init = (state, hands.expert_init(), jnp.zeros((), bool), jnp.zeros((), jnp.int32))
        (_, _, done, length), (obs, act, rew, _) = jax.lax.scan(body, init, jax.random.split(state.rng, max_steps))
        return obs, act, rew, done.astype(jnp.float32), length

    return jax.jit(jax.vmap(one))(jax.random.split(key, num))


def collect(env: hands.HandLift, directory: Path, num: int, seed: int, max_steps: int, noise: float,
            log=print) -> Path:
    """Write `num` scripted episodes as one file each (episode_00000.npz, ...) with their metadata."""
    obs, act, rew, success, length = map(np.asarray, expert_rollouts(env, num, jax.random.PRNGKey(seed), max_steps,
                                                                     noise))
    for i in range(num):
        t = int(length[i])
        meta = {"task": "hand-lift", "success": bool(success[i]), "seed": int(seed), "episode": i,
                "control_rate": env.control_rate, "sensor_layout": list(hands.TOUCH_LAYOUT),
                "obs_layout": {k: list(v) for k, v in hands.OBS_LAYOUT.items()}, "length": t,
                "expert_noise": noise, "max_steps": max_steps, "source": "envs.hands.scripted_expert"}
        episodes.save_episode(directory / f"episode_{i:05d}.npz", obs[i, :t], act[i, :t], rew[i, :t], meta)
    log(f"collected {num} demonstrations in {directory}: {success.mean():.0%} successful, mean length "
        f"{length.mean():.1f} steps")
    return directory


def demo_dir(args: Args) -> Path:
    return Path(args.demo_dir or f"data/hato-lift-{args.num_demos}-seed{args.demo_seed}")


def build(args: Args) -> runner.Trainer:
    env = hands.HandLift()
    directory = demo_dir(args)
    if not directory.is_dir():
        collect(env, directory, args.num_demos, args.demo_seed, args.max_steps, args.expert_noise,
                log=lambda m: print(m, file=sys.stderr))
    try:
        batch = episodes.load_episodes(directory, only_success=True, max_episodes=args.max_demos or None)
    except episodes.EpisodeError as e:
        raise runner.UserError(str(e)) from None
    print(f"training on {len(batch['lengths'])} successful of {batch['num_files']} demonstrations "
          f"({int(batch['lengths'].sum())} steps) from {directory}", file=sys.stderr)
    stats = episodes.normalizer(batch)
    evaluate_fn = dp.rollout_evaluator(env, args.policy, args.eval_episodes, args.max_steps)
    init_carry, train_chunk, evaluate, _ = dp.make_train(args.policy, stats, batch["obs_layout"],
                                                         batch["actions"].shape[-1], evaluate_fn)
    shared = dp.prepare(args.policy, batch, stats)
    return runner.Trainer(init_carry, train_chunk, evaluate, args.policy.updates_per_chunk, shared=shared)


def summary(root: Path, args: Args) -> str:
    rows = [json.loads(line) for line in (root / "eval.jsonl").read_text().splitlines()]
    last = max(r["chunk"] for r in rows)
    final = sorted((r for r in rows if r["chunk"] == last), key=lambda r: r["member"])
    touch = "binarised touch" if args.policy.binarize_touch else ("touch" if args.policy.use_touch else "no touch")
    lines = [f"diffusion policy ({args.policy.denoiser}, {touch}) after {final[0]['env_steps']} gradient steps, "
             f"{args.eval_episodes} evaluation episodes per member:"]
    lines += [f"  member {r['member']} (seed {r['seed']}): success {r['success']:.0%}" for r in final]
    lines.append(f"mean success {np.mean([r['success'] for r in final]):.0%} over {len(final)} member(s).")
    return "\n".join(lines)


@runner.exits_on_user_error
def main(argv: list[str] | None = None) -> Path:
    root = runner.main("hato", Args, build, argv=argv, description=__doc__)
    args, _, _ = runner.load_run_args(root, Args)
    print(summary(root, args))
    return root


if __name__ == "__main__":
    main()
