"""The testbed's link: a shaping proxy between real paho clients and a real Mosquitto."""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Iterator

import pytest

from shared.lab.shaper import LinkProfile, LinkShaper
from shared.mqtt import MqttLink


@contextlib.contextmanager
def _shaped(broker, topic: str) -> Iterator[tuple[LinkShaper, MqttLink, MqttLink]]:
    """The link, a client through it (the node's side) and one on the broker directly."""
    with LinkShaper(broker.port) as link:
        far = MqttLink(broker.url, f"far-{time.monotonic_ns()}", subscriptions=[topic])
        near = MqttLink(link.url, f"near-{time.monotonic_ns()}")
        far.start(10)
        near.start(10)
        far.wait_subscribed()
        try:
            yield link, near, far
        finally:
            near.stop()
            far.stop()


def _arrival(link: MqttLink, timeout: float = 20.0) -> float:
    link.inbox.get(timeout=timeout)
    return time.monotonic()


def test_delay_and_uplink_rate_show_in_what_a_client_sees(broker) -> None:
    with _shaped(broker, "shaped/up") as (link, near, far):
        sent = time.monotonic()
        assert near.publish_checked("shaped/up", b"x") is None  # a PUBACK: a round trip
        assert time.monotonic() - sent < 0.05
        link.set(delay_ms=60)
        sent = time.monotonic()
        assert near.publish_checked("shaped/up", b"x") is None
        assert 0.12 <= time.monotonic() - sent < 0.5  # two one-way delays
        far.inbox.queue.clear()
        link.set(delay_ms=0, up_mbit=2.0)
        sent = time.monotonic()
        near.publish("shaped/up", bytes(250_000))  # 2 Mbit: about a second at 2 Mbit/s
        took = _arrival(far) - sent
        assert 0.9 <= took < 3.0, took
        assert link.up.bytes > 250_000


def test_a_hold_outage_delays_and_loses_nothing(broker) -> None:
    with _shaped(broker, "shaped/hold") as (link, near, far):
        link.set(outage="hold")
        sent = time.monotonic()
        for i in range(5):
            near.publish("shaped/hold", str(i).encode())
        with pytest.raises(queue.Empty):
            far.inbox.get(timeout=0.6)
        link.set(outage=None)
        got = [far.inbox.get(timeout=5).payload for _ in range(5)]
        assert got == [str(i).encode() for i in range(5)]
        assert time.monotonic() - sent >= 0.6


def test_a_refuse_outage_drops_the_link_and_the_client_comes_back(broker) -> None:
    with _shaped(broker, "shaped/refuse") as (link, near, far):
        link.set(outage="refuse")
        deadline = time.monotonic() + 5
        while near.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not near.connected.is_set()
        time.sleep(1.5)  # paho retries meanwhile and is turned away
        assert not near.connected.is_set()
        link.set(outage=None)
        assert near.connected.wait(35)  # paho's back-off is at most 30 s
        near.publish("shaped/refuse", b"back")
        assert far.inbox.get(timeout=5).payload == b"back"


def test_profiles_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="up_mbit"):
        LinkProfile(up_mbit=0)
    with pytest.raises(ValueError, match="outage"):
        LinkProfile(outage="sometimes")
