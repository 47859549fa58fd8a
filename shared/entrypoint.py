"""What the long-running entry points share: logging, stop signals, user errors as one line."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TypeVar

from shared.errors import EXIT_MISTAKE

__all__ = ["install_stop_signals", "load_program_config", "report_error", "setup_logging"]

T = TypeVar("T")


def setup_logging(level: str = "INFO") -> None:
    """Timestamped lines on stderr: journald and docker logs keep them as they are."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM (systemd, docker) and SIGINT (Ctrl-C) ask for a clean stop; a second one kills."""

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        logging.getLogger("isplitee").info("%s: stopping cleanly", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def report_error(prog: str, exc: BaseException) -> int:
    """One line (or one block, for a config) naming the problem; its exit status: 2 for a
    mistake, 75 for what may mend by itself (:mod:`shared.errors`)."""
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return getattr(exc, "exit_code", EXIT_MISTAKE)


def load_program_config(
    cls: type[T], path: Path | None, flags: dict[str, Any], *, check: bool
) -> T | None:
    """The program's settings (file < ``ISPLITEE_*`` < flags), ready to run with: None when
    ``check`` (``--check-config``: printed instead)."""
    from shared.config import load_config

    config = load_config(cls, path, flags)
    if check:
        print(config.model_dump_json(indent=2))
        return None
    return config
