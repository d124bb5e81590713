"""AVTD: online model selection by validation TD error over N differently regularised SAC agents.

Paper: Li, Kumar, Kostrikov, Levine. "Efficient Deep Reinforcement Learning Requires Regulating Overfitting",
ICLR 2023 (arXiv:2304.10466). Its finding: in sample-efficient (high-UTD) deep RL, high TD error on held-out
transitions, not non-stationarity or action distribution shift, goes with poor performance; so one can hill-climb
the validation TD error with any supervised-learning regulariser. AVTD ("automatic model selection via validation
TD error") trains several differently regularised agents on one shared replay buffer and lets the agent with the
lowest validation TD error collect the data.

Equations (agent k with critics Q^k_1..Q^k_E, Polyak targets Q̄^k, policy pi^k, temperature alpha^k; sac.py's):
  target      y^k(s, a, r, s') = r~ + gamma (1 - terminated) (min_{j in M} Q̄^k_j(s', a') - alpha^k log pi^k(a'|s')),
              a' ~ pi^k(.|s'): the agent's OWN target critics and policy (sac.py's target, regularisers applied)
  TD error    e^k(x) = mean over members i of (Q^k_i(s, a) - y^k)^2 for a transition x   (dropout off)
              TD^k(D)  = mean over x in D of e^k(x)                                          (raw MSE)
              nTD^k(D) = TD^k(D) / (Var_{x in D}[y^k(x)] + 1e-6)                             (normalised)
  validation  D_val = the held-out transitions: each incoming transition goes to D_val with probability p
              (drawn per transition from the carry's rng) and to the training buffer D_train otherwise;
              D_val is NEVER sampled for a gradient step.
  score       S^k = nTD^k(D_val) (hp.normalize_td = 1, the default) or TD^k(D_val) (hp.normalize_td = 0)
  selection   every `selection_period` transitions, with c the acting agent and k* = argmin_k S^k:
                  actor <- k*  if  S^{k*} < (1 - m) S^c  (m = hp.switch_margin),  else actor stays c
              (`hp.fixed_agent = i >= 0` pins actor = i instead: "agent i alone", in the same program)
  training    every agent does SAC/RLPD updates (G critic steps, one actor and one temperature step per env step)
              on its own minibatches from the shared D_train, whichever agent acted.

Why the normalised score is the default. The raw MSE is in squared value units, so it grows with the scale of the
values: an agent that has learned larger (more accurate, on a task whose returns grow as it improves) values has a
larger TD error at the same relative fit, and the argmin favours the agent that has learned least (our
inverted_pendulum table: the acting agent at 60 return while the others were at 80-93). nTD is the fraction of
the variance of the agent's OWN validation targets that its critic fails to explain (1 - R^2 of Q ~ y on D_val):
invariant to any affine change of the value scale (reward scale c and offset b map Q, y to cQ + b', y' alike, so
both TD and Var(y) scale by c^2), 0 for a perfect held-out fit, ~1 for a critic no better than a constant. Why
the variance and not the mean square E[y^2]: E[y^2] is not shift-invariant, so an agent with a large constant
offset in its values (negative step rewards, or plain over-estimation) would get a small score whatever its fit,
which rewards over-estimation. The floor 1e-6 only matters when all of an agent's targets are equal. What nTD does
not do: it does not penalise a diverging critic whose targets grow without bound but which tracks them (raw MSE
does); the raw criterion stays available (hp.normalize_td = 0) and both are logged (val_td_<k>, val_td_norm_<k>).

Why a switching margin, and 0.1. Each switch changes the data collector, and the new agent's policy acts on states
its own critic has fitted no better than the others' (they share the buffer). Validation scores of differently
regularised agents are often within a few percent of each other (our inverted_pendulum run: within ~20%, with
the argmin flipping every one or two selection periods), and those few percent are estimation noise: the held-out
set is a few hundred to a few thousand transitions, and for Gaussian residuals the relative standard error of a
mean of n squared errors is sqrt(2 / n) (~4.5% at n = 1000, more with heavy-tailed TD errors). A relative margin of
0.1 (about two standard errors at n = 1000) keeps the acting agent unless another one is clearly better; it is a
sweepable HParams field (`--sweep.switch-margin 0,0.05,0.1,0.2`), 0 gives the plain argmin.

Regularisers, per agent, are ARRAYS in `HParams` (one entry per agent), read at call time, so one compiled
program holds every variant and a population can sweep them: `layernorm` (0/1 gate of LayerNorm in every hidden
layer of the critics, nets/mlp.py), `critic_dropout` (dropout rate in the critics, DroQ-style) and
`critic_weight_decay` (decoupled weight decay on the critics' kernels, `sac.adam_step`). The agents are stacked on
a leading axis and updated with `jax.vmap`; the acting policy is `sac.act` of the agents' params indexed by the
traced `carry.actor` (no Python branching anywhere).

Defaults: 4 agents (none | LayerNorm | LayerNorm + dropout 0.01 | weight decay 0.1), validation fraction 0.1,
selection every 1000 transitions with the normalised score and margin 0.1, TD errors on up to 1024 transitions of
each buffer, UTD 2 (8 critic steps per step of 4 envs), SAC defaults otherwise (see algos/sac.py). Dropout 0.01 is
DroQ's (Hiraoka et al., ICLR 2022); weight decay is decoupled, so a kernel shrinks by the fraction lr * wd per step
(0.1 -> 3e-5). experiments/avtd.py has presets for the UTD (`--preset high-utd`: UTD 8 on the CPU; `--preset
paper`: the paper's scale, GPU).

Where this departs from the reference (the paper's text; we did not have its code, so details it does not pin
down here are our choices):
  * The selection score is, by default, the NORMALISED validation TD error with a switching margin (see above);
    the paper compares raw validation TD errors by plain argmin (`--hp.normalize-td 0 --hp.switch-margin 0`).
  * Selection happens at chunk boundaries, so `selection_period` must be a multiple of the chunk's transitions
    (num_envs * chunk_steps): the validation TD error is then computed once per chunk (it is also logged every
    chunk) instead of inside the env-step scan, where under a population vmap a `lax.cond` would run it every step.
  * TD errors are the exact mean over a buffer while it holds at most `td_batch_size` transitions, else a uniform
    sample (with replacement) of `td_batch_size` of them (the same estimator for training and validation, dropout
    off, the same rows and random numbers for every agent), not always the whole held-out set. One a' per row.
  * Regularisers act on the critics only (the actor is a plain MLP), following the paper's focus on the TD error.
    Dropout is on in every training-time critic call (online critic, target critic, actor's Q), as RLPD/DroQ do.
  * The held-out transitions are lost to training for every agent, AVTD or fixed: fixed agents are compared on the
    same data budget. Sweep `validation_fraction` to 0 for a fixed agent to give it all the data.
  * A fixed member still trains all N agents (one program for the whole population): agent i learns from the data
    it collects, as it would alone; the others only learn off-policy from that data (and cost compute).
"""

