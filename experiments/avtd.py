"""AVTD (validation-TD model selection over differently regularised SAC agents) vs each agent alone, as one file.

    python experiments/avtd.py                                      # point maze: AVTD + each agent fixed, 1 seed
    python experiments/avtd.py --preset high-utd --env inverted_pendulum --num-seeds 8 --raw-baseline
    python experiments/avtd.py --regularizers "none,ln,ln+do0.01,wd0.1,ln+wd0.1"     # the N agents
    python experiments/avtd.py --sweep.fixed-agent=-1 --selection-period 1000       # AVTD alone
    python experiments/avtd.py --sweep.fixed-agent=-1 --sweep.switch-margin 0,0.05,0.1,0.2   # vary the margin
    python experiments/avtd.py --sweep.validation-fraction 0.05,0.1,0.2 --sweep.fixed-agent=-1   # vary p
    python experiments/avtd.py --plot-only runs/avtd-...            # redraw avtd.png and table.md
    python experiments/avtd.py --resume runs/avtd-...               # continue a killed run

The population is, by default, AVTD (`fixed_agent = -1`) plus every agent pinned as the actor (`fixed_agent = 0..
N-1`: "agent i alone": agent i learns from the data it collects itself, on the same data budget), times
--num-seeds, all in ONE compiled program. `--raw-baseline` adds AVTD with the paper's criterion (raw validation
MSE, plain argmin: `normalize_td = 0, switch_margin = 0`) as further members. `--sweep.fixed-agent=-1,0,2` (note
the `=` before a negative value) chooses the members explicitly. Outputs under the run directory: config.json,
metrics.jsonl (per chunk: every agent's train_td_<k> / val_td_<k> (raw MSE), train_td_norm_<k> / val_td_norm_<k>
(normalised by the variance of the agent's own targets), score_<k> (the selection criterion), critic_loss_<k> ...,
`actor` = the agent that collected the chunk's data, `selection` = 1 in chunks that ended with a selection),
eval.jsonl (eval_return of the acting agent and eval_return_<k> of every agent), tb/, checkpoints/, curves.png,
avtd.png (raw and normalised TD errors per agent, the acting agent over time, returns) and table.md (final return
and success, mean ± std over seeds, AVTD vs each fixed agent; benchmarks/avtd_compare.py adds IQM and intervals).

Selection (algos/avtd.py): by default the score is the validation TD error normalised by the variance of the
agent's own validation targets (scale-free), and the acting agent is replaced only by one whose score is lower by
the relative margin `--hp.switch-margin` (0.1). `--hp.normalize-td 0 --hp.switch-margin 0` is the paper's rule.

--regularizers: comma-separated agents, each a '+'-joined list of `none`, `ln` (LayerNorm in the critics),
`do<rate>` (critic dropout), `wd<decay>` (critic weight decay, decoupled: the step is -lr * wd * kernel). Default:
"none,ln,ln+do0.01,wd0.1": plain high-UTD SAC (the overfitting case), RLPD's LayerNorm critic, DroQ's critic
(dropout 0.01 with LayerNorm), and weight decay, regularisers among those the paper studies. Weight decay 0.1: the
decay is decoupled (a kernel shrinks by the fraction lr * wd per step: 1e-4 at lr 1e-3), so 1e-4 would be a no-op.

UTD (critic gradient steps per collected transition) = agent.updates_per_step / agent.num_envs. Presets
(`--preset NAME` is shorthand for flags, listed at the end of --help; flags you give override them):
  cpu       (default) (64, 64) nets, batch 128, 4 envs x 25 steps per chunk, 4 critic steps per vectorised
            step: UTD 1; 10k steps. Cheap, but a weak test of the paper's idea: at UTD 1 (benchmarks/RESULTS.md,
            inverted_pendulum) training and validation TD errors of the unregularised and weight-decay agents
            stay together, i.e. there is little overfitting for the regularisers to cure.
  high-utd  the CPU-sized nets and batch, 1 env x 100 steps per chunk, 8 critic steps per env step: UTD 8, the
            regime where the paper finds overfitting (validation TD >> training TD) matters; 8x the update cost
            of `cpu` per transition.
  paper     GPU scale: hopper, 256 x 2 networks, batch 256, one env, 20 critic steps per env step, 1M steps,
            5 seeds
            (UTD 20, DroQ/REDQ's high UTD; 1M steps; 256-unit nets as in the paper's SAC).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tyro  # noqa: E402

import envs  # noqa: E402
from algos import avtd, sac  # noqa: E402
from experiments import runner  # noqa: E402

DEFAULT_REGULARIZERS = "none,ln,ln+do0.01,wd0.1"
CPU_AGENT = sac.Config(num_envs=4, chunk_steps=25, batch_size=128, start_steps=1000, hidden_sizes=(64, 64),
                       updates_per_step=4, buffer_capacity=100_000, eval_episodes=8)
# Env options used when --env-options is not given: random goals make the dense point maze an honest test (the
# fixed U-maze task with a dense reward has a deceptive local optimum; see tests/test_sac.py).
ENV_DEFAULTS = {"pointmaze": ("reward_type=dense", "task=random")}
# --preset NAME expands to these flags, placed before the user's own (the last occurrence of a flag wins); the
# runner lists them at the end of --help.
PRESETS = {
    "cpu": [],
    "high-utd": ["--agent.num-envs", "1", "--agent.chunk-steps", "100", "--agent.updates-per-step", "8"],
    "paper": ["--env", "hopper", "--agent.hidden-sizes", "256", "256", "--agent.batch-size", "256",
              "--agent.num-envs", "1", "--agent.chunk-steps", "1000", "--agent.updates-per-step", "20",
              "--agent.buffer-capacity", "1000000", "--agent.start-steps", "5000", "--agent.eval-episodes", "10",
              "--validation-capacity", "100000", "--selection-period", "10000", "--total-steps", "1000000",
              "--eval-every", "10", "--num-seeds", "5"],
}


@dataclasses.dataclass(frozen=True)
class Args:
    """AVTD vs each regulariser alone. --sweep.<hparam> takes comma-separated values (one compiled program)."""

    preset: Literal["cpu", "high-utd", "paper"] = "cpu"
    """Shorthand for a set of flags (see the top of --help): cpu (UTD 1), high-utd (UTD 8, CPU-sized), paper (UTD
    20, GPU-sized). Flags given after --preset override it."""
    env: str = "pointmaze-umaze-jax"
    """Environment (envs.registered()): pointmaze-umaze-jax, inverted_pendulum, hopper, ..."""
    env_options: tuple[str, ...] = ()
    """key=value env options; empty: reward_type=dense task=random for point mazes, none otherwise."""
    regularizers: str = DEFAULT_REGULARIZERS
    """The N agents: comma-separated, each '+'-joined of none | ln | do<rate> | wd<decay>. Sets the per-agent
    fields of --hp (layernorm, critic-dropout, critic-weight-decay); "" keeps those --hp values."""
    selection_period: int = 500
    """Transitions between AVTD selections (a multiple of agent.num_envs * agent.chunk_steps)."""
    validation_capacity: int = 20_000
    """Held-out transitions kept. The held-out fraction p is --hp.validation-fraction (sweepable)."""
    td_batch_size: int = 1024
    """Transitions drawn from each buffer (training, validation) to estimate the TD errors every chunk."""
    eval_all_agents: bool = True
    """Evaluate every agent's policy, not only the acting one's."""
    compare: bool = True
    """Population = AVTD plus each agent fixed (fixed_agent = -1, 0, ..., N-1), unless --sweep.fixed-agent is
    given; --no-compare runs AVTD only."""
    raw_baseline: bool = False
    """Also run AVTD with the paper's criterion (raw validation MSE, plain argmin: normalize_td 0, switch_margin 0)
    as further members (with --compare, unless --sweep.fixed-agent is given)."""
    plot_only: str = ""
    """Only (re)draw avtd.png and table.md of this run directory, then exit."""
    agent: sac.Config = CPU_AGENT
    """Every agent's SAC settings (static; critic_layernorm is ignored: LayerNorm is per agent)."""
    hp: avtd.HParams = avtd.HParams(actor_lr=1e-3, critic_lr=1e-3, temp_lr=1e-3, init_temperature=0.1)
    """Sweepable hyperparameters, shared by all agents except the per-agent regularisers (set by --regularizers)."""
    run: Annotated[runner.RunConfig, tyro.conf.OmitArgPrefixes] = runner.RunConfig(total_steps=10_000,
                                                                                  eval_every=10)
    """Budgets, seeds, logging and checkpointing."""


