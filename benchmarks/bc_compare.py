"""Behaviour cloning with an AdaCat action head against a Gaussian head (and optionally others) on the two-forks
maze's multimodal demonstrations: success, episode length, held-out NLL, and what each policy does at a fork.

    .venv/bin/python benchmarks/bc_compare.py --out runs/bc-compare                     # the RESULTS.md table
    .venv/bin/python benchmarks/bc_compare.py --tie-break step --out runs/bc-compare-step
    .venv/bin/python benchmarks/bc_compare.py --heads adacat,gaussian,mog --num-seeds 2 --steps 500

Per head, ONE vmapped population of `--num-seeds` policies (seeds vary the initialisation and the minibatches;
the demonstrations are fixed) is trained for `--steps` gradient steps with the same MADE trunk, batch, learning
rate and data (experiments/bc.py's defaults), then evaluated from S over `--eval-episodes` episodes with sampled
actions and with the greedy per-dimension decode (algos/bc.py says what that is). Per head: success IQM [95%
stratified-bootstrap CI] and mean ± std over seeds, P(AdaCat > other head) with its interval, mean episode
length, held-out NLL per action dimension. At fork 1 (the start state, at rest) each policy's first action is
sampled 512 times per seed: the fraction whose horizontal part lies between the modes (|a_x| < 0.5) and the
fraction going left, beside the demonstrators' first actions. Writes `<out>/results.json` (a killed benchmark
resumes per head), `<out>/table.md` and `<out>/bc_compare.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from algos import bc  # noqa: E402
from benchmarks import stats  # noqa: E402
from experiments import bc as bc_experiment  # noqa: E402
from experiments import runner  # noqa: E402

FORK_SAMPLES = 512


def train_head(args: bc_experiment.Args, data: dict, env, steps: int, num_seeds: int, seed: int) -> dict:
    """Train one head's population; its final metrics per seed and its first actions at S."""
    cfg = args.model
    init_carry, train_chunk, evaluate = bc.make_train(cfg, data, env)
    trainer = runner.Trainer(init_carry, train_chunk, evaluate, cfg.updates_per_chunk, shared=bc.shared_data(data))
    run = runner.Runner(trainer, runner.make_population(args.hp, [{}], seed, num_seeds))
    carry = run.init_carry()
    for _ in range(runner.num_chunks_for(runner.RunConfig(total_steps=steps), cfg.updates_per_chunk)):
        carry, metrics = run.train_chunk(carry, run.hparams)
    final = {k: np.asarray(v).tolist() for k, v in jax.device_get(
        run.evaluate(carry, run.eval_keys(0), run.hparams)).items()}
    final["train_loss_per_dim"] = np.asarray(metrics["train_loss_per_dim"]).tolist()
    model = bc.make_model(cfg, env.action_size)
    # Where the failed episodes ended: the same episodes as `evaluate`'s (same keys, same policies).
    spec = env.unwrapped.spec
    for greedy, name in ((False, "sampled"), (True, "greedy")):
        outcomes = jax.jit(jax.vmap(lambda p, k: bc.episode_outcomes(
            env, bc.make_policy(p, model, cfg, data["obs_mean"], data["obs_std"], greedy), k, cfg.eval_episodes)))(
            carry.params, run.eval_keys(0))
        failed = np.asarray(outcomes["success"]) == 0
        row, col = (np.asarray(v)[failed] for v in spec.cell_of(np.asarray(outcomes["final_obs"])[..., :2]))
        cells, counts = np.unique(np.stack([row, col], -1), axis=0, return_counts=True) if failed.any() else ([], [])
        final[f"failures_{name}"] = {f"{int(r)},{int(c)}": int(n) for (r, c), n in zip(cells, counts)}
    # The first action at S, at rest: the state every episode starts from (fork 1 of the two-forks maze).
    start = env.reset(jax.random.PRNGKey(0)).obs.at[:2].set(jnp.asarray(spec.cell_center(
        env.unwrapped.start_cell_rc)))
    obs_n = jnp.broadcast_to((start - data["obs_mean"]) / data["obs_std"], (FORK_SAMPLES, start.shape[0]))
    first = jax.jit(jax.vmap(lambda p, k: bc.sample_actions(p, model, cfg, obs_n, k)))(
        carry.params, jax.random.split(jax.random.PRNGKey(seed + 1), num_seeds))
    final["first_actions"] = np.asarray(first).tolist()  # (seeds, samples, A)
    return final


