"""Instagram, first step: comments on the Page's connected Instagram business account
become tasks like Facebook comments (one per media); answers and hiding go to the
Instagram edges of the Graph API."""

from __future__ import annotations

import itertools
import time
from typing import Any

from sqlalchemy import select

from bot.emulators.stage import Stage
from bot.fb.webhook import parse_delivery
from bot.storage.models import Page
from tests.conftest import ADMIN, AGENT, CHAT_ID, PAGE_ID, PAGE_NAME, PAGE_TOKEN
from tests.helpers import message_id_of, thread_texts, topics

IG = "17841405309211844"
MEDIA = "17895695668004550"
IDS = itertools.count(17_865_799_348_089_001)


def ig_comment(
    text: str, user: tuple[str, str] = ("232323232", "ann.ig"), media: str = MEDIA
) -> tuple[str, dict[str, Any]]:
    """An Instagram ``comments`` delivery, in the shape of Meta's documented sample."""
    cid = str(next(IDS))
    body = {
        "object": "instagram",
        "entry": [
            {
                "id": IG,
                "time": int(time.time()),
                "changes": [
                    {
                        "field": "comments",
                        "value": {
                            "from": {"id": user[0], "username": user[1]},
                            "media": {"id": media, "media_product_type": "FEED"},
                            "id": cid,
                            "text": text,
                        },
                    }
                ],
            }
        ],
    }
    return cid, body


async def connect_with_instagram(st: Stage) -> None:
    st.graph.add_page(PAGE_ID, PAGE_NAME, PAGE_TOKEN).ig_account_id = IG
    st.telegram.add_chat(CHAT_ID, "Support", is_forum=True, admins={ADMIN["id"]})
    await st.telegram_update(st.telegram.user_message(CHAT_ID, ADMIN, f"/connect {PAGE_ID}"))
    await st.settled()


def test_an_instagram_comment_parses_as_a_comment_on_its_media() -> None:
    cid, body = ig_comment("Love it")
    [ev] = parse_delivery(body)
    assert (ev.page_id, ev.post_id, ev.comment_id, ev.parent_id) == (IG, MEDIA, cid, MEDIA)
    assert (ev.author.id, ev.author.name, ev.text, ev.instagram) == (
        "232323232",
        "ann.ig",
        "Love it",
        True,
    )
    assert not ev.is_reply


async def test_instagram_comments_become_tasks_and_answers_reach_the_replies_edge(
    stage: Stage,
) -> None:
    await connect_with_instagram(stage)
    async with stage.c.db.read() as s:
        assert await s.scalar(select(Page.ig_account_id)) == IG
    first, body = ig_comment("Love it")
    assert (await stage.deliver_facebook(body)).status == 200
    await stage.settled()
    _, body = ig_comment("Price?", user=("454545", "bo.ig"))
    await stage.deliver_facebook(body)
    await stage.settled()
    [topic] = topics(stage)  # one task per media
    assert thread_texts(stage, topic)[1:] == ["ann.ig: Love it", "bo.ig: Price?"]

    ann = message_id_of(stage, topic, "ann.ig: Love it")
    update = stage.telegram.user_message(
        CHAT_ID, AGENT, "Thank you!", thread_id=topic, reply_to=ann
    )
    await stage.telegram_update(update)
    await stage.settled()
    [reply] = stage.graph.called("replies")
    assert (reply.params["path"], reply.params["message"]) == (f"{first}/replies", "Thank you!")
    assert reply.token == PAGE_TOKEN
    assert stage.graph.called("comments") == []
    assert stage.telegram.chats[CHAT_ID].reactions[int(update["message"]["message_id"])] == ["👍"]

    # hiding uses Instagram's field; the Page cannot like an Instagram comment
    markup = stage.telegram.chats[CHAT_ID].messages[ann]["reply_markup"]
    data = {b["text"]: b["callback_data"] for row in markup["inline_keyboard"] for b in row}
    assert "👍 Like" not in data
    click = {
        "update_id": 990001,
        "callback_query": {
            "id": "ig-hide",
            "chat_instance": "-1",
            "data": data["🙈 Hide"],
            "from": AGENT,
            "message": {
                **stage.telegram.chats[CHAT_ID].messages[ann],
                "chat": {"id": CHAT_ID, "type": "supergroup"},
            },
        },
    }
    await stage.telegram_update(click)
    await stage.settled()
    [hide] = stage.graph.called("update_object")
    assert (hide.params["path"], hide.params["hide"]) == (first, "true")
    assert stage.graph.hidden == {first}

    # another media: another task
    _, body = ig_comment("Other photo", media="17895695668009999")
    await stage.deliver_facebook(body)
    await stage.settled()
    assert len(topics(stage)) == 2


async def test_instagram_comment_of_an_unconnected_account_is_ignored(stage: Stage) -> None:
    await connect_with_instagram(stage)
    _, body = ig_comment("Hello")
    body["entry"][0]["id"] = "999"
    assert (await stage.deliver_facebook(body)).status == 200
    await stage.settled()
    assert topics(stage) == {}
