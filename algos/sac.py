"""Soft Actor-Critic, with the design choices of RLPD as options.

Papers
  SAC:  Haarnoja, Zhou, Hartikainen, Tucker, Ha, Tan, Kumar, Zhu, Gupta, Abbeel, Levine. "Soft Actor-Critic
        Algorithms and Applications", 2018 (arXiv:1812.05905; learned temperature).
  RLPD: Ball, Smith, Kostrikov, Levine. "Efficient Online Reinforcement Learning with Offline Data", ICML 2023
        (high UTD, critic ensembles with a random target subset, LayerNorm critics, symmetric sampling).

Equations (E critics Q_1..Q_E with Polyak targets Q̄_j, policy pi, temperature alpha = exp(log_alpha)):
  critic   y    = r~ + gamma (1 - terminated) ( min_{j in M} Q̄_j(s', a') - alpha * backup_entropy * log pi(a'|s') ),
                  a' ~ pi(.|s'),  M a random subset of size `num_target_critics` drawn per critic update,
                  r~ = reward_scale * r + reward_bias;  with `max_target_backup`: the bracket is maxed over N
                  policy samples a'_n at s' (CQL/Cal-QL's and WSRL's "max-target backup")
           loss = mean over members and batch of (Q_i(s, a) - y)^2
  actor    loss = mean_batch[ alpha log pi(a|s) - reduce_E Q_i(s, a) ],  a ~ pi(.|s) (reparameterised),
                  reduce = mean (RLPD) or min (classic clipped double-Q with E = 2)
  alpha    loss = mean_batch[ -alpha (log pi(a|s) + target_entropy) ]  (gradient on log_alpha, log pi fixed)
  targets  Q̄ <- tau Q + (1 - tau) Q̄ after every critic step.
Only `terminated` stops bootstrapping: truncated episodes (time limits) bootstrap.

One `update` = G = `updates_per_step` critic steps (each on its own minibatch, each followed by a target update,
run as a `lax.scan`), then ONE actor step and ONE temperature step on the last minibatch (RLPD's UTD scheme).
Defaults give plain SAC (E = M = 2, G = 1); RLPD is `num_critics=10, num_target_critics=2, critic_layernorm=True,
updates_per_step=20` plus symmetric sampling from a prior buffer (`replay.sample_symmetric`).

Defaults: Adam, lr 3e-4 for everything, gamma 0.99, tau 0.005, alpha_0 = 1, hidden (256, 256), batch 256, target
entropy -|A|/2 (RLPD's choice; the SAC paper, Cal-QL and WSRL use -|A|: `target_entropy_per_action=-1`), log-std clipped to [-10, 2], Xavier-uniform init.

Where this departs from the reference code (RLPD's `rlpd/agents/sac/sac_learner.py`, jaxrl):
  * Learning rates and weight decay are sweepable hyperparameters (a vmapped population can hold different
    values in ONE compiled program), so optax only provides the Adam direction (`optax.scale_by_adam`); the
    step `-lr * (direction + weight_decay * kernel)` is applied here with `hp` read at every update. Baking `lr`
    into `optax.adam(lr)` at construction would make it a compile-time constant. Weight decay is decoupled
    (AdamW) and applies to Dense kernels only (RLPD's mask exempts biases; here LayerNorm is exempt too).
  * G independent minibatches are sampled (RLPD samples one G*B batch and splits it: the same distribution).
  * Uniform random actions for the first `start_steps` transitions are selected with `jnp.where` in the scan.
  * Actor updates use a fresh policy sample; the temperature loss uses the log-probs of that same sample.
  * log-std is clipped to [-10, 2] (RLPD: [-20, 2]); UTD critic steps are a `lax.scan`, not an unrolled loop.
  * `start_steps` defaults to 1000 (RLPD: `start_training` = 10000).
"""

from __future__ import annotations

import dataclasses

import chex
import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

import envs
from algos import replay
from nets import CriticEnsemble, TanhGaussianActor, Temperature


