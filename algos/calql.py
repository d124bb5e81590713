"""Conservative Q-learning with the Cal-QL floor, trained offline from a fixed dataset.

Papers
  CQL:    Kumar, Zhou, Tucker, Levine. "Conservative Q-Learning for Offline Reinforcement Learning", NeurIPS 2020.
  Cal-QL: Nakamoto, Zhai, Singh, Mark, Ma, Finn, Kumar, Levine. "Cal-QL: Calibrated Offline RL Pre-Training for
          Efficient Online Fine-Tuning", NeurIPS 2023.

The agent is exactly SAC's (`algos/sac.py`: actor, critic ensemble, targets, temperature, optimiser states), so
that WSRL can hand the WHOLE agent to online SAC. Only the critic loss changes. For every critic i, with N
sampled actions per state:

  L_i = (Q_i(s, a) - y)^2  +  alpha_cql * ( tau * logsumexp_j( Q~_ij / tau ) - Q_i(s, a) )              (CQL(H))

where the 3N candidates Q~_ij are, with importance sampling (`importance_sample=True`, the reference default),

  Q_i(s, a_unif) - log(0.5^|A|)                a_unif ~ U[-1, 1]^|A|
  max(Q_i(s, a_pi),   MC(s)) - log pi(a_pi|s)        a_pi   ~ pi(.|s)        (Cal-QL floor: max(., MC))
  max(Q_i(s, a_next), MC(s)) - log pi(a_next|s')     a_next ~ pi(.|s')

MC(s) is the Monte-Carlo return-to-go of the dataset trajectory from s (after reward scale and bias), a lower
bound on the value of the behaviour policy: Cal-QL pushes policy Q-values down only to that floor, so the
pretrained Q-function is calibrated (not arbitrarily pessimistic), which is what makes fine-tuning stable.
`use_calql=False` gives plain CQL. Without importance sampling the candidates are the raw Q-values plus Q(s, a).

Lagrange variant (`lagrange=True`, the reference's `cql_autotune_alpha` on AntMaze): the fixed alpha_cql is
replaced by a multiplier alpha' = softplus(p) >= 0 (initialised to 1, as the reference) and the penalty becomes
alpha' * (mean gap - target_action_gap); p descends -alpha' * (gap - target_action_gap), so alpha' grows while the
gap is above the target (0.8 on AntMaze) and shrinks towards 0 below it.

Max-target backup (`sac.Config.max_target_backup`, on by default in the reference's CQL config): the TD target
takes the max over N policy samples at s' of the min over the target subset (see `sac.critic_target`).

Departures from the reference (JaxCQL / the WSRL repository's `calql.py`): the ensemble's TD and CQL terms are
averaged over critics (the reference sums over two critics; with Adam the scale is immaterial); the N policy
actions are sampled without gradient (as the reference: only Q is penalised); `cql_clip_diff_*` (infinite by
default in the reference) is left out.
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

import envs
from algos import sac


@dataclasses.dataclass(frozen=True)
class Config:
    """Static settings of the conservative term. The agent itself (networks, ensemble, batch size) is described
    by a `sac.Config`, passed alongside as `agent_cfg`."""

    num_cql_actions: int = 10
    """N: actions sampled per state for each of the uniform, pi(s) and pi(s') candidate sets."""
    use_calql: bool = True
    """Bound policy-action Q-values inside the logsumexp below by the Monte-Carlo return (Cal-QL)."""
    importance_sample: bool = True
    """Subtract the log-density of each candidate action inside the logsumexp."""
    lagrange: bool = False
    """Tune alpha' automatically to keep the CQL gap at target_action_gap."""
    updates_per_chunk: int = 500
    """Gradient steps per jitted chunk (one lax.scan)."""

    def __post_init__(self):
        if self.num_cql_actions < 1 or self.updates_per_chunk < 1:
            raise ValueError("Cal-QL num_cql_actions and updates_per_chunk must be positive integers.")


LAGRANGE_INIT_PARAM = math.log(math.e - 1.0)  # softplus^-1(1)


@struct.dataclass
class HParams(sac.HParams):
    """SAC's sweepable scalars plus the conservative terms."""

    cql_alpha: float = 5.0
    cql_temperature: float = 1.0
    target_action_gap: float = 0.8
    lagrange_lr: float = 3e-4

    RANGES = {"cql_alpha": "[0, inf)", "cql_temperature": "(0, inf)", "target_action_gap": "(-inf, inf)",
              "lagrange_lr": "[0, inf)"}  # valid values (experiments/runner/sweeps.py checks them); SAC's are inherited


@struct.dataclass
class Carry:
    agent: sac.AgentState
    alpha_prime_param: jax.Array  # Lagrange multiplier alpha' = softplus(param) (unused unless cfg.lagrange)
    alpha_prime_opt_state: optax.OptState
    rng: jax.Array
    num_updates: jax.Array  # int32


def conservative_penalty(q_data, q_uniform, q_pi, q_next, log_pi, log_pi_next, mc_return, action_size,
                         temperature, use_calql: bool, importance_sample: bool):
    """CQL gap per critic and state: tau * logsumexp(candidates / tau) - Q(s, a).

    Shapes: q_data (E, B); q_uniform, q_pi, q_next (E, N, B); log_pi, log_pi_next (N, B); mc_return (B,).
    Returns (gap (E, B), fraction of policy candidates raised to the MC floor).
    """
    floored = jnp.zeros(())
    if use_calql:
        floor = mc_return[None, None, :]
        floored = jnp.mean(jnp.concatenate([q_pi < floor, q_next < floor], 1).astype(jnp.float32))
        q_pi, q_next = jnp.maximum(q_pi, floor), jnp.maximum(q_next, floor)
    if importance_sample:
        uniform_log_density = action_size * math.log(0.5)
        candidates = [q_uniform - uniform_log_density, q_next - log_pi_next[None], q_pi - log_pi[None]]
    else:
        candidates = [q_uniform, q_data[:, None], q_next, q_pi]
    candidates = jnp.concatenate(candidates, axis=1)
    soft_max = temperature * jax.nn.logsumexp(candidates / temperature, axis=1)
    return soft_max - q_data, floored


def update(carry: Carry, batch: dict, hp: HParams, cfg: Config, acfg: sac.Config) -> tuple[Carry, dict]:
    """One Cal-QL step on `batch` (keys: obs, action, reward, next_obs, terminated, mc_return)."""
    agent, n = carry.agent, cfg.num_cql_actions
    rng, k_target, k_uniform, k_pi, k_next, k_actor = jax.random.split(carry.rng, 6)
    target = sac.critic_target(agent, batch, k_target, hp, acfg)  # max-target backup if acfg says so

    obs, batch_size = batch["obs"], batch["obs"].shape[0]
    actor = sac.actor_net(acfg, agent.action_size)
    pi_s = actor.apply(agent.actor_params, obs)
    pi_next = actor.apply(agent.actor_params, batch["next_obs"])
    a_pi, log_pi = jax.vmap(pi_s.sample_and_log_prob)(jax.random.split(k_pi, n))  # (N, B, A), (N, B)
    a_next, log_pi_next = jax.vmap(pi_next.sample_and_log_prob)(jax.random.split(k_next, n))
    a_pi, log_pi, a_next, log_pi_next = jax.lax.stop_gradient((a_pi, log_pi, a_next, log_pi_next))
    a_uniform = jax.random.uniform(k_uniform, (n, batch_size, agent.action_size), minval=-1.0, maxval=1.0)
    critic = sac.critic_net(acfg, acfg.num_critics)
    alpha_prime = jax.nn.softplus(carry.alpha_prime_param)

    def loss_fn(params):
        q_data = critic.apply(params, obs, batch["action"])  # (E, B)
        q_of = lambda actions: jax.vmap(lambda a: critic.apply(params, obs, a), out_axes=1)(actions)  # (E,N,B)
        gap, floored = conservative_penalty(q_data, q_of(a_uniform), q_of(a_pi), q_of(a_next), log_pi,
                                            log_pi_next, batch["mc_return"], agent.action_size,
                                            hp.cql_temperature, cfg.use_calql, cfg.importance_sample)
        td_loss = jnp.mean((q_data - target[None]) ** 2)
        if cfg.lagrange:
            cql_loss = alpha_prime * (jnp.mean(gap) - hp.target_action_gap)
        else:
            cql_loss = jnp.mean(hp.cql_alpha * gap)
        return td_loss + cql_loss, {"td_loss": td_loss, "cql_loss": cql_loss, "cql_gap": gap.mean(),
                                    "q_mean": q_data.mean(), "target_q_mean": target.mean(),
                                    "calql_floored_fraction": floored}

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(agent.critic_params)
    agent = sac.apply_critic_gradients(agent, grads, hp, hp.critic_weight_decay)
    agent, actor_metrics = sac.update_actor_and_temperature(agent, batch, k_actor, hp, acfg)

    alpha_prime_param, alpha_prime_opt_state = carry.alpha_prime_param, carry.alpha_prime_opt_state
    if cfg.lagrange:  # minimise -alpha' (gap - target_gap): alpha' grows while the gap is above target
        gap = jax.lax.stop_gradient(metrics["cql_gap"])
        grad = jax.grad(lambda p: -jax.nn.softplus(p) * (gap - hp.target_action_gap))(alpha_prime_param)
        alpha_prime_param, alpha_prime_opt_state = sac.adam_step(alpha_prime_param, alpha_prime_opt_state, grad,
                                                                 hp.lagrange_lr)
    carry = Carry(agent=agent, alpha_prime_param=alpha_prime_param, alpha_prime_opt_state=alpha_prime_opt_state,
                  rng=rng, num_updates=carry.num_updates + 1)
    return carry, {"critic_loss": loss, "alpha_prime": alpha_prime, **metrics, **actor_metrics}


def make_pretrain(cfg: Config, acfg: sac.Config, env: envs.Env):
    """Pure `init_carry(key, hp)`, `train_chunk(carry, hp, dataset)` and `evaluate(carry, key, hp)`.

    `dataset` is a dict of device arrays shared by the whole population (keys obs, action, reward, next_obs,
    terminated, mc_return_raw, mc_return_unit; leading axis = transitions). The Monte-Carlo return of the
    transformed reward is linear in the transform, MC(scale r + bias) = scale MC(r) + bias MC(1), so it is formed
    per minibatch from the two stored parts and reward scale/bias stay sweepable. Each chunk runs
    `updates_per_chunk` gradient steps on minibatches drawn uniformly with replacement.
    """
    def init_carry(key, hp: HParams) -> Carry:
        k_agent, k_rng = jax.random.split(key)
        agent = sac.init_agent(k_agent, acfg, hp, env.observation_size, env.action_size)
        # softplus(param) = 1, the reference's init; float32, not weak-typed (a weak scalar in the carry makes the
        # chunk's output type differ from its input's, and the pretrain chunk retraced)
        alpha_prime_param = jnp.full((), LAGRANGE_INIT_PARAM, dtype=jnp.float32)
        return Carry(agent=agent, alpha_prime_param=alpha_prime_param,
                     alpha_prime_opt_state=sac.adam.init(alpha_prime_param), rng=k_rng,
                     num_updates=jnp.zeros((), jnp.int32))

    def train_chunk(carry: Carry, hp: HParams, dataset: dict):
        size = dataset["obs"].shape[0]

        def step(carry, _):
            rng, k_batch = jax.random.split(carry.rng)
            idx = jax.random.randint(k_batch, (acfg.batch_size,), 0, size)
            batch = jax.tree.map(lambda x: x[idx], dataset)
            batch["mc_return"] = hp.reward_scale * batch["mc_return_raw"] + hp.reward_bias * batch["mc_return_unit"]
            carry, metrics = update(carry.replace(rng=rng), batch, hp, cfg, acfg)
            return carry, metrics

        carry, metrics = jax.lax.scan(step, carry, None, length=cfg.updates_per_chunk)
        return carry, {**jax.tree.map(jnp.mean, metrics), "num_updates": carry.num_updates}

    def evaluate(carry: Carry, key, hp: HParams) -> dict:
        return sac.evaluate_policy(env, carry.agent, key, acfg)

    return init_carry, train_chunk, evaluate
