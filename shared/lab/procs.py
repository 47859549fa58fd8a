"""Command lines of the two programs, as the tests, the benchmarks and the demo start them:
separate processes, exactly as on a server and a Pi (``python -m`` of this interpreter, so the
venv's packages are the ones that run)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["device_command", "start_held_device", "worker_command"]

_HELD = (
    "import os, sys\n"
    "import cv2, numpy, onnxruntime, paho.mqtt.client\n"
    "import device.app, device.cli\n"
    "print('loaded', flush=True)\n"
    "sys.stdin.readline()\n"
    "os.dup2(os.open(os.devnull, os.O_WRONLY), 1)\n"
    "sys.exit(device.cli.main(sys.argv[1:]))\n"
)
"""A node that loads its modules, says so on stdout, and starts when it reads a line."""


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


def start_held_device(
    command: list[str], before_start: Callable[[int], None], **popen
) -> subprocess.Popen:
    """Start ``command`` (a :func:`device_command`) but hold the node once its modules are
    loaded, call ``before_start(pid)`` (a benchmark puts it in a CPU budget), then let it run.
    So a budget paces the node's own work, its start-up timings included, but not Python's
    imports, which at a Pi Zero's share of a core take longer than a short run itself."""
    if command[1:3] != ["-m", "device"]:
        raise ValueError(f"not a device_command: {command[:3]}")
    proc = subprocess.Popen(
        [command[0], "-c", _HELD, *command[3:]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **popen,
    )
    if proc.stdout.readline():  # nothing: it failed to load, and its stderr says why
        before_start(proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return proc
