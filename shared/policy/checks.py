"""The number checks every policy file shares, so none keeps its own copy: what an index, a
confidence, a count is, and the errors that name the value they got."""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_counts", "check_unit", "is_count", "is_index", "is_number", "is_unit"]


def is_index(x: object) -> bool:
    """An integer that is not a bool (a bool is no arm, id or seed)."""
    return type(x) is int or (isinstance(x, numbers.Integral) and not isinstance(x, bool))


def is_number(x: object) -> bool:
    """A real number that is not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def is_unit(x: object) -> bool:
    """A real number in [0, 1] (NaN fails the comparison; bools are not confidences)."""
    if type(x) is not float and (isinstance(x, bool) or not isinstance(x, numbers.Real)):
        return False
    return 0.0 <= x <= 1.0  # type: ignore[operator]


def is_count(x: object) -> bool:
    """A finite real number >= 0 (a discounted count or sum)."""
    return is_number(x) and 0 <= x < math.inf  # type: ignore[operator]


def check_unit(name: str, value: object, *, open_low: bool = False) -> float:
    """``value`` as a float in [0, 1] (``open_low``: in (0, 1]); else a ValueError naming it."""
    ok = is_number(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (0.0 < v <= 1.0) if open_low else (0.0 <= v <= 1.0)
    if not ok:
        span = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{name} should be in {span}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_counts(name: str, values: Any, size: int) -> list[float]:
    """``values`` as ``size`` floats, each a count (:func:`is_count`); else a ValueError."""
    if not (isinstance(values, list) and len(values) == size and all(map(is_count, values))):
        raise ValueError(f"{name} should be {size} finite numbers >= 0, got {values!r}")
    return [float(v) for v in values]
