"""What a fleet meets unattended, on the real thing: a broker killed and restarted, a worker
killed mid-run, a node killed mid-run, and garbage published to a running worker.

Each test prints its figures (``RELIABILITY`` lines, picked up by ``bench/reliability.py``
for docs/reliability.md): frames without a result, recovery seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from shared.lab.broker import DEV_CONFIG, broker_from
from shared.lab.clips import write_digit_clip
from shared.lab.procs import device_command, worker_command

from .pipeline_helpers import ResultReader, run_device_cli


def report(scenario: str, **figures) -> None:
    print(f"RELIABILITY {scenario} {json.dumps(figures)}")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_digit_clip(tmp_path_factory.mktemp("rel") / "clip.avi", 200)


def _worker(url: str, model: Path, worker_id: str) -> subprocess.Popen:
    return subprocess.Popen(
        worker_command(url, str(model), worker_id),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_online(url: str, worker_ids: list[str], timeout: float = 60) -> None:
    from shared.mqtt import MqttLink

    link = MqttLink(url, f"wait-{time.monotonic_ns()}", subscriptions=["isplitee/workers/+/status"])
    link.start(10)
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while not set(worker_ids) <= seen:
            assert time.monotonic() < deadline, f"workers online: {seen}"
            try:
                m = link.inbox.get(timeout=0.2)
            except Exception:
                continue
            if m.payload == b"online":
                seen.add(m.topic.split("/")[2])
    finally:
        link.stop()


def _offloading_node(url: str, model: Path, clip, device_id: str, n: int, fps: float):
    """A node that offloads every frame (fixed split, alpha 1) and times out after 1 s."""
    return subprocess.Popen(
        device_command(
            url,
            model,
            clip.path,
            device_id,
            "--policy",
            "fixed:6",
            "--alpha",
            "1",
            "--max-frames",
            str(n),
            "--fps",
            f"{fps:g}",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(reply_timeout_s=1.0),
    )


def _unique(results: list[dict]) -> tuple[dict[int, dict], int]:
    by_frame: dict[int, dict] = {}
    for r in results:
        by_frame.setdefault(r["frame_id"], r)
    return by_frame, len(results) - len(by_frame)


def _env(**settings) -> dict[str, str]:
    return {**os.environ, **{f"ISPLITEE_{k.upper()}": str(v) for k, v in settings.items()}}


def test_a_killed_worker_loses_no_frame(broker, tiny_checkpoint, clip) -> None:
    """Two workers, one killed with SIGKILL mid-run: every frame still gets exactly one result;
    what the dead worker held is re-offloaded to the other."""
    workers = {w: _worker(broker.url, tiny_checkpoint, w) for w in ("wk-a", "wk-b")}
    reader = ResultReader(broker.url, "isplitee/camk/result")
    try:
        _wait_online(broker.url, list(workers))
        n = 160
        proc = _offloading_node(broker.url, tiny_checkpoint, clip, "camk", n, fps=25)
        reader.collect(40, timeout=60)
        workers["wk-a"].send_signal(signal.SIGKILL)
        killed_at = len(reader.results)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        by_frame, dup = _unique(reader.collect(n, timeout=30))
    finally:
        for w in workers.values():
            if w.poll() is None:
                w.terminate()
            w.wait(15)
        reader.close()
    sources = [r["source"] for r in by_frame.values()]
    lost = n - len(by_frame)
    report(
        "worker_kill",
        frames=n,
        lost=lost,
        duplicates=dup,
        killed_after=killed_at,
        cloud=sources.count("cloud"),
        fallback=sources.count("fallback"),
    )
    assert lost == 0 and dup == 0
    assert sources.count("fallback") <= 2, sources.count("fallback")


def test_broker_killed_and_restarted_loses_no_frame(tiny_checkpoint, clip, tmp_path) -> None:
    """Mosquitto with persistence, SIGKILLed mid-run and restarted on the same port 1 s later:
    node, worker and reader reconnect by themselves; every frame gets a result (offloads the
    broker lost fall back or are re-offloaded), counted once per frame id."""
    # Mosquitto started as root drops to its own user before writing its store, and that
    # user cannot enter pytest's private temporary tree: keep the store where it can.
    store = Path(tempfile.mkdtemp(prefix="isplitee-store-"))
    store.chmod(0o777)
    overrides = {
        "persistence": "true",
        "persistence_location": f"{store}/",
        "autosave_interval": "1",
        "log_type": "all",
    }
    b = broker_from(DEV_CONFIG, tmp_path, overrides=overrides).start()
    worker = _worker(b.url, tiny_checkpoint, "wb-1")
    reader = ResultReader(b.url, "isplitee/camb/result")
    try:
        _wait_online(b.url, ["wb-1"])
        n = 200
        proc = _offloading_node(b.url, tiny_checkpoint, clip, "camb", n, fps=20)
        reader.collect(50, timeout=60)
        b.stop(signal.SIGKILL)
        time.sleep(1.0)
        b = broker_from(DEV_CONFIG, tmp_path, port=b.port, overrides=overrides).start()
        restarted = time.monotonic()
        before = len(reader.results)
        while len(reader.results) == before:
            assert time.monotonic() - restarted < 30, "no result after the broker came back"
            reader.collect(before + 1, timeout=0.5)
        recovery_s = time.monotonic() - restarted
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        by_frame, dup = _unique(reader.collect(n, timeout=30))
    finally:
        if worker.poll() is None:
            worker.terminate()
        worker.wait(15)
        reader.close()
        b.stop()
        shutil.rmtree(store, ignore_errors=True)
    sources = [r["source"] for r in by_frame.values()]
    lost = n - len(by_frame)
    # What the broker itself received (log_type all): the node's results, before the kill and
    # after the restart.
    log = "\n".join(p.read_text() for p in tmp_path.glob("mosquitto-*.log"))
    at_broker = len(re.findall(r"Received PUBLISH from isplitee-node-camb \(d0, q1.*result'", log))
    report(
        "broker_kill",
        frames=n,
        results_at_broker=at_broker,
        lost_at_reader=lost,
        duplicates_suppressed=dup,
        recovery_s=round(recovery_s, 2),
        cloud=sources.count("cloud"),
        fallback=sources.count("fallback"),
    )
    # Every frame's result reached the broker, once, and the reader: its session (opened with
    # clean start off, so Mosquitto saves it) came back with the broker, and the broker queued
    # for it what the node sent before the reader had reconnected.
    assert at_broker == n
    assert lost == 0, sorted(set(range(n)) - set(by_frame))
    assert recovery_s < 10


def test_a_killed_node_restarts_from_its_last_saved_state(broker, tiny_artefact, clip, tmp_path):
    state = tmp_path / "camn.json"
    args = ["--policy", "isplitee", "--state", str(state), "--fps", "40", "--cost", "paper"]
    env = _env(state_interval_s=0.2, reply_timeout_s=0.2, reoffloads=0)
    proc = subprocess.Popen(
        device_command(broker.url, str(tiny_artefact), str(clip.path), "camn", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while not state.exists() or json.loads(state.read_text())["policy"]["rounds"] < 40:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    saved = json.loads(state.read_text())  # complete JSON: never half-written
    rounds = saved["policy"]["rounds"]
    assert rounds >= 40
    again = run_device_cli(
        broker.url, tiny_artefact, clip.path, "camn", *args, "--max-frames", "10"
    )
    _out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-2000:]
    assert "restored bandit state" in err
    assert json.loads(state.read_text())["policy"]["rounds"] == rounds + 10
    report("node_kill", rounds_saved=rounds, rounds_after_restart=rounds + 10)


def test_a_thousand_malformed_messages_do_not_stop_a_worker(broker, tiny_checkpoint) -> None:
    """1,000 malformed activations of every kind, interleaved with valid ones, on a running
    worker: it stays up, counts each by kind, answers each with an error, and still answers
    every valid request."""
    import msgpack
    import numpy as np
    import torch

    from cloud_worker.config import WorkerConfig
    from cloud_worker.service import Worker
    from shared.checkpoint import load_checkpoint
    from shared.config import load_config
    from shared.mqtt import MqttLink
    from shared.protocol import ACTIVATION_KEYS, Topics

    from .pipeline_helpers import activation, collect_replies, send_activation

    T = Topics()
    ckpt = load_checkpoint(tiny_checkpoint)
    w = Worker(
        load_config(
            WorkerConfig,
            None,
            {"broker": broker.url, "models": [str(tiny_checkpoint)], "worker_id": "w-fuzz"},
        )
    )
    w.start(timeout=10)
    import threading

    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), daemon=True)
    t.start()
    dev = MqttLink(broker.url, "fuzz-dev", subscriptions=[T.reply("camz")], inbox_size=5000)
    dev.start(10)
    with torch.inference_mode():
        act = ckpt.model.edge(torch.rand(1, 3, 32, 32), 6).activation[0].numpy()
    good = activation(act, model_hash=ckpt.hash, device_id="camz", frame_id=0, encoding="fp16")
    body = msgpack.unpackb(good, raw=False)
    rng = np.random.default_rng(0)

    def bad(i: int) -> tuple[bytes, str]:
        kind = i % 6
        if kind == 0:
            return rng.bytes(int(rng.integers(0, 300))), "decode"
        if kind == 1:
            return good[: int(rng.integers(1, len(good) - 1))], "decode"
        if kind == 2:
            return msgpack.packb({**body, "v": 99}), "version"
        if kind == 3:
            other_model = {**body, ACTIVATION_KEYS["model_hash"]: "ef" * 32}
            return msgpack.packb(other_model), "unknown_model"
        if kind == 4:
            return msgpack.packb({**body, ACTIVATION_KEYS["split_block"]: 9}), "shape"
        return msgpack.packb({**body, ACTIVATION_KEYS["device_id"]: "other"}), "device_mismatch"

    expected: dict[str, int] = {}
    try:
        for i in range(1000):
            payload, kind = bad(i)
            expected[kind] = expected.get(kind, 0) + 1
            send_activation(dev, "camz", 10_000 + i, payload)
            if i % 10 == 0:
                send_activation(dev, "camz", i, good)
        answers = {}
        collect_replies(dev, answers, 1100, 60)
    finally:
        dev.stop()
        stop.set()
        t.join(10)
        alive = t.is_alive()
        w.close()
    valid = [answers.get(i) for i in range(0, 1000, 10)]
    errors = [answers.get(10_000 + i) for i in range(1000)]
    report(
        "malformed",
        sent=1000,
        answered_errors=sum(e is not None for e in errors),
        valid_answered=sum(v is not None and v.ok for v in valid),
        counted=w.metrics.error_counts,
    )
    assert not alive
    assert all(v is not None and v.ok for v in valid)
    assert all(e is not None and not e.ok for e in errors)
    assert w.metrics.error_counts == expected


def test_an_overloaded_worker_answers_every_activation_at_once_and_stays_bounded(
    broker, tiny_checkpoint
) -> None:
    """Activations published far faster than one worker serves them: its inbox never holds
    more than ``queue_size``; each activation past it is answered at once with an
    ``overloaded`` error (so its node falls back now rather than at its timeout) and counted;
    nothing goes unanswered, and the worker serves again once the burst is over."""
    import threading

    import torch

    from shared.checkpoint import load_checkpoint
    from shared.mqtt import MqttLink
    from shared.protocol import Topics

    from .pipeline_helpers import WorkerPool, activation, collect_replies, send_activation

    # 900: below the broker's own bound per client (max_queued_messages 1000 in
    # broker_config/mosquitto.conf), so whatever went unanswered would be the worker's doing.
    T, ckpt, n, bound = Topics(), load_checkpoint(tiny_checkpoint), 900, 50
    with torch.inference_mode():
        act = ckpt.model.edge(torch.rand(1, 3, 32, 32), 6).activation[0].numpy()
    pool = WorkerPool(broker.url, [tiny_checkpoint])
    w = pool.start("w-over", queue_size=bound, max_batch=1)
    dev = MqttLink(broker.url, "flood-dev", subscriptions=[T.reply("camo")], inbox_size=10 * n)
    dev.start(10)
    most_waiting, done = 0, threading.Event()

    def watch() -> None:
        nonlocal most_waiting
        while not done.is_set():
            most_waiting = max(most_waiting, w.link.inbox.qsize())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    answers: dict[int, object] = {}

    def flood(first: int, count: int) -> None:
        for i in range(first, first + count):
            payload = activation(act, model_hash=ckpt.hash, device_id="camo", frame_id=i)
            send_activation(dev, "camo", i, payload)

    try:
        t0 = time.monotonic()
        flood(0, n)
        collect_replies(dev, answers, n, 90)
        burst_s = time.monotonic() - t0
        flood(n, 20)  # after the burst: served again
        collect_replies(dev, answers, n + 20, 30)
    finally:
        done.set()
        watcher.join(5)
        dev.stop()
        pool.close()
    burst = [answers.get(i) for i in range(n)]
    overloaded = sum(a is not None and not a.ok and a.error.kind == "overloaded" for a in burst)
    served = sum(a is not None and a.ok for a in burst)
    report(
        "overload",
        sent=n,
        served=served,
        answered_overloaded=overloaded,
        unanswered=sum(a is None for a in burst),
        queue_size=bound,
        most_waiting=most_waiting,
        burst_s=round(burst_s, 2),
    )
    assert served + overloaded == n  # every activation answered, one way or the other
    assert overloaded > 0 and w.metrics.error_counts.get("overloaded") == overloaded
    assert most_waiting <= bound
    assert all(answers.get(i) is not None and answers[i].ok for i in range(n, n + 20))