from __future__ import annotations

import dataclasses

import chex
import flax.struct as struct
import jax
import jax.numpy as jnp

import envs
from algos import replay, sac
from nets import CriticEnsemble, Temperature


@dataclasses.dataclass(frozen=True)
class Config:
    """Static settings. Changing any of these recompiles."""

    agent: sac.Config = sac.Config(num_envs=4, chunk_steps=25, updates_per_step=8)
    """Every agent's SAC settings (`critic_layernorm` is ignored: LayerNorm is per agent, `hp.layernorm`).
    UTD = updates_per_step / num_envs gradient steps per transition (2 by default)."""
    num_agents: int = 4
    """N: agents trained side by side (the length of the per-agent fields of HParams)."""
    validation_capacity: int = 20_000
    """Held-out transitions kept (circular, like the training buffer)."""
    selection_period: int = 1000
    """Transitions between selections; a multiple of agent.num_envs * agent.chunk_steps."""
    td_batch_size: int = 1024
    """Rows of each buffer the training and validation TD errors are estimated on: all of them while the buffer
    holds at most this many, else this many drawn uniformly with replacement."""
    eval_all_agents: bool = True
    """Evaluate every agent's policy (eval_return_<k>), not only the acting one's."""

    def __post_init__(self):
        chunk = self.agent.num_envs * self.agent.chunk_steps
        if self.num_agents < 1:
            raise ValueError(f"Config.num_agents must be >= 1, got {self.num_agents}.")
        if self.selection_period < chunk or self.selection_period % chunk:
            raise ValueError(f"Config.selection_period ({self.selection_period}) must be a positive multiple of the "
                             f"transitions per chunk (agent.num_envs * agent.chunk_steps = {chunk}): selection "
                             f"happens at chunk boundaries.")
        if self.agent.max_target_backup:
            raise ValueError("Config.agent.max_target_backup is not supported by AVTD: its regularised critic "
                             "target (avtd.critic_target) backs up one policy sample at s'.")
        if self.validation_capacity < self.agent.num_envs or self.td_batch_size < 1:
            raise ValueError(f"Config.validation_capacity must hold at least agent.num_envs transitions and "
                             f"td_batch_size must be positive; got {self.validation_capacity}, {self.td_batch_size}.")

    @property
    def sac(self) -> sac.Config:
        return dataclasses.replace(self.agent, critic_layernorm=True)  # the LayerNorm params exist; gates decide


