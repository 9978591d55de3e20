"""Rewrite one marked section of a markdown results page, keeping the rest of the page."""

from __future__ import annotations

from pathlib import Path


def write_marked_section(page: Path, begin: str, end: str, section: str, heading: str, title: str) -> None:
    """Replace the text from `begin` to `end` in `page` with `section` (which includes both markers).

    A page without the markers gets ``## heading`` and the section appended; a missing page
    is created with ``# title``.
    """
    text = page.read_text() if page.exists() else f"# {title}\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## {heading}\n\n" + section + "\n"
    page.write_text(text)
