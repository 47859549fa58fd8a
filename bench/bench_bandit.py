"""Micro-benchmark: cost of one decide + observe per policy (target: <= 20 us for I-SplitEE).

Run: ``.venv/bin/python bench/bench_bandit.py`` (``make bench`` runs it too). Each policy is
timed on the same pre-computed stream of observations (what a device reports: the exits it
computed, C_L when it offloaded or ran the whole network), interleaved round-robin over repeats
so machine noise hits all alike; the table reports the median and each policy's ratio to the
fixed-split baseline (pure bookkeeping) measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from shared.cost import Observation, RewardModel, paper_cost
from shared.lab.report import format_table
from shared.policy import build_policy

BLOCKS = (3, 6, 9, 12, 15, 18, 19)
BUDGET_US = 20.0


def _stream(n: int, seed: int = 0) -> tuple[list[list[float]], list[list[int]]]:
    """Confidences and classes (each exit right 90 % of the time, else a random class)."""
    rng = np.random.default_rng(seed)
    conf = np.clip(rng.normal(0.55 + 0.06 * np.arange(7), 0.2, (n, 7)), 0, 1)
    cls = np.where(rng.random((n, 7)) < 0.9, 0, rng.integers(1, 10, (n, 7)))
    return conf.tolist(), cls.tolist()


def _time_policy(
    spec: str, conf: list[list[float]], cls: list[list[int]], rm: RewardModel
) -> float:
    """Microseconds per decide + building the observation + observe, over the whole stream
    (audits offload, and every observation carries the classes, as on the node)."""
    policy = build_policy(spec, rm)
    last, alpha = rm.last, rm.alpha
    t0 = time.perf_counter()
    for c, k in zip(conf, cls, strict=True):
        d = policy.decide()
        arm = d.arm
        known = arm == last or d.audit or not d.answers(c[arm], alpha)
        obs = Observation(
            tuple(c[: arm + 1]),
            c[last] if known else None,
            audit=d.audit,
            classes=tuple(k[: arm + 1]),
            final_class=k[last] if known else None,
        )
        policy.observe(d, obs)
    return (time.perf_counter() - t0) / len(conf) * 1e6


POLICIES = {
    "fixed (bookkeeping only)": "fixed:12",
    "random": "random",
    "isplitee": "isplitee",
    "isplitee-nonstationary": "isplitee-nonstationary",
    "isplitee-paper": "isplitee-paper",
}
"""Row name of the table -> the policy spec timed under it."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args()
    rm = RewardModel(paper_cost(BLOCKS))
    conf, cls = _stream(args.samples)
    times: dict[str, list[float]] = {name: [] for name in POLICIES}
    for _ in range(args.repeats):
        for name, spec in POLICIES.items():
            times[name].append(_time_policy(spec, conf, cls, rm))
    base = statistics.median(times["fixed (bookkeeping only)"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        verdict = "met" if med <= BUDGET_US else "MISSED"
        rows.append(
            [
                name,
                f"{med:.2f}",
                f"{min(ts):.2f}",
                f"{med / base:.2f}",
                f"{verdict} ({BUDGET_US:g})",
            ]
        )
    title = (
        f"decide + observe, {args.samples} samples x {args.repeats} repeats, "
        f"Python {sys.version.split()[0]}, {platform.machine()}"
    )
    table = format_table(["policy", "median us", "best us", "x fixed", "budget us"], rows)
    print(title)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# Benchmarks\n\n"
            "## Bandit: one decide + observe\n\n"
            "Command: `python bench/bench_bandit.py` (run by `make bench`). "
            "Each policy runs the same stream of 7-arm confidences, paper reward model, side "
            "observations included (every policy keeps the statistics of what it observed); "
            "policies are interleaved over the repeats so machine noise hits all alike. "
            "`x fixed` is the ratio to the fixed-split baseline measured in the "
            "same run (bookkeeping only: decision ids, validation, statistics; no index). "
            "Target: at most 20 us.\n\n"
            f"{title}\n\n{table}\n"
        )
        print(f"wrote {args.out}")
    worst = max(statistics.median(times[n]) for n in ("isplitee", "isplitee-nonstationary"))
    return 0 if worst <= BUDGET_US else 1


if __name__ == "__main__":
    sys.exit(main())
