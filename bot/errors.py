"""Errors the outbox understands: can retrying help, and when."""

from __future__ import annotations


class DeliveryError(Exception):
    """A platform call failed. ``retryable`` says whether trying again can help;
    ``retry_after`` is the platform's own wait in seconds, when it named one."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        token_invalid: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.token_invalid = token_invalid


class ThreadGone(DeliveryError):
    """The task's thread no longer exists in the chat (a person deleted the Telegram topic
    or the Slack root message). Retrying the same call cannot help; the task needs a new
    thread, and the call is made again there."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, retryable=False)


_KINDS = (
    ("thread_gone", ("thread not found", "thread_not_found", "topic_id_invalid", "topic_deleted")),
    ("too_long", ("too long", "msg_too_long", "invalid_blocks")),
    ("bad_markup", ("parse entities", "can't parse", "invalid_arguments")),
    ("not_found", ("not found", "message_not_found", "channel_not_found", "no longer exists")),
    (
        "no_access",
        ("forbidden", "not enough rights", "kicked", "not_in_channel", "is_archived", "190"),
    ),
    ("rate_limited", ("flood", "rate", "429", "ratelimited")),
    ("unavailable", ("unavailable", "timeout", "could not be reached", "internal error")),
    ("not_configured", ("not configured", "not set")),
)


def failure_kind(reason: str) -> str:
    """A short, bounded label for a failure reason (a metrics label must not carry text)."""
    low = reason.lower()
    for kind, needles in _KINDS:
        if any(n in low for n in needles):
            return kind
    return "other"
