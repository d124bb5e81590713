"""DM Control's quadruped-run on MJX, as a MuJoCo Playground env (Playground 0.2.0 ships no quadruped).

The model is DM Control's own `suite/quadruped.xml`, read from the installed `dm_control` wheel (pinned at 1.0.50,
the release for mujoco 3.17; only the file is read, nothing of dm_control is imported) and edited with
`mujoco.MjSpec` the way DM Control's `quadruped.make_model` edits it for the run task: the walls, the ball, the
target site, the terrain height field and the 20 rangefinders are removed, and the floor is 100 m square (time
limit x run speed).
`QuadrupedRun` subclasses Playground's `MjxEnv`, so `envs.dmc.DmControl` wraps it exactly as Playground's own
tasks (action repeat, float32 typing, NaN termination); `envs.make("dmc-quadruped-run")`.

The task (DM Control `quadruped.Move(desired_speed=5)`), per control step of 0.02 s (4 physics steps of 0.005 s),
1000 control steps an episode:

    reward   = upright * move
    upright  = tolerance(z_torso . z_world, bounds=(1, inf), margin=2, linear, value_at_margin=0)  # (1 + zz) / 2
    move     = tolerance(v_x, bounds=(5, inf), margin=5, linear, value_at_margin=0.5)  # v_x: torso velocimeter
    obs (78) = [hinge qpos (16), hinge qvel (16), actuator activations (12),      # egocentric_state
                torso velocimeter (3), torso zz (1), accelerometer (3), gyro (3),  # velocity, upright, imu
                arcsinh(toe forces (12), toe torques (12))]                        # force_torque

Reset, as DM Control's `initialize_episode`: a uniformly random orientation (a normalised Gaussian quaternion),
joints at their reference pose, zero velocity and activations, and the torso dropped at the lowest height
(on a 1 cm grid from 0) at which no geom touches the floor.

Where this departs from DM Control:
- Observations and rewards are read from the data after the step, as in every Playground port: MJX's step
  (like `mj_step`) leaves the position and velocity sensors (velocimeter, gyro) and `xmat` at the last substep's
  state before integration. DM Control's `Physics.step` (dm_control 1.0.50, `mujoco/engine.py`,
  `_step_with_up_to_date_position_velocity`, for any integrator but RK4) ends with `mj_step1`, which brings them
  up to date with the new qpos and qvel: its upright, velocimeter and gyro are one substep (5 ms) fresher.
  Acceleration sensors (accelerometer, toe force/torque) are the last substep's in both.
- Physics is MJX's JAX solver, not MuJoCo C (20 steps from the same state and controls agree to 1e-6 in qpos;
  force/torque sensors differ by up to ~2e-5 of their scale, from the contact solver).
- DM Control finds the drop height by stepping z up in 1 cm increments and calling MuJoCo's collision detection
  until no contact remains (a host loop). Here the height is computed in closed form from the geoms' lowest
  points at the chosen orientation (spheres, capsules, cylinders and ellipsoids against the floor plane) and
  rounded up to the same 1 cm grid, so the reset stays one jitted function; `tests/test_dmc.py` checks it against
  MuJoCo C's contacts: none at the computed height, some a centimetre lower. Contacts between the robot's own
  geoms are not part of the search: the reference pose has none (also checked there).
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any, Dict, Optional, Union

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from ml_collections import config_dict
from mujoco import mjx
from mujoco_playground._src import mjx_env, reward

RUN_SPEED = 5.0  # m/s above which the move reward is 1 (DM Control's _RUN_SPEED)
FLOOR_HALF_SIZE = 100.0  # DM Control: time limit (20 s) x run speed
HEIGHT_GRID = 0.01  # DM Control raises the torso in 1 cm increments until nothing touches the floor
REMOVED_GEOMS = ("wall_px", "wall_py", "wall_nx", "wall_ny", "terrain")


def default_config() -> config_dict.ConfigDict:
    return config_dict.create(ctrl_dt=0.02, sim_dt=0.005, episode_length=1000, action_repeat=1, impl="jax")


def dm_control_xml() -> pathlib.Path:
    """DM Control's quadruped.xml inside the installed wheel, found without importing dm_control."""
    found = importlib.util.find_spec("dm_control")
    if found is None or not found.submodule_search_locations:
        raise ImportError("dmc-quadruped-run reads DM Control's quadruped.xml from the `dm_control` package, which is "
                          "not installed: run `make` (requirements.lock pins it) or `pip install --no-deps dm-control==1.0.50`.")
    return pathlib.Path(found.submodule_search_locations[0]) / "suite" / "quadruped.xml"


