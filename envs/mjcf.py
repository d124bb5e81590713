"""MJCF text -> MuJoCo and MJX models, built once per distinct text (shared by every MJX env in `envs/`)."""

from __future__ import annotations

import functools

import jax
import mujoco
from mujoco import mjx


@functools.lru_cache(maxsize=32)
def compile_mjcf(xml: str) -> tuple[mujoco.MjModel, mjx.Model, mjx.Data]:
    """The MjModel, its MJX model (JAX implementation) and a blank MJX data, built once per distinct MJCF.

    Built under `ensure_compile_time_eval` so that the cached arrays are concrete even when the first call
    happens while a jitted function is being traced.
    """
    mj_model = mujoco.MjModel.from_xml_string(xml)
    with jax.ensure_compile_time_eval():
        model = mjx.put_model(mj_model, impl="jax")
        data = mjx.make_data(model, impl="jax")
    return mj_model, model, data
