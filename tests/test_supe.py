"""algos/supe.py and nets/vae.py: segment extraction, the skill VAE, and the high-level skill env."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algos import sac, supe
from nets import TrajectoryVAE

KEY = jax.random.PRNGKey(0)
TINY = (16, 16)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))  # flax init run eagerly dispatches many small ops
def _init_vae(obs_size, action_size, latent_size, horizon, hidden_sizes, key):
    return TrajectoryVAE(action_size, latent_size, hidden_sizes).init(
        key, jnp.zeros((1, horizon, obs_size)), jnp.zeros((1, horizon, action_size)))


def _vae_params(obs_size, action_size, latent_size=8, horizon=4, hidden_sizes=TINY, key=KEY):
    return _init_vae(obs_size, action_size, latent_size, horizon, hidden_sizes, key)


# ---- segments ---------------------------------------------------------------------------------------------

def _dataset(ends_terminal, ends_timeout, n, obs_size=2):
    index = np.arange(n, dtype=np.float32)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    terminals[list(ends_terminal)] = True
    timeouts[list(ends_timeout)] = True
    obs = np.stack([index, -index], 1)[:, :obs_size]
    return {"observations": obs, "actions": 10 * index[:, None], "next_observations": obs + 0.5,
            "rewards": index, "terminals": terminals, "timeouts": timeouts}


def test_segments_stay_inside_episodes():
    """Episodes [0..4] (terminal at 4), [5, 6] (timeout at 6), [7..11] (the end of the arrays): with H = 3 the
    windows start at 0, 1, 2 and 7, 8, 9; the 2-step episode holds none."""
    data = _dataset([4], [6], 12)
    segs = supe.segments(data, 3)
    np.testing.assert_array_equal(segs["start"], [0, 1, 2, 7, 8, 9])
    start = segs["start"].astype(np.float32)
    np.testing.assert_array_equal(segs["obs"][:, :, 0], start[:, None] + np.arange(3))
    np.testing.assert_array_equal(segs["action"][:, :, 0], 10 * (start[:, None] + np.arange(3)))
    np.testing.assert_array_equal(segs["obs0"][:, 0], start)
    np.testing.assert_array_equal(segs["next_obs_last"][:, 0], start + 2.5)  # s_H = next obs of the last step
    np.testing.assert_array_equal(segs["terminal_last"], [False, False, True, False, False, False])
    np.testing.assert_array_equal(segs["timeout_last"], np.zeros(6, bool))
    np.testing.assert_array_equal(segs["reward"][:, 0], start)
    assert segs["obs"].dtype == np.float32 and segs["obs"].shape == (6, 3, 2)
    assert len(supe.segments(data, 1)["start"]) == 12  # every transition is a 1-step window


def test_segments_match_brute_force_on_random_boundaries():
    rng = np.random.default_rng(0)
    n, horizon = 300, 4
    data = _dataset(np.flatnonzero(rng.random(n) < 0.1), np.flatnonzero(rng.random(n) < 0.05), n)
    ends = data["terminals"] | data["timeouts"]
    ends[-1] = True
    expected = [i for i in range(n - horizon + 1) if not ends[i:i + horizon - 1].any()]
    np.testing.assert_array_equal(supe.segments(data, horizon)["start"], expected)


def test_segments_errors():
    data = _dataset([2], [5], 8)  # episodes of 3, 3 and 2 transitions
    with pytest.raises(ValueError, match="no window of horizon=4.*longest of the 3 episodes has 3"):
        supe.segments(data, 4)
    with pytest.raises(ValueError, match="timeouts"):
        supe.segments({k: v for k, v in data.items() if k != "timeouts"}, 2)
    with pytest.raises(ValueError, match="same non-zero leading length"):
        supe.segments({**data, "actions": data["actions"][:-1]}, 2)


def test_config_validation():
    for field in ("horizon", "latent_size", "batch_size", "updates_per_chunk"):
        with pytest.raises(ValueError, match=field):
            supe.SkillConfig(**{field: 0})
    with pytest.raises(ValueError, match="hidden_sizes"):
        supe.SkillConfig(hidden_sizes=())


# ---- the VAE ----------------------------------------------------------------------------------------------

def test_vae_learns_to_reproduce_segments():
    """Four segments that visit the SAME states s_t = t (so the decoder must read the skill to tell them apart,
    and the state to know the step) with different linear action ramps. After 400 updates (run as `Runner`
    does: vmapped over a population, the data shared) the decoder at the posterior mean reproduces every
    segment's actions, and the loss has fallen far below its initial value."""
    horizon, obs_size, action_size = 4, 3, 2
    offsets = np.array([[-0.6, 0.5], [0.6, -0.4], [0.2, 0.7], [-0.3, -0.7]], np.float32)
    slopes = np.array([[0.1, 0.0], [-0.1, 0.05], [0.0, -0.1], [0.08, 0.08]], np.float32)
    steps = np.arange(horizon, dtype=np.float32)
    actions = offsets[:, None] + slopes[:, None] * steps[:, None]  # (4, H, A)
    segs = {"obs": jnp.broadcast_to(jnp.asarray(steps)[None, :, None], (4, horizon, obs_size)),
            "action": jnp.asarray(actions)}
    cfg = supe.SkillConfig(horizon=horizon, hidden_sizes=(32, 32), batch_size=32, updates_per_chunk=100)
    hp = jax.tree.map(lambda x: jnp.asarray([x], jnp.float32), supe.SkillHParams(lr=1e-3))
    init_carry, train_chunk, evaluate = supe.make_vae_pretrain(cfg, obs_size, action_size)
    carry = jax.jit(jax.vmap(init_carry))(KEY[None], hp)
    first = lambda tree: jax.tree.map(lambda x: x[0], tree)
    initial_loss = float(supe.vae_loss(first(carry.params), segs, KEY, first(hp), cfg, action_size)[0])
    chunk = jax.jit(jax.vmap(train_chunk, in_axes=(0, 0, None)))
    for _ in range(4):
        carry, metrics = chunk(carry, hp, segs)
    assert int(metrics["num_updates"][0]) == 400
    assert int(evaluate(first(carry), KEY, first(hp))["vae_updates"]) == 400
    final_loss = float(metrics["loss"][0])  # the mean over the last 100 updates
    assert final_loss < initial_loss - 50.0 and final_loss < 0.0, (initial_loss, final_loss)

    params = first(carry.params)
    vae = supe.vae_net(cfg, action_size)
    z, _ = vae.apply(params, segs["obs"], segs["action"], method=TrajectoryVAE.encode)
    decoded, _ = vae.apply(params, segs["obs"], jnp.repeat(z[:, None], horizon, 1), method=TrajectoryVAE.decode)
    mse = float(jnp.mean((decoded - segs["action"]) ** 2))
    assert mse < 1e-3, mse  # vs 0.19, the variance of the actions across segments (reached: ~5e-5)


