"""The testbed: a Pi-class node behind a real-world link, against the strategies a user would
pick instead. Writes docs/testbed.md.

    make bench-testbed                                  # the whole matrix (long)
    python bench/bench_testbed.py --out docs/testbed.md --boards pi4 --links lan,lte
    python bench/bench_testbed.py --quick               # one short regime (the suite runs it)

**Device.** The node process runs in a cgroup CPU budget (shared/lab/cpu_budget.py), a share of
one core of this machine chosen so that the reference network, torchvision's MobileNetV2
(width 1.0, 224 px, fp32) on ONNX Runtime with one thread, takes in it what published
benchmarks measured on each board (BOARDS, with their sources). The page shows the emulated
time beside the published one. The node's own model (a 224 px multi-exit MobileNetV2 trained
here on the bundled digits, upscaled; RECIPE, cached in .cache/testbed/) then runs at that
board's speed.

**Link.** Node and broker talk through a shaping proxy (shared/lab/shaper.py): rate per
direction, one-way delay and jitter (LINKS); the worker sits beside the broker, unshaped and
unbudgeted, as a server would.

**Strategies.** The whole network on the node (``final``), each fixed split (``fixed:B``, early
exit at B with the default alpha, ``encoding = auto``) and the default node (audited I-SplitEE
on measured costs), each a real ``isplitee-device`` process replaying the same held-out digits
at a camera's pace; an independent subscriber collects every result.

Per strategy and regime: result latency p50 / p95 (capture to result), the node's CPU ms per
frame (its /proc ticks between its first and last result), uplink bytes per frame (what crossed
the shaped link towards the broker, MQTT included), accuracy against the labels and agreement
with the final classifier, and frames without a result (must be 0); ratios against the best
strategy of the regime, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import queue
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.lab.broker import DEV_CONFIG, broker_from
from shared.lab.clips import DigitClip, write_digit_clip
from shared.lab.cpu_budget import CpuBudget, unavailable
from shared.lab.pages import replace_section
from shared.lab.procs import device_command, worker_command
from shared.lab.report import format_table
from shared.lab.shaper import LinkProfile, LinkShaper
from shared.mqtt import MqttLink

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "testbed"


@dataclass(frozen=True)
class Board:
    key: str
    name: str
    published_ms: float  # MobileNetV2 1.0, 224 px, fp32, the whole network, one image
    source: str


BOARDS = (
    Board(
        "pi4",
        "Raspberry Pi 4 Model B (Cortex-A72, 4 x 1.5 GHz)",
        72.62,
        "ncnn's benchmark README, benchncnn with 4 threads, mobilenet_v2 average "
        "(https://github.com/Tencent/ncnn/blob/master/benchmark/README.md); XNNPACK's README "
        "gives 44 ms on the same board with 4 threads",
    ),
    Board(
        "zero2w",
        "Raspberry Pi Zero 2 W (Cortex-A53, 4 x 1 GHz)",
        129.15,
        "nnn112358/ncnn_benchmark_test, benchncnn on Debian 12 64-bit with 4 threads, "
        "mobilenet_v2 (https://github.com/nnn112358/ncnn_benchmark_test); 201 ms on one thread",
    ),
)

LINKS = {
    "lan": LinkProfile(up_mbit=100, down_mbit=100, delay_ms=1),
    "wifi": LinkProfile(up_mbit=20, down_mbit=20, delay_ms=5, jitter_ms=2),
    "lte": LinkProfile(up_mbit=3, down_mbit=20, delay_ms=40, jitter_ms=5),
}
"""The regimes' links: LAN 100 Mbit/s 1 ms, Wi-Fi 20 Mbit/s 5 ms, an LTE uplink 3 Mbit/s 40 ms
(one-way delays)."""

SCENES = {"clean": ("clean",), "noise2": ("gaussian_noise:2",)}

RECIPE = [
    "--dataset", "digits", "--input-size", "224", "--width", "0.5", "--epochs", "12",
    "--threads", "2", "--calibrate-on", "clean", "--seed", "0",
]  # fmt: skip
"""The testbed's model: 224 px, half width, trained here in minutes (about 100 s an epoch on
two cores), calibrated on clean images."""

FPS = 4.0
"""The camera's pace: a Pi Zero 2-class node runs the whole network in about 0.13 s."""


