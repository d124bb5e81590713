"""Behaviour cloning with an autoregressive action head (AdaCat, or a Gaussian baseline), as a runner `Trainer`.

Why: the AdaCat paper (Li, Jain & Abbeel, UAI 2022) motivates adaptive bins by multimodal, sharp data; a policy
cloned from demonstrations that take different routes from the same state is such data. A unimodal Gaussian head
fits the modes' average (and a spread that covers both); AdaCat can put its mass on the modes. RLDG will reuse
this file's policy (`make_model`, `make_policy`, `sample_actions`, `greedy_actions`, `log_prob`).

Policy
------
    π(a | s) = Π_d π(a_d | a_<d, s),      a ∈ [-1, 1]^A (the env's action box)

one MADE (`nets/autoregressive.py`) with the (normalised) observation as its unmasked context computes every
conditional's parameters in one pass; `Config.head` picks the family of each conditional: adacat, gaussian, and,
since the families exist, categorical (fixed equal bins) and mog (mixture of Gaussians). The support is exactly
[-1, 1] per dimension: the demonstrator's clipped actions (±1, often a quarter of the data) lie inside the closed
interval, where AdaCat can hold them with narrow bins. The Gaussian families put mass outside [-1, 1]; the env
clips what they sample, which is what a Gaussian BC policy does in practice.

Loss, per minibatch of B demonstrated pairs (s, a):

    loss = -(1/B) Σ_b Σ_d L_d(a_bd | a_b<d, s_b)

with L = AdaCat's smoothed log-likelihood (a truncated-Gaussian kernel of scale σ = hp.smoothing · 2, i.e. a
fraction of the interval's width; `nets/adacat.py`) and the exact log-likelihood for the other heads. Adam with
decoupled weight decay, as `algos/density.py`.

Evaluation
----------
Episodes of the evaluation env (no auto-reset; `evaluate_policy`), `Config.eval_episodes` of them vmapped, one
`lax.scan` over the episode length. The headline is with SAMPLED actions (a ~ π(.|s), one dimension at a time):
that is the policy the likelihood defines. Also reported (`*_greedy`), because it is cheap: each dimension set in
turn to its conditional's mode (AdaCat, categorical: the densest bin's centre; mog: the mean of the heaviest
component) or mean (gaussian). For AdaCat that greedy decode is NOT the joint mode of π(a | s) (the mode of
a_1's marginal, then of a_2 given it), and a bin centre, not a data point; for the Gaussian it is the usual
deterministic "mean action", which averages the modes. Where two modes are equally likely the greedy decode picks
whichever bin is denser by a hair, which can flip with small changes of the state and make the policy chatter in
place (measured: benchmarks/RESULTS.md, "AdaCat behaviour cloning"). `test_nll` is the hard NLL in nats per action dimension on
held-out demonstrations (evaluated at the same points for every head; lower is better).

Choices
-------
- Observations are standardised with the training demonstrations' mean and std (std floored at 1e-3, so a
  constant entry, e.g. a fixed goal, maps to 0); the statistics are part of the data (`prepare`) and of the
  compiled evaluation.
- Train/test split by episode (the last `test_fraction` of the episodes), not by transition.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

import envs
from nets import adacat as adacat_lib
from nets import autoregressive as ar

HEADS = ar.FAMILIES  # ("adacat", "categorical", "gaussian", "mog")
LO, HI = -1.0, 1.0  # the action box of every env here


@dataclasses.dataclass(frozen=True)
class Config:
    """Static settings: changing one recompiles."""

    head: str = "adacat"
    """Action head, one family per action dimension: adacat, gaussian, categorical (fixed bins), mog."""
    num_bins: int = 32
    """Bins (adacat, categorical) or mixture components (mog); ignored by gaussian."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """MADE hidden layers (the trunk; equal for every head)."""
    kernel: str = "gaussian"
    """AdaCat smoothing kernel: gaussian or uniform (truncated to [-1, 1])."""
    batch_size: int = 256
    """Demonstrated (state, action) pairs per gradient step."""
    updates_per_chunk: int = 250
    """Gradient steps per chunk (one lax.scan)."""
    eval_episodes: int = 32
    """Evaluation episodes per member (vmapped), for the sampled and for the greedy policy each."""
    test_rows: int = 4096
    """Held-out demonstration pairs at most in `test_nll` (computed at the end of every chunk)."""


@flax.struct.dataclass
class HParams:
    """Sweepable hyperparameters (vmapped over the population)."""

    lr: float = 1e-3
    """Adam step size."""
    smoothing: float = 1e-3
    """AdaCat kernel scale as a fraction of the action interval's width (σ = smoothing · 2)."""
    weight_decay: float = 0.0
    """Decoupled weight decay on the MADE's weights."""


