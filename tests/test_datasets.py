"""Maze prior data (shortest paths, controller, generator) and D4RL-style datasets (files, validation, MC returns)."""

from __future__ import annotations

import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import maze_data
from envs.datasets import (KEYS, DatasetError, episode_bounds, load_dataset, load_metadata, monte_carlo_returns,
                           save_dataset)
from envs.pointmaze import MazeSpec



# ---- shortest paths and the controller ---------------------------------------------------------------------------
def test_bfs_path_lengths_umaze():
    spec = MazeSpec("umaze")
    next_cell, dist = maze_data.shortest_paths(spec)
    start, goal = tuple(spec.find("S")), tuple(spec.find("G"))  # (3, 1) and (1, 1)
    # From S the only way to G is along the bottom row, up the right column and back along the top row.
    expected = {(3, 1): 0, (3, 2): 1, (3, 3): 2, (2, 3): 3, (1, 3): 4, (1, 2): 5, (1, 1): 6}
    for cell, d in expected.items():
        assert dist[start + cell] == d, cell
        assert dist[cell + start] == d, cell  # symmetric
    assert tuple(next_cell[start + goal]) == (3, 2)
    assert tuple(next_cell[(2, 3) + goal]) == (1, 3)
    assert tuple(next_cell[goal + goal]) == goal
    assert dist[(0, 0) + goal] == -1  # a wall


def test_next_cell_table_follows_shortest_paths_large():
    spec = MazeSpec("large")
    next_cell, dist = maze_data.shortest_paths(spec)
    free = [tuple(c) for c in spec.free_cells]
    for s in free:
        for g in free:
            cell, moves = s, 0
            while cell != g:
                nxt = tuple(next_cell[cell + g])
                assert abs(nxt[0] - cell[0]) + abs(nxt[1] - cell[1]) == 1 and not spec.wall_grid[nxt]
                assert dist[nxt + g] == dist[cell + g] - 1
                cell, moves = nxt, moves + 1
            assert moves == dist[s + g] >= 0


@pytest.mark.parametrize("layout", ["umaze", "medium"])
def test_controller_reaches_goals_without_noise(layout):
    env = envs.make(f"pointmaze-{layout}-jax").unwrapped
    spec = env.spec
    _, dist = maze_data.shortest_paths(spec)
    free = spec.free_cells
    rng = np.random.default_rng(0)
    pairs = [(free[i], free[j]) for i, j in rng.integers(0, len(free), (12, 2)) if i != j]
    pairs.append((spec.find("S"), spec.find("G")))
    starts = jnp.asarray(np.stack([spec.cell_center(s) for s, _ in pairs]))
    goals = jnp.asarray(np.stack([g for _, g in pairs]), jnp.int32)

    def steps_to_goal(start, goal):
        def body(physics, _):
            pos, vel = env.pos_vel(physics)
            physics = env.physics_step(physics, maze_data.waypoint_action(spec, pos, vel, goal))
            return physics, maze_data.goal_reached(spec, env.pos_vel(physics)[0], goal)
        _, reached = jax.lax.scan(body, env.init_physics(start), None, length=200)
        return jnp.where(reached.any(), jnp.argmax(reached) + 1, -1)

    steps = np.asarray(jax.jit(jax.vmap(steps_to_goal))(starts, goals))
    lengths = np.array([dist[tuple(s) + tuple(g)] for s, g in pairs])
    assert (steps > 0).all(), steps
    assert (steps <= 8 * lengths + 10).all(), (steps, lengths)  # full speed is 5 steps per cell


# ---- the generator -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def umaze_data():
    return maze_data.diverse_dataset("umaze", 3000, seed=1, num_envs=6, episode_length=150, chunk_steps=250)


def test_generated_data_keys_shapes_dtypes(umaze_data):
    d = umaze_data
    assert set(d) == set(KEYS)
    n = 3000
    assert d["observations"].shape == d["next_observations"].shape == (n, 6)
    assert d["actions"].shape == (n, 2) and d["rewards"].shape == (n,)
    assert d["terminals"].shape == d["timeouts"].shape == (n,)
    for k in ("observations", "actions", "rewards", "next_observations"):
        assert d[k].dtype == np.float32, k
    assert d["terminals"].dtype == d["timeouts"].dtype == bool
    assert np.abs(d["actions"]).max() <= 1.0
    assert d["timeouts"][-1] or d["terminals"][-1]
    starts, ends = episode_bounds(d["terminals"], d["timeouts"])
    assert (ends - starts).max() <= 150
    assert maze_data.visited_cell_fraction(MazeSpec("umaze"), d["observations"]) == 1.0


