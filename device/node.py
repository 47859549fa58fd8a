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

All public methods take one lock: frames arrive on the main thread, replies on another.
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
from device.settings import Setting
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

__all__ = ["Node", "NodeCounters", "Publisher", "node_arms"]

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


@dataclass
class _Pending:
    policy: Policy  # the one that decided: a runtime setting may have replaced it since
    decision: Decision
    frame_id: int
    captured_at: float
    sent: float
    confidences: tuple[float, ...]
    classes: tuple[int, ...]
    payload: bytes
    audit: bool = False
    attempts: int = 1
    sent_arm: int = 0  # the arm whose message went: the decision's, or the frame arm
    resized: np.ndarray | None = None  # the frame arm's frame, for a fallback answer

    @property
    def exit_class(self) -> int:
        return self.classes[-1]


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
        self.reply_timeout_s = reply_timeout_s
        self.max_pending = max_pending
        self.reoffloads = reoffloads
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
        self._pending: dict[int, _Pending] = {}
        self._probes: dict[int, tuple[int, float]] = {}  # seq -> (arm, sent)
        self._probe_seq = 0
        self._topic_probe = topics.probe(device_id)
        self._lock = threading.Condition()
        self._log_throttle = LogThrottle()  # every offload refused: one line per kind per 10 s

    # -- frames --------------------------------------------------------------------------------
    def process(self, frame_id: int, image: np.ndarray, captured_at: float) -> None:
        """Decide, run the edge half, and answer or offload one frame."""
        resized = self.preprocess.resize(image)
        with self._lock:
            decision = self.policy.decide()
            arm, block = decision.arm, self.blocks[decision.arm]
            self.current_block = block
            self.counters.frames += 1
            if arm == self.frame_arm:  # no block on the device: the frame goes as it is
                self._offload_frame(decision, frame_id, captured_at, resized, [0.0], [0], True)
                return
            x = self.preprocess.normalise(resized)
            started = time.perf_counter()
            activation, exit_logits = self.edge(x, block)
            if self.costs is not None:
                self.costs.observe_edge(arm, time.perf_counter() - started)
            # the frame arm's place, if any: an exit that is never confident
            confs, classes = [0.0] * self._first, [0] * self._first
            for i, logits in enumerate(exit_logits):
                c, k = confidence(logits, self.temperatures[i])
                confs.append(float(c[0]))
                classes.append(int(k[0]))
            last = arm == len(self.blocks) - 1
            # An audit offloads a frame its exit could have answered: the cloud's reply tells
            # the policy whether the exits agree with the final classifier (shared.policy.referee).
            audit = decision.audit and not last
            if (last or decision.answers(confs[arm], self.rewards.alpha)) and not audit:
                final = confs[arm] if last else None
                self.policy.observe(
                    decision,
                    Observation(
                        tuple(confs),
                        final,
                        classes=tuple(classes),
                        final_class=classes[-1] if last else None,
                    ),
                )
                self._publish_result(
                    frame_id, classes[arm], confs[arm], block, block, "edge", captured_at
                )
                self.counters.edge += 1
                return
            if self.costs is not None and self.costs.frame_cheaper(arm):
                self._offload_frame(decision, frame_id, captured_at, resized, confs, classes)
                return
            try:
                payload = encode_activation(
                    device_id=self.device_id,
                    frame_id=frame_id,
                    captured_at=captured_at,
                    split_block=block,
                    model_hash=self.ckpt.hash,
                    exit_confidence=confs[arm],
                    exit_class=classes[arm],
                    tensor=activation[0],
                    encoding=self.wire[block],
                    audit=audit,
                )
            except ValueError as exc:  # NaN or infinite activations: no worker could use them
                self.policy.cancel(decision)
                self.counters.errors["encode"] += 1
                more = self._log_throttle.admit("encode")
                if more is not None:
                    log.warning("frame %d: not offloaded (%s)%s", frame_id, exc, more)
                self._publish_result(
                    frame_id, classes[arm], confs[arm], block, block, "fallback", captured_at
                )
                self.counters.fallback += 1
                return
            self._offload(decision, frame_id, captured_at, confs, classes, payload, audit, arm)

    def _offload_frame(
        self,
        decision: Decision,
        frame_id: int,
        captured_at: float,
        resized: np.ndarray,
        confs: list[float],
        classes: list[int],
        keep: bool = False,
    ) -> None:
        """Send the frame's JPEG (lock held): the decision's arm is the frame arm (``keep``
        the frame for a fallback answer), or an unsure exit for which the frame is cheaper."""
        arm = decision.arm
        started = time.perf_counter()
        image = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
        jpeg = encode_frame(image, self.jpeg_quality)
        if self.costs is not None:
            self.costs.observe_edge(self.frame_arm, time.perf_counter() - started)
        size = len(jpeg)
        self.frame_bytes = size if self.frame_bytes is None else 0.8 * self.frame_bytes + 0.2 * size
        payload = encode_frame_activation(
            device_id=self.device_id,
            frame_id=frame_id,
            captured_at=captured_at,
            model_hash=self.ckpt.hash,
            jpeg=jpeg,
            shape=image.shape,
            exit_confidence=confs[arm],
            exit_class=classes[arm],
            audit=decision.audit,
        )
        self.counters.frame_offloads += 1
        self._offload(
            decision,
            frame_id,
            captured_at,
            confs,
            classes,
            payload,
            decision.audit,
            self.frame_arm,
            resized if keep else None,
        )

    def _offload(
        self,
        decision: Decision,
        frame_id: int,
        captured_at: float,
        confs: list[float],
        classes: list[int],
        payload: bytes,
        audit: bool,
        sent_arm: int,
        resized: np.ndarray | None = None,
    ) -> None:
        """Send one offload and keep it pending (lock held). To the policy the frame arm's
        offload is an audit: it reveals C_L whatever any exit says."""
        self._pending[frame_id] = _Pending(
            self.policy,
            decision,
            frame_id,
            captured_at,
            time.monotonic(),
            tuple(confs),
            tuple(classes),
            payload,
            audit=audit or decision.arm == self.frame_arm,
            sent_arm=sent_arm,
            resized=resized,
        )
        self.counters.audits += audit
        self.counters.offloads += 1
        self.counters.bytes_sent += len(payload)
        self._send(frame_id, payload)

    def _send(self, frame_id: int, payload: bytes) -> None:
        self.out.publish(
            self._topic_activation,
            payload,
            response_topic=self._topic_reply,
            correlation=offload_correlation(self._run_id, frame_id),
        )

    # -- link probes ---------------------------------------------------------------------------
    def probe(self, arm: int, payload_bytes: int) -> None:
        """Time a round trip of an offload-sized message through the broker for ``arm``.

        A node that stopped offloading (the link was slow) would otherwise never learn that
        the link recovered, and a node that starts with a pessimistic prior would never
        offload at all: probes keep the offload cost of every split measured.
        """
        with self._lock:
            self._probe_seq += 1
            seq = self._probe_seq
            self._probes[seq] = (arm, time.monotonic())
            if len(self._probes) > 64:  # lost probes: forget the oldest
                del self._probes[min(self._probes)]
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
        with self._lock:
            found = self._probes.pop(seq, None)
            if found is None or self.costs is None:
                return
            arm, sent = found
            self.costs.observe_offload(arm, received - sent, received)
            self._reprice()

    # -- replies -------------------------------------------------------------------------------
    def on_reply(self, msg: Message) -> None:
        """Settle the frame a reply answers (called from the reply thread)."""
        received = time.monotonic()
        if msg.topic == self._topic_probe:
            self._on_probe(msg, received)
            return
        frame_id = offload_frame_id(msg.correlation, self._run_id)
        if frame_id is None:
            with self._lock:
                self.counters.foreign_replies += 1
            return
        try:
            reply = decode_reply(msg.payload)
        except ProtocolError as exc:
            reply, error = None, exc
        with self._lock:
            pending = self._pending.pop(frame_id, None)
            if pending is None:
                self.counters.late_replies += 1
                self._answered()
                return
            if reply is None or not reply.ok:
                self._answered()
                kind = error.kind if reply is None else reply.error.kind  # type: ignore[union-attr]
                text = str(error) if reply is None else reply.error.message  # type: ignore[union-attr]
                self.counters.errors[kind] += 1
                if kind == "decode" and pending.sent_arm == self.frame_arm:
                    self._frame_refused(text)
                more = self._log_throttle.admit(kind)
                if more is not None:
                    log.warning(
                        "frame %d: the cloud could not answer (%s: %s)%s",
                        frame_id,
                        kind,
                        text,
                        more,
                    )
                self._fall_back(pending)
                return
            if pending.sent_arm == self.frame_arm:
                self._frames_refused = 0  # in a row
            if self.costs is not None and pending.attempts == 1:  # a re-sent one: whose reply?
                rtt = received - pending.sent - reply.cloud_ms / 1e3
                self.costs.observe_offload(pending.sent_arm, rtt, received)
                self._reprice()
            else:
                self._answered()
            pending.policy.observe(pending.decision, self._revealed(pending, reply))
            self._publish_result(
                frame_id,
                int(reply.label),
                float(reply.confidence),
                self.blocks[-1],
                self.blocks[pending.sent_arm],
                "cloud",
                pending.captured_at,
            )
            self.counters.cloud += 1
            self._lock.notify_all()

    def _revealed(self, pending: _Pending, reply: Reply) -> Observation:
        """What a reply taught: C_L, and after an offload made whatever the exit said (an
        audit, a frame) every exit after the split, as the cloud computed them; so a node on
        the frame arm learns its exits, and whether to trust them, without running them."""
        confs, classes = pending.confidences, pending.classes
        after = self.blocks[pending.decision.arm + 1 : -1]
        said = {x.block: x for x in reply.exits}
        if pending.audit and all(b in said for b in after):
            confs = (*confs, *(said[b].confidence for b in after), float(reply.confidence))
            classes = (*classes, *(said[b].label for b in after), int(reply.label))
        return Observation(
            confs,
            reply.confidence,
            audit=pending.audit,
            classes=classes,
            final_class=int(reply.label),
        )

    def expire(self, now: float | None = None, *, final: bool = False) -> int:
        """Settle every offload older than the reply timeout: send it again while it has
        re-offloads left (a worker may have died holding it; the frame id makes the retry
        idempotent, and a second reply is dropped as late), then fall back. ``final``: fall
        back on everything pending now (the node is stopping). Returns how many fell back."""
        now = time.monotonic() if now is None else now
        with self._lock:
            late = [
                p for p in self._pending.values() if final or now - p.sent >= self.reply_timeout_s
            ]
            fell = 0
            if late and not final and self.costs is not None and not self.costs.outage:
                # No reply in time: until one comes, an offload costs the whole wait.
                self.costs.observe_timeout((self.reoffloads + 1) * self.reply_timeout_s)
                self._reprice()
            for p in late:
                if not final and p.attempts <= self.reoffloads:
                    p.attempts += 1
                    p.sent = now
                    self.counters.reoffloads += 1
                    self._send(p.frame_id, p.payload)
                    continue
                del self._pending[p.frame_id]
                self.counters.errors["timeout"] += 1
                self._fall_back(p)
                fell += 1
            return fell

    def next_deadline(self) -> float | None:
        with self._lock:
            if not self._pending:
                return None
            return min(p.sent for p in self._pending.values()) + self.reply_timeout_s

    @property
    def probes_pending(self) -> int:
        with self._lock:
            return len(self._probes)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Block until fewer than ``limit`` offloads are pending (replies, timeouts free them)."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._pending) < limit, timeout)

    # -- helpers (lock held) ---------------------------------------------------------------------
    def _use_encoding(self, setting: str) -> None:
        """The ``encoding`` setting and what it sends from each split block (``wire``)."""
        meta = self.ckpt.meta
        self.encoding = setting
        self.wire = wire_encodings(setting, meta.exit_blocks, meta.wire_encodings)

    def _frame_refused(self, text: str) -> None:
        """A worker could not read a frame offload. Three in a row: the workers predate frame
        offload (or refuse it), so the node stops sending frames until it restarts."""
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

    def _fall_back(self, p: _Pending) -> None:
        p.policy.cancel(p.decision)
        block = self.blocks[p.decision.arm]
        label, conf = p.exit_class, p.confidences[-1]
        if p.resized is not None:  # the frame arm computed no exit: the first one answers now
            block = self.blocks[self._first]
            _, logits = self.edge(self.preprocess.normalise(p.resized), block)
            c, k = confidence(logits[0], self.temperatures[0])
            label, conf = int(k[0]), float(c[0])
        split = self.blocks[p.sent_arm]
        self._publish_result(p.frame_id, label, conf, block, split, "fallback", p.captured_at)
        self.counters.fallback += 1
        self._lock.notify_all()

    def _answered(self) -> None:
        """A reply that could not be timed still shows the link delivers: an outage is over."""
        if self.costs is not None and self.costs.outage:
            self.costs.observe_answer()
            self._reprice()

    def _reprice(self) -> None:
        self.rewards = RewardModel(self.costs.cost_model(), self.rewards.alpha, self.rewards.mu)
        self.policy.set_rewards(self.rewards)

    def _publish_result(
        self,
        frame_id: int,
        label: int,
        conf: float,
        exit_block: int,
        split_block: int,
        source: str,
        captured_at: float,
    ) -> None:
        names = self.ckpt.meta.class_names
        result = Result(
            device_id=self.device_id,
            frame_id=frame_id,
            label=label,
            class_name=names[label] if 0 <= label < len(names) else str(label),
            confidence=round(conf, 6),
            exit_block=exit_block,
            split_block=split_block,
            source=source,  # type: ignore[arg-type]
            captured_at=iso_utc(captured_at),
            latency_ms=round((time.time() - captured_at) * 1e3, 3),
            model_hash=self.ckpt.hash,
        )
        self.out.publish(self._topic_result, encode_result(result))
        if self.on_result is not None:
            self.on_result(result, captured_at)

    # -- runtime settings ------------------------------------------------------------------------
    def apply(self, setting: Setting) -> dict[str, Any]:
        """Apply a validated runtime setting (see :mod:`device.settings`); returns the effective
        settings. Offloads in flight are settled with the policy that sent them."""
        with self._lock:
            key, value = setting.key, setting.value
            if key == "encoding":
                self._use_encoding(value)
            elif key == "mu":
                self.rewards = RewardModel(self.rewards.cost, self.rewards.alpha, value)
                self.policy.set_rewards(self.rewards)
            else:
                if self.make_policy is None:
                    raise RuntimeError("this node was built without a policy factory")
                spec = value if key == "policy" else self.policy.spec
                if key == "alpha":
                    self.rewards = RewardModel(self.rewards.cost, value, self.rewards.mu)
                self.policy = self.make_policy(spec, self.rewards)
            return self.settings()

    def refuse(self) -> None:
        """Count a refused runtime setting (its reason goes out once, in the next stats)."""
        with self._lock:
            self.counters.settings_refused += 1

    def settings(self) -> dict[str, Any]:
        with self._lock:
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
    def stats(self) -> dict:
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
                "pending": len(self._pending),
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
