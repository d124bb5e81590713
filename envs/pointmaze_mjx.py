"""The point maze simulated by MuJoCo MJX (JAX implementation), its MJCF generated from the layout string.

Any layout the pure-JAX twin takes works here (`envs.make("pointmaze", layout="<rows>")`): the MJCF is written
from the layout's rows and compiled once per distinct MJCF (`compile_mjcf`, keyed by the MJCF text itself).

The scene (`maze_mjcf`) lies in the xy plane: one static box per `#` cell, and the agent, a sphere of radius
`0.1 * unit` on two slide joints (x, y) with joint damping, driven by two motors of gear `gear`. Nothing is read
from disk or downloaded. Task semantics (observation, reward, success, termination, start/goal sampling) are
inherited from `PointMazeBase`, so this env and the pure-JAX twin `PointMazeJax` differ only in how walls act.

Integrator: MuJoCo's Euler with implicit joint damping, the update `PointMazeBase` documents; away from walls the
two simulators agree to float precision. Walls are frictionless soft contacts (condim 1) with MuJoCo's default
solref/solimp: hitting a wall at top speed (gear / damping = 2 units/s) the sphere overshoots into it by up to
~0.03 unit for a step, and pressed against it at rest it sinks ~0.001 unit; it never passes through.

Speed. Contacts dominate the cost. Measured on a 2-core CPU, large maze, batch 512: MuJoCo's default solver
(100 Newton iterations, 50 line-search steps) with every wall collided ran 2.9k steps/s; the pinned settings below
run ~60k (the wall cull alone is worth ~4.5x). What is pinned in the MJCF, and why it is safe:

- Newton solver, `iterations=1`, `ls_iterations=4`. With two degrees of freedom and a handful of frictionless
  contacts the constrained problem is a tiny piecewise quadratic; one Newton step with its line search gets the
  walls right (tested: the sphere never crosses a wall face by more than a soft-contact tolerance).
- Only the `max_geom_pairs = 3` walls nearest the agent are collided each step (MJX's broad phase ranks wall
  boxes by centre distance minus bounding radius, the same radius for all unit boxes). This is exact, not an
  approximation: a wall cell the sphere touches has its centre within `(sqrt(2)/2 + 0.1) * unit < unit` of the
  sphere's centre, a disc that holds at most four cell centres, one of which is the agent's own free cell.
  Merging wall runs into long boxes would cut the pair count but break that ranking (a long box's bounding
  sphere is huge), and without the cull it measured slower, so walls stay one box per cell.
- No warm start: the physics state is exactly (qpos, qvel), as in the pure-JAX twin, so a reset needs no
  `mjx.forward` and auto-reset selects between two tiny pytrees.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx

from envs.mjcf import compile_mjcf
from envs.pointmaze import MazeSpec, PointMazeBase


def maze_mjcf(layout: str, unit: float, radius: float, mass: float, damping: float, gear: float, timestep: float,
              solver_iterations: int, ls_iterations: int, max_geom_pairs: int) -> str:
    """MJCF of a maze (`layout`: a registered name or a layout string, see `envs.pointmaze.parse_layout`). Cell
    (row, col) is centred at (x, y) = (col * unit, row * unit), as in `MazeSpec`; walls span z in [-unit/2, unit/2];
    the agent's sphere sits at z = 0 and its slide-joint positions ARE x and y."""
    spec = MazeSpec(layout, unit)
    half = unit / 2
    walls = "\n    ".join(
        f'<geom name="wall_{row}_{col}" type="box" pos="{x} {y} 0" size="{half} {half} {half}"/>'
        for (row, col), (x, y) in zip(spec.wall_cells, spec.cell_center(spec.wall_cells).tolist()))
    return f"""<mujoco model="pointmaze-{spec.name}-{spec.digest}">
  <option timestep="{timestep}" integrator="Euler" gravity="0 0 0" solver="Newton" cone="pyramidal"
          iterations="{solver_iterations}" ls_iterations="{ls_iterations}">
    <flag warmstart="disable" frictionloss="disable" limit="disable" equality="disable"/>
  </option>
  <custom>
    <numeric name="max_geom_pairs" data="{max_geom_pairs}"/>
  </custom>
  <default>
    <geom condim="1" contype="1" conaffinity="1"/>
  </default>
  <worldbody>
    {walls}
    <body name="agent">
      <inertial pos="0 0 0" mass="{mass}" diaginertia="1 1 1"/>
      <joint name="x" type="slide" axis="1 0 0" damping="{damping}"/>
      <joint name="y" type="slide" axis="0 1 0" damping="{damping}"/>
      <geom name="agent" type="sphere" size="{radius}"/>
    </body>
  </worldbody>
  <actuator>
    <motor joint="x" gear="{gear}" ctrlrange="-1 1" ctrllimited="true"/>
    <motor joint="y" gear="{gear}" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""


@dataclasses.dataclass(frozen=True)
class PointMazeMjx(PointMazeBase):
    """Point maze on MuJoCo MJX. Physics state: `{"qpos": (2,), "qvel": (2,)}`, the agent's position and velocity.

    The solver fields are pinned for speed (see the module docstring); raise them to check that a result does not
    depend on them. `max_geom_pairs` below 3 is not exact.
    """

    solver_iterations: int = 1
    ls_iterations: int = 4
    max_geom_pairs: int = 3

    @property
    def mjcf(self) -> str:
        return maze_mjcf(self.layout, self.unit, self.radius, self.mass, self.damping, self.gear, self.timestep,
                         self.solver_iterations, self.ls_iterations, self.max_geom_pairs)

    @property
    def compiled(self) -> tuple[mujoco.MjModel, mjx.Model, mjx.Data]:
        """(MjModel, mjx.Model, blank mjx.Data) of this maze, built on first use and cached per distinct MJCF."""
        return compile_mjcf(self.mjcf)

    def init_physics(self, pos):
        return {"qpos": pos.astype(jnp.float32), "qvel": jnp.zeros(2, jnp.float32)}

    def pos_vel(self, physics):
        return physics["qpos"], physics["qvel"]

    def physics_step(self, physics, action):
        _, model, blank = self.compiled
        data = blank.replace(qpos=physics["qpos"], qvel=physics["qvel"], ctrl=action)

        def substep(data, _):
            return mjx.step(model, data), None

        data, _ = jax.lax.scan(substep, data, None, length=self.frame_skip)
        return {"qpos": data.qpos, "qvel": data.qvel}
