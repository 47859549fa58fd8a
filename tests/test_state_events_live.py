"""State, events, snapshots and Home Assistant discovery of a real node on a real broker.

A node runs in this process (``DeviceApp``, the artefact on ONNX Runtime, a real paho link) on
60 s of frames at 20 fps in which the scene's label changes three times; an independent
subscriber counts what reaches the broker. The frames come as fast as the node takes them,
with capture times 20 fps apart: the node's state and events run on capture times, so 60 s of
frames take a few seconds. They start in the future, so the node's wall-clock ticks (which end
labels and events while no frame comes) never run ahead of the frames.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from device.discovery import DeviceDiscovery, discovery_topic, legacy_topics
from device.events import EventMessage, StateMessage
from shared.jpeg import jpeg_dimensions

from .pipeline_helpers import collect_until

FPS, SECONDS, MIN_FRAMES = 20, 60, 3
SEGMENTS = 4  # the label changes three times
DEV = "camev"


class _Synthetic:
    """A frame source (device.camera.FrameSource's surface) of ``images`` at FPS in capture
    time, read as fast as the node likes; the first read waits for ``gate``."""

    live = False
    name = "synthetic"
    dropped = 0

    def __init__(self, images: list[np.ndarray], t0: float, gate: threading.Event) -> None:
        self.images, self.t0, self.gate, self.i = images, t0, gate, 0

    def read(self):
        from device.camera import Frame

        if self.i == 0:
            self.gate.wait(20)
        if self.i >= len(self.images):
            return None
        frame = Frame(self.i, self.images[self.i], self.t0 + self.i / FPS)
        self.i += 1
        return frame

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _first_exit_telling_apart(blocks, outs):
    """(block, label -> the image it is surest of, margins) of the first exit that gives two
    labels or more over the images."""
    for block, logits in zip(blocks, outs, strict=False):
        top2 = logits.topk(2, dim=1)
        margin, label = (top2.values[:, 0] - top2.values[:, 1]).numpy(), top2.indices[:, 0]
        surest: dict[int, int] = {}
        for i, k in enumerate(label.tolist()):
            if k not in surest or margin[i] > margin[surest[k]]:
                surest[k] = i
        if len(surest) >= 2:
            return block, surest, margin
    pytest.fail("no exit of the tiny model tells two images apart")


@pytest.fixture(scope="module")
def scene(tiny_checkpoint, tmp_path_factory):
    """SEGMENTS images, each held for an equal part of the clip, whose labels at one exit
    differ from the one before: (exit block, frames, segment starts, label names in order).

    The tiny test model is barely trained (its final layer gives every digit one class), so
    the scene is made of digits and plain colours and read at the first exit that tells two
    of them apart, each the one it is surest of, so ONNX Runtime and PyTorch agree on it."""
    import torch

    from shared.checkpoint import load_checkpoint
    from shared.lab.clips import write_digit_clip
    from shared.preprocess import FramePreprocessor

    clip = write_digit_clip(tmp_path_factory.mktemp("ev") / "pool.avi", 40, seed=5)
    colours = [(255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)]
    pool = [*clip.frames, *(np.full_like(clip.frames[0], c) for c in colours)]
    ckpt = load_checkpoint(tiny_checkpoint)
    meta = ckpt.meta
    prep = FramePreprocessor(meta.input_size, meta.mean, meta.std)
    with torch.inference_mode():
        outs = ckpt.model(torch.from_numpy(np.concatenate([prep(f) for f in pool])))
    block, surest, margin = _first_exit_telling_apart(meta.exit_blocks, outs)
    kinds = sorted(surest, key=lambda k: -margin[surest[k]])[:SEGMENTS]
    order = [kinds[k % len(kinds)] for k in range(SEGMENTS)]  # A B A B, or A B C D
    n = FPS * SECONDS
    starts = [k * n // SEGMENTS for k in range(SEGMENTS)]
    frames = []
    for k, label in enumerate(order):
        end = starts[k + 1] if k + 1 < SEGMENTS else n
        frames += [pool[surest[label]]] * (end - starts[k])
    return block, frames, starts, [meta.class_names[k] for k in order]


def _collect(link, into: list, until, timeout: float = 30.0) -> None:
    if not collect_until(link, into, until, timeout):
        raise AssertionError("timed out waiting for a message")


def test_a_minute_of_frames_gives_a_few_dozen_messages_per_entity_topic(
    broker, tiny_artefact, scene, monkeypatch
) -> None:
    import device.app
    from device.app import DeviceApp
    from device.config import DeviceConfig
    from shared.config import load_config
    from shared.mqtt import MqttLink

    block, frames, starts, names = scene
    ha_prefix = "homeassistant"
    watch = MqttLink(
        broker.url,
        f"ha-watch-{time.monotonic_ns()}",
        subscriptions=[f"isplitee/{DEV}/#", f"{ha_prefix}/+/isplitee_{DEV}/#"],
        inbox_size=FPS * SECONDS * 2,  # every result too, while the node runs unread
    )
    watch.start(10)
    cfg = load_config(
        DeviceConfig,
        None,
        {
            "broker": broker.url,
            "model": tiny_artefact,
            "source": "synthetic",
            "device_id": DEV,
            # every frame answered at one exit: one image, one answer, the scene decides
            "policy": f"fixed:{block}",
            "alpha": 0.0,
            "cost": "paper",
            "ha_discovery": True,
            "min_frames": MIN_FRAMES,
            "min_confidence": 0.0,  # a barely trained model: every answer counts
            "event_labels": names[:1],
            "stats_interval_s": 1.0,
        },
    )
    gate = threading.Event()
    source = _Synthetic(frames, time.time() + 30, gate)
    monkeypatch.setattr(device.app, "open_source", lambda spec, fps=None: source)
    app = DeviceApp(cfg)
    runner = threading.Thread(target=app.run, args=(threading.Event(),), daemon=True)
    seen: list = []
    ha = MqttLink(broker.url, f"ha-{time.monotonic_ns()}", subscriptions=[])
    ha.start(10)
    config_topic = discovery_topic(DEV, ha_prefix)
    try:
        runner.start()
        _collect(watch, seen, lambda m: m.topic == config_topic)
        ha.publish(f"{ha_prefix}/status", b"online")  # Home Assistant restarted
        _collect(watch, seen, lambda m: [x.topic for x in seen].count(config_topic) >= 2)
        gate.set()
        runner.join(60)
        assert not runner.is_alive(), "the node did not finish"
        _collect(watch, seen, lambda m: m.topic.endswith("/status") and m.payload == b"offline")
        time.sleep(0.3)
        while not watch.inbox.empty():
            seen.append(watch.inbox.get())
    finally:
        gate.set()
        ha.stop()
        watch.stop()
    by_topic: dict[str, list] = {}
    for m in seen:
        by_topic.setdefault(m.topic, []).append(m)

    # Discovery: published at start and again when Home Assistant came online, valid against
    # the documented schema, after the migration markers of the per-entity configs.
    configs = [m for m in by_topic[config_topic] if m.payload]
    assert len(configs) >= 2
    disc = DeviceDiscovery.model_validate_json(configs[0].payload)
    order = [m.topic for m in seen]
    old = legacy_topics(DEV, ha_prefix)
    assert all(order.index(t) < order.index(config_topic) for t in old)
    assert all(by_topic[t][-1].payload == b"" for t in old)  # cleared after the device config
    platforms = {c.platform for c in disc.components.values()}
    assert platforms == {"sensor", "binary_sensor", "image", "number"}

    # Every topic a discovered entity reads: at most a few dozen messages for 1200 frames.
    read = {disc.availability_topic}
    for c in disc.components.values():
        read |= {getattr(c, k) for k in ("state_topic", "image_topic") if hasattr(c, k)}
    assert f"isplitee/{DEV}/result" not in read
    counts = {t: len(by_topic.get(t, [])) for t in read}
    assert all(0 < n <= 36 for n in counts.values()), counts
    assert len(by_topic[f"isplitee/{DEV}/result"]) == FPS * SECONDS  # vs one per frame

    # Each label change shows on the state topic within min_frames frames.
    states = [
        StateMessage.model_validate_json(m.payload) for m in by_topic[f"isplitee/{DEV}/state"]
    ]
    assert states[0].class_name == "none"
    for start, name in zip(starts, names, strict=True):
        first = next(s for s in states if s.class_name == name and s.frame_id >= start)
        assert first.frame_id <= start + MIN_FRAMES - 1, (name, start, first)

    # Events: one per segment whose label raises events; binary sensors follow active_events.
    events = [
        EventMessage.model_validate_json(m.payload) for m in by_topic[f"isplitee/{DEV}/events"]
    ]
    starts_ = [e for e in events if e.type == "start"]
    assert [e.class_name for e in starts_] == [n for n in names if n == names[0]]
    assert all(any(e.type == "end" and e.id == s.id for e in events) for s in starts_)
    assert states[-1].active_events == []

    # Snapshots: JPEGs at the configured size, counted in the stats.
    shots = by_topic[f"isplitee/{DEV}/snapshot"]
    assert shots and all(jpeg_dimensions(m.payload)[:2] == (480, 480) for m in shots)
    stats = json.loads(by_topic[f"isplitee/{DEV}/stats"][-1].payload)
    assert stats["snapshots"] == len(shots)
    assert stats["snapshot_bytes"] == sum(len(m.payload) for m in shots)
    assert stats["events"] == len(starts_)
