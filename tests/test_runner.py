"""The experiment runner: vmapped populations, compile-once, bit-identical resume after SIGKILL, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest


from experiments import runner
from experiments import sac as sac_experiment

REPO = Path(__file__).resolve().parents[1]

# A tiny SAC: 4 envs x 10 steps per chunk, updates from the first chunk on.
TINY = ["--env", "pointmaze-umaze-jax", "--agent.num-envs", "4", "--agent.chunk-steps", "10",
        "--agent.batch-size", "32", "--agent.start-steps", "40", "--agent.hidden-sizes", "32", "32",
        "--agent.buffer-capacity", "2000", "--agent.eval-episodes", "2", "--no-progress", "--no-tensorboard"]


def tiny_args(**hp):
    from algos import sac
    agent = sac.Config(num_envs=4, chunk_steps=10, batch_size=32, start_steps=40, hidden_sizes=(32, 32),
                       buffer_capacity=2000, eval_episodes=2)
    return sac_experiment.Args(agent=agent, hp=sac.HParams(**hp), run=runner.RunConfig(progress=False))


def run_population(settings, seeds=(0,), chunks=3):
    args = tiny_args()
    trainer = sac_experiment.build(args)
    pop = runner.make_population(args.hp, settings, seed=seeds[0], num_seeds=len(seeds))
    r = runner.Runner(trainer, pop)
    carry = r.init_carry()
    for _ in range(chunks):
        carry, metrics = r.train_chunk(carry, r.hparams)
    return r, jax.device_get(carry), jax.device_get(metrics)


def test_population_matches_separate_runs():
    lrs = [1e-4, 3e-4, 1e-3, 3e-3]
    _, together, m_together = run_population([{"actor_lr": lr} for lr in lrs])
    for i, lr in enumerate(lrs):
        _, alone, m_alone = run_population([{"actor_lr": lr}])
        pick = lambda tree: jax.tree.map(lambda x: x[i], tree)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b[0], rtol=1e-4, atol=1e-5),
                     pick(together.agent), alone.agent)
        for k in m_alone:
            np.testing.assert_allclose(m_together[k][i], m_alone[k][0], rtol=1e-4, atol=1e-5, err_msg=k)
    # the sweep really changed something: different actor learning rates give different actors
    a0 = jax.tree.leaves(pick_member(together.agent, 0))
    a3 = jax.tree.leaves(pick_member(together.agent, 3))
    assert any(not np.allclose(x, y) for x, y in zip(a0, a3))


def pick_member(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@pytest.fixture(scope="module")
def host_loop(tmp_path_factory):
    """Two seeds of the tiny SAC through the REAL host loop (`runner.train`: evaluation and a checkpoint after
    every chunk) for 2 chunks, then restored from the chunk-2 checkpoint and trained to chunk 4 by the same
    `Runner`. Records every backend compile request (XLA compiles and persistent-cache loads alike)."""
    from jax._src import dispatch
    root = tmp_path_factory.mktemp("host_loop")
    args = tiny_args()
    trainer = sac_experiment.build(args)
    r = runner.Runner(trainer, runner.make_population(args.hp, [{}], seed=0, num_seeds=2))
    run = runner.RunConfig(eval_every=1, checkpoint_every=1, tensorboard=False, progress=False)
    files = runner.RunFiles(root, tensorboard=False)
    compiles = []

    def listener(event, duration, **kwargs):
        if event == dispatch.BACKEND_COMPILE_EVENT:
            compiles.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        carry = r.init_carry()
        initial = jax.device_get(carry)
        runner.train(r, trainer, files, 2, run, carry=carry)
        traces_before_restore = dict(r.trace_counts)
        step, restored = runner.restore_checkpoint(files.ckpt_dir, r.abstract_carry())
        n = len(compiles)
        assert n > 0  # the listener sees the compiles of the first loop
        final = jax.device_get(runner.train(r, trainer, files, 4, run, start_chunk=step, carry=restored))
        resumed_compiles = compiles[n:]
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return dict(runner=r, root=root, step=step, initial=initial, final=final, traces=traces_before_restore,
                resumed_compiles=resumed_compiles)


def test_compiles_once_through_the_host_loop_and_a_restored_carry(host_loop):
    """Evaluation, checkpointing and a carry restored from a checkpoint reuse the one compiled chunk: a dtype,
    weak-type or sharding change in the restored carry would retrace or recompile."""
    r = host_loop["runner"]
    assert host_loop["step"] == 2
    assert host_loop["traces"] == {"train_chunk": 1, "evaluate": 1, "init": 1}
    assert r.trace_counts == {"train_chunk": 1, "evaluate": 1, "init": 1}
    assert host_loop["resumed_compiles"] == [], host_loop["resumed_compiles"]
    evals = [json.loads(line)["chunk"] for line in (host_loop["root"] / "eval.jsonl").read_text().splitlines()]
    assert evals == [1, 1, 2, 2, 3, 3, 4, 4]  # evaluated after every chunk, both members
    assert int(host_loop["final"].num_updates[0]) > 0


def test_seeds_are_different_members(host_loop):
    """num_seeds=2 (what `--num-seeds 2` builds): member i's key is PRNGKey(seed + i), so the members start,
    collect and end different."""
    pop = host_loop["runner"].population
    assert [m["seed"] for m in pop.members] == [0, 1]
    np.testing.assert_array_equal(pop.keys, np.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)]))
    for name, carry in (("initial", host_loop["initial"]), ("final", host_loop["final"])):
        a, b = jax.tree.leaves(pick_member(carry.agent, 0)), jax.tree.leaves(pick_member(carry.agent, 1))
        assert any(not np.allclose(x, y) for x, y in zip(a, b)), f"{name} agents of the two seeds are equal"
    buffers = host_loop["final"].buffer.data["action"]
    assert not np.allclose(buffers[0], buffers[1])  # they also collected different data


def test_sweep_parsing_and_population_layout():
    from algos import sac
    sweep_cls = runner.make_sweep_type(sac.HParams)
    settings = runner.parse_sweep(sweep_cls(actor_lr="1e-4,3e-4,1e-3", discount="0.9,0.99"), sac.HParams())
    assert len(settings) == 6
    pop = runner.make_population(sac.HParams(), settings, seed=3, num_seeds=4)
    assert pop.size == 24
    assert pop.hparams.actor_lr.shape == (24,)
    assert [m["seed"] for m in pop.members[:4]] == [3, 4, 5, 6]
    np.testing.assert_allclose(pop.hparams.discount[:8], [0.9] * 4 + [0.99] * 4)


def cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        runner.main("sac", sac_experiment.Args, sac_experiment.build, argv=argv)
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["--env", "pointmaze-nowhere"], "Unknown environment 'pointmaze-nowhere'"),
    (["--total-steps", "0"], "--total-steps must be a positive"),
    (["--total-steps", "-5"], "--total-steps must be a positive"),
    (["--num-seeds", "0"], "--num-seeds must be at least 1"),
    (["--sweep.actor-lr", "1e-4,fast"], "'fast' is not a number"),
    (["--sweep.num-critics", "2,10"], "--sweep.num-critics is not a sweepable hyperparameter"),
    (["--resume", "/nonexistent/run"], "Cannot resume"),
    (["--env-options", "reward_type"], "key=value"),
    (TINY + ["--total-steps", "40", "--eval-every", "-1"], "--eval-every must be >= 0, got -1"),
    (TINY + ["--total-steps", "40", "--checkpoint-every", "-3"], "--checkpoint-every must be >= 0, got -3"),
])
def test_bad_input_gives_clear_error(argv, expected, capsys, tmp_path):
    err = cli(argv + ["--run-dir", str(tmp_path / "r"), "--no-progress"], capsys)
    assert expected in err, err
    assert len(err.strip().splitlines()) == 1  # one paragraph


def test_existing_run_is_never_overwritten(capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("precious\n")
    err = cli(TINY + ["--run-dir", str(run_dir), "--total-steps", "40"], capsys)
    assert "refusing to overwrite" in err
    assert (run_dir / "metrics.jsonl").read_text() == "precious\n"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The tiny SAC through the CLI with TensorBoard ON: 2 chunks, evaluated and checkpointed after each."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    argv = [a for a in TINY if a != "--no-tensorboard"]
    runner.main("sac", sac_experiment.Args, sac_experiment.build,
                argv=argv + ["--run-dir", str(run_dir), "--total-steps", "80", "--checkpoint-every", "1",
                             "--eval-every", "1"])
    return run_dir


def _tensorboard_scalars(tb_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from the TFRecord event files under `tb_dir` (read without TensorFlow)."""
    import struct as pystruct
    from tensorboardX.proto import event_pb2
    out: dict[str, dict[int, float]] = {}
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (length,) = pystruct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
            i += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


