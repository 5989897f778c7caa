"""The report's pictures: group means with intervals, the per-task win/loss strip against the
baseline, and adapter usage per task. Horizontal layouts, one row per group or task, so they stay
readable with 20 groups or 27 tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .model import CORRECTION_NAMES, Comparison

MAX_ADAPTERS = 30  # columns of a usage heatmap; the rest is summed into "other"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _metric_name(c: Comparison) -> str:
    metrics = {ch.metric for ch in c.choices}
    return metrics.pop() if len(metrics) == 1 else "score"


def intervals_png(c: Comparison, path: Path) -> None:
    """Left: each group's mean over tasks (dot), its bootstrap interval (bar) and its seeds' means (x).
    Right, with a baseline: each group's difference from the baseline with its interval."""
    s = c.settings
    rows = c.intervals
    n = len(rows)
    diffs = {p.a: p for p in c.pairs if p.b == c.baseline} if c.baseline else {}
    fig = _figure(12 if diffs else 8, 1.4 + 0.38 * n)
    axes = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1, 1]}) if diffs else [fig.subplots(1, 1)]
    ys = np.arange(n)[::-1]
    ax = axes[0]
    for y, gi in zip(ys, rows):
        if gi.interval is not None:
            ax.plot([gi.interval.low, gi.interval.high], [y, y], color="tab:blue", lw=2.5, solid_capstyle="butt")
        if len(gi.seed_means) > 1:
            ax.plot(gi.seed_means, [y] * len(gi.seed_means), "x", color="0.35", ms=5)
        if gi.mean is not None:
            ax.plot([gi.mean], [y], "o", color="black" if gi.group == c.baseline else "tab:blue", ms=6)
    ax.set_yticks(ys)
    ax.set_yticklabels([gi.group + ("  (baseline)" if gi.group == c.baseline else "") for gi in rows], fontsize=8)
    overall = c.overall
    n_tasks = len(overall.tasks) if overall else 0
    ax.set_xlabel(f"mean {_metric_name(c)} over {n_tasks} tasks")
    ax.set_title(f"group mean, {s.confidence:.0%} bootstrap interval, x = one seed", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, n - 0.3)
    if diffs:
        ax2 = axes[1]
        ax2.axvline(0, color="0.4", lw=1)
        for y, gi in zip(ys, rows):
            p = diffs.get(gi.group)
            if p is None or p.interval is None:
                continue
            iv = p.interval
            # a one-seed learned group is never shown as a clear difference: its seed variance is unknown
            color = "0.3" if not p.interval_significant else "tab:green" if iv.low > 0 else "tab:red"
            ax2.plot([iv.low, iv.high], [y, y], color=color, lw=2.5, solid_capstyle="butt")
            ax2.plot([iv.estimate], [y], "o", color=color, ms=6)
        ax2.set_xlabel(f"difference from {c.baseline}")
        ax2.set_title(f"difference from the baseline, {s.confidence:.0%} interval", fontsize=9)
        ax2.grid(axis="x", alpha=0.3)
        ax2.tick_params(axis="y", left=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def winloss_png(c: Comparison, path: Path) -> None:
    """Groups x tasks against the baseline: colour = advantage (difference, sign flipped for metrics
    where lower is better), W / L / = in each cell, * when significant after correction."""
    pairs = [p for p in c.pairs if p.b == c.baseline]
    tasks = [ch.task for ch in c.choices]
    adv = np.full((len(pairs), len(tasks)), np.nan)
    marks = [[""] * len(tasks) for _ in pairs]
    for i, p in enumerate(pairs):
        for r in p.rows:
            j = tasks.index(r.task)
            if r.diff is None:
                marks[i][j] = "n/a"
                continue
            sign = -1.0 if (r.result == "win") != (r.diff > 0) and r.result != "tie" else 1.0
            adv[i, j] = sign * r.diff
            marks[i][j] = {"win": "W", "loss": "L", "tie": "="}[r.result] + ("*" if r.significant else "")
    fig = _figure(max(6.0, 2.5 + 0.42 * len(tasks)), 1.6 + 0.42 * len(pairs))
    ax = fig.subplots(1, 1)
    lim = float(np.nanmax(np.abs(adv))) if np.isfinite(adv).any() and np.nanmax(np.abs(adv)) > 0 else 1.0
    im = ax.imshow(np.ma.masked_invalid(adv), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(pairs)):
        for j in range(len(tasks)):
            if marks[i][j]:
                ax.text(j, i, marks[i][j], ha="center", va="center", fontsize=7,
                        color="white" if abs(adv[i, j]) > 0.6 * lim else "black")
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(pairs)))
    ax.set_yticklabels([f"{p.a}  ({p.wins}/{p.ties}/{p.losses})" for p in pairs], fontsize=8)
    ax.set_title(f"per task against {c.baseline} (seed means)\nW win, L loss, = tie, "
                 f"* significant ({CORRECTION_NAMES[c.settings.correction]}, p < {c.settings.alpha:g})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01).set_label("advantage over the baseline", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def usage_png(c: Comparison, group: str, path: Path) -> None:
    """Tasks x adapters for one group: each task's row as shares of its routed documents."""
    rows = [u for u in c.usage if u["group"] == group]
    tasks = sorted({u["task"] for u in rows})
    totals: dict[str, float] = {}
    for u in rows:
        totals[u["adapter"]] = totals.get(u["adapter"], 0.0) + u["usage"]
    adapters = sorted(totals, key=lambda a: (-totals[a], a))
    shown = adapters[:MAX_ADAPTERS]
    other = len(adapters) > MAX_ADAPTERS
    columns = shown + (["other"] if other else [])
    mat = np.zeros((len(tasks), len(columns)))
    docs = {}
    for u in rows:
        i = tasks.index(u["task"])
        j = columns.index(u["adapter"]) if u["adapter"] in shown else len(columns) - 1
        mat[i, j] += u["usage"]
        docs[(u["run"], u["task"])] = u["docs"]
    per_task = np.array([sum(n for (_, t), n in docs.items() if t == task) for task in tasks], dtype=float)
    shares = mat / np.maximum(per_task, 1.0)[:, None]
    fig = _figure(max(6.0, 3.0 + 0.32 * len(columns)), 1.8 + 0.32 * len(tasks))
    ax = fig.subplots(1, 1)
    im = ax.imshow(shares, cmap="viridis", vmin=0, vmax=max(1e-9, float(shares.max())), aspect="auto")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([a.rsplit("/", 1)[-1] for a in columns], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(tasks)))
    ax.set_yticklabels([f"{t} ({int(n)})" for t, n in zip(tasks, per_task)], fontsize=7)
    ax.set_title(f"adapter usage of {group}: share of each task's documents, weighted by |w| / Σ|w|", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01).set_label("share of the task's documents", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
