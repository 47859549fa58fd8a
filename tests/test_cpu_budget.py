"""The testbed's device: a process confined to a share of a core runs that much slower."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from shared.lab.cpu_budget import MIN_QUOTA_US, CpuBudget, unavailable

# About 100 ms of pure Python at full speed here; prints wall and CPU seconds. Under a
# budget, wall over CPU time is about 1 / share (more if the machine is busy besides).
BUSY = ("import time\nw, c = time.perf_counter(), time.process_time()\nx = 0\n"
        "for i in range(2_000_000): x += i * i\n"
        "print(time.perf_counter() - w, time.process_time() - c)\n")  # fmt: skip


def _stretch(budget: CpuBudget | None) -> float:
    """Wall time over CPU time of the busy loop."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read(1)\n" + BUSY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if budget is not None:
        budget.add(proc.pid)  # before it starts its work
    out, _ = proc.communicate("go", timeout=60)
    wall, cpu = map(float, out.split())
    return wall / cpu


@pytest.mark.skipif(unavailable() is not None, reason=f"no CPU budget here: {unavailable()}")
def test_a_quarter_of_a_core_takes_about_four_times_as_long() -> None:
    free = min(_stretch(None) for _ in range(2))
    with CpuBudget(f"isplitee-test-{time.monotonic_ns()}", 0.25) as budget:
        assert budget.quota_us == MIN_QUOTA_US and budget.period_us == 4 * MIN_QUOTA_US
        slowed = min(_stretch(budget) for _ in range(2))
        path = budget.path
    assert slowed >= 3.2 and slowed > free, (free, slowed)
    assert not path.exists()  # the group is gone with the context


def test_a_budget_must_be_a_share_of_cores() -> None:
    with pytest.raises(ValueError, match="share"):
        CpuBudget("isplitee-never", 0)
