"""What every experiment repeats: the CLI with sweeps, the chunked host loop, logs, checkpoints and plots.

An experiment file defines its `Args` (a frozen dataclass whose fields include `hp`, the algorithm's sweepable
`HParams`, and `run`, a `RunConfig`), and a `build(args) -> Trainer`. Then `runner.main("name", Args, build)`
does the rest:

- CLI (tyro): every field of `Args` is a flag documented by its docstring; `--sweep.<hparam> v1,v2,...` and
  `--num-seeds N` define a population (the Cartesian product of the sweep values, times N seeds) that runs
  as ONE compiled program: `jit(vmap(train_chunk))` with the population axis sharded over the visible devices
  (`jax.sharding.NamedSharding`; on a CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=4` gives 4).
- The host loop: per chunk, one call of the jitted chunk, then log (JSONL + TensorBoard), progress bar,
  maybe evaluate, maybe checkpoint. The chunk is traced and compiled once (`Runner.trace_counts` proves it).
- Checkpoints: orbax, the WHOLE carry (params, targets, optimiser states, buffer, env state, rng, counters),
  every `checkpoint_every` chunks and at the end, atomically (orbax finalises a temporary directory by rename).
  `--resume DIR` reloads the run's saved config and continues; on the CPU the result is bit-identical to an
  uninterrupted run (tested with SIGKILL).
- Errors: `UserError` carries a one-paragraph message; `main` prints it and exits with status 2. Nothing that
  already exists in a run directory is overwritten without `--resume`.
- Validated values: every member's hyperparameters are checked before anything compiles, against the ranges its
  `HParams` class declares in `RANGES` (interval strings such as "[0, 1)"; subclasses add to their bases'), and
  by name for fields no class declares (`*lr*` >= 0, discount/gamma in [0, 1), tau in (0, 1], ...).
- Divergence isolation: after each member's chunk, inside the compiled program, its metrics and parameters are
  checked for NaN/inf; a member that fails is frozen (its carry is selected back with `jnp.where`, so it stops
  changing), marked in metrics.jsonl / eval.jsonl (`"diverged": true`), TensorBoard, wandb and curves.png, and
  left out of means, while the others run to the end. The alive flags live in the checkpoint's metadata, so a
  resume is exact. `--stop-on-divergence` stops the whole run at the first divergence instead.
- Presets: an experiment may pass `presets={"cpu": [], "paper": [...flags]}`; `--preset NAME` puts that preset's
  flags before the user's own (so explicit flags win), and `--help` lists every preset's flags.
- Extending: `--resume DIR --total-steps N` with N above the saved budget trains on to N (bit-identical, on the
  CPU, to one run of budget N); any other changed flag on resume is refused, by name.
- Optional Weights & Biases logging (`--wandb-project`): one wandb run per member and phase, grouped by the run
  directory, with the run's config and the member's hyperparameters attached.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class UserError(Exception):
    """A problem with the user's input; its message is shown as is, and the program exits with status 2."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Budgets and bookkeeping shared by every experiment (static: changing any of them recompiles nothing
    except `num_seeds`, which changes the population size)."""

    total_steps: int = 20_000
    """Environment transitions per population member (rounded up to whole chunks)."""
    seed: int = 0
    """Base seed; member seeds are seed, seed+1, ... (the same seeds for every sweep value)."""
    num_seeds: int = 1
    """Seeds per sweep setting; the population is (product of sweep values) x num_seeds, one vmapped program."""
    eval_every: int = 10
    """Evaluate the deterministic policy every this many chunks (and at the end); 0 = only at the end."""
    checkpoint_every: int = 20
    """Save the whole training carry every this many chunks (and at the end); 0 = only at the end."""
    run_dir: str = ""
    """Output directory (default: runs/<experiment>-<env>-<time>). Must not already hold a run."""
    resume: str = ""
    """Continue the killed or finished run in this directory, with its saved configuration."""
    tensorboard: bool = True
    """Also write TensorBoard event files under <run_dir>/tb."""
    progress: bool = True
    """Show a tqdm progress bar with env-steps/s."""
    stop_on_divergence: bool = False
    """Stop the whole run at the first member whose metrics or parameters are not finite (NaN/inf). Default: freeze
    that member (logged as diverged, left out of means) and let the others run to the end."""
    wandb_project: str = ""
    """Also log to Weights & Biases under this project: one wandb run per member (and phase), grouped by the run
    directory, with the config and the member's hyperparameters. Needs `pip install 'headstart[wandb]'`; set
    WANDB_MODE=offline to write locally only. Empty: off."""


class Trainer(NamedTuple):
    """What an experiment's `build(args)` returns: pure functions of ONE population member."""

    init_carry: Callable[[jax.Array, Any], Any]  # (key, hp) -> carry
    train_chunk: Callable[[Any, Any], tuple[Any, dict]]  # (carry, hp) -> (carry, metrics)
    evaluate: Callable[[Any, jax.Array, Any], dict]  # (carry, key, hp) -> metrics
    steps_per_chunk: int  # env transitions (or gradient steps, for offline phases) per member per chunk
    shared: Any = None  # optional data shared by every member (e.g. an offline dataset): passed to train_chunk
    #                     as a third, NOT vmapped argument, so it is stored once, not per member, and never
    #                     checkpointed (it is reloaded from its file).


