"""Sweeps a researcher can trust: divergence isolation, validated values, extendable runs, presets, checkpoint
atomicity under SIGKILL, wandb (offline). CPU only, tiny configs (tests/test_runner.py's tiny SAC)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest


from experiments import runner
from experiments import sac as sac_experiment
from tests.test_runner import REPO, TINY, _tensorboard_scalars, run_population

# The sweep: members 1-3 (a learning rate of 1e6) diverge in chunk 2, the first chunk with updates.
SWEEP = ["--sweep.critic-lr", "3e-4,1e6", "--sweep.actor-lr", "3e-4,1e6"]
HEALTHY = [{"critic_lr": 3e-4, "actor_lr": 3e-4}]  # member 0
COMMON = [a for a in TINY if a != "--no-tensorboard"] + SWEEP + ["--eval-every", "1", "--checkpoint-every", "1"]


def sac_main(argv: list[str]) -> tuple[Path, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        root = runner.main("sac", sac_experiment.Args, sac_experiment.build, argv=argv)
    return root, err.getvalue()


def final_carry(run_dir: Path, settings: list[dict]):
    args = sac_experiment.Args(agent=tiny_agent())
    r = runner.Runner(sac_experiment.build(args), runner.make_population(args.hp, settings, 0, 1))
    step, carry = runner.restore_checkpoint(run_dir / "checkpoints", r.abstract_carry())
    return step, jax.device_get(carry)


def tiny_agent():
    from algos import sac
    return sac.Config(num_envs=4, chunk_steps=10, batch_size=32, start_steps=40, hidden_sizes=(32, 32),
                      buffer_capacity=2000, eval_episodes=2)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The diverging sweep run straight to 4 chunks, and run to 2 chunks then extended to 4 with --resume."""
    root = tmp_path_factory.mktemp("sweeps")
    straight, straight_err = sac_main(COMMON + ["--total-steps", "160", "--run-dir", str(root / "straight")])
    short, _ = sac_main(COMMON + ["--total-steps", "80", "--run-dir", str(root / "short")])
    short_logs = {n: (short / n).read_text() for n in ("metrics.jsonl", "eval.jsonl")}
    extended, extended_err = sac_main(["--resume", str(short), "--total-steps", "160"])
    return dict(straight=straight, straight_err=straight_err, short_logs=short_logs, extended=extended,
                extended_err=extended_err)


def test_diverged_members_are_frozen_and_the_others_run_to_the_end(sweeps):
    straight = sweeps["straight"]
    settings = [m for m in json.loads((straight / "config.json").read_text())["members"]]
    settings = [{k: v for k, v in m.items() if k not in ("member", "seed")} for m in settings]
    step, carry = final_carry(straight, settings)
    assert step == 4
    # the healthy member is untouched by the diverged ones: bit for bit what it is in a population of 4 healthy
    # members (the same compiled shapes), and equal up to float rounding (the vmap is 1 wide instead of 4) to a
    # sweep of it alone, i.e. the sweep without the bad members
    _, healthy4, _ = run_population(HEALTHY + [{"critic_lr": 1e-4, "actor_lr": lr} for lr in (1e-4, 3e-4, 1e-3)],
                                    chunks=4)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[0], b[0]), carry, healthy4)
    _, alone, _ = run_population(HEALTHY, chunks=4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6), carry, alone)
    # the diverged ones stopped changing after chunk 1 (40 env steps), with finite parameters
    np.testing.assert_array_equal(carry.env_steps, [160, 40, 40, 40])
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(carry.agent) if np.issubdtype(x.dtype, np.floating))
    # the checkpoint holds the alive flags and the chunk of each divergence
    health = runner.restore_health(straight / "checkpoints", 4, 4)
    assert health.alive.tolist() == [True, False, False, False] and health.chunk.tolist() == [-1, 2, 2, 2]
    # logs: the healthy member every chunk; the diverged ones until chunk 1, then one marker at chunk 2
    for name in ("metrics.jsonl", "eval.jsonl"):
        rows = records(straight / name)
        assert [r["chunk"] for r in rows if r["member"] == 0] == [1, 2, 3, 4], name
        for m in (1, 2, 3):
            mine = [r for r in rows if r["member"] == m]
            assert [(r["chunk"], r.get("diverged", False)) for r in mine] == [(1, False), (2, True)], name
            assert mine[1]["diverged_chunk"] == 2 and "critic_loss" in mine[1]["not_finite"], mine[1]
    marker = next(r for r in records(straight / "metrics.jsonl") if r.get("diverged"))
    assert marker["critic_loss"] is None  # non-finite values are null, finite ones kept
    assert isinstance(marker["num_updates"], float)
    # TensorBoard: a divergence tag per bad member, and their curves end at chunk 1
    scalars = _tensorboard_scalars(straight / "tb")
    assert {f"diverged/member{m}" for m in (1, 2, 3)} <= set(scalars) and "diverged/member0" not in scalars
    assert sorted(scalars["train/critic_loss/member3"]) == [40]
    assert sorted(scalars["train/critic_loss/member0"]) == [40, 80, 120, 160]
    # the final summary names every diverged member with its chunk
    err = sweeps["straight_err"]
    assert "3 of 4 member(s) diverged" in err, err
    assert "member 3 (seed=0, actor_lr=1e+06, critic_lr=1e+06) at chunk 2 of sac (not finite: critic_loss" in err
    assert (straight / "curves.png").exists()


