"""Every key documented in docs/configuration.md works as its ISPLITEE_* variable, in the
documented form, and every bad value is one line naming the key (issue 20, finding 5).

The walk covers every field of both programs' settings (the reference is generated from them):
a key added without a good and a bad value here fails the test, so none goes unchecked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from pydantic import SecretStr

from cloud_worker.config import WorkerConfig
from device.config import DeviceConfig
from shared.config import ENV_PREFIX, ConfigError, load_config

REQUIRED = {DeviceConfig: {"model": "m.isplitee"}, WorkerConfig: {"models": ["m.isplitee"]}}

# key -> (a good value as the environment spells it, what it parses to, a bad value or None
# when any text is valid). Keys not here get one from their type below.
BY_KEY: dict[str, tuple[str, object, str | None]] = {
    "broker": ("mqtts://broker.lan:8883", "mqtts://broker.lan:8883", "ftp://x"),
    "prefix": ("site1", "site1", "a/b"),
    "username": ("cam1", "cam1", None),
    "password": ("s3cret", "s3cret", None),
    "metrics_host": ("127.0.0.1", "127.0.0.1", None),
    "model": (
        "/var/lib/isplitee/models/m.isplitee",
        Path("/var/lib/isplitee/models/m.isplitee"),
        None,
    ),
    "models": ("a.isplitee, b.pt", [Path("a.isplitee"), Path("b.pt")], '["a.isplitee",'),
    "device_id": ("cam-2", "cam-2", "cam/2"),
    "worker_id": ("w-2", "w-2", "w+2"),
    "group": ("g1", "g1", "g#1"),
    "source": ("rtsp://cam.lan/stream", "rtsp://cam.lan/stream", None),
    "policy": ("fixed:6", "fixed:6", "greedy"),
    "ha_prefix": ("ha", "ha", None),
    "event_labels": ("person, cat", ["person", "cat"], '["person",'),
}


def _from_type(name: str, info) -> tuple[str, object, str | None]:
    """A good and a bad value for a key from its type and bounds."""
    ann = info.annotation
    optional = typing.get_origin(ann) in (typing.Union, types.UnionType)
    kind = next(a for a in typing.get_args(ann) if a is not type(None)) if optional else ann
    if typing.get_origin(kind) is typing.Literal:
        choice = typing.get_args(kind)[-1]
        return str(choice), choice, "nonsense"
    if kind is bool:
        return "true", True, "maybe"
    if kind is Path:
        return "/tmp/isplitee-x", Path("/tmp/isplitee-x"), None
    bounds = {
        type(m).__name__: getattr(m, type(m).__name__.lower())
        for m in info.metadata
        if type(m).__name__ in ("Ge", "Gt", "Le", "Lt")
    }
    if kind is int:
        good = int(bounds.get("Ge", bounds.get("Gt", 0) + 1))
        bad = str(bounds["Le"] + 1) if "Le" in bounds else "many"
        return str(good), good, bad
    if kind is float:
        lo = bounds.get("Ge", bounds.get("Gt", 0.0))
        hi = bounds.get("Le", bounds.get("Lt", lo + 2.0))
        good = (lo + hi) / 2
        return (
            repr(good),
            good,
            "fast" if "Le" not in bounds and "Lt" not in bounds else str(hi + 1),
        )
    raise AssertionError(f"{name}: no good/bad value for type {ann!r}: add it to BY_KEY")


CASES = [
    pytest.param(
        cls, name, *(BY_KEY.get(name) or _from_type(name, info)), id=f"{cls.__name__}.{name}"
    )
    for cls in (DeviceConfig, WorkerConfig)
    for name, info in cls.model_fields.items()
]


@pytest.mark.parametrize(("cls", "key", "good", "parsed", "bad"), CASES)
def test_every_documented_variable_takes_a_good_value_and_refuses_a_bad_one(
    cls, key, good, parsed, bad, monkeypatch
) -> None:
    flags = {k: v for k, v in REQUIRED[cls].items() if k != key}
    monkeypatch.setenv(f"{ENV_PREFIX}{key.upper()}", good)
    value = getattr(load_config(cls, None, flags), key)
    assert (value.get_secret_value() if isinstance(value, SecretStr) else value) == parsed
    if bad is None:
        return
    monkeypatch.setenv(f"{ENV_PREFIX}{key.upper()}", bad)
    with pytest.raises(ConfigError) as e:
        load_config(cls, None, flags)
    assert f" {key}: " in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("env", "args"),
    [
        ({"ISPLITEE_MODELS": '["a.isplitee",'}, []),  # a list the settings library cannot read
        ({"ISPLITEE_MAX_BATCH": "many"}, ["--model", "b.isplitee"]),
    ],
)
def test_a_bad_variable_is_one_line_and_exit_2_from_the_cli(env, args) -> None:
    """Exit 2: what the systemd units' RestartPreventExitStatus stops retrying on."""
    out = subprocess.run(
        [sys.executable, "-m", "cloud_worker", *args, "--check-config"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_a_flag_wins_over_a_variable_it_could_not_have_read() -> None:
    """Before, a bad ISPLITEE_MODELS gave a traceback even with --model given."""
    out = subprocess.run(
        [sys.executable, "-m", "cloud_worker", "--model", "b.isplitee", "--check-config"],
        capture_output=True,
        text=True,
        env={**os.environ, "ISPLITEE_MODELS": '["a.isplitee",'},
    )
    assert out.returncode == 0 and '"b.isplitee"' in out.stdout, out.stderr


def test_the_documented_list_forms_work_from_the_cli(monkeypatch) -> None:
    for text in ("a.isplitee,b.isplitee", '["a.isplitee", "b.isplitee"]'):
        monkeypatch.setenv("ISPLITEE_MODELS", text)
        cfg = load_config(WorkerConfig, None, {})
        assert cfg.models == [Path("a.isplitee"), Path("b.isplitee")]
