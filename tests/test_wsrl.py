"""Cal-QL and WSRL: the floor, conservatism, warmup, handoff, and that offline data never enters the buffer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from algos import calql, sac, wsrl
from envs import datasets, maze_data
from experiments import runner


KEY = jax.random.PRNGKey(0)
AGENT = sac.Config(num_envs=4, chunk_steps=5, batch_size=16, buffer_capacity=512, hidden_sizes=(32, 32),
                   num_critics=2, num_target_critics=2, critic_layernorm=True, updates_per_step=2,
                   backup_entropy=False, eval_episodes=2)
CQL = calql.Config(num_cql_actions=3, updates_per_chunk=10)


def test_calql_floor_hand_computed():
    """One critic, one state, one action per candidate set: the numbers can be checked by hand."""
    q_data = jnp.array([[1.0]])
    q_uniform, q_pi, q_next = jnp.array([[[0.0]]]), jnp.array([[[-5.0]]]), jnp.array([[[2.0]]])
    log_pi, log_pi_next, mc = jnp.array([[0.5]]), jnp.array([[-0.5]]), jnp.array([-1.0])
    args = (q_data, q_uniform, q_pi, q_next, log_pi, log_pi_next, mc, 1, 1.0)
    gap, floored = calql.conservative_penalty(*args, use_calql=True, importance_sample=True)
    # Q(s, a_pi) = -5 is raised to the MC floor -1; uniform density on [-1, 1] is 0.5.
    expected = math.log(math.exp(0.0 - math.log(0.5)) + math.exp(2.0 + 0.5) + math.exp(-1.0 - 0.5)) - 1.0
    np.testing.assert_allclose(gap[0, 0], expected, rtol=1e-6)
    assert float(floored) == 0.5  # one of the two policy candidates was below the floor
    gap_cql, floored_cql = calql.conservative_penalty(*args, use_calql=False, importance_sample=True)
    expected_cql = math.log(2.0 + math.exp(2.5) + math.exp(-5.5)) - 1.0
    np.testing.assert_allclose(gap_cql[0, 0], expected_cql, rtol=1e-6)
    assert float(floored_cql) == 0.0
    # without importance sampling the data action joins the candidates and no densities are subtracted
    gap_plain, _ = calql.conservative_penalty(*args, use_calql=True, importance_sample=False)
    np.testing.assert_allclose(gap_plain[0, 0], math.log(1 + math.e + math.exp(2) + math.exp(-1)) - 1.0,
                               rtol=1e-6)


@pytest.fixture(scope="module")
def maze():
    env = envs.make("pointmaze-umaze-jax")
    data = maze_data.diverse_dataset("umaze", 4000, seed=0, num_envs=8, chunk_steps=100)
    return env, data, jax.tree.map(jnp.asarray, wsrl.offline_transitions(data, 0.99))


def test_offline_transitions_mc_parts_combine_to_scaled_returns(maze):
    _, data, offline = maze
    direct = datasets.monte_carlo_returns(data["rewards"], data["terminals"], data["timeouts"], 0.99,
                                          reward_scale=10.0, reward_bias=-5.0)
    combined = 10.0 * np.asarray(offline["mc_return_raw"]) - 5.0 * np.asarray(offline["mc_return_unit"])
    np.testing.assert_allclose(combined, direct, rtol=1e-4, atol=1e-3)


def test_calql_pretraining_makes_data_actions_preferred(maze):
    env, _, offline = maze
    init, chunk, _ = calql.make_pretrain(CQL, AGENT, env)
    hp = calql.HParams(reward_scale=1.0, reward_bias=-1.0)
    carry = jax.jit(init)(KEY, hp)
    chunk = jax.jit(chunk)
    for _ in range(20):
        carry, metrics = chunk(carry, hp, offline)
    obs, action = offline["obs"][:512], offline["action"][:512]
    q_data = sac.q_values(carry.agent, obs, action, AGENT).mean()
    q_uniform = sac.q_values(carry.agent, obs, jax.random.uniform(KEY, action.shape, minval=-1, maxval=1),
                             AGENT).mean()
    assert int(carry.num_updates) == 200 and np.isfinite(float(metrics["critic_loss"]))
    assert float(q_data) > float(q_uniform) + 0.5, (float(q_data), float(q_uniform))


def _constant_actor(params, value):
    """An actor whose every action is `value` (+- 5e-5: mean head tanh(atanh(value)), log-std clipped to -10)."""
    p = jax.tree.map(jnp.asarray, params)
    head, log_std = p["params"]["mean"], p["params"]["log_std"]
    head["kernel"] = jnp.zeros_like(head["kernel"])
    head["bias"] = jnp.broadcast_to(jnp.arctanh(jnp.asarray(value, jnp.float32)), head["bias"].shape)
    log_std["kernel"], log_std["bias"] = jnp.zeros_like(log_std["kernel"]), jnp.full_like(log_std["bias"], -20.0)
    return p


def _pretrained_and_online(env, cfg: wsrl.Config, offline, pretrained_actor=None):
    """(pretrained carry, online carry after the handoff, jitted online chunk, hp). `pretrained_actor(params)`
    replaces the pretrained actor before the handoff."""
    pretrain, online, handoff = wsrl.make(cfg, env)
    hp = calql.HParams()
    pre_carry = jax.jit(pretrain[0])(KEY, hp)
    pre_carry, _ = jax.jit(pretrain[1])(pre_carry, hp, offline)  # a few real updates: non-trivial Adam state
    if pretrained_actor is not None:
        pre_carry = pre_carry.replace(agent=pre_carry.agent.replace(
            actor_params=pretrained_actor(pre_carry.agent.actor_params)))
    online_carry = jax.jit(handoff)(jax.jit(online[0])(jax.random.PRNGKey(1), hp), pre_carry)
    return pre_carry, online_carry, jax.jit(online[1]), hp


def test_handoff_keeps_the_whole_agent_and_starts_with_an_empty_buffer(maze):
    env, _, offline = maze
    pre_carry, online_carry, _, _ = _pretrained_and_online(env, wsrl.Config(agent=AGENT, cql=CQL), offline)
    jax.tree.map(np.testing.assert_array_equal, online_carry.agent, pre_carry.agent)
    adam_count = jax.tree.leaves(online_carry.agent.critic_opt_state)[0]
    assert int(adam_count) == CQL.updates_per_chunk  # the optimiser state continues, it is not reset
    assert int(online_carry.buffer.size) == 0 and int(online_carry.env_steps) == 0


def test_warmup_inserts_exactly_k_transitions_of_the_pretrained_policy_with_zero_gradient_steps(maze):
    """The pretrained actor is made constant, (0.6, -0.3): every warmup transition carries that action (uniform
    random warmup actions, or a fresh actor's, would not), and no gradient step is taken."""
    env, _, offline = maze
    k = 2 * AGENT.num_envs * AGENT.chunk_steps  # two chunks of warmup
    constant = np.array([0.6, -0.3], np.float32)
    pre_carry, carry, chunk, hp = _pretrained_and_online(env, wsrl.Config(agent=AGENT, cql=CQL, warmup_steps=k),
                                                         offline, lambda p: _constant_actor(p, constant))
    for _ in range(2):
        carry, metrics = chunk(carry, hp)
        assert float(metrics["updates_in_chunk"]) == 0
    assert int(carry.buffer.size) == k and int(carry.env_steps) == k
    np.testing.assert_allclose(carry.buffer.data["action"][:k], np.broadcast_to(constant, (k, 2)), atol=1e-3)
    jax.tree.map(np.testing.assert_array_equal, carry.agent, pre_carry.agent)  # not one gradient step
    carry, metrics = chunk(carry, hp)  # the first chunk after warmup updates at every env step
    assert float(metrics["updates_in_chunk"]) == AGENT.chunk_steps
    assert int(carry.agent.step) == int(pre_carry.agent.step) + AGENT.chunk_steps * AGENT.updates_per_step


def test_wsrl_validates_warmup_multiple_of_num_envs():
    with pytest.raises(ValueError, match="multiple of agent.num_envs"):
        wsrl.Config(agent=AGENT, warmup_steps=AGENT.num_envs + 1)


@pytest.mark.parametrize("retain_offline", [False, True])
def test_no_offline_transition_ever_enters_the_online_buffer(maze, retain_offline):
    env, _, offline = maze
    marked = {**offline, "obs": offline["obs"].at[:, 4:].set(1000.0),  # goal coordinates no env state can have
              "next_obs": offline["next_obs"].at[:, 4:].set(1000.0),
              "reward": jnp.full_like(offline["reward"], 1000.0)}  # rewards no maze transition has (0 or 1)
    cfg = wsrl.Config(agent=AGENT, cql=CQL, warmup_steps=AGENT.num_envs, retain_offline=retain_offline)
    _, carry, chunk, hp = _pretrained_and_online(env, cfg, marked)
    prior = {k: marked[k] for k in wsrl.ONLINE_KEYS} if retain_offline else None
    for _ in range(3):
        carry, metrics = chunk(carry, hp, prior) if prior is not None else chunk(carry, hp)
    size = int(carry.buffer.size)
    assert size == 3 * AGENT.num_envs * AGENT.chunk_steps and float(metrics["updates_in_chunk"]) > 0
    stored = np.asarray(carry.buffer.data["obs"][:size])
    assert not np.any(stored == 1000.0) and not np.any(np.asarray(carry.buffer.data["next_obs"][:size]) == 1000.0)
    assert float(np.max(np.asarray(carry.buffer.data["reward"][:size]))) <= 1.0
    # ... while the retained prior IS sampled: half of every minibatch has reward 1000, which lifts the critic
    # targets far above anything the online rewards (0 or 1) and the pretrained critic give.
    target = float(metrics["target_q_mean"])
    assert (target > 100.0) if retain_offline else (abs(target) < 100.0), target


def _tiny_cli(tmp_path, maze):
    _, data, _ = maze
    path = tmp_path / "umaze.npz"
    datasets.save_dataset(path, data)
    return ["--env", "pointmaze-umaze-jax", "--dataset", str(path), "--pretrain-steps", "20",
            "--cql.updates-per-chunk", "10", "--cql.num-cql-actions", "2", "--total-steps", "80",
            "--agent.num-envs", "4", "--agent.chunk-steps", "5", "--agent.batch-size", "16",
            "--agent.hidden-sizes", "16", "16", "--agent.num-critics", "2", "--agent.buffer-capacity", "256",
            "--agent.eval-episodes", "2", "--warmup-steps", "20", "--eval-every", "2", "--no-progress",
            "--no-tensorboard"]


def _final_checkpoint(ckpt_dir: Path) -> tuple[int, dict]:
    """(step, carry as a nested dict of numpy arrays) of the newest checkpoint, read without a target carry."""
    manager = runner._checkpoint_manager(ckpt_dir)
    step = manager.latest_step()
    return step, jax.tree.map(np.asarray, manager.restore(step))


def _same_tree(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, maze):
    """The tiny WSRL experiment, uninterrupted: 2 pretraining chunks, then 4 online chunks (warmup = chunk 1)."""
    from experiments import wsrl as experiment
    tmp = tmp_path_factory.mktemp("wsrl")
    argv = _tiny_cli(tmp, maze)
    return argv, experiment.main(argv + ["--run-dir", str(tmp / "a")])


@pytest.mark.slow
def test_experiment_end_to_end_and_reuse_of_pretraining(tmp_path, first_run, capsys):
    from experiments import wsrl as experiment

    argv, first = first_run
    for phase in ("pretrain", "online"):
        assert (first / phase / "checkpoints").is_dir() and (first / phase / "curves.png").exists()
    online_chunks = [json.loads(line)["chunk"] for line in (first / "online" / "metrics.jsonl").read_text().splitlines()]
    assert online_chunks == [1, 2, 3, 4]
    # --pretrained: one online chunk, all of it warmup (20 transitions), so its checkpoint holds the agent exactly
    # as handed over: it must be the earlier run's final pretrained agent (not a fresh one, not its online agent).
    second = experiment.main(argv + ["--total-steps", "20", "--pretrained", str(first), "--run-dir",
                                     str(tmp_path / "b")])
    assert not (second / "pretrain").exists()  # pretraining reused, not redone
    assert "Using the pretraining of" in capsys.readouterr().err
    pre_step, pretrained = _final_checkpoint(first / "pretrain" / "checkpoints")
    step, online = _final_checkpoint(second / "online" / "checkpoints")
    assert (pre_step, step) == (2, 1)
    _same_tree(online["agent"], pretrained["agent"])
    assert int(online["buffer"]["size"][0]) == 20 and int(online["num_updates"][0]) == 0
    _, first_online = _final_checkpoint(first / "online" / "checkpoints")
    assert not np.array_equal(first_online["agent"]["critic_params"]["params"]["members"]["mlp"]["dense_out"]["kernel"],
                              online["agent"]["critic_params"]["params"]["members"]["mlp"]["dense_out"]["kernel"])
    with pytest.raises(SystemExit):
        experiment.main(argv + ["--sweep.discount", "0.9,0.99", "--run-dir", str(tmp_path / "c")])
    assert "--sweep.discount is not supported" in capsys.readouterr().err


class _Killed(Exception):
    """Stands in for a kill right after a checkpoint was saved."""


@pytest.mark.slow
@pytest.mark.parametrize("phase, chunk", [("pretrain", 1), ("online", 2)])
def test_resume_of_a_run_killed_in_either_phase_is_exact(tmp_path, first_run, monkeypatch, capsys, phase, chunk):
    """Killed after the checkpoint of pretraining chunk 1 (of 2) or online chunk 2 (of 4), then `--resume`: the
    killed phase continues from that chunk, a finished pretraining is not redone, and both phases end exactly as
    the uninterrupted run (checkpoints and logs)."""
    from experiments import wsrl as experiment

    argv, first = first_run
    save = runner.save_checkpoint

    def save_then_die(manager, step, carry):
        save(manager, step, carry)
        if step == chunk and Path(str(manager.directory)).parent.name == phase:
            raise _Killed

    monkeypatch.setattr(runner.loop, "save_checkpoint", save_then_die)
    run_dir = tmp_path / "killed"
    with pytest.raises(_Killed):
        experiment.main(argv + ["--checkpoint-every", "1", "--run-dir", str(run_dir)])
    monkeypatch.setattr(runner.loop, "save_checkpoint", save)
    capsys.readouterr()
    assert experiment.main(["--resume", str(run_dir)]) == run_dir
    err = capsys.readouterr().err
    if phase == "pretrain":
        assert f"pretrain: resuming {run_dir / 'pretrain'} from chunk 1/2" in err, err
    else:
        assert f"pretrain: resuming {run_dir / 'pretrain'} from chunk 2/2" in err, err  # restored, not redone
        assert f"online: resuming {run_dir / 'online'} from chunk 2/4" in err, err
    for sub in ("pretrain", "online"):
        step_a, a = _final_checkpoint(first / sub / "checkpoints")
        step_b, b = _final_checkpoint(run_dir / sub / "checkpoints")
        assert step_a == step_b
        _same_tree(a, b)
        for log in ("metrics.jsonl", "eval.jsonl"):
            assert (run_dir / sub / log).read_text() == (first / sub / log).read_text(), (sub, log)


def test_bad_dataset_gives_clear_error(tmp_path, maze, capsys):
    from experiments import wsrl as experiment

    bad = tmp_path / "bad.npz"
    _, data, _ = maze
    np.savez(bad, **{k: v for k, v in data.items() if k != "rewards"})
    argv = _tiny_cli(tmp_path, maze)
    argv[argv.index("--dataset") + 1] = str(bad)
    with pytest.raises(SystemExit) as e:
        experiment.main(argv + ["--run-dir", str(tmp_path / "r")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "rewards" in err and str(bad) in err
    assert not (tmp_path / "r").exists()  # nothing written for a run that could not start
