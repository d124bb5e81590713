"""RLDG: a multi-task generalist fine-tuned on data that RL experts generate, against the same generalist
fine-tuned on demonstrations. This file is the generalist's training and evaluation, as a runner `Trainer`.

Seed: Xu, Li, Luo, Levine, "RLDG: Robotic Generalist Policy Distillation via Reinforcement Learning" (2024).
The paper trains one HIL-SERL specialist per task (RLPD seeded with ~20 demonstrations, a human correcting it),
rolls the converged specialists out, keeps the successful episodes, and fine-tunes a pretrained generalist (Octo,
OpenVLA) on them; the same generalist fine-tuned on as many human teleoperated episodes is the baseline.

The pipeline is `experiments/rldg.py` (experts with `algos/sac.py` + symmetric sampling, collection, the
demonstration proxy of `envs/insertion.py`, pretraining, fine-tuning, the swap ablation). What is here:

Data. Several SOURCES of the same shape (RL rollouts, demonstration-proxy episodes, their mix; pretraining data
is one more source) are stacked by `pack_sources` into arrays (S, N, L, ·): N episodes of at most L steps each,
padded, with `mask`, `length` and a per-episode `task` id. Equal episode counts per source are what the paper
compares, and what lets ONE compiled program fine-tune every arm: `HParams.data_source` picks a member's source
and `HParams.num_episodes` how many of its episodes it may use (the data-efficiency curve), both vmappable.
Episodes are interleaved by task in every source, so the first n are balanced across tasks.

Windows. A training example is episode i ~ U{0..n-1} of the member's source, a step t ~ U{0..len_i - 1}, and
the T = `window` observations o_{t-T+1..t} (steps before the episode start are invalid: `timestep_valid`), each
readout predicting the H-step action chunk a_τ..a_{τ+H-1} (past the episode end the last action is repeated:
at the end of an insertion the peg is home and the expert holds still). Loss (nets/transformer.policy_loss):

    L(θ) = E_{i, t} [ Σ_τ valid_τ ℓ(head_θ(r_τ), a_{τ:τ+H}) / Σ_τ valid_τ ]  + 0.01 · load-balancing (switch)

ℓ = mean squared error (head "mse"), or AdaCat's smoothed negative log-likelihood (head "adacat"). Adam with
decoupled weight decay on the trained groups only; `Config.fine_tune` picks the groups (nets/transformer.py
FINE_TUNE_MODES): "full", "adapters" (LoRA-Switch experts, routers and the head; the backbone frozen), "head".

Start. `make_train(..., init_params=...)` starts every member from a pretrained parameter tree (captured by the
compiled `init_carry` as constants: a generalist of ~100k parameters, not a dataset); with adapters the
backbone and head come from the pretrained tree (with or without adapter leaves of its own) and the adapters from
a fresh initialisation (LoRA B = 0), so fine-tuning starts from exactly the pretrained function.

Evaluation. Per task: `Config.eval_episodes` episodes, vmapped, with KV-cached decoding (`GeneralistPolicy.start`
/ `step`: one jitted call per control step); the first action of each predicted chunk is executed (receding
horizon; Octo's temporal ensembling is not used) and for AdaCat it is the per-dimension mode. Reported per task:
success rate and cycle time (steps to success, over the successful episodes; NaN when none).

Reference code: none was found for RLDG in the code index (searched 2026-12-02); this follows the paper's text.
Departures from the paper: no images or language (a task id embeds the task, as Octo's task token), a small
generalist pretrained on this task family only (said in experiments/rldg.py), simulated experts without human
interventions, and a scripted noisy controller instead of human teleoperation (a PROXY for human data).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

import envs
from nets import transformer as tf
from nets.lora_switch import is_adapter_path


@dataclasses.dataclass(frozen=True)
class Config:
    """Static settings: changing one recompiles."""

    policy: tf.PolicyConfig = tf.PolicyConfig(observations=(("obs", 2),), num_tasks=4, action_dim=4, horizon=4)
    """The generalist (its observation key must be "obs"; num_tasks = the number of task ids)."""
    fine_tune: str = "full"
    """Trained parameter groups: full, adapters (LoRA-Switch experts + head) or head."""
    batch_size: int = 64
    """Windows per gradient step."""
    updates_per_chunk: int = 100
    """Gradient steps per chunk (one lax.scan)."""
    eval_episodes: int = 16
    """Evaluation episodes per task per member (vmapped)."""
    grad_clip: float = 1.0
    """Global-norm gradient clip."""


@flax.struct.dataclass
class HParams:
    """Sweepable hyperparameters (vmapped over the population)."""

    lr: float = 3e-4
    """Adam step size."""
    weight_decay: float = 1e-4
    """Decoupled weight decay on the trained kernels."""
    data_source: float = 0.0
    """Index of the member's data source in the packed sources (experiments/rldg.py names them)."""
    num_episodes: float = 1e9
    """Episodes of its source a member trains on (the first n, balanced over tasks); clipped to N."""


