"""Node config: defaults are the recommended setting; bad values name the key; examples current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from device.config import RECOMMENDED_ALPHA, DeviceConfig
from shared.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_device_defaults_are_the_recommended_setting() -> None:
    cfg = load_config(DeviceConfig, None, {"model": "m.pt", "device_id": "cam1"})
    assert cfg.alpha == RECOMMENDED_ALPHA != 0.5
    assert (cfg.policy, cfg.cost, cfg.encoding) == ("isplitee", "measured", "auto")


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"policy": "greedy"}, "policy: .*fixed:BLOCK"),
        ({"alpha": 1.5}, "alpha: .*less than or equal to 1"),
        ({"device_id": "a/b"}, "device_id: .*wildcards"),
        ({"broker": "http://x"}, "broker: .*mqtt://"),
        ({"encoding": "bf16"}, "encoding: .*fp32"),
    ],
)
def test_bad_values_name_the_key(flags: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(DeviceConfig, None, {"model": "m.pt", **flags})


def test_env_overrides_file_and_flags_override_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "device.toml"
    toml.write_text('model = "m.pt"\nalpha = 0.6\nfps = 3.0\ndevice_id = "filecam"\n')
    monkeypatch.setenv("ISPLITEE_ALPHA", "0.7")
    monkeypatch.setenv("ISPLITEE_DEVICE_ID", "envcam")
    cfg = load_config(DeviceConfig, toml, {"device_id": "flagcam"})
    assert (cfg.alpha, cfg.fps, cfg.device_id) == (0.7, 3.0, "flagcam")


def test_password_is_never_printed() -> None:
    cfg = load_config(DeviceConfig, None, {"model": "m.pt", "password": "hunter2"})
    assert "hunter2" not in repr(cfg) and "hunter2" not in cfg.model_dump_json()
    assert cfg.password_value() == "hunter2"


def test_example_configs_are_current_and_load() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "examples.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    cfg = load_config(DeviceConfig, ROOT / "deploy" / "device.example.toml", {})
    assert cfg.model == Path("/var/lib/isplitee/models/digits.isplitee")


@pytest.mark.parametrize("key", ["hold_s", "end_s", "state_min_interval_s", "link_mbps"])
def test_check_config_refuses_an_infinite_time_in_one_line_naming_the_key(
    tmp_path: Path, key: str
) -> None:
    """Before, inf passed --check-config and the node then refused it at start, unnamed."""
    toml = tmp_path / "device.toml"
    toml.write_text(f'model = "m.pt"\ndevice_id = "cam1"\n{key} = inf\n')
    out = subprocess.run(
        [sys.executable, "-m", "device", "--config", str(toml), "--check-config"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert f" {key}: " in line and "finite" in line and str(toml) in line


def test_event_labels_the_model_does_not_have_are_refused_at_start(tiny_artefact: Path) -> None:
    """Before, a binary sensor for a label the model never gives stayed off, silently."""
    from device.app import DeviceApp
    from shared.errors import EXIT_MISTAKE

    flags = {"model": str(tiny_artefact), "cost": "paper", "threads": 1}
    cfg = load_config(DeviceConfig, None, {**flags, "event_labels": "7,seven,eight"})
    with pytest.raises(ConfigError, match=r"^invalid configuration: event_labels: ") as e:
        DeviceApp(cfg)
    message = str(e.value)
    assert "'seven', 'eight' are not classes" in message and "'7'" not in message
    assert "its classes are 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in message and "\n" not in message
    assert e.value.exit_code == EXIT_MISTAKE
    DeviceApp(load_config(DeviceConfig, None, {**flags, "event_labels": "7"}))  # a class: fine