# --------------------------------------------------------------------------------------------------------------
# Sweeps and populations
# --------------------------------------------------------------------------------------------------------------
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
    member alive."""

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


def parse_env_options(options: tuple[str, ...]) -> dict[str, Any]:
    """`("reward_type=dense", "max_steps=200")` -> {"reward_type": "dense", "max_steps": 200} (ints, floats, bools
    and strings recognised)."""
    out: dict[str, Any] = {}
    for item in options:
        if "=" not in item:
            raise UserError(f"--env-options takes key=value pairs, got {item!r} (e.g. --env-options reward_type=dense).")
        key, text = (t.strip() for t in item.split("=", 1))
        for convert in (int, float):
            try:
                out[key] = convert(text)
                break
            except ValueError:
                pass
        else:
            out[key] = {"true": True, "false": False}.get(text.lower(), text)
    return out


def _to_host(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in jax.device_get(tree).items()}


@dataclasses.dataclass
class Health:
    """Which members still train, and when and why the others diverged. Saved in every checkpoint's metadata (so
    a resume is exact) and handed from one phase to the next (a member that diverged in pretraining stays frozen
    online). `logged[i]` / `eval_logged[i]`: member i's divergence is already marked in this phase's
    metrics.jsonl / eval.jsonl (True for healthy members: nothing to mark)."""

    alive: np.ndarray  # (P,) bool
    chunk: np.ndarray  # (P,) int: the chunk at which the member diverged, -1 if it did not
    phase: list  # the phase in which it diverged ("" if it did not)
    reason: list  # what was not finite: metric names and/or "parameters"
    logged: np.ndarray  # (P,) bool
    eval_logged: np.ndarray  # (P,) bool

    @staticmethod
    def healthy(size: int) -> "Health":
        return Health(np.ones(size, bool), np.full(size, -1), [""] * size, [""] * size, np.ones(size, bool),
                      np.ones(size, bool))

    def to_json(self) -> dict:
        return {"alive": self.alive.tolist(), "chunk": self.chunk.tolist(), "phase": list(self.phase),
                "reason": list(self.reason), "logged": self.logged.tolist(), "eval_logged": self.eval_logged.tolist()}

    @staticmethod
    def from_json(d: dict) -> "Health":
        return Health(np.array(d["alive"], bool), np.array(d["chunk"], int), list(d["phase"]), list(d["reason"]),
                      np.array(d["logged"], bool), np.array(d["eval_logged"], bool))

    def copy(self) -> "Health":
        return Health.from_json(self.to_json())

    def next_phase(self) -> "Health":
        """This health at the start of another phase: its diverged members are frozen there too, and marked."""
        h = self.copy()
        h.logged, h.eval_logged = h.alive.copy(), h.alive.copy()
        return h

    def mark(self, which: np.ndarray, chunk: int, phase: str, reasons: list[str]) -> None:
        for i in np.flatnonzero(which):
            self.alive[i], self.chunk[i], self.phase[i], self.reason[i] = False, chunk, phase, reasons[i]
            self.logged[i] = self.eval_logged[i] = False

    def diverged(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.alive)]

    def describe(self, i: int, members: list[dict]) -> str:
        setting = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in members[i].items()
                            if k != "member")
        return (f"member {i} ({setting}) at chunk {self.chunk[i]} of {self.phase[i]} "
                f"(not finite: {self.reason[i]})")

    def summary(self, name: str, members: list[dict]) -> str:
        bad = self.diverged()
        return (f"{name}: {len(bad)} of {len(members)} member(s) diverged and were frozen at their last finite state "
                f"(left out of the means in curves.png; marked \"diverged\" in metrics.jsonl and eval.jsonl): "
                + "; ".join(self.describe(i, members) for i in bad) + ".")


class RunFiles:
    """The run directory: config.json, metrics.jsonl, eval.jsonl, tb/, checkpoints/, curves.png (and wandb runs
    when a `WandbLogger` is given)."""

    def __init__(self, root: Path, tensorboard: bool, wandb: "WandbLogger | None" = None):
        self.root = root
        self.metrics = root / "metrics.jsonl"
        self.evals = root / "eval.jsonl"
        self.ckpt_dir = root / "checkpoints"
        self.tb = None
        self.wandb = wandb
        if tensorboard:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(str(root / "tb"))

    @staticmethod
    def truncate_jsonl(path: Path, last_chunk: int) -> None:
        """Drop records written after the checkpoint we resume from (they will be written again)."""
        if not path.exists():
            return
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["chunk"] <= last_chunk]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)

    def log(self, path: Path, chunk: int, env_steps: int, members: list[dict], metrics: dict[str, np.ndarray],
            skip: np.ndarray | None = None):
        """One record per member (those with `skip[i]` left out: diverged members) to JSONL, TensorBoard, wandb."""
        todo = [i for i in range(len(members)) if skip is None or not skip[i]]
        with path.open("a") as f:
            for i in todo:
                rec = {"chunk": chunk, "env_steps": env_steps, **members[i]}
                rec.update({k: float(v[i]) for k, v in metrics.items()})
                f.write(json.dumps(rec) + "\n")
        prefix = "eval" if path == self.evals else "train"
        if self.tb is not None:
            for k, v in metrics.items():
                for i in todo:
                    self.tb.add_scalar(f"{prefix}/{k}/member{i}", float(v[i]), env_steps)
        if self.wandb is not None:
            for i in todo:
                self.wandb.log(i, {f"{prefix}/{k}": float(v[i]) for k, v in metrics.items()}, env_steps)

    def log_diverged(self, path: Path, chunk: int, env_steps: int, members: list[dict], metrics: dict[str, np.ndarray],
                     which: list[int], health: Health, phase: str | None = None):
        """The divergence marker of each member in `which`: a record with "diverged": true, when and why, and the
        metric keys: in metrics.jsonl their values where finite (for a member that diverged in this chunk of
        `phase`), else null; all null in eval.jsonl, as a frozen member is not evaluated."""
        evals = path == self.evals
        with path.open("a") as f:
            for i in which:
                now = health.chunk[i] == chunk and phase in (None, health.phase[i])
                values = {k: float(v[i]) if now and not evals and np.isfinite(v[i]) else None
                          for k, v in metrics.items()}
                rec = {"chunk": chunk, "env_steps": env_steps, **members[i], **values, "diverged": True,
                       "diverged_chunk": int(health.chunk[i]), "diverged_phase": health.phase[i],
                       "not_finite": health.reason[i]}
                f.write(json.dumps(rec) + "\n")
        if not evals:
            for i in which:
                text = health.describe(i, members)
                if self.tb is not None:
                    self.tb.add_scalar(f"diverged/member{i}", 1.0, env_steps)
                    self.tb.add_text(f"diverged/member{i}", text, env_steps)
                if self.wandb is not None:
                    self.wandb.diverged(i, text, int(health.chunk[i]), env_steps)

    def close(self):
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.close()


class WandbLogger:
    """One Weights & Biases run per member of one phase: group = the run directory's name (the whole sweep),
    job_type = the phase, config = the run's config.json plus the member's own hyperparameters and seed. Run ids
    are derived from the run directory, phase and member, so `--resume` continues the same wandb runs."""

    def __init__(self, project: str, root: Path, phase: str, population: Population, config: dict):
        import hashlib
        try:
            import wandb
        except ImportError:
            raise UserError("--wandb-project needs the wandb package, which is not installed: pip install "
                            "'headstart[wandb]' (or pip install wandb), or leave --wandb-project out.") from None
        run_root = root if (root / "config.json").exists() else root.parent
        group = run_root.name
        self.runs = []
        for m in population.members:
            i = m["member"]
            hp = jax.tree.map(lambda x: np.asarray(x)[i].tolist(), population.hparams)
            hp = {f.name: getattr(hp, f.name) for f in dataclasses.fields(hp)}
            digest = hashlib.sha1(f"{run_root.absolute()}|{phase}|{i}".encode()).hexdigest()[:16]
            run = wandb.init(project=project, group=group, job_type=phase, name=f"{group}/{phase}/member{i}",
                             id=digest, resume="allow", dir=str(root), reinit="create_new",
                             config={**config, "phase": phase, "member": m, "hparams": hp})
            self.runs.append(run)

    def log(self, i: int, values: dict, step: int):
        self.runs[i].log(values, step=step)

    def diverged(self, i: int, text: str, chunk: int, step: int):
        self.runs[i].log({"diverged": 1.0}, step=step)
        self.runs[i].summary.update({"diverged": True, "diverged_chunk": chunk, "diverged_detail": text})

    def close(self):
        for run in self.runs:
            run.finish()


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


def read_metric(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(env_steps, table) from a metrics.jsonl / eval.jsonl: table[member, i] is `key` at env_steps[i] (NaN where a
    member has no record, e.g. after it diverged, or its divergence marker holds null)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    steps = sorted({r["env_steps"] for r in rows})
    members = sorted({r["member"] for r in rows})
    table = np.full((len(members), len(steps)), np.nan)
    for r in rows:
        table[members.index(r["member"]), steps.index(r["env_steps"])] = r.get(key)
    return np.array(steps), table


def diverged_members(path: Path) -> dict[int, dict]:
    """member -> its divergence marker record, from a metrics.jsonl or eval.jsonl."""
    if not Path(path).exists():
        return {}
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    return {r["member"]: r for r in rows if r.get("diverged")}


def plot_curves(eval_path: Path, out_png: Path, members: list[dict], metric_names=("eval_return", "eval_success", "test_nll")):
    """Learning curves: per sweep setting, the mean over the seeds that did not diverge and their min-max band;
    a diverged member is drawn alone, dotted, up to its last evaluation, ending in an x (not in the mean)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in eval_path.read_text().splitlines() if line] if eval_path.exists() else []
    dead = {r["member"]: r for r in rows if r.get("diverged")}
    records = [r for r in rows if not r.get("diverged")]
    names = [n for n in metric_names if records and n in records[0]]
    if not names:  # nothing to plot (e.g. a phase whose evaluation reports no return)
        return
    setting_keys = sorted({k for m in members for k in m if k not in ("member", "seed")})
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    groups: dict[tuple, list[int]] = {}
    for m in members:
        groups.setdefault(tuple((k, m.get(k)) for k in setting_keys), []).append(m["member"])
    steps = sorted({r["env_steps"] for r in records})
    for ax, name in zip(axes[0], names):
        for g, (label, ids) in enumerate(groups.items()):
            table = np.full((len(ids), len(steps)), np.nan)
            for r in records:
                if r["member"] in ids:
                    table[ids.index(r["member"]), steps.index(r["env_steps"])] = r[name]
            text = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in label) or "default"
            color = f"C{g % 10}"
            alive = [j for j, i in enumerate(ids) if i not in dead]
            if alive:
                with np.errstate(all="ignore"):
                    mean = np.nanmean(table[alive], 0)
                died = len(ids) - len(alive)
                ax.plot(steps, mean, color=color,
                        label=f"{text} (n={len(alive)}" + (f"; {died} diverged, not in the mean)" if died else ")"))
                ax.fill_between(steps, np.nanmin(table[alive], 0), np.nanmax(table[alive], 0), alpha=0.2,
                                color=color)
            for j, i in enumerate(ids):
                if i in dead:
                    seen = np.isfinite(table[j])
                    x, y = np.array(steps)[seen], table[j][seen]
                    ax.plot(x, y, ":", color=color, lw=1,
                            label=f"{text}: member {i} diverged (chunk {dead[i]['diverged_chunk']})")
                    if len(x):
                        ax.plot(x[-1:], y[-1:], "x", color=color, ms=8)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def _not_finite(metrics: dict[str, np.ndarray], finite: np.ndarray, i: int) -> str:
    """What was not finite for member i: the metric names, and/or "parameters"."""
    bad = [k for k, v in metrics.items() if not np.isfinite(v[i])]
    if not finite[i, 1]:
        bad.append("parameters")
    return ", ".join(bad) or "metrics"