def run_model() -> mujoco.MjModel:
    """The run task's model: DM Control's MJCF minus walls, ball, target, terrain and rangefinders."""
    spec = mujoco.MjSpec.from_file(str(dm_control_xml()))
    for name in REMOVED_GEOMS:
        spec.delete(spec.geom(name))
    spec.delete(spec.body("ball"))
    spec.delete(spec.site("target"))
    spec.delete(spec.hfield("terrain"))
    for sensor in list(spec.sensors):
        if sensor.type == mujoco.mjtSensor.mjSENS_RANGEFINDER:
            spec.delete(sensor)
    spec.geom("floor").size = [FLOOR_HALF_SIZE, FLOOR_HALF_SIZE, 0.5]
    return spec.compile()


def lowest_points(data: mjx.Data, robot_geoms: np.ndarray, mj_model: mujoco.MjModel) -> jax.Array:
    """World z of the lowest point of each geom in `robot_geoms` (host indices), from the kinematics in `data`
    (geom_xpos, geom_xmat)."""
    z = data.geom_xpos[robot_geoms, 2]
    axis_z = data.geom_xmat[robot_geoms, 2, :]  # row 2 of each rotation: the world z of the geom's local axes
    size = mj_model.geom_size[robot_geoms]
    kind = mj_model.geom_type[robot_geoms]
    radius, half_length = size[:, 0], size[:, 1]
    sphere = radius
    capsule = jnp.abs(axis_z[:, 2]) * half_length + radius
    cylinder = jnp.abs(axis_z[:, 2]) * half_length + radius * jnp.sqrt(jnp.clip(1.0 - axis_z[:, 2] ** 2, 0.0))
    ellipsoid = jnp.sqrt(jnp.sum((axis_z * size) ** 2, axis=1))
    extent = jnp.select([kind == int(mujoco.mjtGeom.mjGEOM_SPHERE), kind == int(mujoco.mjtGeom.mjGEOM_CAPSULE),
                         kind == int(mujoco.mjtGeom.mjGEOM_CYLINDER)], [sphere, capsule, cylinder], ellipsoid)
    return z - extent


