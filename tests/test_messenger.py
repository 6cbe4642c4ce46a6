"""Messenger: one task per contact on the page's inbox; answers go out through the Send API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot.emulators.stage import Stage, comment_delivery
from tests.conftest import AGENT, CHAT_ID, PAGE_ID, PAGE_NAME, PAGE_TOKEN, load_fixture
from tests.helpers import message_id_of, only_topic, shown, thread_texts, topics


def dm(
    mid: str,
    text: str,
    *,
    echo: bool = False,
    psid: str = "1423587017700273",
    age: timedelta = timedelta(0),
    metadata: str | None = None,
) -> dict[str, Any]:
    """A message (or the Page's echo) sent ``age`` ago, by Facebook's timestamp."""
    item = load_fixture("fb_messenger_messaging_item_text.json")
    item["message"].update(mid=mid, text=text)
    item["sender"]["id"], item["recipient"]["id"] = (PAGE_ID, psid) if echo else (psid, PAGE_ID)
    item["timestamp"] = int((datetime.now(UTC) - age).timestamp() * 1000)
    if echo:
        item["message"]["is_echo"] = True
    if metadata is not None:
        item["message"]["metadata"] = metadata
    return {"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "messaging": [item]}]}


async def test_direct_messages_make_one_task_and_answers_use_the_send_api(
    connected: Stage,
) -> None:
    connected.graph.add_profile("1423587017700273", "Dana Kim")
    await connected.deliver_facebook(dm("mid.1", "Hi, is the shop open?"))
    await connected.deliver_facebook(dm("mid.2", "Today I mean"))
    await connected.deliver_facebook(dm("mid.2", "Today I mean"))  # a repeat
    await connected.settled()
    topic = only_topic(connected)
    assert topics(connected)[topic]["name"] == "Message from Dana Kim"
    assert thread_texts(connected, topic)[1:] == [
        "Dana Kim: Hi, is the shop open?",
        "Dana Kim: Today I mean",
    ]
    await connected.telegram_update(
        connected.telegram.user_message(CHAT_ID, AGENT, "Yes, until 6!", thread_id=topic)
    )
    await connected.settled()
    [sent] = connected.graph.messages
    assert sent["recipient"] == {"id": "1423587017700273"}
    assert sent["message"]["text"] == "Yes, until 6!"
    assert sent["messaging_type"] == "RESPONSE" and "tag" not in sent
    assert connected.graph.called("messages")[-1].token == PAGE_TOKEN
    # the echo of our own answer is not shown again
    before = thread_texts(connected, topic)
    await connected.deliver_facebook(dm(sent["message_id"], "Yes, until 6!", echo=True))
    await connected.settled()
    assert thread_texts(connected, topic) == before


async def test_a_send_that_facebook_stored_but_answered_500_is_not_sent_twice(
    connected: Stage,
) -> None:
    await connected.deliver_facebook(dm("mid.1", "Hello?"))
    await connected.settled()
    topic = only_topic(connected)
    error = {"error": {"message": "Service temporarily unavailable", "code": 2}}
    connected.graph.add_response("messages", error, status=500, apply=True)
    await connected.telegram_update(
        connected.telegram.user_message(CHAT_ID, AGENT, "Hi Dana!", thread_id=topic)
    )
    await connected.settled()
    assert [m["message"]["text"] for m in connected.graph.messages] == ["Hi Dana!"]
    assert len(connected.graph.called("messages")) == 1
    assert connected.graph.called("conversations")  # looked before sending again


# --- issue 12: the 24-hour rule, echoes, merges, private replies ----------------------------

DANA, EVA, FINN = "1423587017700273", "2000000000000002", "3000000000000003"
POST = f"{PAGE_ID}_139560936755999"


def topic_named(st: Stage, name: str) -> int:
    [found] = [t for t, info in topics(st).items() if info["name"] == name]
    return found


async def staff_says(st: Stage, text: str, topic: int, reply_to: int | None = None) -> None:
    update = st.telegram.user_message(CHAT_ID, AGENT, text, thread_id=topic, reply_to=reply_to)
    assert (await st.telegram_update(update)).status == 200
    await st.settled()


async def person_writes(st: Stage, psid: str, name: str, mid: str, age: timedelta) -> int:
    st.graph.add_profile(psid, name)
    st.graph.person_wrote(PAGE_ID, psid, datetime.now(UTC) - age)
    await st.deliver_facebook(dm(mid, f"Hello from {name}", psid=psid, age=age))
    await st.settled()
    return topic_named(st, f"Message from {name}")


def sent_to(st: Stage, psid: str) -> list[dict[str, Any]]:
    return [m for m in st.graph.messages if m.get("recipient") == {"id": psid}]


async def test_answers_follow_messengers_24_hour_rule(connected: Stage) -> None:
    dana = await person_writes(connected, DANA, "Dana Kim", "mid.d", timedelta(hours=1))
    eva = await person_writes(connected, EVA, "Eva Lund", "mid.e", timedelta(hours=30))
    finn = await person_writes(connected, FINN, "Finn Roe", "mid.f", timedelta(days=8))
    for topic in (dana, eva, finn):
        await staff_says(connected, "Sorry for the wait!", topic)

    [to_dana] = sent_to(connected, DANA)
    assert to_dana["messaging_type"] == "RESPONSE" and "tag" not in to_dana
    assert not any("HUMAN_AGENT" in t for t in thread_texts(connected, dana))

    [to_eva] = sent_to(connected, EVA)
    assert (to_eva["messaging_type"], to_eva["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")
    assert any("HUMAN_AGENT tag" in t for t in thread_texts(connected, eva))

    assert sent_to(connected, FINN) == []  # refused here, before Facebook refuses it
    assert len(connected.graph.called("messages")) == 2
    [refusal] = [t for t in thread_texts(connected, finn) if "Not delivered" in t]
    assert "8 days old" in refusal


async def test_a_quick_reply_after_24_hours_is_not_tagged(connected: Stage) -> None:
    from tests.conftest import ADMIN

    eva = await person_writes(connected, EVA, "Eva Lund", "mid.e", timedelta(hours=30))
    await connected.telegram_update(
        connected.telegram.user_message(CHAT_ID, ADMIN, "/quick add thanks Thanks for waiting!")
    )
    await connected.settled()
    await staff_says(connected, "/quick thanks", eva)
    assert sent_to(connected, EVA) == []
    [refusal] = [t for t in thread_texts(connected, eva) if "Not delivered" in t]
    assert "not a quick reply" in refusal


async def test_our_echo_is_not_shown_and_the_pages_inbox_is_shown_as_the_page(
    connected: Stage,
) -> None:
    dana = await person_writes(connected, DANA, "Dana Kim", "mid.1", timedelta(minutes=5))
    await staff_says(connected, "On its way", dana)
    [sent] = sent_to(connected, DANA)
    assert sent["message"]["metadata"] == "pagedesk:2"
    before = thread_texts(connected, dana)
    # the echo of our send, and an echo with our metadata but another mid (never text)
    await connected.deliver_facebook(dm(sent["message_id"], "On its way", echo=True, psid=DANA))
    await connected.deliver_facebook(
        dm("mid.other", "changed", echo=True, psid=DANA, metadata="pagedesk:2")
    )
    await connected.settled()
    assert thread_texts(connected, dana) == before
    # the same words, written by a person in Meta Business Suite: shown, as the Page
    await connected.deliver_facebook(dm("mid.inbox", "On its way", echo=True, psid=DANA))
    await connected.settled()
    new = thread_texts(connected, dana)[len(before) :]
    assert len(new) == 1 and "On its way" in new[0] and PAGE_NAME in new[0]


async def comment(st: Stage, cid: str, text: str, age: timedelta = timedelta(0)) -> None:
    created = int((datetime.now(UTC) - age).timestamp())
    st.graph.add_post(POST, "New menu!", "2026-01-01T10:00:00+0000")
    st.graph.add_comment(
        POST,
        cid,
        ("u1", "Ann Lee"),
        text,
        datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000"),
    )
    delivery = comment_delivery(PAGE_ID, POST, cid, ("u1", "Ann Lee"), text, created_time=created)
    await st.deliver_facebook(delivery)
    await st.settled()


def comment_topic(st: Stage) -> int:
    [found] = [t for t, info in topics(st).items() if not info["name"].startswith("Message from")]
    return found


async def test_a_messenger_task_merged_into_a_comment_task_answers_as_a_comment(
    connected: Stage,
) -> None:
    await comment(connected, "c_1", "Is it vegan?")  # task #1
    dana = await person_writes(connected, DANA, "Dana Kim", "mid.1", timedelta(minutes=5))
    post_topic = comment_topic(connected)
    await staff_says(connected, "/merge 2", post_topic)
    await connected.deliver_facebook(dm("mid.2", "Any news?", psid=DANA))
    await connected.settled()
    assert "Dana Kim: Any news?" in thread_texts(connected, post_topic)
    assert "Dana Kim: Any news?" not in thread_texts(connected, dana)
    await staff_says(
        connected,
        "Yes, vegan",
        post_topic,
        reply_to=message_id_of(connected, post_topic, "Any news?"),
    )
    assert sent_to(connected, DANA) == []  # never the Send API from a comment task
    [posted] = connected.graph.comments
    assert (posted.parent_id, posted.message) == ("c_1", "Yes, vegan")
    assert any("this task's channel" in t for t in thread_texts(connected, post_topic))


async def test_a_comment_task_merged_into_a_messenger_task_answers_in_messenger(
    connected: Stage,
) -> None:
    dana = await person_writes(connected, DANA, "Dana Kim", "mid.1", timedelta(minutes=5))
    await comment(connected, "c_1", "Is it vegan?")  # task #2
    await staff_says(connected, "/merge 2", dana)
    await comment(connected, "c_2", "Hello again")
    assert "Ann Lee: Hello again" in thread_texts(connected, dana)
    await staff_says(
        connected, "Yes, vegan", dana, reply_to=message_id_of(connected, dana, "Hello again")
    )
    assert connected.graph.comments == []  # never a comment call with a Messenger id
    [sent] = sent_to(connected, DANA)
    assert sent["message"]["text"] == "Yes, vegan"
    assert any("Sent in Messenger" in t for t in thread_texts(connected, dana))


async def test_dm_answers_a_commenter_privately_once_within_7_days(connected: Stage) -> None:
    await comment(connected, "c_1", "How much is it?")
    post_topic = comment_topic(connected)
    await staff_says(connected, "/dm It is 5 euros, Ann", post_topic)
    [private] = connected.graph.messages
    assert private["recipient"] == {"comment_id": "c_1"}
    assert private["message"]["text"] == "It is 5 euros, Ann"
    assert connected.graph.called("messages")[-1].params["path"] == f"{PAGE_ID}/messages"
    assert any("privately in Messenger" in t for t in thread_texts(connected, post_topic))

    await staff_says(connected, "/dm Once more", post_topic)
    assert len(connected.graph.called("messages")) == 1
    assert any("already answered privately" in t for t in thread_texts(connected, post_topic))

    # the person answers in Messenger: their task's root links back to the comment's
    psid = connected.graph.psids["u1"]
    connected.graph.add_profile(psid, "Ann Lee")
    await connected.deliver_facebook(dm("mid.ann", "Thanks! Can I order?", psid=psid))
    await connected.settled()
    ann = topic_named(connected, "Message from Ann Lee")
    texts = thread_texts(connected, ann)
    assert "private reply to a comment in task #1" in texts[0]
    assert "Ann Lee: Thanks! Can I order?" in texts
    assert any(
        "answered the private reply in Messenger: task #2" in t
        for t in thread_texts(connected, post_topic)
    )
    await staff_says(connected, "Sure!", ann)
    assert sent_to(connected, psid)[-1]["messaging_type"] == "RESPONSE"


async def test_a_commenter_who_answers_a_dm_in_messenger_is_one_contact(connected: Stage) -> None:
    await comment(connected, "c_1", "How much is it?")  # task #1, contact #1: Ann's comment id
    post_topic = comment_topic(connected)
    await staff_says(connected, "/dm It is 5 euros, Ann", post_topic)
    psid = connected.graph.psids["u1"]  # Ann's page-scoped id in Messenger
    connected.graph.add_profile(psid, "Ann Lee")
    await connected.deliver_facebook(dm("mid.ann", "Can I order?", psid=psid))
    await connected.settled()
    ann = topic_named(connected, "Message from Ann Lee")  # task #2
    # from either task: one card, with both ids and both channels' tasks, and both offered
    for topic in (post_topic, ann):
        await staff_says(connected, "/contact", topic)
        card = shown(connected.telegram.thread_messages(CHAT_ID, topic)[-1])
        assert card.startswith("👤 Ann Lee (contact #1)")
        assert "Facebook: https://www.facebook.com/u1\n" in card
        assert f"Messenger id: {psid} (contact #2, Ann Lee)" in card
        assert "• #1 open: " in card and "(comments on post " in card
        assert "• #2 open: Message from Ann Lee (Messenger)" in card
        buttons = connected.telegram.called("sendMessage")[-1].params["reply_markup"]
        assert [row[0]["text"] for row in buttons["inline_keyboard"]] == [
            "✉️ Write in Messenger",
            "💬 Reply to latest comment",
        ]
    # and writing first finds each channel from the other's task
    await staff_says(connected, "/write messenger Your order is ready", post_topic)
    assert sent_to(connected, psid)[-1]["message"]["text"] == "Your order is ready"
    await staff_says(connected, "/write comment Thanks for ordering!", ann)
    [posted] = connected.graph.comments
    assert (posted.parent_id, posted.message) == ("c_1", "Thanks for ordering!")


async def test_dm_on_a_comment_older_than_7_days_is_refused(connected: Stage) -> None:
    await comment(connected, "c_old", "Still open?", age=timedelta(days=10))
    post_topic = comment_topic(connected)
    await staff_says(connected, "/dm We are", post_topic)
    assert connected.graph.called("messages") == []
    assert any("10 days old" in t for t in thread_texts(connected, post_topic))


def messaging(item: dict[str, Any]) -> dict[str, Any]:
    return {"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "messaging": [item]}]}


async def test_reactions_postbacks_and_deletions_show_reads_do_not(connected: Stage) -> None:
    dana = await person_writes(connected, DANA, "Dana Kim", "mid.1", timedelta(minutes=5))
    now = int(datetime.now(UTC).timestamp() * 1000)
    who = {"sender": {"id": DANA}, "recipient": {"id": PAGE_ID}, "timestamp": now}
    react = {"reaction": {"mid": "mid.1", "action": "react", "reaction": "love", "emoji": "❤"}}
    await connected.deliver_facebook(messaging({**who, **react}))
    await connected.deliver_facebook(messaging({**who, **react}))  # a repeat
    tap = {"postback": {"mid": "mid.pb", "title": "Opening hours", "payload": "HOURS"}}
    await connected.deliver_facebook(messaging({**who, **tap}))
    await connected.deliver_facebook(messaging({**who, "read": {"watermark": now}}))
    await connected.deliver_facebook(
        messaging({**who, "delivery": {"mids": ["mid.1"], "watermark": now}})
    )
    await connected.deliver_facebook(
        messaging({**who, "message": {"mid": "mid.1", "is_deleted": True}})
    )
    await connected.settled()
    texts = thread_texts(connected, dana)
    assert sum("reacted ❤" in t for t in texts) == 1
    assert any("Opening hours" in t for t in texts)
    assert any("Hello from Dana Kim" in t and "removed" in t for t in texts)
    assert len(texts) == 4  # root, message, reaction, postback: reads and deliveries ignored


def with_files(*files: tuple[str, str], text: str | None = None) -> dict[str, Any]:
    """Dana sends pictures or files ((type, url) each), with a text or not."""
    item = load_fixture("fb_messenger_entry_attachment_doc.json")["messaging"][0]
    item["sender"]["id"], item["recipient"]["id"] = DANA, PAGE_ID
    item["timestamp"] = int(datetime.now(UTC).timestamp() * 1000)
    item["message"]["attachments"] = [{"type": t, "payload": {"url": u}} for t, u in files]
    if text is not None:
        item["message"]["text"] = text
    return messaging(item)


async def test_a_customers_image_and_file_show_as_media(connected: Stage) -> None:
    connected.graph.add_profile(DANA, "Dana Kim")
    photo, pdf = "https://scontent.example/p.jpg", "https://cdn.fbsbx.example/menu.pdf"
    await connected.deliver_facebook(with_files(("image", photo), ("file", pdf), text="Look"))
    await connected.settled()
    topic = only_topic(connected)
    shown = connected.telegram.media_messages(CHAT_ID, topic)
    assert [(m["method"], m["media_url"]) for m in shown] == [
        ("sendPhoto", photo),
        ("sendDocument", pdf),
    ]
    assert shown[0]["visible"] == "Dana Kim: Look"  # the message's line is the caption
    assert shown[1]["reply_to_message_id"] == shown[0]["message_id"]
    assert len(thread_texts(connected, topic)) == 1  # the root: no text message besides


async def test_a_picture_telegram_cannot_fetch_shows_as_a_link(connected: Stage) -> None:
    connected.graph.add_profile(DANA, "Dana Kim")
    connected.telegram.unreachable.add("https://scontent.example/big.jpg")
    await connected.deliver_facebook(with_files(("image", "https://scontent.example/big.jpg")))
    await connected.settled()
    topic = only_topic(connected)
    assert connected.telegram.media_messages(CHAT_ID, topic) == []
    assert thread_texts(connected, topic)[1] == "Dana Kim: [image] https://scontent.example/big.jpg"


async def test_a_caption_longer_than_telegram_allows_goes_first_as_text(connected: Stage) -> None:
    connected.graph.add_profile(DANA, "Dana Kim")
    long = "é" * 1100
    await connected.deliver_facebook(with_files(("video", "https://v.example/a.mp4"), text=long))
    await connected.settled()
    topic = only_topic(connected)
    [video] = connected.telegram.media_messages(CHAT_ID, topic)
    assert video["method"] == "sendVideo" and video["caption"] == ""
    assert thread_texts(connected, topic)[1] == f"Dana Kim: {long}"


async def test_a_comment_with_a_photo_or_sticker_shows_it(connected: Stage) -> None:
    delivery = comment_delivery(PAGE_ID, POST, f"{POST}_1", (EVA, "Eva Lund"), "Love it")
    delivery["entry"][0]["changes"][0]["value"]["photo"] = "https://scontent.example/sticker.png"
    await connected.deliver_facebook(delivery)
    await connected.settled()
    topic = only_topic(connected)
    [photo] = connected.telegram.media_messages(CHAT_ID, topic)
    assert photo["method"] == "sendPhoto"
    assert photo["media_url"] == "https://scontent.example/sticker.png"
    assert photo["visible"] == "Eva Lund: Love it"


# --- issue 12, item 5: writing first from a contact card -------------------------------------


def click(st: Stage, message: dict[str, Any], data: str) -> dict[str, Any]:
    return {
        "update_id": 778001 + len(st.telegram.calls),
        "callback_query": {
            "id": "cb-write",
            "chat_instance": "-1",
            "data": data,
            "from": AGENT,
            "message": {**message, "chat": {"id": CHAT_ID, "type": "supergroup"}},
        },
    }


async def ann_on_both_channels(st: Stage) -> tuple[int, int]:
    """Ann commented (task #1) and wrote in Messenger (task #2); one card; both closed."""
    await comment(st, "c_1", "Is it vegan?")
    ann_dm = await person_writes(st, DANA, "Ann Lee", "mid.1", timedelta(hours=2))
    post_topic = comment_topic(st)
    await staff_says(st, "/contact merge 2", post_topic)
    await staff_says(st, "/close", ann_dm)
    await staff_says(st, "/close", post_topic)
    return post_topic, ann_dm


async def test_write_first_with_the_command_on_both_channels(connected: Stage) -> None:
    post_topic, ann_dm = await ann_on_both_channels(connected)
    await staff_says(connected, "/write messenger Your order is ready!", post_topic)
    [sent] = sent_to(connected, DANA)
    assert sent["message"]["text"] == "Your order is ready!"
    assert sent["messaging_type"] == "RESPONSE"
    assert topics(connected)[ann_dm]["closed"] is False  # the channel's task, reopened
    assert "Ines to Ann Lee: Your order is ready!" in thread_texts(connected, ann_dm)
    await staff_says(connected, "/write comment It is vegan now!", ann_dm)
    [posted] = connected.graph.comments
    assert (posted.parent_id, posted.message) == ("c_1", "It is vegan now!")
    assert topics(connected)[post_topic]["closed"] is False
    assert any("It is vegan now!" in t for t in thread_texts(connected, post_topic))


async def test_write_first_in_messenger_follows_the_7_day_rule(connected: Stage) -> None:
    await comment(connected, "c_1", "Is it vegan?")
    await person_writes(connected, DANA, "Ann Lee", "mid.1", timedelta(days=8))
    post_topic = comment_topic(connected)
    await staff_says(connected, "/contact merge 2", post_topic)
    await staff_says(connected, "/write messenger Hello again", post_topic)
    assert sent_to(connected, DANA) == []
    assert "8 days old" in thread_texts(connected, post_topic)[-1]


async def test_the_contact_cards_buttons_open_the_channels_task(connected: Stage) -> None:
    post_topic, ann_dm = await ann_on_both_channels(connected)
    await staff_says(connected, "/contact", post_topic)
    card = connected.telegram.thread_messages(CHAT_ID, post_topic)[-1]
    assert card["visible"].startswith("👤 Ann Lee")
    buttons = connected.telegram.called("sendMessage")[-1].params["reply_markup"]
    assert buttons["inline_keyboard"] == [
        [{"text": "✉️ Write in Messenger", "callback_data": "w:1:messenger"}],
        [{"text": "💬 Reply to latest comment", "callback_data": "w:1:comments"}],
    ]
    assert (await connected.telegram_update(click(connected, card, "w:1:messenger"))).status == 200
    await connected.settled()
    assert topics(connected)[ann_dm]["closed"] is False
    assert "writing first to Ann Lee" in thread_texts(connected, ann_dm)[-1]
    await staff_says(connected, "See you soon", ann_dm)  # written in the reopened task
    assert [m["message"]["text"] for m in sent_to(connected, DANA)] == ["See you soon"]
    await connected.telegram_update(click(connected, card, "w:1:comments"))
    await connected.settled()
    note = connected.telegram.thread_messages(CHAT_ID, post_topic)[-1]
    assert "reply to their comment" in note["visible"]
    assert note["reply_to_message_id"] == message_id_of(connected, post_topic, "Is it vegan?")
