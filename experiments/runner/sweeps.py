"""Sweeps and populations: `--sweep.<hparam> v1,v2,...` times `--num-seeds` seeds is one `Population` (stacked
`HParams` and keys), every member's values checked against its ranges, sharded over the devices."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .config import UserError


def make_sweep_type(hparams_cls: type) -> type:
    """A dataclass with one optional string field per sweepable hyperparameter: `--sweep.actor-lr 1e-4,3e-4`."""
    fields = []
    for f in dataclasses.fields(hparams_cls):
        fields.append((f.name, str, dataclasses.field(default="", metadata={})))
    cls = dataclasses.make_dataclass("Sweep", fields, frozen=True)
    cls.__doc__ = ("Comma-separated values of sweepable hyperparameters; the population is their Cartesian "
                   "product (times --num-seeds), run as one vmapped program.")
    return cls


def parse_sweep(sweep, hp_default) -> list[dict[str, float]]:
    """The list of hyperparameter overrides, one dict per sweep setting (a single empty dict without sweeps)."""
    axes = []
    for f in dataclasses.fields(sweep):
        text = getattr(sweep, f.name).strip()
        if not text:
            continue
        values = []
        for item in text.split(","):
            try:
                values.append(float(item))
            except ValueError:
                raise UserError(
                    f"--sweep.{f.name.replace('_', '-')} got {text!r}: the value {item.strip()!r} is not a number. "
                    f"Give comma-separated numbers, e.g. --sweep.{f.name.replace('_', '-')} 1e-4,3e-4,1e-3."
                ) from None
        if not values:
            raise UserError(f"--sweep.{f.name.replace('_', '-')} is empty.")
        axes.append([(f.name, v) for v in values])
    return [dict(combo) for combo in itertools.product(*axes)] or [{}]


def check_sweep_argv(argv: list[str], sweep_cls: type, args_cls: type) -> None:
    """A `--sweep.X` for a field that is not sweepable gets a clear message instead of tyro's generic one."""
    sweepable = {f.name for f in dataclasses.fields(sweep_cls)}
    for arg in argv:
        if arg.startswith("--sweep."):
            name = arg[len("--sweep."):].split("=")[0].replace("-", "_")
            if name not in sweepable:
                raise UserError(
                    f"--sweep.{name.replace('_', '-')} is not a sweepable hyperparameter. Only the fields of "
                    f"HParams can be swept in one compiled program: {', '.join(sorted(sweepable))}. Static "
                    f"settings (shapes, counts, layer sizes, env) change the program; run them as separate "
                    f"invocations.")


@dataclasses.dataclass
class Population:
    hparams: Any  # stacked HParams pytree, leading axis = population size
    keys: jax.Array  # (P, 2) uint32
    members: list[dict]  # per member: {"member": i, "seed": s, **overrides}

    @property
    def size(self) -> int:
        return len(self.members)


# ---- valid values -------------------------------------------------------------------------------------------
# Checked by name for fields whose HParams class (and its bases) declare no range in `RANGES`: the first pattern
# that matches a field name (fnmatch, lower case) gives its interval. Every value must also be finite.
DEFAULT_RANGES = (
    ("*discount*", "[0, 1)"), ("gamma", "[0, 1)"), ("*_gamma", "[0, 1)"),
    ("tau", "(0, 1]"), ("*_tau", "(0, 1]"),
    ("*dropout*", "[0, 1)"), ("*temperature*", "(0, inf)"),
    ("lr", "[0, inf)"), ("*_lr", "[0, inf)"), ("lr_*", "[0, inf)"), ("*learning_rate*", "[0, inf)"),
    ("*weight_decay*", "[0, inf)"), ("*coef*", "[0, inf)"), ("*alpha*", "[0, inf)"), ("*beta*", "[0, inf)"),
    ("*fraction*", "[0, 1]"), ("*prob*", "[0, 1]"),
)


