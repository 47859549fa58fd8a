"""The testbed: a Pi-class node behind a real-world link, against the strategies a user would
pick instead. Writes docs/testbed.md.

    make bench-testbed                                  # every regime (~40 min) and the day (~12)
    python bench/bench_testbed.py --out docs/testbed.md --boards pi4 --links lan,lte
    python bench/bench_testbed.py --quick               # one short regime (the suite runs it)
    python bench/bench_testbed.py --boards zero2w --links lte --scenes clean \\
        --strategies default,frame,final --node-log     # one regime, and what its nodes timed
    python bench/bench_testbed.py --out docs/testbed.md --day   # and the ten-minute day
    python bench/bench_testbed.py --out docs/testbed.md --day-only --boards pi4   # the day alone
    python bench/bench_testbed.py --summarise docs/testbed.md --readme README.md  # README's block

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

**Strategies.** The whole network on the node (``final``), the frame's JPEG to the server for
every frame (``frame``, what remote detectors do: ``fixed:0``), each fixed split alone
(``fixed:B``, early exit at B with the default alpha, activations in ``encoding = auto``, no
frame offload) and the default node (audited I-SplitEE on measured costs, frame offload on),
each a real ``isplitee-device`` process replaying the same held-out digits at a camera's pace,
every strategy of a regime at once (each with its own broker, worker, link and budget, so the
load of this shared machine falls on all alike); an independent subscriber collects every
result.

Per strategy and regime: result latency mean / p50 / p95 (capture to delivery at that
subscriber), the node's CPU ms per frame (its /proc ticks between its first and last result),
uplink bytes per frame (what crossed the shaped link towards the broker, MQTT included), the
highest frame rate it holds (the same strategy fed frames as fast as it takes them, one
strategy at a time: a file source drops none), the split blocks its results came from,
accuracy against the labels and agreement with the final classifier, and frames without a
result (must be 0); ratios against the best strategy of the regime, measured side by side in
one run. ``--day``: every strategy at once through ten minutes of a changing link and scene
(DAY_LEGS, DAY_SCENES), with a plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from shared.lab.broker import DEV_CONFIG, broker_from
from shared.lab.clips import DigitClip, write_digit_clip
from shared.lab.cpu_budget import CpuBudget, unavailable
from shared.lab.pages import replace_section
from shared.lab.procs import device_command, start_held_device, worker_command
from shared.lab.report import format_table
from shared.lab.shaper import LinkProfile, LinkShaper
from shared.mqtt import MqttLink
from shared.protocol import Topics

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
    "print('loaded', flush=True)\n"
    "sys.stdin.readline()\n"
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
    own (inside ``budget`` when given, once it has loaded: a budget stretches its imports too,
    which are no part of the figure)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _TIME_WHOLE, str(graph), str(runs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "loaded":
        proc.kill()
        raise RuntimeError(f"the timing process for {graph} exited before it loaded the graph")
    if budget is not None:
        budget.add(proc.pid)
    out, _ = proc.communicate("go\n", timeout=600)
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
@dataclass(frozen=True)
class Strategy:
    """What a user would pick: node flags, and settings without a flag (``ISPLITEE_*``)."""

    name: str
    flags: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


SPLITS_ONLY = (("ISPLITEE_FRAME_OFFLOAD", "false"),)
NODE_LOG = ("--log-level", "DEBUG")
"""``--node-log``: each node logs what it timed, printed after its run (:data:`TIMED`)."""
TIMED = ("edge ms per split", "probe at block", "offload at block", "edge to block", "result",
         ": split ")  # fmt: skip


def strategies(exits: Sequence[int]) -> list[Strategy]:
    """The whole network on the node, every frame's JPEG to the server (what remote detectors
    do), each fixed split on its own (activations only, ``encoding = auto``), and the default
    node (audited I-SplitEE on measured costs, frame offload on)."""
    return [
        Strategy("final", ("--policy", "final")),
        Strategy("frame", ("--policy", "fixed:0")),
        *(Strategy(f"fixed:{b}", ("--policy", f"fixed:{b}"), SPLITS_ONLY) for b in exits),
        Strategy("default"),
    ]


@dataclass(frozen=True)
class Leg:
    """From ``at_s`` after the node's first result on, the link is ``profile``."""

    at_s: float
    link: str
    profile: LinkProfile


