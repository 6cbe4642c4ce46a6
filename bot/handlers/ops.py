"""Health, readiness and metrics."""

from __future__ import annotations

import logging

from aiohttp import web

from bot.handlers import Handler
from bot.metrics import Metrics
from bot.storage.db import Database

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


def readyz_handler(db: Database) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            await db.ping()
        except Exception as e:
            log.warning("database not reachable", extra={"error": type(e).__name__})
            return web.json_response({"status": "unavailable", "database": "down"}, status=503)
        return web.json_response({"status": "ok", "database": "up"})

    return handle


def metrics_handler(metrics: Metrics) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=metrics.render(),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    return handle
