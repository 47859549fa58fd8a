"""The camera node's decision loop: frame -> split -> exit or offload -> one result per frame.

No MQTT and no camera here: the node publishes through any object with the
:class:`Publisher` method and is handed frames and replies by the caller (``device/app.py``
wires it to paho and OpenCV), so the loop can be driven and checked without a broker too.

Per frame: preprocess -> the policy decides the split -> edge half up to it -> if the exit
there is confident (or the split is the final classifier) the node answers at once; otherwise
it publishes the activation and goes on with the next frame. A reply publishes the cloud's
answer and teaches the policy what the frame revealed; a timeout or an error reply publishes
the split exit's own answer as a ``fallback`` and cancels the decision, so the policy learns
nothing it did not observe. Every frame gets exactly one result; a reply for a frame that is
no longer pending (late, or a QoS 1 duplicate) is counted and dropped.

Frame offload (``frame_offload``): the policy has one more arm, block 0, at which the node runs
no block at all and sends the frame's JPEG; and an unsure exit at a split sends the frame
instead of its activation wherever that is cheaper under the measured costs
(:meth:`device.costs.LiveCosts.frame_cheaper`). The frame arm is an exit that never answers:
to the policy its confidence is 0 and the cloud's answer is revealed whatever the exits say
(``Observation(audit=True)``), which is what it is. Its results have ``split_block`` 0.

Each result, once published, is also handed to ``on_result`` (the node's state, events and
snapshots are derived from results there, ``device/reporter.py``): the result topic itself
is the same with or without it.

Frames arrive on the main thread, replies on another. What was sent and awaits a reply is kept
by :mod:`device.pending` behind its own lock, so a reply is matched while a frame's edge half
runs; the node's own lock guards the policy, the costs, the settings and the counters, and is
held only to read or update them, never across edge inference or a publish.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from device.costs import LiveCosts
from device.onnx_edge import EdgeBackend
from device.pending import Offload, PendingOffloads, PendingProbes
from device.probing import QuietProbe
from device.settings import Setting, SettingError
from shared.cost import Observation, RewardModel
from shared.inference import confidence
from shared.jpeg import DEFAULT_QUALITY, encode_frame
from shared.logthrottle import LogThrottle
from shared.model_file import ModelFile
from shared.mqtt import Message
from shared.policy import Decision, Policy
from shared.preprocess import FramePreprocessor
from shared.protocol import (
    FRAME_BLOCK,
    RUN_ID_BYTES,
    ProtocolError,
    Reply,
    Result,
    Source,
    Topics,
    decode_reply,
    encode_activation,
    encode_frame_activation,
    encode_result,
    iso_utc,
    offload_correlation,
    offload_frame_id,
    probe_correlation,
    probe_seq,
)
from shared.wire import AUTO, wire_encodings

__all__ = ["SETTERS", "Node", "NodeCounters", "PolicySnapshot", "Publisher", "node_arms"]

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> object: ...


def node_arms(arm_blocks: tuple[int, ...], *, frame_offload: bool) -> tuple[int, ...]:
    """The blocks a node's policy chooses among: the model's arms, and block 0 (the frame
    itself) first when the node may offload frames."""
    return (FRAME_BLOCK, *arm_blocks) if frame_offload else tuple(arm_blocks)


@dataclass(frozen=True)
class _Turn:
    """One frame's decision and what it was made under: a runtime setting may replace the
    policy, the rewards or the encoding while the edge half runs, and the frame is settled
    with the ones that decided it."""

    frame_id: int
    captured_at: float
    policy: Policy
    decision: Decision
    rewards: RewardModel
    wire: dict[int, str]


@dataclass(frozen=True)
class _Sent:
    """What settles an offload (its :class:`device.pending.Offload` context)."""

    turn: _Turn
    confidences: tuple[float, ...]
    classes: tuple[int, ...]
    audit: bool = False
    sent_arm: int = 0  # the arm whose message went: the decision's, or the frame arm
    resized: np.ndarray | None = None  # the frame arm's frame, for a fallback answer
    work_s: float = 0.0  # the node's timed work before the send: edge run, encode


@dataclass(frozen=True)
class PolicySnapshot:
    """The policy's state, its spec and the settings it learns under, read at one instant (a
    runtime setting may replace the policy at any time): what a state file is written from."""

    state: dict[str, Any]
    spec: str
    settings: dict[str, Any]


@dataclass
class NodeCounters:
    frames: int = 0
    edge: int = 0
    cloud: int = 0
    fallback: int = 0
    offloads: int = 0
    bytes_sent: int = 0
    late_replies: int = 0
    reoffloads: int = 0
    audits: int = 0
    foreign_replies: int = 0
    errors: Counter = field(default_factory=Counter)
    settings_refused: int = 0
    frame_offloads: int = 0

    @property
    def results(self) -> int:
        return self.edge + self.cloud + self.fallback

    def count(self, source: Source) -> None:
        """One more result from ``source``: the counter of that name."""
        setattr(self, source, getattr(self, source) + 1)


class Node:
    def __init__(
        self,
        *,
        checkpoint: ModelFile,
        policy: Policy,
        costs: LiveCosts | None,
        rewards: RewardModel,
        publisher: Publisher,
        topics: Topics,
        device_id: str,
        encoding: str = AUTO,
        reply_timeout_s: float = 2.0,
        max_pending: int = 8,
        reoffloads: int = 1,
        make_policy: Callable[[str, RewardModel], Policy] | None = None,
        edge: EdgeBackend,
        frame_offload: bool = False,
        jpeg_quality: int = DEFAULT_QUALITY,
        on_result: Callable[[Result, float], None] | None = None,
    ) -> None:
        self.ckpt = checkpoint
        self.on_result = on_result  # after each result went out: (result, captured_at)
        self.edge = edge
        self.policy = policy
        self.make_policy = make_policy
        self.costs = costs
        self.rewards = rewards
        self.out = publisher
        self.device_id = device_id
        self._use_encoding(encoding)
        self.max_pending = max_pending
        meta = checkpoint.meta
        self.blocks = node_arms(meta.arm_blocks, frame_offload=frame_offload)
        self.frame_arm = 0 if frame_offload else None
        self._first = 1 if frame_offload else 0  # arm of the model's first exit
        self.jpeg_quality = jpeg_quality
        self.frame_bytes: float | None = None  # smoothed size of the frames sent, for probes
        self._frames_refused = 0  # frame offloads a worker could not read
        self.temperatures = meta.arm_temperatures()
        self.preprocess = FramePreprocessor(meta.input_size, meta.mean, meta.std)
        self.counters = NodeCounters()
        self.current_block: int | None = None
        self._topic_result = topics.result(device_id)
        self._topic_activation = topics.activation(device_id)
        self._topic_reply = topics.reply(device_id)
        # replies meant for an earlier run of this node never match
        self._run_id = os.urandom(RUN_ID_BYTES)
        self._offloads: PendingOffloads[_Sent] = PendingOffloads(
            timeout_s=reply_timeout_s, resends=reoffloads
        )
        self._probes = PendingProbes()
        self._topic_probe = topics.probe(device_id)
        self._lock = threading.Lock()  # policy, rewards, costs, encoding, counters
        self._edge_lock = threading.Lock()  # one edge run at a time: its timing is the device's
        self._quiet = QuietProbe(time.monotonic)  # edge runs wait while a quiet probe is out
        self._log_throttle = LogThrottle()  # every offload refused: one line per kind per 10 s

    @property
    def reply_timeout_s(self) -> float:
        return self._offloads.timeout_s

    @property
    def reoffloads(self) -> int:
        return self._offloads.resends

    # -- frames --------------------------------------------------------------------------------
    def process(self, frame_id: int, image: np.ndarray, captured_at: float) -> None:
        """Decide, run the edge half, and answer or offload one frame."""
        resized = self.preprocess.resize(image)
        turn = self._decide(frame_id, captured_at)
        arm, block = turn.decision.arm, self.blocks[turn.decision.arm]
        if arm == self.frame_arm:  # no block on the device: the frame goes as it is
            self._offload_frame(turn, resized, [0.0], [0], 0.0, keep=True)
            return
        x = self.preprocess.normalise(resized)
        (activation, exit_logits), seconds, held = self._run_edge(x, block)
        log.debug("edge to block %d: %.1f ms", block, seconds * 1e3)
        # the frame arm's place, if any: an exit that is never confident
        confs, classes = [0.0] * self._first, [0] * self._first
        for i, logits in enumerate(exit_logits):
            c, k = confidence(logits, self.temperatures[i])
            confs.append(float(c[0]))
            classes.append(int(k[0]))
        last = arm == len(self.blocks) - 1
        # An audit offloads a frame its exit could have answered: the cloud's reply tells
        # the policy whether the exits agree with the final classifier (shared.policy.referee).
        audit = turn.decision.audit and not last
        with self._lock:
            if self.costs is not None:
                self.costs.observe_edge(arm, seconds)
            answers = (last or turn.decision.answers(confs[arm], turn.rewards.alpha)) and not audit
            if answers:
                turn.policy.observe(
                    turn.decision,
                    Observation(
                        tuple(confs),
                        confs[arm] if last else None,
                        classes=tuple(classes),
                        final_class=classes[-1] if last else None,
                    ),
                )
            frame_cheaper = self.costs is not None and self.costs.frame_cheaper(arm)
        if answers:
            timed = held + seconds  # a quiet probe's hold is what probing costs: not a wait
            self._publish_result(turn, classes[arm], confs[arm], block, block, "edge", timed)
        elif frame_cheaper:
            self._offload_frame(turn, resized, confs, classes, held + seconds)
        else:
            self._offload_activation(turn, activation, confs, classes, audit, held + seconds)

    def _decide(self, frame_id: int, captured_at: float) -> _Turn:
        with self._lock:
            decision = self.policy.decide()
            block = self.blocks[decision.arm]
            if block != self.current_block and log.isEnabledFor(logging.DEBUG):
                cost = self.rewards.cost
                priced = ", ".join(
                    f"{b}: {cost.edge[i] + (cost.offload[i] if b != self.blocks[-1] else 0):.2f}"
                    for i, b in enumerate(self.blocks)
                )
                log.debug("frame %d: split %d, priced %s", frame_id, block, priced)
            self.current_block = block
            self.counters.frames += 1
            return _Turn(frame_id, captured_at, self.policy, decision, self.rewards, self.wire)

    def _run_edge(self, x: np.ndarray, block: int) -> tuple[tuple[np.ndarray, list], float, float]:
        """The edge half up to ``block``, the seconds it took, and the seconds it was held for
        a quiet probe before. The node's lock is not held: replies are settled meanwhile."""
        with self._edge_lock:
            held = self._quiet.wait()
            started = time.perf_counter()
            out = self.edge(x, block)
            return out, time.perf_counter() - started, held

    def _offload_activation(
        self,
        turn: _Turn,
        activation: np.ndarray,
        confs: list[float],
        classes: list[int],
        audit: bool,
        edge_s: float,
    ) -> None:
        arm = turn.decision.arm
        block = self.blocks[arm]
        try:
            payload = encode_activation(
                device_id=self.device_id,
                frame_id=turn.frame_id,
                captured_at=turn.captured_at,
                split_block=block,
                model_hash=self.ckpt.hash,
                exit_confidence=confs[arm],
                exit_class=classes[arm],
                tensor=activation[0],
                encoding=turn.wire[block],
                audit=audit,
            )
        except ValueError as exc:  # NaN or infinite activations: no worker could use them
            with self._lock:
                turn.policy.cancel(turn.decision)
                self.counters.errors["encode"] += 1
            more = self._log_throttle.admit("encode")
            if more is not None:
                log.warning("frame %d: not offloaded (%s)%s", turn.frame_id, exc, more)
            self._publish_result(turn, classes[arm], confs[arm], block, block, "fallback")
            return
        sent = _Sent(turn, tuple(confs), tuple(classes), audit, arm, work_s=edge_s)
        self._offload(turn, payload, sent, audit)

    def _offload_frame(
        self,
        turn: _Turn,
        resized: np.ndarray,
        confs: list[float],
        classes: list[int],
        edge_s: float,
        keep: bool = False,
    ) -> None:
        """Send the frame's JPEG: the decision's arm is the frame arm (``keep`` the frame for a
        fallback answer), or an unsure exit for which the frame is cheaper (``edge_s``: the
        edge run that found it unsure)."""
        decision = turn.decision
        arm = decision.arm
        started = time.perf_counter()
        image = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
        jpeg = encode_frame(image, self.jpeg_quality)
        seconds = time.perf_counter() - started
        size = len(jpeg)
        with self._lock:
            if self.costs is not None:
                self.costs.observe_edge(self.frame_arm, seconds)
            self.frame_bytes = (
                size if self.frame_bytes is None else 0.8 * self.frame_bytes + 0.2 * size
            )
            self.counters.frame_offloads += 1
        payload = encode_frame_activation(
            device_id=self.device_id,
            frame_id=turn.frame_id,
            captured_at=turn.captured_at,
            model_hash=self.ckpt.hash,
            jpeg=jpeg,
            shape=image.shape,
            exit_confidence=confs[arm],
            exit_class=classes[arm],
            audit=decision.audit,
        )
        # To the policy the frame arm's offload is an audit: it reveals C_L whatever any exit says.
        sent = _Sent(
            turn,
            tuple(confs),
            tuple(classes),
            audit=decision.audit or arm == self.frame_arm,
            sent_arm=self.frame_arm,
            resized=resized if keep else None,
            work_s=edge_s + seconds,
        )
        self._offload(turn, payload, sent, decision.audit)

    def _offload(self, turn: _Turn, payload: bytes, sent: _Sent, audit: bool) -> None:
        """Keep one offload pending, then send it (so no reply can outrun it)."""
        self._offloads.add(turn.frame_id, payload, sent)
        with self._lock:
            self.counters.audits += audit
            self.counters.offloads += 1
            self.counters.bytes_sent += len(payload)
        self._send(turn.frame_id, payload)

    def _send(self, frame_id: int, payload: bytes) -> None:
        self.out.publish(
            self._topic_activation,
            payload,
            response_topic=self._topic_reply,
            correlation=offload_correlation(self._run_id, frame_id),
        )

    # -- link probes ---------------------------------------------------------------------------
    def probe(self, arm: int, payload_bytes: int, *, quiet: bool = False) -> None:
        """Time a round trip of an offload-sized message through the broker for ``arm``.

        A node that stopped offloading (the link was slow) would otherwise never learn that
        the link recovered, and a node that starts with a pessimistic prior would never
        offload at all: probes keep the offload cost of every split measured. ``quiet``: the
        edge run under way ends first, and the next waits until the probe is back
        (:class:`~device.probing.QuietProbe`).
        """
        if quiet:
            with self._edge_lock:
                seq = self._probes.add(arm)
                self._quiet.begin(seq, time.monotonic() + self.reply_timeout_s)
        else:
            seq = self._probes.add(arm)
        self.out.publish(
            self._topic_probe,
            bytes(payload_bytes),
            qos=1,
            correlation=probe_correlation(self._run_id, seq),
        )

    def _on_probe(self, msg: Message, received: float) -> None:
        seq = probe_seq(msg.correlation, self._run_id)
        if seq is None:
            return
        self._quiet.end(seq)
        found = self._probes.match(seq, received)
        if found is None or self.costs is None:
            return
        arm, sent = found
        log.debug("probe at block %d: %.1f ms", self.blocks[arm], (received - sent) * 1e3)
        with self._lock:
            self.costs.observe_offload(arm, received - sent, received)
            self._reprice()

    # -- replies -------------------------------------------------------------------------------
    def on_reply(self, msg: Message) -> None:
        """Settle the frame a reply answers (called from the reply thread)."""
        received = msg.received
        if msg.topic == self._topic_probe:
            self._on_probe(msg, received)
            return
        frame_id = offload_frame_id(msg.correlation, self._run_id)
        if frame_id is None:
            with self._lock:
                self.counters.foreign_replies += 1
            return
        try:
            reply, error = decode_reply(msg.payload), None
        except ProtocolError as exc:
            reply, error = None, exc
        with self._offloads.settle(frame_id) as offload:
            if offload is None:  # late, or a QoS 1 duplicate: its frame has its result
                with self._lock:
                    self.counters.late_replies += 1
                    self._answered()
            elif reply is None or not reply.ok:
                kind = error.kind if reply is None else reply.error.kind  # type: ignore[union-attr]
                text = str(error) if reply is None else reply.error.message  # type: ignore[union-attr]
                self._on_refused(offload, kind, text)
            else:
                self._on_answer(offload, reply, received)

    def _on_refused(self, offload: Offload[_Sent], kind: str, text: str) -> None:
        """The cloud could not answer: the frame falls back on its exit."""
        with self._lock:
            self._answered()
            self.counters.errors[kind] += 1
            if kind == "decode" and offload.context.sent_arm == self.frame_arm:
                self._frame_refused(text)
        more = self._log_throttle.admit(kind)
        if more is not None:
            log.warning(
                "frame %d: the cloud could not answer (%s: %s)%s",
                offload.frame_id,
                kind,
                text,
                more,
            )
        self._fall_back(offload)

    def _on_answer(self, offload: Offload[_Sent], reply: Reply, received: float) -> None:
        """The cloud's answer: published, and taught to the policy that decided."""
        sent = offload.context
        timed_s = None  # the frame's timed parts, when its round trip prices its arm
        with self._lock:
            if sent.sent_arm == self.frame_arm:
                self._frames_refused = 0  # in a row
            if self.costs is not None and self._timed(offload, received):
                timed_s = sent.work_s + received - offload.sent
                rtt = received - offload.sent - reply.cloud_ms / 1e3
                log.debug("offload at block %d: %.1f ms", self.blocks[sent.sent_arm], rtt * 1e3)
                self.costs.observe_offload(sent.sent_arm, rtt, received)
                self._reprice()
            else:
                self._answered()
            sent.turn.policy.observe(sent.turn.decision, self._revealed(sent, reply))
        split = self.blocks[sent.sent_arm]
        label, conf = int(reply.label), float(reply.confidence)
        self._publish_result(sent.turn, label, conf, self.blocks[-1], split, "cloud", timed_s)

    def _timed(self, offload: Offload[_Sent], received: float) -> bool:
        """Whether an offload's round trip prices its arm. Not when it was sent again (whose
        reply is this?), nor when a probe shared the link with it: on a slow uplink it waited
        behind the probe (a frame behind a 75 kB activation's probe: 400 ms instead of 120),
        which says what probing costs, not what offloading from that arm does."""
        if offload.attempts != 1:
            return False
        return not self._probes.in_flight(offload.sent, received, self.reply_timeout_s)

    def _revealed(self, sent: _Sent, reply: Reply) -> Observation:
        """What a reply taught: C_L, and after an offload made whatever the exit said (an
        audit, a frame) every exit after the split, as the cloud computed them; so a node on
        the frame arm learns its exits, and whether to trust them, without running them."""
        confs, classes = sent.confidences, sent.classes
        after = self.blocks[sent.turn.decision.arm + 1 : -1]
        said = {x.block: x for x in reply.exits}
        if sent.audit and all(b in said for b in after):
            confs = (*confs, *(said[b].confidence for b in after), float(reply.confidence))
            classes = (*classes, *(said[b].label for b in after), int(reply.label))
        return Observation(
            confs,
            reply.confidence,
            audit=sent.audit,
            classes=classes,
            final_class=int(reply.label),
        )

    def expire(self, now: float | None = None, *, final: bool = False) -> int:
        """Settle every offload older than the reply timeout: send it again while it has
        re-offloads left (a worker may have died holding it; the frame id makes the retry
        idempotent, and a second reply is dropped as late), then fall back. ``final``: fall
        back on everything pending now (the node is stopping). Returns how many fell back."""
        due = self._offloads.due(now, final=final)
        if due and not final:
            with self._lock:
                if self.costs is not None and not self.costs.outage:
                    # No reply in time: until one comes, an offload costs the whole wait.
                    self.costs.observe_timeout((self.reoffloads + 1) * self.reply_timeout_s)
                    self._reprice()
                self.counters.reoffloads += len(due.resend)
        for offload in due.resend:
            self._send(offload.frame_id, offload.payload)
        try:
            for offload in due.expired:
                with self._lock:
                    self.counters.errors["timeout"] += 1
                self._fall_back(offload)
        finally:
            self._offloads.done(len(due.expired))
        return len(due.expired)

    def next_deadline(self) -> float | None:
        return self._offloads.next_deadline()

    @property
    def probes_pending(self) -> int:
        return len(self._probes)

    @property
    def pending(self) -> int:
        return len(self._offloads)

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Block until fewer than ``limit`` offloads are pending (replies, timeouts free them)."""
        return self._offloads.wait_below(limit, timeout)

    # -- helpers -------------------------------------------------------------------------------
    def _frame_refused(self, text: str) -> None:
        """A worker could not read a frame offload (lock held). Three in a row: the workers
        predate frame offload (or refuse it), so the node stops sending frames until it
        restarts."""
        self._frames_refused += 1
        if self._frames_refused == 3 and self.costs is not None:
            self.costs.refuse_frames()
            self._reprice()
            log.warning(
                "the workers refused 3 frame offloads (%s): no more frames are sent until "
                "restart; upgrade the workers (a release with frame offload), or set "
                "frame_offload = false",
                text,
            )

    def _fall_back(self, offload: Offload[_Sent]) -> None:
        """The frame's own answer for an offload that got none: its split exit's, or (the
        frame arm computed no exit) the first exit's, run now."""
        sent = offload.context
        turn = sent.turn
        with self._lock:
            turn.policy.cancel(turn.decision)
        block = self.blocks[turn.decision.arm]
        label, conf = sent.classes[-1], sent.confidences[-1]
        if sent.resized is not None:
            block = self.blocks[self._first]
            (_, logits), _, _ = self._run_edge(self.preprocess.normalise(sent.resized), block)
            c, k = confidence(logits[0], self.temperatures[0])
            label, conf = int(k[0]), float(c[0])
        split = self.blocks[sent.sent_arm]
        self._publish_result(turn, label, conf, block, split, "fallback")

    def _answered(self) -> None:
        """A reply that could not be timed still shows the link delivers: an outage is over
        (lock held)."""
        if self.costs is not None and self.costs.outage:
            self.costs.observe_answer()
            self._reprice()

    def _reprice(self) -> None:
        """The measured costs changed: the policy prices with them from now on (lock held)."""
        self.rewards = RewardModel(self.costs.cost_model(), self.rewards.alpha, self.rewards.mu)
        self.policy.set_rewards(self.rewards)

    def _publish_result(
        self,
        turn: _Turn,
        label: int,
        conf: float,
        exit_block: int,
        split_block: int,
        source: Source,
        timed_s: float | None = None,
    ) -> None:
        """Publish a frame's one result, hand it to ``on_result``, then count it: once the
        count shows, the result has gone out. ``timed_s``: the parts of its latency priced on
        their own, when they price its arm (the rest is its arm's wait, :mod:`device.costs`)."""
        names = self.ckpt.meta.class_names
        result = Result(
            device_id=self.device_id,
            frame_id=turn.frame_id,
            label=label,
            class_name=names[label] if 0 <= label < len(names) else str(label),
            confidence=round(conf, 6),
            exit_block=exit_block,
            split_block=split_block,
            source=source,
            captured_at=iso_utc(turn.captured_at),
            latency_ms=round((time.time() - turn.captured_at) * 1e3, 3),
            model_hash=self.ckpt.hash,
        )
        self.out.publish(self._topic_result, encode_result(result))
        log.debug("frame %d: %s result %.1f ms after its read", turn.frame_id, source,
                  result.latency_ms)  # fmt: skip
        if self.on_result is not None:
            self.on_result(result, turn.captured_at)
        with self._lock:
            self.counters.count(source)
            if timed_s is not None and self.costs is not None:
                latency_s = result.latency_ms / 1e3
                self.costs.observe_result(turn.decision.arm, latency_s, timed_s, time.monotonic())

    # -- runtime settings ------------------------------------------------------------------------
    def apply(self, setting: Setting) -> dict[str, Any]:
        """Apply a validated runtime setting (see :mod:`device.settings`); returns the effective
        settings. Offloads in flight are settled with the policy that sent them."""
        handler = SETTERS.get(setting.key)
        if handler is None:
            raise SettingError(f"unknown setting {setting.key!r}: use one of {', '.join(SETTERS)}")
        with self._lock:
            handler(self, setting.value)
            return self._settings()

    def _use_encoding(self, setting: str) -> None:
        """The ``encoding`` setting and what it sends from each split block (``wire``)."""
        meta = self.ckpt.meta
        self.encoding = setting
        self.wire = wire_encodings(setting, meta.exit_blocks, meta.wire_encodings)

    def _set_mu(self, mu: float) -> None:
        """Only the price of cost changes: the policy keeps what it learnt."""
        self.rewards = RewardModel(self.rewards.cost, self.rewards.alpha, mu)
        self.policy.set_rewards(self.rewards)

    def _set_alpha(self, alpha: float) -> None:
        """Which frames exit changes: what the policy learnt no longer applies."""
        self._new_policy(self.policy.spec, RewardModel(self.rewards.cost, alpha, self.rewards.mu))

    def _set_policy(self, spec: str) -> None:
        """Another policy learns from scratch (offloads in flight settle with the old one)."""
        self._new_policy(spec, self.rewards)

    def _reset(self, _: object) -> None:
        """The same policy, forgetting what it learnt."""
        self._new_policy(self.policy.spec, self.rewards)

    def _new_policy(self, spec: str, rewards: RewardModel) -> None:
        """A fresh policy from the factory; the rewards change only if it could be built."""
        if self.make_policy is None:
            raise RuntimeError("this node was built without a policy factory")
        self.policy = self.make_policy(spec, rewards)
        self.rewards = rewards

    def refuse(self) -> None:
        """Count a refused runtime setting (its reason goes out once, in the next stats)."""
        with self._lock:
            self.counters.settings_refused += 1

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return self._settings()

    def _settings(self) -> dict[str, Any]:
        return {
            "alpha": self.rewards.alpha,
            "mu": self.rewards.mu,
            "policy": self.policy.spec,
            "encoding": self.encoding,
            "wire": {str(b): e for b, e in self.wire.items()},
            "cost": "paper" if self.costs is None else "measured",
            "frame_offload": self.frame_arm is not None,
            "jpeg_quality": self.jpeg_quality,
            "reply_timeout_s": self.reply_timeout_s,
            "max_pending": self.max_pending,
            "model_hash": self.ckpt.hash,
        }

    # -- reporting -------------------------------------------------------------------------------
    def policy_snapshot(self) -> PolicySnapshot:
        """The policy's state with its spec and settings, consistent with each other; the
        caller writes it wherever it likes without holding up frames or replies."""
        with self._lock:
            return PolicySnapshot(self.policy.to_state(), self.policy.spec, self._settings())

    def stats(self) -> dict:
        pending = len(self._offloads)
        with self._lock:
            c = self.counters
            n = max(c.frames, 1)
            settled = max(c.results, 1)
            cost = self.rewards.cost
            return {
                "device_id": self.device_id,
                "frames": c.frames,
                "split": self.current_block,
                "results": {"edge": c.edge, "cloud": c.cloud, "fallback": c.fallback},
                "exit_rate": round(c.edge / settled, 4),
                "offload_rate": round(c.offloads / n, 4),
                "frame_offloads": c.frame_offloads,
                "fallback_rate": round(c.fallback / settled, 4),
                "bytes_sent": c.bytes_sent,
                "pending": pending,
                "late_replies": c.late_replies,
                "reoffloads": c.reoffloads,
                "audit_rate": round(c.audits / n, 4),
                "errors": dict(c.errors),
                "settings_refused": c.settings_refused,
                "arms": self.policy.arm_stats(),
                "costs": {
                    "edge": [round(v, 4) for v in cost.edge],
                    "offload": [round(v, 4) for v in cost.offload],
                },
                "model_hash": self.ckpt.hash,
            }


SETTERS: dict[str, Callable[[Node, Any], None]] = {
    "alpha": Node._set_alpha,
    "mu": Node._set_mu,
    "policy": Node._set_policy,
    "encoding": Node._use_encoding,
    "reset": Node._reset,
}
"""Runtime setting -> what applies it (lock held), built once: one entry per key of
:data:`device.settings.SETTABLE`, so a new setting is a handler and a line here."""
