"""Backfill across the site's recorders for the console: every recorder's jobs in one answer, and
an operator's order to copy a range, passed to the recorder that copies (its own
`POST /api/v1/backfill` does the work and keeps the job; docs/design/backfill.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx
from aiohttp import web
from pydantic import ValidationError

from gapless.common.http import error
from gapless.common.openapi import documented
from gapless.config.cluster import ClusterDocument, RecorderEntry
from gapless.contracts.management import BackfillOrder, BackfillOverview, RecorderJobs
from gapless.contracts.recorder import ApiError, JobInfo, JobList
from gapless.management.access import Principal, allow

log = logging.getLogger("gapless.management")

ASK_TIMEOUT_S = 3.0
JOBS_SHOWN = 50  # per recorder, newest first


def backfill_routes(document: Callable[[], ClusterDocument]) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    def managed() -> list[RecorderEntry]:
        return [entry for entry in document().recorders if entry.managed_by is None]

    async def jobs_of(client: httpx.AsyncClient, entry: RecorderEntry) -> RecorderJobs:
        try:
            reply = await client.get(f"{entry.url}/api/v1/backfill", headers={"Authorization": f"Bearer {entry.token}"})
            reply.raise_for_status()
            jobs = JobList.model_validate_json(reply.content).jobs
            return RecorderJobs(recorder=entry.id, jobs=jobs[:JOBS_SHOWN])
        except (httpx.HTTPError, ValidationError) as exc:
            return RecorderJobs(recorder=entry.id, jobs=[], error=str(exc) or type(exc).__name__)

    @routes.get("/api/v1/backfill")
    @documented("Every recorder's backfill jobs (running, queued, newest done), read from each", BackfillOverview)
    @allow("viewer")
    async def overview(_request: web.Request) -> web.Response:
        async with httpx.AsyncClient(timeout=ASK_TIMEOUT_S) as client:
            found = await asyncio.gather(*(jobs_of(client, entry) for entry in managed()))
        return web.json_response(text=BackfillOverview(recorders=list(found)).model_dump_json())

    @routes.post("/api/v1/backfill")
    @documented("Start a backfill: a recorder copies a camera's range from its partner", JobInfo, body=BackfillOrder)
    @allow("operator")
    async def order(request: web.Request, body: BackfillOrder) -> web.Response:
        entry = next((e for e in managed() if e.id == body.recorder), None)
        if entry is None:
            raise error(web.HTTPNotFound, f"no recorder {body.recorder!r} managed here")
        job = {
            "camera": body.camera,
            "source": body.source,
            "start": f"{body.start / 1e6:.6f}",
            "end": f"{body.end / 1e6:.6f}",
        }
        async with httpx.AsyncClient(timeout=ASK_TIMEOUT_S) as client:
            try:
                reply = await client.post(
                    f"{entry.url}/api/v1/backfill", json=job, headers={"Authorization": f"Bearer {entry.token}"}
                )
            except httpx.HTTPError as exc:
                raise error(web.HTTPBadGateway, f"recorder {entry.id} cannot be reached: {exc}") from None
        if reply.status_code != 201:
            try:
                said = ApiError.model_validate_json(reply.content).error
            except ValidationError:
                said = f"HTTP {reply.status_code}"
            status = web.HTTPBadRequest if reply.status_code in (400, 404) else web.HTTPBadGateway
            raise error(status, f"recorder {entry.id}: {said}")
        principal: Principal = request["principal"]
        info = JobInfo.model_validate_json(reply.content)
        log.info("backfill job %d queued on %s for %s (by %s)", info.id, entry.id, body.camera, principal.name)
        return web.json_response(text=info.model_dump_json(), status=201)

    return routes
