"""Cloud worker throughput: micro-batching against batch 1, at 1, 4 and 8 concurrent nodes, and
two workers against one on the shared subscription.

    python bench/bench_worker.py --model models/digits.pt          # ~2 min; part of make bench
    python bench/bench_worker.py --model models/digits.pt --quick  # 8 nodes only, 1 s each

Each simulated node is a real MQTT v5 client keeping ``--window`` activations in flight (a
closed loop: every reply sends the next), so the workers, not the nodes' pacing, set the rate.
Workers are real ``isplitee-cloud`` processes on one thread each, measured side by side in one
run; the figure is replies per second over ``--seconds``.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

from load import ActivationTemplate, start_workers, stop_workers
from shared.lab.broker import DEV_CONFIG, broker_from
from shared.lab.report import format_table
from shared.mqtt import MqttLink
from shared.protocol import Topics

ROOT = Path(__file__).resolve().parent.parent


class ClosedLoopNode(threading.Thread):
    def __init__(
        self, url: str, device_id: str, template: ActivationTemplate, window: int, seconds: float
    ) -> None:
        super().__init__(daemon=True)
        self.device_id, self.window, self.seconds = device_id, window, seconds
        self.template = template
        self.topics = Topics()
        self.link = MqttLink(url, f"bw-{device_id}-{time.monotonic_ns()}",
                             subscriptions=[self.topics.reply(device_id)])  # fmt: skip
        self.replies = 0

    def _send(self, frame: int) -> None:
        self.link.publish(
            self.topics.activation(self.device_id),
            self.template.payload(self.device_id, frame),
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


def measure(model: Path, template: ActivationTemplate, nodes: int, workers: int,
            batch: int | None, seconds: float, window: int,
            backend: str = "auto") -> float:  # fmt: skip
    """Replies per second for one configuration, on a broker of its own; ``backend`` runs
    the workers' cloud half (their ``backend`` setting, through the environment)."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = broker_from(DEV_CONFIG, Path(tmp)).start()
        procs: list = []
        before = os.environ.get("ISPLITEE_BACKEND")
        try:
            extra = () if batch is None else ("--max-batch", str(batch))
            os.environ["ISPLITEE_BACKEND"] = backend
            procs, _ = start_workers(broker.url, model, workers, "bw", *extra)
            sims = [ClosedLoopNode(broker.url, f"n{i}", template, window, seconds)
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
            if before is None:
                os.environ.pop("ISPLITEE_BACKEND", None)
            else:
                os.environ["ISPLITEE_BACKEND"] = before
            stop_workers(procs)
            broker.stop()


def batching_ceiling(model: Path, repeats: int = 9) -> dict[int, tuple[float, float]]:
    """The worker's cloud half at block 3 on ONNX Runtime (one thread, as the workers run),
    ms per call at batch 1 and batch 8, at the model's input size and at 224 px (the size a
    model trained on a user's photos runs at; the same architecture untrained, since time does
    not depend on the weights): what micro-batching can save per activation."""
    import torch

    from common import median_ms, session
    from shared.checkpoint import build_model, load_checkpoint
    from shared.onnx_halves import CloudHalf, export

    ckpt = load_checkpoint(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for size in dict.fromkeys((ckpt.meta.input_size, 224)):
                same = size == ckpt.meta.input_size
                net = (ckpt.model if same else build_model(ckpt.meta)).eval()
                with torch.inference_mode():
                    acts = net.edge(torch.rand(8, 3, size, size), 3).activation
                path = Path(tmp) / f"cloud-{size}.onnx"
                export(CloudHalf(net, 3), acts[:1].clone(), path, dynamic_batch=True)
                run = session(path, threads=1)
                one, eight = acts[:1].numpy().copy(), acts.numpy().copy()
                ms = median_ms(
                    {"b1": lambda r=run, a=one: r(a), "b8": lambda r=run, a=eight: r(a)},
                    repeats,
                    inner=3 if size > 64 else 20,
                )
                out[size] = (ms["b1"], ms["b8"])
    finally:
        torch.set_num_threads(threads)
    return out


def worker_table(model: Path, seconds: float = 6.0, window: int = 8, *, quick: bool = False) -> str:
    """The table and its verdicts; ``quick``: 8 nodes only, so a test can run every line."""
    template = ActivationTemplate.of(model)
    rows, at8 = [], {}
    for nodes in (8,) if quick else (1, 4, 8):
        for backend in ("onnxruntime", "torch"):
            one = measure(model, template, nodes, 1, 1, seconds, window, backend)
            batched = measure(model, template, nodes, 1, None, seconds, window, backend)
            if nodes == 8:
                at8[backend] = (one, batched)
            rows.append([f"{nodes} node(s), 1 worker", backend, f"{one:.0f}", f"{batched:.0f}",
                         f"{batched / one:.2f}"])  # fmt: skip
    two = measure(model, template, 8, 2, None, seconds, window)
    # quick: the 8-node micro-batched run above is the same configuration, so it stands in
    single = (
        at8["onnxruntime"][1] if quick else measure(model, template, 8, 1, None, seconds, window)
    )
    table = format_table(
        ["load", "cloud half", "batch 1 /s", "micro-batched /s", "x batching"], rows
    )
    verdict = ", ".join(
        f"{b} {m / o:.2f}x ({'met' if m >= 2 * o else 'missed'})" for b, (o, m) in at8.items()
    )
    (ort_one, ort_batched), (_, torch_batched) = at8["onnxruntime"], at8["torch"]
    ceiling = batching_ceiling(model, repeats=3 if quick else 9)
    size = min(ceiling)
    c1, c8 = ceiling[size]
    per_message = 1e3 / ort_one  # ms the worker spends per activation at batch 1, 8 nodes
    bound = per_message / max(per_message - (c1 - c8 / 8), 1e-9)
    big1, big8 = ceiling[224]
    compute_bound = big1 / (big8 / 8)
    reach = (
        "out of reach" if max(bound, compute_bound, ort_batched / ort_one) < 2 else "not ruled out"
    )
    return (
        f"{table}\n\nTarget: micro-batching at least 2x batch 1 with 8 nodes: {verdict}. "
        "Batching pays by sharing per-call overhead across a batch; with the cloud half on "
        "ONNX Runtime (the worker's default) a batch-1 call is already cheap and the worker is "
        f"bound by receiving and answering messages: at 8 nodes it answers {ort_one:.0f} /s at "
        f"batch 1 and {ort_batched:.0f} /s micro-batched, against {torch_batched:.0f} /s for "
        "eager PyTorch micro-batched.\n\n"
        f"How far micro-batching can go on ONNX Runtime (Amdahl's law, an estimate from the "
        f"cloud half timed at block 3 in this run, one thread): at 8 nodes the worker spends "
        f"{per_message:.3f} ms per activation at batch 1, about {c1:.3f} ms of it in the cloud "
        f"half ({size} px); a batch of 8 takes {c8:.3f} ms, {c8 / 8:.3f} ms an activation, so "
        f"if every other per-message cost stays as it is batching gains about {bound:.2f}x "
        f"(measured {ort_batched / ort_one:.2f}x; the two timings come from different processes "
        f"on a shared machine). At 224 px, where the cloud half is most of the work "
        f"({big1:.2f} ms at batch 1, {big8:.2f} ms at batch 8), a batch of 8 runs "
        f"{compute_bound:.2f}x faster per activation: the most batching could give there even "
        f"if receiving and answering cost nothing. The 2x target is {reach} for ONNX Runtime "
        "on this CPU at either size; eager PyTorch, whose batch-1 call is dear, meets it.\n\n"
        f"8 nodes, micro-batched: 2 workers {two:.0f} /s against 1 worker "
        f"{single:.0f} /s = {two / single:.2f}x (this machine has 2 cores, shared with the "
        f"broker and the simulated nodes; each node keeps {window} activations in flight; "
        f"{seconds:g} s per configuration)."
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "digits.pt")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="8 nodes only, 1 s per configuration")
    args = p.parse_args(argv)
    seconds = 1.0 if args.quick else args.seconds
    print(worker_table(args.model, seconds, args.window, quick=args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
