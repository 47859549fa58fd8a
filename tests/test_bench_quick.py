"""The benchmark page in ``--quick`` mode, so no benchmark rots: ``bench/bench_perf.py --quick``
runs every section shrunk to seconds (the edge tries with Dynamo's eager backend, the cloud half,
the profiles, and bench/bench_pipeline.py's 1-then-2-node run beside the rest) and writes a page
with every section. The figures themselves are not checked: this machine is shared."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SECTIONS = (
    "## Edge half per split (batch 1)",
    "## Edge half: torch.compile and int8 quantisation",
    "## Cloud half: eager PyTorch against ONNX Runtime",
    "## Bytes per offload and what each encoding costs",
    "## Codec: encode + decode one activation",
    "## Bandit: one decide + observe",
    "## End to end on loopback: 1, 4 and 8 nodes, 1 worker",
    "## Profiles of the missed targets",
)


def test_quick_page_has_every_section(tiny_checkpoint, tmp_path) -> None:
    out = tmp_path / "benchmarks.md"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_perf.py"), "--quick",
           "--model", str(tiny_checkpoint), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    page = out.read_text()
    for title in SECTIONS:
        assert title in page, title
    failed = [line for line in page.splitlines() if "(failed" in line or "failed:" in line]
    assert not failed, "\n".join(failed) + "\n" + proc.stderr[-3000:]
    # One row per node count, each with its overhead; the profiles run even without a miss.
    assert "| 1 x 30 fps, 1 worker" in page and "| 2 x 30 fps, 1 worker" in page
    assert "Overhead target (<= 2 ms p50" in page
    assert "### ONNX Runtime at 32 px, block 3" in page
    assert "cProfile of `isplitee`" in page
    assert "### Pipeline overhead at 1 node" in page


@pytest.mark.slow
def test_quick_worker_bench_states_the_batching_verdict_and_its_ceiling(tiny_checkpoint) -> None:
    """bench/bench_worker.py (a part of ``make bench`` the page's --quick run leaves out).
    Behind ``slow`` to keep the default run under ten minutes: ``make test-slow`` runs it."""
    cmd = [sys.executable, str(ROOT / "bench" / "bench_worker.py"), "--quick",
           "--model", str(tiny_checkpoint)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "| 8 node(s), 1 worker | onnxruntime" in out and "| 8 node(s), 1 worker | torch" in out
    assert "Target: micro-batching at least 2x batch 1 with 8 nodes: onnxruntime" in out
    assert "How far micro-batching can go on ONNX Runtime (Amdahl's law" in out
    assert "At 224 px, where the cloud half is most of the work" in out
    assert "8 nodes, micro-batched: 2 workers" in out


def test_quick_testbed_runs_a_budgeted_node_behind_a_shaped_link(tiny_artefact, tmp_path) -> None:
    """bench/bench_testbed.py --quick: the board calibrated against its published figure, and
    three strategies with every frame answered (the tiny model: the testbed's own trains for
    minutes), and what each node timed. Without a CPU budget here it says so and skips."""
    from shared.lab.cpu_budget import unavailable

    out, readme = tmp_path / "testbed.md", tmp_path / "README.md"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_testbed.py"), "--quick",
           "--model", str(tiny_artefact), "--out", str(out), "--readme", str(readme),
           "--node-log"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    if unavailable() is not None:
        assert "skipped" in proc.stderr
        return
    # --node-log: what each node timed, its start-up sweep's probes among it
    timed = proc.stdout.split("--- what the default node timed")[1].split("---")[0]
    assert "edge ms per split" in timed and "probe at block" in timed, timed[-2000:]
    assert "ms after its read" in timed, timed[-2000:]  # each result, from its frame's read
    page = out.read_text()
    board = next(line for line in page.splitlines() if line.startswith("| Raspberry Pi 4"))
    published, share, emulated = (float(c) for c in board.split("|")[2:5])
    assert published == 72.6 and share < 0.5  # the budget, not this machine, set the pace
    assert abs(emulated / published - 1) < 0.25, board
    for strategy in ("final", "frame", "default"):
        row = next(line for line in page.splitlines() if line.startswith(f"| {strategy} "))
        assert row.rstrip().endswith("| 0         |"), row  # no frame without a result
    # README's lines on when the split pays are the page's own figures, read from its tables
    means = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in
             page.splitlines() if line.startswith("| ")}  # fmt: skip
    summary = next(line for line in readme.read_text().splitlines() if line.startswith("| pi4"))
    cells = [c.strip() for c in summary.split("|")[1:-1]]
    assert cells[:4] == ["pi4", "lan", means["final"], means["frame"]], (summary, means)
    assert cells[5].startswith(means["default"] + " (x"), summary


def test_testbed_strategies_name_the_default_and_known_ones(tiny_artefact) -> None:
    """--strategies picks some of the strategies, the default node always among them: the
    verdicts judge it. A name it does not know is refused with the ones it does."""
    from shared.lab.cpu_budget import unavailable

    if unavailable() is not None:
        pytest.skip("no CPU budget here: the testbed stops before it reads --strategies")
    cmd = [sys.executable, str(ROOT / "bench" / "bench_testbed.py"), "--model", str(tiny_artefact)]
    for picked in ("frame,final", "default,fixed:99"):
        proc = subprocess.run([*cmd, "--strategies", picked], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "--strategies: the default node and any of final, frame, fixed:" in proc.stderr
