"""End to end on loopback: 1, 4 and 8 camera nodes, one cloud worker, one private Mosquitto.

    python bench/bench_pipeline.py --model models/digits.pt             # 1, 4, 8 nodes; ~2 min
    python bench/bench_pipeline.py --model models/digits.pt --nodes 1   # one node; ~40 s
    python bench/bench_pipeline.py --model models/digits.pt --quick     # 1, 2 nodes; seconds

Every node is a real ``isplitee-device`` process (one torch thread; ONNX Runtime edge half, the
audited policy, ``encoding = "auto"``) replaying a video of held-out digits (clean for the first
half, then Gaussian noise level 2) at a camera's pace (``--fps``, 30); the worker is one real
``isplitee-cloud`` process (``--workers``, one thread each, default micro-batching); an
independent subscriber collects every result. The fleet grows in steps on the same broker and
worker (1 node, then 4, then 8): at each step the new nodes' start-up (torch import, ONNX load;
slow with 8 processes on 2 cores) is waited out, and only frames captured in the ``--seconds``
after every node has published a result are counted.

The nodes price splits with the paper's cost model (``--cost paper``, the default here): with
costs measured on this x86 machine the whole 32 px network is cheaper on a node than any round
trip through the broker, so a node hardly ever offloads and there is little pipeline to measure
(a Pi is several times slower at the edge half; ``--cost measured`` shows it).

Per step: frames/s answered in total, end-to-end latency (capture to result) p50/p95/p99 over
all frames; edge compute: the node's own preprocess and ONNX Runtime edge half (one thread),
timed per split in this process at a camera's pace during the same window (so under the same
load), averaged over the frames' splits; the worker's mean compute per batch (its /metrics,
over the window); and the pipeline overhead: per cloud-answered frame, its latency - its
split's edge compute - the worker's mean compute, p50 (encoding, two trips through the broker,
decoding, the worker's queue, reply handling, the result). The machine's CPU use over the
window (ours by process, and everything else) and the load average say how much of any growth
is two cores shared by everything. For scale, a bare paho v5 request/reply through the same
broker is timed in the same run; the first step also gets the detailed table (accuracy, rates,
cost reduction under the paper's cost model next to offloading everything at block 3).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from load import start_workers, stop_workers
from shared.checkpoint import load_checkpoint
from shared.cost import PAPER_GAMMA, PAPER_OFFLOAD
from shared.lab.broker import DEV_CONFIG, broker_from
from shared.lab.clips import whole_model_predictions, write_digit_clip
from shared.lab.procs import device_command
from shared.lab.report import format_table
from shared.mqtt import MqttLink
from shared.protocol import NUM_BLOCKS

ROOT = Path(__file__).resolve().parent.parent

STARTUP_BUDGET_S = 60.0
"""Most seconds a step's new nodes may take to publish their first result (8 on 2 cores)."""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def bare_request_reply(url: str, n: int, every_s: float = 0.0) -> list[float]:
    """Round trips of a 1 kB request and its reply through the broker, Nagle off both ends;
    back to back, or one every ``every_s`` as a camera sends them. Paced, every process on the
    path (client, broker, echo) has gone idle between trips and pays its wake-up again, which
    is the floor the pipeline's own overhead at a camera's pace should be read against."""
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
        if every_s:
            time.sleep(every_s)
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


