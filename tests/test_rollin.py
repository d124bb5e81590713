"""algos/rollin.py: geometric roll-in lengths, beta = 0 is the plain curriculum exactly, per-env phase switches with
actions from the previous policy under the previous context, the advance rule, the task wrappers, the experiment."""

import functools
import json

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algos import rollin, sac

KEY = jax.random.PRNGKey(0)


# ---- roll-in lengths ----------------------------------------------------------------------------------------

def test_rollin_lengths_follow_the_geometric_distribution():
    """h ~ Geometric(1 - gamma) on {0, 1, ...}: P(h = n) = (1 - gamma) gamma^n, mean gamma / (1 - gamma).

    n = 200,000 draws (fixed seed). Standard errors: mean sd / sqrt(n) = (sqrt(gamma) / (1 - gamma)) / sqrt(n) =
    0.021 for gamma = 0.9; pmf sqrt(p (1 - p) / n) <= 0.0011. Tolerances are 5 standard errors; the chi-square over
    the cells 0..29 plus the tail (30 degrees of freedom) must stay below 59.7, its 0.1% critical value."""
    n, gamma = 200_000, 0.9
    sample = jax.jit(rollin.sample_rollin_length, static_argnums=3)
    h = np.asarray(sample(KEY, 1.0, gamma, (n,)))
    assert h.min() == 0
    assert abs(h.mean() - gamma / (1 - gamma)) < 5 * (gamma ** 0.5 / (1 - gamma)) / n ** 0.5
    pmf = (1 - gamma) * gamma ** np.arange(30)
    counts = np.bincount(h, minlength=31)[:30]
    for k in range(5):
        assert abs(counts[k] / n - pmf[k]) < 5 * np.sqrt(pmf[k] * (1 - pmf[k]) / n), k
    observed = np.append(counts, n - counts.sum())
    expected = n * np.append(pmf, gamma ** 30)
    assert np.sum((observed - expected) ** 2 / expected) < 59.7

    # With probability 1 - beta there is no roll-in: P(h = 0) = (1 - beta) + beta (1 - gamma), mean beta * 9.
    h = np.asarray(sample(jax.random.PRNGKey(1), 0.3, gamma, (n,)))
    p0 = 0.7 + 0.3 * (1 - gamma)
    assert abs(np.mean(h == 0) - p0) < 5 * np.sqrt(p0 * (1 - p0) / n)
    assert abs(h.mean() - 0.3 * 9) < 0.1  # sd of h is ~5.8 here: 5 standard errors = 0.065
    assert not np.asarray(sample(KEY, 0.0, gamma, (1000,))).any()  # beta = 0: never
    assert not np.asarray(sample(KEY, 1.0, 0.0, (1000,))).any()  # gamma = 0: h = 0 always


# ---- the advance rule ---------------------------------------------------------------------------------------

def test_advance_rule_on_synthetic_success_statistics():
    record = jax.jit(rollin.record_episodes)
    advance = jax.jit(rollin.should_advance, static_argnums=(2, 3))
    K, min_eps, threshold, rate = 3, 5, 0.8, 0.25
    s = rollin.StageStats.zeros()
    all_envs, none = np.ones(4, bool), np.zeros(4, bool)

    # Episodes that do not count (mask False) change nothing, even if successful.
    s = record(s, none, np.ones(4), rate)
    assert int(s.episodes) == 0 and float(s.success) == 0.0
    # 4 successes: the statistic reads exactly 1 (bias-corrected), but 4 < min_episodes: no advance.
    s = record(s, all_envs, np.ones(4), rate)
    assert int(s.episodes) == 4 and float(s.success) == pytest.approx(1.0)
    assert not advance(s, 0, K, min_eps, threshold)
    # Now 2 failures (one step: both share one weight): 6 episodes but below the threshold.
    s = record(s, np.array([True, True, False, False]), np.zeros(4), rate)
    expected = (1 - (1 - rate) ** 4) * (1 - rate) ** 2 / (1 - (1 - rate) ** 6)  # EMA of 1,1,1,1,0,0, corrected
    assert float(s.success) == pytest.approx(expected, rel=1e-5) and expected < threshold
    assert not advance(s, 0, K, min_eps, threshold)
    # Successes one at a time until the EMA crosses 0.8: the rule says yes exactly when the statistic does.
    crossed = []
    for _ in range(6):
        s = record(s, np.array([True, False, False, False]), np.ones(4), rate)
        crossed.append(bool(advance(s, 0, K, min_eps, threshold)))
        assert crossed[-1] == (float(s.success) >= threshold)
    assert crossed[0] is False and crossed[-1] is True
    # Never beyond the last stage; a threshold above 1 never advances.
    assert not advance(s, K - 1, K, min_eps, threshold)
    assert not advance(s, 0, K, min_eps, 1.01)


