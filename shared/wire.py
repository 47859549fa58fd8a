"""Which encoding a node sends each split's activation in.

Fewer bits per value mean fewer bytes per offload, and at block 3 of the digits model only
4-bit codes bring a message below the JPEG of the frame (docs/benchmarks.md). But how much
precision the rest of the network needs is a property of the model, not of the encoding: a
node cannot know it, so the training run measures it (``shared.lab.wire_check``) and the
checkpoint carries, per exit, the smallest encoding its held-out images tolerated. A node left
at ``encoding = "auto"`` sends that, and fp16 where the checkpoint says nothing (older
checkpoints), which no model of ours has ever been measured to notice.

Pure logic, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shared.protocol import BITS, ENCODINGS

__all__ = [
    "AUTO",
    "FALLBACK",
    "MAX_ACCURACY_DROP",
    "MIN_AGREEMENT",
    "SMALLEST_FIRST",
    "WIRE_CHOICES",
    "smallest_tolerated",
    "wire_encodings",
]

AUTO = "auto"
WIRE_CHOICES = (AUTO, *ENCODINGS)
"""What a node's ``encoding`` setting accepts."""

FALLBACK = "fp16"
"""What ``auto`` sends where the checkpoint holds no measurement."""

SMALLEST_FIRST = tuple(sorted(ENCODINGS, key=BITS.__getitem__))

MIN_AGREEMENT = 0.99
"""Share of held-out images whose final prediction must be the same as from the fp32
activation. Accuracy alone could hide flips that cancel out; agreement cannot."""

MAX_ACCURACY_DROP = 0.005
"""And the final layer's accuracy may fall by at most this much (0.5 points, the issue's
bound on what an encoding may cost)."""


def smallest_tolerated(agreement: Mapping[str, float], accuracy_drop: Mapping[str, float]) -> str:
    """The smallest encoding within both bounds; fp32 where none is (it is the reference)."""
    for encoding in SMALLEST_FIRST:
        if encoding in agreement and (
            agreement[encoding] >= MIN_AGREEMENT
            and accuracy_drop.get(encoding, 1.0) <= MAX_ACCURACY_DROP
        ):
            return encoding
    return "fp32"


def wire_encodings(
    setting: str, exit_blocks: Sequence[int], measured: Sequence[str] | None
) -> dict[int, str]:
    """Split block -> the encoding a node with this ``encoding`` setting sends from it.

    ``measured`` is the checkpoint's ``wire_encodings`` (one per exit block, or None).
    """
    if setting != AUTO:
        if setting not in ENCODINGS:
            raise ValueError(
                f"encoding should be one of {', '.join(WIRE_CHOICES)}, got {setting!r}"
            )
        return {b: setting for b in exit_blocks}
    if measured is None:
        return {b: FALLBACK for b in exit_blocks}
    return dict(zip(exit_blocks, measured, strict=True))