# -- what the machine and the worker did over a window -------------------------------------------


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, all cores."""
    f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(f[:8])  # user nice system idle iowait irq softirq steal
    return total - f[3] - f[4], total


def _pid_ticks(pid: int) -> int:
    try:
        after = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(after[11]) + int(after[12])  # utime + stime


def _worker_sums(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        for name in ("compute_ms", "queue_ms", "batch_size"):
            for part in ("sum", "count"):
                if line.startswith(f"isplitee_worker_{name}_{part}"):
                    out[f"{name}_{part}"] = float(line.rsplit(" ", 1)[1])
    return out


@dataclass
class Snapshot:
    wall: float
    cpu: tuple[int, int]
    pids: dict[str, int]  # role -> jiffies
    worker: dict[str, float]
    loadavg: float

    @classmethod
    def take(cls, roles: dict[str, list[int]], worker_port: int) -> Snapshot:
        pids = {r: sum(_pid_ticks(p) for p in ps) for r, ps in roles.items()}
        load = float(Path("/proc/loadavg").read_text().split()[0])
        return cls(time.time(), _cpu_ticks(), pids, _worker_sums(worker_port), load)


def _window_usage(a: Snapshot, b: Snapshot) -> dict:
    busy, total = b.cpu[0] - a.cpu[0], b.cpu[1] - a.cpu[1]
    tick = os.sysconf("SC_CLK_TCK")
    seconds = b.wall - a.wall
    cores = os.cpu_count() or 1

    def mean(name: str) -> float:
        n = b.worker.get(f"{name}_count", 0) - a.worker.get(f"{name}_count", 0)
        s = b.worker.get(f"{name}_sum", 0) - a.worker.get(f"{name}_sum", 0)
        return s / n if n else float("nan")

    ours = {r: 100 * (b.pids[r] - a.pids[r]) / tick / seconds for r in b.pids}
    machine = 100 * busy / max(total, 1)
    return {
        "machine_cpu_busy_pct": machine,
        "cores": cores,
        "cpu_pct_of_one_core": ours,
        # What else ran on the machine meanwhile (another engineer's jobs), in % of all cores.
        "others_cpu_pct": max(0.0, machine - sum(ours.values()) / cores),
        "worker_compute_ms_mean": mean("compute_ms"),
        "worker_queue_ms_mean": mean("queue_ms"),
        "worker_batch_mean": mean("batch_size"),
        "loadavg_1min_end": b.loadavg,
    }


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Collector:
    """Every result published, with the time it arrived, from a thread of its own."""

    link: MqttLink
    results: list[dict] = field(default_factory=list)
    first: dict[str, float] = field(default_factory=dict)  # device -> wall time of 1st result
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.link.start(10)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = json.loads(self.link.inbox.get(timeout=0.1).payload)
            except queue.Empty:
                continue
            self.results.append(r)
            self.first.setdefault(r["device_id"], time.time())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.link.stop()


class Shadow:
    """The node's own edge path (preprocess, then the ONNX Runtime edge half and its exits, on
    one thread) timed in this process at a camera's pace while a window runs, cycling over the
    splits: each split's edge compute under the load the nodes are under, at a cost of one more
    camera's worth of CPU (a few per cent of a core)."""

    def __init__(self, edge, prep, frames: np.ndarray, blocks, fps: float) -> None:
        self.edge, self.prep, self.frames, self.blocks = edge, prep, frames, tuple(blocks)
        self.period = 1.0 / fps
        self._turn = 0

    @classmethod
    def of(cls, ckpt, video, fps: float) -> Shadow:
        from device.config import DeviceConfig
        from device.torch_edge import onnx_edge
        from shared.preprocess import FramePreprocessor

        cache = DeviceConfig(model=ckpt.path).cache_dir_path()
        meta = ckpt.meta
        prep = FramePreprocessor(meta.input_size, meta.mean, meta.std)
        return cls(onnx_edge(ckpt, cache, threads=1), prep, video.frames, meta.arm_blocks, fps)

    def run(self, until: float) -> dict[int, float]:
        """Median milliseconds per split from now until the wall time ``until``."""
        samples: dict[int, list[float]] = {b: [] for b in self.blocks}
        while (now := time.time()) < until:
            block = self.blocks[self._turn % len(self.blocks)]
            frame = self.frames[self._turn % len(self.frames)]
            self._turn += 1
            t0 = time.perf_counter()
            self.edge(self.prep(frame), block)
            samples[block].append((time.perf_counter() - t0) * 1e3)
            time.sleep(max(0.0, min(self.period, until - now) - (time.time() - now)))
        return {b: statistics.median(v) if v else float("nan") for b, v in samples.items()}


def _captured(r: dict) -> float:
    return datetime.fromisoformat(r["captured_at"]).timestamp()


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@dataclass
class Fleet:
    """The camera nodes of a run: real ``isplitee-device`` processes, each logging to a file in
    ``workdir``, grown step by step and stopped together."""

    url: str
    model: Path
    clip: Path
    workdir: Path
    fps: float
    cost: str
    nodes: list[subprocess.Popen] = field(default_factory=list)
    logs: list = field(default_factory=list)

    def grow(self, count: int) -> None:
        """Start nodes until there are ``count``."""
        for i in range(len(self.nodes), count):
            self.logs.append(open(self.workdir / f"node{i}.log", "wb"))  # noqa: SIM115 - in stop
            cmd = device_command(
                self.url,
                self.model,
                self.clip,
                f"bench-cam{i}",
                "--fps",
                f"{self.fps:g}",
                "--cost",
                self.cost,
                "--log-level",
                "WARNING",
            )
            self.nodes.append(subprocess.Popen(cmd, stdout=self.logs[-1], stderr=self.logs[-1]))

    def any_stopped(self) -> bool:
        return any(p.poll() is not None for p in self.nodes)

    def wait_started(self, first: dict[str, float], count: int, startup_s: float) -> None:
        """Until ``count`` nodes have published a result (``first``: device -> its first one's
        time); a node that stops or a start-up over ``startup_s`` ends the run with the logs."""
        deadline = time.monotonic() + startup_s
        while len(first) < count:
            if time.monotonic() > deadline or self.any_stopped():
                tails = "\n".join(_tail(self.workdir / f"node{i}.log") for i in range(count))
                raise SystemExit(f"{count} nodes did not all start:\n{tails}")
            time.sleep(0.1)

    def stop(self) -> None:
        for p in self.nodes:
            p.terminate()  # a clean stop: each node settles what it has in flight
        for p in self.nodes:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self.logs:
            f.close()