def leg_at(legs: Sequence[Leg], at_s: float) -> Leg:
    """The leg the link was on ``at_s`` after the first result."""
    return [leg for leg in legs if leg.at_s <= at_s][-1] if at_s >= legs[0].at_s else legs[0]


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
    fps: float  # results per second between the first result and the last
    trace: list[tuple[float, int, float, str]]  # (captured, s from the first result; split;
    # latency ms; the link then)
    prices: dict[int, float] = dataclasses.field(default_factory=dict)  # the node's own
    # price of each arm when it stopped, in its units (the whole network 1.9): edge + offload

    @property
    def missing(self) -> int:
        return self.frames - self.results

    @property
    def main_split(self) -> int:
        """The split block most of its results came from."""
        return Counter(b for _t, b, _ms, _link in self.trace).most_common(1)[0][0]

    def splits(self, since: float = 0.0, until: float = math.inf) -> str:
        """Which split blocks its results came from (0: the frame), most used first."""
        used = Counter(b for t, b, _ms, _link in self.trace if since <= t < until)
        total = max(sum(used.values()), 1)
        return ", ".join(f"{b}: {100 * n / total:.0f} %" for b, n in used.most_common(3))

    def timeline(self, most: int = 6) -> str:
        """When it played which split: each run of results from one split block, by when its
        first frame was captured, ``most`` runs at most."""
        runs: list[tuple[int, float, int]] = []  # (split, from s, results)
        for t, b, _ms, _link in sorted(self.trace):
            if runs and runs[-1][0] == b:
                runs[-1] = (b, runs[-1][1], runs[-1][2] + 1)
            else:
                runs.append((b, t, 1))
        text = ", ".join(f"{b} from {t:.1f} s ({n})" for b, t, n in runs[:most])
        return text + (f", and {len(runs) - most} changes more" if len(runs) > most else "")


def _pid_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1
    return int(fields[11]) + int(fields[12])  # utime + stime


def prepare_scene(
    name: str, schedule: Sequence[str], model: Path, frames: int, where: Path
) -> tuple[DigitClip, np.ndarray]:
    """The scene's clip and the final classifier's label for each of its frames: made once,
    replayed by every strategy of every regime."""
    from shared.artefact import load_artefact
    from shared.preprocess import FramePreprocessor
    from shared.protocol import NUM_BLOCKS

    clip = write_digit_clip(where / f"{name}.avi", frames, schedule=schedule, seed=1)
    artefact = load_artefact(model)
    meta = artefact.meta
    prep = FramePreprocessor(meta.input_size, meta.mean, meta.std)
    chain = artefact.open_chain(1)
    whole = np.array([int(chain.edge(prep(f), NUM_BLOCKS)[1][-1].argmax()) for f in clip.frames])
    return clip, whole


RESULT_TOPIC, STATS_TOPIC = Topics().result("tb"), Topics().stats("tb")

Marks = tuple[tuple[int, int] | None, tuple[int, int] | None]
"""(node CPU ticks, bytes up) at the first and the last result read (None before any)."""


def prices(stats: dict | None) -> dict[int, float]:
    """Block -> what a node's stats say it prices that arm at: its edge cost, plus its offload
    cost except at the last arm (the whole network answers on the node)."""
    if not stats:
        return {}
    blocks = [arm["block"] for arm in stats["arms"]]
    edge, offload = stats["costs"]["edge"], stats["costs"]["offload"]
    return {b: edge[i] + (offload[i] if i < len(blocks) - 1 else 0.0) for i, b in enumerate(blocks)}


