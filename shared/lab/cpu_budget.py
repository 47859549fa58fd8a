"""A CPU budget for a process: a Raspberry Pi's speed on a bigger machine, via a cgroup quota.

A Linux CFS quota lets the processes of a cgroup run ``quota`` microseconds per ``period``,
so a share ``s`` of one core stretches each CPU-bound step by about ``1 / s``. The kernel's
granularity matters: a quota is at least 1 ms per period, and a call shorter than the quota
runs at full speed, the throttling showing only as stalls between calls. So the period is
chosen for the quota to be that 1 ms floor (``period = 1 ms / s``): one frame's work spans
many periods, and its time stretches smoothly. cgroup v2 (``cpu.max``) and v1
(``cpu.cfs_quota_us``) are both handled; where neither can be written (not root, no cgroup
file system, a container without delegation) :func:`unavailable` says why, and callers skip.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["MIN_QUOTA_US", "CpuBudget", "unavailable"]

MIN_QUOTA_US = 1000
"""The kernel's smallest CFS quota per period."""

_ROOT = Path("/sys/fs/cgroup")


def _layout() -> tuple[str, Path] | None:
    """("v2", root) or ("v1", the cpu controller's root), or None."""
    if (_ROOT / "cgroup.controllers").exists():
        return "v2", _ROOT
    for name in ("cpu", "cpu,cpuacct"):
        if (_ROOT / name / "cpu.cfs_quota_us").exists():
            return "v1", _ROOT / name
    return None


def unavailable() -> str | None:
    """Why a CPU budget cannot be set here, or None when it can."""
    layout = _layout()
    if layout is None:
        return "no cgroup CPU controller under /sys/fs/cgroup"
    kind, root = layout
    if kind == "v2" and "cpu" not in (root / "cgroup.subtree_control").read_text().split():
        return "cgroup v2 without the cpu controller delegated (cgroup.subtree_control)"
    if not os.access(root, os.W_OK):
        return f"{root} is not writable: a CPU budget needs root (or a delegated cgroup)"
    return None


class CpuBudget:
    """A cgroup named ``name`` whose processes get ``share`` of one core.

    Use as a context manager: the group is made on entry and removed on exit (its processes
    moved back to the root group first, if any are left). :meth:`add` puts a process in it.
    """

    def __init__(self, name: str, share: float) -> None:
        if not 0 < share <= 64:
            raise ValueError(f"share should be in (0, 64] cores, got {share}")
        reason = unavailable()
        if reason is not None:
            raise PermissionError(f"cannot set a CPU budget: {reason}")
        self.kind, self._root = _layout()  # type: ignore[misc]
        self.path = self._root / name
        self.share = share
        self.period_us = max(MIN_QUOTA_US, round(MIN_QUOTA_US / share))
        self.quota_us = max(MIN_QUOTA_US, round(share * self.period_us))

    def __enter__(self) -> CpuBudget:
        self.path.mkdir(exist_ok=True)
        self.set_share(self.share)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_share(self, share: float) -> None:
        """Change the budget; processes in the group keep running under the new one."""
        self.share = share
        self.period_us = max(MIN_QUOTA_US, round(MIN_QUOTA_US / share))
        self.quota_us = max(MIN_QUOTA_US, round(share * self.period_us))
        if self.kind == "v2":
            (self.path / "cpu.max").write_text(f"{self.quota_us} {self.period_us}\n")
        else:
            # v1 refuses a period below the quota already set: widen first, then narrow.
            (self.path / "cpu.cfs_quota_us").write_text("-1\n")
            (self.path / "cpu.cfs_period_us").write_text(f"{self.period_us}\n")
            (self.path / "cpu.cfs_quota_us").write_text(f"{self.quota_us}\n")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def pids(self) -> list[int]:
        text = (self.path / "cgroup.procs").read_text() if self.path.exists() else ""
        return [int(line) for line in text.split()]

    def close(self) -> None:
        if not self.path.exists():
            return
        for pid in self.pids():
            with contextlib.suppress(OSError):
                (self._root / "cgroup.procs").write_text(f"{pid}\n")
        with contextlib.suppress(OSError):
            self.path.rmdir()
