"""Autoregressive density estimation with an AdaCat head (or a baseline head), as a runner `Trainer`.

Paper: Li, Jain & Abbeel, "AdaCat: Adaptive Categorical Discretization for Autoregressive Models", UAI 2022
(the tabular density-estimation experiments, section 5.1, and the "trajectories" case).

Model: p(x | c) = Π_d p(x_d | x_<d, c) with a MADE (`nets/autoregressive.py`) giving each conditional's
parameters in one pass; the family is AdaCat, a fixed-bin categorical, a Gaussian or a mixture of Gaussians.
Data live on per-dimension intervals [lo, hi] (`bounds`: the data's min/max widened by a margin).

Objective, per minibatch of B rows (x, c):

    loss = -(1/B) Σ_b Σ_d L_d(x_bd | x_b<d, c_b)

with L = the smoothed log-likelihood for AdaCat (kernel scale σ = hp.smoothing · (hi - lo), nets/adacat.py) and
the exact log-likelihood for the other families. Evaluation reports the HARD negative log-likelihood on held-out
rows, in nats per dimension (`test_nll`), for every family alike.

Reference code (ColinQiyangLi/AdaCat `tabular/train.py`, read) and where this departs from it:
- The reference gives each dimension its own MLP over x_<d (D MLPs, softplus activations); here one MADE with
  ReLU computes all conditionals (fewer parameters, the usual choice in JAX; the paper's comparison is between
  heads at equal trunk, which holds here too).
- The reference's smoothing is 1e-4 of the unit interval with a truncated Gaussian and Adam 3e-4 with weight
  decay 1e-4 and a step schedule; here the smoothing scale, learning rate and weight decay are sweepable
  hyperparameters (defaults: 1e-3, 1e-3, 0) and the step size is constant.
- Bounds: the reference takes min/max over train AND test data without a margin; here over the training data
  with a margin (`bounds`), and test rows are clipped into [lo, hi] (`prepare`, counted in `clipped_fraction`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nets import autoregressive as ar


@dataclasses.dataclass(frozen=True)
class Config:
    """Static settings: changing one recompiles."""

    family: str = "adacat"
    """Per-dimension distribution: adacat, categorical (fixed equal bins), gaussian, mog."""
    num_bins: int = 32
    """Bins (adacat, categorical) or mixture components (mog); ignored by gaussian."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """MADE hidden layers."""
    kernel: str = "gaussian"
    """AdaCat smoothing kernel: gaussian or uniform (truncated to [lo, hi])."""
    batch_size: int = 256
    """Rows per gradient step."""
    updates_per_chunk: int = 250
    """Gradient steps per chunk (one lax.scan)."""


@flax.struct.dataclass
class HParams:
    """Sweepable hyperparameters (vmapped over the population)."""

    lr: float = 1e-3
    """Adam step size."""
    smoothing: float = 1e-3
    """AdaCat kernel scale as a fraction of each dimension's interval (σ = smoothing · (hi - lo))."""
    weight_decay: float = 0.0
    """Decoupled weight decay on the MADE's weights."""

    RANGES = {"lr": "[0, inf)", "smoothing": "(0, inf)", "weight_decay": "[0, inf)"}  # checked by the runner


class Carry(NamedTuple):
    params: Any
    opt_state: Any
    rng: jax.Array
    num_updates: jax.Array
    test_nll: jax.Array  # hard test NLL per dimension at the end of the last chunk (NaN before the first)


adam = optax.scale_by_adam()