def _collect(
    node: subprocess.Popen, reader: MqttLink, shaper: LinkShaper, legs: Sequence[Leg]
) -> tuple[dict[int, tuple[float, dict, str]], Marks, dict | None]:
    """Every result until the node stops, by frame id: (captured, s from the first result;
    the result with its latency as a subscriber sees it; the link then), moving the link
    along ``legs`` from the first result on; the node's CPU and bytes at the first and
    the last result; and the last stats it published."""
    got: dict[int, tuple[float, dict, str]] = {}
    stats = None
    first = last = None
    start: float | None = None
    start_wall = 0.0
    leg = 0
    while node.poll() is None or not reader.inbox.empty():
        now = time.monotonic()
        if start is not None:  # the link's schedule runs from the first result
            while leg + 1 < len(legs) and now - start >= legs[leg + 1].at_s:
                leg += 1
                shaper.set(legs[leg].profile)
        try:
            msg = reader.inbox.get(timeout=0.05)
        except queue.Empty:
            continue
        r = json.loads(msg.payload)
        if msg.topic == STATS_TOPIC:
            stats = r
            continue
        # capture to delivery here, as a subscriber sees it (a result the
        # node published during an outage arrives when the link is back)
        captured = datetime.fromisoformat(r["captured_at"]).timestamp()
        r["latency_ms"] = (time.time() - captured) * 1e3
        if start is None:
            start, start_wall = time.monotonic(), time.time()
        # the trace places a result at its frame's capture, on that leg
        at = captured - start_wall
        got[r["frame_id"]] = (at, r, leg_at(legs, at).link)
        mark = (_pid_ticks(node.pid), shaper.up.bytes)
        first = first or mark
        last = mark if mark[0] >= 0 else last
    return got, (first, last), stats


def run_one(
    strategy: Strategy,
    board: Board,
    share: float,
    legs: Sequence[Leg],
    scene: str,
    model: Path,
    prepared: tuple[DigitClip, np.ndarray],
    *,
    fps: float | None = FPS,
) -> Row:
    """One node (budgeted, behind the shaped link) and one worker on a private broker; the
    link follows ``legs``. ``fps`` None: frames as fast as the node takes them."""
    clip = prepared[0]
    frames = len(clip.labels)
    tag = f"{os.getpid()}-{strategy.name.replace(':', '-')}"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = broker_from(DEV_CONFIG, tmp).start()
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache"), **dict(strategy.env)}
        worker = subprocess.Popen(
            worker_command(broker.url, model, "tb-w"), stderr=subprocess.DEVNULL, env=env
        )
        topics = [RESULT_TOPIC, STATS_TOPIC]
        reader = MqttLink(broker.url, f"tb-reader-{tag}", subscriptions=topics)
        reader.start(10)
        try:
            with (
                LinkShaper(broker.port, legs[0].profile) as shaper,
                CpuBudget(f"isplitee-testbed-{tag}", share) as budget,
            ):
                time.sleep(1.0)  # the worker subscribes before the node's first offload
                pace = [] if fps is None else ["--fps", str(fps)]
                args = [*pace, "--max-frames", str(frames), *strategy.flags]
                node = start_held_device(
                    device_command(shaper.url, model, clip.path, "tb", *args),
                    budget.add,
                    stderr=subprocess.PIPE,
                    env=env,
                )
                try:
                    got, marks, stats = _collect(node, reader, shaper, legs)
                finally:
                    if node.poll() is None:  # stopped from outside: the node goes too
                        node.kill()
                _out, err = node.communicate(timeout=600)
                if node.returncode != 0:
                    raise SystemExit(f"{strategy.name} node failed:\n{err[-2000:]}")
                if strategy.flags[-2:] == NODE_LOG:
                    timed = [line for line in err.splitlines() if any(t in line for t in TIMED)]
                    print(f"--- what the {strategy.name} node timed", *timed, sep="\n", flush=True)
        finally:
            reader.stop()
            worker.terminate()
            worker.wait(30)
            broker.stop()
    link = legs[0].link if len(legs) == 1 else "day"
    row = _row(strategy.name, board.key, link, scene, share, prepared, got, marks)
    return dataclasses.replace(row, prices=prices(stats))