def _stop_on_divergence(metrics: dict[str, np.ndarray], finite: np.ndarray, chunk: int, members: list[dict],
                        which: np.ndarray):
    bad_metric = next((k for k, v in metrics.items() if (~np.isfinite(v) & which).any()), None)
    what = f"metric {bad_metric!r} is" if bad_metric is not None else "the parameters are"
    who = [members[i] for i in np.flatnonzero(which)]
    raise UserError(f"Training diverged: {what} not finite at chunk {chunk} for population member(s) {who} "
                    f"(--stop-on-divergence). Nothing was checkpointed after the divergence; the last good "
                    f"checkpoint and logs are kept. Lower the learning rates or check reward scale; without "
                    f"--stop-on-divergence the diverged members are frozen and the others train on.")


def train(runner: Runner, trainer: Trainer, files: RunFiles, num_chunks: int, run: RunConfig,
          start_chunk: int = 0, carry=None, description: str = "train", health: Health | None = None):
    """The thin host loop. Returns the final carry; `health` (all alive by default) is updated in place.

    A member whose chunk produced non-finite metrics or parameters is frozen inside the compiled chunk (see
    `guard_chunk`); here it is marked diverged, logged once with "diverged": true and left out of later records.
    With `run.stop_on_divergence` the first divergence raises instead. When every member has diverged, the phase
    is checkpointed and a `UserError` ends it."""
    from tqdm import tqdm

    members = runner.population.members
    health = Health.healthy(len(members)) if health is None else health
    manager = HealthManager(_checkpoint_manager(files.ckpt_dir), health)
    if carry is None:
        carry = runner.init_carry()
    total = num_chunks * trainer.steps_per_chunk * runner.population.size
    bar = tqdm(total=total, initial=start_chunk * trainer.steps_per_chunk * runner.population.size,
               unit="step", unit_scale=True, desc=description, disable=not run.progress, dynamic_ncols=True)
    for chunk in range(start_chunk + 1, num_chunks + 1):
        alive_before = health.alive.copy()
        carry, metrics, finite = runner.guarded_chunk(carry, runner.hparams,
                                                      jax.device_put(alive_before, runner.sharding))
        metrics, finite = _to_host(metrics), np.asarray(finite)
        newly = alive_before & ~finite.all(axis=1)
        if newly.any():
            if run.stop_on_divergence:
                _stop_on_divergence(metrics, finite, chunk, members, newly)
            health.mark(newly, chunk, description, [_not_finite(metrics, finite, i) for i in range(len(members))])
            print(f"{description}: " + "; ".join(health.describe(i, members) for i in np.flatnonzero(newly)) +
                  ": frozen at its last finite state; the other members train on.", file=sys.stderr)
        env_steps = chunk * trainer.steps_per_chunk
        files.log(files.metrics, chunk, env_steps, members, metrics, ~health.alive)
        pending = [i for i in range(len(members)) if not health.logged[i]]
        if pending:
            files.log_diverged(files.metrics, chunk, env_steps, members, metrics, pending, health, description)
            health.logged[pending] = True
        bar.update(trainer.steps_per_chunk * runner.population.size)
        last = chunk == num_chunks or not health.alive.any()
        if last or (run.eval_every and chunk % run.eval_every == 0):
            ev = _to_host(runner.evaluate(carry, runner.eval_keys(chunk), runner.hparams))
            files.log(files.evals, chunk, env_steps, members, ev, ~health.alive)
            pending = [i for i in range(len(members)) if not health.eval_logged[i]]
            if pending:
                files.log_diverged(files.evals, chunk, env_steps, members, ev, pending, health)
                health.eval_logged[pending] = True
            if health.alive.any():
                bar.set_postfix({k: f"{float(np.mean(v[health.alive])):.3g}" for k, v in ev.items()})
        if last or (run.checkpoint_every and chunk % run.checkpoint_every == 0):
            save_checkpoint(manager, chunk, carry)  # with the health (HealthManager)
        if not health.alive.any():
            bar.close()
            raise UserError(all_diverged_message(description, health, members, chunk))
    bar.close()
    return carry


