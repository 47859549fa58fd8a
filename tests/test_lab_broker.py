"""The private Mosquitto of the tests and benchmarks: a free port taken before it binds."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from shared.lab.broker import DEV_CONFIG, BrokerExited, broker_from, mosquitto_binary

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed")


def _taken(port: int) -> socket.socket:
    """The port bound and not listening, as an outgoing connection's local port is."""
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    return s


def test_a_broker_whose_free_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    broker = broker_from(DEV_CONFIG, tmp_path)
    first = broker.port
    with _taken(first):  # another client got it between free_port() and the bind
        broker.start()
        try:
            assert broker.port != first
            with socket.create_connection(("127.0.0.1", broker.port), timeout=2):
                pass
            assert f"listener {broker.port} 127.0.0.1" in broker.config.read_text()
        finally:
            broker.stop()


def test_a_broker_on_a_given_port_says_why_it_did_not_start(tmp_path: Path) -> None:
    with _taken(0) as held:
        port = held.getsockname()[1]
        broker = broker_from(DEV_CONFIG, tmp_path, port=port)
        with pytest.raises(BrokerExited, match="before listening"):
            broker.start()
    assert broker.port == port
