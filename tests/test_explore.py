"""ExPLORe: the RND bonus and its scale, relabelling of the prior half only (soft terminations, every label), the
labeller trained inside `train_chunk`, the task convention, the first-success counter, maze prior data, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algos import explore, replay, sac
from envs import maze_data

KEY = jax.random.PRNGKey(0)
AGENT = sac.Config(num_envs=4, chunk_steps=25, batch_size=32, buffer_capacity=4096, hidden_sizes=(32, 32),
                   num_critics=2, critic_layernorm=True, updates_per_step=2, start_steps=100, eval_episodes=2)
CFG = explore.Config(agent=AGENT, labeler_hidden_sizes=(32, 32), rnd_hidden_sizes=(32, 32), rnd_features=16)
OBS, ACT = 6, 2


def _transitions(key, n, center):
    k1, k2, k3 = jax.random.split(key, 3)
    obs = center + 0.1 * jax.random.normal(k1, (n, OBS))
    return {"obs": obs, "action": jax.random.uniform(k2, (n, ACT), minval=-1, maxval=1), "reward": jnp.zeros(n),
            "next_obs": obs + 0.01 * jax.random.normal(k3, (n, OBS)), "terminated": jnp.zeros(n, bool),
            "truncated": jnp.zeros(n, bool)}


def test_rnd_bonus_is_higher_on_novel_than_on_trained_pairs():
    labeler = explore.init_labeler(KEY, CFG, OBS, ACT)
    seen = _transitions(jax.random.PRNGKey(1), 64, 0.0)
    novel = _transitions(jax.random.PRNGKey(2), 64, 3.0)
    hp = explore.HParams(labeler_lr=1e-3)
    before = explore.rnd_bonus(labeler, seen["obs"], seen["action"], CFG)

    @jax.jit
    def train(labeler):
        step = lambda lb, _: (explore.update_labeler(lb, seen, seen, hp, CFG)[0], None)
        return jax.lax.scan(step, labeler, None, length=300)[0]

    labeler = train(labeler)
    on_seen = explore.rnd_bonus(labeler, seen["obs"], seen["action"], CFG)
    on_novel = explore.rnd_bonus(labeler, novel["obs"], novel["action"], CFG)
    assert float(on_seen.mean()) < 0.1 * float(before.mean())  # training lowered it where the agent has been
    assert float(on_novel.mean()) > 5 * float(on_seen.mean())  # ... and it stays high elsewhere
    assert float(on_novel.min()) > float(on_seen.max())


def _maze_scale_inputs(key, n=1024):
    """Point-maze observations as the large maze's prior data has them: position in the maze, velocity O(1), the
    goal's centre; actions in [-1, 1]^2."""
    k1, k2, k3 = jax.random.split(key, 3)
    pos = jax.random.uniform(k1, (n, 2), minval=jnp.array([1.0, 1.0]), maxval=jnp.array([10.0, 7.0]))
    obs = jnp.concatenate([pos, jax.random.normal(k2, (n, 2)), jnp.broadcast_to(jnp.array([4.0, 7.0]), (n, 2))], -1)
    return obs, jax.random.uniform(k3, (n, 2), minval=-1, maxval=1)


def test_rnd_bonus_at_initialisation_is_order_one_on_maze_inputs():
    """The reference's scale: the MEAN over 256 features of 3 x 256 nets is O(0.1-1) at initialisation on maze
    observations (measured: 0.25-0.31 over seeds); the old SUM over the features is K times that (~60 with 64
    features of 2 x 256 nets), enough to drown a 0/1 goal reward."""
    cfg = explore.Config()
    assert (cfg.rnd_hidden_sizes, cfg.rnd_features) == ((256, 256, 256), 256)
    obs, action = _maze_scale_inputs(KEY)
    bonus = jax.jit(lambda k: explore.rnd_bonus(explore.init_labeler(k, cfg, OBS, ACT), obs, action, cfg))
    for seed in range(3):
        b = np.asarray(bonus(jax.random.PRNGKey(seed)))
        assert 0.05 < b.mean() < 2.0 and b.max() < 10.0, (seed, b.mean(), b.max())


