"""`python -m bot check`, /disconnect, SECRET_KEY once pages exist, secrets kept out of logs."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from bot.check import run_check
from bot.config import ConfigError
from bot.emulators.stage import Stage, comment_delivery
from bot.logs import FieldsFormatter
from bot.storage.db import Database
from bot.storage.models import Page
from tests.conftest import ADMIN, CHAT_ID, PAGE_ID
from tests.helpers import general_texts, topics


async def test_check_says_all_good_then_names_what_is_wrong(
    connected: Stage, capsys: pytest.CaptureFixture[str]
) -> None:
    assert connected.settings is not None
    assert await run_check(connected.settings) == 0
    out = capsys.readouterr().out
    assert (
        "ok       FB_ACCESS_TOKEN is valid; it manages: Bottender Coffee (137542570280111)" in out
    )
    assert "ok       page Bottender Coffee (137542570280111): token valid, subscribed" in out
    assert "ok       Telegram webhook set to https://pagedesk.example/webhooks/telegram" in out
    assert "ok       chat 'Support' of page Bottender Coffee has topics" in out
    assert "ok       Slack bot bot in workspace Subarachnoid Workspace answers" in out
    assert out.rstrip().endswith("all good")

    connected.graph.pages[PAGE_ID].token = "rotated"  # the stored page token no longer works
    connected.graph.user_token = "also-rotated"
    assert await run_check(connected.settings) == 1
    out = capsys.readouterr().out
    assert "PROBLEM  FB_ACCESS_TOKEN: the page token is no longer valid" in out
    assert f"run /connect {PAGE_ID} again" in out
    assert "2 problem(s) found" in out


async def test_disconnect_stops_new_tasks(connected: Stage) -> None:
    await connected.telegram_update(
        connected.telegram.user_message(CHAT_ID, ADMIN, "/disconnect Bottender Coffee")
    )
    await connected.settled()
    assert general_texts(connected)[-1].startswith("Disconnected the Page Bottender Coffee")
    body = comment_delivery(PAGE_ID, f"{PAGE_ID}_1", "c_1", ("u1", "Ann"), "hello?")
    assert (await connected.deliver_facebook(body)).status == 200
    await connected.settled()
    assert topics(connected) == {}
    async with connected.c.db.read() as s:
        page = await s.get(Page, PAGE_ID)
    assert page is not None and page.active is False


async def test_secret_key_is_required_once_a_page_is_connected(connected: Stage) -> None:
    await connected.stop_app()
    connected.overrides["secret_key"] = None
    with pytest.raises(ConfigError, match=r"^SECRET_KEY: required once a page is connected$"):
        await connected.start_app()
    await connected.stop_app()
    db = Database(connected.database_url)
    async with db.read() as s:
        assert [p.id for p in await s.scalars(select(Page))] == [PAGE_ID]
    await db.close()


def test_log_lines_never_carry_tokens() -> None:
    formatter = FieldsFormatter("%(message)s")
    record = logging.makeLogRecord(
        {
            "msg": "GET https://graph.facebook.com/v26.0/me?access_token=EAAB123secret failed",
            "url": "https://api.telegram.org/bot123456:AAHsecret/sendMessage",
        }
    )
    line = formatter.format(record)
    assert "EAAB123secret" not in line and "AAHsecret" not in line
    assert "access_token=<redacted>" in line and "/bot123456:<redacted>/" in line
