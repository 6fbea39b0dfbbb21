"""Console sessions: a credential presented once (the console's `/?token=…` login link, as Jupyter
does) is exchanged for a random session id in an HTTP-only, same-site cookie; the browser's later
requests (API calls, media, live WebSockets, which cannot carry a header) present the cookie, and
the server looks the credential up. The cookie is not the credential, cannot be read by scripts,
and is not sent by other sites' pages. Sessions live in the serving process, LIFETIME_S at most."""

from __future__ import annotations

import secrets
import threading
import time

COOKIE = "gapless_session"
LIFETIME_S = 12 * 3600.0


class Sessions:
    def __init__(self, lifetime_s: float = LIFETIME_S) -> None:
        self.lifetime_s = lifetime_s
        self._by_id: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def open(self, credential: str) -> str:
        """A new session for a credential the caller has checked; returns its id (the cookie's value)."""
        now = time.monotonic()
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._by_id = {sid: entry for sid, entry in self._by_id.items() if entry[1] > now}
            self._by_id[session] = (credential, now + self.lifetime_s)
        return session

    def credential(self, session: str) -> str:
        """The session's credential ("" for an unknown or expired session)."""
        with self._lock:
            entry = self._by_id.get(session)
        return entry[0] if entry is not None and entry[1] > time.monotonic() else ""

    def close(self, session: str) -> None:
        with self._lock:
            self._by_id.pop(session, None)


SESSIONS = Sessions()