@struct.dataclass
class HParams(sac.HParams):
    """SAC's sweepable scalars plus the per-agent regularisers (one value per agent) and AVTD's own."""

    layernorm: tuple[float, ...] = (0.0, 1.0, 1.0, 0.0)
    """Per agent: LayerNorm in the critics' hidden layers, 1 = on, 0 = off (a traced gate)."""
    critic_dropout: tuple[float, ...] = (0.0, 0.0, 0.01, 0.0)
    """Per agent: dropout rate in the critics' hidden layers (0 = none)."""
    critic_weight_decay: tuple[float, ...] = (0.0, 0.0, 0.0, 0.1)
    """Per agent: decoupled weight decay of the critics' kernels (the step is -lr * (adam + wd * kernel))."""
    validation_fraction: float = 0.1
    """p: probability that an incoming transition is held out for validation (never trained on)."""
    fixed_agent: float = -1.0
    """-1: AVTD selection. i >= 0: agent i always acts ("agent i alone"; all agents still train)."""
    normalize_td: float = 1.0
    """Selection criterion. 1: each agent's validation TD error divided by the variance of its own validation
    targets (scale-free, the default); 0: the raw validation MSE (the paper's quantity, scale-dependent). A traced
    gate: values in between interpolate, so both criteria can run in one population."""
    switch_margin: float = 0.1
    """Relative hysteresis: at a selection, switch from the acting agent c to the best agent k only if
    score_k < (1 - margin) * score_c. 0: plain argmin every selection period."""

    # Valid values (experiments/runner checks them, per agent for the tuples; SAC's are inherited). fixed_agent
    # must also be below the number of agents, which experiments/avtd.py checks.
    RANGES = {"layernorm": "[0, 1]", "critic_dropout": "[0, 1)", "critic_weight_decay": "[0, inf)",
              "validation_fraction": "[0, 1)", "fixed_agent": "[-1, inf) integer", "normalize_td": "[0, 1]",
              "switch_margin": "[0, 1)"}


@struct.dataclass
class Regularizer:
    """One agent's regularisers (scalars), or all agents' (shape (N,)) before the vmap over agents."""

    layernorm: jax.Array
    dropout: jax.Array
    weight_decay: jax.Array


def regularizers(hp: HParams, num_agents: int) -> Regularizer:
    """The per-agent fields of `hp` as (N,) arrays (a scalar, e.g. from a sweep, applies to every agent)."""
    per_agent = lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.float32), (num_agents,))
    return Regularizer(per_agent(hp.layernorm), per_agent(hp.critic_dropout), per_agent(hp.critic_weight_decay))


