"""Autoregressive densities over a vector: a MADE-style masked MLP and the per-dimension distribution families.

    p(x | c) = Π_d p(x_d | x_<d, c)

`MADE` (Germain et al., 2015) computes the parameters of every conditional in ONE forward pass: hidden unit j gets
a degree m_j in 0..D-1 and sees only inputs with index ≤ m_j (layer to layer: m_j ≥ m_i); the outputs of dimension
d see only hidden units with m_j < d. The context c (e.g. the state, when modelling the action or the next state) enters the first layer
unmasked. Training is one pass; sampling takes D passes (`sample`).

Families, all modelled in unit coordinates u = (x - lo) / (hi - lo) per dimension (log-densities are then
corrected by -log(hi - lo), so every NLL is in the data's units):

    adacat       AdaCat (nets/adacat.py), 2k parameters per dimension, trained with the smoothed objective
    categorical  k fixed equal-width bins (AdaCat with θ_w = 0), k parameters; its hard likelihood is smooth in θ
    gaussian     mean and log-std, 2 parameters (starting at the interval's centre with std 1)
    mog          a mixture of k Gaussians: logits, means, log-stds, 3k parameters (starting spread on a grid)

The Gaussian families put mass outside [lo, hi]; that is their handicap on bounded data, not a bug.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nets.adacat import AdaCat
from nets.mlp import default_init

FAMILIES = ("adacat", "categorical", "gaussian", "mog")
LOG_STD_MIN, LOG_STD_MAX = -9.0, 2.0  # unit coordinates: e^-9 ≈ 1e-4 of the interval


def params_per_dim(family: str, num_bins: int) -> int:
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}: expected one of {FAMILIES}.")
    if num_bins < 1:
        raise ValueError(f"num_bins={num_bins}: needs at least one bin/component.")
    return {"adacat": 2 * num_bins, "categorical": num_bins, "gaussian": 2, "mog": 3 * num_bins}[family]


def made_degrees(num_dims: int, hidden_sizes: Sequence[int]) -> list[np.ndarray]:
    """Degrees of the input and hidden units: inputs 1..D; hidden units cycle over 0..D-1, where degree 0 units
    see the context only (so the first dimension's outputs still depend on the context)."""
    degrees = [np.arange(1, num_dims + 1)]
    for size in hidden_sizes:
        degrees.append(np.arange(size) % num_dims)
    return degrees


class MADE(nn.Module):
    """x (..., D), context (..., C) or None -> per-dimension parameters (..., D, P); output d sees x_<d only."""

    num_dims: int
    params_per_dim: int
    hidden_sizes: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        D, P = self.num_dims, self.params_per_dim
        if not self.hidden_sizes or D < 1:
            raise ValueError(f"MADE needs num_dims >= 1 and at least one hidden layer; got num_dims={D}, "
                             f"hidden_sizes={tuple(self.hidden_sizes)}.")
        degrees = made_degrees(D, self.hidden_sizes)
        h = x
        for i, size in enumerate(self.hidden_sizes):
            mask = (degrees[i + 1][None, :] >= degrees[i][:, None]).astype(np.float32)
            kernel = self.param(f"kernel_{i}", default_init(), (h.shape[-1], size))
            h = h @ (kernel * mask) + self.param(f"bias_{i}", nn.initializers.zeros, (size,))
            if i == 0 and context is not None:
                h = h + nn.Dense(size, kernel_init=default_init(), use_bias=False, name="context")(context)
            h = nn.relu(h)
        out_degrees = np.repeat(np.arange(1, D + 1), P)
        mask = (out_degrees[None, :] > degrees[-1][:, None]).astype(np.float32)
        kernel = self.param("kernel_out", nn.initializers.variance_scaling(0.01, "fan_in", "normal"),
                            (h.shape[-1], D * P))
        out = h @ (kernel * mask) + self.param("bias_out", nn.initializers.zeros, (D * P,))
        return out.reshape(out.shape[:-1] + (D, P))


# ---- families ---------------------------------------------------------------------------------------------------
def _split(params: jax.Array, n: int):
    return [params[..., i * n:(i + 1) * n] for i in range(params.shape[-1] // n)]


def _gaussian_log_prob(u, mean, log_std):
    log_std = jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
    return -0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi)


def _mixture(params: jax.Array):
    """(logits, means, log_stds) of a k-component mixture. The network's zero-ish initial outputs are offsets from
    means on the grid (i + 1/2)/k with std 1/k: the components start spread over the interval (identical starting
    components would stay identical, a symmetric saddle)."""
    logits, means, log_stds = _split(params, params.shape[-1] // 3)
    k = logits.shape[-1]
    grid = (jnp.arange(k) + 0.5) / k
    return logits, means + grid, jnp.clip(log_stds - jnp.log(k), LOG_STD_MIN, LOG_STD_MAX)


def distribution(family: str, params: jax.Array, lo, hi) -> AdaCat | None:
    """The AdaCat (or fixed-bin categorical) object for `params` (..., D, P); None for the Gaussian families."""
    if family == "adacat":
        width, mass = _split(params, params.shape[-1] // 2)
        return AdaCat.create(width, mass, lo, hi)
    if family == "categorical":
        return AdaCat.create(jnp.zeros_like(params), params, lo, hi)
    return None


def log_prob(family: str, params: jax.Array, x: jax.Array, lo, hi) -> jax.Array:
    """Hard log-density of each dimension (..., D), in data units."""
    dist = distribution(family, params, lo, hi)
    if dist is not None:
        return dist.log_prob(x)
    u = (x - lo) / (hi - lo)
    log_scale = jnp.log(jnp.asarray(hi, params.dtype) - lo)
    if family == "gaussian":
        return _gaussian_log_prob(u, params[..., 0] + 0.5, params[..., 1]) - log_scale
    logits, means, log_stds = _mixture(params)
    comp = _gaussian_log_prob(u[..., None], means, log_stds)
    return jax.nn.logsumexp(jax.nn.log_softmax(logits, -1) + comp, axis=-1) - log_scale


def training_log_prob(family: str, params: jax.Array, x: jax.Array, lo, hi, sigma, kernel: str = "gaussian"):
    """The objective to maximise: the smoothed log-likelihood for AdaCat, the exact one for the others."""
    if family == "adacat":
        return distribution(family, params, lo, hi).smoothed_log_prob(x, sigma, kernel)
    return log_prob(family, params, x, lo, hi)


def sample_dim(family: str, params: jax.Array, key: jax.Array, lo, hi) -> jax.Array:
    """One sample per row of `params` (..., P) -> (...)."""
    dist = distribution(family, params, lo, hi)
    if dist is not None:
        return dist.sample(key)
    if family == "gaussian":
        mean, log_std = params[..., 0] + 0.5, jnp.clip(params[..., 1], LOG_STD_MIN, LOG_STD_MAX)
        u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    else:
        logits, means, log_stds = _mixture(params)
        k1, k2 = jax.random.split(key)
        comp = jax.random.categorical(k1, logits)[..., None]
        mean = jnp.take_along_axis(means, comp, -1)[..., 0]
        log_std = jnp.take_along_axis(log_stds, comp, -1)[..., 0]
        u = mean + jnp.exp(log_std) * jax.random.normal(k2, mean.shape)
    return lo + (hi - lo) * u


def sample(apply_fn, family: str, key: jax.Array, batch_shape: tuple, num_dims: int, lo, hi,
           context: jax.Array | None = None) -> jax.Array:
    """x ~ p(. | context) by D passes of `apply_fn(x, context) -> (..., D, P)`, one dimension at a time."""
    lo = jnp.broadcast_to(jnp.asarray(lo, jnp.float32), (num_dims,))
    hi = jnp.broadcast_to(jnp.asarray(hi, jnp.float32), (num_dims,))

    def one_dim(d, carry):
        x, key = carry
        key, sub = jax.random.split(key)
        params = apply_fn(x, context)[..., d, :]
        return x.at[..., d].set(sample_dim(family, params, sub, lo[d], hi[d])), key

    x = jnp.broadcast_to((lo + hi) / 2, tuple(batch_shape) + (num_dims,))
    x, _ = jax.lax.fori_loop(0, num_dims, one_dim, (x, key))
    return x
