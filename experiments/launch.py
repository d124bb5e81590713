"""Start N local processes of one experiment as ONE multi-process run (jax.distributed on loopback).

    python -m experiments.launch -n 2 experiments/sac.py --num-seeds 4 --total-steps 2000
    python -m experiments.launch -n 2 --cpu-devices 2 experiments/sac.py --num-seeds 8   # 2 x 2 CPU devices
    python -m experiments.launch -n 2 experiments/sac.py --resume runs/sac-...          # same topology

For trying a multi-process run without a cluster: it picks a free loopback port for the coordinator, starts N
copies of the script with $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES and $JAX_PROCESS_ID set (the experiment's
runner reads them), and streams each process's output prefixed with "[i] ". When one process fails, the others
are terminated and the launcher exits with its status; Ctrl-C (or SIGTERM) stops all of them. On a cluster use
its own launcher instead (srun, mpirun, a Kubernetes job) with `--distributed` or the three flags; see the README,
"Scaling out".
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    """A TCP port that was free on the loopback interface a moment ago (the coordinator binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(base: dict, address: str, n: int, i: int, cpu_devices: int, gpus_per_process: int = 0) -> dict:
    """The environment of process `i` of `n`: the distributed settings, unbuffered output; with `cpu_devices` > 0,
    the CPU platform with that many devices per process; with `gpus_per_process` > 0, the GPUs i*k..i*k+k-1
    ($JAX_LOCAL_DEVICE_IDS, read by jax.distributed.initialize; untested here, no GPU)."""
    env = {**base, "JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": str(n), "JAX_PROCESS_ID": str(i),
           "PYTHONUNBUFFERED": "1"}
    if gpus_per_process > 0:
        env["JAX_LOCAL_DEVICE_IDS"] = ",".join(str(i * gpus_per_process + j) for j in range(gpus_per_process))
    if cpu_devices > 0:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={cpu_devices}"])
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGKILL when the launcher dies (even by SIGKILL)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _stream(proc: subprocess.Popen, prefix: str) -> None:
    for line in iter(proc.stdout.readline, b""):
        sys.stdout.buffer.write(prefix.encode() + line)
        sys.stdout.buffer.flush()


def stop_all(procs: list[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM every running process, then SIGKILL those still running after `grace` seconds."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(n: int, command: list[str], cpu_devices: int = 0, port: int = 0, gpus_per_process: int = 0) -> int:
    """Run `command` (a script and its flags, run with this Python) as processes 0..n-1; the exit status."""
    address = f"127.0.0.1:{port or free_port()}"
    print(f"launch: {n} processes, coordinator {address}: {' '.join(command)}", file=sys.stderr, flush=True)
    procs, streams = [], []

    def on_signal(signum, _frame):
        raise KeyboardInterrupt
    # Both explicitly: a process started with SIGINT ignored (a background job of a script, a pytest-xdist
    # worker) inherits SIG_IGN, and Python then never raises KeyboardInterrupt for Ctrl-C.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for i in range(n):
            p = subprocess.Popen([sys.executable, *command], env=process_env(dict(os.environ), address, n, i,
                                                                              cpu_devices, gpus_per_process),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            procs.append(p)
            streams.append(threading.Thread(target=_stream, args=(p, f"[{i}] "), daemon=True))
            streams[-1].start()
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                print(f"launch: process {i} exited with status {code}; stopping the others.", file=sys.stderr,
                      flush=True)
                stop_all(procs)
                status = code if code > 0 else 128 - code
                break
            if all(c == 0 for c in codes):
                status = 0
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("launch: interrupted; stopping every process.", file=sys.stderr, flush=True)
        stop_all(procs)
        status = 130
    for t in streams:
        t.join(timeout=2)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--num-processes", type=int, required=True, help="how many processes to start")
    parser.add_argument("--cpu-devices", type=int, default=0,
                        help="run on the CPU with this many devices per process (XLA_FLAGS "
                             "--xla_force_host_platform_device_count); 0: leave the platform as it is")
    parser.add_argument("--gpus-per-process", type=int, default=0,
                        help="give process i the GPUs i*K..i*K+K-1 ($JAX_LOCAL_DEVICE_IDS); 0: every process sees "
                             "all of them (untested here: no GPU)")
    parser.add_argument("--port", type=int, default=0, help="the coordinator's loopback port (default: a free one)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the experiment script and its flags, e.g. experiments/sac.py --num-seeds 4")
    args = parser.parse_args(argv)
    if args.num_processes < 1:
        parser.error(f"-n must be at least 1, got {args.num_processes}")
    if not args.command:
        parser.error("give the experiment script to run, e.g. experiments/sac.py --num-seeds 4")
    return launch(args.num_processes, args.command, args.cpu_devices, args.port, args.gpus_per_process)


if __name__ == "__main__":
    sys.exit(main())
