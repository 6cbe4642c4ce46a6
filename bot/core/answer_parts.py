"""The parts of a staff answer on Facebook, kept as they go out.

In Messenger an answer's text and each of its files are messages of their own, sent one
after the other. Each part's Facebook id is kept as soon as it is known: the text's as the
message's ``fb_id`` (as for any answer), a file's in its entry of ``media`` (``fb_id``),
together with the time its send began (``sending_at``) while that send has no clear
answer yet. So a retry sends only the parts Facebook does not have, and looks on Facebook
first for the one whose send ended unclearly. The webhook's echo of a part fills in its
id too: the echo's ``metadata`` names the answer and, for a file, its place.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot import routing
from bot.domain import Direction
from bot.storage.models import Message
from bot.storage.repositories import Repositories

SENT = "fb_id"
SENDING_AT = "sending_at"


def _entry(msg: Message, part: int) -> dict[str, Any]:
    media = msg.media or []
    return media[part] if 0 <= part < len(media) else {}


def sent_id(msg: Message, part: int) -> str | None:
    """The Facebook id of the answer's file ``part``, once it is known to be there."""
    value = _entry(msg, part).get(SENT)
    return str(value) if value else None


def sending_at(msg: Message, part: int) -> float | None:
    """When the send of file ``part`` began, if it may have reached Facebook."""
    value = _entry(msg, part).get(SENDING_AT)
    return float(value) if isinstance(value, int | float) else None


def on_facebook(msg: Message, call: routing.AnswerCall) -> bool:
    """Whether this call's part of the answer is known to be on Facebook."""
    if call.part is None:
        return msg.fb_id is not None
    return sent_id(msg, call.part) is not None


class PartIds:
    """The Facebook ids of an answer's parts as they become known during one try."""

    def __init__(self, msg: Message) -> None:
        self.text = msg.fb_id
        self.files = {
            i: found for i in range(len(msg.media or [])) if (found := sent_id(msg, i)) is not None
        }

    def first(self) -> str | None:
        """The answer's id: its text's, else its first file's."""
        return self.text or next((self.files[i] for i in sorted(self.files)), None)


def with_part(media: list[dict[str, Any]] | None, part: int, **values: Any) -> list[dict[str, Any]]:
    """``media`` with the entry of ``part`` updated (a value of None removes its key): a
    new list, so that the JSON column is seen as changed."""
    out = [dict(m) for m in media or []]
    if 0 <= part < len(out):
        for key, value in values.items():
            if value is None:
                out[part].pop(key, None)
            else:
                out[part][key] = value
    return out


def sent_file_ids(messages: list[Message]) -> set[str]:
    """The Facebook ids of the files these answers sent as messages of their own."""
    return {
        str(m[SENT])
        for msg in messages
        for m in msg.media or ()
        if isinstance(m, dict) and m.get(SENT)
    }


async def bind_echo(
    s: AsyncSession,
    repo: Repositories,
    message_id: int,
    part: int | None,
    fb_id: str | None,
    page_id: str,
) -> None:
    """Our own send came back through the webhook: keep its id on the answer (its text),
    or on the file it names, where that file's id is not known yet. A file's echo names a
    staff answer of a task of this Page, or it is not ours to keep."""
    if part is None:
        answer = await repo.messages.get(s, message_id)
        if answer is not None:
            answer.fb_id = fb_id
        return
    # locked: the answer's job may be keeping another file's id on the same row
    row = await s.get(Message, message_id, with_for_update=True)
    if (
        row is None
        or row.direction != Direction.STAFF
        or fb_id is None
        or sent_id(row, part) is not None
    ):
        return
    task = await repo.tasks.get(s, row.task_id)
    if task is None or task.page_id != page_id or part >= len(row.media or []):
        return
    row.media = with_part(row.media, part, **{SENT: fb_id})
