"""Runtime settings over MQTT and Home Assistant discovery: the pure parts, then a live node."""

from __future__ import annotations

import json
import queue
import re
import threading
import time

import pytest

from device.discovery import (
    DeviceDiscovery,
    discovery_messages,
    legacy_topics,
    migration_messages,
)
from device.settings import SettingError, parse_setting
from device.stats_fields import STATS_FIELDS
from shared.protocol import Topics

BLOCKS = (3, 6, 9, 12, 15, 18, 19)


@pytest.mark.parametrize(
    ("key", "payload", "value"),
    [
        ("alpha", b"0.7", 0.7),
        ("alpha", b" 1 ", 1.0),
        ("mu", b"0.25", 0.25),
        ("policy", b"fixed:6", "fixed:6"),
        ("policy", b'"isplitee-nonstationary"', "isplitee-nonstationary"),
        ("encoding", b"int8", "int8"),
        ("reset", b"", True),
    ],
)
def test_valid_settings(key: str, payload: bytes, value) -> None:
    s = parse_setting(key, payload, blocks=BLOCKS)
    assert (s.key, s.value) == (key, value)


@pytest.mark.parametrize(
    ("key", "payload", "match"),
    [
        ("alpha", b"abc", r"alpha should be a number, got 'abc'"),
        ("alpha", b"1.5", r"alpha should be in \[0, 1\]"),
        ("alpha", b"nan", "alpha should be a finite number"),
        ("mu", b"-1", "mu should be >= 0"),
        ("policy", b"fixed:7", r"BLOCK should be one of the model's exits \[3, 6, 9, 12, 15, 18\]"),
        ("policy", b"fixed:19", "BLOCK should be one of the model's exits"),
        ("policy", b"greedy", "policy should be one of isplitee"),
        ("encoding", b"bf16", "encoding should be one of auto, fp32, fp16, int8, int4"),
        ("alpha", b"\xff\xfe", "UTF-8"),
        ("colour", b"red", "unknown setting 'colour'"),
    ],
)
def test_bad_settings_name_the_key_and_the_fix(key: str, payload: bytes, match: str) -> None:
    with pytest.raises(SettingError, match=match):
        parse_setting(key, payload, blocks=BLOCKS)


def test_discovery_is_one_device_config_bound_to_the_status_topic() -> None:
    msgs = discovery_messages(Topics("isplitee"), "cam.1", model_hash="ab" * 32)
    assert [t for t, _ in msgs] == ["homeassistant/device/isplitee_cam_1/config"]
    config = DeviceDiscovery.model_validate_json(msgs[0][1])  # the documented schema
    assert config.availability_topic == "isplitee/cam.1/status"
    assert config.origin.name == "isplitee" and config.device.identifiers == ["isplitee_cam_1"]
    ids = [c.unique_id for c in config.components.values()]
    assert len(set(ids)) == len(ids) and "isplitee_cam_1_label" in ids  # as before: migrated
    assert config.components["alpha"].command_topic == "isplitee/cam.1/set/alpha"


def test_no_discovered_entity_reads_the_per_frame_result_topic() -> None:
    """Feature: the recorder gets a row per state change, not per frame (issue 22)."""
    body = discovery_messages(Topics(), "cam1", snapshot=True, event_labels=("person", 'a"b'))
    c = DeviceDiscovery.model_validate_json(body[0][1]).components
    assert c["label"].state_topic == c["label"].json_attributes_topic == "isplitee/cam1/state"
    assert c["confidence"].state_topic == "isplitee/cam1/state"
    assert (c["snapshot"].platform, c["snapshot"].image_topic) == (
        "image",
        "isplitee/cam1/snapshot",
    )
    assert c["event_person"].platform == "binary_sensor"
    assert c["event_person"].state_topic == "isplitee/cam1/state"
    assert "isplitee/cam1/result" not in body[0][1]
    (quoted,) = [k for k in c if k.startswith("event_a_b_")]  # an id of the name, made safe
    assert '"a\\"b"' in c[quoted].value_template
    off = discovery_messages(Topics(), "cam1", snapshot=False)
    assert "snapshot" not in DeviceDiscovery.model_validate_json(off[0][1]).components


def test_event_labels_that_read_alike_as_ids_get_a_binary_sensor_each() -> None:
    """Before, "a b" and "a_b" were both `event_a_b`: one sensor overwrote the other."""
    labels = ("a b", "a_b", "a/b", "person")
    body = discovery_messages(Topics(), "cam1", event_labels=labels)
    c = DeviceDiscovery.model_validate_json(body[0][1]).components
    sensors = {k: v for k, v in c.items() if v.platform == "binary_sensor"}
    assert len(sensors) == len({v.unique_id for v in sensors.values()}) == len(labels)
    assert {"event_a_b", "event_person"} < set(sensors)  # a name already safe keeps its id
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", k) for k in sensors)


def test_migration_marks_the_per_entity_configs_of_earlier_releases() -> None:
    markers, cleared = migration_messages("cam.1")
    assert cleared == legacy_topics("cam.1")
    assert "homeassistant/sensor/isplitee_cam_1/label/config" in cleared
    assert "homeassistant/number/isplitee_cam_1/alpha/config" in cleared
    assert {json.loads(body)["migrate_discovery"] for _, body in markers} == {True}


