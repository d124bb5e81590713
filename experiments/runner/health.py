"""Divergence bookkeeping on the host: `Health` (which members still train, when and why the others stopped) and
the messages for a diverged member, a stopped run and a population that diverged entirely."""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import UserError


@dataclasses.dataclass
class Health:
    """Which members still train, and when and why the others diverged. Saved in every checkpoint's metadata (so
    a resume is exact) and handed from one phase to the next (a member that diverged in pretraining stays frozen
    online). `logged[i]` / `eval_logged[i]`: member i's divergence is already marked in this phase's
    metrics.jsonl / eval.jsonl (True for healthy members: nothing to mark)."""

    alive: np.ndarray  # (P,) bool
    chunk: np.ndarray  # (P,) int: the chunk at which the member diverged, -1 if it did not
    phase: list  # the phase in which it diverged ("" if it did not)
    reason: list  # what was not finite: metric names and/or "parameters"
    logged: np.ndarray  # (P,) bool
    eval_logged: np.ndarray  # (P,) bool

    @staticmethod
    def healthy(size: int) -> "Health":
        return Health(np.ones(size, bool), np.full(size, -1), [""] * size, [""] * size, np.ones(size, bool),
                      np.ones(size, bool))

    def to_json(self) -> dict:
        return {"alive": self.alive.tolist(), "chunk": self.chunk.tolist(), "phase": list(self.phase),
                "reason": list(self.reason), "logged": self.logged.tolist(), "eval_logged": self.eval_logged.tolist()}

    @staticmethod
    def from_json(d: dict) -> "Health":
        return Health(np.array(d["alive"], bool), np.array(d["chunk"], int), list(d["phase"]), list(d["reason"]),
                      np.array(d["logged"], bool), np.array(d["eval_logged"], bool))

    def copy(self) -> "Health":
        return Health.from_json(self.to_json())

    def next_phase(self) -> "Health":
        """This health at the start of another phase: its diverged members are frozen there too, and marked."""
        h = self.copy()
        h.logged, h.eval_logged = h.alive.copy(), h.alive.copy()
        return h

    def mark(self, which: np.ndarray, chunk: int, phase: str, reasons: list[str]) -> None:
        for i in np.flatnonzero(which):
            self.alive[i], self.chunk[i], self.phase[i], self.reason[i] = False, chunk, phase, reasons[i]
            self.logged[i] = self.eval_logged[i] = False

    def diverged(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.alive)]

    def describe(self, i: int, members: list[dict]) -> str:
        setting = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in members[i].items()
                            if k != "member")
        return (f"member {i} ({setting}) at chunk {self.chunk[i]} of {self.phase[i]} "
                f"(not finite: {self.reason[i]})")

    def summary(self, name: str, members: list[dict]) -> str:
        bad = self.diverged()
        return (f"{name}: {len(bad)} of {len(members)} member(s) diverged and were frozen at their last finite state "
                f"(left out of the means in curves.png; marked \"diverged\" in metrics.jsonl and eval.jsonl): "
                + "; ".join(self.describe(i, members) for i in bad) + ".")


def _not_finite(metrics: dict[str, np.ndarray], finite: np.ndarray, i: int) -> str:
    """What was not finite for member i: the metric names, and/or "parameters"."""
    bad = [k for k, v in metrics.items() if not np.isfinite(v[i])]
    if not finite[i, 1]:
        bad.append("parameters")
    return ", ".join(bad) or "metrics"


def _stop_on_divergence(metrics: dict[str, np.ndarray], finite: np.ndarray, chunk: int, members: list[dict],
                        which: np.ndarray):
    bad_metric = next((k for k, v in metrics.items() if (~np.isfinite(v) & which).any()), None)
    what = f"metric {bad_metric!r} is" if bad_metric is not None else "the parameters are"
    who = [members[i] for i in np.flatnonzero(which)]
    raise UserError(f"Training diverged: {what} not finite at chunk {chunk} for population member(s) {who} "
                    f"(--stop-on-divergence). Nothing was checkpointed after the divergence; the last good "
                    f"checkpoint and logs are kept. Lower the learning rates or check reward scale; without "
                    f"--stop-on-divergence the diverged members are frozen and the others train on.")


def all_diverged_message(name: str, health: Health, members: list[dict], chunk: int) -> str:
    return (f"Training diverged: every member of the population has non-finite metrics or parameters ("
            + "; ".join(health.describe(i, members) for i in health.diverged()) + f"). Their last finite states "
            f"are in the checkpoint of chunk {chunk} ({name}), and the logs are kept. Lower the learning rates or "
            f"check reward scale.")


# --------------------------------------------------------------------------------------------------------------
