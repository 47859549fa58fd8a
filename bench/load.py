"""Load: many camera nodes against one Mosquitto and two cloud workers on this machine.

    python bench/load.py --model models/digits.pt                  # 20 nodes x 5 fps x 60 s
    python bench/load.py --model models/digits.pt --seconds 10     # the version in the tests

Each simulated node is a real MQTT v5 client (paho, Nagle off) publishing real activations
(the model's edge half at block 3, fp16, as a node sends them) at its frame rate, each with its
own reply topic and correlation data, exactly as ``isplitee-device`` does; running 20 torch
processes would measure the machine's two cores, not the pipeline. The workers are real
``isplitee-cloud`` processes on a shared subscription. Printed: frames sent, answered, lost
(no reply within 10 s of the end), reply latency p50/p95/p99, the workers' resident memory at
the start and the end (flat means no leak), and their refused messages by kind.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.lab.broker import DEV_CONFIG, broker_from, free_port
from shared.lab.procs import worker_command
from shared.lab.report import format_table
from shared.mqtt import MqttLink
from shared.protocol import Topics, decode_reply, encode_activation

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class ActivationTemplate:
    """A real block-3 activation of the model, which simulated nodes send as their frames."""

    model_hash: str
    tensor: np.ndarray

    @classmethod
    def of(cls, model: Path) -> ActivationTemplate:
        import torch

        from shared.checkpoint import load_checkpoint

        ckpt = load_checkpoint(model)
        size = ckpt.meta.input_size
        with torch.inference_mode():
            act = ckpt.model.edge(torch.rand(1, 3, size, size), 3).activation[0].numpy()
        return cls(ckpt.hash, act)

    def payload(self, device_id: str, frame: int) -> bytes:
        """The message a node sends for this frame (fp16: what a node on its default sends for
        a checkpoint without an encoding check)."""
        return encode_activation(
            device_id=device_id,
            frame_id=frame,
            captured_at=time.time(),
            split_block=3,
            model_hash=self.model_hash,
            exit_confidence=0.1,
            exit_class=0,
            tensor=self.tensor,
            encoding="fp16",
        )


def start_workers(url: str, model: Path, n: int, prefix: str, *extra: str):
    """``n`` real workers, each with a metrics port; returns (processes, ports) once all are
    healthy."""
    procs, ports = [], []
    for i in range(n):
        ports.append(free_port())
        args = ("--metrics-port", str(ports[-1]), "--log-level", "ERROR", *extra)
        procs.append(subprocess.Popen(worker_command(url, model, f"{prefix}{i}", *args)))
    _wait_health(ports)
    return procs, ports


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


class SimNode(threading.Thread):
    def __init__(
        self, url: str, device_id: str, fps: float, seconds: float, template: ActivationTemplate
    ) -> None:
        super().__init__(daemon=True)
        self.device_id = device_id
        self.fps, self.seconds, self.template = fps, seconds, template
        self.topics = Topics()
        self.link = MqttLink(url, f"load-{device_id}", subscriptions=[self.topics.reply(device_id)])
        self.sent: dict[int, float] = {}
        self.latency_ms: dict[int, float] = {}
        self.errors = 0

    def run(self) -> None:
        period = 1.0 / self.fps
        start = time.monotonic()
        frame = 0
        while time.monotonic() - start < self.seconds:
            payload = self.template.payload(self.device_id, frame)
            self.sent[frame] = time.monotonic()
            self.link.publish(
                self.topics.activation(self.device_id),
                payload,
                response_topic=self.topics.reply(self.device_id),
                correlation=frame.to_bytes(8, "big"),
            )
            frame += 1
            # Wait for the next frame time taking replies as they come, so a reply's latency
            # is stamped when it arrives, not at the next frame.
            while (wait := start + frame * period - time.monotonic()) > 0:
                self._drain(timeout=wait)

    def _drain(self, timeout: float = 0.0) -> None:
        """Take the replies waiting, first waiting up to ``timeout`` for one."""
        while True:
            try:
                m = (
                    self.link.inbox.get(timeout=timeout)
                    if timeout
                    else self.link.inbox.get_nowait()
                )
            except queue.Empty:
                return
            timeout = 0.0
            frame = int.from_bytes(m.correlation or b"\0", "big")
            if frame in self.sent and frame not in self.latency_ms:
                self.latency_ms[frame] = (time.monotonic() - self.sent[frame]) * 1e3
                if not decode_reply(m.payload).ok:
                    self.errors += 1

    def finish(self, deadline: float) -> None:
        while len(self.latency_ms) < len(self.sent) and time.monotonic() < deadline:
            self._drain(timeout=0.1)


def run(model: Path, nodes: int, fps: float, seconds: float, workers: int) -> dict:
    template = ActivationTemplate.of(model)
    with tempfile.TemporaryDirectory() as tmp:
        broker = broker_from(DEV_CONFIG, Path(tmp)).start()
        procs: list[subprocess.Popen] = []
        try:
            procs, ports = start_workers(broker.url, model, workers, "load-w")
            sims = [
                SimNode(broker.url, f"sim{i:02d}", fps, seconds, template) for i in range(nodes)
            ]
            for s in sims:
                s.link.start(10)
            warm = [rss_mb(p.pid) for p in procs]
            for s in sims:
                s.start()
            for s in sims:
                s.join()
            end = time.monotonic() + 10
            for s in sims:
                s.finish(end)
            rss_end = [rss_mb(p.pid) for p in procs]
            refused = [_errors(port) for port in ports]
            for s in sims:
                s.link.stop()
        finally:
            stop_workers(procs)
            broker.stop()
    lat = [v for s in sims for v in s.latency_ms.values()]
    sent = sum(len(s.sent) for s in sims)
    return {
        "nodes": nodes,
        "fps_per_node": fps,
        "seconds": seconds,
        "workers": workers,
        "sent": sent,
        "answered": len(lat),
        "lost": sent - len(lat),
        "error_replies": sum(s.errors for s in sims),
        "latency_ms_p50": float(np.percentile(lat, 50)) if lat else float("nan"),
        "latency_ms_p95": float(np.percentile(lat, 95)) if lat else float("nan"),
        "latency_ms_p99": float(np.percentile(lat, 99)) if lat else float("nan"),
        "worker_rss_mb_start": [round(v, 1) for v in warm],
        "worker_rss_mb_end": [round(v, 1) for v in rss_end],
        "worker_refused": refused,
    }


def _wait_health(ports: list[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                if (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status
                    == 200
                ):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"worker on metrics port {port} did not become healthy")
            time.sleep(0.2)


def _errors(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("isplitee_worker_errors_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "digits.pt")
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    s = run(args.model, args.nodes, args.fps, args.seconds, args.workers)
    rows = [
        [
            "nodes x fps x seconds, workers",
            f"{s['nodes']} x {s['fps_per_node']:g} x {s['seconds']:g} s, {s['workers']}",
        ],
        ["frames sent / answered / lost", f"{s['sent']} / {s['answered']} / {s['lost']}"],
        ["error replies", str(s["error_replies"])],
        [
            "reply latency p50 / p95 / p99 ms",
            f"{s['latency_ms_p50']:.1f} / {s['latency_ms_p95']:.1f} / {s['latency_ms_p99']:.1f}",
        ],
        [
            "worker RSS MB at start -> end",
            ", ".join(
                f"{a} -> {b}"
                for a, b in zip(s["worker_rss_mb_start"], s["worker_rss_mb_end"], strict=True)
            ),
        ],
        ["refused by the workers", json.dumps(s["worker_refused"])],
    ]
    print(format_table(["load", "value"], rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(s, indent=2))
    return 0 if s["lost"] == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