def test_tensorboard_scalars_match_the_jsonl_logs(finished_run):
    scalars = _tensorboard_scalars(finished_run / "tb")
    for path, prefix in ((finished_run / "metrics.jsonl", "train"), (finished_run / "eval.jsonl", "eval")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["env_steps"] for r in records] == [40, 80]
        for key in ("critic_loss", "episode_return") if prefix == "train" else ("eval_return", "eval_success"):
            tag = f"{prefix}/{key}/member0"
            assert tag in scalars, sorted(scalars)
            assert scalars[tag] == pytest.approx({r["env_steps"]: r[key] for r in records}, rel=1e-6), tag


def test_resuming_a_finished_run_changes_nothing(finished_run, capsys):
    before = {name: (finished_run / name).read_text() for name in ("metrics.jsonl", "eval.jsonl", "config.json")}
    steps = sorted(p.name for p in (finished_run / "checkpoints").iterdir())
    assert runner.main("sac", sac_experiment.Args, sac_experiment.build,
                       argv=["--resume", str(finished_run)]) == finished_run
    assert "resuming" in (err := capsys.readouterr().err) and "from chunk 2/2" in err, err
    assert {name: (finished_run / name).read_text() for name in before} == before
    assert sorted(p.name for p in (finished_run / "checkpoints").iterdir()) == steps


