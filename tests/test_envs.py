"""The functional env API, its wrappers, and every registered environment (CPU; seconds per test).

Each distinct rollout is compiled and run once per module (`rollout` fixture) and shared by the tests that read
it. Every registered env is traced through `make` + `make_vec` (shapes, dtypes, reset/step pytree structure); the
pure-JAX twins and one env per compiled simulator family are then compiled and stepped (`STEPPED`); MJX and brax
programs cost 10-50 s each to compile on this CPU (cold cache) and are marked slow.
"""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import envs
from envs.core import AutoReset, NormalizeObs, VmapAutoReset
from envs.pointmaze import MazeSpec, PointMazeJax
from envs.pointmaze_mjx import PointMazeMjx

MAZES = [name for name in envs.registered() if name.startswith("pointmaze")]
BRAX = [name for name in envs.registered() if not name.startswith("pointmaze")]
# Stepped for real (compiled): every pure-JAX twin, and ONE env per compiled simulator family (an MJX maze, a
# brax task with terminations, the MJX hand). The wrappers under test are generic; compiling each brax task and
# maze layout again (40-50 s each on this 2-core CPU) re-tested the same code. Every registered env is still
# traced through the API above, and each family's own tests step it (test_hands.py, test_insertion.py).
STEPPED = [n for n in MAZES if n.endswith("-jax")] + ["pointmaze-umaze", "hopper", "hand-lift"]
BATCH, EPISODE, STEPS = 2, 4, 10  # rollouts: 2 envs, episodes of at most 4 steps, 10 steps


def _slow_unless_pure_jax(names):
    """Parametrize over env names, marking the ones that take seconds to compile (MJX, brax) as slow. Tests of
    the same env share one compiled rollout (the `rollout` fixture; `--dist loadfile` keeps a module on one worker)."""
    return [pytest.param(n, marks=[] if n.endswith("-jax") else [pytest.mark.slow])
            for n in names]


def _random_rollout(env, steps, key):
    """Reset the batched `env`, then take `steps` uniformly random actions. Returns (reset state, stacked step
    states), physics dropped."""
    reset_key, action_key = jax.random.split(key)
    first = env.reset(reset_key)

    def step(state, k):
        action = jax.random.uniform(k, (env.num_envs, env.action_size), minval=-1.0, maxval=1.0)
        state = env.step(state, action)
        return state, state.replace(physics=None)

    _, traj = jax.lax.scan(step, first, jax.random.split(action_key, steps))
    return first.replace(physics=None), traj


@pytest.fixture(scope="module")
def rollout():
    """`rollout(name, **make_kwargs)`: the random rollout of `make_vec(make(name, max_steps=EPISODE, ...), BATCH)`,
    compiled and run once per distinct call for the whole module."""
    cache = {}

    def run(name, **kwargs):
        key = (name, tuple(sorted(kwargs.items())))
        if key not in cache:
            env = envs.make_vec(envs.make(name, **{"max_steps": EPISODE, **kwargs}), BATCH)
            cache[key] = jax.device_get(jax.jit(functools.partial(_random_rollout, env, STEPS))(jax.random.key(0)))
        return cache[key]

    return run


def _wall_distance(spec: MazeSpec, xy: np.ndarray) -> np.ndarray:
    """Euclidean distance from each point of `xy` (..., 2) to the nearest wall cell (a square of side `unit`)."""
    centres = spec.cell_center(spec.wall_cells)  # (n, 2)
    gap = np.maximum(np.abs(xy[..., None, :] - centres) - spec.unit / 2, 0.0)
    return np.linalg.norm(gap, axis=-1).min(-1)


# ---- every registered env: the API contract ---------------------------------------------------------------------
# (The DM Control tasks are traced the same way, and one of them stepped, in test_dmc.py: 20-70 s each here.)
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow if n in BRAX else ())
                                  for n in envs.registered() if not n.startswith("dmc-")])