def cell_names(env) -> dict[str, str]:
    """"r,c" -> a name for the cells worth naming: S, G and the forks (cells where two moves toward G tie)."""
    from envs import maze_data
    base = env.unwrapped
    moves = maze_data.shortest_moves(base.spec, base.goal_cell_rc)
    names = {f"{r},{c}": f"fork ({r},{c})" for r, c in np.argwhere(moves.sum(-1) > 1)}
    names[",".join(map(str, base.goal_cell_rc))] = "G's cell (outside the success disc)"
    start = ",".join(map(str, base.start_cell_rc))
    names[start] = "S, a fork" if start in names else "S"
    return names


def where_failed(failures: dict, names: dict) -> str:
    total = sum(failures.values())
    if not total:
        return "none"
    top = sorted(failures.items(), key=lambda kv: -kv[1])[:3]
    return f"{total}: " + ", ".join(f"{n} in {names.get(cell, '(' + cell + ')')}" for cell, n in top)


def summarise(results: dict, demo_first: np.ndarray, out: Path, names: dict, reference: str = "adacat") -> str:
    heads = list(results)
    lines = ["| head | success, sampled: IQM [95% CI] | mean ± std | success, greedy: IQM [95% CI] | mean ± std "
             "| episode length sampled / greedy | test NLL (nats/dim) | at S: between modes / left | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for h in heads:
        r = results[h]
        cells = []
        for key in ("eval_success", "eval_success_greedy"):
            x = 100 * np.array(r[key])
            point, lo, hi = stats.bootstrap_ci(x)
            cells += [f"{point:.1f} [{lo:.1f}, {hi:.1f}]", f"{x.mean():.1f} ± {x.std():.1f}"]
        first = np.array(r["first_actions"])[..., 0]
        lines.append(f"| {h} | {' | '.join(cells)} | {np.mean(r['eval_length']):.0f} / "
                     f"{np.mean(r['eval_length_greedy']):.0f} | {np.mean(r['test_nll']):.3f} ± "
                     f"{np.std(r['test_nll']):.3f} | {100 * np.mean(np.abs(first) < 0.5):.0f}% / "
                     f"{100 * np.mean(first < -0.5):.0f}% | {len(r['eval_success'])} |")
    lines.append(f"| demonstrator | | | | | | | {100 * np.mean(np.abs(demo_first[:, 0]) < 0.5):.0f}% / "
                 f"{100 * np.mean(demo_first[:, 0] < -0.5):.0f}% | |")
    lines += ["", "Where the failed episodes ended (all seeds; cells as (row, col)):"]
    for h in heads:
        if "failures_sampled" in results[h]:
            lines.append(f"- {h}: sampled {where_failed(results[h]['failures_sampled'], names)}; greedy "
                         f"{where_failed(results[h]['failures_greedy'], names)}")
    if reference in results:
        lines.append("")
        for h in heads:
            if h == reference:
                continue
            for key, what in (("eval_success", "sampled"), ("eval_success_greedy", "greedy")):
                p, lo, hi = stats.probability_of_improvement_ci(results[reference][key], results[h][key])
                lines.append(f"P({reference} > {h}), success with {what} actions: {p:.2f} [{lo:.2f}, {hi:.2f}]")
    text = "\n".join(lines)
    (out / "table.md").write_text(text + "\n")
    return text


def plot(results: dict, demo_first: np.ndarray, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for j, (key, label) in enumerate((("eval_success", "sampled"), ("eval_success_greedy", "greedy"))):
        for i, h in enumerate(heads):
            x = 100 * np.array(results[h][key])
            point, lo, hi = stats.bootstrap_ci(x)
            pos = i + (j - 0.5) * 0.35
            ax.bar(pos, point, width=0.33, color=f"C{j}", alpha=0.5, label=label if i == 0 else None)
            ax.errorbar(pos, point, yerr=[[point - lo], [hi - point]], color="k", capsize=3)
            ax.scatter(np.full(len(x), pos) + np.linspace(-0.08, 0.08, len(x)), x, s=8, color="k", zorder=3)
    ax.set_xticks(range(len(heads)), heads)
    ax.set_ylabel("success from S, % (IQM, 95% CI; dots: seeds)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax = axes[1]
    bins = np.linspace(-1, 1, 41)
    ax.hist(demo_first[:, 0], bins=bins, density=True, histtype="step", color="k", lw=2, label="demonstrator")
    for i, h in enumerate(heads):
        a = np.array(results[h]["first_actions"])[..., 0].reshape(-1)
        ax.hist(np.clip(a, -1, 1), bins=bins, density=True, histtype="step", color=f"C{i + 2}", label=h)
    ax.set_xlabel("first horizontal action a_x at S, at rest (clipped to [-1, 1] as the env does)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bc-compare", help="output directory (results.json, table.md, PNG)")
    p.add_argument("--heads", default="adacat,gaussian", help="comma list of adacat, gaussian, categorical, mog")
    p.add_argument("--num-seeds", type=int, default=8, help="seeds per head (one vmapped population)")
    p.add_argument("--steps", type=int, default=3000, help="gradient steps per policy")
    p.add_argument("--maze", default="two-forks", help="as experiments/bc.py --maze")
    p.add_argument("--tie-break", default="episode", choices=("episode", "step", "first"))
    p.add_argument("--num-demos", type=int, default=300, help="demonstration episodes")
    p.add_argument("--eval-episodes", type=int, default=64, help="evaluation episodes per seed (each policy)")
    p.add_argument("--num-bins", type=int, default=32, help="bins (adacat, categorical) / components (mog)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    base = bc_experiment.Args(maze=a.maze, tie_break=a.tie_break, num_demos=a.num_demos)
    env = bc_experiment.make_env(base)
    demos = bc_experiment.make_demos(base)
    data = bc.prepare(demos)
    starts = np.flatnonzero(np.r_[True, demos["episode_ids"][1:] != demos["episode_ids"][:-1]])
    demo_first = demos["actions"][starts]
    conflict = bc_experiment.action_conflict(demos)
    settings = {"maze": a.maze, "tie_break": a.tie_break, "num_demos": a.num_demos, "steps": a.steps,
                "num_seeds": a.num_seeds, "eval_episodes": a.eval_episodes, "num_bins": a.num_bins,
                "seed": a.seed}
    results_file = out / "results.json"
    saved = json.loads(results_file.read_text()) if results_file.exists() else {}
    results = saved.get("heads", {}) if saved.get("settings") == settings else {}
    print(f"{a.maze} maze, tie-break per {a.tie_break}: {len(starts)} demonstrations, {len(demos['actions'])} "
          f"transitions, {100 * conflict:.1f}% of states with cancelling neighbour actions", flush=True)
    for head in a.heads.split(","):
        if head in results:  # a killed benchmark resumes where it stopped
            continue
        t0 = time.time()
        args = dataclasses.replace(base, model=dataclasses.replace(base.model, head=head, num_bins=a.num_bins,
                                                                   eval_episodes=a.eval_episodes))
        r = train_head(args, data, env, a.steps, a.num_seeds, a.seed)
        r["seconds"] = time.time() - t0
        results[head] = r
        results_file.write_text(json.dumps({"settings": settings, "heads": results,
                                            "demo_conflict_fraction": conflict,
                                            "demo_transitions": len(demos["actions"])}))
        print(f"{head:12s} success sampled {100 * np.mean(r['eval_success']):5.1f}% greedy "
              f"{100 * np.mean(r['eval_success_greedy']):5.1f}%  test NLL {np.mean(r['test_nll']):.3f}  "
              f"({r['seconds']:.0f} s)", flush=True)
    print(summarise(results, demo_first, out, cell_names(env)))
    plot(results, demo_first, out / "bc_compare.png")
    print(f"wrote {out}/table.md, {out}/bc_compare.png, {results_file}")


if __name__ == "__main__":
    main()
