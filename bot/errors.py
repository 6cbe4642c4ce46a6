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
