"""algos/rldg.py (the generalist's fine-tuning) and experiments/rldg.py (the pipeline): windows, packing, learning,
adapters, evaluation counting, the data checks, and the pipeline end to end on a tiny budget."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algos import rldg
from envs.core import Env, State, TimeLimit
from nets import transformer as tf
from nets.lora_switch import AdapterConfig


OBS, ACT, N, L = 3, 2, 6, 9


def numbered_sources(num_sources=2):
    """obs[s, i, t] = (1000 s + 100 i + t) in every column, actions = -(same), lengths 3..8, tasks alternate."""
    out = []
    lengths = np.array([3, 8, 5, 6, 4, 7])
    for s in range(num_sources):
        code = 1000 * s + 100 * np.arange(N)[:, None] + np.arange(L)[None]
        mask = (np.arange(L)[None] < lengths[:, None]).astype(np.float32)
        out.append({"observations": np.repeat(code[..., None], OBS, -1).astype(np.float32) * mask[..., None],
                    "actions": -np.repeat(code[..., None], ACT, -1).astype(np.float32) * mask[..., None],
                    "mask": mask, "task": np.array([0, 1, 0, 1, 0, 1])})
    return out, lengths


def test_windows_match_a_hand_gather():
    sources, lengths = numbered_sources()
    data = rldg.shared_data(rldg.pack_sources(sources, ["a", "b"]))
    window, horizon = 3, 4
    batch = jax.device_get(rldg.sample_windows(data, 1, 100, jax.random.key(0), 256, window, horizon))
    obs, act = batch["observations"]["obs"], batch["actions"]
    seen_t0 = False
    for b in range(256):
        code = int(obs[b, -1, 0])  # the window's last step is real
        s, i, t = code // 1000, (code % 1000) // 100, code % 100
        assert s == 1 and 0 <= t < lengths[i]
        assert batch["task"][b] == i % 2
        for k in range(window):
            step = t - (window - 1 - k)
            assert batch["timestep_valid"][b, k] == (step >= 0)
            if step >= 0:
                assert obs[b, k, 0] == 1000 + 100 * i + step
                for h in range(horizon):  # chunk a_step..a_step+H-1, the last action repeated past the end
                    assert act[b, k, h, 0] == -(1000 + 100 * i + min(step + h, lengths[i] - 1))
        seen_t0 |= t == 0
    assert seen_t0  # windows that start before the episode (invalid steps) were drawn


def test_source_and_episode_count_select_the_rows():
    sources, _ = numbered_sources(3)
    data = rldg.shared_data(rldg.pack_sources(sources, ["a", "b", "c"]))
    batch = jax.device_get(rldg.sample_windows(data, jnp.int32(2), jnp.float32(2), jax.random.key(1), 512, 1, 1))
    codes = batch["observations"]["obs"][:, -1, 0].astype(int)
    assert set(codes // 1000) == {2}
    # the first two episodes after interleaving by task are episode 0 (task 0) and episode 1 (task 1)
    assert set((codes % 1000) // 100) == {0, 1}


def test_interleave_makes_every_prefix_balanced():
    task = np.array([2, 2, 0, 1, 0, 2, 1, 1, 0])
    order = rldg.interleave_by_task(task)
    assert sorted(order) == list(range(len(task)))
    assert list(task[order][:3]) == [0, 1, 2] and list(task[order][3:6]) == [0, 1, 2]
    for ts in (0, 1, 2):  # stable within a task
        idx = order[task[order] == ts]
        assert list(idx) == sorted(idx)


def test_pack_sources_refuses_unequal_counts_and_missing_keys():
    sources, _ = numbered_sources()
    short = {k: v[:4] for k, v in sources[1].items()}
    with pytest.raises(ValueError, match="EQUAL episode counts"):
        rldg.pack_sources([sources[0], short], ["rl", "proxy"])
    with pytest.raises(ValueError, match="lacks 'task'"):
        rldg.pack_sources([sources[0], {k: v for k, v in sources[1].items() if k != "task"}], ["rl", "proxy"])


@dataclasses.dataclass(frozen=True)
class CountingEnv(Env):
    """Succeeds at step `succeed_at` whatever the action (never when 0); observation = the step count."""

    succeed_at: int = 3

    @property
    def observation_size(self):
        return OBS

    @property
    def action_size(self):
        return ACT

    def reset(self, key):
        z = jnp.zeros((), jnp.float32)
        return State(obs=jnp.zeros(OBS), reward=z, terminated=jnp.zeros((), bool), truncated=jnp.zeros((), bool),
                     info={"success": z, "t": jnp.zeros((), jnp.int32)}, physics=None, rng=key)

    def step(self, state, action):
        t = state.info["t"] + 1
        success = ((t == self.succeed_at) & (self.succeed_at > 0)).astype(jnp.float32)
        return state.replace(obs=jnp.full(OBS, t, jnp.float32), reward=success, terminated=success > 0,
                             info={"success": success, "t": t})


POLICY = tf.PolicyConfig(transformer=tf.PRESETS["tiny"], observations=(("obs", 1),), num_tasks=2, action_dim=ACT,
                         horizon=2)
CFG = rldg.Config(policy=POLICY, batch_size=32, updates_per_chunk=40, eval_episodes=3)


@pytest.fixture(scope="module")
def learned():
    """Full training on targets a = tanh(±obs / 500) (the sign is the task): (data, params after 0 and 6 chunks,
    the per-chunk losses, trace count)."""
    sources, _ = numbered_sources(1)
    src = sources[0]
    sign = np.where(src["task"] == 0, 1.0, -1.0)[:, None, None]
    src["actions"] = np.tanh(sign * src["observations"][..., :ACT] / 500.0) * src["mask"][..., None]
    data = rldg.pack_sources([src], ["one"])
    mean, std = rldg.observation_stats(data["observations"][0], data["mask"][0])
    envs_ = [(0, TimeLimit(CountingEnv(3), max_steps=5)), (1, TimeLimit(CountingEnv(0), max_steps=5))]
    init, chunk, evaluate = rldg.make_train(CFG, data, envs_, mean, std)
    traces = []
    jit_chunk = jax.jit(lambda c, h, s: (traces.append(1), chunk(c, h, s))[1])
    hp = rldg.HParams(lr=jnp.float32(3e-3))
    carry = jax.jit(init)(jax.random.key(0), hp)
    start, losses = carry, []
    for _ in range(6):
        carry, m = jit_chunk(carry, hp, rldg.shared_data(data))
        losses.append(float(m["action_loss"]))
    return data, (mean, std), envs_, start, carry, losses, len(traces), evaluate, hp


def test_full_training_fits_task_dependent_targets_and_compiles_once(learned):
    _, _, _, _, _, losses, traces, _, _ = learned
    assert traces == 1
    assert losses[-1] < 0.2 * losses[0], losses


def test_evaluation_counts_success_and_cycle_time(learned):
    _, _, _, _, carry, _, _, evaluate, hp = learned
    out = jax.device_get(jax.jit(evaluate)(carry, jax.random.key(3), hp))
    assert out["success_0"] == 1.0 and out["cycle_time_0"] == 3.0
    assert out["success_1"] == 0.0 and np.isnan(out["cycle_time_1"])
    assert out["eval_success"] == 0.5


def test_adapter_fine_tuning_starts_at_the_pretrained_function_and_freezes_the_backbone(learned):
    data, (mean, std), envs_, _, pretrained, _, _, _, hp = learned
    adapted = dataclasses.replace(CFG, fine_tune="adapters", policy=dataclasses.replace(
        POLICY, adapter=AdapterConfig(kind="switch", num_experts=2, top_k=1, rank=2)))
    init_params = jax.device_get(pretrained.params)  # a plain model's parameters: no adapter leaves
    init, chunk, _ = rldg.make_train(adapted, data, envs_, mean, std, init_params=init_params)
    carry = jax.jit(init)(jax.random.key(5), hp)
    window = POLICY.transformer.window
    x = {"obs": (jnp.asarray(data["observations"][0, :4, :window]) - mean) / std}
    task = jnp.asarray(data["task"][0, :4])
    plain = tf.GeneralistPolicy(POLICY).apply({"params": pretrained.params}, x, task)
    out, _ = tf.GeneralistPolicy(adapted.policy).apply({"params": carry.params}, x, task, mutable=["aux"])
    np.testing.assert_allclose(out, plain, atol=1e-5)
    after, _ = jax.jit(chunk)(carry, hp, rldg.shared_data(data))
    groups = tf.parameter_groups(carry.params)
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), carry.params, after.params)
    for g, m in zip(jax.tree.leaves(groups), jax.tree.leaves(moved)):
        if g == "backbone":
            assert not m
    assert any(m for g, m in zip(jax.tree.leaves(groups), jax.tree.leaves(moved)) if g == "adapter")


def test_config_errors():
    with pytest.raises(ValueError, match="fine_tune"):
        rldg.check_config(dataclasses.replace(CFG, fine_tune="lora"))
    with pytest.raises(ValueError, match="needs adapters"):
        rldg.check_config(dataclasses.replace(CFG, fine_tune="adapters"))
    with pytest.raises(ValueError, match="'obs'"):
        rldg.check_config(dataclasses.replace(CFG, policy=dataclasses.replace(POLICY, observations=(("x", 1),))))


# ---- the pipeline (experiments/rldg.py) ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`--preset tiny` on one seen task, no held-out task: every stage, a few steps each (nothing learns)."""
    from experiments import rldg as experiment

    root = tmp_path_factory.mktemp("rldg") / "run"
    experiment.main(["--preset", "tiny", "--heldout", "--run-dir", str(root), "--no-progress", "--no-tensorboard"])
    return root