# ---- one agent: critics with traced regularisers, target, TD error, updates --------------------------------

def critic_values(params, obs, action, reg: Regularizer, key: jax.Array, cfg: Config, num_critics: int | None = None,
                  deterministic: bool = False) -> jax.Array:
    """Q-values (E, batch) of a critic ensemble with this agent's LayerNorm gate and dropout rate."""
    net = CriticEnsemble(num_critics or cfg.agent.num_critics, cfg.agent.hidden_sizes, use_layernorm=True)
    return net.apply(params, obs, action, deterministic, layernorm_gate=reg.layernorm, dropout_rate=reg.dropout,
                     rngs={"dropout": key})


def critic_target(agent: sac.AgentState, batch: dict, key: jax.Array, reg: Regularizer, hp: HParams, cfg: Config,
                  deterministic: bool = False) -> jax.Array:
    """sac.critic_target with the agent's regularisers: y = r~ + gamma (1 - term) (min_M Q̄ - alpha log pi)."""
    k_action, k_subset, k_dropout = jax.random.split(key, 3)
    a = cfg.agent
    next_action, next_log_prob = sac.actor_net(a, agent.action_size).apply(
        agent.actor_params, batch["next_obs"]).sample_and_log_prob(k_action)
    subset_params = agent.target_critic_params
    if a.num_target_critics < a.num_critics:
        subset = jax.random.choice(k_subset, a.num_critics, (a.num_target_critics,), replace=False)
        subset_params = jax.tree.map(lambda p: p[subset], subset_params)
    next_q = critic_values(subset_params, batch["next_obs"], next_action, reg, k_dropout, cfg,
                           a.num_target_critics, deterministic).min(0)
    if a.backup_entropy:
        next_q = next_q - sac.temperature(agent) * next_log_prob
    reward = hp.reward_scale * batch["reward"] + hp.reward_bias
    not_terminated = 1.0 - batch["terminated"].astype(jnp.float32)
    return jax.lax.stop_gradient(reward + hp.discount * not_terminated * next_q)


def td_errors(agent: sac.AgentState, batch: dict, key: jax.Array, reg: Regularizer, hp: HParams,
              cfg: Config) -> tuple[jax.Array, jax.Array]:
    """Per transition: the mean over the E critics of (Q_i(s, a) - y)^2 and the target y, dropout off (evaluation
    mode); shapes (B,), (B,). The agent's own target critics and policy give y (one a' ~ pi(.|s') per row)."""
    k_target, k_q = jax.random.split(key)
    y = critic_target(agent, batch, k_target, reg, hp, cfg, deterministic=True)
    qs = critic_values(agent.critic_params, batch["obs"], batch["action"], reg, k_q, cfg, deterministic=True)
    return jnp.mean((qs - y[None]) ** 2, axis=0), y


TARGET_VARIANCE_FLOOR = 1e-6
"""Added to Var(y) in the normalised TD error, so that an agent whose validation targets are all equal (e.g. every
value still 0) gets a large, finite score instead of 0/0."""


