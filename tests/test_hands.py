"""The touch-sensing hand (envs/hands.py), its scripted demonstrations, the episode files and a tiny end to end.

One MJX program is compiled for the module (a vmapped scripted rollout, shared by the fixture), one more for the
end-to-end evaluation; everything else is array code or file I/O.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algos import diffusion_policy as dp
from envs import episodes, hands
from experiments import hato


T0, T1 = hands.OBS_LAYOUT["touch"]


@pytest.fixture(scope="module")
def env():
    return hands.HandLift()


@pytest.fixture(scope="module")
def demos(env):
    obs, act, rew, success, length = map(np.asarray, hato.expert_rollouts(env, 4, jax.random.PRNGKey(0), 30, 0.03))
    return obs, act, rew, success, length


def test_registered_with_a_time_limit():
    env = envs.make("hand-lift")
    assert isinstance(env, envs.TimeLimit) and env.max_steps == 60
    assert env.observation_size == 28 and env.action_size == 9
    assert len(hands.TOUCH_LAYOUT) == T1 - T0 == 6


def test_reset_randomizes_and_sees_the_ball(env):
    states = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 8))
    ball = np.asarray(states.physics["data"].qpos[:, 9:12])
    assert np.unique(ball[:, 0]).size == 8 and np.all(np.abs(ball[:, :2]) <= env.object_range)
    np.testing.assert_allclose(ball[:, 2], np.asarray(states.physics["params"]["radius"]))
    obs = np.asarray(states.obs)
    assert np.all(obs[:, -1] == 1.0)                                      # far from the palm: visible
    assert np.all(np.abs(obs[:, 24:27] - ball) < 5 * env.position_noise)  # noisy, unbiased view
    assert np.all(obs[:, T0:T1] == 0.0)


def test_touch_off_zeroes_only_the_touch_block(env):
    state = env.reset(jax.random.PRNGKey(1))
    data = state.physics["data"].replace(sensordata=jnp.ones_like(state.physics["data"].sensordata))
    on = env._observe(data, state.physics["params"], jax.random.PRNGKey(2))
    off = hands.HandLift(touch=False)._observe(data, state.physics["params"], jax.random.PRNGKey(2))
    assert np.all(np.asarray(on[T0:T1]) == 1.0) and np.all(np.asarray(off[T0:T1]) == 0.0)
    np.testing.assert_array_equal(np.delete(np.asarray(on), np.s_[T0:T1]), np.delete(np.asarray(off), np.s_[T0:T1]))


def test_touch_reads_zero_when_free_and_positive_on_contact(demos):
    obs, _, _, success, length = demos
    touch = obs[..., T0:T1]
    # free fingers: open (joints ~0) around a ball that sits inside their circle (radius 0.07; ball radius
    # <= 0.045, finger 0.01, palm centred within 0.008 of the ball), or with the fingertips above the ball's top
    fingers_open = np.abs(obs[..., 3:9]).max(-1) < 0.05
    d = np.linalg.norm(obs[..., 0:2] - obs[..., 24:26], axis=-1)
    above = obs[..., 2] - 0.14 > obs[..., 26] + 0.045 + 0.01
    free = fingers_open & (obs[..., -1] == 1.0) & ((d < 0.008) | above)
    assert free.sum() >= 8 and np.all(touch[free] == 0.0)
    distal = touch[..., 1::2]
    assert np.all(distal.max(1) > 0.05)          # every finger's distal pad presses the ball at some step
    assert np.all(touch >= 0.0)


def test_expert_lifts_and_the_episode_ends_on_success(demos):
    obs, _, rew, success, length = demos
    assert success.mean() >= 0.75, success
    for i in np.flatnonzero(success):
        assert rew[i, length[i] - 1] == 1.0 and rew[i, :length[i] - 1].sum() == 0.0
    assert np.any(obs[..., -1] == 0.0)           # the ball is occluded once the hand closes on it
    assert np.all(obs[obs[..., -1] == 0.0][:, 24:27] == 0.0)


# ---- episode files ---------------------------------------------------------------------------------------------
META = {"task": "hand-lift", "success": True, "seed": 0, "control_rate": 25.0,
        "sensor_layout": list(hands.TOUCH_LAYOUT), "obs_layout": {k: list(v) for k, v in hands.OBS_LAYOUT.items()}}


def write(path, t=5, obs_dim=28, **meta):
    rng = np.random.default_rng(t)
    return episodes.save_episode(path, rng.normal(size=(t, obs_dim)), rng.normal(size=(t, 9)), np.zeros(t),
                                 {**META, **meta})


def test_episode_files_round_trip_with_padding_masks_and_filtering(tmp_path):
    write(tmp_path / "a.npz", 5)
    write(tmp_path / "b.npz", 8, seed=3)
    write(tmp_path / "c.npz", 6, success=False)
    batch = episodes.load_episodes(tmp_path)
    assert batch["observations"].shape == (2, 8, 28) and batch["actions"].shape == (2, 8, 9)
    np.testing.assert_array_equal(batch["mask"].sum(1), [5, 8])
    np.testing.assert_array_equal(batch["seeds"], [0, 3])
    assert np.all(batch["observations"][0, 5:] == 0) and batch["num_files"] == 3
    with np.load(tmp_path / "b.npz") as f:
        np.testing.assert_array_equal(batch["actions"][1], f["actions"])
    assert batch["sensor_layout"] == list(hands.TOUCH_LAYOUT) and batch["control_rate"] == 25.0
    assert len(episodes.load_episodes(tmp_path, only_success=False)["lengths"]) == 3
    stats = episodes.normalizer(batch)
    real = batch["actions"][batch["mask"] > 0]
    np.testing.assert_allclose(stats["act_min"], real.min(0))


def test_bad_episode_files_say_what_is_wrong(tmp_path):
    with pytest.raises(episodes.EpisodeError, match="no episode files"):
        episodes.load_episodes(tmp_path)
    with pytest.raises(episodes.EpisodeError, match="no such episode file"):
        episodes.load_episodes(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(episodes.EpisodeError, match="junk.npz: cannot read"):
        episodes.load_episodes(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", observations=np.zeros((3, 28)))
    with pytest.raises(episodes.EpisodeError, match=r"missing array\(s\) \['actions', 'rewards', 'metadata'\]"):
        episodes.load_episodes(tmp_path / "partial.npz")
    np.savez(tmp_path / "nometa.npz", observations=np.zeros((3, 28)), actions=np.zeros((3, 9)), rewards=np.zeros(3),
             metadata=np.asarray(json.dumps({"task": "x"})))
    with pytest.raises(episodes.EpisodeError, match="metadata lacks"):
        episodes.load_episodes(tmp_path / "nometa.npz")
    np.savez(tmp_path / "short.npz", observations=np.zeros((3, 28)), actions=np.zeros((2, 9)), rewards=np.zeros(3),
             metadata=np.asarray(json.dumps({**META, "length": 3})))
    with pytest.raises(episodes.EpisodeError, match="lengths disagree"):
        episodes.load_episodes(tmp_path / "short.npz")
    bad = tmp_path / "nan"
    path = write(bad / "a.npz")
    with np.load(path) as f:
        arrays = dict(f)
    arrays["actions"][2, 1] = np.nan
    np.savez(path, **arrays)
    with pytest.raises(episodes.EpisodeError, match="actions contains NaN or inf \\(first at step 2\\)"):
        episodes.load_episodes(bad)
    mixed = tmp_path / "mixed"
    write(mixed / "a.npz")
    write(mixed / "b.npz", control_rate=50.0)
    with pytest.raises(episodes.EpisodeError, match="control_rate=50.0 differs"):
        episodes.load_episodes(mixed)
    failed = tmp_path / "failed"
    write(failed / "a.npz", success=False)
    with pytest.raises(episodes.EpisodeError, match="none of the 1 episode"):
        episodes.load_episodes(failed)


def test_tiny_end_to_end_collect_train_evaluate(env, demos, tmp_path):
    """Scripted demos -> episode files -> loader -> a few diffusion updates -> success measured in the MJX env."""
    obs, act, rew, success, length = demos
    for i in range(len(obs)):
        episodes.save_episode(tmp_path / f"e{i}.npz", obs[i, :length[i]], act[i, :length[i]], rew[i, :length[i]],
                              {**META, "success": bool(success[i]), "seed": i})
    batch = episodes.load_episodes(tmp_path)
    stats = episodes.normalizer(batch)
    cfg = dp.Config(obs_horizon=1, pred_horizon=4, action_horizon=2, down_dims=(8, 16), kernel_size=3, n_groups=4,
                    step_embed_dim=8, encoder_dim=8, batch_size=16, updates_per_chunk=20, num_diffusion_steps=20,
                    num_inference_steps=4)
    evaluate_fn = dp.rollout_evaluator(env, cfg, num_episodes=2, max_steps=4)
    init_carry, train_chunk, evaluate, _ = dp.make_train(cfg, stats, batch["obs_layout"], 9, evaluate_fn)
    hp = dp.HParams()
    carry, metrics = jax.jit(train_chunk)(init_carry(jax.random.PRNGKey(0), hp), hp, dp.prepare(cfg, batch, stats))
    assert np.isfinite(float(metrics["loss"])) and int(carry.num_updates) == 20
    result = jax.jit(evaluate)(carry, jax.random.PRNGKey(1), hp)
    assert 0.0 <= float(result["success"]) <= 1.0
