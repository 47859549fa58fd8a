"""The MQTT edge shared by nodes and workers: a thin paho-mqtt 2.x (MQTT v5) client.

Only this module imports paho. It gives the rest of the code a small surface (publish,
subscribe, a bounded inbox of frozen :class:`Message` values, a connected flag) and sets what
every isplitee client needs: Nagle off on the socket (a request/reply through a broker on
loopback takes about 0.7 ms with it off and about 88 ms with it on), a session that outlives
short disconnects, automatic reconnection with back-off, and a retained will on a status topic.

paho's callbacks do no work: they turn a packet into a :class:`Message` and put it on the
inbox, so decoding and inference never run on paho's network thread. A full inbox drops the
message, logs it and counts it in :attr:`MqttLink.inbox_dropped`.

Nothing the broker refuses goes unseen. Mosquitto accepts the connection of an account and
then refuses, one by one, the publishes and subscriptions its ACL does not allow: a QoS 1
publish gets a PUBACK with a failure reason (MQTT v5), a subscription a SUBACK with one. Both
are counted by topic kind (:attr:`MqttLink.refused`, :attr:`MqttLink.subscriptions_refused`)
and logged once per kind and interval; :meth:`MqttLink.publish_checked` and
:meth:`MqttLink.wait_subscribed` let a program check its topics at start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared.broker_diagnosis import (
    LOGIN_REFUSED,
    NO_ANSWER,
    ConnectFailure,
    diagnose,
    login_refused,
)
from shared.errors import IsplitEEError, TemporaryError
from shared.logthrottle import LogThrottle

__all__ = ["BrokerAddress", "BrokerUnavailable", "Message", "MqttError", "MqttLink", "topic_kind"]

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
    """The broker refused us; the message names the broker, the reason and the fix."""


class BrokerUnavailable(MqttError, TemporaryError):
    """The broker cannot be reached, or not yet (it may be restarting, the network coming up):
    a later start can succeed (exit status 75, which the units restart)."""


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The client's TLS context; a missing or unreadable CA file is one line, not a traceback."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError:
        raise MqttError(f"ca_file {ca_file}: no such file (ISPLITEE_CA_FILE, ca_file)") from None
    except (ssl.SSLError, OSError) as exc:
        why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise MqttError(
            f"ca_file {ca_file} is not a readable PEM CA certificate ({why}): give the broker's"
            " CA, e.g. the ca.crt of deploy/broker-setup.sh init"
        ) from None


def topic_kind(topic: str) -> str:
    """What a refusal is counted under: the topic's last level (``result``, ``status``...)."""
    return topic.rsplit("/", 1)[-1]


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
    received: float = field(default_factory=time.monotonic, compare=False)
    """``time.monotonic()`` when paho handed it over: a round trip ends here, not when a busy
    process's reply thread got to it (on a node short of CPU that wait is its own load, and
    timing it would price offloading by how busy the node is while it does not offload)."""


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
        self.user = username or self.address.username
        self.refused: Counter[str] = Counter()  # publishes refused by the broker, by kind
        self.last_refusal: dict[str, tuple[str, str]] = {}  # kind -> (topic, reason)
        self.subscriptions_refused: dict[str, str] = {}  # filter -> reason, this connection
        self.subscribed = threading.Event()  # every SUBACK of this connection is in
        self._sent: dict[int, tuple[str, str]] = {}  # mid of a QoS 1 publish -> kind, topic
        self._acked: dict[int, str | None] = {}  # PUBACKs in before publish() returned
        self._sub_mids: dict[int, str] = {}  # mid of a SUBSCRIBE -> its filter
        self._outcomes: dict[int, str | None] = {}  # mid -> reason, for publish_checked
        self._lock = threading.Lock()
        self._throttle = LogThrottle()
        self._failure: ConnectFailure | None = None  # why the last connect failed
        self._stop_waiting = threading.Event()  # a failure the connect timeout cannot mend
        self._starting = False  # start() reports failures itself: no log lines meanwhile
        self._stopping = False
        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(OFFLINE_QUEUE)
        self._has_password = bool(password or self.address.password)
        if self.user:
            client.username_pw_set(self.user, password or self.address.password)
        self.ca_file = ca_file
        self._tls: ssl.SSLContext | None = None
        if ca_file and not self.address.tls:  # ca_file turns TLS on: the logs say mqtts://
            self.address = dataclasses.replace(self.address, tls=True)
        if self.address.tls:
            # One context for paho and for the diagnosis, so it sees the handshake paho failed.
            self._tls = _tls_context(ca_file)
            client.tls_set_context(self._tls)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_socket_open = self._on_socket_open
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        self._client = client

    # -- paho callbacks: no work here, only hand-over --------------------------------------------
    @staticmethod
    def _on_socket_open(client: paho.Client, userdata: object, sock: socket.socket) -> None:
        # Not a TCP socket (a websocket wrapper): nothing to switch off.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            reason = str(reason_code)
            failure = ConnectFailure(reason)
            if reason in LOGIN_REFUSED:  # retrying with the same password cannot help now
                failure = ConnectFailure(
                    login_refused(reason, self.user, self._has_password), stop_now=True
                )
            self._note_failure(failure)
            return
        self._failure = None
        self.connects += 1
        self.subscribed.clear()
        with self._lock:
            self.subscriptions_refused.clear()
            self._sub_mids.clear()
            for topic in self.subscriptions:
                _, mid = client.subscribe(topic, qos=1)
                self._sub_mids[mid] = topic
            if not self._sub_mids:
                self.subscribed.set()
        self.connected.set()
        log.info(
            "connected to %s as %s (%s session)",
            self.address,
            self.client_id,
            "resumed" if flags.session_present else "new",
        )

    def _on_connect_fail(self, client, userdata) -> None:
        self._note_failure(self._diagnose())

    def _diagnose(self) -> ConnectFailure:
        return diagnose(self.address.host, self.address.port, self._tls, self.ca_file)

    def _note_failure(self, failure: ConnectFailure) -> None:
        """Keep why connecting failed; a running client logs each new reason once (while
        starting, start() reports it in its error instead)."""
        if failure != self._failure and not self._starting:
            log.warning("cannot connect to %s: %s", self.address, failure.text)
        self._failure = failure
        if failure.stop_now:
            self._stop_waiting.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self._stopping:
            log.warning("disconnected from %s (%s); reconnecting", self.address, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        reason = str(reason_code) if reason_code.is_failure else None
        with self._lock:
            sent = self._sent.pop(mid, None)
            if sent is None:  # acknowledged before publish() had its mid back
                self._acked[mid] = reason
                return
            checked = mid in self._outcomes
            if checked:
                self._outcomes[mid] = reason
        if reason is not None:
            self._count_refusal(*sent, reason, quiet=checked)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._lock:
            topic = self._sub_mids.pop(mid, None)
            failed = [str(rc) for rc in reason_codes if rc.is_failure]
            if topic is not None and failed:
                self.subscriptions_refused[topic] = failed[0]
            done = not self._sub_mids
        if topic is not None and failed and self.connects > 1:  # at start: wait_subscribed
            log.error(
                "broker %s refused account %s the subscription to %s: %s",
                self.address,
                self.user or "(anonymous)",
                topic,
                failed[0],
            )
        if done:
            self.subscribed.set()

    def _count_refusal(self, kind: str, topic: str, reason: str, *, quiet: bool) -> None:
        """Every refused publish is counted; the log gets the first of a kind, then one line
        per interval with how many more there were (not a checked one: its caller reports)."""
        with self._lock:
            self.refused[kind] += 1
            self.last_refusal[kind] = (topic, reason)
        suffix = None if quiet else self._throttle.admit(("refused", kind))
        if suffix is not None:
            log.error(
                "broker %s refused account %s a publish on %s: %s%s",
                self.address,
                self.user or "(anonymous)",
                topic,
                reason,
                suffix,
            )

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
        self._starting = True
        self._client.loop_start()
        started = time.monotonic()
        looked = False
        try:
            while not self.connected.wait(0.05):
                waited = time.monotonic() - started
                if self._failure is None and not looked and waited >= min(3.0, timeout):
                    # TCP connected but MQTT has not answered: find out what listens there.
                    looked = True
                    found = self._diagnose()
                    if found.stop_now or waited >= timeout:
                        self._note_failure(found)
                if self._stop_waiting.is_set() or waited >= timeout:
                    self.stop()
                    failure = self._failure or ConnectFailure(NO_ANSWER)
                    error = BrokerUnavailable if failure.temporary else MqttError
                    raise error(f"cannot connect to the broker at {self.address}: {failure.text}")
        finally:
            self._starting = False

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        kind: str | None = None,
    ) -> paho.MQTTMessageInfo:
        """Queue a publish; paho sends it now, or after a reconnect if we are offline.

        A refusal by the broker is counted under ``kind`` (default: the topic's last level)."""
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
        elif qos > 0:
            self._track(info.mid, kind or topic_kind(topic), topic)
        return info

    def _track(self, mid: int, kind: str, topic: str) -> None:
        with self._lock:
            if mid in self._acked:  # its PUBACK already came
                reason = self._acked.pop(mid)
                checked = mid in self._outcomes
                if checked:
                    self._outcomes[mid] = reason
            else:
                self._sent[mid] = (kind, topic)
                return
        if reason is not None:
            self._count_refusal(kind, topic, reason, quiet=checked)

    def publish_checked(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        kind: str | None = None,
        timeout: float = 5.0,
    ) -> str | None:
        """Publish at QoS 1 and wait for the broker's PUBACK: None if it took the message,
        else its reason (``Not authorized``). No PUBACK within ``timeout`` (the link dropped)
        counts as taken: the message stays queued and is checked like any other."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            self.publish_dropped += 1
            return None
        with self._lock:
            self._outcomes[info.mid] = None
        self._track(info.mid, kind or topic_kind(topic), topic)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout)
        with self._lock:
            return self._outcomes.pop(info.mid, None)

    def wait_acked(self, kind: str, timeout: float = 5.0) -> bool:
        """Wait until the broker has answered every QoS 1 publish of ``kind`` sent so far
        (False: some are still unanswered after ``timeout``, e.g. the link dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if all(sent[0] != kind for sent in self._sent.values()):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)

    def wait_for(self, topic: str, timeout: float = 5.0) -> bool:
        """Wait for a message on ``topic`` and take it out of the inbox; every other message
        that came meanwhile stays there, in order, for the program's own loop."""
        deadline = time.monotonic() + timeout
        kept: list[Message] = []
        found = False
        while not found and (left := deadline - time.monotonic()) > 0:
            try:
                message = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            if message.topic == topic:
                found = True
            else:
                kept.append(message)
        with self.inbox.mutex:  # back at the front, before anything that came since
            self.inbox.queue.extendleft(reversed(kept))
        return found

    def wait_subscribed(self, timeout: float = 5.0) -> dict[str, str]:
        """Wait for the broker's SUBACKs of this connection: the filters it refused, with why."""
        self.subscribed.wait(timeout)
        with self._lock:
            return dict(self.subscriptions_refused)

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