def parse_regularizers(spec: str) -> dict[str, tuple[float, ...]]:
    """"none,ln+do0.01" -> {"layernorm": (0, 1), "critic_dropout": (0, 0.01), "critic_weight_decay": (0, 0)}."""
    fields = {"layernorm": [], "critic_dropout": [], "critic_weight_decay": []}
    for agent in spec.split(","):
        ln, do, wd = 0.0, 0.0, 0.0
        for token in agent.strip().split("+"):
            token = token.strip()
            try:
                if token == "ln":
                    ln = 1.0
                elif token.startswith("do"):
                    do = float(token[2:])
                elif token.startswith("wd"):
                    wd = float(token[2:])
                elif token != "none":
                    raise ValueError
            except ValueError:
                raise runner.UserError(f"--regularizers {spec!r}: cannot read {token!r}. Each agent is a '+'-joined "
                                       f"list of none, ln, do<rate>, wd<decay>, e.g. \"none,ln,ln+do0.01,wd0.1\".") \
                    from None
        if not 0.0 <= do < 1.0 or wd < 0.0:
            raise runner.UserError(f"--regularizers {spec!r}: agent {agent!r} needs 0 <= dropout < 1 and weight decay "
                                   f">= 0.")
        for name, v in zip(fields, (ln, do, wd)):
            fields[name].append(v)
    return {k: tuple(v) for k, v in fields.items()}