def test_guard_keeps_the_carry_of_a_member_that_is_not_alive():
    """Inside the chunk: a dead member's carry does not change even when its new values would be finite, a live
    one's does, and a live one whose values are not finite keeps its old carry (and says which part failed)."""
    def chunk(carry, hp):
        new = {"params": carry["params"] * hp, "n": carry["n"] + 1}
        return new, {"loss": jnp.sum(new["params"])}
    guarded = jax.jit(jax.vmap(runner.guard_chunk(chunk)))
    carry = {"params": jnp.ones((3, 2)), "n": jnp.zeros(3, jnp.int32)}
    out, metrics, finite = guarded(carry, jnp.array([2.0, 2.0, jnp.inf]), jnp.array([True, False, True]))
    np.testing.assert_array_equal(out["params"], [[2, 2], [1, 1], [1, 1]])
    np.testing.assert_array_equal(out["n"], [1, 0, 0])
    np.testing.assert_array_equal(finite, [[True, True], [True, True], [False, False]])


def test_all_members_diverged_stops_with_the_list_and_a_checkpoint(tmp_path):
    from algos import sac
    from tests.test_runner import _toy_trainer
    pop = runner.make_population(sac.HParams(), [{"actor_lr": 0.8}, {"actor_lr": 1.0}], seed=0, num_seeds=1)
    run = runner.RunConfig(eval_every=0, checkpoint_every=0, tensorboard=False, progress=False)
    message = r"every member of the population has non-finite .*member 0 \(seed=0, actor_lr=0.8\) at chunk 3 of toy"
    with pytest.raises(runner.UserError, match=message):
        runner.run_phase("toy", _toy_trainer(diverge_at=3), pop, tmp_path, run, num_chunks=5)
    assert runner._checkpoint_manager(tmp_path / "checkpoints").latest_step() == 3  # the frozen states are kept
    assert [r["chunk"] for r in records(tmp_path / "eval.jsonl")] == [3, 3]  # the markers
    with pytest.raises(runner.UserError, match=message):  # a resume says the same at once
        runner.run_phase("toy", _toy_trainer(diverge_at=3), pop, tmp_path, run, num_chunks=5)


