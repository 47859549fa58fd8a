"""The production broker (broker_config/mosquitto.prod.conf + acl, set up by
deploy/broker-setup.sh) lets nobody in where they don't belong: real Mosquitto, real TLS."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from shared.lab.broker import Broker, broker_from, free_port
from shared.lab.clips import write_digit_clip
from shared.lab.procs import device_command
from shared.mqtt import BrokerUnavailable, MqttError, MqttLink

from .pipeline_helpers import collect_until

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "deploy" / "broker-setup.sh"
PASSWORDS = {
    "camA": "pw-a",
    "camB": "pw-b",
    "cam.c": "pw-c",
    "w1": "pw-w1",
    "app": "pw-app",
    "ha": "pw-ha",
}


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
    _setup("add-node", str(conf), "cam.c", password=PASSWORDS["cam.c"])
    _setup("add-homeassistant", str(conf), "ha", password=PASSWORDS["ha"])
    b = broker_from(conf / "mosquitto.conf", d).start()
    yield b, conf
    b.stop()
    shutil.rmtree(d, ignore_errors=True)


def _client(port: int, ca: Path, user: str | None, topics=()) -> MqttLink:
    """An unstarted TLS client of the broker on ``port``, as account ``user``."""
    return MqttLink(
        f"mqtts://127.0.0.1:{port}",
        f"sec-{user}-{time.monotonic_ns()}",
        subscriptions=list(topics),
        username=user,
        password=PASSWORDS.get(user or ""),
        ca_file=str(ca),
    )


def _link(secure, user: str | None, ca: Path | None = None, topics=()) -> MqttLink:
    b, conf = secure
    link = _client(b.port, ca or conf / "ca.crt", user, topics)
    link.start(5)
    return link


def _drain(link: MqttLink, until: str, timeout: float = 5.0) -> list[str]:
    """Topics received up to and including the first message on ``until``."""
    got: list = []
    seen = lambda: [m.topic for m in got]  # noqa: E731
    if collect_until(link, got, lambda m: m.topic == until, timeout):
        return seen()
    raise AssertionError(f"nothing on {until}; got {seen()}")


def test_anonymous_and_wrong_passwords_are_refused(secure) -> None:
    with pytest.raises(BrokerUnavailable, match="refused an anonymous client at log-in"):
        _link(secure, None)  # temporary (exit 75): the fix is often on the broker
    b, conf = secure
    bad = MqttLink(
        f"mqtts://127.0.0.1:{b.port}",
        "sec-bad",
        username="camA",
        password="nope",
        ca_file=str(conf / "ca.crt"),
    )
    started = time.monotonic()
    with pytest.raises(MqttError, match=r"Not authorized: the broker refused account 'camA' at"):
        bad.start(20)
    assert time.monotonic() - started < 10  # a refused log-in is final: no waiting it out


def test_plain_mqtt_to_the_tls_listener_says_to_use_mqtts(secure) -> None:
    b, _ = secure
    with pytest.raises(MqttError, match=f"port {b.port} speaks TLS: use mqtts://127.0.0.1"):
        MqttLink(f"mqtt://127.0.0.1:{b.port}", "sec-plain").start(3)


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
    with pytest.raises(MqttError, match=r"not signed by a CA in .*other/ca.crt.*ISPLITEE_CA_FILE"):
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


def test_setup_refuses_the_reserved_id_and_keeps_one_role_and_block_per_account(tmp_path) -> None:
    conf = tmp_path / "conf"
    _setup("init", str(conf))
    refused = subprocess.run(
        ["bash", str(SETUP), "add-node", str(conf), "workers"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "'workers' is reserved" in refused.stderr
    missing = subprocess.run(
        ["bash", str(SETUP), "add-node", str(conf)], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "DEVICE_ID is required" in missing.stderr
    out = _setup("add-worker", str(conf), "w9", password="first")
    assert "reload Mosquitto to use it" in out
    _setup("add-operator", str(conf), "ops", password="first")
    for cmd, name in (("add-worker", "w9"), ("add-node", "w9"), ("add-operator", "ops")):
        again = subprocess.run(
            ["bash", str(SETUP), cmd, str(conf), name], capture_output=True, text=True
        )  # the same account again, or with another role: never a silent new password
        assert again.returncode == 2 and f"account '{name}' exists" in again.stderr
        assert f"broker-setup.sh passwd {conf} {name}" in again.stderr
    before = (conf / "passwd").read_text()
    _setup("passwd", str(conf), "w9", password="second")
    assert (conf / "passwd").read_text() != before
    acl = (conf / "acl").read_text().splitlines()
    assert acl.count("user w9") == 1 and acl.count("user ops") == 1
    assert acl.count("topic write isplitee/+/set/#") == 1
    assert (conf / "accounts").read_text().split() == ["w9", "worker", "ops", "operator"]


def test_a_certificate_for_another_host_is_reissued_not_silently_kept(tmp_path) -> None:
    conf = tmp_path / "conf"
    _setup("init", str(conf), "broker.lan")
    kept = _setup("init", str(conf), "10.0.0.7")
    assert f"deploy/broker-setup.sh cert {conf} 10.0.0.7" in kept
    _setup("cert", str(conf), "10.0.0.7")
    san = subprocess.run(
        ["openssl", "x509", "-in", str(conf / "server.crt"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "IP Address:10.0.0.7" in san and "DNS:10.0.0.7" not in san
    pair = [(conf / n).read_bytes() for n in ("server.crt", "server.key")]
    typo = subprocess.run(
        ["bash", str(SETUP), "cert", str(conf), "1.2.3"], capture_output=True, text=True
    )  # a mistyped address must not leave a key without its certificate
    assert typo.returncode == 2 and "neither a host name nor a complete IPv4" in typo.stderr
    assert [(conf / n).read_bytes() for n in ("server.crt", "server.key")] == pair


# -- finding 1: nothing the broker refuses goes unseen ------------------------------------------


def _env(user: str, conf: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ISPLITEE_USERNAME": user,
        "ISPLITEE_PASSWORD": PASSWORDS[user],
        "ISPLITEE_CA_FILE": str(conf / "ca.crt"),
    }


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_digit_clip(tmp_path_factory.mktemp("clip") / "digits.avi", 6)


def test_a_node_on_another_accounts_device_id_stops_with_the_fix(
    secure, tiny_artefact, clip
) -> None:
    b, conf = secure
    app = _link(secure, "app", topics=["isplitee/+/result"])
    try:
        cmd = device_command(f"mqtts://127.0.0.1:{b.port}", tiny_artefact, clip.path, "camB")
        out = subprocess.run(
            cmd, capture_output=True, text=True, env=_env("camA", conf), timeout=120
        )
        assert out.returncode == 2, out.stderr[-2000:]
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("isplitee-device: error: the broker at mqtts://"), last
        assert "account 'camA'" in last and "isplitee/camB/status (Not authorized)" in last
        assert "--device-id camA" in last and "broker-setup.sh add-node DIR camB" in last
        said = [line for line in out.stderr.splitlines() if "refused" in line]
        assert said == [last], said  # one line, not one per refused topic besides
        # It stopped before its first frame: no reader saw anything of it.
        with pytest.raises(queue.Empty):
            app.inbox.get(timeout=0.5)
    finally:
        app.stop()


def test_publishes_refused_at_run_time_are_counted_by_kind(secure, caplog) -> None:
    a = _link(secure, "camA")
    try:
        for _ in range(5):  # an ACL that changed under a running node: its results bounce
            a.publish("isplitee/camB/result", b"{}")
        a.publish("isplitee/camB/stats", b"{}")
        assert a.publish_checked("isplitee/camA/result", b"{}") is None
        assert a.publish_checked("isplitee/camB/result", b"{}") == "Not authorized"
        assert a.wait_acked("result") and a.wait_acked("stats")
        assert a.refused == {"result": 6, "stats": 1}
        assert a.last_refusal["result"] == ("isplitee/camB/result", "Not authorized")
        logged = [r.getMessage() for r in caplog.records if "refused account camA" in r.message]
        assert len(logged) == 2, logged  # once per kind, the rest held back by the throttle
        # ... and both programs' /metrics export the counts by kind.
        from cloud_worker.metrics import WorkerMetrics

        worker = WorkerMetrics("w")
        worker.count_refusals(lambda: a.refused)
        text = worker.render().decode()
        assert 'isplitee_worker_publish_refused_total{kind="result",worker="w"} 6.0' in text
    finally:
        a.stop()


def test_a_worker_whose_subscription_is_refused_stops_with_the_fix(tiny_artefact) -> None:
    """Mosquitto's acl_file grants any subscription and filters on delivery; its
    dynamic-security plugin refuses in the SUBACK, as EMQX and HiveMQ do."""
    plugin = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
    if not plugin.exists():
        plugin = next(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))
    d = Path(tempfile.mkdtemp(prefix="isplitee-dynsec-"))
    d.chmod(0o755)
    try:
        state = d / "dynsec.json"
        subprocess.run(
            ["mosquitto_ctrl", "dynsec", "init", str(state), "admin", "admin-pw"],
            check=True,
            capture_output=True,
        )
        state.chmod(0o666)
        template = d / "template.conf"
        template.write_text(
            f"listener 1883\nallow_anonymous false\nplugin {plugin}\n"
            f"plugin_opt_config_file {state}\n"
        )
        b = broker_from(template, d).start()
        try:
            ctl = ["mosquitto_ctrl", "-h", "127.0.0.1", "-p", str(b.port), "-u", "admin"]
            ctl += ["-P", "admin-pw", "dynsec"]
            # An account with a role that may write its status but read no activations.
            for args in (
                ["createClient", "w5", "-p", "pw-w5"],
                ["createRole", "status-only"],
                ["addRoleACL", "status-only", "publishClientSend", "isplitee/#", "allow", "5"],
                ["addClientRole", "w5", "status-only", "5"],
            ):
                subprocess.run([*ctl, *args], check=True, capture_output=True, timeout=20)
            cmd = [sys.executable, "-m", "cloud_worker", "--broker", f"{b.url}"]
            cmd += ["--worker-id", "w5", "--model", str(tiny_artefact)]
            env = {**os.environ, "ISPLITEE_USERNAME": "w5", "ISPLITEE_PASSWORD": "pw-w5"}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
            assert out.returncode == 2, out.stderr[-2000:]
            last = out.stderr.strip().splitlines()[-1]
            assert "refused account 'w5' a subscribe on $share/" in last, last
            assert "broker-setup.sh add-worker DIR w5" in last, last
        finally:
            b.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_worker_the_broker_would_not_deliver_activations_to_stops_with_the_fix(
    tiny_artefact,
) -> None:
    """Mosquitto grants the shared subscription of an account that may not read activations,
    then drops each message it is handed: such a worker would swallow offloads unanswered."""
    d = Path(tempfile.mkdtemp(prefix="isplitee-noread-"))
    d.chmod(0o755)
    try:
        conf = d / "conf"
        _setup("init", str(conf))
        _setup("add-worker", str(conf), "w7", password="pw-w7")
        acl = conf / "acl"
        acl.write_text(acl.read_text().replace("topic read isplitee/+/activation\n", ""))
        b = broker_from(conf / "mosquitto.conf", d).start()
        try:
            cmd = [sys.executable, "-m", "cloud_worker", "--broker", f"mqtts://127.0.0.1:{b.port}"]
            cmd += ["--worker-id", "w7", "--model", str(tiny_artefact), "--threads", "1"]
            env = {**os.environ, "ISPLITEE_USERNAME": "w7", "ISPLITEE_PASSWORD": "pw-w7"}
            env["ISPLITEE_CA_FILE"] = str(conf / "ca.crt")
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
            assert out.returncode == 2, out.stderr[-2000:]
            last = out.stderr.strip().splitlines()[-1]
            assert "does not deliver activations to account 'w7'" in last, last
            assert "topic read <prefix>/+/activation" in last
        finally:
            b.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- finding 6: a TLS failure names its cause ---------------------------------------------------


def _server_cert(conf: Path, out: Path, *, san: str, days: int) -> tuple[Path, Path]:
    """A server certificate signed by ``conf``'s CA, for ``san``, valid ``days`` from now."""
    key, csr, crt, ext = (str(out / n) for n in ("s.key", "s.csr", "s.crt", "san.ext"))
    out.mkdir(parents=True, exist_ok=True)
    ca, ca_key = str(conf / "ca.crt"), str(conf / "ca.key")
    Path(ext).write_text(f"subjectAltName={san}\n")
    for cmd in (
        f"openssl req -newkey rsa:2048 -nodes -subj /CN=broker -keyout {key} -out {csr}",
        f"openssl x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial"
        f" -days {days} -extfile {ext} -out {crt}",
    ):
        subprocess.run(cmd.split(), check=True, capture_output=True)
    Path(key).chmod(0o644)
    return Path(crt), Path(key)


