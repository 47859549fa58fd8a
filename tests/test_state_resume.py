"""A state saved after any runtime setting restores on restart (issue 20, finding 10).

Before, ``set/alpha 0.7`` followed by a restart called the saved state invalid (it was learnt at
0.7, the configuration says 0.8), moved it aside and advised deleting it: everything learnt was
lost. Now the state file carries the runtime settings, and a restart resumes them unless the
configuration has changed that key since.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from device.app import DeviceApp
from device.config import DeviceConfig
from device.settings import parse_setting
from shared.config import load_config

CHANGES = {  # key -> a payload differing from the default configuration
    "alpha": b"0.7",
    "mu": b"0.5",
    "policy": b"isplitee-paper",
    "encoding": b"int8",
    "reset": b"",
}


def _app(model, state, **over) -> DeviceApp:
    flags = {"model": str(model), "state": str(state), "cost": "paper", "threads": 1, **over}
    return DeviceApp(load_config(DeviceConfig, None, flags))


def _learn(app: DeviceApp, frames: int = 12) -> None:
    """Frames through the node as the camera loop feeds them (offloads stay pending: no
    broker here; what is observed on the node is learnt)."""
    rng = np.random.default_rng(0)
    for i in range(frames):
        app.node.process(i, rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), 0.0)


@pytest.mark.parametrize("key", list(CHANGES))
def test_a_state_saved_after_each_runtime_setting_restores(tiny_artefact, tmp_path, key, caplog):
    state = tmp_path / "cam.json"
    first = _app(tiny_artefact, state)
    _learn(first)
    setting = parse_setting(key, CHANGES[key], blocks=first.ckpt.meta.arm_blocks)
    first.node.apply(setting)
    _learn(first)
    first.save_state()
    rounds, effective = first.node.policy.rounds, first.node.settings()
    assert rounds > 0
    caplog.clear()
    again = _app(tiny_artefact, state)
    assert not list(tmp_path.glob("cam.json.bad-*")), "the state was called invalid"
    assert again.node.policy.rounds == rounds, caplog.text
    for k in ("alpha", "mu", "policy", "encoding"):
        assert again.node.settings()[k] == effective[k], k


def test_a_key_changed_in_the_configuration_since_wins(tiny_artefact, tmp_path, caplog) -> None:
    state = tmp_path / "cam.json"
    first = _app(tiny_artefact, state)
    _learn(first)
    first.node.apply(parse_setting("alpha", b"0.7", blocks=first.ckpt.meta.arm_blocks))
    first.save_state()
    edited = _app(tiny_artefact, state, alpha=0.9)  # the user edited device.toml since
    assert edited.node.settings()["alpha"] == 0.9
    assert edited.node.policy.rounds == 0 and "starting afresh" in caplog.text
    assert not list(tmp_path.glob("cam.json.bad-*"))  # not damage: nothing moved aside
    body = json.loads(state.read_text())
    assert body["settings"]["alpha"] == 0.7 and body["configured"]["alpha"] == 0.8


def test_a_state_from_a_node_without_frame_offload_restores_with_the_frame_arm(
    tiny_artefact, tmp_path, caplog
) -> None:
    """This release adds the frame arm (block 0) under measured costs: a node's state saved
    before it restores with the arm added in front, never tried, and nothing else lost."""
    state = tmp_path / "cam.json"
    first = _app(tiny_artefact, state, cost="measured", frame_offload=False)
    _learn(first)
    first.save_state()
    saved = json.loads(state.read_text())
    assert saved["blocks"] == list(first.ckpt.meta.arm_blocks)
    counts = [a["count"] for a in first.node.policy.arm_stats()]
    caplog.clear()
    with caplog.at_level("INFO"):
        again = _app(tiny_artefact, state, cost="measured")
    assert again.arms == (0, *first.ckpt.meta.arm_blocks)
    assert again.node.policy.rounds == first.node.policy.rounds, caplog.text
    assert [a["count"] for a in again.node.policy.arm_stats()] == [0, *counts]
    assert "frame arm (block 0) added" in caplog.text
    _learn(again)  # it decides and learns on with the new arm
    again.save_state()
    assert json.loads(state.read_text())["blocks"] == [0, *saved["blocks"]]