@pytest.mark.slow
def test_pipeline_end_to_end_writes_every_stage_and_resumes_without_redoing_them(tiny_run, capsys):
    from benchmarks import rldg_compare
    from envs import episodes
    from experiments import rldg as experiment

    root = tiny_run
    assert len(list((root / "demos" / "square").glob("*.npz"))) == 4
    sets = {s: episodes.load_episodes(root / "data" / s / "square", only_success=False)
            for s in ("rl", "proxy", "rl_on_proxy", "proxy_on_rl")}
    assert all(len(d["mask"]) == 4 for d in sets.values())
    # the swap datasets keep the states of their source and carry the other policy's actions
    for swapped, source in (("rl_on_proxy", "proxy"), ("proxy_on_rl", "rl")):
        np.testing.assert_array_equal(sets[swapped]["observations"], sets[source]["observations"])
        assert not np.allclose(sets[swapped]["actions"], sets[source]["actions"])
    assert [m["task"] for m in sets["rl"]["metadata"]][:1] == ["square"]
    members = __import__("json").loads((root / "finetune-full" / "members.json").read_text())
    assert [m["arm"] for m in members] == [a["arm"] for a in experiment.finetune_arms(4)]
    assert (root / "finetune-adapters" / "eval.jsonl").exists() and (root / "pretrain" / "obs_stats.npz").exists()
    # the collecting policies' own success is recorded beside the data (tiny: failures kept, so any rate)
    records = __import__("json").loads((root / "data" / "collection.json").read_text())
    for source in ("rl", "proxy"):
        r = records[source]["square"]
        assert r["episodes_kept"] == 4 and r["episodes_tried"] >= 4 and 0.0 <= r["success_rate"] <= 1.0, r
    capsys.readouterr()
    experiment.main(["--resume", str(root)])
    err = capsys.readouterr().err
    for phase in ("expert square", "pretrain", "finetune full", "finetune adapters"):
        assert f"{phase}: resuming" in err, err
    assert "RLDG on insertion" in err and "RL expert (stochastic) on square while collecting" in err, err
    table = rldg_compare.main(["--run", str(root)]).read_text()
    assert "rl_on_proxy (full)" in table and "cells visited" in table and "proxy on square while collecting" in table
    assert "| arm | square | cycle square |" in table, table  # the per-task breakdown


def test_missing_or_mismatched_dataset_is_a_clear_error(tmp_path):
    from envs import episodes
    from experiments import rldg as experiment
    from experiments.runner import UserError

    with pytest.raises(UserError, match=r"missing dataset .*data/rl/square.*run the data stage"):
        experiment.load_source(tmp_path, "rl", ("square",), 100)
    path = tmp_path / "data" / "rl" / "square"
    meta = {"task": "cross", "success": True, "seed": 0, "control_rate": 20.0, "sensor_layout": [],
            "obs_layout": {}}
    episodes.save_episode(path / "e.npz", np.zeros((3, 12)), np.zeros((3, 4)), np.zeros(3), meta)
    with pytest.raises(UserError, match="episodes are of task 'cross', expected 'square'"):
        experiment.load_source(tmp_path, "rl", ("square",), 100)
    with pytest.raises(SystemExit):
        experiment.main(["--tasks", "hexagon", "--run-dir", str(tmp_path / "x")])