class Carry(NamedTuple):
    params: Any
    opt_state: Any
    rng: jax.Array
    num_updates: jax.Array


def check_config(cfg: Config) -> None:
    if cfg.fine_tune not in tf.FINE_TUNE_MODES:
        raise ValueError(f"fine_tune={cfg.fine_tune!r}: expected one of {tuple(tf.FINE_TUNE_MODES)}.")
    if cfg.fine_tune == "adapters" and cfg.policy.adapter.kind == "none":
        raise ValueError("fine_tune='adapters' needs adapters: set policy.adapter.kind (e.g. switch).")
    if [k for k, _ in cfg.policy.observations] != ["obs"]:
        raise ValueError(f"policy.observations={cfg.policy.observations}: RLDG feeds one observation key, "
                         f"'obs' (e.g. (('obs', 3),) for three tokens).")
    for name in ("batch_size", "updates_per_chunk", "eval_episodes"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)}: must be a positive integer.")


# ---- data ---------------------------------------------------------------------------------------------------------
def interleave_by_task(task: np.ndarray) -> np.ndarray:
    """An order of episodes whose every prefix is balanced over tasks: t0 t1 t2 t0 t1 t2 ... (stable)."""
    rank = np.zeros(len(task), int)
    for t in np.unique(task):
        rank[task == t] = np.arange(np.sum(task == t))
    return np.lexsort((task, rank))


def pack_sources(sources: Sequence[dict], names: Sequence[str]) -> dict:
    """Stack data sources, each {observations (N, L_s, O), actions (N, L_s, A), mask (N, L_s), task (N,)}, into
    (S, N, L, ·) arrays padded to the longest L, each source's episodes interleaved by task. Raises ValueError
    naming the source when the shapes disagree (every source needs the same N, O and A)."""
    first = sources[0]
    n, obs_dim, act_dim = first["observations"].shape[0], first["observations"].shape[2], first["actions"].shape[2]
    for name, s in zip(names, sources):
        for key in ("observations", "actions", "mask", "task"):
            if key not in s:
                raise ValueError(f"data source {name!r} lacks {key!r}; expected observations, actions, mask, task.")
        if s["observations"].shape[0] != n or len(s["task"]) != n:
            raise ValueError(f"data source {name!r} has {s['observations'].shape[0]} episodes, {names[0]!r} {n}: "
                             f"RLDG compares sources of EQUAL episode counts.")
        if s["observations"].shape[2] != obs_dim or s["actions"].shape[2] != act_dim:
            raise ValueError(f"data source {name!r}: observation/action sizes {s['observations'].shape[2]}/"
                             f"{s['actions'].shape[2]}, {names[0]!r} has {obs_dim}/{act_dim}.")
    length = max(s["observations"].shape[1] for s in sources)
    pad = lambda x: np.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2))
    out = {k: [] for k in ("observations", "actions", "mask", "task")}
    for s in sources:
        order = interleave_by_task(np.asarray(s["task"]))
        for k in ("observations", "actions", "mask"):
            out[k].append(pad(np.asarray(s[k], np.float32)[order]))
        out["task"].append(np.asarray(s["task"], np.int32)[order])
    packed = {k: np.stack(v) for k, v in out.items()}
    packed["length"] = packed["mask"].sum(-1).astype(np.int32)
    if (packed["length"] < 1).any():
        raise ValueError("a data source holds an empty episode (mask all zero).")
    return packed


