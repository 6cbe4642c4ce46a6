"""Connecting Pages in the browser, end to end in headless Chromium: the one-time link,
Facebook Login (the fake dialog of the local Graph API), the Pages ticked, bound to the
chat that asked and subscribed, and the chat told. Screenshots of each page land in the
test's tmp_path and in artifacts/browser-connect/ (ignored by git)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from sqlalchemy import select

from bot.browser_connect import SCOPES
from bot.crypto import TokenBox
from bot.emulators.stage import Stage
from bot.page_access import PAGE_ACCESS
from bot.storage.models import ConnectLink, Page
from tests.conftest import ADMIN_ID, CHAT_ID
from tests.helpers import general_texts

APP_ID = "1234567890"
PAGES = {
    "101": ("Bottender Coffee", "page-token-101"),
    "202": ("Bottender Bakery", "page-token-202"),
    "303": ("Private Page", "page-token-303"),
}
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser-connect"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return (
        os.environ.get("CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


@pytest.fixture
async def site(sqlite_url: str) -> AsyncIterator[Stage]:
    """The real server with FB_APP_ID, its PUBLIC_URL its own address (the browser follows
    the links it makes), Facebook Login served by the local Graph API."""
    st = Stage(sqlite_url, public_url_is_self=True, fb_app_id=APP_ID)
    await st.start()
    for page_id, (name, token) in PAGES.items():
        st.graph.add_page(page_id, name, token)
    st.telegram.add_chat(CHAT_ID, "Support", is_forum=True, admins={ADMIN_ID})
    try:
        yield st
    finally:
        await st.stop()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium; .ci/run does it as root)")
    playwright = pytest.importorskip("playwright.async_api", reason="playwright not installed")
    async with playwright.async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a new, empty user data dir
            executable_path=path,
            headless=True,
            args=CHROMIUM_ARGS,
            java_script_enabled=False,  # the pages work without it
        )
        try:
            yield context
        finally:
            await context.close()


async def shot(page: Any, tmp_path: Path, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def new_link(st: Stage) -> str:
    url = await st.app[PAGE_ACCESS].links.new_link("telegram", str(CHAT_ID), str(ADMIN_ID))
    assert url is not None and url.startswith(f"{st.url}/connect/")
    return url


async def test_pages_ticked_in_the_browser_are_bound_subscribed_and_told(
    site: Stage, browser: Any, tmp_path: Path
) -> None:
    url = await new_link(site)
    page = await browser.new_page()

    resp = await page.goto(url)
    assert resp.status == 200
    assert await page.locator("h1").inner_text() == "Connect Facebook Pages"
    await shot(page, tmp_path, "1-link")
    await page.get_by_role("button", name="Continue with Facebook").click()

    # Facebook Login: our dialog URL, with the scopes the README lists
    await page.wait_for_selector("#continue")
    [dialog] = site.graph.called("dialog")
    assert dialog.params["client_id"] == APP_ID
    assert dialog.params["redirect_uri"] == f"{site.url}/connect/facebook/callback"
    assert dialog.params["scope"] == ",".join(SCOPES)
    assert dialog.params["response_type"] == "code"
    assert len(dialog.params["state"]) >= 32
    await page.click("#continue")

    await page.wait_for_selector("input[type=checkbox]")
    assert await page.locator("h1").inner_text() == "Choose the Pages"
    labels = await page.locator("label").all_inner_texts()
    assert [label.split(" (")[0].strip() for label in labels] == [
        "Bottender Coffee",
        "Bottender Bakery",
        "Private Page",
    ]
    await page.check("input[value='101']")
    await page.check("input[value='202']")
    await shot(page, tmp_path, "2-choose-pages")
    await page.get_by_role("button", name="Connect the ticked Pages").click()
    await page.wait_for_selector("text=Pages connected")
    await shot(page, tmp_path, "3-connected")
    body = await page.locator("main").inner_text()
    assert "Connected the Page Bottender Coffee (101)" in body
    assert "Connected the Page Bottender Bakery (202)" in body
    assert "Private Page" not in body

    # the code became a long-lived token, whose Pages were listed, and only those ticked
    # were subscribed and bound to the chat that asked, with their tokens sealed
    exchanges = site.graph.called("oauth_access_token")
    assert [c.params.get("grant_type") for c in exchanges] == [None, "fb_exchange_token"]
    assert exchanges[0].params["redirect_uri"] == f"{site.url}/connect/facebook/callback"
    assert {p: site.graph.pages[p].subscribed_fields for p in PAGES} == {
        "101": ["feed", "messages"],
        "202": ["feed", "messages"],
        "303": [],
    }
    async with site.c.db.read() as s:
        bound = {p.id: p for p in await s.scalars(select(Page))}
        [link] = await s.scalars(select(ConnectLink))
    assert set(bound) == {"101", "202"}
    box = TokenBox("demo-secret-key")
    for page_id, row in bound.items():
        assert (row.chat_platform, row.chat_id) == ("telegram", str(CHAT_ID))
        assert row.connected_by == str(ADMIN_ID)
        assert PAGES[page_id][1] not in row.token_encrypted
        assert box.open(row.token_encrypted) == PAGES[page_id][1]
    assert link.done_at is not None and link.user_token_encrypted is None

    await site.settled()
    [told] = [t for t in general_texts(site) if "connected in the browser" in t]
    assert f"by telegram:{ADMIN_ID}" in told
    assert "Bottender Coffee (101)" in told and "Bottender Bakery (202)" in told

    # the link works once
    resp = await page.goto(url)
    assert resp.status == 410
    assert "already used" in await page.locator("main").inner_text()
    await shot(page, tmp_path, "4-link-used")


async def test_an_expired_link_and_a_wrong_state_are_refused(
    site: Stage, browser: Any, tmp_path: Path
) -> None:
    links = site.app[PAGE_ACCESS].links
    page = await browser.new_page()

    # 15 minutes later the link no longer opens
    stale = await new_link(site)
    links.clock = lambda: time.time() + 15 * 60 + 1
    resp = await page.goto(stale)
    assert resp.status == 410
    assert "expired" in await page.locator("main").inner_text()
    await shot(page, tmp_path, "5-link-expired")
    links.clock = time.time

    # an answer whose state is not the one we sent is refused, and binds nothing
    await page.goto(await new_link(site))
    await page.get_by_role("button", name="Continue with Facebook").click()
    await page.wait_for_selector("#continue")
    back = await page.get_attribute("#continue", "href")
    assert back is not None
    query = parse_qs(urlsplit(back).query)
    forged = f"{site.url}/connect/facebook/callback?code={query['code'][0]}&state=forged"
    resp = await page.goto(forged)
    assert resp.status == 400
    assert "wrong or used state" in await page.locator("main").inner_text()
    await shot(page, tmp_path, "6-wrong-state")
    assert site.graph.called("oauth_access_token") == []

    # the right answer still works once; the same answer again is refused
    resp = await page.goto(back)
    assert resp.status == 200 and "Choose the Pages" in await page.content()
    resp = await page.goto(back)
    assert resp.status == 400
    assert "wrong or used state" in await page.locator("main").inner_text()
    async with site.c.db.read() as s:
        assert list(await s.scalars(select(Page))) == []


async def test_a_login_finished_in_another_browser_is_refused(site: Stage) -> None:
    """The state is tied to the browser that opened the link (a cookie): a callback URL
    carried to another browser binds nothing. Plain HTTP: no browser needed."""
    url = await new_link(site)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as first:
        async with first.get(url) as resp:  # showing the link's page does not use it
            assert resp.status == 200
            assert "no-store" in resp.headers["Cache-Control"]
            assert "form-action 'self' " + site.graph.url in resp.headers["Content-Security-Policy"]
        async with first.post(url, allow_redirects=False) as resp:
            assert resp.status == 303
            dialog = resp.headers["Location"]
            cookie = resp.cookies["pagedesk_connect"]
            assert cookie["httponly"] and cookie["samesite"] == "Lax"
            assert cookie["path"] == "/connect"
        async with first.post(url, allow_redirects=False) as resp:
            assert resp.status == 410  # used once
        async with first.get(dialog) as resp:
            assert resp.status == 200
    assert dialog.startswith(f"{site.graph.url}/v26.0/dialog/oauth?")
    state = parse_qs(urlsplit(dialog).query)["state"][0]
    code = site.graph.login.codes and next(iter(site.graph.login.codes))
    async with aiohttp.ClientSession() as other:
        callback = f"{site.url}/connect/facebook/callback"
        async with other.get(callback, params={"state": state, "code": code}) as resp:
            assert resp.status == 400
            assert "another browser" in await resp.text()
    assert site.graph.called("oauth_access_token") == []


async def test_no_link_without_app_id_secret_or_public_url(sqlite_url: str) -> None:
    st = Stage(sqlite_url)  # no FB_APP_ID
    await st.start()
    try:
        links = st.app[PAGE_ACCESS].links
        assert links.missing() == ["FB_APP_ID"]
        assert await links.new_link("telegram", str(CHAT_ID), str(ADMIN_ID)) is None
        assert st.http is not None
        async with st.http.get(st.url + "/connect/not-a-code") as resp:
            assert resp.status == 404
            assert "not valid" in await resp.text()
    finally:
        await st.stop()
    await asyncio.sleep(0)
