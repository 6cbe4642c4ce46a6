"""Measuring and cutting text the way the chat platforms count it. Pure.

Telegram counts a message's length in UTF-16 code units (an emoji outside the Basic
Multilingual Plane counts 2), after its markup is parsed. Slack says "characters"
without saying which; we count UTF-16 units there too, the stricter reading, so a text
that fits by our count fits by Slack's.
"""

from __future__ import annotations

from collections.abc import Callable

ELLIPSIS = "…"


def utf16_len(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _prefix_within(text: str, limit: int) -> int:
    """How many characters of ``text`` fit in ``limit`` UTF-16 units (never half an
    astral character)."""
    used = 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit:
            return i
    return len(text)


def shorten(text: str, limit: int) -> str:
    """``text`` itself when it fits in ``limit`` units, else its start and "…"."""
    if utf16_len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[: _prefix_within(text, limit - 1)].rstrip() + ELLIPSIS


def split(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` UTF-16 units whose concatenation is exactly
    ``text``. A piece ends after a line break or a space when one is in its second half,
    so words stay whole where they can; the break stays at the end of its piece."""
    if limit < 2:
        raise ValueError("a piece needs room for at least one character")
    pieces: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        end = _prefix_within(rest, limit)
        window = rest[:end]
        cut = window.rfind("\n") + 1
        if cut <= end // 2:
            cut = window.rfind(" ") + 1
        if cut <= end // 2:
            cut = end
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def fit(text: str, limit: int, render: Callable[[str], str]) -> str:
    """``render(text)`` within ``limit`` units, ``text`` shortened with "…" as little as
    that needs. Shortening before rendering never cuts an escape such as ``&amp;`` in
    half, and measures what the platform measures: the rendered form."""
    out = render(text)
    if utf16_len(out) <= limit:
        return out
    low, high = 0, utf16_len(text)  # how much of the text to keep, searched
    best = render("")
    while low <= high:
        keep = (low + high) // 2
        candidate = render(shorten(text, keep))
        if utf16_len(candidate) <= limit:
            best, low = candidate, keep + 1
        else:
            high = keep - 1
    return best
