"""Run files and loggers: `RunFiles` (metrics.jsonl, eval.jsonl, TensorBoard) and `WandbLogger` (one wandb run
per member and phase)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import numpy as np

from .config import UserError
from .health import Health
from .sweeps import Population


class RunFiles:
    """The run directory: config.json, metrics.jsonl, eval.jsonl, tb/, checkpoints/, curves.png (and wandb runs
    when a `WandbLogger` is given)."""

    def __init__(self, root: Path, tensorboard: bool, wandb: "WandbLogger | None" = None):
        self.root = root
        self.metrics = root / "metrics.jsonl"
        self.evals = root / "eval.jsonl"
        self.ckpt_dir = root / "checkpoints"
        self.tb = None
        self.wandb = wandb
        if tensorboard:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(str(root / "tb"))

    @staticmethod
    def truncate_jsonl(path: Path, last_chunk: int) -> None:
        """Drop records written after the checkpoint we resume from (they will be written again)."""
        if not path.exists():
            return
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["chunk"] <= last_chunk]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)

    def log(self, path: Path, chunk: int, env_steps: int, members: list[dict], metrics: dict[str, np.ndarray],
            skip: np.ndarray | None = None):
        """One record per member (those with `skip[i]` left out: diverged members) to JSONL, TensorBoard, wandb."""
        todo = [i for i in range(len(members)) if skip is None or not skip[i]]
        with path.open("a") as f:
            for i in todo:
                rec = {"chunk": chunk, "env_steps": env_steps, **members[i]}
                rec.update({k: float(v[i]) for k, v in metrics.items()})
                f.write(json.dumps(rec) + "\n")
        prefix = "eval" if path == self.evals else "train"
        if self.tb is not None:
            for k, v in metrics.items():
                for i in todo:
                    self.tb.add_scalar(f"{prefix}/{k}/member{i}", float(v[i]), env_steps)
        if self.wandb is not None:
            for i in todo:
                self.wandb.log(i, {f"{prefix}/{k}": float(v[i]) for k, v in metrics.items()}, env_steps)

    def log_diverged(self, path: Path, chunk: int, env_steps: int, members: list[dict], metrics: dict[str, np.ndarray],
                     which: list[int], health: Health, phase: str | None = None):
        """The divergence marker of each member in `which`: a record with "diverged": true, when and why, and the
        metric keys: in metrics.jsonl their values where finite (for a member that diverged in this chunk of
        `phase`), else null; all null in eval.jsonl, as a frozen member is not evaluated."""
        evals = path == self.evals
        with path.open("a") as f:
            for i in which:
                now = health.chunk[i] == chunk and phase in (None, health.phase[i])
                values = {k: float(v[i]) if now and not evals and np.isfinite(v[i]) else None
                          for k, v in metrics.items()}
                rec = {"chunk": chunk, "env_steps": env_steps, **members[i], **values, "diverged": True,
                       "diverged_chunk": int(health.chunk[i]), "diverged_phase": health.phase[i],
                       "not_finite": health.reason[i]}
                f.write(json.dumps(rec) + "\n")
        if not evals:
            for i in which:
                text = health.describe(i, members)
                if self.tb is not None:
                    self.tb.add_scalar(f"diverged/member{i}", 1.0, env_steps)
                    self.tb.add_text(f"diverged/member{i}", text, env_steps)
                if self.wandb is not None:
                    self.wandb.diverged(i, text, int(health.chunk[i]), env_steps)

    def close(self):
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.close()


class QuietFiles(RunFiles):
    """The run files of a multi-process run's processes other than 0: the same paths, nothing written (process 0
    writes every member's records, gathered from all processes)."""

    def __init__(self, root: Path):
        super().__init__(root, tensorboard=False)

    def log(self, *args, **kwargs):
        pass

    def log_diverged(self, *args, **kwargs):
        pass


class WandbLogger:
    """One Weights & Biases run per member of one phase: group = the run directory's name (the whole sweep),
    job_type = the phase, config = the run's config.json plus the member's own hyperparameters and seed. Run ids
    are derived from the run directory, phase and member, so `--resume` continues the same wandb runs."""

    def __init__(self, project: str, root: Path, phase: str, population: Population, config: dict):
        import hashlib
        try:
            import wandb
        except ImportError:
            raise UserError("--wandb-project needs the wandb package, which is not installed: pip install "
                            "'headstart[wandb]' (or pip install wandb), or leave --wandb-project out.") from None
        run_root = root if (root / "config.json").exists() else root.parent
        group = run_root.name
        self.runs = []
        for m in population.members:
            i = m["member"]
            hp = jax.tree.map(lambda x: np.asarray(x)[i].tolist(), population.hparams)
            hp = {f.name: getattr(hp, f.name) for f in dataclasses.fields(hp)}
            digest = hashlib.sha1(f"{run_root.absolute()}|{phase}|{i}".encode()).hexdigest()[:16]
            run = wandb.init(project=project, group=group, job_type=phase, name=f"{group}/{phase}/member{i}",
                             id=digest, resume="allow", dir=str(root), reinit="create_new",
                             config={**config, "phase": phase, "member": m, "hparams": hp})
            self.runs.append(run)

    def log(self, i: int, values: dict, step: int):
        self.runs[i].log(values, step=step)

    def diverged(self, i: int, text: str, chunk: int, step: int):
        self.runs[i].log({"diverged": 1.0}, step=step)
        self.runs[i].summary.update({"diverged": True, "diverged_chunk": chunk, "diverged_detail": text})

    def close(self):
        for run in self.runs:
            run.finish()
