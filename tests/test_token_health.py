"""Page token health: debug_token read right, a token expiring in 5 days and a dead token
each told once in the Page's chat (across checks and restarts), the gauge, `check`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from bot.check import run_check
from bot.emulators.stage import Stage
from bot.fb.graph import GraphClient, TokenInfo, token_info
from bot.page_access import PAGE_ACCESS
from bot.token_health import LocalOnce, TokenHealth, assess
from tests.conftest import PAGE_ID, PAGE_NAME, PAGE_TOKEN, connect
from tests.helpers import general_texts

APP_ID = "1234567890"
DEAD_PAGE, DEAD_NAME, DEAD_TOKEN = "424242", "Old Bakery", "page-token-dead"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_debug_token_answers_in_plain_words() -> None:
    def at(days: float) -> int:
        return int((NOW + timedelta(days=days)).timestamp())

    never = token_info({"data": {"is_valid": True, "expires_at": 0, "scopes": ["a"]}})
    assert never.expires_at is None and never.scopes == ("a",)
    assert assess(never, NOW).state == "valid"
    assert assess(never, NOW).reason == "valid, does not expire"

    soon = assess(token_info({"data": {"is_valid": True, "expires_at": at(5)}}), NOW)
    assert (soon.state, soon.deadline) == ("expiring", NOW + timedelta(days=5))
    assert soon.reason == "the token expires on 2026-11-29 12:00 UTC"
    later = assess(token_info({"data": {"is_valid": True, "expires_at": at(8)}}), NOW)
    assert later.state == "valid" and later.reason == "valid until 2026-12-02 UTC"
    access = assess(
        token_info({"data": {"is_valid": True, "expires_at": 0, "data_access_expires_at": at(3)}}),
        NOW,
    )
    assert access.state == "expiring" and access.data_access
    assert access.reason.startswith("Facebook's data access for the token ends on 2026-11-27")

    changed = {"is_valid": False, "error": {"code": 190, "subcode": 460, "message": "x"}}
    assert assess(token_info({"data": changed}), NOW).reason == (
        "the password of the Facebook account that made the token was changed"
    )
    expired = assess(token_info({"data": {"is_valid": True, "expires_at": at(-1)}}), NOW)
    assert (expired.state, expired.reason) == ("invalid", "the token expired")
    assert assess(token_info({"nonsense": 1}), NOW).state == "invalid"
    assert assess(TokenInfo(False, error_message="Bad"), NOW).reason == "Bad"


async def test_debug_token_asks_with_the_app_token_and_its_proof(stage: Stage) -> None:
    stage.graph.add_page(PAGE_ID, PAGE_NAME, PAGE_TOKEN)
    async with aiohttp.ClientSession() as http:
        graph = GraphClient(stage.graph.url, "v26.0", http, app_secret="demo-app-secret")
        info = await graph.debug_token(APP_ID, PAGE_TOKEN)
    assert info.is_valid and info.expires_at is None and info.data_access_expires_at is not None
    [call] = stage.graph.called("debug_token")
    assert call.params["input_token"] == PAGE_TOKEN
    assert (call.token, call.token_via) == (f"{APP_ID}|demo-app-secret", "header")
    assert "appsecret_proof" in call.params  # the fake refuses a wrong one


@pytest.fixture
async def two_pages(sqlite_url: str) -> AsyncIterator[Stage]:
    st = Stage(sqlite_url, fb_app_id=APP_ID)
    await st.start()
    try:
        await connect(st)
        await connect(st, page_id=DEAD_PAGE, name=DEAD_NAME, token=DEAD_TOKEN)
        yield st
    finally:
        await st.stop()


def told(st: Stage) -> tuple[list[str], list[str]]:
    texts = general_texts(st)
    return (
        [t for t in texts if t.startswith("⏳") and PAGE_NAME in t],
        [t for t in texts if t.startswith("⚠️ Facebook no longer accepts") and DEAD_NAME in t],
    )


async def test_an_expiring_and_a_dead_token_are_each_told_once(
    two_pages: Stage, capsys: pytest.CaptureFixture[str]
) -> None:
    st = two_pages
    st.graph.login.set_token(PAGE_TOKEN, expires_at=time.time() + 5 * 86400 + 60)
    st.graph.login.set_token(DEAD_TOKEN, valid=False, subcode=460)

    health = st.app[PAGE_ACCESS].health
    found = await health.check_all()
    assert {p: h.state for p, h in found.items()} == {PAGE_ID: "expiring", DEAD_PAGE: "invalid"}
    await health.check_all()  # hours later: nothing new to say
    await st.settled()
    [warning], [alert] = told(st)
    assert "expires on" in warning and "(in 5 days)" in warning
    assert f"/connect {PAGE_ID}" in warning and "logs in to Facebook again" in warning
    assert "password of the Facebook account that made the token was changed" in alert
    assert f"/connect {DEAD_PAGE}" in alert

    metrics = st.c.metrics.render().decode()
    assert f'pagedesk_page_token_state{{page_id="{PAGE_ID}",state="expiring"}} 1.0' in metrics
    assert f'pagedesk_page_token_state{{page_id="{DEAD_PAGE}",state="invalid"}} 1.0' in metrics
    assert f'pagedesk_page_token_state{{page_id="{PAGE_ID}",state="valid"}} 0.0' in metrics

    # a restart checks at start: still nothing new to say
    calls = len(st.graph.called("debug_token"))
    await st.stop_app()
    await st.start_app()
    await st.until(lambda: len(st.graph.called("debug_token")) >= calls + 2)
    await st.settled()
    assert [len(x) for x in told(st)] == [1, 1]

    # `check` says the same
    assert st.settings is not None
    assert await run_check(st.settings) == 1
    out = capsys.readouterr().out
    assert f"PROBLEM  page {PAGE_NAME} ({PAGE_ID}): the token expires on" in out
    assert f"PROBLEM  page {DEAD_NAME} ({DEAD_PAGE}): the password of the Facebook" in out


async def test_a_reconnected_page_is_told_again_when_its_new_token_dies(two_pages: Stage) -> None:
    st = two_pages
    health = st.app[PAGE_ACCESS].health
    st.graph.login.set_token(DEAD_TOKEN, valid=False, subcode=463)
    await health.check_all()
    del st.graph.login.token_states[DEAD_TOKEN]
    await connect(st, page_id=DEAD_PAGE, name=DEAD_NAME, token=DEAD_TOKEN)  # new token, healthy
    assert (await health.check_all())[DEAD_PAGE].state == "valid"
    st.graph.login.set_token(DEAD_TOKEN, valid=False, subcode=463)
    await health.check_all()
    await st.settled()
    alerts = told(st)[1]
    assert len(alerts) == 2 and all("the token expired" in a for a in alerts)


async def test_the_check_runs_where_once_says(two_pages: Stage) -> None:
    """Several replicas: each asks ``once``; only the one it answers True checks."""
    st = two_pages
    st.graph.login.set_token(PAGE_TOKEN, expires_at=time.time() + 3 * 86400)
    asked: list[tuple[str, float]] = []

    @asynccontextmanager
    async def not_mine(name: str, period: float) -> AsyncIterator[bool]:
        asked.append((name, period))
        yield False

    mine = st.app[PAGE_ACCESS].health
    other = TokenHealth(
        mine.db, mine.tokens, mine.metrics, mine.graph, APP_ID, mine.say, once=not_mine
    )
    stop = asyncio.Event()
    loop = asyncio.create_task(other.run(stop, every=3600))
    await st.until(lambda: bool(asked))
    stop.set()
    await loop
    assert asked == [("page-token-health", 3600)]
    assert st.graph.called("debug_token") == []

    local = LocalOnce(clock=lambda: 100.0)
    async with local("x", 60) as first:
        assert first
    async with local("x", 60) as second:
        assert not second
