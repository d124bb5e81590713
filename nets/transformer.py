"""A small Octo-like multi-task generalist policy: block-causal transformer, readout tokens, action-chunk heads,
LoRA / MoE-LoRA / LoRA-Switch adapters, KV-cached decoding for rollouts, and fine-tuning masks.

Octo Model Team, "Octo: An Open-Source Generalist Robot Policy" (RSS 2024), read in octo-models/octo
(`octo/model/octo_module.py`, `components/block_transformer.py`); the adapters are nets/lora_switch.py.

Tokens. A window of T timesteps becomes the sequence

    [task] [o_0^1 .. o_0^G  r_0] [o_1^1 .. o_1^G  r_1] ... [o_{T-1}^1 .. o_{T-1}^G  r_{T-1}]

task: one token, a learned embedding of a task id (`num_tasks`) or a Dense of a task vector (`task_dim`).
o_t^g: observation tokens; each named observation (a vector per timestep) is split into its configured number of
groups and every group has its own Dense tokenizer (proprioception in groups, touch through its own, ...).
r_t: a readout token (a learned embedding, no input). Every slot of a timestep block adds its own learned
embedding. Attention (query q at timestep t_q, key k at t_k, Δ = t_q - t_k):

    task    -> task
    obs     -> task, obs with 0 <= Δ < W
    readout -> task, obs and readouts with 0 <= Δ < W           (nothing else attends to readouts)

so a later timestep never changes an earlier readout (tested by perturbation). Scores get a learned bias per
layer, head and Δ (the task token has its own entry): b[h, Δ] for Δ in 0..W-1, b[h, W] for the task token.
The head reads each r_t (after a final LayerNorm) and predicts an action chunk a_t..a_{t+H-1}:

    mse / l1:  a = Dense(r_t)                        loss: mean squared / absolute error
    adacat:    (θ_w, θ_h) = AdaCatHead(r_t)          loss: -E_q[log p(a)] (nets/adacat.py, smoothed), on [-1, 1]

The block (pre-LayerNorm, as Octo's): x += Out(Attn(LN x)); x += MLP_out(gelu(MLP_in(LN x))), with the fused
projection qkv, out, mlp_in and mlp_out all `AdaptedDense` (so all four carry adapters). Layers are a Python
loop (unrolled in the compiled program: the parameter tree reads layer_0..layer_{L-1}; nn.scan would compile
faster at 12+ layers but makes the per-layer KV cache and the adapter masks less direct).

Decoding. `GeneralistPolicy.start(task)` returns a `KVCache` (per layer keys and values for 1 + W·N slots: the
task token and a ring of W timestep blocks of N = G + 1 tokens, plus each slot's timestep, kind and validity);
`step(cache, obs_t)` writes timestep t's block at ring position t mod W in every layer and attends over the
slots with the same mask, so a rollout step is one jitted call with fixed shapes. Cached decoding equals the
full forward pass over the whole episode (tested). The mask is banded (Δ < W), so for a sequence of T <= W
timesteps it is Octo's block-causal mask, and for longer episodes it is a sliding window in which timestep t's
keys were computed from ITS window: that is what a cache can reproduce exactly.

Departures from Octo:
- Positions: Octo adds learned absolute position embeddings per window slot; here, a relative time bias per
  layer and head (and per-slot embeddings inside a timestep), which is what makes a sliding-window cache exact.
- Readouts attend to earlier readouts in the window (Octo's rule for a readout group attending to itself).
- One readout token per timestep and a linear head on it (Octo pools readouts with a MAP head or a mean, and
  uses diffusion or L1 heads); no images, no language model task encoder, no dropout.
- The AdaCat head is factorised over the H·A action dimensions (one AdaCat per dimension, no autoregression).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nets.adacat import AdaCat, AdaCatHead
from nets.lora_switch import AdaptedDense, AdapterConfig, Router, aux_loss, is_adapter_path

TASK, OBS, READOUT = 0, 1, 2
HEADS = ("mse", "l1", "adacat")
FINE_TUNE_MODES = {"full": ("backbone", "adapter", "head"), "head": ("head",), "adapters": ("adapter", "head")}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    num_layers: int
    width: int
    num_heads: int
    mlp_ratio: int = 4
    window: int = 2  # W: timesteps a token attends over, its own included

    def __post_init__(self):
        if self.width % self.num_heads:
            raise ValueError(f"TransformerConfig: width {self.width} is not a multiple of num_heads "
                             f"{self.num_heads}.")
        if self.window < 1 or self.num_layers < 1:
            raise ValueError(f"TransformerConfig needs window >= 1 and num_layers >= 1; got {self.window}, "
                             f"{self.num_layers}.")


PRESETS: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(num_layers=2, width=32, num_heads=2, window=3),  # CPU tests
    "small": TransformerConfig(num_layers=4, width=128, num_heads=4, window=2),
    "octo-small": TransformerConfig(num_layers=12, width=384, num_heads=6, window=2),  # Octo-S's trunk
}


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    transformer: TransformerConfig = PRESETS["tiny"]
    adapter: AdapterConfig = AdapterConfig()
    observations: tuple[tuple[str, int], ...] = (("proprio", 2),)  # (key, number of tokens it is split into)
    num_tasks: int = 0  # > 0: the task is an id (embedded); else a vector of `task_dim`
    task_dim: int = 0
    action_dim: int = 2
    horizon: int = 1  # H: the action chunk each readout predicts
    head: str = "mse"
    num_bins: int = 16  # adacat
    adacat_sigma: float = 0.02  # adacat smoothing scale, in action units

    def __post_init__(self):
        if (self.num_tasks > 0) == (self.task_dim > 0):
            raise ValueError(f"PolicyConfig: give exactly one of num_tasks (task ids) and task_dim (task vectors); "
                             f"got num_tasks={self.num_tasks}, task_dim={self.task_dim}.")
        if self.head not in HEADS:
            raise ValueError(f"PolicyConfig.head={self.head!r}: expected one of {HEADS}.")
        if not self.observations or any(n < 1 for _, n in self.observations):
            raise ValueError(f"PolicyConfig.observations={self.observations}: expected (key, tokens >= 1) pairs.")

    @property
    def tokens_per_step(self) -> int:
        return sum(n for _, n in self.observations) + 1

    @property
    def step_kinds(self) -> np.ndarray:
        return np.array([OBS] * (self.tokens_per_step - 1) + [READOUT], np.int32)


# ---- masks and the KV cache -----------------------------------------------------------------------------------
def attention_mask(q_time, q_kind, k_time, k_kind, k_valid, window: int) -> jax.Array:
    """(..., n) queries x (..., S) keys -> (..., n, S): which key each query attends to (module docstring)."""
    dt = q_time[..., :, None] - k_time[..., None, :]
    in_window = (dt >= 0) & (dt < window)
    qk, kk = q_kind[..., :, None], k_kind[..., None, :]
    sees = (kk == TASK) | ((qk != TASK) & (kk == OBS) & in_window) | ((qk == READOUT) & (kk == READOUT) & in_window)
    return sees & k_valid[..., None, :]


def time_bias_index(q_time, k_time, k_kind, window: int) -> jax.Array:
    """Index into the per-head time bias: Δ clipped to 0..W-1, or W for the task token."""
    dt = jnp.clip(q_time[..., :, None] - k_time[..., None, :], 0, window - 1)
    return jnp.where(k_kind[..., None, :] == TASK, window, dt)


def write_slots(buffer: jax.Array, new: jax.Array, slot: jax.Array) -> jax.Array:
    """buffer (B, S, ...) with new (B, n, ...) written at slots slot[b] .. slot[b] + n - 1 of each row."""
    def one(row, values, start):
        return jax.lax.dynamic_update_slice_in_dim(row, values, start, axis=0)
    return jax.vmap(one)(buffer, new.astype(buffer.dtype), slot)


@flax.struct.dataclass
class KVCache:
    keys: tuple  # per layer (B, S, heads, head_dim)
    values: tuple
    time: jax.Array  # (B, S) int32: the timestep of each slot (task: -1)
    kind: jax.Array  # (B, S) int32
    valid: jax.Array  # (B, S) bool
    step: jax.Array  # (B,) int32: the next timestep to decode


def reset_where(done: jax.Array, cache: KVCache, fresh: KVCache) -> KVCache:
    """Per batch row, `fresh` where done else `cache` (for auto-resetting vectorised rollouts)."""
    def pick(f, c):
        return jnp.where(done.reshape(done.shape + (1,) * (c.ndim - 1)), f, c)
    return jax.tree_util.tree_map(pick, fresh, cache)


# ---- the trunk ------------------------------------------------------------------------------------------------
class Block(nn.Module):
    config: TransformerConfig
    adapter: AdapterConfig

    @nn.compact
    def __call__(self, x, routing, mask, bias_index, kv=None, slot=None):
        cfg, (batch, n, width) = self.config, x.shape
        heads, head_dim = cfg.num_heads, width // cfg.num_heads
        qkv = AdaptedDense(3 * width, self.adapter, name="qkv")(nn.LayerNorm(name="attn_norm")(x), routing)
        q, k, v = jnp.moveaxis(qkv.reshape(batch, n, 3, heads, head_dim), 2, 0)
        if kv is not None:  # decoding: write this step's keys and values into the cache, attend over all slots
            k, v = write_slots(kv[0], k, slot), write_slots(kv[1], v, slot)
        time_bias = self.param("time_bias", nn.initializers.zeros, (heads, cfg.window + 1))
        scores = jnp.einsum("bnhd,bshd->bhns", q, k) / np.sqrt(head_dim)
        scores = scores + jnp.moveaxis(jnp.take(time_bias, bias_index, axis=1), 0, 1)
        scores = jnp.where(mask[:, None], scores, jnp.finfo(scores.dtype).min)
        attended = jnp.einsum("bhns,bshd->bnhd", jax.nn.softmax(scores, axis=-1), v).reshape(batch, n, width)
        x = x + AdaptedDense(width, self.adapter, name="out")(attended, routing)
        h = AdaptedDense(cfg.mlp_ratio * width, self.adapter, name="mlp_in")(nn.LayerNorm(name="mlp_norm")(x),
                                                                                routing)
        x = x + AdaptedDense(width, self.adapter, name="mlp_out")(nn.gelu(h), routing)
        return x, (k, v)


class Transformer(nn.Module):
    """The trunk: x (B, n, D) with a mask (B, n, S) and time-bias indices -> (final-LayerNorm output, per-layer kv).

    Without `kv`, keys are the inputs themselves (S = n). With `kv` (per-layer (B, S, heads, head_dim) pairs) the
    n new tokens' keys and values are written at `slot` (B,) first. LoRA-Switch's router runs here, once, on the
    first layer's input, and its Routing serves every layer.
    """

    config: TransformerConfig
    adapter: AdapterConfig = AdapterConfig()

    @nn.compact
    def __call__(self, x, mask, bias_index, kv=None, slot=None):
        a = self.adapter
        routing = Router(a.num_experts, a.top_k, name="router")(x) if a.kind == "switch" else None
        new_kv = []
        for layer in range(self.config.num_layers):
            x, layer_kv = Block(self.config, a, name=f"layer_{layer}")(
                x, routing, mask, bias_index, None if kv is None else kv[layer], slot)
            new_kv.append(layer_kv)
        return nn.LayerNorm(name="final_norm")(x), new_kv


# ---- the policy -----------------------------------------------------------------------------------------------
class ActionHead(nn.Module):
    config: PolicyConfig

    @nn.compact
    def __call__(self, readout):
        c = self.config
        chunk = (c.horizon, c.action_dim)
        if c.head == "adacat":
            width_logits, mass_logits = AdaCatHead(c.horizon * c.action_dim, c.num_bins, name="adacat")(readout)
            shape = readout.shape[:-1] + chunk + (c.num_bins,)
            return width_logits.reshape(shape), mass_logits.reshape(shape)
        return nn.Dense(c.horizon * c.action_dim, name="dense")(readout).reshape(readout.shape[:-1] + chunk)


class GeneralistPolicy(nn.Module):
    """observations {key: (B, T, d)}, task (B,) ids or (B, task_dim) -> head output per timestep (B, T, H, A[, k])."""

    config: PolicyConfig

    def setup(self):
        c, width = self.config, self.config.transformer.width
        if c.num_tasks:
            self.task_embed = nn.Embed(c.num_tasks, width, embedding_init=nn.initializers.normal(1.0))
        else:
            self.task_encoder = nn.Dense(width)
        self.tokenizers = {f"{key}_{g}": nn.Dense(width) for key, n in c.observations for g in range(n)}
        self.slot_embed = self.param("slot_embed", nn.initializers.normal(0.02), (c.tokens_per_step, width))
        self.backbone = Transformer(c.transformer, c.adapter)
        self.head = ActionHead(c)

    def task_token(self, task) -> jax.Array:
        embedded = self.task_embed(task) if self.config.num_tasks else self.task_encoder(task)
        return embedded[:, None]  # (B, 1, D)

    def step_tokens(self, observations: Mapping[str, jax.Array]) -> jax.Array:
        """{key: (..., d)} -> (..., N, D): each key's groups through their own tokenizers, then the readout."""
        tokens = []
        for key, n in self.config.observations:
            for g, part in enumerate(np.array_split(np.arange(observations[key].shape[-1]), n)):
                tokens.append(self.tokenizers[f"{key}_{g}"](observations[key][..., part[0]:part[-1] + 1]))
        readout = jnp.zeros_like(tokens[0])
        return jnp.stack(tokens + [readout], axis=-2) + self.slot_embed

    def __call__(self, observations, task, timestep_valid=None):
        c, window = self.config, self.config.transformer.window
        steps = self.step_tokens(observations)  # (B, T, N, D)
        batch, horizon, n, width = steps.shape
        x = jnp.concatenate([self.task_token(task), steps.reshape(batch, horizon * n, width)], axis=1)
        time = jnp.concatenate([jnp.array([-1]), jnp.repeat(jnp.arange(horizon), n)])
        kind = jnp.concatenate([jnp.array([TASK]), jnp.tile(jnp.asarray(c.step_kinds), horizon)])
        valid = jnp.ones((batch, horizon), bool) if timestep_valid is None else timestep_valid.astype(bool)
        valid = jnp.concatenate([jnp.ones((batch, 1), bool), jnp.repeat(valid, n, axis=1)], axis=1)
        time, kind = jnp.broadcast_to(time, valid.shape), jnp.broadcast_to(kind, valid.shape)
        mask = attention_mask(time, kind, time, kind, valid, window)
        out, _ = self.backbone(x, mask, time_bias_index(time, time, kind, window))
        return self.head(out[:, 1:].reshape(batch, horizon, n, width)[:, :, -1])

    def start(self, task) -> KVCache:
        """A cache holding the task token's keys and values and an empty ring of W timestep blocks."""
        c = self.config
        window, n = c.transformer.window, c.tokens_per_step
        x = self.task_token(task)
        batch, slots = x.shape[0], 1 + window * n
        time, kind, valid = (jnp.full((batch, 1), -1), jnp.full((batch, 1), TASK), jnp.ones((batch, 1), bool))
        _, kv = self.backbone(x, attention_mask(time, kind, time, kind, valid, window),
                              time_bias_index(time, time, kind, window))
        pad = lambda a: jnp.concatenate([a, jnp.zeros((batch, slots - 1) + a.shape[2:], a.dtype)], axis=1)
        ring_kind = np.concatenate([[TASK], np.tile(c.step_kinds, window)])
        return KVCache(keys=tuple(pad(k) for k, _ in kv), values=tuple(pad(v) for _, v in kv),
                       time=jnp.full((batch, slots), -1, jnp.int32),
                       kind=jnp.broadcast_to(jnp.asarray(ring_kind, jnp.int32), (batch, slots)),
                       valid=jnp.zeros((batch, slots), bool).at[:, 0].set(True),
                       step=jnp.zeros((batch,), jnp.int32))

    def step(self, cache: KVCache, observations) -> tuple[KVCache, Any]:
        """Decode one timestep: observations {key: (B, d)} -> (cache advanced by one, head output (B, H, A[, k]))."""
        c = self.config
        window, n = c.transformer.window, c.tokens_per_step
        x = self.step_tokens(observations)  # (B, N, D)
        slot = 1 + (cache.step % window) * n
        q_time = jnp.broadcast_to(cache.step[:, None], x.shape[:2]).astype(jnp.int32)
        q_kind = jnp.broadcast_to(jnp.asarray(c.step_kinds), x.shape[:2])
        k_time = write_slots(cache.time, q_time, slot)
        k_valid = write_slots(cache.valid, jnp.ones(x.shape[:2], bool), slot)
        mask = attention_mask(q_time, q_kind, k_time, cache.kind, k_valid, window)
        out, kv = self.backbone(x, mask, time_bias_index(q_time, k_time, cache.kind, window),
                                list(zip(cache.keys, cache.values)), slot)
        cache = cache.replace(keys=tuple(k for k, _ in kv), values=tuple(v for _, v in kv), time=k_time,
                              valid=k_valid, step=cache.step + 1)
        return cache, self.head(out[:, -1])


