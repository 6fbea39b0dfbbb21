"""Who is calling the management server, and what each credential may do (docs/design/security.md).

Five roles. `admin` (management.api_token, or a credential with that role) may do everything.
`operator` watches and acts: switchover, starting a backfill (a person's role, management/users.py).
`recorder` reads its own recorder's configuration and writes its own cluster's coordinator keys:
its member key, and the holder and released keys only in its own name. `gateway` reads what a
standalone gateway routes with, and the cluster keys. `viewer` watches media through the gateway.
A route says which roles may call it (`allow`); a route that says nothing is admin-only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from gapless.cluster.embedded_server import Access, EmbeddedStore
from gapless.cluster.keys import (
    FEEDS_PREFIX,
    PREFIX,
    ROOT,
    holder_key,
    member_key,
    recorder_feeds_prefix,
    released_key,
    switchover_key,
)
from gapless.common.http import error, token_matches
from gapless.common.urls import with_password
from gapless.config.cluster import ClusterDocument, Role, token_digest
from gapless.config.recorder import CameraConfig
from gapless.contracts.management import UserRole
from gapless.management.users import Users

ADMIN_TOKEN_NAME = "management.api_token"
WATCHERS: tuple[UserRole, ...] = ("admin", "operator", "viewer")  # the roles that may watch media


@dataclass(frozen=True)
class Principal:
    name: str  # the credential's id
    role: Role
    recorder: str | None = None

    @property
    def lease_owner(self) -> str:
        """Leases belong to the recorder, not to one credential: a rotated credential keeps them."""
        return f"recorder:{self.recorder}" if self.role == "recorder" else self.role


def identify(token: str, admin_token: str, document: ClusterDocument, users: Users) -> Principal | None:
    """Who presents this token: the admin token, a configured credential, or a user's session
    (with the user's role now: a demoted user's next request has the new role)."""
    if not token:
        return None
    if token_matches(token, admin_token):
        return Principal(ADMIN_TOKEN_NAME, "admin")
    digest = token_digest(token)
    for credential in document.credentials:
        if hmac.compare_digest(digest, credential.token_sha256):
            return Principal(credential.id, credential.role, credential.recorder)
    user = users.session_user(token)
    return None if user is None else Principal(f"user {user.name}", user.role)


def allow(*roles: Role) -> Callable:
    """Mark a route handler as callable by these roles besides admin (an operator may do what a
    viewer may)."""
    implied: tuple[Role, ...] = ("operator",) if "viewer" in roles and "operator" not in roles else ()

    def mark(handler: Callable) -> Callable:
        handler.gapless_roles = ("admin", *roles, *implied)  # type: ignore[attr-defined]
        return handler

    return mark


def allowed_roles(handler: Any) -> tuple[str, ...]:
    return getattr(handler, "gapless_roles", ("admin",))


def forbidden(principal: Principal, what: str) -> web.HTTPException:
    return error(web.HTTPForbidden, f"credential {principal.name!r} (role {principal.role}) may not {what}")


class CoordinatorPolicy:
    """What each credential may do in the embedded coordinator; etcd has its own users and roles."""

    def __init__(self, document: Callable[[], ClusterDocument], store: EmbeddedStore) -> None:
        self.document, self.store = document, store

    def owner(self, request: web.Request) -> str:
        principal: Principal = request["principal"]
        return principal.lease_owner

    def check(self, request: web.Request, access: Access) -> None:
        principal: Principal = request["principal"]
        if principal.role == "admin":
            return
        if principal.role == "gateway" and access.op in ("get", "watch") and access.key.startswith(ROOT):
            return
        if principal.role == "recorder" and self._recorder_may(principal, access):
            return
        raise forbidden(principal, f"{access.op} {access.key or f'lease {access.lease}'}")

    def _recorder_may(self, principal: Principal, access: Access) -> bool:
        assert principal.recorder is not None
        if access.op == "grant":
            return True
        if access.lease and self.store.lease_owner(access.lease) not in (None, principal.lease_owner):
            return False  # another recorder's lease: renewing, revoking or writing on it
        if access.op in ("keepalive", "revoke"):
            return True
        if access.key.startswith(recorder_feeds_prefix(principal.recorder)):
            return access.op != "watch"  # its own feed keys (cluster/feeds.py)
        if access.op == "get" and access.key.startswith(FEEDS_PREFIX):
            return bool(self.document().standing_by(principal.recorder))  # a standby reads its pairs' feeds
        cluster = self.document().cluster_of(principal.recorder)
        if cluster is None:
            return False
        me, base = principal.recorder, f"{PREFIX}{cluster.id}/"
        if access.op in ("get", "watch"):
            return access.key.startswith(base)
        current = self.store.get(access.key)
        held_by_me = current is None or current.value.get("member") == me
        if access.op == "delete":
            return access.key in (switchover_key(cluster.id), member_key(cluster.id, me)) or (
                access.key == holder_key(cluster.id) and held_by_me
            )
        if access.key == member_key(cluster.id, me):
            return True
        in_my_name = (access.value or {}).get("member") == me
        if access.key == holder_key(cluster.id):
            return in_my_name and held_by_me
        return access.key == released_key(cluster.id) and in_my_name


class GatewayConfig(BaseModel):
    """What a gateway routes and authenticates with: `GET /api/v1/gateway/config` for a standalone
    gateway (role gateway), built in process for the management server's own gateway."""

    version: int
    #: Camera credentials and the credentials list removed; recorder tokens kept: the gateway
    #: fetches media from the recorders with them.
    config: ClusterDocument
    #: SHA-256 of every token allowed to watch (admin, operator and viewer credentials and users' sessions).
    viewer_token_sha256: list[str]
    #: Key of the signed media URLs in playlists (derived from the admin token; rotates with it).
    signing_key: str
    signed_url_ttl: float

    def viewer(self, token: str) -> bool:
        if not token:
            return False
        digest = token_digest(token)
        return any(hmac.compare_digest(digest, known) for known in self.viewer_token_sha256)


def _without_secrets(cameras: list[CameraConfig]) -> list[CameraConfig]:
    return [camera.model_copy(update={"url": with_password(camera.url, None), "password": None}) for camera in cameras]


def gateway_config(
    version: int, document: ClusterDocument, admin_token: str, signed_url_ttl: float, users: Users
) -> GatewayConfig:
    clusters = [
        cluster.model_copy(update={"cameras": _without_secrets(cluster.cameras)}) for cluster in document.clusters
    ]
    recorders = [
        r.model_copy(update={"cameras": None if r.cameras is None else _without_secrets(r.cameras)})
        for r in document.recorders
    ]
    viewers = [token_digest(admin_token)] + [c.token_sha256 for c in document.credentials if c.role in WATCHERS]
    viewers += users.session_digests(WATCHERS)
    return GatewayConfig(
        version=version,
        config=document.model_copy(update={"clusters": clusters, "recorders": recorders, "credentials": []}),
        viewer_token_sha256=viewers,
        signing_key=hmac.new(admin_token.encode(), b"gapless signed media URLs", hashlib.sha256).hexdigest(),
        signed_url_ttl=signed_url_ttl,
    )