# ---- training: shared tiny setup (one compiled chunk per static config) ----------------------------------------

def tiny_env(max_steps=8):
    return rollin.maze_goals(envs.make("pointmaze-large-jax", max_steps=max_steps), 4)


TINY = dict(num_envs=4, chunk_steps=10, hidden_sizes=(16, 16), batch_size=16, buffer_capacity=256, start_steps=0,
            eval_episodes=2, min_stage_episodes=2)


@functools.lru_cache(maxsize=None)
def trainer(**kwargs):
    init_carry, train_chunk, evaluate = rollin.make_train(rollin.Config(**{**TINY, **kwargs}), tiny_env())
    return jax.jit(init_carry), jax.jit(train_chunk), jax.jit(evaluate)


def run(hp, chunks, **kwargs):
    init_carry, train_chunk, _ = trainer(**kwargs)
    carry = init_carry(KEY, hp)
    metrics = []
    for _ in range(chunks):
        carry, m = train_chunk(carry, hp)
        metrics.append(jax.device_get(m))
    return jax.device_get(carry), metrics


def test_beta_zero_is_the_plain_curriculum_exactly():
    """beta = 0 with the roll-in code present == the roll-in code statically absent, bit for bit, over 4 chunks in
    which the curriculum advances (threshold 0: a stage moves on after 2 counted episodes) and SAC updates."""
    hp = rollin.HParams(beta=0.0, advance_threshold=0.0)
    with_code, m1 = run(hp, 4, rollin=True)
    without, m2 = run(hp, 4, rollin=False)
    assert int(with_code.stage) == 3 and int(with_code.num_updates) > 0
    jax.tree.map(np.testing.assert_array_equal, with_code, without)
    jax.tree.map(np.testing.assert_array_equal, m1, m2)
    assert all(m["rollin_fraction"] == 0 for m in m1)
    # ... while beta = 0.5 does roll in (and so differs).
    rolled, m3 = run(hp.replace(beta=0.5), 4, rollin=True)
    assert sum(m["rollin_fraction"] for m in m3) > 0
    assert not np.array_equal(rolled.buffer.data["action"], with_code.buffer.data["action"])


def _constant_actor(params, value):
    """An actor whose every action is tanh(atanh(value)) = value (+- 5e-5: log-std clipped to -10)."""
    p = jax.tree.map(jnp.asarray, params)
    head, log_std = p["params"]["mean"], p["params"]["log_std"]
    head["kernel"], head["bias"] = jnp.zeros_like(head["kernel"]), jnp.full_like(head["bias"], np.arctanh(value))
    log_std["kernel"], log_std["bias"] = jnp.zeros_like(log_std["kernel"]), jnp.full_like(log_std["bias"], -20.0)
    return p


def _staged(carry, rollin_left, rollin_actor, actor):
    """The carry on stage 1 with chosen roll-in lengths and actors (actor_lr = 0 keeps `actor` fixed)."""
    env = tiny_env()
    env_state = jax.vmap(env.set_context, in_axes=(0, None))(carry.env_state, env.context_table()[1])
    return carry.replace(agent=carry.agent.replace(actor_params=actor), rollin_actor=rollin_actor,
                         env_state=env_state, stage=jnp.asarray(1, jnp.int32),
                         rollin_left=jnp.asarray(rollin_left, jnp.int32), episode_stage=jnp.ones(4, jnp.int32))