Window = tuple[int, Snapshot, Snapshot, dict[int, float]]
"""One step's measurement: nodes, the snapshots around it, and edge ms per split."""


def _window(
    fleet: Fleet,
    count: int,
    collector: Collector,
    shadow: Shadow,
    roles: dict[str, list[int]],
    worker_port: int,
    seconds: float,
    startup_s: float,
) -> Window:
    """Grow the fleet to ``count`` nodes, wait out their start-up, then measure ``seconds``."""
    fleet.grow(count)
    fleet.wait_started(collector.first, count, startup_s)
    roles["nodes"] = [p.pid for p in fleet.nodes]
    begin = Snapshot.take(roles, worker_port)
    edge_ms = shadow.run(begin.wall + seconds)
    end = Snapshot.take(roles, worker_port)
    if fleet.any_stopped():
        raise SystemExit("a node stopped during the window (clip too short?)")
    return count, begin, end, edge_ms


def _step(results: list[dict], window: Window, fps: float) -> dict:
    """A step's figures from the results captured in its window."""
    count, a, b, edge_ms = window
    rs = [r for r in results if a.wall <= _captured(r) < b.wall]
    step = summarise_step(rs, count, b.wall - a.wall, fps)
    step.update(_window_usage(a, b))
    step["edge_ms_by_split"] = {str(k): v for k, v in edge_ms.items()}
    step["edge_compute_ms_mean"] = (
        statistics.fmean(edge_ms[r["split_block"]] for r in rs) if rs else float("nan")
    )
    # Per cloud-answered frame: what is left of its latency once its own split's edge
    # compute and the worker's compute are taken out.
    left = [
        r["latency_ms"] - edge_ms[r["split_block"]] - step["worker_compute_ms_mean"]
        for r in rs
        if r["source"] == "cloud"
    ]
    step["overhead_ms_p50"] = percentile(left, 50)
    step["overhead_ms_p95"] = percentile(left, 95)
    return step


def _bare_figures(bare: list[float], paced: list[float], fps: float) -> dict:
    """The bare request/reply round trips, back to back and at a camera's pace."""
    return {
        "bare_request_reply_ms": {"p50": percentile(bare, 50), "p95": percentile(bare, 95)},
        "bare_request_reply_paced_ms": {
            "p50": percentile(paced, 50),
            "p95": percentile(paced, 95),
            "every_ms": 1e3 / fps,
        },
    }