def test_generated_data_is_the_evaluation_task(umaze_data):
    d = umaze_data
    env = envs.make("pointmaze-umaze-jax").unwrapped  # task "fixed": the evaluation task
    spec = env.spec
    goal = spec.cell_center(spec.find("G"))
    np.testing.assert_array_equal(d["observations"][:, 4:], np.broadcast_to(goal, (len(d["rewards"]), 2)))
    np.testing.assert_array_equal(d["next_observations"][:, 4:], d["observations"][:, 4:])
    # Rewards and terminals recomputed from positions, by hand and by the env's own rule.
    by_hand = (np.linalg.norm(d["next_observations"][:, :2] - goal, axis=1) < env.success_radius).astype(np.float32)
    reward, terminated, _ = jax.vmap(env.task_outcome, in_axes=(0, None))(d["next_observations"][:, :2], goal)
    np.testing.assert_array_equal(d["rewards"], by_hand)
    np.testing.assert_array_equal(d["rewards"], np.asarray(reward))
    np.testing.assert_array_equal(d["terminals"], np.asarray(terminated))
    assert d["rewards"].sum() > 0  # the umaze data does reach the goal
    # A terminal ends the data episode: the next transition starts outside the goal cell (a fresh start).
    after = np.flatnonzero(d["terminals"][:-1]) + 1
    assert (np.linalg.norm(d["observations"][after, :2] - goal, axis=1) > 0.5).all()
    assert not (d["terminals"] & d["timeouts"]).any()
    # Inside episodes the transitions chain exactly, and the simulator never enters a wall.
    inside = ~(d["terminals"] | d["timeouts"])[:-1]
    np.testing.assert_array_equal(d["next_observations"][:-1][inside], d["observations"][1:][inside])
    row, col = spec.cell_of(jnp.asarray(d["observations"][:, :2]))
    assert not spec.wall_grid[np.asarray(row), np.asarray(col)].any()


def test_generation_does_not_depend_on_chunking():
    a = maze_data.diverse_dataset("umaze", 200, seed=3, num_envs=2, episode_length=50, chunk_steps=100)
    b = maze_data.diverse_dataset("umaze", 200, seed=3, num_envs=2, episode_length=50, chunk_steps=50)
    for k in KEYS:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("suffix", [".hdf5", ".npz"])
def test_save_load_roundtrip(umaze_data, tmp_path, suffix):
    path = tmp_path / f"maze{suffix}"
    meta = {"layout": "umaze", "seed": 1}
    save_dataset(path, umaze_data, meta)
    loaded = load_dataset(path, observation_size=6, action_size=2)
    assert set(loaded) == set(KEYS)
    for k in KEYS:
        np.testing.assert_array_equal(loaded[k], umaze_data[k], err_msg=k)
        assert loaded[k].dtype == umaze_data[k].dtype
    assert load_metadata(path) == meta
    # Never overwritten without overwrite=True; nothing else is left in the directory.
    before = path.read_bytes()
    first = episode_bounds(umaze_data["terminals"], umaze_data["timeouts"])[1][0]  # the first episode only
    with pytest.raises(FileExistsError, match="overwrite"):
        save_dataset(path, {k: v[:first] for k, v in umaze_data.items()}, {})
    assert path.read_bytes() == before
    save_dataset(path, {k: v[:first] for k, v in umaze_data.items()}, {"n": int(first)}, overwrite=True)
    assert len(load_dataset(path)["rewards"]) == first and load_metadata(path) == {"n": first}
    assert os.listdir(tmp_path) == [path.name]


def test_cli_refuses_to_overwrite_then_generates(tmp_path, capsys):
    from experiments import make_dataset
    out = tmp_path / "d.npz"
    out.write_bytes(b"precious")
    with pytest.raises(SystemExit) as e:
        make_dataset.main(make_dataset.Config(layout="umaze", num_transitions=100, out=str(out), progress=False))
    assert e.value.code == 2 and out.read_bytes() == b"precious"
    assert "--overwrite" in capsys.readouterr().err
    cfg = make_dataset.Config(layout="umaze", num_transitions=200, num_envs=2, episode_length=50, out=str(out),
                              overwrite=True, progress=False)
    make_dataset.main(cfg)
    assert len(load_dataset(out, 6, 2)["rewards"]) == 200
    assert load_metadata(out)["layout"] == "umaze"
    assert "200 transitions" in capsys.readouterr().out


