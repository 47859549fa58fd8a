"""Which encoding a node sends: the checkpoint's measured choice, or what the user set."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.checkpoint import ModelMeta
from shared.wire import (
    AUTO,
    FALLBACK,
    MAX_ACCURACY_DROP,
    MIN_AGREEMENT,
    smallest_tolerated,
    wire_encodings,
)

BLOCKS = (3, 6, 9)


def test_auto_sends_what_the_checkpoint_measured_per_split() -> None:
    assert wire_encodings(AUTO, BLOCKS, ("int8", "int4", "int4")) == {
        3: "int8",
        6: "int4",
        9: "int4",
    }


def test_auto_without_a_measurement_sends_fp16() -> None:
    assert FALLBACK == "fp16"
    assert wire_encodings(AUTO, BLOCKS, None) == dict.fromkeys(BLOCKS, "fp16")


def test_an_explicit_encoding_overrides_the_checkpoint() -> None:
    assert wire_encodings("fp32", BLOCKS, ("int4",) * 3) == dict.fromkeys(BLOCKS, "fp32")
    with pytest.raises(ValueError, match="one of auto, fp32, fp16, int8, int4"):
        wire_encodings("bf16", BLOCKS, None)


def test_the_smallest_encoding_within_both_bounds_wins() -> None:
    agree = {"fp16": 1.0, "int8": 0.999, "int4": MIN_AGREEMENT}
    drop = {"fp16": 0.0, "int8": 0.0, "int4": MAX_ACCURACY_DROP}
    assert smallest_tolerated(agree, drop) == "int4"  # both bounds are inclusive
    # Flips that cancel out leave accuracy alone; the agreement bound still catches them.
    assert smallest_tolerated({**agree, "int4": 0.98}, {**drop, "int4": 0.0}) == "int8"
    assert smallest_tolerated(agree, {**drop, "int4": 0.006}) == "int8"
    assert smallest_tolerated({"fp16": 0.5}, {"fp16": 0.2}) == "fp32"


def test_a_checkpoint_names_one_known_encoding_per_exit() -> None:
    base = dict(num_classes=2, input_size=32, class_names=("a", "b"), exit_blocks=BLOCKS)
    assert ModelMeta(**base, wire_encodings=("int4", "int8", "fp16")).wire_encodings
    for bad in (("int4",) * 2, ("int4", "int8", "bf16")):
        with pytest.raises(ValidationError, match="wire_encodings should name one of"):
            ModelMeta(**base, wire_encodings=bad)


def test_every_list_of_encodings_is_the_protocols() -> None:
    """pydantic needs a Literal; it must name exactly what the protocol and wire.py accept."""
    from typing import get_args

    from device.config import DeviceConfig
    from shared.protocol import ENCODINGS, Encoding
    from shared.wire import SMALLEST_FIRST, WIRE_CHOICES

    assert get_args(DeviceConfig.model_fields["encoding"].annotation) == WIRE_CHOICES
    assert get_args(Encoding) == ENCODINGS and set(SMALLEST_FIRST) == set(ENCODINGS)
