"""The management API's own bodies (the configuration document itself is `config.cluster`)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from gapless.common.config import CAMERA_ID_PATTERN, ID_PATTERN
from gapless.common.openapi import Body, Query, Reply
from gapless.common.timeparse import iso
from gapless.contracts.recorder import JobInfo, RequestTime


class StoredConfig(Reply):
    """`GET /api/v1/config`: the configuration, secrets shown as `<redacted>`."""

    version: int
    config: dict


class StoredVersion(Reply):
    version: int


class RecorderEntry(Reply):
    id: str
    url: str
    cluster: str | None
    """None: the recorder is in no cluster."""


class RecorderList(Reply):
    recorders: list[RecorderEntry]


class SwitchoverRequest(Body):
    to: str | None = None
    """The member to hand the token to (default: the other one)."""


class SwitchoverAnswer(Reply):
    model_config = ConfigDict(populate_by_name=True)

    cluster: str
    previous: str | None = Field(alias="from")
    """The holder when it was asked (None: nobody)"""
    to: str


EventKind = Literal["token", "member", "feed", "backfill", "route", "config", "user"]


class Event(Reply):
    """Something that happened, as an operator reads it (`GET /api/v1/events`)."""

    id: int
    """Increasing; `after` (and an event stream's Last-Event-ID) continue from it."""
    time: str
    """ISO 8601, UTC."""
    kind: EventKind
    """token (holder changes), member (joined, left, ready), feed (a camera's feed state on a recorder), backfill,
    route (a paired camera re-routed), config (a version stored), user (sign-ins, refusals, users changed)."""
    message: str
    cluster: str | None = None
    recorder: str | None = None
    camera: str | None = None

    @classmethod
    def of(
        cls,
        id: int,
        at_us: int,
        kind: str,
        message: str,
        cluster: str | None,
        recorder: str | None,
        camera: str | None,
    ) -> Event:
        return cls.model_validate(
            {"id": id, "time": iso(at_us), "kind": kind, "message": message, "cluster": cluster,
             "recorder": recorder, "camera": camera}
        )  # fmt: skip


class EventList(Reply):
    events: list[Event]


class EventsQuery(Query):
    after: int = Field(default=0, ge=0, lt=2**62)
    """Only events after this id."""
    since: RequestTime | None = None
    """Only events at or after this time (ISO 8601 with a zone, or epoch seconds)."""
    kind: EventKind | None = None
    cluster: str | None = Field(default=None, max_length=64)
    recorder: str | None = Field(default=None, max_length=64)
    camera: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=200, ge=1, le=1000)
    """At most this many, oldest first (page on with `after`)."""


# ---- people: users, sign-in (management/users.py) -----------------------------------------------

UserRole = Literal["viewer", "operator", "admin"]
"""viewer watches; operator also acts (switchover, backfill); admin also configures."""


class LoginRequest(Body):
    """`POST /api/v1/login`: a user name and password, or a one-time login link's token."""

    user: str | None = Field(default=None, min_length=1, max_length=64)
    password: str | None = Field(default=None, max_length=1024)
    link: str | None = Field(default=None, min_length=16, max_length=256)

    @model_validator(mode="after")
    def _one_way(self) -> LoginRequest:
        if (self.link is None) == (self.user is None or self.password is None):
            raise ValueError("give either user and password, or link")
        return self


class LoginAnswer(Reply):
    token: str
    """The session's token: a credential until it expires or the user changes (never logged)."""
    user: str
    role: UserRole
    expires: str
    """ISO 8601, UTC."""


class Whoami(Reply):
    """`GET /api/v1/whoami`: the caller as the server sees it."""

    name: str
    """The user or credential (never its token)."""
    role: str
    may_act: bool
    """May switch over and start backfills (operator or admin)."""
    may_configure: bool
    """May change the configuration, pairs and users (admin)."""


class Done(Reply):
    ok: bool


class UserEntry(Reply):
    name: str
    role: UserRole


class UserList(Reply):
    users: list[UserEntry]


class NewUser(Body):
    name: str = Field(pattern=ID_PATTERN)
    role: UserRole
    password: str = Field(min_length=8, max_length=1024)


class UserChange(Body):
    """A new role, a new password, or both (either ends the user's sessions)."""

    role: UserRole | None = None
    password: str | None = Field(default=None, min_length=8, max_length=1024)


class LoginLink(Reply):
    """A one-time login link's token for a user: the console at `/?token=<link>` signs in with it once."""

    link: str
    expires: str


# ---- backfill across recorders (the console's backfill page and action) --------------------------


class BackfillOrder(Body):
    """`POST /api/v1/backfill` on the management server: queue a backfill on a recorder."""

    recorder: str = Field(pattern=ID_PATTERN)
    """The recorder that copies (the one missing footage)."""
    camera: str = Field(pattern=CAMERA_ID_PATTERN)
    source: str = Field(pattern=ID_PATTERN)
    """The recorder that holds it (a configured partner of `recorder`)."""
    start: RequestTime
    end: RequestTime


class RecorderJobs(Reply):
    recorder: str
    jobs: list[JobInfo]
    error: str | None = None
    """Why the recorder's jobs could not be read (None: they were)."""


class BackfillOverview(Reply):
    recorders: list[RecorderJobs]


# ---- recorders' state for the console's overview -----------------------------------------------


class CameraStatus(Reply):
    state: str
    """recording | connecting | reconnecting | failed | starting."""
    reason: str
    """Why it is not recording (camera URLs' credentials removed)."""
    time_source: str
    camera_clock_offset_ms: int | None


class RecorderStatus(Reply):
    """One recorder as the management server read it (`GET /api/v1/health` there)."""

    id: str
    cluster: str | None
    reachable: bool
    error: str | None = None
    """Why it could not be read."""
    disk_free_bytes: int | None = None
    storage_error: str | None = None
    """The storage's last write error (a full or failing disk)."""
    cameras: dict[str, CameraStatus] = {}


class RecorderStatusList(Reply):
    recorders: list[RecorderStatus]
