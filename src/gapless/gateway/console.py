"""The operator console's files and login, served at `/` by the gateway (so by the management
server too). The console is static (no build step, no CDN: it works offline); its data comes from
the same APIs as any client's, authenticated by a session cookie (common/sessions.py) that the
login link's token is exchanged for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web
from pydantic import Field, model_validator

from gapless.common.http import error, own_auth
from gapless.common.openapi import Body, Reply, documented
from gapless.common.sessions import COOKIE, LIFETIME_S, SESSIONS

TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html"}
#: hls.js, built from the npm registry by `make console` (frontend/package.json); not committed.
VENDOR = "vendor/hls.light.min.mjs"


class SessionRequest(Body):
    """A credential or a one-time login link's token (as the console's login link carries it), or
    a user's name and password."""

    token: str | None = Field(default=None, min_length=1, max_length=256)
    user: str | None = Field(default=None, min_length=1, max_length=64)
    password: str | None = Field(default=None, max_length=1024)

    @model_validator(mode="after")
    def _one_way(self) -> SessionRequest:
        if (self.token is None) == (self.user is None or self.password is None):
            raise ValueError("give either token, or user and password")
        return self


class SessionAnswer(Reply):
    ok: bool


def add_console_routes(
    routes: web.RouteTableDef,
    sign_in: Callable[[SessionRequest], Awaitable[str | None]],
    sign_out: Callable[[str], Awaitable[None]],
) -> None:
    """The console's routes onto a gateway's table. `sign_in`: the credential a session will
    present (a viewer's credential as given, or a user's session token from a management server),
    None if refused; `sign_out(credential)`: a user's session token ends where it was issued."""

    def file(name: str) -> web.Response:
        found = resources.files("gapless.gateway").joinpath("console", *name.split("/"))
        if not found.is_file():
            built = " (built by `make console` from the npm registry)" if name == VENDOR else ""
            raise error(web.HTTPNotFound, f"no console file {name!r}{built}")
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return web.Response(body=found.read_bytes(), content_type=TYPES[name[name.rindex(".") :]], headers=headers)

    @routes.get("/")
    @own_auth
    @documented("The operator console (HTML; its data comes from the APIs with a session)", media_type="text/html")
    async def index(_request: web.Request) -> web.Response:
        return file("index.html")

    @routes.get(r"/console/{name:[a-z]+\.(js|css)}")
    @own_auth
    @documented("The console's scripts and style sheet", media_type="text/javascript")
    async def asset(request: web.Request) -> web.Response:
        return file(request.match_info["name"])

    @routes.get(f"/console/{VENDOR}")
    @own_auth
    @documented("hls.js (plays recorded video in the console)", media_type="text/javascript")
    async def vendor(_request: web.Request) -> web.Response:
        return file(VENDOR)

    @routes.post("/api/v1/session")
    @own_auth
    @documented("Exchange a credential for a console session cookie (HTTP-only)", SessionAnswer, body=SessionRequest)
    async def login(_request: web.Request, body: SessionRequest) -> web.Response:
        credential = await sign_in(body)
        if credential is None:
            raise error(web.HTTPUnauthorized, "wrong user name or password, or a token that may not watch")
        response = web.json_response(text=SessionAnswer(ok=True).model_dump_json())
        response.set_cookie(
            COOKIE, SESSIONS.open(credential), httponly=True, samesite="Strict", path="/", max_age=int(LIFETIME_S)
        )
        return response

    @routes.delete("/api/v1/session")
    @own_auth
    @documented("End the console session", SessionAnswer)
    async def logout(request: web.Request) -> web.Response:
        session = request.cookies.get(COOKIE, "")
        credential = SESSIONS.credential(session)
        SESSIONS.close(session)
        if credential:
            await sign_out(credential)
        response = web.json_response(text=SessionAnswer(ok=True).model_dump_json())
        response.del_cookie(COOKIE, path="/")
        return response
