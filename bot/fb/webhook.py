"""Turn a Page webhook delivery into domain events: every entry, every change, every message."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from bot.domain import (
    Attachment,
    CommentEvent,
    FacebookEvent,
    FbUser,
    MessengerEvent,
    PostRemovedEvent,
)

log = logging.getLogger(__name__)


class MalformedDelivery(ValueError):
    pass


def _time(value: Any) -> datetime:
    if isinstance(value, int | float):
        # feed changes give seconds, Messenger gives milliseconds
        seconds = value / 1000 if value > 10_000_000_000 else value
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        try:
            return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z").astimezone(UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def _str(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_delivery(body: Any) -> list[FacebookEvent]:
    """Parse a decoded delivery. Items we do not handle are skipped with a debug line;
    a body that is not a Page delivery at all raises MalformedDelivery."""
    if not isinstance(body, dict) or not isinstance(body.get("entry"), list):
        raise MalformedDelivery("not a webhook delivery: no entry list")
    if body.get("object") not in (None, "page", "instagram"):
        raise MalformedDelivery(f"object {body.get('object')!r} is not 'page' or 'instagram'")
    instagram = body.get("object") == "instagram"
    events: list[FacebookEvent] = []
    for entry in body["entry"]:
        if not isinstance(entry, dict):
            continue
        page_id = _str(entry.get("id"))
        if page_id is None:
            continue
        for change in entry.get("changes") or []:
            ev = _parse_ig_change(page_id, change) if instagram else _parse_change(page_id, change)
            if ev is not None:
                events.append(ev)
        for item in entry.get("messaging") or []:
            mev = _parse_messaging(page_id, item)
            if mev is not None:
                events.append(mev)
    return events


def _parse_change(page_id: str, change: Any) -> FacebookEvent | None:
    if not isinstance(change, dict) or change.get("field") != "feed":
        return None
    value = change.get("value")
    if not isinstance(value, dict):
        return None
    item, verb = value.get("item"), value.get("verb")
    post_id = _str(value.get("post_id"))
    if item in ("post", "status", "photo", "video", "share") and verb == "remove" and post_id:
        return PostRemovedEvent(page_id=page_id, post_id=post_id)
    if item != "comment":
        log.debug("feed item ignored", extra={"item": item, "verb": verb})
        return None
    comment_id = _str(value.get("comment_id"))
    if comment_id is None or post_id is None or not isinstance(verb, str):
        log.warning("comment change without ids ignored")
        return None
    raw_from = value.get("from")
    sender: dict[str, Any] = raw_from if isinstance(raw_from, dict) else {}
    author_id = _str(sender.get("id")) or ""
    name = sender.get("name") if isinstance(sender.get("name"), str) else None
    message = value.get("message")
    # a photo, sticker or GIF comes as ``photo``, a video as ``video``: their URLs
    shown = [(k, _str(value.get(k))) for k in ("photo", "video")]
    media = tuple(Attachment("image" if k == "photo" else k, u) for k, u in shown if u)
    return CommentEvent(
        page_id=page_id,
        post_id=post_id,
        comment_id=comment_id,
        parent_id=_str(value.get("parent_id")),
        verb=verb,
        author=FbUser(author_id, name),
        text=message if isinstance(message, str) else "",
        created_time=_time(value.get("created_time")),
        attachments=media,
    )


def _parse_ig_change(account_id: str, change: Any) -> CommentEvent | None:
    """An Instagram ``comments`` change: a new comment on a media of the account. The media
    stands for the post (one task per media); a top-level comment's parent is the media."""
    if not isinstance(change, dict) or change.get("field") != "comments":
        if isinstance(change, dict):
            log.debug("instagram field ignored", extra={"field": change.get("field")})
        return None
    value = _dict(change.get("value"))
    comment_id = _str(value.get("id"))
    media_id = _str(_dict(value.get("media")).get("id"))
    if comment_id is None or media_id is None:
        log.warning("instagram comment without ids ignored")
        return None
    sender = _dict(value.get("from"))
    username = sender.get("username")
    text = value.get("text")
    return CommentEvent(
        page_id=account_id,
        post_id=media_id,
        comment_id=comment_id,
        parent_id=_str(value.get("parent_id")) or media_id,
        verb="add",
        author=FbUser(
            _str(sender.get("id")) or "", username if isinstance(username, str) else None
        ),
        text=text if isinstance(text, str) else "",
        created_time=_time(value.get("created_time") or value.get("timestamp")),
        instagram=True,
    )


def _parse_messaging(page_id: str, item: Any) -> MessengerEvent | None:
    if not isinstance(item, dict):
        return None
    message = item.get("message")
    sender = _str(_dict(item.get("sender")).get("id"))
    recipient = _str(_dict(item.get("recipient")).get("id"))
    if not isinstance(message, dict):
        # reactions and postbacks (a tapped button) are shown; deliveries and reads not
        return _reaction_or_postback(page_id, item, sender, recipient)
    mid = _str(message.get("mid"))
    if not sender or not recipient or not mid:
        return None
    raw_text = message.get("text")
    text: str = raw_text if isinstance(raw_text, str) else ""
    raw_attachments = message.get("attachments")
    attachments = tuple(
        Attachment(str(a.get("type") or "file"), _str(_dict(a.get("payload")).get("url")))
        for a in (raw_attachments if isinstance(raw_attachments, list) else [])
        if isinstance(a, dict)
    )
    if not text and raw_attachments:
        # what it was, and where Facebook serves it (a link staff can open); pictures and
        # files are shown as media, with their link where they cannot be
        text = "\n".join(
            f"[{a.kind}] {a.url}" if a.url else f"[{a.kind}]" for a in attachments if not a.is_media
        )
        if not text and not any(a.is_media for a in attachments):
            text = "[attachment]"
    return MessengerEvent(
        page_id=page_id,
        sender_id=sender,
        recipient_id=recipient,
        mid=mid,
        text=text,
        timestamp=_time(item.get("timestamp")),
        is_echo=bool(message.get("is_echo")),
        app_id=_str(message.get("app_id")),
        metadata=message.get("metadata") if isinstance(message.get("metadata"), str) else None,
        attachments=attachments,
        is_deleted=bool(message.get("is_deleted")),
    )


def _reaction_or_postback(
    page_id: str, item: dict[str, Any], sender: str | None, recipient: str | None
) -> MessengerEvent | None:
    if not sender or not recipient:
        return None
    reaction, postback = _dict(item.get("reaction")), _dict(item.get("postback"))
    stamp = _str(item.get("timestamp")) or ""
    if reaction:
        emoji = reaction.get("emoji") or reaction.get("reaction") or "a reaction"
        done = "removed" if reaction.get("action") == "unreact" else "reacted"
        text = f"[{done} {emoji} to a message]"
        # a reaction has no mid of its own: one made of what it is keeps repeats out
        mid = f"reaction:{reaction.get('mid')}:{sender}:{reaction.get('action')}:{stamp}"
    elif postback:
        title = postback.get("title") or postback.get("payload") or ""
        text = f"[tapped the button “{title}”]"
        mid = _str(postback.get("mid")) or f"postback:{sender}:{stamp}"
    else:
        return None  # delivery and read receipts: nothing for staff to see
    return MessengerEvent(
        page_id=page_id,
        sender_id=sender,
        recipient_id=recipient,
        mid=mid[:128],
        text=text,
        timestamp=_time(item.get("timestamp")),
    )