def agent_names(hp: avtd.HParams) -> list[str]:
    """Short names of the agents, e.g. ["none", "ln", "ln+do0.01", "wd0.1"]."""
    names = []
    for ln, do, wd in zip(hp.layernorm, hp.critic_dropout, hp.critic_weight_decay):
        parts = (["ln"] if ln else []) + ([f"do{do:g}"] if do else []) + ([f"wd{wd:g}"] if wd else [])
        names.append("+".join(parts) or "none")
    return names


def resolve(args: Args) -> Args:
    """Apply --regularizers to the per-agent fields of hp and the env-option defaults (idempotent)."""
    hp = args.hp.replace(**parse_regularizers(args.regularizers)) if args.regularizers.strip() else args.hp
    lengths = {k: len(getattr(hp, k)) for k in ("layernorm", "critic_dropout", "critic_weight_decay")}
    if len(set(lengths.values())) != 1:
        raise runner.UserError(f"The per-agent hyperparameters need one value per agent, got lengths {lengths}.")
    options = args.env_options or next((v for k, v in ENV_DEFAULTS.items() if args.env.startswith(k)), ())
    return dataclasses.replace(args, hp=hp, env_options=tuple(options))


def make_config(args: Args) -> avtd.Config:
    return avtd.Config(agent=args.agent, num_agents=len(args.hp.layernorm),
                       validation_capacity=args.validation_capacity, selection_period=args.selection_period,
                       td_batch_size=args.td_batch_size, eval_all_agents=args.eval_all_agents)


def build(args: Args) -> runner.Trainer:
    env = envs.make(args.env, **runner.parse_env_options(args.env_options))
    cfg = make_config(args)
    return runner.Trainer(*avtd.make_train(cfg, env), cfg.agent.num_envs * cfg.agent.chunk_steps)


RAW_AVTD = {"fixed_agent": -1.0, "normalize_td": 0.0, "switch_margin": 0.0}
"""The paper's selection rule as a member setting: raw validation MSE, plain argmin."""


def member_settings(settings: list[dict], num_agents: int, compare: bool, raw_baseline: bool = False,
                    hp: avtd.HParams | None = None) -> list[dict]:
    """Add fixed_agent = -1 (AVTD), 0, ..., N-1 to every sweep setting (and the raw-MSE AVTD if `raw_baseline`),
    unless the sweep already sets fixed_agent or not `compare` (then every member uses --hp.fixed-agent).

    With `raw_baseline`, every setting names normalize_td and switch_margin (from the sweep or `hp`): members that
    differ in a setting all carry its key, which the runner's curves.png groups by."""
    if any("fixed_agent" in s for s in settings):
        bad = {s["fixed_agent"] for s in settings if not -1 <= s["fixed_agent"] < num_agents}
        if bad:
            raise runner.UserError(f"--sweep.fixed-agent got {sorted(bad)}: use -1 (AVTD) or an agent index in "
                                   f"0..{num_agents - 1}.")
        return settings
    if not compare:
        return settings
    if raw_baseline:
        hp = hp or avtd.HParams()
        settings = [{"normalize_td": float(hp.normalize_td), "switch_margin": float(hp.switch_margin), **s}
                    for s in settings]
    out = [{"fixed_agent": -1.0, **s} for s in settings]
    if raw_baseline:
        out += [{**s, **RAW_AVTD} for s in settings]
    return out + [{"fixed_agent": float(i), **s} for i in range(num_agents) for s in settings]