def test_phase_switch_is_per_env_and_rollin_actions_come_from_the_previous_policy():
    """Envs with h = 0, 3, 7, 12 on stage 1 (episodes of 8 steps): the previous policy acts (constant +0.6) for
    exactly h steps, then the current one (constant -0.6). h = 0 never uses the previous policy. The switch restarts
    the time limit (h = 7 is not truncated 8 steps after its start); h = 12 is cut by the time limit at step 8 and
    its next episode (beta = 0) starts without roll-in."""
    init_carry, train_chunk, _ = trainer(rollin=True)
    hp = rollin.HParams(beta=0.0, actor_lr=0.0, advance_threshold=2.0)
    carry = init_carry(KEY, hp)
    carry = _staged(carry, [0, 3, 7, 12], _constant_actor(carry.agent.actor_params, 0.6),
                    _constant_actor(carry.agent.actor_params, -0.6))
    carry, m = train_chunk(carry, hp)
    data = jax.tree.map(lambda x: np.asarray(x[:40]).reshape(10, 4, *x.shape[1:]), carry.buffer.data)
    t = np.arange(10)[:, None]
    rolled = np.stack([t[:, 0] < 0, t[:, 0] < 3, t[:, 0] < 7, t[:, 0] < 8], axis=1)  # (step, env)
    expected = np.where(rolled[..., None], 0.6, -0.6)
    np.testing.assert_allclose(data["action"], np.broadcast_to(expected, (10, 4, 2)), atol=1e-3)
    assert float(m["rollin_fraction"]) == pytest.approx(rolled.mean())
    # Truncation at 8 steps from the episode start (env 0), from the switch (env 2: 7 + 8 > 10), and inside the
    # roll-in (env 3, at its 8th step).
    np.testing.assert_array_equal(np.flatnonzero(data["truncated"][:, 0]), [7])
    assert not data["truncated"][:, 1:3].any()
    np.testing.assert_array_equal(np.flatnonzero(data["truncated"][:, 3]), [7])
    np.testing.assert_array_equal(carry.rollin_left, [0, 0, 0, 0])
    np.testing.assert_array_equal(carry.env_state.info["steps"], [2, 7, 3, 2])
    # Every stored transition (roll-in or not) carries the CURRENT task's context (stage 1's goal).
    goal1 = np.asarray(tiny_env().contexts[1])
    np.testing.assert_array_equal(data["obs"][..., -2:], np.broadcast_to(goal1, (10, 4, 2)))
    # The episode cut inside its roll-in is not a task episode; env 0's is (8 steps of the current policy).
    assert int(m["episode_count"]) == 1


def test_rollin_policy_is_shown_the_previous_context():
    """A (non-constant) previous actor with tiny noise: its roll-in actions equal its mode on the observation with
    the context replaced by the PREVIOUS stage's goal, and differ from its mode under the current goal."""
    init_carry, train_chunk, _ = trainer(rollin=True)
    hp = rollin.HParams(beta=0.0, actor_lr=0.0, advance_threshold=2.0)
    carry = init_carry(KEY, hp)
    prev = jax.tree.map(jnp.asarray, init_carry(jax.random.PRNGKey(5), hp).agent.actor_params)  # another init
    prev["params"]["log_std"]["kernel"] = jnp.zeros_like(prev["params"]["log_std"]["kernel"])
    prev["params"]["log_std"]["bias"] = jnp.full_like(prev["params"]["log_std"]["bias"], -20.0)
    carry = _staged(carry, [5, 5, 5, 5], prev, carry.agent.actor_params)
    carry, _ = train_chunk(carry, hp)
    obs = np.asarray(carry.buffer.data["obs"][:20])  # the 5 roll-in steps of the 4 envs
    actions = np.asarray(carry.buffer.data["action"][:20])
    contexts = tiny_env().context_table()
    actor = sac.actor_net(rollin.Config(**TINY), 2)
    mode = jax.jit(lambda ctx: actor.apply(prev, rollin.with_context(jnp.asarray(obs), ctx)).mode())
    np.testing.assert_allclose(actions, mode(contexts[0]), atol=1e-3)
    assert np.abs(actions - np.asarray(mode(contexts[1]))).max() > 1e-2


