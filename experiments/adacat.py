"""Autoregressive density estimation with AdaCat (or a baseline head) on data this repo makes, as one file.

    python experiments/adacat.py --dataset mixture-1d                         # AdaCat, 32 bins
    python experiments/adacat.py --dataset mixture-2d --model.family categorical --model.num-bins 64
    python experiments/adacat.py --dataset maze-action --sweep.smoothing 1e-4,1e-3,1e-2 --num-seeds 4
    python experiments/adacat.py --dataset maze-dynamics --model.family mog --model.num-bins 8

Datasets (the rows x are modelled given the context c; 90% of the rows train, the LAST 10% test):
  mixture-1d     x on [0, 1]: two sharp Gaussians (std 0.004, 0.01) and a uniform slab on [0.6, 0.9]
  mixture-2d     x on [0, 1]^2: eight sharp Gaussians (std 0.01) on a circle and a uniform square slab
  maze-action    the maze controller's action (2) given position and velocity (4): several routes per state
                 and ~30% of the actions clipped onto ±1 (point masses a continuous density cannot hold)
  maze-dynamics  the state change next - current (4) given position, velocity and action (6): nearly
                 deterministic, with wall contacts; the paper's "trajectories" case
The maze rows come from `data/pointmaze-medium-jax-diverse-<N>.hdf5`, generated on first use (envs/maze_data.py).

`--total-steps` counts gradient steps. Evaluation reports the hard test NLL in nats per dimension (`test_nll`);
the closing lines give it per member, with the model's parameter count. Outputs as for every experiment:
config.json, metrics.jsonl, eval.jsonl, tb/, checkpoints/, curves.png (`--resume` continues a killed run).
`--preset paper` uses the reference's optimiser and smoothing (algos/density.py); its flags end --help.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

from algos import density  # noqa: E402
from experiments import runner  # noqa: E402

# dataset -> (modelled dimensions, context dimensions), as `make_data` builds them
SHAPES = {"mixture-1d": (1, 0), "mixture-2d": (2, 0), "maze-action": (2, 4), "maze-dynamics": (4, 6)}
# --preset NAME puts these flags before the user's own (flags given on the command line win); --help lists them.
PRESETS = {
    "cpu": runner.Preset((), "the defaults."),
    "paper": runner.Preset(("--hp.lr", "3e-4", "--hp.weight-decay", "1e-4", "--hp.smoothing", "1e-4"),
                           "the reference's Adam step 3e-4, weight decay 1e-4 and smoothing 1e-4 (constant step size: "
                           "its schedule is not reproduced)."),
}


@dataclasses.dataclass(frozen=True)
class Args:
    """Autoregressive density estimation. Every flag below is documented; --sweep.<hparam> takes comma lists."""

    preset: Literal["cpu", "paper"] = "cpu"
    """Named set of flags (listed at the end of --help) placed before yours: cpu (the defaults), paper."""
    dataset: Literal["mixture-1d", "mixture-2d", "maze-action", "maze-dynamics"] = "mixture-1d"
    """Which rows to model (see the module docstring)."""
    num_rows: int = 20_000
    """Rows of the synthetic datasets, or maze transitions to generate/load."""
    data_seed: int = 0
    """Seed of the synthetic data (the population's seeds vary the model only)."""
    data_path: str = ""
    """A maze dataset file to use instead of the generated one (D4RL keys, .hdf5 or .npz)."""
    model: density.Config = density.Config()
    """Static model settings: changing any of them recompiles."""
    hp: density.HParams = density.HParams()
    """Sweepable hyperparameters (vmapped over the population)."""
    run: Annotated[runner.RunConfig, tyro.conf.OmitArgPrefixes] = runner.RunConfig(total_steps=5000, eval_every=4)
    """Budgets (gradient steps), seeds, logging and checkpointing."""


def mixture_1d(n: int, rng: np.random.Generator) -> np.ndarray:
    which = rng.choice(3, size=n, p=[0.35, 0.35, 0.3])
    x = np.where(which == 0, rng.normal(0.2, 0.004, n),
                 np.where(which == 1, rng.normal(0.4, 0.01, n), rng.uniform(0.6, 0.9, n)))
    return np.clip(x, 0.0, 1.0)[:, None]


def mixture_2d(n: int, rng: np.random.Generator) -> np.ndarray:
    angle = 2 * np.pi * rng.integers(0, 8, n) / 8
    ring = 0.5 + 0.3 * np.stack([np.cos(angle), np.sin(angle)], -1) + rng.normal(0, 0.01, (n, 2))
    slab = rng.uniform([0.05, 0.05], [0.35, 0.35], (n, 2))
    x = np.where((rng.uniform(size=n) < 0.25)[:, None], slab, ring)
    return np.clip(x, 0.0, 1.0)


def maze_rows(kind: str, num_rows: int, path: str) -> tuple[np.ndarray, np.ndarray]:
    from envs import datasets, maze_data
    path = maze_data.cached_dataset_path("pointmaze-medium-jax", num_rows, path, log=lambda m: print(m, file=sys.stderr))
    try:
        data = datasets.load_dataset(path)
    except datasets.DatasetError as e:
        raise runner.UserError(str(e)) from None
    state = data["observations"][:, :4]
    if kind == "maze-action":
        return data["actions"], state
    return data["next_observations"][:, :4] - state, np.concatenate([state, data["actions"]], -1)


def make_data(args: Args) -> dict:
    """`density.prepare`'s dict for `args.dataset`: the first 90% of rows train, the last 10% test."""
    if args.num_rows < 10:
        raise runner.UserError(f"--num-rows {args.num_rows}: need at least 10 rows (90% train, 10% test).")
    if args.dataset in ("mixture-1d", "mixture-2d"):
        rng = np.random.default_rng(args.data_seed)
        x = (mixture_1d if args.dataset == "mixture-1d" else mixture_2d)(args.num_rows, rng)
        c = None
    else:
        x, c = maze_rows(args.dataset, args.num_rows, args.data_path)
    split = int(0.9 * len(x))
    return density.prepare(x[:split], x[split:], None if c is None else c[:split], None if c is None else c[split:])


def build(args: Args) -> runner.Trainer:
    data = make_data(args)
    init_carry, train_chunk, evaluate = density.make_train(args.model, data)
    return runner.Trainer(init_carry, train_chunk, evaluate, args.model.updates_per_chunk,
                          shared=density.shared_arrays(data))


def summary(root: Path, args: Args) -> str:
    """The closing lines: final test NLL per member, in words."""
    rows = [r for r in map(json.loads, (root / "eval.jsonl").read_text().splitlines()) if not r.get("diverged")]
    last_chunk = max(r["chunk"] for r in rows)
    final = sorted((r for r in rows if r["chunk"] == last_chunk), key=lambda r: r["member"])
    data_dims, context = SHAPES[args.dataset]
    model = density.make_model(args.model, data_dims)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, data_dims)),
                            jnp.zeros((1, context)) if context else None)
    nll = np.array([r["test_nll"] for r in final])
    lines = [f"{args.model.family} ({args.model.num_bins} bins/components, {density.num_parameters(shapes)} "
             f"parameters) on {args.dataset} after {final[0]['env_steps']} gradient steps:"]
    for r in final:
        setting = "".join(f", {k}={v:g}" for k, v in r.items() if k in {f.name for f in dataclasses.fields(args.hp)})
        lines.append(f"  member {r['member']} (seed {r['seed']}{setting}): test NLL {r['test_nll']:.3f} nats/dim")
    lines.append(f"mean test NLL {nll.mean():.3f} nats/dim over {len(nll)} member(s); lower is better.")
    return "\n".join(lines)


@runner.exits_on_user_error
def main(argv: list[str] | None = None) -> Path:
    root = runner.main("adacat", Args, build, argv=argv, description=__doc__, presets=PRESETS)
    args, _, _ = runner.load_run_args(root, Args)
    print(summary(root, args))
    return root


if __name__ == "__main__":
    main()
