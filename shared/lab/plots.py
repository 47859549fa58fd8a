"""PNG plots of a simulation: accuracy vs cost, cumulative regret, chosen split over time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_plots"]


def write_plots(result, folder: Path) -> list[Path]:
    """Write the three plots into ``folder``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, s in result.policies.items():
        marker = "*" if name.startswith("isplitee") else ("s" if name == "oracle" else "o")
        ax.scatter(s.cost, 100 * s.accuracy, marker=marker, s=90 if marker == "*" else 40)
        ax.annotate(
            name, (s.cost, 100 * s.accuracy), fontsize=8, xytext=(4, 3), textcoords="offset points"
        )
    ax.set_xlabel(f"mean cost per sample ({result.cost_model} model)")
    ax.set_ylabel("accuracy %")
    ax.set_title("Accuracy vs cost")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, folder / "accuracy_vs_cost.png"))

    fig, ax = plt.subplots(figsize=(7, 5))
    t = np.arange(1, result.n_samples + 1)
    for name, s in result.policies.items():
        if name == "oracle" or name.startswith("fixed:"):
            continue
        ax.plot(t, s.regret_curve, label=name)
    _mark_changes(ax, result)
    ax.set_xlabel("sample")
    ax.set_ylabel("cumulative regret vs oracle fixed split")
    ax.set_title("Cumulative regret")
    ax.legend()
    ax.grid(alpha=0.3)
    paths.append(_save(fig, folder / "regret.png"))

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name in ("isplitee", "isplitee-nonstationary"):
        if name in result.policies:
            arms = result.policies[name].arms_first_run
            ax.plot(t, np.asarray(result.blocks)[arms], ".", ms=2, alpha=0.5, label=name)
    _mark_changes(ax, result)
    ax.set_yticks(result.blocks)
    ax.set_xlabel("sample")
    ax.set_ylabel("split block")
    ax.set_title("Chosen split over time")
    ax.legend(markerscale=6)
    paths.append(_save(fig, folder / "splits.png"))
    return paths


def _mark_changes(ax, result) -> None:
    for seg in result.segments[1:]:
        ax.axvline(seg.start, color="grey", linestyle="--", linewidth=1)
    if len(result.segments) > 1:
        for seg in result.segments:
            ax.annotate(
                seg.name,
                (seg.start, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=8,
                va="top",
                xytext=(3, -3),
                textcoords="offset points",
            )


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