def test_default_task_convention_makes_reaching_the_goal_the_best_outcome():
    """experiments/explore.py's defaults use the antmaze convention (reward - 1, termination at the goal, one
    random target critic, no entropy backup). Every non-goal row then pays a NEGATIVE reward in the critic target:
    online rows r - 1 = -1, prior rows r̂ - 1 + beta b (the labeller at initialisation on maze inputs), while the
    goal step is terminal with reward 1 - 1 = 0: ending at the goal beats any path that keeps collecting the
    bonus. With reward_bias 0 (the old default) every prior label is positive and wandering pays."""
    from experiments import explore as experiment
    args = experiment.Args()
    cfg, hp = args.config(), args.hp
    assert float(hp.reward_bias) == -1.0 and cfg.agent.num_target_critics == 1 and not cfg.agent.backup_entropy
    assert cfg.prior_label == "optimistic" and cfg.rnd_features == 256
    obs, action = _maze_scale_inputs(jax.random.PRNGKey(1), 512)
    prior = {"obs": obs, "action": action, "next_obs": obs, "reward": jnp.zeros(512),
             "terminated": jnp.zeros(512, bool), "truncated": jnp.zeros(512, bool)}
    labeler = explore.init_labeler(KEY, cfg, OBS, ACT)
    out, _ = jax.jit(lambda lb: explore.relabel(lb, prior, jnp.ones(512, bool), hp, cfg))(labeler)
    shift = lambda r: np.asarray(r) * float(hp.reward_scale) + float(hp.reward_bias)
    # where the reward model has learned r̂ = 0 (every non-goal online row), a prior row pays beta b - 1 < 0
    bonus = float(hp.rnd_coef) * np.asarray(explore.rnd_bonus(labeler, obs, action, cfg))
    assert shift(bonus).max() < 0.0 and shift(out["reward"]).mean() < 0.0, (shift(bonus).max(), shift(out["reward"]))
    goal = shift(1.0)  # the goal step: terminal, no bootstrap
    assert goal == 0.0 and shift(bonus).max() / (1 - float(hp.discount)) < goal


def _labeler_with_termination_bias(cfg, bias):
    """A labeller whose termination classifier outputs logit ~`bias` everywhere (zero output kernel)."""
    labeler = explore.init_labeler(KEY, cfg, OBS, ACT)
    set_out = lambda p, x: (jnp.full_like(x, bias) if p[-1].key == "bias" else jnp.zeros_like(x)) \
        if p[-2].key == "dense_out" else x
    return labeler.replace(termination_params=jax.tree_util.tree_map_with_path(set_out, labeler.termination_params))


@pytest.mark.parametrize("label,online_bonus", [("optimistic", False), ("predicted", False), ("min", False),
                                                ("zero", False), ("min", True)])
def test_relabel_touches_only_the_prior_half(label, online_bonus):
    cfg = explore.Config(agent=AGENT, prior_label=label, online_bonus=online_bonus, labeler_hidden_sizes=(32, 32),
                         rnd_hidden_sizes=(32, 32), rnd_features=16)
    prior = {**_transitions(jax.random.PRNGKey(3), 100, 1.0), "reward": jnp.full(100, 123.0)}
    online = replay.insert(replay.init(200, jax.tree.map(lambda x: x[0], prior)),
                           {**_transitions(jax.random.PRNGKey(4), 150, -1.0),
                            "reward": jnp.arange(150.0), "terminated": jnp.arange(150) % 3 == 0})
    batch, is_prior = replay.sample_symmetric(replay.from_arrays(prior), online, jax.random.PRNGKey(5), 32)
    # a termination classifier with p_end = sigmoid(1) = 0.73 everywhere: the soft label must be 0.73, not 1
    labeler = _labeler_with_termination_bias(cfg, 1.0)
    hp = explore.HParams(rnd_coef=2.0, min_reward=-1.0)
    out, metrics = explore.relabel(labeler, batch, is_prior, hp, cfg)
    bonus = explore.rnd_bonus(labeler, batch["obs"], batch["action"], cfg)
    on, pr = ~np.asarray(is_prior), np.asarray(is_prior)
    assert pr.sum() == on.sum() == 16
    expected_online = batch["reward"] + (2.0 * bonus if online_bonus else 0.0)
    np.testing.assert_allclose(out["reward"][on], expected_online[on], rtol=1e-6)
    np.testing.assert_array_equal(out["terminated"][on], batch["terminated"][on])
    assert np.any(np.asarray(batch["terminated"])[on])  # the online half has real terminals to keep
    r_hat = explore.predicted_reward(labeler, batch["obs"], batch["action"], cfg)
    expected_prior = {"optimistic": r_hat + 2.0 * bonus, "predicted": r_hat, "min": -1.0 + 2.0 * bonus,
                      "zero": jnp.zeros(32)}[label]
    np.testing.assert_allclose(out["reward"][pr], expected_prior[pr], rtol=1e-5, atol=1e-6)
    assert not np.any(np.asarray(out["reward"])[pr] == 123.0)  # every prior placeholder was replaced
    soft = 1.0 / (1.0 + np.exp(-1.0))
    np.testing.assert_allclose(out["terminated"][pr], soft if label != "zero" else 0.0, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["prior_terminated"]), soft if label != "zero" else 0.0, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["online_reward"]), np.mean(np.asarray(expected_online)[on]), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["rnd_bonus_prior"]), np.mean(np.asarray(bonus)[pr]), rtol=1e-5)
    for k in ("obs", "action", "next_obs"):
        np.testing.assert_array_equal(out[k], batch[k])


