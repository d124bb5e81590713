"""Environment throughput: env-steps/s of each env at several batch sizes, next to a bare `mjx.step` loop.

For every env and batch size B, two programs are jitted and timed, both a `lax.scan` over
T = max(--steps, --min-env-steps // B) env steps of a `vmap`-ed batch of B envs driven by uniformly random actions
in [-1, 1]:

- env:  `envs.make_vec(envs.make(name), B)`, the full stack an algorithm steps (TimeLimit, VmapAutoReset with
        fresh resets computed for the done envs only, EpisodeStats).
- bare: the same MuJoCo model stepped by `mjx.step` on a full `mjx.Data`, `frame_skip` (maze) or `n_frames` (brax)
        substeps per env step, with no task, reward, reset or statistics: the floor our wrapper is measured
        against. Pure-JAX envs have no bare counterpart. The bare loop never resets, so where the solver's work
        depends on the state (brax tasks run MuJoCo's solver to convergence; a free-running pendulum lies on its
        joint limits), the two programs do not simulate comparable states and the overhead is only indicative.
        The point mazes pin a fixed solver budget, so there the comparison is like for like.

Overhead = bare steps/s / env steps/s - 1. After a first (compiling) call of each, the env and bare programs are
timed `--repeats` times, alternately; the best time counts. Compile time is the first call's time minus the best
run. The persistent compilation cache is switched off so that compile times are honest.

    python benchmarks/envs.py                      # the defaults, ~5 minutes on a 2-core CPU
    python benchmarks/envs.py --envs pointmaze-umaze --batch-sizes 512 --json results.json
    python benchmarks/envs.py --envs insertion-square insertion-cross --batch-sizes 64   # peg insertion (RLDG)
    python benchmarks/envs.py --dmc                # the DM Control tasks (MuJoCo Playground) only

(The bare loop of a DM Control task steps Playground's MJX model `action_repeat * n_substeps` times per env step
from the model's reference pose, without Playground's reset, reward or observation. `--playground` adds a third
program for DM Control tasks, "Playground alone": Playground's own `step`, `action_repeat` times per env step,
vmapped over the batch from its own reset, with none of our wrappers (no NaN guard, time limit, auto-reset or
statistics), which splits the gap to the bare loop into Playground's task and ours.)

(The bare loop of an insertion env feeds the random numbers straight to its position servos as targets in
metres and radians: the peg swings within the socket's reach and often rests on the table, so it too is only
indicative.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from typing import Callable

# This script is itself named envs.py: put the repository first on the path so `import envs` finds the package.
sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

from benchmarks.machine import describe  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mujoco  # noqa: E402
from mujoco import mjx  # noqa: E402

import envs  # noqa: E402
from envs.dmc import DmControl  # noqa: E402
from envs.insertion import PegInsertion  # noqa: E402
from envs.pointmaze_mjx import PointMazeMjx  # noqa: E402

DMC_ENVS = [name for name in envs.registered() if name.startswith("dmc-")]
DEFAULT_ENVS = ["pointmaze-umaze", "pointmaze-umaze-jax", "pointmaze-medium", "pointmaze-medium-jax",
                "pointmaze-large", "pointmaze-large-jax", "inverted_pendulum", "ant"]


@dataclasses.dataclass
class Timing:
    steps_per_s: float
    compile_s: float


def time_programs(programs: dict[str, Callable], key: jax.Array, env_steps: int, repeats: int) -> dict[str, Timing]:
    """Jit each `program(key)` and call it once (compiling), then time `repeats` rounds in which the programs run
    one after the other, so that load from other processes on the machine hits them alike; best time counts."""
    jitted = {label: jax.jit(program) for label, program in programs.items()}
    first = {}
    for label, program in jitted.items():
        start = time.perf_counter()
        jax.block_until_ready(program(key))
        first[label] = time.perf_counter() - start
    best = dict.fromkeys(jitted, float("inf"))
    for i in range(repeats):
        for label, program in jitted.items():
            start = time.perf_counter()
            jax.block_until_ready(program(jax.random.fold_in(key, i + 1)))
            best[label] = min(best[label], time.perf_counter() - start)
    return {label: Timing(steps_per_s=env_steps / best[label], compile_s=max(first[label] - best[label], 0.0))
            for label in jitted}


def checksum(carry) -> jax.Array:
    """Sum of every float leaf of a rollout's final carry: returning it keeps XLA from pruning any part of the
    loop state, so the env and the bare loop are charged for all the state they carry."""
    return sum(x.sum() for x in jax.tree.leaves(carry) if jnp.issubdtype(x.dtype, jnp.floating))


def env_rollout(name: str, batch: int, steps: int):
    """The full wrapped env under random actions."""
    env = envs.make_vec(envs.make(name), batch)

    def run(key):
        reset_key, action_key = jax.random.split(key)

        def step(state, k):
            action = jax.random.uniform(k, (batch, env.action_size), minval=-1.0, maxval=1.0)
            return env.step(state, action), None

        state, _ = jax.lax.scan(step, env.reset(reset_key), jax.random.split(action_key, steps))
        return checksum(state)

    return run


def bare_model(name: str) -> tuple[mjx.Model, jax.Array, int]:
    """(MJX model, initial qpos, substeps per env step) of the MJX env `name`."""
    inner = envs.make(name).unwrapped
    if isinstance(inner, PegInsertion):  # the peg 6 cm above the socket (the table's centre); targets = ctrl (m)
        _, model, _ = inner.compiled
        return model, jnp.array([0.0, 0.0, 0.085, 0.0]), inner.frame_skip
    if isinstance(inner, DmControl):
        playground = inner.playground_env
        return (playground.mjx_model, jnp.asarray(playground.mj_model.qpos0),
                playground.n_substeps * inner.action_repeat)
    if isinstance(inner, PointMazeMjx):
        _, model, _ = inner.compiled
        start = jnp.asarray(inner.spec.cell_center(inner.spec.find("S")))
        return model, start, inner.frame_skip
    sys_ = inner.brax_env.sys
    return sys_, jnp.asarray(sys_.init_q), round(inner.brax_env.dt / sys_.opt.timestep)


def bare_rollout(name: str, batch: int, steps: int):
    """`mjx.step` on a batch of full `mjx.Data` of the same model, random controls, no task or wrappers."""
    model, qpos0, substeps = bare_model(name)

    def one_env_step(data, ctrl):
        data = data.replace(ctrl=ctrl)
        return jax.lax.scan(lambda d, _: (mjx.step(model, d), None), data, None, length=substeps)[0]

    def run(key):
        data = jax.vmap(lambda _: mjx.make_data(model).replace(qpos=qpos0))(jnp.arange(batch))

        def step(data, k):
            ctrl = jax.random.uniform(k, (batch, model.nu), minval=-1.0, maxval=1.0)
            return jax.vmap(one_env_step)(data, ctrl), None

        data, _ = jax.lax.scan(step, data, jax.random.split(key, steps))
        return checksum(data)

    return run


def playground_rollout(name: str, batch: int, steps: int):
    """Playground's own env, `action_repeat` of its steps per env step, vmapped: a DM Control task without ours."""
    inner = envs.make(name).unwrapped
    playground, repeat = inner.playground_env, inner.action_repeat

    def one_env_step(state, action):
        return jax.lax.scan(lambda s, _: (playground.step(s, action), None), state, None, length=repeat)[0]

    def run(key):
        reset_key, action_key = jax.random.split(key)
        state = jax.vmap(playground.reset)(jax.random.split(reset_key, batch))

        def step(state, k):
            action = jax.random.uniform(k, (batch, playground.action_size), minval=-1.0, maxval=1.0)
            return jax.vmap(one_env_step)(state, action), None

        state, _ = jax.lax.scan(step, state, jax.random.split(action_key, steps))
        return checksum(state.data)

    return run