def test_a_member_diverged_in_one_phase_stays_frozen_in_the_next(tmp_path):
    """What WSRL does (pretrain -> online): one Health through both phases. Member 1 diverges in phase p1; in p2 it
    is marked at once, never trained or logged, and the summary names p1."""
    from algos import sac
    from tests.test_runner import _toy_trainer
    pop = runner.make_population(sac.HParams(), [{"actor_lr": 0.1}, {"actor_lr": 1.0}], seed=0, num_seeds=1)
    run = runner.RunConfig(eval_every=2, checkpoint_every=1, tensorboard=False, progress=False)
    health = runner.Health.healthy(2)
    runner.run_phase("p1", _toy_trainer(diverge_at=2), pop, tmp_path / "p1", run, num_chunks=3, health=health)
    assert health.alive.tolist() == [True, False] and (health.phase[1], int(health.chunk[1])) == ("p1", 2)
    carry = runner.run_phase("p2", _toy_trainer(diverge_at=99), pop, tmp_path / "p2", run, num_chunks=4,
                             health=health)
    np.testing.assert_array_equal(jax.device_get(carry)["chunk"], [4, 0])  # member 1 never trained in p2
    rows = records(tmp_path / "p2" / "metrics.jsonl")
    assert [(r["chunk"], r["member"], r.get("diverged_phase")) for r in rows if r["member"] == 1] == [(1, 1, "p1")]
    assert next(r for r in rows if r["member"] == 1)["loss"] is None  # p2 never trained it: no value to show
    assert [r["chunk"] for r in records(tmp_path / "p2" / "eval.jsonl") if r["member"] == 1] == [2]
    assert health.alive.tolist() == [True, False] and health.phase[1] == "p1"


def test_curves_leave_diverged_members_out_of_the_mean(tmp_path, monkeypatch):
    """plot_curves' mean is over the members that did not diverge (checked on the values handed to matplotlib)."""
    import matplotlib.axes
    rows = [{"chunk": c, "env_steps": 10 * c, "member": m, "seed": m, "eval_return": float(10 * m + c)}
            for c in (1, 2) for m in (0, 1, 2)]
    rows = [r for r in rows if not (r["member"] == 2 and r["chunk"] == 2)]
    rows.append({"chunk": 2, "env_steps": 20, "member": 2, "seed": 2, "eval_return": None, "diverged": True,
                 "diverged_chunk": 2})
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = []
    real = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **k: lines.append((a, k)) or real(self, *a, **k))
    runner.plot_curves(path, tmp_path / "curves.png", [{"member": m, "seed": m} for m in range(3)])
    (x, mean), kw = lines[0]
    np.testing.assert_allclose(mean, [6.0, 7.0])  # members 0 (1, 2) and 1 (11, 12) only, not 2 (21)
    assert "n=2; 1 diverged, not in the mean" in kw["label"]
    (x2, y2, style), kw2 = lines[1]
    assert style == ":" and list(y2) == [21.0] and "member 2 diverged (chunk 2)" in kw2["label"]


def test_extending_a_finished_run_equals_one_longer_run(sweeps):
    """2 chunks, then `--resume DIR --total-steps 160` (4 chunks) == 4 chunks straight: every member's carry bit
    for bit (the frozen members too: their alive flags came back from the checkpoint), and the logs."""
    straight, extended = sweeps["straight"], sweeps["extended"]
    assert "extending" in sweeps["extended_err"] and "from 80 to 160 steps" in sweeps["extended_err"]
    assert "resuming" in sweeps["extended_err"] and "from chunk 2/4" in sweeps["extended_err"]
    members = [{"critic_lr": c, "actor_lr": a} for c in (3e-4, 1e6) for a in (3e-4, 1e6)]
    step_a, a = final_carry(straight, members)
    step_b, b = final_carry(extended, members)
    assert step_a == step_b == 4
    jax.tree.map(np.testing.assert_array_equal, a, b)
    for name in ("metrics.jsonl", "eval.jsonl"):
        assert (extended / name).read_text() == (straight / name).read_text(), name
        assert (extended / name).read_text().startswith(sweeps["short_logs"][name])  # kept, then appended
    config = json.loads((extended / "config.json").read_text())
    assert config["args"]["run"]["total_steps"] == 160
    assert [(e["from"], e["to"]) for e in config["extended"]] == [(80, 160)]
    # resumed again without a budget: finished, nothing changes
    before = (extended / "metrics.jsonl").read_text()
    _, err = sac_main(["--resume", str(extended)])
    assert "from chunk 4/4" in err and (extended / "metrics.jsonl").read_text() == before


