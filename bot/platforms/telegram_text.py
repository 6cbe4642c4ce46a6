"""What Telegram shows of a task: the root and each post as HTML messages within
Telegram's limits. Pure.

Telegram measures a message after parsing its markup, in UTF-16 code units, up to 4096.
So every message is built from spans of visible text, measured and cut as text, and
escaped only when it is rendered: cutting escaped HTML would count ``&amp;`` as five and
could cut an entity in half. Markup comes only from the spans' tags, which are ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.platforms.text import shorten, split, utf16_len
from bot.ports import ChatPost, RootMessage

MESSAGE_MAX = 4096
TITLE_MAX = 256
NAME_MAX = 128
TAGS_MAX = 512
DATA_MAX = 1024
ASSIGNEES_MAX = 20
PART_ROOM = len(" (99/99)")  # room kept for the "(2/3)" of a part

# Telegram turns "@name" and "/command" in plain text into a mention (which notifies that
# user) and a clickable bot command. A WORD JOINER after the "@" or "/" that starts a word
# keeps the text as it reads and makes it neither. (Telegram takes no command right after
# "<" or ">", so "</b>" typed by a customer is left as it is.)
WORD_JOINER = "\u2060"
AUTO_ENTITY = re.compile(r"(?<![\w/@])@(?=\w)|(?<![\w/<>])/(?=\w)")


def inert(text: str) -> str:
    """Customer text that Telegram shows as written: no mention, no bot command."""
    return AUTO_ENTITY.sub(lambda m: m.group() + WORD_JOINER, text)


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Span:
    """Visible text and the tag of ours around it, if any (``"<b>"``, ``'<a href="…">'``)."""

    text: str
    tag: str = ""

    def html(self) -> str:
        if not self.tag or not self.text:
            return escape(self.text)
        name = self.tag[1:-1].split()[0]
        return f"{self.tag}{escape(self.text)}</{name}>"


def bold(text: str) -> Span:
    return Span(text, "<b>")


def italic(text: str) -> Span:
    return Span(text, "<i>")


def link(text: str, url: str) -> Span:
    return Span(text, f'<a href="{escape(url).replace(chr(34), "&quot;")}">')


def html(spans: Iterable[Span]) -> str:
    return "".join(s.html() for s in spans)


def width(spans: Iterable[Span]) -> int:
    """The visible length Telegram counts."""
    return utf16_len("".join(s.text for s in spans))


def joined(groups: Sequence[Sequence[Span]], separator: str) -> list[Span]:
    out: list[Span] = []
    for i, group in enumerate(groups):
        if i:
            out.append(Span(separator))
        out.extend(group)
    return out


# --- the root ---------------------------------------------------------------------------


def _mention(assignee: str) -> Span:
    if assignee.lstrip("-").isdigit():
        return link(assignee, f"tg://user?id={assignee}")
    return Span(assignee if assignee.startswith("@") else "@" + assignee)


def render_root(root: RootMessage) -> str:
    """Title, description, assignees, tags, the additional data as a quote, the status.
    The description takes what room the rest leaves; shortened, it links to the post."""
    parts: list[list[Span]] = [[bold(shorten(inert(root.title), TITLE_MAX))]]
    if root.assignees:
        people = joined([[_mention(a)] for a in root.assignees[:ASSIGNEES_MAX]], " ")
        parts.append([Span("Assignees: "), *people])
    if root.tags:
        parts.append([Span(shorten(" ".join("#" + t for t in root.tags), TAGS_MAX))])
    if root.additional_data:
        parts.append([Span(shorten(inert(root.additional_data), DATA_MAX), "<blockquote>")])
    status = {"open": "🟢 open", "merged": "🔀 merged"}.get(root.status, "✅ closed")
    parts.append([Span(f"Status: {status} · task #{root.task_id}")])
    if root.description:
        description = inert(root.description)
        room = MESSAGE_MAX - width(joined(parts, "\n\n")) - len("\n\n")
        if utf16_len(description) > room:
            more = [Span(" "), link("full post", root.post_url)] if root.post_url else []
            parts.insert(1, [Span(shorten(description, room - width(more))), *more])
        else:
            parts.insert(1, [Span(description)])
    return html(joined(parts, "\n\n"))


# --- posts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One comment as a line: who (and how), the comment's text, a note after it."""

    head: tuple[Span, ...]
    body: str
    strike: bool = False
    note: tuple[Span, ...] = ()

    def line(self, body: str | None = None, part: str = "") -> list[Span]:
        text = self.body if body is None else body
        spans = [*self.head, *([Span(f" ({part})")] if part else []), Span(": ")]
        if text:
            spans.append(Span(text, "<s>" if self.strike else ""))
        return [*spans, *self.note]

    def room(self, limit: int) -> int:
        """How much of the body one part can carry in ``limit`` units."""
        return limit - width(self.line("", "99/99"))