def run(
    model: Path,
    steps: list[int],
    seconds: float,
    workdir: Path,
    fps: float = 30.0,
    workers: int = 1,
    startup_s: float = STARTUP_BUDGET_S,
    cost: str = "paper",
) -> dict:
    import torch

    torch.set_num_threads(1)  # the shadow runs the node's edge path as a node does: one thread
    ckpt = load_checkpoint(model)
    # Long enough for the first node to outlive every step's start-up and window.
    frames = int(fps * len(steps) * (seconds + startup_s)) + 1
    video = write_digit_clip(workdir / "bench.avi", frames, seed=1)
    broker = broker_from(DEV_CONFIG, workdir).start()
    fleet = Fleet(broker.url, model, video.path, workdir, fps, cost)
    wprocs: list[subprocess.Popen] = []
    collector = None
    windows: list[Window] = []
    try:
        bare = bare_request_reply(broker.url, 300)
        paced = bare_request_reply(broker.url, max(20, min(150, int(seconds * fps))), 1.0 / fps)
        reader = MqttLink(broker.url, "bench-reader", subscriptions=["isplitee/+/result"])
        collector = Collector(reader)
        collector.start()
        # The node's own edge path for the shadow, exported (into the nodes' default cache, so
        # 8 nodes do not export at once) while the worker starts.
        made: dict = {}
        export = threading.Thread(target=lambda: made.update(shadow=Shadow.of(ckpt, video, fps)))
        export.start()
        wprocs, ports = start_workers(broker.url, model, workers, "bench-w")
        export.join()
        shadow = made["shadow"]
        roles = {"broker": [broker.proc.pid], "worker": [p.pid for p in wprocs]}
        roles["bench"] = [os.getpid()]
        for count in steps:
            windows.append(
                _window(fleet, count, collector, shadow, roles, ports[0], seconds, startup_s)
            )
        time.sleep(0.5)  # the last window's frames get their results
    finally:
        fleet.stop()
        if collector is not None:
            collector.stop()
        stop_workers(wprocs)
        broker.stop()
    out = {
        "fps_per_node": fps,
        "workers": workers,
        "cost": cost,
        "seconds": seconds,
        **_bare_figures(bare, paced, fps),
        "steps": [_step(collector.results, w, fps) for w in windows],
    }
    count, a, b, _ = windows[0]
    first = [r for r in collector.results if a.wall <= _captured(r) < b.wall]
    out["detail"] = summarise_quality(first, video.labels, ckpt, video.frames)
    return out


def summarise_step(results: list[dict], nodes: int, seconds: float, fps: float) -> dict:
    src = [r["source"] for r in results]
    lat = {s: [r["latency_ms"] for r in results if r["source"] == s] for s in set(src)}
    lat["all"] = [r["latency_ms"] for r in results]
    return {
        "nodes": nodes,
        "results": len(results),
        "window_s": seconds,
        "fps": len(results) / seconds,
        "fps_offered": nodes * fps,
        "latency_ms": {
            k: {
                "p50": percentile(v, 50),
                "p95": percentile(v, 95),
                "p99": percentile(v, 99),
                "mean": statistics.fmean(v) if v else float("nan"),
                "n": len(v),
            }
            for k, v in lat.items()
        },
        "edge_rate": src.count("edge") / max(len(src), 1),
        "fallback_rate": src.count("fallback") / max(len(src), 1),
    }


def summarise_quality(results: list[dict], labels, ckpt, frames) -> dict:
    """Accuracy, rates and the paper's cost of one window's results (every node replays the
    same clip, so a result's frame id indexes its labels)."""
    ids = np.array([r["frame_id"] for r in results], dtype=int)
    pred = np.array([r["label"] for r in results])
    uniq = np.unique(ids)
    whole = dict(zip(uniq.tolist(), whole_model_predictions(ckpt, frames[uniq]), strict=True))
    src = [r["source"] for r in results]
    cost = [
        PAPER_GAMMA * r["split_block"] + (PAPER_OFFLOAD if r["source"] != "edge" else 0.0)
        for r in results
    ]
    full = PAPER_GAMMA * NUM_BLOCKS
    n = max(len(results), 1)
    final = np.array([whole[i] for i in ids.tolist()])
    nan = float("nan")
    return {
        "results": len(results),
        "accuracy": float((pred == labels[ids]).mean()) if len(ids) else nan,
        "final_accuracy": float((final == labels[ids]).mean()) if len(ids) else nan,
        "agreement_with_final": float((pred == final).mean()) if len(ids) else nan,
        "edge_rate": src.count("edge") / n,
        "offload_rate": (src.count("cloud") + src.count("fallback")) / n,
        "fallback_rate": src.count("fallback") / n,
        "split_blocks": dict(Counter(str(r["split_block"]) for r in results).most_common()),
        "cost_reduction": 1 - statistics.fmean(cost) / full if cost else nan,
        "baseline_offload_all_block3": 1 - (PAPER_GAMMA * 3 + PAPER_OFFLOAD) / full,
    }


# -- tables ------------------------------------------------------------------------------------


