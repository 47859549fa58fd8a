"""The short load run (20 simulated nodes x 5 fps x 10 s, two real workers, one Mosquitto):
0 lost, no error replies, worker memory flat. The 60-second run: ``make bench-reliability``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_twenty_nodes_for_ten_seconds_lose_nothing(tiny_checkpoint, tmp_path) -> None:
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "load.py"),
            "--model",
            str(tiny_checkpoint),
            "--nodes",
            "20",
            "--fps",
            "5",
            "--seconds",
            "10",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    print("RELIABILITY load_short", json.dumps(s))
    assert s["sent"] >= 900 and s["lost"] == 0 and s["error_replies"] == 0
    for start, end in zip(s["worker_rss_mb_start"], s["worker_rss_mb_end"], strict=True):
        assert end <= start * 1.1 + 30, (start, end)
    assert "p99" in proc.stdout
