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
from typing import Any, Callable, NamedTuple

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


def make_population(hp_default, settings: list[dict], seed: int, num_seeds: int) -> Population:
    members, hps = [], []
    for overrides in settings:
        for j in range(num_seeds):
            members.append({"member": len(members), "seed": seed + j, **overrides})
            hps.append(hp_default.replace(**overrides) if overrides else hp_default)
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
class Runner:
    """Compiles the population's chunk once and drives the host loop. Usable from tests without the CLI."""

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
        if trainer.shared is None:
            chunk = jax.jit(counted("train_chunk", jax.vmap(trainer.train_chunk)),
                            in_shardings=(s, s), out_shardings=(s, s), donate_argnums=0)
            self.train_chunk = chunk
        else:
            replicated = jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec())
            shared = jax.device_put(trainer.shared, replicated)
            chunk = jax.jit(counted("train_chunk", jax.vmap(trainer.train_chunk, in_axes=(0, 0, None))),
                            in_shardings=(s, s, replicated), out_shardings=(s, s), donate_argnums=0)
            self.train_chunk = lambda carry, hp: chunk(carry, hp, shared)
        self.evaluate = jax.jit(counted("evaluate", jax.vmap(trainer.evaluate)), in_shardings=(s, s, s),
                                out_shardings=s)
        self.hparams = jax.device_put(population.hparams, s)

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


class RunFiles:
    """The run directory: config.json, metrics.jsonl, eval.jsonl, tb/, checkpoints/, curves.png."""

    def __init__(self, root: Path, tensorboard: bool):
        self.root = root
        self.metrics = root / "metrics.jsonl"
        self.evals = root / "eval.jsonl"
        self.ckpt_dir = root / "checkpoints"
        self.tb = None
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

    def log(self, path: Path, chunk: int, env_steps: int, members: list[dict], metrics: dict[str, np.ndarray]):
        with path.open("a") as f:
            for i, m in enumerate(members):
                rec = {"chunk": chunk, "env_steps": env_steps, **m}
                rec.update({k: float(v[i]) for k, v in metrics.items()})
                f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            prefix = "eval" if path == self.evals else "train"
            for k, v in metrics.items():
                for i in range(len(members)):
                    self.tb.add_scalar(f"{prefix}/{k}/member{i}", float(v[i]), env_steps)

    def close(self):
        if self.tb is not None:
            self.tb.close()


def _checkpoint_manager(path: Path):
    import orbax.checkpoint as ocp
    return ocp.CheckpointManager(path.absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def _without_empty(tree):
    """`tree` with its zero-size arrays replaced by None: orbax refuses to save arrays of size 0, and brax's MJX
    state holds some (e.g. `mjx.Data.act`, shape (0,) for models without actuator dynamics)."""
    return jax.tree.map(lambda x: None if x.size == 0 else x, tree)


def save_checkpoint(manager, chunk: int, carry) -> None:
    import orbax.checkpoint as ocp
    manager.save(chunk, args=ocp.args.StandardSave(_without_empty(carry)), force=True)
    manager.wait_until_finished()


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
    member has no record)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    steps = sorted({r["env_steps"] for r in rows})
    members = sorted({r["member"] for r in rows})
    table = np.full((len(members), len(steps)), np.nan)
    for r in rows:
        table[members.index(r["member"]), steps.index(r["env_steps"])] = r[key]
    return np.array(steps), table