class _Watcher:
    """A subscriber that keeps the newest message per topic."""

    def __init__(self, url: str, topics: list[str]) -> None:
        from shared.mqtt import MqttLink

        self.link = MqttLink(url, f"watch-{time.monotonic_ns()}", subscriptions=topics)
        self.link.start(10)
        self.latest: dict[str, bytes] = {}
        self.all: list[tuple[str, bytes]] = []

    def wait(self, predicate, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                m = self.link.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            self.latest[m.topic] = m.payload
            self.all.append((m.topic, m.payload))
            got = predicate(m.topic, m.payload)
            if got:
                return got
        raise AssertionError("timed out waiting for a message")

    def close(self) -> None:
        self.link.stop()


def test_settings_over_mqtt_apply_live_and_bad_ones_are_refused(
    broker, tiny_checkpoint, tmp_path
) -> None:
    from device.app import DeviceApp
    from device.config import DeviceConfig
    from shared.config import load_config
    from shared.lab.clips import write_digit_clip
    from shared.mqtt import MqttLink

    from .pipeline_helpers import WorkerPool

    clip = write_digit_clip(tmp_path / "clip.avi", 400)
    pool = WorkerPool(broker.url, [tiny_checkpoint])
    pool.start("w-set")
    watch = _Watcher(broker.url, ["isplitee/camset/#", "homeassistant/#"])
    cfg = load_config(
        DeviceConfig,
        None,
        {
            "broker": broker.url,
            "model": tiny_checkpoint,
            "source": str(clip.path),
            "device_id": "camset",
            "fps": 40,
            "cost": "paper",
            "ha_discovery": True,
            "stats_interval_s": 0.5,
            "metrics_port": 0,
        },
    )
    try:
        app = DeviceApp(cfg)
    except BaseException:
        pool.close()  # a worker left running would take a share of later tests' messages
        watch.close()
        raise
    stop = threading.Event()
    runner = threading.Thread(target=app.run, args=(stop,), daemon=True)
    runner.start()
    ctl = MqttLink(broker.url, "ctl", subscriptions=[])
    ctl.start(10)

    def config_is(key, value):
        return lambda t, p: t == "isplitee/camset/config" and json.loads(p)[key] == value

    try:
        watch.wait(config_is("alpha", 0.8))
        ha = {t for t, _ in watch.all if t.startswith("homeassistant/device/")}
        if not ha:
            watch.wait(lambda t, p: t.startswith("homeassistant/device/"))
        ctl.publish("isplitee/camset/set/alpha", b"0.5")
        watch.wait(config_is("alpha", 0.5))
        ctl.publish("isplitee/camset/set/alpha", b"abc")
        refused = watch.wait(
            lambda t, p: (
                t == "isplitee/camset/stats" and json.loads(p)["settings_error"] and json.loads(p)
            )
        )
        assert "alpha should be a number" in refused["settings_error"]
        assert refused["settings_refused"] == 1
        # Finding 11: the reason goes out once; the next periodic stats carry null, the count.
        later_stats = watch.wait(
            lambda t, p: (
                t == "isplitee/camset/stats"
                and json.loads(p)["uptime_s"] > refused["uptime_s"]
                and json.loads(p)
            )
        )
        assert later_stats["settings_error"] is None and later_stats["settings_refused"] == 1
        assert set(later_stats) == set(STATS_FIELDS)  # docs/protocol.md lists every key
        ctl.publish("isplitee/camset/set/policy", b"fixed:6")
        watch.wait(config_is("policy", "fixed:6"))
        # Every frame decided after the echo splits at block 6.
        sixes = watch.wait(
            lambda t, p: (
                t == "isplitee/camset/result"
                and json.loads(p)["split_block"] == 6
                and json.loads(p)
            )
        )
        later = []
        watch.wait(
            lambda t, p: (
                t == "isplitee/camset/result"
                and json.loads(p)["frame_id"] > sixes["frame_id"] + 2
                and (later.append(json.loads(p)["split_block"]) or len(later) >= 10)
            )
        )
        assert set(later) == {6}
        ctl.publish("isplitee/camset/set/encoding", b"int8")
        watch.wait(config_is("encoding", "int8"))
        ctl.publish("isplitee/camset/set/mu", b"0.5")
        watch.wait(config_is("mu", 0.5))
        assert runner.is_alive(), "the node stopped"
        import urllib.request

        base = f"http://127.0.0.1:{app._metrics.port}"
        scrape = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert 'isplitee_node_frames_total{device="camset"}' in scrape
        assert 'isplitee_node_results_total{device="camset",source="edge"}' in scrape
        assert 'isplitee_node_snapshot_bytes_total{device="camset"}' in scrape
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
    finally:
        stop.set()
        runner.join(30)
        ctl.stop()
        watch.close()
        pool.close()
    assert not runner.is_alive()
    topics = {t for t, _ in watch.all}
    assert "homeassistant/device/isplitee_camset/config" in topics
