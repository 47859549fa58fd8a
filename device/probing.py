"""Which link probe a node sends next, and when. Pure logic, no I/O: the reply loop asks.

Probes keep every offloading arm's round trip measured (device/costs.py). Normally one goes
every ``interval_s``, cycling over the arms, so each arm's estimate is at most a cycle old; an
arm named *favoured* gets every other turn of the cycle: the frame's, whose round trip prices
an unsure exit's offload at every split (the node sends the frame where that is cheaper), so a
node answering on its own notices within two intervals, not a cycle over seven arms, when
sending frames has become the faster way. Two moments need every arm measured at once:
start-up, and the end of an outage (the link that came back may be another one: LTE before,
Wi-Fi after). Then the plan *sweeps*: every arm once, smallest offload first, one probe at a
time, since probes sent together queue behind each other on a slow uplink and each would be
timed at the queue's length. The start-up sweep is the plan's first move, so no probe of the
cycle comes due before it and queues ahead of it (timing the model on a slow node takes
longer than an interval).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

__all__ = ["ProbePlan"]


class ProbePlan:
    """The next probe's arm, or None for none now. Thread-safe: one thread sends what
    :meth:`next` says; another may wait for :attr:`sweeping` to end.

    Args:
        order: the offloading arms, smallest offload first (asked at each sweep: the frame's
            size follows the scene, and a runtime change of encoding changes the others').
        interval_s: between two probes of the cycle.
        patience_s: how long a sweep waits for a probe before it sends the next (a lost
            probe must not stop it).
        now: the caller's monotonic clock now.
        favoured: the arm that gets every other turn of the cycle, asked at each turn (None:
            none now, e.g. while the node offloads there and so times it on every frame).
        sweep_first: start with a sweep (a node's start-up); False: with the cycle.
    """

    def __init__(
        self,
        order: Callable[[], Sequence[int]],
        interval_s: float,
        patience_s: float,
        *,
        now: float,
        favoured: Callable[[], int | None] | None = None,
        sweep_first: bool = True,
    ) -> None:
        if not interval_s > 0 or not patience_s > 0:
            raise ValueError("interval_s and patience_s should be positive")
        self._order = order
        self._favoured = favoured
        self.interval_s = interval_s
        self.patience_s = patience_s
        self._next = now + interval_s
        self._turn = 0  # of the cycle, the favoured arm's included
        self._cycled = 0  # turns of the cycle that went round the arms
        self._sweep_due = sweep_first  # the order is asked when the sweep begins
        self._sweep: list[int] = []
        self._waiting_since: float | None = None  # a sweep's probe out since
        self._outage = False
        self._held = 0
        self._lock = threading.Lock()

    @property
    def sweeping(self) -> bool:
        """Whether a sweep is due, has arms left or its last probe is still out."""
        with self._lock:
            return self._sweep_due or bool(self._sweep) or self._waiting_since is not None

    def next(self, now: float, *, pending: int, outage: bool, held: int = 0) -> int | None:
        """The arm to probe now, if any. ``pending``: probes sent and not back; ``outage``:
        whether offloads are priced as in an outage; ``held``: how many round trips came
        back held up by an outage so far. The end of an outage starts a sweep: offloads
        priced as in one no longer are, or a round trip came back held up (a node answering
        on its own through the outage sent no offload to miss, only probes)."""
        with self._lock:
            if (self._outage and not outage) or held > self._held:
                self._sweep_due, self._waiting_since = True, None
            self._outage, self._held = outage, held
            if self._sweep_due:
                self._sweep, self._sweep_due = list(self._order()), False
            if self._waiting_since is not None:
                if pending and now - self._waiting_since < self.patience_s:
                    return None  # one at a time
                self._waiting_since = None
            if self._sweep:
                self._waiting_since = now
                self._next = now + self.interval_s
                return self._sweep.pop(0)
            if now < self._next:
                return None
            self._next = now + self.interval_s
            self._turn += 1
            favoured = self._favoured() if self._favoured is not None else None
            if favoured is not None and self._turn % 2:
                return favoured
            arm = self._cycled % len(self._order())
            self._cycled += 1
            return arm


class QuietProbe:
    """The node's edge runs held while one probe is out, so a busy node times the link as a
    node that offloads would: on a board the network keeps busy, its own threads wait for the
    CPU and a probe's reply is timed late (Zero 2 W class, LTE: the frame's probe at 173-198 ms
    while the node ran its whole network, 99-118 ms from a node sending frames). The node waits
    for the edge run under way, then :meth:`begin`; each later edge run first :meth:`wait`\\ s
    until the probe is back (:meth:`end`) or ``until`` passed (a lost probe). Thread-safe."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._back = threading.Event()
        self._back.set()
        self._seq: int | None = None
        self._until = 0.0
        self._lock = threading.Lock()

    def begin(self, seq: int, until: float) -> None:
        """Probe ``seq`` goes out now; edge runs wait for it until ``until`` at most."""
        with self._lock:
            self._seq, self._until = seq, until
            self._back.clear()

    def end(self, seq: int) -> None:
        """Probe ``seq`` came back: edge runs go on (another probe's return changes nothing)."""
        with self._lock:
            if seq == self._seq:
                self._seq = None
                self._back.set()

    def wait(self) -> float:
        """Until the quiet probe is back, or its deadline; returns the seconds waited."""
        with self._lock:
            started = self._clock()
            left = self._until - started if self._seq is not None else 0.0
        if left <= 0:
            return 0.0
        self._back.wait(left)
        return self._clock() - started