class Carry(NamedTuple):
    params: Any
    opt_state: Any
    rng: jax.Array
    num_updates: jax.Array
    test_nll: jax.Array  # held-out NLL per action dimension at the end of the last chunk (NaN before the first)


adam = optax.scale_by_adam()


def check_config(cfg: Config) -> None:
    """ValueError naming the field when the static config is invalid."""
    if cfg.head not in HEADS:
        raise ValueError(f"head={cfg.head!r}: expected one of {HEADS} (adacat and gaussian are the compared "
                         f"heads; categorical and mog are the other families of nets/autoregressive.py).")
    if cfg.kernel not in adacat_lib.KERNELS:
        raise ValueError(f"kernel={cfg.kernel!r}: expected one of {adacat_lib.KERNELS}.")
    for name in ("num_bins", "batch_size", "updates_per_chunk", "eval_episodes", "test_rows"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)}: must be a positive integer.")
    if not cfg.hidden_sizes or min(cfg.hidden_sizes) < 1:
        raise ValueError(f"hidden_sizes={cfg.hidden_sizes}: need at least one hidden layer of positive width.")


# ---- data ---------------------------------------------------------------------------------------------------------
def prepare(demos: dict, test_fraction: float = 0.1) -> dict:
    """The dict a BC `Trainer` shares, from demonstrations with D4RL keys (`observations`, `actions`; optional
    `episode_ids`, else every transition is its own episode): standardised observations, actions, the
    standardisation, and the held-out pairs (the last `test_fraction` of the episodes). Raises ValueError naming
    what is wrong (shapes, NaN, actions outside [-1, 1])."""
    obs, act = np.asarray(demos["observations"], np.float32), np.asarray(demos["actions"], np.float32)
    if obs.ndim != 2 or act.ndim != 2 or len(obs) != len(act) or len(obs) < 2:
        raise ValueError(f"BC demonstrations: expected observations (N, S) and actions (N, A) with the same N >= 2; "
                         f"got {obs.shape} and {act.shape}.")
    if not (np.isfinite(obs).all() and np.isfinite(act).all()):
        raise ValueError("BC demonstrations: observations/actions contain NaN or inf.")
    adacat_lib.check_in_support(act, LO, HI, name="BC demonstrations' actions")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: expected a fraction in [0, 1).")
    episodes = np.asarray(demos.get("episode_ids", np.arange(len(obs))))
    ids = np.unique(episodes)
    n_test = int(round(test_fraction * len(ids)))
    test = np.isin(episodes, ids[len(ids) - n_test:]) if n_test else np.zeros(len(obs), bool)
    if test.all():
        raise ValueError(f"BC demonstrations: test_fraction={test_fraction} leaves no training episode "
                         f"({len(ids)} episode(s)).")
    mean, std = obs[~test].mean(0), np.maximum(obs[~test].std(0), 1e-3)
    norm = lambda x: ((x - mean) / std).astype(np.float32)
    if not test.any():  # no held-out episodes: test_nll is then measured on (a part of) the training pairs
        test = ~test
    return {"obs": norm(obs[~test]), "actions": act[~test], "obs_mean": mean, "obs_std": std,
            "obs_test": norm(obs[test]), "actions_test": act[test]}


# ---- the policy -----------------------------------------------------------------------------------------------------
def make_model(cfg: Config, action_size: int) -> ar.MADE:
    return ar.MADE(action_size, ar.params_per_dim(cfg.head, cfg.num_bins), cfg.hidden_sizes)


def log_prob(params, model: ar.MADE, cfg: Config, obs_n, actions, sigma=None) -> jax.Array:
    """Σ_d log π(a_d | a_<d, s) per row: AdaCat's smoothed objective when `sigma` is given, else the hard one."""
    out = model.apply(params, actions, obs_n)
    if sigma is None:
        logp = ar.log_prob(cfg.head, out, actions, LO, HI)
    else:
        logp = ar.training_log_prob(cfg.head, out, actions, LO, HI, sigma, cfg.kernel)
    return jnp.sum(logp, axis=-1)