@dataclasses.dataclass(frozen=True)
class Config:
    """Static settings: shapes, counts, budgets. Changing any of these recompiles."""

    num_envs: int = 16  # parallel environments
    chunk_steps: int = 50  # vectorised env steps per `train_chunk` (one lax.scan)
    buffer_capacity: int = 100_000
    batch_size: int = 256
    start_steps: int = 1000  # transitions collected before updates begin (uniform-random or policy actions)
    start_actions: str = "uniform"  # during start_steps: "uniform" random actions, or the "policy" (WSRL warmup)
    updates_per_step: int = 1  # UTD G: critic steps per vectorised env step (then one actor/alpha step)
    hidden_sizes: tuple[int, ...] = (256, 256)
    num_critics: int = 2  # E
    num_target_critics: int = 2  # M: target = min over a random subset of M target critics
    critic_layernorm: bool = False
    backup_entropy: bool = True
    actor_q_reduction: str = "mean"  # "mean" (RLPD) or "min" over the ensemble (WSRL, classic clipped double-Q)
    actor_layernorm: bool = False  # LayerNorm in the policy trunk (WSRL's antmaze config)
    max_target_backup: bool = False  # TD target: max over `backup_actions` policy samples at s' (Cal-QL, WSRL)
    backup_actions: int = 10  # N policy samples at s' for the max-target backup
    target_entropy: float | None = None  # None: target_entropy_per_action * action_size
    target_entropy_per_action: float = -0.5  # -1/2 (RLPD); -1 is the SAC paper's, Cal-QL's and WSRL's -|A|
    eval_episodes: int = 8

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))  # hashable: Config is a static arg
        for name in ("num_envs", "chunk_steps", "buffer_capacity", "batch_size", "updates_per_step",
                     "num_critics", "num_target_critics", "eval_episodes", "backup_actions"):
            if getattr(self, name) < 1:
                raise ValueError(f"Config.{name} must be a positive integer, got {getattr(self, name)}.")
        if self.start_actions not in ("uniform", "policy"):
            raise ValueError(f"Config.start_actions must be 'uniform' or 'policy', got {self.start_actions!r}.")
        if self.start_steps < 0:
            raise ValueError(f"Config.start_steps must be >= 0, got {self.start_steps}.")
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"Config.hidden_sizes must be a non-empty tuple of positive widths, got "
                             f"{self.hidden_sizes}.")
        if self.num_target_critics > self.num_critics:
            raise ValueError(f"Config.num_target_critics (M={self.num_target_critics}) cannot exceed "
                             f"Config.num_critics (E={self.num_critics}): the target is a min over M of the E.")
        if self.actor_q_reduction not in ("mean", "min"):
            raise ValueError(f"Config.actor_q_reduction must be 'mean' or 'min', got {self.actor_q_reduction!r}.")
        if self.buffer_capacity < max(self.num_envs, self.batch_size):
            raise ValueError(f"Config.buffer_capacity ({self.buffer_capacity}) must hold at least num_envs and "
                             f"batch_size ({self.num_envs}, {self.batch_size}).")


@struct.dataclass
class HParams:
    """Sweepable scalars: a population stacks these along a leading axis and vmaps over it."""

    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temp_lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    init_temperature: float = 1.0
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    critic_weight_decay: float = 0.0

    # Valid values, checked for every population member before compiling (experiments/runner/sweeps.py): intervals,
    # "[" / "]" closed, "(" / ")" open. Subclasses add their own fields' ranges in their own RANGES.
    RANGES = {"actor_lr": "[0, inf)", "critic_lr": "[0, inf)", "temp_lr": "[0, inf)", "discount": "[0, 1)",
              "tau": "(0, 1]", "init_temperature": "(0, inf)", "reward_scale": "(-inf, inf)",
              "reward_bias": "(-inf, inf)", "critic_weight_decay": "[0, inf)"}


@struct.dataclass
class AgentState:
    actor_params: dict
    actor_opt_state: optax.OptState
    critic_params: dict  # every leaf has a leading ensemble axis E
    target_critic_params: dict
    critic_opt_state: optax.OptState
    temp_params: dict  # {"params": {"log_alpha": ()}}
    temp_opt_state: optax.OptState
    step: jax.Array  # int32, critic gradient steps taken
    action_size: int = struct.field(pytree_node=False)  # static (part of the tree structure, not a leaf)


# ---- networks and optimiser ------------------------------------------------------------------------------

