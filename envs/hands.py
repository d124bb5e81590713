"""A touch-sensing three-fingered hand in MuJoCo MJX (JAX implementation): grasp and lift a randomized ball.

Seed: Lin, Zhang, Li, Qi, Yi, Levine, Malik, "Learning Visuotactile Skills with Two Multifingered Hands" (HATO,
2024). The paper's hardware is two UR5e arms with Psyonic Ability hands (5 fingers, 6 touch sensors per finger,
30 per hand, 60 in all: `RT_DIM["touch"] = 60` in the reference's learning/dp/pipeline.py). Here, in simulation:

- ONE hand, written in MJCF in this file (nothing is downloaded or read from disk): a palm on three slide joints
  (x, y, z: the "arm"), and three fingers at 120 degrees around it, each with two hinge joints (proximal,
  distal) closing towards the palm axis. 9 actuated degrees of freedom, all position-controlled (`position`
  actuators), like the reference whose actions are absolute joint targets.
- Touch: one MuJoCo `<touch>` sensor per phalanx (proximal and distal pad of each finger: 6 sensors, `TOUCH_LAYOUT`).
  A touch sensor sums the normal force of the contacts of its body that fall inside its site's volume; MJX's JAX
  backend implements it on mujoco-mjx 3.17.0 (`mjx._src.sensor`, SensorType.TOUCH; tested in tests/test_hands.py:
  a free finger reads 0, a finger pressing the ball reads > 0). Readings are in newtons.
- Task `lift` (the paper's pick-up family, with the slippery-handover twist of randomized physics): a ball of
  randomized radius, mass and friction lies on the floor at a random (x, y); lift it `lift_height` above its rest
  height. Its position is observed with noise and is LOST (zeros, visibility flag 0) once the palm is within
  `occlusion_radius` of it, as when the closing fingers hide it from a camera. The object pose stands in for
  HATO's images (a 4-vector, not pixels: said plainly, there is no vision here).
- A Shadow Hand ships in the mujoco-mjx wheel; it was NOT tried (not measured): with 24 joints and mesh contacts
  it would cost more than this hand, whose one MJX program already takes 50-130 s to compile on the 2-core CPU.
  This hand uses only capsules and spheres (cheap analytic collisions).
- Known limitation: the palm starts at 0.2 +- 0.02 m, so the open fingertips hang at the height of a large ball;
  when the ball lies near the finger circle a finger can brush it during the approach (touch > 0 before the
  grasp). The scripted expert still succeeds in 93% of 100 episodes; a higher `start_height` removes this.

Observation (float32, `OBS_LAYOUT`): hand joint positions (9), hand joint velocities (9), touch (6), object
position as seen (3, zero when occluded), visibility flag (1) -> 28. Action: 9 numbers in [-1, 1] mapped
linearly onto each actuator's control range (palm x, y, z targets in metres; finger joint targets in radians).
Reward: 1 on success else 0. Success: ball centre `lift_height` above its rest height; the episode terminates on
success and is truncated by `TimeLimit` (added by `envs.make`).

Physics: timestep 4 ms, `frame_skip` 10 (control at 25 Hz), MuJoCo's CG solver with pinned iterations (4, line
search 8; Newton compiled no faster here: 64 s for a jitted step vs 47 s with CG), pyramidal friction cone, condim 3
for finger/ball contacts (friction is what holds the ball), floor-finger and palm collisions disabled
(contype/conaffinity) so that only ball contacts are computed. The physics state is the whole `mjx.Data` plus the
episode's randomized ball parameters.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx

from envs.mjcf import compile_mjcf
from envs.core import Env, State

FINGERS = ("f0", "f1", "f2")
PHALANGES = ("proximal", "distal")
TOUCH_LAYOUT = tuple(f"{f}_{p}" for f in FINGERS for p in PHALANGES)
JOINTS = ("palm_x", "palm_y", "palm_z") + tuple(f"{f}_{p}" for f in FINGERS for p in PHALANGES)
OBS_LAYOUT = {"qpos": (0, 9), "qvel": (9, 18), "touch": (18, 24), "object": (24, 27), "visible": (27, 28)}
# actuator control ranges (lo, hi): palm targets in metres, finger joint targets in radians
CTRL_RANGE = ((-0.12, 0.12), (-0.12, 0.12), (0.0, 0.3)) + ((-0.2, 1.4),) * 6

PALM_RADIUS = 0.07      # finger bases on a circle of this radius
PROXIMAL, DISTAL = 0.06, 0.05
FINGER_WIDTH = 0.01


def hand_mjcf(timestep: float, solver: str, solver_iterations: int, ls_iterations: int, finger_kp: float,
              palm_kp: float) -> str:
    """The MJCF of the hand and the ball. Ball geometry/mass/friction in the file are nominal: `HandLift` writes
    each episode's values into the MJX model (geom_size, body_mass, geom_friction) before stepping."""
    fingers = []
    for i, name in enumerate(FINGERS):
        theta = 2 * math.pi * i / len(FINGERS)
        x, y = PALM_RADIUS * math.cos(theta), PALM_RADIUS * math.sin(theta)
        # local frame: finger hangs along -z, closes by rotating about local +y, which moves its tip towards -x
        # (the palm axis) since the body is turned by theta about z
        fingers.append(f"""
      <body name="{name}" pos="{x:.5f} {y:.5f} -0.02" euler="0 0 {theta:.5f}" gravcomp="1">
        <joint name="{name}_proximal" type="hinge" axis="0 1 0" range="-0.2 1.4" damping="0.2" armature="0.005"/>
        <geom name="{name}_proximal" type="capsule" fromto="0 0 0 0 0 -{PROXIMAL}" size="{FINGER_WIDTH}"/>
        <site name="{name}_proximal" type="box" pos="0 0 -{PROXIMAL / 2}" size="0.02 0.02 {PROXIMAL / 2 + 0.01}"/>
        <body name="{name}_distal" pos="0 0 -{PROXIMAL}" gravcomp="1">
          <joint name="{name}_distal" type="hinge" axis="0 1 0" range="-0.2 1.4" damping="0.2" armature="0.005"/>
          <geom name="{name}_distal" type="capsule" fromto="0 0 0 0 0 -{DISTAL}" size="{FINGER_WIDTH}"/>
          <site name="{name}_distal" type="box" pos="0 0 -{DISTAL / 2}" size="0.02 0.02 {DISTAL / 2 + 0.012}"/>
        </body>
      </body>""")
    actuators = "\n    ".join(
        f'<position joint="{j}" kp="{palm_kp if j.startswith("palm") else finger_kp}" ctrlrange="{lo} {hi}" '
        f'ctrllimited="true"/>' for j, (lo, hi) in zip(JOINTS, CTRL_RANGE))
    touch = "\n    ".join(f'<touch name="{s}" site="{s}"/>' for s in TOUCH_LAYOUT)
    return f"""<mujoco model="hato-hand-lift">
  <compiler angle="radian"/>
  <option timestep="{timestep}" solver="{solver}" cone="pyramidal" iterations="{solver_iterations}"
          ls_iterations="{ls_iterations}">
    <flag eulerdamp="disable"/>
  </option>
  <default>
    <geom contype="2" conaffinity="0" condim="3" friction="1 0.005 0.0001" density="300"/>
  </default>
  <worldbody>
    <geom name="floor" type="plane" size="1 1 0.1" contype="1" conaffinity="1"/>
    <body name="palm" pos="0 0 0" gravcomp="1">
      <joint name="palm_x" type="slide" axis="1 0 0" damping="40"/>
      <joint name="palm_y" type="slide" axis="0 1 0" damping="40"/>
      <joint name="palm_z" type="slide" axis="0 0 1" damping="40"/>
      <geom name="palm" type="cylinder" size="{PALM_RADIUS + 0.01} 0.01" contype="0" conaffinity="0" mass="0.5"/>
      {''.join(fingers)}
    </body>
    <body name="ball" pos="0 0 0.04">
      <freejoint name="ball"/>
      <geom name="ball" type="sphere" size="0.04" mass="0.1" contype="1" conaffinity="3"/>
    </body>
  </worldbody>
  <actuator>
    {actuators}
  </actuator>
  <sensor>
    {touch}
  </sensor>
</mujoco>
"""


