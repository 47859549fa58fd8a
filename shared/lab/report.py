"""Plain-text tables for the command line and for the Markdown docs (same text serves both)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

__all__ = ["change_table", "format_table", "progress_bar", "settle_table", "simulation_table"]

T = TypeVar("T")


def progress_bar(items: Iterable[T], enabled: bool, desc: str, unit: str) -> Iterable[T]:
    """A tqdm bar on stderr when asked for and tqdm is installed (the [train] extra)."""
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit=unit, leave=False)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown pipe table padded to column width: readable in a terminal and in a doc."""
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells for {len(headers)} headers: {row!r}")
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def simulation_table(result) -> str:
    """The paper-style table of a :class:`shared.lab.simulate.SimulationResult`."""
    headers = [
        "policy",
        "accuracy %",
        "cost",
        "cost reduction %",
        "edge-exit %",
        "offload %",
        "audit %",
        "mean reward",
        "gap to oracle %",
        "regret",
    ]
    rows = []
    for name, s in result.policies.items():
        acc = _pct(s.accuracy) + (f" ± {_pct(s.accuracy_std)}" if result.runs > 1 else "")
        rows.append(
            [
                name,
                acc,
                f"{s.cost:.3f}",
                _pct(s.cost_reduction),
                _pct(s.edge_exit_rate),
                _pct(s.offload_rate),
                _pct(s.audit_rate),
                f"{s.mean_reward:.4f}",
                _pct(s.reward_gap),
                f"{s.regret:.1f}",
            ]
        )
    return format_table(headers, rows)


def change_table(result) -> tuple[str, dict]:
    """Accuracy over the first ``result.window`` samples of each segment, per policy, and each
    policy's worst shortfall against the final layer's over the same samples (points)."""
    headers = ["policy", *(s.name for s in result.segments), "worst vs final (points)"]
    final = result.policies.get("final")
    rows, data = [], {"window": result.window, "segments": [s.name for s in result.segments]}
    for name, s in result.policies.items():
        acc = s.segment_accuracy
        worst = (
            max(f - a for f, a in zip(final.segment_accuracy, acc, strict=True))
            if final is not None
            else None
        )
        data[name] = {"accuracy": acc, "worst_shortfall": worst}
        rows.append([name, *(_pct(a) for a in acc), "" if worst is None else f"{100 * worst:+.1f}"])
    return format_table(headers, rows), data


def settle_table(
    result, policies: Sequence[str] = ("isplitee-paper", "isplitee-paper-nonstationary")
):
    """Samples each adaptive policy needs after each change to settle on the new best split."""
    from shared.lab.simulate import settle_times

    blocks = result.blocks
    best = [",".join(str(blocks[a]) for a in arms) for arms in result.segment_best_arms]
    headers = [
        "policy",
        *(f"{s.name} (best {b})" for s, b in zip(result.segments, best, strict=True)),
    ]
    rows, data = [], {"segments": [s.name for s in result.segments], "best_blocks": best}
    for name in policies:
        if name not in result.policies:
            continue
        times = settle_times(
            result.policies[name].arms_first_run, result.segments, result.segment_best_arms
        )
        data[name] = times
        rows.append([name, *("never" if t is None else str(t) for t in times)])
    return format_table(headers, rows), data
