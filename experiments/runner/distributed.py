"""Multi-process runs on JAX's own distributed runtime (`jax.distributed`).

One process per host (or per GPU), all running the same host loop: the population axis is sharded over the GLOBAL
device mesh (`jax.devices()` spans every process once `jax.distributed.initialize` has run), each process computes
its own members, and only process 0 writes logs, plots and the progress bar, from metrics gathered from all
shards (`process_allgather`). Checkpoints are orbax multi-process saves (every process writes its shards), so the
run directory must be on a filesystem that every process sees.

Settings, flag first, then environment: `--coordinator-address` / $JAX_COORDINATOR_ADDRESS (host:port of process
0), `--num-processes` / $JAX_NUM_PROCESSES, `--process-id` / $JAX_PROCESS_ID, or `--distributed` alone, which lets
`jax.distributed.initialize` detect all three from the launcher (SLURM, TPU pods, Kubernetes, Open MPI). With none
of them, nothing here calls `jax.distributed` at all: a single-process run is exactly what it was.

A bad setting fails with one paragraph, in bounded time: an id out of range before anything connects; a
coordinator that cannot be reached (or processes that never join) after `--distributed-timeout` seconds, from a
watchdog thread, because XLA aborts the process on that timeout with a C++ stack trace instead of raising.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import NamedTuple

import jax
import numpy as np

from .config import RunConfig, UserError


class Launch(NamedTuple):
    """The distributed settings of this process, resolved from flags and environment (None: not given)."""

    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None

    @property
    def active(self) -> bool:
        return any(v is not None for v in self)


def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UserError(f"${name} must be an integer, got {text!r}.") from None


def resolve_launch(run: RunConfig) -> Launch:
    """This process's settings: each flag, else its environment variable, else None."""
    return Launch(run.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None,
                  run.num_processes if run.num_processes > 0 else _env_int("JAX_NUM_PROCESSES"),
                  run.process_id if run.process_id >= 0 else _env_int("JAX_PROCESS_ID"))


def check_launch(launch: Launch, auto: bool) -> None:
    """Refuse settings that cannot work, before anything connects: an id outside [0, num_processes), fewer than
    one process, a partial explicit set (without --distributed to have the rest detected), an address that is
    not host:port."""
    address, n, pid = launch
    if n is not None and n < 1:
        raise UserError(f"--num-processes must be at least 1, got {n}.")
    if pid is not None and pid < 0:
        raise UserError(f"--process-id must be >= 0, got {pid}.")
    if n is not None and pid is not None and pid >= n:
        raise UserError(f"--process-id {pid} is out of range for --num-processes {n}: ids run from 0 to {n - 1}, "
                        f"one per process, and process 0 hosts the coordinator. Check the id each process is "
                        f"given (flag --process-id or $JAX_PROCESS_ID).")
    if not auto and None in launch:
        given = ", ".join(name for name, v in zip(Launch._fields, launch) if v is not None)
        missing = ", ".join("--" + name.replace("_", "-") for name, v in zip(Launch._fields, launch) if v is None)
        raise UserError(f"A multi-process run needs the coordinator address, the number of processes and this "
                        f"process's id; {given} given, {missing} missing (flags, or $JAX_COORDINATOR_ADDRESS, "
                        f"$JAX_NUM_PROCESSES, $JAX_PROCESS_ID). Add --distributed to let jax.distributed detect "
                        f"the missing ones from SLURM, a TPU pod, Kubernetes or Open MPI.")
    if address is not None and (":" not in address or not address.rsplit(":", 1)[1].isdigit()):
        raise UserError(f"--coordinator-address must be host:port (process 0's host, a free port), got "
                        f"{address!r}.")