RESUME_RULE = "may change only --total-steps (a larger value extends the run) and --progress/--no-progress"


@pytest.mark.parametrize("flags, expected", [
    (["--agent.num-envs", "8"], "--agent.num-envs 8 (the run has 4)"),
    (["--sweep.actor-lr", "1e-3"], "--sweep.actor-lr '1e-3' (the run has '3e-4,1e6')"),
    (["--preset", "paper"], "--preset 'paper' (the run has 'cpu')"),
    (["--seed", "3", "--hp.tau", "0.01"], "--hp.tau 0.01 (the run has 0.005), --seed 3 (the run has 0)"),
    (["--total-steps", "40"], "with --total-steps 40: the run's budget is 160 steps per member, and a resume "
                              "can only extend it"),
])
def test_resume_refuses_changed_flags_by_name(sweeps, flags, expected, capsys):
    run_dir = sweeps["straight"]
    before = (run_dir / "config.json").read_text()
    with pytest.raises(SystemExit) as e:
        runner.main("sac", sac_experiment.Args, sac_experiment.build, argv=["--resume", str(run_dir), *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert expected in err, err
    if "--total-steps" not in flags:
        assert RESUME_RULE in err, err
    assert (run_dir / "config.json").read_text() == before


def test_resume_accepts_flags_equal_to_the_saved_run(sweeps):
    _, err = sac_main(["--resume", str(sweeps["straight"]), "--agent.num-envs", "4", "--total-steps", "160",
                       "--progress", "--sweep.actor-lr", "3e-4,1e6"])
    assert "from chunk 4/4" in err, err


def test_multi_phase_resume_extends_the_online_budget_only(tmp_path, capsys):
    """wsrl: --total-steps (the online phase) may grow on resume; --pretrain-steps may not. Checked at parse time
    on a run directory holding only its config.json."""
    from experiments import wsrl
    args, sweep, settings, _ = runner.parse_args(wsrl.Args, ["--run-dir", str(tmp_path / "w"), "--total-steps",
                                                             "400"])
    runner.open_run("wsrl", args, sweep, runner.make_population(args.hp, settings, 0, 1), False)
    resumed, _, _, resuming = runner.parse_args(wsrl.Args, ["--resume", str(tmp_path / "w"), "--total-steps", "800"])
    assert resuming and resumed.run.total_steps == 800 and resumed.pretrain_steps == args.pretrain_steps
    with pytest.raises(runner.UserError, match=r"--pretrain-steps 50 \(the run has 20000\)"):
        runner.parse_args(wsrl.Args, ["--resume", str(tmp_path / "w"), "--pretrain-steps", "50"])


# ---- validated values -----------------------------------------------------------------------------------------

def _main_of(name: str):
    import importlib
    module = importlib.import_module(f"experiments.{name}")
    if name in ("sac", "explore"):
        return lambda argv: runner.main(name, module.Args, module.build, argv=argv,
                                        presets=getattr(module, "PRESETS", None))
    return module.main


VALIDATION = [
    ("sac", ["--hp.discount", "1.5"], "--hp.discount is 1.5 for population member 0 (seed=0): the valid range is "
                                      "[0, 1) (0 <= discount < 1)"),
    ("sac", ["--sweep.tau", "0.005,0"], "--sweep.tau is 0 for population member 1 (seed=0, tau=0): the valid range "
                                        "is (0, 1] (0 < tau <= 1)"),
    ("sac", ["--sweep.critic-lr", "3e-4,-1e-3", "--num-seeds", "2"],
     "--sweep.critic-lr is -0.001 for population member 2 (seed=0, critic_lr=-0.001): the valid range is [0, inf) "
     "(0 <= critic_lr)"),
    ("sac", ["--hp.init-temperature", "0"], "--hp.init-temperature is 0 for population member 0 (seed=0): the valid "
                                            "range is (0, inf) (0 < init_temperature)"),
    ("sac", ["--hp.reward-scale", "nan"], "--hp.reward-scale is nan for population member 0 (seed=0): the valid range "
                                          "is (-inf, inf) (reward_scale finite)"),
    ("wsrl", ["--hp.cql-alpha", "-1"], "--hp.cql-alpha is -1 for population member 0 (seed=0): the valid range is "
                                       "[0, inf) (0 <= cql_alpha)"),
    ("explore", ["--hp.rnd-coef", "-0.5"], "--hp.rnd-coef is -0.5 for population member 0 (seed=0): the valid range "
                                           "is [0, inf) (0 <= rnd_coef)"),
    ("rollin", ["--sweep.rollin-gamma", "0.9,1"], "--sweep.rollin-gamma is 1 for population member 1 (seed=0, "
                                                  "rollin_gamma=1): the valid range is [0, 1) (0 <= rollin_gamma < 1)"),
    ("rollin", ["--hp.beta", "1.5"], "--hp.beta is 1.5 for population member 0 (seed=0): the valid range is [0, 1] "
                                     "(0 <= beta <= 1)"),
    ("avtd", ["--regularizers", "", "--hp.critic-weight-decay", "0", "0", "-0.1", "0"],
     "--hp.critic-weight-decay is -0.1 (entry 2 of (0.0, 0.0, -0.1, 0.0)) for population member 0"),
    ("avtd", ["--sweep.fixed-agent=-1,0.5"], "--sweep.fixed-agent is 0.5 for population member 1 (seed=0, "
                                             "fixed_agent=0.5): the valid range is [-1, inf) integer (-1 <= "
                                             "fixed_agent, a whole number)"),
    ("supe", ["--skill-hp.kl-coef", "-1"], "--skill-hp.kl-coef is -1 for population member 0 (seed=0): the valid "
                                           "range is [0, inf) (0 <= kl_coef)"),
    ("adacat", ["--hp.smoothing", "0"], "--hp.smoothing is 0 for population member 0 (seed=0): the valid range is "
                                        "(0, inf) (0 < smoothing)"),
]


@pytest.mark.parametrize("experiment, argv, expected", VALIDATION, ids=[f"{e}{a[0]}" for e, a, _ in VALIDATION])
def test_every_member_is_validated_before_anything_is_built(experiment, argv, expected, capsys, tmp_path,
                                                           monkeypatch):
    # nothing may be built or loaded: a build (env, data) would fail on these names
    monkeypatch.setattr(runner.Runner, "__init__", lambda *a: pytest.fail("compiled before validating"))
    with pytest.raises(SystemExit) as e:
        _main_of(experiment)(argv + ["--run-dir", str(tmp_path / "r"), "--no-progress", "--no-tensorboard"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Every member's value is checked before training." in err
    assert not (tmp_path / "r").exists()


def test_generic_ranges_for_hparams_without_declarations():
    """A new algorithm's HParams without RANGES still gets checks by name; declared ranges win over names."""
    @flax.struct.dataclass
    class Plain:
        lr: float = 1e-3
        policy_lr: float = 1e-3
        discount: float = 0.99
        tau: float = 0.005
        dropout_rate: float = 0.1
        kl_coef: float = 1.0
        anything: float = -5.0

    @flax.struct.dataclass
    class Declared(Plain):
        RANGES = {"anything": "[-10, -1]", "discount": "[0, 1]"}

    member = {"member": 0, "seed": 0}
    runner.check_hparams(Plain(), member, {})
    cases = [("lr", -1.0, "[0, inf)"), ("policy_lr", -1.0, "[0, inf)"), ("discount", 1.0, "[0, 1)"),
             ("tau", 0.0, "(0, 1]"), ("dropout_rate", 1.0, "[0, 1)"), ("kl_coef", -1.0, "[0, inf)"),
             ("anything", float("inf"), "(-inf, inf)")]
    for name, value, interval in cases:
        with pytest.raises(runner.UserError, match=rf"--hp.{name.replace('_', '-')} is .* valid range is "
                                                   rf"{__import__('re').escape(interval)}"):
            runner.check_hparams(Plain().replace(**{name: value}), member, {})
    runner.check_hparams(Declared(discount=1.0), member, {})  # declared [0, 1] admits 1
    with pytest.raises(runner.UserError, match=r"--hp.anything is 0 .* \[-10, -1\] \(-10 <= anything <= -1\)"):
        runner.check_hparams(Declared(anything=0.0), member, {})


# ---- presets --------------------------------------------------------------------------------------------------

def _abstract(fn, *args):
    return jax.eval_shape(fn, *args)


TRACE_CHUNK = True  # set per test: whether to trace train_chunk too, or the carry only


def _trace_member(init_carry, train_chunk, hp, shared=None):
    """eval_shape of init_carry and (if TRACE_CHUNK) of one train_chunk for ONE member: shapes only, nothing
    allocated or compiled."""
    key = jax.random.PRNGKey(0)
    hp = jax.tree.map(lambda x: jnp.asarray(np.asarray(x, np.float32)), hp)
    carry = _abstract(init_carry, key, hp)
    if TRACE_CHUNK:
        args = (carry, hp) if shared is None else (carry, hp, shared)
        out, metrics = _abstract(train_chunk, *args)
        assert jax.tree.structure(out) == jax.tree.structure(carry)
        assert metrics and all(m.shape == () for m in jax.tree.leaves(metrics))
    return carry


def _fake_d4rl(n, obs, act):
    z = np.zeros
    return {"observations": z((n, obs), np.float32), "actions": z((n, act), np.float32),
            "rewards": z(n, np.float32), "next_observations": z((n, obs), np.float32), "terminals": z(n, bool),
            "timeouts": np.arange(n) % 10 == 9}


def build_with_preset(experiment: str, argv: list[str]):
    """Parse `argv` as the experiment's CLI (its presets applied) and trace its phases' init and chunk. Offline and
    prior data are stand-ins of the right shapes: the presets' dataset sizes are not generated."""
    import envs
    from algos import explore, supe, wsrl as wsrl_algo
    from envs import maze_data
    module = __import__(f"experiments.{experiment}", fromlist=["Args"])
    args, _, settings, _ = runner.parse_args(module.Args, argv, presets=module.PRESETS)
    if experiment == "avtd":
        args = module.resolve(args)
    if experiment in ("sac", "rollin", "avtd", "adacat"):
        t = module.build(args)
        return args, _trace_member(t.init_carry, t.train_chunk, args.hp, t.shared)
    if experiment == "explore":
        env = envs.make(args.env, **maze_data.exploration_task(args.env, runner.parse_env_options(args.env_options)))
        init, chunk, _ = explore.make_train(args.config(), env)
        d = _fake_d4rl(64, env.observation_size, env.action_size)
        prior = explore.unlabeled_prior(d["observations"], d["actions"], d["next_observations"])
        return args, _trace_member(init, chunk, args.hp, jax.tree.map(jnp.asarray, prior))
    if experiment == "supe":
        env = envs.make(args.env, **maze_data.exploration_task(args.env, runner.parse_env_options(args.env_options)))
        cfg = args.config()
        vae_init, vae_chunk, _ = supe.make_vae_pretrain(cfg.skills, env.observation_size, env.action_size)
        h = cfg.skills.horizon
        segs = {"obs": jnp.zeros((64, h, env.observation_size)), "action": jnp.zeros((64, h, env.action_size))}
        vae = _trace_member(vae_init, vae_chunk, args.skill_hp, segs)
        params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), vae.params)
        init, chunk, _ = supe.make_train(cfg, env, params)
        d = _fake_d4rl(64, env.observation_size, cfg.skills.latent_size)
        prior = explore.unlabeled_prior(d["observations"], d["actions"], d["next_observations"])
        return args, _trace_member(init, chunk, args.hp, jax.tree.map(jnp.asarray, prior))
    assert experiment == "wsrl"
    env = envs.make(args.env, **runner.parse_env_options(args.env_options))
    cfg = wsrl_algo.Config(agent=args.agent, cql=args.cql, warmup_steps=args.warmup_steps)
    pretrain, online, handoff = wsrl_algo.make(cfg, env)
    data = jax.tree.map(jnp.asarray, wsrl_algo.offline_transitions(
        _fake_d4rl(64, env.observation_size, env.action_size), 0.99))
    pre = _trace_member(pretrain[0], pretrain[1], args.hp, data)
    carry = _trace_member(online[0], online[1], args.hp)
    jax.eval_shape(handoff, carry, pre)
    return args, carry


PRESET_CASES = [(e, p) for e in ("sac", "wsrl", "explore", "supe", "rollin", "adacat") for p in ("cpu", "paper")]
PRESET_CASES += [("avtd", p) for p in ("cpu", "high-utd", "paper")]


@pytest.mark.parametrize("experiment, preset", PRESET_CASES)
def test_every_experiment_builds_with_every_preset(experiment, preset, monkeypatch):
    """Every preset's carry, and for the paper presets (which no other test runs) one chunk, traced with
    eval_shape at full size. The cpu presets are the defaults, whose chunks each experiment's own tests run."""
    monkeypatch.setattr(sys.modules[__name__], "TRACE_CHUNK", preset == "paper")
    build_with_preset(experiment, ["--preset", preset])
    module = __import__(f"experiments.{experiment}", fromlist=["Args"])
    args, _, _, _ = runner.parse_args(module.Args, ["--preset", preset], presets=module.PRESETS)
    default, _, _, _ = runner.parse_args(module.Args, [], presets=module.PRESETS)
    assert args.preset == preset
    # the preset really applies: paper-scale runs are longer than the CPU defaults
    if preset == "paper":
        assert args != default
        assert args.run.total_steps > default.run.total_steps or experiment == "adacat"
    elif preset == "cpu":
        assert args == default


def test_explicit_flags_override_the_preset_and_help_lists_every_preset(capsys):
    args, _, settings, _ = runner.parse_args(sac_experiment.Args, ["--preset", "paper", "--agent.updates-per-step",
                                                                   "4", "--preset=paper"],
                                             presets=sac_experiment.PRESETS)
    assert (args.agent.num_critics, args.agent.updates_per_step, args.agent.critic_layernorm) == (10, 4, True)
    from experiments import rollin
    args, _, settings, _ = runner.parse_args(rollin.Args, ["--preset", "paper", "--num-seeds", "2"],
                                             presets=rollin.PRESETS)
    assert args.run.num_seeds == 2 and [s["beta"] for s in settings] == [0, 0.1, 0.2, 0.5, 0.75, 0.9]
    with pytest.raises(runner.UserError, match="--preset 'gpu': choose one of cpu, paper"):
        runner.parse_args(sac_experiment.Args, ["--preset", "gpu"], presets=sac_experiment.PRESETS)
    for name in ("sac", "wsrl", "explore", "supe", "avtd", "rollin", "adacat"):
        module = __import__(f"experiments.{name}", fromlist=["Args"])
        with pytest.raises(SystemExit):
            runner.parse_args(module.Args, ["--help"], module.__doc__, presets=module.PRESETS)
        out = capsys.readouterr().out
        for preset_name, preset in runner._presets(module.PRESETS).items():
            assert f"{preset_name}{' (default)' if preset_name == 'cpu' else ''}: " in out, (name, out[:3000])
            assert " ".join(preset.flags) in out, (name, preset_name)
        assert "--preset {" in out


# ---- SIGKILL during a checkpoint write ------------------------------------------------------------------------

# Runs experiments/sac.py's main; when orbax commits the checkpoint of chunk STOP (the rename of its fully written
# temporary directory), it writes the marker file argv[1] and sleeps instead: the test SIGKILLs it mid-save.
_KILL_IN_SAVE = """
import os, sys, time
from pathlib import Path
from experiments import runner, sac
STOP, rename = sys.argv[2], os.rename
def commit(src, dst, *a, **k):
    if Path(dst).name == STOP and Path(dst).parent.name == "checkpoints":
        Path(sys.argv[1]).write_text("stopped")
        time.sleep(600)
    return rename(src, dst, *a, **k)
os.rename = commit
runner.main("sac", sac.Args, sac.build, argv=sys.argv[3:])
"""


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_restorable(sweeps, tmp_path, sigkill_when_marked):
    """The diverging sweep, killed while saving chunk 3: chunk 2's checkpoint restores (with its alive flags), the
    half-saved one is ignored, and --resume finishes bit-identical to the straight run."""
    killed, marker = tmp_path / "killed", tmp_path / "stopped"
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_IN_SAVE, str(marker), "3", *COMMON, "--total-steps", "160",
                             "--run-dir", str(killed)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    still_running, err = sigkill_when_marked(proc, marker)
    assert still_running and marker.exists(), err.decode()[-2000:]
    leftovers = [p.name for p in (killed / "checkpoints").iterdir() if p.name.startswith("3")]
    assert leftovers and all("tmp" in name for name in leftovers), leftovers  # written, never committed
    members = [{"critic_lr": c, "actor_lr": a} for c in (3e-4, 1e6) for a in (3e-4, 1e6)]
    step, carry = final_carry(killed, members)
    assert step == 2 and all(np.isfinite(x).all() for x in jax.tree.leaves(carry.agent)
                             if np.issubdtype(x.dtype, np.floating))
    assert runner.restore_health(killed / "checkpoints", 2, 4).alive.tolist() == [True, False, False, False]
    _, resumed_err = sac_main(["--resume", str(killed)])
    assert "from chunk 2/4" in resumed_err, resumed_err
    _, a = final_carry(sweeps["straight"], members)
    _, b = final_carry(killed, members)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    for name in ("metrics.jsonl", "eval.jsonl"):
        assert (killed / name).read_text() == (sweeps["straight"] / name).read_text(), name


# ---- Weights & Biases, offline ----------------------------------------------------------------------------------

def _wandb_records(path: Path) -> list:
    """The protobuf records of an offline run's .wandb file (a LevelDB-style log: 7-byte file header, 32 KiB
    blocks, each record chunk with a 7-byte header: crc32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, out, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            pos += left - 7
            continue
        buf += data[pos:pos + length]
        pos += length
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def test_wandb_offline_writes_one_run_per_member_with_its_hyperparameters(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is the optional extra headstart[wandb] (make installs it in .venv: "
                                        "requirements.lock); without it --wandb-project says how to install it")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    run_dir = tmp_path / "run"
    sac_main(TINY + ["--sweep.actor-lr", "1e-4,1e-3", "--total-steps", "40", "--wandb-project", "headstart-test",
                     "--run-dir", str(run_dir)])
    wandb.teardown()  # stops wandb's service, which writes the runs' files (the program's exit does the same)
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2, files
    seen = {}
    for f in files:
        recs = _wandb_records(f)
        run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
        config = {i.key: json.loads(i.value_json) for i in run.config.update}
        assert (run.project, run.run_group, run.job_type) == ("headstart-test", "run", "sac")
        assert config["experiment"] == "sac" and config["args"]["agent"]["num_envs"] == 4
        history = [{tuple(i.nested_key) or (i.key,): json.loads(i.value_json) for i in r.history.item}
                   for r in recs if r.WhichOneof("record_type") == "history"]
        assert any(h.get(("_step",)) == 40 and ("train/critic_loss",) in h for h in history), [
            r.WhichOneof("record_type") for r in recs]  # the record types, to see what is there
        assert any(("eval/eval_return",) in h for h in history), history
        seen[config["member"]["member"]] = (config["hparams"], run.display_name)
    assert sorted(seen) == [0, 1]
    assert seen[0][0]["actor_lr"] == pytest.approx(1e-4) and seen[1][0]["actor_lr"] == pytest.approx(1e-3)
    assert seen[1][0]["discount"] == pytest.approx(0.99) and seen[1][1] == "run/sac/member1"


def test_wandb_missing_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(SystemExit):
        runner.main("sac", sac_experiment.Args, sac_experiment.build,
                    argv=TINY + ["--wandb-project", "p", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert "--wandb-project p needs the wandb package" in err and "pip install 'headstart[wandb]'" in err
