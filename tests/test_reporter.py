"""The node's publisher of state, events and snapshots, on a fake publisher: what goes out,
retained or not, and which frames it keeps for a snapshot that has to wait."""

from __future__ import annotations

import json

import numpy as np

from device.config import DeviceConfig
from device.events import EventRules, LabelTracker
from device.reporter import Reporter, SnapshotSettings
from shared.config import load_config
from shared.jpeg import decode_frame, jpeg_dimensions
from shared.protocol import Result, Topics, iso_utc

T0 = 1_800_000_000.0


class Sent:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes | str, bool]] = []

    def publish(self, topic, payload, *, qos=1, retain=False, **_) -> None:
        self.messages.append((topic, payload, retain))

    def on(self, kind: str) -> list[tuple[bytes | str, bool]]:
        return [(p, r) for t, p, r in self.messages if t == f"isplitee/cam1/{kind}"]


def _reporter(shots: SnapshotSettings, recent: int = 4) -> tuple[Reporter, Sent]:
    rules = EventRules(min_frames=2, snapshot_interval_s=1.0, end_s=2.0)
    sent = Sent()
    tracker = LabelTracker("cam1", rules, now=T0)
    return Reporter(tracker, sent, Topics(), "cam1", snapshots=shots, recent=recent), sent


def _feed(rep: Reporter, frame_id: int, conf: float, fps: float = 20.0) -> None:
    t = T0 + frame_id / fps
    image = np.full((64, 48, 3), frame_id % 256, np.uint8)  # each frame its own grey
    rep.frame(frame_id, image)
    result = Result("cam1", frame_id, 3, "3", conf, 6, 6, "edge", iso_utc(t), 1.0, "ab" * 8)
    rep.on_result(result, t)


def test_state_and_snapshot_are_retained_events_are_not_and_bytes_are_counted() -> None:
    rep, sent = _reporter(SnapshotSettings(size=96, quality=80, annotate=True))
    rep.start()
    for i in range(3):
        _feed(rep, i, 0.9)
    states = [json.loads(p) for p, _ in sent.on("state")]
    assert [s["class_name"] for s in states] == ["none", "3"]
    assert all(r for _, r in sent.on("state")) and not any(r for _, r in sent.on("events"))
    ((jpeg, retained),) = sent.on("snapshot")
    assert retained and jpeg_dimensions(jpeg)[:2] == (96, 72)  # longest side 96, as configured
    assert rep.stats() == {
        "events": 1,
        "snapshots": 1,
        "snapshot_bytes": len(jpeg),
        "snapshots_missed": 0,
    }
    plain, _ = _reporter(SnapshotSettings(size=96, quality=80, annotate=False))
    for i in range(3):
        _feed(plain, i, 0.9)
    bare = plain.out.on("snapshot")[0][0]
    assert jpeg != bare  # the label drawn on it


def test_a_better_frame_that_waits_for_its_turn_is_kept_and_shown() -> None:
    rep, sent = _reporter(SnapshotSettings(size=48), recent=2)
    _feed(rep, 0, 0.7)
    _feed(rep, 1, 0.7)  # the event starts, frame 0 is its snapshot
    _feed(rep, 2, 0.95)  # better, but within 1 s: it waits, long out of the 2 recent frames
    for i in range(3, 25):
        _feed(rep, i, 0.8)
    shots = [decode_frame(p, (48, 36, 3)) for p, _ in sent.on("snapshot")]
    assert [int(np.median(s)) for s in shots] == [0, 2]  # frame 2's grey, a second later
    assert [json.loads(p)["type"] for p, _ in sent.on("events")] == ["start", "update"]
    assert rep._kept == {}  # nothing kept once shown


def test_snapshots_off_clears_the_retained_one_sends_no_jpeg_and_keeps_no_frame() -> None:
    rep, sent = _reporter(SnapshotSettings(enabled=False))
    rep.start()
    assert sent.on("snapshot") == [(b"", True)]  # an earlier run's picture is removed
    for i in range(30):
        _feed(rep, i, 0.6 + i / 100)
    assert sent.on("snapshot") == [(b"", True)] and rep._recent == {} and rep._kept == {}
    assert [json.loads(p)["type"] for p, _ in sent.on("events")][:1] == ["start"]
    assert rep.stats()["snapshots"] == 0


def test_a_large_frame_is_kept_small_and_a_small_one_as_it_is() -> None:
    """A Pi with a 1080p camera keeps a few frames at twice the snapshot size, not whole."""
    from device.snapshot import fit, keepable

    big = np.zeros((1080, 1920, 3), np.uint8)
    kept = keepable(big, 480)
    assert kept.shape == (540, 960, 3) and fit(kept, 480).shape == (270, 480, 3)
    small = np.zeros((64, 64, 3), np.uint8)
    assert keepable(small, 480) is small and fit(small, 480).shape == (480, 480, 3)


def test_close_leaves_the_retained_state_at_none() -> None:
    rep, sent = _reporter(SnapshotSettings(size=48))
    rep.start()
    for i in range(3):
        _feed(rep, i, 0.9)
    rep.close()
    payload, retained = sent.on("state")[-1]
    assert retained and json.loads(payload)["class_name"] == "none"
    assert [json.loads(p)["type"] for p, _ in sent.on("events")] == ["start", "end"]


def test_snapshot_settings_take_their_defaults_and_values_from_the_node_config() -> None:
    cfg = load_config(DeviceConfig, None, {"model": "m.pt"})
    assert SnapshotSettings.from_config(cfg) == SnapshotSettings()
    cfg = load_config(DeviceConfig, None, {"model": "m.pt", "snapshot": False, "snapshot_size": 64})
    assert SnapshotSettings.from_config(cfg) == SnapshotSettings(enabled=False, size=64)


def test_a_snapshot_of_a_frame_not_kept_is_counted_in_the_stats() -> None:
    rep, sent = _reporter(SnapshotSettings(size=48))
    for i in range(2):  # results of frames the reporter never saw
        t = T0 + i / 20
        result = Result("cam1", i, 3, "3", 0.9, 6, 6, "edge", iso_utc(t), 1.0, "ab" * 8)
        rep.on_result(result, t)
    assert sent.on("snapshot") == [] and rep.stats()["snapshots_missed"] == 1