@pytest.mark.parametrize(
    ("san", "days", "cause"),
    [
        ("DNS:broker.example", 30, "not valid for '127.0.0.1'"),
        ("DNS:localhost,IP:127.0.0.1", 0, "has expired"),
    ],
    ids=["hostname-mismatch", "expired"],
)
def test_tls_failures_name_their_cause(secure, san, days, cause) -> None:
    _, conf = secure
    work = Path(tempfile.mkdtemp(prefix="isplitee-tls-", dir=conf.parent))
    work.chmod(0o755)
    crt, key = _server_cert(conf, work, san=san, days=days)
    time.sleep(1.1 if days == 0 else 0)  # a certificate valid for 0 days has expired now
    other = broker_from(
        conf / "mosquitto.conf", work, overrides={"certfile": str(crt), "keyfile": str(key)}
    ).start()
    try:
        started = time.monotonic()
        link = _client(other.port, conf / "ca.crt", "app")
        with pytest.raises(MqttError, match=cause):
            link.start(20)
        assert time.monotonic() - started < 10  # a certificate problem does not wait it out
    finally:
        other.stop()


# -- finding 4: the broker config drops into Debian's layout ------------------------------------

DEBIAN_MAIN = Path("/etc/mosquitto/mosquitto.conf")  # from Debian's mosquitto package


