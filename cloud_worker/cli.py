"""``isplitee-cloud``: the cloud worker.

It finishes offloaded activations and replies over MQTT. Until the pipeline milestone lands this
entry point only explains itself.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from shared.entrypoint import placeholder_main

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    return placeholder_main(
        "isplitee-cloud",
        "The cloud worker: finishes offloaded activations and replies over MQTT.",
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
