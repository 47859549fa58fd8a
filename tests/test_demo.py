"""``isplitee demo`` end to end: its own broker, a worker and three camera nodes as processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.lab.demo import DEFAULT_CAMERAS, RESULT_KEYS


def _demo(model: Path, workdir: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shared.lab.cli",
            "demo",
            "--model",
            str(model),
            "--workdir",
            str(workdir),
            "--no-live",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        # Ctrl-C as in a terminal, even when the suite itself runs as a background job
        # (which starts with SIGINT ignored, and Python keeps an ignored SIGINT ignored).
        preexec_fn=_terminal_signals,
    )


def _terminal_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _left_running(workdir: Path) -> str:
    """Processes whose command line names the demo's directory (broker, worker, nodes)."""
    out = subprocess.run(["pgrep", "-af", str(workdir)], capture_output=True, text=True)
    return out.stdout.strip()


def test_demo_runs_every_frame_to_a_result_and_cleans_up(tiny_checkpoint, tmp_path) -> None:
    workdir, summary = tmp_path / "demo", tmp_path / "summary.json"
    # The nodes take settings from the environment too: the tiny model is never sure, so its
    # every answer counts toward state and events here.
    confident = {"ISPLITEE_MIN_CONFIDENCE": "0"}
    proc = _demo(
        tiny_checkpoint,
        workdir,
        "--frames",
        "20",
        "--fps",
        "20",
        "--json",
        str(summary),
        env=confident,
    )
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err[-3000:]
    s = json.loads(summary.read_text())
    assert set(RESULT_KEYS) <= set(s)
    n = 20 * len(DEFAULT_CAMERAS)
    assert s["frames"] == n and s["results"] == n and s["lost"] == 0 and s["duplicates"] == 0
    assert s["edge_exit_rate"] + s["offload_rate"] == 1.0
    # a fresh node checks its exits first: its first frames are audits, which are offloads
    assert 0 < s["audit_rate"] <= s["offload_rate"]
    assert 0 <= s["accuracy"] <= 1 and s["latency_ms_p50"] > 0
    assert set(s["cameras"]) == set(DEFAULT_CAMERAS)
    for cam, c in s["cameras"].items():  # a digit held in view: an event and its snapshot
        assert c["events"] >= 1 and c["snapshots"] >= 1, (cam, c)
        assert (workdir / f"{cam}-snapshot.jpg").read_bytes().startswith(b"\xff\xd8")
    assert "events / snapshots" in out
    assert "lost" in out and (workdir / "demo.png").stat().st_size > 10_000
    assert _left_running(workdir) == ""


def test_ctrl_c_stops_every_process_the_demo_started(tiny_checkpoint, tmp_path) -> None:
    workdir = tmp_path / "demo"
    # a minute of frames, far more than the start-up takes, but few to write and predict
    proc = _demo(tiny_checkpoint, workdir, "--frames", "120", "--fps", "2")
    log = workdir / "logs" / "porch.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and "connected to" in log.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    time.sleep(1)
    assert _left_running(workdir)  # broker, worker and nodes are up
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert _left_running(workdir) == ""
    # the nodes stop first: the worker still answers what they had in flight
    for cam in DEFAULT_CAMERAS:
        stopped = (workdir / "logs" / f"{cam}.log").read_text().splitlines()[-1]
        assert stopped.startswith("isplitee-device:") and " 0 fallback)" in stopped, stopped