def _unreachable(launch: Launch, timeout: int) -> str:
    address, n, pid = launch
    role = ("this process (id 0) hosts the coordinator and the others never all joined" if pid == 0 else
            f"this process (id {pid}) could not register with the coordinator")
    return (f"error: the multi-process run did not start within --distributed-timeout {timeout} s: {role} "
            f"(coordinator {address or 'auto-detected'}, {n or 'auto-detected'} processes). Check that process 0 "
            f"is running and listening at that address and port (same host:port for every process, reachable "
            f"from this host, not blocked by a firewall), that exactly --num-processes processes were started "
            f"with distinct ids 0..N-1, and that none of them exited early (see their logs).")


def initialize(run: RunConfig) -> bool:
    """Join the multi-process run that `run`'s settings (or the environment) describe; True if distributed.
    Does nothing, and returns False, when no distributed setting is given."""
    launch = resolve_launch(run)
    if not (launch.active or run.distributed):
        return False
    if jax.distributed.is_initialized():
        return True  # joined already (a second parse in the same process)
    check_launch(launch, auto=run.distributed)
    if run.distributed_timeout < 1:
        raise UserError(f"--distributed-timeout must be at least 1 second, got {run.distributed_timeout}.")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices of all processes: one mesh

    def give_up():
        print(_unreachable(launch, run.distributed_timeout), file=sys.stderr, flush=True)
        os._exit(2)

    watchdog = threading.Timer(run.distributed_timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:  # XLA's own timeout is later than the watchdog's, so the paragraph comes first, not a C++ abort
        jax.distributed.initialize(*launch, initialization_timeout=run.distributed_timeout + 60)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"jax.distributed.initialize failed ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
                        f" with coordinator {launch.coordinator_address}, {launch.num_processes} processes, "
                        f"id {launch.process_id}. Check these settings and the launcher's environment.") from None
    finally:
        watchdog.cancel()
    return True


# Inside the run
# --------------------------------------------------------------------------------------------------------------
def is_primary() -> bool:
    """Process 0: the one that writes logs, plots, config.json and the progress bar."""
    return jax.process_index() == 0


def say(message: str) -> None:
    """Print to stderr from process 0 only (the others would repeat it)."""
    if is_primary():
        print(message, file=sys.stderr)


def to_host(tree):
    """`tree`'s arrays as numpy, each the WHOLE population's (gathered from every process's shards)."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, jax.device_get(tree))
    from jax.experimental import multihost_utils
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def broadcast_text(text: str) -> str:
    """Process 0's `text`, on every process (e.g. the run directory, whose default name holds a timestamp)."""
    if jax.process_count() == 1:
        return text
    from jax.experimental import multihost_utils
    data = text.encode()
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
    buffer = np.zeros(max(size, 1), np.uint8)
    buffer[:len(data)] = np.frombuffer(data, np.uint8)[:size]
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))[:size]).decode()


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def topology(population_size: int) -> dict:
    """What a checkpoint's shards depend on: processes, devices (global), population size."""
    return {"processes": jax.process_count(), "devices": jax.device_count(), "population": population_size}


def check_topology(root, saved: dict | None, current: dict) -> None:
    """Refuse to resume a run on another multi-process topology (a run saved before topologies were recorded
    counts as one process)."""
    saved = saved or {"processes": 1}
    if saved.get("processes", 1) == 1 and current["processes"] == 1:
        return  # single-process runs resume on any device count, as before
    if saved != current:
        show = lambda t: ", ".join(f"{v} {k}" for k, v in t.items())
        raise UserError(f"Cannot resume {root} on a different topology: it was saved by {show(saved)} and this "
                        f"launch has {show(current)}. A multi-process checkpoint is resumed by the same number "
                        f"of processes with the same devices: relaunch with --num-processes "
                        f"{saved.get('processes', 1)} and the same devices per process.")


def check_population(size: int) -> None:
    """Across processes, every device holds an equal part of the population (no process may hold none)."""
    if jax.process_count() > 1 and size % jax.device_count():
        raise UserError(f"A population of {size} member(s) cannot be split evenly over the {jax.device_count()} "
                        f"devices of {jax.process_count()} processes: choose --num-seeds / sweep values so that "
                        f"the population is a multiple of {jax.device_count()}.")
