"""The root of isplitee's own errors, so entry points can tell a user mistake from a bug, and
a mistake from a condition that may mend by itself.

The exit status says which to systemd: 2 for a mistake retrying cannot fix (the units'
``RestartPreventExitStatus=2``: the journal says what to change), 75 (``EX_TEMPFAIL`` of
sysexits.h) for a broker that cannot be reached yet, a camera not there yet, a clock not yet
set: the unit restarts the program until it is.
"""

from __future__ import annotations

__all__ = ["EXIT_MISTAKE", "EXIT_TEMPORARY", "IsplitEEError", "TemporaryError"]

EXIT_MISTAKE = 2
EXIT_TEMPORARY = 75


class IsplitEEError(Exception):
    """Something the user can fix: the message says what and how."""

    exit_code = EXIT_MISTAKE


class TemporaryError(IsplitEEError):
    """Something that may mend by itself (a broker restarting, Wi-Fi still joining, a USB
    camera not enumerated yet): worth starting again later."""

    exit_code = EXIT_TEMPORARY
