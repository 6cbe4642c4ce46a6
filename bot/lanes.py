"""Ordering keys of stored deliveries (``InboxItem.lane``), set at intake.

Deliveries of one lane are handled one at a time, in the order they were stored, whichever
replica takes them; lanes run in parallel. A lane is as wide as the things whose order
matters together: a Facebook page (its posts' comments, a merged task gathering several
posts, a removed post closing its task), a Telegram chat, a Slack channel (staff messages
and commands in its threads). None: the delivery has no order to keep.
"""

from __future__ import annotations

import json
from typing import Any

from bot.intake import Delivery

KEY_MAX = 128  # inbox.dedupe_key


def facebook(body: dict[str, Any], raw: str, key: str) -> list[Delivery]:
    """A webhook delivery, whose identity is ``key``: one row, laned by its page, or, when
    Facebook batched entries of several pages together, one row per page (each keyed
    ``key:page``), so that every page keeps its own order."""
    groups: dict[str | None, list[Any]] = {}
    for entry in body.get("entry") or []:
        groups.setdefault(_entry_lane(body.get("object"), entry), []).append(entry)
    if len(groups) <= 1:
        return [Delivery(key, raw, next(iter(groups), None))]
    return [
        Delivery(
            f"{key}:{lane}"[:KEY_MAX],
            json.dumps({**body, "entry": entries}, ensure_ascii=False),
            lane,
        )
        for lane, entries in groups.items()
    ]


def _entry_lane(obj: Any, entry: Any) -> str | None:
    owner = entry.get("id") if isinstance(entry, dict) else None
    if not isinstance(owner, str | int) or isinstance(owner, bool):
        return None
    return f"{'instagram' if obj == 'instagram' else 'facebook'}:{owner}"


def telegram(update: dict[str, Any]) -> str | None:
    """A Telegram update: its chat."""
    for field in ("message", "edited_message", "channel_post", "edited_channel_post"):
        chat = _get(update, field, "chat", "id")
        if chat is not None:
            return f"telegram:{chat}"
    for path in (("callback_query", "message", "chat", "id"), ("my_chat_member", "chat", "id")):
        chat = _get(update, *path)
        if chat is not None:
            return f"telegram:{chat}"
    return None


def slack(body: dict[str, Any]) -> str | None:
    """A Slack event, command or interaction: its channel. (A Reply box's submission names
    no channel: it has no order with the rest.)"""
    for path in (
        ("event", "channel"),
        ("channel_id",),
        ("channel", "id"),
        ("container", "channel_id"),
    ):
        channel = _get(body, *path)
        if channel is not None:
            return f"slack:{channel}"
    return None


def _get(data: Any, *path: str) -> str | None:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    if isinstance(data, bool) or not isinstance(data, str | int) or data == "":
        return None
    return str(data)
