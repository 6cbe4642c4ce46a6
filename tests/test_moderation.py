"""Moderation of relayed comments: Hide / Unhide / Like / Delete from buttons (Telegram,
Slack) and from commands in reply to a comment (Telegram), Facebook's refusals shown."""

from __future__ import annotations

import itertools
import time
from typing import Any

from sqlalchemy import select

from bot.emulators.stage import Stage, comment_delivery
from bot.storage.models import Message
from tests.conftest import ADMIN, AGENT, CHAT_ID, PAGE_ID, PAGE_TOKEN, load_fixture
from tests.helpers import message_id_of, only_topic, shown, thread_texts

POST = f"{PAGE_ID}_139560936755999"
UPDATE_IDS = itertools.count(880_000_001)


async def comment(st: Stage, cid: str, author: tuple[str, str], text: str) -> None:
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, cid, author, text))
    await st.settled()


def tg_message(st: Stage, mid: int) -> dict[str, Any]:
    return st.telegram.chats[CHAT_ID].messages[mid]


def buttons(st: Stage, mid: int) -> list[tuple[str, str]]:
    markup = tg_message(st, mid).get("reply_markup") or {"inline_keyboard": []}
    return [(b["text"], b["callback_data"]) for row in markup["inline_keyboard"] for b in row]


async def click(st: Stage, mid: int, data: str, user: dict[str, Any] = AGENT) -> None:
    msg = tg_message(st, mid)
    update = {
        "update_id": next(UPDATE_IDS),
        "callback_query": {
            "id": f"cb{mid}{data}{time.monotonic_ns()}",
            "chat_instance": "-1",
            "data": data,
            "from": user,
            "message": {**msg, "chat": {"id": CHAT_ID, "type": "supergroup"}},
        },
    }
    assert (await st.telegram_update(update)).status == 200
    await st.settled()


async def says(
    st: Stage, text: str, topic: int, reply_to: int, user: dict[str, Any] = AGENT
) -> None:
    update = st.telegram.user_message(CHAT_ID, user, text, thread_id=topic, reply_to=reply_to)
    assert (await st.telegram_update(update)).status == 200
    await st.settled()


async def test_telegram_buttons_hide_unhide_like_and_delete_after_confirming(
    connected: Stage,
) -> None:
    await comment(connected, "c_1", ("u1", "Ann"), "Vegan?")
    topic = only_topic(connected)
    ann = message_id_of(connected, topic, "Ann: Vegan?")
    labels = [label for label, _ in buttons(connected, ann)]
    assert labels == ["🙈 Hide", "👍 Like", "🗑 Delete"]
    data = dict(buttons(connected, ann))
    assert all(len(v.encode()) <= 64 for v in data.values())

    await click(connected, ann, data["🙈 Hide"])
    assert "c_1" in connected.graph.hidden
    [hide] = connected.graph.called("update_object")
    assert (hide.params["path"], hide.params["is_hidden"]) == ("c_1", "true")
    assert "hidden by Ines" in shown(tg_message(connected, ann))
    assert [label for label, _ in buttons(connected, ann)] == ["👁 Unhide", "👍 Like", "🗑 Delete"]

    await click(connected, ann, dict(buttons(connected, ann))["👁 Unhide"])
    assert "c_1" not in connected.graph.hidden
    assert "unhidden by Ines" in shown(tg_message(connected, ann))

    await click(connected, ann, dict(buttons(connected, ann))["👍 Like"])
    assert "c_1" in connected.graph.liked
    assert "liked as the Page by Ines" in shown(tg_message(connected, ann))
    assert [label for label, _ in buttons(connected, ann)] == ["🙈 Hide", "🗑 Delete"]

    # Delete asks first, and only an admin may
    await click(connected, ann, dict(buttons(connected, ann))["🗑 Delete"], user=ADMIN)
    assert "c_1" not in connected.graph.deleted
    ask = thread_texts(connected, topic)[-1]
    assert ask == "Delete Ann's comment on Facebook? This cannot be undone."
    ask_id = message_id_of(connected, topic, ask)
    assert [label for label, _ in buttons(connected, ask_id)] == ["Yes, delete", "Cancel"]
    await click(connected, ask_id, dict(buttons(connected, ask_id))["Cancel"], user=ADMIN)
    assert "c_1" not in connected.graph.deleted
    assert shown(tg_message(connected, ask_id)) == "Not deleted."

    await click(connected, ann, dict(buttons(connected, ann))["🗑 Delete"], user=ADMIN)
    ask_id = message_id_of(connected, topic, "This cannot be undone.")
    await click(connected, ask_id, dict(buttons(connected, ask_id))["Yes, delete"], user=ADMIN)
    assert "c_1" in connected.graph.deleted
    assert connected.graph.called("delete_object")[-1].params["path"] == "c_1"
    assert "deleted on Facebook by Sal" in shown(tg_message(connected, ann))
    assert buttons(connected, ann) == []


