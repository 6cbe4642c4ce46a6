from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.emulators.stage import OPERATOR_TELEGRAM_ID, Stage

FIXTURES = Path(__file__).parent / "fixtures"
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")

PAGE_ID = "137542570280111"
PAGE_NAME = "Bottender Coffee"
PAGE_TOKEN = "page-token-1"
CHAT_ID = -1002271335705
ADMIN_ID = OPERATOR_TELEGRAM_ID
ADMIN = {"id": ADMIN_ID, "is_bot": False, "first_name": "Sal", "username": "sal"}
AGENT = {"id": 555001, "is_bot": False, "first_name": "Ines"}


def load_fixture(name: str) -> Any:
    """A payload from shared/fixtures (copied verbatim into tests/fixtures/shared) or
    tests/fixtures."""
    for folder in (FIXTURES / "shared", FIXTURES):
        path = folder / name
        if path.exists():
            return json.loads(path.read_text())
    raise FileNotFoundError(name)


async def reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


def _db_params() -> list[Any]:
    params: list[Any] = [pytest.param("sqlite", id="sqlite")]
    params.append(
        pytest.param(
            "postgres",
            id="postgres",
            marks=pytest.mark.skipif(
                not POSTGRES_URL, reason="TEST_POSTGRES_URL not set (no PostgreSQL here)"
            ),
        )
    )
    return params


@pytest.fixture(params=_db_params())
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        assert POSTGRES_URL is not None
        await reset_postgres(POSTGRES_URL)
        return POSTGRES_URL
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
async def stage(sqlite_url: str) -> AsyncIterator[Stage]:
    st = Stage(sqlite_url)
    await st.start()
    try:
        yield st
    finally:
        await st.stop()


async def connect(
    st: Stage,
    *,
    page_id: str = PAGE_ID,
    name: str = PAGE_NAME,
    token: str = PAGE_TOKEN,
    forum: bool = True,
) -> None:
    st.graph.add_page(page_id, name, token)
    if CHAT_ID not in st.telegram.chats:
        st.telegram.add_chat(CHAT_ID, "Support", is_forum=forum, admins={ADMIN_ID})
    resp = await st.telegram_update(st.telegram.user_message(CHAT_ID, ADMIN, f"/connect {page_id}"))
    assert resp.status == 200
    await st.settled()


@pytest.fixture
async def connected(stage: Stage) -> Stage:
    await connect(stage)
    return stage