def all_diverged_message(name: str, health: Health, members: list[dict], chunk: int) -> str:
    return (f"Training diverged: every member of the population has non-finite metrics or parameters ("
            + "; ".join(health.describe(i, members) for i in health.diverged()) + f"). Their last finite states "
            f"are in the checkpoint of chunk {chunk} ({name}), and the logs are kept. Lower the learning rates or "
            f"check reward scale.")


# --------------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------------
def _args_to_json(args) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(args), default=str))


def _args_from_json(args_cls, data: dict):
    import typing
    hints = typing.get_type_hints(args_cls)
    kwargs = {}
    for f in dataclasses.fields(args_cls):
        if f.name not in data:
            continue
        value, typ = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(typ):
            kwargs[f.name] = _args_from_json(typ, value)
        elif isinstance(value, list):
            kwargs[f.name] = tuple(value)
        else:
            kwargs[f.name] = value
    return args_cls(**kwargs)


def load_run_args(run_dir: str | os.PathLike, args_cls: type) -> tuple[Any, list[dict], dict]:
    """`(args, sweep settings, saved config)` of the finished or killed run in `run_dir`, read from its
    config.json: `args` is an `args_cls` instance, the settings are those `parse_sweep` gives (so
    `make_population(args.hp, settings, args.run.seed, args.run.num_seeds)` rebuilds the run's population), and
    the config is the whole JSON dict. A missing or unreadable config.json, or one written by another
    experiment's Args, raises `UserError`."""
    root = Path(run_dir)
    cfg_file = root / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"{root} is not a run directory: {cfg_file} does not exist. A run directory written by "
                        f"experiments/*.py (runs/<experiment>-<env>-<time>) holds config.json and checkpoints/.")
    saved: dict = {}
    try:
        saved = json.loads(cfg_file.read_text())
        args = _args_from_json(args_cls, saved["args"])
        hp_cls = type(args_cls.__dataclass_fields__["hp"].default)
        sweep = make_sweep_type(hp_cls)(**saved.get("sweep", {}))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        written_by = saved.get("experiment") if isinstance(saved, dict) else None
        raise UserError(f"{cfg_file} does not match the arguments {args_cls.__module__}.{args_cls.__name__} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); it was written by "
                        f"the experiment {written_by!r}.") from None
    return args, parse_sweep(sweep, args.hp), saved