def actor_net(cfg: Config, action_size: int) -> TanhGaussianActor:
    return TanhGaussianActor(action_size, cfg.hidden_sizes, use_layernorm=cfg.actor_layernorm)


def critic_net(cfg: Config, num_critics: int) -> CriticEnsemble:
    return CriticEnsemble(num_critics, cfg.hidden_sizes, use_layernorm=cfg.critic_layernorm)


adam = optax.scale_by_adam()  # the direction only; the (swept) step size is applied in `adam_step`


def adam_step(params, opt_state, grads, lr, weight_decay=None):
    """params <- params - lr * (adam(grads) + weight_decay * params[kernels]), lr/decay possibly traced."""
    direction, opt_state = adam.update(grads, opt_state, params)
    if weight_decay is not None:
        decay = lambda path, p: weight_decay * p if getattr(path[-1], "key", None) == "kernel" else 0.0
        direction = jax.tree.map(jnp.add, direction, jax.tree_util.tree_map_with_path(decay, params))
    return jax.tree.map(lambda p, d: p - lr * d, params, direction), opt_state


def target_entropy(cfg: Config, action_size: int) -> float:
    """The temperature's entropy target: cfg.target_entropy, or target_entropy_per_action * |A|."""
    return cfg.target_entropy_per_action * action_size if cfg.target_entropy is None else cfg.target_entropy


def temperature(agent: AgentState) -> jax.Array:
    return Temperature().apply(agent.temp_params)


def init_agent(key: jax.Array, cfg: Config, hp: HParams, observation_size: int, action_size: int) -> AgentState:
    k_actor, k_critic, k_temp = jax.random.split(key, 3)
    obs, action = jnp.zeros((1, observation_size)), jnp.zeros((1, action_size))
    actor_params = actor_net(cfg, action_size).init(k_actor, obs)
    critic_params = critic_net(cfg, cfg.num_critics).init(k_critic, obs, action)
    temp_params = Temperature(hp.init_temperature).init(k_temp)
    return AgentState(actor_params=actor_params, actor_opt_state=adam.init(actor_params),
                      critic_params=critic_params, target_critic_params=critic_params,
                      critic_opt_state=adam.init(critic_params), temp_params=temp_params,
                      temp_opt_state=adam.init(temp_params), step=jnp.zeros((), jnp.int32),
                      action_size=action_size)


def q_values(agent: AgentState, obs: jax.Array, action: jax.Array, cfg: Config) -> jax.Array:
    """Q-values of the online critic ensemble, shape (E, batch)."""
    return critic_net(cfg, cfg.num_critics).apply(agent.critic_params, obs, action)


def act(agent: AgentState, obs: jax.Array, key: jax.Array, deterministic: bool, cfg: Config) -> jax.Array:
    """Action(s) for `obs` (any leading batch shape): tanh(mean) if `deterministic`, else a policy sample."""
    dist = actor_net(cfg, agent.action_size).apply(agent.actor_params, obs)
    return dist.mode() if deterministic else dist.sample(key)


# ---- losses and update -----------------------------------------------------------------------------------

def critic_target(agent: AgentState, batch: dict, key: jax.Array, hp: HParams, cfg: Config) -> jax.Array:
    """y = r~ + gamma (1 - terminated) (min over a random M-subset of target Q(s', a') - alpha log pi(a'|s')).

    With `max_target_backup`, N = `backup_actions` actions a'_n ~ pi(.|s') are drawn and the bootstrap is
    max_n [min_M Q̄(s', a'_n) - alpha log pi(a'_n|s')] (the entropy term only with `backup_entropy`)."""
    k_action, k_subset = jax.random.split(key)
    next_dist = actor_net(cfg, agent.action_size).apply(agent.actor_params, batch["next_obs"])
    if cfg.max_target_backup:  # (N, B, A), (N, B)
        next_action, next_log_prob = jax.vmap(next_dist.sample_and_log_prob)(
            jax.random.split(k_action, cfg.backup_actions))
    else:  # (B, A), (B,)
        next_action, next_log_prob = next_dist.sample_and_log_prob(k_action)
    # Evaluate only the M chosen target critics: slice their parameters out of the ensemble axis (as RLPD).
    # With M = E every subset is the whole ensemble, so the gather is skipped.
    subset_params = agent.target_critic_params
    if cfg.num_target_critics < cfg.num_critics:
        subset = jax.random.choice(k_subset, cfg.num_critics, (cfg.num_target_critics,), replace=False)
        subset_params = jax.tree.map(lambda p: p[subset], subset_params)
    target_q = lambda a: critic_net(cfg, cfg.num_target_critics).apply(subset_params, batch["next_obs"], a).min(0)
    next_q = jax.vmap(target_q)(next_action) if cfg.max_target_backup else target_q(next_action)
    if cfg.backup_entropy:
        next_q = next_q - temperature(agent) * next_log_prob
    if cfg.max_target_backup:
        next_q = next_q.max(0)
    reward = hp.reward_scale * batch["reward"] + hp.reward_bias
    not_terminated = 1.0 - batch["terminated"].astype(jnp.float32)
    return jax.lax.stop_gradient(reward + bootstrap_discount(batch, hp) * not_terminated * next_q)