def test_every_env_traces_with_the_api_shapes(name):
    env = envs.make_vec(envs.make(name), BATCH)
    first = jax.eval_shape(env.reset, jax.random.key(0))
    after = jax.eval_shape(env.step, first, jax.ShapeDtypeStruct((BATCH, env.action_size), jnp.float32))
    # AutoReset selects leaf by leaf between a fresh and a stepped state: both must have the same pytree types.
    assert jax.tree.structure(first) == jax.tree.structure(after)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(after)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    assert after.obs.shape == (BATCH, env.observation_size) and after.obs.dtype == jnp.float32
    for field, dtype in (("reward", jnp.float32), ("terminated", jnp.bool_), ("truncated", jnp.bool_)):
        assert (getattr(after, field).shape, getattr(after, field).dtype) == ((BATCH,), dtype), field
    for k in ("success", "episode_return", "episode_length", "episode_success", "episode_done"):
        assert (after.info[k].shape, after.info[k].dtype) == ((BATCH,), jnp.float32), k
    assert after.info["next_obs"].shape == after.obs.shape


@pytest.mark.parametrize("name", _slow_unless_pure_jax(STEPPED))
def test_stepped_env_obeys_time_limit_and_flags(name, rollout):
    _, traj = rollout(name)
    env = envs.make(name)
    assert traj.obs.shape == (STEPS, BATCH, env.observation_size) and traj.obs.dtype == np.float32
    assert traj.reward.shape == (STEPS, BATCH) and traj.reward.dtype == np.float32
    assert np.isfinite(traj.obs).all() and np.isfinite(traj.reward).all()
    assert not (traj.terminated & traj.truncated).any()
    length = np.zeros(BATCH, int)  # steps into the current episode, counted by hand
    for t in range(STEPS):
        length += 1
        # truncated exactly when the budget is spent and the episode did not terminate on that step
        np.testing.assert_array_equal(traj.truncated[t], (length == EPISODE) & ~traj.terminated[t])
        length[traj.terminated[t] | traj.truncated[t]] = 0
    if name.startswith("pointmaze"):  # no start is within reach of its goal in 4 steps
        assert not traj.terminated.any() and traj.truncated[EPISODE - 1].all()


@pytest.mark.parametrize("name", _slow_unless_pure_jax(STEPPED))
def test_auto_reset_draws_fresh_starts(name, rollout):
    first, traj = rollout(name)
    done = traj.terminated | traj.truncated
    assert not np.allclose(first.obs[0], first.obs[1])  # two envs of a batch start differently
    for i in range(BATCH):
        resets = np.flatnonzero(done[:, i])
        assert len(resets) >= 2
        starts = [first.obs[i]] + [traj.obs[t, i] for t in resets]
        for a, b in zip(starts[:-1], starts[1:]):  # successive episodes start differently (fresh keys)
            assert not np.allclose(a, b)
        for t in resets:  # the returned obs is the new episode's; next_obs keeps the true successor
            assert not np.allclose(traj.obs[t, i], traj.info["next_obs"][t, i])
    np.testing.assert_array_equal(traj.info["next_obs"][~done], traj.obs[~done])


# ---- wrappers ---------------------------------------------------------------------------------------------------
def test_next_obs_is_the_true_successor_before_reset():
    inner = envs.make("pointmaze-umaze-jax", max_steps=1)  # every step ends the episode by truncation
    key, action = jax.random.key(1), jnp.array([0.5, -0.3])
    stepped = jax.jit(AutoReset(inner).step)(AutoReset(inner).reset(key), action)
    plain = jax.jit(inner.step)(inner.reset(key), action)
    assert bool(stepped.truncated) and not bool(stepped.terminated)
    np.testing.assert_array_equal(stepped.info["next_obs"], plain.obs)
    assert not np.allclose(stepped.obs, plain.obs)
    assert int(stepped.info["final_info"]["steps"]) == 1 and int(stepped.info["steps"]) == 0


@pytest.mark.parametrize("name,population,block", [
    ("pointmaze-medium-jax", True, 1), ("pointmaze-medium-jax", True, 3), ("pointmaze-medium-jax", False, 4),
    ("pointmaze-umaze", False, None)])
