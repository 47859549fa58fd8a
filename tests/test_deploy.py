"""deploy/: the Pi installer (dry run and a fake root) and the systemd units."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "deploy" / "pi" / "install.sh"
SERVER = ROOT / "deploy" / "server" / "install.sh"
UNITS = ROOT / "deploy" / "systemd"


def _install(
    *args: str, env: dict | None = None, script: Path = INSTALL
) -> subprocess.CompletedProcess:
    """The installer, with pip told not to byte-compile what it installs (onnxruntime brings
    sympy's 1,500 modules): a fake root is inspected, never run, and the suite stays fast."""
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_ARGS": "--no-compile", **(env or {})},
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
    (tmp_path / "pw").write_text('se"cr\\et\n')
    subprocess.run(["bash", str(ROOT / "deploy" / "broker-setup.sh"), "init", str(tmp_path / "b")],
                   check=True, capture_output=True)  # fmt: skip
    shutil.copy(tmp_path / "b" / "ca.crt", tmp_path / "ca.crt")
    mine = tmp_path / "mine.toml"
    mine.write_text('source = "picamera2"')  # finding 7: no newline at the end
    args = ["--prefix", str(root), "--device-id", "cam1", "--model", str(tiny_artefact)]
    args += ["--broker", "mqtts://broker.lan:8883", "--config", str(mine), "--username", "cam1"]
    args += ["--password-file", str(tmp_path / "pw"), "--ca-file", str(tmp_path / "ca.crt")]
    first = _install(*args)
    assert first.returncode == 0, first.stderr
    assert "checking the config with isplitee-device --check-config" in first.stdout
    system = subprocess.run(  # the python3 that made the venv: its numpy is "the system's"
        ["python3", "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    assert f"keeping the system's numpy {system}" in first.stdout  # finding 3
    venv = root / "opt" / "isplitee" / "venv"
    assert (venv / "bin" / "isplitee-device").exists()
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    installed = root / "var/lib/isplitee/models/tiny.isplitee"
    assert installed.read_bytes() == tiny_artefact.read_bytes()
    unit = root / "etc/systemd/system/isplitee-device@.service"
    assert unit.read_text() == (UNITS / "isplitee-device@.service").read_text()
    conf = root / "etc/isplitee/device-cam1.toml"
    cfg = load_config(DeviceConfig, conf, {})
    assert cfg.source == "picamera2" and cfg.username == "cam1" and cfg.password is None
    assert str(cfg.model) == "/var/lib/isplitee/models/tiny.isplitee"
    assert cfg.broker == "mqtts://broker.lan:8883"
    assert str(cfg.ca_file) == "/etc/isplitee/ca-cam1.crt"
    assert (root / "etc/isplitee/ca-cam1.crt").read_bytes() == (tmp_path / "ca.crt").read_bytes()
    env = root / "etc/isplitee/cam1.env"
    assert env.stat().st_mode & 0o777 == 0o600
    assert env.read_text() == 'ISPLITEE_PASSWORD="se\\"cr\\\\et"\n'
    conf.write_text(conf.read_text() + "alpha = 0.7\n")  # the user's edit
    second = _install(*args[:6])
    assert second.returncode == 0, second.stderr
    assert "keeping the existing" in second.stdout
    assert load_config(DeviceConfig, conf, {}).alpha == 0.7
    newer = tmp_path / "newer.toml"
    newer.write_text('source = "0"\n')  # a new --config: what the earlier flags set stays
    third = _install(*args[:6], "--config", str(newer))
    assert third.returncode == 0, third.stderr
    cfg = load_config(DeviceConfig, conf, {})
    assert cfg.source == "0" and cfg.broker == "mqtts://broker.lan:8883" and cfg.username == "cam1"
    assert (conf.parent / "device-cam1.toml.bak").exists()


def test_a_ca_file_that_is_no_certificate_is_refused(tiny_artefact, tmp_path) -> None:
    (tmp_path / "cam1.pw").write_text("secret\n")
    out = _install("--dry-run", "--device-id", "cam1", "--model", str(tiny_artefact),
                   "--ca-file", str(tmp_path / "cam1.pw"))  # fmt: skip
    assert out.returncode == 2 and "is not a PEM certificate" in out.stderr
    subprocess.run(["bash", str(ROOT / "deploy" / "broker-setup.sh"), "init", str(tmp_path / "b")],
                   check=True, capture_output=True)  # fmt: skip
    der = tmp_path / "ca.der"  # the programs read PEM only: DER must not get past the installer
    subprocess.run(["openssl", "x509", "-in", str(tmp_path / "b" / "ca.crt"), "-outform", "DER",
                    "-out", str(der)], check=True)  # fmt: skip
    out = _install("--dry-run", "--device-id", "cam1", "--model", str(tiny_artefact),
                   "--ca-file", str(der))  # fmt: skip
    assert out.returncode == 2 and "is not a PEM certificate" in out.stderr
    out = _install("--dry-run", "--device-id", "cam1", "--model")
    assert out.returncode == 2 and "install.sh: --model needs a value" in out.stderr


def test_a_config_the_node_refuses_is_never_installed(tiny_artefact, tmp_path) -> None:
    root = tmp_path / "root"
    bad = tmp_path / "bad.toml"
    bad.write_text('source = "picamera2"\nalpah = 0.7\n')
    out = _install("--prefix", str(root), "--device-id", "cam1", "--model", str(tiny_artefact),
                   "--config", str(bad))  # fmt: skip
    assert out.returncode == 2
    assert f"the config from {bad} (with the flags given) is refused; the model, config" in (
        out.stderr
    )
    assert f"({bad}, ISPLITEE_* environment, flags): alpah: unknown key" in out.stderr
    assert "/tmp/tmp" not in out.stderr  # the user's file is named, not the installer's copy
    assert not (root / "etc/isplitee/device-cam1.toml").exists()
    assert not (root / "var/lib/isplitee/models/tiny.isplitee").exists()
    assert not (root / "etc/systemd/system/isplitee-device@.service").exists()


def test_server_fake_root_install(tiny_artefact, tmp_path) -> None:
    from cloud_worker.config import WorkerConfig
    from shared.config import load_config

    root = tmp_path / "root"
    (tmp_path / "pw").write_text("pw-w1\n")
    args = ["--prefix", str(root), "--worker-id", "w1", "--model", str(tiny_artefact)]
    args += ["--broker", "mqtts://broker.lan:8883", "--username", "w1"]
    args += ["--password-file", str(tmp_path / "pw")]
    out = _install(*args, script=SERVER)
    assert out.returncode == 0, out.stderr
    cfg = load_config(WorkerConfig, root / "etc/isplitee/cloud-w1.toml", {})
    assert [str(m) for m in cfg.models] == ["/var/lib/isplitee/models/tiny.isplitee"]
    assert cfg.broker == "mqtts://broker.lan:8883" and cfg.username == "w1"
    assert (root / "etc/isplitee/w1.env").read_text() == 'ISPLITEE_PASSWORD="pw-w1"\n'
    assert (root / "opt/isplitee/venv/bin/isplitee-cloud").exists()
    unit = root / "etc/systemd/system/isplitee-cloud@.service"
    assert unit.read_text() == (UNITS / "isplitee-cloud@.service").read_text()
    dry = _install("--dry-run", "--worker-id", "w2", "--model", str(tiny_artefact), script=SERVER)
    assert dry.returncode == 0, dry.stderr
    for step in ("python3 -m venv /opt/isplitee/venv", "systemctl enable --now isplitee-cloud@w2"):
        assert step in dry.stdout, step


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
    assert "EnvironmentFile=-/etc/isplitee/%i.env" in text  # the password, out of the config


def test_grafana_dashboard_queries_only_metrics_we_export(tiny_checkpoint) -> None:
    """Every metric the dashboard plots is one a real worker or node serves."""
    import json
    import re

    from cloud_worker.metrics import WorkerMetrics
    from device.metrics import NodeMetrics

    worker = WorkerMetrics("w")
    worker.error("decode")
    worker.count_refusals(lambda: {"reply": 1})
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
        "publish_refused": {"result": 2},
    }
    exported = (worker.render() + NodeMetrics(lambda: stats).render()).decode()
    names = set(re.findall(r"^(isplitee_\w+?)(?:\{| )", exported, re.M))
    assert 'isplitee_node_publish_refused_total{device="cam",kind="result"} 2.0' in exported
    dash = json.loads((ROOT / "deploy" / "grafana" / "isplitee.json").read_text())
    used = {
        m
        for panel in dash["panels"]
        for target in panel["targets"]
        for m in re.findall(r"isplitee_\w+", target["expr"])
    }
    assert used and used <= names, used - names