def expand_preset(argv: list[str]) -> list[str]:
    """argv with the flags of its --preset (the last one given) placed in front, so that later flags win."""
    return runner.expand_preset(argv, PRESETS)


# --------------------------------------------------------------------------------------------------------------
# plots and table
# --------------------------------------------------------------------------------------------------------------
def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def _series(records: list[dict], members: list[int], key: str):
    """(steps, table[member, step]) of `key` for these members."""
    steps = sorted({r["env_steps"] for r in records})
    table = np.full((len(members), len(steps)), np.nan)
    for r in records:
        if r["member"] in members and key in r:
            table[members.index(r["member"]), steps.index(r["env_steps"])] = r[key]
    return np.array(steps), table


def method_name(setting: dict, hp: avtd.HParams, names: list[str]) -> str:
    """"<agent> alone" for a pinned actor; "AVTD (<criterion>, m<margin>)" otherwise (nTD = normalised TD)."""
    fixed = setting.get("fixed_agent", hp.fixed_agent)
    if fixed >= 0:
        return f"{names[int(fixed)]} alone"
    norm = float(setting.get("normalize_td", hp.normalize_td))
    criterion = {1.0: "nTD", 0.0: "raw TD"}.get(norm, f"normalize {norm:g}")
    return f"AVTD ({criterion}, m{float(setting.get('switch_margin', hp.switch_margin)):g})"


def method_groups(config: dict) -> tuple[list[str], dict[str, list[int]]]:
    """(agent names, method name -> member ids) of a run's config.json."""
    hp = avtd.HParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["args"]["hp"].items()})
    names, groups = agent_names(hp), {}
    for m in config["members"]:
        groups.setdefault(method_name(m, hp, names), []).append(m["member"])
    return names, groups


