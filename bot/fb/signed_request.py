"""Facebook's ``signed_request`` (data deletion and deauthorize callbacks): two base64url
parts joined by a dot, the HMAC-SHA256 signature of the second part (as sent, still encoded)
keyed with the app secret, then the JSON payload."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any


class BadSignedRequest(ValueError):
    """Not signed with our app secret, or not a signed request at all."""


def _b64url(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise BadSignedRequest("not base64url") from None


def sign_request(payload: dict[str, Any], app_secret: str) -> str:
    """Make one the way Facebook does (for tests and the demo)."""
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
    sig = hmac.new(app_secret.encode(), body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(sig).rstrip(b"=").decode() + "." + body.decode()


def parse_signed_request(signed_request: str, app_secret: str) -> dict[str, Any]:
    encoded_sig, dot, body = signed_request.strip().partition(".")
    if not dot or not encoded_sig or not body:
        raise BadSignedRequest("not two parts joined by a dot")
    expected = hmac.new(app_secret.encode(), body.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(_b64url(encoded_sig), expected):
        raise BadSignedRequest("signature does not match FB_APP_SECRET")
    try:
        payload = json.loads(_b64url(body))
    except ValueError:
        raise BadSignedRequest("payload is not JSON") from None
    if not isinstance(payload, dict):
        raise BadSignedRequest("payload is not an object")
    if str(payload.get("algorithm", "")).upper() != "HMAC-SHA256":
        raise BadSignedRequest("algorithm is not HMAC-SHA256")
    return payload