async def test_telegram_delete_is_for_admins(connected: Stage) -> None:
    await comment(connected, "c_1", ("u1", "Ann"), "Vegan?")
    topic = only_topic(connected)
    ann = message_id_of(connected, topic, "Ann: Vegan?")
    # a staff member forging the confirmed click is refused too
    await click(connected, ann, f"m:{1}:delete_yes")
    await click(connected, ann, dict(buttons(connected, ann))["🗑 Delete"])
    assert connected.graph.called("delete_object") == []
    assert "only the chat's admins can delete" in thread_texts(connected, topic)[-1]


async def test_telegram_commands_in_reply_to_a_comment(connected: Stage) -> None:
    await comment(connected, "c_1", ("u1", "Ann"), "Vegan?")
    await comment(connected, "c_2", ("u2", "Bo"), "Cookies?")
    topic = only_topic(connected)
    ann = message_id_of(connected, topic, "Ann: Vegan?")
    bo = message_id_of(connected, topic, "Bo: Cookies?")
    await says(connected, "/hide", topic, reply_to=bo)
    assert connected.graph.hidden == {"c_2"}
    assert "hidden by Ines" in shown(tg_message(connected, bo))
    await says(connected, "/hide", topic, reply_to=bo)
    assert "already hidden" in thread_texts(connected, topic)[-1]
    await says(connected, "/unhide", topic, reply_to=bo)
    assert connected.graph.hidden == set()
    await says(connected, "/like", topic, reply_to=ann)
    assert connected.graph.liked == {"c_1"}
    assert "liked as the Page by Ines" in shown(tg_message(connected, ann))
    await says(connected, "/delete", topic, reply_to=ann)
    assert "only the chat's admins can delete" in thread_texts(connected, topic)[-1]
    await says(connected, "/delete", topic, reply_to=ann, user=ADMIN)
    ask_id = message_id_of(connected, topic, "Delete Ann's comment on Facebook?")
    await click(connected, ask_id, dict(buttons(connected, ask_id))["Yes, delete"], user=ADMIN)
    assert "c_1" in connected.graph.deleted
    assert "deleted on Facebook by Sal" in shown(tg_message(connected, ann))
    # no comment replied to: said how
    await connected.telegram_update(
        connected.telegram.user_message(CHAT_ID, AGENT, "/hide", thread_id=topic)
    )
    await connected.settled()
    assert "reply to a relayed comment" in thread_texts(connected, topic)[-1]
    assert connected.graph.comments == []  # no command reached Facebook as an answer


async def test_facebook_refusals_are_shown_with_the_reason(connected: Stage) -> None:
    await comment(connected, "c_1", ("u1", "Ann"), "Vegan?")
    await comment(connected, "c_2", ("u2", "Bo"), "Cookies?")
    topic = only_topic(connected)
    connected.graph.cannot_hide.add("c_1")
    ann = message_id_of(connected, topic, "Ann: Vegan?")
    await click(connected, ann, dict(buttons(connected, ann))["🙈 Hide"])
    last = thread_texts(connected, topic)[-1]
    assert last.startswith("⚠️ Facebook refused to hide Ann's comment (asked by Ines)")
    assert "cannot be hidden" in last and "[code 100]" in last
    assert "hidden" not in shown(tg_message(connected, ann))
    # a comment already gone from Facebook: 100/33, shown as removed
    connected.graph.deleted.add("c_2")
    bo = message_id_of(connected, topic, "Bo: Cookies?")
    await click(connected, bo, dict(buttons(connected, bo))["👍 Like"])
    assert "no longer exists" in thread_texts(connected, topic)[-1]
    assert "removed on Facebook" in shown(tg_message(connected, bo))
    async with connected.c.db.read() as s:
        status = await s.scalar(select(Message.fb_status).where(Message.fb_id == "c_2"))
    assert status == "removed"


# --- Slack ---------------------------------------------------------------------------------

CHANNEL = "C111"
SLACK_ADMIN = "W111"
SLACK_AGENT = "W222"


