"""The root of isplitee's own errors, so entry points can tell a user mistake from a bug."""

from __future__ import annotations

__all__ = ["IsplitEEError"]


class IsplitEEError(Exception):
    """Something the user can fix: the message says what and how."""
