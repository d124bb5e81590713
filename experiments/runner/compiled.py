"""The compiled side: `guard_chunk` (one member's chunk, frozen when not finite) and `Runner`, which vmaps and
jits the population's chunk, evaluation and init once (`Runner.trace_counts` proves it)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .config import Trainer
from .sweeps import Population, population_sharding


# The runner
# --------------------------------------------------------------------------------------------------------------
def _float_leaves(tree, params_only: bool) -> list:
    """The floating-point leaves of `tree`; with `params_only`, those under a key or attribute whose name contains
    "param" (actor_params, critic_params, alpha_prime_param, params, ...), or all of them when no name does."""
    flat = [(path, x) for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    if params_only:
        named = [(path, x) for path, x in flat if "param" in jax.tree_util.keystr(path).lower()]
        flat = named or flat
    return [x for _, x in flat]


def all_finite(leaves: list) -> jax.Array:
    """One bool: every element of every leaf is finite (a cheap reduction per leaf)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def guard_chunk(train_chunk: Callable) -> Callable:
    """`train_chunk` of ONE member, guarded: `(carry, hp, alive[, shared]) -> (carry, metrics, finite)`, where
    `finite = [metrics finite, parameters finite]`. A member that is not alive, or whose new metrics or parameters
    are not all finite, keeps its old carry (selected with `jnp.where`): it stops changing."""
    def guarded(carry, hp, alive, *shared):
        new, metrics = train_chunk(carry, hp, *shared)
        finite = jnp.stack([all_finite(_float_leaves(metrics, False)), all_finite(_float_leaves(new, True))])
        keep = alive & jnp.all(finite)
        new = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, carry)
        return new, metrics, finite
    return guarded


class Runner:
    """Compiles the population's chunk once and drives the host loop. Usable from tests without the CLI.

    `guarded_chunk(carry, hp, alive) -> (carry, metrics, finite)` is the compiled chunk of the whole population
    (`guard_chunk` per member, vmapped): members with `alive[i]` False, or that produce non-finite metrics or
    parameters, keep their carry. `train_chunk(carry, hp) -> (carry, metrics)` is the same program with every
    member alive. `still_alive(alive, finite)` is the next chunk's alive mask, computed on device (so the host loop
    can dispatch the next chunk before it has read this one's `finite`)."""

    def __init__(self, trainer: Trainer, population: Population):
        self.trainer = trainer
        self.population = population
        self.sharding = population_sharding(population.size)
        self.trace_counts = {"train_chunk": 0, "evaluate": 0, "init": 0}

        def counted(name, fn):
            def wrapper(*a):
                self.trace_counts[name] += 1  # runs only while tracing
                return fn(*a)
            return wrapper

        s = self.sharding
        self.init = jax.jit(counted("init", jax.vmap(trainer.init_carry)), out_shardings=s)
        guarded = guard_chunk(trainer.train_chunk)
        if trainer.shared is None:
            chunk = jax.jit(counted("train_chunk", jax.vmap(guarded)),
                            in_shardings=(s, s, s), out_shardings=(s, s, s), donate_argnums=0)
            self.guarded_chunk = chunk
        else:
            replicated = jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec())
            shared = jax.device_put(trainer.shared, replicated)
            chunk = jax.jit(counted("train_chunk", jax.vmap(guarded, in_axes=(0, 0, 0, None))),
                            in_shardings=(s, s, s, replicated), out_shardings=(s, s, s), donate_argnums=0)
            self.guarded_chunk = lambda carry, hp, alive: chunk(carry, hp, alive, shared)
        self.evaluate = jax.jit(counted("evaluate", jax.vmap(trainer.evaluate)), in_shardings=(s, s, s),
                                out_shardings=s)
        self.still_alive = jax.jit(lambda alive, finite: alive & jnp.all(finite, axis=1), in_shardings=(s, s),
                                   out_shardings=s)
        self.hparams = jax.device_put(population.hparams, s)
        self.all_alive = jax.device_put(np.ones(population.size, bool), s)

    def train_chunk(self, carry, hp):
        """One chunk of every member (all alive): (carry, metrics)."""
        carry, metrics, _ = self.guarded_chunk(carry, hp, self.all_alive)
        return carry, metrics

    def init_carry(self):
        return self.init(jax.device_put(self.population.keys, self.sharding), self.hparams)

    def eval_keys(self, chunk: int):
        keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 0xE7A1), chunk))(self.population.keys)
        return jax.device_put(keys, self.sharding)

    def abstract_carry(self):
        shapes = jax.eval_shape(jax.vmap(self.trainer.init_carry), self.population.keys, self.population.hparams)
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.sharding), shapes)
