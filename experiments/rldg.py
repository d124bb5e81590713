"""RLDG on the MJX peg-insertion family: RL experts generate the data that fine-tunes a multi-task generalist.

    python experiments/rldg.py --run-dir runs/rldg                    # every stage, CPU-sized
    python experiments/rldg.py --resume runs/rldg                     # continue a killed run where it stopped
    python experiments/rldg.py --run-dir runs/rldg2 --experts runs/rldg --data runs/rldg   # reuse earlier stages
    python experiments/rldg.py --preset tiny --run-dir /tmp/rldg      # the end-to-end smoke test's budget

Stages (each writes under --run-dir, each is skipped when its outputs exist, each runner phase resumes):

1. demos/<task>/      `--num-demos` scripted insertions per seen task (the noise-free script of envs/insertion.py
                      plus `--demo-noise`), the handful of demonstrations HIL-SERL seeds RLPD with.
2. experts/<task>/    one RL expert per seen task: SAC with RLPD's symmetric sampling (half of every minibatch from
                      the demonstrations; algos/sac.py), `--expert-steps` env steps, `--expert-seeds` seeds in one
                      program; the seed with the best final evaluation is the expert.
3. data/<source>/<task>/  `--episodes-per-task` SUCCESSFUL episodes per seen task and source, episode files
                      (envs/episodes.py; per-episode task ids in the metadata):
                        rl           stochastic rollouts of the expert (RLDG's rollout script keeps successes)
                        proxy        the DEMONSTRATION PROXY: the script with noise, hesitation and detours,
                                     standing in for human teleoperation (there is no human data here)
                        rl_on_proxy  proxy states, the expert's (mean) actions at them     } the swap ablation:
                        proxy_on_rl  RL states, the proxy's actions at them                } action vs coverage
                      and pretrain/<task>: reach-and-hover episodes of EVERY variant, the held-out tee included (the
                      script stopped before it descends): the generalist's "family" pretraining data, which shows
                      the observation-to-motion map but never an insertion (as Octo has seen robots, not this task).
4. pretrain/          the generalist (nets/transformer.py, task-id token) trained on the pretraining data.
5. finetune-full/     every arm in ONE population (members = arm x seeds), all parameters trained: rl, proxy, mix
                      (half the episodes of each per task, the same total), rl_on_proxy, proxy_on_rl, and rl and
                      proxy with a quarter and a half of the episodes (data efficiency).
6. finetune-adapters/ rl, proxy and mix fine-tuned through LoRA-Switch adapters (one expert per seen task,
                      top-1 routing; backbone frozen).
7. table.md, summary  success and cycle time per task (seen and held out) per arm, IQM with 95% bootstrap
                      intervals over seeds (benchmarks/stats.py), the experts' own success, action statistics
                      near contact and state-coverage counts of the two data sources.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Literal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

import envs  # noqa: E402
from algos import rldg, sac  # noqa: E402
from envs import episodes as episode_files  # noqa: E402
from envs import insertion  # noqa: E402
from experiments import runner  # noqa: E402
from nets import transformer as tf  # noqa: E402
from nets.lora_switch import AdapterConfig  # noqa: E402

SOURCES = ("rl", "proxy", "mix", "rl_on_proxy", "proxy_on_rl")


@dataclasses.dataclass(frozen=True)
class Args:
    """RLDG end to end on the insertion family. Every flag below is documented."""

    tasks: tuple[str, ...] = insertion.SEEN_TASKS
    """Seen tasks (experts are trained on these; the generalist is fine-tuned on their data)."""
    heldout: tuple[str, ...] = insertion.HELDOUT_TASKS
    """Held-out tasks: evaluated only (and present in the pretraining data, never in fine-tuning data)."""
    env_options: tuple[str, ...] = ()
    """Options of every insertion env as key=value (e.g. estimate_noise=0.001 clearance=0.003), for all stages."""
    num_demos: int = 10
    """Scripted demonstrations per seen task that seed each expert's RLPD buffer."""
    demo_noise: float = 0.1
    """Action noise of the seeding demonstrations."""
    expert: sac.Config = sac.Config(num_envs=8, chunk_steps=25, batch_size=128, hidden_sizes=(128, 128),
                                    start_steps=0, updates_per_step=4, critic_layernorm=True, eval_episodes=16,
                                    buffer_capacity=50_000, backup_entropy=False)
    """The RL experts' SAC settings (RLPD: LayerNorm critics, no entropy backup, symmetric sampling with the
    demonstrations). With SAC's own defaults (entropy backup, temperature 1) the sparse insertion reward was
    drowned: Q grew to ~38 from the entropy term alone in 20k steps (measured)."""
    expert_hp: sac.HParams = sac.HParams(init_temperature=0.05)
    """The RL experts' hyperparameters."""
    expert_steps: int = 20_000
    """Env steps per expert (per seed)."""
    expert_seeds: int = 2
    """Seeds per expert, one program; the best final evaluation is kept."""
    episodes_per_task: int = 32
    """Successful episodes per seen task and data source (equal counts, as the paper compares)."""
    proxy_noise: float = 0.3
    """Demonstration proxy: Gaussian action noise."""
    proxy_hesitation: float = 0.05
    """Demonstration proxy: probability per step of a pause of 2-7 steps."""
    proxy_detour: float = 0.05
    """Demonstration proxy: probability per step (before the peg is in the hole) of a detour."""
    pretrain_episodes: int = 32
    """Reach-and-hover episodes per variant in the pretraining data."""
    pretrain_steps: int = 3_000
    """Gradient steps of the generalist's pretraining."""
    finetune_steps: int = 2_000
    """Gradient steps of each fine-tuning."""
    generalist: rldg.Config = rldg.Config(
        policy=tf.PolicyConfig(transformer=tf.TransformerConfig(num_layers=2, width=64, num_heads=4, window=2),
                               observations=(("obs", 3),), num_tasks=len(insertion.TASKS), action_dim=4,
                               horizon=4),
        batch_size=64, updates_per_chunk=100, eval_episodes=16)
    """The generalist and its training (pretraining and full fine-tuning use it as is)."""
    hp: rldg.HParams = rldg.HParams()
    """The generalist's optimiser hyperparameters (data_source and num_episodes are set per arm)."""
    run: Annotated[runner.RunConfig, tyro.conf.OmitArgPrefixes] = runner.RunConfig(num_seeds=4, eval_every=0)
    """Seeds (--num-seeds: per fine-tuning arm), logging and checkpointing; --total-steps is unused (the stage
    budgets above)."""
    experts: str = ""
    """Reuse the experts of this earlier run directory (its experts/)."""
    data: str = ""
    """Reuse the datasets of this earlier run directory (its demos/ and data/)."""
    pretrained: str = ""
    """Reuse the pretrained generalist of this earlier run directory (its pretrain/)."""
    allow_failed_episodes: bool = False
    """Keep unsuccessful rollouts in the rl and proxy data (for smoke tests of the pipeline only; RLDG keeps
    successful episodes only)."""
    collect_batch: int = 64
    """Episodes rolled out per collection call (vmapped)."""
    stages: tuple[Literal["experts", "data", "pretrain", "full", "adapters", "report"], ...] = (
        "experts", "data", "pretrain", "full", "adapters", "report")
    """Stages to run (later stages need the earlier ones' outputs, here or through --experts/--data/--pretrained)."""


