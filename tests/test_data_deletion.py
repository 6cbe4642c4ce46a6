"""Facebook's data deletion callback: a good signature forgets the person (name, picture,
their words) and keeps the tasks' shape; a bad one changes nothing; the status page says
what was deleted."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.emulators.stage import APP_SECRET, Stage, comment_delivery
from bot.fb.signed_request import BadSignedRequest, parse_signed_request, sign_request
from bot.storage.models import Contact, DataDeletionRequest, InboxItem, Message, Task
from bot.storage.repositories import FORGOTTEN
from tests.conftest import PAGE_ID

PERSON, NAME = "6958765510879001", "Ann Example"
POST = f"{PAGE_ID}_900"
PATH = "/webhooks/facebook/data-deletion"


def signed(user_id: str, secret: str = APP_SECRET) -> str:
    return sign_request(
        {"algorithm": "HMAC-SHA256", "issued_at": int(time.time()), "user_id": user_id}, secret
    )


async def post_form(st: Stage, form: dict[str, str]) -> tuple[int, Any]:
    assert st.http is not None
    async with st.http.post(st.url + PATH, data=form) as resp:
        return resp.status, await resp.json()


def test_signed_request_is_checked_as_facebook_signs_it() -> None:
    good = signed(PERSON)
    assert parse_signed_request(good, APP_SECRET)["user_id"] == PERSON
    sig, body = good.split(".")
    for bad in (
        signed(PERSON, "another-secret"),
        f"{sig}.{body[:-2]}xx",  # the payload changed after signing
        body,  # no signature at all
        "not base64!.x",
        sign_request({"algorithm": "MD5", "user_id": PERSON}, APP_SECRET),
    ):
        with pytest.raises(BadSignedRequest):
            parse_signed_request(bad, APP_SECRET)


async def test_a_good_request_forgets_the_person_and_keeps_the_tasks_shape(
    connected: Stage,
) -> None:
    st = connected
    st.graph.add_post(POST, "Our autumn menu", "2026-11-20T09:00:00+0000")
    st.graph.add_profile(PERSON, NAME, "https://scontent.example/ann.jpg")
    await st.deliver_facebook(
        comment_delivery(PAGE_ID, POST, f"{POST}_1", (PERSON, NAME), "Is there oat milk?")
    )
    await st.deliver_facebook(
        comment_delivery(PAGE_ID, POST, f"{POST}_2", ("123", "Bob Other"), "And soy?")
    )
    await st.settled()

    status, answer = await post_form(st, {"signed_request": signed(PERSON)})
    assert status == 200
    code = answer["confirmation_code"]
    assert code.isalnum()
    assert answer["url"] == f"https://pagedesk.example{PATH}/{code}"

    async with st.c.db.read() as s:
        [ann] = await s.scalars(select(Contact).where(Contact.name == FORGOTTEN))
        bob = await s.scalar(select(Contact).where(Contact.fb_id == "123"))
        messages = {m.fb_id: m for m in await s.scalars(select(Message))}
        [task] = await s.scalars(select(Task))
        deliveries = await s.scalar(
            select(func.count()).select_from(InboxItem).where(InboxItem.source == "facebook")
        )
        request = await s.get(DataDeletionRequest, code)
    assert ann.picture_url is None and ann.fields == {} and PERSON not in ann.fb_id
    assert bob is not None and bob.name == "Bob Other"  # nobody else is touched
    mine = messages[f"{POST}_1"]
    assert (mine.text, mine.author_fb_id, mine.author_name) == ("", None, FORGOTTEN)
    assert mine.task_id == task.id and mine.state == "relayed"  # the shape stays
    assert messages[f"{POST}_2"].text == "And soy?"
    assert task.contact_id == ann.id
    for text in (task.title, task.root_text, task.additional_data):
        assert NAME not in text and PERSON not in text
    assert "Page: Bottender Coffee" in task.additional_data
    assert deliveries == 1  # the handled delivery naming her is gone, Bob's stays
    assert request is not None and PERSON not in str(request.summary)
    assert request.summary == {
        "contacts": 1,
        "pictures": 1,
        "messages": 1,
        "tasks": 1,
        "deliveries": 1,
    }

    assert st.http is not None
    async with st.http.get(f"{st.url}{PATH}/{code}") as resp:
        assert resp.status == 200
        page = await resp.text()
    assert "done" in page and code in page
    assert "The text of the 1 comment(s) and message(s) you sent." in page
    assert "Your profile picture" in page and NAME not in page

    # asked again (Facebook retries): answered again, nothing left to delete
    status, again = await post_form(st, {"signed_request": signed(PERSON)})
    assert status == 200 and again["confirmation_code"] != code
    async with st.http.get(again["url"].replace("https://pagedesk.example", st.url)) as resp:
        assert "held no data about you" in await resp.text()


async def test_a_bad_signature_changes_nothing(connected: Stage) -> None:
    st = connected
    st.graph.add_post(POST, "Our autumn menu", "2026-11-20T09:00:00+0000")
    await st.deliver_facebook(
        comment_delivery(PAGE_ID, POST, f"{POST}_1", (PERSON, NAME), "Is there oat milk?")
    )
    await st.settled()

    status, answer = await post_form(st, {"signed_request": signed(PERSON, "not-our-secret")})
    assert status == 403 and "signature" in answer["error"]
    assert (await post_form(st, {}))[0] == 400
    assert (await post_form(st, {"signed_request": signed("not-an-id")}))[0] == 400
    async with st.c.db.read() as s:
        contact = await s.scalar(select(Contact).where(Contact.fb_id == PERSON))
        message = await s.scalar(select(Message).where(Message.fb_id == f"{POST}_1"))
        requests = await s.scalar(select(func.count()).select_from(DataDeletionRequest))
    assert contact is not None and contact.name == NAME
    assert message is not None and message.text == "Is there oat milk?"
    assert requests == 0
    metrics = st.c.metrics.render().decode()
    assert (
        'pagedesk_deliveries_rejected_total{reason="signature",source="facebook_data_deletion"} 1.0'
        in metrics
    )
    assert st.http is not None
    async with st.http.get(f"{st.url}{PATH}/0000") as resp:
        assert resp.status == 404
