"""Offline datasets from policies: D4RL-style "random", "medium", "expert" rollouts and their mixture.

This module knows no learner: a policy is any function of an observation and a key. The policies of trained
agents (SAC checkpoints of a run of `experiments/sac.py`) are built in `experiments/sac_checkpoints.py`, above
`algos/`, and passed in; `envs/` imports nothing from `algos/`, `nets/` or `experiments/` (tests/test_layering.py).

The collector
-------------
`collect(env, policy, num_transitions)` runs `num_envs` independent streams of `envs.make_vec(env, num_envs)`
(auto-reset with fresh keys, the `TimeLimit` of `envs.make`) under one jitted `lax.scan` per chunk of
`chunk_steps` steps, and returns the six D4RL arrays (numpy; float32, bool flags):

    observations[i]       the observation the action was taken in
    actions[i]            the policy's action, as given to the env (SAC and uniform actions lie in [-1, 1])
    rewards[i]            the env's reward for the transition
    next_observations[i]  `info["next_obs"]`: the TRUE successor, also at the end of an episode (where the env's
                          `obs` is already the first observation of the next episode)
    terminals[i]          the env's `terminated` (absorbing: a fallen hopper, a reached goal)
    timeouts[i]           the env's `truncated` (the `TimeLimit`), and the last transition of every stream

Transitions are laid out stream by stream, so every episode is contiguous, and the data is cut to
`num_transitions` (the last stream may be shorter); the last transition of each stream is marked as a timeout
(the stream stops mid-episode: truncation, not termination), so the result passes
`envs.datasets.validate_dataset`. The output depends on `seed`, `num_envs` and the policy, not on `chunk_steps`
(every chunk has that length, so one collection compiles once; the surplus steps of the last chunk are dropped).

Policies
--------
A policy maps ONE observation and a key to one action, `policy(obs, key) -> action` (pure jax; the collector
vmaps it over the streams with one key per stream and step). Pass it as a `jax.tree_util.Partial` whose
arguments are the policy's arrays and they become inputs of the compiled program instead of constants baked into
it: policies that differ only in their parameters (a medium and an expert checkpoint of one run) then share one
compilation. `uniform_random_policy(action_size)` is built that way, and so is
`experiments.sac_checkpoints.sac_policy(agent, cfg)`, the SAC actor of a checkpoint (`load_sac_agent`).

`mixture(datasets)` concatenates datasets (every part ends with an episode end, so episodes stay intact).
`summarize(data, max_episode_steps)` gives the counts and the mean return of the complete episodes.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import numpy as np

import envs
from envs import datasets
from envs.core import Env

Policy = Callable[[jax.Array, jax.Array], jax.Array]  # (one observation, key) -> one action


# ---- policies ----------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _uniform_action_fn(action_size: int):
    def action(obs, key):
        return jax.random.uniform(key, (action_size,), minval=-1.0, maxval=1.0)

    return action


def uniform_random_policy(action_size: int) -> Policy:
    """Actions drawn uniformly from [-1, 1]^action_size, independently of the observation (D4RL's "random")."""
    return jax.tree_util.Partial(_uniform_action_fn(int(action_size)))


# ---- the collector -----------------------------------------------------------------------------------------------
def _as_partial(policy: Policy) -> jax.tree_util.Partial:
    return policy if isinstance(policy, jax.tree_util.Partial) else jax.tree_util.Partial(policy)


@functools.partial(jax.jit, static_argnames=("venv",))
def _init(venv: Env, key: jax.Array):
    k_env, k_run = jax.random.split(key)
    return venv.reset(k_env), k_run


@functools.partial(jax.jit, static_argnames=("venv", "num_steps"))
def _chunk(venv: Env, policy: jax.tree_util.Partial, carry, num_steps: int):
    """`num_steps` vectorised steps: (carry, transitions), every array shaped (num_steps, num_envs, ...)."""

    def step(carry, _):
        state, key = carry
        key, k_act = jax.random.split(key)
        keys = jax.random.split(k_act, state.obs.shape[0])
        action = jax.vmap(policy)(state.obs, keys)
        nxt = venv.step(state, action)
        transition = {"observations": state.obs, "actions": action, "rewards": nxt.reward,
                      "next_observations": nxt.info["next_obs"], "terminals": nxt.terminated,
                      "timeouts": nxt.truncated}
        return (nxt, key), transition

    return jax.lax.scan(step, carry, None, length=num_steps)


def collect(env: Env, policy: Policy, num_transitions: int, *, num_envs: int = 16, seed: int = 0,
            chunk_steps: int = 250, progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """`num_transitions` D4RL-style transitions of `policy` in `env` (unbatched, from `envs.make`): see the module
    docstring. `num_envs` streams each run `ceil(num_transitions / num_envs)` steps (at most `num_transitions`
    streams); `progress(n)` is called after every chunk with the number of transitions it added."""
    for name, value in (("num_transitions", num_transitions), ("num_envs", num_envs), ("chunk_steps", chunk_steps)):
        if value < 1:
            raise ValueError(f"collect: {name} must be a positive integer, got {value}.")
    num_envs = min(num_envs, num_transitions)
    steps = math.ceil(num_transitions / num_envs)
    venv = envs.make_vec(env, num_envs)
    policy = _as_partial(policy)
    carry = _init(venv, jax.random.key(seed))
    # Every chunk has the same length (one compilation); the steps past `steps` of the last one are dropped.
    n = min(chunk_steps, steps)
    parts, done = [], 0
    while done < steps:
        carry, transitions = _chunk(venv, policy, carry, n)
        parts.append(jax.device_get(transitions))
        if progress is not None:
            progress(min(n * num_envs, num_transitions - done * num_envs))
        done += n
    data = {}
    for k in parts[0]:
        x = np.concatenate([p[k] for p in parts], axis=0)[:steps]  # (steps, num_envs, ...)
        data[k] = np.ascontiguousarray(np.swapaxes(x, 0, 1))  # (num_envs, steps, ...): stream by stream
    data["timeouts"][:, -1] |= ~data["terminals"][:, -1]  # each stream stops mid-episode: a truncation
    data = {k: v.reshape(num_envs * steps, *v.shape[2:])[:num_transitions] for k, v in data.items()}
    data["timeouts"][-1] |= ~data["terminals"][-1]  # the cut, if any, inside the last stream
    out = {k: np.asarray(data[k], np.float32) for k in datasets.FLOAT_KEYS}
    out.update({k: np.asarray(data[k], bool) for k in datasets.FLAG_KEYS})
    return out


# ---- datasets ----------------------------------------------------------------------------------------------------
def mixture(parts: Sequence[dict]) -> dict[str, np.ndarray]:
    """The concatenation of `parts` (each validated first; all with the same observation and action sizes), in
    order. Every valid dataset ends with an episode end, so no episode straddles two parts."""
    if not parts:
        raise ValueError("mixture needs at least one dataset.")
    checked = [datasets.validate_dataset(p, f"(mixture part {i})") for i, p in enumerate(parts)]
    for i, p in enumerate(checked[1:], 1):
        for k in ("observations", "actions"):
            if p[k].shape[1:] != checked[0][k].shape[1:]:
                raise ValueError(f"mixture: part {i} has {k} of shape {p[k].shape}, part 0 of shape "
                                 f"{checked[0][k].shape}; the parts must come from the same env (equal sizes "
                                 f"after the first axis).")
    return {k: np.concatenate([p[k] for p in checked]) for k in datasets.KEYS}


def summarize(data: dict, max_episode_steps: int | None = None) -> dict:
    """Counts and returns of `data`. An episode is complete if it ends in a terminal or (with `max_episode_steps`)
    lasts that many steps; the others were cut by the end of a collection stream. `mean_episode_return` and
    `mean_episode_length` are over the complete episodes (over all episodes if none is complete or
    `max_episode_steps` is None), `complete_episodes` says how many there were."""
    starts, ends = datasets.episode_bounds(data["terminals"], data["timeouts"])
    lengths = ends - starts
    returns = np.add.reduceat(np.asarray(data["rewards"], np.float64), starts) if len(starts) else np.zeros(0)
    complete = np.asarray(data["terminals"], bool)[ends - 1]
    if max_episode_steps is not None:
        complete = complete | (lengths >= max_episode_steps)
    chosen = complete if complete.any() else np.ones_like(complete)
    return {"transitions": int(len(data["rewards"])), "episodes": int(len(starts)),
            "complete_episodes": int(complete.sum()), "terminals": int(np.sum(data["terminals"])),
            "mean_episode_return": float(returns[chosen].mean()) if len(starts) else float("nan"),
            "std_episode_return": float(returns[chosen].std()) if len(starts) else float("nan"),
            "mean_episode_length": float(lengths[chosen].mean()) if len(starts) else float("nan"),
            "mean_reward": float(np.mean(data["rewards"]))}