def sample_actions(params, model: ar.MADE, cfg: Config, obs_n, key) -> jax.Array:
    """a ~ π(. | s) for a batch of standardised observations (..., S) -> (..., A), one dimension at a time."""
    apply_fn = lambda a, c: model.apply(params, a, c)
    return ar.sample(apply_fn, cfg.head, key, obs_n.shape[:-1], model.num_dims, LO, HI, obs_n)


def _greedy_dim(head: str, p: jax.Array) -> jax.Array:
    """The greedy value of one conditional with parameters p (..., P): mode (bins), mean (gaussian), the heaviest
    component's mean (mog)."""
    dist = ar.distribution(head, p, LO, HI)
    if dist is not None:
        return dist.mode()
    if head == "gaussian":
        u = p[..., 0] + 0.5  # nets/autoregressive.py's parameterisation, in unit coordinates
    else:
        logits, means, _ = ar._mixture(p)
        u = jnp.take_along_axis(means, jnp.argmax(logits, -1)[..., None], -1)[..., 0]
    return LO + (HI - LO) * u


def greedy_actions(params, model: ar.MADE, cfg: Config, obs_n) -> jax.Array:
    """Each dimension in turn set to its conditional's greedy value (see the module docstring: not the joint mode)."""
    def one_dim(d, a):
        return a.at[..., d].set(_greedy_dim(cfg.head, model.apply(params, a, obs_n)[..., d, :]))

    a = jnp.zeros(obs_n.shape[:-1] + (model.num_dims,), jnp.float32)
    return jax.lax.fori_loop(0, model.num_dims, one_dim, a)


def make_policy(params, model: ar.MADE, cfg: Config, obs_mean, obs_std, greedy: bool = False):
    """`policy(obs, key) -> actions` on RAW observations (..., S): standardised with the training demonstrations'
    statistics (`prepare`'s obs_mean, obs_std), then sampled (or, with `greedy`, decoded greedily)."""
    mean, std = jnp.asarray(obs_mean), jnp.asarray(obs_std)
    if greedy:
        return lambda obs, key: greedy_actions(params, model, cfg, (obs - mean) / std)
    return lambda obs, key: sample_actions(params, model, cfg, (obs - mean) / std, key)


# ---- evaluation in the env -----------------------------------------------------------------------------------------
def episode_outcomes(env: envs.Env, policy, key: jax.Array, num_episodes: int) -> dict:
    """Per episode (arrays of shape (E,)): return, success, length, and the final observation (E, S), of
    `num_episodes` episodes of the time-limited, unbatched `env` with `policy(obs (E, S), key) -> actions (E, A)`.
    No auto-reset: rewards count while an episode is alive; success = `info["success"]` seen at least once while
    alive; length = steps until the episode ended (the time limit if it never did); final = the observation at its
    end (the env is stepped on after the end, but its state is not kept)."""
    k_reset, k_act = jax.random.split(key)
    state = jax.vmap(env.reset)(jax.random.split(k_reset, num_episodes))

    def step(c, k):
        state, alive, ret, success, length, final = c
        state = jax.vmap(env.step)(state, policy(state.obs, k))
        ret = ret + jnp.where(alive, state.reward, 0.0)
        success = success | (alive & (state.info["success"] > 0))
        length = length + alive
        final = jnp.where(alive[:, None], state.obs, final)
        return (state, alive & ~state.done, ret, success, length, final), None

    zeros = jnp.zeros(num_episodes)
    init = (state, jnp.ones(num_episodes, bool), zeros, jnp.zeros(num_episodes, bool), zeros, state.obs)
    (_, _, ret, success, length, final), _ = jax.lax.scan(step, init, jax.random.split(k_act, env.max_steps))
    return {"return": ret, "success": success.astype(jnp.float32), "length": length, "final_obs": final}


def evaluate_policy(env: envs.Env, policy, key: jax.Array, num_episodes: int) -> dict:
    """Mean return, success and length over `episode_outcomes`' episodes."""
    out = episode_outcomes(env, policy, key, num_episodes)
    return {k: out[k].mean() for k in ("return", "success", "length")}