def side_by_side(
    strats: Sequence[Strategy],
    board: Board,
    share: float,
    legs: Sequence[Leg],
    scene: str,
    model: Path,
    prepared: tuple[DigitClip, np.ndarray],
) -> list[Row]:
    """Every strategy at once on the same frames, each with its own broker, worker, link and
    budget: a burst of load elsewhere on this shared machine falls on all of them alike, where
    one after the other it would fall on whichever ran then."""
    with ThreadPoolExecutor(len(strats)) as pool:
        runs = [
            pool.submit(run_one, st, board, share, legs, scene, model, prepared) for st in strats
        ]
        return [r.result() for r in runs]


def _row(
    strategy: str,
    board: str,
    link: str,
    scene: str,
    share: float,
    prepared: tuple[DigitClip, np.ndarray],
    got: dict[int, tuple[float, dict, str]],
    marks: Marks,
) -> Row:
    """One run's figures from the results it got: latency, the board's CPU per frame (the
    node's CPU here over its budget share), bytes up per frame, accuracy and agreement with
    the final classifier, results per second, and the trace."""
    clip, whole = prepared
    first, last = marks
    ids = sorted(got)
    results = [got[i][1] for i in ids]
    latencies = [r["latency_ms"] for r in results]
    span = max(len(results) - 1, 1)
    ticks = os.sysconf("SC_CLK_TCK")
    labels = np.array([r["label"] for r in results])
    seen = [got[i][0] for i in ids]
    return Row(
        strategy,
        board,
        link,
        scene,
        len(results),
        len(clip.labels),
        float(np.mean(latencies)),
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 95)),
        (last[0] - first[0]) / ticks * 1e3 / span / share if first and last else float("nan"),
        (last[1] - first[1]) / span if first and last else float("nan"),
        float(np.mean(labels == clip.labels[ids])),
        float(np.mean(labels == whole[ids])),
        span / max(max(seen) - min(seen), 1e-9),
        [(got[i][0], got[i][1]["split_block"], got[i][1]["latency_ms"], got[i][2]) for i in ids],
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


def regime_table(rows: list[Row], fps: dict[str, float] | None = None) -> str:
    """One regime's strategies side by side; ``x best``: mean latency over the best mean;
    ``max fps``: results per second of the same strategy fed as fast as it takes frames."""
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
            "max fps",
            "splits used",
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
                f"{fps[r.strategy]:.1f}" if fps and r.strategy in fps else "-",
                r.splits(),
                f"{100 * r.accuracy:.1f}",
                f"{100 * r.agreement:.1f}",
                str(r.missing),
            ]
            for r in rows
        ],
    )


def verdict(rows: list[Row], bound: float = 1.10, loss_pts: float = 1.0) -> str:
    """The regime target: the default node's mean latency within ``bound`` of the best
    strategy's, at most ``loss_pts`` points of agreement with the final classifier lost."""
    best = min(rows, key=lambda r: r.mean_ms)
    default = next(r for r in rows if r.strategy == "default")
    ratio, loss = default.mean_ms / best.mean_ms, 100 * (1 - default.agreement)
    met = ratio <= bound and loss <= loss_pts and default.missing == 0
    text = (
        f"default {default.mean_ms:.0f} ms against the best, {best.strategy}, "
        f"{best.mean_ms:.0f} ms: x{ratio:.2f} (target <= {bound:.2f}), agreement "
        f"{100 * default.agreement:.1f} % (target >= {100 - loss_pts:.0f} %): "
        f"{'met' if met else 'missed'}"
    )
    return text if ratio <= bound else text + why_slower(default, best)


