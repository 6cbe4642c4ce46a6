"""Issue 12, item 2 (staff side): a picture or file staff post in a thread goes to the
customer. Facebook fetches it from ``{PUBLIC_URL}/media/{token}``, which the app serves
from the chat platform (Telegram getFile and the file download) while the link lasts."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import update

from bot.emulators.stage import Stage, comment_delivery
from bot.storage.models import MediaLink
from tests.conftest import AGENT, CHAT_ID, PAGE_ID
from tests.helpers import only_topic, thread_texts
from tests.test_messenger import DANA, dm

PUBLIC = "https://pagedesk.example"  # the Stage's PUBLIC_URL
PHOTO = b"\xff\xd8\xff\xe0 a staff photo \xff\xd9"
POST = f"{PAGE_ID}_139560936755999"


def staff_photo(
    st: Stage, topic: int, content: bytes, caption: str | None = None
) -> dict[str, Any]:
    """A staff member posts a photo (with a caption or not) in the topic, as Telegram sends
    it: its sizes, the largest last."""
    file_id = st.telegram.add_file(content)
    update_ = st.telegram.user_message(CHAT_ID, AGENT, "", thread_id=topic)
    msg = update_["message"]
    del msg["text"]
    msg["photo"] = [
        {"file_id": "thumb-not-sent", "file_unique_id": "t", "width": 90, "height": 90},
        {"file_id": file_id, "file_unique_id": "f", "width": 1280, "height": 960},
    ]
    if caption is not None:
        msg["caption"] = caption
    return update_


async def fetch(st: Stage, url: str) -> tuple[int, bytes, str]:
    assert st.http is not None
    assert url.startswith(f"{PUBLIC}/media/")
    async with st.http.get(st.url + url.removeprefix(PUBLIC)) as resp:
        return resp.status, await resp.read(), resp.content_type


async def post_photo(st: Stage, topic: int, caption: str | None = None) -> None:
    assert (await st.telegram_update(staff_photo(st, topic, PHOTO, caption))).status == 200
    await st.settled()


def attachment_url(sent: dict[str, Any]) -> str:
    attachment = sent["message"]["attachment"]
    assert attachment["type"] == "image"
    return str(attachment["payload"]["url"])


async def test_staff_photo_sent_in_messenger_with_and_without_a_caption(
    connected: Stage,
) -> None:
    connected.graph.add_profile(DANA, "Dana Kim")
    await connected.deliver_facebook(dm("mid.1", "Do you have it in blue?"))
    await connected.settled()
    topic = only_topic(connected)

    await post_photo(connected, topic)
    [alone] = connected.graph.messages
    assert alone["recipient"] == {"id": DANA} and "text" not in alone["message"]
    status, body, kind = await fetch(connected, attachment_url(alone))
    assert (status, body, kind) == (200, PHOTO, "image/jpeg")
    # the largest size was fetched from Telegram: getFile, then the file itself
    [got] = [c for c in connected.telegram.calls if c.method == "getFile"]
    assert got.params["file_id"] != "thumb-not-sent"

    # with a caption: the text first, then the picture, two messages of the Send API
    await post_photo(connected, topic, caption="Here it is in blue")
    text, picture = connected.graph.messages[1:]
    assert text["message"] == {
        "text": "Here it is in blue",
        "metadata": text["message"]["metadata"],
    }
    # each names the answer; the picture also its place among the answer's files
    assert text["message"]["metadata"] == "pagedesk:3"
    assert picture["message"]["metadata"] == "pagedesk:3:0"
    status, body, _ = await fetch(connected, attachment_url(picture))
    assert (status, body) == (200, PHOTO)
    assert attachment_url(picture) != attachment_url(alone)  # one link per file sent
    assert not [t for t in thread_texts(connected, topic) if "Not sent" in t]


async def test_staff_photo_in_a_comment_task_becomes_the_answers_attachment_url(
    connected: Stage,
) -> None:
    delivery = comment_delivery(PAGE_ID, POST, f"{POST}_1", ("u1", "Eva Lund"), "Which one?")
    await connected.deliver_facebook(delivery)
    await connected.settled()
    topic = only_topic(connected)
    await post_photo(connected, topic, caption="This one")
    [posted] = connected.graph.comments
    assert (posted.parent_id, posted.message) == (f"{POST}_1", "This one")
    status, body, _ = await fetch(connected, posted.attachment_url)
    assert (status, body) == (200, PHOTO)


async def test_a_media_link_expires_and_a_wrong_token_is_not_found(connected: Stage) -> None:
    connected.graph.add_profile(DANA, "Dana Kim")
    await connected.deliver_facebook(dm("mid.1", "Photo please"))
    await connected.settled()
    await post_photo(connected, only_topic(connected))
    url = attachment_url(connected.graph.messages[-1])
    assert (await fetch(connected, url))[0] == 200
    assert (await fetch(connected, f"{PUBLIC}/media/not-a-token"))[0] == 404
    assert (await fetch(connected, url[:-3] + "abc"))[0] == 404
    # an hour later (the row's time moved back): gone
    async with connected.c.db.write() as s:
        await s.execute(update(MediaLink).values(expires_at=time.time() - 1))
    assert (await fetch(connected, url))[0] == 404
