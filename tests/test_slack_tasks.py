"""Slack at parity with Telegram: real slack-bolt and slack_sdk against the Slack emulator."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select

from bot.emulators.stage import Stage, comment_delivery
from bot.storage.models import InboxItem, Page
from tests.conftest import PAGE_ID, PAGE_TOKEN, load_fixture

CHANNEL = "C111"
ADMIN = "W111"
AGENT = "W222"
POST = f"{PAGE_ID}_139560936755999"


def command(name: str, text: str, user: str = ADMIN) -> dict[str, Any]:
    body = dict(load_fixture("slack_slash_command_body.parsed.json"))
    body.update(
        command=f"/{name}",
        text=text,
        user_id=user,
        channel_id=CHANNEL,
        trigger_id=f"{time.monotonic_ns()}.trigger",
    )
    return body


@pytest.fixture
async def slack(stage: Stage) -> Stage:
    stage.graph.add_page(PAGE_ID, "Bottender Coffee", PAGE_TOKEN)
    stage.slack.add_user(ADMIN, "Sal", admin=True)
    stage.slack.add_user(AGENT, "Ines")
    status, _ = await stage.slack_request(command("connect", PAGE_ID), form=True)
    assert status == 200
    await stage.settled()
    return stage


async def comment(st: Stage, cid: str, author: tuple[str, str], text: str) -> None:
    assert (
        await st.deliver_facebook(comment_delivery(PAGE_ID, POST, cid, author, text))
    ).status == 200
    await st.settled()


def root(st: Stage, index: int = -1) -> dict[str, Any]:
    return st.slack.roots(CHANNEL)[index]


def status_of(message: dict[str, Any]) -> str:
    return next(
        b["elements"][0]["text"]
        for b in message["blocks"]
        if b["type"] == "context" and b["elements"][0]["text"].startswith("Status:")
    )


def thread_texts(st: Stage, ts: str) -> list[str]:
    return [m["text"] for m in st.slack.thread(CHANNEL, ts)]


async def staff(st: Stage, text: str, thread_ts: str, user: str = AGENT) -> dict[str, Any]:
    body = st.slack.message_event(CHANNEL, user, text, thread_ts=thread_ts)
    status, _ = await st.slack_request(body)
    assert status == 200
    await st.settled()
    return body


async def test_connect_joins_the_channel_and_answers_the_admin_alone(slack: Stage) -> None:
    assert CHANNEL in slack.slack.joined
    [reply] = slack.slack.ephemeral
    assert reply["user"] == ADMIN
    assert reply["text"].startswith("Connected the Page Bottender Coffee")
    async with slack.c.db.read() as s:
        page = await s.get(Page, PAGE_ID)
    assert page is not None and (page.chat_platform, page.chat_id) == ("slack", CHANNEL)


async def test_non_admin_connect_is_refused_and_changes_nothing(stage: Stage) -> None:
    stage.graph.add_page(PAGE_ID, "Bottender Coffee", PAGE_TOKEN)
    stage.slack.add_user(AGENT, "Ines")
    await stage.slack_request(command("connect", PAGE_ID, user=AGENT), form=True)
    await stage.settled()
    [refusal] = [e["text"] for e in stage.slack.ephemeral]
    assert refusal.startswith("Only the operator of this Pagedesk can connect a Facebook Page")
    assert f"slack:{AGENT}" in refusal and PAGE_ID not in refusal and "Coffee" not in refusal
    assert stage.graph.called("accounts") == []
    assert CHANNEL not in stage.slack.joined
    async with stage.c.db.read() as s:
        assert list(await s.scalars(select(Page))) == []


async def test_comment_opens_a_block_kit_root_and_a_thread(slack: Stage) -> None:
    slack.graph.add_post(POST, "Pumpkin latte is back!", "2026-11-20T09:31:16+0000")
    slack.graph.add_profile("u1", "Ann", "https://pics.example/ann.jpg")
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan? <yes> & more")
    await comment(slack, "c_2", ("u2", "Bo"), "Cookies?")
    r = root(slack)
    types = [b["type"] for b in r["blocks"]]
    assert types == ["header", "section", "context", "context", "actions"]
    assert r["blocks"][0]["text"]["text"] == "Pumpkin latte is back! · 2026-11-20"
    assert "> Customer: Ann (facebook id u1)" in r["blocks"][2]["elements"][0]["text"]
    buttons = [e["action_id"] for e in r["blocks"][-1]["elements"]]
    assert buttons == ["task_close", "task_quick"]
    assert thread_texts(slack, r["ts"]) == [
        "*Ann*: Vegan? &lt;yes&gt; &amp; more",
        "*Bo*: Cookies?",
    ]
    first = slack.slack.thread(CHANNEL, r["ts"])[0]
    assert first["blocks"][0]["elements"][0] == {
        "type": "image",
        "image_url": "https://pics.example/ann.jpg",
        "alt_text": "Ann",
    }
    assert first["blocks"][-1]["elements"][0]["action_id"] == "comment_reply"


async def test_thread_reply_is_answered_on_facebook_and_marked(slack: Stage) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    await comment(slack, "c_2", ("u2", "Bo"), "Cookies?")
    ts = root(slack)["ts"]
    sent = await staff(slack, "Monday &amp; Tuesday", ts)
    [posted] = slack.graph.comments
    assert (posted.parent_id, posted.message, posted.token) == (
        "c_2",
        "Monday & Tuesday",
        PAGE_TOKEN,
    )
    assert slack.slack.reactions[(CHANNEL, sent["event"]["ts"])] == ["white_check_mark"]


async def test_slack_retries_have_no_second_effect(slack: Stage) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    body = slack.slack.message_event(CHANNEL, AGENT, "Yes", thread_ts=root(slack)["ts"])
    assert (await slack.slack_request(body))[0] == 200
    for n in (1, 2):
        retry = {"X-Slack-Retry-Num": str(n), "X-Slack-Retry-Reason": "http_timeout"}
        assert (await slack.slack_request(body, headers=retry))[0] == 200
    await slack.settled()
    assert [c.message for c in slack.graph.comments] == ["Yes"]


@pytest.mark.parametrize(
    "fixture",
    [
        "slack_event_callback_message_from_other_app_bot_id.json",
        "slack_event_callback_message_subtype_bot_message.json",
    ],
)
async def test_bot_messages_in_a_thread_are_ignored(slack: Stage, fixture: str) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    body = load_fixture(fixture)
    body["event"].update(channel=CHANNEL, thread_ts=root(slack)["ts"])
    assert (await slack.slack_request(body))[0] == 200
    await slack.settled()
    assert slack.graph.comments == []


async def test_notes_stay_internal(slack: Stage) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    await staff(slack, "note: ask the kitchen", root(slack)["ts"])
    assert slack.graph.comments == []


async def test_bang_close_in_a_thread_and_the_next_comment_opens_a_new_thread(
    slack: Stage,
) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    first = root(slack)
    await staff(slack, "!close", first["ts"])
    assert thread_texts(slack, first["ts"])[-1] == (
        "Task closed. The next comment on this post opens a new task."
    )
    updated = slack.slack.channels[CHANNEL][first["ts"]]
    assert updated.get("edited") and "closed" in status_of(updated)
    assert [e["action_id"] for e in updated["blocks"][-1]["elements"]] == [
        "task_reopen",
        "task_quick",
    ]
    await comment(slack, "c_2", ("u1", "Ann"), "Again")
    assert len(slack.slack.roots(CHANNEL)) == 2
    assert thread_texts(slack, root(slack)["ts"]) == ["*Ann*: Again"]
    assert slack.graph.comments == []


async def test_close_and_reopen_buttons(slack: Stage) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    r = root(slack)
    task_id = r["blocks"][-1]["elements"][0]["value"]

    def click(action_id: str) -> dict[str, Any]:
        return {
            "type": "block_actions",
            "user": {"id": AGENT},
            "trigger_id": f"{time.monotonic_ns()}.t",
            "channel": {"id": CHANNEL},
            "container": {"type": "message", "message_ts": r["ts"]},
            "actions": [{"action_id": action_id, "value": task_id, "type": "button"}],
        }

    assert (await slack.slack_interaction(click("task_close")))[0] == 200
    await slack.settled()
    assert "closed" in status_of(slack.slack.channels[CHANNEL][r["ts"]])
    assert (await slack.slack_interaction(click("task_reopen")))[0] == 200
    await slack.settled()
    assert "open" in status_of(slack.slack.channels[CHANNEL][r["ts"]])
    assert thread_texts(slack, r["ts"])[-1] == f"<@{AGENT}>: Task reopened."


async def test_reply_button_answers_that_comment(slack: Stage) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    await comment(slack, "c_2", ("u2", "Bo"), "Cookies?")
    r = root(slack)
    ann = slack.slack.thread(CHANNEL, r["ts"])[0]
    message_id = ann["blocks"][-1]["elements"][0]["value"]
    click = {
        "type": "block_actions",
        "user": {"id": AGENT},
        "trigger_id": "13345224609.738474920.8088",
        "channel": {"id": CHANNEL},
        "actions": [{"action_id": "comment_reply", "value": message_id, "type": "button"}],
    }
    assert (await slack.slack_interaction(click))[0] == 200
    [opened] = slack.slack.views
    assert opened["trigger_id"] == "13345224609.738474920.8088"
    view = opened["view"]
    submission = {
        "type": "view_submission",
        "user": {"id": AGENT},
        "trigger_id": "t2",
        "view": {
            "id": "V1",
            "hash": "h1",
            "type": "modal",
            "callback_id": view["callback_id"],
            "private_metadata": view["private_metadata"],
            "state": {
                "values": {"answer": {"text": {"type": "plain_text_input", "value": "Yes!"}}}
            },
        },
    }
    assert (await slack.slack_interaction(submission))[0] == 200
    await slack.settled()
    assert [(c.parent_id, c.message) for c in slack.graph.comments] == [("c_1", "Yes!")]
    shown = slack.slack.thread(CHANNEL, r["ts"])[-1]
    assert shown["text"] == f"<@{AGENT}> to Ann: Yes!"
    assert slack.slack.reactions[(CHANNEL, shown["ts"])] == ["white_check_mark"]


async def test_facebook_error_is_shown_in_the_thread(slack: Stage) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    slack.graph.add_response(
        "comments", load_fixture("fb_graph_error_100_33_object_missing.json"), status=400
    )
    await staff(slack, "Hello?", root(slack)["ts"])
    assert thread_texts(slack, root(slack)["ts"])[-1].startswith(
        "⚠️ Not delivered to Facebook: the comment no longer exists"
    )


async def test_edit_and_delete_of_a_delivered_answer_are_explained(slack: Stage) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    ts = root(slack)["ts"]
    sent = (await staff(slack, "Yes", ts))["event"]
    changed = load_fixture("slack_event_callback_message_changed.json")
    changed["event"].update(channel=CHANNEL)
    changed["event"]["previous_message"].update(ts=sent["ts"], thread_ts=ts, user=AGENT)
    changed["event"]["message"].update(ts=sent["ts"], thread_ts=ts, user=AGENT)
    await slack.slack_request(changed)
    deleted = load_fixture("slack_event_callback_message_deleted.json")
    deleted["event"].update(channel=CHANNEL, deleted_ts=sent["ts"])
    deleted["event_id"] = "Ev222"  # both doc samples carry Ev111; Slack's ids are unique
    deleted["event"]["previous_message"].update(ts=sent["ts"], thread_ts=ts, user=AGENT)
    await slack.slack_request(deleted)
    await slack.settled()
    texts = thread_texts(slack, ts)
    assert texts[-2].startswith("Edits are not sent to Facebook")
    assert texts[-1] == "Deleted in Slack only: the answer stays on Facebook."
    assert [c.message for c in slack.graph.comments] == ["Yes"]


async def test_bad_signature_or_stale_timestamp_is_refused_and_nothing_stored(
    slack: Stage,
) -> None:
    body = slack.slack.message_event(CHANNEL, AGENT, "hello", thread_ts="1.1")
    status, _ = await slack.slack_request(body, secret="wrong")
    assert status == 401
    status, _ = await slack.slack_request(body, timestamp=int(time.time()) - 600)
    assert status == 401
    async with slack.c.db.read() as s:
        stored = list(
            await s.scalars(select(InboxItem.dedupe_key).where(InboxItem.source == "slack"))
        )
    assert f"event:{body['event_id']}" not in stored


async def test_url_verification(slack: Stage) -> None:
    status, text = await slack.slack_request(load_fixture("slack_url_verification.json"))
    assert status == 200
    assert load_fixture("slack_url_verification.json")["challenge"] in text


async def test_socket_mode_receives_and_acknowledges_events(tmp_path: Any) -> None:
    st = Stage(
        f"sqlite+aiosqlite:///{tmp_path / 's.db'}",
        slack_app_token="xapp-1-test",
        slack_signing_secret=None,
    )
    await st.start()
    try:
        assert st.c.bolt is not None and st.c.socket_mode is not None
        await st.until(lambda: bool(st.slack.sockets))
        st.graph.add_page(PAGE_ID, "Bottender Coffee", PAGE_TOKEN)
        st.slack.add_user(ADMIN, "Sal", admin=True)
        envelope = await st.slack.push(command("connect", PAGE_ID), kind="slash_commands")
        await st.until(lambda: envelope in st.slack.acks)
        await st.settled()
        assert st.slack.ephemeral[-1]["text"].startswith("Connected the Page Bottender Coffee")
        await comment(st, "c_1", ("u1", "Ann"), "Vegan?")
        body = st.slack.message_event(CHANNEL, AGENT, "Yes!", thread_ts=root(st)["ts"])
        envelope = await st.slack.push(body)
        await st.until(lambda: envelope in st.slack.acks)
        await st.settled()
        assert [(c.parent_id, c.message) for c in st.graph.comments] == [("c_1", "Yes!")]
    finally:
        await st.stop()


async def test_slack_quick_replies_by_word_button_and_select(slack: Stage) -> None:
    status, _ = await slack.slack_request(
        command("quick", "add thanks Thanks {{contact.name}}!"), form=True
    )
    assert status == 200
    await slack.settled()
    assert slack.slack.ephemeral[-1]["text"] == "Added the quick reply thanks."
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    r = root(slack)
    await staff(slack, "!quick thanks", r["ts"])
    assert [(c.parent_id, c.message) for c in slack.graph.comments] == [("c_1", "Thanks Ann!")]
    assert thread_texts(slack, r["ts"])[-1] == f"<@{AGENT}> to Ann: Thanks Ann!"
    # the root's Quick reply button offers a select; picking one sends it
    click = {
        "type": "block_actions",
        "user": {"id": AGENT},
        "trigger_id": "t.quick",
        "channel": {"id": CHANNEL},
        "actions": [
            {
                "action_id": "task_quick",
                "value": r["blocks"][-1]["elements"][1]["value"],
                "type": "button",
            }
        ],
    }
    assert (await slack.slack_interaction(click))[0] == 200
    await slack.settled()
    menu = slack.slack.thread(CHANNEL, r["ts"])[-1]
    select = menu["blocks"][1]["elements"][0]
    assert select["action_id"] == "quick_pick"
    assert [o["value"] for o in select["options"]] == ["q:1:thanks"]
    pick = {
        "type": "block_actions",
        "user": {"id": AGENT},
        "trigger_id": "t.pick",
        "channel": {"id": CHANNEL},
        "actions": [
            {
                "action_id": "quick_pick",
                "type": "static_select",
                "selected_option": select["options"][0],
            }
        ],
    }
    assert (await slack.slack_interaction(pick))[0] == 200
    await slack.settled()
    assert len(slack.graph.comments) == 2


async def test_slack_template_is_for_admins_and_validated(slack: Stage) -> None:
    await slack.slack_request(
        command("template", "task title {{page.name}}", user=AGENT), form=True
    )
    await slack.slack_request(command("template", "task title {{nope}}"), form=True)
    await slack.slack_request(command("template", "task assignees <@W222|ines>"), form=True)
    await slack.settled()
    texts = [e["text"] for e in slack.slack.ephemeral[-3:]]
    assert texts[0] == "Only workspace admins can change templates."
    assert texts[1].startswith("Nothing changed: unknown variable nope")
    assert texts[2].startswith("Saved.")
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    section = next(b for b in root(slack)["blocks"] if "Assignees" in str(b))
    assert section["text"]["text"] == "Assignees: <@W222>"
    # the assignee gets a direct message with a link to the task
    dm = slack.slack.channels["W222"]
    assert any(
        "New task for you" in m["text"] and "/archives/C111/p" in m["text"] for m in dm.values()
    )


async def test_slack_calls_reuse_one_connection(slack: Stage) -> None:
    """The Web API client shares the app's HTTP session instead of opening one per call."""
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    await staff(slack, "Yes", root(slack)["ts"])
    await staff(slack, "And oat milk", root(slack)["ts"])
    posts = [c for c in slack.slack.calls if c.method in ("chat.postMessage", "reactions.add")]
    assert len(posts) >= 4
    assert len({c.peer for c in posts}) < len(posts)


