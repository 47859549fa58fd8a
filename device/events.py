"""What a camera saw, as people use it: a debounced state, label events, the frame to show.

The result topic has one message per frame: right for scripts, wrong for people and home
automation (a state row per frame in Home Assistant's recorder, automations firing on noise).
:class:`LabelTracker` turns the stream of per-frame answers into what Frigate's users lean on:

- a **state** that changes only when a label has held for ``min_frames`` confident answers in a
  row (a lapse, ``hold_s`` without one or the end of the label's event, breaks the row), or
  goes to ``none`` after ``hold_s`` without a confident answer agreeing with it; at most one
  message per ``state_min_interval_s`` (a later change waits, and the newest wins);
- **events** per label: ``start`` when the label becomes the state (and passes the filters),
  ``update`` when a better frame (higher confidence) becomes its snapshot, ``end`` after
  ``end_s`` without the label;
- which frame the **snapshot** shows: an event's best, at most one per
  ``snapshot_interval_s`` over all events of the camera.

Pure: no I/O, no MQTT, no clock of its own. Time is what the caller says, the frames' capture
times (:attr:`Answer.captured_at`: when the node read each frame, ``time.time()``, for every
source) and :meth:`LabelTracker.advance` for time passing without frames; it never goes
back, so a late answer counts at the newest time seen. The node's publisher
(``device/reporter.py``) sends what it returns. Keys and semantics: docs/protocol.md, "State,
events and snapshots".
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from device.config import DeviceConfig
from shared.protocol import SOURCES, iso_utc

__all__ = [
    "NONE",
    "Answer",
    "EventMessage",
    "EventRules",
    "LabelTracker",
    "Snapshot",
    "StateMessage",
    "Updates",
]

NONE = "none"
"""``class_name`` of the state while no label holds."""


def _default(key: str) -> Any:
    """A config key's default: device/config.py is their one home (and validates values)."""
    return DeviceConfig.model_fields[key].default


@dataclass(frozen=True)
class EventRules:
    """How answers become state, events and snapshots: the node's config keys of these names,
    ``snapshot_interval_s`` being ``1 / snapshot_max_fps``. Their defaults are the config's,
    and the node builds them with :meth:`from_config` from a config that validated them."""

    min_frames: int = _default("min_frames")
    hold_s: float = _default("hold_s")
    state_min_interval_s: float = _default("state_min_interval_s")
    min_confidence: float = _default("min_confidence")
    event_labels: frozenset[str] = frozenset(_default("event_labels"))  # empty: every label
    end_s: float = _default("end_s")
    snapshot_interval_s: float = 1.0 / _default("snapshot_max_fps")

    @classmethod
    def from_config(cls, cfg: DeviceConfig) -> EventRules:
        return cls(
            min_frames=cfg.min_frames,
            hold_s=cfg.hold_s,
            state_min_interval_s=cfg.state_min_interval_s,
            min_confidence=cfg.min_confidence,
            event_labels=frozenset(cfg.event_labels),
            end_s=cfg.end_s,
            snapshot_interval_s=1.0 / cfg.snapshot_max_fps,
        )

    def raises_event(self, class_name: str) -> bool:
        return not self.event_labels or class_name in self.event_labels


@dataclass(frozen=True, slots=True)
class Answer:
    """One frame's published result, as the tracker needs it."""

    frame_id: int
    label: int
    class_name: str
    confidence: float
    source: str
    split_block: int
    captured_at: float  # Unix seconds


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateMessage(_Message):
    """``<prefix>/<device>/state`` (retained JSON)."""

    device_id: str = Field(description="the node's device id")
    class_name: str = Field(description="the label that holds now; `none` while none does")
    label: int | None = Field(description="its class index (null for `none`)")
    confidence: float | None = Field(
        description="confidence of the newest answer that agreed with the label (null for `none`)"
    )
    since: str = Field(
        description="ISO 8601 UTC capture time of the first frame of the run of answers that "
        "made the label hold (for `none`: when the last label lapsed, or the node started)"
    )
    frame_id: int | None = Field(description="the newest frame answered when this was sent")
    sources: dict[str, int] = Field(
        description="answers that agreed with the label since it began to hold, by source "
        "(`edge`, `cloud`, `fallback`)"
    )
    split_block: int | None = Field(description="split block of the newest answer")
    active_events: list[str] = Field(
        description="class names that have an open event (Home Assistant's binary sensors)"
    )
    updated_at: str = Field(description="ISO 8601 UTC time this state was made (camera time)")


