"""Command lines of the two programs, as the tests, the benchmarks and the demo start them:
separate processes, exactly as on a server and a Pi (``python -m`` of this interpreter, so the
venv's packages are the ones that run)."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["device_command", "worker_command"]


def worker_command(broker: str, model: Path | str, worker_id: str, *extra: str) -> list[str]:
    """``isplitee-cloud`` on one thread (two cores are shared by everything in a test)."""
    program = [sys.executable, "-m", "cloud_worker"]
    return [*program, "--broker", broker, "--model", str(model), "--worker-id", worker_id,
            "--threads", "1", *extra]  # fmt: skip


def device_command(
    broker: str, model: Path | str, source: Path | str, device_id: str, *extra: str
) -> list[str]:
    """``isplitee-device`` on one thread."""
    program = [sys.executable, "-m", "device"]
    return [*program, "--broker", broker, "--model", str(model), "--source", str(source),
            "--device-id", device_id, "--threads", "1", *extra]  # fmt: skip
