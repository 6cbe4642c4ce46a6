"""The operator's side of Facebook access, put together: Pages connected in the browser,
page token health, and the data deletion callback. ``create_app`` builds one and hands it
the two seams into the core (``BindPage``, ``Say``) and a getter for the Graph client,
which exists only once the app has started."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from bot.browser_connect import BindPage, BrowserConnect, ConnectLinks, Say
from bot.config import Settings
from bot.crypto import TokenBox
from bot.data_deletion import DataDeletion
from bot.fb.graph import GraphClient
from bot.handlers.connect import ConnectPages
from bot.handlers.data_deletion import DataDeletionEdge
from bot.metrics import Metrics
from bot.storage.db import Database
from bot.token_health import Once, TokenHealth


@dataclass
class PageAccess:
    links: ConnectLinks
    browser: BrowserConnect
    health: TokenHealth
    deletion: DataDeletion
    deletion_edge: DataDeletionEdge

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        tokens: TokenBox | None,
        metrics: Metrics,
        graph: Callable[[], GraphClient | None],
        bind_page: BindPage,
        say: Say,
        *,
        once: Once | None = None,
    ) -> PageAccess:
        secret = settings.fb_app_secret.get_secret_value() if settings.fb_app_secret else None
        links = ConnectLinks(
            db,
            tokens,
            public_url=settings.public_url,
            app_id=settings.fb_app_id,
            app_secret=secret,
            login_url=settings.fb_login_url,
            api_version=settings.fb_api_version,
        )
        deletion = DataDeletion(db)
        return cls(
            links=links,
            browser=BrowserConnect(links, graph, bind_page, say),
            health=TokenHealth(
                db, tokens, metrics, graph, settings.fb_app_id if secret else None, say, once=once
            ),
            deletion=deletion,
            deletion_edge=DataDeletionEdge(deletion, secret, settings.public_url, metrics),
        )

    def add_routes(self, app: web.Application) -> None:
        ConnectPages(self.links, self.browser).add_routes(app)
        self.deletion_edge.add_routes(app)

    async def run(self, stop: asyncio.Event) -> None:
        """The background part: token checks, and old connect links swept along."""
        await self.health.run(stop, also=(self.browser.prune,))


PAGE_ACCESS = web.AppKey("page_access", PageAccess)