EventKind = Literal["start", "update", "end"]


class EventMessage(_Message):
    """``<prefix>/<device>/events`` (JSON, not retained)."""

    device_id: str = Field(description="the node's device id")
    type: EventKind = Field(
        description="`start` when the label becomes the state, `update` when a better frame "
        "becomes the event's snapshot, `end` after `end_s` without the label"
    )
    id: str = Field(description="the event's id, the same in its start, updates and end")
    label: int = Field(description="class index")
    class_name: str = Field(description="class name")
    start: str = Field(description="ISO 8601 UTC capture time of the event's first frame")
    end: str | None = Field(
        description="ISO 8601 UTC capture time of its last frame with the label (`end` only)"
    )
    best_confidence: float = Field(description="the highest confidence of the label so far")
    frames: int = Field(description="confident answers with the label so far")
    snapshot_frame_id: int = Field(
        description="the frame of that confidence: the one the snapshot shows (or will show "
        "within 1 / `snapshot_max_fps`)"
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Publish this frame as the camera's snapshot (a JPEG, retained)."""

    frame_id: int
    class_name: str
    confidence: float
    event_id: str


@dataclass
class Updates:
    """What to publish after an answer or a tick, in this order."""

    state: StateMessage | None = None
    events: list[EventMessage] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.state or self.events or self.snapshots)


@dataclass
class _Run:
    """Consecutive confident answers of one label (not yet, or already, the state)."""

    first: Answer
    latest: Answer
    best: Answer
    seen: float  # the tracker's clock at ``latest``
    count: int = 1
    sources: Counter[str] = field(default_factory=Counter)


@dataclass
class _Event:
    id: str
    start: float
    last_seen: float
    best: Answer
    frames: int
    announced: Answer  # the best its last start or update named
    shown: Answer | None = None  # the best whose snapshot went out