class QuadrupedRun(mjx_env.MjxEnv):
    """DM Control's quadruped-run (see the module docstring) with Playground's env interface."""

    def __init__(self, config: config_dict.ConfigDict = default_config(),
                 config_overrides: Optional[Dict[str, Union[str, int, list[Any]]]] = None):
        super().__init__(config, config_overrides)
        self._xml_path = dm_control_xml().as_posix()
        self._mj_model = run_model()
        self._mj_model.opt.timestep = self.sim_dt
        self._mjx_model = mjx.put_model(self._mj_model, impl=self._config.impl)
        m = self._mj_model
        supported = {int(mujoco.mjtGeom.mjGEOM_SPHERE), int(mujoco.mjtGeom.mjGEOM_CAPSULE),
                     int(mujoco.mjtGeom.mjGEOM_CYLINDER), int(mujoco.mjtGeom.mjGEOM_ELLIPSOID)}
        self._robot_geoms = np.flatnonzero(m.geom_bodyid != 0)  # every geom but the floor
        if not all(int(m.geom_type[g]) in supported for g in self._robot_geoms):
            raise ValueError("quadruped.xml has a geom type the drop-height search does not handle")
        hinge = [j for j in range(m.njnt) if int(m.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_HINGE)]
        self._hinge_qpos = jnp.asarray(m.jnt_qposadr[hinge])
        self._hinge_qvel = jnp.asarray(m.jnt_dofadr[hinge])
        self._root_qpos = int(m.jnt_qposadr[m.joint("root").id])
        self._torso = m.body("torso").id

        def sensor_rows(*kinds):
            wanted = {int(k) for k in kinds}
            ids = [s for s in range(m.nsensor) if int(m.sensor_type[s]) in wanted]  # model order, as DM Control
            return jnp.asarray([m.sensor_adr[s] + i for s in ids for i in range(m.sensor_dim[s])])

        self._imu = sensor_rows(mujoco.mjtSensor.mjSENS_GYRO, mujoco.mjtSensor.mjSENS_ACCELEROMETER)
        self._force_torque = sensor_rows(mujoco.mjtSensor.mjSENS_FORCE, mujoco.mjtSensor.mjSENS_TORQUE)
        self._velocimeter = sensor_rows(mujoco.mjtSensor.mjSENS_VELOCIMETER)

    def drop_height(self, qpos: jax.Array) -> jax.Array:
        """The lowest torso height on DM Control's 1 cm grid (from 0) at which no robot geom reaches below the
        floor, for `qpos` with the torso at the origin."""
        data = mjx.kinematics(self.mjx_model, mjx.make_data(self._mj_model, impl="jax").replace(qpos=qpos))
        depth = -jnp.min(lowest_points(data, self._robot_geoms, self._mj_model))
        return jnp.where(depth < 0.0, 0.0, (jnp.floor(depth / HEIGHT_GRID) + 1.0) * HEIGHT_GRID)

    def reset(self, rng: jax.Array) -> mjx_env.State:
        rng, orientation_key = jax.random.split(rng)
        orientation = jax.random.normal(orientation_key, (4,))
        orientation = orientation / jnp.linalg.norm(orientation)
        root = self._root_qpos
        qpos = jnp.asarray(self._mj_model.qpos0).at[root:root + 3].set(0.0).at[root + 3:root + 7].set(orientation)
        qpos = qpos.at[root + 2].set(self.drop_height(qpos))
        data = mjx.forward(self.mjx_model, mjx_env.make_data(self._mj_model, qpos=qpos, impl="jax"))
        obs = self._get_obs(data)
        return mjx_env.State(data, obs, jnp.zeros(()), jnp.zeros(()), {}, {"rng": rng})

    def step(self, state: mjx_env.State, action: jax.Array) -> mjx_env.State:
        data = mjx_env.step(self.mjx_model, state.data, action, self.n_substeps)
        done = (jnp.isnan(data.qpos).any() | jnp.isnan(data.qvel).any()).astype(float)
        return mjx_env.State(data, self._get_obs(data), self._get_reward(data), done, state.metrics, state.info)

    def _upright(self, data: mjx.Data) -> jax.Array:
        return data.xmat[self._torso, 2, 2]

    def _get_obs(self, data: mjx.Data) -> jax.Array:
        sensors = data.sensordata
        return jnp.concatenate([data.qpos[self._hinge_qpos], data.qvel[self._hinge_qvel], data.act,
                                sensors[self._velocimeter], self._upright(data)[None], sensors[self._imu],
                                jnp.arcsinh(sensors[self._force_torque])])

    def _get_reward(self, data: mjx.Data) -> jax.Array:
        upright = reward.tolerance(self._upright(data), bounds=(1.0, float("inf")), margin=2.0,
                                   sigmoid="linear", value_at_margin=0.0)
        move = reward.tolerance(data.sensordata[self._velocimeter][0], bounds=(RUN_SPEED, float("inf")),
                                margin=RUN_SPEED, sigmoid="linear", value_at_margin=0.5)
        return upright * move

    @property
    def xml_path(self) -> str:
        return self._xml_path

    @property
    def action_size(self) -> int:
        return self._mjx_model.nu

    @property
    def mj_model(self) -> mujoco.MjModel:
        return self._mj_model

    @property
    def mjx_model(self) -> mjx.Model:
        return self._mjx_model
