"""Maze layouts of one's own: strings and files, their validation, OGBench's giant maze, and every consumer of a
layout (both simulators, the dataset generator and its cache, the exploration and curriculum helpers, SAC)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import maze_data
from envs.datasets import load_dataset, load_metadata, validate_dataset
from envs.pointmaze import MazeSpec, canonical_layout


# A small maze of our own: S -> G is 8 moves (right, down, right, up), with a dead end below S.
CUSTOM = """
    #######
    #S..#G#
    #.#.#.#
    #.#...#
    #######
"""
CUSTOM_ROWS = ("#######", "#SOO#G#", "#O#O#O#", "#O#OOO#", "#######")
CUSTOM_PATH = [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 4), (3, 5), (2, 5), (1, 5)]


# ---- layout strings ----------------------------------------------------------------------------------------------
def test_a_layout_string_makes_a_maze_of_those_rows():
    env = envs.make("pointmaze-jax", layout=CUSTOM)
    base = env.unwrapped
    assert base.spec.rows == CUSTOM_ROWS and base.spec.name == "custom"
    assert base.layout == "\n".join(CUSTOM_ROWS)  # stored canonically
    assert base.start_cell_rc == (1, 1) and base.goal_cell_rc == (1, 5)
    np.testing.assert_array_equal(base.spec.wall_grid, np.array([[c == "#" for c in r] for r in CUSTOM_ROWS]))
    # the shell's two characters \n separate rows too, and '.' and 'O' are the same free cell
    assert envs.make("pointmaze-jax", layout="#######\\n#S..#G#\\n#O#O#.#\\n#O#...#\\n#######").unwrapped == base
    # the default episode length comes from the size: 20 steps per cell of the longest shortest path,
    # (3, 1) -> G: 10 moves
    assert env.max_steps == 200
    # a reset starts near S and aims at G; the walls are the custom ones
    state = jax.jit(env.reset)(jax.random.key(0))
    np.testing.assert_allclose(state.obs[:2], [1.0, 1.0], atol=base.start_noise + 1e-6)
    np.testing.assert_array_equal(state.obs[4:], [5.0, 1.0])
    assert bool(base._blocked(jnp.array([4.0, 1.0]))) and not bool(base._blocked(jnp.array([3.0, 1.0])))


def test_a_layout_string_equal_to_a_registered_one_is_that_layout():
    large = MazeSpec("large")
    spelled = large.text.replace("O", ".")
    assert canonical_layout(spelled) == "large"
    assert MazeSpec(spelled) == large and hash(MazeSpec(spelled)) == hash(large)
    assert envs.make("pointmaze-jax", layout=spelled).unwrapped == envs.make("pointmaze-large-jax").unwrapped
    assert envs.make("pointmaze-jax", layout=spelled).max_steps == 400
    # caches keyed by the maze's content are shared, whatever the spelling
    assert maze_data.shortest_paths(MazeSpec(spelled)) is maze_data.shortest_paths(large)
    assert maze_data.make_collector(spelled, num_envs=2) is maze_data.make_collector("large", num_envs=2)
    assert MazeSpec(CUSTOM) != MazeSpec(CUSTOM.replace("#.#.#.#", "#.###.#"))


def test_layout_file(tmp_path):
    path = tmp_path / "maze.txt"
    path.write_text(CUSTOM)
    assert envs.make("pointmaze-jax", layout_file=str(path)).unwrapped == envs.make("pointmaze-jax",
                                                                                     layout=CUSTOM).unwrapped
    assert envs.make("pointmaze", layout_file=str(path)).unwrapped.spec.rows == CUSTOM_ROWS  # the MJX twin


# ---- validation: one paragraph naming the problem ----------------------------------------------------------------
BAD = [
    ("ragged", dict(layout="#####\n#S.G##\n#####"),
     r"rows must all have the same width: most have 5 characters, but row 1 has 6 \(rows: \['#####', '#S.G##'"),
    ("unknown character", dict(layout="#####\n#SxG#\n#####"),
     r"unknown character\(s\): 'x' at \(row 1, col 2\); the characters are # wall, O or \. free, S start, G goal"),
    ("open border", dict(layout="#####\n#S.G.\n#####"),
     r"must be enclosed by walls, but the border cell\(s\) \(1, 4\) \(row, col\) are not '#'"),
    ("no free cell", dict(layout="####\n####\n####"), r"Maze layout has no free cell: every cell is a wall"),
    ("two starts", dict(layout="######\n#SS.G#\n######"), r"has 2 'S' cells, at \(1, 1\), \(1, 2\)"),
    ("two goals", dict(layout="######\n#SG.G#\n######"), r"has 2 'G' cells, at \(1, 2\), \(1, 4\)"),
    ("no S for task fixed", dict(layout="#####\n#..G#\n#####"),
     r"Task 'fixed' needs a start cell, but the custom maze .* has no S: mark one with S in the layout, pass "
     r"start_cell=row,col"),
    ("no G for task fixed", dict(layout="#####\n#S..#\n#####"),
     r"Task 'fixed' needs a goal cell, but the custom maze .* has no G"),
    ("no G for task random_start", dict(layout="#####\n#S..#\n#####", task="random_start"),
     r"Task 'random_start' needs a goal cell, .* has no G"),
    ("one free cell for task random", dict(layout="###\n#O#\n###", task="random"),
     r"Task 'random' draws the start and the goal from two different free cells, but .* has only 1 free cell"),
    ("unreachable goal", dict(layout="#####\n#S#G#\n#####"),
     r"the goal cell \(1, 3\) cannot be reached from the start cell \(1, 1\)"),
    ("unreachable goal_cell", dict(layout="#######\n#S.#.G#\n#######", goal_cell="1,4"),
     r"the goal cell \(1, 4\) cannot be reached from the start cell \(1, 1\)"),
    ("unreachable from random starts", dict(layout="#######\n#SO#OG#\n#OO#OO#\n#######", task="random_start"),
     r"the goal cell \(1, 5\) cannot be reached from the free cell\(s\) \(1, 1\), \(1, 2\), \(2, 1\), \(2, 2\), "
     r"where task 'random_start' may start"),
    ("disconnected for task random", dict(layout="#######\n#OO#OO#\n#######", task="random"),
     r"the free cells are not all connected: \(1, 4\), \(1, 5\) cannot reach \(1, 1\)"),
    ("unknown name", dict(layout="huge"), r"Unknown maze layout 'huge'; valid layouts: \['giant', 'large', 'medium', "
                                          r"'umaze'\], or a layout string"),
    ("not a string", dict(layout=5), r"Maze layout must be a string"),
]


@pytest.mark.parametrize("name", ["pointmaze-jax", "pointmaze"])
@pytest.mark.parametrize("case, kwargs, message", BAD, ids=[b[0] for b in BAD])
def test_bad_layouts_raise_one_clear_paragraph(name, case, kwargs, message):
    with pytest.raises(ValueError, match=message) as e:
        envs.make(name, **kwargs)
    assert "\n" not in str(e.value)  # one paragraph


def test_layouts_without_s_or_g_are_fine_where_the_task_does_not_need_them():
    free = "#####\n#...#\n#####"
    assert envs.make("pointmaze-jax", layout=free, task="random").unwrapped.spec.name == "custom"
    assert envs.make("pointmaze-jax", layout=free, task="random_start", goal_cell="1,3").unwrapped.goal_cell_rc \
        == (1, 3)
    assert envs.make("pointmaze-jax", layout=free, start_cell="1,1", goal_cell="1,3").unwrapped.start_cell_rc \
        == (1, 1)


def test_layout_option_errors(tmp_path):
    with pytest.raises(ValueError, match=r"layout_file='/nonexistent/maze.txt': cannot read the maze layout file"):
        envs.make("pointmaze-jax", layout_file="/nonexistent/maze.txt")
    (tmp_path / "maze.txt").write_text(CUSTOM)
    with pytest.raises(ValueError, match="got both layout and layout_file"):
        envs.make("pointmaze-jax", layout=CUSTOM, layout_file=str(tmp_path / "maze.txt"))
    for option in ("layout", "layout_file"):
        with pytest.raises(ValueError, match=r"The layout of 'pointmaze-large-jax' is fixed; for another one use "
                                             r"pointmaze or pointmaze-jax"):
            envs.make("pointmaze-large-jax", **{option: CUSTOM})


def test_cli_reports_a_bad_layout_in_one_line(capsys, tmp_path):
    from experiments import make_dataset, runner
    from experiments import sac as sac_experiment
    with pytest.raises(SystemExit) as e:
        runner.main("sac", sac_experiment.Args, sac_experiment.build, argv=[
            "--env", "pointmaze-jax", "--env-options", "layout=#####\\n#S.G##\\n#####", "--no-progress",
            "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "error: Maze layout rows must all have the same width" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as e:
        make_dataset.main(["maze", "--layout", "#####\\n#S#G#\\n#####", "--out", str(tmp_path / "d.hdf5")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--layout: In the custom maze" in err and "cannot be reached" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "d.hdf5").exists()


# ---- OGBench's giant maze ----------------------------------------------------------------------------------------
# ogbench/locomaze/maze.py, maze_type="giant" (1 = wall), transcribed independently of envs/pointmaze.py.
OGBENCH_GIANT = [
    "1111111111111111",
    "1010000001100001",
    "1010110101001101",
    "1000100100010001",
    "1011101111110101",
    "1000100010000101",
    "1110101001010111",
    "1000100100010001",
    "1010101111110101",
    "1011100010001101",
    "1000001000100001",
    "1111111111111111",
]
OGBENCH_GIANT_TASKS = [((1, 1), (10, 14)), ((1, 14), (10, 1)), ((8, 14), (1, 1)), ((8, 3), (5, 12)),
                       ((5, 9), (3, 8))]


def brute_force_distances(walls: np.ndarray) -> np.ndarray:
    """All-pairs shortest move counts by Floyd-Warshall over the free cells (-1: wall or unreachable)."""
    free = [tuple(c) for c in np.argwhere(~walls)]
    index = {c: i for i, c in enumerate(free)}
    d = np.full((len(free), len(free)), np.inf)
    np.fill_diagonal(d, 0)
    for (r, c), i in index.items():
        for n in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if n in index:
                d[i, index[n]] = 1
    for k in range(len(free)):
        d = np.minimum(d, d[:, k:k + 1] + d[k:k + 1, :])
    out = np.full(walls.shape * 2, -1, np.int64)
    for a, i in index.items():
        for b, j in index.items():
            if np.isfinite(d[i, j]):
                out[a + b] = d[i, j]
    return out


def test_giant_is_ogbenchs_grid_with_task1_as_s_and_g():
    spec = MazeSpec("giant")
    np.testing.assert_array_equal(spec.wall_grid, np.array([[c == "1" for c in r] for r in OGBENCH_GIANT]))
    assert tuple(spec.find("S")) == (1, 1) and tuple(spec.find("G")) == (10, 14)  # OGBench task 1
    for start, goal in OGBENCH_GIANT_TASKS:  # every OGBench task is start_cell / goal_cell away
        env = envs.make("pointmaze-giant-jax", start_cell=start, goal_cell=goal).unwrapped
        assert (env.start_cell_rc, env.goal_cell_rc) == (start, goal)
    assert envs.make("pointmaze-giant-jax").max_steps == 1000 and envs.make("pointmaze-giant").max_steps == 1000


def test_giant_bfs_distances_match_a_brute_force_count():
    spec = MazeSpec("giant")
    next_cell, dist = maze_data.shortest_paths(spec)
    np.testing.assert_array_equal(dist, brute_force_distances(spec.wall_grid))
    assert dist[(1, 1, 10, 14)] == 30  # S -> G
    # every next-cell step is a free neighbour one move closer
    free = [tuple(int(i) for i in c) for c in spec.free_cells]
    for s in free:
        for g in free:
            if s != g:
                n = tuple(next_cell[s + g])
                assert abs(n[0] - s[0]) + abs(n[1] - s[1]) == 1 and dist[n + g] == dist[s + g] - 1


# ---- the MJX twin ------------------------------------------------------------------------------------------------
def test_mjx_twin_builds_a_custom_layout_and_steps_like_the_pure_jax_one():
    import mujoco
    mjx_env = envs.make("pointmaze", layout=CUSTOM, start_noise=0.0).unwrapped
    jax_env = envs.make("pointmaze-jax", layout=CUSTOM, start_noise=0.0).unwrapped
    mj_model, _, _ = mjx_env.compiled
    boxes = mj_model.geom_type == mujoco.mjtGeom.mjGEOM_BOX
    np.testing.assert_allclose(np.sort(mj_model.geom_pos[boxes, :2], 0),
                               np.sort(MazeSpec(CUSTOM).cell_center(MazeSpec(CUSTOM).wall_cells), 0))
    action = jnp.array([1.0, 0.3])  # from S's centre, one step: no wall within reach

    def one_step(env):
        return jax.jit(lambda key: env.step(env.reset(key), action).obs)(jax.random.key(0))

    mjx_obs, jax_obs = np.asarray(one_step(mjx_env)), np.asarray(one_step(jax_env))
    assert np.abs(jax_obs[:2] - [1.0, 1.0]).max() > 0.01  # it moved
    np.testing.assert_allclose(mjx_obs, jax_obs, atol=1e-5)


# ---- consumers of a layout: data, caches, exploration and curricula ----------------------------------------------
GENERATOR = dict(seed=0, num_envs=4, episode_length=50, chunk_steps=100)


@pytest.fixture(scope="module")
def custom_data():
    return maze_data.diverse_dataset(CUSTOM, 400, **GENERATOR)


def test_generator_runs_on_a_custom_layout(custom_data):
    d = custom_data
    validate_dataset(d, observation_size=6, action_size=2)
    spec = MazeSpec(CUSTOM)
    np.testing.assert_array_equal(d["observations"][:, 4:], np.broadcast_to([5.0, 1.0], (400, 2)))  # G = (1, 5)
    row, col = np.floor(d["next_observations"][:, 1] + 0.5).astype(int), np.floor(d["next_observations"][:, 0] + 0.5)
    assert not spec.wall_grid[row, col.astype(int)].any()  # every position is in a free cell of THIS maze
    assert maze_data.visited_cell_fraction(spec, d["observations"]) > 0.5
    np.testing.assert_array_equal(d["rewards"], d["terminals"])
    meta = maze_data.dataset_metadata(CUSTOM, num_transitions=400)
    assert meta["layout"] == "\n".join(CUSTOM_ROWS) and meta["layout_digest"] == spec.digest
    assert meta["env"] == "pointmaze-jax" and meta["eval_goal"] == [5.0, 1.0]


def test_make_dataset_cli_takes_a_layout_file(custom_data, tmp_path, monkeypatch):
    from experiments import make_dataset
    (tmp_path / "maze.txt").write_text(CUSTOM)
    monkeypatch.chdir(tmp_path)
    out = make_dataset.main(["maze", "--layout-file", "maze.txt", "--num-transitions", "400", "--num-envs", "4",
                             "--episode-length", "50", "--chunk-steps", "100", "--no-progress"])
    assert str(out) == f"data/pointmaze-custom-{MazeSpec(CUSTOM).digest}-diverse.hdf5"
    loaded = load_dataset(tmp_path / out)
    for k, v in custom_data.items():  # the same generator settings: the same data
        np.testing.assert_array_equal(loaded[k], v, err_msg=k)
    assert load_metadata(tmp_path / out)["layout"] == "\n".join(CUSTOM_ROWS)
    with pytest.raises(SystemExit):
        make_dataset.main(["maze", "--layout-file", "maze.txt", "--layout", "umaze", "--out", "x.hdf5"])


def test_cached_prior_data_is_keyed_by_the_layouts_content(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logs = []
    path = maze_data.cached_dataset_path("pointmaze-jax", 200, log=logs.append, layout=CUSTOM)
    assert path == f"data/pointmaze-custom-{MazeSpec(CUSTOM).digest}-diverse-200.hdf5" and len(logs) == 1
    assert load_metadata(path)["layout"] == "\n".join(CUSTOM_ROWS)
    # the same maze, however it is spelled or simulated, finds the same file without generating it again
    same = "#######\\n#SOO#G#\\n#O#O#O#\\n#O#OOO#\\n#######"
    assert maze_data.cached_dataset_path("pointmaze", 200, log=logs.append, layout=same) == path and len(logs) == 1
    # a changed maze (one wall removed) does not reuse it
    moved = CUSTOM.replace("#.#...#", "#.....#")
    assert MazeSpec(moved).digest != MazeSpec(CUSTOM).digest
    assert maze_data.cached_dataset_path("pointmaze-jax", 200, log=lambda m: None, layout=moved) != path
    # registered layouts: the layout their name fixes, their name in the file name, their rows in the key
    (tmp_path / f"data/pointmaze-large-{MazeSpec('large').digest}-diverse-200.hdf5").write_bytes(b"")  # cached
    assert maze_data.cached_dataset_path("pointmaze-large-jax", 200, log=logs.append) \
        == maze_data.cached_dataset_path("pointmaze-jax", 200, log=logs.append, layout=MazeSpec("large").text) \
        == f"data/pointmaze-large-{MazeSpec('large').digest}-diverse-200.hdf5"
    assert maze_data.cached_dataset_path("pointmaze-large-jax", 200, path="given.hdf5") == "given.hdf5"
    with pytest.raises(ValueError, match="'pointmaze-jax' does not name a maze layout"):
        maze_data.cached_dataset_path("pointmaze-jax", 200)
    # load_reward_free reads the layout from the env itself
    env = envs.make("pointmaze-jax", layout=same)
    data = maze_data.load_reward_free("pointmaze-jax", env, 200, log=logs.append)
    assert len(logs) == 1 and data["observations"].shape == (200, 6) and "rewards" not in data


def test_exploration_goal_is_found_by_content():
    large_rows = MazeSpec("large").text
    assert maze_data.exploration_task("pointmaze-jax", {"layout": large_rows}) == {"layout": large_rows,
                                                                                   "goal_cell": (7, 4)}
    assert maze_data.exploration_task("pointmaze-jax", {"layout": CUSTOM}) == {"layout": CUSTOM}
    assert maze_data.exploration_task("pointmaze-jax", {"layout": "#####\n#S#G#\n#####"}) \
        == {"layout": "#####\n#S#G#\n#####"}  # left to the caller's envs.make to reject


def test_curriculum_goals_follow_a_custom_layouts_shortest_path():
    from algos import rollin
    goals = rollin.maze_goals(envs.make("pointmaze-jax", layout=CUSTOM), num_stages=4)
    cells = [(int(round(y)), int(round(x))) for x, y in goals.contexts]
    assert cells == [CUSTOM_PATH[2], CUSTOM_PATH[4], CUSTOM_PATH[6], CUSTOM_PATH[8]]
    with pytest.raises(ValueError, match="has no 'G' cell"):
        rollin.maze_goals(envs.make("pointmaze-jax", layout="#####\n#S..#\n#####", task="random"), 2)


# ---- SAC end to end ----------------------------------------------------------------------------------------------
def test_sac_trains_on_a_custom_layout_from_the_cli(tmp_path):
    """The CLI path a user takes: --env pointmaze-jax --env-options layout_file=PATH, a tiny budget."""
    from experiments import runner
    from experiments import sac as sac_experiment
    (tmp_path / "maze.txt").write_text(CUSTOM)
    run_dir = tmp_path / "run"
    runner.main("sac", sac_experiment.Args, sac_experiment.build, argv=[
        "--env", "pointmaze-jax", "--env-options", f"layout_file={tmp_path / 'maze.txt'}", "reward_type=dense",
        "max_steps=20", "--agent.num-envs", "4", "--agent.chunk-steps", "10", "--agent.batch-size", "32",
        "--agent.start-steps", "40", "--agent.hidden-sizes", "32", "32", "--agent.buffer-capacity", "1000",
        "--agent.eval-episodes", "2", "--total-steps", "80", "--no-progress", "--no-tensorboard",
        "--run-dir", str(run_dir)])
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert evals and np.isfinite(evals[-1]["eval_return"]) and evals[-1]["eval_return"] < 0
    assert metrics[-1]["env_steps"] == 80 and metrics[-1]["num_updates"] > 0
    assert np.isfinite(metrics[-1]["critic_loss"]) and metrics[-1]["critic_loss"] != 0
    args, _, _ = runner.load_run_args(run_dir, sac_experiment.Args)
    env = envs.make(args.env, **runner.parse_env_options(args.env_options))
    assert env.unwrapped.spec.rows == CUSTOM_ROWS and env.max_steps == 20
