"""``python -m bot demo``: the real server between local emulators, a scripted conversation,
and what each side saw. Needs no credentials and no network."""

from __future__ import annotations

import html
import re
import tempfile
from pathlib import Path
from typing import Any

from bot.emulators.stage import OPERATOR_TELEGRAM_ID, Stage, comment_delivery

PAGE_ID = "137542570280111"
PAGE_TOKEN = "demo-page-token"
POST_ID = f"{PAGE_ID}_139560936755999"
CHAT_ID = -1002271335705
ADMIN_ID = OPERATOR_TELEGRAM_ID
ADMIN = {"id": ADMIN_ID, "is_bot": False, "first_name": "Sal", "username": "sal_support"}
AGENT = {"id": 1998627311, "is_bot": False, "first_name": "Ines"}
BAKERY_ID = "206070979425408"
BAKERY_POST = f"{BAKERY_ID}_712750021053074"
SLACK_CHANNEL = "C0SUPPORT"
SLACK_ADMIN = "W0ADMIN"
SLACK_AGENT = "W0AGENT"
ANNA = ("24266381753005180", "Anna Lopez")
BEN = ("24266381753005181", "Ben Okafor")


async def _slack_side(stage: Stage, out: Any) -> bool:
    g, sl = stage.graph, stage.slack
    g.add_page(BAKERY_ID, "Bottender Bakery", "bakery-page-token")
    g.add_post(BAKERY_POST, "Sourdough Saturday: 20% off every loaf", "2026-11-21T07:00:00+0000")
    sl.add_user(SLACK_ADMIN, "Maya", admin=True)
    sl.add_user(SLACK_AGENT, "Tom")
    out("\n6. Slack: an admin runs /connect in #support for a second Page.")
    await stage.slack_request(
        {
            "command": "/connect",
            "text": "Bottender Bakery",
            "user_id": SLACK_ADMIN,
            "channel_id": SLACK_CHANNEL,
            "trigger_id": "1.demo",
            "team_id": "T0G9PQBBK",
        },
        form=True,
    )
    await stage.settled()
    out("7. A customer comments; staff answer in the Slack thread and close with !close.")
    await stage.deliver_facebook(
        comment_delivery(
            BAKERY_ID, BAKERY_POST, "712750021053074_2001", BEN, "Does the offer include rye?"
        )
    )
    await stage.settled()
    root = sl.roots(SLACK_CHANNEL)[0]
    for text in ("Yes, rye too!", "note: check rye stock", "!close"):
        body = sl.message_event(SLACK_CHANNEL, SLACK_AGENT, text, thread_ts=root["ts"])
        await stage.slack_request(body)
        await stage.settled()

    lines = ["", "=== What the staff saw in Slack (#support) ==="]
    for e in sl.ephemeral:
        _say(lines, "(to you)", e["text"])
    root = sl.channels[SLACK_CHANNEL][root["ts"]]
    header = root["blocks"][0]["text"]["text"]
    status = next(
        b["elements"][0]["text"]
        for b in root["blocks"]
        if b["type"] == "context" and "Status:" in b["elements"][0]["text"]
    )
    lines.append(f"\n  [message] {header}  ({status})")
    thread = sorted(
        (
            m
            for ts, m in sl.channels[SLACK_CHANNEL].items()
            if m.get("thread_ts") == root["ts"] and ts != root["ts"]
        ),
        key=lambda m: m["ts"],
    )
    for m in thread:
        who = "bot:" if m.get("bot_id") else sl.users[m["user"]]["real_name"] + ":"
        mark = " ✅" if sl.reactions.get((SLACK_CHANNEL, m["ts"])) else ""
        _say(lines, who, _plain(m["text"].replace("*", "")) + mark)
    lines.append("\n=== What Facebook saw for the Bakery ===")
    bakery = [c for c in g.comments if c.token == "bakery-page-token"]
    for c in bakery:
        lines.append(f"  under {c.parent_id}: {c.message!r}")
    out("\n".join(lines))
    return len(bakery) == 1 and bakery[0].parent_id == "712750021053074_2001" and "closed" in status


def _plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _say(lines: list[str], who: str, text: str) -> None:
    first, *rest = text.splitlines() or [""]
    lines.append(f"  {who:<10} {first}")
    lines.extend(f"  {'':<10} {line}" for line in rest)


async def run_demo(out: Any = print) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        stage = Stage(f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}")
        try:
            await stage.start()
            return await _script(stage, out)
        finally:
            await stage.stop()


