"""The operator console's files and login, served at `/` by the gateway (so by the management
server too). The console is static (no build step, no CDN: it works offline); its data comes from
the same APIs as any client's, authenticated by a session cookie (common/sessions.py) that the
login link's token is exchanged for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from gapless.common.http import error
from gapless.common.openapi import Body, Reply, documented
from gapless.common.sessions import COOKIE, LIFETIME_S, SESSIONS

FILES = {"console.js": "text/javascript", "console.css": "text/css", "index.html": "text/html"}


class SessionRequest(Body):
    token: str
    """A viewer's (or admin's) credential, as the console's login link carries it."""


class SessionAnswer(Reply):
    ok: bool


def add_console_routes(routes: web.RouteTableDef, accepted: Callable[[str], Awaitable[bool]]) -> None:
    """The console's routes onto a gateway's table; `accepted(token)`: whether a credential may
    watch (checked before a session is opened)."""

    def public(handler):
        handler.gapless_own_auth = True  # the management server's middleware leaves these alone
        return handler

    def file(name: str) -> web.Response:
        data = resources.files("gapless.gateway").joinpath("console", name).read_bytes()
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return web.Response(body=data, content_type=FILES[name], headers=headers)

    @routes.get("/")
    @public
    @documented("The operator console (HTML; its data comes from the APIs with a session)", media_type="text/html")
    async def index(_request: web.Request) -> web.Response:
        return file("index.html")

    @routes.get(r"/console/{name:[a-z]+\.(js|css)}")
    @public
    @documented("The console's script and style sheet", media_type="text/javascript")
    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in FILES:
            raise error(web.HTTPNotFound, f"no console file {name!r}")
        return file(name)

    @routes.post("/api/v1/session")
    @public
    @documented("Exchange a credential for a console session cookie (HTTP-only)", SessionAnswer, body=SessionRequest)
    async def login(_request: web.Request, body: SessionRequest) -> web.Response:
        if not await accepted(body.token):
            raise error(web.HTTPUnauthorized, "missing or wrong viewer credential")
        response = web.json_response(text=SessionAnswer(ok=True).model_dump_json())
        response.set_cookie(
            COOKIE, SESSIONS.open(body.token), httponly=True, samesite="Strict", path="/", max_age=int(LIFETIME_S)
        )
        return response

    @routes.delete("/api/v1/session")
    @public
    @documented("End the console session", SessionAnswer)
    async def logout(request: web.Request) -> web.Response:
        SESSIONS.close(request.cookies.get(COOKIE, ""))
        response = web.json_response(text=SessionAnswer(ok=True).model_dump_json())
        response.del_cookie(COOKIE, path="/")
        return response
