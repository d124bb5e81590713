"""DeepMind Control Suite tasks from MuJoCo Playground (`playground==0.2.0`, module `mujoco_playground`) behind
headstart's functional env API.

`DmControl(task)` wraps the bare `mujoco_playground.dm_control_suite.load(task)` with `impl="jax"` (MJX's JAX
implementation; Playground's own default, "warp", needs NVIDIA Warp). Only Playground's DM Control suite is
imported: its MJCF files ship inside the wheel, so nothing is downloaded. (Playground's locomotion and
manipulation envs are built on MuJoCo Menagerie, which Playground `git clone`s on first use: headstart never
imports them.) `envs.make` adds our `TimeLimit`, and `make_vec` our `AutoReset`/`VmapEnv`/`EpisodeStats`.

Registered names (envs/__init__.py), Playground's task in brackets: dmc-cheetah-run (CheetahRun), dmc-walker-walk
(WalkerWalk), dmc-hopper-hop (HopperHop), dmc-humanoid-stand (HumanoidStand). Playground 0.2.0, the newest
release on the index, has no quadruped (its `dm_control_suite.ALL_ENVS` lists none): dmc-quadruped-run
(QuadrupedRun) is headstart's port of DM Control's task in Playground's env interface, `envs/dmc_quadruped.py`
(DM Control's own MJCF, read from the pinned `dm_control` wheel).

Where this departs from DM Control (dm_control's `suite.load`):
- Physics is Playground's port: same MJCF and rewards, MJX's JAX solver; Playground steps humanoid at
  sim_dt 0.005 (DM Control: 0.0025). Control steps (ctrl_dt) are DM Control's: cheetah 0.01 s, walker and
  humanoid 0.025 s, hopper 0.02 s.
- Action repeat: one `step` applies the action for `action_repeat` control steps and returns the SUM of their
  rewards (each in [0, 1], so a step's reward is in [0, action_repeat]). Default 2, DrQ-v2's setting for every
  DMC task (Yarats et al., 2021); DrQ (Kostrikov et al., 2020) used 2-8 per task, and state-based SAC papers
  (pytorch_sac, REDQ/DroQ-style setups) mostly use 1: pass `action_repeat=1` (`--env-options
  action_repeat=1`). An episode is DM Control's 1000 control steps, i.e. `1000 // action_repeat` of our steps
  (`default_max_steps`; `envs.make(..., max_steps=)` overrides). Experiments count OUR steps, not control steps.
- Observations are Playground's: one flat float32 vector (DM Control's observation dict concatenated).
- `terminated` is Playground's `done`, which is set only when the physics state turns NaN (DM Control tasks
  never terminate otherwise); control steps after a NaN within one repeat add no reward. `truncated` is always
  False here (`TimeLimit` sets it).
- `info` is `{"success": 0.0}` (no success notion); `physics` is Playground's whole `State` (its `data.time` is
  the simulated time, which resets to 0 at every reset).

Actions are clipped to [-1, 1], the control range of every DM Control actuator.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib

import jax
import jax.numpy as jnp

from envs.core import Env, State

# Tasks Playground lacks, ported here in its env interface (module:class, imported when made)
HEADSTART_TASKS = {"QuadrupedRun": "envs.dmc_quadruped:QuadrupedRun"}
EPISODE_CONTROL_STEPS = 1000  # DM Control's episode: 1000 control steps (cheetah: 10 s of simulated time)


@functools.lru_cache(maxsize=None)
def playground_environment(task: str):
    """The bare Playground env with MJX's JAX implementation, built once per task (under
    `ensure_compile_time_eval`, so its model arrays are concrete even when first built inside a trace)."""
    from mujoco_playground import dm_control_suite  # heavy import, only when a DMC env is made

    if task not in (*dm_control_suite.ALL_ENVS, *HEADSTART_TASKS):
        raise ValueError(f"MuJoCo Playground has no DM Control task {task!r}; it has "
                         f"{list(dm_control_suite.ALL_ENVS)}, and headstart adds {list(HEADSTART_TASKS)}.")
    with jax.ensure_compile_time_eval():
        if task in HEADSTART_TASKS:
            module, name = HEADSTART_TASKS[task].split(":")
            return getattr(importlib.import_module(module), name)()
        return dm_control_suite.load(task, config_overrides={"impl": "jax"})


@dataclasses.dataclass(frozen=True)
class DmControl(Env):
    """A DM Control task from MuJoCo Playground; see the module docstring for the mapping and the departures."""

    task: str
    action_repeat: int = 2

    def __post_init__(self):
        if not (isinstance(self.action_repeat, int) and self.action_repeat >= 1):
            raise ValueError(f"action_repeat must be a positive integer, got {self.action_repeat!r}.")
        self.playground_env  # builds (and caches) the Playground env now, so that a bad task fails here

    @property
    def playground_env(self):
        return playground_environment(self.task)

    @property
    def default_max_steps(self) -> int:
        return EPISODE_CONTROL_STEPS // self.action_repeat

    @property
    def control_dt(self) -> float:
        """Simulated seconds per control step (Playground's ctrl_dt); one of our steps is action_repeat of them."""
        return self.playground_env.dt

    @functools.cached_property
    def observation_size(self) -> int:
        return jax.eval_shape(self.reset, jax.random.PRNGKey(0)).obs.shape[-1]

    @property
    def action_size(self) -> int:
        return self.playground_env.action_size

    def reset(self, key):
        key, reset_key = jax.random.split(key)
        physics = self._typed(self.playground_env.reset(reset_key))
        return State(obs=physics.obs, reward=jnp.zeros((), jnp.float32), terminated=physics.done > 0.5,
                     truncated=jnp.zeros((), bool), info={"success": jnp.zeros((), jnp.float32)}, physics=physics,
                     rng=key)

    def step(self, state, action):
        action = jnp.clip(action, -1.0, 1.0)

        def control_step(carry, _):
            physics, total = carry
            stepped = jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype),
                                   self.playground_env.step(physics, action), physics)
            alive = physics.done < 0.5  # after a NaN the physics is not stepped again and earns nothing
            physics = jax.tree.map(lambda new, old: jnp.where(alive, new, old), stepped, physics)
            return (physics, total + jnp.where(alive, stepped.reward, 0.0)), None

        (physics, reward), _ = jax.lax.scan(control_step, (state.physics, jnp.zeros((), jnp.float32)), None,
                                            length=self.action_repeat)
        return state.replace(obs=physics.obs, reward=reward, terminated=physics.done > 0.5,
                             truncated=jnp.zeros((), bool), info={**state.info, "success": jnp.zeros((), jnp.float32)},
                             physics=physics)

    @staticmethod
    def _typed(physics):
        """Playground's reward and done come back as Python/float64-ish scalars: fix them to float32 so that
        every step keeps the reset's dtypes (auto-reset selects leaf by leaf between the two)."""
        return physics.replace(obs=jnp.asarray(physics.obs, jnp.float32),
                               reward=jnp.asarray(physics.reward, jnp.float32),
                               done=jnp.asarray(physics.done, jnp.float32))
