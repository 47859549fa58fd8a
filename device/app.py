"""The camera node as a process: broker, camera, model, policy and node loop wired together.

Threads: the main thread reads frames and runs the edge half; a reply thread takes the MQTT
inbox and settles offloads (and times them out), so a reply is published as soon as it
arrives, not when the next frame happens to come. Stats and state are written from the main
thread between frames.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import queue
import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np

from device.backend import make_backend
from device.camera import FrameSource, open_source
from device.config import DeviceConfig, check_event_labels
from device.costs import LiveCosts
from device.discovery import discovery_messages, ha_status_topic, migration_messages
from device.events import EventRules, LabelTracker
from device.node import Node, node_arms
from device.onnx_edge import EdgeBackend
from device.probing import ProbePlan
from device.reporter import Reporter, SnapshotSettings
from device.settings import SettingError, parse_setting, validate_policy
from device.state import RESUMED, load_state, resumed_settings, save_state
from shared.cost import RewardModel, paper_cost
from shared.jpeg import encode_frame
from shared.memory import map_large_buffers, release_freed_memory
from shared.model_file import ModelFile, load_model
from shared.mqtt import MqttError, MqttLink
from shared.policy import Policy, build_policy, options_for
from shared.profile import ModelProfile
from shared.protocol import FRAME_BLOCK, HEADER_BYTES, Topics
from shared.refusal import Refusal, discovery_advice, node_advice
from shared.wire import FALLBACK, wire_encodings

__all__ = ["DeviceApp", "RunSummary"]

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return importlib.metadata.version("isplitee")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _sustained(run, rounds: int, burst: int) -> float:
    """Median over ``rounds`` of the mean seconds of ``burst`` calls in a row, the first round
    a warm-up. A run of calls is timed, not each call: on a CPU shared in slices (a cgroup
    quota, a busy board) a call shorter than its slice runs at full speed and the stalls fall
    between calls, so single calls time a split as cheaper than frames find it."""
    samples = []
    for round_ in range(rounds + 1):
        t0 = time.perf_counter()
        for _ in range(burst):
            run()
        if round_:
            samples.append((time.perf_counter() - t0) / burst)
    return statistics.median(samples)


def time_splits(
    edge: EdgeBackend, blocks: tuple[int, ...], input_size: int, rounds: int = 4, burst: int = 4
) -> dict[int, float]:
    """Seconds of the node's own edge backend at each split, as frames will run it.

    Rounds go over all splits in turn, so a burst of load elsewhere on the machine spreads
    over every split instead of inflating one.
    """
    x = np.zeros((1, 3, input_size, input_size), np.float32)
    samples: dict[int, list[float]] = {b: [] for b in blocks}
    for _ in range(rounds):
        for b in blocks:
            samples[b].append(_sustained(lambda b=b: edge(x, b), 1, burst))
    return {b: statistics.median(v) for b, v in samples.items()}


def time_frame_encode(size: int, quality: int) -> tuple[float, int]:
    """(seconds, bytes) of one frame offload's JPEG encode at the model's input size, on an
    image of 8-pixel blocks of noise (about as hard to compress as a camera's scene)."""
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (max(size // 8, 1), max(size // 8, 1), 3), dtype=np.uint8)
    image = np.ascontiguousarray(np.repeat(np.repeat(tiles, 8, 0), 8, 1)[:size, :size])
    return _sustained(lambda: encode_frame(image, quality), 4, 4), len(encode_frame(image, quality))


START_PROBES_S = 3.0
"""How long a node with measured costs times the link before its first frame, at most."""


@dataclass(frozen=True)
class RunSummary:
    frames: int
    results: int
    edge: int
    cloud: int
    fallback: int
    refused: int = 0  # results the broker refused (its ACL): published, never delivered


class DeviceApp:
    def __init__(self, config: DeviceConfig, checkpoint: ModelFile | None = None) -> None:
        self.config = config
        map_large_buffers()  # before the model's buffers: see shared.memory
        self.ckpt = checkpoint or load_model(config.model)
        check_event_labels(config.event_labels, self.ckpt.meta.class_names)
        self.topics = Topics(config.prefix)
        # The frame arm needs measured costs: under the paper's flat offload price it would
        # cost nothing on the device and win every comparison.
        self.arms = blocks = node_arms(
            self.ckpt.meta.arm_blocks,
            frame_offload=config.frame_offload and config.cost == "measured",
        )
        validate_policy(config.policy, blocks)
        self.configured = {k: getattr(config, k) for k in RESUMED}
        start = self._start_settings()
        self.edge = make_backend(config.backend, self.ckpt, config.cache_dir_path(), config.threads)
        self._profile: ModelProfile | None = None  # per-block activation sizes, for probes
        self._frame_prior = 0  # bytes of a frame offload's JPEG, timed at start-up
        self._probes = ProbePlan(
            self.probe_order,
            config.probe_interval_s,
            config.reply_timeout_s,
            now=time.monotonic(),
            favoured=self._frame_probe_due,
        )
        self.costs = self._live_costs() if config.cost == "measured" else None
        cost = self.costs.cost_model() if self.costs else paper_cost(blocks)
        rewards = RewardModel(cost, alpha=start["alpha"], mu=start["mu"])
        policy = self._policy(rewards, start["policy"])
        self._status = self.topics.status(config.device_id)
        self._settings_prefix = self.topics.settings(config.device_id)[:-1]
        # Home Assistant's birth message: discovery is published again when it comes online
        self._ha_status = ha_status_topic(config.ha_prefix) if config.ha_discovery else None
        self.link = MqttLink(
            config.broker,
            f"isplitee-node-{config.device_id}",
            subscriptions=[
                self.topics.reply(config.device_id),
                self.topics.probe(config.device_id),
                self.topics.settings(config.device_id),
                *([self._ha_status] if self._ha_status else []),
            ],
            will=(self._status, b"offline"),
            username=config.username,
            password=config.password_value(),
            ca_file=str(config.ca_file) if config.ca_file else None,
        )
        self.reporter = self._reporter()
        self.node = Node(
            checkpoint=self.ckpt,
            policy=policy,
            costs=self.costs,
            rewards=rewards,
            publisher=self.link,
            topics=self.topics,
            device_id=config.device_id,
            encoding=start["encoding"],
            reply_timeout_s=config.reply_timeout_s,
            max_pending=config.max_pending,
            reoffloads=config.reoffloads,
            make_policy=self._new_policy,
            edge=self.edge,
            frame_offload=blocks[0] == FRAME_BLOCK,
            jpeg_quality=config.jpeg_quality,
            on_result=self.reporter.on_result,
        )
        self._replies_done = threading.Event()
        release_freed_memory()  # what loading and timing the model freed
        self._started = time.monotonic()
        self._source: FrameSource | None = None
        self._metrics = None

    # -- set-up --------------------------------------------------------------------------------
    def _reporter(self) -> Reporter:
        """State, events and snapshots (docs/protocol.md), from the results the node publishes."""
        cfg = self.config
        return Reporter(
            LabelTracker(cfg.device_id, EventRules.from_config(cfg), now=time.time()),
            self.link,
            self.topics,
            cfg.device_id,
            snapshots=SnapshotSettings.from_config(cfg),
            # a result comes at most max_pending frames (and their re-offloads) after its frame
            recent=cfg.max_pending + 4,
        )

    def _live_costs(self) -> LiveCosts:
        meta = self.ckpt.meta
        log.info("timing each split on this device ...")
        edge_s = time_splits(self.edge, meta.arm_blocks, meta.input_size)
        prof = self.ckpt.profile
        wire = wire_encodings(self._start["encoding"], meta.exit_blocks, meta.wire_encodings)
        payload = {
            b: prof.block(b).payload_bytes(wire.get(b, FALLBACK)) + HEADER_BYTES
            for b in meta.arm_blocks
        }
        if self.arms[0] == FRAME_BLOCK:
            encode_s, jpeg_bytes = time_frame_encode(meta.input_size, self.config.jpeg_quality)
            edge_s[FRAME_BLOCK], payload[FRAME_BLOCK] = encode_s, jpeg_bytes + HEADER_BYTES
            self._frame_prior = jpeg_bytes
        self._profile = prof
        log.info(
            "edge ms per split: %s",
            ", ".join(f"{b}: {edge_s[b] * 1e3:.2f}" for b in self.arms),
        )
        return LiveCosts(
            self.arms,
            edge_s,
            payload,
            link_mbit_per_s=self.config.link_mbps,
            rtt_ms=self.config.rtt_ms,
            smoothing=self.config.cost_smoothing,
            late_s=self.config.reply_timeout_s,
        )

    def _start_settings(self) -> dict:
        """alpha, mu, policy and encoding to start with: the configuration's, or what was
        set at run time before a restart (:func:`device.state.resumed_settings`)."""
        start = dict(self.configured)
        if self.config.state is not None:
            start = resumed_settings(
                self.config.state,
                self.configured,
                model_hash=self.ckpt.hash,
                blocks=self.arms,
            )
            validate_policy(start["policy"], self.arms)
        self._start = start
        return start

    def _policy(self, rewards: RewardModel, spec: str) -> Policy:
        cfg = self.config
        if cfg.state is not None:
            restored = load_state(
                cfg.state,
                rewards,
                model_hash=self.ckpt.hash,
                blocks=self.arms,
                spec=spec,
            )
            if restored is not None:
                return restored
        return self._new_policy(spec, rewards)

    def _new_policy(self, spec: str, rewards: RewardModel) -> Policy:
        """A fresh policy: the configured options it takes (the registry says which)."""
        cfg = self.config
        options = options_for(
            spec,
            c=cfg.c,
            discount=cfg.discount,
            target=cfg.target,
            min_audit_rate=cfg.min_audit_rate,
            seed=cfg.seed,
        )
        return build_policy(spec, rewards, **options)

    def save_state(self) -> None:
        if self.config.state is None:
            return
        snapshot = self.node.policy_snapshot()
        save_state(
            self.config.state,
            snapshot.state,
            model_hash=self.ckpt.hash,
            blocks=self.arms,
            spec=snapshot.spec,
            settings=snapshot.settings,
            configured=self.configured,
        )

    # -- running -------------------------------------------------------------------------------
    def probe_bytes(self, arm: int) -> int:
        """An offload's size from ``arm`` as the node sends now (the frame arm's as the frames
        sent lately; a runtime change of encoding changes the others)."""
        block, profile = self.arms[arm], self._profile
        if block == FRAME_BLOCK:
            payload = round(self.node.frame_bytes or self._frame_prior)
        elif profile is None:
            raise RuntimeError("probe sizes come with measured costs (cost = 'measured')")
        else:
            payload = profile.block(block).payload_bytes(self.node.wire[block])
        return payload + HEADER_BYTES

    def probe_order(self) -> list[int]:
        """The offloading arms, smallest probe first: the order of a sweep."""
        return sorted(range(len(self.arms) - 1), key=self.probe_bytes)

    def _frame_probe_due(self) -> int | None:
        """The frame arm, favoured by the probes (device/probing.py), unless the node sends
        frames now and so times their round trip on every frame."""
        costs = self.costs
        if costs is None or costs.frame_arm is None or costs.frames_refused:
            return None
        return None if self.node.current_block == FRAME_BLOCK else costs.frame_arm

    def _probe(self) -> None:
        """Send the probe the plan says is due, if any (reply thread)."""
        if self.costs is None or self._profile is None:
            return
        costs = self.costs
        arm = self._probes.next(
            time.monotonic(),
            pending=self.node.probes_pending,
            outage=costs.outage,
            held=costs.held_round_trips,
        )
        if arm is not None:
            # the frame's probe from a node that runs the network: timed while the node is
            # quiet, as it would be if the node sent frames (not through an outage: a lost
            # probe would hold the frames for the reply timeout)
            quiet = arm == self._frame_probe_due() and not costs.outage
            self.node.probe(arm, self.probe_bytes(arm), quiet=quiet)

    def _measure_link(self, within_s: float = START_PROBES_S) -> None:
        """Time each offloading arm's round trip before the first decision: the probe plan's
        start-up sweep (device/probing.py), which the reply thread sends one probe at a time,
        before any probe of the cycle could queue ahead of it. Sent at once
        they would queue behind each other on a slow uplink: on a 3 Mbit/s link a frame's
        probe behind six activations' took 477 ms where alone it takes 120. What ``within_s``
        leaves unmeasured the sweep measures while the first frames go."""
        deadline = time.monotonic() + within_s
        while self._probes.sweeping and time.monotonic() < deadline:
            time.sleep(0.002)

    def _reply_loop(self) -> None:
        inbox = self.link.inbox
        next_tick = 0.0
        while not self._replies_done.is_set():
            self._probe()
            if time.monotonic() >= next_tick:  # labels and events lapse while no frame comes
                self.reporter.tick(time.time())
                next_tick = time.monotonic() + 0.1
            deadline = self.node.next_deadline()
            wait = 0.1 if deadline is None else min(0.1, max(0.0, deadline - time.monotonic()))
            try:
                msg = inbox.get(timeout=wait)
                if msg.topic.startswith(self._settings_prefix):
                    self._on_setting(msg)
                elif msg.topic == self._ha_status:
                    if msg.payload.strip() == b"online":
                        log.info("Home Assistant came online: discovery published again")
                        self._publish_discovery(checked=False)
                else:
                    self.node.on_reply(msg)
            except queue.Empty:
                pass
            except Exception:  # one bad reply must not stop replies for every later frame
                log.exception("could not handle a reply")
            self.node.expire()

    def _on_setting(self, msg) -> None:
        key = msg.topic[len(self._settings_prefix) :]
        try:
            setting = parse_setting(key, msg.payload, blocks=self.arms)
        except SettingError as exc:
            log.warning("refused a runtime setting: %s", exc)
            self.node.refuse()
            self.publish_stats(settings_error=str(exc))  # on the stats topic at once, once
            return
        settings = self.node.apply(setting)
        log.info("runtime setting %s = %r applied", key, setting.value)
        self.publish_config(settings)

    def _check_topics(self) -> None:
        """Stop at once, with the fix, if the broker refuses this node's own topics.

        Mosquitto lets an account connect and then refuses what its ACL does not allow, one
        publish at a time: without this check a node on the wrong account runs on and every
        result vanishes. Status and config are published for real, the activation topic gets
        one zero-byte message, which workers skip (docs/protocol.md); the result topic is
        checked on the first real result (:meth:`_check_first_result`), so no reader of
        results ever sees a message that is not one.
        """
        dev = self.config.device_id
        subscriptions = self.link.wait_subscribed()
        ha_refused = subscriptions.pop(self._ha_status, None) if self._ha_status else None
        if ha_refused is not None:  # the node runs on; Home Assistant's restarts go unseen
            log.warning(
                "the broker refused the subscription to %s (%s): discovery is not published "
                "again when Home Assistant restarts; add `pattern read %s` to the broker's ACL",
                self._ha_status,
                ha_refused,
                self._ha_status,
            )
        refused = [Refusal(topic, why, "subscribe") for topic, why in subscriptions.items()]
        checks = [
            (self._status, b"online", True),
            (self.topics.config(dev), json.dumps(self.node.settings()).encode(), True),
            (self.topics.activation(dev), b"", False),
        ]
        for topic, payload, retain in checks:
            why = self.link.publish_checked(topic, payload, retain=retain)
            if why is not None:
                refused.append(Refusal(topic, why))
        if refused:
            raise MqttError(
                node_advice(
                    refused, broker=str(self.link.address), user=self.link.user, device_id=dev
                )
            )

    def _check_first_result(self) -> None:
        """The result topic's check: wait for the broker's answer to the first result."""
        self.link.wait_acked("result")
        if self.link.refused["result"]:
            topic, why = self.link.last_refusal["result"]
            raise MqttError(
                node_advice(
                    [Refusal(topic, why)],
                    broker=str(self.link.address),
                    user=self.link.user,
                    device_id=self.config.device_id,
                )
            )

    def _publish_discovery(self, *, checked: bool = True) -> None:
        """Home Assistant's discovery config. At start each publish is checked (a refusal is a
        warning with the fix, since the node works on without Home Assistant) and entities of
        the per-entity configs of earlier releases are migrated to it (device/discovery.py);
        when Home Assistant comes online again it is simply published again."""
        cfg = self.config
        configs = discovery_messages(
            self.topics,
            cfg.device_id,
            ha_prefix=cfg.ha_prefix,
            model_hash=self.ckpt.hash,
            sw_version=_version(),
            snapshot=cfg.snapshot,
            event_labels=tuple(cfg.event_labels),
        )
        if not checked:
            for topic, body in configs:
                self.link.publish(topic, body, retain=True, kind="discovery")
            return
        markers, old = migration_messages(cfg.device_id, cfg.ha_prefix)
        steps = [(t, b, False) for t, b in markers] + [(t, b, True) for t, b in configs]
        steps += [(t, b"", True) for t in old]
        refused = []
        for topic, body, retain in steps:
            why = self.link.publish_checked(topic, body, retain=retain, kind="discovery")
            if why is not None:
                refused.append(Refusal(topic, why))
        if refused:
            log.warning(
                discovery_advice(
                    refused,
                    broker=str(self.link.address),
                    user=self.link.user,
                    ha_prefix=cfg.ha_prefix,
                )
            )

    def publish_config(self, settings: dict | None = None) -> None:
        """The effective settings, retained, so a dashboard shows them whenever it connects."""
        body = json.dumps(settings or self.node.settings())
        self.link.publish(self.topics.config(self.config.device_id), body, retain=True)

    def _stats(self, settings_error: str | None = None) -> dict:
        stats = self.node.stats()
        stats["settings_error"] = settings_error
        elapsed = max(time.monotonic() - self._started, 1e-9)
        stats["fps"] = round(stats["frames"] / elapsed, 3)
        stats["dropped"] = self._source.dropped if self._source is not None else 0
        stats["publish_dropped"] = self.link.publish_dropped
        stats["publish_refused"] = dict(self.link.refused)
        stats.update(self.reporter.stats())
        stats["uptime_s"] = round(elapsed, 1)
        return stats

    def publish_stats(self, settings_error: str | None = None) -> dict:
        stats = self._stats(settings_error)
        self.link.publish(self.topics.stats(self.config.device_id), json.dumps(stats))
        return stats

    def run(self, stop: threading.Event, connect_timeout: float = 30.0) -> RunSummary:
        """Process frames until the source ends, ``max_frames`` or ``stop``; then settle all."""
        cfg = self.config
        self.link.start(connect_timeout)
        if cfg.metrics_port is not None:
            from device.metrics import NodeMetrics
            from shared.metrics_http import MetricsServer

            metrics = NodeMetrics(self._stats)
            self._metrics = MetricsServer(
                metrics.render, self.link.connected.is_set, cfg.metrics_host, cfg.metrics_port
            )
            log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, self._metrics.port)
        try:
            self._check_topics()
        except MqttError:
            self.link.stop()
            raise
        if cfg.ha_discovery:
            self._publish_discovery()
        self.reporter.start()
        replies = threading.Thread(target=self._reply_loop, name="replies", daemon=True)
        replies.start()
        if self.costs is not None and self._profile is not None:
            self._measure_link()
        next_stats = time.monotonic() + cfg.stats_interval_s
        next_state = time.monotonic() + cfg.state_interval_s
        result_checked = False
        try:
            with open_source(cfg.source, fps=cfg.fps) as source:
                self._source = source
                while not stop.is_set():
                    if cfg.max_frames is not None and self.node.counters.frames >= cfg.max_frames:
                        break
                    frame = source.read()
                    if frame is None:
                        break
                    while not self.node.wait_below(cfg.max_pending, 0.5):
                        if stop.is_set():
                            break
                    self.reporter.frame(frame.index, frame.image)
                    self.node.process(frame.index, frame.image, frame.captured_at)
                    if not result_checked and self.node.counters.results:
                        self._check_first_result()
                        result_checked = True
                    now = time.monotonic()
                    if now >= next_stats:
                        self.publish_stats()
                        next_stats = now + cfg.stats_interval_s
                    if now >= next_state:
                        self.save_state()
                        next_state = now + cfg.state_interval_s
            # Every frame gets its result: wait for outstanding replies (or their timeouts).
            self.node.wait_below(1, cfg.reply_timeout_s * (cfg.reoffloads + 1) + 5.0)
            if not result_checked and self.node.counters.results:
                self._check_first_result()
        finally:
            self._replies_done.set()
            replies.join(5)
            self.node.expire(final=True)  # anything still pending falls back now
            self.reporter.close()
            self.save_state()
            self.publish_stats()
            self.link.stop(final=(self._status, b"offline"))
            if self._metrics is not None:
                self._metrics.close()
        c = self.node.counters
        refused = self.link.refused["result"]
        return RunSummary(c.frames, c.results, c.edge, c.cloud, c.fallback, refused)
