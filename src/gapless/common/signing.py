"""Signed media URLs: HMAC-SHA256 of path and expiry, so players (VLC, ffplay, a browser) open
segments without a header, for a bounded time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

#: Signed media URLs live `ttl` (the signed_url_ttl setting); one claiming to live longer (a forged
#: or replayed far-future `exp`) is refused even with a valid signature. Clocks may differ by this.
SIGNED_URL_SKEW_S = 300


def sign(token: str, path: str, expires: int) -> str:
    mac = hmac.new(token.encode(), f"{path}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def signed(token: str, path: str, ttl: float) -> str:
    expires = int(time.time() + ttl)
    return f"{path}?exp={expires}&sig={sign(token, path, expires)}"


def signature_valid(token: str, path: str, expires: str, signature: str, ttl: float) -> bool:
    """Whether a signed URL is valid now: a number of seconds within its lifetime, and its signature
    (any bytes a client sends are answered False, never an error)."""
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
        return False
    now = time.time()
    if not now <= int(expires) <= now + ttl + SIGNED_URL_SKEW_S:
        return False
    return hmac.compare_digest(sign(token, path, int(expires)).encode(), signature.encode("utf-8", "replace"))