def test_roll_in_transitions_can_be_kept_out_of_the_buffer():
    init_carry, train_chunk, _ = trainer(rollin=True, store_rollin=False)
    hp = rollin.HParams(beta=0.0, actor_lr=0.0, advance_threshold=2.0)
    carry = init_carry(KEY, hp)
    carry = _staged(carry, [0, 3, 7, 12], _constant_actor(carry.agent.actor_params, 0.6),
                    _constant_actor(carry.agent.actor_params, -0.6))
    carry, _ = train_chunk(carry, hp)
    assert int(carry.buffer.size) == 40 - (0 + 3 + 7 + 8)
    np.testing.assert_allclose(carry.buffer.data["action"][:22], -0.6, atol=1e-3)
    np.testing.assert_array_equal(carry.buffer.data["action"][22:], 0.0)  # never written


def test_rollin_actor_is_the_actor_copied_at_a_stage_advance_and_only_then():
    """The roll-in actor is planted to differ from the (frozen, actor_lr = 0) actor. With no advance (threshold
    above 1) it stays as planted; when the stage advances (threshold 0: after the first 2 counted episodes, at
    step 8) it becomes a copy of the actor."""
    init_carry, train_chunk, _ = trainer(rollin=True)
    hp = rollin.HParams(beta=0.0, actor_lr=0.0, advance_threshold=0.0)
    carry = init_carry(KEY, hp)
    planted = _constant_actor(carry.agent.actor_params, 0.6)
    carry = carry.replace(rollin_actor=planted)
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert not same(planted, carry.agent.actor_params)

    stayed, m = train_chunk(carry, hp.replace(advance_threshold=2.0))
    assert int(stayed.stage) == 0 and float(m["stage_advances"]) == 0
    assert same(stayed.rollin_actor, planted)

    advanced, m = train_chunk(carry, hp)
    assert int(advanced.stage) == 1 and float(m["stage_advances"]) == 1
    assert same(advanced.rollin_actor, advanced.agent.actor_params)
    assert same(advanced.agent.actor_params, carry.agent.actor_params)  # (the actor itself is frozen)


def test_rolled_in_episodes_are_left_out_of_the_advance_statistics():
    """Stage 1, beta = 1, h ~ Geometric(0.4) (P(h = 0) = 0.4): the roll-in policy acts +0.6, the current one -0.6,
    so the buffer shows which episodes began with a roll-in. The stage statistic counts exactly the finished
    episodes that began without one; `episode_count` counts every episode that finished on the current task."""
    init_carry, train_chunk, _ = trainer(rollin=True)
    hp = rollin.HParams(beta=1.0, rollin_gamma=0.6, actor_lr=0.0, advance_threshold=2.0)
    carry = init_carry(KEY, hp)
    carry = _staged(carry, [0, 0, 0, 0], _constant_actor(carry.agent.actor_params, 0.6),
                    _constant_actor(carry.agent.actor_params, -0.6))
    episodes = 0
    for _ in range(4):
        carry, m = train_chunk(carry, hp)
        episodes += int(m["episode_count"])
    steps = 4 * 10
    data = jax.tree.map(lambda x: np.asarray(x[:steps * 4]).reshape(steps, 4, *x.shape[1:]), carry.buffer.data)
    rolling = data["action"][..., 0] > 0  # (step, env): +0.6 is the roll-in policy
    assert np.all(np.abs(np.abs(data["action"]) - 0.6) < 1e-3)
    done = data["terminated"] | data["truncated"]
    counted = finished = finished_after_rollin = 0
    for i in range(4):
        began_with_rollin = False  # the first episodes start with rollin_left = 0
        for t in range(steps):
            if t == 0 or done[t - 1, i]:
                began_with_rollin = bool(rolling[t, i])
            if done[t, i] and not rolling[t, i]:  # ended on a task step: a finished task-1 episode
                finished += 1
                counted += not began_with_rollin
                finished_after_rollin += began_with_rollin
    assert int(carry.stage) == 1
    assert finished_after_rollin > 0 and counted > 0  # both kinds occurred
    assert episodes == finished
    assert int(carry.stats.episodes) == counted, (int(carry.stats.episodes), counted, finished)