# -- the model -------------------------------------------------------------------------------
def ensure_model(recipe: Sequence[str] = RECIPE) -> Path:
    """The testbed's artefact, trained once per recipe and cached."""
    key = hashlib.sha256(" ".join(recipe).encode()).hexdigest()[:12]
    pt = CACHE / f"digits224-{key}.pt"
    artefact = pt.with_suffix(".isplitee")
    if not artefact.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"training the testbed model once ({' '.join(recipe)}) ...", flush=True)
        cmd = [sys.executable, "-m", "shared.lab.cli", "train", *recipe, "--no-progress"]
        subprocess.run([*cmd, "--out", str(pt)], check=True)
    return artefact


# -- the device --------------------------------------------------------------------------------
_TIME_WHOLE = (
    "import sys, time, numpy as np, onnxruntime as ort\n"
    "o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1\n"
    "s = ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n"
    "name = s.get_inputs()[0].name; x = np.random.rand(1, 3, 224, 224).astype(np.float32)\n"
    "sys.stdin.read(1)\n"
    "for _ in range(3): s.run(None, {name: x})\n"
    "t = []\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    a = time.perf_counter(); s.run(None, {name: x}); t.append(time.perf_counter() - a)\n"
    "print(sorted(t)[len(t) // 2] * 1e3)\n"
)


def reference_graph(where: Path) -> Path:
    """torchvision's MobileNetV2 (width 1.0, random weights: time does not depend on them) as
    an ONNX graph at 224 px: the network the boards' published figures are for."""
    import torch
    from torchvision.models import mobilenet_v2

    path = where / "mobilenet_v2_224.onnx"
    if not path.exists():
        model = mobilenet_v2(weights=None).eval()
        torch.onnx.export(model, (torch.rand(1, 3, 224, 224),), str(path), dynamo=False)
    return path


def whole_network_ms(graph: Path, budget: CpuBudget | None, runs: int = 15) -> float:
    """Median ms of one image through ``graph`` on one ONNX Runtime thread, in a process of its
    own (inside ``budget`` when given)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _TIME_WHOLE, str(graph), str(runs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if budget is not None:
        budget.add(proc.pid)
    out, _ = proc.communicate("go", timeout=600)
    return float(out)


def calibrate(
    board: Board, graph: Path, full_ms: float, tries: int = 5, runs: int = 15
) -> tuple[float, float]:
    """(share of a core, emulated ms): the budget under which the reference network takes the
    board's published time. Throttling costs more than its share at small quotas, so time is
    not simply proportional to 1 / share: the share is found by the secant method on
    log(time) against log(share), from the proportional first guess, to within 3 %."""
    target = board.published_ms
    share = min(1.0, full_ms / target)
    seen: list[tuple[float, float]] = []
    with CpuBudget(f"isplitee-calibrate-{os.getpid()}", share) as budget:
        for _ in range(tries):
            budget.set_share(share)
            emulated = whole_network_ms(graph, budget, runs)
            seen.append((share, emulated))
            if abs(emulated / target - 1) <= 0.03:
                break
            if len(seen) == 1:  # time ~ 1 / share to begin with
                share = share * emulated / target
            else:
                (s0, t0), (s1, t1) = seen[-2], seen[-1]
                slope = math.log(t1 / t0) / math.log(s1 / s0) if s1 != s0 and t1 != t0 else -1
                share = s1 * math.exp(math.log(target / t1) / slope)
            share = min(1.0, max(share, 0.002))
    best = min(seen, key=lambda p: abs(p[1] / target - 1))
    return best


# -- one run -------------------------------------------------------------------------------------
@dataclass
class Row:
    strategy: str
    board: str
    link: str
    scene: str
    results: int
    frames: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    cpu_ms: float  # the board's CPU time per frame: this machine's, over the budget's share
    up_bytes: float
    accuracy: float
    agreement: float

    @property
    def missing(self) -> int:
        return self.frames - self.results


def _pid_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1
    return int(fields[11]) + int(fields[12])  # utime + stime


STRATEGIES = {"final": ["--policy", "final"], "default": []}
"""Flags of each strategy; the fixed splits are added from the model's exits."""


