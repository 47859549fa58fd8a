"""Regenerate deploy/device.example.toml, deploy/cloud.example.toml and docs/configuration.md
from the config models, and the lists of runtime settings and stats keys in docs/protocol.md
from the code that accepts and publishes them.

    python deploy/examples.py          # write them
    python deploy/examples.py --check  # exit 1 when they are stale (the tests run this)
"""

from __future__ import annotations

import sys
from pathlib import Path

from cloud_worker.config import WorkerConfig
from device.config import DeviceConfig
from device.discovery import COMPONENT_MODELS, DeviceDiscovery, DeviceInfo, Origin
from device.events import EventMessage, StateMessage
from device.settings import EFFECTS, accepted
from device.stats_fields import STATS_FIELDS
from shared.config import render_example, render_reference
from shared.lab.pages import with_section

HERE = Path(__file__).resolve().parent

EXAMPLES = {
    HERE / "device.example.toml": (
        DeviceConfig,
        "isplitee-device configuration (e.g. /etc/isplitee/device.toml)",
        {"model": "/var/lib/isplitee/models/digits.isplitee"},
    ),
    HERE / "cloud.example.toml": (
        WorkerConfig,
        "isplitee-cloud configuration (e.g. /etc/isplitee/cloud.toml)",
        {"models": ["/var/lib/isplitee/models/digits.isplitee"]},
    ),
}


REFERENCE = HERE.parent / "docs" / "configuration.md"
PROTOCOL = HERE.parent / "docs" / "protocol.md"


def _reference() -> str:
    parts = [
        "# Configuration reference",
        "",
        "Generated from the config models by `python deploy/examples.py`; do not edit by hand.",
        "Each program reads a TOML file (`--config`), then `ISPLITEE_<KEY>` environment",
        "variables, then its flags, each overriding the one before. An unknown key or a bad value",
        "is one error naming the key. Commented example files with the same keys:",
        "`deploy/device.example.toml`, `deploy/cloud.example.toml`.",
        "",
    ]
    for path, (cls, _title, required) in EXAMPLES.items():
        program = "isplitee-device" if cls is DeviceConfig else "isplitee-cloud"
        parts += [f"## {program} (`{path.name}`)", "", render_reference(cls, required)]
    return "\n".join(parts)


def _keys(model) -> list[str]:
    """A message model's keys and their meanings as a table."""
    rows = ["| key | meaning |", "|---|---|"]
    return rows + [f"| `{k}` | {f.description} |" for k, f in model.model_fields.items()]


def _discovery() -> list[str]:
    """The discovery config's keys: the root, then each kind of entity's."""
    rows = ["| where | key | value |", "|---|---|---|"]
    rows += [f"| root | `{k}` | {f.description} |" for k, f in DeviceDiscovery.model_fields.items()]
    for where, model in (("device", DeviceInfo), ("origin", Origin)):
        rows += [f"| `{where}` | `{k}` | {f.description} |" for k, f in model.model_fields.items()]
    for model in COMPONENT_MODELS:
        platform = model.model_fields["platform"].description.split("`")[1]
        for k, f in model.model_fields.items():
            optional = "" if f.is_required() else " (where set)"
            rows.append(f"| `{platform}`{optional} | `{k}` | {f.description} |")
    return rows


def _protocol() -> str:
    """docs/protocol.md with its generated lists set from the code."""
    settings = ["| key | value | effect on the bandit |", "|---|---|---|"]
    settings += [f"| `{key}` | {accepted(key)} | {effect} |" for key, effect in EFFECTS.items()]
    stats = ["| key | meaning |", "|---|---|"]
    stats += [f"| `{key}` | {meaning} |" for key, meaning in STATS_FIELDS.items()]
    text = PROTOCOL.read_text()
    text = with_section(text, "settings", "\n".join(settings))
    text = with_section(text, "state-keys", "\n".join(_keys(StateMessage)))
    text = with_section(text, "event-keys", "\n".join(_keys(EventMessage)))
    text = with_section(text, "discovery-keys", "\n".join(_discovery()))
    return with_section(text, "stats-keys", "\n".join(stats))


def main(argv: list[str]) -> int:
    unknown = set(argv) - {"--check", "-h", "--help"}
    if unknown or {"-h", "--help"} & set(argv):
        print(__doc__, file=sys.stderr if unknown else sys.stdout)
        return 2 if unknown else 0
    stale = []
    outputs = {
        path: render_example(cls, title, required)
        for path, (cls, title, required) in EXAMPLES.items()
    }
    outputs[REFERENCE] = _reference()
    outputs[PROTOCOL] = _protocol()
    for path, text in outputs.items():
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run python deploy/examples.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