class Interval(NamedTuple):
    lo: float
    hi: float
    lo_closed: bool
    hi_closed: bool
    integer: bool
    text: str

    @staticmethod
    def parse(text: str) -> "Interval":
        """"[0, 1)", "(0, inf)", "[-1, inf) integer"."""
        import re
        m = re.fullmatch(r"\s*([\[(])\s*([^,]+?)\s*,\s*([^\])]+?)\s*([\])])\s*(integer)?\s*", text)
        if not m:
            raise ValueError(f"not an interval: {text!r} (write e.g. '[0, 1)', '(0, inf)', '[-1, inf) integer')")
        return Interval(float(m[2]), float(m[3]), m[1] == "[", m[4] == "]", bool(m[5]), text.strip())

    def contains(self, x: float) -> bool:
        ok = (x >= self.lo if self.lo_closed else x > self.lo) and (x <= self.hi if self.hi_closed else x < self.hi)
        return ok and (not self.integer or float(x).is_integer())

    def words(self, name: str) -> str:
        lo = "" if self.lo == -math.inf else f"{self.lo:g} {'<=' if self.lo_closed else '<'} "
        hi = "" if self.hi == math.inf else f" {'<=' if self.hi_closed else '<'} {self.hi:g}"
        return f"{lo}{name}{hi}" + (", a whole number" if self.integer else "")


def hparam_ranges(hparams_cls: type) -> dict[str, Interval]:
    """field -> valid interval: `RANGES` of the class and its bases (the subclass wins), else `DEFAULT_RANGES` by
    name; fields with neither only need to be finite."""
    import fnmatch
    declared: dict[str, str] = {}
    for klass in reversed(hparams_cls.__mro__):
        declared.update(vars(klass).get("RANGES", {}))
    out = {}
    for f in dataclasses.fields(hparams_cls):
        text = declared.get(f.name) or next((r for pat, r in DEFAULT_RANGES if fnmatch.fnmatch(f.name.lower(), pat)),
                                            "(-inf, inf)")
        out[f.name] = Interval.parse(text)
    return out


def check_hparams(hp, member: dict, overrides: dict, flag: str = "--hp") -> None:
    """A `UserError` naming the flag, the member and the valid range for the first value of `hp` outside it."""
    for name, interval in hparam_ranges(type(hp)).items():
        value = getattr(hp, name)
        for k, x in enumerate(np.ravel(np.asarray(value, dtype=np.float64))):
            if math.isfinite(x) and interval.contains(x):
                continue
            option = f"--sweep.{name.replace('_', '-')}" if name in overrides else f"{flag}.{name.replace('_', '-')}"
            where = f" (entry {k} of {tuple(np.ravel(value).tolist())})" if np.ndim(value) else ""
            who = ", ".join(f"{k2}={v:g}" if isinstance(v, float) else f"{k2}={v}" for k2, v in member.items()
                            if k2 != "member")
            need = interval.words(name) if interval.text != "(-inf, inf)" else f"{name} finite"
            raise UserError(f"{option} is {x:g}{where} for population member {member['member']} ({who}): the valid "
                            f"range is {interval.text} ({need}). Every member's value is checked before training.")


def make_population(hp_default, settings: list[dict], seed: int, num_seeds: int, flag: str = "--hp",
                    validate: bool = True) -> Population:
    """The population: every sweep setting times `num_seeds` seeds. Each member's hyperparameters are checked
    (`check_hparams`; `flag` is how the CLI spells `hp_default`'s fields, e.g. "--skill-hp") unless not `validate`."""
    members, hps = [], []
    for overrides in settings:
        for j in range(num_seeds):
            members.append({"member": len(members), "seed": seed + j, **overrides})
            hps.append(hp_default.replace(**overrides) if overrides else hp_default)
            if validate:
                check_hparams(hps[-1], members[-1], overrides, flag)
    stacked = jax.tree.map(lambda *xs: jnp.asarray(np.array(xs, dtype=np.float32)), *hps)
    keys = jnp.stack([jax.random.PRNGKey(m["seed"]) for m in members])
    return Population(stacked, keys, members)


def population_sharding(size: int) -> jax.sharding.NamedSharding:
    """Shard the population axis over as many devices as divide it evenly."""
    devices = jax.devices()
    n = max(d for d in range(1, len(devices) + 1) if size % d == 0)
    mesh = jax.sharding.Mesh(np.array(devices[:n]), ("population",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("population"))


# --------------------------------------------------------------------------------------------------------------