def prepare_scene(
    scene: str, model: Path, frames: int, where: Path
) -> tuple[DigitClip, np.ndarray]:
    """The scene's clip and the final classifier's label for each of its frames: made once,
    replayed by every strategy of every regime."""
    from shared.artefact import load_artefact
    from shared.preprocess import FramePreprocessor

    clip = write_digit_clip(where / f"{scene}.avi", frames, schedule=SCENES[scene], seed=1)
    artefact = load_artefact(model)
    meta = artefact.meta
    prep = FramePreprocessor(meta.input_size, meta.mean, meta.std)
    chain = artefact.open_chain(1)
    whole = np.array([int(chain.edge(prep(f), 19)[1][-1].argmax()) for f in clip.frames])
    return clip, whole


def run_one(
    strategy: str,
    flags: list[str],
    board: Board,
    share: float,
    link: str,
    scene: str,
    model: Path,
    prepared: tuple[DigitClip, np.ndarray],
) -> Row:
    """One node (budgeted, behind the shaped link) and one worker on a private broker."""
    clip, whole = prepared
    frames = len(clip.labels)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = broker_from(DEV_CONFIG, tmp).start()
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache")}
        worker = subprocess.Popen(
            worker_command(broker.url, model, "tb-w"), stderr=subprocess.DEVNULL, env=env
        )
        reader = MqttLink(broker.url, "tb-reader", subscriptions=["isplitee/tb/result"])
        reader.start(10)
        got: dict[int, dict] = {}
        try:
            with (
                LinkShaper(broker.port, LINKS[link]) as shaper,
                CpuBudget(f"isplitee-testbed-{os.getpid()}", share) as budget,
            ):
                time.sleep(1.0)  # the worker subscribes before the node's first offload
                args = ["--fps", str(FPS), "--max-frames", str(frames), *flags]
                node = subprocess.Popen(
                    device_command(shaper.url, model, clip.path, "tb", *args),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                budget.add(node.pid)
                first = last = None
                try:
                    while node.poll() is None or not reader.inbox.empty():
                        try:
                            msg = reader.inbox.get(timeout=0.05)
                        except queue.Empty:
                            continue
                        r = json.loads(msg.payload)
                        got[r["frame_id"]] = r
                        mark = (_pid_ticks(node.pid), shaper.up.bytes)
                        first = first or mark
                        last = mark if mark[0] >= 0 else last
                finally:
                    if node.poll() is None:  # stopped from outside: the node goes too
                        node.kill()
                _out, err = node.communicate(timeout=600)
                if node.returncode != 0:
                    raise SystemExit(f"{strategy} node failed:\n{err[-2000:]}")
        finally:
            reader.stop()
            worker.terminate()
            worker.wait(30)
            broker.stop()
    results = [got[i] for i in sorted(got)]
    latencies = [r["latency_ms"] for r in results]
    span = max(len(results) - 1, 1)
    ticks = os.sysconf("SC_CLK_TCK")
    labels = np.array([r["label"] for r in results])
    ids = [r["frame_id"] for r in results]
    return Row(
        strategy,
        board.key,
        link,
        scene,
        len(results),
        frames,
        float(np.mean(latencies)),
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 95)),
        (last[0] - first[0]) / ticks * 1e3 / span / share if first and last else float("nan"),
        (last[1] - first[1]) / span if first and last else float("nan"),
        float(np.mean(labels == clip.labels[ids])),
        float(np.mean(labels == whole[ids])),
    )


# -- the page ------------------------------------------------------------------------------------
def calibration_table(rows: list[tuple[Board, float, float]], full_ms: float) -> str:
    return format_table(
        ["board", "published ms", "share of a core here", "emulated ms", "source"],
        [
            [b.name, f"{b.published_ms:.1f}", f"{share:.3f}", f"{ms:.1f}", b.source]
            for b, share, ms in rows
        ],
    ) + (
        f"\n\nThe reference network here, unbudgeted, one thread: {full_ms:.1f} ms. A budget "
        "gives the node 1 ms of CPU per period (the kernel's smallest quota), the period "
        "1 ms / share."
    )


