"""Fixed-rate episodes, one file per episode with metadata, and a validating loader into padded arrays with masks.

HATO's suite records each teleoperated episode as its own folder of per-step pickles with the robot's state,
touch and images; here an episode is ONE `.npz` file holding

    observations (T, obs_dim) float32   the observation BEFORE each action
    actions      (T, act_dim) float32
    rewards      (T,)         float32
    metadata     a JSON string: task, success, seed, control_rate (Hz), sensor_layout (names of the touch
                 channels), obs_layout ({block: [start, stop]}), length (= T), and anything else the writer adds.

`load_episodes(paths_or_dir)` reads every file, checks it (keys, shapes, dtypes, finite values, metadata fields,
length = T, the same task / control rate / sensor layout / obs and action sizes in every file) and raises
`EpisodeError` naming the file and what is wrong. It keeps successful episodes only by default (`only_success`,
HATO trains on good demonstrations), pads them to the longest (`observations (N, T_max, obs_dim)`, ...) and
returns `mask (N, T_max)` (1 on real steps). `normalizer(batch)` gives per-dimension min/max over the real steps,
the statistics Diffusion Policy's [-1, 1] normalisation uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

REQUIRED_META = ("task", "success", "seed", "control_rate", "sensor_layout", "obs_layout", "length")
SHARED_META = ("task", "control_rate", "sensor_layout", "obs_layout")


class EpisodeError(ValueError):
    """An episode file that is missing, unreadable or inconsistent; the message names the file and the problem."""


def save_episode(path: str | os.PathLike, observations, actions, rewards, metadata: dict) -> Path:
    """Write one episode atomically (a temporary file renamed into place); `metadata["length"]` is set here."""
    path = Path(path)
    observations = np.asarray(observations, np.float32)
    actions = np.asarray(actions, np.float32)
    rewards = np.asarray(rewards, np.float32)
    meta = {**metadata, "length": int(len(actions))}
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise EpisodeError(f"{path}: metadata lacks {missing}; an episode needs {list(REQUIRED_META)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, observations=observations, actions=actions, rewards=rewards,
             metadata=np.asarray(json.dumps(meta)))
    os.replace(tmp, path)
    return path


def _read(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise EpisodeError(f"{path}: no such episode file.") from None
    except Exception as e:  # zip / format errors
        raise EpisodeError(f"{path}: cannot read it as an .npz episode ({type(e).__name__}: {e}).") from None
    missing = [k for k in ("observations", "actions", "rewards", "metadata") if k not in arrays]
    if missing:
        raise EpisodeError(f"{path}: missing array(s) {missing}; an episode file holds observations, actions, "
                           f"rewards and metadata (found {sorted(arrays)}).")
    try:
        meta = json.loads(str(arrays["metadata"]))
    except json.JSONDecodeError as e:
        raise EpisodeError(f"{path}: metadata is not valid JSON ({e}).") from None
    if not isinstance(meta, dict):
        raise EpisodeError(f"{path}: metadata must be a JSON object, got {type(meta).__name__}.")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise EpisodeError(f"{path}: metadata lacks {missing}; expected the fields {list(REQUIRED_META)}.")
    obs, act, rew = arrays["observations"], arrays["actions"], arrays["rewards"]
    if obs.ndim != 2 or act.ndim != 2 or rew.ndim != 1:
        raise EpisodeError(f"{path}: expected observations (T, obs_dim), actions (T, act_dim), rewards (T,); got "
                           f"{obs.shape}, {act.shape}, {rew.shape}.")
    if not (len(obs) == len(act) == len(rew) == meta["length"]) or len(act) == 0:
        raise EpisodeError(f"{path}: lengths disagree or are zero: observations {len(obs)}, actions {len(act)}, "
                           f"rewards {len(rew)}, metadata length {meta['length']}.")
    for name, x in (("observations", obs), ("actions", act), ("rewards", rew)):
        if not np.issubdtype(x.dtype, np.floating):
            raise EpisodeError(f"{path}: {name} has dtype {x.dtype}; expected floats.")
        if not np.isfinite(x).all():
            raise EpisodeError(f"{path}: {name} contains NaN or inf (first at step "
                               f"{int(np.argwhere(~np.isfinite(x))[0][0])}).")
    return {"observations": obs.astype(np.float32), "actions": act.astype(np.float32),
            "rewards": rew.astype(np.float32), "metadata": meta, "path": str(path)}


def episode_paths(source) -> list[Path]:
    """A directory (its `*.npz` files, sorted) or a list of files."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        paths = sorted(Path(source).glob("*.npz"))
        if not paths:
            raise EpisodeError(f"{source}: the directory holds no episode files (*.npz).")
        return paths
    if isinstance(source, (str, os.PathLike)):
        return [Path(source)]
    return [Path(p) for p in source]


def load_episodes(source, only_success: bool = True, max_episodes: int | None = None) -> dict:
    """Validate and pad episodes: observations (N, T, D), actions (N, T, A), rewards (N, T), mask (N, T),
    lengths (N,), success (N,), seeds (N,), metadata (list), and the shared metadata fields."""
    episodes = [_read(p) for p in episode_paths(source)]
    first = episodes[0]
    for ep in episodes[1:]:
        for key in SHARED_META:
            if ep["metadata"][key] != first["metadata"][key]:
                raise EpisodeError(f"{ep['path']}: metadata {key}={ep['metadata'][key]!r} differs from "
                                   f"{first['path']}'s {first['metadata'][key]!r}; episodes of one dataset share "
                                   f"task, control rate, sensor layout and observation layout.")
        for key in ("observations", "actions"):
            if ep[key].shape[1] != first[key].shape[1]:
                raise EpisodeError(f"{ep['path']}: {key} have {ep[key].shape[1]} columns, {first['path']} has "
                                   f"{first[key].shape[1]}.")
    kept = [ep for ep in episodes if ep["metadata"]["success"] or not only_success]
    if max_episodes is not None:
        kept = kept[:max_episodes]
    if not kept:
        raise EpisodeError(f"none of the {len(episodes)} episode(s) is successful (only_success=True); "
                           f"record successful demonstrations or pass only_success=False.")
    n, t_max = len(kept), max(len(ep["actions"]) for ep in kept)
    out = {k: np.zeros((n, t_max) + first[k].shape[1:], np.float32) for k in ("observations", "actions", "rewards")}
    mask = np.zeros((n, t_max), np.float32)
    for i, ep in enumerate(kept):
        t = len(ep["actions"])
        for k in ("observations", "actions", "rewards"):
            out[k][i, :t] = ep[k]
        mask[i, :t] = 1.0
    meta = [ep["metadata"] for ep in kept]
    return {**out, "mask": mask, "lengths": mask.sum(1).astype(np.int32),
            "success": np.array([m["success"] for m in meta], np.float32),
            "seeds": np.array([m["seed"] for m in meta], np.int64), "metadata": meta,
            **{k: first["metadata"][k] for k in SHARED_META}, "num_files": len(episodes)}


def normalizer(batch: dict) -> dict:
    """Per-dimension min and max of observations and actions over the real (masked) steps."""
    real = batch["mask"] > 0
    obs, act = batch["observations"][real], batch["actions"][real]
    return {"obs_min": obs.min(0), "obs_max": obs.max(0), "act_min": act.min(0), "act_max": act.max(0)}
