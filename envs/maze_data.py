"""Prior data for the point mazes, D4RL antmaze-"diverse"-like: a noisy waypoint controller driving to random goals.

What the data is
----------------
Each data-collection stream runs the pure-JAX simulator (`pointmaze-jax` with the layout: a registered name or a
layout string of your own, with a `G` cell that every free cell reaches) and a waypoint controller:

- **Shortest paths.** `shortest_paths(spec)` runs a BFS (numpy, once per layout, cached) from every free cell and
  returns a next-cell table `next_cell[r, c, goal_r, goal_c] -> (r', c')` (the first 4-neighbour on a shortest path
  from (r, c) to the goal cell) and the path lengths `dist[r, c, goal_r, goal_c]` (-1 for walls/unreachable).
- **Controller.** `waypoint_action` steers toward the centre of the next cell on the shortest path from the cell the
  point is in (the goal's centre once it is in the goal cell) with a PD law `a = kp (target - pos) - kd vel`, clipped
  to [-1, 1]^2. Walls in the simulator are frictionless, so cutting a corner toward the next centre slides along the
  wall instead of sticking. The data adds Gaussian noise `action_noise * N(0, I)` before clipping; the stored
  action is the clipped one, i.e. exactly what the simulator applied.
- **"Diverse".** A stream starts an episode at a uniformly random free cell (plus the env's `start_noise` jitter),
  never the evaluation goal cell (a start inside the success disc would be a one-step episode), and drives to a
  sequence of random goal cells: when the point is within `goal_tolerance * unit` of the current goal's centre a new
  goal is drawn uniformly among the other free cells. Episodes last `episode_length` steps (default 1000) and end
  with `timeouts = True`, unless they end earlier with a terminal (below).

The evaluation task, not the controller's
-----------------------------------------
The controller's goals are internal and never appear in the data. Every transition is that of the EVALUATION task
(`task="fixed"`: goal = the `G` cell): the goal part of the observation is the `G` centre, and `rewards` and
`terminals` are those the evaluation env returns for the successor position (the simulator is run as
`task="random_start"`, which keeps the `G` goal, so the env's own `task_outcome` computes them): reward 1 iff the
next position is within `success_radius * unit` of the `G` centre, else 0.

Terminals. The evaluation env has `terminate_on_success=True`: reaching `G` is an absorbing end of the episode, and
the TD targets of algorithms trained on this data do not bootstrap through it. The data follows the same MDP: a
transition that lands in the success disc has `rewards = 1`, `terminals = True`, and the data episode ENDS there (the
stream resets to a new random start and a new controller goal). So `rewards == terminals` everywhere and
`next_observations[i] == observations[i + 1]` holds exactly inside every episode. This differs on purpose from D4RL
antmaze, whose trajectories run on through the goal after a terminal flag (so its post-terminal transitions are
not reachable in the evaluation MDP). The price: successes are rare (the controller passes through `G` only when
`G` or a cell behind it is its goal) and each success ends an episode, so the reward fraction is small (about 0.1%
on the large maze; the summary printed by `experiments/make_dataset.py` reports it).

Timeouts. An episode that reaches `episode_length` steps is truncated (`timeouts = True`, `terminals = False`), as
is the last transition of every stream (the stream stops mid-episode). Truncation is not termination: value
targets bootstrap through it; Monte-Carlo returns treat its unseen tail as described in `envs/datasets.py`.

Generation is one jitted `lax.scan` over time of a `vmap` over `num_envs` independent streams, in chunks of
`chunk_steps` steps (for a progress bar). Transitions are laid out stream by stream, so each episode is contiguous.
The output depends on `seed` and `num_envs` (the number of streams), not on `chunk_steps`.

Demonstrations
--------------
`goal_demonstrations` is the other kind of maze data: expert episodes OF the evaluation task (start at `S`, drive
to `G`, end there), for behaviour cloning. The same controller follows one of the shortest routes to `G`, chosen
where routes tie (`shortest_moves`) per episode or per step, so the demonstrated actions are multimodal at forks.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs import datasets
from envs.core import Env, State
from envs.pointmaze import LAYOUTS, MazeSpec, canonical_layout

_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


# ---- shortest paths ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def shortest_paths(spec: MazeSpec) -> tuple[np.ndarray, np.ndarray]:
    """BFS from every free cell: `(next_cell, dist)`, both indexed `[r, c, goal_r, goal_c]`. Cached per maze
    CONTENT (a `MazeSpec` compares by its rows and unit), whatever name or string the layout was given as.

    `next_cell[..., :]` (int32, shape (R, C, R, C, 2)) is the (row, col) of the first step on a shortest path from
    (r, c) to the goal cell ((r, c) itself when r, c is the goal; -1 where there is no path). `dist` (int32, shape
    (R, C, R, C)) is the path length in cell moves, -1 for walls and unreachable pairs. Arrays are read-only.
    """
    walls = spec.wall_grid
    rows, cols = walls.shape
    dist = np.full((rows, cols, rows, cols), -1, np.int32)
    for gr, gc in spec.free_cells:
        dist[:, :, gr, gc] = spec.distances_from((gr, gc))
    # The next cell from (r, c) toward g is the neighbour whose distance to g is one less (first in _MOVES order).
    next_cell = np.full((rows, cols, rows, cols, 2), -1, np.int32)
    for r, c in spec.free_cells:
        here = dist[r, c]  # (R, C) distances from (r, c) to every goal (symmetric graph)
        next_cell[r, c][here == 0] = (r, c)
        for dr, dc in reversed(_MOVES):  # reversed so the first move in _MOVES wins ties
            nr, nc = r + dr, c + dc
            if 0 <= nr < rows and 0 <= nc < cols and not walls[nr, nc]:
                closer = (dist[nr, nc] == here - 1) & (here > 0)
                next_cell[r, c][closer] = (nr, nc)
    next_cell.flags.writeable = False
    dist.flags.writeable = False
    return next_cell, dist


# ---- controller --------------------------------------------------------------------------------------------------
def _cell_of(spec: MazeSpec, pos):
    row, col = spec.cell_of(pos)
    rows, cols = spec.wall_grid.shape
    return jnp.clip(row, 0, rows - 1), jnp.clip(col, 0, cols - 1)


def _center(spec: MazeSpec, cell):
    """Centre (x, y) of cell (row, col) (jnp)."""
    return jnp.stack([cell[..., 1], cell[..., 0]], -1).astype(jnp.float32) * spec.unit


def waypoint_action(spec: MazeSpec, pos, vel, goal_cell, kp: float = 10.0, kd: float = 1.0) -> jax.Array:
    """Noise-free PD action in [-1, 1]^2 toward the next cell centre on the shortest path to `goal_cell` (row, col).

    Pure and jittable; `pos`, `vel` are (x, y) arrays of one point (vmap for batches).
    """
    next_cell, _ = shortest_paths(spec)
    row, col = _cell_of(spec, pos)
    goal_cell = jnp.asarray(goal_cell, jnp.int32)
    step = jnp.asarray(next_cell)[row, col, goal_cell[0], goal_cell[1]]
    at_goal = (row == goal_cell[0]) & (col == goal_cell[1])
    target = _center(spec, jnp.where(at_goal, goal_cell, step))
    return jnp.clip(kp * (target - pos) - kd * vel, -1.0, 1.0)


def goal_reached(spec: MazeSpec, pos, goal_cell, goal_tolerance: float = 0.25) -> jax.Array:
    """Is `pos` within `goal_tolerance * unit` of the centre of `goal_cell`? (the controller's switching rule)"""
    return jnp.linalg.norm(pos - _center(spec, jnp.asarray(goal_cell))) < goal_tolerance * spec.unit


def _sample_other_cell(spec: MazeSpec, key, exclude_cell):
    """A free cell drawn uniformly among those other than `exclude_cell` (which must be free)."""
    free = jnp.asarray(spec.free_cells, jnp.int32)
    index = np.full(spec.wall_grid.shape, -1, np.int32)
    index[tuple(spec.free_cells.T)] = np.arange(len(spec.free_cells))
    i = jnp.asarray(index)[exclude_cell[0], exclude_cell[1]]
    j = jax.random.randint(key, (), 0, free.shape[0] - 1)
    return free[jnp.where(j >= i, j + 1, j)]


# ---- the generator -----------------------------------------------------------------------------------------------
def make_env(layout: str, episode_length: int = 1000) -> Env:
    """The simulator the data is collected in: the evaluation goal (`G`) with random starts, `TimeLimit` included.
    `layout` is a registered name or a layout string (it needs a `G` cell reachable from every free cell)."""
    return envs.make("pointmaze-jax", layout=layout, task="random_start", max_steps=episode_length)


def make_collector(layout: str = "large", *, num_envs: int = 100, episode_length: int = 1000,
                   action_noise: float = 0.2, kp: float = 10.0, kd: float = 1.0, goal_tolerance: float = 0.25
                   ) -> tuple[Callable, Callable]:
    """`(init, chunk)` for streaming generation.

    `init(key) -> carry`; `chunk(carry, num_steps) -> (carry, transitions)` with every transition array shaped
    (num_steps, num_envs, ...) in time-major order. `chunk` is jitted with `num_steps` static. Stream ends are
    not marked here (see `diverse_dataset`). Equal mazes share the functions (and their compilations), however
    the layout is spelled: the cache is keyed by the layout's canonical form (`envs.pointmaze.canonical_layout`).
    """
    return _make_collector(canonical_layout(layout), num_envs=num_envs, episode_length=episode_length,
                           action_noise=action_noise, kp=kp, kd=kd, goal_tolerance=goal_tolerance)


@functools.lru_cache(maxsize=16)  # the same settings reuse the same jitted functions (and their compilations)
def _make_collector(layout: str, *, num_envs: int, episode_length: int, action_noise: float, kp: float, kd: float,
                    goal_tolerance: float) -> tuple[Callable, Callable]:
    env = make_env(layout, episode_length)
    base = env.unwrapped
    spec = base.spec
    if len(spec.free_cells) < 2:
        raise ValueError(f"The maze data drives between random free cells, but the {spec.name} maze has only one "
                         f"free cell (rows: {list(spec.rows)}); add free cells (O or .).")
    shortest_paths(spec)  # build the table once, outside tracing
    goal_center = jnp.asarray(spec.cell_center(spec.find("G")), jnp.float32)
    eval_goal_cell = jnp.asarray(spec.find("G"), jnp.int32)

    def reset(key) -> tuple[State, jax.Array]:
        k_env, k_cell, k_noise, k_goal = jax.random.split(key, 4)
        state = env.reset(k_env)  # goal = G (task "random_start"); start replaced below
        start_cell = _sample_other_cell(spec, k_cell, eval_goal_cell)
        jitter = jax.random.uniform(k_noise, (2,), minval=-1.0, maxval=1.0) * base.start_noise * spec.unit
        physics = base.init_physics(_center(spec, start_cell) + jitter)
        pos, vel = base.pos_vel(physics)
        state = state.replace(obs=base.observe(pos, vel, goal_center), physics=physics)
        return state, _sample_other_cell(spec, k_goal, start_cell)

    def step(carry, _):
        state, goal_cell, key = carry
        key, k_noise, k_goal, k_reset = jax.random.split(key, 4)
        pos, vel = state.obs[:2], state.obs[2:4]
        action = waypoint_action(spec, pos, vel, goal_cell, kp, kd)
        action = jnp.clip(action + action_noise * jax.random.normal(k_noise, (2,)), -1.0, 1.0)
        nxt = env.step(state, action)
        transition = {"observations": state.obs, "actions": action, "rewards": nxt.reward,
                      "next_observations": nxt.obs, "terminals": nxt.terminated, "timeouts": nxt.truncated}
        npos = nxt.obs[:2]
        new_goal = _sample_other_cell(spec, k_goal, jnp.stack(_cell_of(spec, npos)))
        goal_cell = jnp.where(goal_reached(spec, npos, goal_cell, goal_tolerance), new_goal, goal_cell)
        done = nxt.terminated | nxt.truncated
        fresh_state, fresh_goal = reset(k_reset)
        state = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh_state, nxt)
        goal_cell = jnp.where(done, fresh_goal, goal_cell)
        return (state, goal_cell, key), transition

    def init(key):
        k_reset, k_run = jax.random.split(key)
        state, goal_cell = jax.vmap(reset)(jax.random.split(k_reset, num_envs))
        return state, goal_cell, jax.random.split(k_run, num_envs)

    @functools.partial(jax.jit, static_argnums=1)
    def chunk(carry, num_steps: int):
        return jax.lax.scan(jax.vmap(step, in_axes=(0, None)), carry, None, length=num_steps)

    return jax.jit(init), chunk


