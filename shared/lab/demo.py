"""``isplitee demo``: the real system on one machine, end to end, in about two minutes.

A private Mosquitto (or ``--broker``), one cloud worker and three camera nodes run as separate
processes, exactly as they would on a server and three Pis. Each camera replays held-out digits
whose conditions change on the way (clean -> noise -> low light, ...). An independent
subscriber (this process) reads every result as another app would, shows live progress, and
judges the run at the end against the true labels and against the whole network on the same
frames: nothing is simulated, every figure comes from the results on the broker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.cost import PAPER_GAMMA, PAPER_OFFLOAD
from shared.lab.procs import device_command, worker_command
from shared.lab.recipe import TrainConfig, TrainRecipe
from shared.protocol import NUM_BLOCKS

__all__ = ["DEFAULT_CAMERAS", "DIGITS_RECIPE", "add_demo", "run_demo"]

DIGITS_RECIPE = TrainRecipe(
    dataset="digits",
    input_size=32,
    calibrate_on="distorted",
    train=TrainConfig(epochs=30, seed=0, augment=0.5),
)
"""How the bundled digits checkpoint is trained (``make model`` runs this too): distortion
augmentation and calibration on distorted images keep its early exits honest under noise."""

DEFAULT_CAMERAS: dict[str, tuple[str, ...]] = {
    "porch": ("clean", "gaussian_noise:2", "low_light:0.2"),
    "garage": ("clean", "gaussian_blur:1", "jpeg:10"),
    "garden": ("low_light:0.5", "clean", "gaussian_noise:3"),
}
"""Camera id -> the conditions its clip goes through, in equal parts."""

HOLD_S = 2.0
"""Seconds each digit stays in view, as a thing in front of a camera does: long enough for the
nodes' state to settle on it and an event to open (``min_frames``)."""

RESULT_KEYS = (
    "frames",
    "results",
    "lost",
    "accuracy",
    "final_accuracy",
    "edge_exit_rate",
    "offload_rate",
    "fallback_rate",
    "cost_reduction",
    "baseline_offload_all_block3",
    "bytes_offloaded",
    "bytes_jpeg",
    "latency_ms_p50",
    "latency_ms_p95",
)


@dataclass
class Camera:
    device_id: str
    schedule: tuple[str, ...]
    clip: object  # shared.lab.clips.DigitClip
    whole: np.ndarray
    results: dict[int, dict] = field(default_factory=dict)
    duplicates: int = 0
    stats: dict = field(default_factory=dict)
    events: int = 0  # events started (on <prefix>/<device>/events)
    snapshots: int = 0
    snapshot: bytes = b""  # the newest
    proc: subprocess.Popen | None = None


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="broker, cloud worker and three camera nodes on this machine, live",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", type=Path, default=Path("models/digits.pt"), help="trained if missing"
    )
    p.add_argument(
        "--frames",
        type=int,
        default=1800,
        help="frames per camera, cut into its three conditions (default 1800: after each change "
        "a node audits its exits for a few hundred frames before trusting them again, so shorter "
        "runs show little besides offloading)",
    )
    p.add_argument(
        "--fps", type=float, default=20.0, help="frames per second per camera (default 20)"
    )
    p.add_argument("--broker", help="use this broker (mqtt://HOST:PORT) instead of a private one")
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="clips, logs, plot")
    p.add_argument("--json", type=Path, help="write the summary here")
    p.add_argument("--plot", type=Path, help="PNG of the run (default WORKDIR/demo.png)")
    p.add_argument("--no-live", action="store_true", help="no live table, just the summary")
    p.add_argument(
        "--cost",
        choices=("paper", "measured"),
        default="paper",
        help="the nodes' cost model (default paper: a Pi-class camera, where the whole network "
        "costs 1.9 and an offload 0.5; measured: what this machine measures, where a fast CPU "
        "and a loopback link make running everything on the node the cheapest choice)",
    )
    p.add_argument(
        "--train-only", action="store_true", help="train the checkpoint if missing, then exit"
    )
    p.set_defaults(func=run_demo)