def num_chunks_for(run: RunConfig, steps_per_chunk: int) -> int:
    if run.total_steps <= 0:
        raise UserError(f"--total-steps must be a positive number of environment steps, got {run.total_steps}.")
    return math.ceil(run.total_steps / steps_per_chunk)


def validate_run(run: RunConfig) -> None:
    for name in ("num_seeds",):
        if getattr(run, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(run, name)}.")
    for name in ("eval_every", "checkpoint_every"):
        if getattr(run, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(run, name)}.")
    if run.wandb_project:
        import importlib.util
        if importlib.util.find_spec("wandb") is None:
            raise UserError(f"--wandb-project {run.wandb_project} needs the wandb package, which is not installed: "
                            f"pip install 'headstart[wandb]' (or pip install wandb), or leave --wandb-project out.")


def prepare_run_dir(experiment: str, args) -> Path:
    run = args.run
    if run.run_dir:
        root = Path(run.run_dir)
    else:
        env = getattr(args, "env", "run")
        root = Path("runs") / f"{experiment}-{env}-{time.strftime('%Y%m%d-%H%M%S')}"
    if root.exists() and any(root.iterdir()):
        raise UserError(f"The run directory {root} already exists and is not empty; refusing to overwrite it. "
                        f"Pass --resume {root} to continue that run, or choose another --run-dir.")
    root.mkdir(parents=True, exist_ok=True)
    return root