def test_skill_transitions_bootstrap_with_gamma_to_the_k():
    """With skill_horizon H, a row of k low-level steps bootstraps in sac's target with gamma^(k/H) (gamma =
    hp.discount per full skill); k = H is unchanged, and a terminal row stays terminal."""
    cfg = explore.Config(agent=AGENT, prior_label="zero", labeler_hidden_sizes=(8,), rnd_hidden_sizes=(8,),
                         rnd_features=4, skill_horizon=4)
    batch = {**_transitions(KEY, 4, 0.0), "env_steps": jnp.array([4, 2, 1, 3]),
             "terminated": jnp.array([False, False, False, True])}
    hp = explore.HParams(discount=0.9)
    out, _ = explore.relabel(explore.init_labeler(KEY, cfg, OBS, ACT), batch, jnp.zeros(4, bool), hp, cfg)
    bootstrap = np.asarray(sac.bootstrap_discount(out, hp)) * (1.0 - np.asarray(out["terminated"]))
    np.testing.assert_allclose(bootstrap, [0.9, 0.9 ** 0.5, 0.9 ** 0.25, 0.0], rtol=1e-6, atol=1e-7)


def test_config_validation():
    with pytest.raises(ValueError, match="prior_label"):
        explore.Config(prior_label="optimism")
    with pytest.raises(ValueError, match="labeler_updates_per_step"):
        explore.Config(agent=AGENT, labeler_updates_per_step=3)  # G = 2
    with pytest.raises(ValueError, match="rnd_hidden_sizes"):
        explore.Config(rnd_hidden_sizes=())
    with pytest.raises(ValueError, match="env_steps"):
        explore.make_train(explore.Config(agent=AGENT, skill_horizon=4), envs.make("pointmaze-umaze-jax"))


def test_first_success_step_marks_the_first_goal_reached_online():
    """U-maze with random tasks: uniform exploration reaches goals quickly. `first_success_step` is set once, in
    the chunk whose completed episodes first include a success, and never changes afterwards."""
    env = envs.make("pointmaze-umaze-jax", task="random")
    data = maze_data.diverse_dataset("umaze", 2000, seed=0, num_envs=8, chunk_steps=100)
    prior = jax.tree.map(jnp.asarray, explore.unlabeled_prior(data["observations"], data["actions"],
                                                              data["next_observations"]))
    cfg = explore.Config(agent=sac.Config(**{**AGENT.__dict__, "start_steps": 10_000}),
                         labeler_hidden_sizes=(32, 32), rnd_hidden_sizes=(32, 32), rnd_features=16)
    init, chunk, evaluate = explore.make_train(cfg, env)
    chunk = jax.jit(chunk)
    hp = explore.HParams()
    carry = init(KEY, hp)
    first, history = -1, []
    for _ in range(12):
        carry, m = chunk(carry, hp, prior)
        history.append((int(m["env_steps"]), int(m["first_success_step"]), float(m["episode_success"])))
    steps_per_chunk = AGENT.num_envs * AGENT.chunk_steps
    found = [i for i, (_, f, _) in enumerate(history) if f >= 0]
    assert found, f"no goal reached in {history[-1][0]} uniform-random steps: {history}"
    i = found[0]
    first = history[i][1]
    assert history[i][0] - steps_per_chunk < first <= history[i][0]
    assert history[i][2] > 0 and all(s == 0 for _, _, s in history[:i])
    assert all(f == first for _, f, _ in history[i:])
    assert np.isfinite(float(evaluate(carry, KEY, hp)["eval_return"]))


