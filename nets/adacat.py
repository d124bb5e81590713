"""AdaCat: the adaptive categorical distribution on an interval, and a flax head that outputs it.

Li, Jain & Abbeel, "AdaCat: Adaptive Categorical Discretization for Autoregressive Models", UAI 2022.

The distribution
----------------
Per dimension, k bins partition [lo, hi]. Width logits θ_w and mass logits θ_h give, in unit coordinates
u = (x - lo) / (hi - lo),

    w = softmax(θ_w)          bin widths (sum 1)          e_i = w_1 + ... + w_i    right edge of bin i
    h = softmax(θ_h)          bin masses (sum 1)          H_i = h_1 + ... + h_i    cdf at e_i
    p(u) = h_i / w_i          on bin i                    log p(u) = log_softmax(θ_h)_i - log_softmax(θ_w)_i

a piecewise-uniform density whose resolution goes where the masses are: a categorical over FIXED bins (w = 1/k)
is the special case θ_w = 0. Densities in x are p(u) / (hi - lo). Closed forms (all vectorised over bins, no
Python loop): cdf and icdf are piecewise linear, sampling is icdf of a uniform, mean = Σ h_i (e_{i-1} + e_i)/2,
entropy = -Σ h_i log(h_i / w_i) (+ log(hi - lo)), mode = centre of the densest bin.

The smoothed objective (paper, section 3.3)
-------------------------------------------
The hard log-likelihood log p(x) is piecewise constant in x and in the bin edges: its gradient says nothing about
WHERE inside a bin a point lies, so it can only shrink the bin that holds the point (and, on finite data, collapse a
bin onto a point for an unbounded likelihood). The paper replaces the point x by a narrow kernel q of scale σ
(a Gaussian or a uniform, truncated to [lo, hi]) and maximises the expected log-density in closed form:

    E_q[log p] = Σ_i q(bin_i) (log h_i - log w_i),     q(bin_i) = (F(e_i) - F(e_{i-1})) / (F(1) - F(0))

with F the kernel's cdf. q(bin_i) depends smoothly on the edges, so the edges move toward the data; as σ → 0 it
tends to the hard log-likelihood (tested). Use `smoothed_log_prob` to train and `log_prob` to evaluate.

Reference code and where this departs from it (ColinQiyangLi/AdaCat `tabular/adacat.py`, torch; and
ColinQiyangLi/AdaCat-pip `adacat/jax.py`, distrax; both read):
- The references live on [0, 1] and rescale the data outside; here [lo, hi] is part of the distribution (per
  dimension, broadcast against the batch), so log-densities are in the data's units.
- The torch reference's `entropy` weights the log-ratios by the widths, Σ w_i log(h_i/w_i), which is not the
  entropy (it is minus KL(uniform ‖ p)); the jax reference and this file use -Σ h_i log(h_i/w_i).
- The jax reference normalises the truncated Gaussian by (F(1) - F(0) + 1e-6); here the kernel's centre is
  clipped into [lo, hi], which bounds the normaliser below by 1/2, so no epsilon is needed. The uniform kernel is
  added (the paper mentions both).
- Bin lookup: the references call `searchsorted` on the cumulative widths; here `Σ_i [u ≥ e_i]` over the k-1
  inner edges (the same bin, with ties going right), which broadcasts over any batch shape without reshapes.
- The last cumulative width and mass are set to exactly 1 (float32 cumsums end at 0.9999999), so x = hi and the
  icdf at 1 stay in the last bin.

Outside [lo, hi]: `log_prob` is -inf (the density is zero there), `cdf` is 0 or 1, the smoothed objective clips
the kernel's centre to the interval. Data that may leave the interval should be checked on the host with
`check_in_support`, which names the offending dimension. `AdaCat.create` checks k ≥ 1, matching logit shapes and
lo < hi when the values are concrete (not traced).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

KERNELS = ("gaussian", "uniform")


def _concrete(x) -> np.ndarray | None:
    """The value of `x` as numpy when it is known at trace time, else None (inside jit/vmap)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def check_in_support(x, lo, hi, name: str = "values") -> None:
    """Raise ValueError naming the first dimension (last axis) of concrete `x` that leaves [lo, hi]."""
    x, lo, hi = np.asarray(x), np.broadcast_to(lo, np.shape(x)[-1:]), np.broadcast_to(hi, np.shape(x)[-1:])
    bad = (x < lo) | (x > hi) | ~np.isfinite(x)
    if bad.any():
        d = int(np.flatnonzero(bad.reshape(-1, x.shape[-1]).any(0))[0])
        col = x.reshape(-1, x.shape[-1])[:, d]
        raise ValueError(f"{name}: dimension {d} has values in [{np.nanmin(col):.6g}, {np.nanmax(col):.6g}] (or "
                         f"non-finite), outside the AdaCat support [{lo[d]:.6g}, {hi[d]:.6g}]. Widen lo/hi (e.g. "
                         f"from the data's min/max with a margin) or clip the data first.")