def steps_table(s: dict) -> str:
    rows = []
    for st in s["steps"]:
        lat, cpu = st["latency_ms"], st["cpu_pct_of_one_core"]
        rows.append(
            [
                f"{st['nodes']} x {s['fps_per_node']:g} fps, {s['workers']} worker",
                f"{st['fps']:.1f} / {st['fps_offered']:g}",
                f"{lat['all']['p50']:.2f} / {lat['all']['p95']:.2f} / {lat['all']['p99']:.2f}",
                f"{st['edge_compute_ms_mean']:.2f}",
                f"{st['worker_compute_ms_mean']:.2f} ({st['worker_batch_mean']:.2f})",
                f"{st['worker_queue_ms_mean']:.2f}",
                f"{st['overhead_ms_p50']:.2f}",
                f"{100 * st['edge_rate']:.0f}",
                f"{st['machine_cpu_busy_pct']:.0f} ({st['others_cpu_pct']:.0f})",
                f"{cpu['nodes']:.0f} / {cpu['worker']:.0f} / {cpu['broker']:.0f}"
                f" / {cpu['bench']:.0f}",
                f"{st['loadavg_1min_end']:.2f}",
            ]
        )
    headers = [
        "nodes, workers",
        "frames/s answered / offered",
        "latency p50 / p95 / p99 ms",
        "edge compute mean ms",
        "worker compute mean ms (batch)",
        "worker queue mean ms",
        "overhead p50 ms",
        "edge answers %",
        "machine CPU busy % (other jobs)",
        "CPU % of one core: nodes / worker / broker / bench",
        "load avg 1 min",
    ]
    return format_table(headers, rows)


def detail_table(s: dict) -> str:
    st, d = s["steps"][0], s["detail"]
    bare, paced = s["bare_request_reply_ms"], s["bare_request_reply_paced_ms"]
    rows = [
        ["results in the window", f"{d['results']} ({st['window_s']:.1f} s)"],
        [
            f"frames/s ({st['nodes']} node(s), {s['workers']} worker)",
            f"{st['fps']:.1f} (camera at {s['fps_per_node']:g} fps)",
        ],
        ["bare paho v5 request/reply p50 / p95 ms", f"{bare['p50']:.2f} / {bare['p95']:.2f}"],
        [
            f"the same, one every {paced['every_ms']:.0f} ms (camera pace) p50 / p95 ms",
            f"{paced['p50']:.2f} / {paced['p95']:.2f}",
        ],
    ]
    for k, v in sorted(st["latency_ms"].items()):
        rows.append([f"latency {k} p50 / p95 ms (n={v['n']})", f"{v['p50']:.2f} / {v['p95']:.2f}"])
    rows += [
        ["accuracy vs labels", f"{100 * d['accuracy']:.1f} %"],
        ["final layer accuracy, same frames", f"{100 * d['final_accuracy']:.1f} %"],
        ["agreement with the final layer", f"{100 * d['agreement_with_final']:.1f} %"],
        [
            "edge / offload / fallback",
            f"{100 * d['edge_rate']:.1f} / {100 * d['offload_rate']:.1f}"
            f" / {100 * d['fallback_rate']:.1f} %",
        ],
        ["frames per split block", ", ".join(f"{b}: {n}" for b, n in d["split_blocks"].items())],
        [
            "edge compute ms per split (shadow, same window)",
            ", ".join(f"{b}: {v:.2f}" for b, v in st["edge_ms_by_split"].items()),
        ],
        ["worker compute per batch, mean ms", f"{st['worker_compute_ms_mean']:.2f}"],
        [
            "pipeline overhead p50 / p95 ms (cloud frames: latency - edge - worker)",
            f"{st['overhead_ms_p50']:.2f} / {st['overhead_ms_p95']:.2f} (target p50 <= 2)",
        ],
        ["cost reduction (paper cost model)", f"{100 * d['cost_reduction']:.1f} %"],
        ["baseline: offload all at block 3", f"{100 * d['baseline_offload_all_block3']:.1f} %"],
    ]
    return format_table(["measure", "value"], rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "digits.pt")
    p.add_argument("--nodes", default="1,4,8", help="node counts, growing (default 1,4,8)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured window per step")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="1 then 2 nodes, 1.5 s windows")
    p.add_argument("--fps", type=float, default=30.0, help="camera frame rate of every node")
    p.add_argument("--cost", choices=("paper", "measured"), default="paper", help="nodes' costs")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    steps = [int(n) for n in ("1,2" if args.quick else args.nodes).split(",")]
    if steps != sorted(set(steps)) or steps[0] < 1:
        p.error(f"--nodes should be growing positive counts, got {args.nodes!r}")
    seconds = 1.5 if args.quick else args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(
            args.model,
            steps,
            seconds,
            Path(tmp),
            args.fps,
            args.workers,
            startup_s=20.0 if args.quick else STARTUP_BUDGET_S,
            cost=args.cost,
        )
    print(steps_table(summary))
    print()
    print(detail_table(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if all(st["results"] for st in summary["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
