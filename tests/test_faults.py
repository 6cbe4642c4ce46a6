"""Fault injection: the fakes answer 429s, 5xx, time out and drop connections on a
schedule; every comment still reaches staff once and every answer reaches Facebook once."""

from __future__ import annotations

import bisect
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.emulators.stage import Stage, comment_delivery
from bot.limits import EXACT_UP_TO, SLOTS, Budget
from bot.outbox import Limit, Pacer, backoff
from bot.storage.models import InboxItem, OutboxJob
from tests.conftest import AGENT, CHAT_ID, PAGE_ID, connect, load_fixture
from tests.helpers import only_topic, relayed_lines, topics

POST = f"{PAGE_ID}_1"
TG_429 = {
    "ok": False,
    "error_code": 429,
    "description": "Too Many Requests: retry after 1",
    "parameters": {"retry_after": 1},
}
TG_502 = {"ok": False, "error_code": 502, "description": "Bad Gateway"}


@pytest.fixture
async def fast(tmp_path: Path) -> AsyncIterator[Stage]:
    """A stage whose calls time out after half a second."""
    st = Stage(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", call_timeout=0.5)
    await st.start()
    await connect(st)
    yield st
    await st.stop()


async def test_telegram_429_502_timeout_and_drop_then_delivered_once(fast: Stage) -> None:
    tg = fast.telegram
    tg.add_response("sendMessage", TG_429, status=429)
    tg.add_response("sendMessage", TG_502, status=502)
    tg.add_response("sendMessage", {"ok": True, "result": True}, delay=1.5)  # past the timeout
    tg.add_response("sendMessage", {}, drop=True)
    started = time.monotonic()
    await fast.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "hi"))
    await fast.settled(timeout=30)
    assert relayed_lines(fast, only_topic(fast)) == ["Ann: hi"]
    assert len(tg.called("sendMessage")) >= 6  # the /connect answer, 4 faults, root, comment
    assert time.monotonic() - started >= 1.0  # Telegram's retry_after was waited out


async def test_graph_faults_then_the_answer_lands_once(fast: Stage) -> None:
    await fast.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "hi"))
    await fast.settled()
    g = fast.graph
    g.add_response("comments", {"error": {"message": "busy", "code": 2}}, status=500)
    g.add_response(
        "comments",
        load_fixture("fb_graph_error_80001_page_rate_limit.json"),
        status=400,
        headers={"X-Business-Use-Case-Usage": "{}"},
    )
    g.add_response("comments", {"id": "late"}, delay=1.5)
    g.add_response("comments", {}, drop=True)
    # throttling waits 60 s by default; this test shortens the wait it was given
    await fast.telegram_update(
        fast.telegram.user_message(CHAT_ID, AGENT, "Yes!", thread_id=only_topic(fast))
    )

    async def job() -> OutboxJob | None:
        async with fast.c.db.read() as s:
            return await s.scalar(select(OutboxJob).where(OutboxJob.kind == "fb_answer"))

    for _ in range(300):
        j = await job()
        if j is not None and j.attempts >= 2:
            break
        await fast.until(lambda: True, timeout=0.02)
    j = await job()
    assert j is not None and j.attempts == 2 and "rate limiting" in (j.last_error or "")
    assert j.next_attempt_at - time.time() > 30  # the throttle's wait is honoured
    async with fast.c.db.write() as s:
        row = await s.get(OutboxJob, j.id)
        assert row is not None
        row.next_attempt_at = 0
    fast.c.outbox.wake()
    await fast.settled(timeout=30)
    assert [c.message for c in g.comments] == ["Yes!"]  # the timed-out one was not recorded
    assert len(g.called("comments")) == 5


async def test_slack_429_retry_after_is_honoured(tmp_path: Path) -> None:
    st = Stage(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    await st.start()
    try:
        st.graph.add_page(PAGE_ID, "Bottender Coffee", "page-token-1")
        st.slack.add_user("W1", "Sal", admin=True)
        await st.slack_request(
            {
                "command": "/connect",
                "text": PAGE_ID,
                "user_id": "W1",
                "channel_id": "C1",
                "trigger_id": "1.1",
            },
            form=True,
        )
        await st.settled()
        st.slack.add_response(
            "chat.postMessage",
            {"ok": False, "error": "ratelimited"},
            status=429,
            headers={"Retry-After": "1"},
        )
        await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "hi"))
        await st.settled(timeout=20)
        posts = st.slack.called("chat.postMessage")
        assert len(posts) == 3  # refused root, root, comment
        root = st.slack.roots("C1")[0]
        assert [m["text"] for m in st.slack.thread("C1", root["ts"])] == ["*Ann*: hi"]
    finally:
        await st.stop()


async def test_pacing_keeps_below_an_enforced_limit(tmp_path: Path) -> None:
    st = Stage(
        f"sqlite+aiosqlite:///{tmp_path / 'p.db'}",
        rate_telegram_global_per_sec=10,
        telegram_options={"enforce_limits": True, "global_per_sec": 10, "group_per_min": 1000},
    )
    await st.start()
    try:
        await connect(st)
        for i in range(8):  # eight posts: eight topics, roots and comments = 24 sends
            body = comment_delivery(PAGE_ID, f"{PAGE_ID}_{i}", f"c_{i}", ("u1", "Ann"), f"#{i}")
            await st.deliver_facebook(body)
        await st.settled(timeout=30)
        assert st.telegram.throttled == 0
        assert sorted(line for t in topics(st) for line in relayed_lines(st, t)) == sorted(
            f"Ann: #{i}" for i in range(8)
        )
    finally:
        await st.stop()


