"""Policies of trained SAC agents, from the checkpoints of runs of `experiments/sac.py`, for dataset collection.

`envs.policy_data.collect(env, policy, n)` rolls out any policy `policy(obs, key) -> action`; this module builds
the ones that need the learner and the runner, so that `envs/` stays below them (it imports nothing from
`algos/`, `nets/` or `experiments/`: tests/test_layering.py). `experiments/make_dataset.py locomotion` uses both.

`sac_policy(agent, cfg)` is the SAC actor of `agent` as a `jax.tree_util.Partial` whose argument is the agent, so
policies that differ only in their parameters (a medium and an expert checkpoint of one run) share one
compilation of the collector. It samples from the policy by default (`deterministic=False`): D4RL's medium and
expert datasets are samples from the stochastic SAC policy, not its mean action.

`load_sac_agent(run_dir, member, step)` rebuilds the population of a run of `experiments/sac.py` from its
`config.json`, restores the agent (only the agent: a partial restore, neither the replay buffer nor the env
state) from the checkpoint `step` (a chunk number, as named under `<run_dir>/checkpoints/`; default: the newest)
and returns one member's agent with the SAC `Config`, env name and env options needed to act in the right env
(`sac_run_args(run_dir)` gives the run's parsed arguments alone). `checkpoint_steps(run_dir)` lists the
checkpoints a run kept (the runner keeps only the 2 newest: see `experiments/make_dataset.py` for how a run is
trained so that a mid-run "medium" checkpoint survives). Bad input raises `experiments.runner.UserError`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from algos import sac
from envs.policy_data import Policy
from experiments import runner
from experiments import sac as sac_experiment


# ---- the policy --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _sac_action_fn(cfg, deterministic: bool):
    """One function object per (cfg, deterministic), so that `Partial`s built from it compare equal (and reuse
    the collector's compilation) whatever agent they carry."""

    def action(agent, obs, key):
        return sac.act(agent, obs, key, deterministic, cfg)

    return action


def sac_policy(agent, cfg, deterministic: bool = False) -> Policy:
    """The SAC actor of `agent` (an `algos.sac.AgentState`, unbatched) with static `cfg` (`algos.sac.Config`):
    a sample of the tanh-Gaussian policy, or its mode `tanh(mean)` if `deterministic`."""
    return jax.tree_util.Partial(_sac_action_fn(cfg, bool(deterministic)), agent)


# ---- SAC checkpoints ---------------------------------------------------------------------------------------------
def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    """The checkpoint steps (chunk numbers) kept under `<run_dir>/checkpoints/`, ascending ([] if none)."""
    path = Path(run_dir) / "checkpoints"
    if not path.is_dir():
        return []
    return sorted(int(s) for s in _manager(path).all_steps())


def _manager(path: Path):
    import orbax.checkpoint as ocp
    # Read only: no `max_to_keep`, so opening a run's checkpoints never deletes any.
    return ocp.CheckpointManager(path.absolute(), options=ocp.CheckpointManagerOptions(create=False))


def sac_run_args(run_dir: str | os.PathLike) -> tuple[Any, list[dict], dict]:
    """`(args, sweep settings, saved config)` of the `experiments/sac.py` run in `run_dir` (see
    `experiments.runner.load_run_args`); a `UserError` if it is not a run directory or not a SAC run."""
    args, settings, saved = runner.load_run_args(run_dir, sac_experiment.Args)
    if saved.get("experiment") != "sac":
        raise runner.UserError(f"{Path(run_dir) / 'config.json'} is the configuration of a "
                               f"{saved.get('experiment')!r} run; expected a run of experiments/sac.py "
                               f"(\"experiment\": \"sac\").")
    return args, settings, saved


def load_sac_agent(run_dir: str | os.PathLike, member: int = 0, step: int | None = None
                   ) -> tuple[Any, Any, str, dict]:
    """`(agent, sac_cfg, env_name, env_options)` of population member `member` of the `experiments/sac.py` run in
    `run_dir`, from its checkpoint `step` (a chunk number; default: the newest). `envs.make(env_name,
    **env_options)` is the env it was trained in; `sac_policy(agent, sac_cfg)` acts in it.

    Raises `experiments.runner.UserError` (one paragraph naming the file and what was expected) for a directory
    that is not a SAC run, a missing checkpoint step (the message lists the kept ones), a member out of range or
    an unreadable checkpoint.
    """
    import orbax.checkpoint as ocp

    root = Path(run_dir)
    args, settings, _ = sac_run_args(root)
    population = runner.make_population(args.hp, settings, args.run.seed, args.run.num_seeds)
    if not 0 <= member < population.size:
        raise runner.UserError(f"--member {member} is out of range: the run {root} has {population.size} population "
                               f"member(s), numbered 0..{population.size - 1} (see config.json, \"members\").")
    steps = checkpoint_steps(root)
    if not steps:
        raise runner.UserError(f"The run {root} holds no complete checkpoint under {root / 'checkpoints'} (was it "
                               f"killed before its first save?); train it to the end or resume it first.")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise runner.UserError(f"The run {root} has no checkpoint at step {step}; it kept the checkpoints {steps} "
                               f"(chunk numbers; the runner keeps only the 2 newest).")
    env_options = runner.parse_env_options(args.env_options)
    try:
        trainer = sac_experiment.build(args)
    except ValueError as e:
        raise runner.UserError(f"Cannot rebuild the run {root}: {e}") from None
    # Only the agent is read (a partial restore): not the replay buffer, not the env state.
    item = {"agent": runner.Runner(trainer, population).abstract_carry().agent}
    try:
        restored = _manager(root / "checkpoints").restore(step, args=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True))
    except Exception as e:  # orbax raises many types for unreadable or mismatched files
        raise runner.UserError(f"The checkpoint {root / 'checkpoints' / str(step)} is unreadable or does not match "
                               f"the run's SAC agent ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:300] if str(e) else ''}).") from None
    agent = jax.tree.map(lambda x: jnp.asarray(x[member]), restored["agent"])
    return agent, args.agent, args.env, env_options