async def test_bot_admins_setting_grants_slack_admin_rights(tmp_path: Any) -> None:
    st = Stage(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", bot_admins=f"slack:{AGENT}")
    await st.start()
    try:
        st.graph.add_page(PAGE_ID, "Bottender Coffee", PAGE_TOKEN)
        st.slack.add_user(AGENT, "Ines")  # not a workspace admin
        await st.slack_request(command("connect", PAGE_ID, user=AGENT), form=True)
        await st.settled()
        assert st.slack.ephemeral[-1]["text"].startswith("Connected the Page Bottender Coffee")
        assert st.slack.called("users.info") == []  # BOT_ADMINS answers without asking Slack
    finally:
        await st.stop()


async def test_slack_markup_in_an_answer_reaches_facebook_as_plain_text(slack: Stage) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Menu?")
    ts = root(slack)["ts"]
    await staff(
        slack,
        "See <https://example.com/menu|our menu> or <https://example.com/menu> or "
        "<http://example.com|example.com>, write to <mailto:hi@example.com|hi@example.com>; "
        f"<@{ADMIN}> &amp; <@{AGENT}|ines> will help &lt;3",
        ts,
    )
    [posted] = slack.graph.comments
    assert posted.message == (
        "See our menu (https://example.com/menu) or https://example.com/menu or "
        "example.com, write to hi@example.com; @sal & @ines will help <3"
    )


async def test_a_deleted_root_gets_a_new_one_and_later_comments_arrive_there(
    slack: Stage,
) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Open?")
    old = root(slack)["ts"]
    slack.slack.delete_message(CHANNEL, old)
    await comment(slack, "c_2", ("u1", "Ann"), "Anyone there?")
    [new] = slack.slack.roots(CHANNEL)
    assert new["ts"] != old
    texts = thread_texts(slack, new["ts"])
    assert "previous thread of this task was deleted" in texts[0]
    assert any("Anyone there?" in t for t in texts[1:])
    await staff(slack, "Yes, we are!", new["ts"])
    assert [(c.parent_id, c.message) for c in slack.graph.comments] == [("c_2", "Yes, we are!")]


def dm_with_files(*files: tuple[str, str]) -> dict[str, Any]:
    item = load_fixture("fb_messenger_entry_attachment_doc.json")["messaging"][0]
    item["sender"]["id"], item["recipient"]["id"] = "psid-1", PAGE_ID
    item["timestamp"] = int(time.time() * 1000)
    item["message"]["attachments"] = [{"type": t, "payload": {"url": u}} for t, u in files]
    return {"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "messaging": [item]}]}


async def test_a_customers_image_is_an_image_block_and_a_file_a_link(slack: Stage) -> None:
    slack.graph.add_profile("psid-1", "Dana Kim")
    photo, pdf = "https://scontent.example/p.jpg", "https://cdn.example/menu.pdf"
    await slack.deliver_facebook(dm_with_files(("image", photo), ("file", pdf)))
    await slack.settled()
    [message] = slack.slack.thread(CHANNEL, root(slack)["ts"])
    blocks = message["blocks"]
    assert {"type": "image", "image_url": photo, "alt_text": "image from Dana Kim"} in blocks
    assert blocks[-1]["text"]["text"] == f"<{pdf}|📎 file>"


async def test_a_picture_slack_cannot_download_is_a_link(slack: Stage) -> None:
    slack.slack.unreachable.add("https://scontent.example/gone.jpg")
    await slack.deliver_facebook(dm_with_files(("image", "https://scontent.example/gone.jpg")))
    await slack.settled()
    [message] = slack.slack.thread(CHANNEL, root(slack)["ts"])
    assert "https://scontent.example/gone.jpg" in message["text"]
    assert not any(b["type"] == "image" for b in message["blocks"][1:])


async def test_bang_dm_answers_the_latest_commenter_privately_once(slack: Stage) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "How much is it?")
    ts = root(slack)["ts"]
    await staff(slack, "!dm It is 5 euros &amp; free delivery", ts)
    [private] = slack.graph.messages
    assert private["recipient"] == {"comment_id": "c_1"}
    assert private["message"]["text"] == "It is 5 euros & free delivery"
    assert any("privately in Messenger" in t for t in thread_texts(slack, ts))
    await staff(slack, "!dm Once more", ts)
    assert len(slack.graph.called("messages")) == 1
    assert any("already answered privately" in t for t in thread_texts(slack, ts))


async def test_writing_first_from_the_card_and_with_bang_write(slack: Stage) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Vegan?")
    ts = root(slack)["ts"]
    await staff(slack, "!write comment It is vegan now!", ts)
    assert [(c.parent_id, c.message) for c in slack.graph.comments] == [("c_1", "It is vegan now!")]
    # the card offers writing first as a select; picking "reply to latest comment" opens
    # that channel's task and says who is writing there
    await staff(slack, "!contact", ts)
    card = slack.slack.thread(CHANNEL, ts)[-1]
    select = next(e for b in card["blocks"] if b["type"] == "actions" for e in b["elements"])
    values = [o["value"] for o in select["options"]]
    assert "w:1:comments" in values
    pick = {
        "type": "block_actions",
        "user": {"id": AGENT},
        "trigger_id": "t.write",
        "channel": {"id": CHANNEL},
        "actions": [
            {
                "action_id": select["action_id"],
                "type": "static_select",
                "selected_option": next(
                    o for o in select["options"] if o["value"] == "w:1:comments"
                ),
            }
        ],
    }
    assert (await slack.slack_interaction(pick))[0] == 200
    await slack.settled()
    assert any("writing first" in t for t in thread_texts(slack, ts))
