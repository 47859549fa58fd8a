"""bench/make_results.py's page comes from templates (bench/templates/results/): each fills
completely, and the page they make has the sections of the committed docs/results.md.

The real run simulates for a long time; here every figure is faked so only the page is tested.
"""

from __future__ import annotations

import re
import string
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from shared.cost import paper_cost

from .bench_helpers import PLACEHOLDER, bench_module

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def make_results():
    with bench_module("make_results") as module:
        yield module


def test_every_template_fills_completely_and_refuses_a_missing_figure(make_results) -> None:
    for path in sorted(make_results.TEMPLATES.glob("*.md")):
        names = string.Template(path.read_text()).get_identifiers()
        filled = make_results.fill(path.name, **{n: f"<{n}>" for n in names})
        assert not PLACEHOLDER.search(filled), path.name
        assert all(f"<{n}>" in filled for n in names), path.name
        if names:
            with pytest.raises(KeyError):
                make_results.fill(path.name)


def _figure(*key: object) -> float:
    return (zlib.crc32(repr(key).encode()) % 10_000) / 10_000


def _target_rows(page: str) -> list[str]:
    """The rows of the page's target table (the first table after its heading)."""
    table = page.split("## Targets\n", 1)[1].split("\n| target ", 1)[1].split("\n\n", 1)[0]
    return table.splitlines()[2:]  # after the header's rest and the separator line


class _Meta:
    arm_blocks = (3, 6, 9, 12, 15, 18, 19)
    exit_blocks = (3, 6, 9, 12, 15, 18)
    wire_encodings = ("int8",) * 6
    input_size = 32
    notes: ClassVar[dict[str, str]] = {"augment": "0.5"}

    def arm_temperatures(self) -> tuple[float, ...]:
        return (1.0,) * 7


class _Ckpt:
    def __init__(self, path: Path) -> None:
        self.meta, self.short_hash, self.model = _Meta(), path.stem, None


class _Policy:
    def __init__(self, name: str, run: int) -> None:
        self.name, self.run = name, run
        self.regret_curve = np.cumsum(np.linspace(0.5, 0.01, 2000))
        self.segment_accuracy = [0.9, 0.9 - _figure(name, run) / 10, 0.9]

    def __getattr__(self, attr: str) -> float:
        return _figure(self.name, self.run, attr)


class _Policies(dict):
    def __init__(self, run: int) -> None:
        super().__init__()
        self.run = run

    def __missing__(self, name: str) -> _Policy:
        return _Policy(name, self.run)


@dataclass
class _Segment:
    name: str


class _Result:
    runs = 0

    def __init__(self) -> None:
        _Result.runs += 1
        self.k, self.n_samples = _Result.runs, 2000
        self.policies = _Policies(self.k)
        self.segments = [_Segment("clean"), _Segment("noise"), _Segment("blur")]


class _Profile:
    def macs_to_split(self, block: int) -> float:
        return 1e6 * block


def test_the_page_fills_every_section_of_the_committed_page(make_results, monkeypatch, tmp_path):
    mr = make_results

    def learnability(ck, spec):
        return mr.Learnability(spec, 6, 9, 0.06, 5000.0, 0.2, 0.01, 0.02)

    fakes = {
        "test_size": lambda ck: 450,
        "exit_table": lambda ck: "| exit |",
        "_run": lambda ckpt, streams, **kw: _Result(),
        "_streams": lambda ck, spec, calibration: [],
        "steady_state": lambda ck, spec, setting: 0.6,
        "threshold_bound_rows": lambda ckpts, figs: [["robust", "clean", "a", "b", "c", "d"]],
        "learnability": learnability,
        "full_information_gap": lambda rewards, streams: 0.03,
        "long_stream_rows": lambda ck: [["clean", "1", "2", "3", "4"]],
        "time_cli": lambda model: (10.0, 2.0),
        "cost_model": lambda ck, name, **kw: paper_cost(ck.meta.arm_blocks),
        "profile_model": lambda model, size: _Profile(),
        "wire_encodings": lambda auto, blocks, chosen: {3: "int8"},
        "simulation_table": lambda res: f"| simulation {res.k} |",
        "change_table": lambda res: ("| change |", {}),
        "settle_table": lambda res, names: (
            "| settle |",
            {"best_blocks": [6, 9, 9], "isplitee-paper-nonstationary": [None, 120, None]},
        ),
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(mr, name, fake)
    import shared.lab.plots

    monkeypatch.setattr(
        shared.lab.plots, "write_plots", lambda res, where: [Path(where) / "regret.png"]
    )
    out = tmp_path / "docs" / "results.md"
    run = mr.Run(
        ckpts={"robust": _Ckpt(Path("digits.pt")), "paper": _Ckpt(Path("digits-paper.pt"))},
        paths={"robust": Path("models/digits.pt"), "paper": Path("models/digits-paper.pt")},
        img=out.parent / "img",
        out=out,
    )
    page, targets = mr.build_page(run)
    assert not PLACEHOLDER.search(page)
    committed = (ROOT / "docs" / "results.md").read_text()
    headings = re.compile(r"^#+ .*$", re.M)
    assert headings.findall(page) == headings.findall(committed)
    assert len(targets) == len(_target_rows(committed))
    for target, result in targets:
        assert f"| {target}" in page and result in page