def _run_cli(*args, cwd):
    return subprocess.run([sys.executable, "experiments/explore.py", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_cli_runs_and_logs_the_exploration_metrics(tmp_path):
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    r = _run_cli("--env", "pointmaze-umaze-jax", "--method", "online-rnd", "--total-steps", "400",
                 "--agent.num-envs", "4", "--agent.chunk-steps", "50", "--agent.batch-size", "32",
                 "--agent.hidden-sizes", "16", "16", "--labeler-hidden-sizes", "16", "--rnd-hidden-sizes", "16",
                 "--rnd-features", "8", "--agent.start-steps", "100",
                 "--agent.buffer-capacity", "1000", "--agent.num-critics", "2", "--run-dir", str(out),
                 "--no-progress", "--no-tensorboard", cwd=repo)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"first_success_step", "rnd_bonus_online", "rnd_model_loss", "prior_reward"} <= set(rows[-1])
    bad = _run_cli("--env", "inverted_pendulum", "--method", "explore", "--run-dir", str(tmp_path / "bad"),
                   cwd=repo)
    assert bad.returncode == 2 and "Prior data" in bad.stderr and "dataset" in bad.stderr
    assert not (tmp_path / "bad").exists()


# ---- the labeller and the labels inside train_chunk ---------------------------------------------------------

def _train(cfg, env, prior, chunks, hp, key=KEY):
    init, chunk, _ = explore.make_train(cfg, env)
    chunk = jax.jit(chunk)
    carry, history = init(key, hp), []
    for _ in range(chunks):
        carry, m = chunk(carry, hp, prior)
        history.append(jax.device_get(m))
    return carry, history


def _prior(n=1000):
    """Synthetic reward-free prior rows in the maze's observation layout (their content is not under test)."""
    obs, action = _maze_scale_inputs(jax.random.PRNGKey(7), n)
    return {"obs": obs, "action": action, "next_obs": obs, "reward": jnp.zeros(n), "terminated": jnp.zeros(n, bool),
            "truncated": jnp.zeros(n, bool)}


SMALL = sac.Config(num_envs=4, chunk_steps=25, batch_size=32, buffer_capacity=4096, hidden_sizes=(16, 16),
                   num_critics=2, num_target_critics=1, critic_layernorm=True, updates_per_step=2, start_steps=100,
                   eval_episodes=2, backup_entropy=False)


def test_reward_model_learns_the_online_rewards_inside_train_chunk():
    """Dense reward (minus the distance to the goal, in [-3.5, 0]) on the u-maze: after a few chunks the reward
    model, trained only on the online halves of the minibatches, predicts the buffer's rewards far better than
    their variance, and its loss has fallen. Fed the prior half (placeholders, reward 0) it would predict ~0 and
    its error would be E[r^2] >> Var[r]."""
    env = envs.make("pointmaze-umaze-jax", reward_type="dense", task="random")
    cfg = explore.Config(agent=SMALL, labeler_hidden_sizes=(32, 32), rnd_hidden_sizes=(16,), rnd_features=8)
    hp = explore.HParams(labeler_lr=3e-3)
    carry, history = _train(cfg, env, _prior(), 8, hp)
    losses = [float(m["reward_model_loss"]) for m in history if m["num_updates"] > 0]
    assert losses[-1] < 0.3 * losses[0], losses
    data = jax.tree.map(lambda x: x[:int(carry.buffer.size)], carry.buffer.data)
    r = np.asarray(data["reward"])
    predicted = np.asarray(explore.predicted_reward(carry.labeler, data["obs"], data["action"], cfg))
    mse = float(np.mean((predicted - r) ** 2))
    assert r.var() > 0.1 and mse < 0.2 * r.var() < 0.2 * np.mean(r ** 2), (mse, r.var(), np.mean(r ** 2))
    assert history[-1]["num_updates"] > 0 and float(history[-1]["rnd_model_loss"]) > 0


@pytest.mark.parametrize("label,online_bonus", [("min", True), ("zero", False)])
def test_labels_and_online_bonus_in_training(label, online_bonus):
    """The large maze from S: no goal is reached in 500 steps, so every online reward is 0 and the chunk metrics
    pin the labels used in training: prior rows get r_min + beta b ("min") or exactly 0, never terminal ("zero");
    online rows get beta b with `online_bonus`, else their reward 0."""
    env = envs.make("pointmaze-large-jax")
    cfg = explore.Config(agent=SMALL, prior_label=label, online_bonus=online_bonus, labeler_hidden_sizes=(16,),
                         rnd_hidden_sizes=(16,), rnd_features=8)
    hp = explore.HParams(rnd_coef=3.0, min_reward=-0.5)
    _, history = _train(cfg, env, _prior(), 5, hp)
    m = history[-1]
    assert m["num_updates"] > 0 and m["first_success_step"] == -1
    bonus_prior, bonus_online = float(m["rnd_bonus_prior"]), float(m["rnd_bonus_online"])
    assert bonus_prior > 0 and bonus_online > 0
    if label == "min":
        np.testing.assert_allclose(float(m["prior_reward"]), -0.5 + 3.0 * bonus_prior, rtol=1e-4)
        assert 0.0 < float(m["prior_terminated"]) < 1.0  # the soft label of the (untrained: no terminal) classifier
    else:
        assert float(m["prior_reward"]) == 0.0 and float(m["prior_terminated"]) == 0.0
    np.testing.assert_allclose(float(m["online_reward"]), 3.0 * bonus_online if online_bonus else 0.0, rtol=1e-4)


# ---- maze prior data for the exploration experiments ------------------------------------------------------

def test_exploration_task_adds_the_layout_goal_unless_given():
    assert maze_data.exploration_task("pointmaze-large-jax", {}) == {"goal_cell": (7, 4)}
    assert maze_data.exploration_task("pointmaze-large", {"task": "fixed"}) == {"task": "fixed", "goal_cell": (7, 4)}
    assert maze_data.exploration_task("pointmaze-large-jax", {"goal_cell": "7,9"}) == {"goal_cell": "7,9"}
    assert maze_data.exploration_task("pointmaze-umaze-jax", {"a": 1}) == {"a": 1}
    assert maze_data.exploration_task("hopper", {}) == {}


def test_retarget_and_load_reward_free(tmp_path):
    from envs import datasets
    data = maze_data.diverse_dataset("umaze", 400, seed=0, num_envs=4, chunk_steps=100)
    assert data["terminals"].any() and data["timeouts"].any()
    env = envs.make("pointmaze-umaze-jax", goal_cell=(3, 3))
    original = {k: v.copy() for k, v in data.items()}
    out = maze_data.retarget(data, env)
    for k in ("observations", "next_observations"):
        np.testing.assert_array_equal(out[k][:, 4:6], np.broadcast_to([3.0, 3.0], (400, 2)))  # (x, y) of (3, 3)
        np.testing.assert_array_equal(out[k][:, :4], data[k][:, :4])
        np.testing.assert_array_equal(data[k], original[k])  # the input is not modified
    np.testing.assert_array_equal(np.asarray(data["observations"][:, 4:6]), 1.0)  # generated for G = (1, 1)
    assert maze_data.retarget(data, envs.make("pointmaze-umaze-jax", task="random")) is data
    assert maze_data.retarget(data, envs.make("inverted_pendulum")) is data

    path = tmp_path / "prior.hdf5"
    datasets.save_dataset(path, data)
    loaded = maze_data.load_reward_free("pointmaze-umaze-jax", env, 400, str(path))
    assert "rewards" not in loaded
    np.testing.assert_array_equal(loaded["terminals"], data["terminals"] | data["timeouts"])
    np.testing.assert_array_equal(loaded["observations"], out["observations"])
    np.testing.assert_array_equal(loaded["actions"], data["actions"])
    with pytest.raises(datasets.DatasetError):
        maze_data.load_reward_free("pointmaze-umaze-jax", envs.make("inverted_pendulum"), 400, str(path))
    with pytest.raises(ValueError, match="explicit dataset path"):
        maze_data.load_reward_free("hopper", env, 400)
