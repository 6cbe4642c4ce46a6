"""The Facebook webhook as Facebook calls it: handshake, signatures, durable intake."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.emulators.stage import VERIFY_TOKEN, Stage, comment_delivery
from bot.storage.inbox import InboxRepository
from bot.storage.models import InboxItem, Message, Task
from tests.conftest import PAGE_ID, connect, load_fixture
from tests.helpers import only_topic, relayed_lines, thread_texts, topics

POST = f"{PAGE_ID}_139560936755999"


async def count(st: Stage, model: type, **where: Any) -> int:
    async with st.c.db.read() as s:
        query = select(func.count()).select_from(model).filter_by(**where)
        return int(await s.scalar(query) or 0)


async def test_verify_handshake_echoes_challenge(stage: Stage) -> None:
    assert stage.http is not None
    ok = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    async with stage.http.get(stage.url + "/webhooks/facebook", params=ok) as resp:
        assert resp.status == 200
        assert await resp.text() == "1158201444"
    bad = {**ok, "hub.verify_token": "wrong"}
    async with stage.http.get(stage.url + "/webhooks/facebook", params=bad) as resp:
        assert resp.status == 403


async def test_unsigned_and_wrongly_signed_deliveries_are_refused_and_not_stored(
    connected: Stage,
) -> None:
    body = load_fixture("fb_feed_delivery_comment_add_toplevel_realcapture.json")
    unsigned = await connected.deliver_facebook(body, signed=False)
    wrong = await connected.deliver_facebook(body, secret="not-the-app-secret")
    assert (unsigned.status, wrong.status) == (403, 403)
    async with connected.c.db.read() as s:
        sources = list(await s.scalars(select(InboxItem.source)))
    assert "facebook" not in sources
    assert await count(connected, Message) == 0


async def test_signed_real_capture_opens_a_topic_named_after_the_post(connected: Stage) -> None:
    body = load_fixture("fb_feed_delivery_comment_add_toplevel_realcapture.json")
    page_id = body["entry"][0]["id"]
    await connect(connected, page_id=page_id, name="Corprio", token="corprio-token")
    connected.graph.add_post(
        "206070979425408_712750021053074",
        "Chinese New Year gift boxes are here, order before Friday",
        "2024-02-06T09:31:16+0000",
    )
    resp = await connected.deliver_facebook(body)
    assert resp.status == 200
    await connected.settled()
    topic = only_topic(connected)
    assert topics(connected)[topic]["name"] == "Chinese New Year gift boxes are… · 2024-02-06"
    root, comment = thread_texts(connected, topic)
    assert "Chinese New Year gift boxes are here, order before Friday" in root
    assert "Customer: Wong Tsun-Lok Frank (facebook id 24266381753005180)" in root
    assert comment == "Wong Tsun-Lok Frank: +1"
    # the post text was read once, with the page's own token
    reads = connected.graph.called("object")
    assert [c.token for c in reads if c.params["path"].endswith("053074")] == ["corprio-token"]


async def test_a_delivery_with_several_entries_and_changes_handles_each(
    connected: Stage,
) -> None:
    a = comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "first")
    b = comment_delivery(PAGE_ID, POST, "c_2", ("u2", "Bo"), "second")
    other_post = comment_delivery(PAGE_ID, f"{PAGE_ID}_222", "c_3", ("u3", "Cy"), "third")
    # two changes in one entry, and a second entry for another post
    a["entry"][0]["changes"].append(b["entry"][0]["changes"][0])
    a["entry"].append(other_post["entry"][0])
    assert (await connected.deliver_facebook(a)).status == 200
    await connected.settled()
    assert len(topics(connected)) == 2
    texts = [t for tid in topics(connected) for t in thread_texts(connected, tid)]
    assert "Ann: first" in texts and "Bo: second" in texts and "Cy: third" in texts


async def test_the_same_comment_delivered_twice_shows_once(connected: Stage) -> None:
    body = comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "hello")
    assert (await connected.deliver_facebook(body)).status == 200
    await connected.settled()
    # Facebook's retry of the same delivery, and the same comment inside another delivery
    assert (await connected.deliver_facebook(body)).status == 200
    again = comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "hello")
    again["entry"][0]["time"] += 5
    assert (await connected.deliver_facebook(again)).status == 200
    await connected.settled()
    assert thread_texts(connected, only_topic(connected))[1:] == ["Ann: hello"]
    assert await count(connected, Message) == 1


async def test_fifty_concurrent_comments_on_a_new_post_open_one_topic(connected: Stage) -> None:
    bodies = [
        comment_delivery(PAGE_ID, POST, f"c_{i}", (f"u{i}", f"User {i}"), f"comment {i}")
        for i in range(50)
    ]
    responses = await asyncio.gather(*(connected.deliver_facebook(b) for b in bodies))
    assert [r.status for r in responses] == [200] * 50
    await connected.settled(timeout=60)
    topic = only_topic(connected)
    relayed = relayed_lines(connected, topic)
    assert sorted(relayed) == sorted(f"User {i}: comment {i}" for i in range(50))
    assert len(connected.telegram.called("createForumTopic")) == 1
    assert await count(connected, Task) == 1


async def test_page_own_comment_that_is_not_our_answer_shows_as_the_page(
    connected: Stage,
) -> None:
    await connected.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "hi"))
    await connected.settled()
    change = load_fixture("fb_feed_change_comment_add_by_page.json")
    change["value"]["post_id"] = POST
    body = {"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "changes": [change]}]}
    await connected.deliver_facebook(body)
    await connected.settled()
    # the fixture is a reply under another comment, hence the arrow
    last = thread_texts(connected, only_topic(connected))[-1]
    assert last == "↪ Bottender Coffee (Page): Public reply!"


async def test_malformed_signed_bodies_get_400_and_oversized_413(connected: Stage) -> None:
    resp = await connected.deliver_facebook(b"{not json")
    assert resp.status == 400
    resp = await connected.deliver_facebook({"object": "page"})
    assert resp.status == 400
    resp = await connected.deliver_facebook(b"x" * (1024 * 1024 + 10))
    assert resp.status == 413


async def test_unknown_page_is_acknowledged_and_creates_nothing(connected: Stage) -> None:
    body = comment_delivery("999", "999_1", "c_9", ("u9", "Nobody"), "hello?")
    assert (await connected.deliver_facebook(body)).status == 200
    await connected.settled()
    assert topics(connected) == {}
    assert await count(connected, Message) == 0


async def test_non_comment_feed_items_are_ignored(connected: Stage) -> None:
    for name in ("fb_feed_change_reaction_add_on_comment.json", "fb_feed_change_status_add.json"):
        change = load_fixture(name)
        body = {"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "changes": [change]}]}
        assert (await connected.deliver_facebook(json.dumps(body).encode())).status == 200
    await connected.settled()
    assert topics(connected) == {}


async def _batch_failing_once_at(
    st: Stage, monkeypatch: pytest.MonkeyPatch, fail_at: str, batch_time: float
) -> None:
    """Ten deliveries stored while the worker is stopped, then handled as one batch whose
    event ``fail_at`` raises the first time it is written."""
    from bot.core import facebook_events

    monkeypatch.setattr(facebook_events, "BATCH_TIME", batch_time)
    events = st.c.parts.events
    real = events._prepare
    failed: list[str] = []

    async def prepare(page: Any, ev: Any, known: Any) -> Any:
        step = await real(page, ev, known)
        if getattr(ev, "comment_id", None) != fail_at:
            return step

        async def failing_once(s: Any) -> None:
            if not failed:
                failed.append(fail_at)
                raise RuntimeError("the disk hiccupped")
            await step(s)

        return failing_once

    monkeypatch.setattr(events, "_prepare", prepare)
    await st.c.worker.stop()
    bodies = [
        comment_delivery(PAGE_ID, POST, f"c_{i}", (f"u{i}", f"User {i}"), f"comment {i}")
        for i in range(10)
    ]
    for body in bodies:  # one after another: stored in this order
        assert (await st.deliver_facebook(body)).status == 200
    st.c.worker._stopping = False
    st.c.worker.start()
    await st.settled(timeout=30)
    assert failed == [fail_at]


@pytest.mark.parametrize(
    ("fail_at", "batch_time"),
    [
        ("c_0", 10.0),  # the first transaction fails: nothing of the batch was written
        ("c_6", 0.0),  # a transaction per delivery: six were committed before the failure
    ],
)
async def test_a_batch_that_fails_loses_nothing_and_shows_nothing_twice(
    connected: Stage, monkeypatch: pytest.MonkeyPatch, fail_at: str, batch_time: float
) -> None:
    await _batch_failing_once_at(connected, monkeypatch, fail_at, batch_time)
    topic = only_topic(connected)
    assert relayed_lines(connected, topic) == [f"User {i}: comment {i}" for i in range(10)]
    assert await count(connected, Message) == 10
    async with connected.c.db.read() as s:
        items = list(await s.scalars(select(InboxItem).where(InboxItem.source == "facebook")))
    assert len(items) == 10
    assert all(i.processed_at is not None and i.error is None for i in items)


async def test_a_delivery_that_could_not_be_stored_gets_503_and_its_resend_goes_through(
    connected: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Facebook re-sends what was not acknowledged: a failed commit answers 503 to every
    delivery in it, stores nothing of it, and the intake goes on with the next batch."""
    body = comment_delivery(PAGE_ID, POST, "c_disk", ("u1", "Ann"), "is it in stock?")
    real = InboxRepository.append_fresh

    def disk_full(conn: sqlite3.Connection, rows: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(InboxRepository, "append_fresh", staticmethod(disk_full))
    failed = await connected.deliver_facebook(body)
    assert failed.status == 503
    assert await count(connected, InboxItem, source="facebook") == 0
    monkeypatch.setattr(InboxRepository, "append_fresh", staticmethod(real))
    resent = await connected.deliver_facebook(body)
    assert resent.status == 200
    await connected.settled()
    assert relayed_lines(connected, only_topic(connected)) == ["Ann: is it in stock?"]