def entry(post: ChatPost) -> Entry:
    who = shorten(inert(post.author or "Someone"), NAME_MAX)
    name = bold(who + (" (Page)" if post.kind == "page" else ""))
    text = inert(post.text)
    # who moderated it from the chat ("hidden by Ines") says more than Facebook's status
    state = post.moderation.state if post.moderation is not None else None
    if post.fb_status == "removed":
        note = (Span("\n"), italic(state or "removed on Facebook"))
        return Entry((name,), text, strike=True, note=note)
    if post.fb_status == "hidden":
        return Entry((name,), text, note=(Span("\n"), italic(state or "hidden on Facebook")))
    head = [Span("↪ ")] if post.is_reply else []
    head.append(name)
    if post.fb_status == "edited":
        head.append(Span(" (edited)"))
    return Entry(tuple(head), text, note=(Span("\n"), italic(state)) if state else ())


def pages(entries: Sequence[Entry], head: str = "") -> list[str]:
    """Entries, one line each, dealt in order into as few messages as fit Telegram's
    limit. An entry longer than a message is split into parts, "(1/3)", "(2/3)", each
    starting a message: nothing is cut. A ``head`` starts every message, numbered when
    there are several."""
    limit = MESSAGE_MAX - (width([italic(head)]) + PART_ROOM + 1 if head else 0)
    messages: list[list[list[Span]]] = [[]]
    used = 0
    for e in entries:
        whole = e.line()
        size = width(whole)
        if used + size + (1 if messages[-1] else 0) <= limit:
            used += size + (1 if messages[-1] else 0)
            messages[-1].append(whole)
            continue
        if size <= limit:
            messages.append([whole])
            used = size
            continue
        pieces = split(e.body, e.room(limit))
        for n, piece in enumerate(pieces, start=1):
            line = e.line(piece, f"{n}/{len(pieces)}")
            messages.append([line])
            used = width(line)
    messages = [m for m in messages if m] or [[]]
    out: list[str] = []
    for n, lines in enumerate(messages, start=1):
        spans = joined(lines, "\n")
        if head:
            numbered = head if len(messages) == 1 else f"{head.rstrip(':')} ({n}/{len(messages)}):"
            spans = [italic(numbered), *([Span("\n")] if spans else []), *spans]
        out.append(html(spans))
    return out


def render_post(post: ChatPost) -> list[str]:
    """The messages that show a post whole, in order (almost always one)."""
    if post.kind == "digest":
        return pages(
            [entry(i) for i in post.items], f"{len(post.items)} comments arrived together:"
        )
    if post.kind == "notice":
        # our own words: escaped, not made inert, so "/close" in a usage line stays a command
        return [html([Span(piece)]) for piece in split(post.text, MESSAGE_MAX)]
    return pages([entry(post)])


CAPTION_MAX = 1024


def render_caption(post: ChatPost) -> str | None:
    """The post's line as the caption of its first picture or file, measured as Telegram
    measures captions (1024 UTF-16 units after parsing); None when it does not fit."""
    line = entry(post).line()
    return html(line) if width(line) <= CAPTION_MAX else None


def render_edit(post: ChatPost) -> str:
    """One message for editMessageText. A comment that took several messages is edited in
    its first, shortened with "…" to fit: the edit shows what happened to it (edited,
    hidden, removed); its later parts keep the rest of the text as first shown."""
    if post.kind in ("customer", "page"):
        e = entry(post)
        return html(e.line(shorten(e.body, e.room(MESSAGE_MAX))))
    if post.kind == "notice":
        return html([Span(shorten(post.text, MESSAGE_MAX))])
    return render_post(post)[0]
