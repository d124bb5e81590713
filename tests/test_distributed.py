"""Multi-process populations (jax.distributed, gloo on CPU loopback): two processes with one CPU device each run
ONE population of 4 SAC members (2 per process) and give the same per-member results as one process with two
devices; a two-process run killed with SIGKILL and resumed equals the uninterrupted one; bad settings fail with
one paragraph, in bounded time. Every run is a subprocess (jax.distributed can be initialised once per process)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import runner, sac as sac_experiment
from experiments.launch import free_port, process_env
from tests.test_runner import TINY, tiny_args

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "experiments" / "sac.py")
# 4 chunks of 40 steps, 4 members (seeds 0-3); evaluations every chunk, checkpoints at chunks 2 and 4.
COMMON = TINY + ["--total-steps", "160", "--num-seeds", "4", "--checkpoint-every", "2", "--eval-every", "1"]
BASE_ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
            "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))}
for _name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "XLA_FLAGS"):
    BASE_ENV.pop(_name, None)


def launch(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m experiments.launch -n 2 --cpu-devices 1 experiments/sac.py ...argv`."""
    return subprocess.run([sys.executable, "-m", "experiments.launch", "-n", "2", "--cpu-devices", "1", SCRIPT,
                           *argv], cwd=REPO, env=BASE_ENV, capture_output=True, text=True, timeout=timeout)


def final_arrays(run_dir: Path):
    """The final checkpoint's carry, restored in THIS (single-process, one-device) interpreter."""
    args = tiny_args()
    r = runner.Runner(sac_experiment.build(args), runner.make_population(args.hp, [{}], 0, 4))
    step, carry = runner.restore_checkpoint(run_dir / "checkpoints", r.abstract_carry())
    return step, jax.device_get(carry)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_no_distributed_setting_calls_nothing(monkeypatch):
    """Without flags or $JAX_* settings a run is one process: jax.distributed is not even called."""
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    called = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: called.append(a))
    assert runner.distributed.initialize(runner.RunConfig()) is False
    assert called == [] and not jax.distributed.is_initialized()


@pytest.mark.parametrize("flags, env, message", [
    (dict(num_processes=2, process_id=0), {}, "--coordinator-address missing"),
    (dict(coordinator_address="h:1"), {"JAX_NUM_PROCESSES": "2"}, "coordinator_address, num_processes given, "
                                                                   "--process-id missing"),
    (dict(coordinator_address="h:1", num_processes=2), {"JAX_PROCESS_ID": "5"}, "--process-id 5 is out of range"),
    (dict(coordinator_address="nohost", num_processes=2, process_id=1), {}, "must be host:port (process 0's host, a free port), got 'nohost'"),
    (dict(coordinator_address="h:1", num_processes=0, process_id=0), {"JAX_NUM_PROCESSES": "x"}, "$JAX_NUM_PROC"),
])
def test_bad_settings_are_refused_before_connecting(monkeypatch, flags, env, message):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: pytest.fail("must not connect"))
    with pytest.raises(runner.UserError, match=re.escape(message)):
        runner.distributed.initialize(runner.RunConfig(**flags))


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    """The uninterrupted two-process run (1 CPU device each, members 0-1 on process 0, 2-3 on process 1)."""
    root = tmp_path_factory.mktemp("dist") / "two"
    done = launch(*COMMON, "--run-dir", str(root))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "[0] sac: 4 member(s) on 2 device(s) of 2 processes" in done.stdout, done.stdout[-2000:]
    return root


