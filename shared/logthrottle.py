"""Repeated warnings, summarised: a flood of bad messages must not become a flood of log lines.

A worker fed garbage, or a node whose every offload is refused (a worker on an older release,
the wrong checkpoint), would otherwise write one line per message: tens a second into a Pi's
journal, burying the line that says what is wrong. The first line of each kind goes out at
once; then at most one per interval, saying how many like it were held back. The counters in
``/metrics`` and the stats topic still count every one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["LogThrottle"]


class LogThrottle:
    """Admits the first message of each key, then one per ``interval_s`` per key.

    Thread-safe: a worker refuses on paho's thread (overload) and on its own (bad messages).
    """

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s should be >= 0, got {interval_s!r}")
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> str | None:
        """None to stay quiet; otherwise a suffix for the line to log: empty, or how many
        messages of this key were held back since the last one logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            held = self._held.pop(key, 0)
        if not held:
            return ""
        return f" ({held} more like it in the last {now - last:.0f} s, not logged)"
