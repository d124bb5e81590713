"""Generate offline datasets (D4RL-style HDF5 or .npz) for headstart's tasks. Two subcommands:

  maze        the point-maze prior dataset (D4RL antmaze-"diverse"-like) of a noisy waypoint controller
  locomotion  brax locomotion data (D4RL-"random"/"medium"/"expert"-like): rollouts of uniform random actions
              or of the SAC checkpoints of a run of experiments/sac.py, and their mixture

    python experiments/make_dataset.py maze                              # large maze, 1M transitions
    python experiments/make_dataset.py maze --layout medium --num-transitions 200000 --out data/medium.npz
    python experiments/make_dataset.py maze --layout giant                 # OGBench's giant maze
    python experiments/make_dataset.py maze --layout-file my_maze.txt      # a layout of your own (one line per row)
    python experiments/make_dataset.py maze --layout '#######\n#S...G#\n#######'
    python experiments/make_dataset.py maze --overwrite                  # replace an existing file

    # one SAC run gives both policies: its final checkpoint ("expert") and its halfway one ("medium")
    python experiments/sac.py --env hopper --total-steps 320000 --checkpoint-every 200 --run-dir runs/sac-hopper
    python experiments/make_dataset.py locomotion --sac-run runs/sac-hopper --kind expert    # data/hopper-expert.hdf5
    python experiments/make_dataset.py locomotion --sac-run runs/sac-hopper --kind medium
    python experiments/make_dataset.py locomotion --sac-run runs/sac-hopper --kind random
    python experiments/make_dataset.py locomotion --sac-run runs/sac-hopper --kind mixture   # 1/3 of each

maze: a noisy waypoint controller drives to random goal cells from random starts in the pure-JAX simulator; the
data is that of the EVALUATION task (goal = the maze's G cell; reward 1 and a terminal when the point reaches it,
after which the data episode ends). See `envs/maze_data.py` for what exactly is generated and why.

locomotion: `random` = uniform actions in [-1, 1]; `expert` = the run's final checkpoint; `medium` = an earlier
checkpoint of the SAME run, by default the kept one closest to halfway (or `--medium-step`). The runner keeps only
the 2 newest checkpoints (`max_to_keep=2`), so train the run with `--checkpoint-every` = half its number of
chunks, which is total_steps / (agent.num_envs * agent.chunk_steps), 800 env steps per chunk by default (320k
steps = 400 chunks: --checkpoint-every 200); it then keeps exactly the halfway and the final checkpoints.
`mixture` = equal parts of random, medium and expert (collected with different seeds), concatenated
episode-intact. SAC actions are samples of the stochastic policy, as in D4RL (`--deterministic` for the mean
action). See `envs/policy_data.py` (the collector) and `experiments/sac_checkpoints.py` (the SAC policies).

Both write the file atomically (temporary file, then rename) and never replace an existing file unless given the
flag --overwrite (exit status 2 and a one-line message otherwise, checked before any work is done); errors in the
input (a missing run, a missing checkpoint) also exit with status 2. See `envs/datasets.py` for the format and the
loader (`load_dataset`) that training scripts use.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Literal, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tyro  # noqa: E402
from tqdm import tqdm  # noqa: E402

import envs  # noqa: E402
from envs import datasets, maze_data, policy_data  # noqa: E402
from envs.pointmaze import MazeSpec, canonical_layout  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    """Point-maze "diverse" data: a noisy waypoint controller driving to random goals (D4RL antmaze-diverse-like).
    Every flag is documented below."""

    layout: str = ""
    """Maze layout (default: large): umaze, medium, large, giant, or a layout string (rows separated by newlines
    or the two characters \\n; # wall, O or . free, S start, G goal). The data's evaluation task is that maze
    with task=fixed (goal = the G cell, which every free cell must reach)."""
    layout_file: str = ""
    """Read the layout from this text file (one line per maze row) instead of --layout."""
    num_transitions: int = 1_000_000
    """Number of transitions in the dataset."""
    action_noise: float = 0.2
    """Standard deviation of the Gaussian noise added to the controller's actions (before clipping to [-1, 1])."""
    seed: int = 0
    """Random seed (starts, controller goals, noise). Same seed and num-envs give the same data."""
    out: str = ""
    """Output file (.hdf5, .h5 or .npz). Default: data/pointmaze-<layout>-diverse.hdf5 (a layout string or file:
    data/pointmaze-custom-<digest>-diverse.hdf5, the digest naming its rows)."""
    overwrite: bool = False
    """Replace the output file if it already exists (otherwise the script refuses and exits with status 2)."""
    episode_length: int = 1000
    """Steps per data-collection episode; an episode ends earlier only when it reaches the evaluation goal."""
    num_envs: int = 100
    """Independent collection streams simulated in parallel (vmap); part of what determines the data."""
    chunk_steps: int = 1000
    """Steps per stream per jitted chunk (one progress-bar update each); does not change the data."""
    kp: float = 10.0
    """Controller gain on the distance to the next waypoint (the next cell centre on the shortest path)."""
    kd: float = 1.0
    """Controller damping gain on the velocity."""
    goal_tolerance: float = 0.25
    """The controller picks a new random goal cell when within this distance (in maze units) of its centre."""
    compress: bool = False
    """Compress the file (gzip for HDF5, deflate for .npz): smaller, slower to write and read."""
    progress: bool = True
    """Show a progress bar."""


def maze_layout(cfg: Config) -> str:
    """The canonical layout of --layout / --layout-file (exits with status 2 naming what is wrong)."""
    if cfg.layout_file and cfg.layout:
        fail(f"--layout {cfg.layout!r} and --layout-file {cfg.layout_file!r}: give one of them.")
    layout = cfg.layout or "large"
    if cfg.layout_file:
        try:
            layout = Path(cfg.layout_file).read_text()
        except (OSError, UnicodeDecodeError) as e:
            fail(f"--layout-file {cfg.layout_file}: cannot read it ({type(e).__name__}: "
                 f"{getattr(e, 'strerror', None) or e}); expected a text file with one line per maze row.")
    try:
        maze_data.make_env(layout)  # the layout and the data's task (G reachable from every free cell)
    except ValueError as e:
        fail(f"{'--layout-file ' + cfg.layout_file if cfg.layout_file else '--layout'}: {e}")
    return canonical_layout(layout)


def output_path(cfg: Config, layout: str | None = None) -> Path:
    spec = MazeSpec(layout or cfg.layout or "large")
    name = spec.name if spec.name != "custom" else f"custom-{spec.digest}"
    return Path(cfg.out or f"data/pointmaze-{name}-diverse.hdf5")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main_maze(cfg: Config) -> Path:
    layout = maze_layout(cfg)
    spec = MazeSpec(layout)
    out = output_path(cfg, layout)
    if out.suffix.lower() not in (".hdf5", ".h5", ".npz"):
        fail(f"--out {out} has suffix {out.suffix!r}; expected .hdf5, .h5 or .npz.")
    if out.exists() and not cfg.overwrite:
        fail(f"{out} already exists; refusing to overwrite it. Pass --overwrite to replace it, or --out to write "
             "somewhere else. Nothing was generated or changed.")
    for name in ("num_transitions", "num_envs", "chunk_steps", "episode_length"):
        if getattr(cfg, name) < 1:
            fail(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(cfg, name)}.")
    if cfg.action_noise < 0:
        fail(f"--action-noise must be non-negative, got {cfg.action_noise}.")

    generator = dict(num_transitions=cfg.num_transitions, seed=cfg.seed, action_noise=cfg.action_noise,
                     episode_length=cfg.episode_length, num_envs=cfg.num_envs, kp=cfg.kp, kd=cfg.kd,
                     goal_tolerance=cfg.goal_tolerance)
    start = time.time()
    with tqdm(total=cfg.num_transitions, unit="tr", unit_scale=True, disable=not cfg.progress,
              desc=f"pointmaze-{spec.name}") as bar:
        data = maze_data.diverse_dataset(layout, chunk_steps=cfg.chunk_steps, progress=bar.update, **generator)
    seconds = time.time() - start

    starts, ends = datasets.episode_bounds(data["terminals"], data["timeouts"])
    n = len(data["rewards"])
    summary = {
        "transitions": n,
        "episodes": len(starts),
        "episodes_reaching_goal": int(data["terminals"].sum()),
        "mean_episode_length": float((ends - starts).mean()),
        "reward_fraction": float(data["rewards"].mean()),
        "free_cells_visited": maze_data.visited_cell_fraction(spec, data["observations"]),
        "seconds": round(seconds, 2),
    }
    try:
        datasets.save_dataset(out, data, maze_data.dataset_metadata(layout, **generator, summary=summary),
                              overwrite=cfg.overwrite, compress=cfg.compress)
    except FileExistsError as e:
        fail(str(e))
    print(f"{n} transitions in {summary['episodes']} episodes ({summary['episodes_reaching_goal']} reach the goal, "
          f"mean length {summary['mean_episode_length']:.1f}); reward 1 on {100 * summary['reward_fraction']:.3f}% "
          f"of transitions; {100 * summary['free_cells_visited']:.1f}% of free cells visited; generated in "
          f"{seconds:.1f}s; saved to {out}")
    return out




# ---- locomotion ---------------------------------------------------------------------------------------------------
KINDS = ("random", "medium", "expert")


@dataclasses.dataclass(frozen=True)
class LocomotionConfig:
    """Locomotion data (D4RL-like) from a run of experiments/sac.py: random = uniform actions, expert = the run's
    final checkpoint, medium = its kept checkpoint closest to halfway (or --medium-step), mixture = equal parts of
    the three. The runner keeps only the 2 newest checkpoints, so train the run with --checkpoint-every = half its
    chunks (e.g. sac.py --env hopper --total-steps 320000 --checkpoint-every 200: 400 chunks of 800 steps) so that
    the halfway checkpoint survives next to the final one. Every flag is documented below."""

    sac_run: str = ""
    """Run directory of experiments/sac.py (holds config.json and checkpoints/). The env (and its options) is the
    run's. Required, except for --kind random with --env."""
    kind: Literal["random", "medium", "expert", "mixture"] = "expert"
    """random: uniform actions in [-1, 1]; expert: the final checkpoint; medium: an earlier one (see
    --medium-step); mixture: equal thirds of random, medium and expert, concatenated."""
    num_transitions: int = 100_000
    """Number of transitions in the dataset (for a mixture: in all, split in three equal parts)."""
    medium_step: int = 0
    """Checkpoint step of the medium policy: a chunk number, as the run's checkpoints/ directory names them. 0 = the
    kept checkpoint before the final one that is closest to half of the final step."""
    member: int = 0
    """Population member of the run whose policy acts (runs with sweeps or several seeds hold several)."""
    deterministic: bool = False
    """Act with the policy's mode tanh(mean) instead of sampling it (D4RL samples: keep False for D4RL-like data)."""
    env: str = ""
    """Environment for --kind random without --sac-run (one of envs.registered()); ignored with --sac-run."""
    env_options: tuple[str, ...] = ()
    """Options of --env as key=value (e.g. max_steps=500); ignored with --sac-run (the run's options are used)."""
    seed: int = 0
    """Random seed (resets, action noise); a mixture's parts use seed, seed+1, seed+2."""
    num_envs: int = 32
    """Independent collection streams simulated in parallel; part of what determines the data. Each stream runs
    num_transitions / num_envs steps: keep that well above the episode length (1000), or most episodes are cut."""
    chunk_steps: int = 250
    """Steps per stream per jitted chunk (one progress-bar update each); does not change the data."""
    out: str = ""
    """Output file (.hdf5, .h5 or .npz). Default: data/<env>-<kind>.hdf5."""
    overwrite: bool = False
    """Replace the output file if it already exists (otherwise the script refuses and exits with status 2)."""
    compress: bool = False
    """Compress the file (gzip for HDF5, deflate for .npz): smaller, slower to write and read."""
    progress: bool = True
    """Show a progress bar."""


def _check_output(out: Path, overwrite: bool) -> None:
    if out.suffix.lower() not in (".hdf5", ".h5", ".npz"):
        fail(f"--out {out} has suffix {out.suffix!r}; expected .hdf5, .h5 or .npz.")
    if out.exists() and not overwrite:
        fail(f"{out} already exists; refusing to overwrite it. Pass --overwrite to replace it, or --out to write "
             "somewhere else. Nothing was generated or changed.")


def _medium_step(cfg: LocomotionConfig, steps: list[int]) -> int:
    """The checkpoint step of the medium policy among the run's kept `steps` (the last one is the expert)."""
    earlier = steps[:-1]
    if cfg.medium_step:
        if cfg.medium_step not in earlier:
            fail(f"--medium-step {cfg.medium_step}: the run {cfg.sac_run} kept the checkpoints {steps} (chunk "
                 f"numbers; the last, {steps[-1]}, is the expert); expected one of {earlier or 'the earlier ones'}.")
        return cfg.medium_step
    if not earlier:
        fail(f"The run {cfg.sac_run} kept only its final checkpoint {steps}, so there is no earlier (medium) policy. "
             f"The runner keeps the 2 newest checkpoints: train the run with --checkpoint-every set to half its "
             f"number of chunks (e.g. --total-steps 320000 --checkpoint-every 200 at 800 steps per chunk) so that the "
             f"halfway checkpoint survives.")
    return min(earlier, key=lambda s: (abs(s - steps[-1] / 2), s))


def _part_sizes(cfg: LocomotionConfig) -> dict[str, int]:
    if cfg.kind != "mixture":
        return {cfg.kind: cfg.num_transitions}
    n = cfg.num_transitions
    return {k: n // 3 + (i < n % 3) for i, k in enumerate(KINDS)}


def _print_summary(name: str, s: dict) -> None:
    print(f"{name}: {s['transitions']} transitions in {s['episodes']} episodes ({s['complete_episodes']} complete, "
          f"{s['terminals']} terminal); mean episode return {s['mean_episode_return']:.2f} "
          f"(std {s['std_episode_return']:.2f}, mean length {s['mean_episode_length']:.1f}, complete episodes)")


def main_locomotion(cfg: LocomotionConfig) -> Path:
    from experiments import runner, sac_checkpoints

    for name in ("num_transitions", "num_envs", "chunk_steps"):
        if getattr(cfg, name) < 1:
            fail(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(cfg, name)}.")
    if cfg.kind == "mixture" and cfg.num_transitions < 3:
        fail(f"--num-transitions must be at least 3 for a mixture (one per part), got {cfg.num_transitions}.")
    if cfg.medium_step < 0:
        fail(f"--medium-step must be a checkpoint step (> 0) or 0 for the default, got {cfg.medium_step}.")
    if not cfg.sac_run and not (cfg.kind == "random" and cfg.env):
        fail(f"--kind {cfg.kind} needs --sac-run: the directory of a run of experiments/sac.py (config.json and "
             f"checkpoints/). Only --kind random can do without it, given --env.")
    try:
        if cfg.sac_run:
            args, _, _ = sac_checkpoints.sac_run_args(cfg.sac_run)
            env_name, env_options = args.env, runner.parse_env_options(args.env_options)
            steps_per_chunk = args.agent.num_envs * args.agent.chunk_steps
        else:
            env_name, env_options = cfg.env, runner.parse_env_options(cfg.env_options)
        out = Path(cfg.out or f"data/{env_name}-{cfg.kind}.hdf5")
        _check_output(out, cfg.overwrite)
        try:
            env = envs.make(env_name, **env_options)
        except ValueError as e:
            fail(str(e))
        sizes = _part_sizes(cfg)
        checkpoints: dict[str, int] = {}
        if cfg.sac_run and set(sizes) & {"medium", "expert"}:
            steps = sac_checkpoints.checkpoint_steps(cfg.sac_run)
            if not steps:
                fail(f"The run {cfg.sac_run} holds no complete checkpoint under {Path(cfg.sac_run) / 'checkpoints'}; "
                     f"train it to the end (or --resume it) first.")
            if "expert" in sizes:
                checkpoints["expert"] = steps[-1]
            if "medium" in sizes:
                checkpoints["medium"] = _medium_step(cfg, steps)
        policies = {}
        for kind in sizes:
            if kind == "random":
                policies[kind] = policy_data.uniform_random_policy(env.action_size)
            else:
                agent, sac_cfg, _, _ = sac_checkpoints.load_sac_agent(cfg.sac_run, cfg.member, checkpoints[kind])
                policies[kind] = sac_checkpoints.sac_policy(agent, sac_cfg, cfg.deterministic)
    except runner.UserError as e:
        fail(str(e))

    start = time.time()
    parts, summaries = {}, {}
    with tqdm(total=cfg.num_transitions, unit="tr", unit_scale=True, disable=not cfg.progress,
              desc=f"{env_name}-{cfg.kind}", dynamic_ncols=True) as bar:
        for i, (kind, n) in enumerate(sizes.items()):
            bar.set_postfix_str(kind)
            parts[kind] = policy_data.collect(env, policies[kind], n, num_envs=cfg.num_envs, seed=cfg.seed + i,
                                              chunk_steps=cfg.chunk_steps, progress=bar.update)
            summaries[kind] = policy_data.summarize(parts[kind], env.max_steps)
    data = parts[cfg.kind] if cfg.kind in parts else policy_data.mixture([parts[k] for k in KINDS])
    seconds = time.time() - start
    summary = {**policy_data.summarize(data, env.max_steps), "seconds": round(seconds, 2)}
    metadata = {
        "generator": "envs.policy_data.collect", "env": env_name, "env_options": env_options, "kind": cfg.kind,
        "sac_run": str(cfg.sac_run), "member": cfg.member, "deterministic": cfg.deterministic, "seed": cfg.seed,
        "num_envs": cfg.num_envs, "max_episode_steps": env.max_steps,
        "parts": {k: {"transitions": sizes[k], "seed": cfg.seed + i,
                      **({"checkpoint_step": checkpoints[k], "env_steps": checkpoints[k] * steps_per_chunk}
                         if k in checkpoints else {}),
                      "summary": summaries[k]} for i, k in enumerate(sizes)},
        "summary": summary,
    }
    try:
        datasets.save_dataset(out, data, metadata, overwrite=cfg.overwrite, compress=cfg.compress)
    except FileExistsError as e:
        fail(str(e))
    if len(parts) > 1:
        for kind in parts:
            _print_summary(f"  {kind} (checkpoint {checkpoints[kind]})" if kind in checkpoints else f"  {kind}",
                           summaries[kind])
    where = f"; checkpoint {checkpoints[cfg.kind]}" if cfg.kind in checkpoints else ""
    _print_summary(f"{env_name}-{cfg.kind}{where}", summary)
    print(f"generated in {seconds:.1f}s; saved to {out}")
    return out


# ---- entry point --------------------------------------------------------------------------------------------------
SUBCOMMANDS = {"maze": Config, "locomotion": LocomotionConfig}


def main(cfg: Config | LocomotionConfig | Sequence[str] | None = None) -> Path:
    """Run one subcommand: `cfg` is a parsed config, or a command line (argv without the program name; None =
    sys.argv[1:]), e.g. `main(["locomotion", "--sac-run", "runs/sac-hopper", "--kind", "expert"])`."""
    if cfg is None or isinstance(cfg, (list, tuple)):
        cfg = tyro.extras.subcommand_cli_from_dict(SUBCOMMANDS, args=cfg, description=__doc__)
    if isinstance(cfg, LocomotionConfig):
        return main_locomotion(cfg)
    return main_maze(cfg)


if __name__ == "__main__":
    main()
