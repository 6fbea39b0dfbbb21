"""The gateway API's bodies (what a console or an integrator's client reads)."""

from __future__ import annotations

from typing import Literal

from gapless.common.openapi import Reply


class RoutedCamera(Reply):
    id: str
    cluster: str | None
    """Its cluster (None: a camera of an asymmetrical pair, or of one independent recorder)."""
    holder: str | None
    """The recorder it is routed to: the token holder (None while nobody holds it), the pair's active side, or the
    independent recorder."""
    live: str
    """The camera's live playlist on this gateway."""


class RoutedCameraList(Reply):
    cameras: list[RoutedCamera]


class MemberView(Reply):
    """A member as its published state in the coordinator shows it."""

    id: str
    alive: bool
    """Its member key exists (its lease is alive)"""
    ready: bool
    """Recording every camera, no backfill left."""
    backfill_open: int | None
    role: str | None


class ClusterView(Reply):
    """`GET /api/v1/clusters/{id}` on the gateway."""

    id: str
    members: list[MemberView]
    holder: str | None
    fence: int | None
    """The fencing revision of the holder's token."""
    lease_remaining: float | None
    """Seconds, as the holder reports it."""
    lease_ttl: float
    failback: str
    coordinator_reachable: bool


class TimelineInterval(Reply):
    start: str
    end: str
    recorder: str
    """Where this footage is played from."""
    camera: str
    """The camera's id on that recorder."""


class TimelineSide(Reply):
    """What one recorder of the camera holds: a cluster's member, a pair's side."""

    recorder: str
    camera: str
    """The camera's id on that recorder."""
    role: Literal["holder", "member", "primary", "secondary", "recorder"]
    intervals: list[tuple[str, str]]
    backfilled: list[tuple[str, str]]
    """The parts of `intervals` copied from a partner by finished backfill jobs."""
    reachable: bool
    """False: the recorder did not answer; its lists are empty, not known empty."""


class Timeline(Reply):
    """`GET /api/v1/cameras/{id}/timeline`: what is recorded, merged over a pair's two sides (the
    primary wherever it has footage, the secondary in its holes), each interval with its source;
    and what each recorder of the camera holds."""

    camera: str
    intervals: list[TimelineInterval]
    recorders: list[TimelineSide] = []
