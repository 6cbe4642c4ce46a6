"""Files staff share in a Slack thread, handed on to Facebook (``FileCheck``, ``FileFetch``).

``files.info`` says what the file is; its bytes come from ``url_private_download`` (else
``url_private``) with the bot token as a bearer token, as Slack requires. Asked without
the token, or by an app without the ``files:read`` scope, Slack answers that address with
its sign-in page (HTML, status 200) rather than an error: that is recognised and said.
The token goes to Slack's own file hosts only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import DeliveryError
from bot.platforms.slack_api import call

MAX_BYTES = 25 * 1024 * 1024  # what the Send API takes as one attachment
CHUNK = 64 * 1024
# what files.info answers for a file that is gone, or one the app cannot see
GONE_ERRORS = ("file_not_found", "file_deleted")


def media_kind(mimetype: str | None) -> str:
    """A file's kind as the Send API names attachments: image, video, audio or file."""
    major = (mimetype or "").partition("/")[0]
    return major if major in ("image", "video", "audio") else "file"


def file_problem(file: dict[str, Any], limit: int = MAX_BYTES) -> str | None:
    """Why a file (``files.info``'s ``file``) cannot be handed on to Facebook, else None.
    Only files uploaded into Slack are sent: not links to files elsewhere (Google Drive,
    Dropbox), not snippets or posts (Slack's own documents), nothing deleted or hidden."""
    name = str(file.get("name") or file.get("title") or "the file")
    mode = str(file.get("mode") or "hosted")
    if mode == "tombstone":
        return "the file was deleted in Slack"
    if mode == "hidden_by_limit":
        return f"Slack hides {name} (older than the workspace's plan shows)"
    if file.get("is_external") or mode == "external":
        return f"{name} is a link to a file outside Slack: upload the file itself"
    if mode != "hosted":
        return f"{name} is a Slack {mode}, not a file: send its text, or upload a file"
    size = file.get("size")
    if isinstance(size, int) and size > limit:
        mb, most = size / 1_048_576, limit // 1_048_576
        return f"{name} is too big for Facebook ({mb:.1f} MB; at most {most} MB)"
    if not (file.get("url_private_download") or file.get("url_private")):
        return f"Slack gives no download address for {name}"
    return None


class SlackFiles:
    """The file side of ``SlackPlatform``: one ``files.info``, then the download."""

    def __init__(self, client: AsyncWebClient, limit: int = MAX_BYTES) -> None:
        self.client = client
        self.limit = limit

    async def info(self, file_id: str) -> dict[str, Any]:
        try:
            resp = await call("files.info", lambda: self.client.files_info(file=file_id))
        except DeliveryError as e:
            if any(error in e.reason for error in GONE_ERRORS):
                raise DeliveryError(
                    "the file is no longer in Slack (deleted, or not where the app can see it)",
                    retryable=False,
                ) from None
            if "missing_scope" in e.reason:
                raise DeliveryError(
                    "the Slack app may not read files: add the files:read scope and reinstall it",
                    retryable=False,
                ) from None
            raise
        file = resp.get("file")
        if not isinstance(file, dict):
            raise DeliveryError("Slack's files.info named no file", retryable=False)
        return file

    async def check(self, file_id: str) -> dict[str, Any]:
        file = await self.info(file_id)
        problem = file_problem(file, self.limit)
        if problem is not None:
            raise DeliveryError(problem, retryable=False)
        return file

    async def fetch(self, file_id: str) -> tuple[bytes, str]:
        file = await self.check(file_id)
        url = str(file.get("url_private_download") or file.get("url_private"))
        mimetype = str(file.get("mimetype") or "application/octet-stream")
        if not self._slack_host(url):
            raise DeliveryError(
                "Slack gave a download address outside Slack: not asked with the app's token",
                retryable=False,
            )
        return await self._download(url, mimetype), mimetype

    def _slack_host(self, url: str) -> bool:
        """Slack's file hosts (files.slack.com), or the host of the API itself (a local
        emulator): the bot token is sent to nothing else."""
        host = urlsplit(url).netloc.lower()
        api_host = urlsplit(self.client.base_url).netloc.lower()
        bare = host.rsplit("@", 1)[-1].split(":", 1)[0]
        return host == api_host or bare == "slack.com" or bare.endswith(".slack.com")

    async def _download(self, url: str, mimetype: str) -> bytes:
        session = self.client.session
        owned = session is None
        if session is None:
            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.client.timeout)
            )
        headers = {"Authorization": f"Bearer {self.client.token}"}
        try:
            async with session.get(url, headers=headers) as resp:
                if resp.status in (404, 410):
                    raise DeliveryError("the file is no longer in Slack", retryable=False)
                if resp.status >= 400:
                    raise DeliveryError(
                        f"Slack refused the file's download (HTTP {resp.status})",
                        retryable=resp.status == 429 or resp.status >= 500,
                    )
                if resp.content_type == "text/html" and mimetype != "text/html":
                    raise DeliveryError(
                        "Slack answered the download with its sign-in page: the app needs "
                        "the files:read scope",
                        retryable=False,
                    )
                if (resp.content_length or 0) > self.limit:
                    raise DeliveryError(self._too_big(), retryable=False)
                body = bytearray()
                async for chunk in resp.content.iter_chunked(CHUNK):
                    body += chunk
                    if len(body) > self.limit:
                        raise DeliveryError(self._too_big(), retryable=False)
                return bytes(body)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise DeliveryError(
                f"the file could not be downloaded from Slack ({type(e).__name__})",
                retryable=True,
            ) from None
        finally:
            if owned:
                await session.close()

    def _too_big(self) -> str:
        return f"the file is too big for Facebook (at most {self.limit // 1_048_576} MB)"
