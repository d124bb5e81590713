"""A diffusion policy on proprioception + touch (+ an object-pose vector), trained by DDPM, as a runner `Trainer`.

Papers: Chi et al., "Diffusion Policy" (RSS 2023); Lin et al., "Learning Visuotactile Skills with Two
Multifingered Hands" (HATO, 2024), whose learning/dp/{learner,models,pipeline}.py (ToruOwO/hato) were read.

Model. Observations o_{t-To+1..t} pass through per-modality MLP encoders (proprioception = hand joint positions
and velocities; touch, optionally binarised `touch > touch_threshold` before the encoder as HATO's
`binarize_touch`; the object vector = seen position + visibility, standing in for HATO's image encoder). Their
concatenation over the To steps is the global condition c of an ε-network (`nets/unet1d.py`: the FiLM UNet, or an
MLP) over the action chunk a_{t..t+Tp-1}, all normalised to [-1, 1] by the demonstrations' min/max.

Training (DDPM, ε-prediction): with the squared-cosine schedule ("squaredcos_cap_v2", Nichol & Dhariwal 2021)

    ᾱ(s) = cos²(((s / K) + 0.008) / 1.008 · π / 2),   β_k = min(1 - ᾱ(k+1) / ᾱ(k), 0.999),   ᾱ_k = Π_{j≤k} (1 - β_j)
    loss = E_{k ~ U{0..K-1}, ε ~ N(0, I)} || ε - ε_θ(√ᾱ_k a_0 + √(1 - ᾱ_k) ε, k, c) ||²

with Adam + decoupled weight decay and an EMA of the weights (the EMA is what acts and is evaluated).

Sampling (a `lax.scan`): DDPM ancestral over all K steps, or DDIM over S evenly spaced steps (η = 0 for control;
η = 1 with S = K reproduces DDPM's posterior mean, tested). x̂_0 is clipped to [-1, 1] (the reference's
clip_sample=True) and ε re-derived from the clipped x̂_0 for DDIM, as diffusers does.

Control (receding horizon): predict Tp actions, execute the first Ta, re-plan.

Reference settings and where this departs:
- HATO: K = 100 training steps, DDPM at train time and 15 inference steps at deployment, squaredcos_cap_v2,
  ε-prediction, clip_sample; AdamW lr 1e-4, weight decay 1e-6, cosine LR with warmup; EMA with power 0.75;
  obs horizon 1, prediction horizon 4, action horizon 2 (pipeline.py defaults); touch MLP to 64 features,
  binarisation at a raw reading of 1000. Diffusion Policy's defaults: To 2, Tp 16, Ta 8, down dims
  (256, 512, 1024), kernel 5, n_groups 8.
- Here: K = 100, DDIM with 10 steps at evaluation; To 2, Tp 8, Ta 4 (the episodes are ~40-60 control steps
  at 25 Hz, Tp 16 would span most of one); down dims (32, 64) and 64-wide encoders for the CPU; constant lr
  (no schedule) and a fixed EMA decay (no power warmup); touch threshold 0.05 N (readings are newtons).
- The action window starts at the CURRENT step t (Diffusion Policy's starts at t - To + 1 and executes from
  index To - 1: the same executed actions, without predicting the past); windows past an episode's end repeat
  its last action (the reference pads with the edge value, too). No image encoder: the "vision" stream is the
  4-vector of the seen object position, occluded near the hand.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nets.unet1d import ConditionalUnet1D, MLPDenoiser, mish


@dataclasses.dataclass(frozen=True)
class Config:
    """Static settings: changing one recompiles."""

    obs_horizon: int = 2
    """To: observation steps the policy conditions on."""
    pred_horizon: int = 8
    """Tp: actions predicted per sample."""
    action_horizon: int = 4
    """Ta: actions executed before re-planning."""
    num_diffusion_steps: int = 100
    """K: DDPM training steps."""
    num_inference_steps: int = 10
    """S: DDIM steps at evaluation (S = K with sampler ddpm)."""
    sampler: str = "ddim"
    """ddim (η = 0, S steps) or ddpm (ancestral, K steps)."""
    denoiser: str = "unet"
    """unet (FiLM temporal UNet) or mlp."""
    down_dims: tuple[int, ...] = (32, 64)
    kernel_size: int = 5
    n_groups: int = 8
    step_embed_dim: int = 32
    encoder_dim: int = 64
    """Width of each modality encoder (two layers)."""
    use_touch: bool = True
    """Feed the touch block to the policy (False: the no-touch ablation)."""
    binarize_touch: bool = False
    """Touch as contact / no contact (touch > touch_threshold), HATO's binarize_touch."""
    touch_threshold: float = 0.05
    batch_size: int = 64
    updates_per_chunk: int = 200