# ---- Monte-Carlo returns -----------------------------------------------------------------------------------------
def test_episode_bounds():
    starts, ends = episode_bounds(np.array([0, 0, 1, 0, 0]), np.array([0, 0, 0, 0, 1]))
    np.testing.assert_array_equal(starts, [0, 3])
    np.testing.assert_array_equal(ends, [3, 5])
    starts, ends = episode_bounds(np.array([0, 1, 0]), np.array([0, 0, 0]))  # trailing run without an end
    np.testing.assert_array_equal(starts, [0, 2])
    np.testing.assert_array_equal(ends, [2, 3])


def test_monte_carlo_returns_terminal_vs_timeout():
    rewards = np.array([0, 0, 1, 0, 0], np.float32)
    terminals = np.array([0, 0, 1, 0, 0], bool)
    timeouts = np.array([0, 0, 0, 0, 1], bool)
    # r' = 2 r - 1 = [-1, -1, 1, -1, -1], discount 0.5.
    # Episode 1 ends in a terminal: G2 = 1, G1 = -1 + 0.5 * 1 = -0.5, G0 = -1 + 0.5 * -0.5 = -1.25 (both tails).
    # Episode 2 is truncated: "zero": G4 = -1, G3 = -1.5; "repeat_last": G4 = -1 / (1 - 0.5) = -2, G3 = -2.
    zero = monte_carlo_returns(rewards, terminals, timeouts, 0.5, reward_scale=2.0, reward_bias=-1.0,
                               timeout_tail="zero")
    np.testing.assert_allclose(zero, [-1.25, -0.5, 1.0, -1.5, -1.0])
    repeat = monte_carlo_returns(rewards, terminals, timeouts, 0.5, reward_scale=2.0, reward_bias=-1.0)
    np.testing.assert_allclose(repeat, [-1.25, -0.5, 1.0, -2.0, -2.0])
    assert repeat.dtype == np.float32
    # Without scale/bias the failure tail is 0 and both options agree.
    for tail in ("zero", "repeat_last"):
        np.testing.assert_allclose(monte_carlo_returns(rewards, terminals, timeouts, 0.5, timeout_tail=tail),
                                   [0.25, 0.5, 1.0, 0.0, 0.0])
    # A positive last reward at a timeout repeats: G1 = 1 / 0.5 = 2, G0 = 0.5 * 2 = 1 (zero tail: 1 and 0.5).
    np.testing.assert_allclose(monte_carlo_returns([0, 1], [0, 0], [0, 1], 0.5), [1.0, 2.0])
    np.testing.assert_allclose(monte_carlo_returns([0, 1], [0, 0], [0, 1], 0.5, timeout_tail="zero"), [0.5, 1.0])
    with pytest.raises(ValueError, match="timeout_tail"):
        monte_carlo_returns(rewards, terminals, timeouts, 0.5, timeout_tail="bootstrap")
    with pytest.raises(ValueError, match="discount"):
        monte_carlo_returns(rewards, terminals, timeouts, 1.0)


def test_monte_carlo_returns_match_a_loop():
    rng = np.random.default_rng(0)
    n, discount = 3000, 0.99
    rewards = rng.normal(size=n).astype(np.float32)
    terminals, timeouts = rng.random(n) < 0.01, rng.random(n) < 0.01
    timeouts[-1] = True
    for tail in ("zero", "repeat_last"):
        r = 3.0 * rewards.astype(np.float64) - 1.0
        expected, g = np.zeros(n), 0.0
        for i in reversed(range(n)):
            if terminals[i]:
                g = r[i]
            elif timeouts[i]:
                g = r[i] / (1 - discount) if tail == "repeat_last" else r[i]
            else:
                g = r[i] + discount * g
            expected[i] = g
        got = monte_carlo_returns(rewards, terminals, timeouts, discount, 3.0, -1.0, timeout_tail=tail)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


