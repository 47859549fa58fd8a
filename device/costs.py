"""What this node really pays for each split, in the paper's units. Pure logic, no I/O.

The paper charges a flat 0.1 per block and 0.5 per offload. A real node pays its own compute
time and its own network: this tracker starts from the edge time of each split timed on the
node at start-up and a prior for the link, then follows what each frame actually cost
(smoothed), so when the network slows down the bandit sees offloading get dearer at its next
decision and moves the split without a restart.

Units: the whole network's run on this node costs ``gamma * 19`` (1.9, as in the paper), so alpha,
mu and the exploration constant keep the meaning they have in the paper and in
``isplitee simulate``. The start-up timing fixes how the splits compare with each other; every
frame's edge run then updates one speed factor (how much slower or faster this node is now than
at start-up: other load, thermal throttling), which scales the whole network's time and so the
price of an offload against it. One noisy start-up measurement cannot skew the units for good.

With frame offload (an arm at block 0, :data:`shared.protocol.FRAME_BLOCK`) the node's work at
that arm is the JPEG encode, timed on every frame, and an unsure exit at any split may send the
frame instead of its activation: the price of an offload from arm i is then the cheaper of the
two (:meth:`LiveCosts.frame_cheaper`), and the policy learns with that price.

A split's estimate ages: the one the node offloads at is measured every frame and smoothed, but
one measured last by a probe half a minute ago says little of the link now, so a round trip
replaces an estimate more the older it is (weight ``1 - exp(-age / stale_s)``, at least
``smoothing``). After the link changed, each split's next probe brings it up to date.

A frame's result comes later than its priced parts (the edge run, the encode, the round
trip): the frame is resized and normalised, its reply waits for the node's other threads, and a
node whose frames need more CPU than the camera's pace leaves each frame waiting behind its own
threads. That wait is part of the latency a subscriber sees and it depends on the arm (the whole
network on a Zero 2 W keeps its one core busy, sending the frame leaves it half idle), so each
arm is also priced at its frames' wait (:meth:`LiveCosts.observe_result`: read-to-result time
less the parts timed), smoothed per arm; an arm not played yet is priced at the smallest wait
measured on any arm (what every frame waits at least), and what an arm not played for a while
waited more than the arm in play fades (``wait_fade_s``): one busy spell does not keep an arm
out for good, the node tries it again and measures it. docs/testbed.md shows the case: two arms
whose own times tie within 3 % while their results differ by 60 ms.

An outage is not a slow link. While offloads get no reply in time, every offload costs what
waiting for it costs (the reply timeout and its re-offloads) and still leaves the node without
the final answer, which the whole network on the node would give: so the policy answers on the
node; the first answer to come back ends that, and the estimates from before the outage hold
until the node has timed every split again (a sweep of probes, device/probing.py: the link
that came back may be another one). A round trip that took longer than the reply timeout (a
probe or a reply held up by the outage and delivered when it ended) says the link is back, not
what it costs: it is not blended in (it would price offloading out for many probes after the
link recovered), only counted (``held_round_trips``), which starts that sweep.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from shared.cost import PAPER_GAMMA, CostModel
from shared.protocol import FRAME_BLOCK, NUM_BLOCKS

__all__ = ["LiveCosts"]


class LiveCosts:
    """Edge and offload seconds per arm, smoothed, turned into a :class:`CostModel` on demand.

    Args:
        blocks: block of each arm, the final classifier last.
        edge_seconds: block -> seconds to answer at that arm, timed on this node.
        payload_bytes: block -> bytes of one offload message at that split.
        link_mbit_per_s, rtt_ms: prior for offloads never measured yet.
        smoothing: weight of the newest measurement (exponential moving average).
        late_s: a round trip at least this long came through an outage (the node's reply
            timeout); None: every round trip is a measurement.
        stale_s: how fast a split's estimate ages (see the module docstring).
        wait_fade_s: how fast an arm's wait beyond the played arm's fades (the same).
    """

    def __init__(
        self,
        blocks: Sequence[int],
        edge_seconds: Mapping[int, float],
        payload_bytes: Mapping[int, int],
        *,
        link_mbit_per_s: float,
        rtt_ms: float,
        smoothing: float = 0.2,
        gamma: float = PAPER_GAMMA,
        late_s: float | None = None,
        stale_s: float = 10.0,
        wait_fade_s: float = 60.0,
    ) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing should be in (0, 1], got {smoothing!r}")
        if late_s is not None and not late_s > 0:
            raise ValueError(f"late_s should be positive, got {late_s!r}")
        if not stale_s > 0:
            raise ValueError(f"stale_s should be positive, got {stale_s!r}")
        if not wait_fade_s > 0:
            raise ValueError(f"wait_fade_s should be positive, got {wait_fade_s!r}")
        self.wait_fade_s = wait_fade_s
        self.late_s = late_s
        self.stale_s = stale_s
        self.blocks = tuple(blocks)
        self.smoothing = smoothing
        self._edge = [float(edge_seconds[b]) for b in self.blocks]
        if min(self._edge) <= 0:
            raise ValueError("edge times should be positive")
        self._full = gamma * NUM_BLOCKS
        self._speed = 1.0  # now / start-up, smoothed
        self._prior = [
            payload_bytes[b] * 8 / (link_mbit_per_s * 1e6) + rtt_ms / 1e3 for b in self.blocks
        ]
        self._offload: list[float | None] = [None] * len(self.blocks)
        self._measured: list[float | None] = [None] * len(self.blocks)  # on the caller's clock
        self._link: float | None = None  # smoothed round trip of any split
        self.frame_arm = self.blocks.index(FRAME_BLOCK) if FRAME_BLOCK in self.blocks else None
        self.frames_refused = False
        self._waiting: float | None = None  # an outage: what an offload costs until a reply
        self.held_round_trips = 0  # round trips held up by an outage: each says it ended
        self._wait: list[float | None] = [None] * len(self.blocks)  # beyond the timed parts
        self._waited_at: float | None = None  # when the last wait was observed

    def _blend(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.smoothing * (new - old)

    def observe_edge(self, arm: int, seconds: float) -> None:
        """One frame's device work at ``arm``: the network's speed factor, or for the frame
        arm the JPEG encode itself (its time follows the scene, not the network)."""
        if seconds <= 0:
            return
        if arm == self.frame_arm:
            self._edge[arm] = self._blend(self._edge[arm], seconds / self._speed)
        else:
            self._speed = self._blend(self._speed, seconds / self._edge[arm])

    def observe_offload(self, arm: int, seconds: float, now: float | None = None) -> None:
        """One offload's round trip (cloud compute excluded, as the paper leaves it out),
        received at ``now`` (any monotonic clock; None: no ageing). It came back, so any
        outage is over; one held up by the outage is not a measurement."""
        self._waiting = None
        seconds = max(seconds, 0.0)
        if self.late_s is not None and seconds >= self.late_s:
            self.held_round_trips += 1
            return
        old, then = self._offload[arm], self._measured[arm]
        weight = self.smoothing
        if old is not None and now is not None and then is not None:
            weight = max(weight, 1 - math.exp(-(now - then) / self.stale_s))
        self._offload[arm] = seconds if old is None else old + weight * (seconds - old)
        self._measured[arm] = now
        self._link = self._blend(self._link, seconds)

    def observe_result(
        self, arm: int, latency_s: float, timed_s: float, now: float | None = None
    ) -> None:
        """One frame decided at ``arm`` got its result ``latency_s`` after it was read, of which
        ``timed_s`` were the parts priced on their own (edge run, encode, round trip with the
        cloud's compute): the rest is the arm's wait. ``now``: any monotonic clock (None: the
        other arms' waits do not fade)."""
        played = self._wait[arm] = self._blend(self._wait[arm], max(latency_s - timed_s, 0.0))
        if now is not None and self._waited_at is not None:
            fade = math.exp(-max(now - self._waited_at, 0.0) / self.wait_fade_s)
            for k, other in enumerate(self._wait):
                if other is not None and other > played:
                    self._wait[k] = played + (other - played) * fade
        self._waited_at = now

    def wait_seconds(self, arm: int) -> float:
        """A frame's wait at ``arm`` beyond its timed parts (the module docstring)."""
        own = self._wait[arm]
        if own is not None:
            return own
        return min((w for w in self._wait if w is not None), default=0.0)

    def observe_timeout(self, wait_s: float) -> None:
        """An offload got no reply in time: until one does (:meth:`observe_offload`,
        :meth:`observe_answer`), every offload costs at least ``wait_s``, what the node waits
        before it falls back, plus the whole network on the node."""
        self._waiting = max(float(wait_s), 0.0)

    def observe_answer(self) -> None:
        """A reply came back too late to be timed (its frame had fallen back): the link
        delivers again, so the outage is over."""
        self._waiting = None

    @property
    def outage(self) -> bool:
        """Whether offloads are priced as in an outage (no reply in time since the last one)."""
        return self._waiting is not None

    def offload_seconds(self, arm: int) -> float:
        own = self._offload[arm]
        if own is None:
            own = self._link if self._link is not None else self._prior[arm]
        if self._waiting is None:
            return own
        # The wait buys no answer (the node falls back on its exit's): the whole network on
        # the node is what an answer as good costs meanwhile.
        return max(own, self._waiting + self.edge_seconds(len(self.blocks) - 1))

    def edge_seconds(self, arm: int) -> float:
        """Current estimate of this node's time to answer at ``arm``."""
        return self._edge[arm] * self._speed

    def refuse_frames(self) -> None:
        """The workers do not take frame offloads (a release before them): from now on no
        unsure exit sends its frame, and the frame arm costs a hundred whole networks."""
        self.frames_refused = True

    def frame_seconds(self) -> float | None:
        """What sending the frame costs from any split: its encode and its round trip."""
        if self.frame_arm is None or self.frames_refused:
            return None
        return self.edge_seconds(self.frame_arm) + self.offload_seconds(self.frame_arm)

    def frame_cheaper(self, arm: int) -> bool:
        """Whether an unsure exit at ``arm`` should send the frame instead of its activation."""
        frame = self.frame_seconds()
        return frame is not None and arm != self.frame_arm and frame < self.offload_seconds(arm)

    def cost_model(self) -> CostModel:
        n = len(self.blocks)
        unit = self._full / self.edge_seconds(n - 1)
        frame = self.frame_seconds()
        offload = [self.offload_seconds(i) for i in range(n)]
        if self.frames_refused:
            offload[self.frame_arm] = 100 * self.edge_seconds(n - 1)  # type: ignore[index]
        if frame is not None:  # from a split, the cheaper of its activation and the frame
            offload = [s if i == self.frame_arm else min(s, frame) for i, s in enumerate(offload)]
        return CostModel(
            name="live",
            blocks=self.blocks,
            edge=tuple(
                self._edge[i] / self._edge[-1] * self._full + self.wait_seconds(i) * unit
                for i in range(n)
            ),
            offload=tuple(s * unit for s in offload),
        )