def bounds(x: np.ndarray, margin: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension [min - margin·range, max + margin·range] of the data (a constant column gets ±0.5)."""
    lo, hi = x.min(0).astype(np.float64), x.max(0).astype(np.float64)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (lo - margin * span).astype(np.float32), (hi + margin * span).astype(np.float32)


def prepare(x_train, x_test, c_train=None, c_test=None, margin: float = 0.01) -> dict:
    """The dataset dict a density `Trainer` shares: rows, contexts (zero-width when None), bounds, test rows."""
    x_train, x_test = np.asarray(x_train, np.float32), np.asarray(x_test, np.float32)
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1] or len(x_train) == 0:
        raise ValueError(f"density data: expected x_train (N, D) and x_test (M, D) with the same D and N > 0; got "
                         f"{x_train.shape} and {x_test.shape}.")
    if not (np.isfinite(x_train).all() and np.isfinite(x_test).all()):
        raise ValueError("density data: x_train/x_test contain NaN or inf.")
    zeros = lambda n: np.zeros((n, 0), np.float32)
    c_train = zeros(len(x_train)) if c_train is None else np.asarray(c_train, np.float32)
    c_test = zeros(len(x_test)) if c_test is None else np.asarray(c_test, np.float32)
    if len(c_train) != len(x_train) or len(c_test) != len(x_test) or c_train.shape[1:] != c_test.shape[1:]:
        raise ValueError(f"density data: contexts {c_train.shape}/{c_test.shape} do not match rows "
                         f"{x_train.shape}/{x_test.shape}.")
    lo, hi = bounds(x_train, margin)
    clipped = np.mean((x_test < lo) | (x_test > hi))
    return {"x": x_train, "c": c_train, "x_test": np.clip(x_test, lo, hi), "c_test": c_test, "lo": lo, "hi": hi,
            "clipped_fraction": np.float32(clipped)}


def num_parameters(params) -> int:
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def make_model(cfg: Config, num_dims: int) -> ar.MADE:
    return ar.MADE(num_dims, ar.params_per_dim(cfg.family, cfg.num_bins), cfg.hidden_sizes)


def mean_log_prob(params, model, cfg: Config, x, c, lo, hi, sigma=None) -> jax.Array:
    """Mean over rows of Σ_d log p(x_d | x_<d, c): smoothed for AdaCat when `sigma` is given, else hard."""
    out = model.apply(params, x, c if c.shape[-1] else None)
    if sigma is None:
        logp = ar.log_prob(cfg.family, out, x, lo, hi)
    else:
        logp = ar.training_log_prob(cfg.family, out, x, lo, hi, sigma, cfg.kernel)
    return jnp.mean(jnp.sum(logp, axis=-1))


def shared_arrays(data: dict, test_rows: int = 4096) -> dict:
    """The device arrays a density `Trainer` shares across the population: training rows, the first `test_rows`
    test rows and the bounds."""
    return {"x": jnp.asarray(data["x"]), "c": jnp.asarray(data["c"]), "lo": jnp.asarray(data["lo"]),
            "hi": jnp.asarray(data["hi"]), "x_test": jnp.asarray(data["x_test"][:test_rows]),
            "c_test": jnp.asarray(data["c_test"][:test_rows])}


def make_train(cfg: Config, data: dict):
    """`init_carry(key, hp)`, `train_chunk(carry, hp, shared)`, `evaluate(carry, key, hp)` for `runner.Trainer`.

    `data` is `prepare`'s dict (for shapes); `shared` is `shared_arrays(data)`, the Trainer's `shared` argument.
    The hard test NLL per dimension is computed at the end of every chunk from the shared test rows and kept in
    the carry, which `evaluate` reports: evaluation has no `shared` argument, and test rows captured in its
    closure would be constants of the compiled program (XLA then spends tens of seconds constant-folding them).
    """
    if cfg.family not in ar.FAMILIES:
        raise ValueError(f"family={cfg.family!r}: expected one of {ar.FAMILIES}.")
    num_dims = data["x"].shape[1]
    model = make_model(cfg, num_dims)

    def init_carry(key: jax.Array, hp: HParams) -> Carry:
        k_init, k_rng = jax.random.split(key)
        params = model.init(k_init, jnp.zeros((1, num_dims)),
                            jnp.zeros((1, data["c"].shape[1])) if data["c"].shape[1] else None)
        return Carry(params, adam.init(params), k_rng, jnp.zeros((), jnp.int32), jnp.full((), jnp.nan, jnp.float32))

    def train_chunk(carry: Carry, hp: HParams, shared: dict) -> tuple[Carry, dict]:
        size = shared["x"].shape[0]
        sigma = hp.smoothing * (shared["hi"] - shared["lo"])

        def step(carry: Carry, _):
            rng, k_batch = jax.random.split(carry.rng)
            idx = jax.random.randint(k_batch, (cfg.batch_size,), 0, size)
            x, c = shared["x"][idx], shared["c"][idx]
            loss_fn = lambda p: -mean_log_prob(p, model, cfg, x, c, shared["lo"], shared["hi"], sigma)
            loss, grads = jax.value_and_grad(loss_fn)(carry.params)
            direction, opt_state = adam.update(grads, carry.opt_state, carry.params)
            params = jax.tree.map(lambda p, d: p - hp.lr * (d + hp.weight_decay * p * (p.ndim > 1)),
                                  carry.params, direction)
            return carry._replace(params=params, opt_state=opt_state, rng=rng, num_updates=carry.num_updates + 1), loss

        carry, losses = jax.lax.scan(step, carry, None, length=cfg.updates_per_chunk)
        test_nll = -mean_log_prob(carry.params, model, cfg, shared["x_test"], shared["c_test"], shared["lo"],
                                  shared["hi"]) / num_dims
        return carry._replace(test_nll=test_nll), {"train_loss_per_dim": jnp.mean(losses) / num_dims,
                                                   "num_updates": carry.num_updates}

    def evaluate(carry: Carry, key: jax.Array, hp: HParams) -> dict:
        return {"test_nll": carry.test_nll}

    return init_carry, train_chunk, evaluate