def regime_table(rows: list[Row]) -> str:
    """One regime's strategies side by side; ``x best``: mean latency over the best mean."""
    best = min(r.mean_ms for r in rows)
    return format_table(
        [
            "strategy",
            "mean ms",
            "p50 ms",
            "p95 ms",
            "x best",
            "node CPU ms/frame (board)",
            "uplink B/frame",
            "accuracy %",
            "agreement %",
            "no result",
        ],
        [
            [
                r.strategy,
                f"{r.mean_ms:.0f}",
                f"{r.p50_ms:.0f}",
                f"{r.p95_ms:.0f}",
                f"{r.mean_ms / best:.2f}",
                f"{r.cpu_ms:.0f}",
                f"{r.up_bytes:,.0f}",
                f"{100 * r.accuracy:.1f}",
                f"{100 * r.agreement:.1f}",
                str(r.missing),
            ]
            for r in rows
        ],
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, help="write the page (docs/testbed.md)")
    p.add_argument("--boards", default=",".join(b.key for b in BOARDS))
    p.add_argument("--links", default=",".join(LINKS))
    p.add_argument("--scenes", default=",".join(SCENES))
    p.add_argument("--frames", type=int, default=120, help="frames per run")
    p.add_argument("--model", type=Path, help="an artefact instead of the testbed's own")
    p.add_argument("--quick", action="store_true", help="one board, LAN, clean, 2 strategies")
    args = p.parse_args(argv)
    # A stop (SIGTERM, Ctrl-C) unwinds through every finally: brokers, workers, nodes and
    # cgroups are taken down, none left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    reason = unavailable()
    if reason is not None:
        print(f"bench_testbed: skipped: {reason}", file=sys.stderr)
        return 0
    boards = [b for b in BOARDS if b.key in args.boards.split(",")]
    links, scenes, frames = args.links.split(","), args.scenes.split(","), args.frames
    if args.quick:
        boards, links, scenes, frames = boards[:1], ["lan"], ["clean"], min(frames, 6)
    model = args.model or ensure_model()
    from shared.artefact import load_artefact

    exits = load_artefact(model).meta.exit_blocks
    strategies = dict(STRATEGIES)
    if not args.quick:
        strategies.update({f"fixed:{b}": ["--policy", f"fixed:{b}"] for b in exits})
    with tempfile.TemporaryDirectory() as tmp:
        graph = reference_graph(CACHE if CACHE.exists() else Path(tmp))
        full_ms = whole_network_ms(graph, None)
        effort = {"tries": 3, "runs": 7} if args.quick else {}
        calibrated = [(b, *calibrate(b, graph, full_ms, **effort)) for b in boards]
    print(calibration_table(calibrated, full_ms), flush=True)
    sections = []
    with tempfile.TemporaryDirectory() as clips:
        prepared = {scene: prepare_scene(scene, model, frames, Path(clips)) for scene in scenes}
        for board, share, _ms in calibrated:
            for link in links:
                for scene in scenes:
                    rows = []
                    for name, flags in strategies.items():
                        clip = prepared[scene]
                        row = run_one(name, flags, board, share, link, scene, model, clip)
                        print(row, flush=True)
                        rows.append(row)
                    title = f"### {board.key}, {link}, {scene}"
                    sections += [title, "", regime_table(rows), ""]
                    print(title + "\n" + regime_table(rows), flush=True)
    if args.out:
        command = "python bench/bench_testbed.py " + " ".join(argv or sys.argv[1:])
        body = "\n".join(
            [
                f"Command: `{command}` on this machine, one run per regime, strategies side by "
                f"side; {frames} frames per run at {FPS:g} fps.",
                "",
                "### The emulated boards",
                "",
                calibration_table(calibrated, full_ms),
                "",
                *sections,
            ]
        )
        replace_section(args.out, "testbed", body)
        print(f"wrote the testbed section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