class LabelTracker:
    """Per-frame answers in, state / event / snapshot messages out (see the module doc)."""

    def __init__(self, device_id: str, rules: EventRules, *, now: float) -> None:
        self.device_id = device_id
        self.rules = rules
        self._clock = now
        self._label: int | None = None
        self._class_name = NONE
        self._since = now
        self._seen = now  # last confident answer agreeing with the state's label
        self._confidence: float | None = None
        self._sources: Counter[str] = Counter()
        self._latest: Answer | None = None
        self._run: _Run | None = None
        self._events: dict[int, _Event] = {}
        self._dirty = False  # the first state is :meth:`initial`'s
        self._last_state = -math.inf
        self._last_snapshot = -math.inf

    # -- inputs --------------------------------------------------------------------------------
    def initial(self) -> StateMessage:
        """The state at start (``none``), outside the rate limit: it replaces a retained state
        left by an earlier run, and the first label that holds must not wait behind it."""
        return self._state_message()

    def observe(self, a: Answer) -> Updates:
        """One published result."""
        out = Updates()
        self._tick(max(self._clock, a.captured_at), out)
        self._latest = a
        if a.confidence >= self.rules.min_confidence:
            self._confident(a, out)
        else:
            self._run = None  # a run is of answers in a row
        self._flush(out)
        return out

    def advance(self, now: float) -> Updates:
        """Time passes without an answer (called a few times a second)."""
        out = Updates()
        self._tick(max(self._clock, now), out)
        self._flush(out)
        return out

    def close(self) -> Updates:
        """The node stops: every open event ends now, and the state, ``none`` (the camera sees
        nothing while it is off), goes out at once."""
        out = Updates()
        for label in list(self._events):
            self._end(label, out)
        self._run = None
        self._lapse()
        self._dirty = True
        self._last_state = -math.inf
        self._flush(out)
        return out

    def wanted_frames(self) -> set[int]:
        """Frames a snapshot may still be asked of: the caller keeps their images, no others."""
        wanted = {e.best.frame_id for e in self._events.values() if e.shown is not e.best}
        run = self._run
        if (
            run
            and run.best.label not in self._events
            and self.rules.raises_event(run.best.class_name)
        ):
            wanted.add(run.best.frame_id)  # an event may start on it
        return wanted

    # -- state and events ----------------------------------------------------------------------
    def _confident(self, a: Answer, out: Updates) -> None:
        t = self._clock
        run = self._run
        if run is not None and run.latest.label == a.label:
            run.count += 1
            run.latest, run.seen = a, t
            if a.confidence > run.best.confidence:
                run.best = a
        else:
            run = self._run = _Run(a, a, a, t)
        run.sources[a.source] += 1
        if a.label == self._label:
            self._seen = t
            self._confidence = a.confidence
            self._sources[a.source] += 1
        elif run.count >= self.rules.min_frames:
            self._label, self._class_name = a.label, a.class_name
            self._since, self._seen = run.first.captured_at, t
            self._confidence = a.confidence
            self._sources = Counter(run.sources)
            self._dirty = True
        event = self._events.get(a.label)
        if event is not None:
            event.last_seen = t
            event.frames += 1
            if a.confidence > event.best.confidence:
                event.best = a
        elif (
            a.label == self._label
            and run.count >= self.rules.min_frames
            and self.rules.raises_event(a.class_name)
        ):
            self._start(run, out)  # as the label begins to hold, or again after its event ended

    def _start(self, run: _Run, out: Updates) -> None:
        first = run.first
        event_id = f"{self.device_id}-{round(first.captured_at * 1000)}-{first.label}"
        event = _Event(event_id, first.captured_at, self._clock, run.best, run.count, run.best)
        self._events[first.label] = event
        self._dirty = True  # active_events changed
        out.events.append(self._event_message("start", event))
        self._show(event, out)

    def _end(self, label: int, out: Updates) -> None:
        event = self._events.pop(label)
        out.events.append(self._event_message("end", event, end=event.last_seen))
        self._dirty = True

    def _tick(self, now: float, out: Updates) -> None:
        """Move the clock to ``now``: labels and events that have lapsed by then end."""
        self._clock = now
        r = self.rules
        if self._label is not None and now - self._seen >= r.hold_s:
            self._lapse()
        ended = [k for k, e in self._events.items() if now - e.last_seen >= r.end_s]
        for label in ended:
            self._end(label, out)
        run = self._run
        if run is not None and (now - run.seen >= r.hold_s or run.latest.label in ended):
            self._run = None  # a lapse breaks a run: the label holds again after min_frames

    def _lapse(self) -> None:
        """No label holds from now on: the state is ``none``."""
        self._label, self._class_name = None, NONE
        self._since, self._confidence, self._sources = self._clock, None, Counter()
        self._dirty = True

    def _flush(self, out: Updates) -> None:
        """Snapshots and the state that are due and allowed by their rate limits."""
        for event in self._events.values():
            if event.shown is event.best or not self._show(event, out):
                continue
            if event.best is not event.announced:  # not the start's frame, sent late
                event.announced = event.best
                out.events.append(self._event_message("update", event))
        if self._dirty and self._clock - self._last_state >= self.rules.state_min_interval_s:
            out.state = self._state_message()
            self._dirty = False
            self._last_state = self._clock

    def _show(self, event: _Event, out: Updates) -> bool:
        """The event's best frame as the snapshot, if the rate limit allows it now."""
        if self._clock - self._last_snapshot < self.rules.snapshot_interval_s:
            return False
        b = event.best
        out.snapshots.append(Snapshot(b.frame_id, b.class_name, b.confidence, event.id))
        event.shown = b
        self._last_snapshot = self._clock
        return True

    # -- messages ------------------------------------------------------------------------------
    def _open_names(self) -> list[str]:
        return sorted(e.best.class_name for e in self._events.values())

    def _state_message(self) -> StateMessage:
        latest = self._latest
        return StateMessage(
            device_id=self.device_id,
            class_name=self._class_name,
            label=self._label,
            confidence=None if self._confidence is None else round(self._confidence, 6),
            since=iso_utc(self._since),
            frame_id=latest.frame_id if latest else None,
            sources={s: self._sources[s] for s in SOURCES},
            split_block=latest.split_block if latest else None,
            active_events=self._open_names(),
            updated_at=iso_utc(self._clock),
        )

    def _event_message(self, kind: EventKind, e: _Event, end: float | None = None) -> EventMessage:
        b = e.best
        return EventMessage(
            device_id=self.device_id,
            type=kind,
            id=e.id,
            label=b.label,
            class_name=b.class_name,
            start=iso_utc(e.start),
            end=None if end is None else iso_utc(end),
            best_confidence=round(b.confidence, 6),
            frames=e.frames,
            snapshot_frame_id=b.frame_id,
        )
