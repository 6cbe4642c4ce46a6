"""Our Graph client against the Graph emulator: calls, tokens, and error mapping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.emulators.graph import FakeGraph
from bot.errors import DeliveryError
from bot.fb.graph import GraphClient, GraphError
from tests.conftest import load_fixture


@pytest.fixture
async def graph() -> AsyncIterator[tuple[FakeGraph, GraphClient]]:
    fake = FakeGraph(user_token="user")
    await fake.start()
    async with aiohttp.ClientSession() as http:
        yield fake, GraphClient(fake.url, "v26.0", http)
    await fake.stop()


async def test_accounts_and_subscribe(graph: tuple[FakeGraph, GraphClient]) -> None:
    fake, client = graph
    fake.add_page("1", "One", "t1")
    fake.add_page("2", "Two", "t2")
    accounts = await client.accounts("user")
    assert [(a.id, a.name, a.access_token) for a in accounts] == [
        ("1", "One", "t1"),
        ("2", "Two", "t2"),
    ]
    await client.subscribe_app("2", "t2", ["feed", "messages"])
    assert fake.pages["2"].subscribed_fields == ["feed", "messages"]
    assert await client.subscribed_fields("2", "t2") == ["feed", "messages"]


async def test_reply_posts_under_the_comment_with_the_page_token(
    graph: tuple[FakeGraph, GraphClient],
) -> None:
    fake, client = graph
    fake.add_page("1", "One", "t1")
    new_id = await client.reply_to_comment("1_55", "Thanks!", "t1")
    [c] = fake.comments
    assert (c.id, c.parent_id, c.message, c.token) == (new_id, "1_55", "Thanks!", "t1")
    [call] = fake.called("comments")
    assert call.params["path"] == "1_55/comments"


async def test_deleted_comment_is_final(graph: tuple[FakeGraph, GraphClient]) -> None:
    fake, client = graph
    fake.add_page("1", "One", "t1")
    fake.add_response(
        "comments", load_fixture("fb_graph_error_100_33_object_missing.json"), status=400
    )
    with pytest.raises(GraphError) as e:
        await client.reply_to_comment("1_55", "x", "t1")
    assert (e.value.code, e.value.subcode, e.value.retryable) == (100, 33, False)
    assert "no longer exists" in e.value.reason


async def test_expired_token_is_final_and_flagged(graph: tuple[FakeGraph, GraphClient]) -> None:
    _, client = graph
    with pytest.raises(GraphError) as e:
        await client.reply_to_comment("1_55", "x", "not-a-token")
    assert e.value.token_invalid and not e.value.retryable


async def test_throttling_is_retryable_with_the_usage_header_wait(
    graph: tuple[FakeGraph, GraphClient],
) -> None:
    fake, client = graph
    fake.add_page("1", "One", "t1")
    usage = load_fixture("fb_header_x_business_use_case_usage_pages.json")
    usage_key = next(iter(usage))
    usage[usage_key][0]["estimated_time_to_regain_access"] = 3
    fake.add_response(
        "comments",
        load_fixture("fb_graph_error_80001_page_rate_limit.json"),
        status=400,
        headers={"X-Business-Use-Case-Usage": json.dumps(usage)},
    )
    with pytest.raises(GraphError) as e:
        await client.reply_to_comment("1_55", "x", "t1")
    assert e.value.retryable and e.value.code == 80001
    assert e.value.retry_after == 180.0


async def test_server_errors_and_dropped_connections_are_retryable(
    graph: tuple[FakeGraph, GraphClient],
) -> None:
    fake, client = graph
    fake.add_page("1", "One", "t1")
    fake.add_response("comments", "<html>502</html>", status=502)
    with pytest.raises(DeliveryError) as e:
        await client.reply_to_comment("1_55", "x", "t1")
    assert e.value.retryable
    fake.add_response("comments", {}, drop=True)
    with pytest.raises(DeliveryError) as e2:
        await client.reply_to_comment("1_55", "x", "t1")
    assert e2.value.retryable and "could not be reached" in e2.value.reason


async def test_post_and_profile(graph: tuple[FakeGraph, GraphClient]) -> None:
    fake, client = graph
    fake.add_page("1", "One", "t1")
    fake.add_post("1_2", "Hello world", "2026-11-20T09:31:16+0000")
    fake.add_profile("u1", "Ann", "https://pic/ann.jpg")
    post = await client.post("1_2", "t1")
    assert (post.text, post.created_time and post.created_time.isoformat()) == (
        "Hello world",
        "2026-11-20T09:31:16+00:00",
    )
    assert await client.profile("u1", "t1") == ("Ann", "https://pic/ann.jpg")