def estimation_rows(buffer: replay.ReplayBuffer, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """(indices, weights), shape (n,) each, of the rows a TD error of `buffer` is estimated on.

    While the buffer holds at most n transitions: every stored row once (weight 1) and padding (weight 0), so the
    estimate is the exact mean over the buffer (no resampling noise on a small held-out set). Beyond n: n rows drawn
    uniformly with replacement, weight 1 (replay.sample's estimator)."""
    size = buffer.size
    ordered = jnp.arange(n, dtype=jnp.int32)
    drawn = jax.random.randint(key, (n,), 0, jnp.maximum(size, 1))
    exact = size <= n
    idx = jnp.where(exact, jnp.minimum(ordered, jnp.maximum(size - 1, 0)), drawn)
    weight = jnp.where(exact, (ordered < size).astype(jnp.float32), 1.0)
    return idx, weight


def td_scores(sq_errors: jax.Array, targets: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(raw, normalised) TD error of one agent from per-row squared errors, targets and row weights (shape (B,)).

        raw        = sum_i w_i e_i / sum_i w_i                                         (the MSE, in value units^2)
        normalised = raw / (Var_w(y) + TARGET_VARIANCE_FLOOR),  Var_w(y) = sum_i w_i (y_i - ybar)^2 / sum_i w_i

    The normalised error is the fraction of the variance of the agent's own targets that its critic does not
    explain on these rows (1 - R^2 of the regression Q(s, a) ~ y)."""
    total = jnp.maximum(weights.sum(), 1.0)
    raw = jnp.sum(weights * sq_errors) / total
    mean_y = jnp.sum(weights * targets) / total
    var_y = jnp.sum(weights * (targets - mean_y) ** 2) / total
    return raw, raw / (var_y + TARGET_VARIANCE_FLOOR)


def buffer_td(agents: sac.AgentState, regs: Regularizer, buffer: replay.ReplayBuffer, key: jax.Array, hp: HParams,
              cfg: Config) -> tuple[jax.Array, jax.Array]:
    """(raw, normalised) TD errors, shape (N,) each, of every agent on `buffer` (same rows and random numbers for
    every agent: common random numbers, so differences between agents are not sampling noise of the rows)."""
    k_rows, k_td = jax.random.split(key)
    idx, weights = estimation_rows(buffer, k_rows, cfg.td_batch_size)
    batch = jax.tree.map(lambda x: x[idx], buffer.data)

    def one(agent, reg):
        sq_errors, targets = td_errors(agent, batch, k_td, reg, hp, cfg)
        return td_scores(sq_errors, targets, weights)

    return jax.vmap(one)(agents, regs)


def selection_score(raw: jax.Array, normalised: jax.Array, normalize_td: jax.Array) -> jax.Array:
    """The selection criterion, (N,): normalize_td * normalised + (1 - normalize_td) * raw (hp.normalize_td)."""
    return normalize_td * normalised + (1.0 - normalize_td) * raw


def update_critic(agent: sac.AgentState, batch: dict, key: jax.Array, reg: Regularizer, hp: HParams, cfg: Config):
    k_target, k_dropout = jax.random.split(key)
    y = critic_target(agent, batch, k_target, reg, hp, cfg)

    def loss_fn(params):
        qs = critic_values(params, batch["obs"], batch["action"], reg, k_dropout, cfg)
        chex.assert_shape(qs, (cfg.agent.num_critics, y.shape[0]))
        return jnp.mean((qs - y[None]) ** 2), qs

    (loss, qs), grads = jax.value_and_grad(loss_fn, has_aux=True)(agent.critic_params)
    agent = sac.apply_critic_gradients(agent, grads, hp, reg.weight_decay)
    return agent, {"critic_loss": loss, "q_mean": qs.mean()}


def update_actor_and_temperature(agent: sac.AgentState, batch: dict, key: jax.Array, reg: Regularizer, hp: HParams,
                                 cfg: Config):
    """sac.update_actor_and_temperature, with the agent's regularised critics (dropout on) in the actor loss."""
    k_action, k_dropout = jax.random.split(key)
    alpha = sac.temperature(agent)
    actor = sac.actor_net(cfg.agent, agent.action_size)

    def actor_loss_fn(params):
        action, log_prob = actor.apply(params, batch["obs"]).sample_and_log_prob(k_action)
        qs = critic_values(agent.critic_params, batch["obs"], action, reg, k_dropout, cfg)
        q = qs.mean(0) if cfg.agent.actor_q_reduction == "mean" else qs.min(0)
        return jnp.mean(alpha * log_prob - q), log_prob

    (actor_loss, log_prob), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(agent.actor_params)
    actor_params, actor_opt_state = sac.adam_step(agent.actor_params, agent.actor_opt_state, grads, hp.actor_lr)
    log_prob = jax.lax.stop_gradient(log_prob)
    target_entropy = sac.target_entropy(cfg.agent, agent.action_size)
    temp_loss, grads = jax.value_and_grad(
        lambda p: -jnp.mean(Temperature().apply(p) * (log_prob + target_entropy)))(agent.temp_params)
    temp_params, temp_opt_state = sac.adam_step(agent.temp_params, agent.temp_opt_state, grads, hp.temp_lr)
    agent = agent.replace(actor_params=actor_params, actor_opt_state=actor_opt_state, temp_params=temp_params,
                          temp_opt_state=temp_opt_state)
    return agent, {"actor_loss": actor_loss, "entropy": -log_prob.mean(), "temperature": alpha}


def sample_batches(buffer: replay.ReplayBuffer, key: jax.Array, cfg: Config) -> dict:
    """G training minibatches (leading axis G) from the TRAINING buffer: the only data gradient steps see."""
    keys = jax.random.split(key, cfg.agent.updates_per_step)
    return jax.vmap(lambda k: replay.sample(buffer, k, cfg.agent.batch_size))(keys)


def learn(agent: sac.AgentState, reg: Regularizer, buffer: replay.ReplayBuffer, key: jax.Array, hp: HParams,
          cfg: Config):
    """One agent's update for one env step: G critic steps on its own minibatches, then actor and temperature."""
    k_sample, k_update = jax.random.split(key)
    batches = sample_batches(buffer, k_sample, cfg)
    keys = jax.random.split(k_update, cfg.agent.updates_per_step + 1)
    agent, critic_metrics = jax.lax.scan(lambda ag, bk: update_critic(ag, *bk, reg, hp, cfg), agent,
                                         (batches, keys[:-1]))
    agent, actor_metrics = update_actor_and_temperature(agent, jax.tree.map(lambda x: x[-1], batches), keys[-1],
                                                        reg, hp, cfg)
    return agent, {**jax.tree.map(jnp.mean, critic_metrics), **actor_metrics}


def learn_all(agents: sac.AgentState, regs: Regularizer, buffer: replay.ReplayBuffer, key: jax.Array, hp: HParams,
              cfg: Config):
    """Every agent's `learn`, vmapped over the agent axis (own key, own regulariser, shared buffer)."""
    keys = jax.random.split(key, cfg.num_agents)
    return jax.vmap(lambda agent, reg, k: learn(agent, reg, buffer, k, hp, cfg))(agents, regs, keys)


def pick(tree, index: jax.Array):
    """Member `index` (traced) of a tree stacked on a leading agent axis."""
    return jax.tree.map(lambda x: x[index], tree)


# ---- the validation split and the selection rule ------------------------------------------------------------

def insert_masked(buffer: replay.ReplayBuffer, transitions: dict, mask: jax.Array) -> replay.ReplayBuffer:
    """Insert only the transitions with mask True, contiguously at `pos` (circular); static shapes throughout.

    The others get the out-of-range slot `capacity` and are dropped by the scatter (`mode="drop"`)."""
    capacity = buffer.capacity
    offset = jnp.cumsum(mask.astype(jnp.int32)) - 1
    idx = jnp.where(mask, (buffer.pos + offset) % capacity, capacity)
    data = {k: buffer.data[k].at[idx].set(jnp.asarray(v, buffer.data[k].dtype), mode="drop")
            for k, v in transitions.items()}
    count = jnp.sum(mask.astype(jnp.int32))
    return replay.ReplayBuffer(data=data, size=jnp.minimum(buffer.size + count, capacity).astype(jnp.int32),
                               pos=((buffer.pos + count) % capacity).astype(jnp.int32))


def route(train: replay.ReplayBuffer, validation: replay.ReplayBuffer, transitions: dict, key: jax.Array,
          fraction: jax.Array):
    """Each transition goes to `validation` with probability `fraction`, else to `train`; returns the mask too."""
    n = jax.tree.leaves(transitions)[0].shape[0]
    held_out = jax.random.uniform(key, (n,)) < fraction
    return insert_masked(train, transitions, ~held_out), insert_masked(validation, transitions, held_out), held_out


def select_actor(actor: jax.Array, scores: jax.Array, fixed_agent: jax.Array, select_now: jax.Array,
                 margin: jax.Array) -> jax.Array:
    """fixed_agent >= 0 pins the actor. Otherwise, when `select_now`, the agent k with the lowest score replaces the
    acting agent c only if score_k < (1 - margin) * score_c (a relative margin); a non-finite score counts as +inf,
    so an acting agent whose score is NaN/inf is replaced by any finite one."""
    scores = jnp.where(jnp.isfinite(scores), scores, jnp.inf)
    best = jnp.argmin(scores).astype(jnp.int32)
    better = (scores[best] < (1.0 - margin) * scores[actor]) | (jnp.isinf(scores[actor]) & jnp.isfinite(scores[best]))
    chosen = jnp.where(select_now & better, best, actor)
    fixed = jnp.round(jnp.asarray(fixed_agent)).astype(jnp.int32)
    return jnp.where(fixed >= 0, fixed, chosen)


# ---- training loop pieces ---------------------------------------------------------------------------------------

@struct.dataclass
class Carry:
    agents: sac.AgentState  # every leaf has a leading agent axis N
    buffer: replay.ReplayBuffer  # training transitions (shared by all agents)
    validation: replay.ReplayBuffer  # held-out transitions (never sampled for updates)
    env_state: envs.State
    rng: jax.Array
    actor: jax.Array  # int32, the agent that collects the next transitions
    env_steps: jax.Array  # int32, transitions collected so far (all envs)
    num_updates: jax.Array  # int32, env steps with updates


def make_train(cfg: Config, env: envs.Env):
    """Returns pure `init_carry(key, hp)`, `train_chunk(carry, hp)`, `evaluate(carry, key, hp)` (runner's API)."""
    a, n = cfg.agent, cfg.num_agents
    venv = envs.make_vec(env, a.num_envs)
    obs_size, action_size = env.observation_size, env.action_size
    if getattr(env, "max_steps", None) is None:
        raise ValueError("avtd.make_train needs an env with a TimeLimit (`envs.make` adds one).")

    def init_carry(key: jax.Array, hp: HParams) -> Carry:
        k_agents, k_env, k_rng = jax.random.split(key, 3)
        # lax.map, not vmap: initialisation runs once, and XLA compiles the un-batched init about twice as fast.
        agents = jax.lax.map(lambda k: sac.init_agent(k, cfg.sac, hp, obs_size, action_size),
                             jax.random.split(k_agents, n))
        example = {"obs": jnp.zeros(obs_size), "action": jnp.zeros(action_size), "reward": jnp.zeros(()),
                   "next_obs": jnp.zeros(obs_size), "terminated": jnp.zeros((), bool),
                   "truncated": jnp.zeros((), bool)}
        fixed = jnp.round(jnp.asarray(hp.fixed_agent)).astype(jnp.int32)
        return Carry(agents=agents, buffer=replay.init(a.buffer_capacity, example),
                     validation=replay.init(cfg.validation_capacity, example), env_state=venv.reset(k_env),
                     rng=k_rng, actor=jnp.maximum(fixed, 0), env_steps=jnp.zeros((), jnp.int32),
                     num_updates=jnp.zeros((), jnp.int32))

    def train_chunk(carry: Carry, hp: HParams) -> tuple[Carry, dict]:
        regs = regularizers(hp, n)
        metric_shapes = jax.eval_shape(lambda c: learn_all(c.agents, regs, c.buffer, c.rng, hp, cfg), carry)[1]
        zero_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)

        def env_step(state, _):
            carry, sums = state
            rng, k_random, k_policy, k_route, k_learn = jax.random.split(carry.rng, 5)
            obs = carry.env_state.obs
            random_action = jax.random.uniform(k_random, (a.num_envs, action_size), minval=-1.0, maxval=1.0)
            policy_action = sac.act(pick(carry.agents, carry.actor), obs, k_policy, False, a)
            starting = carry.env_steps < a.start_steps
            action = jnp.where(starting, random_action, policy_action) if a.start_actions == "uniform" \
                else policy_action
            env_state = venv.step(carry.env_state, action)
            transitions = {"obs": obs, "action": action, "reward": env_state.reward,
                           "next_obs": env_state.info["next_obs"], "terminated": env_state.terminated,
                           "truncated": env_state.truncated}
            buffer, validation, _ = route(carry.buffer, carry.validation, transitions, k_route,
                                          hp.validation_fraction)
            ready = ~starting & (buffer.size >= a.batch_size)
            agents, metrics = jax.lax.cond(ready, lambda ag, b, k: learn_all(ag, regs, b, k, hp, cfg),
                                           lambda ag, b, k: (ag, zero_metrics), carry.agents, buffer, k_learn)
            done = env_state.info["episode_done"]
            sums = {**{k: sums[k] + v for k, v in metrics.items()},
                    "updates": sums["updates"] + ready,
                    "episode_return": sums["episode_return"] + jnp.sum(done * env_state.info["episode_return"]),
                    "episode_success": sums["episode_success"] + jnp.sum(done * env_state.info["episode_success"]),
                    "episode_count": sums["episode_count"] + jnp.sum(done)}
            carry = carry.replace(agents=agents, buffer=buffer, validation=validation, env_state=env_state, rng=rng,
                                  env_steps=carry.env_steps + a.num_envs, num_updates=carry.num_updates + ready)
            return (carry, sums), None

        acted = carry.actor
        sums = {**zero_metrics, **{k: jnp.zeros(()) for k in
                                   ("updates", "episode_return", "episode_success", "episode_count")}}
        (carry, sums), _ = jax.lax.scan(env_step, (carry, sums), None, length=a.chunk_steps)

        # Training vs validation TD error of every agent (same estimator, same random numbers for all agents).
        rng, k_train, k_val = jax.random.split(carry.rng, 3)
        train_td, train_td_norm = buffer_td(carry.agents, regs, carry.buffer, k_train, hp, cfg)
        val_td, val_td_norm = buffer_td(carry.agents, regs, carry.validation, k_val, hp, cfg)
        score = selection_score(val_td, val_td_norm, hp.normalize_td)
        select_now = (carry.env_steps % cfg.selection_period == 0) & (carry.validation.size > 0)
        carry = carry.replace(rng=rng, actor=select_actor(carry.actor, score, hp.fixed_agent, select_now,
                                                          hp.switch_margin))

        updates = jnp.maximum(sums["updates"], 1.0)
        episodes = jnp.maximum(sums["episode_count"], 1.0)
        metrics = {"actor": acted, "selected": carry.actor, "episode_return": sums["episode_return"] / episodes,
                   "episode_success": sums["episode_success"] / episodes, "episode_count": sums["episode_count"],
                   "updates_in_chunk": sums["updates"], "env_steps": carry.env_steps,
                   "num_updates": carry.num_updates, "train_size": carry.buffer.size,
                   "validation_size": carry.validation.size}
        metrics["selection"] = select_now.astype(jnp.float32)  # 1 in chunks that ended with a selection
        per_agent = {"train_td": train_td, "val_td": val_td, "train_td_norm": train_td_norm,
                     "val_td_norm": val_td_norm, "score": score,
                     **{k: sums[k] / updates for k in zero_metrics}}  # chunk means (0 before the first update)
        metrics.update({f"{k}_{i}": v[i] for k, v in per_agent.items() for i in range(n)})
        return carry, metrics

    def evaluate(carry: Carry, key: jax.Array, hp: HParams) -> dict:
        """Deterministic episodes of the acting agent (eval_return) and, optionally, of every agent."""
        if not cfg.eval_all_agents:
            return sac.evaluate_policy(env, pick(carry.agents, carry.actor), key, a)
        per_agent = jax.vmap(lambda ag: sac.evaluate_policy(env, ag, key, a))(carry.agents)
        out = {k: v[carry.actor] for k, v in per_agent.items()}
        out.update({f"{k}_{i}": v[i] for k, v in per_agent.items() for i in range(n)})
        return out

    return init_carry, train_chunk, evaluate
