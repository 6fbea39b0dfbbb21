"""Small helpers shared by Gapless's HTTP servers (recorder, management, gateway)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import TypeVar

import httpx
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gapless.common.sessions import COOKIE, SESSIONS
from gapless.common.signing import signature_valid

#: A connection must complete its request's headers, or send its next request, within this long
#: after connecting or after its last response (aiohttp's keep-alive timer, which also closes a
#: connection that dribbles a request's headers: otherwise such clients hold sockets for an hour
#: and, past the open-files limit, starve the storage writer).
IDLE_TIMEOUT_S = 15.0


log = logging.getLogger("gapless.http")


class _MalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot even parse (a NUL byte in a header, say) as an ERROR with a
    traceback, after answering it 400. It is the client's fault: one warning line, and never the
    raw bytes (they may hold a credential)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 500) < 500:
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "malformed HTTP request from %s refused (%d %s)"
            record.args = (peer, exc.code, type(exc).__name__)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("aiohttp.server").addFilter(_MalformedRequests())


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error any Gapless server answers is `{"error": …}` with its status: aiohttp's own (an
    unknown route, a wrong method, a body too large) as well as ours; anything unexpected is a
    JSON 500 whose details go to the log, never to the client."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "internal error (see the server's log)"}, status=500)


def application(*middlewares: Callable) -> web.Application:
    """The aiohttp application every Gapless server uses: JSON errors outermost, then its own
    middlewares (authentication, fencing) in order."""
    return web.Application(middlewares=[json_errors, *middlewares])


def app_runner(app: web.Application) -> web.AppRunner:
    """The AppRunner every Gapless HTTP server uses."""
    return web.AppRunner(app, access_log=None, keepalive_timeout=IDLE_TIMEOUT_S)


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[asyncio.Event]:
    """Serve `app` on host:port; yields the event SIGINT or SIGTERM sets. Leaving the block
    closes the listener and the open connections (graceful: every Gapless process stops so)."""
    runner = app_runner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            yield stop
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    finally:
        await runner.cleanup()


def error(status: type[web.HTTPException], message: str, **extra: object) -> web.HTTPException:
    """An HTTP error whose body is {"error": message, ...}: every API answers errors as JSON."""
    return status(text=web.json_response({"error": message, **extra}).text, content_type="application/json")


H = TypeVar("H", bound=Callable)


def own_auth(handler: H) -> H:
    """Mark a route that authenticates its callers itself (the gateway's media routes, sign-in,
    the console's files): the management server's credential middleware leaves it alone."""
    handler.gapless_own_auth = True  # type: ignore[attr-defined]
    return handler


def has_own_auth(handler: object) -> bool:
    return bool(getattr(handler, "gapless_own_auth", False))


def bearer_token(request: web.Request) -> str:
    """The token of an `Authorization: Bearer …` header, else the credential of a console session
    cookie (common/sessions.py); "" without either."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:]
    session = request.cookies.get(COOKIE, "")
    return SESSIONS.credential(session) if session else ""


def authenticate(
    request: web.Request,
    accepts: Callable[[str], bool],
    *,
    media: bool = False,
    signing_key: str = "",
    signed_url_ttl: float = 0.0,
    what: str = "API token",
) -> None:
    """Every server's one authentication rule; a 401 unless the request presents a token `accepts`
    as a bearer header, or, on a media path a player opens itself (`media`), as `?token=` or a
    signed URL (`?exp=&sig=`, HMAC with `signing_key`, valid at most `signed_url_ttl`)."""
    if media and "sig" in request.query:
        expires, signature = request.query.get("exp", ""), request.query["sig"]
        if signing_key and signature_valid(signing_key, request.path, expires, signature, signed_url_ttl):
            return
        raise error(web.HTTPUnauthorized, "signed URL is invalid or expired")
    given = bearer_token(request) or (request.query.get("token", "") if media else "")
    if not (given and accepts(given)):
        raise error(web.HTTPUnauthorized, f"missing or wrong {what}")


def token_matches(given: str, token: str) -> bool:
    """Constant-time comparison of a token a client sent (any characters) with the expected one."""
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "replace"), token.encode())


async def json_body(request: web.Request) -> object:
    """A request's JSON body, or a 400 that says why (not JSON, not UTF-8, or nested too deeply
    for the parser: json.loads raises RecursionError on `[[[[…`, which would otherwise be a 500)."""
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise error(web.HTTPBadRequest, "body must be JSON") from None
    except RecursionError:
        raise error(web.HTTPBadRequest, "body is nested too deeply") from None


class BearerAuth(httpx.Auth):
    """A client credential read at every request, so a rotated token is used without a restart."""

    def __init__(self, token: str | Callable[[], str]) -> None:
        self.token = token if callable(token) else (lambda: token)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        yield request