@dataclasses.dataclass(frozen=True)
class HandLift(Env):
    """Grasp and lift a ball with a three-fingered touch-sensing hand (see the module docstring).

    Randomized per episode: ball (x, y) in +-`object_range`, radius, mass and friction in the given ranges, the
    palm's start offset. `touch=False` zeroes the touch block of the observation (same shape: the ablation).
    """

    timestep: float = 0.004
    frame_skip: int = 10
    solver: str = "CG"
    solver_iterations: int = 4
    ls_iterations: int = 8
    finger_kp: float = 4.0
    palm_kp: float = 400.0
    object_range: float = 0.04
    radius_range: tuple[float, float] = (0.03, 0.045)
    mass_range: tuple[float, float] = (0.05, 0.25)
    friction_range: tuple[float, float] = (0.4, 1.0)
    lift_height: float = 0.08
    occlusion_radius: float = 0.1
    position_noise: float = 0.005
    start_height: float = 0.2
    touch: bool = True
    default_max_steps: int = 80

    @property
    def control_rate(self) -> float:
        return 1.0 / (self.timestep * self.frame_skip)

    @property
    def compiled(self):
        return compile_mjcf(hand_mjcf(self.timestep, self.solver, self.solver_iterations, self.ls_iterations,
                                      self.finger_kp, self.palm_kp))

    @property
    def observation_size(self) -> int:
        return OBS_LAYOUT["visible"][1]

    @property
    def action_size(self) -> int:
        return len(JOINTS)

    def _ids(self):
        mj, _, _ = self.compiled
        name = lambda kind, n: mujoco.mj_name2id(mj, kind, n)
        return name(mujoco.mjtObj.mjOBJ_GEOM, "ball"), name(mujoco.mjtObj.mjOBJ_BODY, "ball")

    def _model(self, params):
        """The MJX model with this episode's ball radius, mass and friction written in."""
        _, model, _ = self.compiled
        geom, body = self._ids()
        return model.replace(
            geom_size=model.geom_size.at[geom, 0].set(params["radius"]),
            geom_rbound=model.geom_rbound.at[geom].set(params["radius"]),
            body_mass=model.body_mass.at[body].set(params["mass"]),
            body_inertia=model.body_inertia.at[body].set(0.4 * params["mass"] * params["radius"] ** 2),
            geom_friction=model.geom_friction.at[geom, 0].set(params["friction"]))

    def action_to_ctrl(self, action):
        lo, hi = jnp.asarray(CTRL_RANGE, jnp.float32).T
        return lo + (jnp.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (hi - lo)

    def ctrl_to_action(self, ctrl):
        lo, hi = jnp.asarray(CTRL_RANGE, jnp.float32).T
        return jnp.clip(2.0 * (ctrl - lo) / (hi - lo) - 1.0, -1.0, 1.0)

    def _observe(self, data, params, key):
        ball = data.qpos[9:12]
        palm = data.qpos[0:3]
        visible = jnp.linalg.norm(ball - palm) > self.occlusion_radius
        seen = jnp.where(visible, ball + self.position_noise * jax.random.normal(key, (3,)), 0.0)
        touch = data.sensordata[:len(TOUCH_LAYOUT)] * (1.0 if self.touch else 0.0)
        obs = jnp.concatenate([data.qpos[:9], data.qvel[:9], touch, seen, visible[None].astype(jnp.float32)])
        return obs.astype(jnp.float32)

    def reset(self, key):
        k_xy, k_r, k_m, k_f, k_palm, k_obs, rng = jax.random.split(key, 7)
        uniform = lambda k, lohi: jax.random.uniform(k, (), minval=lohi[0], maxval=lohi[1])
        params = {"radius": uniform(k_r, self.radius_range), "mass": uniform(k_m, self.mass_range),
                  "friction": uniform(k_f, self.friction_range)}
        xy = jax.random.uniform(k_xy, (2,), minval=-self.object_range, maxval=self.object_range)
        palm = jnp.array([0.0, 0.0, self.start_height]) + jax.random.uniform(k_palm, (3,), minval=-0.02, maxval=0.02)
        _, _, blank = self.compiled
        model = self._model(params)
        qpos = jnp.concatenate([palm, jnp.zeros(6), xy, params["radius"][None], jnp.array([1.0, 0.0, 0.0, 0.0])])
        ctrl = jnp.concatenate([palm, jnp.zeros(6)])
        # no mjx.forward here (it would double the compile time): the first `mjx.step` computes positions,
        # contacts and sensors from qpos; at reset the fingers are open and off the ball, so touch reads 0
        data = blank.replace(qpos=qpos.astype(jnp.float32), ctrl=ctrl.astype(jnp.float32))
        physics = {"data": data, "params": params}
        info = {"success": jnp.zeros((), jnp.float32), "lift": jnp.zeros((), jnp.float32)}
        zero = jnp.zeros((), jnp.float32)
        return State(obs=self._observe(data, params, k_obs), reward=zero, terminated=jnp.zeros((), bool),
                     truncated=jnp.zeros((), bool), info=info, physics=physics, rng=rng)

    def step(self, state, action):
        params = state.physics["params"]
        model = self._model(params)
        data = state.physics["data"].replace(ctrl=self.action_to_ctrl(action).astype(jnp.float32))
        data, _ = jax.lax.scan(lambda d, _: (mjx.step(model, d), None), data, None, length=self.frame_skip)
        rng, k_obs = jax.random.split(state.rng)
        lift = data.qpos[11] - params["radius"]
        success = (lift >= self.lift_height).astype(jnp.float32)
        return State(obs=self._observe(data, params, k_obs), reward=success, terminated=success > 0,
                     truncated=jnp.zeros((), bool), info={"success": success, "lift": lift},
                     physics={"data": data, "params": params}, rng=rng)


def expert_init() -> dict:
    """The scripted expert's carry: phase, steps spent in it, and the grip target fixed at first contact."""
    return {"phase": jnp.zeros((), jnp.int32), "timer": jnp.zeros((), jnp.int32), "grip": jnp.zeros(())}


def scripted_expert(env: HandLift, state: State, carry: dict, key: jax.Array, noise: float = 0.03,
                    squeeze: float = 0.3):
    """One step of the scripted grasp (standing in for HATO's teleoperator): `(action, carry)`.

    Reads the TRUE ball position and radius from the physics (a privileged expert) and the touch sensors:
    0 approach above the ball with open fingers, 1 descend until the fingertips straddle the ball, 2 close the
    fingers (a synergy: all joints get one target, ramping up) until every distal pad reads touch, 3 squeeze
    `squeeze` radians past the target at first contact for a few steps, 4 lift. Gaussian action noise `noise`;
    each phase change also waits on a random draw (p = 1/2 per step), so timing varies between demonstrations.
    """
    data, params = state.physics["data"], state.physics["params"]
    phase, timer, grip = carry["phase"], carry["timer"], carry["grip"]
    palm, ball = data.qpos[0:3], data.qpos[9:12]
    touch = data.sensordata[:len(TOUCH_LAYOUT)].reshape(3, 2)
    k_noise, k_wait = jax.random.split(key)
    grasp_z = ball[2] + 0.02 + PROXIMAL + DISTAL - 0.01
    xy = jnp.where(phase <= 3, ball[:2], palm[:2])
    z = jnp.select([phase == 0, phase <= 3], [ball[2] + 0.14, grasp_z], ball[2] + 0.25)
    closing = jnp.clip(timer * 0.06, 0.0, 1.4)
    fingers = jnp.select([phase <= 1, phase == 2], [jnp.zeros(()), closing], grip)
    ctrl = jnp.concatenate([xy, z[None], jnp.full(6, fingers)])
    all_touch = jnp.all(touch[:, 1] > 0.05)
    advance = jnp.select(
        [phase == 0, phase == 1, phase == 2, phase == 3],
        [jnp.linalg.norm(palm[:2] - ball[:2]) < 0.01, jnp.abs(palm[2] - grasp_z) < 0.01, all_touch | (timer > 25),
         timer > 4], False) & jax.random.bernoulli(k_wait, 0.5)
    advance = advance & (phase < 4)
    carry = {"phase": jnp.where(advance, phase + 1, phase), "timer": jnp.where(advance, 0, timer + 1),
             "grip": jnp.where(advance & (phase == 2), jnp.minimum(closing + squeeze, 1.4), grip)}
    action = env.ctrl_to_action(ctrl) + noise * jax.random.normal(k_noise, (9,))
    return jnp.clip(action, -1.0, 1.0), carry
