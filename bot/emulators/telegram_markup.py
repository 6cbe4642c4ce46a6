"""Telegram's HTML parse mode as the Bot API applies it, for the fake Telegram: what a
message shows, its entities, and the markup Telegram refuses.

Follows https://core.telegram.org/bots/api#html-style: only the listed tags, properly
nested and closed; ``<``, ``>`` and ``&`` that are not markup must be written as
``&lt;``, ``&gt;``, ``&amp;``; the named entities are those four with ``&quot;``, plus
numeric ones. Lengths are UTF-16 code units, as Telegram counts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bot.platforms.text import utf16_len

# tag -> entity type; span and code need their attribute checked
ENTITY_OF_TAG = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "tg-emoji": "custom_emoji",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
}
ATTRIBUTES = {"a": {"href"}, "span": {"class"}, "tg-emoji": {"emoji-id"}, "code": {"class"}}
NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
ENTITY = re.compile(r"&(?:([a-zA-Z]+)|#([0-9]+)|#[xX]([0-9a-fA-F]+));")
TAG_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")
ATTRIBUTE = re.compile(r"\s+([a-zA-Z][a-zA-Z0-9-]*)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'>]+))?")


class MarkupError(ValueError):
    """Telegram's "can't parse entities" reason."""


@dataclass
class Open:
    tag: str
    entity: dict[str, Any]
    at: int  # byte offset of the start tag, for the error message


@dataclass
class Parsed:
    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)


def _offset(source: str, i: int) -> int:
    return len(source[:i].encode())


def _entity(source: str, i: int) -> tuple[str, int]:
    """The character an entity at ``i`` stands for, and where it ends."""
    m = ENTITY.match(source, i)
    if m is None:
        raise MarkupError(
            f"Can't find end of the entity starting at byte offset {_offset(source, i)}"
        )
    name, dec, hexa = m.groups()
    if name is not None:
        if name not in NAMED:
            raise MarkupError(
                f'Unsupported HTML entity "&{name};" at byte offset {_offset(source, i)}'
            )
        return NAMED[name], m.end()
    code = int(dec) if dec is not None else int(hexa, 16)
    if code > 0x10FFFF:
        raise MarkupError(f"Invalid entity code at byte offset {_offset(source, i)}")
    return chr(code), m.end()


def _decode(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "&":
            ch, i = _entity(value, i)
            out.append(ch)
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _start_tag(source: str, i: int, stack: list[Open], text_len: int) -> tuple[Open, int]:
    at = _offset(source, i)
    name_match = TAG_NAME.match(source, i + 1)
    if name_match is None:
        raise MarkupError(f"Unsupported start tag at byte offset {at}")
    tag = name_match.group().lower()
    if tag not in ENTITY_OF_TAG:
        raise MarkupError(f'Unsupported start tag "{tag}" at byte offset {at}')
    attrs: dict[str, str] = {}
    j = name_match.end()
    while (m := ATTRIBUTE.match(source, j)) is not None:
        key, raw = m.group(1).lower(), m.group(2)
        value = raw[1:-1] if raw and raw[0] in "\"'" else (raw or "")
        attrs[key] = _decode(value)
        j = m.end()
    while j < len(source) and source[j].isspace():
        j += 1
    if j >= len(source) or source[j] != ">":
        raise MarkupError(f"Unclosed start tag at byte offset {at}")
    allowed = ATTRIBUTES.get(tag, set()) | ({"expandable"} if tag == "blockquote" else set())
    for key in attrs:
        if key not in allowed:
            raise MarkupError(f'Unsupported attribute "{key}" of tag "{tag}" at byte offset {at}')
    inside = [o.tag for o in stack]
    if "code" in inside or ("pre" in inside and tag != "code"):
        raise MarkupError(f'Tag "{tag}" can\'t be inside "{inside[-1]}" at byte offset {at}')
    if tag in inside and tag in ("a", "blockquote", "pre"):
        raise MarkupError(f'Tag "{tag}" can\'t be inside "{tag}" at byte offset {at}')
    entity: dict[str, Any] = {"type": ENTITY_OF_TAG[tag], "offset": text_len}
    if tag == "a":
        if not attrs.get("href"):
            raise MarkupError(f'Tag "a" needs an href at byte offset {at}')
        entity["url"] = attrs["href"]
    elif tag == "span" and attrs.get("class") != "tg-spoiler":
        raise MarkupError(f'Tag "span" must have class "tg-spoiler" at byte offset {at}')
    elif tag == "tg-emoji":
        if not attrs.get("emoji-id", "").isdigit():
            raise MarkupError(f'Tag "tg-emoji" needs a numeric emoji-id at byte offset {at}')
        entity["custom_emoji_id"] = attrs["emoji-id"]
    elif tag == "code" and "class" in attrs:
        language = attrs["class"]
        if not language.startswith("language-") or not inside or inside[-1] != "pre":
            raise MarkupError(f"Unsupported code class at byte offset {at}")
        entity["language"] = language.removeprefix("language-")
    elif tag == "blockquote" and "expandable" in attrs:
        entity["type"] = "expandable_blockquote"
    return Open(tag, entity, at), j + 1


def parse_html(source: str) -> Parsed:
    """The text a person sees and its entities; MarkupError where Telegram would refuse."""
    out: list[str] = []
    length = 0  # of the visible text so far, in UTF-16 units
    stack: list[Open] = []
    entities: list[dict[str, Any]] = []
    i = 0
    while i < len(source):
        ch = source[i]
        if ch == "<" and source.startswith("</", i):
            at = _offset(source, i)
            end = source.find(">", i)
            name = source[i + 2 : end].strip().lower() if end >= 0 else ""
            if not stack:
                raise MarkupError(f"Unexpected end tag at byte offset {at}")
            if name != stack[-1].tag:
                raise MarkupError(
                    f'Unmatched end tag at byte offset {at}, expected "</{stack[-1].tag}>", '
                    f'found "</{name}>"'
                )
            opened = stack.pop()
            opened.entity["length"] = length - opened.entity["offset"]
            if opened.entity["length"]:
                entities.append(opened.entity)
            i = end + 1
        elif ch == "<":
            opened, i = _start_tag(source, i, stack, length)
            stack.append(opened)
        elif ch == "&":
            decoded, i = _entity(source, i)
            out.append(decoded)
            length += utf16_len(decoded)
        elif ch == ">":
            raise MarkupError(
                f"Character '>' is reserved and must be escaped at byte offset {_offset(source, i)}"
            )
        else:
            out.append(ch)
            length += utf16_len(ch)
            i += 1
    if stack:
        raise MarkupError(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return Parsed("".join(out), entities)