class Preset(NamedTuple):
    """A named set of flags: `--preset NAME` puts them before the user's own flags (the last occurrence of a flag
    wins, so flags given on the command line override the preset)."""

    flags: tuple[str, ...] = ()
    help: str = ""


def _presets(presets: dict | None) -> dict[str, Preset]:
    """Normalise {name: Preset | [flags]}."""
    return {k: v if isinstance(v, Preset) else Preset(tuple(v)) for k, v in (presets or {}).items()}


def expand_preset(argv: list[str], presets: dict, default: str = "cpu") -> list[str]:
    """argv with the flags of its --preset (the last one given; `default` without one) placed in front."""
    presets = _presets(presets)
    name = default
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
    if name not in presets:
        raise UserError(f"--preset {name!r}: choose one of {', '.join(presets)}.")
    return list(presets[name].flags) + list(argv)


def presets_help(presets: dict, default: str = "cpu") -> str:
    """The presets section of --help: each preset's flags, generated from the same dict that --preset expands."""
    lines = ["Presets (`--preset NAME` puts that preset's flags before yours, so flags you give override them):"]
    for name, preset in _presets(presets).items():
        flags = " ".join(preset.flags) or "(no flags)"
        lines.append(f"  {name}{' (default)' if name == default else ''}: {flags}")
        if preset.help:
            lines.append(f"      {preset.help}")
    return "\n".join(lines)


def config_flags(prefix: str, config, base) -> list[str]:
    """The flags that turn the dataclass `base` into `config` (fields that differ), e.g. ("agent", PAPER_AGENT,
    CPU_AGENT) -> ["--agent.num-critics", "10", ...]: presets written from configs the code already defines."""
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value == getattr(base, f.name):
            continue
        flag = f"--{prefix}.{f.name.replace('_', '-')}" if prefix else f"--{f.name.replace('_', '-')}"
        if isinstance(value, bool):
            out.append(flag if value else flag.replace(f"--{prefix}." if prefix else "--",
                                                       f"--{prefix}.no-" if prefix else "--no-", 1))
        elif isinstance(value, (tuple, list)):
            out += [flag, *(str(v) for v in value)]
        elif value is None:
            out += [flag, "None"]
        else:
            out += [flag, str(value)]
    return out


# Flags that `--resume` may change: the budget (upwards: the run trains on to it) and the progress bar.
RESUME_MAY_CHANGE = {("run", "total_steps"): "--total-steps (a larger value extends the run)",
                     ("run", "progress"): "--progress/--no-progress"}