@flax.struct.dataclass
class HParams:
    lr: float = 1e-3
    """Adam step size."""
    weight_decay: float = 1e-6
    """Decoupled weight decay (HATO's AdamW 1e-6)."""
    ema_decay: float = 0.99
    """EMA of the weights (the EMA acts)."""


class Carry(NamedTuple):
    params: Any
    ema: Any
    opt_state: Any
    rng: jax.Array
    num_updates: jax.Array


# ------------------------------------------------------------------------------------------------------------
# Noise schedule and samplers
# ------------------------------------------------------------------------------------------------------------
def squared_cosine_betas(num_steps: int, max_beta: float = 0.999) -> np.ndarray:
    bar = lambda s: math.cos((s / num_steps + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - bar(i + 1) / bar(i), max_beta) for i in range(num_steps)], np.float32)


def schedule(num_steps: int) -> dict:
    betas = squared_cosine_betas(num_steps)
    return {"betas": jnp.asarray(betas), "alphas_cumprod": jnp.asarray(np.cumprod(1.0 - betas.astype(np.float64)),
                                                                     jnp.float32)}


def q_sample(sched, x0, k, eps):
    """Forward noising in closed form: √ᾱ_k x0 + √(1 - ᾱ_k) ε (k per row)."""
    ab = sched["alphas_cumprod"][k].reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * eps