# ---- the task wrappers -----------------------------------------------------------------------------------------

def test_maze_goals_lie_on_the_shortest_path_and_end_at_G():
    from envs import maze_data
    env = envs.make("pointmaze-large-jax")
    spec = env.unwrapped.spec
    _, dist = maze_data.shortest_paths(spec)
    for start in (None, (7, 1)):
        wrapped = rollin.maze_goals(env, 7, start)
        cells = [tuple(int(v) for v in spec.cell_of(jnp.asarray(g))) for g in wrapped.contexts]
        s = tuple(spec.find("S")) if start is None else start
        from_start = [int(dist[s + c]) for c in cells]
        assert cells[-1] == tuple(spec.find("G")) and from_start == sorted(from_start) and from_start[0] > 0
        # on the path: distance from start + distance to G = the path length
        assert all(int(dist[s + c]) + int(dist[c + cells[-1]]) == from_start[-1] for c in cells)
        state = wrapped.reset(KEY)  # a plain reset is the final task, from the chosen start
        np.testing.assert_array_equal(state.obs[-2:], wrapped.contexts[-1])
        np.testing.assert_allclose(state.obs[:2], spec.cell_center(s), atol=0.1 + 1e-6)
    with pytest.raises(ValueError, match="num_stages"):
        rollin.maze_goals(env, 30)
    with pytest.raises(ValueError, match="start_cell"):
        rollin.maze_goals(env, 3, (0, 0))


@struct.dataclass
class _Physics:
    metrics: dict


class _Runner(envs.Env):
    """A stand-in for a brax env: the x-velocity is 2 * action[0]; brax reward 123 (to be replaced)."""

    observation_size = 3
    action_size = 1

    def reset(self, key):
        return envs.State(obs=jnp.zeros(3), reward=jnp.zeros(()), terminated=jnp.zeros((), bool),
                          truncated=jnp.zeros((), bool), info={"success": jnp.zeros(())},
                          physics=_Physics({"x_velocity": jnp.zeros(())}), rng=key)

    def step(self, state, action):
        return state.replace(obs=state.obs + 1, reward=jnp.asarray(123.0),
                             physics=_Physics({"x_velocity": 2.0 * action[0]}))


def test_target_velocity_reward_success_and_context():
    env = rollin.target_velocity(envs.TimeLimit(_Runner(), max_steps=100), max_velocity=3.0, num_stages=3,
                                 velocity_ema=0.5)
    assert env.contexts == ((1.0,), (2.0,), (3.0,)) and env.observation_size == 4
    s = env.reset(KEY)
    np.testing.assert_array_equal(s.obs, [0, 0, 0, 3.0])  # final task by default
    s = env.set_context(s, jnp.array([2.0]))
    s = env.step(s, jnp.array([0.75]))  # v = 1.5: reward 1 - |1.5 - 2| = 0.5; EMA 0.75: no success
    np.testing.assert_allclose([s.reward, s.info["velocity"], s.info["success"]], [0.5, 0.75, 0.0])
    np.testing.assert_array_equal(s.obs, [1, 1, 1, 2.0])
    for _ in range(4):
        s = env.step(s, jnp.array([1.0]))  # v = 2: reward 1; EMA 1.375, 1.69, 1.84, 1.92 -> within 0.5 of 2
    np.testing.assert_allclose([s.reward, s.info["success"]], [1.0, 1.0])
    s = env.step(s, jnp.array([-1.0]))  # v = -2: bounded below by 0
    assert float(s.reward) == 0.0