def test_batched_auto_reset_equals_per_env_auto_reset(name, population, block):
    """make_vec's VmapAutoReset (fresh resets only for the done envs, `block` per pass of a while loop) ==
    VmapEnv(AutoReset(env)) on steps where none, some and all envs end: one pass, several, and a padded last
    block (3 of 4 envs), also under an outer vmap (a population, whose members need different numbers of passes):
    flags, counters and keys exactly, floats to rounding (XLA fuses the two programs differently). The MJX maze
    case checks the selection over a whole `mjx.Data` physics state."""
    env = envs.make(name, max_steps=3, **({"task": "random"} if "maze" in name else {}))
    batched = VmapAutoReset(env, num_envs=4, reset_block=block)
    per_env = envs.VmapEnv(AutoReset(env), num_envs=4)

    def rollout(venv, key, offsets):
        k_reset, k_act = jax.random.split(key)
        actions = jax.random.uniform(k_act, (7, 4, env.action_size), minval=-1.0, maxval=1.0)
        # env i starts offsets[i] steps into its time limit, so resets come at chosen steps
        s = venv.reset(k_reset)
        s = s.replace(info={**s.info, "steps": s.info["steps"] + jnp.array(offsets, jnp.int32)})
        return jax.lax.scan(lambda s, a: (venv.step(s, a), venv.step(s, a)), s, actions)[1]

    keys = jax.random.split(jax.random.PRNGKey(3), 2)  # raw keys, as training carries them
    staggered, together = (0, 1, 1, 1), (2, 2, 2, 2)  # steps with 0, 1 and 3 resets; steps with 4 resets
    single = jax.jit(rollout, static_argnums=0)  # offsets traced: one compile per env stack
    offsets = jnp.array([staggered, together])
    pairs = [(single(batched, keys[0], o), single(per_env, keys[0], o)) for o in offsets]
    if population:  # (MJX compiles slowly: the population case is checked on the pure-JAX maze only)
        # the members need different numbers of passes
        pairs.append((jax.jit(jax.vmap(lambda k, o: rollout(batched, k, o)))(keys, offsets),
                      jax.jit(jax.vmap(lambda k, o: rollout(per_env, k, o)))(keys, offsets)))
    resets_per_step = set()
    for one, two in pairs:
        done = np.asarray(one.terminated | one.truncated)
        assert done.any() and not done.all(axis=-1).all()  # some steps have resets, some not all envs
        resets_per_step |= set(done.sum(-1).ravel().tolist())
        def same(a, b):
            a, b = np.asarray(a), np.asarray(b)
            if np.issubdtype(a.dtype, np.floating):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
            else:
                np.testing.assert_array_equal(a, b)
        jax.tree.map(same, one, two)
    assert {0, 1, 3, 4} <= resets_per_step  # no pass, one, several, and a padded last block (block 3)


def test_success_terminates_and_does_not_truncate(rollout):
    # the goal is always within success_radius: every episode succeeds on its first step, which is also the
    # time limit's last step; termination wins.
    _, traj = rollout("pointmaze-umaze-jax", success_radius=100.0, max_steps=1)
    assert traj.terminated.all() and not traj.truncated.any()
    assert (traj.info["final_info"]["success"] == 1).all() and (traj.info["episode_success"] == 1).all()
    _, traj = rollout("pointmaze-umaze-jax", success_radius=100.0, max_steps=1, terminate_on_success=False)
    assert traj.truncated.all() and not traj.terminated.any() and (traj.info["episode_success"] == 1).all()


@pytest.mark.parametrize("kwargs", [dict(reward_type="dense", max_steps=3), dict(success_radius=1.5, max_steps=3)])
def test_episode_statistics_match_a_hand_count(rollout, kwargs):
    _, traj = rollout("pointmaze-umaze-jax", task="random", **kwargs)
    running_return, running_length = np.zeros(BATCH), np.zeros(BATCH)
    last = {"return": np.zeros(BATCH), "length": np.zeros(BATCH), "success": np.zeros(BATCH)}
    for t in range(STEPS):
        running_return += traj.reward[t]
        running_length += 1
        done = traj.terminated[t] | traj.truncated[t]
        last["return"] = np.where(done, running_return, last["return"])
        last["length"] = np.where(done, running_length, last["length"])
        last["success"] = np.where(done, traj.terminated[t], last["success"])  # mazes terminate only on success
        running_return, running_length = np.where(done, 0, running_return), np.where(done, 0, running_length)
        np.testing.assert_allclose(traj.info["episode_return"][t], last["return"], rtol=1e-5)
        np.testing.assert_array_equal(traj.info["episode_length"][t], last["length"])
        np.testing.assert_array_equal(traj.info["episode_success"][t], last["success"])
        np.testing.assert_array_equal(traj.info["episode_done"][t], done)
        np.testing.assert_allclose(traj.info["ep_return"][t], running_return, rtol=1e-5)
    assert last["length"].min() > 0  # every env completed an episode