def ensure_model(path: Path) -> None:
    """Train the digits checkpoint with :data:`DIGITS_RECIPE` unless ``path`` exists."""
    if path.exists():
        return
    from shared.errors import IsplitEEError
    from shared.lab.training import train_checkpoint

    print(f"isplitee demo: no checkpoint at {path}; training it (a few minutes, once)")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        train_checkpoint(DIGITS_RECIPE, path)
    except (IsplitEEError, ValueError) as exc:
        raise SystemExit(f"isplitee demo: training {path} failed: {exc}") from exc


def ensure_artefact(path: Path) -> Path:
    """The deploy artefact beside the checkpoint ``path``, exported if it is not there yet
    (a checkpoint trained before artefacts existed): the demo runs what a Pi would."""
    from shared.artefact import SUFFIX

    artefact = path.with_suffix(SUFFIX)
    if not artefact.exists():
        from shared.checkpoint import load_checkpoint
        from shared.errors import IsplitEEError
        from shared.lab.export import held_out, write_deploy_artefact

        print(f"isplitee demo: exporting {artefact} from {path} (once)")
        try:
            ckpt = load_checkpoint(path)
            write_deploy_artefact(ckpt, artefact, held_out(ckpt))
        except (IsplitEEError, ValueError) as exc:
            raise SystemExit(f"isplitee demo: exporting {path} failed: {exc}") from exc
    return artefact


