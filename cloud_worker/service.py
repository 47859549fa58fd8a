"""The cloud worker: take activations off the shared subscription, finish the network, reply.

Data flows one way: paho's thread puts each message on the link's bounded inbox; this loop
decodes it, checks it against the served models, groups it into a micro-batch, runs the cloud
half, and publishes each reply on the message's MQTT v5 Response Topic with its Correlation
Data. A message that cannot be served is answered with an error (when it names a response
topic) and counted by kind; nothing a node sends can stop the loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from cloud_worker.batcher import Batcher
from cloud_worker.config import WorkerConfig
from cloud_worker.engine import ModelBank
from cloud_worker.metrics import WorkerMetrics
from shared.logthrottle import LogThrottle
from shared.memory import release_freed_memory
from shared.metrics_http import MetricsServer
from shared.mqtt import Message, MqttError, MqttLink
from shared.protocol import (
    Activation,
    ProtocolError,
    Reply,
    ReplyError,
    Topics,
    decode_activation,
    encode_reply,
)
from shared.refusal import Refusal, undelivered_advice, worker_advice

__all__ = ["Worker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Job:
    activation: Activation
    inputs: np.ndarray  # what the cloud half takes: the tensor, or the decoded frame
    response_topic: str | None
    correlation: bytes | None
    received: float


class Worker:
    def __init__(self, config: WorkerConfig, bank: ModelBank | None = None) -> None:
        self.config = config
        self.topics = Topics(config.prefix)
        self.bank = bank or ModelBank(
            config.models,
            backend=config.backend,
            cache_dir=config.cache_dir_path(),
            threads=config.threads,
        )
        release_freed_memory()  # what loading the models freed
        self.metrics = WorkerMetrics(config.worker_id)
        self._batcher: Batcher[_Job] = Batcher(config.max_batch, config.max_wait_ms / 1e3)
        self._status_topic = self.topics.worker_status(config.worker_id)
        self.link = MqttLink(
            config.broker,
            f"isplitee-worker-{config.worker_id}",
            subscriptions=[
                self.topics.shared_activations(config.group),
                self.topics.worker_check(),  # plain: the start-up check's message comes back
            ],
            will=(self._status_topic, b"offline"),
            username=config.username,
            password=config.password_value(),
            ca_file=str(config.ca_file) if config.ca_file else None,
            inbox_size=config.queue_size,
            # No session beyond the connection: when a worker dies the broker drops it from
            # the shared group at once, and nodes re-offload what it held.
            session_expiry_s=0,
            on_overflow=self._overloaded,
        )
        self.metrics.count_refusals(lambda: dict(self.link.refused))
        self._server: MetricsServer | None = None
        # A flood of refusals is counted by kind, and logged once per kind per 10 s.
        self._log_throttle = LogThrottle()
        self.served = 0

    @property
    def metrics_port(self) -> int | None:
        return self._server.port if self._server else None

    def start(self, timeout: float = 30.0) -> None:
        if self.config.metrics_port is not None:
            self._server = MetricsServer(
                self.metrics.render,
                self.link.connected.is_set,
                self.config.metrics_host,
                self.config.metrics_port,
            )
            log.info("metrics on http://%s:%d/metrics", self.config.metrics_host, self._server.port)
        self.link.start(timeout)
        try:
            self._check_topics()
        except MqttError:
            self.close()
            raise
        models = ", ".join(c.short_hash for c in self.bank.models.values())
        log.info(
            "worker %s serving %s on %s (group %s)",
            self.config.worker_id,
            models,
            self.link.address,
            self.config.group,
        )

    def _check_topics(self) -> None:
        """Stop at once, with the fix, if the broker refuses this worker's subscription or
        status. (Mosquitto's acl_file grants every subscription and filters on delivery; its
        dynamic-security plugin, like EMQX or HiveMQ, refuses in the SUBACK.)"""
        refused = [
            Refusal(topic, why, "subscribe") for topic, why in self.link.wait_subscribed().items()
        ]
        why = self.link.publish_checked(self._status_topic, b"online", retain=True)
        if why is not None:
            refused.append(Refusal(self._status_topic, why))
        if refused:
            raise MqttError(
                worker_advice(
                    refused,
                    broker=str(self.link.address),
                    user=self.link.user,
                    worker_id=self.config.worker_id,
                )
            )
        self._check_delivery()

    def _check_delivery(self, timeout: float = 5.0) -> None:
        """Does the broker deliver activations to this account? Mosquitto's acl_file grants
        any subscription and drops on delivery what the ACL does not let the account read:
        such a worker would take its share of every node's offloads and answer none. Its own
        zero-byte message on ``<prefix>/workers/activation`` must come back."""
        topic = self.topics.worker_check()
        why = self.link.publish_checked(topic, b"")
        if why is not None:  # an ACL from before this check: say so, and serve
            log.warning(
                "cannot check that the broker delivers activations to this worker: it refused "
                "the check on %s (%s); add `topic write %s` to this account's ACL block "
                "(deploy/broker-setup.sh add-worker does)",
                topic,
                why,
                topic,
            )
            return
        if not self.link.wait_for(topic, timeout):
            raise MqttError(
                undelivered_advice(topic, broker=str(self.link.address), user=self.link.user)
            )

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, then finish the batches in hand."""
        inbox = self.link.inbox
        while not stop.is_set():
            deadline = self._batcher.next_deadline()
            wait = 0.1 if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self._receive(inbox.get(timeout=wait))
                while True:  # take what is already there before running anything
                    self._receive(inbox.get_nowait())
            except queue.Empty:
                pass
            self.metrics.inbox.set(inbox.qsize())
            for key, jobs in self._batcher.due(time.monotonic()):
                self._run_batch(key, jobs)
        for key, jobs in self._batcher.drain():
            self._run_batch(key, jobs)

    def close(self) -> None:
        self.link.stop(final=(self._status_topic, b"offline"))
        if self._server is not None:
            self._server.close()

    # -- one message -------------------------------------------------------------------------
    def _receive(self, msg: Message) -> None:
        if not msg.payload:  # a node's start-up check of its ACL (docs/protocol.md)
            return
        self.metrics.messages.inc()
        try:
            act = decode_activation(msg.payload, max_bytes=self.config.max_payload_bytes)
            device = self.topics.device_of(msg.topic)
            if act.device_id != device:
                raise ProtocolError(
                    "device_mismatch",
                    f"activation from device {act.device_id!r} arrived on {device!r}'s topic",
                )
            key = self.bank.check(act)
            if msg.response_topic is None:
                raise ProtocolError("no_response_topic", "activation without a response topic")
            inputs = self.bank.inputs(act)
        except ProtocolError as exc:
            self._refuse(msg, exc)
            return
        job = _Job(act, inputs, msg.response_topic, msg.correlation, time.monotonic())
        batch = self._batcher.add(key, job, job.received)
        if batch is not None:
            self._run_batch(key, batch)

    def _overloaded(self, msg: Message) -> None:
        """An activation that found the inbox full (on paho's thread): answered at once with
        an ``overloaded`` error, so its node falls back now instead of waiting for its
        timeout, and counted; the inbox, and the worker's memory, stay bounded."""
        self.metrics.messages.inc()
        self._refuse(
            msg,
            ProtocolError(
                "overloaded",
                f"worker {self.config.worker_id} has {self.config.queue_size} activations "
                "waiting (queue_size); add workers or lower the nodes' offload rate",
            ),
        )

    def _refuse(self, msg: Message, exc: ProtocolError) -> None:
        self.metrics.error(exc.kind)
        more = self._log_throttle.admit(exc.kind)
        if more is not None:
            log.warning("refused a message on %s: %s: %s%s", msg.topic, exc.kind, exc, more)
        if msg.response_topic:
            reply = Reply(None, self.config.worker_id, error=ReplyError(exc.kind, str(exc)))
            self._reply(msg.response_topic, msg.correlation, reply)

    def _run_batch(self, key: tuple[str, int], jobs: list[_Job]) -> None:
        model_hash, block = key
        started = time.monotonic()
        for job in jobs:
            self.metrics.queue_ms.observe((started - job.received) * 1e3)
        try:
            answers = self.bank.run(model_hash, block, [j.inputs for j in jobs])
        except Exception as exc:  # a bug or an out-of-memory must not take the worker down
            log.exception("cloud half failed on a batch of %d", len(jobs))
            for job in jobs:
                self._refuse(
                    Message("", b"", job.response_topic, job.correlation),
                    ProtocolError("internal", f"the worker failed: {type(exc).__name__}: {exc}"),
                )
            return
        self.metrics.batch_size.observe(len(jobs))
        self.metrics.compute_ms.observe(answers.ms)
        for job, label, conf, exits in zip(
            jobs, answers.labels, answers.confidences, answers.exits, strict=True
        ):
            reply = Reply(
                frame_id=job.activation.frame_id,
                worker_id=self.config.worker_id,
                label=int(label),
                confidence=float(conf),
                cloud_ms=answers.ms,
                exits=exits,
            )
            self._reply(job.response_topic, job.correlation, reply)
            self.served += 1

    def _reply(self, topic: str, correlation: bytes | None, reply: Reply) -> None:
        self.link.publish(topic, encode_reply(reply), correlation=correlation)
        self.metrics.replies.inc()
