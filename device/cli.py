"""``isplitee-device``: the Raspberry Pi camera node.

It runs the model up to the split, answers from the exit there or offloads over MQTT.

The MQTT pipeline is the next milestone; until it lands this entry point only explains itself,
so installing the package already puts the command where systemd units will expect it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="isplitee-device",
        description="The Raspberry Pi camera node: runs the model up to the split, "
        "answers from the exit there or offloads over MQTT.",
        epilog="Not implemented yet: the MQTT pipeline arrives with the pipeline milestone. "
        "Use 'isplitee train', 'isplitee info' and 'isplitee simulate' meanwhile.",
    )
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