def _gather(table: jax.Array, index: jax.Array) -> jax.Array:
    """table[..., index] along the last (bin) axis, broadcasting table's batch shape against index's shape."""
    table = jnp.broadcast_to(table, index.shape + table.shape[-1:])
    return jnp.take_along_axis(table, index[..., None], axis=-1)[..., 0]


def _bin_of(cum: jax.Array, u: jax.Array) -> jax.Array:
    """The bin i with cum[i-1] <= u < cum[i] (ties go right; u >= 1 lands in the last bin)."""
    return jnp.sum(u[..., None] >= cum[..., :-1], axis=-1)


@flax.struct.dataclass
class AdaCat:
    """A batch of AdaCat distributions: logits of shape batch + (k,), bounds broadcastable to the batch shape."""

    width_logits: jax.Array
    mass_logits: jax.Array
    lo: jax.Array
    hi: jax.Array

    @classmethod
    def create(cls, width_logits, mass_logits, lo=0.0, hi=1.0) -> "AdaCat":
        width_logits, mass_logits = jnp.asarray(width_logits), jnp.asarray(mass_logits)
        if width_logits.ndim < 1 or width_logits.shape[-1] < 1:
            raise ValueError(f"AdaCat needs at least one bin: width logits have shape {width_logits.shape}, "
                             f"expected (..., k) with k >= 1.")
        if width_logits.shape != mass_logits.shape:
            raise ValueError(f"AdaCat width logits {width_logits.shape} and mass logits {mass_logits.shape} must "
                             f"have the same shape (..., k).")
        lo_c, hi_c = _concrete(lo), _concrete(hi)
        if lo_c is not None and hi_c is not None and not np.all(np.asarray(lo_c) < np.asarray(hi_c)):
            raise ValueError(f"AdaCat needs lo < hi in every dimension; got lo={lo_c}, hi={hi_c}.")
        dtype = width_logits.dtype
        return cls(width_logits, mass_logits, jnp.asarray(lo, dtype), jnp.asarray(hi, dtype))

    # ---- the bins -------------------------------------------------------------------------------------------
    @property
    def num_bins(self) -> int:
        return self.width_logits.shape[-1]

    @property
    def widths(self) -> jax.Array:
        return jax.nn.softmax(self.width_logits, axis=-1)

    @property
    def masses(self) -> jax.Array:
        return jax.nn.softmax(self.mass_logits, axis=-1)

    @property
    def log_density_ratio(self) -> jax.Array:
        """log(h_i / w_i): the log-density of bin i in unit coordinates."""
        return jax.nn.log_softmax(self.mass_logits, axis=-1) - jax.nn.log_softmax(self.width_logits, axis=-1)

    @staticmethod
    def _cumulative(sizes: jax.Array) -> jax.Array:
        return jnp.cumsum(sizes, axis=-1).at[..., -1].set(1.0)

    @property
    def right_edges(self) -> jax.Array:
        """Cumulative widths e_i in unit coordinates; the last is exactly 1."""
        return self._cumulative(self.widths)

    def _to_unit(self, x) -> jax.Array:
        return (jnp.asarray(x, self.width_logits.dtype) - self.lo) / (self.hi - self.lo)

    def _from_unit(self, u) -> jax.Array:
        return self.lo + (self.hi - self.lo) * u

    def _log_scale(self) -> jax.Array:
        return jnp.log(self.hi - self.lo)

    # ---- densities --------------------------------------------------------------------------------------------
    def log_prob(self, x) -> jax.Array:
        """Hard log-density at x (shape sample_shape + batch_shape); -inf outside [lo, hi]."""
        u = self._to_unit(x)
        index = _bin_of(self.right_edges, u)
        logp = _gather(self.log_density_ratio, index) - self._log_scale()
        return jnp.where((u >= 0.0) & (u <= 1.0), logp, -jnp.inf)

    def prob(self, x) -> jax.Array:
        return jnp.exp(self.log_prob(x))

    def smoothed_log_prob(self, x, sigma, kernel: str = "gaussian") -> jax.Array:
        """E_{x' ~ q(.|x)}[log p(x')], q = a `kernel` of scale `sigma` (data units) truncated to [lo, hi]."""
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r}: expected one of {KERNELS}.")
        sigma_c = _concrete(sigma)
        if sigma_c is not None and not np.all(sigma_c > 0):
            raise ValueError(f"sigma={sigma_c}: the smoothing scale must be > 0 (use log_prob for the hard "
                             f"log-likelihood, the sigma -> 0 limit).")
        u = jnp.clip(self._to_unit(x), 0.0, 1.0)[..., None]
        scale = (jnp.asarray(sigma, u.dtype) / (self.hi - self.lo))[..., None]
        edges = jnp.concatenate([jnp.zeros_like(self.right_edges[..., :1]), self.right_edges], axis=-1)
        if kernel == "gaussian":
            kernel_cdf = jax.scipy.stats.norm.cdf((edges - u) / scale)
        else:
            kernel_cdf = jnp.clip((edges - u + scale) / (2.0 * scale), 0.0, 1.0)
        # The centre lies in [0, 1], so at least half the kernel's mass is inside: the normaliser is >= 1/2.
        bin_mass = jnp.diff(kernel_cdf, axis=-1) / (kernel_cdf[..., -1:] - kernel_cdf[..., :1])
        return jnp.sum(bin_mass * self.log_density_ratio, axis=-1) - self._log_scale()

    def cdf(self, x) -> jax.Array:
        u = jnp.clip(self._to_unit(x), 0.0, 1.0)
        right, widths = self.right_edges, self.widths
        index = _bin_of(right, u)
        w = _gather(widths, index)
        left = _gather(right, index) - w
        frac = jnp.clip((u - left) / jnp.where(w > 0, w, 1.0), 0.0, 1.0)
        mass_right, masses = self._cumulative(self.masses), self.masses
        m = _gather(masses, index)
        return jnp.clip(_gather(mass_right, index) - m + m * frac, 0.0, 1.0)

    def icdf(self, q) -> jax.Array:
        q = jnp.clip(jnp.asarray(q, self.width_logits.dtype), 0.0, 1.0)
        mass_right, masses = self._cumulative(self.masses), self.masses
        index = _bin_of(mass_right, q)
        m = _gather(masses, index)
        frac = jnp.clip((q - (_gather(mass_right, index) - m)) / jnp.where(m > 0, m, 1.0), 0.0, 1.0)
        w = _gather(self.widths, index)
        left = _gather(self.right_edges, index) - w
        return self._from_unit(jnp.clip(left + w * frac, 0.0, 1.0))

    def sample(self, key: jax.Array, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Samples of shape sample_shape + batch_shape, by the inverse cdf of uniforms."""
        q = jax.random.uniform(key, tuple(sample_shape) + self.width_logits.shape[:-1], self.width_logits.dtype)
        return self.icdf(q)

    # ---- summaries ----------------------------------------------------------------------------------------------
    def _centres(self) -> jax.Array:
        right = self.right_edges
        return right - 0.5 * self.widths

    def mean(self) -> jax.Array:
        return self._from_unit(jnp.sum(self.masses * self._centres(), axis=-1))

    def variance(self) -> jax.Array:
        """Σ h_i (c_i² + w_i²/12) - mean² in unit coordinates, times (hi - lo)²."""
        c, w, h = self._centres(), self.widths, self.masses
        mean_u = jnp.sum(h * c, axis=-1)
        return (jnp.sum(h * (c ** 2 + w ** 2 / 12.0), axis=-1) - mean_u ** 2) * (self.hi - self.lo) ** 2

    def entropy(self) -> jax.Array:
        """Differential entropy in nats: -Σ h_i log(h_i / w_i) + log(hi - lo)."""
        return -jnp.sum(self.masses * self.log_density_ratio, axis=-1) + self._log_scale()

    def mode(self) -> jax.Array:
        """The centre of the bin with the highest density."""
        index = jnp.argmax(self.log_density_ratio, axis=-1)
        return self._from_unit(_gather(self._centres(), index))


def uniform_categorical(mass_logits, lo=0.0, hi=1.0) -> AdaCat:
    """The fixed-bin baseline: k equal-width bins (AdaCat with zero width logits)."""
    mass_logits = jnp.asarray(mass_logits)
    return AdaCat.create(jnp.zeros_like(mass_logits), mass_logits, lo, hi)


class AdaCatHead(nn.Module):
    """Features (..., F) -> (width_logits, mass_logits), each (..., num_dims, num_bins).

    The output layer starts near zero, i.e. near equal widths and masses: a uniform density on [lo, hi].
    """

    num_dims: int
    num_bins: int
    init_scale: float = 0.01

    @nn.compact
    def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.num_bins < 1 or self.num_dims < 1:
            raise ValueError(f"AdaCatHead needs num_bins >= 1 and num_dims >= 1; got {self.num_bins}, "
                             f"{self.num_dims}.")
        init = nn.initializers.variance_scaling(self.init_scale, "fan_in", "normal")
        out = nn.Dense(2 * self.num_dims * self.num_bins, kernel_init=init)(features)
        out = out.reshape(features.shape[:-1] + (self.num_dims, 2, self.num_bins))
        return out[..., 0, :], out[..., 1, :]
