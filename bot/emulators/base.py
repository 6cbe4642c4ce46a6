"""A fake platform API: a real aiohttp server on port 0 in the caller's event loop.

It records every call (``called``, ``calls``) and can be told to answer the next calls to a
method differently (``add_response``), for errors, throttling and outages, and for the worst
case of all: the platform did the work and still answered an error or nothing (``apply``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    peer: int = 0  # the client's port: calls on one kept-alive connection share it
    token: str | None = None  # the credential presented, where the fake reads one
    token_via: str | None = None  # where it came: "header" (Authorization) or "param"


@dataclass
class Scripted:
    status: int
    body: Any
    headers: dict[str, str]
    delay: float = 0.0
    drop: bool = False
    apply: bool = False


def runner_port(runner: web.AppRunner) -> int:
    """The port a runner's site on port 0 was given."""
    address = runner.addresses[0]
    return int(address[1])


def peer_port(request: web.Request) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return int(peer[1]) if peer else 0


class FakeServer:
    def __init__(self) -> None:
        self.app = web.Application()
        self.calls: list[Call] = []
        self._scripted: dict[str, deque[Scripted]] = defaultdict(deque)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = runner_port(self._runner)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def add_response(
        self,
        method: str,
        body: Any,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        times: int = 1,
        delay: float = 0.0,
        drop: bool = False,
        apply: bool = False,
    ) -> None:
        """Answer the next ``times`` calls to ``method`` with this instead of the model.
        ``drop`` closes the connection without an answer; ``delay`` waits first.

        ``apply``: the model handles the call first (the comment is created, the message
        sent) and then this answer replaces the model's: "stored, yet answered 500", or with
        ``delay`` past the client's timeout "stored, yet the client gave up". Only fakes that
        pass their model to ``scripted`` support it."""
        for _ in range(times):
            self._scripted[method].append(Scripted(status, body, headers or {}, delay, drop, apply))

    def clear_responses(self) -> None:
        """Back to the model's own answers (the outage is over)."""
        self._scripted.clear()

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def scripted(
        self,
        request: web.Request,
        method: str,
        model: Callable[[], Awaitable[web.StreamResponse]] | None = None,
    ) -> web.StreamResponse | None:
        """The scripted answer to this call, if one is queued; None lets the model answer.
        With ``model`` given, an ``apply`` answer runs it first and discards its answer."""
        queue = self._scripted.get(method)
        if not queue:
            return None
        s = queue.popleft()
        if s.apply:
            if model is None:
                raise RuntimeError(f"{type(self).__name__} cannot apply a scripted answer")
            await model()
        if s.delay:
            await asyncio.sleep(s.delay)
        if s.drop:
            transport = request.transport
            if transport is not None:
                transport.close()
            raise ConnectionResetError("dropped by the fake")
        return web.Response(
            status=s.status,
            text=json.dumps(s.body) if not isinstance(s.body, str) else s.body,
            content_type="application/json",
            headers=s.headers,
        )


async def read_params(request: web.Request) -> dict[str, Any]:
    """Query, form (urlencoded or multipart) or JSON body, JSON-looking values decoded."""
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
        else:
            form = await request.post()
            for k, v in form.items():
                params[k] = v if isinstance(v, str) else str(v)
    for k, v in list(params.items()):
        if isinstance(v, str) and v[:1] in "[{":
            with contextlib.suppress(ValueError):
                params[k] = json.loads(v)
    return params
