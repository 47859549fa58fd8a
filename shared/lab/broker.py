"""A private Mosquitto for the tests, the demo and the benchmarks, from ``broker_config/``.

It runs on a free loopback port with the project's own config (only the ``listener`` line is
rewritten), so nothing else on the machine is touched and several can run at once. It is
stopped by its pid, never by name. A free port can be taken between the moment it is found and
Mosquitto's bind (another client's outgoing connection gets it: a benchmark starting nine
brokers and their clients at once saw it): a broker that exits before it listens is started
again on another free port, unless its port was given.
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


def wait_for_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """Until something listens on ``port``; ``proc``: the process meant to, which must not exit
    meanwhile (:class:`BrokerExited`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerExited(f"exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class BrokerExited(RuntimeError):
    """The broker's process ended before it listened."""


@dataclass
class Broker:
    """A Mosquitto process on a loopback port; stopped (or killed) by its pid. ``movable``:
    the port was only found free, and another one will do if it is taken."""

    port: int
    config: Path
    log: Path
    proc: subprocess.Popen | None = None
    movable: bool = False

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, attempts: int = 3) -> Broker:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed: run `make install`")
        for attempt in range(1, attempts + 1):
            with open(self.log, "ab") as log:  # the process has its own copy
                self.proc = subprocess.Popen(
                    [binary, "-c", str(self.config)], stdout=log, stderr=log
                )
            try:
                wait_for_port(self.port, proc=self.proc)
                return self
            except BrokerExited as exc:
                said = " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-3:])
                if not self.movable or attempt == attempts:
                    raise BrokerExited(f"mosquitto {exc} ({self.log}: {said})") from None
                self._move(free_port())
        raise AssertionError("unreachable")

    def _move(self, port: int) -> None:
        """Listen on ``port`` instead (the config's listener line rewritten)."""
        lines = self.config.read_text().splitlines()
        lines = [f"listener {port} 127.0.0.1" if ln.startswith("listener ") else ln for ln in lines]
        self.config.write_text("\n".join(lines) + "\n")
        self.port = port

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
    movable = port is None
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
    return Broker(port, config, workdir / f"mosquitto-{port}.log", movable=movable)