# ---- the Trainer ----------------------------------------------------------------------------------------------------
def make_train(cfg: Config, data: dict, env: envs.Env):
    """`init_carry(key, hp)`, `train_chunk(carry, hp, shared)`, `evaluate(carry, key, hp)` for `runner.Trainer`.

    `data` is `prepare`'s dict; pass `shared_data(data)` as the Trainer's `shared`. `evaluate` rolls the policy
    out in `env` (the evaluation task) and closes over the observation standardisation. The held-out NLL is
    computed at the end of every chunk from the shared test pairs (`shared_data`, at most `cfg.test_rows`) and
    kept in the carry: test rows captured by `evaluate` would be constants XLA spends long compiles folding. Metrics: `eval_success`, `eval_return`, `eval_length`
    (sampled actions), the same with `_greedy`, and `test_nll` (nats per action dimension).
    """
    check_config(cfg)
    action_size = data["actions"].shape[1]
    if action_size != env.action_size or data["obs"].shape[1] != env.observation_size:
        raise ValueError(f"BC data has observations/actions of size {data['obs'].shape[1]}/{action_size}, the env "
                         f"{type(env.unwrapped).__name__} {env.observation_size}/{env.action_size}.")
    model = make_model(cfg, action_size)
    mean, std = jnp.asarray(data["obs_mean"]), jnp.asarray(data["obs_std"])

    def init_carry(key: jax.Array, hp: HParams) -> Carry:
        k_init, k_rng = jax.random.split(key)
        params = model.init(k_init, jnp.zeros((1, action_size)), jnp.zeros((1, data["obs"].shape[1])))
        return Carry(params, adam.init(params), k_rng, jnp.zeros((), jnp.int32), jnp.full((), jnp.nan, jnp.float32))

    def train_chunk(carry: Carry, hp: HParams, shared: dict) -> tuple[Carry, dict]:
        size = shared["obs"].shape[0]
        sigma = hp.smoothing * (HI - LO)

        def step(carry: Carry, _):
            rng, k_batch = jax.random.split(carry.rng)
            idx = jax.random.randint(k_batch, (cfg.batch_size,), 0, size)
            obs, act = shared["obs"][idx], shared["actions"][idx]
            loss_fn = lambda p: -jnp.mean(log_prob(p, model, cfg, obs, act, sigma))
            loss, grads = jax.value_and_grad(loss_fn)(carry.params)
            direction, opt_state = adam.update(grads, carry.opt_state, carry.params)
            params = jax.tree.map(lambda p, d: p - hp.lr * (d + hp.weight_decay * p * (p.ndim > 1)),
                                  carry.params, direction)
            return carry._replace(params=params, opt_state=opt_state, rng=rng, num_updates=carry.num_updates + 1), loss

        carry, losses = jax.lax.scan(step, carry, None, length=cfg.updates_per_chunk)
        obs_test, act_test = shared["obs_test"][:cfg.test_rows], shared["actions_test"][:cfg.test_rows]
        test_nll = -jnp.mean(log_prob(carry.params, model, cfg, obs_test, act_test)) / action_size
        return carry._replace(test_nll=test_nll), {"train_loss_per_dim": jnp.mean(losses) / action_size,
                                                   "num_updates": carry.num_updates}

    def evaluate(carry: Carry, key: jax.Array, hp: HParams) -> dict:
        params = carry.params
        sampled = make_policy(params, model, cfg, mean, std)
        greedy = make_policy(params, model, cfg, mean, std, greedy=True)
        # the same key: both policies start from the same initial states (a paired comparison)
        out = {f"eval_{k}": v for k, v in evaluate_policy(env, sampled, key, cfg.eval_episodes).items()}
        out.update({f"eval_{k}_greedy": v for k, v in evaluate_policy(env, greedy, key, cfg.eval_episodes).items()})
        out["test_nll"] = carry.test_nll
        return out

    return init_carry, train_chunk, evaluate


def shared_data(data: dict) -> dict:
    """The arrays `train_chunk` reads (device arrays, stored once for the whole population)."""
    return {k: jnp.asarray(data[k]) for k in ("obs", "actions", "obs_test", "actions_test")}
