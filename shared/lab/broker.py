"""A private Mosquitto for the tests, the demo and the benchmarks, from ``broker_config/``.

It runs on a free loopback port with the project's own config (only the ``listener`` line is
rewritten), so nothing else on the machine is touched and several can run at once. It is
stopped by its pid, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV_CONFIG = ROOT / "broker_config" / "mosquitto.conf"


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Broker:
    """A Mosquitto process on a loopback port; stopped (or killed) by its pid."""

    port: int
    config: Path
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed: run `make install`")
        log = open(self.log, "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen([binary, "-c", str(self.config)], stdout=log, stderr=log)
        wait_for_port(self.port)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)
        self.proc = None


def broker_from(
    template: Path,
    workdir: Path,
    port: int | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Broker:
    """A broker whose config is ``template`` with its listener moved to a free loopback port
    (or ``port``: a broker restarted where its clients expect it) and each key of
    ``overrides`` set to its value (e.g. ``{"persistence": "true"}``)."""
    port = port or free_port()
    todo = dict(overrides or {})
    lines = []
    for line in template.read_text().splitlines():
        key = line.strip().split(" ", 1)[0]
        if key == "listener":
            line = f"listener {port} 127.0.0.1"
        elif key in todo:
            line = f"{key} {todo.pop(key)}"
        lines.append(line)
    lines += [f"{key} {value}" for key, value in todo.items()]
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"mosquitto-{port}.conf"
    config.write_text("\n".join(lines) + "\n")
    return Broker(port=port, config=config, log=workdir / f"mosquitto-{port}.log")
