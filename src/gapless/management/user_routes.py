"""Sign-in and users on the management server: `POST /api/v1/login` (a password or a one-time
link → a session token), `GET /api/v1/whoami`, and the admin's `/api/v1/users` routes
(management/users.py keeps them)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from gapless.common.http import bearer_token, error, own_auth
from gapless.common.openapi import documented
from gapless.common.timeparse import iso
from gapless.contracts.management import (
    Done,
    EventKind,
    LoginAnswer,
    LoginLink,
    LoginRequest,
    NewUser,
    UserChange,
    UserEntry,
    UserList,
    Whoami,
)
from gapless.management.access import Principal, allow
from gapless.management.users import User, UserError, Users

log = logging.getLogger("gapless.management")

LOCKOUT_FAILURES = 10  # this many failures in a row for one name …
LOCKOUT_S = 60.0  # … refuse it this long (429), whatever the password


class Host(Protocol):
    users: Users

    def record(self, kind: EventKind, message: str) -> None: ...


class Lockout:
    """Failed sign-ins per user name: after LOCKOUT_FAILURES in a row the name is refused for
    LOCKOUT_S, so one account's password cannot be guessed faster than that, over any number of
    connections (each guess also costs an Argon2id hash). The price, as everywhere: someone who
    knows a name can keep its owner out while guessing; the refusals are events and log lines."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failures: dict[str, tuple[int, float]] = {}

    def locked(self, name: str) -> bool:
        count, last = self.failures.get(name, (0, 0.0))
        if count >= LOCKOUT_FAILURES and self.clock() - last < LOCKOUT_S:
            return True
        if count >= LOCKOUT_FAILURES:
            del self.failures[name]
        return False

    def failed(self, name: str) -> None:
        count, _last = self.failures.get(name, (0, 0.0))
        self.failures[name] = (count + 1, self.clock())
        if len(self.failures) > 10_000:  # names nobody has: forget the oldest
            oldest = min(self.failures, key=lambda n: self.failures[n][1])
            del self.failures[oldest]

    def succeeded(self, name: str) -> None:
        self.failures.pop(name, None)


def user_routes(host: Host) -> web.RouteTableDef:
    routes = web.RouteTableDef()
    lockout = Lockout()

    def answer(user: User) -> web.Response:
        token, expires = host.users.open_session(user.name)
        reply = LoginAnswer(token=token, user=user.name, role=user.role, expires=iso(expires))
        return web.json_response(text=reply.model_dump_json())

    def refused(name: str, why: str) -> web.HTTPException:
        log.warning("sign-in refused for %r: %s", name, why)
        host.record("user", f"sign-in refused for {name!r}: {why}")
        return error(web.HTTPUnauthorized, "wrong user name or password, or a used or expired login link")

    @routes.post("/api/v1/login")
    @own_auth  # nobody is signed in yet
    @documented("Sign in: a user's password or a one-time login link → a session token", LoginAnswer, body=LoginRequest)
    async def login(_request: web.Request, body: LoginRequest) -> web.Response:
        if body.link is not None:
            user = host.users.redeem_link(body.link)
            if user is None:
                raise refused("(login link)", "unknown, used or expired link")
            host.record("user", f"{user.name} signed in with a one-time link")
            return answer(user)
        assert body.user is not None and body.password is not None
        if lockout.locked(body.user):
            raise error(web.HTTPTooManyRequests, f"too many failed sign-ins for this name; wait {LOCKOUT_S:.0f} s")
        user = await asyncio.to_thread(host.users.check_password, body.user, body.password)
        if user is None:
            lockout.failed(body.user)
            raise refused(body.user, "wrong password or unknown user")
        lockout.succeeded(body.user)
        host.record("user", f"{user.name} signed in ({user.role})")
        return answer(user)

    @routes.delete("/api/v1/login")
    @documented("Sign out: the session token presented ends", Done)
    @allow("viewer")
    async def logout(request: web.Request) -> web.Response:
        host.users.end_session(bearer_token(request))
        return web.json_response(text=Done(ok=True).model_dump_json())

    @routes.get("/api/v1/whoami")
    @documented("The caller: name, role, and what it may do", Whoami)
    @allow("viewer", "gateway", "recorder")
    async def whoami(request: web.Request) -> web.Response:
        principal: Principal = request["principal"]
        me = Whoami(
            name=principal.name,
            role=principal.role,
            may_act=principal.role in ("operator", "admin"),
            may_configure=principal.role == "admin",
        )
        return web.json_response(text=me.model_dump_json())

    @routes.get("/api/v1/users")
    @documented("The users who may sign in to the console, with their roles", UserList)
    async def list_users(_request: web.Request) -> web.Response:
        listing = UserList(users=[UserEntry(name=u.name, role=u.role) for u in host.users.all()])
        return web.json_response(text=listing.model_dump_json())

    @routes.post("/api/v1/users")
    @documented("Add a user (the password is kept as an Argon2id hash)", UserEntry, body=NewUser, status=201)
    async def add_user(request: web.Request, body: NewUser) -> web.Response:
        try:
            user = await asyncio.to_thread(host.users.add, body.name, body.role, body.password)
        except UserError as exc:
            raise error(web.HTTPConflict, str(exc)) from None
        host.record("user", f"user {user.name} added ({user.role}) by {request['principal'].name}")
        return web.json_response(text=UserEntry(name=user.name, role=user.role).model_dump_json(), status=201)

    @routes.patch("/api/v1/users/{name}")
    @documented("Change a user's role or password (their sessions end)", UserEntry, body=UserChange)
    async def change_user(request: web.Request, body: UserChange) -> web.Response:
        name = request.match_info["name"]
        try:
            user = await asyncio.to_thread(host.users.change, name, body.role, body.password)
        except UserError as exc:
            raise error(web.HTTPNotFound, str(exc)) from None
        what = " and ".join(w for w, given in (("role", body.role), ("password", body.password)) if given)
        host.record("user", f"user {name}: {what or 'nothing'} changed by {request['principal'].name}")
        return web.json_response(text=UserEntry(name=user.name, role=user.role).model_dump_json())

    @routes.delete("/api/v1/users/{name}")
    @documented("Remove a user (their sessions end)", Done)
    async def remove_user(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            host.users.remove(name)
        except UserError as exc:
            raise error(web.HTTPNotFound, str(exc)) from None
        host.record("user", f"user {name} removed by {request['principal'].name}")
        return web.json_response(text=Done(ok=True).model_dump_json())

    @routes.post("/api/v1/users/{name}/link")
    @documented("A one-time login link's token for a user (valid 15 minutes, once)", LoginLink)
    async def login_link(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            token, expires = host.users.open_session(name, one_time=True)
        except UserError as exc:
            raise error(web.HTTPNotFound, str(exc)) from None
        return web.json_response(text=LoginLink(link=token, expires=iso(expires)).model_dump_json())

    return routes