def why_slower(default: Row, best: Row) -> str:
    """What the default node's trace shows when it is slower than the best: the arm it
    played, what it priced that arm and the best strategy's arm at when it stopped, and how
    busy its CPU was against the camera's pace."""
    mine, theirs = default.main_split, best.main_split
    busy = (
        f"; its node was {default.cpu_ms * FPS / 1e3:.0%} busy (the board's CPU per frame, "
        f"{default.cpu_ms:.0f} ms, against a frame every {1e3 / FPS:.0f} ms), {best.strategy}'s "
        f"{best.cpu_ms * FPS / 1e3:.0%}"
    )
    if mine == theirs:
        return f"; both answered from split {mine} ({default.splits()}): the same arm" + busy
    own, other = default.prices.get(mine), default.prices.get(theirs)
    if own is None or other is None:
        played = f"; it played split {mine} ({default.splits()}), {best.strategy} split {theirs}"
        return played + busy
    return (
        f"; it played split {mine} ({default.splits()}: {default.timeline()}), priced at "
        f"{own:.2f} when it stopped against {other:.2f} for split "
        f"{theirs}, where {best.strategy} answered" + busy
    )


# -- the day -----------------------------------------------------------------------------------
DAY_S = 600.0
DAY_LEGS = (
    Leg(0.0, "lan", LINKS["lan"]),
    Leg(150.0, "lte", LINKS["lte"]),
    Leg(300.0, "outage", dataclasses.replace(LINKS["lte"], outage="hold")),
    Leg(330.0, "wifi", LINKS["wifi"]),
)
"""LAN, then LTE, a 30 s outage (connections held, nothing passes), then Wi-Fi."""
DAY_SCENES = ("clean", "gaussian_noise:2", "clean")
"""The scene changes twice: a third of the day each."""


def run_day(
    strats: Sequence[Strategy], board: Board, share: float, model: Path, where: Path, frames: int
) -> list[Row]:
    """Every strategy through the same day at once, each with its own broker, worker, link and
    budget (side by side, so the machine's load falls on all alike)."""
    prepared = prepare_scene("day", DAY_SCENES, model, frames, where)
    return side_by_side(strats, board, share, DAY_LEGS, "day", model, prepared)


def linked_mean_ms(row: Row) -> float:
    """Mean latency of the frames captured while the link was up. A result of a frame
    captured during the outage reaches a subscriber when the outage ends, whatever the
    strategy; a strategy that stalls its camera meanwhile (offloads pending) captures fewer
    such frames, so their wait would flatter it."""
    return float(np.mean([ms for _t, _b, ms, link in row.trace if link != "outage"]))


def day_verdict(rows: list[Row], gain: float = 0.25, loss_pts: float = 1.0) -> str:
    default = next(r for r in rows if r.strategy == "default")
    fixed = [r for r in rows if r.strategy != "default"]
    best = min(fixed, key=linked_mean_ms)
    mine, theirs = linked_mean_ms(default), linked_mean_ms(best)
    cut = 1 - mine / theirs
    loss = 100 * (1 - default.agreement)
    met = cut >= gain and loss <= loss_pts and default.missing == 0
    return (
        f"Target: the default node's mean latency (frames captured while the link was up) at "
        f"least {100 * gain:.0f} % below the best single fixed strategy's ({best.strategy}, "
        f"{theirs:.0f} ms), at most {loss_pts:g} point of agreement lost, no frame without a "
        f"result. Measured: {mine:.0f} ms, {abs(100 * cut):.0f} % "
        f"{'lower' if cut >= 0 else 'higher'}, agreement "
        f"{100 * default.agreement:.1f} %, {default.missing} frames without a result: "
        f"{'met' if met else 'missed'}. Over every frame, the outage's included: default "
        f"{default.mean_ms:.0f} ms, {best.strategy} {best.mean_ms:.0f} ms."
    )


def day_legs_table(rows: list[Row]) -> str:
    """Per leg of the day: the default node's mean latency and splits beside the best fixed
    strategy's (which arm it played, and when)."""
    default = next(r for r in rows if r.strategy == "default")
    best = min((r for r in rows if r.strategy != "default"), key=linked_mean_ms)
    ends = [leg.at_s for leg in DAY_LEGS[1:]] + [math.inf]
    out = []
    for leg, end in zip(DAY_LEGS, ends, strict=True):

        def mean(row: Row, lo: float = leg.at_s, hi: float = end) -> str:
            ms = [m for t, _b, m, _link in row.trace if lo <= t < hi]
            return f"{np.mean(ms):.0f}" if ms else "-"

        def count(row: Row, lo: float = leg.at_s, hi: float = end) -> str:
            return str(sum(lo <= t < hi for t, *_ in row.trace))

        out.append([leg.link, f"{leg.at_s:.0f} s", count(default), mean(default),
                    default.splits(leg.at_s, end), count(best), mean(best)])  # fmt: skip
    head = ["link", "from", "default frames", "default mean ms", "default splits"]
    return format_table([*head, f"{best.strategy} frames", f"{best.strategy} mean ms"], out)


