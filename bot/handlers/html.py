"""Server-rendered pages for people in a browser: one small template, no script, every
value escaped, nothing cached, no framing, no referrer."""

from __future__ import annotations

import html

from aiohttp import web

_CSS = (
    "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1c1e21}"
    "main{max-width:34rem;margin:3rem auto;padding:1.5rem 2rem;background:#fff;"
    "border-radius:8px;box-shadow:0 1px 3px #0002}"
    "h1{font-size:1.4rem;margin-top:0}label{display:block;padding:.4rem 0}"
    "small{color:#606770}button{font:inherit;padding:.5rem 1.2rem;border:0;"
    "border-radius:6px;background:#1877f2;color:#fff;cursor:pointer}"
    "fieldset{border:1px solid #dddfe2;border-radius:6px;margin:1rem 0}"
    "li{margin:.3rem 0}"
)


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def page(title: str, body: str, *, status: int = 200, form_action: str = "") -> web.Response:
    """``body`` is HTML the caller built with ``esc``; ``form_action``: origins besides our
    own that a form here may lead to (a form's redirect is held to it too)."""
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{esc(title)} · Pagedesk</title><style>{_CSS}</style></head>"
        f"<body><main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )
    csp = (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        f"frame-ancestors 'none'; form-action 'self' {form_action}".rstrip()
    )
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": csp,
        },
    )
