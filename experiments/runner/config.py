"""What an experiment declares and the runner checks: `RunConfig` (budgets and bookkeeping), `Trainer` (what
`build(args)` returns), `UserError`, presets (`--preset NAME`), `--env-options` parsing and run validation."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax


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
    coordinator_address: str = ""
    """Multi-process run (jax.distributed): host:port of process 0's coordinator, the same for every process
    (default: $JAX_COORDINATOR_ADDRESS). With no distributed setting at all the run is one process, as always."""
    num_processes: int = 0
    """Multi-process run: how many processes form the run (default: $JAX_NUM_PROCESSES; 0 = not set)."""
    process_id: int = -1
    """Multi-process run: this process's id in 0..num-processes-1; 0 writes the logs (default: $JAX_PROCESS_ID;
    -1 = not set)."""
    distributed: bool = False
    """Join a multi-process run whose settings jax.distributed detects from the launcher (SLURM, TPU pod,
    Kubernetes, Open MPI), for those not given above."""
    distributed_timeout: int = 120
    """Seconds to wait for every process to join the coordinator before failing with an explanation."""


# How this process joins a run, not what the run is: taken from the command line on --resume, never compared.
LAUNCH_FIELDS = ("coordinator_address", "num_processes", "process_id", "distributed", "distributed_timeout")


class Trainer(NamedTuple):
    """What an experiment's `build(args)` returns: pure functions of ONE population member."""

    init_carry: Callable[[jax.Array, Any], Any]  # (key, hp) -> carry
    train_chunk: Callable[[Any, Any], tuple[Any, dict]]  # (carry, hp) -> (carry, metrics)
    evaluate: Callable[[Any, jax.Array, Any], dict]  # (carry, key, hp) -> metrics
    steps_per_chunk: int  # env transitions (or gradient steps, for offline phases) per member per chunk
    shared: Any = None  # optional data shared by every member (e.g. an offline dataset): passed to train_chunk
    #                     as a third, NOT vmapped argument, so it is stored once, not per member, and never
    #                     checkpointed (it is reloaded from its file).


def parse_env_options(options: tuple[str, ...]) -> dict[str, Any]:
    """`("reward_type=dense", "max_steps=200")` -> {"reward_type": "dense", "max_steps": 200} (ints, floats, bools
    and strings recognised)."""
    out: dict[str, Any] = {}
    for item in options:
        if "=" not in item:
            raise UserError(f"--env-options takes key=value pairs, got {item!r} "
                            f"(e.g. --env-options reward_type=dense).")
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
