"""The cloud worker: micro-batching on its own, then the service on a real Mosquitto."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import msgpack
import pytest
import torch

from cloud_worker.batcher import Batcher
from cloud_worker.config import WorkerConfig
from cloud_worker.service import Worker
from shared.checkpoint import load_checkpoint
from shared.config import ConfigError, load_config
from shared.mqtt import MqttLink
from shared.protocol import Topics, decode_reply

from .pipeline_helpers import activation, send_activation

T = Topics()


# -- batching, no broker -------------------------------------------------------------------------
def test_batcher_releases_full_batches_at_once() -> None:
    b: Batcher[int] = Batcher(max_batch=3, max_wait_s=1.0)
    assert b.add("k", 1, 0.0) is None and b.add("k", 2, 0.1) is None
    assert b.add("other", 9, 0.1) is None
    assert b.add("k", 3, 0.2) == [1, 2, 3]
    assert len(b) == 1 and b.next_deadline() == pytest.approx(1.1)


def test_batcher_releases_by_age_oldest_first_and_drains() -> None:
    b: Batcher[int] = Batcher(max_batch=10, max_wait_s=0.5)
    b.add("a", 1, 0.0)
    b.add("b", 2, 0.3)
    assert list(b.due(0.4)) == []
    assert list(b.due(0.5)) == [("a", [1])]
    b.add("c", 3, 0.6)
    assert dict(b.drain()) == {"b": [2], "c": [3]} and len(b) == 0
    assert b.next_deadline() is None


def test_batcher_with_no_wait_runs_whatever_is_in_hand() -> None:
    b: Batcher[int] = Batcher(max_batch=10, max_wait_s=0.0)
    b.add("a", 1, 5.0)
    assert list(b.due(5.0)) == [("a", [1])]


# -- config --------------------------------------------------------------------------------------
def test_config_layers_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "cloud.toml"
    toml.write_text('models = ["a.pt"]\nmax_batch = 4\ngroup = "fromfile"\n')
    monkeypatch.setenv("ISPLITEE_MAX_BATCH", "8")
    cfg = load_config(WorkerConfig, toml, {"group": "fromflag", "worker_id": None})
    assert (cfg.max_batch, cfg.group, cfg.models) == (8, "fromflag", [Path("a.pt")])
    toml.write_text('models = ["a.pt"]\nmax_bacth = 4\n')
    with pytest.raises(ConfigError, match="max_bacth: unknown key"):
        load_config(WorkerConfig, toml, {})
    with pytest.raises(ConfigError, match="models: required"):
        load_config(WorkerConfig, None, {})
    with pytest.raises(ConfigError, match=r"max_batch: .*greater than or equal to 1"):
        load_config(WorkerConfig, None, {"models": ["a.pt"], "max_batch": 0})
    with pytest.raises(ConfigError, match=r"group: .*wildcards"):
        load_config(WorkerConfig, None, {"models": ["a.pt"], "group": "a+b"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(WorkerConfig, tmp_path / "nope.toml", {})


# -- on the broker -------------------------------------------------------------------------------
@pytest.fixture
def running_worker(broker, tiny_checkpoint):
    started: list[tuple[Worker, threading.Event, threading.Thread]] = []

    def start(worker_id: str = "w1", **over) -> Worker:
        flags = {
            "broker": broker.url,
            "models": [str(tiny_checkpoint)],
            "worker_id": worker_id,
            "metrics_port": 0,
            **over,
        }
        w = Worker(load_config(WorkerConfig, None, flags))
        w.start(timeout=10)
        stop = threading.Event()
        t = threading.Thread(target=w.run, args=(stop,), daemon=True)
        t.start()
        started.append((w, stop, t))
        return w

    yield start
    for w, stop, t in started:
        stop.set()
        t.join(10)
        w.close()


def _client(broker, device: str) -> MqttLink:
    link = MqttLink(
        broker.url, f"test-{device}-{time.monotonic_ns()}", subscriptions=[T.reply(device)]
    )
    link.start(10)
    return link


def test_worker_answers_with_the_whole_models_prediction_and_counts_bad_input(
    broker, tiny_checkpoint, running_worker, caplog
) -> None:
    worker = running_worker("w1")
    ckpt = load_checkpoint(tiny_checkpoint)
    dev = _client(broker, "camw")
    try:
        x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            edge = ckpt.model.edge(x, 6)
            want = ckpt.model(x)[-1].argmax(1).tolist()

        def send(i: int, payload: bytes) -> None:
            send_activation(dev, "camw", i, payload)

        def act(i: int, **over) -> bytes:
            fields = {"model_hash": ckpt.hash, "device_id": "camw", "frame_id": i, **over}
            return activation(edge.activation[i].numpy(), **fields)

        send(0, act(0))
        send(100, b"\x93\x01\x02")  # msgpack, but not a map
        send(101, act(1, model_hash="cd" * 32))  # a model this worker does not serve
        send(102, act(1, split_block=9))  # shape of block 6 claimed as block 9
        send(103, act(1, device_id="intruder"))  # another device's id on camw's topic
        for i in (1, 2, 3):
            send(i, act(i))
        replies = {}
        for _ in range(8):
            msg = dev.inbox.get(timeout=10)
            replies[int.from_bytes(msg.correlation, "big")] = decode_reply(msg.payload)
        assert [replies[i].label for i in range(4)] == want
        assert all(replies[i].ok and 0 < replies[i].confidence <= 1 for i in range(4))
        kinds = {i: replies[i].error.kind for i in (100, 101, 102, 103)}
        assert kinds == {100: "decode", 101: "unknown_model", 102: "shape", 103: "device_mismatch"}
        assert "cdcdcdcdcdcd" in replies[101].error.message
        assert worker.metrics.error_counts == {
            "decode": 1,
            "unknown_model": 1,
            "shape": 1,
            "device_mismatch": 1,
        }
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics").read()
        assert b'isplitee_worker_errors_total{kind="unknown_model",worker="w1"} 1.0' in metrics
        assert b'isplitee_worker_replies_total{worker="w1"} 8.0' in metrics
        health = urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/healthz")
        assert health.status == 200
        # A message without a response topic is counted, not answered; a flood of them is
        # counted one by one and logged once (shared.logthrottle: one line per kind per 10 s).
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cloud_worker.service"):
            for _ in range(50):
                dev.publish(T.activation("camw"), msgpack.packb({"v": 1}))
            send(104, msgpack.packb({"v": 99}))  # a kind not seen yet: logged at once
            deadline = time.monotonic() + 10
            while worker.metrics.error_counts["decode"] < 51 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert decode_reply(dev.inbox.get(timeout=10).payload).error.kind == "version"
        assert worker.metrics.error_counts["decode"] == 51
        logged = [r.getMessage() for r in caplog.records if "refused a message" in r.getMessage()]
        assert [m.split(": ")[1] for m in logged] == ["version"], logged
    finally:
        dev.stop()


def test_cli_serves_until_sigterm_then_says_offline(broker, tiny_checkpoint) -> None:
    status = MqttLink(
        broker.url, f"status-{time.monotonic_ns()}", subscriptions=[T.worker_status("clitest")]
    )
    status.start(10)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloud_worker",
            "--broker",
            broker.url,
            "--model",
            str(tiny_checkpoint),
            "--worker-id",
            "clitest",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = status.inbox.get(timeout=60)
        assert first.payload == b"online"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert status.inbox.get(timeout=10).payload == b"offline"
    finally:
        if proc.poll() is None:
            proc.kill()
        status.stop()


def test_cli_reports_a_bad_config_in_one_message(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cloud_worker", "--model", "x.pt", "--max-batch", "0"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "max_batch" in out.stderr and "Traceback" not in out.stderr


def test_a_stopped_worker_leaves_the_shared_subscription(broker, tiny_checkpoint) -> None:
    """A worker that stops on purpose ends its MQTT session: otherwise the broker keeps it in
    the shared group for the session's lifetime and queues activations nobody answers."""
    ckpt = load_checkpoint(tiny_checkpoint)

    def start(worker_id: str) -> tuple[Worker, threading.Event, threading.Thread]:
        flags = {"broker": broker.url, "models": [str(tiny_checkpoint)], "worker_id": worker_id}
        w = Worker(load_config(WorkerConfig, None, flags))
        w.start(timeout=10)
        stop = threading.Event()
        t = threading.Thread(target=w.run, args=(stop,), daemon=True)
        t.start()
        return w, stop, t

    old = start("w-leaving")
    old[1].set()
    old[2].join(10)
    old[0].close()
    new = start("w-staying")
    dev = _client(broker, "camleave")
    try:
        with torch.inference_mode():
            edge = ckpt.model.edge(torch.rand(1, 3, 32, 32), 6)
        for i in range(20):
            payload = activation(
                edge.activation[0].numpy(),
                model_hash=ckpt.hash,
                device_id="camleave",
                frame_id=i,
                encoding="fp16",
            )
            send_activation(dev, "camleave", i, payload)
        got = {int.from_bytes(dev.inbox.get(timeout=5).correlation, "big") for _ in range(20)}
        assert got == set(range(20))
    finally:
        dev.stop()
        new[1].set()
        new[2].join(10)
        new[0].close()


def test_a_hash_prefix_matching_two_served_models_is_refused_as_ambiguous() -> None:
    """Nodes send a 16-digit prefix of their model's hash; the worker must never guess."""
    from cloud_worker.engine import ModelBank
    from shared.protocol import ProtocolError

    bank = ModelBank.__new__(ModelBank)  # the lookup alone: no checkpoint files needed
    a, b = object(), object()
    bank.models = {"0123456789abcdef" + "1" * 48: a, "0123456789abcdef" + "2" * 48: b}
    assert bank.lookup("0123456789abcdef1") is a
    with pytest.raises(ProtocolError, match="matches 2 models"):
        bank.lookup("0123456789abcdef")
    with pytest.raises(ProtocolError, match="not served"):
        bank.lookup("fedcba9876543210")
