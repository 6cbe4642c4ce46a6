"""Tasks as forum topics: staff answers, notes, commands, failures, restarts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from bot.crypto import TokenBox
from bot.emulators.stage import Stage, comment_delivery
from bot.storage.models import Message, OutboxJob, Page
from tests.conftest import (
    ADMIN,
    AGENT,
    CHAT_ID,
    PAGE_ID,
    PAGE_TOKEN,
    connect,
    load_fixture,
)
from tests.helpers import (
    general_texts,
    message_id_of,
    only_topic,
    relayed_lines,
    thread_texts,
    topics,
)

POST = f"{PAGE_ID}_139560936755999"


async def two_comments(st: Stage) -> int:
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "Vegan?"))
    await st.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_2", ("u2", "Bo"), "Cookies?"))
    await st.settled()
    return only_topic(st)


async def staff_says(st: Stage, text: str, topic: int, reply_to: int | None = None) -> int:
    update = st.telegram.user_message(CHAT_ID, AGENT, text, thread_id=topic, reply_to=reply_to)
    assert (await st.telegram_update(update)).status == 200
    await st.settled()
    return int(update["message"]["message_id"])


async def test_staff_reply_goes_to_latest_comment_with_page_token_and_is_marked(
    connected: Stage,
) -> None:
    topic = await two_comments(connected)
    staff_msg = await staff_says(connected, "Back on Monday!", topic)
    [posted] = connected.graph.comments
    assert (posted.parent_id, posted.message, posted.token) == (
        "c_2",
        "Back on Monday!",
        PAGE_TOKEN,
    )
    assert connected.telegram.chats[CHAT_ID].reactions[staff_msg] == ["👍"]


async def test_reply_to_a_specific_comment_answers_that_comment(connected: Stage) -> None:
    topic = await two_comments(connected)
    ann = message_id_of(connected, topic, "Ann: Vegan?")
    await staff_says(connected, "Yes, oat milk.", topic, reply_to=ann)
    assert [(c.parent_id, c.message) for c in connected.graph.comments] == [
        ("c_1", "Yes, oat milk.")
    ]


async def test_answer_to_a_reply_comment_goes_under_its_top_level_comment(
    connected: Stage,
) -> None:
    reply = load_fixture("fb_feed_change_comment_add_reply.json")
    reply["value"]["post_id"] = POST
    body = {"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "changes": [reply]}]}
    await connected.deliver_facebook(body)
    await connected.settled()
    topic = only_topic(connected)
    await staff_says(connected, "Thanks!", topic)
    # Facebook threads one level deep: answer under the parent comment of the reply
    assert [c.parent_id for c in connected.graph.comments] == [reply["value"]["parent_id"]]


async def test_notes_and_commands_stay_internal(connected: Stage) -> None:
    topic = await two_comments(connected)
    await staff_says(connected, "note: check the stock", topic)
    await staff_says(connected, "PRIVATE: do not promise a date", topic)
    await staff_says(connected, "/unknowncmd", topic)
    assert connected.graph.comments == []
    async with connected.c.db.read() as s:
        notes = list(await s.scalars(select(Message.text).where(Message.direction == "note")))
    assert notes == ["note: check the stock", "PRIVATE: do not promise a date"]
    assert "Unknown command /unknowncmd" in thread_texts(connected, topic)[-1]


async def test_echo_of_our_answer_does_not_show_twice(connected: Stage) -> None:
    topic = await two_comments(connected)
    await staff_says(connected, "Back on Monday!", topic)
    [posted] = connected.graph.comments
    before = thread_texts(connected, topic)
    echo = comment_delivery(
        PAGE_ID, POST, posted.id, (PAGE_ID, "Bottender Coffee"), posted.message, parent_id="c_2"
    )
    await connected.deliver_facebook(echo)
    await connected.settled()
    assert thread_texts(connected, topic) == before


async def test_graph_error_is_shown_in_the_topic(connected: Stage) -> None:
    topic = await two_comments(connected)
    connected.graph.add_response(
        "comments", load_fixture("fb_graph_error_100_33_object_missing.json"), status=400
    )
    staff_msg = await staff_says(connected, "Hello?", topic)
    last = thread_texts(connected, topic)[-1]
    assert last.startswith("⚠️ Not delivered to Facebook: the comment no longer exists")
    assert "[code 100/33]" in last
    # failed at once: code 100/33 cannot be fixed by retrying
    assert len(connected.graph.called("comments")) == 1
    assert staff_msg not in connected.telegram.chats[CHAT_ID].reactions
    async with connected.c.db.read() as s:
        state = await s.scalar(select(Message.state).where(Message.direction == "staff"))
    assert state == "failed"


async def test_expired_token_alerts_admins_once_not_per_answer(connected: Stage) -> None:
    topic = await two_comments(connected)
    error = load_fixture("fb_graph_error_190_messenger_doc.json")
    connected.graph.add_response("comments", error, status=400, times=2)
    await staff_says(connected, "one", topic)
    await staff_says(connected, "two", topic)
    alerts = [t for t in general_texts(connected) if "no longer accepts the token" in t]
    assert len(alerts) == 1
    failures = [t for t in thread_texts(connected, topic) if "Not delivered" in t]
    assert len(failures) == 2


async def test_graph_outage_is_retried_until_delivered(connected: Stage) -> None:
    topic = await two_comments(connected)
    connected.graph.add_response(
        "comments", {"error": {"message": "down", "code": 2}}, status=503, times=2
    )
    await staff_says(connected, "Soon!", topic)
    await connected.settled()
    assert [c.message for c in connected.graph.comments] == ["Soon!"]
    assert len(connected.graph.called("comments")) == 3


async def test_telegram_flood_control_is_honoured_and_the_message_still_arrives(
    connected: Stage,
) -> None:
    connected.telegram.add_response(
        "sendMessage", load_fixture("tg_error_retry_after_aiogram_test.json"), status=429
    )
    await connected.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "hi"))
    await connected.settled()
    assert thread_texts(connected, only_topic(connected))[1:] == ["Ann: hi"]
    async with connected.c.db.read() as s:
        retried = await s.scalar(select(OutboxJob.attempts).where(OutboxJob.kind == "open_thread"))
    assert retried == 2


async def test_closed_task_means_the_next_comment_opens_a_new_topic(connected: Stage) -> None:
    topic = await two_comments(connected)
    await staff_says(connected, "/close", topic)
    assert topics(connected)[topic]["closed"] is True
    assert "Status: ✅ closed" in thread_texts(connected, topic)[0]
    await connected.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_3", ("u1", "Ann"), "More?"))
    await connected.settled()
    assert len(topics(connected)) == 2
    new = max(topics(connected))
    assert thread_texts(connected, new)[1:] == ["Ann: More?"]
    # reopening the old one is refused while the new one is open
    await staff_says(connected, "/reopen", topic)
    assert "A newer task for this post is open" in thread_texts(connected, topic)[-1]
    await staff_says(connected, "/close", new)
    await staff_says(connected, "/reopen", topic)
    assert topics(connected)[topic]["closed"] is False
    assert "Status: 🟢 open" in thread_texts(connected, topic)[0]


async def test_edited_and_removed_comments_show_as_such(connected: Stage) -> None:
    topic = await two_comments(connected)
    edited = comment_delivery(
        PAGE_ID, POST, "c_1", ("u1", "Ann"), "Vegan? Gluten-free?", verb="edited"
    )
    await connected.deliver_facebook(edited)
    removed = load_fixture("fb_feed_change_comment_remove.json")
    removed["value"].update(comment_id="c_2", post_id=POST)
    await connected.deliver_facebook(
        {"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "changes": [removed]}]}
    )
    await connected.settled()
    texts = thread_texts(connected, topic)
    assert "Ann (edited): Vegan? Gluten-free?" in texts
    assert "Bo: Cookies?\nremoved on Facebook" in texts
    # a plain answer skips the removed comment and goes to the latest one still there
    await staff_says(connected, "Yes to both", topic)
    assert [c.parent_id for c in connected.graph.comments] == ["c_1"]


async def test_non_admin_connect_is_refused_and_changes_nothing(stage: Stage) -> None:
    stage.graph.add_page(PAGE_ID, "Bottender Coffee", PAGE_TOKEN)
    stage.telegram.add_chat(CHAT_ID, "Support", admins={ADMIN["id"]})  # type: ignore[arg-type]
    await stage.telegram_update(stage.telegram.user_message(CHAT_ID, AGENT, f"/connect {PAGE_ID}"))
    await stage.settled()
    [refusal] = general_texts(stage)
    assert refusal.startswith("Only the operator of this Pagedesk can connect a Facebook Page")
    assert f"telegram:{AGENT['id']}" in refusal and PAGE_ID not in refusal
    assert stage.graph.called("accounts") == [] and stage.graph.called("subscribed_apps") == []
    async with stage.c.db.read() as s:
        assert list(await s.scalars(select(Page))) == []


async def test_connect_subscribes_stores_token_encrypted_and_reconnects(stage: Stage) -> None:
    await connect(stage)
    [sub] = stage.graph.called("subscribed_apps")
    assert sub.params["subscribed_fields"] == "feed,messages"
    assert (sub.token, sub.token_via) == (PAGE_TOKEN, "header")
    async with stage.c.db.read() as s:
        page = await s.get(Page, PAGE_ID)
    assert page is not None and PAGE_TOKEN not in page.token_encrypted
    assert TokenBox("demo-secret-key").open(page.token_encrypted) == PAGE_TOKEN
    # reconnect with a new token
    stage.graph.pages[PAGE_ID].token = "page-token-2"
    await stage.telegram_update(
        stage.telegram.user_message(CHAT_ID, ADMIN, "/connect bottender coffee")
    )
    await stage.settled()
    assert general_texts(stage)[-1].startswith("Reconnected the Page Bottender Coffee")
    async with stage.c.db.read() as s:
        page = await s.get(Page, PAGE_ID)
    assert (
        page is not None
        and TokenBox("demo-secret-key").open(page.token_encrypted) == "page-token-2"
    )
    assert len(stage.graph.called("subscribed_apps")) == 2


async def test_connect_in_a_group_without_topics_explains_how(stage: Stage) -> None:
    await connect(stage, forum=False)
    assert "Turn them on: group settings → Topics" in general_texts(stage)[-1]
    async with stage.c.db.read() as s:
        assert list(await s.scalars(select(Page))) == []


async def test_connect_unknown_page_lists_the_known_ones(stage: Stage) -> None:
    await connect(stage)
    await stage.telegram_update(stage.telegram.user_message(CHAT_ID, ADMIN, "/connect Nope"))
    await stage.settled()
    assert general_texts(stage)[-1] == (
        "No page 'Nope' among the pages the token manages: Bottender Coffee (137542570280111)."
    )


async def test_bot_admins_setting_grants_admin_rights(tmp_path: Path) -> None:
    st = Stage(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", bot_admins=f"telegram:{AGENT['id']}")
    await st.start()
    try:
        st.graph.add_page(PAGE_ID, "Bottender Coffee", PAGE_TOKEN)
        st.telegram.add_chat(CHAT_ID, "Support")
        await st.telegram_update(st.telegram.user_message(CHAT_ID, AGENT, f"/connect {PAGE_ID}"))
        await st.settled()
        assert general_texts(st)[-1].startswith("Connected the Page Bottender Coffee")
    finally:
        await st.stop()


async def test_telegram_webhook_needs_the_secret(connected: Stage) -> None:
    update = connected.telegram.user_message(CHAT_ID, ADMIN, "/help")
    assert (await connected.telegram_update(update, secret="wrong")).status == 403
    assert (await connected.telegram_update(update)).status == 200
    # the same update_id again has no second effect
    assert (await connected.telegram_update(update)).status == 200
    await connected.settled()
    assert sum("Pagedesk turns comments" in t for t in general_texts(connected)) == 1


async def test_restart_delivers_what_was_left_in_the_outbox(connected: Stage) -> None:
    # Telegram is down: the comment is stored and its topic waits in the outbox
    connected.telegram.add_response(
        "createForumTopic",
        {"ok": False, "error_code": 502, "description": "Bad Gateway"},
        status=502,
        times=10_000,
    )
    await connected.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "hi"))

    async def attempted() -> bool:
        async with connected.c.db.read() as s:
            n = await s.scalar(select(OutboxJob.attempts).where(OutboxJob.kind == "open_thread"))
        return bool(n)

    for _ in range(500):
        if await attempted():
            break
        await asyncio.sleep(0.02)
    assert await attempted()
    await connected.stop_app()
    assert topics(connected) == {}
    connected.telegram.clear_responses()
    await connected.start_app()
    await connected.settled()
    assert thread_texts(connected, only_topic(connected))[1:] == ["Ann: hi"]


async def test_long_polling_mode_stores_and_handles_updates(tmp_path: Path) -> None:
    st = Stage(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}", telegram_webhook_secret=None)
    await st.start()
    try:
        assert st.telegram.called("deleteWebhook") and not st.telegram.called("setWebhook")
        st.graph.add_page(PAGE_ID, "Bottender Coffee", PAGE_TOKEN)
        st.telegram.add_chat(CHAT_ID, "Support", admins={ADMIN["id"]})  # type: ignore[arg-type]
        st.telegram.updates.append(st.telegram.user_message(CHAT_ID, ADMIN, f"/connect {PAGE_ID}"))
        await st.until(lambda: bool(general_texts(st)))
        assert general_texts(st)[-1].startswith("Connected the Page Bottender Coffee")
    finally:
        await st.stop()


async def test_webhook_mode_registers_the_secret_and_the_commands(stage: Stage) -> None:
    [hook] = stage.telegram.called("setWebhook")
    assert hook.params["url"] == "https://pagedesk.example/webhooks/telegram"
    assert hook.params["secret_token"] == "demo-webhook-secret"
    [commands] = stage.telegram.called("setMyCommands")
    names = {c["command"] for c in commands.params["commands"]}
    assert {"connect", "disconnect", "close", "reopen"} <= names


async def test_stop_lets_an_answer_in_flight_finish(connected: Stage) -> None:
    topic = await two_comments(connected)
    connected.graph.add_response("comments", {"id": "c_2_reply"}, delay=0.5)
    update = connected.telegram.user_message(CHAT_ID, AGENT, "On its way", thread_id=topic)
    await connected.telegram_update(update)
    await connected.until(lambda: bool(connected.graph.called("comments")))
    db = connected.c.db
    await connected.stop_app()  # what SIGTERM does
    reopened = type(db)(db.url)
    async with reopened.read() as s:
        state = await s.scalar(select(Message.state).where(Message.direction == "staff"))
        fb_id = await s.scalar(select(Message.fb_id).where(Message.direction == "staff"))
    await reopened.close()
    assert (state, fb_id) == ("delivered", "c_2_reply")


async def test_a_burst_catches_up_as_digests_in_order(connected: Stage) -> None:
    # Telegram is down while 12 comments arrive: they wait in the task's lane
    connected.telegram.add_response(
        "createForumTopic",
        {"ok": False, "error_code": 502, "description": "Bad Gateway"},
        status=502,
        times=10_000,
    )
    for i in range(12):
        body = comment_delivery(PAGE_ID, POST, f"c_{i}", (f"u{i}", f"User {i}"), f"comment {i}")
        await connected.deliver_facebook(body)

    async def queued() -> int:
        async with connected.c.db.read() as s:
            jobs = await s.scalars(select(OutboxJob).where(OutboxJob.kind == "relay"))
            return len(list(jobs))

    for _ in range(500):
        if await queued() == 12:
            break
        await asyncio.sleep(0.02)
    connected.telegram.clear_responses()
    await connected.settled()
    topic = only_topic(connected)
    texts = thread_texts(connected, topic)[1:]
    assert texts[0].startswith("12 comments arrived together:")
    assert relayed_lines(connected, topic) == [f"User {i}: comment {i}" for i in range(12)]
    # a reply to the digest answers its latest comment
    digest_id = message_id_of(connected, topic, "comments arrived together")
    await staff_says(connected, "Thanks all", topic, reply_to=digest_id)
    assert [c.parent_id for c in connected.graph.comments] == ["c_11"]
    # but moderation needs to know which comment: a reply to a digest is refused
    before = len(thread_texts(connected, topic))
    await staff_says(connected, "/hide", topic, reply_to=digest_id)
    assert thread_texts(connected, topic)[before:] == [
        "Not done: that message shows several comments; reply to one alone."
    ]
    assert connected.graph.hidden == set()


async def test_catch_up_brings_missed_comments_once(connected: Stage) -> None:
    await connected.deliver_facebook(comment_delivery(PAGE_ID, POST, "c_1", ("u1", "Ann"), "hi"))
    await connected.settled()
    topic = only_topic(connected)
    # on Facebook: the comment we saw, and two the webhooks never delivered
    connected.graph.add_comment(POST, "c_1", ("u1", "Ann"), "hi", "2026-11-21T10:00:00+0000")
    now = datetime.now(UTC)
    for n, (cid, who, text) in enumerate(
        [("c_2", ("u2", "Bo"), "missed"), ("c_3", ("u1", "Ann"), "me too")]
    ):
        created = (now + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S+0000")
        connected.graph.add_comment(POST, cid, who, text, created, parent_id="c_1" if n else None)
    assert await connected.c.parts.maintenance.catch_up() == 2
    assert await connected.c.parts.maintenance.catch_up() == 0  # nothing twice
    await connected.settled()
    assert relayed_lines(connected, topic) == ["Ann: hi", "Bo: missed", "↪ Ann: me too"]
    [call] = connected.graph.called("post_comments")[-1:]
    assert call.params["filter"] == "stream" and int(call.params["since"]) > 0


async def test_removed_post_closes_its_task_with_a_note(connected: Stage) -> None:
    topic = await two_comments(connected)
    change = load_fixture("fb_feed_change_post_remove.json")
    change["value"]["post_id"] = POST
    await connected.deliver_facebook(
        {"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "changes": [change]}]}
    )
    await connected.settled()
    assert topics(connected)[topic]["closed"] is True
    assert "The post was removed on Facebook: task closed." in thread_texts(connected, topic)
