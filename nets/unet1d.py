"""A 1-D temporal convolutional UNet with FiLM conditioning (Diffusion Policy's ConditionalUnet1D, in flax).

Chi et al., "Diffusion Policy: Visuomotor Policy Learning via Action Diffusion" (RSS 2023), as used by HATO
(learning/dp/models.py in ToruOwO/hato, read). The network maps a noisy action sequence x (B, T, A), the
diffusion step k and a global conditioning vector c (B, C) to a sequence of the same shape (the predicted noise):

    e = MLP(sinusoid(k))  (dim `step_embed_dim`);   g = [e, c]
    down levels d_i:   ResBlock(., d_i; g) -> ResBlock(d_i, d_i; g) -> Downsample (stride-2 conv, all but last)
    middle:            ResBlock(d_last, d_last; g) x 2
    up levels:         [h, skip] -> ResBlock(., d_i; g) -> ResBlock(d_i, d_i; g) -> Upsample (transposed conv)
    out:               Conv1dBlock(d_0) -> Conv1d(1x1 -> A)

    ResBlock(x; g) = Conv1dBlock(FiLM(Conv1dBlock(x); g)) + Conv1x1(x),   FiLM(h; g) = scale(g) * h + bias(g)
    Conv1dBlock = Conv1d(kernel) -> GroupNorm(n_groups) -> Mish

Reference sizes: down_dims (256, 512, 1024), kernel 5, n_groups 8, step embedding 256. Sizes here are fields
(tiny defaults for the CPU). Departure: any horizon T works. The reference's Upsample (ConvTranspose1d(4, 2, 1))
doubles the length, so an odd length after a stride-2 Downsample comes back one longer than its skip connection
and the concatenation fails (a known trap); here each upsampled sequence is cropped or edge-padded to its skip's
length, so T = 7, 8, 9, 16 all work (tested).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def mish(x):
    return x * jnp.tanh(jax.nn.softplus(x))


def sinusoidal_embedding(k: jax.Array, dim: int) -> jax.Array:
    """Transformer positional encoding of diffusion steps k (B,) -> (B, dim): [sin(k w_j), cos(k w_j)]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half) / max(half - 1, 1))
    angles = k.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class Conv1dBlock(nn.Module):
    features: int
    kernel_size: int
    n_groups: int

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.features, (self.kernel_size,), padding="SAME")(x)
        x = nn.GroupNorm(num_groups=min(self.n_groups, self.features))(x)
        return mish(x)


class ResBlock(nn.Module):
    features: int
    kernel_size: int
    n_groups: int

    @nn.compact
    def __call__(self, x, g):
        h = Conv1dBlock(self.features, self.kernel_size, self.n_groups)(x)
        film = nn.Dense(2 * self.features)(mish(g))[:, None, :]     # per-channel scale and bias
        scale, bias = jnp.split(film, 2, axis=-1)
        h = scale * h + bias
        h = Conv1dBlock(self.features, self.kernel_size, self.n_groups)(h)
        skip = x if x.shape[-1] == self.features else nn.Conv(self.features, (1,))(x)
        return h + skip


def match_length(x, length: int):
    """Crop or edge-pad x (B, T, C) along T to `length` (odd horizons after stride-2 down/up-sampling)."""
    t = x.shape[1]
    if t >= length:
        return x[:, :length]
    return jnp.concatenate([x, jnp.repeat(x[:, -1:], length - t, axis=1)], axis=1)


class ConditionalUnet1D(nn.Module):
    """ε-network: `(x (B, T, A), k (B,), cond (B, C)) -> (B, T, A)`."""

    action_dim: int
    down_dims: Sequence[int] = (32, 64)
    kernel_size: int = 5
    n_groups: int = 8
    step_embed_dim: int = 32

    @nn.compact
    def __call__(self, x, k, cond):
        e = sinusoidal_embedding(k, self.step_embed_dim)
        e = nn.Dense(self.step_embed_dim)(mish(nn.Dense(4 * self.step_embed_dim)(e)))
        g = jnp.concatenate([e, cond], axis=-1)
        block = lambda f: ResBlock(f, self.kernel_size, self.n_groups)
        skips, h = [], x
        for i, f in enumerate(self.down_dims):
            h = block(f)(block(f)(h, g), g)
            skips.append(h)
            if i < len(self.down_dims) - 1:
                h = nn.Conv(f, (3,), strides=(2,), padding=((1, 1),))(h)
        for _ in range(2):
            h = block(self.down_dims[-1])(h, g)
        for i in reversed(range(len(self.down_dims))):
            f = self.down_dims[i]
            h = match_length(h, skips[i].shape[1])
            h = jnp.concatenate([h, skips[i]], axis=-1)
            h = block(f)(block(f)(h, g), g)
            if i > 0:
                h = nn.ConvTranspose(self.down_dims[i - 1], (4,), strides=(2,), padding="SAME")(h)
        h = Conv1dBlock(self.down_dims[0], self.kernel_size, self.n_groups)(h)
        return nn.Conv(self.action_dim, (1,))(h)


class MLPDenoiser(nn.Module):
    """A flat MLP ε-network (HATO's `without_sampling`-style MLP baseline): x flattened with [e, cond]."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    step_embed_dim: int = 32

    @nn.compact
    def __call__(self, x, k, cond):
        b, t, a = x.shape
        e = sinusoidal_embedding(k, self.step_embed_dim)
        h = jnp.concatenate([x.reshape(b, t * a), e, cond], axis=-1)
        for w in self.hidden:
            h = mish(nn.Dense(w)(h))
        return nn.Dense(t * a)(h).reshape(b, t, a)