def bootstrap_discount(batch: dict, hp: HParams) -> jax.Array:
    """gamma, or gamma^n_i per row when the batch carries `discount_exponent` n (a semi-MDP transition that spans
    n units of time, e.g. SUPE's skill cut short after k of H steps: n = k / H)."""
    if "discount_exponent" in batch:
        return hp.discount ** batch["discount_exponent"]
    return hp.discount


def update_critic(agent: AgentState, batch: dict, key: jax.Array, hp: HParams, cfg: Config):
    """One critic gradient step on `batch` (mean squared TD error over members and batch), then Polyak."""
    target = critic_target(agent, batch, key, hp, cfg)
    critic = critic_net(cfg, cfg.num_critics)

    def loss_fn(params):
        qs = critic.apply(params, batch["obs"], batch["action"])  # (E, B)
        chex.assert_shape(qs, (cfg.num_critics, target.shape[0]))
        return jnp.mean((qs - target[None]) ** 2), qs

    (loss, qs), grads = jax.value_and_grad(loss_fn, has_aux=True)(agent.critic_params)
    agent = apply_critic_gradients(agent, grads, hp, hp.critic_weight_decay)
    return agent, {"critic_loss": loss, "q_mean": qs.mean(), "target_q_mean": target.mean()}


def apply_critic_gradients(agent: AgentState, grads, hp: HParams, weight_decay) -> AgentState:
    """One Adam step on the critic ensemble, then the Polyak update of the targets (shared by SAC, Cal-QL, AVTD)."""
    params, opt_state = adam_step(agent.critic_params, agent.critic_opt_state, grads, hp.critic_lr, weight_decay)
    target_params = optax.incremental_update(params, agent.target_critic_params, hp.tau)
    return agent.replace(critic_params=params, target_critic_params=target_params, critic_opt_state=opt_state,
                         step=agent.step + 1)


def update_actor_and_temperature(agent: AgentState, batch: dict, key: jax.Array, hp: HParams, cfg: Config):
    alpha = temperature(agent)
    actor = actor_net(cfg, agent.action_size)

    def actor_loss_fn(params):
        action, log_prob = actor.apply(params, batch["obs"]).sample_and_log_prob(key)
        qs = q_values(agent, batch["obs"], action, cfg)
        q = qs.mean(0) if cfg.actor_q_reduction == "mean" else qs.min(0)
        return jnp.mean(alpha * log_prob - q), log_prob

    (actor_loss, log_prob), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(agent.actor_params)
    actor_params, actor_opt_state = adam_step(agent.actor_params, agent.actor_opt_state, grads, hp.actor_lr)

    log_prob = jax.lax.stop_gradient(log_prob)
    entropy_target = target_entropy(cfg, agent.action_size)

    def temp_loss_fn(params):
        return -jnp.mean(Temperature().apply(params) * (log_prob + entropy_target))

    temp_loss, grads = jax.value_and_grad(temp_loss_fn)(agent.temp_params)
    temp_params, temp_opt_state = adam_step(agent.temp_params, agent.temp_opt_state, grads, hp.temp_lr)
    agent = agent.replace(actor_params=actor_params, actor_opt_state=actor_opt_state, temp_params=temp_params,
                          temp_opt_state=temp_opt_state)
    return agent, {"actor_loss": actor_loss, "entropy": -log_prob.mean(), "temperature": alpha,
                   "temperature_loss": temp_loss}


