"""What the pipeline tests share: an independent result reader, workers, the device CLI."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path

from cloud_worker.config import WorkerConfig
from cloud_worker.service import Worker
from shared.config import load_config
from shared.lab.procs import device_command
from shared.mqtt import MqttLink
from shared.protocol import Reply, Topics, decode_reply, encode_activation


class ResultReader:
    """An independent subscriber, as another app would be: collects every result published."""

    def __init__(self, broker_url: str, topic: str = "isplitee/+/result") -> None:
        self.link = MqttLink(broker_url, f"reader-{time.monotonic_ns()}", subscriptions=[topic])
        self.results: list[dict] = []
        self.link.start(10)

    def collect(self, expected: int, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.results) < expected and time.monotonic() < deadline:
            try:
                msg = self.link.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            self.results.append(json.loads(msg.payload))
        # Anything more than expected would be a duplicate: give it a moment to show up.
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            with contextlib.suppress(queue.Empty):
                self.results.append(json.loads(self.link.inbox.get(timeout=0.1).payload))
        return self.results

    def close(self) -> None:
        self.link.stop()


class WorkerPool:
    def __init__(self, broker_url: str, models: list[Path]) -> None:
        self.broker_url = broker_url
        self.models = models
        self.running: list[tuple[Worker, threading.Event, threading.Thread]] = []

    def start(self, worker_id: str, **over) -> Worker:
        flags = {
            "broker": self.broker_url,
            "models": [str(m) for m in self.models],
            "worker_id": worker_id,
            **over,
        }
        w = Worker(load_config(WorkerConfig, None, flags))
        w.start(timeout=10)
        stop = threading.Event()
        t = threading.Thread(target=w.run, args=(stop,), daemon=True)
        t.start()
        self.running.append((w, stop, t))
        return w

    def close(self) -> None:
        for w, stop, t in self.running:
            stop.set()
            t.join(10)
            w.close()


def run_device_cli(
    broker_url: str,
    model: Path,
    source: Path,
    device_id: str,
    *extra: str,
    env: dict[str, str] | None = None,
):
    """Start ``isplitee-device`` as a user would (``python -m device``); ``env``: settings
    without a flag (``ISPLITEE_*``), on top of this process's environment."""
    return subprocess.Popen(
        device_command(broker_url, str(model), str(source), device_id, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


ACTIVATIONS_ONLY = {"ISPLITEE_FRAME_OFFLOAD": "false"}
"""A node that sends activations only (no frame offload), for tests of what a split sends."""


def activation(tensor, **fields) -> bytes:
    """A node's activation message for ``tensor``; ``fields`` (``model_hash``, ``device_id``
    and ``frame_id`` at least) override the defaults: block 6, fp32."""
    defaults = dict(
        captured_at=time.time(),
        split_block=6,
        exit_confidence=0.1,
        exit_class=0,
        encoding="fp32",
    )
    return encode_activation(tensor=tensor, **{**defaults, **fields})


def send_activation(link: MqttLink, device_id: str, tag: int, payload: bytes) -> None:
    """Publish as a node does: on its activation topic, answered on its reply topic, with
    ``tag`` (4 bytes) as the correlation data."""
    topics = Topics()
    link.publish(
        topics.activation(device_id),
        payload,
        response_topic=topics.reply(device_id),
        correlation=tag.to_bytes(4, "big"),
    )


def collect_replies(link: MqttLink, answers: dict[int, Reply], until: int, timeout: float) -> None:
    """Decode replies from ``link``'s inbox into ``answers`` (by their 4-byte tag) until it
    holds ``until`` of them or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while len(answers) < until and time.monotonic() < deadline:
        try:
            m = link.inbox.get(timeout=0.5)
        except queue.Empty:
            continue
        answers[int.from_bytes(m.correlation, "big")] = decode_reply(m.payload)


def collect_until(link: MqttLink, into: list, until, timeout: float = 30.0) -> bool:
    """Append what ``link`` receives to ``into`` until a message satisfies ``until``
    (True), or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            m = link.inbox.get(timeout=0.1)
        except queue.Empty:
            continue
        into.append(m)
        if until(m):
            return True
    return False
