"""The MQTT edge shared by nodes and workers: a thin paho-mqtt 2.x (MQTT v5) client.

Only this module imports paho. It gives the rest of the code a small surface (publish,
subscribe, a bounded inbox of frozen :class:`Message` values, a connected flag) and sets what
every isplitee client needs: Nagle off on the socket (a request/reply through a broker on
loopback takes about 0.7 ms with it off and about 88 ms with it on), a session that outlives
short disconnects, automatic reconnection with back-off, and a retained will on a status topic.

paho's callbacks do no work: they turn a packet into a :class:`Message` and put it on the
inbox, so decoding and inference never run on paho's network thread. A full inbox drops the
message, logs it and counts it in :attr:`MqttLink.inbox_dropped`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared.errors import IsplitEEError

__all__ = ["BrokerAddress", "Message", "MqttError", "MqttLink"]

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 300
"""How long the broker keeps a client's session (subscriptions, queued QoS 1 messages) after
it drops: long enough for a Wi-Fi hiccup or a broker restart, short enough that a node that is
gone for good does not pile up messages."""


OFFLINE_QUEUE = 10_000
"""Publishes paho keeps while the broker is unreachable (about half an hour of results at
5 fps); past it a publish is dropped and counted (:attr:`MqttLink.publish_dropped`), so a long
outage cannot exhaust a Pi's memory."""


class MqttError(IsplitEEError):
    """The broker cannot be reached or refused us; the message names the broker and the reason."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` (TLS, default port 8883)."""
        if "://" not in url:
            url = "mqtt://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"broker URL {url!r} should start with mqtt:// or mqtts://")
        tls = parts.scheme in ("mqtts", "ssl")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ValueError(f"broker URL {url!r} has an invalid port") from None
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r} names no host, e.g. mqtt://127.0.0.1:1883")
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:  # never shows the password
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Message:
    """One received publish, detached from paho."""

    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation: bytes | None = None
    retain: bool = False


class MqttLink:
    """One connected MQTT v5 client with a bounded inbox.

    Args:
        broker: ``mqtt://host:port`` (see :meth:`BrokerAddress.parse`).
        client_id: stable across restarts, so the broker resumes the session.
        subscriptions: topic filters, (re)subscribed at QoS 1 on every connect.
        will: (topic, payload) published retained by the broker if we vanish.
        inbox_size: bound of the inbox; past it messages are dropped and counted.
        session_expiry_s: how long the broker keeps the session (subscriptions, queued QoS 1
            messages) after the connection drops. 0 for a cloud worker: a dead worker's
            session would stay in the shared group and swallow its share of activations.
        on_overflow: called on paho's network thread with each message dropped because the
            inbox is full (after it is counted), e.g. to answer it with an error at once; it
            must be quick and must not block. None: the drop is logged.
    """

    def __init__(
        self,
        broker: str,
        client_id: str,
        *,
        subscriptions: Iterable[str] = (),
        will: tuple[str, bytes] | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        inbox_size: int = 1000,
        session_expiry_s: int = SESSION_EXPIRY_S,
        on_overflow: Callable[[Message], None] | None = None,
    ) -> None:
        self.address = BrokerAddress.parse(broker)
        self.client_id = client_id
        self.session_expiry_s = session_expiry_s
        self.subscriptions = tuple(subscriptions)
        self.inbox: queue.Queue[Message] = queue.Queue(maxsize=inbox_size)
        self.inbox_dropped = 0
        self.publish_dropped = 0  # past OFFLINE_QUEUE messages queued while disconnected
        self._on_overflow = on_overflow
        self.connected = threading.Event()
        self.connects = 0
        self._refused: str | None = None
        self._stopping = False
        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(OFFLINE_QUEUE)
        user = username or self.address.username
        if user:
            client.username_pw_set(user, password or self.address.password)
        if self.address.tls or ca_file:
            client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_socket_open = self._on_socket_open
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    # -- paho callbacks: no work here, only hand-over --------------------------------------------
    @staticmethod
    def _on_socket_open(client: paho.Client, userdata: object, sock: socket.socket) -> None:
        # Not a TCP socket (a websocket wrapper): nothing to switch off.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            log.error("broker %s refused %s: %s", self.address, self.client_id, reason_code)
            return
        self._refused = None
        self.connects += 1
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        self.connected.set()
        log.info(
            "connected to %s as %s (%s session)",
            self.address,
            self.client_id,
            "resumed" if flags.session_present else "new",
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self._stopping:
            log.warning("disconnected from %s (%s); reconnecting", self.address, reason_code)

    def _on_message(self, client, userdata, msg: paho.MQTTMessage) -> None:
        props = msg.properties
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        message = Message(msg.topic, bytes(msg.payload), response_topic, correlation, msg.retain)
        try:
            self.inbox.put_nowait(message)
        except queue.Full:
            self.inbox_dropped += 1
            if self._on_overflow is not None:
                self._on_overflow(message)
            else:
                log.warning(
                    "inbox full (%d): dropped a message on %s", self.inbox.maxsize, msg.topic
                )

    # -- the surface ---------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        """Connect (retrying in the background) and wait up to ``timeout`` for the broker."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        # A client that keeps a session resumes it from the first connect on: Mosquitto writes
        # a session to its persistence store only when it was opened with clean start off, so
        # with clean start on the first connect a broker killed and restarted forgets the
        # subscription, and whatever is published before the client resubscribes is lost to
        # it (measured: 8 results per broker SIGKILL, see tests/test_reliability.py).
        self._client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=30,
            clean_start=self.session_expiry_s == 0,
            properties=props,
        )
        self._client.loop_start()
        if not self.connected.wait(timeout):
            self.stop()
            reason = self._refused or "no answer (is Mosquitto running and the port right?)"
            raise MqttError(f"cannot connect to the broker at {self.address}: {reason}")

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> paho.MQTTMessageInfo:
        """Queue a publish; paho sends it now, or after a reconnect if we are offline."""
        props = None
        if response_topic is not None or correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            self.publish_dropped += 1
            log.error("publish queue full while offline: dropped a message on %s", topic)
        return info

    def stop(self, final: tuple[str, bytes] | None = None, timeout: float = 5.0) -> None:
        """Publish ``final`` (retained, e.g. the ``offline`` status), then disconnect and end
        the session.

        The session outlives a lost connection (so a short outage loses nothing), but a client
        that stops on purpose ends it: a stopped worker's session would otherwise stay a
        member of the shared subscription for ``SESSION_EXPIRY_S``, and the broker would keep
        queueing activations for it that nobody answers.
        """
        self._stopping = True
        if final is not None and self.connected.is_set():
            info = self._client.publish(final[0], final[1], qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        self._client.disconnect(properties=props)
        self._client.loop_stop()
        self.connected.clear()
