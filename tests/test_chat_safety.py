"""Customer text in the staff chats, end to end: shown whole, shown as text, within what
the platforms accept (the fakes refuse what Telegram and Slack refuse), and a deleted
thread reported as ThreadGone."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from aiogram.exceptions import TelegramBadRequest
from slack_sdk.errors import SlackApiError
from sqlalchemy import select

from bot.emulators.stage import Stage, comment_delivery
from bot.errors import ThreadGone
from bot.platforms.slack import SlackPlatform
from bot.platforms.telegram import TelegramPlatform
from bot.platforms.telegram_text import WORD_JOINER
from bot.platforms.text import utf16_len
from bot.ports import ChatPost, RootMessage
from bot.storage.models import Message
from tests.conftest import CHAT_ID, PAGE_ID, PAGE_TOKEN, load_fixture
from tests.helpers import only_topic, shown, thread_texts

POST = f"{PAGE_ID}_139560936755999"
CHANNEL = "C111"
ADMIN = "W111"
NASTY = ("& \" ' < > " * 400)[:3000]
MARKUP = (
    '<b>x</b> <a href="https://evil.example">click</a> <!channel> <@U123> '
    "<https://evil.example|click> @channel @someone *bold* _it_ /start &amp;"
)
AUTHOR = "Eve <i>@boss</i>"
ROOT = RootMessage(
    task_id=1, title="T", description="d", assignees=(), additional_data="x", status="open"
)


def long_comment(size: int = 8000) -> str:
    """A comment as long as Facebook allows: words, an emoji (two UTF-16 units), markup
    characters and line breaks, no word repeated at the same place."""
    words = []
    n = 0
    while sum(len(w) + 1 for w in words) < size:
        words.append(f"w{n}😀&<{n % 7}>" + ("\n" if n % 50 == 49 else ""))
        n += 1
    return " ".join(words)[:size].strip()


async def comment(st: Stage, cid: str, author: tuple[str, str], text: str, **kw: Any) -> None:
    delivery = comment_delivery(PAGE_ID, POST, cid, author, text, **kw)
    assert (await st.deliver_facebook(delivery)).status == 200
    await st.settled()


def bot_messages(st: Stage, topic: int) -> list[dict[str, Any]]:
    msgs = st.telegram.thread_messages(CHAT_ID, topic)
    return sorted(msgs, key=lambda m: int(m["message_id"]))


def telegram_platform(st: Stage) -> TelegramPlatform:
    platform = st.c.parts.core.platforms["telegram"]
    assert isinstance(platform, TelegramPlatform)
    return platform


def slack_platform(st: Stage) -> SlackPlatform:
    platform = st.c.parts.core.platforms["slack"]
    assert isinstance(platform, SlackPlatform)
    return platform


@pytest.fixture
async def slack(stage: Stage) -> Stage:
    """A page connected to a Slack channel (as in test_slack_tasks)."""
    stage.graph.add_page(PAGE_ID, "Bottender Coffee", PAGE_TOKEN)
    stage.slack.add_user(ADMIN, "Sal", admin=True)
    body = dict(load_fixture("slack_slash_command_body.parsed.json"))
    body.update(
        command="/connect",
        text=PAGE_ID,
        user_id=ADMIN,
        channel_id=CHANNEL,
        trigger_id=f"{time.monotonic_ns()}.trigger",
    )
    status, _ = await stage.slack_request(body, form=True)
    assert status == 200
    await stage.settled()
    return stage


# --- the fakes refuse what the platforms refuse ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<b>unclosed", "can't parse entities"),
        ("<b>x</i>", "can't parse entities"),
        ("<blink>x</blink>", "can't parse entities"),
        ("fish & chips", "can't parse entities"),
        ("&nbsp;", "can't parse entities"),
        ("😀" * 2048 + "x", "message is too long"),  # 2049 characters, 4097 UTF-16 units
        ("<b></b>  ", "message text is empty"),
    ],
)
async def test_fake_telegram_refuses_what_telegram_refuses(
    connected: Stage, text: str, reason: str
) -> None:
    assert connected.c.bot is not None
    with pytest.raises(TelegramBadRequest, match=reason):
        await connected.c.bot.send_message(chat_id=CHAT_ID, text=text, parse_mode="HTML")


async def test_topic_names_fit_telegram(connected: Stage) -> None:
    assert connected.c.bot is not None
    with pytest.raises(TelegramBadRequest, match="TOPIC_NAME_INVALID"):
        await connected.c.bot.create_forum_topic(chat_id=CHAT_ID, name="😀" * 65)
    topic = await telegram_platform(connected).create_thread(str(CHAT_ID), "😀" * 100)
    assert topic is not None
    name = connected.telegram.chats[CHAT_ID].topics[int(topic)]["name"]
    assert name.endswith("…") and utf16_len(name) <= 128


async def test_fake_telegram_measures_visible_utf16_text(connected: Stage) -> None:
    bot = connected.c.bot
    assert bot is not None
    # 4096 units once parsed, much longer as written: accepted
    await bot.send_message(chat_id=CHAT_ID, text="&amp;" * 4000 + "😀" * 48, parse_mode="HTML")
    # without parse_mode the text is taken as written
    await bot.send_message(chat_id=CHAT_ID, text="<b>" * 1365)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(chat_id=CHAT_ID, text="<b>" * 1366)
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(chat_id=CHAT_ID, text=" ")


@pytest.mark.parametrize(
    ("blocks", "fault"),
    [
        ([{"type": "section", "text": {"type": "plain_text", "text": "s"}}] * 51, "/blocks"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}], "/blocks/0/text"),
        ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "/blocks/0"),
        ([{"type": "section", "text": {"type": "plain_text", "text": ""}}], "/blocks/0/text"),
    ],
)
async def test_fake_slack_refuses_what_slack_refuses(
    stage: Stage, blocks: list[dict[str, Any]], fault: str
) -> None:
    client = stage.c.slack_client
    assert client is not None
    with pytest.raises(SlackApiError) as refused:
        await client.chat_postMessage(channel=CHANNEL, text="t", blocks=blocks)
    assert refused.value.response["error"] == "invalid_blocks"
    assert f"[json-pointer:{fault}" in refused.value.response["errors"][0]
    with pytest.raises(SlackApiError, match="msg_too_long"):
        await client.chat_postMessage(channel=CHANNEL, text="t" * 40_001)


# --- a deleted thread -------------------------------------------------------------------------


async def test_telegram_says_thread_gone_when_a_person_deleted_the_topic(
    connected: Stage,
) -> None:
    tg = telegram_platform(connected)
    chat = str(CHAT_ID)
    topic = await tg.create_thread(chat, "T")
    assert topic is not None
    ref = await tg.post_root(chat, topic, ROOT)
    posted = await tg.post(chat, topic, ChatPost(kind="customer", author="Ann", text="hi"))
    connected.telegram.delete_topic(CHAT_ID, int(topic))
    with pytest.raises(ThreadGone):
        await tg.post(chat, topic, ChatPost(kind="customer", author="Ann", text="again"))
    with pytest.raises(ThreadGone):
        await tg.set_thread_state(chat, ref, replace(ROOT, status="closed"))
    with pytest.raises(ThreadGone):
        await tg.mark_delivered(chat, topic, posted)
    # the topic still there but its root message deleted: the root cannot be kept current
    topic = await tg.create_thread(chat, "T2")
    assert topic is not None
    ref = await tg.post_root(chat, topic, ROOT)
    del connected.telegram.chats[CHAT_ID].messages[int(ref.root_message_id)]
    with pytest.raises(ThreadGone):
        await tg.set_thread_state(chat, ref, replace(ROOT, status="closed"))


async def test_slack_says_thread_gone_when_a_person_deleted_the_root(slack: Stage) -> None:
    sp = slack_platform(slack)
    ref = await sp.post_root(CHANNEL, None, ROOT)
    await sp.post(CHANNEL, ref.thread_id, ChatPost(kind="customer", author="Ann", text="hi"))
    slack.slack.delete_message(CHANNEL, ref.root_message_id)
    with pytest.raises(ThreadGone):
        await sp.post(CHANNEL, ref.thread_id, ChatPost(kind="customer", author="Ann", text="x"))
    with pytest.raises(ThreadGone):
        await sp.set_thread_state(CHANNEL, ref, replace(ROOT, status="closed"))


# --- long texts, whole -----------------------------------------------------------------------


async def test_a_post_full_of_markup_characters_opens_a_task_in_telegram(
    connected: Stage,
) -> None:
    connected.graph.add_post(POST, NASTY, "2026-11-20T09:31:16+0000")
    await comment(connected, "c_1", ("u1", "Ann"), "Is it back?")
    topic = only_topic(connected)
    root, *rest = thread_texts(connected, topic)
    assert NASTY.strip() in root
    assert utf16_len(root) <= 4096
    assert rest == ["Ann: Is it back?"]


async def test_a_post_longer_than_a_message_is_shortened_in_the_root(connected: Stage) -> None:
    connected.graph.add_post(POST, "Menu: " + "<latte> & cake. " * 500, "2026-11-20T09:31:16+0000")
    await comment(connected, "c_1", ("u1", "Ann"), "Is it back?")
    root, *rest = thread_texts(connected, only_topic(connected))
    assert utf16_len(root) <= 4096
    assert "Menu: <latte> & cake." in root and "…" in root
    assert "Status: 🟢 open" in root and rest == ["Ann: Is it back?"]


async def test_a_long_comment_is_shown_whole_and_in_order_in_telegram(connected: Stage) -> None:
    text = long_comment()
    await comment(connected, "c_1", ("u1", "Ann"), text)
    topic = only_topic(connected)
    first, *more = bot_messages(connected, topic)[1:]
    parts = [first, *more]
    assert len(parts) >= 2
    bodies = []
    for n, msg in enumerate(parts, start=1):
        seen = shown(msg)
        assert utf16_len(seen) <= 4096
        head = f"Ann ({n}/{len(parts)}): "
        assert seen.startswith(head)
        bodies.append(seen.removeprefix(head))
    assert "".join(bodies).replace(WORD_JOINER, "") == text
    assert all(m["reply_to_message_id"] == first["message_id"] for m in more)
    async with connected.c.db.read() as s:
        stored = await s.scalar(select(Message.chat_message_id).where(Message.fb_id == "c_1"))
    assert stored == str(first["message_id"])  # the post is known by its first part

    # an edit changes the first part, shortened to fit
    await comment(connected, "c_1", ("u1", "Ann"), text + " PS", verb="edited")
    edited = shown(bot_messages(connected, topic)[1])
    assert edited.startswith("Ann (edited): ") and edited.endswith("…")
    assert utf16_len(edited) <= 4096


async def test_a_long_comment_is_one_slack_message_in_several_sections(slack: Stage) -> None:
    text = long_comment()
    await comment(slack, "c_1", ("u1", "Ann"), text)
    [root] = slack.slack.roots(CHANNEL)
    [msg] = slack.slack.thread(CHANNEL, root["ts"])
    sections = [b for b in msg["blocks"] if b["type"] == "section"]
    assert len(sections) >= 3
    assert all(s["text"]["type"] == "plain_text" for s in sections)
    assert "".join(s["text"]["text"] for s in sections) == text


# --- customer text is text ---------------------------------------------------------------------


async def test_customer_markup_is_shown_as_text_in_telegram(connected: Stage) -> None:
    connected.graph.add_post(POST, f"Sale! {MARKUP}", "2026-11-20T09:31:16+0000")
    await comment(connected, "c_1", ("u9", AUTHOR), MARKUP)
    topic = only_topic(connected)
    root, relayed = bot_messages(connected, topic)
    # the name is bold, and "@boss" in it got its word joiner: one unit longer
    assert relayed["entities"] == [{"type": "bold", "offset": 0, "length": len(AUTHOR) + 1}]
    assert shown(relayed).replace(WORD_JOINER, "") == f"{AUTHOR}: {MARKUP}"
    assert "@" + WORD_JOINER + "someone" in shown(relayed)  # no mention Telegram would make
    assert "/" + WORD_JOINER + "start" in shown(relayed)  # no clickable command
    assert "<a" not in relayed["text"] and "<b>x" not in relayed["text"]
    assert f"Sale! {MARKUP}" in shown(root).replace(WORD_JOINER, "")
    assert "evil" not in str(root["entities"])
    sent = connected.telegram.called("sendMessage") + connected.telegram.called("editMessageText")
    to_group = [c for c in sent if int(c.params["chat_id"]) == CHAT_ID]
    assert to_group and all(
        c.params.get("link_preview_options") == {"is_disabled": True} for c in to_group
    )


async def test_customer_markup_is_shown_as_text_in_slack(slack: Stage) -> None:
    slack.graph.add_post(POST, f"Sale! {MARKUP}", "2026-11-20T09:31:16+0000")
    await comment(slack, "c_1", ("u9", AUTHOR), MARKUP)
    [root] = slack.slack.roots(CHANNEL)
    [msg] = slack.slack.thread(CHANNEL, root["ts"])
    context, section = msg["blocks"][0], msg["blocks"][1]
    assert context["elements"][-1] == {"type": "plain_text", "text": AUTHOR, "emoji": True}
    assert section["text"] == {"type": "plain_text", "text": MARKUP, "emoji": True}
    for text in (msg["text"], root["text"]):  # what notifications show
        assert "<!channel>" not in text and "<@U123>" not in text
        assert "<https://evil" not in text and "<b>" not in text
    assert "&lt;!channel&gt;" in msg["text"]
    description = root["blocks"][1]["text"]
    assert description == {"type": "plain_text", "text": f"Sale! {MARKUP}", "emoji": True}
    posts = slack.slack.called("chat.postMessage")
    assert posts and all(
        c.params.get("unfurl_links") is False and c.params.get("unfurl_media") is False
        for c in posts
    )