def update(agent: AgentState, batches: dict, key: jax.Array, hp: HParams, cfg: Config):
    """G critic steps (scan over the leading axis of `batches`), then one actor and one temperature step."""
    chex.assert_tree_shape_prefix(batches, (cfg.updates_per_step,))
    keys = jax.random.split(key, cfg.updates_per_step + 1)

    def critic_step(agent, batch_and_key):
        return update_critic(agent, *batch_and_key, hp, cfg)

    agent, critic_metrics = jax.lax.scan(critic_step, agent, (batches, keys[:-1]))
    last_batch = jax.tree.map(lambda x: x[-1], batches)
    agent, actor_metrics = update_actor_and_temperature(agent, last_batch, keys[-1], hp, cfg)
    return agent, {**jax.tree.map(jnp.mean, critic_metrics), **actor_metrics}


# ---- training loop pieces ---------------------------------------------------------------------------------

@struct.dataclass
class Carry:
    """Everything training needs, as jax arrays (so it can be scanned, vmapped and checkpointed).

    Keys are stored as given: use raw `jax.random.PRNGKey` keys (uint32) if the carry is checkpointed with orbax.
    """

    agent: AgentState
    buffer: replay.ReplayBuffer
    env_state: envs.State
    rng: jax.Array
    env_steps: jax.Array  # int32, transitions collected so far (all envs)
    num_updates: jax.Array  # int32, calls to `update` (each: G critic steps + 1 actor step)


