"""SUPE: skills from unlabeled prior data, then online high-level RL over them.

Paper
  Wilcoxson, Li, Frans, Levine. "Leveraging Skills from Unlabeled Prior Data for Efficient Online Exploration",
  2024 (arXiv:2410.18076). The skill stage follows OPAL (Ajay et al., ICLR 2021).

Skill stage. Reward-free prior data is cut into segments of H = 4 consecutive steps that
lie inside one episode (`segments`). A trajectory VAE (`nets.vae.TrajectoryVAE`, latent size 8) is fitted by
maximising, per segment,

  ELBO = E_{z ~ q(z | s_{0:H}, a_{0:H})} [ sum_{t<H} log pi(a_t | s_t, z) ]
         - beta KL( q(z | s_{0:H}, a_{0:H}) || p(z | s_0) )

with beta = `kl_coef` = 0.1; the loss is the batch mean of -ELBO, z is reparameterised (z = mu_q + sigma_q eps)
and the KL between the two diagonal Gaussians is analytic:

  KL = sum_j [ log sigma_p - log sigma_q + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2 ].

Online stage (`make_train`, at the end of the file): ExPLORe (`algos/explore.py`) one level up. A high-level
agent picks a skill every H low-level steps. Its action is u in (-1, 1)^latent and the skill z = arctanh(u); the
frozen decoder runs z for H steps (`SkillEnv`), SAMPLING each low-level action a_t ~ N(tanh(m), sigma^2) clipped
to [-1, 1]. A high-level step is a semi-MDP step of k <= H real steps (k < H when the episode ends inside it):

  R = sum_{i<k} gamma^i (r_i + reward_shift),      y = R + gamma^k (1 - terminated~) min_{j in M} Q̄_j(s_k, u'),

with gamma the low-level discount (`Config.discount`) and the high level's hp.discount = gamma^H; explore's
`skill_horizon` turns hp.discount into gamma^k per row from the stored k. The prior data becomes high-level
transitions (s_0, u = tanh(mu_q), s_H) (`high_level_transitions`; every segment is a full skill, k = H), labelled
inside the update by the "min" label r~ = r_min + beta b(s, u), with beta b(s, u) added to online rows too, and
soft terminations p_end(s'); early exploration samples u = tanh(z), z ~ p(z | s) (`skill_prior_action`) instead
of uniform actions.

What the reference does (rail-berkeley/supe, checked in the files named) and what is chosen here:
  * High-level discount: the SAC agent's discount is 0.99 per HIGH-LEVEL step (`configs/sac_config.py`,
    `td_config.py`), while the skill reward inside uses OPAL's discount 0.99 per low-level step
    (`wrappers/meta_env_wrapper.py` l.136-150, `configs/opal_config.py`). Here gamma = 0.99^(1/4) per low-level
    step, so a full skill discounts by gamma^4 = 0.99 exactly as the reference's high level (the horizon the
    large mazes need: ~100 skills), and the semi-MDP stays consistent (the reference weights the 4 rewards with
    0.99^i, a 1% difference). The old default here, 0.99^4 per skill, cut the horizon to ~25 skills.
  * A skill cut short after k < H steps: the reference's wrapper then returns the discounted sum over a window
    that reaches back into the previous skill (l.126-150) and bootstraps with the same 0.99 (the antmaze time
    limits are multiples of 4, so only the goal, a terminal, ends a skill early there). Here R sums only the
    k real steps and the bootstrap is gamma^k (a fix: the old code bootstrapped with gamma^H).
  * Labels on antmaze (`README.md`, the AntMaze command): `--offline_relabel_type=min --use_rnd_offline=True
    --use_rnd_online=True --config.num_min_qs=1 --config.backup_entropy=False`, RND coefficient 8
    (`configs/rnd_config.py`), initial temperature 0.05 (`configs/sac_config.py`); the min label is the minimum
    of the chunked dataset's shifted rewards with the reward model's soft mask (`train_finetuning_supe.py`
    l.197, 352-358). The defaults of `experiments/supe.py` are these, with r_min = sum_{i<H} gamma^i (0 - 1)
    (`min_skill_reward`). The reference's RND on (s, u) is the same module as ExPLORe's (mean over 256 features).
  * Reward shift: the reference subtracts 1 from every low-level reward on antmaze, in the online wrapper
    (l.121-124) and the prior data (`D4RLDataset(subtract_one=...)`), not in evaluation. Here
    `Config.reward_shift` = -1 inside `SkillEnv`'s sum; evaluation uses the raw rewards.
  * Low-level actions: sampled and clipped (`pretraining/opal.py` `sample_skill_actions` l.446-452), also
    during evaluation (the same wrapper). Same here (`sample_actions=True`, training and evaluation).
  * The reference can insert extra "interpolated" skills (`--interpolate`, off by default); not here.

Where the skill stage departs from the reference code (`pretraining/opal.py`, adapted from Seohong Park's OPAL):
  * Encoder: one unidirectional GRU over concat(s_t, a_t) and a linear head on its last output; the reference
    embeds observations with an MLP and runs two bidirectional GRU layers whose H outputs are concatenated.
  * Posterior std: exp(log_std) clipped to [-5, 2]; the reference uses exp(0.5 * output) unclipped.
  * Decoder: an MLP Gaussian with mean tanh(m) (actions are in (-1, 1)); the reference leaves the mean unbounded
    and clips sampled actions. Its final layers use a 1e-2 init scale; here the repo's Xavier init.
  * Loss scale: the NLL is SUMMED over the H steps (the ELBO above); the reference averages it over steps, which
    with the same beta weights the KL H times more.
  * High-level actions live in (-1, 1)^latent (u = tanh z) so any tanh-Gaussian agent in `algos/` drives skills;
    the reference's high-level actions are raw latents (its TanhConverter maps them the same way).
  * Learning rate is a sweepable hyperparameter (Adam direction from optax, step size applied per update).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

import envs
from algos import explore, sac
from nets.vae import TrajectoryVAE

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_DATA_KEYS = ("observations", "actions", "next_observations", "terminals", "timeouts")


@dataclasses.dataclass(frozen=True)
class SkillConfig:
    """Static settings of the skill VAE and its training. Changing any of these recompiles."""

    horizon: int = 4  # H: low-level steps per skill
    latent_size: int = 8
    hidden_sizes: tuple[int, ...] = (256, 256)  # prior/decoder MLP widths; the GRU has hidden_sizes[-1] units
    batch_size: int = 256  # segments per minibatch
    updates_per_chunk: int = 250  # gradient steps per jitted chunk (one lax.scan)

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))  # hashable: a static argument
        for name in ("horizon", "latent_size", "batch_size", "updates_per_chunk"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SkillConfig.{name} must be a positive integer, got {getattr(self, name)!r}.")
        if not self.hidden_sizes or any(not isinstance(h, int) or h < 1 for h in self.hidden_sizes):
            raise ValueError(f"SkillConfig.hidden_sizes must be non-empty positive widths, got {self.hidden_sizes}.")


@struct.dataclass
class SkillHParams:
    """Sweepable scalars of VAE training."""

    lr: float = 3e-4
    kl_coef: float = 0.1  # beta

    RANGES = {"lr": "[0, inf)", "kl_coef": "[0, inf)"}  # valid values (experiments/runner/sweeps.py checks them)


@struct.dataclass
class VAECarry:
    params: dict
    opt_state: Any
    rng: jax.Array  # raw PRNGKey (uint32), so the carry can be checkpointed
    num_updates: jax.Array  # int32


def vae_net(cfg: SkillConfig, action_size: int) -> TrajectoryVAE:
    return TrajectoryVAE(action_size, cfg.latent_size, cfg.hidden_sizes)


# ---- data ------------------------------------------------------------------------------------------------

def segments(data: dict, horizon: int) -> dict:
    """Every length-`horizon` window of consecutive transitions that lies inside ONE episode, as arrays.

    `data` holds D4RL-style arrays with leading axis N, episodes stored one after the other; an episode ends at
    every transition with `terminals | timeouts` and at the last transition of the arrays. The window starting at
    i is valid iff no episode ends among transitions i .. i+H-2 (its last step may end the episode). Returns
    (M windows) `start` (M,) int32, `obs` (M, H, D), `action` (M, H, A), `obs0` (M, D), `next_obs_last` (M, D)
    = s_H, `terminal_last`/`timeout_last` (M,) bool of the last step, and `reward` (M, H) if `data` has
    `rewards`. Floats are float32.
    """
    missing = [k for k in _DATA_KEYS if k not in data]
    if missing:
        raise ValueError(f"segments: the dataset lacks the key(s) {missing}; expected D4RL-style arrays "
                         f"{list(_DATA_KEYS)} (and optionally 'rewards'), got keys {sorted(data)}.")
    if not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"segments: horizon must be a positive integer, got {horizon!r}.")
    n = len(data["observations"])
    lengths = {k: len(data[k]) for k in (*_DATA_KEYS, "rewards") if k in data}
    if n == 0 or len(set(lengths.values())) != 1:
        raise ValueError(f"segments: every array needs the same non-zero leading length, got {lengths}.")
    ends = np.asarray(data["terminals"], bool).reshape(n) | np.asarray(data["timeouts"], bool).reshape(n)
    ends[-1] = True
    ends_before = np.concatenate([[0], np.cumsum(ends)])  # ends_before[i] = episode ends among transitions < i
    first = np.arange(max(n - horizon + 1, 0))
    start = first[ends_before[first + horizon - 1] == ends_before[first]]
    if start.size == 0:
        longest = int(np.diff(np.concatenate([[-1], np.flatnonzero(ends)])).max())
        raise ValueError(f"segments: no window of horizon={horizon} consecutive transitions fits inside one "
                         f"episode: the longest of the {int(ends.sum())} episodes has {longest} transitions. "
                         f"Lower the horizon or provide longer episodes.")
    steps, last = start[:, None] + np.arange(horizon), start + horizon - 1
    floats = lambda k: np.asarray(data[k], np.float32)
    flags = lambda k: np.asarray(data[k], bool).reshape(n)[last]
    out = {"start": start.astype(np.int32), "obs": floats("observations")[steps], "action": floats("actions")[steps],
           "obs0": floats("observations")[start], "next_obs_last": floats("next_observations")[last],
           "terminal_last": flags("terminals"), "timeout_last": flags("timeouts")}
    return out | ({"reward": floats("rewards").reshape(n)[steps]} if "rewards" in data else {})


# ---- VAE training -----------------------------------------------------------------------------------------

def _gaussian_nll(x, mean, log_std):
    """-log N(x; mean, exp(log_std)^2), summed over the last axis."""
    return jnp.sum(0.5 * ((x - mean) * jnp.exp(-log_std)) ** 2 + log_std + _HALF_LOG_2PI, axis=-1)


def _gaussian_kl(mean_q, log_std_q, mean_p, log_std_p):
    """KL(N(mean_q, std_q^2) || N(mean_p, std_p^2)) of diagonal Gaussians, summed over the last axis."""
    ratio = (jnp.exp(2.0 * log_std_q) + (mean_q - mean_p) ** 2) * jnp.exp(-2.0 * log_std_p)
    return jnp.sum(log_std_p - log_std_q + 0.5 * ratio - 0.5, axis=-1)


def vae_loss(params, batch: dict, key: jax.Array, hp: SkillHParams, cfg: SkillConfig, action_size: int):
    """Batch mean of -ELBO = sum_t -log pi(a_t | s_t, z) + kl_coef * KL(q || p), z ~ q reparameterised.

    `batch`: `obs` (B, H, D) and `action` (B, H, A); the prior is evaluated at obs[:, 0] = s_0.
    """
    vae = vae_net(cfg, action_size)
    obs, action = batch["obs"], batch["action"]
    post_mean, post_log_std = vae.apply(params, obs, action, method=TrajectoryVAE.encode)
    prior_mean, prior_log_std = vae.apply(params, obs[:, 0], method=TrajectoryVAE.prior)
    z = post_mean + jnp.exp(post_log_std) * jax.random.normal(key, post_mean.shape)
    z_per_step = jnp.broadcast_to(z[:, None], obs.shape[:-1] + z.shape[-1:])
    action_mean, action_log_std = vae.apply(params, obs, z_per_step, method=TrajectoryVAE.decode)
    nll = _gaussian_nll(action, action_mean, action_log_std).sum(-1)  # (B,)
    kl = _gaussian_kl(post_mean, post_log_std, prior_mean, prior_log_std)  # (B,)
    loss = jnp.mean(nll + hp.kl_coef * kl)
    return loss, {"loss": loss, "nll": nll.mean(), "kl": kl.mean(),
                  "action_mse": jnp.mean((action_mean - action) ** 2)}


def make_vae_pretrain(cfg: SkillConfig, observation_size: int, action_size: int):
    """Pure `init_carry(key, hp)`, `train_chunk(carry, hp, segs)`, `evaluate(carry, key, hp)` (the shape of
    `calql.make_pretrain`, for `experiments.runner.Trainer(..., shared=segs)`).

    `segs` is the output of `segments` (only `obs` and `action` are read), shared by the population. Each chunk
    runs `cfg.updates_per_chunk` Adam steps in one `lax.scan`, minibatches drawn uniformly with replacement;
    metrics are chunk means.
    """
    vae = vae_net(cfg, action_size)

    def init_carry(key: jax.Array, hp: SkillHParams) -> VAECarry:
        k_init, k_rng = jax.random.split(key)
        params = vae.init(k_init, jnp.zeros((1, cfg.horizon, observation_size)),
                          jnp.zeros((1, cfg.horizon, action_size)))
        return VAECarry(params=params, opt_state=sac.adam.init(params), rng=k_rng,
                        num_updates=jnp.zeros((), jnp.int32))

    def train_chunk(carry: VAECarry, hp: SkillHParams, segs: dict) -> tuple[VAECarry, dict]:
        expected = (cfg.horizon, observation_size), (cfg.horizon, action_size)
        if (segs["obs"].shape[1:], segs["action"].shape[1:]) != expected:
            raise ValueError(f"train_chunk: segments have obs/action shapes {segs['obs'].shape[1:]}/"
                             f"{segs['action'].shape[1:]} per segment, expected {expected[0]}/{expected[1]}.")
        size = segs["obs"].shape[0]

        def step(carry: VAECarry, _):
            rng, k_batch, k_loss = jax.random.split(carry.rng, 3)
            idx = jax.random.randint(k_batch, (cfg.batch_size,), 0, size)
            batch = {"obs": segs["obs"][idx], "action": segs["action"][idx]}
            grads, metrics = jax.grad(vae_loss, has_aux=True)(carry.params, batch, k_loss, hp, cfg, action_size)
            params, opt_state = sac.adam_step(carry.params, carry.opt_state, grads, hp.lr)
            return VAECarry(params, opt_state, rng, carry.num_updates + 1), metrics

        carry, metrics = jax.lax.scan(step, carry, None, length=cfg.updates_per_chunk)
        return carry, {**jax.tree.map(jnp.mean, metrics), "num_updates": carry.num_updates}

    def evaluate(carry: VAECarry, key: jax.Array, hp: SkillHParams) -> dict:
        return {"vae_updates": carry.num_updates}

    return init_carry, train_chunk, evaluate


# ---- using the skills -------------------------------------------------------------------------------------

def high_level_transitions(vae_params, segs: dict, cfg: SkillConfig, action_size: int, discount: float = 0.99,
                           chunk_size: int = 65536) -> dict:
    """The prior data as high-level (semi-MDP) transitions, numpy arrays with leading axis M:

    `obs` = s_0, `action` = u = tanh(mu_q(segment)) in (-1, 1)^latent, `next_obs` = s_H, `reward` = sum_t
    discount^t r_t (zeros if the data has no rewards; SUPE relabels them), `terminated`/`truncated` of the last
    step. Skills are encoded by one jitted program over chunks of `chunk_size` segments (the last chunk padded).
    """
    encode = jax.jit(lambda params, obs, action: jnp.tanh(
        vae_net(cfg, action_size).apply(params, obs, action, method=TrajectoryVAE.encode)[0]))
    m = segs["obs"].shape[0]
    chunk, skills = min(chunk_size, m), []
    for begin in range(0, m, chunk):
        pad = lambda x: np.pad(x, [(0, chunk - len(x))] + [(0, 0)] * (x.ndim - 1), mode="edge")
        obs, action = (pad(np.asarray(segs[k][begin:begin + chunk])) for k in ("obs", "action"))
        skills.append(np.asarray(encode(vae_params, obs, action))[:m - begin])
    weights = (discount ** np.arange(cfg.horizon)).astype(np.float32)
    reward = np.asarray(segs["reward"], np.float32) @ weights if "reward" in segs else np.zeros(m, np.float32)
    flags = lambda k: np.asarray(segs.get(k, np.zeros(m, bool)))
    return {"obs": np.asarray(segs["obs0"]), "action": np.concatenate(skills), "reward": reward,
            "next_obs": np.asarray(segs["next_obs_last"]), "terminated": flags("terminal_last"),
            "truncated": flags("timeout_last")}


def skill_prior_action(vae_params, obs: jax.Array, key: jax.Array, cfg: SkillConfig, action_size: int):
    """u = tanh(z), z ~ p(z | obs), for any leading batch shape of `obs` (exploration before the agent learns)."""
    mean, log_std = vae_net(cfg, action_size).apply(vae_params, obs, method=TrajectoryVAE.prior)
    return jnp.tanh(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape))


_SKILL_INFO = ("env_steps", "segment_return")


@dataclasses.dataclass(frozen=True)
class SkillEnv(envs.core.Wrapper):
    """High-level env: one step runs skill z = arctanh(u) with the frozen decoder for H low-level steps.

    `env` must be time-limited (`envs.make`). Low-level actions are SAMPLED from the decoder, a ~ N(tanh(m), sigma^2)
    clipped to [-1, 1] (as the reference's `sample_skill_actions`), with keys split from the state's rng;
    `sample_actions=False` uses the decoder mean. Once the low-level episode ends (terminated or truncated) the
    remaining steps of the segment are no-ops. After k <= H real steps: reward R = sum_{i<k} discount^i
    (r_i + reward_shift) (semi-MDP: the high-level agent should bootstrap with discount^k, which
    `explore.Config.skill_horizon` does), terminated/truncated those of the last real step, info `success` = max
    over the segment, `env_steps` = k, `segment_return` = sum_i r_i (unshifted). `max_steps` = ceil(inner
    max_steps / H). Under `envs.make_vec` the step that ends an episode shows the fresh episode's info
    (`env_steps` = 0): read that step's values from `info["final_info"]`.

    `vae_params` is excluded from equality and hashing: two SkillEnvs differing only in parameters compare
    equal, so never pass a SkillEnv as a static jit argument (close over it instead).
    """

    vae_params: Any = dataclasses.field(default=None, compare=False, hash=False, repr=False)
    horizon: int = 4
    latent_size: int = 8
    hidden_sizes: tuple[int, ...] = (256, 256)
    discount: float = 0.99
    reward_shift: float = 0.0
    sample_actions: bool = True

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        if self.vae_params is None:
            raise ValueError("SkillEnv needs vae_params (the parameters of a trained TrajectoryVAE).")
        if not isinstance(self.horizon, int) or self.horizon < 1 or not 0.0 < self.discount <= 1.0:
            raise ValueError(f"SkillEnv needs a positive integer horizon and a discount in (0, 1], got horizon="
                             f"{self.horizon!r}, discount={self.discount!r}.")
        if not isinstance(getattr(self.env, "max_steps", None), int):
            raise ValueError("SkillEnv needs a time-limited low-level env (`envs.make(...)` adds a TimeLimit), "
                             "so that its max_steps defines the high-level episode length.")

    @property
    def action_size(self) -> int:
        return self.latent_size

    @property
    def max_steps(self) -> int:
        return -(-self.env.max_steps // self.horizon)

    def reset(self, key):
        s = self.env.reset(key)
        info = {**s.info, "success": s.info["success"].astype(jnp.float32),
                "env_steps": jnp.zeros((), jnp.int32), "segment_return": jnp.zeros((), jnp.float32)}
        return s.replace(info=info)

    def step(self, state, action):
        z = jnp.arctanh(jnp.clip(action, -1.0 + 1e-6, 1.0 - 1e-6))
        decoder = TrajectoryVAE(self.env.action_size, self.latent_size, self.hidden_sizes)

        def low_level_step(carry, xs):
            weight, key = xs
            s, alive, discounted, total, success, count = carry
            mean, log_std = decoder.apply(self.vae_params, s.obs, z, method=TrajectoryVAE.decode)
            low_action = mean
            if self.sample_actions:
                low_action = jnp.clip(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape), -1.0, 1.0)
            stepped = self.env.step(s, low_action)
            s = jax.tree.map(lambda new, old: jnp.where(alive, new, old), stepped, s)
            reward = jnp.where(alive, stepped.reward, 0.0).astype(jnp.float32)
            shifted = jnp.where(alive, stepped.reward + self.reward_shift, 0.0).astype(jnp.float32)
            success = jnp.maximum(success, jnp.where(alive, stepped.info["success"], 0.0).astype(jnp.float32))
            carry = (s, alive & ~stepped.done, discounted + weight * shifted, total + reward, success,
                     count + alive.astype(jnp.int32))
            return carry, None

        rng, k_actions = jax.random.split(state.rng)
        inner = state.replace(info={k: v for k, v in state.info.items() if k not in _SKILL_INFO}, rng=rng)
        zero = jnp.zeros((), jnp.float32)
        # Alive from the start: after an auto-reset the incoming flags describe the PREVIOUS episode's end.
        init = (inner, jnp.ones((), bool), zero, zero, zero, jnp.zeros((), jnp.int32))
        weights = jnp.asarray(self.discount ** np.arange(self.horizon), jnp.float32)
        xs = (weights, jax.random.split(k_actions, self.horizon))
        (s, _, discounted, total, success, count), _ = jax.lax.scan(low_level_step, init, xs)
        return s.replace(reward=discounted,
                         info={**s.info, "success": success, "env_steps": count, "segment_return": total})


# ---- online high-level RL --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Config:
    skills: SkillConfig = SkillConfig()
    """The skill VAE (its decoder drives the low-level env)."""
    explore: explore.Config = explore.Config(prior_label="min", online_bonus=True)
    """The high-level agent and the labeller (the reference on antmaze: min label, RND on prior AND online rows).
    Its `skill_horizon` is set to `skills.horizon` by `make_train`."""
    discount: float = 0.99 ** 0.25
    """Low-level gamma inside a skill: R = sum_i gamma^i r_i; a full skill then discounts by gamma^H = 0.99, the
    reference's high-level discount, and the high level's hp.discount must be gamma^H (`high_level_discount`)."""
    reward_shift: float = -1.0
    """Added to every low-level reward inside a skill (the antmaze convention: -1 per step, 0 at the goal)."""
    sample_actions: bool = True
    """Low-level actions sampled from the decoder (the reference); False = the decoder mean."""


def high_level_discount(cfg: Config) -> float:
    """gamma^H: the discount of one full skill, the value the high level's `hp.discount` must take."""
    return float(cfg.discount ** cfg.skills.horizon)


def min_skill_reward(cfg: Config, min_reward: float = 0.0) -> float:
    """The "min" label of a full skill: sum_{i<H} gamma^i (r_min + reward_shift) (the minimum of the reference's
    chunked, shifted dataset rewards; the value `hp.min_reward` should take)."""
    return float(sum(cfg.discount ** i for i in range(cfg.skills.horizon)) * (min_reward + cfg.reward_shift))


def make_train(cfg: Config, env: envs.Env, vae_params):
    """`explore.make_train` over `SkillEnv(env)`: pure `init_carry(key, hp)`, `train_chunk(carry, hp, prior=None)`
    and `evaluate(carry, key, hp)`. `prior`: `high_level_transitions` passed through `explore.unlabeled_prior`.
    `hp` is an `explore.HParams` whose `discount` is `high_level_discount(cfg)` (per full skill; a skill cut short
    after k steps bootstraps with gamma^k). Evaluation reports the low-level return (the same skills, reward
    unshifted and undiscounted inside segments)."""
    s = cfg.skills
    skill_env = SkillEnv(env, vae_params=vae_params, horizon=s.horizon, latent_size=s.latent_size,
                         hidden_sizes=s.hidden_sizes, discount=cfg.discount, reward_shift=cfg.reward_shift,
                         sample_actions=cfg.sample_actions)
    start_action = lambda obs, key: skill_prior_action(vae_params, obs, key, s, env.action_size)
    explore_cfg = dataclasses.replace(cfg.explore, skill_horizon=s.horizon)
    init_carry, train_chunk, _ = explore.make_train(explore_cfg, skill_env, start_action)
    undiscounted = dataclasses.replace(skill_env, discount=1.0, reward_shift=0.0)

    def evaluate(carry: explore.Carry, key: jax.Array, hp: explore.HParams) -> dict:
        return sac.evaluate_policy(undiscounted, carry.agent, key, cfg.explore.agent)

    return init_carry, train_chunk, evaluate
