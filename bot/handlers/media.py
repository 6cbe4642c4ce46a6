"""``GET /media/{token}``: a file staff sent, fetched by Facebook while its link lasts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.core.media_links import MediaLinks


def media_handler(links: MediaLinks) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        found = await links.open(request.match_info["token"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(
            body=body,
            content_type=content_type,
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    return handle
