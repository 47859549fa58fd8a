"""The README's troubleshooting table quotes what the programs print, word for word.

Each code span in the symptom column, cut at ``...`` and ``: ``, must be found in a message
the code really builds: a string literal of the source (f-strings cut at their fields), a
deploy script, or a message built here by the code that prints it, from example values.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from device.camera import SourceError, open_source, picamera2_import_problem
from shared.broker_diagnosis import diagnose, login_refused
from shared.refusal import (
    Refusal,
    discovery_advice,
    node_advice,
    undelivered_advice,
    worker_advice,
)

ROOT = Path(__file__).resolve().parent.parent
BROKER = "mqtts://broker.lan:8883"


def _literals() -> list[str]:
    """Every string constant of the programs' source, f-strings cut at their fields."""
    out = []
    for package in ("device", "cloud_worker", "shared"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    out.append(node.value)
    out += [p.read_text() for p in (ROOT / "deploy").rglob("*.sh")]
    return out


def _built() -> list[str]:
    """Messages that are put together from parts: built by the code, from example values."""
    try:
        open_source("0")
    except SourceError as exc:
        camera = str(exc)
    closed = diagnose("127.0.0.1", 1, None, None).text
    return [
        camera,
        closed,
        login_refused("Not authorized", "cam1", True),
        undelivered_advice("isplitee/workers/activation", broker=BROKER, user="w3"),
        worker_advice(
            [Refusal("isplitee/workers/w2/status", "Not authorized")],
            broker=BROKER,
            user="w1",
            worker_id="w2",
        ),
        picamera2_import_problem(ValueError("numpy.dtype size changed, may indicate ...")),
        node_advice(
            [Refusal("isplitee/cam2/status", "Not authorized")],
            broker=BROKER,
            user="cam1",
            device_id="cam2",
        ),
        worker_advice(
            [Refusal("$share/isplitee/isplitee/+/activation", "Not authorized", "subscribe")],
            broker=BROKER,
            user="w1",
            worker_id="w1",
        ),
        discovery_advice([Refusal("homeassistant/x", "Not authorized")], broker=BROKER, user="c"),
    ]


def _symptoms() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Troubleshooting", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    spans = []
    for row in rows[1:]:  # the header is not a symptom
        spans += re.findall(r"`([^`]+)`", row.split(" | ")[0])
    return spans


def test_every_troubleshooting_symptom_is_printed_by_the_code() -> None:
    corpus = _literals() + _built()
    spans = _symptoms()
    assert len(spans) >= 20
    missing = []
    for span in spans:
        for fragment in re.split(r"\.\.\.|: ", span):
            fragment = fragment.strip(" '()")
            if len(fragment) >= 4 and not any(fragment in text for text in corpus):
                missing.append(f"{fragment!r} (of {span!r})")
    assert not missing, "the README quotes text no program prints: " + "; ".join(missing)
