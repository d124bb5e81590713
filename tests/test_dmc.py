"""DM Control Suite tasks from MuJoCo Playground (envs/dmc.py) behind `envs.make` / `envs.make_vec`.

Every registered DMC task is built and its bare reset and step traced (shapes, dtypes, episode length); ONE
task, walker-walk, is compiled and stepped: a jitted reset plus a `lax.scan` of steps past a short time limit,
through `make_vec` (TimeLimit, VmapAutoReset, EpisodeStats), shared by the tests below. Compiling a DMC task costs
60-160 s on this 2-core CPU (cold cache; walker-walk is the cheapest, humanoid-stand the dearest), and the wrapper
under test is one class for all of them, so compiling the other three would re-test the same code at 5x the cost.
Whole file: 2 min 36 s here (beside a benchmark), of which 89 s compile walker-walk's rollout.
(tests/test_envs.py also traces every registered env through the API.)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.dmc import DmControl

DMC = [name for name in envs.registered() if name.startswith("dmc-")]
# (observation size, action size) of Playground 0.2.0's tasks
SIZES = {"dmc-cheetah-run": (17, 6), "dmc-walker-walk": (24, 6), "dmc-hopper-hop": (15, 4),
         "dmc-humanoid-stand": (67, 21)}
STEPPED, BATCH, EPISODE, STEPS, REPEAT = "dmc-walker-walk", 2, 3, 7, 2


def test_the_issue_s_tasks_are_registered():
    assert DMC == sorted(SIZES)  # no quadruped: Playground 0.2.0 has none (envs/dmc.py)


@pytest.mark.parametrize("name", DMC)
def test_each_task_traces_with_the_api_shapes(name):
    """Every task's reset and step, traced (not compiled): the API sizes, float32 observations and rewards, and a
    step that returns the reset's pytree leaf by leaf (shapes and dtypes), which the auto-reset's selection needs.
    The bare `TimeLimit(DmControl)` is traced, a quarter of the cost of the batched stack (3.5 vs 12.8 s for
    hopper); the batched stack, the same classes for every task, is compiled and stepped on walker-walk below."""
    env = envs.make(name)
    assert (env.observation_size, env.action_size) == SIZES[name]
    action = jnp.zeros((env.action_size,))
    first, after = jax.eval_shape(lambda k: (lambda s: (s, env.step(s, action)))(env.reset(k)), jax.random.key(0))
    assert jax.tree.structure(first) == jax.tree.structure(after)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(after)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    assert (after.obs.shape, after.obs.dtype) == ((SIZES[name][0],), jnp.float32)
    assert (after.reward.shape, after.reward.dtype) == ((), jnp.float32)


def test_episode_is_1000_control_steps_over_the_action_repeat():
    assert envs.make(STEPPED).max_steps == 500  # default action repeat 2
    assert envs.make(STEPPED, action_repeat=1).max_steps == 1000
    assert envs.make(STEPPED, action_repeat=4).max_steps == 250
    assert envs.make(STEPPED, max_steps=7).max_steps == 7


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="action_repeat must be a positive integer"):
        envs.make(STEPPED, action_repeat=0)
    with pytest.raises(ValueError, match="no DM Control task 'QuadrupedRun'"):
        DmControl(task="QuadrupedRun")


def _rollout(env, key):
    """Reset the batched env, take STEPS uniformly random actions; keep what the asserts read (no physics)."""
    reset_key, action_key = jax.random.split(key)
    first = env.reset(reset_key)

    def step(state, k):
        state = env.step(state, jax.random.uniform(k, (BATCH, env.action_size), minval=-1.0, maxval=1.0))
        # the sim time and the LAST control step's reward (Playground's), of the physics after the step
        return state, (state.replace(physics=None), state.physics.data.time, state.physics.reward)

    _, traj = jax.lax.scan(step, first, jax.random.split(action_key, STEPS))
    return first.replace(physics=None), traj


@pytest.fixture(scope="module")
def rollout():
    env = envs.make_vec(envs.make(STEPPED, max_steps=EPISODE, action_repeat=REPEAT), BATCH)
    first, (traj, time, last_reward) = jax.device_get(jax.jit(functools.partial(_rollout, env))(jax.random.key(0)))
    return env, first, traj, time, last_reward


def test_steps_are_finite_float32_and_resets_differ(rollout):
    env, first, traj, _, _ = rollout
    assert traj.obs.shape == (STEPS, BATCH, env.observation_size) and traj.obs.dtype == np.float32
    assert traj.reward.shape == (STEPS, BATCH) and traj.reward.dtype == np.float32
    assert np.isfinite(first.obs).all() and np.isfinite(traj.obs).all() and np.isfinite(traj.reward).all()
    assert not np.allclose(first.obs[0], first.obs[1])  # two keys, two starts
    done = traj.terminated | traj.truncated
    for t, i in zip(*np.nonzero(done)):  # an auto-reset starts a new episode, not the old one's successor
        assert not np.allclose(traj.obs[t, i], traj.info["next_obs"][t, i])


def test_truncates_at_the_time_limit_with_episode_statistics(rollout):
    _, _, traj, _, _ = rollout
    assert not traj.terminated.any()  # DMC tasks end only by the time limit
    ends = np.arange(STEPS) % EPISODE == EPISODE - 1  # steps 2 and 5
    np.testing.assert_array_equal(traj.truncated, np.broadcast_to(ends[:, None], (STEPS, BATCH)))
    np.testing.assert_array_equal(traj.info["episode_done"], traj.truncated.astype(np.float32))
    for t in np.flatnonzero(ends):
        np.testing.assert_array_equal(traj.info["episode_length"][t], EPISODE)
        np.testing.assert_allclose(traj.info["episode_return"][t], traj.reward[t - EPISODE + 1:t + 1].sum(0),
                                   rtol=1e-6)
    assert (traj.info["episode_return"][0] == 0).all()  # no episode completed yet


def test_action_repeat_repeats_and_sums_rewards(rollout):
    env, _, traj, time, last_reward = rollout
    steps_into_episode = np.arange(STEPS) % EPISODE + 1
    done = traj.truncated
    # physics after the step: action_repeat control steps of ctrl_dt each (a fresh episode at time 0 where done)
    expected = np.where(done, 0.0, steps_into_episode[:, None] * REPEAT * env.control_dt)
    np.testing.assert_allclose(time, expected, atol=1e-4)
    # DMC rewards are in [0, 1] per control step: a step's reward is the sum of REPEAT of them
    assert ((traj.reward >= 0) & (traj.reward <= REPEAT)).all()
    # ... the last control step's (Playground's) plus the earlier one's, which walker never earns 0 of
    alive = ~done
    earlier = traj.reward[alive] - last_reward[alive]
    assert (earlier > 0).all() and (earlier <= 1 + 1e-6).all()
