"""The management API's own bodies (the configuration document itself is `config.cluster`)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from gapless.common.openapi import Body, Query, Reply
from gapless.common.timeparse import iso
from gapless.contracts.recorder import RequestTime


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


EventKind = Literal["token", "member", "feed", "backfill", "route", "config"]


class Event(Reply):
    """Something that happened, as an operator reads it (`GET /api/v1/events`)."""

    id: int
    """Increasing; `after` (and an event stream's Last-Event-ID) continue from it."""
    time: str
    """ISO 8601, UTC."""
    kind: EventKind
    """token (holder changes), member (joined, left, ready), feed (a camera's feed state on a recorder), backfill,
    route (a paired camera re-routed), config (a version stored)."""
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
