"""Secrets: the Graph token in a header with appsecret_proof, looking for an answer before
sending it again, SECRET_KEY rotation, and tokens kept out of log lines."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select

from bot.config import ConfigError, load_settings
from bot.crypto import TokenBox
from bot.emulators.graph import FakeGraph
from bot.emulators.stage import Stage
from bot.errors import DeliveryError
from bot.fb.graph import GraphClient, GraphError
from bot.logs import FieldsFormatter
from bot.storage.models import Page
from tests.conftest import PAGE_ID, PAGE_TOKEN

APP_SECRET = "test-app-secret"
PAGE = "1"
TOKEN = "t1"
POST = "1_2"
WHEN = "2025-01-20T09:31:16+0000"  # before the replies the tests post
SERVER_ERROR = {"error": {"message": "An unknown error occurred", "type": "OAuthException"}}


def proof(token: str, secret: str = APP_SECRET) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
async def fake() -> AsyncIterator[FakeGraph]:
    graph = FakeGraph(user_token="user", app_secret=APP_SECRET)
    await graph.start()
    graph.add_page(PAGE, "One", TOKEN)
    graph.add_post(POST, "Hello world", WHEN)
    graph.add_comment(POST, "1_c1", ("u9", "Ann"), "Do you deliver?", WHEN)
    yield graph
    await graph.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client(
    fake: FakeGraph,
    http: aiohttp.ClientSession,
    *,
    app_secret: str | None = None,
    timeout: float = 30,
) -> GraphClient:
    return GraphClient(fake.url, "v26.0", http, app_secret=app_secret, timeout=timeout)


# --- the token in a header, with its proof --------------------------------------------------


async def test_every_graph_call_carries_bearer_and_proof_never_the_token_as_a_parameter(
    fake: FakeGraph, http: aiohttp.ClientSession
) -> None:
    graph = client(fake, http, app_secret=APP_SECRET)
    assert await graph.me("user") == {"id": "1000", "name": "Operator"}
    assert [a.id for a in await graph.accounts("user")] == [PAGE]
    await graph.subscribe_app(PAGE, TOKEN, ["feed", "messages"])  # POST, form body
    assert await graph.subscribed_fields(PAGE, TOKEN) == ["feed", "messages"]
    assert (await graph.post(POST, TOKEN)).text == "Hello world"
    await graph.comments(PAGE, POST, TOKEN, None)
    await graph.reply_to_comment("1_c1", "Yes", TOKEN)  # POST, form body
    await graph.send_message("psid-1", "Hi", TOKEN)  # POST, JSON body
    await graph.find_comment_reply("1_c1", PAGE, "Yes", TOKEN)
    await graph.find_sent_message(PAGE, "psid-1", "Hi", TOKEN)

    methods = {c.method for c in fake.calls}
    assert methods == {
        "me",
        "accounts",
        "subscribed_apps",
        "object",
        "post_comments",
        "comments",
        "messages",
        "conversations",
    }
    assert {c.params["path"] for c in fake.calls if c.method in ("comments", "messages")} == {
        "1_c1/comments",
        "me/messages",
    }
    for call in fake.calls:
        token = "user" if call.method in ("me", "accounts") else TOKEN
        assert call.headers["Authorization"] == f"Bearer {token}", call.method
        assert call.token_via == "header"
        assert "access_token" not in call.params, call.method  # query and body alike
        assert call.params["appsecret_proof"] == proof(token), call.method


async def test_a_wrong_app_secret_is_refused_for_good_and_says_so(
    fake: FakeGraph, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(GraphError) as wrong:
        await client(fake, http, app_secret="not-the-secret").reply_to_comment("1_c1", "x", TOKEN)
    assert (wrong.value.status, wrong.value.code, wrong.value.retryable) == (400, 100, False)
    assert not wrong.value.token_invalid
    assert "appsecret_proof" in wrong.value.reason and "FB_APP_SECRET" in wrong.value.reason
    with pytest.raises(GraphError) as missing:
        await client(fake, http).subscribed_fields(PAGE, TOKEN)
    assert not missing.value.retryable
    assert "require an appsecret_proof" in missing.value.reason
    assert fake.comments == []  # nothing was done


async def test_the_fake_takes_the_token_as_a_parameter_too(
    fake: FakeGraph, http: aiohttp.ClientSession
) -> None:
    url = f"{fake.url}/v26.0/{PAGE}/subscribed_apps"
    params = {"access_token": TOKEN, "appsecret_proof": proof(TOKEN)}
    async with http.get(url, params=params) as resp:
        assert resp.status == 200
    async with http.get(url, params={"access_token": TOKEN}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == 100
    async with http.get(url) as resp:
        assert (await resp.json())["error"]["code"] == 104  # no token at all
    assert [(c.token, c.token_via) for c in fake.calls] == [
        (TOKEN, "param"),
        (TOKEN, "param"),
        (None, None),
    ]


# --- looking before sending again (behaviour 11) --------------------------------------------


async def test_a_reply_stored_despite_a_500_is_found_and_only_that_one(
    fake: FakeGraph, http: aiohttp.ClientSession
) -> None:
    graph = client(fake, http, app_secret=APP_SECRET)
    text = "Yes, we deliver!"
    # the same words from someone else, and another reply of the page
    fake.add_comment(POST, "1_c2", ("u8", "Bob"), text, WHEN, parent_id="1_c1")
    other = await graph.reply_to_comment("1_c1", "Opening hours: 9-5", TOKEN)
    assert await graph.find_comment_reply("1_c1", PAGE, text, TOKEN) is None

    fake.add_response("comments", SERVER_ERROR, status=500, apply=True)
    with pytest.raises(DeliveryError) as e:
        await graph.reply_to_comment("1_c1", text, TOKEN)
    assert e.value.retryable
    [stored] = [c for c in fake.comments if c.message == text]  # Facebook has it all the same

    assert await graph.find_comment_reply("1_c1", PAGE, text, TOKEN) == stored.id
    assert await graph.find_comment_reply("1_c1", PAGE, f"  {text}\n", TOKEN) == stored.id
    assert await graph.find_comment_reply("1_c1", PAGE, "Yes, we deliver", TOKEN) is None
    read = fake.called("post_comments")[-1]
    assert read.params["path"] == "1_c1/comments"
    assert {k: read.params[k] for k in ("fields", "filter", "order", "limit")} == {
        "fields": "id,from,message,created_time",
        "filter": "stream",
        "order": "reverse_chronological",
        "limit": "100",
    }
    assert await graph.find_comment_reply("1_c9", PAGE, text, TOKEN) is None
    # the comment's replies, as GET /{comment-id}/comments lists them
    assert [r["id"] for r in fake.replies("1_c1")] == ["1_c2", other, stored.id]
    assert fake.replies("1_c1")[2]["from"] == {"id": PAGE, "name": "One"}


async def test_a_reply_stored_while_the_client_timed_out_is_found(
    fake: FakeGraph, http: aiohttp.ClientSession
) -> None:
    graph = client(fake, http, app_secret=APP_SECRET, timeout=0.2)
    fake.add_response("comments", {"id": "never-seen"}, delay=0.6, apply=True)
    with pytest.raises(DeliveryError) as e:
        await graph.reply_to_comment("1_c1", "On its way", TOKEN)
    assert e.value.retryable and "could not be reached" in e.value.reason
    [stored] = fake.comments
    assert await graph.find_comment_reply("1_c1", PAGE, "On its way", TOKEN) == stored.id


async def test_a_message_sent_despite_a_500_is_found_and_only_that_one(
    fake: FakeGraph, http: aiohttp.ClientSession
) -> None:
    graph = client(fake, http, app_secret=APP_SECRET)
    text = "Your order ships today"
    fake.add_conversation_message(PAGE, "psid-1", text, from_page=False)  # the person's words
    fake.add_conversation_message(PAGE, "psid-1", "Thanks for writing")
    fake.add_conversation_message(PAGE, "psid-2", text)  # someone else's conversation
    assert await graph.find_sent_message(PAGE, "psid-1", text, TOKEN) is None

    fake.add_response("messages", SERVER_ERROR, status=500, apply=True)
    with pytest.raises(DeliveryError) as e:
        await graph.send_message("psid-1", text, TOKEN)
    assert e.value.retryable
    [sent] = fake.messages

    assert await graph.find_sent_message(PAGE, "psid-1", text, TOKEN) == sent["message_id"]
    assert await graph.find_sent_message(PAGE, "psid-1", "Thanks", TOKEN) is None
    assert await graph.find_sent_message(PAGE, "psid-3", text, TOKEN) is None
    read = fake.called("conversations")[-1]
    assert read.params["path"] == f"{PAGE}/conversations"
    assert {k: read.params[k] for k in ("platform", "user_id", "fields")} == {
        "platform": "messenger",
        "user_id": "psid-3",
        "fields": "messages.limit(25){id,message,from}",
    }


# --- SECRET_KEY -----------------------------------------------------------------------------


def legacy_seal(key: str, token: str) -> str:
    """How page tokens were sealed before HKDF (databases in production have these)."""
    fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))
    return fernet.encrypt(token.encode()).decode()


def test_token_box_round_trip_and_rotation() -> None:
    box = TokenBox("key-a")
    sealed = box.seal("EAAB-page-token")
    assert "EAAB" not in sealed and box.open(sealed) == "EAAB-page-token"
    assert box.is_current(sealed)

    both = TokenBox(" key-b , key-a ,")  # blanks and empty parts are ignored
    assert both.open(sealed) == "EAAB-page-token"
    assert not both.is_current(sealed)
    rotated = both.rotate(sealed)
    assert both.is_current(rotated)
    assert TokenBox("key-b").open(rotated) == "EAAB-page-token"
    with pytest.raises(ValueError, match=r"^stored page token cannot be decrypted: SECRET_KEY"):
        box.open(rotated)
    with pytest.raises(ValueError, match="SECRET_KEY changed"):
        TokenBox("key-c").open(sealed)
    with pytest.raises(ValueError, match="SECRET_KEY changed"):
        TokenBox("key-c").rotate(sealed)


def test_tokens_sealed_before_hkdf_still_open_and_move_to_the_first_key() -> None:
    old = legacy_seal("production-key", "EAAB-old")
    assert TokenBox("production-key").open(old) == "EAAB-old"
    rotating = TokenBox("new-key,production-key")
    assert rotating.open(old) == "EAAB-old"
    assert TokenBox("new-key").open(rotating.rotate(old)) == "EAAB-old"
    # a key written before commas meant rotation may itself hold a comma
    assert TokenBox("pa,ss").open(legacy_seal("pa,ss", "EAAB-comma")) == "EAAB-comma"
    # new seals use HKDF, not the plain hash
    assert not TokenBox("new-key").is_current(legacy_seal("new-key", "x"))
    legacy_only = Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"new-key").digest()))
    with pytest.raises(InvalidToken):
        legacy_only.decrypt(TokenBox("new-key").seal("x").encode())


def test_a_secret_key_of_only_commas_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^SECRET_KEY: holds no key"):
        load_settings(secret_key=" , ,", _env_file=None)
    assert load_settings(secret_key="b, a", _env_file=None).secret_key is not None
    with pytest.raises(ValueError, match="SECRET_KEY"):
        TokenBox(",")


async def test_start_reseals_stored_tokens_under_the_first_key(
    connected: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    async with connected.c.db.write() as s:
        page = await s.get(Page, PAGE_ID)
        assert page is not None
        assert TokenBox("demo-secret-key").is_current(page.token_encrypted)
        s.add(
            Page(
                id="42",
                name="Old Page",
                token_encrypted=legacy_seal("demo-secret-key", "old-page-token"),
                chat_platform="telegram",
                chat_id="-100",
                active=False,
            )
        )
    await connected.stop_app()
    connected.overrides["secret_key"] = "new-key, demo-secret-key"
    with caplog.at_level(logging.INFO, logger="bot.app"):
        await connected.start_app()
    [line] = [r for r in caplog.records if "re-sealed" in r.getMessage()]
    assert line.__dict__["count"] == 2
    assert PAGE_TOKEN not in caplog.text and "old-page-token" not in caplog.text

    new = TokenBox("new-key")
    async with connected.c.db.read() as s:
        pages = {p.id: p.token_encrypted for p in await s.scalars(select(Page))}
    assert new.open(pages[PAGE_ID]) == PAGE_TOKEN
    assert new.open(pages["42"]) == "old-page-token"

    # the old key can go now: the page still answers with its token
    await connected.stop_app()
    connected.overrides["secret_key"] = "new-key"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bot.app"):
        await connected.start_app()
    assert not [r for r in caplog.records if "re-sealed" in r.getMessage()]
    async with connected.c.db.read() as s:
        page = await s.get(Page, PAGE_ID)
    assert page is not None and connected.c.parts.core.page_token(page) == PAGE_TOKEN


# --- log redaction --------------------------------------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(FieldsFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def test_no_secret_survives_formatting(log_stream: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log_stream
    secrets = [
        "xoxb-1234-5678-SlackSecret1",
        "SlackSecret2",
        "EAABjsonSecret3",
        "EAABreprSecret4",
        "EAABbearerSecret5",
        "AAHtelegramSecret6",
        "deadbeefproof7",
        "EAABquerySecret8",
    ]
    try:
        raise RuntimeError("401 Unauthorized; request had Authorization: Bearer EAABbearerSecret5")
    except RuntimeError:
        logger.exception(
            "Slack call with %s failed; app token xapp-1-A0-SlackSecret2",
            "xoxb-1234-5678-SlackSecret1",
            extra={
                "body": json.dumps({"access_token": "EAABjsonSecret3", "id": "1"}),
                "answer": {"access_token": "EAABreprSecret4"},
                "url": "https://api.telegram.org/bot123456:AAHtelegramSecret6/getMe",
                "graph": "/v26.0/me?access_token=EAABquerySecret8&appsecret_proof=deadbeefproof7",
            },
        )
    out = stream.getvalue()
    assert "Traceback" in out and "RuntimeError: 401 Unauthorized" in out
    for secret in secrets:
        assert secret not in out, secret
    assert "xoxb-<redacted>" in out and "xapp-<redacted>" in out
    assert "Bearer <redacted>" in out and "/bot123456:<redacted>/getMe" in out
    assert '"access_token": "<redacted>"' in out and "'access_token': '<redacted>'" in out
    assert "access_token=<redacted>&appsecret_proof=<redacted>" in out
    assert '"id": "1"' in out  # what is not a secret stays readable
