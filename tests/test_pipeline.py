"""The product end to end: camera nodes, cloud workers and an independent reader on Mosquitto."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.checkpoint import load_checkpoint, save_checkpoint
from shared.lab.clips import whole_model_predictions, write_digit_clip
from shared.lab.procs import worker_command
from shared.mqtt import MqttLink
from shared.protocol import decode_activation, decode_result

from .pipeline_helpers import ACTIVATIONS_ONLY, ResultReader, WorkerPool, run_device_cli

N_FRAMES = 240


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_digit_clip(tmp_path_factory.mktemp("video") / "digits.avi", N_FRAMES)


@pytest.fixture(scope="module")
def whole(tiny_checkpoint, video) -> np.ndarray:
    return whole_model_predictions(load_checkpoint(tiny_checkpoint), video.frames)


@pytest.fixture
def reader(broker):
    r = ResultReader(broker.url)
    yield r
    r.close()


@pytest.fixture
def workers(broker, tiny_checkpoint):
    pool = WorkerPool(broker.url, [tiny_checkpoint])
    yield pool
    pool.close()


def _finish(proc, timeout: float = 180) -> str:
    _out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return err


def test_one_device_one_worker_every_frame_one_result(
    broker, tiny_checkpoint, video, whole, reader, workers
) -> None:
    workers.start("w1")
    status = MqttLink(broker.url, f"st-{time.monotonic_ns()}", subscriptions=["isplitee/cam1/#"])
    status.start(10)
    # Paper costs: offloading at a shallow split is the best arm for this barely trained model,
    # so the run surely offloads (the live-cost path has a test of its own below).
    proc = run_device_cli(
        broker.url, tiny_checkpoint, video.path, "cam1", "--cost", "paper", "--max-frames", "1000"
    )
    _finish(proc)
    results = reader.collect(N_FRAMES)
    assert sorted(r["frame_id"] for r in results) == list(range(N_FRAMES))
    for r in results:
        decode_result(json.dumps(r).encode())  # exactly the documented keys
    by_source = {s: [r for r in results if r["source"] == s] for s in ("edge", "cloud", "fallback")}
    assert by_source["cloud"], "nothing was offloaded: the check below would be empty"
    for r in by_source["cloud"]:
        assert r["label"] == whole[r["frame_id"]], r
        assert r["exit_block"] == 19 and r["split_block"] < 19
    assert not by_source["fallback"]
    seen = []
    while not status.inbox.empty():
        seen.append(status.inbox.get())
    statuses = [m.payload for m in seen if m.topic.endswith("/status")]
    assert statuses[0] == b"online" and statuses[-1] == b"offline"
    stats = [json.loads(m.payload) for m in seen if m.topic.endswith("/stats")]
    assert stats and stats[-1]["frames"] == N_FRAMES and stats[-1]["pending"] == 0
    status.stop()


def test_forced_offloads_all_come_from_the_cloud(
    broker, tiny_checkpoint, video, whole, reader, workers
) -> None:
    workers.start("w1")
    proc = run_device_cli(
        broker.url,
        tiny_checkpoint,
        video.path,
        "camf",
        "--policy",
        "fixed:9",
        "--alpha",
        "1",
        "--max-frames",
        "80",
        env=ACTIVATIONS_ONLY,
    )
    _finish(proc)
    results = reader.collect(80)
    assert sorted(r["frame_id"] for r in results) == list(range(80))
    assert {r["source"] for r in results} == {"cloud"}
    assert {r["split_block"] for r in results} == {9}
    assert all(r["label"] == whole[r["frame_id"]] for r in results)


def test_three_devices_two_workers_each_reply_reaches_its_device(
    broker, tiny_checkpoint, video, reader, workers
) -> None:
    w1, w2 = workers.start("wa"), workers.start("wb")
    procs = {
        cam: run_device_cli(
            broker.url,
            tiny_checkpoint,
            video.path,
            cam,
            "--policy",
            "fixed:6",
            "--alpha",
            "1",
            "--max-frames",
            "60",
        )
        for cam in ("camx", "camy", "camz")
    }
    logs = {cam: _finish(proc) for cam, proc in procs.items()}
    results = reader.collect(180)
    assert len(results) == 180
    for cam in procs:
        mine = [r for r in results if r["device_id"] == cam]
        assert sorted(r["frame_id"] for r in mine) == list(range(60))
        assert {r["source"] for r in mine} == {"cloud"}, logs[cam][-2000:]
    assert w1.served > 0 and w2.served > 0 and w1.served + w2.served == 180


def test_bandit_state_is_restored_after_a_restart(
    broker, tiny_checkpoint, video, reader, workers, tmp_path: Path
) -> None:
    workers.start("w1")
    state = tmp_path / "state" / "cam-s.json"
    for run in (1, 2):
        proc = run_device_cli(
            broker.url,
            tiny_checkpoint,
            video.path,
            "cams",
            "--state",
            str(state),
            "--max-frames",
            "50",
        )
        err = _finish(proc)
        body = json.loads(state.read_text())
        assert body["model_hash"] == load_checkpoint(tiny_checkpoint).hash
        assert body["policy"]["rounds"] == 50 * run
        assert ("restored bandit state" in err) == (run == 2)
    assert not list(state.parent.glob("*.tmp"))


def test_a_state_file_for_another_model_is_not_trusted(
    broker, tiny_checkpoint, video, reader, workers, tmp_path: Path
) -> None:
    workers.start("w1")
    state = tmp_path / "cam.json"
    state.write_text(
        json.dumps(
            {
                "format": "isplitee.node-state/1",
                "model_hash": "0" * 64,
                "blocks": [3, 6, 9, 12, 15, 18, 19],
                "policy_spec": "isplitee",
                "policy": {},
            }
        )
    )
    proc = run_device_cli(
        broker.url, tiny_checkpoint, video.path, "camo", "--state", str(state), "--max-frames", "5"
    )
    err = _finish(proc)
    assert "starting afresh" in err
    assert json.loads(state.read_text())["policy"]["rounds"] == 5
    state.write_text("{half a file")
    err = _finish(
        run_device_cli(
            broker.url,
            tiny_checkpoint,
            video.path,
            "camo",
            "--state",
            str(state),
            "--max-frames",
            "5",
        )
    )
    assert "moved it to" in err and list(tmp_path.glob("cam.json.bad-*"))


def test_device_reports_a_missing_model_in_one_line(broker, video, tmp_path: Path) -> None:
    proc = run_device_cli(broker.url, tmp_path / "nope.pt", video.path, "camm")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "nope.pt" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory) -> Path:
    """A full-width model at 160 px: its whole network costs the node several milliseconds,
    so on loopback offloading a shallow split really is cheaper than computing everything
    (with the 32 px test model a loopback round trip costs more than the whole network)."""
    from shared.lab.cli import main

    out = tmp_path_factory.mktemp("wide") / "wide.pt"
    args = ["train", "--dataset", "digits", "--input-size", "160", "--width", "1.0"]
    args += ["--epochs", "1", "--limit", "64", "--seed", "0", "--no-progress", "--out", str(out)]
    args += ["--augment", "0", "--calibrate-on", "clean", "--no-export"]  # quick: real, not good
    assert main(args) == 0
    return out


@pytest.mark.slow
def test_a_slowed_link_moves_the_node_off_the_network(
    broker, wide_checkpoint, tmp_path: Path
) -> None:
    """Default policy and measured costs: the node offloads while the link is fast; once a
    proxy between node and broker adds 100 ms each way it stops offloading, no restart.

    Behind ``slow`` (a minute, most of it training its model): the default run has the same
    mechanism in tests/test_live_costs.py (a slow link prices offloading out) and
    tests/test_outage.py (the learning node stops offloading when replies stop coming, and
    offloads again once they do)."""
    import threading

    import torch

    from device.app import DeviceApp
    from device.config import DeviceConfig
    from shared.config import load_config
    from shared.lab.shaper import LinkShaper

    n, switch = 300, 150
    clip = write_digit_clip(tmp_path / "clip.avi", n, schedule=("clean",))
    # The worker in a process of its own, as deployed: in this process it would share the
    # interpreter with the node and the proxy, and every round trip would wait for the node.
    import subprocess

    worker = subprocess.Popen(
        worker_command(broker.url, str(wide_checkpoint), "w-slow"),
        stderr=subprocess.DEVNULL,
    )
    reader = ResultReader(broker.url, "isplitee/slow/result")
    online = MqttLink(
        broker.url, f"wait-{time.monotonic_ns()}", subscriptions=["isplitee/workers/w-slow/status"]
    )
    online.start(10)
    deadline = time.monotonic() + 60
    while True:  # the node must not time its offloads against a worker still starting
        assert time.monotonic() < deadline, "worker w-slow did not come online"
        if not online.inbox.empty() and online.inbox.get().payload == b"online":
            break
        time.sleep(0.05)
    online.stop()
    torch.set_num_threads(1)
    try:
        with LinkShaper(broker.port) as proxy:
            config = load_config(
                DeviceConfig,
                None,
                {
                    "broker": proxy.url,
                    "model": wide_checkpoint,
                    "source": str(clip.path),
                    "device_id": "slow",
                    "probe_interval_s": 0.5,
                    "reply_timeout_s": 5.0,
                    # A camera's pace: the worker keeps up, so a round trip measures the link
                    # rather than a queue of frames at a saturated worker.
                    "fps": 25,
                    # Eager PyTorch: the whole network then costs more than a loopback round
                    # trip, so offloading pays while the link is fast (ONNX Runtime would
                    # answer every frame on the node faster than any offload here).
                    "backend": "torch",
                },
            )
            app = DeviceApp(config)
            splits: list[tuple[int, bool]] = []  # (frame, offloaded) in decision order
            process = app.node.process

            def spy(frame_id, image, captured_at):
                before = app.node.counters.offloads
                process(frame_id, image, captured_at)
                splits.append((frame_id, app.node.counters.offloads > before))
                if frame_id == switch - 1:
                    proxy.set(delay_ms=100)

            app.node.process = spy  # type: ignore[method-assign]
            summary = app.run(threading.Event())
    finally:
        torch.set_num_threads(2)
        worker.terminate()
        worker.wait(30)
    results = reader.collect(n)
    reader.close()
    assert summary.results == n and len(results) == n
    assert sorted(r["frame_id"] for r in results) == list(range(n))
    fast = [off for i, off in splits if switch // 2 <= i < switch]
    slow = [off for i, off in splits if i >= n - (n - switch) // 2]
    fast_rate, slow_rate = sum(fast) / len(fast), sum(slow) / len(slow)
    print(f"offload rate: fast link {fast_rate:.2f}, slowed link {slow_rate:.2f}")
    assert fast_rate >= 0.25, f"the node hardly offloaded on a fast link ({fast_rate:.2f})"
    assert slow_rate <= 0.1 and slow_rate < fast_rate / 4, (fast_rate, slow_rate)


def test_the_default_policy_audits_confident_exits_against_the_cloud(
    broker, tiny_checkpoint, video, whole, reader, workers
) -> None:
    """A low alpha makes the tiny model's exits confident; the default (audited) policy still
    sends some of those frames to the cloud, flagged as audits, and publishes the cloud's
    answer for them."""
    from shared.protocol import decode_activation

    workers.start("w1")
    spy = MqttLink(broker.url, f"spy-{time.monotonic_ns()}", subscriptions=["isplitee/cama/#"])
    spy.start(10)
    n = 80
    proc = run_device_cli(
        broker.url,
        tiny_checkpoint,
        video.path,
        "cama",
        "--alpha",
        "0.05",
        "--cost",
        "paper",
        "--max-frames",
        str(n),
    )
    _finish(proc)
    results = {r["frame_id"]: r for r in reader.collect(n)}
    assert sorted(results) == list(range(n))
    audited, stats = [], []
    while not spy.inbox.empty():
        m = spy.inbox.get()
        if m.topic.endswith("/activation") and m.payload:  # b"": the start-up check
            act = decode_activation(m.payload)
            if act.audit:
                audited.append(act)
        elif m.topic.endswith("/stats"):
            stats.append(json.loads(m.payload))
    spy.stop()
    assert audited, "no frame was audited"
    for act in audited:
        assert act.exit_confidence >= 0.05  # the exit could have answered on its own
        r = results[act.frame_id]
        assert r["source"] == "cloud" and r["label"] == whole[act.frame_id]
    assert stats[-1]["audit_rate"] > 0


def test_a_worker_serving_another_checkpoint_gets_fallbacks_and_one_log_line_per_kind(
    broker, tiny_checkpoint, video, reader, tmp_path: Path
) -> None:
    """The troubleshooting row "every result is fallback, stats count unknown_model": every
    frame still gets its result, and the node's log says why once, not once per frame."""
    ckpt = load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        next(ckpt.model.parameters()).add_(1e-3)
    other = tmp_path / "other.pt"
    assert save_checkpoint(other, ckpt.model, ckpt.meta) != ckpt.hash
    pool = WorkerPool(broker.url, [other])
    try:
        pool.start("wx")
        proc = run_device_cli(
            broker.url,
            tiny_checkpoint,
            video.path,
            "camx",
            *("--policy", "fixed:9", "--alpha", "1", "--max-frames", "40"),
        )
        err = _finish(proc)
    finally:
        pool.close()
    results = reader.collect(40)
    assert sorted(r["frame_id"] for r in results) == list(range(40))
    assert {r["source"] for r in results} == {"fallback"}
    assert err.count("could not answer (unknown_model") == 1, err[-2000:]