def diverse_dataset(layout: str = "large", num_transitions: int = 1_000_000, *, seed: int = 0,
                    action_noise: float = 0.2, episode_length: int = 1000, num_envs: int = 100,
                    chunk_steps: int = 1000, kp: float = 10.0, kd: float = 1.0, goal_tolerance: float = 0.25,
                    progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Generate `num_transitions` D4RL-style transitions (numpy: float32 arrays, bool `terminals`/`timeouts`).

    `num_envs` streams each run `ceil(num_transitions / num_envs)` steps; the result is laid out stream by stream
    and cut to `num_transitions`; the last transition of each stream is marked as a timeout (unless terminal).
    `progress(n)` is called after every chunk with the number of transitions it produced.
    """
    if num_transitions < 1 or num_envs < 1 or chunk_steps < 1 or episode_length < 1:
        raise ValueError("num_transitions, num_envs, chunk_steps and episode_length must be positive integers, got "
                         f"{num_transitions}, {num_envs}, {chunk_steps}, {episode_length}.")
    num_envs = min(num_envs, num_transitions)
    steps = math.ceil(num_transitions / num_envs)
    init, chunk = make_collector(layout, num_envs=num_envs, episode_length=episode_length,
                                 action_noise=action_noise, kp=kp, kd=kd, goal_tolerance=goal_tolerance)
    carry = init(jax.random.key(seed))
    parts, done_steps = [], 0
    while done_steps < steps:
        n = min(chunk_steps, steps - done_steps)
        carry, transitions = chunk(carry, n)
        parts.append(jax.device_get(transitions))
        done_steps += n
        if progress is not None:
            progress(min(n * num_envs, num_transitions - (done_steps - n) * num_envs))
    data = {}
    for k in parts[0]:
        x = np.concatenate([p[k] for p in parts], axis=0)  # (steps, num_envs, ...)
        data[k] = np.ascontiguousarray(np.swapaxes(x, 0, 1))  # (num_envs, steps, ...): stream by stream
    data["timeouts"][:, -1] |= ~data["terminals"][:, -1]
    data = {k: v.reshape(num_envs * steps, *v.shape[2:])[:num_transitions] for k, v in data.items()}
    data["timeouts"][-1] |= ~data["terminals"][-1]
    for k in ("observations", "actions", "rewards", "next_observations"):
        data[k] = data[k].astype(np.float32, copy=False)
    for k in ("terminals", "timeouts"):
        data[k] = data[k].astype(bool, copy=False)
    return data


def visited_cell_fraction(spec: MazeSpec, observations: np.ndarray) -> float:
    """Fraction of the maze's free cells that contain at least one observed position (observations[:, :2])."""
    xy = np.asarray(observations)[:, :2]
    col = np.floor(xy[:, 0] / spec.unit + 0.5).astype(np.int64)
    row = np.floor(xy[:, 1] / spec.unit + 0.5).astype(np.int64)
    rows, cols = spec.wall_grid.shape
    seen = np.zeros((rows, cols), bool)
    seen[np.clip(row, 0, rows - 1), np.clip(col, 0, cols - 1)] = True
    return float(seen[~spec.wall_grid].mean())


def dataset_metadata(layout: str, **generator_kwargs) -> dict:
    """Provenance to store with a generated dataset: the generator's arguments and the evaluation task. `layout`
    is the canonical layout (a registered name, or the rows joined by newlines); `layout_digest` names the rows."""
    base = make_env(layout, generator_kwargs.get("episode_length", 1000)).unwrapped
    spec = base.spec
    env = f"pointmaze-{spec.name}-jax" if spec.name in LAYOUTS else "pointmaze-jax"
    return {"generator": "envs.maze_data.diverse_dataset", "env": env, "task": "fixed",
            "layout": canonical_layout(layout), "layout_digest": spec.digest,
            "eval_goal": spec.cell_center(spec.find("G")).tolist(),
            "success_radius": base.success_radius, "unit": base.unit, "reward_type": base.reward_type,
            "terminate_on_success": base.terminate_on_success, **generator_kwargs}


def layout_of(env_name: str, layout: str | None = None) -> str:
    """The layout of point maze `env_name`: `layout` if given (the env's own, `env.unwrapped.layout`), else the
    one its registered name fixes (`pointmaze-large-jax` -> "large"). ValueError for other names."""
    if layout is not None:
        return layout
    parts = env_name.split("-")
    if parts[0] == "pointmaze" and len(parts) > 1 and parts[1] in LAYOUTS:
        return parts[1]
    raise ValueError(f"{env_name!r} does not name a maze layout; pass the env's layout (env.unwrapped.layout).")


def cached_dataset_path(env_name: str, num_transitions: int, path: str = "", log=print, *,
                        layout: str | None = None) -> str:
    """The prior dataset of point maze `env_name` (of layout `layout`, default: the one its name fixes, see
    `layout_of`): `path` if given, else `data/pointmaze-<name>-<digest>-diverse-<N>.hdf5`, generated (seed 0,
    default controller) and saved there on first use. Returns the path to load.

    The file is keyed by the layout's CONTENT (`MazeSpec.digest`, a hash of its rows; `<name>` is the registered
    name or "custom", for people reading the directory): a layout string equal to a registered layout finds that
    layout's file, and editing a layout never reuses data generated for the old one. The MJX and pure-JAX twins
    share the file (the data is generated by the pure-JAX twin either way)."""
    if path:
        return path
    if not env_name.startswith("pointmaze"):
        raise ValueError(f"Only point mazes generate their own prior data; {env_name!r} needs an explicit dataset "
                         f"path (see experiments/make_dataset.py).")
    layout = canonical_layout(layout_of(env_name, layout))
    spec = MazeSpec(layout)
    path = f"data/pointmaze-{spec.name}-{spec.digest}-diverse-{num_transitions}.hdf5"
    if not os.path.exists(path):
        log(f"Generating {num_transitions} transitions of {spec.name} maze data -> {path}")
        data = diverse_dataset(layout, num_transitions, seed=0)
        datasets.save_dataset(path, data, dataset_metadata(layout, num_transitions=num_transitions))
    return path


def retarget(data: dict, env: Env) -> dict:
    """The dataset with the goal part of every observation (obs[..., 4:6]) set to `env`'s fixed goal.

    The generated data carries the `G` goal in its observations; reward-free uses of it (ExPLORe, SUPE) may
    evaluate on another goal (`goal_cell=...`), and the observations must then say so. Envs that are not point
    mazes with a fixed goal are returned unchanged."""
    base = env.unwrapped
    if not hasattr(base, "goal_cell_rc") or base.task == "random":
        return data
    goal = base.spec.cell_center(base.goal_cell_rc).astype(np.float32)
    out = dict(data)
    for k in ("observations", "next_observations"):
        out[k] = np.array(data[k], np.float32, copy=True)
        out[k][..., 4:6] = goal
    return out


# Exploration benchmarks evaluate on a goal the prior data was not collected for and that no constant action
# reaches: on the large maze the path from S to cell (7, 4) goes right, down, then back left (the layout's own G
# is reached from S by sliding down-right along the walls). Keyed by registered name, matched by content.
EXPLORATION_GOALS = {"large": (7, 4)}


def exploration_task(env_name: str, options: dict) -> dict:
    """`options` with the exploration goal of the maze's layout added, unless a goal_cell was given. The layout is
    recognised by its content: `pointmaze-jax` with `layout=` the large maze's rows gets the large maze's goal."""
    if not env_name.startswith("pointmaze") or "goal_cell" in options:
        return options
    try:
        name = envs.make(env_name, **options).unwrapped.spec.name
    except ValueError:  # let the caller's own envs.make report it
        return options
    return {**options, "goal_cell": EXPLORATION_GOALS[name]} if name in EXPLORATION_GOALS else options


def load_reward_free(env_name: str, env: Env, num_transitions: int, path: str = "", log=print) -> dict:
    """Prior data for reward-free methods (ExPLORe, SUPE): the validated dataset at `path` (or the point maze's
    cached one, generated on first use), retargeted to `env`'s goal, with its `rewards` removed and its
    `terminals` kept only as episode boundaries (`terminals | timeouts`; nothing downstream bootstraps on them).
    Raises ValueError / datasets.DatasetError naming the problem."""
    path = cached_dataset_path(env_name, num_transitions, path, log=log,
                               layout=getattr(env.unwrapped, "layout", None))
    data = retarget(datasets.load_dataset(path, env.observation_size, env.action_size), env)
    data.pop("rewards")
    data["terminals"] = data["terminals"] | data["timeouts"]
    return data


# ---- goal-reaching demonstrations with several routes (behaviour cloning) -----------------------------------------
TIE_BREAKS = ("episode", "step", "first")


def shortest_moves(spec: MazeSpec, goal_cell) -> np.ndarray:
    """(R, C, 4) bool: move k of `_MOVES` (up, down, left, right in (row, col)) from free cell (r, c) is the first
    step of SOME shortest path to `goal_cell`. Cells with two or more True moves are the ties of the BFS: there,
    several routes to the goal are equally short. All False at the goal cell, at walls and at cut-off cells."""
    walls = spec.wall_grid
    rows, cols = walls.shape
    _, dist = shortest_paths(spec)
    d = dist[:, :, int(goal_cell[0]), int(goal_cell[1])]
    moves = np.zeros((rows, cols, 4), bool)
    for r, c in spec.free_cells:
        for k, (dr, dc) in enumerate(_MOVES):
            nr, nc = r + dr, c + dc
            if d[r, c] > 0 and 0 <= nr < rows and 0 <= nc < cols and d[nr, nc] == d[r, c] - 1:
                moves[r, c, k] = True
    moves.flags.writeable = False
    return moves


def goal_demonstrations(layout: str, num_episodes: int, *, seed: int = 0, action_noise: float = 0.2,
                        tie_break: str = "episode", random_start: bool = False, max_steps: int | None = None,
                        kp: float = 10.0, kd: float = 1.0, successful_only: bool = True) -> dict[str, np.ndarray]:
    """Demonstrations of the EVALUATION task of `layout` (start at `S`, goal `G`): a shortest-path waypoint
    controller drives to `G` along one of the shortest routes, so that the demonstrated actions are multimodal
    wherever two routes to `G` are equally short.

    The demonstrator is `waypoint_action`'s PD law toward the centre of the next cell, with the next cell chosen
    among the equally short first moves (`shortest_moves`) by `tie_break`:

    - "episode": every episode draws its own random priority for each (cell, move) pair and takes, in each cell,
      the highest-priority shortest move. So an episode follows ONE shortest route consistently (a cell visited
      twice gets the same choice), and at every tie cell the episodes split evenly among its shortest moves: the
      data is multimodal there (e.g. left or right around a block whose far side holds `G`, where the average
      action pushes into the block).
    - "step": a fresh random choice among the shortest moves at every step: the demonstrator dithers in a tie
      cell until it leaves it, and the actions are multimodal in EVERY state of the cell, independently of the
      state (with "episode" the route is a function of the episode, and the modes separate in position and
      velocity one step after the fork).
    - "first": the fixed order of `_MOVES`, one route per start, as `waypoint_action` does (unimodal up to noise).

    `action_noise * N(0, I)` is added before clipping to [-1, 1]^2; the stored action is the clipped one (what the
    simulator applied). Episodes start at `S` with the env's start jitter (`random_start`: any free cell, task
    "random_start") and end at the first success (`terminals`) or after `max_steps` (default: the env's episode
    length; `timeouts`). One jitted `lax.scan` over steps of a `vmap` over episodes (seconds for thousands).

    Returns D4RL-style transitions (observations, actions, rewards, next_observations, terminals, timeouts), the
    episodes contiguous, plus `episode_ids` (int32, which episode each transition came from). With
    `successful_only` (default) episodes that time out are dropped; a ValueError if none is left.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break={tie_break!r}: expected one of {TIE_BREAKS}.")
    if num_episodes < 1:
        raise ValueError(f"num_episodes={num_episodes}: need at least one episode.")
    env = envs.make("pointmaze-jax", layout=layout, task="random_start" if random_start else "fixed",
                    max_steps=max_steps)
    base, spec = env.unwrapped, env.unwrapped.spec
    goal_cell = base.goal_cell_rc
    data = _demonstrations(env, spec, goal_cell, num_episodes, seed, float(action_noise), tie_break, float(kp),
                           float(kd))
    data = {k: np.asarray(v) for k, v in jax.device_get(data).items()}
    alive = data.pop("alive")  # (episodes, steps)
    success = data["terminals"].any(1)
    keep = success if successful_only else np.ones_like(success)
    if not keep.any():
        raise ValueError(f"goal_demonstrations: none of the {num_episodes} demonstrations reached the goal within "
                         f"{env.max_steps} steps (action_noise={action_noise}); lower the noise or raise max_steps.")
    mask = alive & keep[:, None]
    out = {k: v[mask] for k, v in data.items()}
    out["episode_ids"] = np.broadcast_to(np.arange(num_episodes, dtype=np.int32)[:, None], mask.shape)[mask]
    for k in ("observations", "actions", "rewards", "next_observations"):
        out[k] = out[k].astype(np.float32, copy=False)
    return out


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 6))
def _demonstrations(env: Env, spec: MazeSpec, goal_cell, num_episodes, seed, action_noise, tie_break, kp, kd):
    moves = jnp.asarray(shortest_moves(spec, goal_cell))
    deltas = jnp.asarray(_MOVES, jnp.int32)
    goal = jnp.asarray(goal_cell, jnp.int32)
    shape = spec.wall_grid.shape + (4,)

    def episode(key):
        k_reset, k_prio, k_run = jax.random.split(key, 3)
        priority = (jax.random.uniform(k_prio, shape) if tie_break == "episode"
                    else jnp.broadcast_to(-jnp.arange(4, dtype=jnp.float32), shape))

        def step(carry, key):
            state, alive = carry
            k_noise, k_prio = jax.random.split(key)
            pos, vel = state.obs[:2], state.obs[2:4]
            row, col = _cell_of(spec, pos)
            here = jax.random.uniform(k_prio, (4,)) if tie_break == "step" else priority[row, col]
            k = jnp.argmax(jnp.where(moves[row, col], here, -jnp.inf))
            at_goal = (row == goal[0]) & (col == goal[1])
            target = _center(spec, jnp.where(at_goal, goal, jnp.stack([row, col]) + deltas[k]))
            action = jnp.clip(kp * (target - pos) - kd * vel, -1.0, 1.0)
            action = jnp.clip(action + action_noise * jax.random.normal(k_noise, (2,)), -1.0, 1.0)
            nxt = env.step(state, action)
            transition = {"observations": state.obs, "actions": action, "rewards": nxt.reward,
                          "next_observations": nxt.obs, "terminals": nxt.terminated, "timeouts": nxt.truncated,
                          "alive": alive}
            # after the end the episode is frozen (and masked out): no auto-reset inside a demonstration
            state = jax.tree.map(lambda a, b: jnp.where(alive, a, b), nxt, state)
            return (state, alive & ~nxt.done), transition

        _, transitions = jax.lax.scan(step, (env.reset(k_reset), jnp.ones((), bool)),
                                      jax.random.split(k_run, env.max_steps))
        return transitions

    return jax.vmap(episode)(jax.random.split(jax.random.key(seed), num_episodes))
