"""Micro-batching: activations of the same model and split run through the cloud half together.

Pure logic, no clock of its own (the caller passes ``now``), so it is tested without threads.
A batch leaves when it is full or when its oldest item has waited ``max_wait_s``: under load
batches fill up and the network runs once for many frames; a lone node waits at most
``max_wait_s`` extra.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")


@dataclass
class _Group(Generic[T]):
    opened: float
    items: list[T] = field(default_factory=list)


class Batcher(Generic[T]):
    def __init__(self, max_batch: int, max_wait_s: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch should be at least 1, got {max_batch!r}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s should be >= 0, got {max_wait_s!r}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._groups: dict[Hashable, _Group[T]] = {}

    def add(self, key: Hashable, item: T, now: float) -> list[T] | None:
        """Queue ``item``; returns its batch when this item filled it."""
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(now)
        group.items.append(item)
        if len(group.items) >= self.max_batch:
            del self._groups[key]
            return group.items
        return None

    def due(self, now: float) -> Iterator[tuple[Hashable, list[T]]]:
        """Batches whose oldest item has waited long enough, oldest first."""
        ready = [k for k, g in self._groups.items() if now - g.opened >= self.max_wait_s]
        for key in ready:
            yield key, self._groups.pop(key).items

    def drain(self) -> Iterator[tuple[Hashable, list[T]]]:
        """Every batch in hand, whatever its age (shutdown)."""
        while self._groups:
            key = next(iter(self._groups))
            yield key, self._groups.pop(key).items

    def next_deadline(self) -> float | None:
        """When the oldest open batch becomes due, or None when nothing waits."""
        if not self._groups:
            return None
        return min(g.opened for g in self._groups.values()) + self.max_wait_s

    def __len__(self) -> int:
        return sum(len(g.items) for g in self._groups.values())
