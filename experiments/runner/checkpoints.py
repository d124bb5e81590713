"""Orbax checkpoints of the whole carry, with the population's `Health` in each checkpoint's metadata."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from .config import UserError
from .health import Health


def _checkpoint_manager(path: Path):
    import orbax.checkpoint as ocp
    return ocp.CheckpointManager(path.absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def _without_empty(tree):
    """`tree` with its zero-size arrays replaced by None: orbax refuses to save arrays of size 0, and brax's MJX
    state holds some (e.g. `mjx.Data.act`, shape (0,) for models without actuator dynamics)."""
    return jax.tree.map(lambda x: None if x.size == 0 else x, tree)


class HealthManager:
    """An orbax CheckpointManager that also saves the population's `Health` with every checkpoint (read by
    `save_checkpoint`); everything else is the manager's own."""

    def __init__(self, manager, health: Health):
        self._manager, self.health = manager, health

    def __getattr__(self, name):
        return getattr(self._manager, name)


def save_checkpoint(manager, chunk: int, carry, health: Health | None = None) -> None:
    """Save the whole carry as step `chunk`; `health` (the alive flags; by default that of a `HealthManager`) goes
    into the same checkpoint's metadata, written and committed with it (orbax writes into a temporary directory
    and renames it when complete)."""
    import orbax.checkpoint as ocp
    health = health if health is not None else getattr(manager, "health", None)
    metadata = {"health": health.to_json()} if health is not None else None
    manager.save(chunk, args=ocp.args.StandardSave(_without_empty(carry)), force=True, custom_metadata=metadata)
    manager.wait_until_finished()


def restore_health(path: Path, step: int, size: int) -> Health:
    """The alive flags saved with checkpoint `step` under `path` (all alive for a checkpoint written before they
    were saved)."""
    saved = (_checkpoint_manager(path).metadata(step).custom_metadata or {}).get("health")
    return Health.from_json(saved) if saved else Health.healthy(size)


def restore_checkpoint(path: Path, abstract_carry):
    """(chunk, carry) of the newest complete checkpoint under `path`, or a UserError saying what is wrong."""
    import orbax.checkpoint as ocp
    if not path.is_dir():
        raise UserError(f"Cannot resume: there is no checkpoint directory {path}. A run directory written by "
                        f"this program contains config.json and checkpoints/.")
    manager = _checkpoint_manager(path)
    step = manager.latest_step()
    if step is None:
        raise UserError(f"Cannot resume: {path} holds no complete checkpoint (the run may have been killed "
                        f"before its first save; start it again without --resume).")
    try:
        saved = manager.restore(step, args=ocp.args.StandardRestore(_without_empty(abstract_carry)))
    except Exception as e:  # orbax raises many types for unreadable files
        raise UserError(f"Cannot resume: the checkpoint {path / str(step)} is unreadable or does not match this "
                        f"experiment's carry ({type(e).__name__}: {str(e).splitlines()[0][:300]}).") from None
    # Put the zero-size arrays back (they hold no data): same shapes, dtypes and shardings as the abstract carry.
    leaves, treedef = jax.tree.flatten(abstract_carry)
    saved_leaves = jax.tree.leaves(saved, is_leaf=lambda x: x is None)
    carry = treedef.unflatten([jax.device_put(jnp.zeros(a.shape, a.dtype), a.sharding) if a.size == 0 else s
                               for a, s in zip(leaves, saved_leaves)])
    return step, carry