def test_corrupt_checkpoint_gives_clear_error(finished_run, capsys, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    for f in (run_dir / "checkpoints").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"garbage")
    err = cli(["--resume", str(run_dir)], capsys)
    assert "Cannot resume" in err and "unreadable" in err


def _toy_trainer(diverge_at: int) -> runner.Trainer:
    """A counter whose metric `loss` turns NaN from chunk `diverge_at` on, for members with actor_lr > 0.5 only."""
    def init_carry(key, hp):
        return {"chunk": jnp.zeros((), jnp.int32), "total": jnp.zeros((), jnp.float32)}

    def train_chunk(carry, hp):
        chunk = carry["chunk"] + 1
        loss = jnp.where((chunk >= diverge_at) & (hp.actor_lr > 0.5), jnp.nan, 1.0 / chunk)
        return {"chunk": chunk, "total": carry["total"] + loss}, {"loss": loss}

    def evaluate(carry, key, hp):
        return {"eval_return": carry["total"]}

    return runner.Trainer(init_carry, train_chunk, evaluate, steps_per_chunk=10)


def test_stop_on_divergence_names_the_member_and_nothing_is_checkpointed_after_it(tmp_path):
    """--stop-on-divergence: the old behaviour, the first divergence stops the run (tests/test_sweeps.py has the
    default, divergence isolation)."""
    from algos import sac
    pop = runner.make_population(sac.HParams(), [{"actor_lr": 0.1}, {"actor_lr": 1.0}], seed=0, num_seeds=1)
    run = runner.RunConfig(eval_every=1, checkpoint_every=1, tensorboard=False, progress=False,
                           stop_on_divergence=True)
    with pytest.raises(runner.UserError, match=r"diverged: metric 'loss' is not finite at chunk 3") as e:
        runner.run_phase("toy", _toy_trainer(diverge_at=3), pop, tmp_path, run, num_chunks=5)
    message = str(e.value)
    assert "'actor_lr': 1.0" in message and "'actor_lr': 0.1" not in message  # only the diverged member
    assert "Nothing was checkpointed after the divergence" in message
    assert runner._checkpoint_manager(tmp_path / "checkpoints").latest_step() == 2
    for name in ("metrics.jsonl", "eval.jsonl"):
        records = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        assert [r["chunk"] for r in records] == [1, 1, 2, 2], name  # the NaN chunk is not logged
        assert all(np.isfinite(v) for r in records for k, v in r.items() if isinstance(v, float))
    # the last good checkpoint is intact: chunk 2, both members finite
    step, carry = runner.restore_checkpoint(tmp_path / "checkpoints", runner.Runner(
        _toy_trainer(3), pop).abstract_carry())
    assert step == 2
    np.testing.assert_array_equal(carry["chunk"], [2, 2])
    np.testing.assert_allclose(carry["total"], [1.5, 1.5])


