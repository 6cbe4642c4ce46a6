"""Files staff post in a thread, handed on to Facebook by URL.

Facebook's Send API and ``attachment_url`` fetch a file from a URL. ``MediaLinks.link``
stores an unguessable token for a file of a chat platform and returns
``{PUBLIC_URL}/media/{token}``; ``GET /media/{token}`` (``bot/handlers/media.py``) asks
``MediaLinks.open`` for the file, which the platform fetches (``FileFetch``) while the link
lasts. Nothing is copied or kept: the chat platform stays the file's only store."""

from __future__ import annotations

import logging
import secrets
import time

from bot.core.context import Core
from bot.errors import DeliveryError
from bot.ports import FileCheck, FileFetch
from bot.storage.models import MediaLink

log = logging.getLogger(__name__)

LINK_TTL = 3600.0  # seconds: Facebook fetches at once, an hour leaves room for retries


class MediaLinks:
    def __init__(self, core: Core, public_url: str | None = None, ttl: float = LINK_TTL) -> None:
        self.core = core
        self.public_url = public_url  # set by create_app from PUBLIC_URL
        self.ttl = ttl

    def can_fetch(self, platform: str) -> bool:
        return isinstance(self.core.platforms.get(platform), FileFetch)

    async def link(self, platform: str, file_id: str) -> str:
        """A new URL Facebook can fetch the file from, for ``ttl`` seconds. Where the
        platform can tell at once that the file cannot be handed on (``FileCheck``), its
        reason is raised here, before any part of the answer goes out."""
        if not self.public_url:
            raise DeliveryError(
                "PUBLIC_URL is not set: Facebook cannot fetch the picture", retryable=False
            )
        chat = self.core.platforms.get(platform)
        if not isinstance(chat, FileFetch):
            raise DeliveryError(f"files from {platform} cannot be sent yet", retryable=False)
        if isinstance(chat, FileCheck):
            await chat.check_file(file_id)
        token = secrets.token_urlsafe(32)
        async with self.core.db.write() as s:
            s.add(
                MediaLink(
                    token=token,
                    platform=platform,
                    file_id=file_id,
                    expires_at=time.time() + self.ttl,
                )
            )
        return f"{self.public_url.rstrip('/')}/media/{token}"

    async def open(self, token: str) -> tuple[bytes, str] | None:
        """The file behind a link that still lasts, else None (unknown, expired, or the
        platform no longer has it)."""
        if not token or len(token) > 64:
            return None
        async with self.core.db.read() as s:
            row = await s.get(MediaLink, token)
        if row is None or row.expires_at <= time.time():
            return None
        platform = self.core.platforms.get(row.platform)
        if not isinstance(platform, FileFetch):
            return None
        try:
            return await platform.fetch_file(row.file_id)
        except Exception as e:
            log.warning("a staff file could not be fetched", extra={"error": str(e)})
            return None