def plot_curves(eval_path: Path, out_png: Path, members: list[dict], metric_names=("eval_return", "eval_success", "test_nll")):
    """Learning curves: per sweep setting, the mean over seeds and the min-max band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in eval_path.read_text().splitlines() if line] if eval_path.exists() else []
    names = [n for n in metric_names if records and n in records[0]]
    if not names:  # nothing to plot (e.g. a phase whose evaluation reports no return)
        return
    setting_keys = sorted({k for m in members for k in m if k not in ("member", "seed")})
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    groups: dict[tuple, list[int]] = {}
    for m in members:
        groups.setdefault(tuple((k, m.get(k)) for k in setting_keys), []).append(m["member"])
    for ax, name in zip(axes[0], names):
        for label, ids in groups.items():
            steps = sorted({r["env_steps"] for r in records})
            table = np.full((len(ids), len(steps)), np.nan)
            for r in records:
                if r["member"] in ids:
                    table[ids.index(r["member"]), steps.index(r["env_steps"])] = r[name]
            mean = np.nanmean(table, 0)
            text = ", ".join(f"{k}={v:g}" for k, v in label) or "default"
            ax.plot(steps, mean, label=f"{text} (n={len(ids)})")
            ax.fill_between(steps, np.nanmin(table, 0), np.nanmax(table, 0), alpha=0.2)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def _check_finite(metrics: dict[str, np.ndarray], chunk: int, members: list[dict]):
    for k, v in metrics.items():
        bad = ~np.isfinite(v)
        if bad.any():
            who = [members[i] for i in np.flatnonzero(bad)]
            raise UserError(f"Training diverged: metric {k!r} is not finite at chunk {chunk} for population "
                            f"member(s) {who}. Nothing was checkpointed after the divergence; the last good "
                            f"checkpoint and logs are kept. Lower the learning rates or check reward scale.")


def train(runner: Runner, trainer: Trainer, files: RunFiles, num_chunks: int, run: RunConfig,
          start_chunk: int = 0, carry=None, description: str = "train"):
    """The thin host loop. Returns the final carry."""
    from tqdm import tqdm

    members = runner.population.members
    manager = _checkpoint_manager(files.ckpt_dir)
    if carry is None:
        carry = runner.init_carry()
    total = num_chunks * trainer.steps_per_chunk * runner.population.size
    bar = tqdm(total=total, initial=start_chunk * trainer.steps_per_chunk * runner.population.size,
               unit="step", unit_scale=True, desc=description, disable=not run.progress, dynamic_ncols=True)
    for chunk in range(start_chunk + 1, num_chunks + 1):
        carry, metrics = runner.train_chunk(carry, runner.hparams)
        metrics = _to_host(metrics)
        _check_finite(metrics, chunk, members)
        env_steps = chunk * trainer.steps_per_chunk
        files.log(files.metrics, chunk, env_steps, members, metrics)
        bar.update(trainer.steps_per_chunk * runner.population.size)
        last = chunk == num_chunks
        if last or (run.eval_every and chunk % run.eval_every == 0):
            ev = _to_host(runner.evaluate(carry, runner.eval_keys(chunk), runner.hparams))
            files.log(files.evals, chunk, env_steps, members, ev)
            bar.set_postfix({k: f"{float(np.mean(v)):.3g}" for k, v in ev.items()})
        if last or (run.checkpoint_every and chunk % run.checkpoint_every == 0):
            save_checkpoint(manager, chunk, carry)
    bar.close()
    return carry


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


def parse_args(args_cls: type, argv: list[str] | None = None, description: str | None = None):
    """(args, sweep settings, resuming) from the command line; with `--resume DIR` the saved args of DIR."""
    import tyro

    argv = sys.argv[1:] if argv is None else argv
    hp_cls = type(args_cls.__dataclass_fields__["hp"].default)
    sweep_cls = make_sweep_type(hp_cls)
    check_sweep_argv(argv, sweep_cls, args_cls)
    cli_cls = dataclasses.make_dataclass(
        args_cls.__name__, [("sweep", sweep_cls, dataclasses.field(default_factory=sweep_cls))],
        bases=(args_cls,), frozen=True)
    parsed = tyro.cli(cli_cls, args=argv, description=description or args_cls.__doc__)
    sweep = parsed.sweep
    args = args_cls(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(args_cls)})
    resuming = bool(args.run.resume)
    if resuming:
        root = Path(args.run.resume)
        if not (root / "config.json").exists():
            raise UserError(f"Cannot resume: {root / 'config.json'} does not exist. --resume takes a run directory "
                            f"written by this program (it holds config.json and checkpoints/).")
        args, _, saved = load_run_args(root, args_cls)
        sweep = sweep_cls(**saved["sweep"])
        args = dataclasses.replace(args, run=dataclasses.replace(args.run, resume=str(root), run_dir=str(root)))
    validate_run(args.run)
    return args, sweep, parse_sweep(sweep, args.hp), resuming


def open_run(experiment: str, args, sweep, population: Population, resuming: bool) -> Path:
    """The run directory: the resumed one, or a new one with config.json written (never an existing one)."""
    if resuming:
        return Path(args.run.resume)
    root = prepare_run_dir(experiment, args)
    config = {"experiment": experiment, "args": _args_to_json(args), "sweep": dataclasses.asdict(sweep),
              "members": population.members, "devices": [str(d) for d in jax.devices()]}
    (root / "config.json").write_text(json.dumps(config, indent=2))
    return root


def run_phase(name: str, trainer: Trainer, population: Population, root: Path, run: RunConfig, num_chunks: int,
              initial_carry: Callable[[Runner], Any] | None = None):
    """Train one phase in `root` (logs, checkpoints/, curves.png), resuming from its newest checkpoint if any.

    A phase whose final checkpoint exists is not trained again: its carry is restored and returned, which is how
    a multi-phase experiment (pretrain -> fine-tune) resumes. `initial_carry(runner)` replaces the default
    initialisation (e.g. to hand over a pretrained agent).
    """
    runner = Runner(trainer, population)
    files = RunFiles(root, run.tensorboard)
    start_chunk, carry = 0, None
    if files.ckpt_dir.is_dir() and _checkpoint_manager(files.ckpt_dir).latest_step() is not None:
        start_chunk, carry = restore_checkpoint(files.ckpt_dir, runner.abstract_carry())
        RunFiles.truncate_jsonl(files.metrics, start_chunk)
        RunFiles.truncate_jsonl(files.evals, start_chunk)
        print(f"{name}: resuming {root} from chunk {start_chunk}/{num_chunks}.", file=sys.stderr)
    elif initial_carry is not None:
        carry = initial_carry(runner)
    print(f"{name}: {population.size} member(s) on {runner.sharding.mesh.devices.size} device(s), "
          f"{num_chunks} chunks of {trainer.steps_per_chunk} steps -> {root}", file=sys.stderr)
    if start_chunk < num_chunks:
        carry = train(runner, trainer, files, num_chunks, run, start_chunk, carry, description=name)
        plot_curves(files.evals, root / "curves.png", population.members)
    files.close()
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
         description: str | None = None) -> Path:
    """Parse the CLI, build, train, log, checkpoint and plot. Returns the run directory."""
    args, sweep, settings, resuming = parse_args(args_cls, argv, description)
    try:
        trainer = build(args)
    except ValueError as e:  # bad env names, bad static config
        raise UserError(str(e)) from None
    num_chunks = num_chunks_for(args.run, trainer.steps_per_chunk)
    population = make_population(args.hp, settings, args.run.seed, args.run.num_seeds)
    root = open_run(experiment, args, sweep, population, resuming)
    if resuming and not (root / "checkpoints").is_dir():
        raise UserError(f"Cannot resume: {root} holds no checkpoints/ directory (the run was killed before "
                        f"its first save); start it again without --resume.")
    run_phase(experiment, trainer, population, root, args.run, num_chunks)
    print(f"done: {root}/curves.png, {root}/eval.jsonl", file=sys.stderr)
    return root
