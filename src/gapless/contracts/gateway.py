"""The gateway API's bodies (what a console or an integrator's client reads)."""

from __future__ import annotations

from pydantic import BaseModel


class RoutedCamera(BaseModel):
    id: str
    cluster: str
    holder: str | None  # the member presenting the cluster, None while nobody holds the token
    live: str  # the camera's live playlist on this gateway


class RoutedCameraList(BaseModel):
    cameras: list[RoutedCamera]


class MemberView(BaseModel):
    """A member as its published state in the coordinator shows it."""

    id: str
    alive: bool  # its member key exists (its lease is alive)
    ready: bool  # recording every camera, no backfill left
    backfill_open: int | None
    role: str | None


class ClusterView(BaseModel):
    """`GET /api/v1/clusters/{id}` on the gateway."""

    id: str
    members: list[MemberView]
    holder: str | None
    fence: int | None  # the fencing revision of the holder's token
    lease_remaining: float | None  # seconds, as the holder reports it
    lease_ttl: float
    failback: str
    coordinator_reachable: bool
