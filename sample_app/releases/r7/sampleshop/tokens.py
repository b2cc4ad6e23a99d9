"""Stateless login tokens: a username and an expiry time, signed with HMAC-SHA256.

Nothing is stored per login: any process that knows the secret (kept in the
database root as ``token_secret``) can check a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

LIFETIME = 3600


def issue(secret: bytes, username: str, *, now: float | None = None) -> str:
    """A token for ``username``, valid for :data:`LIFETIME` seconds."""
    expires = int((time.time() if now is None else now) + LIFETIME)
    payload = f"{username}:{expires}"
    signature = hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()
    return base64.urlsafe_b64encode(f"{payload}:{signature}".encode()).decode().rstrip("=")


def verify(secret: bytes, token: str, *, now: float | None = None) -> str | None:
    """The username a valid, unexpired token was issued to; None for any other token."""
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        username, expires, signature = decoded.rsplit(":", 2)
        expected = hmac.new(secret, f"{username}:{expires}".encode(), hashlib.sha256).hexdigest()
        fresh = int(expires) > (time.time() if now is None else now)
    except ValueError:
        return None
    # bytes: compare_digest raises TypeError for a str that is not ASCII
    return username if fresh and hmac.compare_digest(signature.encode(), expected.encode()) else None
