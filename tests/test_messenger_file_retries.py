"""Every answer reaches Facebook once, also with pictures: in Messenger an answer's text and
each of its files are messages of their own, so each part is known on its own. An echo of
the text does not settle an answer whose picture has not gone yet; a picture whose send
ended unclearly (a 5xx after Facebook stored it, a timeout) is looked for before it is
sent again, and one Facebook did not store is sent again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.emulators.stage import Stage
from tests.conftest import CHAT_ID, PAGE_ID
from tests.helpers import thread_texts
from tests.test_messenger import DANA, dm, person_writes
from tests.test_staff_media import PHOTO, attachment_url, fetch, staff_photo

GRAPH_500 = {"error": {"message": "An unexpected error has occurred.", "code": 2}}
# Facebook's own estimate of when to try again (0.05 min): the retry waits 3 s, time for
# the webhook's echo to come first
LATER = {
    "X-Business-Use-Case-Usage": '{"'
    + PAGE_ID
    + '": [{"type": "pages", "estimated_time_to_regain_access": 0.05}]}'
}


async def dana(st: Stage) -> int:
    return await person_writes(st, DANA, "Dana Kim", "mid.1", timedelta(minutes=5))


async def send_photo(st: Stage, topic: int, caption: str | None = None) -> int:
    """A staff photo (with a caption or not) into the topic; its message id in the chat.
    Does not wait for the outbox."""
    update = staff_photo(st, topic, PHOTO, caption)
    assert (await st.telegram_update(update)).status == 200
    return int(update["message"]["message_id"])


def parts(st: Stage) -> list[str]:
    """What Dana received, in order: "text: …" or "image"."""
    return [
        f"text: {m['message']['text']}"
        if "text" in m["message"]
        else m["message"]["attachment"]["type"]
        for m in st.graph.messages
        if m.get("recipient") == {"id": DANA}
    ]


def delivered(st: Stage, chat_message_id: int) -> bool:
    return st.telegram.chats[CHAT_ID].reactions.get(chat_message_id) == ["👍"]


def echo_of(sent: dict[str, Any]) -> dict[str, Any]:
    """The webhook's echo of one of our sends: its mid and the metadata it carried."""
    text = str(sent["message"].get("text", ""))
    body = dm(sent["message_id"], text, echo=True, psid=DANA, metadata=sent["message"]["metadata"])
    if "attachment" in sent["message"]:
        item = body["entry"][0]["messaging"][0]
        del item["message"]["text"]
        a = sent["message"]["attachment"]
        item["message"]["attachments"] = [
            {"type": a["type"], "payload": {"url": "https://cdn.fbsbx.example/echo"}}
        ]
    return body


async def test_an_echo_of_the_text_before_its_picture_went_still_sends_the_picture_once(
    connected: Stage,
) -> None:
    st = connected
    topic = await dana(st)
    # the caption is stored, answered 500; the retry comes 3 s later
    st.graph.add_response("messages", GRAPH_500, status=500, apply=True, headers=LATER)
    staff_message = await send_photo(st, topic, caption="Here it is in blue")
    await st.until(lambda: len(st.graph.messages) == 1)
    [text] = st.graph.messages
    await st.deliver_facebook(echo_of(text))  # fills the text's id before the retry
    await st.settled()
    assert parts(st) == ["text: Here it is in blue", "image"]
    assert len(st.graph.called("messages")) == 2
    assert (await fetch(st, attachment_url(st.graph.messages[1])))[:2] == (200, PHOTO)
    assert delivered(st, staff_message)
    assert not [t for t in thread_texts(st, topic) if "Not delivered" in t or "(Page)" in t]


async def test_a_photo_alone_stored_by_facebook_that_answered_500_is_not_sent_twice(
    connected: Stage,
) -> None:
    st = connected
    topic = await dana(st)
    st.graph.add_response("messages", GRAPH_500, status=500, apply=True)
    staff_message = await send_photo(st, topic)
    await st.settled()
    assert parts(st) == ["image"]
    assert len(st.graph.called("messages")) == 1
    [looked] = st.graph.called("conversations")  # looked before sending again
    assert "attachments" in looked.params["fields"]
    assert delivered(st, staff_message)


async def test_a_photo_alone_whose_send_timed_out_after_storing_is_not_sent_twice(
    connected: Stage,
) -> None:
    st = connected
    topic = await dana(st)
    # stored, then the answer comes after our 2 s call timeout
    st.graph.add_response("messages", {"message_id": "late"}, apply=True, delay=2.5)
    staff_message = await send_photo(st, topic)
    await st.settled()
    assert parts(st) == ["image"]
    assert len(st.graph.called("messages")) == 1
    assert delivered(st, staff_message)


async def test_the_echo_of_a_photo_before_the_retry_settles_it_without_a_look(
    connected: Stage,
) -> None:
    st = connected
    topic = await dana(st)
    st.graph.add_response("messages", GRAPH_500, status=500, apply=True, headers=LATER)
    staff_message = await send_photo(st, topic)
    await st.until(lambda: len(st.graph.messages) == 1)
    [photo] = st.graph.messages
    assert photo["message"]["metadata"].endswith(":0")  # names the file in the answer
    await st.deliver_facebook(echo_of(photo))
    await st.settled()
    assert parts(st) == ["image"]
    assert len(st.graph.called("messages")) == 1
    assert st.graph.called("conversations") == []
    assert delivered(st, staff_message)
    assert not [t for t in thread_texts(st, topic) if "(Page)" in t]


async def test_a_photo_facebook_did_not_store_is_sent_again_not_taken_for_an_earlier_one(
    connected: Stage,
) -> None:
    st = connected
    topic = await dana(st)
    await send_photo(st, topic, caption="The blue one")  # text and photo, both delivered
    await st.settled()
    # a 500 before anything was stored: the look finds only the earlier photo, ours
    st.graph.add_response("messages", GRAPH_500, status=500)
    staff_message = await send_photo(st, topic)
    await st.settled()
    assert parts(st) == ["text: The blue one", "image", "image"]
    assert len(st.graph.called("messages")) == 4
    assert st.graph.called("conversations")
    assert delivered(st, staff_message)