def test_normalize_obs_whitens_a_rollout():
    env = NormalizeObs(envs.make_vec(envs.make("pointmaze-medium-jax", task="random"), 64))
    steps = 40
    first, traj = jax.device_get(jax.jit(functools.partial(_random_rollout, env, steps))(jax.random.key(2)))
    raw = np.concatenate([first.info["raw_obs"][None], traj.info["raw_obs"]]).reshape(-1, env.observation_size)
    stats = traj.info["obs_stats"]
    # the running statistics are exactly those of every observation seen
    np.testing.assert_allclose(stats["mean"][-1], raw.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats["var"][-1], raw.var(0), rtol=1e-3, atol=1e-4)
    # once they have settled (velocities are all zero at reset), emitted observations are whitened
    late = traj.obs[steps // 2:].reshape(-1, env.observation_size)
    np.testing.assert_allclose(late.mean(0), 0.0, atol=0.15)
    np.testing.assert_allclose(late.std(0), 1.0, atol=0.15)
    running = ~(traj.terminated | traj.truncated)  # where no reset happened, next_obs is the raw obs
    np.testing.assert_array_equal(traj.info["next_obs"][running], traj.info["raw_obs"][running])


# ---- point-maze physics -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("simulator", [PointMazeJax, pytest.param(PointMazeMjx, marks=pytest.mark.slow)])
def test_walls_block_the_point_mass(simulator):
    """Push at full force in 8 directions from random free cells: the sphere never crosses a wall face."""
    env = simulator(layout="medium", task="random_start")
    n_envs, steps = 16, 40
    angles = 2 * np.pi * np.arange(n_envs) / 8
    pushes = jnp.asarray(np.stack([np.cos(angles), np.sin(angles)], -1) * np.sqrt(2)).clip(-1, 1)

    def push(key, action):
        def step(state, _):
            state = env.step(state, action)
            return state, state.obs[:2]
        return jax.lax.scan(step, env.reset(key), None, length=steps)[1]

    xy = np.asarray(jax.jit(jax.vmap(push))(jax.random.split(jax.random.key(3), n_envs), pushes))
    distance = _wall_distance(env.spec, xy)
    assert distance.min() < env.radius + 0.01 * env.unit  # the pushes did reach walls
    if simulator is PointMazeJax:  # rigid walls
        assert distance.min() >= env.radius - 1e-5
    else:  # soft contacts: a hit at top speed overshoots by ~0.03 unit; pressed at rest, by ~0.001
        assert distance.min() >= env.radius - 0.04 * env.unit
        assert distance[:, -1].min() >= env.radius - 0.005 * env.unit


@pytest.mark.slow
def test_pure_jax_twin_matches_mjx_away_from_walls():
    """Along the open first corridor of the large maze, with gentle actions, the two simulators agree."""
    t = np.arange(20)
    actions = jnp.asarray(np.stack([0.6 + 0.0 * t, 0.1 * np.sin(t / 2)], -1), jnp.float32)

    def trajectory(env):
        def step(state, action):
            state = env.step(state, action)
            return state, state.obs
        return jax.lax.scan(step, env.reset(jax.random.key(4)), actions)[1]

    jax_obs, mjx_obs = (np.asarray(jax.jit(trajectory, static_argnums=0)(cls(layout="large")))
                        for cls in (PointMazeJax, PointMazeMjx))
    env = PointMazeJax(layout="large")
    assert _wall_distance(env.spec, jax_obs[:, :2]).min() > 2 * env.radius  # the test's premise: no contact
    assert np.abs(jax_obs[-1, 0] - jax_obs[0, 0]) > 1.0  # and the mass did travel
    np.testing.assert_allclose(mjx_obs, jax_obs, atol=1e-5)


def test_mjx_maze_model_is_built_from_the_layout():
    env = PointMazeMjx(layout="medium", unit=2.0)
    mj_model, _, _ = env.compiled
    assert env.compiled is PointMazeMjx(layout="medium", unit=2.0).compiled  # built once, shared by equal envs
    boxes = mj_model.geom_type == mujoco.mjtGeom.mjGEOM_BOX
    np.testing.assert_allclose(np.sort(mj_model.geom_pos[boxes, :2], 0),
                               np.sort(env.spec.cell_center(env.spec.wall_cells), 0))
    np.testing.assert_allclose(mj_model.geom_size[boxes, :2], env.unit / 2)
    agent = mj_model.geom("agent")
    assert agent.size[0] == pytest.approx(env.radius)
    assert mj_model.body("agent").mass[0] == pytest.approx(env.mass)
    np.testing.assert_allclose(mj_model.dof_damping, env.damping)
    np.testing.assert_allclose(mj_model.actuator_gear[:, 0], env.gear)
    assert mj_model.opt.timestep == pytest.approx(env.timestep)
    assert (mj_model.opt.iterations, mj_model.opt.ls_iterations) == (env.solver_iterations, env.ls_iterations)


def test_maze_start_and_goal_cells_are_parsed_and_move_the_task():
    """`start_cell` / `goal_cell` as (row, col) or "row,col" (the CLI's --env-options goal_cell=1,5)."""
    env = envs.make("pointmaze-medium-jax", start_cell="6,1", goal_cell=(1, 5))
    base = env.unwrapped
    assert base.start_cell == (6, 1) and base.goal_cell == (1, 5)
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(0), 8))
    np.testing.assert_allclose(states.obs[:, :2], np.broadcast_to(base.spec.cell_center((6, 1)), (8, 2)),
                               atol=base.start_noise + 1e-6)
    np.testing.assert_array_equal(states.obs[:, 4:], np.broadcast_to(base.spec.cell_center((1, 5)), (8, 2)))
    # random_start keeps the chosen goal; the defaults are S and G
    random_start = envs.make("pointmaze-medium-jax", task="random_start", goal_cell="1,5")
    goals = jax.jit(jax.vmap(random_start.reset))(jax.random.split(jax.random.key(1), 8)).obs[:, 4:]
    np.testing.assert_array_equal(goals, np.broadcast_to(base.spec.cell_center((1, 5)), (8, 2)))
    default = envs.make("pointmaze-medium-jax").unwrapped
    assert default.start_cell_rc == (1, 1) and default.goal_cell_rc == (6, 6)
    assert PointMazeMjx(layout="medium", start_cell="6,1", goal_cell=[1, 5]).start_cell == (6, 1)  # the MJX twin
    bad_cells = ["0,0", (3, 0), "8,1", (1, 8), (-2, 1), "1", "1,2,3", "a,b", 7]  # walls, outside, malformed
    for name in ("start_cell", "goal_cell"):
        for bad in bad_cells:
            with pytest.raises(ValueError, match=rf"{name}=.* is not a free cell \(row,col\) of the medium maze; "
                                                 r"free cells: \[\(1, 1\), \(1, 2\)"):
                envs.make("pointmaze-medium-jax", **{name: bad})