async def test_odd_payloads_are_acknowledged_and_break_nothing(connected: Stage) -> None:
    odd: list[Any] = [
        {"object": "page", "entry": [None, 5, "x", {"id": None}, {"id": PAGE_ID, "changes": "no"}]},
        {"object": "page", "entry": [{"id": PAGE_ID, "changes": [{"field": "feed", "value": 7}]}]},
        {
            "object": "page",
            "entry": [
                {
                    "id": PAGE_ID,
                    "changes": [
                        {
                            "field": "feed",
                            "value": {
                                "item": "comment",
                                "verb": "add",
                                "comment_id": 123,
                                "post_id": POST,
                                "from": "nobody",
                                "message": ["not", "text"],
                                "created_time": "yesterday",
                            },
                        }
                    ],
                }
            ],
        },
        {"object": "page", "entry": [{"id": PAGE_ID, "messaging": [{"message": "x"}, {}]}]},
    ]
    for body in odd:
        assert (await connected.deliver_facebook(body)).status == 200
    good = comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "still works")
    assert (await connected.deliver_facebook(good)).status == 200
    await connected.settled()
    assert relayed_lines(connected, only_topic(connected))[-1] == "Ann: still works"
    async with connected.c.db.read() as s:
        failed = list(await s.scalars(select(InboxItem).where(InboxItem.error.is_not(None))))
    assert failed == []


async def test_wrong_content_type_is_refused(connected: Stage) -> None:
    body = comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "hi")
    resp = await connected.deliver_facebook(body, content_type="text/plain")
    assert resp.status == 415


def test_pacer_sliding_window_and_cost() -> None:
    pacer = Pacer({"tg:chat": Limit(3, 60.0), "tg:global": Limit(30, 1.0)}, burst_share=1.0)
    keys = ["tg:chat:-1", "tg:global"]
    assert pacer.reserve(keys, 0.0) == 0.0
    assert pacer.reserve(keys, 1.0, cost=2) == 0.0
    # full until the first send ages out of the window (plus a 5 % margin for skew)
    assert pacer.reserve(keys, 2.0) == pytest.approx(61.0)
    assert pacer.reserve(["tg:chat:-2", "tg:global"], 2.0) == 0.0  # another group is free
    assert pacer.reserve(keys, 60.0) > 0
    assert pacer.reserve(keys, 63.0) == 0.0
    assert pacer.reserve(["slack:channel:C1"], 0.0) == 0.0  # no limit configured: go


def test_pacer_spreads_a_burst_after_a_short_allowance() -> None:
    pacer = Pacer({"tg:chat": Limit(20, 60.0)})  # 20 a minute: a quarter may go at once
    keys = ["tg:chat:-1"]
    assert [pacer.reserve(keys, 0.0) for _ in range(5)] == [0.0] * 5
    wait = pacer.reserve(keys, 0.0)
    interval = (60.0 + 3.0) / 20  # the guarded window, evenly spread
    assert wait == pytest.approx(interval)
    assert pacer.reserve(keys, wait) == 0.0
    # and never more than 20 in a window, however the calls come
    sent, now = [], 0.0
    while now < 300:
        if pacer.reserve(keys, now) == 0.0:
            sent.append(now)
        now += 0.5
    assert max(sum(1 for t in sent if s <= t < s + 60) for s in sent) <= 20


@pytest.mark.parametrize("count", [20, 256, 257, 3000])
def test_pacing_never_lets_more_than_the_limit_into_any_window(count: int) -> None:
    """Above 256 sends a window, the sends are counted per slot (1/64 of the window):
    still never more than the limit in any window, and close to the limit's rate."""
    limit = Limit(count, 60.0)
    pacer = Pacer({"tg:chat": limit})
    keys = ["tg:chat:-1"]
    sent: list[float] = []
    now, step = 0.0, limit.guarded / count / 1.7  # asks faster than it may send
    while now < 5 * limit.guarded:
        cost = 2 if len(sent) % 7 == 3 else 1
        if pacer.reserve(keys, now, cost) == 0.0:
            sent += [now] * cost
        now += step
    most = max(bisect.bisect_left(sent, t + limit.guarded) - i for i, t in enumerate(sent))
    assert most <= count
    assert len(sent) >= 0.9 * count * (now / limit.guarded)  # and not much below it
    state = pacer._budgets["tg:chat:-1"].sent
    assert len(state) <= (count if count <= EXACT_UP_TO else SLOTS + 1)


def test_pacing_state_follows_a_limit_raised_or_lowered() -> None:
    """Send times kept under a small limit count in their slots once it is raised, and
    slots kept under a large one become times (the latest they may have been) when it is
    lowered: the window still holds."""
    raised = Pacer({"tg:chat": Limit(1000, 60.0)}, burst_share=1.0)
    raised._budgets["tg:chat:-1"] = Budget(sent=sorted([float(t) for t in range(10)] * 10))
    assert raised.reserve(["tg:chat:-1"], 11.0) == 0.0
    slots = raised._budgets["tg:chat:-1"].sent
    assert all(isinstance(s, list) for s in slots) and sum(n for _, n in slots) == 101
    lowered = Pacer({"tg:chat": Limit(50, 60.0)}, burst_share=1.0)
    lowered._budgets["tg:chat:-1"] = Budget(sent=slots)
    wait = lowered.reserve(["tg:chat:-1"], 11.0)
    assert wait > 49.0  # 50 sends counted in the window: the next waits for them to leave
    assert lowered._budgets["tg:chat:-1"].sent == sorted(lowered._budgets["tg:chat:-1"].sent)


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    samples = [backoff(n, base=1.0, cap=600.0) for n in range(1, 15) for _ in range(20)]
    assert all(0.5 <= s <= 600.0 for s in samples)
    assert max(backoff(2, 1.0) for _ in range(200)) <= 4.0
    assert max(backoff(9, 1.0) for _ in range(200)) > 16.0
