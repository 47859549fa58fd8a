"""End to end on loopback: one camera node and one cloud worker on a private Mosquitto.

    python bench/bench_pipeline.py --model models/digits.pt            # ~1 min
    python bench/bench_pipeline.py --model models/digits.pt --quick    # seconds (the tests)

The node replays a video of held-out digits (clean for the first half, then Gaussian noise
level 2), unpaced, with its default settings; the worker and the node are separate processes,
as on a real deployment. An independent subscriber collects every result. Printed: frames/s,
end-to-end latency (capture to result) by source, accuracy against the true labels and
against the whole network on the same frames, edge/offload/fallback rates, and the cost
reduction under the paper's cost model next to the offload-everything-at-block-3 baseline
(0.3 + 0.5 = 0.8 of 1.9). For scale, a bare paho v5 request/reply through the same broker is
timed in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.checkpoint import load_checkpoint  # noqa: E402
from shared.cost import FULL_DEPTH, PAPER_GAMMA, PAPER_OFFLOAD  # noqa: E402
from shared.lab.broker import DEV_CONFIG, broker_from, free_port  # noqa: E402
from shared.lab.clips import whole_model_predictions, write_digit_clip  # noqa: E402
from shared.lab.procs import device_command, worker_command  # noqa: E402
from shared.lab.report import format_table  # noqa: E402
from shared.mqtt import MqttLink  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def bare_request_reply(url: str, n: int) -> list[float]:
    """Round trips of a 1 kB request and its reply through the broker, Nagle off both ends."""
    server = MqttLink(url, "bench-echo", subscriptions=["bench/req"])
    client = MqttLink(url, "bench-client", subscriptions=["bench/rep"])
    server.start(10)
    client.start(10)
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            try:
                m = server.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            server.publish(m.response_topic, m.payload, correlation=m.correlation)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    times = []
    payload = b"x" * 1024
    for i in range(n):
        t0 = time.perf_counter()
        client.publish(
            "bench/req", payload, response_topic="bench/rep", correlation=bytes([i % 256])
        )
        client.inbox.get(timeout=5)
        times.append((time.perf_counter() - t0) * 1e3)
    stop.set()
    t.join()
    server.stop()
    client.stop()
    return times


def run(model: Path, frames: int, workdir: Path, fps: float | None = 30.0) -> dict:
    ckpt = load_checkpoint(model)
    video = write_digit_clip(workdir / "bench.avi", frames, seed=1)
    whole = whole_model_predictions(ckpt, video.frames)
    broker = broker_from(DEV_CONFIG, workdir).start()
    metrics_port = free_port()
    try:
        bare = bare_request_reply(broker.url, 300)
        reader = MqttLink(broker.url, "bench-reader", subscriptions=["isplitee/+/result"])
        reader.start(10)
        worker = subprocess.Popen(
            worker_command(
                broker.url,
                str(model),
                "bench",
                "--log-level",
                "WARNING",
                "--metrics-port",
                str(metrics_port),
            ),
        )
        time.sleep(0.5)
        device = subprocess.run(
            device_command(
                broker.url,
                str(model),
                str(video.path),
                "bench-cam",
                *(["--fps", f"{fps:g}"] if fps else []),
                "--log-level",
                "WARNING",
            ),
            capture_output=True,
            text=True,
        )
        if device.returncode != 0:
            raise SystemExit(f"device failed:\n{device.stderr}")
        results = []
        deadline = time.monotonic() + 10
        while len(results) < frames and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                results.append(json.loads(reader.inbox.get(timeout=0.2).payload))
        compute = _mean_compute_ms(metrics_port)
        worker.terminate()
        worker.wait(30)
        reader.stop()
    finally:
        broker.stop()
    out = summarise(results, video.labels, whole, frames, bare)
    out["cloud_compute_ms_mean"] = compute
    cloud, edge = out["latency_ms"].get("cloud"), out["latency_ms"].get("edge")
    if cloud and edge:
        # Capture -> result of a cloud frame, less what a frame answered on the node takes
        # (preprocess, edge half, result) and the worker's own compute per batch.
        out["overhead_ms_p50"] = cloud["p50"] - edge["p50"] - compute
    out["fps_source"] = fps
    return out


def _mean_compute_ms(port: int) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("isplitee_worker_compute_ms_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("isplitee_worker_compute_ms_count"):
            count = float(line.rsplit(" ", 1)[1])
    return total / count if count else float("nan")


def summarise(results, labels, whole, frames, bare) -> dict:
    # Throughput from the first capture to the last result: the node's start-up (torch import,
    # timing its splits) is not frame processing.
    start = min(datetime.fromisoformat(r["captured_at"]).timestamp() for r in results)
    end = max(
        datetime.fromisoformat(r["captured_at"]).timestamp() + r["latency_ms"] / 1e3
        for r in results
    )
    src = [r["source"] for r in results]
    lat = {s: [r["latency_ms"] for r in results if r["source"] == s] for s in set(src)}
    lat["all"] = [r["latency_ms"] for r in results]
    pred = np.array([r["label"] for r in sorted(results, key=lambda r: r["frame_id"])])
    ids = np.array(sorted(r["frame_id"] for r in results))
    cost = [
        PAPER_GAMMA * r["split_block"] + (PAPER_OFFLOAD if r["source"] != "edge" else 0.0)
        for r in results
    ]
    full = PAPER_GAMMA * FULL_DEPTH
    return {
        "frames": frames,
        "results": len(results),
        "fps": len(results) / max(end - start, 1e-9),
        "latency_ms": {
            k: {"p50": percentile(v, 50), "p95": percentile(v, 95), "n": len(v)}
            for k, v in lat.items()
        },
        "accuracy": float((pred == labels[ids]).mean()) if len(ids) else float("nan"),
        "final_accuracy": float((whole == labels).mean()),
        "agreement_with_final": float((pred == whole[ids]).mean()) if len(ids) else float("nan"),
        "edge_rate": src.count("edge") / max(len(src), 1),
        "offload_rate": (src.count("cloud") + src.count("fallback")) / max(len(src), 1),
        "fallback_rate": src.count("fallback") / max(len(src), 1),
        "cost_reduction": 1 - statistics.fmean(cost) / full if cost else float("nan"),
        "baseline_offload_all_block3": 1 - (PAPER_GAMMA * 3 + PAPER_OFFLOAD) / full,
        "bare_request_reply_ms": {"p50": percentile(bare, 50), "p95": percentile(bare, 95)},
    }


def print_table(s: dict) -> None:
    rows = [
        ["frames / results", f"{s['frames']} / {s['results']}"],
        [
            "frames/s (1 node, 1 worker)",
            f"{s['fps']:.1f} (camera at {s['fps_source'] or 'unpaced'} fps)",
        ],
        [
            "bare paho v5 request/reply p50 / p95 ms",
            f"{s['bare_request_reply_ms']['p50']:.2f} / {s['bare_request_reply_ms']['p95']:.2f}",
        ],
    ]
    for k, v in sorted(s["latency_ms"].items()):
        rows.append([f"latency {k} p50 / p95 ms (n={v['n']})", f"{v['p50']:.2f} / {v['p95']:.2f}"])
    rows += [
        ["accuracy vs labels", f"{100 * s['accuracy']:.1f} %"],
        ["final layer accuracy, same frames", f"{100 * s['final_accuracy']:.1f} %"],
        ["agreement with the final layer", f"{100 * s['agreement_with_final']:.1f} %"],
        [
            "edge / offload / fallback",
            f"{100 * s['edge_rate']:.1f} / {100 * s['offload_rate']:.1f}"
            f" / {100 * s['fallback_rate']:.1f} %",
        ],
        ["worker compute per batch, mean ms", f"{s['cloud_compute_ms_mean']:.2f}"],
        [
            "pipeline overhead p50 ms (cloud - edge - compute)",
            f"{s.get('overhead_ms_p50', float('nan')):.2f} (target <= 2)",
        ],
        ["cost reduction (paper cost model)", f"{100 * s['cost_reduction']:.1f} %"],
        ["baseline: offload all at block 3", f"{100 * s['baseline_offload_all_block3']:.1f} %"],
    ]
    print(format_table(["measure", "value"], rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "digits.pt")
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--quick", action="store_true", help="60 frames")
    p.add_argument(
        "--fps", type=float, default=30.0, help="camera frame rate (0: as fast as it can)"
    )
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    frames = 60 if args.quick else args.frames
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(args.model, frames, Path(tmp), args.fps or None)
    print_table(summary)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if summary["results"] == frames else 1


if __name__ == "__main__":
    sys.exit(main())
