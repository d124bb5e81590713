"""The reference choices WSRL and Cal-QL now make, each checked against a value computed outside the code path:
the max-target backup, the actor's min over the ensemble, the Lagrange CQL weight, the policy LayerNorm and the
-|A| target entropy (`algos/sac.py`, `algos/calql.py`, `algos/wsrl.py`)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algos import calql, sac, wsrl

OBS, ACT, B = 3, 2, 8
CFG = sac.Config(hidden_sizes=(16, 16), num_critics=4, num_target_critics=4, backup_entropy=False, batch_size=B)


def _agent(cfg, key=0):
    return sac.init_agent(jax.random.PRNGKey(key), cfg, sac.HParams(), OBS, ACT)


def _batch(key=1):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(key), 3)
    return {"obs": jax.random.normal(k1, (B, OBS)), "action": jax.random.uniform(k2, (B, ACT), minval=-1, maxval=1),
            "reward": jnp.linspace(-1.0, 1.0, B), "next_obs": jax.random.normal(k3, (B, OBS)),
            "terminated": jnp.zeros(B, bool).at[0].set(True)}


@pytest.mark.parametrize("backup_entropy", [False, True])
def test_max_target_backup_is_the_max_over_n_policy_samples(backup_entropy):
    cfg = dataclasses.replace(CFG, max_target_backup=True, backup_actions=5, backup_entropy=backup_entropy)
    agent, batch, hp, key = _agent(cfg), _batch(), sac.HParams(discount=0.9), jax.random.PRNGKey(7)
    # Recompute by hand with the same keys: the N actions come from split(k_action, N), as documented.
    k_action, _ = jax.random.split(key)
    dist = sac.actor_net(cfg, ACT).apply(agent.actor_params, batch["next_obs"])
    per_sample = []
    for k in jax.random.split(k_action, 5):
        a, logp = dist.sample_and_log_prob(k)
        q = sac.critic_net(cfg, 4).apply(agent.target_critic_params, batch["next_obs"], a).min(0)
        per_sample.append(q - sac.temperature(agent) * logp if backup_entropy else q)
    best = np.max(np.stack(per_sample), 0)
    expected = np.asarray(batch["reward"]) + 0.9 * (1.0 - np.asarray(batch["terminated"])) * best
    got = sac.critic_target(agent, batch, key, hp, cfg)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # ... and it is not the single-sample target (what the option replaced)
    single = sac.critic_target(agent, batch, key, hp, dataclasses.replace(cfg, max_target_backup=False))
    assert not np.allclose(got, single)


def test_actor_loss_uses_the_ensemble_min_when_asked():
    """With critics that disagree, the actor loss equals alpha log pi - min_i Q_i (not the mean)."""
    agent, batch, key = _agent(CFG), _batch(), jax.random.PRNGKey(3)
    # spread the ensemble: shift each critic's output bias by a different constant
    shift = jnp.array([0.0, 5.0, -3.0, 10.0])
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + shift.reshape(-1, *([1] * (x.ndim - 1))) if "dense_out" in jax.tree_util.keystr(p)
        and "bias" in jax.tree_util.keystr(p) else x, agent.critic_params)
    agent = agent.replace(critic_params=params)
    dist = sac.actor_net(CFG, ACT).apply(agent.actor_params, batch["obs"])
    action, log_prob = dist.sample_and_log_prob(key)
    qs = sac.critic_net(CFG, 4).apply(agent.critic_params, batch["obs"], action)
    alpha = sac.temperature(agent)
    for reduction, reduce in (("min", np.min), ("mean", np.mean)):
        cfg = dataclasses.replace(CFG, actor_q_reduction=reduction)
        _, metrics = sac.update_actor_and_temperature(agent, batch, key, sac.HParams(), cfg)
        expected = np.mean(alpha * np.asarray(log_prob) - reduce(np.asarray(qs), 0))
        np.testing.assert_allclose(metrics["actor_loss"], expected, rtol=1e-5)


def test_target_entropy_per_action_drives_the_temperature_loss():
    agent, batch, key = _agent(CFG), _batch(), jax.random.PRNGKey(3)
    losses = {}
    for per_action in (-0.5, -1.0):
        cfg = dataclasses.replace(CFG, target_entropy_per_action=per_action)
        _, m = sac.update_actor_and_temperature(agent, batch, key, sac.HParams(), cfg)
        losses[per_action] = float(m["temperature_loss"])
    # loss = -alpha (log pi + H_target): lowering H_target by |A|/2 = 1 raises the loss by alpha * 1
    np.testing.assert_allclose(losses[-1.0] - losses[-0.5], float(sac.temperature(agent)) * ACT * 0.5, rtol=1e-5)


def test_actor_layernorm_adds_layernorm_parameters():
    plain = _agent(CFG).actor_params["params"]["trunk"]
    normed = _agent(dataclasses.replace(CFG, actor_layernorm=True)).actor_params["params"]["trunk"]
    assert not any("layernorm" in k for k in plain) and any("layernorm" in k for k in normed)


def test_wsrl_defaults_match_the_reference_antmaze_config():
    agent, cql = wsrl.Config().agent, wsrl.Config().cql
    assert (agent.actor_q_reduction, agent.actor_layernorm, agent.max_target_backup, agent.critic_layernorm,
            agent.backup_entropy, agent.target_entropy_per_action) == ("min", True, True, True, False, -1.0)
    assert (agent.num_critics, agent.num_target_critics, agent.updates_per_step, agent.num_envs) == (10, 2, 4, 1)
    assert cql.lagrange and calql.HParams().target_action_gap == 0.8


def _calql_step(lagrange, gap_target, param=None):
    cfg = calql.Config(num_cql_actions=3, lagrange=lagrange)
    init, _, _ = calql.make_pretrain(cfg, CFG, _FakeEnv())
    hp = calql.HParams(target_action_gap=gap_target, cql_alpha=5.0, lagrange_lr=1e-2)
    carry = init(jax.random.PRNGKey(0), hp)
    if param is not None:
        carry = carry.replace(alpha_prime_param=jnp.asarray(param, jnp.float32))
    batch = {**_batch(), "mc_return": jnp.zeros(B)}
    return carry, *_jitted_update(carry, batch, hp, cfg)


@functools.partial(jax.jit, static_argnums=3)
def _jitted_update(carry, batch, hp, cfg):  # one compile per Cal-QL config (op-by-op dispatch is slower)
    return calql.update(carry, batch, hp, cfg, CFG)


class _FakeEnv:
    observation_size, action_size, max_steps = OBS, ACT, 10


def test_lagrange_cql_weight_starts_at_one_and_moves_with_the_gap():
    carry, new, m = _calql_step(True, gap_target=-1e3)  # gap far above target: alpha' must grow
    np.testing.assert_allclose(m["alpha_prime"], 1.0, rtol=1e-6)  # the reference initialises alpha' = 1
    # the penalty is alpha' (mean gap - target), without the fixed cql_alpha
    np.testing.assert_allclose(m["cql_loss"], 1.0 * (m["cql_gap"] + 1e3), rtol=1e-5)
    assert float(new.alpha_prime_param) > float(carry.alpha_prime_param)
    _, new_low, _ = _calql_step(True, gap_target=1e3)  # gap far below target: alpha' must shrink
    assert float(new_low.alpha_prime_param) < float(carry.alpha_prime_param)
    # alpha' is softplus of its parameter: never negative, even after a large negative parameter
    _, _, m_neg = _calql_step(True, gap_target=0.0, param=-30.0)
    assert 0.0 <= float(m_neg["alpha_prime"]) < 1e-12
    # without Lagrange the fixed weight cql_alpha multiplies the gap, and the parameter stays put
    carry_fixed, new_fixed, m_fixed = _calql_step(False, gap_target=0.8)
    np.testing.assert_allclose(m_fixed["cql_loss"], 5.0 * m_fixed["cql_gap"], rtol=1e-5)
    assert float(new_fixed.alpha_prime_param) == float(carry_fixed.alpha_prime_param)


def test_the_lagrange_parameter_is_a_strong_float32_so_the_pretrain_chunk_traces_once():
    """A weak-typed scalar in the carry comes back strong from the chunk: the chunk's input and output types then
    differ, and jit traces it again (it was traced 3 times). The initial carry holds a strong float32."""
    init, _, _ = calql.make_pretrain(calql.Config(lagrange=True), CFG, _FakeEnv())
    param = jax.eval_shape(init, jax.random.PRNGKey(0), calql.HParams()).alpha_prime_param
    assert param.dtype == jnp.float32 and not param.weak_type
