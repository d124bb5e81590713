"""HATO's hand env and diffusion policy: control steps per second, and policy inference time per control step.

    .venv/bin/python benchmarks/hato_speed.py --json runs/bench_hato_speed.json       # the RESULTS.md figures
    .venv/bin/python benchmarks/hato_speed.py --batches 1 --sizes cpu                 # a quick look

Env: `hand-lift` (`envs.hands.HandLift`, 10 physics substeps per 25 Hz control step), `vmap` + `lax.scan` of
`--env-steps` control steps with random actions, at each batch size; steps/s counts control steps of all envs.

Policy: one jitted call of `act` (`algos.diffusion_policy.make_train`: normalise, DDIM with S steps through the
ε-network, decode) on an observation history (B, To, 28) -> an action chunk (B, Tp, A), for two sizes:
- "cpu": the settings every table here uses (UNet down dims (32, 64), To 2, Tp 8, Ta 4, S 10);
- "paper": Diffusion Policy's UNet (down dims (256, 512, 1024), kernel 5, To 2, Tp 16, Ta 8, S 10).
Receding-horizon control calls the policy once every Ta control steps, so the amortised inference time per
control step is (time per call) / Ta; both are reported, beside the 40 ms a 25 Hz control step allows.
Parameters are the initialisation (the time does not depend on their values). Medians over `--rounds` rounds of
a measurement lasting ~`--target-s` seconds; compile seconds separately.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from algos import diffusion_policy as dp  # noqa: E402
from benchmarks import machine  # noqa: E402
from envs import hands  # noqa: E402

SIZES = {
    "cpu": dp.Config(),
    "paper": dp.Config(down_dims=(256, 512, 1024), pred_horizon=16, action_horizon=8),
}


def timed(fn, *args, rounds: int, target_s: float) -> tuple[float, float]:
    """(compile + first call seconds, median seconds per call over `rounds` measurements of ~target_s each)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    reps = max(1, int(target_s / max(time.perf_counter() - start, 1e-6)))
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            out = fn(*args)
        jax.block_until_ready(out)
        per_call.append((time.perf_counter() - start) / reps)
    return compile_s, float(np.median(per_call))


def env_rate(env: hands.HandLift, batch: int, steps: int, rounds: int, target_s: float) -> dict:
    @jax.jit
    def rollout(key):
        k_reset, k_act = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(k_reset, batch))
        actions = jax.random.uniform(k_act, (steps, batch, env.action_size), minval=-1.0, maxval=1.0)
        state, _ = jax.lax.scan(lambda s, a: (jax.vmap(env.step)(s, a), None), state, actions)
        return state.obs

    compile_s, per_call = timed(rollout, jax.random.PRNGKey(0), rounds=rounds, target_s=target_s)
    return {"batch": batch, "control_steps_per_s": batch * steps / per_call, "compile_s": compile_s}


def policy_time(env: hands.HandLift, name: str, cfg: dp.Config, batch: int, rounds: int, target_s: float) -> dict:
    obs_dim, act_dim = env.observation_size, env.action_size
    stats = {"obs_min": -np.ones(obs_dim, np.float32), "obs_max": np.ones(obs_dim, np.float32),
             "act_min": -np.ones(act_dim, np.float32), "act_max": np.ones(act_dim, np.float32)}
    init_carry, _, _, act = dp.make_train(cfg, stats, hands.OBS_LAYOUT, act_dim)
    params = init_carry(jax.random.PRNGKey(0), dp.HParams()).ema
    history = jnp.zeros((batch, cfg.obs_horizon, obs_dim))
    compile_s, per_call = timed(jax.jit(act), params, history, jax.random.PRNGKey(1), rounds=rounds,
                                target_s=target_s)
    num_params = sum(x.size for x in jax.tree.leaves(params))
    return {"size": name, "batch": batch, "ms_per_call": 1e3 * per_call,
            "ms_per_control_step": 1e3 * per_call / cfg.action_horizon, "compile_s": compile_s,
            "params": int(num_params), "config": {k: v for k, v in dataclasses.asdict(cfg).items()
                                                  if k in ("down_dims", "obs_horizon", "pred_horizon",
                                                           "action_horizon", "num_inference_steps")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    p.add_argument("--sizes", default="cpu,paper", help=f"policy sizes, of {','.join(SIZES)}")
    p.add_argument("--env-steps", type=int, default=20, help="control steps per env measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--target-s", type=float, default=2.0)
    p.add_argument("--skip-env", action="store_true")
    p.add_argument("--json", default="", help="also write the figures here (rewritten after each measurement)")
    a = p.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    unknown = [s for s in a.sizes.split(",") if s not in SIZES]
    if unknown:
        p.error(f"unknown --sizes {unknown}; choose from {sorted(SIZES)}")
    env = hands.HandLift()

    def record(row: dict, kind: str) -> None:
        """Keep every figure measured so far on disk: a killed run (the paper size at batch 64 is slow on a CPU)
        loses nothing."""
        result[kind].append(row)
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(result, indent=1))

    result = {"machine": machine.describe(), "control_rate_hz": env.control_rate, "env": [], "policy": []}
    if not a.skip_env:
        for b in batches:
            row = env_rate(env, b, a.env_steps, a.rounds, a.target_s)
            record(row, "env")
            print(f"env batch {b}: {row['control_steps_per_s']:,.0f} control steps/s (compile {row['compile_s']:.0f} s)",
                  file=sys.stderr)
    for name in a.sizes.split(","):
        for b in batches:
            row = policy_time(env, name, SIZES[name], b, a.rounds, a.target_s)
            record(row, "policy")
            print(f"policy {name} ({row['params']:,} params) batch {b}: {row['ms_per_call']:.1f} ms per call, "
                  f"{row['ms_per_control_step']:.1f} ms per control step (compile {row['compile_s']:.0f} s)",
                  file=sys.stderr)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