def plot_day(rows: list[Row], path: Path) -> None:
    """The day: the link, the default node's split, and latency against the best fixed
    strategy, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = next(r for r in rows if r.strategy == "default")
    best = min((r for r in rows if r.strategy != "default"), key=linked_mean_ms)
    fig, (ax_split, ax_lat) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    colours = {"lan": "#d9f0d3", "lte": "#fde0c5", "outage": "#f4a6a6", "wifi": "#d0e1f9"}
    ends = [leg.at_s for leg in DAY_LEGS[1:]] + [max(t for t, *_ in default.trace)]
    for ax in (ax_split, ax_lat):
        for leg, end in zip(DAY_LEGS, ends, strict=True):
            ax.axvspan(leg.at_s / 60, end / 60, color=colours[leg.link], lw=0)
    for leg, end in zip(DAY_LEGS, ends, strict=True):
        ax_split.text((leg.at_s + end) / 120, 20.5, leg.link, ha="center", fontsize=8)
    t = np.array([x[0] for x in default.trace]) / 60
    ax_split.scatter(t, [x[1] for x in default.trace], s=2, c="k")
    ax_split.set_ylabel("default: split block")
    ax_split.set_ylim(-1, 22)
    for row, colour in ((best, "tab:orange"), (default, "k")):
        tt = np.array([x[0] for x in row.trace]) / 60
        ax_lat.scatter(tt, [x[2] for x in row.trace], s=2, c=colour, label=row.strategy)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("result latency ms")
    ax_lat.set_xlabel("minutes (scene: clean, noise 2, clean, a third each)")
    ax_lat.legend(loc="upper left", markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_regimes(
    calibrated: list[tuple[Board, float, float]],
    links: Sequence[str],
    scenes: Sequence[str],
    strats: Sequence[Strategy],
    model: Path,
    frames: int,
    rate_frames: int,
    where: Path,
) -> tuple[list[str], list[str]]:
    """Every regime, its strategies side by side: (page sections, verdict rows)."""
    prepared = {sc: prepare_scene(sc, SCENES[sc], model, frames, where) for sc in scenes}
    rate_clip = prepare_scene("rate", ("clean",), model, rate_frames, where)
    sections, verdicts = [], []
    for board, share, _ms in calibrated:
        for link in links:
            legs = [Leg(0.0, link, LINKS[link])]
            fps = {  # the scene's pace does not bound it: measured once per board and link
                st.name: run_one(st, board, share, legs, "clean", model, rate_clip, fps=None).fps
                for st in strats
            }
            for scene in scenes:
                rows = side_by_side(strats, board, share, legs, scene, model, prepared[scene])
                for row in rows:
                    said = {k: v for k, v in vars(row).items() if k != "trace"}
                    print({**said, "timeline": row.timeline()}, flush=True)
                title, text = f"### {board.key}, {link}, {scene}", verdict(rows)
                verdicts.append(f"| {board.key} | {link} | {scene} | {text} |")
                sections += [title, "", regime_table(rows, fps), "", text, ""]
                print("\n".join(sections[-6:]), flush=True)
    return sections, verdicts


def day_section(
    calibrated: list[tuple[Board, float, float]],
    strats: Sequence[Strategy],
    model: Path,
    where: Path,
    plot: Path,
) -> list[str]:
    board, share, _ms = calibrated[0]
    rows = run_day(strats, board, share, model, where, round(DAY_S * FPS))
    plot_day(rows, plot)
    text = day_verdict(rows)
    print(regime_table(rows) + "\n" + text + "\n" + day_legs_table(rows), flush=True)
    return [
        f"### The day ({board.key}: LAN, LTE, a 30 s outage, Wi-Fi; clean, noise 2, clean)",
        "",
        regime_table(rows),
        "",
        text,
        "",
        "Leg by leg, each frame on the leg it was captured in (seconds from the first "
        "result); the outage's frames are answered on the node or fall back, and their "
        "results reach a subscriber when it ends:",
        "",
        day_legs_table(rows),
        "",
        f"![the day: link, split and latency over time]({plot.name})",
        "",
    ]


# -- the README's few lines -------------------------------------------------------------------
def _regime_tables(page: str) -> list[tuple[str, str, str, dict[str, dict[str, str]]]]:
    """(board, link, scene, strategy -> column -> cell) of every regime table on the page."""
    found = []
    for m in re.finditer(r"^### (\w+), (\w+), (\w+)\n\n((?:\|.*\n)+)", page, re.M):
        lines = [[c.strip() for c in line.strip("|").split("|")] for line in m[4].splitlines()]
        table = {cells[0]: dict(zip(lines[0], cells, strict=True)) for cells in lines[2:]}
        found.append((m[1], m[2], m[3], table))
    return found


SUMMARY_HEAD = ["board", "link", "whole network on the node", "frame's JPEG", "best fixed split",
                "default node (x best)"]  # fmt: skip
SAID = {"final": "the whole network on the node", "frame": "the frame's JPEG to the server",
        "split": "a fixed split"}  # fmt: skip


def page_summary(page: str, scene: str = "clean") -> str:
    """When the split pays, in a few lines with the page's own figures (read from its tables,
    so README and page cannot disagree)."""
    rows, wins = [], Counter({k: 0 for k in SAID})
    regimes = _regime_tables(page)
    for board, link, sc, table in regimes:
        ms = {k: float(row["mean ms"]) for k, row in table.items()}
        if sc != scene:
            continue
        best = min((k for k in ms if k != "default"), key=ms.get)  # what a user would pick
        wins["split" if best.startswith("fixed:") else best] += 1
        fixed = min((k for k in ms if k.startswith("fixed:")), key=ms.get, default=None)
        rows.append([board, link, table["final"]["mean ms"], table["frame"]["mean ms"],
                     f"{table[fixed]['mean ms']} ({fixed})" if fixed else "-",
                     f"{table['default']['mean ms']} (x{table['default']['x best']})"])  # fmt: skip
    within = sum(  # from the means, as the verdicts: "x1.10" may be 1.102
        float(t["default"]["mean ms"]) <= 1.10 * min(float(r["mean ms"]) for r in t.values())
        for *_, t in regimes
    )
    tally = "; ".join(f"{SAID[k]} in {n or 'none'}" for k, n in wins.most_common())
    day = re.search(r"^Target: the default node's mean latency.*$", page, re.M)
    return "\n".join(
        [
            f"Mean result latency in ms, {scene} scene, from [docs/testbed.md](docs/testbed.md) "
            "(`make bench-testbed`; this block is written from that page):",
            "",
            format_table(SUMMARY_HEAD, rows),
            "",
            f"Fastest of what a user would pick, per regime ({scene} scene): {tally}. The "
            f"default node was within 10 % of the fastest in {within} of {len(regimes)} "
            "regimes (both scenes).",
            *(["", f"The day: {day[0][len('Target: ') :]}"] if day else []),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, help="write the page (docs/testbed.md)")
    p.add_argument("--boards", default=",".join(b.key for b in BOARDS))
    p.add_argument("--links", default=",".join(LINKS))
    p.add_argument("--scenes", default=",".join(SCENES))
    p.add_argument("--frames", type=int, default=80, help="frames per paced run")
    p.add_argument("--rate-frames", type=int, default=24, help="frames per max-fps run")
    p.add_argument("--day", action="store_true", help="and the day (10 minutes, all at once)")
    p.add_argument("--day-only", action="store_true", help="the day alone, no regimes")
    p.add_argument("--model", type=Path, help="an artefact instead of the testbed's own")
    p.add_argument("--quick", action="store_true", help="one board, LAN, clean, 3 strategies")
    p.add_argument("--strategies", help="only these, e.g. default,frame,final (default: all)")
    p.add_argument(
        "--node-log", action="store_true", help="print what each node timed (its DEBUG log)"
    )
    p.add_argument("--readme", type=Path, help="and its summary in this README (README.md)")
    p.add_argument("--summarise", type=Path, metavar="PAGE", help="only the README summary of PAGE")
    args = p.parse_args(argv)
    if args.summarise:
        readme = args.readme or ROOT / "README.md"
        replace_section(readme, "testbed-summary", page_summary(args.summarise.read_text()))
        print(f"wrote the testbed summary of {readme}")
        return 0
    # A stop (SIGTERM, Ctrl-C) unwinds through every finally: brokers, workers, nodes and
    # cgroups are taken down, none left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    reason = unavailable()
    if reason is not None:
        print(f"bench_testbed: skipped: {reason}", file=sys.stderr)
        return 0
    boards = [b for b in BOARDS if b.key in args.boards.split(",")]
    links, scenes, frames = args.links.split(","), args.scenes.split(","), args.frames
    model = args.model or ensure_model()
    from shared.artefact import load_artefact

    strats = strategies(load_artefact(model).meta.exit_blocks)
    rate_frames = args.rate_frames
    if args.quick:
        boards, links, scenes, frames = boards[:1], ["lan"], ["clean"], min(frames, 6)
        strats, rate_frames = [s for s in strats if s.name in ("final", "frame", "default")], 6
    if args.strategies:
        names = args.strategies.split(",")
        unknown = sorted(set(names) - {s.name for s in strats})
        if unknown or "default" not in names:
            known = ", ".join(s.name for s in strats)
            p.error(f"--strategies: the default node and any of {known}")
        strats = [s for s in strats if s.name in names]
    if args.node_log:
        strats = [dataclasses.replace(s, flags=(*s.flags, *NODE_LOG)) for s in strats]
    with tempfile.TemporaryDirectory() as tmp:
        graph = reference_graph(CACHE if CACHE.exists() else Path(tmp))
        full_ms = whole_network_ms(graph, None)
        effort = {"tries": 3, "runs": 7} if args.quick else {}
        calibrated = [(b, *calibrate(b, graph, full_ms, **effort)) for b in boards]
    print(calibration_table(calibrated, full_ms), flush=True)
    command = "python bench/bench_testbed.py " + " ".join(argv or sys.argv[1:])
    with tempfile.TemporaryDirectory() as clips:
        where = Path(clips)
        if not args.day_only:
            sections, verdicts = run_regimes(
                calibrated, links, scenes, strats, model, frames, rate_frames, where
            )
            head = (
                f"Command: `{command}` on this machine, one run per regime, its strategies at "
                f"once (each with its own broker, worker, shaped link and CPU budget); {frames} "
                f"frames per run at {FPS:g} fps, and, one strategy at a time, {rate_frames} "
                "frames as fast as each takes them for `max fps`."
            )
            body = [head, "", "### The emulated boards", "", calibration_table(calibrated, full_ms)]
            body += ["", "### Targets per regime", "", "| board | link | scene | verdict |"]
            body += ["|---|---|---|---|", *verdicts, "", *sections]
            if args.out:
                replace_section(args.out, "testbed", "\n".join(body))
        if args.day or args.day_only:
            plot = args.out.with_name("testbed-day.png") if args.out else where / "day.png"
            day = day_section(calibrated, strats, model, where, plot)
            if args.out:
                head = f"Command: `{command}` on this machine, every strategy at once."
                board = calibration_table(calibrated[:1], full_ms)
                replace_section(args.out, "testbed-day", "\n".join([head, "", board, "", *day]))
    if args.out:
        print(f"wrote {args.out}")
        if args.readme:
            replace_section(args.readme, "testbed-summary", page_summary(args.out.read_text()))
            print(f"wrote the testbed summary of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