def has_bare(name: str) -> bool:
    return not name.endswith("-jax")


def fmt_rate(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def markdown_table(rows: list[dict]) -> str:
    alone = any(r.get("playground_steps_per_s") for r in rows)
    lines = ["| env | batch | env steps/s | bare mjx.step steps/s | overhead | compile env / bare (s) |"
             + (" Playground alone steps/s |" if alone else ""),
             "|---|---:|---:|---:|---:|---:|" + ("---:|" if alone else "")]
    for r in rows:
        overhead = "—" if r["bare_steps_per_s"] is None else f"{r['overhead_pct']:+.0f}%"
        compile_s = f"{r['env_compile_s']:.1f}"
        if r["bare_compile_s"] is not None:
            compile_s += f" / {r['bare_compile_s']:.1f}"
        lines.append(f"| {r['env']} | {r['batch']} | {fmt_rate(r['env_steps_per_s'])} | "
                     f"{fmt_rate(r['bare_steps_per_s'])} | {overhead} | {compile_s} |"
                     + (f" {fmt_rate(r.get('playground_steps_per_s'))} |" if alone else ""))
    return "\n".join(lines)


def machine() -> dict:
    return {**describe(), "mujoco": mujoco.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=DEFAULT_ENVS, metavar="NAME",
                        help=f"registered env names (default: %(default)s; all: {envs.registered()})")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64, 512], metavar="B",
                        help="numbers of envs stepped in parallel (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=100,
                        help="env steps per scan (one timed call) for every env of the batch (default: %(default)s)")
    parser.add_argument("--min-env-steps", type=int, default=2000,
                        help="lengthen the scan for small batches to at least this many env steps in all "
                             "(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the compiling one; best counts "
                                                                 "(default: %(default)s)")
    parser.add_argument("--dmc", action="store_true", help=f"the DM Control tasks instead of --envs: {DMC_ENVS}")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare mjx.step baselines")
    parser.add_argument("--playground", action="store_true",
                        help="DM Control tasks: also time Playground's env alone, without our wrappers")
    parser.add_argument("--json", metavar="PATH", help="also write the machine info and rows to this JSON file")
    args = parser.parse_args()
    if args.dmc:
        args.envs = DMC_ENVS
    for name in args.envs:
        envs.env_class(name)  # fail fast, with the list of valid names

    jax.config.update("jax_enable_compilation_cache", False)
    info = machine()
    print(f"# {info['cpu']} ({info['cpus']} cpus), jax {info['jax']}, mujoco {info['mujoco']}, "
          f"backend {info['backend']}; scans of max({args.steps}, {args.min_env_steps} // batch) steps, "
          f"best of {args.repeats}", flush=True)
    rows = []
    key = jax.random.PRNGKey(0)
    for name in args.envs:
        for batch in args.batch_sizes:
            steps = max(args.steps, args.min_env_steps // batch)
            programs = {"env": env_rollout(name, batch, steps)}
            if has_bare(name) and not args.no_bare:
                programs["bare"] = bare_rollout(name, batch, steps)
            if args.playground and name in DMC_ENVS:
                programs["playground"] = playground_rollout(name, batch, steps)
            timings = time_programs(programs, key, batch * steps, args.repeats)
            ours, bare = timings["env"], timings.get("bare")
            row = {"env": name, "batch": batch, "env_steps_per_s": ours.steps_per_s, "env_compile_s": ours.compile_s,
                   "bare_steps_per_s": None if bare is None else bare.steps_per_s,
                   "bare_compile_s": None if bare is None else bare.compile_s,
                   "overhead_pct": None if bare is None else 100 * (bare.steps_per_s / ours.steps_per_s - 1),
                   "playground_steps_per_s": timings["playground"].steps_per_s if "playground" in timings else None}
            rows.append(row)
            print(markdown_table([row]).splitlines()[-1], flush=True)
    print()
    print(markdown_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