# ---- errors -----------------------------------------------------------------------------------------------------
def test_clear_errors_for_bad_names_options_layouts_and_tasks():
    with pytest.raises(ValueError, match="Unknown environment 'pointmaze-huge'.*pointmaze-umaze"):
        envs.make("pointmaze-huge")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['gravity'\].*success_radius"):
        envs.make("pointmaze-umaze", gravity=9.8)
    with pytest.raises(ValueError, match="Unknown maze task 'maze'.*random_start"):
        envs.make("pointmaze-umaze-jax", task="maze")
    with pytest.raises(ValueError, match="Unknown reward_type 'shaped'"):
        envs.make("pointmaze-large", reward_type="shaped")
    with pytest.raises(ValueError, match="Unknown maze layout 'huge'.*umaze"):
        PointMazeMjx(layout="huge")
    with pytest.raises(ValueError, match="max_steps"):
        envs.make("pointmaze-umaze-jax", max_steps=0)
    with pytest.raises(ValueError, match="num_envs"):
        envs.make_vec(envs.make("pointmaze-umaze-jax"), 0)
    for block in (0, 5):
        with pytest.raises(ValueError, match=rf"reset_block must be in \[1, num_envs=4\], got {block}"):
            VmapAutoReset(envs.make("pointmaze-umaze-jax"), num_envs=4, reset_block=block)
    with pytest.raises(ValueError, match="Unknown brax backend 'physx'"):
        envs.make("hopper", backend="physx")