def _flat(tree: dict, prefix: tuple = ()) -> dict[tuple, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _flag_name(path: tuple) -> str:
    parts = path[1:] if path[0] == "run" else path  # RunConfig's flags have no prefix (OmitArgPrefixes)
    return "--" + ".".join(parts).replace("_", "-")


def resume_changes(given: dict, defaults: dict, saved: dict) -> dict[tuple, tuple]:
    """path -> (saved, given) for every setting that the command line sets (differs from the defaults) to
    something other than the saved run's value."""
    given, defaults, saved = _flat(given), _flat(defaults), _flat(saved)
    skip = {("run", "resume"), ("run", "run_dir")}
    return {p: (saved.get(p), v) for p, v in given.items()
            if p not in skip and v != defaults.get(p) and v != saved.get(p)}


def parse_args(args_cls: type, argv: list[str] | None = None, description: str | None = None,
               presets: dict | None = None):
    """(args, sweep, sweep settings, resuming) from the command line; with `--resume DIR` the saved args of DIR.

    `presets` ({name: Preset or [flags]}; "cpu" is the default) adds `--preset NAME` (see `expand_preset`) and
    lists them in --help. On resume, flags other than `RESUME_MAY_CHANGE` that differ from the saved run are
    refused by name; a larger `--total-steps` extends the run (config.json is updated by `open_run`)."""
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    hp_cls = type(args_cls.__dataclass_fields__["hp"].default)
    sweep_cls = make_sweep_type(hp_cls)
    extra = [("sweep", sweep_cls, dataclasses.field(default_factory=sweep_cls))]
    description = description or args_cls.__doc__ or ""
    if presets:
        argv = expand_preset(argv, presets)
        description = description.rstrip() + "\n\n" + presets_help(presets)
        if "preset" not in args_cls.__dataclass_fields__:
            extra.append(("preset", Literal[tuple(presets)], dataclasses.field(default="cpu")))  # type: ignore
    check_sweep_argv(argv, sweep_cls, args_cls)
    cli_cls = dataclasses.make_dataclass(args_cls.__name__, extra, bases=(args_cls,), frozen=True)
    parsed = tyro.cli(cli_cls, args=argv, description=description)
    sweep = parsed.sweep
    args = args_cls(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(args_cls)})
    resuming = bool(args.run.resume)
    if resuming:
        root = Path(args.run.resume)
        if not (root / "config.json").exists():
            raise UserError(f"Cannot resume: {root / 'config.json'} does not exist. --resume takes a run directory "
                            f"written by this program (it holds config.json and checkpoints/).")
        saved_args, _, saved = load_run_args(root, args_cls)
        saved_sweep = sweep_cls(**saved["sweep"])
        defaults = tyro.cli(cli_cls, args=expand_preset([], presets) if presets else [], description=description)
        as_json = lambda a, sw: {**_args_to_json(a), "sweep": dataclasses.asdict(sw)}
        default_args = args_cls(**{f.name: getattr(defaults, f.name) for f in dataclasses.fields(args_cls)})
        changes = resume_changes(as_json(args, sweep), as_json(default_args, defaults.sweep),
                                 as_json(saved_args, saved_sweep))
        refused = {p: c for p, c in changes.items() if p not in RESUME_MAY_CHANGE}
        if refused:
            listed = ", ".join(f"{_flag_name(p)} {_show(new)} (the run has {_show(old)})"
                               for p, (old, new) in refused.items())
            raise UserError(f"Cannot resume {root} with changed settings: {listed}. A resume continues the run with "
                            f"its saved configuration and may change only {' and '.join(RESUME_MAY_CHANGE.values())}"
                            f". Start a new run (without --resume) to change anything else.")
        run = dataclasses.replace(saved_args.run, resume=str(root), run_dir=str(root))
        for (_, name), (old, new) in changes.items():
            if name == "total_steps" and new < old:
                raise UserError(f"Cannot resume {root} with --total-steps {new}: the run's budget is {old} steps "
                                f"per member, and a resume can only extend it (give a larger number, or none).")
            run = dataclasses.replace(run, **{name: new})
        args, sweep = dataclasses.replace(saved_args, run=run), saved_sweep
    validate_run(args.run)
    return args, sweep, parse_sweep(sweep, args.hp), resuming


def _show(value) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "()"
    return repr(value) if isinstance(value, str) else str(value)


def open_run(experiment: str, args, sweep, population: Population, resuming: bool) -> Path:
    """The run directory: the resumed one, or a new one with config.json written (never an existing one).

    Resuming with a larger --total-steps (an extension) rewrites the resumed config.json's budget, atomically, and
    appends {"from", "to", "time"} to its "extended" list."""
    if resuming:
        root = Path(args.run.resume)
        cfg_file = root / "config.json"
        config = json.loads(cfg_file.read_text())
        old = config["args"]["run"]["total_steps"]
        if args.run.total_steps != old:
            config["args"]["run"]["total_steps"] = args.run.total_steps
            config.setdefault("extended", []).append({"from": old, "to": args.run.total_steps,
                                                      "time": time.strftime("%Y-%m-%d %H:%M:%S")})
            tmp = cfg_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(config, indent=2))
            os.replace(tmp, cfg_file)
            print(f"{experiment}: extending {root} from {old} to {args.run.total_steps} steps per member.",
                  file=sys.stderr)
        return root
    root = prepare_run_dir(experiment, args)
    config = {"experiment": experiment, "args": _args_to_json(args), "sweep": dataclasses.asdict(sweep),
              "members": population.members, "devices": [str(d) for d in jax.devices()]}
    (root / "config.json").write_text(json.dumps(config, indent=2))
    return root