PRESETS = {
    "cpu": runner.Preset((), "the CPU-sized defaults shown below."),
    "tiny": runner.Preset(("--num-demos", "4", "--expert-steps", "400", "--expert-seeds", "1",
                           "--episodes-per-task", "4", "--pretrain-episodes", "2", "--pretrain-steps", "20",
                           "--finetune-steps", "20", "--generalist.updates-per-chunk", "10",
                           "--generalist.eval-episodes", "2", "--expert.eval-episodes", "2", "--num-seeds", "1",
                           "--expert.batch-size", "32", "--tasks", "square", "--allow-failed-episodes",
                           "--collect-batch", "4"),
                          "the end-to-end test's budget (minutes on a CPU, nothing learns)."),
    "paper": runner.Preset(("--expert-steps", "200000", "--expert-seeds", "4", "--episodes-per-task", "100",
                            "--pretrain-steps", "50000", "--finetune-steps", "20000", "--num-seeds", "8",
                            "--generalist.eval-episodes", "50"), "a GPU-sized run (not run here)."),
}


def task_env(task: str, args: Args, **kwargs) -> envs.Env:
    """The time-limited env of `task` with --env-options (the same for experts, data and evaluation)."""
    try:
        return envs.make(f"insertion-{task}", **{**runner.parse_env_options(args.env_options), **kwargs})
    except ValueError as e:
        raise runner.UserError(str(e)) from None


