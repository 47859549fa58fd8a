"""Regenerate deploy/device.example.toml and deploy/cloud.example.toml from the config models.

    python deploy/examples.py          # write them
    python deploy/examples.py --check  # exit 1 when they are stale (the tests run this)
"""

from __future__ import annotations

import sys
from pathlib import Path

from cloud_worker.config import WorkerConfig
from device.config import DeviceConfig
from shared.config import render_example

HERE = Path(__file__).resolve().parent

EXAMPLES = {
    HERE / "device.example.toml": (
        DeviceConfig,
        "isplitee-device configuration (e.g. /etc/isplitee/device.toml)",
        {"model": "/var/lib/isplitee/model.pt"},
    ),
    HERE / "cloud.example.toml": (
        WorkerConfig,
        "isplitee-cloud configuration (e.g. /etc/isplitee/cloud.toml)",
        {"models": ["/var/lib/isplitee/model.pt"]},
    ),
}


def main(argv: list[str]) -> int:
    stale = []
    for path, (cls, title, required) in EXAMPLES.items():
        text = render_example(cls, title, required)
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
