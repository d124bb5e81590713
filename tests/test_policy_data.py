"""Policy rollouts as D4RL datasets: the collector (`envs.policy_data`), SAC checkpoints as policies
(`experiments.sac_checkpoints`), mixtures and the `locomotion` CLI."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import envs
from envs import policy_data
from envs.datasets import KEYS, episode_bounds, load_dataset, load_metadata, validate_dataset
from experiments import runner, sac_checkpoints
from experiments import sac as sac_experiment


# tests/test_runner.py's tiny SAC (4 envs x 10 steps per chunk), on the dense-reward maze so that returns differ.
TINY = ["--env", "pointmaze-umaze-jax", "--agent.num-envs", "4", "--agent.chunk-steps", "10",
        "--agent.batch-size", "32", "--agent.start-steps", "40", "--agent.hidden-sizes", "32", "32",
        "--agent.buffer-capacity", "2000", "--agent.eval-episodes", "2", "--no-progress", "--no-tensorboard",
        "--env-options", "reward_type=dense"]


def check_chaining(d):
    """Inside episodes next_observations[i] == observations[i + 1]; across an end, the next one is a reset."""
    ends = (d["terminals"] | d["timeouts"])[:-1]
    np.testing.assert_array_equal(d["next_observations"][:-1][~ends], d["observations"][1:][~ends])
    assert not (d["terminals"] & d["timeouts"]).any()


def maze_env():
    # Dense reward = minus the distance from the SUCCESSOR position to the goal; success (a terminal) within 0.8.
    return envs.make("pointmaze-umaze-jax", task="random", reward_type="dense", success_radius=0.8, max_steps=20)


def test_pointmaze_random_rollouts_are_a_valid_dataset():
    env = maze_env()
    d = policy_data.collect(env, policy_data.uniform_random_policy(2), 500, num_envs=4, chunk_steps=30, seed=1)
    validate_dataset(d, observation_size=6, action_size=2)
    assert {k: v.shape[0] for k, v in d.items()} == {k: 500 for k in KEYS}
    check_chaining(d)
    dist = np.linalg.norm(d["next_observations"][:, :2] - d["next_observations"][:, 4:6], axis=1)
    np.testing.assert_allclose(d["rewards"], -dist, atol=1e-5)  # next_observations are the true successors
    np.testing.assert_array_equal(d["terminals"], dist < 0.8)  # terminals exactly where the env terminated
    assert 0 < d["terminals"].sum() < 100
    assert (np.abs(d["actions"]) <= 1).all() and d["actions"].std() > 0.5
    # Episodes: at most 20 steps; those not ended by a terminal last 20, except the cut at each stream's end
    # (4 streams of 125 steps: the last transition of each is a timeout).
    starts, ends = episode_bounds(d["terminals"], d["timeouts"])
    lengths = ends - starts
    assert lengths.max() <= 20
    assert (d["timeouts"] | d["terminals"])[[124, 249, 374, 499]].all()
    s = policy_data.summarize(d, max_episode_steps=20)
    assert s["transitions"] == 500 and s["episodes"] == len(starts) and s["terminals"] == d["terminals"].sum()
    assert s["complete_episodes"] >= s["episodes"] - 4
    # Chunking does not change the data; the seed does.
    again = policy_data.collect(env, policy_data.uniform_random_policy(2), 500, num_envs=4, chunk_steps=125, seed=1)
    for k in KEYS:
        np.testing.assert_array_equal(d[k], again[k], err_msg=k)
    other = policy_data.collect(env, policy_data.uniform_random_policy(2), 500, num_envs=4, chunk_steps=125, seed=2)
    assert not np.array_equal(d["actions"], other["actions"])


def test_inverted_pendulum_rollouts_terminate_where_the_env_does():
    env = envs.make("inverted_pendulum", max_steps=30)
    d = policy_data.collect(env, policy_data.uniform_random_policy(env.action_size), 240, num_envs=4,
                            chunk_steps=60)
    validate_dataset(d, observation_size=env.observation_size, action_size=env.action_size)
    check_chaining(d)
    # brax's inverted pendulum is done when the pole angle (obs[1]) of the successor leaves [-0.2, 0.2]: with
    # random actions it falls within a few steps, so terminals are many, and every one is where the angle is out.
    np.testing.assert_array_equal(d["terminals"], np.abs(d["next_observations"][:, 1]) > 0.2)
    assert d["terminals"].sum() >= 10
    # After a terminal the next episode starts upright (a fresh reset, not the fallen successor).
    after = np.flatnonzero(d["terminals"][:-1]) + 1
    assert (np.abs(d["observations"][after, 1]) < 0.05).all()
    np.testing.assert_array_equal(d["rewards"], 1.0)


def test_mixture_keeps_parts_and_episodes():
    parts = [policy_data.collect(maze_env(), policy_data.uniform_random_policy(2), n, num_envs=4, chunk_steps=30,
                                 seed=i) for i, n in enumerate((120, 240, 120))]  # the compilation of the test above
    mix = policy_data.mixture(parts)
    validate_dataset(mix)
    assert len(mix["rewards"]) == 480
    for k in KEYS:
        np.testing.assert_array_equal(mix[k][120:360], parts[1][k], err_msg=k)
    bad = {**parts[0], "observations": parts[0]["observations"][:, :4],
           "next_observations": parts[0]["next_observations"][:, :4]}
    with pytest.raises(ValueError, match="same env"):
        policy_data.mixture([parts[1], bad])


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    """A tiny SAC run with two kept checkpoints: chunk 2 (halfway) and chunk 4 (final)."""
    run_dir = tmp_path_factory.mktemp("sac") / "run"
    runner.main("sac", sac_experiment.Args, sac_experiment.build,
                argv=TINY + ["--total-steps", "160", "--checkpoint-every", "2", "--run-dir", str(run_dir)])
    return run_dir


def test_load_sac_agent_is_the_trained_agent(sac_run):
    from algos import sac
    assert sac_checkpoints.checkpoint_steps(sac_run) == [2, 4]
    agent, cfg, env_name, env_options = sac_checkpoints.load_sac_agent(sac_run)
    assert env_name == "pointmaze-umaze-jax" and env_options == {"reward_type": "dense"}
    assert cfg.hidden_sizes == (32, 32)
    # The final evaluation the run logged is reproduced by the loaded agent with the runner's evaluation key.
    args, settings, saved = runner.load_run_args(sac_run, sac_experiment.Args)
    r = runner.Runner(sac_experiment.build(args), runner.make_population(args.hp, settings, 0, 1))
    env = envs.make(env_name, **env_options)
    logged = [json.loads(line) for line in (sac_run / "eval.jsonl").read_text().splitlines()][-1]
    ev = sac.evaluate_policy(env, agent, r.eval_keys(4)[0], cfg)
    np.testing.assert_allclose(float(ev["eval_return"]), logged["eval_return"], rtol=1e-5)
    # Deterministic actions equal those of the whole carry restored by the runner's own restore.
    step, carry = runner.restore_checkpoint(sac_run / "checkpoints", r.abstract_carry())
    assert step == 4
    obs = jax.random.uniform(jax.random.PRNGKey(0), (16, env.observation_size), minval=-2, maxval=2)
    key = jax.random.PRNGKey(1)
    member0 = jax.tree.map(lambda x: x[0], carry.agent)
    np.testing.assert_array_equal(sac.act(agent, obs, key, True, cfg), sac.act(member0, obs, key, True, cfg))
    policy = sac_checkpoints.sac_policy(agent, cfg, deterministic=True)
    np.testing.assert_allclose(jax.vmap(policy)(obs, jax.random.split(key, 16)), sac.act(agent, obs, key, True, cfg),
                               atol=1e-6)
    # The halfway checkpoint is another (earlier) agent; a step the run did not keep is a clear error.
    medium, *_ = sac_checkpoints.load_sac_agent(sac_run, step=2)
    assert not np.allclose(sac.act(medium, obs, key, True, cfg), sac.act(agent, obs, key, True, cfg))
    with pytest.raises(runner.UserError, match=r"no checkpoint at step 3.*\[2, 4\]"):
        sac_checkpoints.load_sac_agent(sac_run, step=3)
    with pytest.raises(runner.UserError, match="member"):
        sac_checkpoints.load_sac_agent(sac_run, member=1)


def test_locomotion_cli_writes_expert_random_and_mixture(sac_run, tmp_path, capsys):
    from experiments import make_dataset
    common = ["locomotion", "--sac-run", str(sac_run), "--num-envs", "4", "--no-progress"]
    files = {}
    for kind, n in (("expert", 100), ("random", 100), ("mixture", 300)):  # 25 steps per stream: one compilation
        files[kind] = tmp_path / f"{kind}.hdf5"
        make_dataset.main(common + ["--kind", kind, "--num-transitions", str(n), "--out", str(files[kind])])
        out = capsys.readouterr().out
        assert f"{n} transitions" in out and "mean episode return" in out, out
    data = {k: load_dataset(f, 6, 2) for k, f in files.items()}
    meta = {k: load_metadata(f) for k, f in files.items()}
    assert meta["expert"]["parts"]["expert"]["checkpoint_step"] == 4 and meta["expert"]["env"] == "pointmaze-umaze-jax"
    assert meta["mixture"]["parts"]["medium"]["checkpoint_step"] == 2  # the halfway checkpoint by default
    assert {k: p["transitions"] for k, p in meta["mixture"]["parts"].items()} == {"random": 100, "medium": 100,
                                                                              "expert": 100}
    sizes = make_dataset._part_sizes(make_dataset.LocomotionConfig(kind="mixture", num_transitions=301))
    assert sizes == {"random": 101, "medium": 100, "expert": 100}
    # The mixture holds each part's transitions, in order: random, medium, expert (seeds seed, seed+1, seed+2).
    mix = data["mixture"]
    assert len(mix["rewards"]) == 300
    for k in KEYS:  # the random part is the random file: same seed, size and streams
        np.testing.assert_array_equal(mix[k][:100], data["random"][k], err_msg=k)
    agent, cfg, env_name, env_options = sac_checkpoints.load_sac_agent(sac_run)
    expert_again = policy_data.collect(envs.make(env_name, **env_options), sac_checkpoints.sac_policy(agent, cfg), 100,
                                       num_envs=4, seed=2)
    for k in KEYS:
        np.testing.assert_allclose(mix[k][200:], expert_again[k], atol=1e-6, err_msg=k)
    assert not np.allclose(mix["actions"][100:200], data["random"]["actions"])
    # Never overwritten without --overwrite: exit 2, one line, the file unchanged.
    before = files["random"].read_bytes()
    with pytest.raises(SystemExit) as e:
        make_dataset.main(common + ["--kind", "random", "--num-transitions", "50", "--out", str(files["random"])])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert files["random"].read_bytes() == before
    make_dataset.main(common + ["--kind", "random", "--num-transitions", "50", "--out", str(files["random"]),
                                "--overwrite"])
    assert len(load_dataset(files["random"])["rewards"]) == 50


@pytest.mark.parametrize("argv, expected", [
    (["--sac-run", "/nonexistent/run", "--kind", "expert"], "/nonexistent/run is not a run directory"),
    (["--kind", "medium"], "--kind medium needs --sac-run"),
    (["--sac-run", "RUN", "--kind", "medium", "--medium-step", "3"], "--medium-step 3"),
    (["--sac-run", "RUN", "--kind", "expert", "--member", "5"], "--member 5 is out of range"),
    (["--sac-run", "RUN", "--kind", "mixture", "--num-transitions", "2"], "at least 3"),
    (["--sac-run", "OTHER", "--kind", "expert"], "expected a run of experiments/sac.py"),
])
def test_locomotion_cli_errors(argv, expected, sac_run, tmp_path, capsys):
    from experiments import make_dataset
    other = tmp_path / "other"  # a run directory of another experiment
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"experiment": "wsrl", "args": {}, "sweep": {}, "members": []}))
    argv = [{"RUN": str(sac_run), "OTHER": str(other)}.get(a, a) for a in argv]
    out = tmp_path / "d.hdf5"
    with pytest.raises(SystemExit) as e:
        make_dataset.main(["locomotion", *argv, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_make_dataset_help_explains_both_subcommands(capsys):
    from experiments import make_dataset
    with pytest.raises(SystemExit) as e:
        make_dataset.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for fragment in ("maze", "locomotion", "--checkpoint-every", "medium", "expert", "mixture"):
        assert fragment in text, fragment
