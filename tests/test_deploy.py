"""deploy/: the Pi installer (dry run and a fake root) and the systemd units."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "deploy" / "pi" / "install.sh"
UNITS = ROOT / "deploy" / "systemd"


def _install(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_dry_run_prints_every_step_and_changes_nothing(tiny_artefact) -> None:
    out = _install("--dry-run", "--device-id", "camdry", "--model", str(tiny_artefact))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for step in (
        "apt-get install -y -qq --no-install-recommends python3-venv python3-picamera2",
        "python3 -m venv --system-site-packages /opt/isplitee/venv",
        "/opt/isplitee/venv/bin/python -m pip install",
        "install -m 0644 " + str(tiny_artefact) + " /var/lib/isplitee/models/tiny.isplitee",
        "/etc/isplitee/device-camdry.toml",
        "systemctl enable --now isplitee-device@camdry",
    ):
        assert step in text, step
    assert not Path("/etc/isplitee/device-camdry.toml").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--device-id is required"),
        (["--device-id", "a/b", "--model", "x"], "--device-id may hold"),
        (["--device-id", "cam1"], "--model is required"),
        (["--device-id", "cam1", "--model", "/nope.isplitee"], "/nope.isplitee: no such file"),
    ],
)
def test_bad_arguments_say_what_to_fix(args: list[str], message: str) -> None:
    out = _install("--dry-run", *args)
    assert out.returncode == 2 and message in out.stderr


def test_a_checkpoint_is_refused_with_the_export_command(tiny_checkpoint) -> None:
    """The [device] install has no torch: a .pt would fail at start, so the installer says
    which file to give instead."""
    out = _install("--dry-run", "--device-id", "cam1", "--model", str(tiny_checkpoint))
    assert out.returncode == 2
    assert f"isplitee export {tiny_checkpoint}" in out.stderr and "tiny.isplitee" in out.stderr


def test_help_is_the_header_and_nothing_else() -> None:
    out = _install("--help")
    assert out.returncode == 0 and "set -euo" not in out.stdout
    assert out.stdout.startswith("Install an isplitee camera node")


def test_fake_root_install_is_complete_and_idempotent(tiny_artefact, tmp_path) -> None:
    from device.config import DeviceConfig
    from shared.config import load_config

    root = tmp_path / "root"
    args = ["--prefix", str(root), "--device-id", "cam1", "--model", str(tiny_artefact)]
    args += ["--broker", "mqtt://broker.lan:1883"]
    # --no-deps: the packages themselves are tested elsewhere; this checks where things land.
    first = _install(*args, env={"PIP_ARGS": "--no-deps"})
    assert first.returncode == 0, first.stderr
    venv = root / "opt" / "isplitee" / "venv"
    assert (venv / "bin" / "isplitee-device").exists()
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    installed = root / "var/lib/isplitee/models/tiny.isplitee"
    assert installed.read_bytes() == tiny_artefact.read_bytes()
    unit = root / "etc/systemd/system/isplitee-device@.service"
    assert unit.read_text() == (UNITS / "isplitee-device@.service").read_text()
    conf = root / "etc/isplitee/device-cam1.toml"
    cfg = load_config(DeviceConfig, conf, {})
    assert str(cfg.model) == "/var/lib/isplitee/models/tiny.isplitee"
    assert cfg.broker == "mqtt://broker.lan:1883"
    conf.write_text(conf.read_text() + "alpha = 0.7\n")  # the user's edit
    second = _install(*args, env={"PIP_ARGS": "--no-deps"})
    assert second.returncode == 0, second.stderr
    assert "keeping the existing" in second.stdout
    assert load_config(DeviceConfig, conf, {}).alpha == 0.7


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("unit", ["isplitee-device@.service", "isplitee-cloud@.service"])
def test_systemd_units_verify(unit: str, tmp_path) -> None:
    # verify checks that ExecStart exists: point it at a real executable of the same name.
    fake = tmp_path / "venv" / "bin"
    fake.mkdir(parents=True)
    for name in ("isplitee-device", "isplitee-cloud"):
        (fake / name).write_text("#!/bin/sh\n")
        (fake / name).chmod(0o755)
    text = (UNITS / unit).read_text().replace("/opt/isplitee/venv", str(tmp_path / "venv"))
    instance = tmp_path / unit.replace("@.", "@cam1.")
    instance.write_text(text)
    out = subprocess.run(
        ["systemd-analyze", "verify", str(instance)], capture_output=True, text=True
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    for key in ("NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure"):
        assert key in text


def test_grafana_dashboard_queries_only_metrics_we_export(tiny_checkpoint) -> None:
    """Every metric the dashboard plots is one a real worker or node serves."""
    import json
    import re

    from cloud_worker.metrics import WorkerMetrics
    from device.metrics import NodeMetrics

    worker = WorkerMetrics("w")
    worker.error("decode")
    stats = {
        "device_id": "cam",
        "frames": 1,
        "results": {"edge": 1, "cloud": 0, "fallback": 0},
        "bytes_sent": 0,
        "dropped": 0,
        "late_replies": 0,
        "errors": {"timeout": 1},
        "pending": 0,
        "split": 3,
        "arms": [{"block": 3, "count": 1.0, "mean_reward": 0.5}],
    }
    exported = (worker.render() + NodeMetrics(lambda: stats).render()).decode()
    names = set(re.findall(r"^(isplitee_\w+?)(?:\{| )", exported, re.M))
    dash = json.loads((ROOT / "deploy" / "grafana" / "isplitee.json").read_text())
    used = {
        m
        for panel in dash["panels"]
        for target in panel["targets"]
        for m in re.findall(r"isplitee_\w+", target["expr"])
    }
    assert used and used <= names, used - names
