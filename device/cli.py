"""``isplitee-device``: the Raspberry Pi camera node.

It runs the model up to the split, answers from the exit there or offloads the activation over
MQTT. Until the pipeline milestone lands this entry point only explains itself.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from shared.entrypoint import placeholder_main

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    return placeholder_main(
        "isplitee-device",
        "The Raspberry Pi camera node: runs the model up to the split, answers from the exit "
        "there or offloads over MQTT.",
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
