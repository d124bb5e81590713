"""Reading logs back and drawing learning curves (curves.png), diverged members drawn apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_metric(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(env_steps, table) from a metrics.jsonl / eval.jsonl: table[member, i] is `key` at env_steps[i] (NaN where a
    member has no record, e.g. after it diverged, or its divergence marker holds null)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    steps = sorted({r["env_steps"] for r in rows})
    members = sorted({r["member"] for r in rows})
    table = np.full((len(members), len(steps)), np.nan)
    for r in rows:
        table[members.index(r["member"]), steps.index(r["env_steps"])] = r.get(key)
    return np.array(steps), table


def diverged_members(path: Path) -> dict[int, dict]:
    """member -> its divergence marker record, from a metrics.jsonl or eval.jsonl."""
    if not Path(path).exists():
        return {}
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    return {r["member"]: r for r in rows if r.get("diverged")}


def plot_curves(eval_path: Path, out_png: Path, members: list[dict],
                metric_names=("eval_return", "eval_success", "test_nll")):
    """Learning curves: per sweep setting, the mean over the seeds that did not diverge and their min-max band;
    a diverged member is drawn alone, dotted, up to its last evaluation, ending in an x (not in the mean)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in eval_path.read_text().splitlines() if line] if eval_path.exists() else []
    dead = {r["member"]: r for r in rows if r.get("diverged")}
    records = [r for r in rows if not r.get("diverged")]
    names = [n for n in metric_names if records and n in records[0]]
    if not names:  # nothing to plot (e.g. a phase whose evaluation reports no return)
        return
    setting_keys = sorted({k for m in members for k in m if k not in ("member", "seed")})
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    groups: dict[tuple, list[int]] = {}
    for m in members:
        groups.setdefault(tuple((k, m.get(k)) for k in setting_keys), []).append(m["member"])
    steps = sorted({r["env_steps"] for r in records})
    for ax, name in zip(axes[0], names):
        for g, (label, ids) in enumerate(groups.items()):
            table = np.full((len(ids), len(steps)), np.nan)
            for r in records:
                if r["member"] in ids:
                    table[ids.index(r["member"]), steps.index(r["env_steps"])] = r[name]
            text = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in label) or "default"
            color = f"C{g % 10}"
            alive = [j for j, i in enumerate(ids) if i not in dead]
            if alive:
                with np.errstate(all="ignore"):
                    mean = np.nanmean(table[alive], 0)
                died = len(ids) - len(alive)
                ax.plot(steps, mean, color=color,
                        label=f"{text} (n={len(alive)}" + (f"; {died} diverged, not in the mean)" if died else ")"))
                ax.fill_between(steps, np.nanmin(table[alive], 0), np.nanmax(table[alive], 0), alpha=0.2,
                                color=color)
            for j, i in enumerate(ids):
                if i in dead:
                    seen = np.isfinite(table[j])
                    x, y = np.array(steps)[seen], table[j][seen]
                    ax.plot(x, y, ":", color=color, lw=1,
                            label=f"{text}: member {i} diverged (chunk {dead[i]['diverged_chunk']})")
                    if len(x):
                        ax.plot(x[-1:], y[-1:], "x", color=color, ms=8)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
