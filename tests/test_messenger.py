"""Messenger: one task per contact on the page's inbox; answers go out through the Send API."""

from __future__ import annotations

from typing import Any

from bot.emulators.stage import Stage
from tests.conftest import AGENT, CHAT_ID, PAGE_ID, PAGE_TOKEN, load_fixture
from tests.helpers import only_topic, thread_texts, topics


def dm(
    mid: str, text: str, *, echo: bool = False, psid: str = "1423587017700273"
) -> dict[str, Any]:
    item = load_fixture("fb_messenger_messaging_item_text.json")
    item["message"].update(mid=mid, text=text)
    item["sender"]["id"], item["recipient"]["id"] = (PAGE_ID, psid) if echo else (psid, PAGE_ID)
    if echo:
        item["message"]["is_echo"] = True
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
    assert sent["message"] == {"text": "Yes, until 6!"}
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
    assert [m["message"] for m in connected.graph.messages] == [{"text": "Hi Dana!"}]
    assert len(connected.graph.called("messages")) == 1
    assert connected.graph.called("conversations")  # looked before sending again
