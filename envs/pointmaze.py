"""Point-mass mazes: layouts, the task semantics shared by both simulators, and the pure-JAX simulator.

Layouts follow D4RL maze2d (`#` wall, `O` free, `S` start, `G` goal). Cell (row, col) has its centre at
(x, y) = (col * unit, row * unit); walls are unit-sized boxes. The agent is a point mass of radius 0.1 * unit
on two slide joints, driven by a force `gear * action` (action in [-1, 1]^2) against viscous joint damping.

Layouts. `LAYOUTS` registers umaze, medium, large (D4RL maze2d's) and giant (OGBench's); `layout=` takes one of
those names or a layout string of your own, one line per row, e.g. `envs.make("pointmaze-jax",
layout="#######\\n#S...G#\\n#######")` (`.` is accepted for `O`; see `parse_layout` for the rules and the errors). A
maze is identified by its content, not its name: `MazeSpec`s of equal rows are equal, and an env's `layout` is
stored canonically (the registered name if the rows are a registered layout's, else the rows joined by newlines).
Unregistered layouts get a default episode length from their size (`MazeSpec.default_max_steps`).

OGBench's mazes (ogbench/locomaze/maze.py) are 0/1 grids indexed (i, j) = (row, col) with the centre of cell
(i, j) at (x, y) = (j * 4 - 4, i * 4 - 4): the same orientation as here (columns along x, rows along y), with a
maze unit of 4 and cell (1, 1) at the origin, where ours has unit 1 and cell (0, 0) at the origin. So an OGBench
cell (i, j) is our (row, col) = (i, j), and OGBench positions map to ours by (x + 4, y + 4) / 4. OGBench has no S/G
in its grids; each maze has five evaluation tasks (init cell, goal cell), task 1 the default. Our giant marks
task 1's cells: S = (1, 1), G = (10, 14); its other tasks are `start_cell` / `goal_cell` away, e.g. task 2 is
start_cell=1,14 goal_cell=10,1. OGBench's medium and large grids are D4RL's (ours), but its tasks differ from
D4RL's G: large task 1 aims at (7, 10), our large G is (7, 9). Not carried over from OGBench: its success radius
(1.0 / 4 = 0.25 unit, ours 0.3 unit), start noise (uniform +-1/4 unit, ours +-0.1 unit) and goal noise (none
here), and its point's dynamics (ours are below). Its episode length for the giant maze, 1000, is ours.

Observation: [x, y, vx, vy, goal_x, goal_y] (float32). Reward: `sparse` = 1 on success, else 0; `dense` = minus
the distance to the goal. Success: distance to the goal below `success_radius`. Episodes terminate on success
(`terminate_on_success`), and are truncated by `TimeLimit` (added by `envs.make`).

Tasks: `fixed` starts near the `S` cell and aims at the `G` cell (the evaluation task); `random` samples the start
and goal uniformly from distinct free cells (how prior data is collected); `random_start` keeps the `G` goal.
`start_cell` / `goal_cell` (row, col) move the fixed task's start and goal to any free cell (e.g. a goal the
prior data was not collected for).

Physics, shared by construction with the MJX twin (`envs/pointmaze_mjx.py`): MuJoCo's Euler integrator with
implicit joint damping, per substep of length dt,

    v' = (m v + dt * gear * a) / (m + dt * damping),      x' = x + dt v'.

Away from walls the two simulators agree to float precision (tested). Walls: the pure-JAX twin moves one axis at a
time and, if the disc's bounding square would enter a wall cell, cancels that axis' motion and velocity: an
inelastic, frictionless wall. MuJoCo's soft contacts differ in the details of a wall hit, not in what the walls
allow.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import functools
import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np

from envs.core import Env, State

LAYOUTS = {
    "umaze": (
        "#####",
        "#GOO#",
        "###O#",
        "#SOO#",
        "#####",
    ),
    "medium": (
        "########",
        "#SO##OO#",
        "#OO#OOO#",
        "##OOO###",
        "#OO#OOO#",
        "#O#OO#O#",
        "#OOO#OG#",
        "########",
    ),
    "large": (
        "############",
        "#SOOO#OOOOO#",
        "#O##O#O#O#O#",
        "#OOOOOO#OOO#",
        "#O####O###O#",
        "#OO#O#OOOOO#",
        "##O#O#O#O###",
        "#OO#OOO#OGO#",
        "############",
    ),
    # OGBench's `giant` maze (ogbench/locomaze/maze.py, maze_type="giant"), S and G at its default task
    # (task1: init (1, 1), goal (10, 14)). See the module docstring for how OGBench's cells map to ours.
    "giant": (
        "################",
        "#S#OOOOOO##OOOO#",
        "#O#O##O#O#OO##O#",
        "#OOO#OO#OOO#OOO#",
        "#O###O######O#O#",
        "#OOO#OOO#OOOO#O#",
        "###O#O#OO#O#O###",
        "#OOO#OO#OOO#OOO#",
        "#O#O#O######O#O#",
        "#O###OOO#OOO##O#",
        "#OOOOO#OOO#OOOG#",
        "################",
    ),
}
EPISODE_STEPS = {"umaze": 100, "medium": 250, "large": 400, "giant": 1000}
"""Default episode length of each registered layout (giant: OGBench's 1000). Other layouts: `default_max_steps`."""
STEPS_PER_CELL = 20
"""Default episode length of an unregistered layout, per cell of its longest shortest path (full speed is 5 steps
per cell; turns and corners cost more)."""
TASKS = ("fixed", "random", "random_start")
REWARDS = ("sparse", "dense")
LAYOUT_CHARS = {"#": "wall", "O": "free", ".": "free", "S": "start (free)", "G": "goal (free)"}
_LEGEND = "# wall, O or . free, S start, G goal"
_EXAMPLE = "'#######\\n#S...G#\\n#######'"


def _cells(cells) -> str:
    """`[(r, c), ...]` for messages, at most 12 of them."""
    cells = [tuple(int(i) for i in c) for c in cells]
    more = f" and {len(cells) - 12} more" if len(cells) > 12 else ""
    return ", ".join(map(str, cells[:12])) + more


@functools.lru_cache(maxsize=256)
def parse_layout(layout: str) -> tuple[str, ...]:
    """The rows of `layout`: a registered name (`LAYOUTS`) or a layout string, validated.

    A layout string has one line per maze row (top row first), separated by newlines or by the two characters
    `\\n` (how a shell passes `--env-options layout=...`); each line is stripped of surrounding whitespace and blank
    lines around the maze are dropped, so an indented triple-quoted string works. Characters: `#` wall, `O` or `.`
    free, `S` start, `G` goal (at most one of each). The rows must have equal widths, the border must be walls, and
    at least one cell must be free. A `ValueError` says what is wrong, in one paragraph.
    """
    if not isinstance(layout, str):
        raise ValueError(f"Maze layout must be a string (a registered name or rows separated by newlines), got "
                         f"{type(layout).__name__} {layout!r}.")
    if layout in LAYOUTS:
        return LAYOUTS[layout]
    lines = [line.strip() for line in layout.replace("\\n", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) < 2:
        raise ValueError(f"Unknown maze layout {layout!r}; valid layouts: {sorted(LAYOUTS)}, or a layout string: "
                         f"rows separated by newlines (or the two characters \\n), e.g. {_EXAMPLE}, with {_LEGEND}.")
    rows = tuple(lines)
    widths = [len(r) for r in rows]
    if len(set(widths)) > 1:
        common = max(set(widths), key=widths.count)
        odd = [f"row {i} has {w}" for i, w in enumerate(widths) if w != common]
        raise ValueError(f"Maze layout rows must all have the same width: most have {common} characters, but "
                         f"{', '.join(odd)} (rows: {list(rows)}). Pad short rows with # walls.")
    unknown = [(c, i, j) for i, r in enumerate(rows) for j, c in enumerate(r) if c not in LAYOUT_CHARS]
    if unknown:
        where = ", ".join(f"{c!r} at (row {i}, col {j})" for c, i, j in unknown[:8])
        raise ValueError(f"Maze layout has unknown character(s): {where}{' ...' if len(unknown) > 8 else ''}; "
                         f"the characters are {_LEGEND} (rows: {list(rows)}).")
    grid = np.array([list(r) for r in rows])
    border = np.ones(grid.shape, bool)
    border[1:-1, 1:-1] = False
    open_border = np.argwhere(border & (grid != "#"))
    if len(open_border):
        raise ValueError(f"Maze layout must be enclosed by walls, but the border cell(s) {_cells(open_border)} "
                         f"(row, col) are not '#' (the point could leave the maze there; rows: {list(rows)}). Put a "
                         f"row or column of # around the maze.")
    if (grid == "#").all():
        raise ValueError(f"Maze layout has no free cell: every cell is a wall (rows: {list(rows)}); mark free cells "
                         f"with O or . (and the start and goal with S and G).")
    for char, what in (("S", "start"), ("G", "goal")):
        found = np.argwhere(grid == char)
        if len(found) > 1:
            raise ValueError(f"Maze layout has {len(found)} '{char}' cells, at {_cells(found)} (row, col); a layout "
                             f"marks at most one {what} {char} (rows: {list(rows)}).")
    return tuple(r.replace(".", "O") for r in rows)  # one spelling of free cells: equal mazes, equal rows


def canonical_layout(layout: str) -> str:
    """The registered name whose rows `layout` has, else its rows joined by newlines: equal mazes, equal strings."""
    rows = parse_layout(layout)
    return next((name for name, r in LAYOUTS.items() if r == rows), "\n".join(rows))


def bfs_distances(wall_grid: np.ndarray, source) -> np.ndarray:
    """Moves (4-neighbour steps between free cells) from cell `source` (row, col) to every cell: int32 (R, C), -1
    for walls and unreachable cells."""
    rows, cols = wall_grid.shape
    dist = np.full((rows, cols), -1, np.int32)
    dist[tuple(source)] = 0
    queue = collections.deque([tuple(int(i) for i in source)])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < rows and 0 <= nc < cols and not wall_grid[nr, nc] and dist[nr, nc] < 0:
                dist[nr, nc] = dist[r, c] + 1
                queue.append((nr, nc))
    return dist


@dataclasses.dataclass(frozen=True)
class MazeSpec:
    """Static geometry of a layout (numpy, computed once per layout).

    `layout` is a registered name or a layout string (`parse_layout`). Equality and hashing go by the maze's
    CONTENT (`rows`, `unit`), not by how it was named, so caches keyed by a spec (`maze_data.shortest_paths`) are
    shared by equal mazes and never confused by a reused name. `name` is the registered name of the rows, or
    "custom"; `digest` identifies the rows (file names of generated data).
    """

    layout: str = dataclasses.field(compare=False)
    unit: float = 1.0
    rows: tuple[str, ...] = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "rows", parse_layout(self.layout))

    @property
    def name(self) -> str:
        return next((name for name, r in LAYOUTS.items() if r == self.rows), "custom")

    @property
    def text(self) -> str:
        return "\n".join(self.rows)

    @property
    def digest(self) -> str:
        """12 hex digits of the SHA-256 of the rows (joined by newlines): names the maze's content."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    @functools.cached_property
    def wall_grid(self) -> np.ndarray:
        return np.array([[c == "#" for c in row] for row in self.rows], dtype=bool)

    @functools.cached_property
    def free_cells(self) -> np.ndarray:
        return np.argwhere(~self.wall_grid)  # (n, 2) of (row, col)

    def cell_center(self, cells) -> np.ndarray:
        cells = np.asarray(cells, dtype=np.float32)
        return np.stack([cells[..., 1], cells[..., 0]], -1) * self.unit

    def has(self, char: str) -> bool:
        return any(char in r for r in self.rows)

    def find(self, char: str) -> np.ndarray:
        """(row, col) of the layout's `char` cell ("S" or "G"); a ValueError if the layout has none."""
        found = np.argwhere(np.array([list(r) for r in self.rows]) == char)
        if not len(found):
            raise ValueError(f"The {self.name} maze has no {char!r} cell (rows: {list(self.rows)}); add one to the "
                             f"layout, or pass {'start_cell' if char == 'S' else 'goal_cell'}=row,col.")
        return found[0]

    @functools.cached_property
    def wall_cells(self) -> np.ndarray:
        return np.argwhere(self.wall_grid)

    def distances_from(self, cell) -> np.ndarray:
        """BFS moves from `cell` to every cell (`bfs_distances`; -1 for walls and unreachable cells)."""
        return bfs_distances(self.wall_grid, cell)

    @functools.cached_property
    def default_max_steps(self) -> int:
        """The default episode length: `EPISODE_STEPS` of a registered layout, else `STEPS_PER_CELL` times the
        longest shortest path (a double-sweep BFS: exact on tree mazes, a lower bound otherwise), rounded up to a
        multiple of 50, at least 100."""
        if self.name in EPISODE_STEPS:
            return EPISODE_STEPS[self.name]
        far = np.unravel_index(np.argmax(self.distances_from(self.free_cells[0])), self.wall_grid.shape)
        longest = int(self.distances_from(far).max())
        return max(100, 50 * math.ceil(STEPS_PER_CELL * longest / 50))

    def cell_of(self, xy):
        """(row, col) of the cell containing `xy` (jnp)."""
        col = jnp.floor(xy[..., 0] / self.unit + 0.5).astype(jnp.int32)
        row = jnp.floor(xy[..., 1] / self.unit + 0.5).astype(jnp.int32)
        return row, col


@dataclasses.dataclass(frozen=True)
class PointMazeBase(Env):
    """Task semantics common to the pure-JAX and MJX point mazes; subclasses provide the physics."""

    layout: str = "umaze"
    task: str = "fixed"
    reward_type: str = "sparse"
    success_radius: float = 0.3
    terminate_on_success: bool = True
    unit: float = 1.0
    gear: float = 10.0
    damping: float = 5.0
    mass: float = 1.0
    timestep: float = 0.02
    frame_skip: int = 5
    start_noise: float = 0.1
    start_cell: tuple[int, int] | str | None = None  # (row, col) of the fixed task's start; None = the `S` cell
    goal_cell: tuple[int, int] | str | None = None  # (row, col) of the goal of fixed/random_start; None = `G`

    def __post_init__(self):
        spec = MazeSpec(self.layout, self.unit)  # validates the layout itself
        # stored canonically, a registered name or the rows: equal mazes make equal (and equally hashed) envs
        object.__setattr__(self, "layout", canonical_layout(self.layout))
        if self.task not in TASKS:
            raise ValueError(f"Unknown maze task {self.task!r}; valid tasks: {list(TASKS)}.")
        if self.reward_type not in REWARDS:
            raise ValueError(f"Unknown reward_type {self.reward_type!r}; valid: {list(REWARDS)}.")
        rows = spec.rows
        for name in ("start_cell", "goal_cell"):  # accept "row,col" (the CLI's --env-options goal_cell=7,4)
            cell = getattr(self, name)
            if cell is None:
                continue
            try:
                cell = tuple(int(c) for c in (cell.split(",") if isinstance(cell, str) else cell))
            except (TypeError, ValueError):
                cell = ()
            if len(cell) != 2 or not (0 <= cell[0] < len(rows) and 0 <= cell[1] < len(rows[0])) \
                    or rows[cell[0]][cell[1]] == "#":
                free = [tuple(int(i) for i in c) for c in spec.free_cells]
                raise ValueError(f"{name}={getattr(self, name)!r} is not a free cell (row,col) of the "
                                 f"{spec.name} maze; free cells: {free}.")
            object.__setattr__(self, name, cell)
        self._check_task(spec)

    def _check_task(self, spec: MazeSpec) -> None:
        """The cells the task needs exist (S, G, or start_cell / goal_cell) and the goal can be reached."""
        layout = f"the {spec.name} maze (rows: {list(spec.rows)})"
        needs = {"fixed": ("start", "goal"), "random_start": ("goal",), "random": ()}[self.task]
        for what, char, field in (("start", "S", "start_cell"), ("goal", "G", "goal_cell")):
            if what in needs and getattr(self, field) is None and not spec.has(char):
                other = "task=random or random_start" if what == "start" else "task=random"
                raise ValueError(f"Task {self.task!r} needs a {what} cell, but {layout} has no {char}: mark one "
                                 f"with {char} in the layout, pass {field}=row,col, or use {other}.")
        free = [tuple(int(i) for i in c) for c in spec.free_cells]
        if self.task == "random":
            if len(free) < 2:
                raise ValueError(f"Task 'random' draws the start and the goal from two different free cells, but "
                                 f"{layout} has only {len(free)} free cell; add free cells (O or .).")
            goal, starts = free[0], free  # every pair must be connected: all cells reach one of them
        else:
            goal = self.goal_cell_rc
            starts = [self.start_cell_rc] if self.task == "fixed" else free
        dist = spec.distances_from(goal)
        cut_off = [c for c in starts if dist[c] < 0]
        if cut_off:
            if self.task == "random":
                problem = (f"the free cells are not all connected: {_cells(cut_off)} cannot reach {goal}, and task "
                           f"'random' may draw any two free cells as start and goal")
                fix = "turn the cut-off cells into walls"
            else:
                problem = (f"the goal cell {goal} cannot be reached from the start cell {cut_off[0]}"
                           if self.task == "fixed" else f"the goal cell {goal} cannot be reached from the free "
                           f"cell(s) {_cells(cut_off)}, where task 'random_start' may start")
                fix = ("choose other cells (start_cell / goal_cell)" if self.task == "fixed" else
                       "turn the cut-off cells into walls")
            raise ValueError(f"In {layout}, {problem} (moves go between free cells that share a side, never "
                             f"through a wall). Open a path through the walls, or {fix}.")

    @property
    def default_max_steps(self) -> int:
        """Episode length `envs.make` uses when given none: `MazeSpec.default_max_steps`."""
        return self.spec.default_max_steps

    @property
    def start_cell_rc(self) -> tuple[int, int]:
        return self.start_cell or tuple(int(i) for i in self.spec.find("S"))

    @property
    def goal_cell_rc(self) -> tuple[int, int]:
        return self.goal_cell or tuple(int(i) for i in self.spec.find("G"))

    @property
    def spec(self) -> MazeSpec:
        return MazeSpec(self.layout, self.unit)

    @property
    def radius(self) -> float:
        return 0.1 * self.unit

    @property
    def observation_size(self) -> int:
        return 6

    @property
    def action_size(self) -> int:
        return 2

    # ---- task --------------------------------------------------------------------------------------------
    def sample_task(self, key):
        """Start position and goal position for a new episode."""
        spec = self.spec
        free = jnp.asarray(spec.cell_center(spec.free_cells))
        k_start, k_goal, k_noise = jax.random.split(key, 3)
        fixed_start = jnp.asarray(spec.cell_center(self.start_cell_rc))
        fixed_goal = jnp.asarray(spec.cell_center(self.goal_cell_rc))
        if self.task == "fixed":
            start, goal = fixed_start, fixed_goal
        else:
            i = jax.random.randint(k_start, (), 0, free.shape[0])
            start = free[i]
            if self.task == "random":  # a goal in a different free cell
                j = jax.random.randint(k_goal, (), 0, free.shape[0] - 1)
                goal = free[jnp.where(j >= i, j + 1, j)]
            else:
                goal = fixed_goal
        noise = jax.random.uniform(k_noise, (2,), minval=-1.0, maxval=1.0) * self.start_noise * self.unit
        return start + noise, goal

    def observe(self, pos, vel, goal):
        return jnp.concatenate([pos, vel, goal]).astype(jnp.float32)

    def task_outcome(self, pos, goal):
        dist = jnp.linalg.norm(pos - goal)
        success = dist < self.success_radius * self.unit
        reward = success.astype(jnp.float32) if self.reward_type == "sparse" else -dist
        terminated = success if self.terminate_on_success else jnp.zeros((), bool)
        return reward.astype(jnp.float32), terminated, success.astype(jnp.float32)

    # ---- physics hooks -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def init_physics(self, pos): ...

    @abc.abstractmethod
    def physics_step(self, physics, action): ...

    @abc.abstractmethod
    def pos_vel(self, physics) -> tuple[jax.Array, jax.Array]: ...

    # ---- API ---------------------------------------------------------------------------------------------
    def reset(self, key):
        key, task_key = jax.random.split(key)
        start, goal = self.sample_task(task_key)
        physics = self.init_physics(start)
        pos, vel = self.pos_vel(physics)
        zero = jnp.zeros((), jnp.float32)
        return State(obs=self.observe(pos, vel, goal), reward=zero, terminated=jnp.zeros((), bool),
                     truncated=jnp.zeros((), bool), info={"success": zero, "goal": goal}, physics=physics, rng=key)

    def step(self, state, action):
        action = jnp.clip(action, -1.0, 1.0)
        physics = self.physics_step(state.physics, action)
        pos, vel = self.pos_vel(physics)
        goal = state.info["goal"]
        reward, terminated, success = self.task_outcome(pos, goal)
        return state.replace(obs=self.observe(pos, vel, goal), reward=reward, terminated=terminated,
                             truncated=jnp.zeros((), bool), info={**state.info, "success": success},
                             physics=physics)


@dataclasses.dataclass(frozen=True)
class PointMazeJax(PointMazeBase):
    """Pure-JAX point maze: the same task and integrator as the MJX one, walls by per-axis cancellation."""

    def init_physics(self, pos):
        return {"pos": pos.astype(jnp.float32), "vel": jnp.zeros(2, jnp.float32)}

    def pos_vel(self, physics):
        return physics["pos"], physics["vel"]

    def _blocked(self, pos):
        """Does the disc's bounding square at `pos` overlap a wall cell?"""
        walls = jnp.asarray(self.spec.wall_grid)
        r = self.radius
        corners = pos + jnp.array([[-r, -r], [-r, r], [r, -r], [r, r]])
        row, col = self.spec.cell_of(corners)
        row = jnp.clip(row, 0, walls.shape[0] - 1)
        col = jnp.clip(col, 0, walls.shape[1] - 1)
        return walls[row, col].any()

    def physics_step(self, physics, action):
        force = self.gear * action
        dt, m = self.timestep, self.mass

        def substep(carry, _):
            pos, vel = carry
            vel = (m * vel + dt * force) / (m + dt * self.damping)
            for axis in (0, 1):  # move one axis at a time; a wall cancels that axis
                trial = pos.at[axis].add(dt * vel[axis])
                hit = self._blocked(trial)
                pos = jnp.where(hit, pos, trial)
                vel = vel.at[axis].set(jnp.where(hit, 0.0, vel[axis]))
            return (pos, vel), None

        (pos, vel), _ = jax.lax.scan(substep, (physics["pos"], physics["vel"]), None, length=self.frame_skip)
        return {"pos": pos, "vel": vel}
