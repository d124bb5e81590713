"""Run directories: config.json written once (never over an existing run), read back for `--resume`."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax

from . import distributed
from .config import UserError
from .sweeps import Population, make_sweep_type, parse_sweep


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


def prepare_run_dir(experiment: str, args) -> Path:
    """The new run's directory, created empty (refused if it holds anything). In a multi-process run every process
    gets process 0's name (the default one holds a timestamp) and checks it before process 0 creates it, so that
    all of them refuse together."""
    run = args.run
    if run.run_dir:
        root = Path(run.run_dir)
    else:
        env = getattr(args, "env", "run")
        root = Path("runs") / f"{experiment}-{env}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = Path(distributed.broadcast_text(str(root)))
    if root.exists() and any(root.iterdir()):
        raise UserError(f"The run directory {root} already exists and is not empty; refusing to overwrite it. "
                        f"Pass --resume {root} to continue that run, or choose another --run-dir.")
    distributed.barrier("run_dir checked")
    if distributed.is_primary():
        root.mkdir(parents=True, exist_ok=True)
    return root


def open_run(experiment: str, args, sweep, population: Population, resuming: bool) -> Path:
    """The run directory: the resumed one, or a new one with config.json written (never an existing one).

    Resuming with a larger --total-steps (an extension) rewrites the resumed config.json's budget, atomically, and
    appends {"from", "to", "time"} to its "extended" list. A multi-process run is refused, before anything is
    written, when its population does not split evenly over the devices, and a resume when the run was saved by
    another topology (processes, devices, population); every process checks the same, so all of them refuse."""
    distributed.check_population(population.size)
    if resuming:
        root = Path(args.run.resume)
        cfg_file = root / "config.json"
        config = json.loads(cfg_file.read_text())
        distributed.check_topology(root, config.get("topology"), distributed.topology(population.size))
        old = config["args"]["run"]["total_steps"]
        if args.run.total_steps != old and distributed.is_primary():
            config["args"]["run"]["total_steps"] = args.run.total_steps
            config.setdefault("extended", []).append({"from": old, "to": args.run.total_steps,
                                                      "time": time.strftime("%Y-%m-%d %H:%M:%S")})
            tmp = cfg_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(config, indent=2))
            os.replace(tmp, cfg_file)
            print(f"{experiment}: extending {root} from {old} to {args.run.total_steps} steps per member.",
                  file=sys.stderr)
        distributed.barrier("config extended")
        return root
    root = prepare_run_dir(experiment, args)
    config = {"experiment": experiment, "args": _args_to_json(args), "sweep": dataclasses.asdict(sweep),
              "members": population.members, "devices": [str(d) for d in jax.devices()],
              "topology": distributed.topology(population.size)}
    if distributed.is_primary():
        (root / "config.json").write_text(json.dumps(config, indent=2))
    distributed.barrier("config written")
    return root
