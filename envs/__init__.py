"""Functional environments: `envs.make(name, **kwargs)` and `envs.make_vec(env, num_envs)`.

Names (see `envs.registered()`):
  pointmaze-{umaze,medium,large,giant}       MJX point mass in a maze (MJCF generated from the layout string)
  pointmaze-{umaze,medium,large,giant}-jax   pure-JAX twin with the same task, observation, reward and integrator
  pointmaze, pointmaze-jax                   the same two with a layout of your own: `layout="<rows>"` (a layout
                                             string or a registered name) or `layout_file=PATH` (a text file)
  ant, halfcheetah, hopper, inverted_pendulum   brax locomotion tasks on the MJX backend
  hand-lift                                  MJX three-fingered hand with touch sensors lifting a ball (HATO)
  insertion-{square,rectangle,cross}         MJX peg insertion with mm clearance, the seen tasks (RLDG)
  insertion-tee                              the same with a T-shaped peg and a wider socket range: held out
  dmc-{cheetah-run,walker-walk,hopper-hop,humanoid-stand,quadruped-run}   DM Control Suite tasks from MuJoCo Playground (MJX
                                             JAX implementation), action repeat 2 by default (envs/dmc.py)

Heavy simulators are imported only when an env of theirs is made.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from envs.core import (AutoReset, EpisodeStats, Env, NormalizeObs, State, TimeLimit, VmapEnv,  # noqa: F401
                       make_vec)

# name -> (module:class, fixed constructor kwargs, default episode length; None = the env's `default_max_steps`)
_REGISTRY: dict[str, tuple[str, dict, int | None]] = {}
for _layout, _steps in (("umaze", 100), ("medium", 250), ("large", 400), ("giant", 1000)):
    _REGISTRY[f"pointmaze-{_layout}"] = ("envs.pointmaze_mjx:PointMazeMjx", {"layout": _layout}, _steps)
    _REGISTRY[f"pointmaze-{_layout}-jax"] = ("envs.pointmaze:PointMazeJax", {"layout": _layout}, _steps)
_REGISTRY["pointmaze"] = ("envs.pointmaze_mjx:PointMazeMjx", {}, None)
_REGISTRY["pointmaze-jax"] = ("envs.pointmaze:PointMazeJax", {}, None)
for _name in ("ant", "halfcheetah", "hopper", "inverted_pendulum"):
    _REGISTRY[_name] = ("envs.brax_envs:BraxEnv", {"name": _name}, 1000)
_REGISTRY["hand-lift"] = ("envs.hands:HandLift", {}, 60)
for _task in ("square", "rectangle", "cross", "tee"):  # envs.insertion.TASKS (not imported here: it loads MJX)
    _REGISTRY[f"insertion-{_task}"] = ("envs.insertion:PegInsertion", {"variant": _task}, 100)
# Playground's DM Control task names (envs.dmc is not imported here: it loads MJX); episode length is the env's
# default_max_steps, 1000 control steps // action_repeat
for _task, _playground in (("cheetah-run", "CheetahRun"), ("walker-walk", "WalkerWalk"), ("hopper-hop", "HopperHop"),
                           ("humanoid-stand", "HumanoidStand"), ("quadruped-run", "QuadrupedRun")):
    _REGISTRY[f"dmc-{_task}"] = ("envs.dmc:DmControl", {"task": _playground}, None)


def registered() -> list[str]:
    return sorted(_REGISTRY)


def env_class(name: str) -> type:
    if name not in _REGISTRY:
        raise ValueError(f"Unknown environment {name!r}. Registered environments: {', '.join(registered())}.")
    module, cls = _REGISTRY[name][0].split(":")
    return getattr(importlib.import_module(module), cls)


def _read_layout_file(name: str, kwargs: dict) -> dict:
    """`layout_file=PATH` -> `layout=<the file's text>` (how `--env-options layout_file=PATH` reaches a maze)."""
    path = kwargs.pop("layout_file")
    if "layout" in kwargs:
        raise ValueError(f"Environment {name!r} got both layout and layout_file={path!r}; give one of them.")
    try:
        kwargs["layout"] = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"layout_file={path!r}: cannot read the maze layout file ({type(e).__name__}: "
                         f"{getattr(e, 'strerror', None) or e}); expected a text file with one line per maze row "
                         f"(# wall, O or . free, S start, G goal).") from None
    return kwargs


def make(name: str, max_steps: int | None = None, **kwargs) -> Env:
    """Build env `name` wrapped in a `TimeLimit` (its default episode length unless `max_steps` is given).

    Unknown names and unknown keyword arguments raise `ValueError` listing what is valid. Envs with a free
    `layout` option (`pointmaze`, `pointmaze-jax`) also take `layout_file=PATH`, read as the layout string.
    """
    cls = env_class(name)
    fixed = _REGISTRY[name][1]
    valid = sorted(f.name for f in dataclasses.fields(cls) if f.name not in fixed)
    if "layout" in valid:
        valid.append("layout_file")
    bad = sorted(set(kwargs) - set(valid))
    if bad:
        hint = (f" The layout of {name!r} is fixed; for another one use pointmaze or pointmaze-jax with layout=... "
                f"or layout_file=PATH." if "layout" in fixed and {"layout", "layout_file"} & set(bad) else "")
        raise ValueError(f"Environment {name!r} got unknown option(s) {bad}. Valid options: {valid} "
                         f"(and max_steps).{hint}")
    if "layout_file" in kwargs:
        kwargs = _read_layout_file(name, dict(kwargs))
    env = cls(**fixed, **kwargs)
    steps = max_steps if max_steps is not None else _REGISTRY[name][2] or env.default_max_steps
    if steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {steps}.")
    return TimeLimit(env, max_steps=int(steps))
