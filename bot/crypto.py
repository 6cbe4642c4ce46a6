"""Page tokens are stored encrypted (Fernet: AES + HMAC) under keys derived from SECRET_KEY.

SECRET_KEY may list several keys separated by commas: the first seals, every one opens. A key
is rotated by putting the new one first; the next start re-seals every stored token under it
(``rotate``), after which the old key can be dropped from the list.

Each key goes through HKDF-SHA256 with a fixed salt and info that name pagedesk, so the
Fernet key is never the operator's string itself and a key shared with another tool derives
something else here. Databases written before HKDF were sealed with the plain SHA-256 of the
whole setting: that derivation of every key (and of the setting as written, which may hold a
comma) stays as an open-only key, and startup's re-seal moves those tokens onto HKDF.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Fixed, public and never to change: changing either makes every stored token unreadable.
HKDF_SALT = b"pagedesk/secret-key/v1"
HKDF_INFO = b"pagedesk page token encryption (Fernet)"

_UNREADABLE = "stored page token cannot be decrypted: SECRET_KEY changed?"


def parse_keys(secret_key: str) -> list[str]:
    """The keys of a SECRET_KEY setting, in order; blanks around and between are ignored."""
    return [part.strip() for part in secret_key.split(",") if part.strip()]


def _hkdf_key(key: str) -> bytes:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO).derive(
        key.encode()
    )
    return base64.urlsafe_b64encode(derived)


def _legacy_key(key: str) -> bytes:
    """How tokens were sealed before HKDF: open-only now."""
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest())


class TokenBox:
    def __init__(self, secret_key: str) -> None:
        keys = parse_keys(secret_key)
        if not keys:
            raise ValueError("SECRET_KEY: holds no key (several keys are separated by commas)")
        self._first = Fernet(_hkdf_key(keys[0]))
        legacy = list(dict.fromkeys([*keys, secret_key]))
        self._fernet = MultiFernet(
            [self._first]
            + [Fernet(_hkdf_key(k)) for k in keys[1:]]
            + [Fernet(_legacy_key(k)) for k in legacy]
        )

    def seal(self, token: str) -> str:
        return self._first.encrypt(token.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ValueError(_UNREADABLE) from None

    def is_current(self, sealed: str) -> bool:
        """Sealed under the first key (nothing to re-seal)?"""
        try:
            self._first.decrypt(sealed.encode())
        except InvalidToken:
            return False
        return True

    def rotate(self, sealed: str) -> str:
        """The same token sealed under the first key; it must open with one of the keys."""
        try:
            return self._fernet.rotate(sealed.encode()).decode()
        except InvalidToken:
            raise ValueError(_UNREADABLE) from None
