"""Cloud worker throughput: micro-batching against batch 1, at 1, 4 and 8 concurrent nodes, and
two workers against one on the shared subscription.

    python bench/bench_worker.py --model models/digits.pt          # ~2 min; part of make bench

Each simulated node is a real MQTT v5 client keeping ``--window`` activations in flight (a
closed loop: every reply sends the next), so the workers, not the nodes' pacing, set the rate.
Workers are real ``isplitee-cloud`` processes on one thread each, measured side by side in one
run; the figure is replies per second over ``--seconds``.
"""

from __future__ import annotations

import argparse
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import _wait_health, activation_bodies  # noqa: E402
from shared.lab.broker import DEV_CONFIG, broker_from, free_port  # noqa: E402
from shared.lab.procs import worker_command  # noqa: E402
from shared.lab.report import format_table  # noqa: E402
from shared.mqtt import MqttLink  # noqa: E402
from shared.protocol import Topics, decode_activation, encode_activation  # noqa: E402


class ClosedLoopNode(threading.Thread):
    def __init__(self, url: str, device_id: str, body: bytes, window: int, seconds: float):
        super().__init__(daemon=True)
        self.device_id, self.window, self.seconds = device_id, window, seconds
        self.topics = Topics()
        self.link = MqttLink(url, f"bw-{device_id}-{time.monotonic_ns()}",
                             subscriptions=[self.topics.reply(device_id)])  # fmt: skip
        act = decode_activation(body)
        self._tensor = act.array().reshape(act.shape)
        self._template = act
        self.replies = 0

    def _send(self, frame: int) -> None:
        a = self._template
        payload = encode_activation(
            device_id=self.device_id, frame_id=frame, captured_at=time.time(),
            split_block=a.split_block, model_hash=a.model_hash, exit_confidence=0.1,
            exit_class=0, tensor=self._tensor, encoding="fp16",
        )  # fmt: skip
        self.link.publish(
            self.topics.activation(self.device_id),
            payload,
            response_topic=self.topics.reply(self.device_id),
            correlation=frame.to_bytes(8, "big"),
        )

    def run(self) -> None:
        frame = 0
        for _ in range(self.window):
            self._send(frame)
            frame += 1
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            try:
                self.link.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            self.replies += 1
            self._send(frame)
            frame += 1


def measure(model: Path, body: bytes, nodes: int, workers: int, batch: int | None,
            seconds: float, window: int) -> float:  # fmt: skip
    """Replies per second for one configuration, on a broker of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = broker_from(DEV_CONFIG, Path(tmp)).start()
        procs, ports = [], []
        try:
            for i in range(workers):
                port = free_port()
                ports.append(port)
                extra = ["--metrics-port", str(port), "--log-level", "ERROR"]
                if batch is not None:
                    extra += ["--max-batch", str(batch)]
                procs.append(subprocess.Popen(worker_command(broker.url, model, f"bw{i}", *extra)))
            _wait_health(ports)
            sims = [ClosedLoopNode(broker.url, f"n{i}", body, window, seconds)
                    for i in range(nodes)]  # fmt: skip
            for s in sims:
                s.link.start(10)
            for s in sims:
                s.start()
            for s in sims:
                s.join()
            for s in sims:
                s.link.stop()
            return sum(s.replies for s in sims) / seconds
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
            broker.stop()


def worker_table(model: Path, seconds: float = 6.0, window: int = 8) -> str:
    body, _ = activation_bodies(model)
    rows = []
    for nodes in (1, 4, 8):
        one = measure(model, body, nodes, 1, 1, seconds, window)
        batched = measure(model, body, nodes, 1, None, seconds, window)
        rows.append([f"{nodes} node(s), 1 worker", f"{one:.0f}", f"{batched:.0f}",
                     f"{batched / one:.2f}"])  # fmt: skip
    two = measure(model, body, 8, 2, None, seconds, window)
    single = measure(model, body, 8, 1, None, seconds, window)
    table = format_table(["load", "batch 1 /s", "micro-batched /s", "x batching"], rows)
    return (
        f"{table}\n\n8 nodes, micro-batched: 2 workers {two:.0f} /s against 1 worker "
        f"{single:.0f} /s = {two / single:.2f}x (this machine has 2 cores, shared with the "
        f"broker and the simulated nodes; each node keeps {window} activations in flight; "
        f"{seconds:g} s per configuration)."
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "digits.pt")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--window", type=int, default=8)
    args = p.parse_args(argv)
    print(worker_table(args.model, args.seconds, args.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
