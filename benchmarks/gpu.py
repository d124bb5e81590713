"""GPU speed of headstart, in ONE invocation of at most ~8 minutes: what runs on an accelerator, measured.

Sections (each a compiled program, compile time measured apart, then timed in `--rounds` rounds):

- sac / rlpd: env-steps/s of our SAC chunk (`sac.make_train`, 2 critics, UTD 1) and of the RLPD agent (10 LayerNorm
  critics, 2-critic target subset, UTD 20) on brax `ant` (MJX), next to brax's own SAC
  (`brax.training.agents.sac`) at the same sizes (its epochs timed by brax, `training/sps`).
- population: one vmapped population (`runner.make_population` + `runner.Runner`) of 1, 16, 64 and 256 members
  of the SAC chunk on `pointmaze-umaze-jax`: wall time per chunk and its ratio to one member.
- wsrl: one compiled online chunk of WSRL at paper scale (`wsrl.PAPER_AGENT`, 4 x 256 networks) on
  `pointmaze-medium` (MJX): seconds per chunk and env-steps/s.
- host: at the largest population, the host's part of one chunk (metrics to host, metrics.jsonl and TensorBoard
  for every member: `RunFiles.log`), next to the device's part, in seconds.

It refuses to run without a GPU (exit code 2) unless `--allow-cpu` is given, which also shrinks every size to a
smoke test (seconds, not minutes: the figures then mean nothing). Writes `--json` and prints a RESULTS.md section.

    make bench-gpu                                   # = python benchmarks/gpu.py --json runs/bench_gpu.json
    python benchmarks/gpu.py --allow-cpu --json /tmp/gpu.json   # the smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)

from benchmarks.machine import describe  # noqa: E402
from benchmarks.sac import Stepper, median, ours_chunk_program, ours_config, run_brax, time_rounds  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

SECTIONS = ("sac", "rlpd", "brax", "population", "wsrl", "host")
NO_GPU = ("benchmarks/gpu.py measures headstart on a GPU, and JAX sees no GPU here (its devices: {devices}). It "
          "needs an NVIDIA GPU with a CUDA 12 driver and JAX's CUDA plugin in this venv: `make cuda12` (or "
          "`pip install -e '.[cuda12]'`), then check `python -c \"import jax; print(jax.devices())\"` lists a "
          "CudaDevice. To check the script itself on a CPU, pass --allow-cpu: every size shrinks to a smoke test "
          "whose figures mean nothing.")
TINY = dict(num_envs=4, steps=4, batch_size=32, hidden=[32, 32], buffer=2000, rounds=1, members=[1, 4],
            wsrl_hidden=[32, 32], wsrl_steps=2)


def has_gpu() -> bool:
    return any(d.platform == "gpu" for d in jax.devices())


def rate(seconds: list[float], env_steps: int) -> float:
    """env-steps/s from the median round."""
    return env_steps / median(seconds)


def bench_sac(a, rlpd: bool) -> dict:
    cfg = (ours_config(a, 20, a.steps, num_critics=10, num_target=2, layernorm=True) if rlpd
           else ours_config(a, 1, a.steps))
    program = ours_chunk_program(a.env, cfg)
    wall, _ = time_rounds({"ours": program}, a.rounds)
    return {"env": a.env, "utd": cfg.updates_per_step, "num_critics": cfg.num_critics, "num_envs": a.num_envs,
            "steps_per_chunk": a.steps, "compile_s": program.compile_s, "seconds": wall["ours"],
            "env_steps_per_s": rate(wall["ours"], a.num_envs * a.steps)}


def bench_brax(a) -> dict:
    seconds = []
    out = run_brax(a.env, 1, a, lambda times: seconds.append(times[0]))
    return {"env": a.env, "utd": 1, "num_envs": a.num_envs, "steps_per_epoch": a.steps,
            "compile_s": out["compile_s"], "seconds": out["seconds"],
            "env_steps_per_s": rate(out["seconds"], a.num_envs * a.steps)}


def population_runner(a, size: int):
    """(Runner, Trainer) of a `size`-member population of the SAC chunk on `a.population_env`."""
    from experiments import runner
    from experiments import sac as sac_experiment
    args = sac_experiment.Args(env=a.population_env, agent=ours_config(a, 1, a.steps))
    trainer = sac_experiment.build(args)
    return runner.Runner(trainer, runner.make_population(args.hp, [{}], seed=0, num_seeds=size)), trainer


def time_population(r, rounds: int) -> tuple[float, list[float], object]:
    """(compile seconds, seconds per chunk per round, the last chunk's metrics) of a Runner's chunk."""
    carry = r.init_carry()
    start = time.perf_counter()
    carry, metrics = jax.block_until_ready(r.train_chunk(carry, r.hparams))  # compile + first run
    compile_s = time.perf_counter() - start
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        carry, metrics = jax.block_until_ready(r.train_chunk(carry, r.hparams))
        seconds.append(time.perf_counter() - start)
    return compile_s, seconds, metrics


def bench_population(a) -> list[dict]:
    rows = []
    for size in a.members:
        r, _ = population_runner(a, size)
        compile_s, seconds, _ = time_population(r, a.rounds)
        rows.append({"members": size, "compile_s": compile_s, "seconds_per_chunk": median(seconds),
                     "seconds": seconds})
    for row in rows:
        row["ratio_to_one"] = row["seconds_per_chunk"] / rows[0]["seconds_per_chunk"]
    return rows


def bench_host(a) -> dict:
    """The host's part of one chunk at the largest population: metrics to host + RunFiles.log (JSONL + TB)."""
    from experiments import runner
    size = max(a.members)
    r, trainer = population_runner(a, size)
    _, device_s, metrics = time_population(r, a.rounds)
    host_s = []
    with tempfile.TemporaryDirectory() as root:
        files = runner.RunFiles(pathlib.Path(root), tensorboard=True)
        for chunk in range(1, a.rounds + 1):
            start = time.perf_counter()
            files.log(files.metrics, chunk, chunk * trainer.steps_per_chunk, r.population.members,
                      {k: np.asarray(v) for k, v in jax.device_get(metrics).items()})
            host_s.append(time.perf_counter() - start)
        files.close()
    return {"members": size, "host_s_per_chunk": median(host_s), "device_s_per_chunk": median(device_s),
            "host_s": host_s, "device_s": device_s}


def bench_wsrl(a) -> dict:
    import envs
    from algos import wsrl
    agent = dataclasses.replace(wsrl.PAPER_AGENT, hidden_sizes=tuple(a.wsrl_hidden), chunk_steps=a.wsrl_steps,
                                buffer_capacity=a.buffer)
    cfg = wsrl.Config(agent=agent, warmup_steps=0)
    _, (init_carry, train_chunk, _), _ = wsrl.make(cfg, envs.make(a.wsrl_env))
    hp = wsrl.HParams()
    program = Stepper(train_chunk, jax.jit(init_carry)(jax.random.PRNGKey(0), hp), hp)
    program()  # first run (past any warm-up branch)
    wall, _ = time_rounds({"wsrl": program}, a.rounds)
    env_steps = agent.num_envs * agent.chunk_steps
    return {"env": a.wsrl_env, "hidden": list(agent.hidden_sizes), "num_critics": agent.num_critics,
            "utd": agent.updates_per_step, "steps_per_chunk": env_steps, "compile_s": program.compile_s,
            "seconds_per_chunk": median(wall["wsrl"]), "env_steps_per_s": rate(wall["wsrl"], env_steps)}


def report(res: dict) -> str:
    """The RESULTS.md section."""
    m = res["machine"]
    lines = [f"## GPU ({m.get('devices', '')})", "", f"`{res['command']}`", ""]
    rows = [(k, res[k]) for k in ("sac", "rlpd", "brax") if k in res]
    if rows:
        lines += ["| program | env | UTD | env-steps/s | compile s |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v['env']} | {v['utd']} | {v['env_steps_per_s']:,.0f} | {v['compile_s']:.1f} |"
                  for k, v in rows]
        lines.append("")
    if "population" in res:
        lines += ["| members | s per chunk | wall ratio to 1 |", "|---|---|---|"]
        lines += [f"| {p['members']} | {p['seconds_per_chunk']:.4f} | {p['ratio_to_one']:.2f} |"
                  for p in res["population"]]
        lines.append("")
    if "wsrl" in res:
        w = res["wsrl"]
        lines.append(f"WSRL paper-scale online chunk ({w['env']}, {w['num_critics']} critics of {w['hidden']}, UTD "
                     f"{w['utd']}): {w['seconds_per_chunk']:.3f} s per chunk of {w['steps_per_chunk']} env steps "
                     f"({w['env_steps_per_s']:,.0f} env-steps/s), compiled in {w['compile_s']:.1f} s.")
    if "host" in res:
        h = res["host"]
        lines.append(f"Host time per chunk at {h['members']} members (metrics to host, JSONL + TensorBoard): "
                     f"{h['host_s_per_chunk']:.4f} s, next to {h['device_s_per_chunk']:.4f} s on the device.")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU, at smoke-test sizes")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--env", default="ant", help="env of the sac/rlpd/brax rows (default: %(default)s)")
    p.add_argument("--num-envs", type=int, default=256)
    p.add_argument("--steps", type=int, default=64, help="env steps per chunk (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden", nargs="+", type=int, default=[256, 256])
    p.add_argument("--buffer", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--members", nargs="+", type=int, default=[1, 16, 64, 256])
    p.add_argument("--population-env", default="pointmaze-umaze-jax")
    p.add_argument("--wsrl-env", default="pointmaze-medium")
    p.add_argument("--wsrl-hidden", nargs="+", type=int, default=[256] * 4)
    p.add_argument("--wsrl-steps", type=int, default=1000, help="env steps per WSRL chunk (default: %(default)s)")
    p.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    a = p.parse_args(argv)
    if a.allow_cpu and not has_gpu():
        for k, v in TINY.items():
            setattr(a, k, v)
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if not has_gpu() and not a.allow_cpu:
        print("error: " + NO_GPU.format(devices=", ".join(str(d) for d in jax.devices())), file=sys.stderr)
        return 2
    res = {"command": "python benchmarks/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": {**describe(), "devices": ", ".join(str(d) for d in jax.devices())},
           "smoke": not has_gpu()}
    benches = {"sac": lambda: bench_sac(a, rlpd=False), "rlpd": lambda: bench_sac(a, rlpd=True),
               "brax": lambda: bench_brax(a), "population": lambda: bench_population(a),
               "wsrl": lambda: bench_wsrl(a), "host": lambda: bench_host(a)}
    for name, bench in benches.items():
        if name in a.skip:
            continue
        start = time.perf_counter()
        res[name] = bench()
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(res, indent=2, default=float))
    print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