@pytest.mark.slow
def test_two_processes_equal_one_process(two_process_run, tmp_path):
    """Same per-member metrics, evaluations and final parameters as ONE process with two CPU devices (2 members
    per device in both: the same per-device program). Tolerance: exact equality of the logs (JSON floats) and of
    every carry leaf. Each member's computation is independent of the others and runs the same compiled code on
    the same CPU, so nothing but a wrong member split, a lost shard or a wrong gather can make them differ."""
    one = tmp_path / "one"
    env = {**BASE_ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = subprocess.run([sys.executable, SCRIPT, *COMMON, "--run-dir", str(one)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 member(s) on 2 device(s)," in done.stderr
    two = two_process_run
    assert [(r["chunk"], r["member"]) for r in records(two / "metrics.jsonl")] == \
        [(c, m) for c in range(1, 5) for m in range(4)]  # process 0 wrote every member's records, once
    assert records(two / "metrics.jsonl") == records(one / "metrics.jsonl")
    assert records(two / "eval.jsonl") == records(one / "eval.jsonl")
    # the members differ from each other (seeds 0-3), so a swapped or duplicated slice would show
    assert len({r["critic_loss"] for r in records(two / "metrics.jsonl") if r["chunk"] == 4}) == 4
    step_two, a = final_arrays(two)
    step_one, b = final_arrays(one)
    assert step_two == step_one == 4
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert json.loads((two / "config.json").read_text())["topology"] == {"processes": 2, "devices": 2,
                                                                           "population": 4}
    assert (two / "curves.png").exists()


# Each process runs experiments/sac.py's main; process 0, after logging the evaluation of chunk 3 (the newest
# checkpoint is chunk 2), writes the marker argv[1] and sleeps; process 1 blocks at its next gather. The test
# then SIGKILLs both: a kill strictly inside the run, with log lines after the last checkpoint.
_STOPPING_DRIVER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from experiments import runner, sac
log = runner.RunFiles.log
def log_then_wait(self, path, chunk, *args):
    log(self, path, chunk, *args)
    if path == self.evals and chunk == 3:
        Path(sys.argv[1]).write_text("stopped")
        time.sleep(600)
runner.RunFiles.log = log_then_wait
runner.main("sac", sac.Args, sac.build, argv=sys.argv[3:])
"""


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_uninterrupted_one(two_process_run, tmp_path):
    killed, marker, port = tmp_path / "killed", tmp_path / "stopped", free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _STOPPING_DRIVER, str(marker), str(REPO), *COMMON,
                               "--run-dir", str(killed)], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=process_env(BASE_ENV, f"127.0.0.1:{port}", 2, i, 1))
             for i in range(2)]
    deadline = time.time() + 240
    while time.time() < deadline and not marker.exists() and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    running = [p.poll() is None for p in procs]
    for p in procs:
        p.send_signal(signal.SIGKILL)
    errs = [p.communicate()[1].decode()[-2000:] for p in procs]
    assert all(running) and marker.exists(), errs
    assert runner._checkpoint_manager(killed / "checkpoints").latest_step() == 2
    assert [r["chunk"] for r in records(killed / "eval.jsonl")][-1] == 3

    resumed = launch("--resume", str(killed))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert f"[0] sac: resuming {killed} from chunk 2/4" in resumed.stdout
    assert records(killed / "metrics.jsonl") == records(two_process_run / "metrics.jsonl")
    assert records(killed / "eval.jsonl") == records(two_process_run / "eval.jsonl")
    (step_a, a), (step_b, b) = final_arrays(two_process_run), final_arrays(killed)
    assert step_a == step_b == 4
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
def test_resume_on_another_topology_says_what_was_saved_and_what_runs(two_process_run):
    done = subprocess.run([sys.executable, SCRIPT, "--resume", str(two_process_run)], cwd=REPO, env=BASE_ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert (f"error: Cannot resume {two_process_run} on a different topology: it was saved by 2 processes, "
            f"2 devices, 4 population and this launch has 1 processes, 1 devices, 4 population") in done.stderr


def _run_alone(*flags: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    start = time.time()
    done = subprocess.run([sys.executable, SCRIPT, *TINY, "--num-seeds", "2", *flags], cwd=REPO, env=BASE_ENV,
                          capture_output=True, text=True, timeout=timeout)
    return done, time.time() - start


def test_process_id_out_of_range_fails_at_once(tmp_path):
    done, _ = _run_alone("--coordinator-address", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2",
                         "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --process-id 2 is out of range for --num-processes 2: ids run from 0 to 1, one per process, and "
        "process 0 hosts the coordinator. Check the id each process is given (flag --process-id or "
        "$JAX_PROCESS_ID)."]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("pid, role", [
    (1, "this process (id 1) could not register with the coordinator"),
    (0, "this process (id 0) hosts the coordinator and the others never all joined")])
def test_unreachable_coordinator_fails_with_one_paragraph_in_bounded_time(tmp_path, pid, role):
    """Nothing listens at the coordinator's port (id 1), or process 1 never comes (id 0): after
    --distributed-timeout (3 s) one paragraph, status 2 (XLA itself would abort with a C++ stack trace, and only
    after its own, longer, timeout)."""
    address = f"127.0.0.1:{free_port()}"
    done, seconds = _run_alone("--coordinator-address", address, "--num-processes", "2", "--process-id", str(pid),
                               "--distributed-timeout", "3", "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and errors[0].startswith(
        f"error: the multi-process run did not start within --distributed-timeout 3 s: {role} "
        f"(coordinator {address}, 2 processes). Check that process 0")
    assert "Check failure stack trace" not in done.stderr
    assert seconds < 30, seconds


def test_launcher_stops_the_others_when_one_fails(tmp_path):
    """Process 1 exits with status 3 while process 0 would sleep a minute: the launcher stops process 0 and exits
    with 3 at once, each line prefixed with its process id (no JAX involved)."""
    script = tmp_path / "child.py"
    script.write_text("import os, sys, time\npid = os.environ['JAX_PROCESS_ID']\n"
                      "print('hello from', pid, os.environ['JAX_NUM_PROCESSES'], os.environ['XLA_FLAGS'])\n"
                      "sys.exit(3) if pid == '1' else time.sleep(60)\n")
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "experiments.launch", "-n", "2", "--cpu-devices", "2",
                           str(script)], cwd=REPO, env=BASE_ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert time.time() - start < 20
    for i in range(2):
        assert f"[{i}] hello from {i} 2 --xla_force_host_platform_device_count=2" in done.stdout
    assert "launch: process 1 exited with status 3; stopping the others." in done.stderr


def test_launcher_ctrl_c_stops_every_process(tmp_path):
    """SIGINT (Ctrl-C) to the launcher: both children are stopped and the launcher exits with 130."""
    script = tmp_path / "child.py"
    script.write_text("import os, sys, time\nfrom pathlib import Path\n"
                      f"Path({str(tmp_path)!r}, 'pid' + os.environ['JAX_PROCESS_ID']).write_text(str(os.getpid()))\n"
                      "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-m", "experiments.launch", "-n", "2", str(script)], cwd=REPO,
                            env=BASE_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_files = [tmp_path / "pid0", tmp_path / "pid1"]
    deadline = time.time() + 120
    while time.time() < deadline and not all(f.exists() and f.read_text() for f in pid_files):
        time.sleep(0.05)
    assert all(f.exists() for f in pid_files), "the children did not start within 120 s"
    # under pytest-xdist the launcher inherits an ignored SIGINT: the launcher must catch it all the same
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "launch: interrupted; stopping every process." in err
    for f in pid_files:
        with pytest.raises(ProcessLookupError):
            os.kill(int(f.read_text()), 0)
