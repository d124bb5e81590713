"""The command line: `parse_args` (tyro over an experiment's Args, sweeps, presets, resume checks) and `main`."""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path
from typing import Any, Callable, Literal

from . import distributed
from .config import LAUNCH_FIELDS, Trainer, UserError, expand_preset, num_chunks_for, presets_help, validate_run
from .loop import run_phase
from .rundirs import _args_to_json, load_run_args, open_run
from .sweeps import check_sweep_argv, make_population, make_sweep_type, parse_sweep


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
    skip = {("run", "resume"), ("run", "run_dir"), *(("run", name) for name in LAUNCH_FIELDS)}
    return {p: (saved.get(p), v) for p, v in given.items()
            if p not in skip and v != defaults.get(p) and v != saved.get(p)}


def parse_args(args_cls: type, argv: list[str] | None = None, description: str | None = None,
               presets: dict | None = None):
    """(args, sweep, sweep settings, resuming) from the command line; with `--resume DIR` the saved args of DIR.

    `presets` ({name: Preset or [flags]}; "cpu" is the default) adds `--preset NAME` (see `expand_preset`) and
    lists them in --help. On resume, flags other than `RESUME_MAY_CHANGE` that differ from the saved run are
    refused by name; a larger `--total-steps` extends the run (config.json is updated by `open_run`). With
    distributed settings (flags or environment, see `distributed`), this process then joins the multi-process run,
    before anything touches a device; without them, jax.distributed is not called at all."""
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
        run = dataclasses.replace(saved_args.run, resume=str(root), run_dir=str(root),
                                  **{name: getattr(args.run, name) for name in LAUNCH_FIELDS})
        for (_, name), (old, new) in changes.items():
            if name == "total_steps" and new < old:
                raise UserError(f"Cannot resume {root} with --total-steps {new}: the run's budget is {old} steps "
                                f"per member, and a resume can only extend it (give a larger number, or none).")
            run = dataclasses.replace(run, **{name: new})
        args, sweep = dataclasses.replace(saved_args, run=run), saved_sweep
    validate_run(args.run)
    distributed.initialize(args.run)  # before anything touches a device; nothing at all without its settings
    return args, sweep, parse_sweep(sweep, args.hp), resuming


def _show(value) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "()"
    return repr(value) if isinstance(value, str) else str(value)


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
    checkpoint and plot. Returns the run directory. With distributed settings (see `distributed`), this process
    joins a multi-process run first: every process runs all of this, process 0 alone writes the files."""
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
    distributed.say(f"done: {root}/curves.png, {root}/eval.jsonl")
    return root