def run_demo(args: argparse.Namespace) -> int:
    if args.frames < 3:
        raise SystemExit("isplitee demo: --frames should be at least 3 (one per condition)")
    if args.fps <= 0:
        raise SystemExit("isplitee demo: --fps should be > 0")
    ensure_model(args.model)
    deployed = ensure_artefact(args.model)
    if args.train_only:
        return 0
    from shared.checkpoint import load_checkpoint
    from shared.lab.clips import whole_model_predictions, write_digit_clip

    workdir: Path = args.workdir
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(args.model)
    cameras = []
    for seed, (cam, schedule) in enumerate(DEFAULT_CAMERAS.items(), start=1):
        clip = write_digit_clip(
            workdir / f"{cam}.avi",
            args.frames,
            seed=seed,
            schedule=schedule,
            hold=max(1, round(HOLD_S * args.fps)),
        )
        cameras.append(Camera(cam, schedule, clip, whole_model_predictions(ckpt, clip.frames)))
    broker = None
    if args.broker:
        url = args.broker
    else:
        from shared.lab.broker import DEV_CONFIG, broker_from

        broker = broker_from(DEV_CONFIG, workdir / "broker").start()
        url = broker.url
    procs: list[subprocess.Popen] = []
    interrupted = False
    try:
        summary = _run(args, deployed, url, cameras, procs, workdir)
    except KeyboardInterrupt:
        interrupted = True
        summary = None
    finally:
        _stop_all(procs)
        if broker is not None:
            broker.stop()
    if interrupted or summary is None:
        print("isplitee demo: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    print(_summary_table(summary))
    plot = args.plot or workdir / "demo.png"
    _plot(cameras, summary, plot)
    print(f"plot: {plot}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
        print(f"summary: {args.json}")
    return 0 if summary["lost"] == 0 else 1


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def _stop_all(procs: list[subprocess.Popen]) -> None:
    """Stop the nodes, then the worker (``procs[0]``): the nodes' offloads in flight are
    answered by the worker still running (stopped together, a node waits out its reply
    timeout and answers those frames on its own). Each stage is given 15 s."""
    for stage in (procs[1:], procs[:1]):
        for p in stage:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in stage:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _run(args, model: Path, url: str, cameras: list[Camera], procs: list, workdir: Path) -> dict:
    """The worker and the nodes on ``model`` (the artefact: no torch in their processes)."""
    from shared.mqtt import MqttLink

    prefix = "isplitee"
    monitor = MqttLink(
        url,
        f"isplitee-demo-{os.getpid()}",
        subscriptions=[
            *(f"{prefix}/+/{kind}" for kind in ("result", "stats", "events", "snapshot")),
            f"{prefix}/workers/+/status",
        ],
        inbox_size=10_000,
    )
    monitor.start(15)
    by_id = {c.device_id: c for c in cameras}
    try:
        procs.append(
            _spawn(worker_command(url, model, "demo-worker"), workdir / "logs" / "worker.log")
        )
        _wait_worker(monitor, procs[0], workdir)
        started = time.monotonic()
        for cam in cameras:
            frames = ("--max-frames", str(args.frames), "--fps", f"{args.fps:g}")
            frames += ("--cost", args.cost)
            cam.proc = _spawn(
                device_command(url, model, cam.clip.path, cam.device_id, *frames),
                workdir / "logs" / f"{cam.device_id}.log",
            )
            procs.append(cam.proc)
        live = None if args.no_live or not sys.stdout.isatty() else _live(cameras, args.frames)
        try:
            last_draw = 0.0
            while True:
                _drain(monitor, by_id, prefix)
                running = [c for c in cameras if c.proc.poll() is None]
                now = time.monotonic()
                if live is not None and now - last_draw > 0.25:
                    live.update(_progress_table(cameras, args.frames))
                    last_draw = now
                if not running:
                    break
            # Results published just before a node exited may still be on their way.
            end = time.monotonic() + 3
            while time.monotonic() < end and any(len(c.results) < args.frames for c in cameras):
                _drain(monitor, by_id, prefix)
            _drain(monitor, by_id, prefix, wait=0.3)
            if live is not None:
                live.update(_progress_table(cameras, args.frames))
        finally:
            if live is not None:
                live.stop()
        elapsed = time.monotonic() - started
        for cam in cameras:
            if cam.snapshot:  # the newest, as a file a person can open
                (workdir / f"{cam.device_id}-snapshot.jpg").write_bytes(cam.snapshot)
            if cam.proc.returncode != 0:
                tail = (workdir / "logs" / f"{cam.device_id}.log").read_text()[-1500:]
                print(f"camera {cam.device_id} exited with {cam.proc.returncode}:\n{tail}")
    finally:
        monitor.stop()
    return {**_summarise(cameras, args.frames, elapsed), "cost_model": args.cost}


def _wait_worker(monitor, worker: subprocess.Popen, workdir: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            log = (workdir / "logs" / "worker.log").read_text()[-1500:]
            raise SystemExit(f"isplitee demo: the cloud worker exited:\n{log}")
        try:
            msg = monitor.inbox.get(timeout=0.2)
        except queue.Empty:
            continue
        if msg.topic.endswith("/status") and msg.payload == b"online":
            return
    raise SystemExit(f"isplitee demo: the cloud worker did not come online in {timeout:.0f} s")


def _drain(monitor, by_id: dict[str, Camera], prefix: str, wait: float = 0.1) -> None:
    try:
        msg = monitor.inbox.get(timeout=wait)
    except queue.Empty:
        return
    while True:
        parts = msg.topic.split("/")
        cam = by_id.get(parts[1]) if len(parts) == 3 and parts[0] == prefix else None
        if cam is not None and parts[2] == "snapshot":
            if msg.payload and not msg.retain:  # this run's, not one left by an earlier run
                cam.snapshots += 1
                cam.snapshot = msg.payload
        elif cam is not None:
            with contextlib.suppress(ValueError):
                body = json.loads(msg.payload)
                if parts[2] == "result":
                    if body["frame_id"] in cam.results:
                        cam.duplicates += 1
                    cam.results[body["frame_id"]] = body
                elif parts[2] == "stats":
                    cam.stats = body
                elif parts[2] == "events":
                    cam.events += body["type"] == "start"
        try:
            msg = monitor.inbox.get_nowait()
        except queue.Empty:
            return


def _live(cameras: list[Camera], frames: int):
    from rich.live import Live

    live = Live(_progress_table(cameras, frames), refresh_per_second=4, transient=False)
    live.start()
    return live


def _progress_table(cameras: list[Camera], frames: int):
    from rich.table import Table

    t = Table(title="isplitee demo: three cameras, one cloud worker, one broker")
    for col in (
        "camera",
        "frames",
        "condition",
        "split",
        "edge",
        "offload",
        "audit",
        "fallback",
        "accuracy",
    ):
        left = col in ("camera", "condition")
        t.add_column(col, justify="left" if left else "right", no_wrap=True, min_width=8)
    for cam in cameras:
        res = cam.results
        n = len(res)
        last = res[max(res)] if res else None
        src = [r["source"] for r in res.values()]
        right = sum(r["label"] == cam.clip.labels[i] for i, r in res.items())
        t.add_row(
            cam.device_id,
            f"{n}/{frames}",
            cam.clip.conditions[last["frame_id"]] if last else "-",
            str(last["split_block"]) if last else "-",
            _pct(src.count("edge"), n),
            _pct(src.count("cloud") + src.count("fallback"), n),
            f"{100 * cam.stats['audit_rate']:.1f} %" if "audit_rate" in cam.stats else "-",
            _pct(src.count("fallback"), n),
            _pct(right, n),
        )
    return t


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f} %" if n else "-"


def _paper_cost(r: dict) -> float:
    return PAPER_GAMMA * r["split_block"] + (PAPER_OFFLOAD if r["source"] != "edge" else 0.0)


def _jpeg_bytes(frame: np.ndarray, quality: int = 90) -> int:
    import cv2

    ok, data = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return len(data) if ok else 0


def _summarise(cameras: list[Camera], frames: int, elapsed: float) -> dict:
    full = PAPER_GAMMA * NUM_BLOCKS
    every, per_camera = [], {}
    right = final_right = audits = 0
    bytes_jpeg = bytes_offloaded = 0
    for cam in cameras:
        res = cam.results
        labels = cam.clip.labels
        got = [r["label"] == labels[i] for i, r in res.items()]
        per_camera[cam.device_id] = {
            "results": len(res),
            "lost": frames - len(res),
            "duplicates": cam.duplicates,
            "events": cam.events,
            "snapshots": cam.snapshots,
            "accuracy": float(np.mean(got)) if got else float("nan"),
            "final_accuracy": float((cam.whole == labels).mean()),
            "cost_reduction": 1 - float(np.mean([_paper_cost(r) for r in res.values()])) / full
            if res
            else float("nan"),
            "splits": {
                str(b): sum(r["split_block"] == b for r in res.values())
                for b in sorted({r["split_block"] for r in res.values()})
            },
        }
        right += sum(got)
        final_right += int((cam.whole == labels).sum())
        bytes_offloaded += int(cam.stats.get("bytes_sent", 0))
        # Frames offloaded although their exit was confident, to check the exits (node stats).
        audits += round(cam.stats.get("audit_rate", 0.0) * cam.stats.get("frames", 0))
        bytes_jpeg += sum(
            _jpeg_bytes(cam.clip.frames[i]) for i, r in res.items() if r["source"] != "edge"
        )
        every += list(res.values())
    n = max(len(every), 1)
    src = [r["source"] for r in every]
    lat = [r["latency_ms"] for r in every]
    total = frames * len(cameras)
    return {
        "frames": total,
        "results": len(every),
        "lost": total - len(every),
        "duplicates": sum(c.duplicates for c in cameras),
        "accuracy": right / n,
        "final_accuracy": final_right / total,
        "edge_exit_rate": src.count("edge") / n,
        "offload_rate": (src.count("cloud") + src.count("fallback")) / n,
        "fallback_rate": src.count("fallback") / n,
        "audit_rate": audits / n,
        "cost_reduction": 1 - float(np.mean([_paper_cost(r) for r in every])) / full
        if every
        else float("nan"),
        "baseline_offload_all_block3": 1 - (PAPER_GAMMA * 3 + PAPER_OFFLOAD) / full,
        "bytes_offloaded": bytes_offloaded,
        "bytes_jpeg": bytes_jpeg,
        "latency_ms_p50": float(np.percentile(lat, 50)) if lat else float("nan"),
        "latency_ms_p95": float(np.percentile(lat, 95)) if lat else float("nan"),
        "seconds": round(elapsed, 1),
        "cameras": per_camera,
    }


def _summary_table(s: dict) -> str:
    from shared.lab.report import format_table

    rows = [
        ["frames sent / results received / lost", f"{s['frames']} / {s['results']} / {s['lost']}"],
        ["accuracy vs ground truth", f"{100 * s['accuracy']:.1f} %"],
        ["final layer alone, same frames", f"{100 * s['final_accuracy']:.1f} %"],
        ["the nodes' cost model (--cost)", s.get("cost_model", "paper")],
        [
            "answered on the node / offloaded (of which audits) / fallback",
            f"{100 * s['edge_exit_rate']:.1f} / {100 * s['offload_rate']:.1f} "
            f"({100 * s.get('audit_rate', 0.0):.1f}) / {100 * s['fallback_rate']:.1f} %",
        ],
        ["cost reduction vs final layer (paper costs)", f"{100 * s['cost_reduction']:.1f} %"],
        ["baseline: offload all at block 3", f"{100 * s['baseline_offload_all_block3']:.1f} %"],
        [
            "bytes offloaded / JPEG q90 of those frames",
            f"{s['bytes_offloaded']:,} / {s['bytes_jpeg']:,}",
        ],
        [
            "latency p50 / p95 (capture -> result)",
            f"{s['latency_ms_p50']:.1f} / {s['latency_ms_p95']:.1f} ms",
        ],
    ]
    for cam, c in s["cameras"].items():
        rows.append(
            [
                f"  {cam}: accuracy (final layer) / cost cut",
                f"{100 * c['accuracy']:.1f} ({100 * c['final_accuracy']:.1f}) / "
                f"{100 * c['cost_reduction']:.1f} %",
            ]
        )
        rows.append([f"  {cam}: events / snapshots", f"{c['events']} / {c['snapshots']}"])
    return format_table(["demo summary", "value"], rows)


def _plot(cameras: list[Camera], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cameras) + 1, 1, figsize=(9, 2.2 * (len(cameras) + 1)))
    for ax, cam in zip(axes, cameras, strict=False):
        ids = sorted(cam.results)
        ax.step(ids, [cam.results[i]["split_block"] for i in ids], where="post", lw=1)
        off = [i for i in ids if cam.results[i]["source"] != "edge"]
        ax.scatter(
            off, [cam.results[i]["split_block"] for i in off], s=6, c="tab:red", label="offloaded"
        )
        conds = cam.clip.conditions
        for i in range(len(conds)):
            if i == 0 or conds[i] != conds[i - 1]:
                ax.axvline(i, color="grey", ls="--", lw=0.8)
                ax.text(i + 2, 19.5, conds[i], fontsize=8, va="bottom")
        ax.set_ylabel(f"{cam.device_id}\nsplit block")
        ax.set_ylim(0, 22)
        ax.legend(loc="lower right", fontsize=7)
    axes[-2].set_xlabel("frame")
    ax = axes[-1]
    names = list(summary["cameras"])
    x = np.arange(len(names))
    per = summary["cameras"]
    ax.bar(x - 0.27, [100 * per[c]["accuracy"] for c in names], 0.27, label="accuracy %")
    ax.bar(x, [100 * per[c]["final_accuracy"] for c in names], 0.27, label="final layer %")
    ax.bar(
        x + 0.27,
        [100 * per[c]["cost_reduction"] for c in names],
        0.27,
        label="cost cut % (paper costs)",
    )
    ax.set_xticks(x, names)
    ax.set_ylim(0, 125)
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