def plot(root: Path) -> None:
    """avtd.png (TD errors per agent, the acting agent, returns) and table.md for the run directory `root`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = json.loads((root / "config.json").read_text())
    names, groups = method_groups(config)
    members = config["members"]
    metrics, evals = _records(root / "metrics.jsonl"), _records(root / "eval.jsonl")
    if not metrics:
        return
    avtd_groups = [g for g in groups if g.startswith("AVTD")]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    fig, axes = plt.subplots(1, 4, figsize=(22, 4.2))
    td_ids = groups[avtd_groups[0]] if avtd_groups else [members[0]["member"]]
    for ax, suffix, what in ((axes[0], "", "raw TD error (MSE)"),
                             (axes[1], "_norm", "normalised TD error (MSE / Var of own targets)")):
        for k, name in enumerate(names):
            for key, style in ((f"val_td{suffix}_{k}", "-"), (f"train_td{suffix}_{k}", "--")):
                steps, table = _series(metrics, td_ids, key)
                if np.isfinite(table).any():
                    ax.plot(steps, np.nanmean(table, 0), style, color=colors[k % len(colors)],
                            label=f"{name} {'validation' if style == '-' else 'training'}")
        ax.set_yscale("log")
        ax.set_title(f"{what} per agent\n({avtd_groups[0] if avtd_groups else 'member 0'}; mean over "
                     f"{len(td_ids)} seed(s))", fontsize=9)
        ax.set_xlabel("environment steps")
        ax.legend(fontsize=6, ncol=2)
    ax = axes[2]
    ids = [(g, i) for g in avtd_groups for i in groups[g]]
    for j, (g, member) in enumerate(ids):
        steps, table = _series(metrics, [member], "actor")
        ax.step(steps, table[0] + 0.3 * (j / max(len(ids) - 1, 1) - 0.5), where="post", alpha=0.7, lw=1,
                color=colors[avtd_groups.index(g) % len(colors)],
                label=g if member == groups[g][0] else None)
    ax.set_yticks(range(len(names)), names)
    ax.set_title("agent collecting data (AVTD members, one line per seed)", fontsize=9)
    ax.set_xlabel("environment steps")
    if ids:
        ax.legend(fontsize=6)
    ax = axes[3]
    for i, (method, ids) in enumerate(groups.items()):
        steps, table = _series(evals, ids, "eval_return")
        if not len(steps):
            continue
        mean, std = np.nanmean(table, 0), np.nanstd(table, 0)
        color = colors[i % len(colors)]
        ax.plot(steps, mean, color=color, lw=2 if method.startswith("AVTD") else 1, label=f"{method} (n={len(ids)})")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.12, color=color)
    ax.set_title("evaluation return (mean ± std over seeds)", fontsize=9)
    ax.set_xlabel("environment steps")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(root / "avtd.png", dpi=120)
    plt.close(fig)
    (root / "table.md").write_text(table_markdown(config, names, groups, metrics, evals))


def actor_history(metrics: list[dict], ids: list[int]) -> np.ndarray:
    """actor[member, chunk] (the agent that collected each chunk's data) of these members."""
    _, table = _series(metrics, ids, "actor")
    return table


def table_markdown(config: dict, names: list[str], groups: dict[str, list[int]], metrics: list[dict],
                   evals: list[dict]) -> str:
    last_eval = max((r["env_steps"] for r in evals), default=0)
    final = {r["member"]: r for r in evals if r["env_steps"] == last_eval}
    avtd_groups = [g for g in groups if g.startswith("AVTD")]
    actors = {g: actor_history(metrics, groups[g]) for g in avtd_groups}
    lines = [f"Final evaluation at {last_eval} env steps; env {config['args']['env']} "
             f"{' '.join(config['args']['env_options'])}; mean ± std over seeds. 'chosen by' columns: % of chunks "
             f"in which that AVTD variant's data collector was this agent; 'switches': changes of the data "
             f"collector per seed.", "",
             "| method | seeds | final return | final success | switches | " +
             " | ".join(f"chosen by {g} (%)" for g in avtd_groups) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(avtd_groups)]
    fmt = lambda x, p: f"{x.mean():.{p}f} ± {x.std():.{p}f}" if len(x) else "—"
    for method, ids in groups.items():
        ret = np.array([final[i]["eval_return"] for i in ids if i in final])
        succ = np.array([final[i]["eval_success"] for i in ids if i in final])
        switches = "—"
        if method in actors:
            a = actors[method]
            switches = fmt(np.sum(np.diff(a, axis=1) != 0, axis=1).astype(float), 1)
        chose = []
        for g in avtd_groups:
            if method.endswith(" alone"):
                k = names.index(method[: -len(" alone")])
                chose.append(f"{100.0 * np.nanmean(actors[g] == k):.0f}")
            else:
                chose.append("—")
        lines.append(f"| {method} | {len(ids)} | {fmt(ret, 1)} | {fmt(succ, 2)} | {switches} | " +
                     " | ".join(chose) + " |")
    return "\n".join(lines) + "\n"


@runner.exits_on_user_error
def main(argv: list[str] | None = None) -> Path:
    args, sweep, settings, resuming = runner.parse_args(Args, argv, __doc__, presets=PRESETS)
    if args.plot_only:
        root = Path(args.plot_only)
        if not (root / "config.json").exists():
            raise runner.UserError(f"--plot-only {root}: no config.json there; give a run directory of this "
                                   f"experiment.")
        plot(root)
        print(f"done: {root}/avtd.png, {root}/table.md", file=sys.stderr)
        return root
    args = resolve(args)
    try:
        trainer = build(args)
    except ValueError as e:  # bad env names, bad static config
        raise runner.UserError(str(e)) from None
    num_agents = len(args.hp.layernorm)
    settings = member_settings(settings, num_agents, args.compare and args.hp.fixed_agent < 0,
                               args.raw_baseline, args.hp)
    population = runner.make_population(args.hp, settings, args.run.seed, args.run.num_seeds)
    root = runner.open_run("avtd", args, sweep, population, resuming)
    num_chunks = runner.num_chunks_for(args.run, trainer.steps_per_chunk)
    print(f"avtd: agents {agent_names(args.hp)}; members: "
          f"{[method_name(s, args.hp, agent_names(args.hp)) for s in settings]} "
          f"x {args.run.num_seeds} "
          f"seed(s)", file=sys.stderr)
    runner.run_phase("avtd", trainer, population, root, args.run, num_chunks)
    plot(root)
    print(f"done: {root}/avtd.png, {root}/table.md, {root}/curves.png", file=sys.stderr)
    return root


if __name__ == "__main__":
    main()