async def _script(stage: Stage, out: Any) -> int:
    g, tg = stage.graph, stage.telegram
    g.add_page(PAGE_ID, "Bottender Coffee", PAGE_TOKEN)
    g.add_post(
        POST_ID,
        "New autumn menu: pumpkin latte is back! Which one will you try?",
        "2026-11-20T09:31:16+0000",
    )
    g.add_profile(ANNA[0], ANNA[1], "https://pics.example/anna.jpg")
    tg.add_chat(CHAT_ID, "Bottender Support", admins={ADMIN_ID})

    out(
        "Pagedesk demo: the real server between local emulators of the Graph API, the "
        "Telegram Bot API and the Slack Web API.\n"
    )
    out("1. An admin runs /connect in the support group.")
    await stage.telegram_update(tg.user_message(CHAT_ID, ADMIN, "/connect Bottender Coffee"))
    await stage.settled()

    out("2. Two customers comment on the post; Facebook delivers both in one webhook call.")
    first = comment_delivery(
        PAGE_ID, POST_ID, "139560936755999_1001", ANNA, "Is the pumpkin latte vegan?"
    )
    second = comment_delivery(
        PAGE_ID, POST_ID, "139560936755999_1002", BEN, "Do you still have the oat cookies?"
    )
    first["entry"].append(second["entry"][0])
    resp = await stage.deliver_facebook(first)
    out(f"   Facebook got HTTP {resp.status} once the delivery was stored.")
    await stage.settled()

    topic = next(iter(tg.chats[CHAT_ID].topics))
    relayed = {m["text"]: m["message_id"] for m in tg.thread_messages(CHAT_ID, topic)}
    anna_msg = next(mid for text, mid in relayed.items() if "<b>Anna Lopez</b>:" in text)

    out(
        "3. Staff answer in the topic: one reply to Anna's comment, one plain message "
        "(goes to the latest comment), and an internal note."
    )
    await stage.telegram_update(
        tg.user_message(
            CHAT_ID, AGENT, "Yes! We make it with oat milk.", thread_id=topic, reply_to=anna_msg
        )
    )
    await stage.telegram_update(
        tg.user_message(CHAT_ID, AGENT, "Ben, the oat cookies are back on Monday.", thread_id=topic)
    )
    await stage.telegram_update(
        tg.user_message(CHAT_ID, AGENT, "note: ask the kitchen about cookie stock", thread_id=topic)
    )
    await stage.settled()

    out("4. Facebook echoes the Page's own answers back; they must not show twice.")
    for c in list(g.comments):
        echo = comment_delivery(
            PAGE_ID, POST_ID, c.id, (PAGE_ID, "Bottender Coffee"), c.message, parent_id=c.parent_id
        )
        await stage.deliver_facebook(echo)
    await stage.settled()

    out("5. Staff close the task; the next comment on the post opens a new one.")
    await stage.telegram_update(tg.user_message(CHAT_ID, AGENT, "/close", thread_id=topic))
    await stage.settled()
    await stage.deliver_facebook(
        comment_delivery(
            PAGE_ID, POST_ID, "139560936755999_1003", ANNA, "One more: is it available all day?"
        )
    )
    await stage.settled()

    lines = ["", "=== What the staff saw in Telegram ==="]
    chat = tg.chats[CHAT_ID]
    general = [
        m
        for m in chat.messages.values()
        if m.get("from", {}).get("is_bot") and "message_thread_id" not in m
    ]
    for m in general:
        _say(lines, "bot:", _plain(m["text"]))
    for tid, t in chat.topics.items():
        lines.append(f"\n  [topic] {t['name']}  ({'closed' if t['closed'] else 'open'})")
        for m in sorted(chat.messages.values(), key=lambda m: m["message_id"]):
            if m.get("message_thread_id") != tid or "forum_topic_created" in m:
                continue
            who = "bot:" if m["from"].get("is_bot") else m["from"]["first_name"] + ":"
            mark = " 👍" if chat.reactions.get(m["message_id"]) else ""
            _say(lines, who, _plain(m.get("text", "")) + mark)
    lines.append("\n=== What Facebook saw (comments posted as the Page) ===")
    for c in [c for c in g.comments if c.token == PAGE_TOKEN]:
        lines.append(f"  under {c.parent_id}: {c.message!r}  (page token: {c.token == PAGE_TOKEN})")
    out("\n".join(lines))

    topics = list(chat.topics.values())
    ok = (
        len(topics) == 2
        and topics[0]["closed"]
        and len(g.comments) == 2
        and g.comments[0].parent_id == "139560936755999_1001"
        and g.comments[1].parent_id == "139560936755999_1002"
        and not any("ask the kitchen" in c.message for c in g.comments)
        and sum("Bottender Coffee (Page)" in m.get("text", "") for m in chat.messages.values()) == 0
    )
    ok = await _slack_side(stage, out) and ok
    out("\nDemo " + ("finished: every step behaved as expected." if ok else "FAILED: see above."))
    return 0 if ok else 1
