"""The production broker (broker_config/mosquitto.prod.conf + acl, set up by
deploy/broker-setup.sh) lets nobody in where they don't belong: real Mosquitto, real TLS."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from shared.lab.broker import broker_from
from shared.mqtt import MqttError, MqttLink

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "deploy" / "broker-setup.sh"
PASSWORDS = {"camA": "pw-a", "camB": "pw-b", "w1": "pw-w1", "app": "pw-app"}


def _setup(*args: str, password: str | None = None) -> str:
    env = {**os.environ}
    if password is not None:
        env["ISPLITEE_NEW_PASSWORD"] = password
    out = subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def secure():
    # Mosquitto started as root reads its password file after dropping to its own user, which
    # cannot enter pytest's private temporary tree: use a directory it can read.
    d = Path(tempfile.mkdtemp(prefix="isplitee-prodbroker-"))
    d.chmod(0o755)
    _setup("init", str(d / "conf"))
    conf = d / "conf"
    _setup("add-node", str(conf), "camA", password=PASSWORDS["camA"])
    _setup("add-node", str(conf), "camB", password=PASSWORDS["camB"])
    _setup("add-worker", str(conf), "w1", password=PASSWORDS["w1"])
    _setup("add-reader", str(conf), "app", password=PASSWORDS["app"])
    b = broker_from(conf / "mosquitto.conf", d).start()
    yield b, conf
    b.stop()
    shutil.rmtree(d, ignore_errors=True)


def _link(secure, user: str | None, ca: Path | None = None, topics=()) -> MqttLink:
    b, conf = secure
    link = MqttLink(
        f"mqtts://127.0.0.1:{b.port}",
        f"sec-{user}-{time.monotonic_ns()}",
        subscriptions=list(topics),
        username=user,
        password=PASSWORDS.get(user or ""),
        ca_file=str(ca or conf / "ca.crt"),
    )
    link.start(5)
    return link


def _drain(link: MqttLink, until: str, timeout: float = 5.0) -> list[str]:
    """Topics received up to and including the first message on ``until``."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            m = link.inbox.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(m.topic)
        if m.topic == until:
            return seen
    raise AssertionError(f"nothing on {until}; got {seen}")


def test_anonymous_and_wrong_passwords_are_refused(secure) -> None:
    with pytest.raises(MqttError, match="cannot connect"):
        _link(secure, None)
    b, conf = secure
    bad = MqttLink(
        f"mqtts://127.0.0.1:{b.port}",
        "sec-bad",
        username="camA",
        password="nope",
        ca_file=str(conf / "ca.crt"),
    )
    with pytest.raises(MqttError, match="cannot connect"):
        bad.start(5)


def test_a_node_reaches_only_its_own_topics(secure) -> None:
    app = _link(secure, "app", topics=["isplitee/+/result", "isplitee/+/status"])
    worker = _link(secure, "w1", topics=["$share/g/isplitee/+/activation"])
    a = _link(
        secure,
        "camA",
        topics=["isplitee/camB/reply", "isplitee/camB/activation", "isplitee/camA/reply"],
    )
    try:
        time.sleep(0.3)
        # Node A tries B's topics first, then its own: when its own arrive, B's would have.
        a.publish("isplitee/camB/result", b"{}")
        a.publish("isplitee/camB/status", b"offline", retain=True)
        a.publish("isplitee/camA/result", b"{}")
        assert _drain(app, "isplitee/camA/result") == ["isplitee/camA/result"]
        a.publish("isplitee/camB/activation", b"x")
        a.publish("isplitee/camA/activation", b"x")
        assert _drain(worker, "isplitee/camA/activation") == ["isplitee/camA/activation"]
        # A subscribed to B's reply and activation: nothing of B's reaches A; its own does.
        b_node = _link(secure, "camB")
        b_node.publish("isplitee/camB/activation", b"y")
        worker.publish("isplitee/camB/reply", b"r")
        worker.publish("isplitee/camA/reply", b"r")
        assert _drain(a, "isplitee/camA/reply") == ["isplitee/camA/reply"]
        b_node.stop()
    finally:
        for link in (app, worker, a):
            link.stop()


def test_a_worker_cannot_speak_for_a_node(secure) -> None:
    app = _link(secure, "app", topics=["isplitee/+/status", "isplitee/workers/+/status"])
    worker = _link(secure, "w1")
    try:
        time.sleep(0.3)
        worker.publish("isplitee/camA/status", b"offline")
        worker.publish("isplitee/camA/result", b"{}")
        worker.publish("isplitee/workers/w2/status", b"online")  # another worker's status
        worker.publish("isplitee/workers/w1/status", b"online")
        assert _drain(app, "isplitee/workers/w1/status") == ["isplitee/workers/w1/status"]
    finally:
        app.stop()
        worker.stop()


def test_tls_needs_the_right_ca(secure, tmp_path) -> None:
    _link(secure, "app").stop()  # the generated CA works
    other = tmp_path / "other"
    _setup("init", str(other))
    with pytest.raises(MqttError, match="cannot connect"):
        _link(secure, "app", ca=other / "ca.crt")


def test_setup_refuses_bad_ids(tmp_path) -> None:
    out = subprocess.run(
        ["bash", str(SETUP), "add-node", str(tmp_path), "a/b"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "ids may hold" in out.stderr


def test_setup_without_arguments_prints_its_usage_and_nothing_else() -> None:
    out = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout.startswith("Accounts, ACL")
    assert "set -euo" not in out.stdout and "fail()" not in out.stdout


def test_setup_refuses_the_reserved_id_and_keeps_one_acl_block_per_account(tmp_path) -> None:
    conf = tmp_path / "conf"
    _setup("init", str(conf))
    refused = subprocess.run(
        ["bash", str(SETUP), "add-node", str(conf), "workers"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "'workers' is reserved" in refused.stderr
    for password in ("first", "second"):  # the second time: a new password, the same block
        _setup("add-worker", str(conf), "w9", password=password)
        _setup("add-operator", str(conf), "ops", password=password)
    acl = (conf / "acl").read_text().splitlines()
    assert acl.count("user w9") == 1 and acl.count("user ops") == 1
    assert acl.count("topic write isplitee/+/set/#") == 1
