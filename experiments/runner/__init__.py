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
- Multi-process runs (`jax.distributed`): `--coordinator-address`, `--num-processes`, `--process-id` (or their
  $JAX_* variables, or `--distributed` to have them detected on SLURM/TPU/Kubernetes): the population is sharded
  over the global mesh of every process's devices, process 0 alone writes logs and plots, checkpoints are orbax
  multi-process saves; `python -m experiments.launch -n 2 experiments/sac.py ...` tries it on one machine.

The package's files, one seam each: config (RunConfig, Trainer, UserError, presets), sweeps (populations),
compiled (Runner, guard_chunk), health, distributed (multi-process runs), logs (RunFiles, WandbLogger),
checkpoints, plots, rundirs, loop (train, run_phase) and cli (parse_args, main). Every name is re-exported
here: `from experiments import runner; runner.X` works for all of them.
"""

from .config import (  # noqa: F401
    LAUNCH_FIELDS,
    Preset,
    RunConfig,
    Trainer,
    UserError,
    _presets,
    config_flags,
    expand_preset,
    num_chunks_for,
    parse_env_options,
    presets_help,
    validate_run,
)
from . import distributed  # noqa: F401
from .sweeps import (  # noqa: F401
    DEFAULT_RANGES,
    Interval,
    Population,
    check_hparams,
    check_sweep_argv,
    hparam_ranges,
    make_population,
    make_sweep_type,
    parse_sweep,
    population_sharding,
)
from .compiled import (  # noqa: F401
    Runner,
    _float_leaves,
    all_finite,
    guard_chunk,
)
from .health import (  # noqa: F401
    Health,
    _not_finite,
    _stop_on_divergence,
    all_diverged_message,
)
from .logs import (  # noqa: F401
    QuietFiles,
    RunFiles,
    WandbLogger,
)
from .checkpoints import (  # noqa: F401
    HealthManager,
    _checkpoint_manager,
    _without_empty,
    restore_checkpoint,
    restore_health,
    save_checkpoint,
)
from .plots import (  # noqa: F401
    diverged_members,
    plot_curves,
    read_metric,
)
from .loop import (  # noqa: F401
    _run_config,
    run_phase,
    train,
)
from .rundirs import (  # noqa: F401
    _args_from_json,
    _args_to_json,
    load_run_args,
    open_run,
    prepare_run_dir,
)
from .cli import (  # noqa: F401
    RESUME_MAY_CHANGE,
    _flag_name,
    _flat,
    _show,
    exits_on_user_error,
    main,
    parse_args,
    resume_changes,
)
