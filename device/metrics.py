"""The camera node's Prometheus metrics, read from the node's own counters at scrape time.

A collector rather than counters updated on the frame path: the node already counts
everything for its stats topic, so a scrape reads the same numbers and the per-frame loop
pays nothing for metrics (and the node core stays free of prometheus-client).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["NodeMetrics"]


class _NodeCollector:
    def __init__(self, stats: Callable[[], dict]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        dev = [s["device_id"]]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            m = CounterMetricFamily(f"isplitee_node_{name}", doc, labels=["device"])
            m.add_metric(dev, value)
            return m

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            m = GaugeMetricFamily(f"isplitee_node_{name}", doc, labels=["device"])
            m.add_metric(dev, value)
            return m

        yield counter("frames", "Frames processed", s["frames"])
        results = CounterMetricFamily(
            "isplitee_node_results", "Results published, by source", labels=["device", "source"]
        )
        for source in ("edge", "cloud", "fallback"):
            results.add_metric([*dev, source], s["results"][source])
        yield results
        yield counter("offload_bytes", "Activation and frame bytes offloaded", s["bytes_sent"])
        yield counter(
            "frame_offloads",
            "Offloads that sent the frame itself as a JPEG (split block 0)",
            s.get("frame_offloads", 0),
        )
        yield counter("dropped_frames", "Frames a live source dropped", s.get("dropped", 0))
        yield counter("events", "Label events started", s.get("events", 0))
        yield counter("snapshots", "Snapshots published", s.get("snapshots", 0))
        yield counter("snapshot_bytes", "Bytes of the snapshots' JPEGs", s.get("snapshot_bytes", 0))
        yield counter("late_replies", "Replies after their frame fell back", s["late_replies"])
        yield counter(
            "publish_dropped",
            "Messages dropped because too many were queued while the broker was unreachable",
            s.get("publish_dropped", 0),
        )
        refused = CounterMetricFamily(
            "isplitee_node_publish_refused",
            "Publishes the broker refused (its ACL), by topic kind",
            labels=["device", "kind"],
        )
        for kind, n in s.get("publish_refused", {}).items():
            refused.add_metric([*dev, kind], n)
        yield refused
        errors = CounterMetricFamily(
            "isplitee_node_errors", "Offloads that fell back, by kind", labels=["device", "kind"]
        )
        for kind, n in s["errors"].items():
            errors.add_metric([*dev, kind], n)
        yield errors
        yield gauge("pending_offloads", "Offloads awaiting a reply", s["pending"])
        yield gauge("split_block", "Block of the current split", s["split"] or 0)
        arms = GaugeMetricFamily(
            "isplitee_node_arm_count",
            "Decisions per split (the bandit's counts)",
            labels=["device", "block"],
        )
        means = GaugeMetricFamily(
            "isplitee_node_arm_mean_reward",
            "The bandit's estimated reward per split",
            labels=["device", "block"],
        )
        for arm in s["arms"]:
            arms.add_metric([*dev, str(arm["block"])], arm["count"])
            if arm["mean_reward"] is not None:
                means.add_metric([*dev, str(arm["block"])], arm["mean_reward"])
        yield arms
        yield means


class NodeMetrics:
    def __init__(self, stats: Callable[[], dict]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)
