"""A publisher that records instead of sending: the node driven without a broker."""

from __future__ import annotations

from shared.protocol import Result, decode_result


class Recorder:
    """What a node published: (topic, payload, correlation data) in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    def publish(self, topic: str, payload: bytes, **kw: object) -> None:
        self.sent.append((topic, payload, kw.get("correlation")))  # type: ignore[arg-type]

    def results(self) -> list[Result]:
        return [decode_result(p) for t, p, _ in self.sent if t.endswith("/result")]

    def offloads(self) -> list[bytes | None]:
        """The correlation data of every activation published."""
        return [c for t, _, c in self.sent if t.endswith("/activation")]