def test_the_fragment_starts_beside_debians_stock_main_file(secure) -> None:
    """Debian's main file sets pid_file, persistence, persistence_location and log_dest and
    includes conf.d/: the fragment `init` writes must add to it, never repeat it."""
    _, conf = secure
    stock = DEBIAN_MAIN.read_text()  # CI installs Debian's mosquitto: no skip
    assert "persistence_location" in stock and "include_dir /etc/mosquitto/conf.d" in stock
    work = Path(tempfile.mkdtemp(prefix="isplitee-debian-", dir=conf.parent))
    work.chmod(0o777)  # Mosquitto, started as root, writes its pid and data as its own user
    (work / "conf.d").mkdir()
    (work / "data").mkdir(mode=0o777)
    (work / "data").chmod(0o777)
    # The stock file as it is, its paths moved into the test's directory.
    main = work / "mosquitto.conf"
    main.write_text(
        stock.replace("/run/mosquitto/mosquitto.pid", f"{work}/mosquitto.pid")
        .replace("/var/lib/mosquitto/", f"{work}/data/")
        .replace("/var/log/mosquitto/mosquitto.log", f"{work}/mosquitto.log")
        .replace("/etc/mosquitto/conf.d", f"{work}/conf.d")
    )
    port = free_port()
    fragment = (conf / "isplitee.conf").read_text()
    assert not re.search(r"^persistence_location", fragment, re.M)
    (work / "conf.d" / "isplitee.conf").write_text(
        fragment.replace("listener 8883", f"listener {port} 127.0.0.1")
    )
    b = Broker(port=port, config=main, log=work / "stderr.log").start()
    try:
        link = _client(port, conf / "ca.crt", "camA")
        link.start(10)
        try:  # TLS, the accounts and the ACL all came from the fragment
            assert link.publish_checked("isplitee/camA/status", b"online") is None
            assert link.publish_checked("isplitee/camB/status", b"online") == "Not authorized"
        finally:
            link.stop()
    finally:
        b.stop()
        shutil.rmtree(work, ignore_errors=True)