def ddpm_step(sched, x, eps_hat, k, noise, clip=True):
    """One ancestral step x_k -> x_{k-1} (posterior mean + fixed-small variance; no noise at k = 0)."""
    ab = sched["alphas_cumprod"][k]
    ab_prev = jnp.where(k > 0, sched["alphas_cumprod"][jnp.maximum(k - 1, 0)], 1.0)
    beta = sched["betas"][k]
    x0 = (x - jnp.sqrt(1 - ab) * eps_hat) / jnp.sqrt(ab)
    x0 = jnp.clip(x0, -1, 1) if clip else x0
    mean = (jnp.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (jnp.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x
    var = beta * (1 - ab_prev) / (1 - ab)
    return mean + jnp.where(k > 0, jnp.sqrt(var), 0.0) * noise, mean


def ddim_step(sched, x, eps_hat, k, k_prev, noise, eta=0.0, clip=True):
    """One DDIM step x_k -> x_{k_prev} (k_prev < 0 means the end: ᾱ = 1)."""
    ab = sched["alphas_cumprod"][k]
    ab_prev = jnp.where(k_prev >= 0, sched["alphas_cumprod"][jnp.maximum(k_prev, 0)], 1.0)
    x0 = (x - jnp.sqrt(1 - ab) * eps_hat) / jnp.sqrt(ab)
    if clip:
        x0 = jnp.clip(x0, -1, 1)
        eps_hat = (x - jnp.sqrt(ab) * x0) / jnp.sqrt(1 - ab)
    sigma = eta * jnp.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
    mean = jnp.sqrt(ab_prev) * x0 + jnp.sqrt(jnp.maximum(1 - ab_prev - sigma**2, 0.0)) * eps_hat
    return mean + sigma * noise, mean


def sample(eps_fn, sched, shape, key, num_steps: int, sampler: str = "ddim", eta: float = 0.0):
    """Draw x_0 of `shape` from N(0, I) by the reverse process (`eps_fn(x, k) -> ε̂`), one `lax.scan`."""
    total = sched["betas"].shape[0]
    k0, key = jax.random.split(key)
    x = jax.random.normal(k0, shape)
    if sampler == "ddpm":
        ks = jnp.arange(total - 1, -1, -1)
        prev = ks - 1
    else:
        stride = total // num_steps
        ks = jnp.arange(0, num_steps)[::-1] * stride
        prev = ks - stride

    def body(x, inputs):
        k, k_prev, key = inputs
        eps_hat = eps_fn(x, jnp.full(shape[:1], k))
        noise = jax.random.normal(key, shape)
        if sampler == "ddpm":
            return ddpm_step(sched, x, eps_hat, k, noise)[0], None
        return ddim_step(sched, x, eps_hat, k, k_prev, noise, eta)[0], None

    x, _ = jax.lax.scan(body, x, (ks, prev, jax.random.split(key, ks.shape[0])))
    return x


# ------------------------------------------------------------------------------------------------------------
# Policy network
# ------------------------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.features)(mish(nn.Dense(self.features)(x)))


class Policy(nn.Module):
    """ε_θ(a_k, k, o): per-modality encoders over the To observations, then the denoiser with the global cond."""

    cfg: Config
    action_dim: int
    blocks: tuple[tuple[str, int, int], ...]  # (name, start, stop) of the observation blocks the policy sees

    @nn.compact
    def __call__(self, x, k, obs):
        feats = [Encoder(self.cfg.encoder_dim, name=f"enc_{name}")(obs[..., lo:hi]) for name, lo, hi in self.blocks]
        cond = jnp.concatenate(feats, -1).reshape(obs.shape[0], -1)
        if self.cfg.denoiser == "mlp":
            net = MLPDenoiser(self.action_dim, step_embed_dim=self.cfg.step_embed_dim)
        else:
            net = ConditionalUnet1D(self.action_dim, self.cfg.down_dims, self.cfg.kernel_size, self.cfg.n_groups,
                                    self.cfg.step_embed_dim)
        return net(x, k, cond)


def observation_blocks(cfg: Config, obs_layout: dict) -> tuple:
    """The encoder blocks: proprio (qpos + qvel), touch (unless use_touch=False), object (+ visibility)."""
    blocks = [("proprio", obs_layout["qpos"][0], obs_layout["qvel"][1])]
    if cfg.use_touch:
        blocks.append(("touch", *obs_layout["touch"]))
    blocks.append(("object", obs_layout["object"][0], obs_layout["visible"][1]))
    return tuple((name, int(lo), int(hi)) for name, lo, hi in blocks)


def make_normalize(cfg: Config, stats: dict, obs_layout: dict):
    """Observation -> [-1, 1] by min/max (constant dims -> 0); binarised touch becomes {0, 1} unnormalised."""
    lo, hi = jnp.asarray(stats["obs_min"]), jnp.asarray(stats["obs_max"])
    span = jnp.where(hi - lo > 1e-6, hi - lo, 1.0)
    t0, t1 = obs_layout["touch"]
    touch_mask = jnp.zeros(lo.shape[0], bool).at[t0:t1].set(True)

    def normalize(obs):
        norm = 2.0 * (obs - lo) / span - 1.0
        if cfg.binarize_touch:
            norm = jnp.where(touch_mask, (obs > cfg.touch_threshold).astype(obs.dtype), norm)
        return norm

    return normalize


def action_codec(stats):
    lo, hi = jnp.asarray(stats["act_min"]), jnp.asarray(stats["act_max"])
    span = jnp.where(hi - lo > 1e-6, hi - lo, 1.0)
    return (lambda a: 2.0 * (a - lo) / span - 1.0), (lambda z: lo + (jnp.clip(z, -1, 1) + 1.0) * 0.5 * span)


def windows(cfg: Config, batch: dict) -> np.ndarray:
    """(episode, t) of every real step: one training window each."""
    return np.array([(i, t) for i, n in enumerate(batch["lengths"]) for t in range(int(n))], np.int32)


def gather(cfg: Config, shared: dict, idx):
    """Observation history (B, To, D) (clamped at the start) and action chunk (B, Tp, A) (edge-padded at the end)."""
    ep, t = idx[:, 0], idx[:, 1]
    last = shared["lengths"][ep] - 1
    to = jnp.maximum(t[:, None] + jnp.arange(-cfg.obs_horizon + 1, 1)[None], 0)
    ta = jnp.minimum(t[:, None] + jnp.arange(cfg.pred_horizon)[None], last[:, None])
    return shared["obs"][ep[:, None], to], shared["act"][ep[:, None], ta]


adam = optax.scale_by_adam()


def make_train(cfg: Config, stats: dict, obs_layout: dict, action_dim: int, evaluate_fn=None):
    """`init_carry`, `train_chunk(carry, hp, shared)`, `evaluate` for `runner.Trainer`, and the policy's `act`.

    `shared` holds normalised `obs` (N, T, D), `act` (N, T, A), `lengths` (N,) and `index` (M, 2) windows
    (`prepare`). `evaluate_fn(act_fn, key) -> metrics` (e.g. a rollout in the MJX env) runs with the EMA policy.
    """
    if cfg.sampler not in ("ddim", "ddpm") or cfg.denoiser not in ("unet", "mlp"):
        raise ValueError(f"sampler={cfg.sampler!r} (ddim|ddpm), denoiser={cfg.denoiser!r} (unet|mlp).")
    if not 1 <= cfg.action_horizon <= cfg.pred_horizon:
        raise ValueError(f"action_horizon={cfg.action_horizon} must be in [1, pred_horizon={cfg.pred_horizon}].")
    if cfg.num_diffusion_steps % cfg.num_inference_steps:
        raise ValueError(f"num_inference_steps={cfg.num_inference_steps} must divide num_diffusion_steps="
                         f"{cfg.num_diffusion_steps}.")
    sched = schedule(cfg.num_diffusion_steps)
    net = Policy(cfg, action_dim, observation_blocks(cfg, obs_layout))
    obs_dim = len(stats["obs_min"])
    normalize = make_normalize(cfg, stats, obs_layout)
    _, decode = action_codec(stats)

    def init_carry(key, hp):
        k_init, rng = jax.random.split(key)
        params = net.init(k_init, jnp.zeros((1, cfg.pred_horizon, action_dim)), jnp.zeros((1,), jnp.int32),
                          jnp.zeros((1, cfg.obs_horizon, obs_dim)))
        return Carry(params, params, adam.init(params), rng, jnp.zeros((), jnp.int32))

    def loss_fn(params, obs, act, key):
        k_step, k_eps = jax.random.split(key)
        k = jax.random.randint(k_step, (act.shape[0],), 0, cfg.num_diffusion_steps)
        eps = jax.random.normal(k_eps, act.shape)
        return jnp.mean((net.apply(params, q_sample(sched, act, k, eps), k, obs) - eps) ** 2)

    def train_chunk(carry, hp, shared):
        def step(carry, _):
            rng, k_idx, k_loss = jax.random.split(carry.rng, 3)
            idx = shared["index"][jax.random.randint(k_idx, (cfg.batch_size,), 0, shared["index"].shape[0])]
            obs, act = gather(cfg, shared, idx)
            loss, grads = jax.value_and_grad(loss_fn)(carry.params, obs, act, k_loss)
            direction, opt_state = adam.update(grads, carry.opt_state, carry.params)
            params = jax.tree.map(lambda p, d: p - hp.lr * (d + hp.weight_decay * p), carry.params, direction)
            ema = jax.tree.map(lambda e, p: hp.ema_decay * e + (1 - hp.ema_decay) * p, carry.ema, params)
            return Carry(params, ema, opt_state, rng, carry.num_updates + 1), loss

        carry, losses = jax.lax.scan(step, carry, None, length=cfg.updates_per_chunk)
        return carry, {"loss": jnp.mean(losses), "num_updates": carry.num_updates}

    def act(params, obs_history, key):
        """Raw observation history (B, To, D) -> an action chunk (B, Tp, A) in env units."""
        obs = normalize(obs_history)
        eps_fn = lambda x, k: net.apply(params, x, k, obs)
        z = sample(eps_fn, sched, (obs.shape[0], cfg.pred_horizon, action_dim), key, cfg.num_inference_steps,
                   cfg.sampler)
        return decode(z)

    def evaluate(carry, key, hp):
        if evaluate_fn is None:
            return {}
        return evaluate_fn(lambda o, k: act(carry.ema, o, k), key)

    return init_carry, train_chunk, evaluate, act


def prepare(cfg: Config, batch: dict, stats: dict) -> dict:
    """The `shared` dict of normalised episodes (see `make_train`) from `envs.episodes.load_episodes`."""
    normalize = make_normalize(cfg, stats, batch["obs_layout"])
    encode, _ = action_codec(stats)
    return {"obs": normalize(jnp.asarray(batch["observations"])), "act": encode(jnp.asarray(batch["actions"])),
            "lengths": jnp.asarray(batch["lengths"]), "index": jnp.asarray(windows(cfg, batch))}


def rollout_evaluator(env, cfg: Config, num_episodes: int, max_steps: int):
    """`evaluate_fn` for `make_train`: `num_episodes` vmapped episodes of `env` (unwrapped, no auto-reset) under
    receding-horizon control; success = the episode reached success within `max_steps` control steps."""
    chunks = -(-max_steps // cfg.action_horizon)

    def evaluate_fn(act_fn, key):
        k_reset, k_act = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(k_reset, num_episodes))
        history = jnp.repeat(state.obs[:, None], cfg.obs_horizon, axis=1)

        def chunk(carry, key):
            state, history, success = carry
            actions = act_fn(history, key)

            def one(carry, a):
                state, history, success = carry
                state = jax.vmap(env.step)(state, a)
                history = jnp.concatenate([history[:, 1:], state.obs[:, None]], axis=1)
                return (state, history, jnp.maximum(success, state.info["success"])), None

            carry, _ = jax.lax.scan(one, (state, history, success),
                                    jnp.moveaxis(actions[:, :cfg.action_horizon], 1, 0))
            return carry, None

        (_, _, success), _ = jax.lax.scan(chunk, (state, history, jnp.zeros(num_episodes)),
                                          jax.random.split(k_act, chunks))
        return {"success": jnp.mean(success)}

    return evaluate_fn
