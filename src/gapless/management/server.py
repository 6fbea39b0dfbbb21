"""`gapless management`: the configuration store and its REST API, the embedded coordinator, and
(by default) a gateway on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from gapless.cluster.agent import preferred_key, switchover_key
from gapless.cluster.backends import connect
from gapless.cluster.embedded_server import EmbeddedStore, coordinator_routes, sweep_leases
from gapless.http import app_runner, bearer_ok, error
from gapless.management.config import ClusterDocument, ConfigError, ManagementConfig, validate_document
from gapless.management.store import ConfigStore

log = logging.getLogger("gapless.management")


def managed_config(version: int, document: ClusterDocument, recorder_id: str) -> dict:
    """What one recorder needs: its cluster (cameras, settings), its peers, the coordinator."""
    cluster = document.cluster_of(recorder_id)
    peers = []
    if cluster is not None:
        peers = [document.recorder(m).model_dump() for m in cluster.members if m != recorder_id]
    return {
        "version": version,
        "recorder": recorder_id,
        "coordinator": document.coordinator.model_dump(),
        "cluster": cluster.model_dump(mode="json") if cluster else None,
        "peers": peers,
    }


class Management:
    def __init__(self, config: ManagementConfig) -> None:
        self.config = config
        section = config.management
        self.url = f"http://{section.listen}"
        self.store = ConfigStore(section.data / "config.sqlite3")
        if self.store.latest() is None:
            version = self.store.save(config.document())
            log.info("configuration seeded from the file as version %d", version)
        else:
            version, stored = self.store.latest()
            if stored != config.document():
                log.warning(
                    "the configuration file differs from the stored configuration (version %d), which is used;"
                    " change it with PUT /api/v1/config",
                    version,
                )
        self.embedded = EmbeddedStore(section.data / "coordinator.sqlite3")

    @property
    def document(self) -> tuple[int, ClusterDocument]:
        return self.store.latest()

    def coordinator(self):
        _version, document = self.document
        return connect(
            document.coordinator.backend,
            document.coordinator.endpoints,
            self.url,
            self.config.management.api_token,
            2.0,
        )


def build_app(management: Management) -> web.Application:
    token = management.config.management.api_token

    @web.middleware
    async def auth(request: web.Request, handler):
        own_auth = getattr(request.match_info.handler, "gapless_own_auth", False)  # the gateway's media URLs
        if not own_auth and not bearer_ok(request, token):
            raise error(web.HTTPUnauthorized, "missing or wrong API token")
        return await handler(request)

    routes = web.RouteTableDef()

    @routes.get("/api/v1/config")
    async def get_config(_request: web.Request) -> web.Response:
        version, document = management.document
        return web.json_response({"version": version, "config": document.model_dump(mode="json")})

    @routes.put("/api/v1/config")
    async def put_config(request: web.Request) -> web.Response:
        try:
            raw = await request.json()
        except ValueError:
            raise error(web.HTTPBadRequest, "body must be JSON") from None
        if isinstance(raw, dict) and "config" in raw:
            raw = raw["config"]
        try:
            document = validate_document(raw, "config")
        except ConfigError as exc:
            raise error(web.HTTPBadRequest, str(exc)) from None
        expected = request.headers.get("If-Match")
        if expected is not None and not expected.strip('"').isdigit():
            raise error(web.HTTPBadRequest, "If-Match must be a configuration version number")
        version = management.store.save(document, int(expected.strip('"')) if expected else None)
        if version is None:
            raise error(web.HTTPPreconditionFailed, "the configuration changed meanwhile; read it again")
        log.info("configuration version %d stored", version)
        return web.json_response({"version": version})

    @routes.get("/api/v1/recorders")
    async def recorders(_request: web.Request) -> web.Response:
        _version, document = management.document
        listed = [
            {"id": r.id, "url": r.url, "cluster": getattr(document.cluster_of(r.id), "id", None)}
            for r in document.recorders
        ]
        return web.json_response({"recorders": listed})

    @routes.get("/api/v1/recorders/{recorder}/config")
    async def recorder_config(request: web.Request) -> web.Response:
        version, document = management.document
        recorder_id = request.match_info["recorder"]
        if document.recorder(recorder_id) is None:
            raise error(web.HTTPNotFound, f"no recorder {recorder_id!r} in the configuration")
        return web.json_response(managed_config(version, document, recorder_id))

    @routes.post("/api/v1/clusters/{cluster}/switchover")
    async def switchover(request: web.Request) -> web.Response:
        _version, document = management.document
        cluster = next((c for c in document.clusters if c.id == request.match_info["cluster"]), None)
        if cluster is None:
            raise error(web.HTTPNotFound, f"no cluster {request.match_info['cluster']!r}")
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise error(web.HTTPBadRequest, "body must be JSON") from None
        coordinator = management.coordinator()
        try:
            holder = await asyncio.to_thread(coordinator.get, f"/gapless/clusters/{cluster.id}/holder")
            current = holder.value.get("member") if holder else None
            target = body.get("to") if isinstance(body, dict) else None
            if target is None:
                others = [m for m in cluster.members if m != current]
                target = others[0]
            if target not in cluster.members:
                raise error(web.HTTPBadRequest, f"to: {target!r} is not a member of {cluster.id}")
            await asyncio.to_thread(coordinator.put, preferred_key(cluster.id), {"member": target})
            await asyncio.to_thread(coordinator.put, switchover_key(cluster.id), {"to": target, "from": current})
        finally:
            coordinator.close()
        log.info("switchover of cluster %s requested: %s -> %s", cluster.id, current, target)
        return web.json_response({"cluster": cluster.id, "from": current, "to": target})

    app = web.Application(middlewares=[auth])
    app.add_routes(routes)
    app.add_routes(coordinator_routes(management.embedded))
    return app


async def run_management(config: ManagementConfig, gateway_factory=None) -> None:
    management = Management(config)
    app = build_app(management)
    gateway = None
    if config.management.gateway and gateway_factory is not None:
        gateway = gateway_factory(management, app)
    runner = app_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, config.management.host, config.management.port)
    await site.start()
    if gateway is not None:
        await gateway.start()
    log.info("management server on %s (coordinator: %s)", management.url, management.document[1].coordinator.backend)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sweeper = asyncio.create_task(sweep_leases(management.embedded), name="lease-sweeper")
    try:
        await stop.wait()
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        if gateway is not None:
            await gateway.close()
        await runner.cleanup()
        management.embedded.close()
        management.store.close()
