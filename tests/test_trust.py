"""Who may bind a Page, chats kept apart, nothing vanishing on the chat side (issue 8)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.emulators.stage import Stage, comment_delivery
from bot.storage.models import Page, Task
from tests.conftest import (
    ADMIN,
    AGENT,
    CHAT_ID,
    PAGE_ID,
    PAGE_NAME,
)
from tests.helpers import general_texts, only_topic, shown, thread_texts, topics

POST = f"{PAGE_ID}_139560936755999"
OTHER_PAGE = "201000000000222"
OTHER_PAGE_NAME = "Bottender Bakery"
STRANGER_CHAT = -1009999999999
STRANGER = {"id": 66600666, "is_bot": False, "first_name": "Mallory"}


def chat_texts(st: Stage, chat_id: int) -> list[str]:
    """Everything the bot said in a chat, oldest first, as plain text."""
    chat = st.telegram.chats[chat_id]
    return [
        shown(m)
        for m in sorted(chat.messages.values(), key=lambda m: int(m["message_id"]))
        if m.get("from", {}).get("is_bot") and "text" in m
    ]


async def says(st: Stage, chat: int, user: dict[str, Any], text: str, **kw: Any) -> str:
    """A person writes; returns what the bot said after it (the latest bot message)."""
    before = len(chat_texts(st, chat))
    resp = await st.telegram_update(st.telegram.user_message(chat, user, text, **kw))
    assert resp.status == 200
    await st.settled()
    new = chat_texts(st, chat)[before:]
    assert new, f"the bot said nothing to {text!r}"
    return new[-1]


async def pages(st: Stage) -> dict[str, tuple[str, str, bool]]:
    async with st.c.db.read() as s:
        rows = await s.scalars(select(Page))
        return {p.id: (p.chat_platform, p.chat_id, p.active) for p in rows}


@pytest.fixture
async def two_chats(connected: Stage) -> Stage:
    """The operator's support group has the Page; a stranger has a forum of their own,
    where they are admin, with the bot in it."""
    connected.graph.add_page(OTHER_PAGE, OTHER_PAGE_NAME, "page-token-2")
    connected.telegram.add_chat(STRANGER_CHAT, "Mallory's group", admins={STRANGER["id"]})
    return connected


def graph_reads_since(st: Stage, mark: int) -> list[str]:
    return [c.method for c in st.graph.calls[mark:]]


@pytest.mark.parametrize("args", [PAGE_ID, PAGE_NAME, OTHER_PAGE, ""])
async def test_a_strangers_connect_is_refused_names_no_page_and_moves_nothing(
    two_chats: Stage, args: str
) -> None:
    st = two_chats
    before = await pages(st)
    mark = len(st.graph.calls)
    reply = await says(st, STRANGER_CHAT, STRANGER, f"/connect {args}".strip())
    assert "Only the operator" in reply
    assert f"telegram:{STRANGER['id']}" in reply and "BOT_ADMINS" in reply
    for name in (PAGE_ID, PAGE_NAME, OTHER_PAGE, OTHER_PAGE_NAME, "Coffee"):
        assert name not in reply
    assert await pages(st) == before
    assert graph_reads_since(st, mark) == []  # nothing asked of Facebook on their behalf
    assert not [t for t in chat_texts(st, CHAT_ID) if "moved" in t]


async def test_a_chat_admin_may_reconnect_here_but_not_bind_a_new_page(two_chats: Stage) -> None:
    st = two_chats
    chat_admin = {"id": 4242, "is_bot": False, "first_name": "Gus"}
    st.telegram.chats[CHAT_ID].admins.add(chat_admin["id"])
    reply = await says(st, CHAT_ID, chat_admin, f"/connect {PAGE_ID}")
    assert reply.startswith("Reconnected the Page")
    reply = await says(st, CHAT_ID, chat_admin, f"/connect {OTHER_PAGE}")
    assert "Only the operator" in reply and OTHER_PAGE not in reply
    assert OTHER_PAGE not in await pages(st)
    # managing what is connected here stays with this chat's admins
    reply = await says(st, CHAT_ID, chat_admin, "/template task tags vip")
    assert reply.startswith("Saved")


async def test_the_operator_moves_a_page_and_its_old_chat_is_told(two_chats: Stage) -> None:
    st = two_chats
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "Hi?"))
    await st.settled()
    old_topic = only_topic(st)
    # the operator (BOT_ADMINS) is a member of the other group too
    reply = await says(st, STRANGER_CHAT, ADMIN, f"/connect {PAGE_ID}")
    assert reply.startswith("Moved the Page")
    assert (await pages(st))[PAGE_ID] == ("telegram", str(STRANGER_CHAT), True)
    told = [t for t in chat_texts(st, CHAT_ID) if "was moved to" in t]
    assert told == [
        f"The Page {PAGE_NAME} ({PAGE_ID}) was moved to the Telegram group “Mallory's group” "
        f"by telegram:{ADMIN['id']}: its comments and answers are handled there now."
    ]
    # the old chat's open task is closed and can no longer answer as the Page
    assert topics(st)[old_topic]["closed"] is True
    posted = len(st.graph.comments)
    await says(st, CHAT_ID, AGENT, "/reopen", thread_id=old_topic)
    reply = await says(st, CHAT_ID, AGENT, "Still here!", thread_id=old_topic)
    assert "no longer connected to this chat" in reply
    assert len(st.graph.comments) == posted
    # the next comment opens a task in the new chat
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_2", ("u1", "Ann"), "Hello?"))
    await st.settled()
    assert len(st.telegram.chats[STRANGER_CHAT].topics) == 1


async def test_connect_without_a_page_lists_pages_only_to_the_operator(two_chats: Stage) -> None:
    st = two_chats
    reply = await says(st, CHAT_ID, ADMIN, "/connect")
    assert PAGE_NAME in reply and OTHER_PAGE_NAME in reply
    chat_admin = {"id": 4243, "is_bot": False, "first_name": "Hal"}
    st.telegram.chats[CHAT_ID].admins.add(chat_admin["id"])
    reply = await says(st, CHAT_ID, chat_admin, "/connect")
    assert "Only the operator" in reply and OTHER_PAGE_NAME not in reply


# --- chats stay apart --------------------------------------------------------------------


@pytest.fixture
async def apart(two_chats: Stage) -> AsyncIterator[tuple[Stage, int, int]]:
    """The operator connects the second page to the other group; one customer comments on
    both pages: one task in each chat."""
    st = two_chats
    reply = await says(st, STRANGER_CHAT, ADMIN, f"/connect {OTHER_PAGE}")
    assert reply.startswith("Connected"), reply
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "Coffee?"))
    other_post = f"{OTHER_PAGE}_5550001"
    await st.deliver_facebook(
        comment_delivery(OTHER_PAGE, other_post, "c_9", ("u1", "Ann"), "Bread?")
    )
    await st.deliver_facebook(
        comment_delivery(OTHER_PAGE, other_post + "2", "c_10", ("u2", "Bo"), "Rye?")
    )
    await st.settled()
    mine = only_topic(st)
    yield st, mine, len(st.telegram.chats[STRANGER_CHAT].topics)


async def task_ids(st: Stage, page_id: str) -> list[int]:
    async with st.c.db.read() as s:
        return list(await s.scalars(select(Task.id).where(Task.page_id == page_id)))


async def test_merges_across_chats_are_refused(apart: tuple[Stage, int, int]) -> None:
    st, topic, _ = apart
    [theirs, theirs_bo] = await task_ids(st, OTHER_PAGE)
    reply = await says(st, CHAT_ID, AGENT, f"/merge {theirs}", thread_id=topic)
    assert reply == f"There is no task #{theirs} among this chat's Pages."
    async with st.c.db.read() as s:
        bo = await s.scalar(select(Task.contact_id).where(Task.id == theirs_bo))
    reply = await says(st, CHAT_ID, AGENT, f"/contact merge {bo}", thread_id=topic)
    assert reply == f"There is no contact #{bo} among this chat's Pages."
    async with st.c.db.read() as s:
        rows = list(await s.scalars(select(Task).where(Task.id.in_([theirs, theirs_bo]))))
    assert all(t.merged_into_id is None and t.status == "open" for t in rows)


async def test_a_contact_card_lists_only_this_chats_pages(apart: tuple[Stage, int, int]) -> None:
    st, topic, _ = apart
    card = await says(st, CHAT_ID, AGENT, "/contact", thread_id=topic)
    assert "Coffee?" not in card  # sanity: it is the card, not a relay
    assert "comments on post" in card
    assert f"post {POST}" in card
    assert OTHER_PAGE not in card  # the other chat's task of the same person is not listed


async def test_a_quick_reply_button_of_another_chats_task_does_nothing(
    apart: tuple[Stage, int, int],
) -> None:
    st, _, _ = apart
    [theirs, _bo] = await task_ids(st, OTHER_PAGE)
    await says(st, STRANGER_CHAT, ADMIN, "/quick add hi Hello!")
    posted = len(st.graph.comments)
    # a callback naming the other chat's task, clicked in this chat
    update = {
        "update_id": 991,
        "callback_query": {
            "id": "cb1",
            "from": AGENT,
            "chat_instance": "1",
            "data": f"q:{theirs}:hi",
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": CHAT_ID, "type": "supergroup", "title": "Support"},
                "text": "pick",
            },
        },
    }
    assert (await st.telegram_update(update)).status == 200
    await st.settled()
    assert len(st.graph.comments) == posted


# --- nothing vanishes on the chat side ----------------------------------------------------


async def test_a_deleted_topic_gets_a_new_one_and_later_comments_arrive_there(
    connected: Stage,
) -> None:
    st = connected
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "Hi?"))
    await st.settled()
    old = only_topic(st)
    st.telegram.delete_topic(CHAT_ID, old)
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_2", ("u1", "Ann"), "Anyone?"))
    await st.settled()
    new = only_topic(st)
    assert new != old
    texts = thread_texts(st, new)
    assert "task #" in texts[0]  # the root again
    assert any("previous thread of this task was deleted" in t for t in texts)
    assert any("Ann: Anyone?" in t for t in texts)
    assert st.c.metrics.threads_recreated.labels("telegram")._value.get() == 1
    # staff answer in the new topic reaches Facebook
    update = st.telegram.user_message(CHAT_ID, AGENT, "Yes!", thread_id=new)
    await st.telegram_update(update)
    await st.settled()
    assert [(c.parent_id, c.message) for c in st.graph.comments] == [("c_2", "Yes!")]


async def test_a_relay_that_fails_for_good_is_reported_in_the_chat(connected: Stage) -> None:
    st = connected
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "Hi?"))
    await st.settled()
    topic = only_topic(st)
    st.telegram.add_response(
        "sendMessage",
        {"ok": False, "error_code": 400, "description": "Bad Request: not enough rights"},
        status=400,
    )
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_2", ("u1", "Ann"), "Hello?"))
    await st.settled()
    texts = thread_texts(st, topic)
    [report] = [t for t in texts if t.startswith("⚠️")]
    assert "A message from Ann could not be shown here" in report
    assert "https://www.facebook.com/c_2" in report and "not enough rights" in report
    metric = st.c.metrics.chat_failures.labels("telegram", "no_access")._value.get()
    assert metric == 1
    assert st.http is not None
    async with st.http.get(st.url + "/metrics") as resp:
        body = await resp.text()
    assert 'pagedesk_chat_failures_total{platform="telegram",reason="no_access"} 1.0' in body


async def test_a_report_that_cannot_be_shown_goes_to_the_chat_and_stops_there(
    connected: Stage,
) -> None:
    st = connected
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "Hi?"))
    await st.settled()
    refused = {"ok": False, "error_code": 400, "description": "Bad Request: not enough rights"}
    st.telegram.add_response("sendMessage", refused, status=400, times=3)
    before = len(st.telegram.called("sendMessage"))
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_2", ("u1", "Ann"), "Hello?"))
    await st.settled()
    # the relay, its report in the thread, and the report's report in the chat all failed:
    # it ends there (logged), instead of reporting forever
    assert st.c.metrics.chat_failures.labels("telegram", "no_access")._value.get() == 3
    assert len(st.telegram.called("sendMessage")) - before == 3  # no fourth try
    assert not [t for t in general_texts(st) if t.startswith("⚠️")]


# --- every answer reaches Facebook once -------------------------------------------------

GRAPH_500 = {
    "error": {
        "message": "An unexpected error has occurred. Please retry your request later.",
        "type": "OAuthException",
        "is_transient": True,
        "code": 2,
    }
}


async def answered_topic(st: Stage) -> int:
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "Open?"))
    await st.settled()
    return only_topic(st)


def echo_of(st: Stage, text: str, after: int = 3) -> dict[str, Any]:
    [posted] = st.graph.comments
    body = comment_delivery(PAGE_ID, POST, posted.id, (PAGE_ID, PAGE_NAME), text, parent_id="c_1")
    body["entry"][0]["changes"][0]["value"]["created_time"] += after
    return body


async def test_an_answer_stored_by_facebook_that_answered_500_is_not_sent_again(
    connected: Stage,
) -> None:
    st = connected
    topic = await answered_topic(st)
    st.graph.add_response("comments", GRAPH_500, status=500, apply=True)
    update = st.telegram.user_message(CHAT_ID, AGENT, "Until 6 pm!", thread_id=topic)
    await st.telegram_update(update)
    await st.settled()
    assert [(c.parent_id, c.message) for c in st.graph.comments] == [("c_1", "Until 6 pm!")]
    assert len(st.graph.called("comments")) == 1  # posted once
    assert st.graph.called("post_comments")  # and looked for before trying again
    staff_msg = update["message"]["message_id"]
    assert st.telegram.chats[CHAT_ID].reactions[staff_msg] == ["👍"]
    # the webhook's echo of it, 3 s later, is not shown as a page comment
    await st.deliver_facebook(echo_of(st, "Until 6 pm!"))
    await st.settled()
    assert not [t for t in thread_texts(st, topic) if "(Page)" in t]
    assert len(st.graph.comments) == 1


async def test_an_answer_whose_call_timed_out_after_storing_is_not_sent_again(
    connected: Stage,
) -> None:
    st = connected
    topic = await answered_topic(st)
    # stored, then the answer comes after our 2 s call timeout
    st.graph.add_response("comments", {"id": "late"}, apply=True, delay=2.5)
    await st.telegram_update(st.telegram.user_message(CHAT_ID, AGENT, "Yes.", thread_id=topic))
    await st.settled()
    assert [c.message for c in st.graph.comments] == ["Yes."]
    assert len(st.graph.called("comments")) == 1


async def test_the_echo_arriving_before_the_retry_settles_the_answer(connected: Stage) -> None:
    st = connected
    topic = await answered_topic(st)
    # stored, 500, and a 3 s wait before the next try (the BUC header's estimate)
    usage = '{"' + PAGE_ID + '": [{"type": "pages", "estimated_time_to_regain_access": 0.05}]}'
    st.graph.add_response(
        "comments",
        GRAPH_500,
        status=500,
        apply=True,
        headers={"X-Business-Use-Case-Usage": usage},
    )
    update = st.telegram.user_message(CHAT_ID, AGENT, "See you!", thread_id=topic)
    await st.telegram_update(update)
    await st.until(lambda: len(st.graph.comments) == 1)
    await st.deliver_facebook(echo_of(st, "See you!", after=1))
    await st.settled()
    assert len(st.graph.called("comments")) == 1
    assert st.telegram.chats[CHAT_ID].reactions[update["message"]["message_id"]] == ["👍"]
    assert not [t for t in thread_texts(st, topic) if "(Page)" in t]


# --- /connect without a Page: a one-time login link, to the operator alone ----------------


async def test_the_operators_connect_without_a_page_sends_a_login_link_privately(
    tmp_path: Path,
) -> None:
    st = Stage(f"sqlite+aiosqlite:///{tmp_path / 'l.db'}", public_url_is_self=True, fb_app_id="1")
    await st.start()
    try:
        st.telegram.add_chat(CHAT_ID, "Support", admins={ADMIN["id"]})
        reply = await says(st, CHAT_ID, ADMIN, "/connect")
        assert reply.startswith("I sent you a link in a private message")
        [private] = [
            p for p in st.telegram.private if p["chat_id"] in (ADMIN["id"], str(ADMIN["id"]))
        ]
        assert f"{st.url}/connect/" in private["text"] and "15 minutes" in private["text"]
        # a chat admin who is not the operator gets no link, and is told why
        admin = {"id": 4244, "is_bot": False, "first_name": "Ida"}
        st.telegram.chats[CHAT_ID].admins.add(admin["id"])
        reply = await says(st, CHAT_ID, admin, "/connect")
        assert "Only the operator" in reply and "/connect/" not in reply
        assert len(st.telegram.private) == 1
    finally:
        await st.stop()
