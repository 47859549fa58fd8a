"""What a node has sent and not yet settled: offloads awaiting a reply, and link probes.

In the manner of aiomqtt's pending calls: a dict keyed by the correlation (the frame id, the probe
sequence number) behind its own lock, so the reply thread matches a reply without waiting for
anything else the node does (edge inference, the policy). No MQTT and no clock of its own: the
caller publishes, and time comes from ``clock`` (a fake one in tests).

An offload is settled exactly once: by its reply (:meth:`PendingOffloads.settle`), or by its
timeout after it was sent again ``resends`` times (:meth:`PendingOffloads.due`). A reply for a
frame no longer here (late, or a QoS 1 duplicate) matches nothing. An offload being settled
still counts as pending until its result is out (:meth:`PendingOffloads.done`), so whoever waits
for fewer pending offloads (:meth:`PendingOffloads.wait_below`) never runs ahead of a result.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

__all__ = ["Due", "Offload", "PendingOffloads", "PendingProbes"]

T = TypeVar("T")

Clock = Callable[[], float]


@dataclass(frozen=True)
class Offload(Generic[T]):
    """One offload in flight: its message, when it last went, how many times it went, and what
    its sender needs to settle it (``context``)."""

    frame_id: int
    payload: bytes
    sent: float
    context: T
    attempts: int = 1


@dataclass(frozen=True)
class Due(Generic[T]):
    """What :meth:`PendingOffloads.due` found overdue: offloads to send again (already marked
    sent now), and offloads that ran out of attempts, taken for their fallback."""

    resend: list[Offload[T]] = field(default_factory=list)
    expired: list[Offload[T]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.resend or self.expired)


class PendingOffloads(Generic[T]):
    """Offloads sent and not yet settled, keyed by frame id, under their own condition."""

    def __init__(self, *, timeout_s: float, resends: int, clock: Clock = time.monotonic) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s should be > 0, got {timeout_s!r}")
        if resends < 0:
            raise ValueError(f"resends should be >= 0, got {resends!r}")
        self.timeout_s = timeout_s
        self.resends = resends
        self._clock = clock
        self._offloads: dict[int, Offload[T]] = {}
        self._settling = 0  # taken for settling, result not out yet
        self._cond = threading.Condition(threading.Lock())

    def add(self, frame_id: int, payload: bytes, context: T) -> Offload[T]:
        """Keep an offload as sent now; register it before publishing, so no reply outruns it."""
        offload = Offload(frame_id, payload, self._clock(), context)
        with self._cond:
            self._offloads[frame_id] = offload
        return offload

    @contextmanager
    def settle(self, frame_id: int) -> Iterator[Offload[T] | None]:
        """Take the offload a reply answers, or None when nothing waits for it (a late reply,
        a duplicate). It counts as pending until the block ends: settle it inside."""
        with self._cond:
            offload = self._offloads.pop(frame_id, None)
            if offload is not None:
                self._settling += 1
        try:
            yield offload
        finally:
            if offload is not None:
                self.done()

    def due(self, now: float | None = None, *, final: bool = False) -> Due[T]:
        """The offloads older than the timeout: sent again while they have resends left (a
        worker may have died holding one), else taken to fall back (call :meth:`done` for each
        once its result is out). ``final``: take every offload now (the node is stopping)."""
        now = self._clock() if now is None else now
        out: Due[T] = Due()
        with self._cond:
            for offload in list(self._offloads.values()):
                if not final and now - offload.sent < self.timeout_s:
                    continue
                if not final and offload.attempts <= self.resends:
                    again = replace(offload, sent=now, attempts=offload.attempts + 1)
                    self._offloads[offload.frame_id] = again
                    out.resend.append(again)
                else:
                    del self._offloads[offload.frame_id]
                    self._settling += 1
                    out.expired.append(offload)
        return out

    def done(self, n: int = 1) -> None:
        """``n`` taken offloads have their results out: their places are free."""
        with self._cond:
            self._settling -= n
            self._cond.notify_all()

    def next_deadline(self) -> float | None:
        """When the oldest offload times out (None: nothing in flight), to sleep until then."""
        with self._cond:
            if not self._offloads:
                return None
            return min(p.sent for p in self._offloads.values()) + self.timeout_s

    def __len__(self) -> int:
        with self._cond:
            return len(self._offloads) + self._settling

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Block until fewer than ``limit`` offloads are pending (replies, timeouts free them)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: len(self._offloads) + self._settling < limit, timeout
            )


class PendingProbes:
    """Link probes sent and not yet back, keyed by sequence number; lost ones are forgotten,
    oldest first, beyond ``keep``. Also when the last one came back: an offload that shared
    the uplink with a probe waited behind it (:meth:`in_flight`)."""

    def __init__(self, *, keep: int = 64, clock: Clock = time.monotonic) -> None:
        self.keep = keep
        self._clock = clock
        self._sent: dict[int, tuple[int, float]] = {}  # seq -> (arm, sent)
        self._seq = 0
        self._back = -math.inf  # when the latest probe came back
        self._lock = threading.Lock()

    def add(self, arm: int) -> int:
        """Keep a probe for ``arm`` as sent now; returns its sequence number."""
        with self._lock:
            self._seq += 1
            self._sent[self._seq] = (arm, self._clock())
            if len(self._sent) > self.keep:
                del self._sent[min(self._sent)]
            return self._seq

    def match(self, seq: int, received: float | None = None) -> tuple[int, float] | None:
        """(arm, sent) of the probe ``seq`` came back for at ``received`` (None: now), once;
        None if it is unknown."""
        with self._lock:
            found = self._sent.pop(seq, None)
            if found is not None:
                self._back = max(self._back, self._clock() if received is None else received)
            return found

    def in_flight(self, since: float, until: float, lost_after: float) -> bool:
        """Whether a probe was on the link at some time between ``since`` and ``until``: one
        came back after ``since``, or one sent before ``until`` is still out (unless it is
        older than ``lost_after`` seconds: a lost probe holds nothing up)."""
        with self._lock:
            if self._back > since:
                return True
            return any(until - lost_after < sent < until for _arm, sent in self._sent.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._sent)
