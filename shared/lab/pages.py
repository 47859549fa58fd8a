"""Generated parts of the docs: a section between two HTML comments that one command owns.

A page can hold prose written by hand and tables written by code (benchmarks, the protocol's
lists of settings and stats keys). Each generated part sits between ``<!-- NAME:start -->``
and ``<!-- NAME:end -->``; its command rewrites that part and leaves the rest of the page.
Pure text, plus the two helpers that read and write a page.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["kept_section", "replace_section", "section", "with_section"]


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def section(name: str, body: str) -> str:
    """``body`` between the markers of section ``name``."""
    start, end = _markers(name)
    return f"{start}\n{body}\n{end}"


def with_section(text: str, name: str, body: str, before: str | None = None) -> str:
    """``text`` with section ``name`` set to ``body``; a text without it gets it before the
    line ``before`` (where the script that writes the rest puts it), or at the end."""
    start, end = _markers(name)
    block = section(name, body)
    if start in text and end in text:
        return text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    if before and f"\n{before}\n" in text:
        at = text.index(f"\n{before}\n") + 1
        return text[:at] + block + "\n\n" + text[at:]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def kept_section(page: Path, name: str) -> str:
    """Section ``name`` of ``page`` as it stands, markers included, for a script that rewrites
    the rest of the page (another script owns the section); a placeholder if there is none."""
    start, end = _markers(name)
    text = page.read_text() if page.exists() else ""
    if start in text and end in text:
        return text[text.index(start) : text.index(end) + len(end)]
    return f"{start}\n(not measured yet: see the Makefile's bench targets)\n{end}"


def replace_section(page: Path, name: str, body: str, before: str | None = None) -> None:
    """Write ``body`` into section ``name`` of ``page`` (see :func:`with_section`)."""
    text = page.read_text() if page.exists() else ""
    page.write_text(with_section(text, name, body, before))