# ---- the loader's errors -----------------------------------------------------------------------------------------
def small_dataset(n=12):
    """Two episodes: a terminal at index 4, a timeout at the end; observations chain inside episodes."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n + 1, 6)).astype(np.float32)
    next_obs = obs[1:].copy()
    next_obs[4] = rng.normal(size=6)  # the terminal's successor is not the next episode's first observation
    terminals = np.zeros(n, bool)
    terminals[4] = True
    timeouts = np.zeros(n, bool)
    timeouts[-1] = True
    return {"observations": obs[:n], "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
            "rewards": terminals.astype(np.float32), "next_observations": next_obs, "terminals": terminals,
            "timeouts": timeouts}


def write_npz(path, data):
    with open(path, "wb") as f:
        np.savez(f, **data)


def _missing_key(d):
    del d["timeouts"]


def _nan(d):
    d["rewards"][7] = np.nan


def _length(d):
    d["actions"] = d["actions"][:-1]


def _boundary(d):
    d["observations"][8] += 1.0  # inside the second episode: next_observations[7] no longer matches


def _no_end(d):
    d["timeouts"][-1] = False


def _string(d):
    d["rewards"] = np.array(["a"] * len(d["rewards"]))


def _flags(d):
    d["terminals"] = d["terminals"].astype(np.int32) * 2


def _empty(d):
    for k in d:
        d[k] = d[k][:0]


def _rank(d):
    d["actions"] = d["actions"][:, 0]


@pytest.mark.parametrize("corrupt, load_kwargs, expected", [
    (_missing_key, {}, ["missing key", "timeouts"]),
    (_nan, {}, ["'rewards'", "index 7", "nan"]),
    (_length, {}, ["mismatched lengths", "actions (11, 2)", "observations (12, 6)"]),
    (None, {"observation_size": 7}, ["'observations'", "(12, 6)", "(N, 7)"]),
    (None, {"action_size": 3}, ["'actions'", "(N, 3)"]),
    (_boundary, {}, ["episode boundary missing at index 7"]),
    (_no_end, {}, ["last transition (index 11)", "neither a terminal nor a timeout"]),
    (_string, {}, ["'rewards'", "dtype"]),
    (_flags, {}, ["'terminals'", "value 2 at index 4"]),
    (_empty, {}, ["no transitions"]),
    (_rank, {}, ["'actions'", "(12,)"]),
])
@pytest.mark.parametrize("fmt", ["npz", "hdf5"])
def test_loader_reports_what_is_wrong(tmp_path, corrupt, load_kwargs, expected, fmt):
    d = small_dataset()
    if corrupt is not None:
        corrupt(d)
    path = tmp_path / f"bad.{fmt}"
    if fmt == "npz":
        write_npz(path, d)
    else:
        with h5py.File(path, "w") as f:
            for k, v in d.items():
                f.create_dataset(k, data=v.astype("S") if v.dtype.kind == "U" else v)
    with pytest.raises(DatasetError) as e:
        load_dataset(path, **load_kwargs)
    message = str(e.value)
    assert str(path) in message and "\n" not in message
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_loader_missing_and_foreign_files(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as e:
        load_dataset(tmp_path / "nope.hdf5")
    assert "nope.hdf5" in str(e.value)
    text = tmp_path / "notes.hdf5"
    text.write_text("not a dataset")
    with pytest.raises(DatasetError, match="neither an HDF5 file nor a .npz archive") as e:
        load_dataset(text)
    assert "notes.hdf5" in str(e.value)
    with pytest.raises(DatasetError, match="not a regular file"):
        load_dataset(tmp_path)
    truncated = tmp_path / "cut.hdf5"
    save_dataset(truncated, small_dataset(), {})
    truncated.write_bytes(truncated.read_bytes()[:3000])
    with pytest.raises(DatasetError, match="cut.hdf5.*could not be read"):
        load_dataset(truncated)
    valid = small_dataset()  # the file itself is fine: a sanity check for the cases above
    write_npz(tmp_path / "ok.npz", valid)
    assert len(load_dataset(tmp_path / "ok.npz", 6, 2)["rewards"]) == 12


def test_loads_a_d4rl_style_hdf5(tmp_path):
    """D4RL's layout: flat arrays at the root plus infos/ and metadata/ groups; rewards (N,), flags as bools."""
    d = small_dataset()
    path = tmp_path / "antmaze-like-v2.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", data=d["observations"].astype(np.float64))
        f.create_dataset("actions", data=d["actions"])
        f.create_dataset("rewards", data=d["rewards"][:, None])  # some writers keep (N, 1)
        f.create_dataset("next_observations", data=d["next_observations"])
        f.create_dataset("terminals", data=d["terminals"])
        f.create_dataset("timeouts", data=d["timeouts"].astype(np.uint8))
        f.create_dataset("infos/goal", data=np.zeros((12, 2)))
        f.create_dataset("infos/qpos", data=np.zeros((12, 15)))
        f.create_dataset("metadata/algorithm", data="SAC")
        f.create_dataset("metadata/policy/fc0/weight", data=np.zeros((4, 4)))
        f.attrs["env"] = "antmaze-large-diverse-v2"
    data = load_dataset(path, observation_size=6, action_size=2)
    assert set(data) == set(KEYS)
    assert data["observations"].dtype == np.float32 and data["rewards"].shape == (12,)
    assert data["timeouts"].dtype == bool and data["timeouts"][-1]
    np.testing.assert_array_equal(data["observations"], d["observations"])
    assert load_metadata(path) == {}
