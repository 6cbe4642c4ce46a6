"""Reading what the fake Telegram shows, as staff would see it."""

from __future__ import annotations

import html
import re
from typing import Any

from bot.emulators.stage import Stage
from tests.conftest import CHAT_ID


def plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def shown(message: dict[str, Any]) -> str:
    """What a person sees of a bot message: the fake keeps Telegram's parse of it."""
    return str(message.get("visible", plain(message.get("text", ""))))


def topics(st: Stage) -> dict[int, dict[str, Any]]:
    return st.telegram.chats[CHAT_ID].topics


def only_topic(st: Stage) -> int:
    ts = topics(st)
    assert len(ts) == 1, ts
    return next(iter(ts))


def thread_texts(st: Stage, thread_id: int) -> list[str]:
    """The bot's messages in a topic, oldest first, as plain text (the root included)."""
    msgs = sorted(
        st.telegram.thread_messages(CHAT_ID, thread_id), key=lambda m: int(m["message_id"])
    )
    return [shown(m) for m in msgs]


def message_id_of(st: Stage, thread_id: int, needle: str) -> int:
    for m in st.telegram.thread_messages(CHAT_ID, thread_id):
        if needle in shown(m):
            return int(m["message_id"])
    raise AssertionError(f"no message with {needle!r}")


def general_texts(st: Stage) -> list[str]:
    chat = st.telegram.chats[CHAT_ID]
    return [
        shown(m)
        for m in sorted(chat.messages.values(), key=lambda m: int(m["message_id"]))
        if m.get("from", {}).get("is_bot") and "message_thread_id" not in m and "text" in m
    ]


DIGEST_HEAD = re.compile(r"^\d+ comments arrived together(?: \(\d+/\d+\))?:$")


def relayed_lines(st: Stage, thread_id: int) -> list[str]:
    """Every relayed comment in a topic, oldest first, digests unfolded into their lines."""
    out: list[str] = []
    for text in thread_texts(st, thread_id)[1:]:
        lines = text.splitlines()
        out.extend(lines[1:] if lines and DIGEST_HEAD.match(lines[0]) else [text])
    return out