async def slack_connected(st: Stage) -> None:
    st.graph.add_page(PAGE_ID, "Bottender Coffee", PAGE_TOKEN)
    st.slack.add_user(SLACK_ADMIN, "Sal", admin=True)
    st.slack.add_user(SLACK_AGENT, "Ines")
    body = dict(load_fixture("slack_slash_command_body.parsed.json"))
    body.update(
        command="/connect",
        text=PAGE_ID,
        user_id=SLACK_ADMIN,
        channel_id=CHANNEL,
        trigger_id=f"{time.monotonic_ns()}.trigger",
    )
    assert (await st.slack_request(body, form=True))[0] == 200
    await st.settled()


def slack_comment(st: Stage) -> dict[str, Any]:
    root = st.slack.roots(CHANNEL)[-1]
    return st.slack.thread(CHANNEL, root["ts"])[0]


def slack_buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    actions = [b for b in message["blocks"] if b["type"] == "actions"]
    return {e["action_id"]: e for b in actions for e in b["elements"]}


async def slack_click(st: Stage, button: dict[str, Any], user: str = SLACK_AGENT) -> None:
    root = st.slack.roots(CHANNEL)[-1]
    body = {
        "type": "block_actions",
        "user": {"id": user},
        "trigger_id": f"{time.monotonic_ns()}.t",
        "channel": {"id": CHANNEL},
        "container": {"type": "message", "thread_ts": root["ts"]},
        "actions": [{"action_id": button["action_id"], "value": button["value"], "type": "button"}],
    }
    assert (await st.slack_interaction(body))[0] == 200
    await st.settled()


def slack_header(message: dict[str, Any]) -> str:
    """The comment's header line, lowercase (Slack's display names are)."""
    return str(message["blocks"][0]["elements"][-1]["text"]).lower()


async def test_slack_buttons_hide_unhide_like_and_delete(stage: Stage) -> None:
    await slack_connected(stage)
    await comment(stage, "c_1", ("u1", "Ann"), "Vegan?")
    found = slack_buttons(slack_comment(stage))
    assert list(found) == ["comment_reply", "comment_hide", "comment_like", "comment_delete"]
    # Slack asks for Delete's confirmation itself
    assert found["comment_delete"]["confirm"]["text"]["text"].endswith("cannot be undone.")

    await slack_click(stage, found["comment_hide"])
    assert stage.graph.hidden == {"c_1"}
    assert slack_header(slack_comment(stage)).endswith("· hidden by ines")
    await slack_click(stage, slack_buttons(slack_comment(stage))["comment_unhide"])
    assert stage.graph.hidden == set()
    await slack_click(stage, slack_buttons(slack_comment(stage))["comment_like"])
    assert stage.graph.liked == {"c_1"}
    assert slack_header(slack_comment(stage)).endswith("· liked as the page by ines")

    # Delete is for admins: refused to Ines, to her alone; done for Sal
    await slack_click(stage, slack_buttons(slack_comment(stage))["comment_delete"])
    assert stage.graph.deleted == set()
    assert "only the chat's admins can delete" in stage.slack.ephemeral[-1]["text"]
    await slack_click(stage, found["comment_delete"], user=SLACK_ADMIN)
    assert stage.graph.deleted == {"c_1"}
    message = slack_comment(stage)
    assert "deleted on facebook by sal" in slack_header(message)
    assert "comment_hide" not in slack_buttons(message)


async def test_slack_refusal_of_facebook_is_shown_in_the_thread(stage: Stage) -> None:
    await slack_connected(stage)
    await comment(stage, "c_1", ("u1", "Ann"), "Vegan?")
    stage.graph.cannot_hide.add("c_1")
    await slack_click(stage, slack_buttons(slack_comment(stage))["comment_hide"])
    root = stage.slack.roots(CHANNEL)[-1]
    last = stage.slack.thread(CHANNEL, root["ts"])[-1]["text"]
    assert "Facebook refused to hide Ann's comment" in last and "cannot be hidden" in last


async def test_a_comment_with_a_photo_keeps_its_buttons_and_can_be_hidden(
    connected: Stage,
) -> None:
    delivery = comment_delivery(PAGE_ID, POST, f"{POST}_9", ("u9", "Eva"), "Look at this")
    delivery["entry"][0]["changes"][0]["value"]["photo"] = "https://scontent.example/p.png"
    await connected.deliver_facebook(delivery)
    await connected.settled()
    topic = only_topic(connected)
    [photo] = connected.telegram.media_messages(CHAT_ID, topic)
    mid = int(photo["message_id"])
    assert [label for label, _ in buttons(connected, mid)][:1] == ["🙈 Hide"]
    await click(connected, mid, f"{buttons(connected, mid)[0][1]}")
    assert f"{POST}_9" in connected.graph.hidden
    assert "hidden by" in tg_message(connected, mid)["visible"]
    assert "👁 Unhide" in [label for label, _ in buttons(connected, mid)]