# ---- collection (one jitted program per task and source) --------------------------------------------------------
def _episodes(env, act, keys, carry0):
    """Episodes from `keys` with `act(state, carry, key) -> (action, carry, relabel)`: obs, actions, relabels,
    rewards (E, L, .) and per-episode success and length; steps after the end are masked."""
    def one(key):
        k_reset, k_steps = jax.random.split(key)
        state = env.reset(k_reset)

        def step(c, k):
            state, carry, alive = c
            action, carry, relabel = act(state, carry, k)
            nxt = env.step(state, action)
            return (nxt, carry, alive & ~nxt.done), (state.obs, action, relabel, nxt.reward, alive)

        _, (obs, action, relabel, reward, alive) = jax.lax.scan(step, (state, carry0, jnp.ones((), bool)),
                                                               jax.random.split(k_steps, env.max_steps))
        return {"observations": obs, "actions": action, "relabel": relabel, "rewards": reward * alive,
                "mask": alive.astype(jnp.float32), "success": jnp.max(reward * alive)}

    return jax.vmap(one)(keys)


def make_actors(env, args: Args, agent=None):
    """The collection policies: name -> (act, initial carry)."""
    script = lambda state, carry, key, **kw: insertion.scripted_insertion(env, state, carry, key, **kw)
    cfg = args.expert
    proxy_kw = dict(noise=args.proxy_noise, hesitation=args.proxy_hesitation, detour=args.proxy_detour)

    def demo(state, carry, key):
        action, carry = script(state, carry, key, noise=args.demo_noise)
        return action, carry, action

    def hover(state, carry, key):  # reach and hover: the script held before its descent
        action, carry = script(state, carry, key, noise=args.demo_noise)
        return action, {**carry, "phase": jnp.minimum(carry["phase"], insertion.ALIGN)}, action

    def proxy(state, carry, key):
        action, carry = script(state, carry, key, **proxy_kw)
        expert_action = sac.act(agent, state.obs, key, True, cfg) if agent is not None else action
        return action, carry, expert_action

    def expert(state, carry, key):
        k_act, k_proxy = jax.random.split(key)
        action = sac.act(agent, state.obs, k_act, False, cfg)
        relabel = insertion.relabel_action(env, state, k_proxy, noise=args.proxy_noise)
        return action, carry, relabel

    init = insertion.scripted_init()
    return {"demo": (demo, init), "hover": (hover, init), "proxy": (proxy, init), "rl": (expert, init)}


def collect(env, act, carry0, key, wanted: int, only_success: bool = True, batch: int = 64) -> tuple[dict, dict]:
    """`wanted` episodes (successful ones only, unless not `only_success`), drawn `batch` at a time, and the
    collection's record: episodes tried and the success rate among them (the collecting policy's own success)."""
    run = jax.jit(lambda keys: _episodes(env, act, keys, carry0))
    kept, tries = [], 0
    while sum(len(k["success"]) for k in kept) < wanted:
        if tries >= 20:
            got = sum(len(k["success"]) for k in kept)
            raise runner.UserError(f"collection on {type(env.unwrapped).__name__}: only {got} of {wanted} "
                                   f"successful episodes in {tries * batch} tries; the policy does not solve the "
                                   f"task (train the expert longer, --expert-steps).")
        key, k = jax.random.split(key)
        out = jax.device_get(run(jax.random.split(k, batch)))
        keep = out["success"] > 0 if only_success else np.ones(batch, bool)
        kept.append({name: v[keep] for name, v in out.items()})
        tries += 1
    successes = sum(int((k["success"] > 0).sum()) for k in kept)  # `kept` holds every success tried
    record = {"episodes_tried": tries * batch, "episodes_kept": wanted, "success_rate": successes / (tries * batch)}
    return {name: np.concatenate([k[name] for k in kept])[:wanted] for name in kept[0]}, record


