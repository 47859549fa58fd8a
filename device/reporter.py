"""The node's publisher of state, events and snapshots: the edge around :mod:`device.events`.

The node hands it every result it publishes (:meth:`Reporter.on_result`, after the result
went out, so the per-frame topic is untouched) and the frames it reads (:meth:`Reporter.frame`,
before it processes them); the reply thread calls :meth:`Reporter.tick` a few times a second
so labels and events lapse while no frame comes. The tracker decides; this class only sends:
state (retained JSON), events (JSON) and snapshots (retained JPEG, :mod:`device.snapshot`).

Frames are kept only as long as a snapshot may still be asked of them: the newest few (a
result comes after its frame is read, a cloud answer up to ``max_pending`` frames later), and
those the tracker still wants (:meth:`device.events.LabelTracker.wanted_frames`), each at
most twice ``snapshot_size`` on its longest side (:func:`device.snapshot.keepable`). With
snapshots off, no frame is kept at all.

Thread-safe: results come from the main thread (edge answers) and the reply thread (cloud
answers, fallbacks, ticks).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.config import DeviceConfig
from device.events import Answer, LabelTracker, Updates
from device.node import Publisher
from device.snapshot import fit, keepable, snapshot_jpeg
from shared.protocol import Result, Topics

__all__ = ["Reporter", "SnapshotSettings"]

log = logging.getLogger(__name__)


def _default(key: str) -> Any:
    """A config key's default: device/config.py is their one home (and validates values)."""
    return DeviceConfig.model_fields[key].default


@dataclass(frozen=True)
class SnapshotSettings:
    """The ``snapshot_*`` config keys (``enabled`` is ``snapshot``), with the config's
    defaults; the node builds them with :meth:`from_config`."""

    enabled: bool = _default("snapshot")
    size: int = _default("snapshot_size")
    quality: int = _default("snapshot_quality")
    annotate: bool = _default("snapshot_annotate")

    @classmethod
    def from_config(cls, cfg: DeviceConfig) -> SnapshotSettings:
        return cls(cfg.snapshot, cfg.snapshot_size, cfg.snapshot_quality, cfg.snapshot_annotate)


class Reporter:
    """Sends what a :class:`~device.events.LabelTracker` decides: state (retained JSON), events
    (JSON) and snapshots (retained JPEG, with snapshots on), keeping the frames a snapshot may
    still be asked of; counts what it sent for the node's stats (:meth:`stats`)."""

    def __init__(
        self,
        tracker: LabelTracker,
        publisher: Publisher,
        topics: Topics,
        device_id: str,
        *,
        snapshots: SnapshotSettings,
        recent: int = 16,
    ) -> None:
        self.tracker = tracker
        self.out = publisher
        self.snapshots = snapshots
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()
        self._recent_max = recent
        self._kept: dict[int, np.ndarray] = {}
        self._topic_state = topics.state(device_id)
        self._topic_events = topics.events(device_id)
        self._topic_snapshot = topics.snapshot(device_id)
        self._lock = threading.Lock()
        self.events_started = 0
        self.snapshots_sent = 0
        self.snapshot_bytes = 0
        self.snapshots_missed = 0  # asked of a frame not kept (should not happen): in stats

    def start(self) -> None:
        """The state at start (``none``): replaces a retained state of an earlier run. With
        snapshots off, an earlier run's retained snapshot is cleared (an empty retained
        message), so no reader takes an old picture for what the camera sees."""
        with self._lock:
            state = self.tracker.initial()
            self.out.publish(self._topic_state, state.model_dump_json(), retain=True)
            if not self.snapshots.enabled:
                self.out.publish(self._topic_snapshot, b"", retain=True)

    def frame(self, frame_id: int, image: np.ndarray) -> None:
        """A frame about to be processed: kept a while, in case it becomes a snapshot."""
        if not self.snapshots.enabled:
            return
        small = keepable(image, self.snapshots.size)
        with self._lock:
            self._recent[frame_id] = small
            while len(self._recent) > self._recent_max:
                self._recent.popitem(last=False)

    def on_result(self, result: Result, captured_at: float) -> None:
        """A result the node has just published."""
        answer = Answer(
            frame_id=result.frame_id,
            label=result.label,
            class_name=result.class_name,
            confidence=result.confidence,
            source=result.source,
            split_block=result.split_block,
            captured_at=captured_at,
        )
        with self._lock:
            self._send(self.tracker.observe(answer))

    def tick(self, now: float) -> None:
        """Time passes (Unix seconds): labels and events that lapsed by now end."""
        with self._lock:
            self._send(self.tracker.advance(now))

    def close(self) -> None:
        """The node stops: open events end, and the state goes to ``none`` (retained)."""
        with self._lock:
            self._send(self.tracker.close())

    def stats(self) -> dict[str, int]:
        """This run's counts, for the node's stats message (keys in device/stats_fields.py)."""
        with self._lock:
            return {
                "events": self.events_started,
                "snapshots": self.snapshots_sent,
                "snapshot_bytes": self.snapshot_bytes,
                "snapshots_missed": self.snapshots_missed,
            }

    # -- lock held -----------------------------------------------------------------------------
    def _send(self, updates: Updates) -> None:
        if updates:
            for event in updates.events:
                self.events_started += event.type == "start"
                self.out.publish(self._topic_events, event.model_dump_json())
            if self.snapshots.enabled:
                for shot in updates.snapshots:
                    self._snapshot(shot.frame_id, f"{shot.class_name} {shot.confidence:.2f}")
            if updates.state is not None:
                self.out.publish(self._topic_state, updates.state.model_dump_json(), retain=True)
        if self.snapshots.enabled:
            self._keep_wanted()

    def _snapshot(self, frame_id: int, label: str) -> None:
        image = self._kept.get(frame_id)
        if image is None:
            image = self._recent.get(frame_id)
        if image is None:
            self.snapshots_missed += 1
            log.warning("no frame %d kept for its snapshot: none sent", frame_id)
            return
        s = self.snapshots
        jpeg = snapshot_jpeg(fit(image, s.size), s.quality, label if s.annotate else None)
        self.out.publish(self._topic_snapshot, jpeg, retain=True)
        self.snapshots_sent += 1
        self.snapshot_bytes += len(jpeg)

    def _keep_wanted(self) -> None:
        wanted = self.tracker.wanted_frames()
        for frame_id in wanted - self._kept.keys():
            if frame_id in self._recent:
                self._kept[frame_id] = self._recent[frame_id]
        for frame_id in self._kept.keys() - wanted:
            del self._kept[frame_id]
