"""Shared fixtures: one tiny real model trained on real data (scikit-learn's digits) per run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

TINY_TRAIN_ARGS = [
    "train",
    "--dataset",
    "digits",
    "--input-size",
    "32",
    "--width",
    "0.35",
    "--epochs",
    "2",
    "--limit",
    "400",
    "--seed",
    "3",
    # Threads fixed: a reduction's order, so the weights, depend on them, and other tests set
    # torch's thread count for themselves.
    "--threads",
    "2",
    "--no-progress",
    # The quick recipe: a test model needs to be real, not good (distorted calibration
    # would cost a minute per run).
    "--augment",
    "0",
    "--calibrate-on",
    "clean",
]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches (exported ONNX edge halves, confidence tables) go to the run's temporary tree,
    for this process and the nodes it starts, not to the user's home."""
    import os

    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (if barely trained) digits checkpoint, made through the CLI like a user would:
    once per run, shared by pytest-xdist's workers (the first trains it, the others wait)."""
    import os

    from filelock import FileLock

    from shared.lab.cli import main

    base = tmp_path_factory.getbasetemp()
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # unset: a plain pytest run
    root = base.parent if worker else base  # one tree for the whole run
    out = root / "models" / "tiny.pt"
    with FileLock(str(root / "models.lock")):
        if not out.is_file():
            assert main([*TINY_TRAIN_ARGS, "--out", str(out)]) == 0
    return out


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, whatever the machine has: name lookups fail as they do without internet."""
    import socket

    def refuse(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (offline test)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory):
    """Mosquitto with broker_config/mosquitto.conf on a free loopback port, for the session.

    CI installs Mosquitto (`make install`), so a missing binary is an error, never a skip.
    """
    from shared.lab.broker import DEV_CONFIG, broker_from

    b = broker_from(DEV_CONFIG, tmp_path_factory.mktemp("broker")).start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def tiny_artefact(tiny_checkpoint: Path) -> Path:
    """The deploy artefact ``isplitee train`` wrote beside the tiny checkpoint."""
    from shared.artefact import SUFFIX

    path = tiny_checkpoint.with_suffix(SUFFIX)
    assert path.is_file(), "isplitee train should write the artefact beside the checkpoint"
    return path