def write_episodes(directory: Path, eps: dict, env, task: str, source: str, actions_key: str = "actions") -> None:
    meta = {"task": task, "source": source, "control_rate": env.unwrapped.control_rate, "sensor_layout": ["wrench"],
            "obs_layout": {k: list(v) for k, v in insertion.OBS_LAYOUT.items()},
            "task_id": insertion.TASKS.index(task)}
    tmp = directory.with_name(directory.name + ".partial")
    for i in range(len(eps["success"])):
        n = int(eps["mask"][i].sum())
        episode_files.save_episode(tmp / f"episode_{i:04d}.npz", eps["observations"][i, :n], eps[actions_key][i, :n],
                                   eps["rewards"][i, :n], {**meta, "success": bool(eps["success"][i]), "seed": i})
    os.replace(tmp, directory)  # a directory is complete or absent


def write_collection_record(root: Path, source: str, task: str, record: dict) -> None:
    """data/collection.json: {source: {task: record}}, the collecting policies' success (RL: the stochastic
    expert, as RLDG's rollout script runs it) beside their episodes."""
    path = root / "data" / "collection.json"
    records = json.loads(path.read_text()) if path.exists() else {}
    records.setdefault(source, {})[task] = record
    tmp = path.with_suffix(".partial")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(records, indent=1))
    os.replace(tmp, path)


def collection_lines(root: Path, tasks) -> list[str]:
    """One line per seen task: the success of the policies that collected the rl and proxy data."""
    path = root / "data" / "collection.json"
    records = json.loads(path.read_text()) if path.exists() else {}
    lines = []
    for task in tasks:
        for source, who in (("rl", "RL expert (stochastic)"), ("proxy", "demonstration proxy")):
            r = records.get(source, {}).get(task)
            if r:
                lines.append(f"  {who} on {task} while collecting: {r['success_rate']:.0%} of "
                             f"{r['episodes_tried']} episodes succeeded ({r['episodes_kept']} kept).")
    return lines


def load_source(root: Path, source: str, tasks, max_steps: int, only_success: bool = True) -> dict:
    """Episodes of `source` for `tasks`, padded to `max_steps`, with task ids; a clear error when missing."""
    parts = []
    for task in tasks:
        path = root / "data" / source / task
        if not path.is_dir():
            raise runner.UserError(f"missing dataset {path}: run the data stage (or give --data a run directory "
                                   f"that has data/{source}/{task}/).")
        try:
            eps = episode_files.load_episodes(path, only_success=only_success)
        except episode_files.EpisodeError as e:
            raise runner.UserError(str(e)) from None
        if eps["task"] != task:
            raise runner.UserError(f"{path}: its episodes are of task {eps['task']!r}, expected {task!r}.")
        pad = lambda x: np.pad(x, [(0, 0), (0, max_steps - x.shape[1])] + [(0, 0)] * (x.ndim - 2))
        parts.append({k: pad(eps[k]) for k in ("observations", "actions", "mask")}
                     | {"task": np.full(len(eps["mask"]), insertion.TASKS.index(task), np.int32)})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def mixed(a: dict, b: dict) -> dict:
    """Per task, the first half of `a`'s episodes and the first half of `b`'s (the same total)."""
    rows = []
    for task in np.unique(a["task"]):
        ia, ib = np.flatnonzero(a["task"] == task), np.flatnonzero(b["task"] == task)
        half = len(ia) // 2
        rows += [(a, i) for i in ia[:half]] + [(b, i) for i in ib[:len(ia) - half]]
    return {k: np.stack([src[k][i] for src, i in rows]) for k in a}