# -- finding 2: Home Assistant on the production broker -----------------------------------------


def test_home_assistant_sees_each_nodes_own_discovery_and_entities(secure) -> None:
    from device.discovery import discovery_messages, migration_messages
    from shared.protocol import Topics

    ha = _link(secure, "ha", topics=["homeassistant/#", "isplitee/+/result", "isplitee/+/state"])
    nodes = {name: _link(secure, name) for name in ("camA", "cam.c")}
    try:
        time.sleep(0.3)
        for name, link in nodes.items():
            for topic, body in discovery_messages(Topics(), name):
                assert link.publish_checked(topic, body, retain=True) is None, topic
            markers, old = migration_messages(name)  # the per-entity configs of before
            for topic, body in markers:
                assert link.publish_checked(topic, body) is None, topic
            for topic in old:
                assert link.publish_checked(topic, b"", retain=True) is None, topic
            # what the entities read, and Home Assistant's birth message
            for kind in ("state", "events", "snapshot"):
                assert link.publish_checked(f"isplitee/{name}/{kind}", b"{}") is None, kind
        # A node may not write another node's configs, nor HA's own birth topic.
        spoof = discovery_messages(Topics(), "camB")[0][0]
        assert nodes["camA"].publish_checked(spoof, b"{}", retain=True) == "Not authorized"
        assert nodes["camA"].publish_checked("homeassistant/status", b"online") == "Not authorized"
        assert ha.publish_checked("homeassistant/status", b"online") is None  # HA's birth
        assert ha.publish_checked("isplitee/camA/set/alpha", b"0.7") is None  # the number
        nodes["camA"].publish("isplitee/camA/result", b"{}")
        seen = _drain(ha, "isplitee/camA/result")
        assert "isplitee/camA/state" in seen and "isplitee/cam.c/state" in seen
        configs = {t for t in seen if t.endswith("/config")}
        migrated = {t for n in nodes for t in migration_messages(n)[1]}
        assert configs == {t for n in nodes for t, _ in discovery_messages(Topics(), n)} | migrated
    finally:
        for link in (ha, *nodes.values()):
            link.stop()