@pytest.mark.slow
def test_brax_env_rejects_an_unknown_task():
    from envs.brax_envs import BraxEnv
    with pytest.raises(ValueError, match="brax has no environment 'cartpole'"):
        BraxEnv(name="cartpole")


@dataclasses.dataclass(frozen=True)
class _SineResetEnv(envs.core.Env):
    """A toy env whose reset is the only place a `sin` is computed (a 50-step scan of them, like a physics
    reset's stabilising steps), so the compiled program shows where the reset runs."""

    @property
    def observation_size(self):
        return 4

    @property
    def action_size(self):
        return 4

    def reset(self, key):
        key, start = jax.random.split(key)
        x = jax.lax.scan(lambda x, _: (jnp.sin(x) + 0.1, None), jax.random.normal(start, (4,)), None, length=50)[0]
        return envs.core.State(obs=x, reward=jnp.zeros(()), terminated=jnp.zeros((), bool),
                               truncated=jnp.zeros((), bool), info={"success": jnp.zeros(())}, physics=None, rng=key)

    def step(self, state, action):
        obs = state.obs + action
        return state.replace(obs=obs, reward=-jnp.sum(obs**2), terminated=obs[0] > 10.0)


def _straight_line_computations(hlo: str) -> tuple[set[str], dict[str, str]]:
    """(names of the computations that optimised HLO text runs on every call, {name: text} of all of them): ENTRY
    and all it calls (fusions, conditionals' branches, loops with a known trip count such as `lax.scan`), but not
    the body of a `while` whose trip count is data dependent, such as the auto-reset loop."""
    bodies, name = {}, None
    for line in hlo.splitlines():
        header = re.match(r"^(ENTRY )?%([\w.\-]+) ", line)
        if header:
            name = "ENTRY" if header.group(1) else header.group(2)
            bodies[name] = []
        elif name is not None:
            bodies[name].append(line)
    straight, todo = set(), ["ENTRY"]
    while todo:
        c = todo.pop()
        if c in straight:
            continue
        straight.add(c)
        for line in bodies[c]:
            skipped = set()
            if " while(" in line and "known_trip_count" not in line:
                skipped = set(re.findall(r"body=%([\w.\-]+)", line))
            todo += [d for d in re.findall(r"%([\w.\-]+)", line) if d in bodies and d not in skipped]
    return straight, {k: "\n".join(v) for k, v in bodies.items()}


def test_batched_auto_reset_runs_no_reset_when_no_env_is_done():
    """VmapAutoReset's reset lives inside its while loop, which makes no pass when no env is done. At num_envs=1
    (one pass, an index into a length-1 axis) XLA's loop-invariant code motion used to hoist the reset out of the
    loop, so it ran on every step (DMC cheetah-run at batch 1: 24 steps/s instead of ~1,300). Check the compiled
    step, alone and under a population vmap: the reset's `sin`s are only in the body of a while loop whose trip
    count is the number of done envs, i.e. in a computation that only a `while` reaches, not in the straight-line
    step program."""
    env = envs.make_vec(envs.TimeLimit(_SineResetEnv(), max_steps=5), 1)
    state = env.reset(jax.random.key(0))
    action = jnp.zeros((1, 4))
    programs = {"single": jax.jit(env.step).lower(state, action),
                "population": jax.jit(jax.vmap(env.step)).lower(
                    jax.tree.map(lambda x: jnp.stack([x, x]), state), jnp.stack([action, action]))}
    for label, lowered in programs.items():
        hlo = lowered.compile().as_text()
        straight, bodies = _straight_line_computations(hlo)
        sines = {c for c, body in bodies.items() if " sine(" in body}
        assert sines, f"{label}: the toy reset's sin is not in the compiled program; the check reads nothing"
        assert not sines & straight, f"{label}: the reset runs outside the auto-reset loop, on every step"