# ---- stages -------------------------------------------------------------------------------------------------------
def stage_demos_and_experts(args: Args, root: Path, data_root: Path, experts_root: Path) -> dict:
    """Seed demonstrations and one expert per seen task: {task: the expert's AgentState}."""
    agents = {}
    for t, task in enumerate(args.tasks):
        env = task_env(task, args)
        demo_dir = data_root / "demos" / task
        if not demo_dir.is_dir():
            act, c0 = make_actors(env, args)["demo"]
            demos, _ = collect(env, act, c0, jax.random.PRNGKey(100 + t), args.num_demos, batch=args.collect_batch)
            write_episodes(demo_dir, demos, env, task, "demo")
        demos = episode_files.load_episodes(demo_dir)
        prior = transitions(demos)
        init, chunk, evaluate = sac.make_train(args.expert, env)
        trainer = runner.Trainer(init, chunk, evaluate, args.expert.num_envs * args.expert.chunk_steps,
                                 shared=jax.tree.map(jnp.asarray, prior))
        population = runner.make_population(args.expert_hp, [{}], args.run.seed, args.expert_seeds)
        phase_run = dataclasses.replace(args.run, total_steps=args.expert_steps, eval_every=max(1, (
            args.expert_steps // trainer.steps_per_chunk) // 4))
        chunks = runner.num_chunks_for(phase_run, trainer.steps_per_chunk)
        carry = runner.run_phase(f"expert {task}", trainer, population, experts_root / "experts" / task, phase_run,
                                 chunks)
        _, success = runner.read_metric(experts_root / "experts" / task / "eval.jsonl", "eval_success")
        best = int(np.argmax(success[:, -1]))
        agents[task] = jax.tree.map(lambda x: x[best], carry.agent)
        print(f"expert {task}: seed {best} kept, final success {success[best, -1]:.2f}", file=sys.stderr)
    return agents


def transitions(eps: dict) -> dict:
    """Episode arrays -> the buffer's transitions (obs, action, reward, next_obs, terminated, truncated)."""
    real = eps["mask"] > 0
    nxt = np.concatenate([eps["observations"][:, 1:], eps["observations"][:, -1:]], axis=1)
    last = real & ~np.concatenate([real[:, 1:], np.zeros_like(real[:, :1])], axis=1)
    success = eps["rewards"] > 0
    return {"obs": eps["observations"][real], "action": eps["actions"][real], "reward": eps["rewards"][real],
            "next_obs": nxt[real], "terminated": success[real], "truncated": (last & ~success)[real]}


def stage_data(args: Args, data_root: Path, agents: dict) -> None:
    """data/{rl, proxy, rl_on_proxy, proxy_on_rl}/<task> for the seen tasks and data/pretrain/<variant>."""
    n = args.episodes_per_task
    for t, task in enumerate(args.tasks):
        env = task_env(task, args)
        actors = make_actors(env, args, agents[task])
        for source, relabelled, seed in (("rl", "proxy_on_rl", 200), ("proxy", "rl_on_proxy", 300)):
            if (data_root / "data" / source / task).is_dir() and (data_root / "data" / relabelled / task).is_dir():
                continue
            eps, record = collect(env, *actors[source], jax.random.PRNGKey(seed + t), n,
                                  only_success=not args.allow_failed_episodes, batch=args.collect_batch)
            write_episodes(data_root / "data" / relabelled / task, eps, env, task, relabelled, "relabel")
            write_episodes(data_root / "data" / source / task, eps, env, task, source)
            write_collection_record(data_root, source, task, record)
    for t, task in enumerate(tuple(args.tasks) + tuple(args.heldout)):
        if not (data_root / "data" / "pretrain" / task).is_dir():
            env = task_env(task, args, max_steps=40)
            act, c0 = make_actors(env, args)["hover"]
            eps, _ = collect(env, act, c0, jax.random.PRNGKey(400 + t), args.pretrain_episodes, only_success=False,
                          batch=args.collect_batch)
            write_episodes(data_root / "data" / "pretrain" / task, eps, env, task, "pretrain")


def eval_envs(args: Args):
    return [(insertion.TASKS.index(task), task_env(task, args)) for task in tuple(args.tasks) + tuple(args.heldout)]


def finetune_arms(n: int) -> list[dict]:
    """The fine-tuning population's settings: (arm name, data source index, episodes)."""
    arms = [{"arm": s, "data_source": float(i), "num_episodes": float(n)} for i, s in enumerate(SOURCES)]
    for frac in (4, 2):
        for i, s in enumerate(SOURCES[:2]):
            arms.append({"arm": f"{s} 1/{frac}", "data_source": float(i), "num_episodes": float(max(1, n // frac))})
    return arms


def stage_pretrain(args: Args, root: Path, data_root: Path, pre_root: Path):
    """The generalist pretrained on the family's reach-and-hover data: (params, obs_mean, obs_std)."""
    variants = tuple(args.tasks) + tuple(args.heldout)
    data = rldg.pack_sources([load_source(data_root, "pretrain", variants, task_env(variants[0], args).max_steps,
                                          only_success=False)], ["pretrain"])
    mean, std = rldg.observation_stats(data["observations"][0], data["mask"][0])
    init, chunk, evaluate = rldg.make_train(args.generalist, data, eval_envs(args), mean, std)
    trainer = runner.Trainer(init, chunk, evaluate, args.generalist.updates_per_chunk, shared=rldg.shared_data(data))
    population = runner.make_population(args.hp, [{}], args.run.seed, 1)
    phase_run = dataclasses.replace(args.run, total_steps=args.pretrain_steps)
    carry = runner.run_phase("pretrain", trainer, population, pre_root / "pretrain", phase_run,
                             runner.num_chunks_for(phase_run, trainer.steps_per_chunk))
    np.savez(pre_root / "pretrain" / "obs_stats.npz", mean=mean, std=std)
    return jax.tree.map(lambda x: x[0], carry.params), mean, std


def stage_finetune(args: Args, root: Path, data_root: Path, mode: str, pretrained, mean, std) -> None:
    load = lambda source: load_source(data_root, source, args.tasks, task_env(args.tasks[0], args).max_steps,
                                      only_success=not args.allow_failed_episodes)
    rl, proxy = load("rl"), load("proxy")
    sources = [rl, proxy, mixed(rl, proxy)] + [load(s) for s in SOURCES[3:]]
    data = rldg.pack_sources(sources, SOURCES)
    cfg = args.generalist
    arms = finetune_arms(len(rl["task"]))
    if mode == "adapters":
        adapter = AdapterConfig(kind="switch", num_experts=len(args.tasks), top_k=1, rank=4)
        cfg = dataclasses.replace(cfg, fine_tune="adapters", policy=dataclasses.replace(cfg.policy, adapter=adapter))
        arms = arms[:3]  # the pretrained tree has no adapter leaves: rldg.make_train initialises them
    init, chunk, evaluate = rldg.make_train(cfg, data, eval_envs(args), mean, std, init_params=pretrained)
    trainer = runner.Trainer(init, chunk, evaluate, cfg.updates_per_chunk, shared=rldg.shared_data(data))
    settings = [{k: v for k, v in a.items() if k != "arm"} for a in arms]
    population = runner.make_population(args.hp, settings, args.run.seed, args.run.num_seeds)
    for m in population.members:
        m["arm"] = arms[m["member"] // args.run.num_seeds]["arm"]
    phase_run = dataclasses.replace(args.run, total_steps=args.finetune_steps)
    runner.run_phase(f"finetune {mode}", trainer, population, root / f"finetune-{mode}", phase_run,
                     runner.num_chunks_for(phase_run, trainer.steps_per_chunk))
    (root / f"finetune-{mode}" / "members.json").write_text(json.dumps(population.members, indent=1))


def final_scores(path: Path, tasks) -> dict[str, np.ndarray]:
    """{metric: (members,)} at the final evaluation of a phase: success_<task>, cycle_time_<task> per task id."""
    out = {}
    for task in tasks:
        t = insertion.TASKS.index(task)
        for name in (f"success_{t}", f"cycle_time_{t}"):
            out[name] = runner.read_metric(path, name)[1][:, -1]
    return out


def arm_results(root: Path, mode: str, args: Args) -> list[dict]:
    """Per arm: its members' mean success over the seen tasks and over the held-out ones, cycle times, and
    `per_task`: task -> (success, cycle time) per member."""
    phase = root / f"finetune-{mode}"
    members = json.loads((phase / "members.json").read_text())
    scores = final_scores(phase / "eval.jsonl", tuple(args.tasks) + tuple(args.heldout))
    ids = lambda tasks: [insertion.TASKS.index(t) for t in tasks]
    rows = []
    for arm in dict.fromkeys(m["arm"] for m in members):
        idx = [m["member"] for m in members if m["arm"] == arm]
        seen = np.mean([scores[f"success_{t}"][idx] for t in ids(args.tasks)], axis=0)
        held = np.mean([scores[f"success_{t}"][idx] for t in ids(args.heldout)], axis=0) if args.heldout else None
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no successful episode, no cycle time
            cycle = np.nanmean([scores[f"cycle_time_{t}"][idx] for t in ids(args.tasks)], axis=0)
        every = tuple(args.tasks) + tuple(args.heldout)
        per_task = {t: (scores[f"success_{i}"][idx], scores[f"cycle_time_{i}"][idx]) for t, i in zip(every, ids(every))}
        rows.append({"arm": arm, "seen": seen, "heldout": held, "cycle_seen": cycle, "per_task": per_task})
    return rows


def summary(root: Path, args: Args) -> str:
    lines = [f"RLDG on insertion: seen tasks {', '.join(args.tasks)}; held out {', '.join(args.heldout) or 'none'}."]
    for task in args.tasks:
        path = Path(args.experts or root) / "experts" / task / "eval.jsonl"
        if path.exists():
            success = runner.read_metric(path, "eval_success")[1][:, -1]
            lines.append(f"  RL expert {task}: final success {np.max(success):.0%} (best of {len(success)} seed(s)).")
    lines += collection_lines(Path(args.data or root), args.tasks)
    for mode in ("full", "adapters"):
        if (root / f"finetune-{mode}" / "members.json").exists():
            lines.append(f"  generalist fine-tuned ({mode}), mean over {args.run.num_seeds} seed(s):")
            for row in arm_results(root, mode, args):
                held = "" if row["heldout"] is None else f", held out {np.mean(row['heldout']):.0%}"
                cycle = row["cycle_seen"][np.isfinite(row["cycle_seen"])]
                cycle = f"{cycle.mean():.1f} steps" if len(cycle) else "— (no success)"
                lines.append(f"    {row['arm']:<12} seen {np.mean(row['seen']):.0%}{held}, cycle time {cycle}")
    lines.append(f"Table with intervals: python benchmarks/rldg_compare.py --run {root}")
    return "\n".join(lines)


@runner.exits_on_user_error
def main(argv: list[str] | None = None) -> Path:
    args, sweep, _, resuming = runner.parse_args(Args, argv, __doc__, presets=PRESETS)
    unknown = sorted(set(args.tasks + args.heldout) - set(insertion.TASKS))
    if unknown:
        raise runner.UserError(f"unknown task(s) {unknown}: the insertion family has {', '.join(insertion.TASKS)}.")
    if set(args.tasks) & set(args.heldout):
        raise runner.UserError(f"--tasks and --heldout overlap: {sorted(set(args.tasks) & set(args.heldout))}.")
    population = runner.make_population(args.hp, [{}], args.run.seed, args.run.num_seeds)
    root = runner.open_run("rldg", args, sweep, population, resuming)
    data_root, experts_root, pre_root = (Path(p) if p else root for p in (args.data, args.experts, args.pretrained))
    agents = None
    if "experts" in args.stages or "data" in args.stages:
        agents = stage_demos_and_experts(args, root, data_root if args.data else root, experts_root)
    if "data" in args.stages:
        stage_data(args, data_root if args.data else root, agents)
    pretrained = None
    if any(s in args.stages for s in ("pretrain", "full", "adapters")):
        pretrained = stage_pretrain(args, root, data_root, pre_root)
    for mode in ("full", "adapters"):
        if mode in args.stages:
            stage_finetune(args, root, data_root, mode, *pretrained)
    print(summary(root, args), file=sys.stderr)
    return root


if __name__ == "__main__":
    main()
