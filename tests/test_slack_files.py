"""Issue 12, item 2 (staff side, Slack): a picture or file staff share in a task's thread
goes to the customer, as from Telegram. Facebook fetches it from
``{PUBLIC_URL}/media/{token}``; behind it the app asks Slack's ``files.info`` and downloads
the file with the bot token. The events are Slack's own ``file_share`` payload
(shared/fixtures); the fake Slack serves the files to the bot token alone."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bot.emulators.slack import AUTH_TEST, SIGN_IN_PAGE
from bot.emulators.stage import SLACK_TOKEN, Stage
from tests.conftest import PAGE_ID, PAGE_TOKEN, load_fixture
from tests.test_messenger import DANA, dm
from tests.test_slack_tasks import ADMIN, AGENT, CHANNEL, command, comment, root, thread_texts
from tests.test_staff_media import PUBLIC, fetch

PNG = b"\x89PNG\r\n\x1a\n a staff picture"
PDF = b"%PDF-1.7 the autumn menu"


@pytest.fixture
async def slack(stage: Stage) -> Stage:
    stage.graph.add_page(PAGE_ID, "Bottender Coffee", PAGE_TOKEN)
    stage.slack.add_user(ADMIN, "Sal", admin=True)
    stage.slack.add_user(AGENT, "Ines")
    assert (await stage.slack_request(command("connect", PAGE_ID), form=True))[0] == 200
    await stage.settled()
    return stage


def file_share(st: Stage, thread_ts: str, text: str, *files: dict[str, Any]) -> dict[str, Any]:
    """A staff member shares files in a task's thread: Slack's file_share event from the
    shared fixtures, moved into this channel and thread, carrying the fake's files."""
    body = copy.deepcopy(load_fixture("slack_event_callback_message_file_share.json"))
    event = body["event"]
    [shape] = event["files"]
    ts = st.slack.new_ts()
    event.update(
        channel=CHANNEL,
        user=AGENT,
        text=text,
        ts=ts,
        event_ts=ts,
        thread_ts=thread_ts,
        parent_user_id=AUTH_TEST["user_id"],
        files=[{**shape, **f} for f in files],
    )
    event["blocks"][0]["elements"][0]["elements"][0]["text"] = text
    body["event_id"] = f"Ev{ts.replace('.', '')}"  # the sample's id is one; Slack's are unique
    return body


async def share(st: Stage, thread_ts: str, text: str, *files: dict[str, Any]) -> str:
    body = file_share(st, thread_ts, text, *files)
    assert (await st.slack_request(body))[0] == 200
    await st.settled()
    return str(body["event"]["ts"])


async def messenger_task(st: Stage) -> str:
    st.graph.add_profile(DANA, "Dana Kim")
    await st.deliver_facebook(dm("mid.1", "Do you have the menu?"))
    await st.settled()
    return str(root(st)["ts"])


def attachment(sent: dict[str, Any]) -> tuple[str, str]:
    a = sent["message"]["attachment"]
    return str(a["type"]), str(a["payload"]["url"])


async def test_a_picture_shared_in_slack_goes_to_the_customer_in_messenger(slack: Stage) -> None:
    ts = await messenger_task(slack)
    picture = slack.slack.add_file(PNG, "blue.png", "image/png", user=AGENT)
    shared = await share(slack, ts, "", picture)
    [sent] = slack.graph.messages
    assert sent["recipient"] == {"id": DANA} and "text" not in sent["message"]
    kind, url = attachment(sent)
    assert kind == "image" and url.startswith(f"{PUBLIC}/media/")
    assert await fetch(slack, url) == (200, PNG, "image/png")
    # files.info before anything is sent and again when Facebook fetches the link, then
    # the download, with the bot token
    infos = slack.slack.called("files.info")
    assert [c.params["file"] for c in infos] == [picture["id"]] * 2
    [download] = slack.slack.called("files.download")
    assert download.headers["Authorization"] == f"Bearer {SLACK_TOKEN}"
    assert slack.slack.reactions[(CHANNEL, shared)] == ["white_check_mark"]
    assert not [t for t in thread_texts(slack, ts) if "Not " in t]


async def test_a_file_with_text_sends_both_text_first(slack: Stage) -> None:
    ts = await messenger_task(slack)
    menu = slack.slack.add_file(PDF, "menu.pdf", "application/pdf", user=AGENT)
    await share(slack, ts, "Here is our menu", menu)
    text, document = slack.graph.messages
    assert text["message"]["text"] == "Here is our menu"
    kind, url = attachment(document)
    assert kind == "file"
    assert await fetch(slack, url) == (200, PDF, "application/pdf")


async def test_a_picture_shared_in_a_comment_task_is_the_replys_attachment_url(
    slack: Stage,
) -> None:
    await comment(slack, "c_1", ("u1", "Ann"), "Which one?")
    ts = root(slack)["ts"]
    picture = slack.slack.add_file(PNG, "this-one.png", "image/png", user=AGENT)
    await share(slack, ts, "This one", picture)
    [posted] = slack.graph.comments
    assert (posted.parent_id, posted.message) == ("c_1", "This one")
    assert await fetch(slack, posted.attachment_url) == (200, PNG, "image/png")


GONE, TOO_BIG, ELSEWHERE, SNIPPET = "gone", "too big", "elsewhere", "snippet"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (GONE, "the file is no longer in Slack"),
        (TOO_BIG, "menu.pdf is too big for Facebook (30.0 MB; at most 25 MB)"),
        (ELSEWHERE, "menu.pdf is a link to a file outside Slack: upload the file itself"),
        (SNIPPET, "menu.pdf is a Slack snippet, not a file"),
    ],
)
async def test_a_file_that_cannot_be_sent_stops_the_answer_with_the_reason(
    slack: Stage, case: str, reason: str
) -> None:
    ts = await messenger_task(slack)
    fields: dict[str, Any] = {
        GONE: {},
        TOO_BIG: {"size": 30 * 1_048_576},
        ELSEWHERE: {"is_external": True, "external_type": "gdrive", "mode": "external"},
        SNIPPET: {"mode": "snippet"},
    }[case]
    menu = slack.slack.add_file(PDF, "menu.pdf", "application/pdf", user=AGENT, **fields)
    if case == GONE:
        slack.slack.delete_file(menu["id"])
    await share(slack, ts, "Here is our menu", menu)
    assert slack.graph.called("messages") == []  # not even the text: nothing half-sent
    [failure] = [t for t in thread_texts(slack, ts) if "Not delivered" in t]
    assert reason in failure
    assert not slack.slack.called("files.download")


async def test_a_link_to_a_file_deleted_since_answers_404(slack: Stage) -> None:
    ts = await messenger_task(slack)
    picture = slack.slack.add_file(PNG, "blue.png", "image/png", user=AGENT)
    await share(slack, ts, "", picture)
    [sent] = slack.graph.messages
    slack.slack.delete_file(picture["id"])
    assert (await fetch(slack, attachment(sent)[1]))[0] == 404


async def test_the_fake_slack_serves_files_to_the_bot_token_alone(slack: Stage) -> None:
    picture = slack.slack.add_file(PNG, "blue.png", "image/png")
    assert slack.http is not None
    async with slack.http.get(picture["url_private_download"]) as resp:
        assert (resp.status, resp.content_type) == (200, "text/html")  # Slack's sign-in page
        assert await resp.text() == SIGN_IN_PAGE
    headers = {"Authorization": f"Bearer {SLACK_TOKEN}"}
    async with slack.http.get(picture["url_private"], headers=headers) as resp:
        assert (resp.status, await resp.read()) == (200, PNG)
