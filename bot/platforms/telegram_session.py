"""aiogram's HTTP session, holding the pydantic models it reads answers with.

aiogram validates every Bot API answer with ``Response[<the method's result type>]``, a
parametrised pydantic generic. pydantic keeps those in a weak cache: once the garbage
collector has taken one, the next call builds the model again (a schema and a validator,
about a fifth of a plain send's CPU). Holding one per result type keeps the cache hit.
"""

from __future__ import annotations

from typing import Any

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.methods.base import Response, TelegramMethod, TelegramType

# result type → its Response model; a few dozen at most (one per Bot API result type)
RESPONSE_MODELS: dict[Any, type[Response[Any]]] = {}


class HeldModelsSession(AiohttpSession):
    def check_response(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        status_code: int,
        content: str,
    ) -> Response[TelegramType]:
        returning = method.__returning__
        if returning not in RESPONSE_MODELS:
            RESPONSE_MODELS[returning] = Response[returning]  # type: ignore[valid-type]
        return super().check_response(bot, method, status_code, content)
