"""AdaCat against a fixed-bin categorical, a Gaussian and a mixture of Gaussians: test NLL against k.

    .venv/bin/python benchmarks/adacat_compare.py --out runs/adacat-compare            # the RESULTS.md table
    .venv/bin/python benchmarks/adacat_compare.py --datasets mixture-1d --bins 8,32 --num-seeds 2 --steps 500

For every dataset, family and k, ONE vmapped population of `--num-seeds` models (seeds vary the initialisation
and minibatches; the data are fixed) is trained for `--steps` gradient steps with the defaults of
`experiments/adacat.py` except a smaller trunk (MADE 2x128 by default, `--hidden`; Adam 1e-3, batch 256, AdaCat smoothing 1e-3 of the interval), then the hard
test NLL (nats per dimension) is measured on held-out rows. Per cell: IQM [95% stratified-bootstrap CI], mean ±
std over seeds, and the parameter count. Writes `<out>/results.json`, `<out>/table.md` and
`<out>/nll_vs_k.png` (one panel per dataset; Gaussian as a horizontal line).
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

from algos import density  # noqa: E402
from benchmarks import stats  # noqa: E402
from experiments import adacat as adacat_experiment  # noqa: E402
from experiments import runner  # noqa: E402

FAMILIES = ("adacat", "categorical", "mog", "gaussian")


def train_cell(data: dict, cfg: density.Config, hp: density.HParams, steps: int, num_seeds: int, seed: int):
    """Final test NLL per seed (array) and the parameter count of one model."""
    init_carry, train_chunk, evaluate = density.make_train(cfg, data)
    shared = density.shared_arrays(data, test_rows=len(data["x_test"]))
    trainer = runner.Trainer(init_carry, train_chunk, evaluate, cfg.updates_per_chunk, shared=shared)
    population = runner.make_population(hp, [{}], seed, num_seeds)
    run = runner.Runner(trainer, population)
    carry = run.init_carry()
    for _ in range(runner.num_chunks_for(runner.RunConfig(total_steps=steps), cfg.updates_per_chunk)):
        carry, metrics = run.train_chunk(carry, run.hparams)
    nll = np.asarray(run.evaluate(carry, run.eval_keys(0), run.hparams)["test_nll"])
    params = jax.tree.map(lambda x: x[0], carry.params)
    return nll, density.num_parameters(params)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/adacat-compare")
    p.add_argument("--datasets", default="mixture-1d,mixture-2d,maze-action,maze-dynamics")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--bins", default="8,16,32,64", help="k: bins (adacat, categorical) or components (mog)")
    p.add_argument("--num-seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=4000, help="gradient steps per model")
    p.add_argument("--num-rows", type=int, default=20_000, help="rows of each synthetic dataset")
    p.add_argument("--maze-rows", type=int, default=100_000, help="maze transitions (the generated medium-maze data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", default="128,128", help="MADE hidden sizes (the experiment's default is 256,256)")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    done = {(r["dataset"], r["family"], r["num_bins"]) for r in results}
    bins = [int(b) for b in a.bins.split(",")]
    for name in a.datasets.split(","):
        rows = a.maze_rows if name.startswith("maze") else a.num_rows
        data = adacat_experiment.make_data(adacat_experiment.Args(dataset=name, num_rows=rows))
        for family in a.families.split(","):
            for k in (bins[:1] if family == "gaussian" else bins):
                if (name, family, k) in done:  # a killed benchmark resumes where it stopped
                    continue
                t0 = time.time()
                cfg = density.Config(family=family, num_bins=k, hidden_sizes=tuple(int(h) for h in a.hidden.split(",")))
                nll, n_params = train_cell(data, cfg, density.HParams(), a.steps, a.num_seeds, a.seed)
                row = {"dataset": name, "family": family, "num_bins": k, "num_params": n_params,
                       "test_nll": nll.tolist(), "seconds": time.time() - t0, "steps": a.steps,
                       "num_rows": rows, "clipped_test_fraction": float(data["clipped_fraction"])}
                results.append(row)
                results_file.write_text(json.dumps(results, indent=1))
                print(f"{name:14s} {family:12s} k={k:3d} params={n_params:7d} test NLL "
                      f"{np.mean(nll):8.3f} ± {np.std(nll):.3f}  ({row['seconds']:.0f} s)", flush=True)
    write_table(results, out)
    plot(results, out / "nll_vs_k.png")


def write_table(results: list[dict], out: Path) -> None:
    lines = ["| dataset | family | k | parameters | test NLL IQM [95% CI] | mean ± std | seeds |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        nll = np.array(r["test_nll"])
        point, lo, hi = stats.bootstrap_ci(nll)
        k = "—" if r["family"] == "gaussian" else str(r["num_bins"])
        lines.append(f"| {r['dataset']} | {r['family']} | {k} | {r['num_params']} | {point:.3f} [{lo:.3f}, {hi:.3f}] "
                     f"| {nll.mean():.3f} ± {nll.std():.3f} | {len(nll)} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(results: list[dict], png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in results))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = [r for r in results if r["dataset"] == name]
        for family in FAMILIES:
            fr = sorted((r for r in rows if r["family"] == family), key=lambda r: r["num_bins"])
            if not fr:
                continue
            iqms = [stats.iqm(np.array(r["test_nll"])) for r in fr]
            if family == "gaussian":
                ax.axhline(iqms[0], color="gray", ls="--", label="gaussian")
                continue
            cis = np.array([stats.bootstrap_ci(np.array(r["test_nll"]))[1:] for r in fr])
            ks = [r["num_bins"] for r in fr]
            ax.plot(ks, iqms, marker="o", label=family)
            ax.fill_between(ks, cis[:, 0], cis[:, 1], alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (bins / components)")
        ax.set_ylabel("test NLL, nats/dim (IQM)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