def _final_arrays(run_dir: Path) -> dict:
    args = tiny_args()
    trainer = sac_experiment.build(args)
    r = runner.Runner(trainer, runner.make_population(args.hp, [{}], 0, 1))
    step, carry = runner.restore_checkpoint(run_dir / "checkpoints", r.abstract_carry())
    return step, jax.device_get(carry)


# Runs experiments/sac.py's main, but after logging the evaluation of chunk STOP it writes the marker file argv[1]
# and sleeps: the test then kills it with SIGKILL at a known point strictly inside the run, with log lines written
# after the last checkpoint (which the resume must drop and write again).
_STOPPING_DRIVER = """
import sys, time
from pathlib import Path
from experiments import runner, sac
STOP, log = int(sys.argv[2]), runner.RunFiles.log
def log_then_wait(self, path, chunk, *args):
    log(self, path, chunk, *args)
    if path == self.evals and chunk == STOP:
        Path(sys.argv[1]).write_text("stopped")
        time.sleep(600)
runner.RunFiles.log = log_then_wait
runner.main("sac", sac.Args, sac.build, argv=sys.argv[3:])
"""


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path, sigkill_when_marked):
    """20 chunks, checkpoints every 4, evaluations every 3. SIGKILL after the evaluation of chunk 6: the newest
    checkpoint is chunk 4, metrics.jsonl holds chunks 1-6 and eval.jsonl chunks 3 and 6. The resume must start
    from chunk 4 (not 0), keep the first 4 metric lines, drop and redo chunks 5-6, and end bit-identical to an
    uninterrupted run, logs included."""
    script = str(REPO / "experiments" / "sac.py")
    common = TINY + ["--total-steps", "800", "--checkpoint-every", "4", "--eval-every", "3"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))}

    straight = tmp_path / "straight"
    subprocess.run([sys.executable, script, *common, "--run-dir", str(straight)], check=True, env=env,
                   capture_output=True)

    killed, marker = tmp_path / "killed", tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-c", _STOPPING_DRIVER, str(marker), "6", *common, "--run-dir",
                             str(killed)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    still_running, err = sigkill_when_marked(proc, marker)
    assert still_running and marker.exists(), err.decode()[-2000:]

    # the kill landed strictly inside the run, after log lines that the checkpoint does not cover
    assert runner._checkpoint_manager(killed / "checkpoints").latest_step() == 4
    metrics_before = (killed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["chunk"] for line in metrics_before] == [1, 2, 3, 4, 5, 6]
    assert [json.loads(line)["chunk"] for line in (killed / "eval.jsonl").read_text().splitlines()] == [3, 6]

    resumed = subprocess.run([sys.executable, script, "--resume", str(killed)], check=True, env=env,
                             capture_output=True, text=True)
    assert f"resuming {killed} from chunk 4/20" in resumed.stderr, resumed.stderr[-2000:]

    step_a, a = _final_arrays(straight)
    step_b, b = _final_arrays(killed)
    assert step_a == step_b == 20
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)
    # the logs hold each chunk exactly once, the first 4 metric lines as they were, and equal the straight run's
    metrics_after = (killed / "metrics.jsonl").read_text().splitlines()
    assert metrics_after[:4] == metrics_before[:4]
    assert [json.loads(line)["chunk"] for line in metrics_after] == list(range(1, 21))
    assert metrics_after == (straight / "metrics.jsonl").read_text().splitlines()
    evals = (killed / "eval.jsonl").read_text().splitlines()
    assert [json.loads(line)["chunk"] for line in evals] == [3, 6, 9, 12, 15, 18, 20]
    assert evals == (straight / "eval.jsonl").read_text().splitlines()
    assert (killed / "curves.png").exists()


