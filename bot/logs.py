"""Logging: one line per event with its structured fields; secrets never reach a record."""

from __future__ import annotations

import logging
import re
from types import TracebackType

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

_SECRET_NAMES = r"access_token|appsecret_proof|client_secret|refresh_token|fb_exchange_token"
_VALUE = r"[A-Za-z0-9_\-:.%~+/=]+"
# What a library, an exception or our own code might put in a line, and where the secret
# part starts: everything the first group matched stays, the rest up to the value's end goes.
_SECRETS = (
    # query strings and form bodies: ?access_token=EAAB…&appsecret_proof=9f…
    re.compile(rf"((?:{_SECRET_NAMES})=)[^&\s\"'<>]+"),
    # JSON and Python reprs: "access_token": "EAAB…", {'access_token': 'EAAB…'}, escaped too
    re.compile(rf"(\\?[\"'](?:{_SECRET_NAMES})\\?[\"']\s*:\s*\\?[\"'])[^\"'\\]+"),
    # headers: Authorization: Bearer EAAB…
    re.compile(rf"(\bBearer\s+){_VALUE}", re.IGNORECASE),
    # Telegram: the token is part of every Bot API URL (/bot123456:ABC-def/sendMessage)
    re.compile(r"(/bot\d+:)[A-Za-z0-9_\-]+"),
    # a Telegram token on its own: 123456789:AAH… (35 characters after the colon)
    re.compile(r"(\b\d{5,}:)[A-Za-z0-9_\-]{30,}"),
    # Slack: bot, user, app-level, workspace and refresh tokens
    re.compile(r"(\b(?:xox[abeopr]|xapp)-)[A-Za-z0-9\-]+"),
)


def redact(text: str) -> str:
    for pattern in _SECRETS:
        text = pattern.sub(r"\1<redacted>", text)
    return text


class FieldsFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if fields:
            base += " " + " ".join(f"{k}={v!r}" for k, v in sorted(fields.items()))
        return redact(base)

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        # The record caches this text (``exc_text``) for every other handler: clean it here.
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info))


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(FieldsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
