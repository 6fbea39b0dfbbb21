"""What each recorder of the site says of itself, read for the console's overview: reachable or not,
its disk (free space, the last write error), and each camera's feed and clock. Read from each
recorder's `GET /api/v1/health` with its token; camera URLs' credentials never pass on."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import httpx
from aiohttp import web
from pydantic import ValidationError

from gapless.common.openapi import documented
from gapless.config.cluster import ClusterDocument, RecorderEntry
from gapless.contracts.management import CameraStatus, RecorderStatus, RecorderStatusList
from gapless.contracts.recorder import RecorderHealth
from gapless.management.access import allow

ASK_TIMEOUT_S = 2.0
_URL_CREDENTIALS = re.compile(r"(?i)\b(rtsps?|https?)://[^/@\s]+@")


def _scrubbed(text: str) -> str:
    return _URL_CREDENTIALS.sub(r"\1://<redacted>@", text)


def status_routes(document: Callable[[], ClusterDocument]) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    async def status_of(client: httpx.AsyncClient, entry: RecorderEntry, cluster: str | None) -> RecorderStatus:
        try:
            reply = await client.get(f"{entry.url}/api/v1/health", headers={"Authorization": f"Bearer {entry.token}"})
            reply.raise_for_status()
            health = RecorderHealth.model_validate_json(reply.content)
        except (httpx.HTTPError, ValidationError) as exc:
            return RecorderStatus(id=entry.id, cluster=cluster, reachable=False, error=_scrubbed(str(exc)) or "error")
        cameras = {
            camera: CameraStatus(
                state=feed.state,
                reason=_scrubbed(feed.reason),
                time_source=feed.time_source,
                camera_clock_offset_ms=feed.camera_clock_offset_ms,
            )
            for camera, feed in health.cameras.items()
        }
        storage = health.storage
        return RecorderStatus(
            id=entry.id,
            cluster=cluster,
            reachable=True,
            disk_free_bytes=storage.disk_free_bytes,
            storage_error=None if storage.last_error is None else _scrubbed(storage.last_error),
            cameras=cameras,
        )

    @routes.get("/api/v1/recorders/status")
    @documented("Every recorder managed here: reachable, disk, each camera's feed and clock", RecorderStatusList)
    @allow("viewer")
    async def recorders_status(_request: web.Request) -> web.Response:
        site = document()
        entries = [entry for entry in site.recorders if entry.managed_by is None]
        async with httpx.AsyncClient(timeout=ASK_TIMEOUT_S) as client:
            found = await asyncio.gather(
                *(status_of(client, entry, c.id if (c := site.cluster_of(entry.id)) else None) for entry in entries)
            )
        return web.json_response(text=RecorderStatusList(recorders=list(found)).model_dump_json())

    return routes
