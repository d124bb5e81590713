"""The thin host loop: `train` runs the compiled chunks of one phase (log, progress bar, evaluate, checkpoint),
`run_phase` wraps it with resume, run files and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from .checkpoints import HealthManager, _checkpoint_manager, restore_checkpoint, restore_health, save_checkpoint
from .compiled import Runner
from .config import RunConfig, Trainer, UserError
from .distributed import is_primary, say, to_host
from .health import Health, _not_finite, _stop_on_divergence, all_diverged_message
from .logs import QuietFiles, RunFiles, WandbLogger
from .plots import plot_curves
from .sweeps import Population


def train(runner: Runner, trainer: Trainer, files: RunFiles, num_chunks: int, run: RunConfig,
          start_chunk: int = 0, carry=None, description: str = "train", health: Health | None = None,
          overlap: bool = True):
    """The thin host loop. Returns the final carry; `health` (all alive by default) is updated in place.

    A member whose chunk produced non-finite metrics or parameters is frozen inside the compiled chunk (see
    `guard_chunk`); here it is marked diverged, logged once with "diverged": true and left out of later records.
    With `run.stop_on_divergence` the first divergence raises instead. When every member has diverged, the phase
    is checkpointed and a `UserError` ends it.

    With `overlap` (the default), chunk k+1 is dispatched before chunk k's metrics are fetched and written (JAX
    dispatches asynchronously), so logging, TensorBoard and the progress bar overlap with the device's compute.
    Nothing the next chunk needs comes from the host: its alive mask is computed on device (`Runner.still_alive`),
    and an evaluation due at chunk k is dispatched before chunk k+1 consumes (donates) the carry. A checkpoint
    chunk is a barrier: its metrics are written and the health updated, then the carry is saved, before the next
    dispatch. When chunk k's metrics show that every member has diverged, chunk k+1 (already dispatched) ran with
    every member frozen, so its carry IS chunk k's: that is what is evaluated and saved as chunk k. The files
    written are the same, byte for byte, as with `overlap=False` (write each chunk before dispatching the next).

    In a multi-process run every process runs this loop on its own shards: the metrics are gathered from all of
    them (so the health is the same everywhere), every process takes part in each checkpoint, and only process 0
    has a progress bar (`files` is a `QuietFiles` on the others)."""
    from tqdm import tqdm

    members = runner.population.members
    health = Health.healthy(len(members)) if health is None else health
    manager = HealthManager(_checkpoint_manager(files.ckpt_dir), health)
    if carry is None:
        carry = runner.init_carry()
    total = num_chunks * trainer.steps_per_chunk * runner.population.size
    bar = tqdm(total=total, initial=start_chunk * trainer.steps_per_chunk * runner.population.size,
               unit="step", unit_scale=True, desc=description, disable=not (run.progress and is_primary()),
               dynamic_ncols=True)

    def saves(chunk: int) -> bool:
        return chunk == num_chunks or bool(run.checkpoint_every and chunk % run.checkpoint_every == 0)

    def write(chunk: int, metrics, finite, evaluation, carry) -> None:
        """The host's part of `chunk`: fetch its metrics (and evaluation, if one was dispatched), mark new
        divergences, write the logs, and save when due. `carry` is chunk's carry, or (overlapped) the next one's."""
        metrics, finite = to_host(metrics), to_host(finite)
        newly = health.alive & ~finite.all(axis=1)
        if newly.any():
            if run.stop_on_divergence:
                _stop_on_divergence(metrics, finite, chunk, members, newly)
            health.mark(newly, chunk, description, [_not_finite(metrics, finite, i) for i in range(len(members))])
            say(f"{description}: " + "; ".join(health.describe(i, members) for i in np.flatnonzero(newly)) +
                ": frozen at its last finite state; the other members train on.")
        env_steps = chunk * trainer.steps_per_chunk
        files.log(files.metrics, chunk, env_steps, members, metrics, ~health.alive)
        unmarked = [i for i in range(len(members)) if not health.logged[i]]
        if unmarked:
            files.log_diverged(files.metrics, chunk, env_steps, members, metrics, unmarked, health, description)
            health.logged[unmarked] = True
        bar.update(trainer.steps_per_chunk * runner.population.size)
        all_diverged = not health.alive.any()
        if evaluation is None and all_diverged:
            evaluation = runner.evaluate(carry, runner.eval_keys(chunk), runner.hparams)
        if evaluation is not None:
            ev = to_host(evaluation)
            files.log(files.evals, chunk, env_steps, members, ev, ~health.alive)
            unmarked = [i for i in range(len(members)) if not health.eval_logged[i]]
            if unmarked:
                files.log_diverged(files.evals, chunk, env_steps, members, ev, unmarked, health)
                health.eval_logged[unmarked] = True
            if not all_diverged:
                bar.set_postfix({k: f"{float(np.mean(v[health.alive])):.3g}" for k, v in ev.items()})
        if all_diverged or saves(chunk):
            save_checkpoint(manager, chunk, carry)  # with the health (HealthManager)
        if all_diverged:
            bar.close()
            raise UserError(all_diverged_message(description, health, members, chunk))

    alive = jax.device_put(health.alive, runner.sharding)
    pending = None  # (chunk, metrics, finite, evaluation): dispatched, not yet written
    for chunk in range(start_chunk + 1, num_chunks + 1):
        carry, metrics, finite = runner.guarded_chunk(carry, runner.hparams, alive)
        alive = runner.still_alive(alive, finite)
        evaluate = chunk == num_chunks or (run.eval_every and chunk % run.eval_every == 0)
        evaluation = runner.evaluate(carry, runner.eval_keys(chunk), runner.hparams) if evaluate else None
        if pending is not None:
            write(*pending, carry)  # the previous chunk's, while this one computes
        pending = (chunk, metrics, finite, evaluation)
        if not overlap or saves(chunk):
            write(*pending, carry)
            pending = None
    bar.close()
    return carry


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
    frozen here) and is updated in place with this phase's. Diverged members are listed at the end. Only process
    0 of a multi-process run writes files (wandb included) and prints.
    """
    runner = Runner(trainer, population)
    members = population.members
    primary = is_primary()
    wandb = (WandbLogger(run.wandb_project, root, name, population, _run_config(root))
             if run.wandb_project and primary else None)
    files = RunFiles(root, run.tensorboard, wandb) if primary else QuietFiles(root)
    try:
        start_chunk, carry = 0, None
        phase_health = health.next_phase() if health is not None else Health.healthy(population.size)
        if files.ckpt_dir.is_dir() and _checkpoint_manager(files.ckpt_dir).latest_step() is not None:
            start_chunk, carry = restore_checkpoint(files.ckpt_dir, runner.abstract_carry())
            phase_health = restore_health(files.ckpt_dir, start_chunk, population.size)
            if primary:
                RunFiles.truncate_jsonl(files.metrics, start_chunk)
                RunFiles.truncate_jsonl(files.evals, start_chunk)
            say(f"{name}: resuming {root} from chunk {start_chunk}/{num_chunks}.")
        elif initial_carry is not None:
            carry = initial_carry(runner)
        processes = f" of {jax.process_count()} processes" if jax.process_count() > 1 else ""
        say(f"{name}: {population.size} member(s) on {runner.sharding.mesh.devices.size} device(s){processes}, "
            f"{num_chunks} chunks of {trainer.steps_per_chunk} steps -> {root}")
        if not phase_health.alive.any():
            raise UserError(all_diverged_message(name, phase_health, members, start_chunk))
        if start_chunk < num_chunks:
            carry = train(runner, trainer, files, num_chunks, run, start_chunk, carry, description=name,
                          health=phase_health)
            if primary:
                plot_curves(files.evals, root / "curves.png", members)
    finally:
        files.close()
    if phase_health.diverged():
        say(phase_health.summary(name, members))
    if health is not None:
        vars(health).update(vars(phase_health.copy()))
    return carry
