"""The node's start-up link probes, through a real Mosquitto behind a shaped uplink: each
arm's round trip is timed alone, so none is priced at the queue of the others."""

from __future__ import annotations

import threading

from device.app import DeviceApp
from device.config import DeviceConfig
from shared.config import load_config
from shared.lab.clips import write_digit_clip
from shared.lab.shaper import LinkProfile, LinkShaper

UP_MBIT, DELAY_MS = 0.05, 20.0


def test_start_up_probes_time_each_arm_alone_not_behind_the_others(
    broker, tiny_artefact, tmp_path
) -> None:
    """Sent together, the probes queue on a slow uplink and the last ones are priced at the
    queue: the frame's would cost what every activation's upload costs. Timed one at a time,
    each arm's round trip is its own bytes at the link's rate plus the delay."""
    clip = write_digit_clip(tmp_path / "clip.avi", 2, schedule=("clean",))
    with LinkShaper(broker.port, LinkProfile(up_mbit=UP_MBIT, delay_ms=DELAY_MS)) as link:
        flags = {
            "broker": link.url,
            "model": str(tiny_artefact),
            "source": str(clip.path),
            "device_id": "probes",
            "threads": 1,
            "max_frames": 1,  # the start-up measurement, and one frame
        }
        app = DeviceApp(load_config(DeviceConfig, None, flags))
        app.run(threading.Event())
    costs = app.costs
    assert costs is not None
    sizes = {arm: app.probe_bytes(arm) for arm in range(len(app.arms) - 1)}
    queue_s = sum(sizes.values()) * 8 / (UP_MBIT * 1e6)
    assert queue_s > 0.3, "the test's link should be slow enough for probes to queue"
    for arm, size in sizes.items():
        alone_s = size * 8 / (UP_MBIT * 1e6) + 2 * DELAY_MS / 1e3
        assert costs.offload_seconds(arm) < alone_s + 0.1, (app.arms[arm], size, alone_s)