def make_train(cfg: Config, env: envs.Env):
    """Returns pure `init_carry(key, hp)`, `train_chunk(carry, hp)`, `evaluate(carry, key, hp)`.

    `env` is unbatched (from `envs.make`); training batches it with `envs.make_vec`. Nothing here is jitted:
    the caller jits (and vmaps over (key, hp) for a population). Under vmap the `lax.cond` that skips updates
    during warm-up has a batched predicate and becomes a select, so warm-up chunks then cost as much as the
    others (the results are still exactly right).
    """
    venv = envs.make_vec(env, cfg.num_envs)
    obs_size, action_size = env.observation_size, env.action_size
    max_episode_steps = getattr(env, "max_steps", None)
    if max_episode_steps is None:
        raise ValueError("make_train needs an env with a TimeLimit (`envs.make` adds one) so that evaluation "
                         "knows the episode length.")

    def init_carry(key: jax.Array, hp: HParams) -> Carry:
        k_agent, k_env, k_rng = jax.random.split(key, 3)
        example = {"obs": jnp.zeros(obs_size), "action": jnp.zeros(action_size), "reward": jnp.zeros(()),
                   "next_obs": jnp.zeros(obs_size), "terminated": jnp.zeros((), bool),
                   "truncated": jnp.zeros((), bool)}
        return Carry(agent=init_agent(k_agent, cfg, hp, obs_size, action_size),
                     buffer=replay.init(cfg.buffer_capacity, example), env_state=venv.reset(k_env), rng=k_rng,
                     env_steps=jnp.zeros((), jnp.int32), num_updates=jnp.zeros((), jnp.int32))

    def train_chunk(carry: Carry, hp: HParams, prior: dict | None = None) -> tuple[Carry, dict]:
        """`prior`: optional offline transitions (same keys as the buffer, shared by the population); when
        given, every minibatch is half prior, half online (RLPD's symmetric sampling)."""
        prior_buffer = None if prior is None else replay.from_arrays(prior)

        def learn(agent, buffer, key):  # G minibatches, then `update`
            k_sample, k_update = jax.random.split(key)
            if prior_buffer is None:
                sample = lambda k: replay.sample(buffer, k, cfg.batch_size)
            else:
                sample = lambda k: replay.sample_symmetric(prior_buffer, buffer, k, cfg.batch_size)[0]
            batches = jax.vmap(sample)(jax.random.split(k_sample, cfg.updates_per_step))
            return update(agent, batches, k_update, hp, cfg)

        metric_shapes = jax.eval_shape(learn, carry.agent, carry.buffer, carry.rng)[1]
        zero_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)

        def env_step(state, _):
            carry, sums = state
            rng, k_random, k_policy, k_learn = jax.random.split(carry.rng, 4)
            obs = carry.env_state.obs
            random_action = jax.random.uniform(k_random, (cfg.num_envs, action_size), minval=-1.0, maxval=1.0)
            policy_action = act(carry.agent, obs, k_policy, False, cfg)
            starting = carry.env_steps < cfg.start_steps
            if cfg.start_actions == "uniform":
                action = jnp.where(starting, random_action, policy_action)
            else:
                action = policy_action
            env_state = venv.step(carry.env_state, action)
            buffer = replay.insert(carry.buffer, {
                "obs": obs, "action": action, "reward": env_state.reward,
                "next_obs": env_state.info["next_obs"],  # the true successor, not the auto-reset obs
                "terminated": env_state.terminated, "truncated": env_state.truncated})
            # updates begin once start_steps transitions were collected BEFORE this step, and a batch exists
            ready = ~starting & (buffer.size >= cfg.batch_size)
            agent, metrics = jax.lax.cond(ready, learn, lambda a, b, k: (a, zero_metrics), carry.agent, buffer,
                                          k_learn)
            done = env_state.info["episode_done"]
            sums = {**{k: sums[k] + v for k, v in metrics.items()},  # zeros when no update ran
                    "updates": sums["updates"] + ready,
                    "episode_return": sums["episode_return"] + jnp.sum(done * env_state.info["episode_return"]),
                    "episode_success": sums["episode_success"] + jnp.sum(done * env_state.info["episode_success"]),
                    "episode_count": sums["episode_count"] + jnp.sum(done)}
            carry = Carry(agent=agent, buffer=buffer, env_state=env_state, rng=rng,
                          env_steps=carry.env_steps + cfg.num_envs, num_updates=carry.num_updates + ready)
            return (carry, sums), None

        sums = {**zero_metrics, **{k: jnp.zeros(()) for k in
                                   ("updates", "episode_return", "episode_success", "episode_count")}}
        (carry, sums), _ = jax.lax.scan(env_step, (carry, sums), None, length=cfg.chunk_steps)
        # Means over the chunk (0 when nothing happened: no update yet, no episode completed).
        metrics = {k: sums[k] / jnp.maximum(sums["updates"], 1.0) for k in zero_metrics}
        episodes = jnp.maximum(sums["episode_count"], 1.0)
        metrics.update(episode_return=sums["episode_return"] / episodes,
                       episode_success=sums["episode_success"] / episodes, episode_count=sums["episode_count"],
                       updates_in_chunk=sums["updates"], env_steps=carry.env_steps, num_updates=carry.num_updates)
        return carry, metrics

    def evaluate(carry: Carry, key: jax.Array, hp: HParams) -> dict:
        return evaluate_policy(env, carry.agent, key, cfg)

    return init_carry, train_chunk, evaluate


def evaluate_policy(env: envs.Env, agent: AgentState, key: jax.Array, cfg: Config) -> dict:
    """Mean return and success of `cfg.eval_episodes` deterministic episodes of the unbatched, time-limited
    `env` (no auto-reset; rewards masked after each episode ends; success = `info["success"]` seen at least
    once)."""
    max_episode_steps = env.max_steps
    state = jax.vmap(env.reset)(jax.random.split(key, cfg.eval_episodes))

    def step(c, _):
        state, alive, ret, success = c
        action = act(agent, state.obs, key, True, cfg)
        state = jax.vmap(env.step)(state, action)
        ret = ret + jnp.where(alive, state.reward, 0.0)
        success = success | (alive & (state.info["success"] > 0))
        return (state, alive & ~state.done, ret, success), None

    alive = jnp.ones(cfg.eval_episodes, bool)
    init = (state, alive, jnp.zeros(cfg.eval_episodes), jnp.zeros(cfg.eval_episodes, bool))
    (_, _, ret, success), _ = jax.lax.scan(step, init, None, length=max_episode_steps)
    return {"eval_return": ret.mean(), "eval_success": success.astype(jnp.float32).mean()}
