"""One Slack Web API call, its errors turned into what the outbox acts on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.errors import DeliveryError, ThreadGone

RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


async def call(
    action: str,
    fn: Callable[[], Awaitable[AsyncSlackResponse]],
    *,
    gone: tuple[str, ...] = (),
) -> AsyncSlackResponse:
    """Run one Web API call, turning slack_sdk's errors into what the outbox acts on.
    An error named in ``gone`` means the task's thread was deleted: ThreadGone."""
    try:
        return await fn()
    except SlackApiError as e:
        status = e.response.status_code
        error = str(e.response.get("error", "unknown_error"))
        if error in gone:
            raise ThreadGone(f"Slack: the thread is gone ({action}: {error})") from None
        retry_after = e.response.headers.get("Retry-After") if e.response.headers else None
        retryable = status == 429 or status >= 500 or error in RETRYABLE_ERRORS
        raise DeliveryError(
            f"Slack refused {action}: {error}",
            retryable=retryable,
            retry_after=float(retry_after) if retry_after else None,
        ) from None
    except (aiohttp.ClientError, TimeoutError, SlackClientError) as e:
        raise DeliveryError(
            f"Slack unavailable on {action} ({type(e).__name__})", retryable=True
        ) from None
