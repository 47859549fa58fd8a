"""Entry points that are installed before their milestone lands print what they will be."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["placeholder_main"]


def placeholder_main(prog: str, description: str, argv: Sequence[str] | None = None) -> int:
    """Print usage and the status, exit 0: a systemd unit or a script can already call it."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Not implemented yet: the MQTT pipeline arrives with the pipeline milestone. "
        "Use 'isplitee train', 'isplitee info' and 'isplitee simulate' meanwhile.",
    )
    parser.parse_args(argv)
    parser.print_help()
    return 0
