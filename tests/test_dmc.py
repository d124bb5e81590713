"""DM Control Suite tasks from MuJoCo Playground (envs/dmc.py) behind `envs.make` / `envs.make_vec`.

Every registered DMC task is built and its bare reset and step traced (shapes, dtypes, episode length); ONE
task, walker-walk, is compiled and stepped: a jitted reset plus a `lax.scan` of steps past a short time limit,
through `make_vec` (TimeLimit, VmapAutoReset, EpisodeStats), shared by the tests below. Compiling a DMC task costs
60-160 s on this 2-core CPU (cold cache; walker-walk is the cheapest, humanoid-stand the dearest), and the wrapper
under test is one class for all of them, so compiling the other three would re-test the same code at 5x the cost.
Whole file: 2 min 36 s here (beside a benchmark), of which 89 s compile walker-walk's rollout. dmc-quadruped-run,
headstart's own port (envs/dmc_quadruped.py), is compiled too (reset and 40 steps, ~90 s): its reset, observations
and reward are ours, so they are checked against MuJoCo C and DM Control's formulas.
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
         "dmc-humanoid-stand": (67, 21), "dmc-quadruped-run": (78, 12)}
STEPPED, BATCH, EPISODE, STEPS, REPEAT = "dmc-walker-walk", 2, 3, 7, 2


def test_the_issue_s_tasks_are_registered():
    assert DMC == sorted(SIZES)  # quadruped-run is ours (envs/dmc_quadruped.py): Playground 0.2.0 has none


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
    with pytest.raises(ValueError, match="no DM Control task 'QuadrupedFetch'"):
        DmControl(task="QuadrupedFetch")


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


# --- dmc-quadruped-run: headstart's port (envs/dmc_quadruped.py), checked against MuJoCo C and DM Control's rules

@pytest.fixture(scope="module")
def quadruped():
    """The port, its MuJoCo C model, and 6 resets from one jitted (vmapped) reset: the only MJX compile here."""
    from envs.dmc_quadruped import QuadrupedRun

    env = QuadrupedRun()

    def start_and_walk(key):
        """A reset, 39 control steps (0.78 s: landed, legs loaded) of random actions, and a 40th."""
        reset_key, action_key = jax.random.split(key)
        first = env.reset(reset_key)
        actions = jax.random.uniform(action_key, (40, env.action_size), minval=-1.0, maxval=1.0)
        before = jax.lax.scan(lambda s, a: (env.step(s, a), None), first, actions[:-1])[0]
        return first, before, actions[-1], env.step(before, actions[-1])

    keys = jax.random.split(jax.random.key(3), 6)
    return (env, env.mj_model, *jax.device_get(jax.jit(jax.vmap(start_and_walk))(keys)))


def _contacts_at(mj_model, qpos):
    """MuJoCo C's forward pass (collision included) at a configuration."""
    import mujoco

    data = mujoco.MjData(mj_model)
    data.qpos[:] = qpos
    mujoco.mj_forward(mj_model, data)
    return data


def test_quadruped_starts_where_dm_control_s_incremental_drop_would(quadruped):
    """DM Control raises the torso from z=0 in 1 cm steps until MuJoCo finds no contact; the port computes that
    height in closed form. For each reset: MuJoCo C (all contacts, self-contacts included) sees none at the port's
    height and at least one a centimetre lower, and the orientation is a unit quaternion, different per key."""
    env, mj_model, states, *_ = quadruped
    qpos = states.data.qpos
    assert len({tuple(np.round(q[3:7], 4)) for q in qpos}) == len(qpos)
    for q in qpos:
        np.testing.assert_allclose(np.linalg.norm(q[3:7]), 1.0, atol=1e-5)
        assert q[2] > 0.0 and _contacts_at(mj_model, q).ncon == 0, q[:7]
        lower = q.copy()
        lower[2] -= 0.01
        assert _contacts_at(mj_model, lower).ncon > 0, q[:7]
        np.testing.assert_allclose(q[7:], mj_model.qpos0[7:])  # joints at the reference pose
    np.testing.assert_array_equal(states.data.qvel, 0.0)


def test_quadruped_step_observation_and_reward_follow_mujoco_c_and_dm_control(quadruped):
    """The 40th control step of random actions (on the ground, moving, legs loaded), replayed in MuJoCo C from the
    39th state (qpos, qvel, activations, solver warm start) with the same action for the same 4 substeps: the 78
    observations, assembled here by sensor NAME from MuJoCo C's data (the port selects by sensor type from MJX),
    and the reward from DM Control's formula, upright * move, on that data. (Both read the data after the step,
    as Playground's ports do: sensors and xmat of the last substep's pre-integration state.)"""
    import mujoco

    env, mj_model, _, before, action, after = quadruped
    hinges = [j for j in range(mj_model.njnt) if mj_model.joint(j).name != "root"]
    toes = ("front_left", "front_right", "back_right", "back_left")
    torso = mj_model.body("torso").id
    assert np.abs(after.data.sensordata).max() > 1.0  # loaded toes and a moving torso, not a free fall of zeros
    for i in range(len(after.obs)):
        data = mujoco.MjData(mj_model)
        data.qpos[:], data.qvel[:], data.act[:] = before.data.qpos[i], before.data.qvel[i], before.data.act[i]
        data.qacc_warmstart[:], data.ctrl[:] = before.data.qacc_warmstart[i], action[i]
        mujoco.mj_step(mj_model, data, env.n_substeps)
        sensor = lambda name: data.sensor(name).data
        forces = [sensor(f"force_toe_{t}") for t in toes] + [sensor(f"torque_toe_{t}") for t in toes]
        expected = np.concatenate([
            [data.qpos[mj_model.jnt_qposadr[j]] for j in hinges], [data.qvel[mj_model.jnt_dofadr[j]] for j in hinges],
            data.act, sensor("velocimeter"), [data.xmat[torso][8]], sensor("imu_accel"), sensor("imu_gyro"),
            np.arcsinh(np.concatenate(forces))])
        assert expected.shape == (78,)
        # joint state, velocimeter, upright closely; accelerometer, gyro, toe force/torque through each solver
        np.testing.assert_allclose(after.obs[i][:48], expected[:48], atol=2e-3, rtol=2e-3)
        np.testing.assert_allclose(after.obs[i][48:], expected[48:], atol=0.05, rtol=0.02)
        upright = (1.0 + data.xmat[torso][8]) / 2.0  # linear, margin 2, value 0 at the margin
        speed = sensor("velocimeter")[0]
        move = 1.0 if speed >= 5.0 else max(0.0, 1.0 - 0.5 * (5.0 - speed) / 5.0)  # linear, 0.5 at margin 5
        np.testing.assert_allclose(after.reward[i], upright * move, rtol=1e-3, atol=1e-4)