@pytest.mark.slow
def test_target_velocity_on_a_brax_env():
    """halfcheetah (MJX): the target is appended to brax's observation, the reward is max(0, 1 - |v_x - v*|) with
    v_x brax's own x-velocity metric (not brax's reward), success follows the EMA of v_x; physics untouched."""
    env = rollin.target_velocity(envs.make("halfcheetah", max_steps=50), max_velocity=1.5, num_stages=3)
    assert env.contexts == ((0.5,), (1.0,), (1.5,))
    assert env.observation_size == env.env.observation_size + 1
    actions = jax.random.uniform(jax.random.PRNGKey(2), (25, env.action_size), minval=-1.0, maxval=1.0)

    def rollout(key):
        first = env.reset(key)
        state = env.set_context(first, env.context_table()[0])

        def step(s, a):
            s = env.step(s, a)
            return s, (s.obs, s.physics.obs, s.reward, s.physics.reward, s.physics.metrics["x_velocity"],
                       s.info["velocity"], s.info["success"], s.terminated)
        return first.obs, jax.lax.scan(step, state, actions)[1]

    first_obs, (obs, brax_obs, reward, brax_reward, v, ema, success, terminated) = jax.device_get(
        jax.jit(rollout)(jax.random.PRNGKey(0)))
    assert first_obs[-1] == 1.5  # a plain reset is the final task
    np.testing.assert_array_equal(obs[:, -1], 0.5)
    np.testing.assert_array_equal(obs[:, :-1], brax_obs)
    assert np.abs(v).max() > 0.05  # it moved
    np.testing.assert_allclose(reward, np.maximum(0.0, 1.0 - np.abs(v - 0.5)), rtol=1e-5, atol=1e-6)
    assert 0.0 < reward.max() and not np.allclose(reward, brax_reward)
    expected_ema = np.zeros(len(v))
    for t in range(len(v)):
        expected_ema[t] = 0.95 * (expected_ema[t - 1] if t else 0.0) + 0.05 * v[t]
    np.testing.assert_allclose(ema, expected_ema, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(success, (np.abs(expected_ema - 0.5) < 0.5).astype(np.float32))
    assert not terminated.any()  # halfcheetah never terminates


# ---- the experiment ------------------------------------------------------------------------------------------

def test_experiment_end_to_end_with_table(tmp_path, capsys):
    from experiments import rollin as experiment
    tiny = ["--env-options", "max_steps=30", "--num-stages", "3", "--agent.num-envs", "4", "--agent.chunk-steps",
            "10", "--agent.hidden-sizes", "16", "16", "--agent.batch-size", "16", "--agent.start-steps", "40",
            "--agent.buffer-capacity", "1000", "--agent.eval-episodes", "2", "--agent.min-stage-episodes", "2",
            "--total-steps", "160", "--eval-every", "2", "--no-progress", "--no-tensorboard"]
    root = experiment.main(tiny + ["--sweep.beta", "0,0.5", "--run-dir", str(tmp_path / "run")])
    evals = [json.loads(line) for line in (root / "eval.jsonl").read_text().splitlines()]
    assert {r["member"] for r in evals} == {0, 1} and {"eval_success", "eval_stage_success", "stage"} <= set(evals[0])
    metrics = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert {"stage", "stage_success", "rollin_fraction"} <= set(metrics[0])
    assert experiment.methods_of(root) == {"curriculum (beta=0)": [0], "ROLLIN beta=0.5": [1]}
    text = experiment.make_table([root], tmp_path / "table", [80, 160])
    assert "ROLLIN beta=0.5" in text and (tmp_path / "table" / "curves.png").exists()
    with pytest.raises(SystemExit):
        experiment.main(["--env", "hopper", "--no-progress"])  # a per-step penalty on a terminating task
    assert "reward-bias" in capsys.readouterr().err