@pytest.mark.slow
def test_population_sharded_over_four_cpu_devices_matches_one_device(tmp_path):
    """4 members on 4 CPU devices; a population of 3 (not divisible by 4) on as many devices as divide it (3),
    with the same results as on one device."""
    settings = [{"actor_lr": lr} for lr in (1e-4, 3e-4, 1e-3, 3e-3)]
    code = (
        "import sys, jax, numpy as np; from experiments import runner; from tests.test_runner import run_population;"
        f"r, carry, m = run_population({settings!r}, chunks=2);"
        f"r3, carry3, _ = run_population({settings[:3]!r}, chunks=2);"
        "meshes = [runner.population_sharding(n).mesh.devices.size for n in range(1, 9)];"
        "np.savez(sys.argv[1], *jax.tree.leaves(carry.agent), *jax.tree.leaves(carry3.agent),"
        " devices=len(jax.devices()), mesh=r.sharding.mesh.devices.size, mesh3=r3.sharding.mesh.devices.size,"
        " meshes=meshes, placed3=len(r3.init_carry().agent.step.sharding.device_set))"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "sharded.npz"
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = np.load(out)
    assert int(sharded["devices"]) == 4 and int(sharded["mesh"]) == 4
    assert int(sharded["mesh3"]) == 3 and int(sharded["placed3"]) == 3
    np.testing.assert_array_equal(sharded["meshes"], [1, 2, 3, 4, 1, 3, 1, 4])  # the largest divisor <= 4
    _, carry, _ = run_population(settings, chunks=2)
    leaves = jax.tree.leaves(carry.agent)
    for i, leaf in enumerate(leaves):
        np.testing.assert_allclose(sharded[f"arr_{i}"], leaf, rtol=1e-4, atol=1e-5)
        # the 3-member population: members 0-2 of the 4-member one (each member runs alone, see above)
        np.testing.assert_allclose(sharded[f"arr_{len(leaves) + i}"], leaf[:3], rtol=1e-4, atol=1e-5)


def test_checkpoint_roundtrip_with_zero_size_leaves(tmp_path):
    """brax's MJX state holds arrays of size 0 (e.g. `mjx.Data.act`), which orbax refuses to save."""
    sharding = runner.population_sharding(1)
    carry = {"x": jax.device_put(np.arange(6.0, dtype=np.float32).reshape(1, 6), sharding),
             "empty": jax.device_put(np.zeros((1, 0), np.float32), sharding),
             "n": jax.device_put(np.array([7], np.int32), sharding)}
    manager = runner._checkpoint_manager(tmp_path / "ckpt")
    runner.save_checkpoint(manager, 3, carry)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), carry)
    step, restored = runner.restore_checkpoint(tmp_path / "ckpt", abstract)
    assert step == 3
    jax.tree.map(np.testing.assert_array_equal, restored, carry)
    assert restored["empty"].shape == (1, 0) and restored["empty"].dtype == np.float32