# ---- losses, actions, fine-tuning -----------------------------------------------------------------------------
def action_distribution(head_output) -> AdaCat:
    width_logits, mass_logits = head_output
    return AdaCat.create(width_logits, mass_logits, -1.0, 1.0)


def action_loss(config: PolicyConfig, head_output, actions, weight=None) -> jax.Array:
    """Mean loss over (B, T) readouts (weighted by `weight` (B, T) if given) of the chunks `actions` (B, T, H, A)."""
    if config.head == "adacat":
        per_dim = -action_distribution(head_output).smoothed_log_prob(actions, config.adacat_sigma)
    elif config.head == "l1":
        per_dim = jnp.abs(head_output - actions)
    else:
        per_dim = jnp.square(head_output - actions)
    per_readout = per_dim.mean(axis=(-2, -1))
    if weight is None:
        return per_readout.mean()
    return jnp.sum(per_readout * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def predict_actions(config: PolicyConfig, head_output, key=None) -> jax.Array:
    """The action chunk: the regression output, or an AdaCat sample (`key`) or its mode (no key)."""
    if config.head != "adacat":
        return head_output
    dist = action_distribution(head_output)
    return dist.mode() if key is None else dist.sample(key)


def policy_loss(model: GeneralistPolicy, variables, batch, aux_weight: float = 0.01):
    """batch: observations, task, actions (B, T, H, A), optional timestep_valid -> (loss, metrics).

    An "aux" collection in `variables` (init returns one when the model has routers: the balance losses sown
    at init) is dropped, so that this call's balance losses are not averaged with stale ones.
    """
    valid = batch.get("timestep_valid")
    variables = {k: v for k, v in variables.items() if k != "aux"}
    out, state = model.apply(variables, batch["observations"], batch["task"], valid, mutable=["aux"])
    action = action_loss(model.config, out, batch["actions"], valid)
    balance = aux_loss(state)
    return action + aux_weight * balance, {"action_loss": action, "load_balancing": balance}


def parameter_groups(params) -> Any:
    """Each parameter's group: "adapter" (lora_a/lora_b/routers), "head" (under `head`) or "backbone".

    `params` is the "params" collection, bare or as {"params": ...}; drop init's "aux" collection first.
    """
    def group(path, _):
        keys = tuple(getattr(p, "key", str(p)) for p in path)
        keys = keys[1:] if keys and keys[0] == "params" else keys
        if is_adapter_path(keys):
            return "adapter"
        return "head" if keys and keys[0] == "head" else "backbone"
    return jax.tree_util.tree_map_with_path(group, params)


def make_optimizer(mode: str, tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` on the groups that `mode` trains ("full": all; "head"; "adapters": adapters and head), zero updates
    (and no optimiser state) on the rest: the backbone stays frozen without copying or splitting parameters."""
    if mode not in FINE_TUNE_MODES:
        raise ValueError(f"fine-tuning mode {mode!r}: expected one of {tuple(FINE_TUNE_MODES)}.")
    trained = FINE_TUNE_MODES[mode]
    labels = lambda params: jax.tree_util.tree_map(lambda g: "train" if g in trained else "frozen",
                                                   parameter_groups(params))
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