def test_vae_loss_matches_its_equation_and_batches():
    """loss = nll + kl_coef * kl (its reported parts), and the encoder accepts any leading batch shape."""
    cfg = supe.SkillConfig(horizon=3, latent_size=2, hidden_sizes=TINY)
    params = _vae_params(5, 2, latent_size=2, horizon=3)
    batch = {"obs": jax.random.normal(KEY, (6, 3, 5)), "action": jax.random.uniform(KEY, (6, 3, 2), minval=-1)}
    hp = supe.SkillHParams(kl_coef=0.5)
    loss, metrics = jax.jit(supe.vae_loss, static_argnums=(4, 5))(params, batch, jax.random.PRNGKey(3), hp, cfg, 2)
    assert np.isfinite(float(loss)) and set(metrics) == {"loss", "nll", "kl", "action_mse"}
    np.testing.assert_allclose(float(loss), float(metrics["nll"] + 0.5 * metrics["kl"]), rtol=1e-5)
    vae = supe.vae_net(cfg, 2)
    encode = jax.jit(functools.partial(vae.apply, method=TrajectoryVAE.encode))
    mean, log_std = encode(params, batch["obs"][:, :, None], batch["action"][:, :, None])  # leading axes (6, 3)
    assert mean.shape == log_std.shape == (6, 3, 2)  # 6 x 3 one-step segments