def _run_config(root: Path) -> dict:
    """The config.json of the run that `root` (a run directory or one of its phase directories) belongs to."""
    for directory in (root, root.parent):
        if (directory / "config.json").is_file():
            return json.loads((directory / "config.json").read_text())
    return {}


def run_phase(name: str, trainer: Trainer, population: Population, root: Path, run: RunConfig, num_chunks: int,
              initial_carry: Callable[[Runner], Any] | None = None, health: Health | None = None):
    """Train one phase in `root` (logs, checkpoints/, curves.png), resuming from its newest checkpoint if any.

    A phase whose final checkpoint exists is not trained again: its carry is restored and returned, which is how
    a multi-phase experiment (pretrain -> fine-tune) resumes; a larger `num_chunks` than its checkpoint trains it
    on (an extended run). `initial_carry(runner)` replaces the default initialisation (e.g. to hand over a
    pretrained agent). `health`, when given, holds the members that diverged in an earlier phase (they stay
    frozen here) and is updated in place with this phase's. Diverged members are listed at the end.
    """
    runner = Runner(trainer, population)
    members = population.members
    wandb = WandbLogger(run.wandb_project, root, name, population, _run_config(root)) if run.wandb_project else None
    files = RunFiles(root, run.tensorboard, wandb)
    try:
        start_chunk, carry = 0, None
        phase_health = health.next_phase() if health is not None else Health.healthy(population.size)
        if files.ckpt_dir.is_dir() and _checkpoint_manager(files.ckpt_dir).latest_step() is not None:
            start_chunk, carry = restore_checkpoint(files.ckpt_dir, runner.abstract_carry())
            phase_health = restore_health(files.ckpt_dir, start_chunk, population.size)
            RunFiles.truncate_jsonl(files.metrics, start_chunk)
            RunFiles.truncate_jsonl(files.evals, start_chunk)
            print(f"{name}: resuming {root} from chunk {start_chunk}/{num_chunks}.", file=sys.stderr)
        elif initial_carry is not None:
            carry = initial_carry(runner)
        print(f"{name}: {population.size} member(s) on {runner.sharding.mesh.devices.size} device(s), "
              f"{num_chunks} chunks of {trainer.steps_per_chunk} steps -> {root}", file=sys.stderr)
        if not phase_health.alive.any():
            raise UserError(all_diverged_message(name, phase_health, members, start_chunk))
        if start_chunk < num_chunks:
            carry = train(runner, trainer, files, num_chunks, run, start_chunk, carry, description=name,
                          health=phase_health)
            plot_curves(files.evals, root / "curves.png", members)
    finally:
        files.close()
    if phase_health.diverged():
        print(phase_health.summary(name, members), file=sys.stderr)
    if health is not None:
        vars(health).update(vars(phase_health.copy()))
    return carry


def exits_on_user_error(fn: Callable) -> Callable:
    """Decorate an experiment's `main`: a `UserError` is printed as `error: <message>` and exits with status 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    return wrapper


@exits_on_user_error
def main(experiment: str, args_cls: type, build: Callable[[Any], Trainer], argv: list[str] | None = None,
         description: str | None = None, presets: dict | None = None) -> Path:
    """Parse the CLI (with `presets`, see `parse_args`), check every member's hyperparameters, build, train, log,
    checkpoint and plot. Returns the run directory."""
    args, sweep, settings, resuming = parse_args(args_cls, argv, description, presets)
    population = make_population(args.hp, settings, args.run.seed, args.run.num_seeds)  # checks every member
    try:
        trainer = build(args)
    except ValueError as e:  # bad env names, bad static config
        raise UserError(str(e)) from None
    num_chunks = num_chunks_for(args.run, trainer.steps_per_chunk)
    root = open_run(experiment, args, sweep, population, resuming)
    if resuming and not (root / "checkpoints").is_dir():
        raise UserError(f"Cannot resume: {root} holds no checkpoints/ directory (the run was killed before "
                        f"its first save); start it again without --resume.")
    run_phase(experiment, trainer, population, root, args.run, num_chunks)
    print(f"done: {root}/curves.png, {root}/eval.jsonl", file=sys.stderr)
    return root