def observation_stats(observations: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (floored at 1e-3) over the real steps: the generalist's fixed input standardisation."""
    real = np.asarray(observations)[np.asarray(mask) > 0]
    return real.mean(0).astype(np.float32), np.maximum(real.std(0), 1e-3).astype(np.float32)


def sample_windows(data: dict, source, num_episodes, key, batch_size: int, window: int, horizon: int) -> dict:
    """A batch of training windows from source `source` (traced int), its first `num_episodes` episodes."""
    k_ep, k_t = jax.random.split(key)
    n = jnp.clip(num_episodes, 1, data["task"].shape[1]).astype(jnp.int32)
    episode = jax.random.randint(k_ep, (batch_size,), 0, n)
    length = data["length"][source, episode]
    t = jnp.floor(jax.random.uniform(k_t, (batch_size,)) * length).astype(jnp.int32)
    steps = t[:, None] + jnp.arange(1 - window, 1)  # (B, T)
    valid = steps >= 0
    obs = data["observations"][source, episode[:, None], jnp.maximum(steps, 0)]
    chunk = jnp.minimum(jnp.maximum(steps, 0)[..., None] + jnp.arange(horizon), length[:, None, None] - 1)
    actions = data["actions"][source, episode[:, None, None], chunk]  # (B, T, H, A)
    return {"observations": {"obs": obs}, "task": data["task"][source, episode], "actions": actions,
            "timestep_valid": valid}


# ---- training -----------------------------------------------------------------------------------------------------
def trained_kernels(cfg: Config, params) -> Any:
    """1.0 on the kernels of the groups `cfg.fine_tune` trains (where weight decay applies), else 0.0."""
    groups = tf.parameter_groups(params)
    trained = tf.FINE_TUNE_MODES[cfg.fine_tune]
    return jax.tree_util.tree_map_with_path(
        lambda path, g: float(g in trained and getattr(path[-1], "key", None) in ("kernel", "lora_a", "lora_b")),
        groups)


def fresh_adapters(pretrained, fresh):
    """`fresh` (the adapted model's initialisation) with every non-adapter leaf taken from `pretrained`, which may
    come from a model without adapters (the usual case: pretrained plain, fine-tuned through adapters)."""
    names = lambda path: tuple(getattr(k, "key", str(k)) for k in path)
    flat = {names(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(pretrained)[0]}

    def pick(path, leaf):
        if is_adapter_path(names(path)):
            return leaf
        if names(path) not in flat:
            raise ValueError(f"the pretrained parameters lack {'/'.join(names(path))}: they are not of this model.")
        return flat[names(path)]

    return jax.tree_util.tree_map_with_path(pick, fresh)


def rollout_tasks(model: tf.GeneralistPolicy, cfg: Config, params, task_envs: Sequence[tuple[int, envs.Env]],
                  obs_mean, obs_std, key) -> dict:
    """Success rate and cycle time per task: {f"success_{t}", f"cycle_time_{t}"} for every (task id, env)."""
    out = {}
    for (task, env), k in zip(task_envs, jax.random.split(key, len(task_envs))):
        k_reset, k_act = jax.random.split(k)
        e = cfg.eval_episodes
        state = jax.vmap(env.reset)(jax.random.split(k_reset, e))
        cache = model.apply({"params": params}, jnp.full((e,), task, jnp.int32), method=model.start)

        def step(c, _):
            state, cache, alive, success, steps = c
            cache, head = model.apply({"params": params}, cache, {"obs": (state.obs - obs_mean) / obs_std},
                                      method=model.step)
            action = tf.predict_actions(cfg.policy, head)[:, 0]
            state = jax.vmap(env.step)(state, jnp.clip(action, -1.0, 1.0))
            succeeded = alive & (state.info["success"] > 0)
            steps = steps + alive
            return (state, cache, alive & ~state.done, success | succeeded, steps), None

        init = (state, cache, jnp.ones(e, bool), jnp.zeros(e, bool), jnp.zeros(e, jnp.float32))
        (_, _, _, success, steps), _ = jax.lax.scan(step, init, None, length=env.max_steps)
        out[f"success_{task}"] = success.mean()
        out[f"cycle_time_{task}"] = jnp.where(success.any(), jnp.sum(steps * success) / jnp.maximum(success.sum(), 1),
                                              jnp.nan)
    return out


def make_train(cfg: Config, data: dict, task_envs: Sequence[tuple[int, envs.Env]], obs_mean, obs_std,
               init_params=None):
    """`init_carry(key, hp)`, `train_chunk(carry, hp, shared)`, `evaluate(carry, key, hp)` for `runner.Trainer`.

    `data` is `pack_sources`' dict (pass `shared_data(data)` as the Trainer's `shared`); `task_envs` the
    (task id, time-limited env) pairs evaluated; `obs_mean`/`obs_std` the fixed input standardisation;
    `init_params` a pretrained "params" tree (None: a fresh initialisation, as in pretraining).
    """
    check_config(cfg)
    obs_dim, act_dim = data["observations"].shape[-1], data["actions"].shape[-1]
    if act_dim != cfg.policy.action_dim:
        raise ValueError(f"the data's actions have {act_dim} dimensions, policy.action_dim is {cfg.policy.action_dim}.")
    for task, env in task_envs:
        if (env.observation_size, env.action_size) != (obs_dim, act_dim):
            raise ValueError(f"task {task}: env sizes {env.observation_size}/{env.action_size}, data {obs_dim}/{act_dim}.")
    model = tf.GeneralistPolicy(cfg.policy)
    window, horizon = cfg.policy.transformer.window, cfg.policy.horizon
    adam = tf.make_optimizer(cfg.fine_tune, optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                                                        optax.scale_by_adam()))
    mean, std = jnp.asarray(obs_mean), jnp.asarray(obs_std)

    def init_carry(key: jax.Array, hp: HParams) -> Carry:
        k_init, k_rng = jax.random.split(key)
        dummy = {"obs": jnp.zeros((1, window, obs_dim))}
        params = model.init(k_init, dummy, jnp.zeros((1,), jnp.int32))["params"]
        if init_params is not None:
            params = fresh_adapters(init_params, params) if cfg.fine_tune == "adapters" else init_params
            params = jax.tree.map(jnp.asarray, params)
        return Carry(params, adam.init(params), k_rng, jnp.zeros((), jnp.int32))

    def train_chunk(carry: Carry, hp: HParams, shared: dict) -> tuple[Carry, dict]:
        source = hp.data_source.astype(jnp.int32)
        decay_mask = trained_kernels(cfg, carry.params)

        def step(carry: Carry, _):
            rng, k_batch = jax.random.split(carry.rng)
            batch = sample_windows(shared, source, hp.num_episodes, k_batch, cfg.batch_size, window, horizon)
            batch["observations"] = {"obs": (batch["observations"]["obs"] - mean) / std}
            (loss, metrics), grads = jax.value_and_grad(
                lambda p: tf.policy_loss(model, {"params": p}, batch), has_aux=True)(carry.params)
            direction, opt_state = adam.update(grads, carry.opt_state, carry.params)
            params = jax.tree.map(lambda p, d, m: p - hp.lr * (d + hp.weight_decay * m * p), carry.params,
                                  direction, decay_mask)
            carry = carry._replace(params=params, opt_state=opt_state, rng=rng, num_updates=carry.num_updates + 1)
            return carry, {"loss": loss, **metrics}

        carry, metrics = jax.lax.scan(step, carry, None, length=cfg.updates_per_chunk)
        return carry, {**jax.tree.map(jnp.mean, metrics), "num_updates": carry.num_updates}

    def evaluate(carry: Carry, key: jax.Array, hp: HParams) -> dict:
        out = rollout_tasks(model, cfg, carry.params, task_envs, mean, std, key)
        out["eval_success"] = jnp.mean(jnp.stack([out[f"success_{t}"] for t, _ in task_envs]))
        return out

    return init_carry, train_chunk, evaluate


def shared_data(data: dict) -> dict:
    """The arrays `train_chunk` reads (device arrays, stored once for the whole population)."""
    return {k: jnp.asarray(data[k]) for k in ("observations", "actions", "task", "length")}