def test_vae_kl_and_nll_match_closed_forms_computed_independently():
    """metrics["nll"] = batch mean of sum_t sum_a -log N(a; mean, std^2) (scipy's logpdf) at the reparameterised z
    of the same key, and metrics["kl"] = the batch mean of KL(q || p) for full-covariance Gaussians with diagonal
    matrices (trace / quadratic / log-det form), also matched by a Monte-Carlo estimate E_q[log q - log p]."""
    from scipy import stats
    cfg = supe.SkillConfig(horizon=3, latent_size=2, hidden_sizes=TINY)
    params = _vae_params(5, 2, latent_size=2, horizon=3)
    batch = {"obs": jax.random.normal(KEY, (6, 3, 5)),
             "action": jax.random.uniform(jax.random.PRNGKey(1), (6, 3, 2), minval=-1)}
    key, hp = jax.random.PRNGKey(3), supe.SkillHParams(kl_coef=0.5)
    loss, metrics = jax.jit(supe.vae_loss, static_argnums=(4, 5))(params, batch, key, hp, cfg, 2)
    vae = supe.vae_net(cfg, 2)
    mq, lsq = (np.asarray(x, np.float64) for x in vae.apply(params, batch["obs"], batch["action"],
                                                             method=TrajectoryVAE.encode))
    mp, lsp = (np.asarray(x, np.float64) for x in vae.apply(params, batch["obs"][:, 0], method=TrajectoryVAE.prior))
    z = mq + np.exp(lsq) * np.asarray(jax.random.normal(key, mq.shape))  # the draw vae_loss makes with `key`
    am, als = (np.asarray(x, np.float64) for x in vae.apply(
        params, batch["obs"], jnp.asarray(np.repeat(z[:, None], 3, 1), jnp.float32), method=TrajectoryVAE.decode))
    nll = -stats.norm.logpdf(np.asarray(batch["action"], np.float64), am, np.exp(als)).sum((1, 2))
    kl = []
    for i in range(6):
        sq, sp = np.diag(np.exp(2 * lsq[i])), np.diag(np.exp(2 * lsp[i]))
        d, sp_inv = mp[i] - mq[i], np.linalg.inv(sp)
        kl.append(0.5 * (np.trace(sp_inv @ sq) + d @ sp_inv @ d - 2 + np.log(np.linalg.det(sp) / np.linalg.det(sq))))
    kl = np.array(kl)
    np.testing.assert_allclose(float(metrics["nll"]), nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kl"]), kl.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(loss), nll.mean() + 0.5 * kl.mean(), rtol=1e-5)
    samples = mq[0] + np.exp(lsq[0]) * np.random.default_rng(0).standard_normal((200_000, 2))
    mc = (stats.multivariate_normal(mq[0], np.diag(np.exp(2 * lsq[0]))).logpdf(samples)
          - stats.multivariate_normal(mp[0], np.diag(np.exp(2 * lsp[0]))).logpdf(samples)).mean()
    np.testing.assert_allclose(mc, kl[0], rtol=0.03, atol=0.01)


# ---- using the skills ---------------------------------------------------------------------------------------

def test_high_level_transitions_and_prior_actions():
    rng = np.random.default_rng(1)
    n, horizon, latent = 64, 4, 8
    data = _dataset(np.flatnonzero(rng.random(n) < 0.1), [], n)
    data["observations"] = rng.normal(size=(n, 2)).astype(np.float32) * 3
    segs = supe.segments(data, horizon)
    cfg = supe.SkillConfig(horizon=horizon, latent_size=latent, hidden_sizes=TINY)
    params = _vae_params(2, 1, latent)
    chunked = supe.high_level_transitions(params, segs, cfg, 1, discount=0.9, chunk_size=7)  # padded last chunk
    whole = supe.high_level_transitions(params, segs, cfg, 1, discount=0.9)
    m = len(segs["start"])
    assert chunked["action"].shape == (m, latent) and chunked["obs"].shape == chunked["next_obs"].shape == (m, 2)
    assert set(chunked) == {"obs", "action", "reward", "next_obs", "terminated", "truncated"}
    assert np.all(np.abs(chunked["action"]) < 1.0)
    np.testing.assert_allclose(chunked["action"], whole["action"], atol=1e-6)
    np.testing.assert_allclose(chunked["reward"], segs["reward"] @ (0.9 ** np.arange(horizon)), rtol=1e-6)
    np.testing.assert_array_equal(chunked["terminated"], segs["terminal_last"])

    u = supe.skill_prior_action(params, jnp.ones((3, 5, 2)), KEY, cfg, 1)
    assert u.shape == (3, 5, latent) and bool(jnp.all(jnp.abs(u) < 1.0))


@dataclasses.dataclass(frozen=True)
class CountingEnv(envs.Env):
    """obs = [t]; the t-th step gives reward t; terminates when t reaches `terminate_at`; success only at
    t == `success_at`."""

    terminate_at: int = 10_000
    success_at: int = -1

    @property
    def observation_size(self):
        return 1

    @property
    def action_size(self):
        return 1

    def reset(self, key):
        f = jnp.zeros((), jnp.float32)
        return envs.State(obs=jnp.zeros(1), reward=f, terminated=jnp.zeros((), bool), truncated=jnp.zeros((), bool),
                          info={"success": f}, physics=jnp.zeros((), jnp.int32), rng=key)

    def step(self, state, action):
        t = state.physics + 1
        return state.replace(obs=t[None].astype(jnp.float32), reward=t.astype(jnp.float32),
                             terminated=t >= self.terminate_at, truncated=jnp.zeros((), bool),
                             info={**state.info, "success": (t == self.success_at).astype(jnp.float32)}, physics=t)


def _skill_env(max_steps=100, **kwargs):
    return supe.SkillEnv(envs.TimeLimit(CountingEnv(**kwargs), max_steps=max_steps), _vae_params(1, 1, 2),
                         horizon=4, latent_size=2, hidden_sizes=TINY, discount=0.9)


def _two_steps(env):
    @jax.jit
    def run(key):
        s0 = env.reset(key)
        s1 = env.step(s0, jnp.full(2, 0.3))
        return s0, s1, env.step(s1, jnp.full(2, -0.3))
    return run(KEY)


def test_skill_step_runs_h_low_level_steps_with_discounted_reward():
    env = _skill_env(success_at=2)
    s0, s1, s2 = _two_steps(env)
    assert env.action_size == 2 and env.max_steps == 25
    np.testing.assert_allclose(float(s1.reward), 1 + 0.9 * 2 + 0.81 * 3 + 0.729 * 4, rtol=1e-6)
    np.testing.assert_allclose(float(s2.reward), 5 + 0.9 * 6 + 0.81 * 7 + 0.729 * 8, rtol=1e-6)
    assert int(s1.info["env_steps"]) == 4 and int(s2.info["steps"]) == 8 and float(s2.obs[0]) == 8.0
    assert float(s1.info["segment_return"]) == 10.0
    assert float(s1.info["success"]) == 1.0 and float(s2.info["success"]) == 0.0  # success at step 2 of 4
    assert not bool(s1.done)
    for key, value in s0.info.items():  # AutoReset selects between reset and step infos: same shapes/dtypes
        assert (value.shape, value.dtype) == (s1.info[key].shape, s1.info[key].dtype), key


def test_skill_reward_is_shifted_per_low_level_step_inside_the_discounted_sum():
    env = dataclasses.replace(_skill_env(), reward_shift=-1.0)
    _, s1, _ = _two_steps(env)
    np.testing.assert_allclose(float(s1.reward), 0 + 0.9 * 1 + 0.81 * 2 + 0.729 * 3, rtol=1e-6)
    assert float(s1.info["segment_return"]) == 10.0  # unshifted


@dataclasses.dataclass(frozen=True)
class ActionRewardEnv(CountingEnv):
    """CountingEnv whose reward is the action applied: a skill's undiscounted reward is the sum of its actions."""

    def step(self, state, action):
        return super().step(state, action).replace(reward=action[0])


def test_low_level_actions_are_sampled_from_the_decoder():
    """sample_actions=True (the reference) draws a ~ N(tanh(m), sigma^2) clipped to [-1, 1] at every low-level step
    with keys from the state's rng; False replays the decoder mean. With sigma = e^-5 the samples sit on the mean."""
    params = _vae_params(1, 1, 2)
    make = lambda p, sample: supe.SkillEnv(envs.TimeLimit(ActionRewardEnv(), max_steps=100), p, horizon=4,
                                           latent_size=2, hidden_sizes=TINY, discount=1.0, sample_actions=sample)
    u = jnp.full(2, 0.3)
    step = lambda env, key: jax.jit(lambda k: env.step(env.reset(k), u).reward)(key)
    decoder = supe.vae_net(supe.SkillConfig(latent_size=2, hidden_sizes=TINY), 1)
    means = decoder.apply(params, jnp.arange(4.0)[:, None], jnp.broadcast_to(jnp.arctanh(u), (4, 2)),
                          method=TrajectoryVAE.decode)[0]
    np.testing.assert_allclose(float(step(make(params, False), KEY)), float(means.sum()), rtol=1e-5)
    sampled = [float(step(make(params, True), jax.random.PRNGKey(i))) for i in range(3)]
    assert len(set(sampled)) == 3 and all(abs(r - float(means.sum())) > 1e-3 for r in sampled)
    out = params["params"]["decoder"]["dense_out"]  # log-std head -> -5: sigma = e^-5
    sharp = {**out, "bias": out["bias"].at[1].set(-5.0), "kernel": out["kernel"].at[:, 1].set(0.0)}
    sharp = {"params": {**params["params"], "decoder": {**params["params"]["decoder"], "dense_out": sharp}}}
    np.testing.assert_allclose(float(step(make(sharp, True), KEY)), float(means.sum()), atol=0.05)


def test_a_skill_cut_short_by_the_time_limit_bootstraps_with_gamma_to_the_k():
    """Low-level episodes of 6 steps with H = 4: skills of k = 4, then k = 2 truncated by the time limit. The
    buffer stores k, and the critic target of the truncated skill bootstraps with gamma^2 (not gamma^4 = the
    high level's discount): y(k) = gamma^k Q̄(s', a') against the same rows with k = H (same a')."""
    from algos import explore
    low = envs.TimeLimit(CountingEnv(), max_steps=6)
    agent = sac.Config(num_envs=1, chunk_steps=6, batch_size=4, buffer_capacity=16, hidden_sizes=TINY,
                       start_steps=10_000, updates_per_step=1, eval_episodes=1)
    cfg = supe.Config(skills=supe.SkillConfig(latent_size=2, hidden_sizes=TINY), discount=0.8,
                      explore=explore.Config(agent=agent, prior_label="zero", labeler_hidden_sizes=(8,),
                                             rnd_hidden_sizes=(8,), rnd_features=4))
    init, chunk, _ = supe.make_train(cfg, low, _vae_params(1, 1, 2))
    hp = explore.HParams(discount=supe.high_level_discount(cfg))
    assert abs(float(hp.discount) - 0.8 ** 4) < 1e-7
    carry, _ = jax.jit(chunk)(init(KEY, hp), hp)
    rows = jax.tree.map(lambda x: x[:6], carry.buffer.data)
    np.testing.assert_array_equal(rows["env_steps"], [4, 2, 4, 2, 4, 2])
    np.testing.assert_array_equal(rows["truncated"], [False, True] * 3)
    e_cfg = dataclasses.replace(cfg.explore, skill_horizon=4)
    labeler = explore.init_labeler(KEY, e_cfg, 1, 2)
    online = jnp.zeros(6, bool)
    zero_reward = {**rows, "reward": jnp.zeros(6)}
    relabelled, _ = explore.relabel(labeler, zero_reward, online, hp, e_cfg)
    full, _ = explore.relabel(labeler, {**zero_reward, "env_steps": jnp.full(6, 4)}, online, hp, e_cfg)
    target = lambda b: np.asarray(sac.critic_target(carry.agent, b, KEY, hp, agent))
    y, y_full = target(relabelled), target(full)  # y_full = gamma^4 Q̄(s', a'), the same a' (same key)
    np.testing.assert_allclose(y, y_full * 0.8 ** (np.asarray(rows["env_steps"]) - 4.0), rtol=1e-5)
    assert np.all(np.abs(y_full) > 1e-3)  # a non-trivial bootstrap


@pytest.mark.parametrize("kwargs, flag", [({"terminate_at": 6}, "terminated"), ({"max_steps": 6}, "truncated")])
def test_episode_end_inside_a_segment_stops_it(kwargs, flag):
    """The low-level episode ends at t = 6, the 2nd step of the 2nd segment: the remaining 2 steps are no-ops."""
    _, _, s2 = _two_steps(dataclasses.replace(_skill_env(**kwargs), reward_shift=-1.0))
    assert bool(getattr(s2, flag)) and not bool(getattr(s2, {"terminated": "truncated"}.get(flag, "terminated")))
    assert int(s2.info["env_steps"]) == 2 and float(s2.obs[0]) == 6.0 and int(s2.info["steps"]) == 6
    np.testing.assert_allclose(float(s2.reward), (5 - 1) + 0.9 * (6 - 1), rtol=1e-6)  # no-ops pay no shift
    assert float(s2.info["segment_return"]) == 11.0


def test_skill_env_validation():
    with pytest.raises(ValueError, match="time-limited"):
        supe.SkillEnv(CountingEnv(), _vae_params(1, 1, 2), latent_size=2, hidden_sizes=TINY)
    with pytest.raises(ValueError, match="vae_params"):
        supe.SkillEnv(envs.TimeLimit(CountingEnv(), max_steps=5))


def _maze_skill_env():
    low = envs.make("pointmaze-umaze-jax", max_steps=8)  # 2 skills per episode
    params = _vae_params(low.observation_size, low.action_size)
    return supe.SkillEnv(low, params, horizon=4, latent_size=8, hidden_sizes=TINY)


def test_skill_env_on_the_maze_vectorised():
    env = _maze_skill_env()
    assert env.max_steps == 2 and env.action_size == 8 and env.observation_size == 6
    venv = envs.make_vec(env, 3)

    @jax.jit
    def rollout(key):
        def step(state, k):
            state = venv.step(state, jax.random.uniform(k, (3, 8), minval=-1, maxval=1))
            # On the step that ends an episode AutoReset shows the fresh episode's info; the segment's is kept in
            # final_info: that is where a training loop must read env_steps from.
            done = state.info["episode_done"] > 0
            env_steps = jnp.where(done, state.info["final_info"]["env_steps"], state.info["env_steps"])
            return state, (env_steps, state.info["env_steps"], done, state.info["episode_length"])
        return jax.lax.scan(step, venv.reset(key), jax.random.split(key, 5))

    state, (env_steps, shown_env_steps, done, length) = rollout(KEY)
    assert state.obs.shape == (3, 6) and state.reward.shape == (3,) and state.info["next_obs"].shape == (3, 6)
    np.testing.assert_array_equal(np.asarray(env_steps), 4)
    np.testing.assert_array_equal(np.asarray(shown_env_steps)[:, 0], [4, 0, 4, 0, 4])  # fresh info after a reset
    np.testing.assert_array_equal(np.asarray(done)[:, 0], [0, 1, 0, 1, 0])
    assert np.all(np.asarray(length)[-1] == 2) and np.all(np.isfinite(np.asarray(state.obs)))


def test_skill_env_under_sac_evaluate_policy():
    env = _maze_skill_env()
    acfg = sac.Config(hidden_sizes=TINY, eval_episodes=2)
    agent = jax.jit(sac.init_agent, static_argnums=(1, 3, 4))(KEY, acfg, sac.HParams(), env.observation_size,
                                                               env.action_size)
    result = jax.jit(lambda k: sac.evaluate_policy(env, agent, k, acfg))(KEY)
    assert set(result) == {"eval_return", "eval_success"}
    assert all(np.isfinite(float(v)) for v in result.values())


# ---- online high-level RL -----------------------------------------------------------------------------------

def test_online_high_level_training_counts_low_level_steps_and_labels_prior_segments():
    """supe.make_train = ExPLORe over SkillEnv: every high-level step is H env steps (episodes of 5 skills that
    never end inside one, so the count is exact), the prior's high-level transitions are relabelled, and the
    first high-level actions are skills drawn from the VAE prior (not uniform)."""
    from algos import explore
    env = envs.make("pointmaze-umaze-jax", max_steps=20, terminate_on_success=False)
    skills = supe.SkillConfig(hidden_sizes=TINY)
    params = _vae_params(6, 2)
    # a prior p(z|s) that is sharp and far from 0: z ~ N(3, e^-8), so u = tanh(z) ~ 0.995 in every dimension
    out = params["params"]["prior"]["dense_out"]
    out = {"kernel": jnp.zeros_like(out["kernel"]), "bias": jnp.concatenate([jnp.full(8, 3.0), jnp.full(8, -8.0)])}
    params = {"params": {**params["params"], "prior": {**params["params"]["prior"], "dense_out": out}}}
    data = _dataset([], [49, 99], 100, obs_size=2)
    data = {**data, "observations": np.tile(data["observations"], 3), "next_observations":
            np.tile(data["next_observations"], 3), "actions": np.tile(data["actions"], 2) / 100.0}
    high = supe.high_level_transitions(params, supe.segments(data, 4), skills, 2)
    prior = jax.tree.map(jnp.asarray, explore.unlabeled_prior(high["obs"], high["action"], high["next_obs"]))
    agent = sac.Config(num_envs=2, chunk_steps=10, batch_size=16, buffer_capacity=256, hidden_sizes=TINY,
                       start_steps=40, updates_per_step=1, eval_episodes=2)
    cfg = supe.Config(skills=skills, explore=explore.Config(agent=agent, labeler_hidden_sizes=TINY,
                                                            rnd_hidden_sizes=TINY, rnd_features=4))
    init, chunk, evaluate = supe.make_train(cfg, env, params)
    hp = explore.HParams(discount=supe.high_level_discount(cfg))
    carry = init(KEY, hp)
    carry, m = jax.jit(chunk)(carry, hp, prior)
    assert int(m["env_steps"]) == 2 * 10 * 4  # num_envs x chunk_steps x H low-level steps
    # start_steps counts env steps: 40 low-level steps = the first 5 high-level steps of 2 envs = 10 skills
    actions = np.asarray(carry.buffer.data["action"][:20])
    assert actions[:10].min() > 0.99  # drawn from the VAE prior; uniform draws would straddle 0
    assert actions[10:].min() < 0.9  # then the (untrained) high-level policy
    carry, m = jax.jit(chunk)(carry, hp, prior)
    assert int(m["env_steps"]) == 2 * 2 * 10 * 4 and float(m["num_updates"]) > 0
    assert np.isfinite(float(m["prior_reward"])) and float(m["rnd_bonus_prior"]) > 0
    assert np.isfinite(float(evaluate(carry, KEY, hp)["eval_return"]))


@pytest.mark.slow
def test_cli_trains_skills_once_and_reuses_them(tmp_path):
    import json
    import subprocess
    import sys
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    tiny = ["--env", "pointmaze-umaze-jax", "--dataset-size", "3000", "--skills.hidden-sizes", "16", "16",
            "--skills.updates-per-chunk", "50", "--skill-steps", "100", "--total-steps", "320",
            "--agent.num-envs", "2", "--agent.chunk-steps", "20", "--agent.batch-size", "16",
            "--agent.hidden-sizes", "16", "16", "--labeler-hidden-sizes", "16", "--rnd-hidden-sizes", "16",
            "--agent.start-steps", "40", "--agent.buffer-capacity", "256", "--agent.num-critics", "2",
            "--checkpoint-every", "1", "--no-progress", "--no-tensorboard",
            "--dataset", str(tmp_path / "prior.hdf5")]
    from envs import datasets, maze_data
    datasets.save_dataset(tmp_path / "prior.hdf5", maze_data.diverse_dataset("umaze", 3000, num_envs=4))
    run = lambda *a: subprocess.run([sys.executable, "experiments/supe.py", *tiny, *a], capture_output=True,
                                    text=True, cwd=repo, timeout=300)
    first = run("--run-dir", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    rows = [json.loads(x) for x in (tmp_path / "a" / "skills" / "metrics.jsonl").read_text().splitlines()]
    assert [r["num_updates"] for r in rows] == [50, 100]
    online = [json.loads(x) for x in (tmp_path / "a" / "online" / "metrics.jsonl").read_text().splitlines()]
    assert online[-1]["env_steps"] == 320 and "first_success_step" in online[-1]
    second = run("--run-dir", str(tmp_path / "b"), "--no-prior-online", "--skills-from", str(tmp_path / "a"))
    assert second.returncode == 0, second.stderr
    assert not (tmp_path / "b" / "skills").exists() and (tmp_path / "b" / "online" / "eval.jsonl").exists()
    bad = run("--run-dir", str(tmp_path / "c"), "--skills-from", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "nowhere" in bad.stderr

    # Resume of each phase: a run "killed" after the first checkpoint of the skills phase (no online/ yet), and
    # one killed after the first checkpoint of the online phase, continue from there and log exactly what the
    # uninterrupted run logged (CPU: bit for bit).
    import shutil
    read = lambda path: path.read_text().splitlines()
    for phase, cut in (("skills", 1), ("online", 1)):
        killed = tmp_path / f"killed-{phase}"
        shutil.copytree(tmp_path / "a", killed)
        if phase == "skills":
            shutil.rmtree(killed / "online")
        ckpts = killed / phase / "checkpoints"
        steps = sorted(int(d.name) for d in ckpts.iterdir() if d.name.isdigit())
        assert steps[0] == cut and len(steps) > 1, steps
        for step in steps[1:]:
            shutil.rmtree(ckpts / str(step))
        resumed = subprocess.run([sys.executable, "experiments/supe.py", "--resume", str(killed)],
                                 capture_output=True, text=True, cwd=repo, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert f"{phase}: resuming" in resumed.stderr and f"from chunk {cut}/" in resumed.stderr, resumed.stderr
        for sub in ("skills", "online"):
            for log in ("metrics.jsonl", "eval.jsonl"):
                assert read(killed / sub / log) == read(tmp_path / "a" / sub / log), (phase, sub, log)