def test_a_node_on_auto_sends_each_split_in_the_checkpoints_measured_encoding(
    broker, tiny_checkpoint, video, whole, reader, tmp_path: Path
) -> None:
    """The default ``encoding = "auto"``: what goes on the wire at block 9 is what the
    checkpoint says its held-out images tolerated there (int4 here, fp16 elsewhere), and the
    worker finishes it."""
    ckpt = load_checkpoint(tiny_checkpoint)
    chosen = tuple("int4" if b == 9 else "fp16" for b in ckpt.meta.exit_blocks)
    model = tmp_path / "checked.pt"
    save_checkpoint(model, ckpt.model, ckpt.meta.model_copy(update={"wire_encodings": chosen}))
    pool = WorkerPool(broker.url, [model])
    pool.start("w1")
    wire = MqttLink(broker.url, f"wire-{time.monotonic_ns()}", subscriptions=["isplitee/camw/#"])
    wire.start(10)
    try:
        proc = run_device_cli(
            broker.url, model, video.path, "camw", "--policy", "fixed:9", "--alpha", "1",
            "--max-frames", "40", env=ACTIVATIONS_ONLY,
        )  # fmt: skip
        _finish(proc)
        results = reader.collect(40)
    finally:
        pool.close()
    messages = []
    while not wire.inbox.empty():
        messages.append(wire.inbox.get())
    wire.stop()
    offloads = [m for m in messages if m.topic.endswith("/activation")]
    assert offloads[0].payload == b""  # the node's start-up check of its ACL, then 40 frames
    sent = [decode_activation(m.payload) for m in offloads[1:]]
    assert len(sent) == 40 and {a.encoding for a in sent} == {"int4"}
    assert all(len(a.data) == (a.array().size + 1) // 2 for a in sent)  # two codes a byte
    assert {r["source"] for r in results} == {"cloud"} and len(results) == 40
    agree = np.mean([r["label"] == whole[r["frame_id"]] for r in results])
    assert agree >= 0.9, agree  # 4-bit codes of a barely trained model: most labels survive
    config = json.loads(next(m.payload for m in messages if m.topic.endswith("/config")))
    assert config["encoding"] == "auto" and config["wire"]["9"] == "int4"
