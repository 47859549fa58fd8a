"""bench/bench_perf.py's page comes from a template (bench/templates/perf/page.md): it fills
completely, every figure lands in it, and its sections are those of the committed
docs/benchmarks.md.

The real run measures for a long time; here every table is faked so only the page is tested.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .bench_helpers import PLACEHOLDER, bench_module

COMMITTED = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTIONS = re.compile(r"^##? .*$", re.M)  # the page's own headings, not the profiles'


@pytest.fixture(scope="module")
def bench_perf():
    with bench_module("bench_perf") as module:
        yield module


def _render(bench_perf, quick: bool, profiles: list[str]) -> tuple[str, list[str]]:
    figures = [f"<{name}>" for name in ("edge", "tries", "cloud", "bytes", "codec")]
    sections = bench_perf.Sections(
        edge="<edge>",
        edge_ratios=[],
        tries="<tries>",
        cloud="<cloud>",
        byte_splits=[],
        bytes="<bytes>",
        codec="<codec>",
    )
    bandit = "## Bandit: one decide + observe\n\n<bandit>"
    page = bench_perf._page(COMMITTED, quick, sections, bandit, "<workers>", "<e2e>", profiles)
    return page, [*figures, "<bandit>", "<workers>", "<e2e>", *profiles]


@pytest.mark.parametrize("quick", [False, True])
def test_the_page_fills_with_every_figure_and_the_committed_sections(bench_perf, quick) -> None:
    page, figures = _render(bench_perf, quick, ["### <profile one>", "### <profile two>"])
    assert not PLACEHOLDER.search(page)
    assert all(f in page for f in figures)
    assert ("**--quick run: figures not for reading.**" in page) is quick
    assert page.endswith("<profile two>\n")
    assert SECTIONS.findall(page) == SECTIONS.findall(COMMITTED.read_text())


def test_a_run_with_no_miss_says_so(bench_perf) -> None:
    page, _ = _render(bench_perf, False, [])
    assert page.endswith("No target above was missed in this run.\n")


def test_a_row_over_budget_is_profiled_by_its_policy_spec(bench_perf) -> None:
    """The bandit table names rows for people; the profiler needs the spec each row timed (a
    loaded machine once pushed the fixed baseline over budget and the page died on its name)."""
    table = (
        "| policy | median us | best us | x fixed | budget us |\n"
        "|---|---|---|---|---|\n"
        "| fixed (bookkeeping only) | 25.1 | 24.0 | 1.00 | MISSED (20) |\n"
        "| random | 5.0 | 4.0 | 0.20 | met (20) |\n"
        "| isplitee | 31.0 | 30.0 | 1.20 | MISSED (20) |\n"
    )
    assert bench_perf.missed_specs(table) == ["fixed:12", "isplitee"]
