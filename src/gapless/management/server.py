"""`gapless management`: the configuration store and its REST API, the embedded coordinator, and
(by default) a gateway on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from aiohttp_sse import sse_response

from gapless.cluster.backends import connect
from gapless.cluster.embedded_server import EmbeddedStore, coordinator_routes, sweep_leases
from gapless.cluster.keys import holder_key, preferred_key, switchover_key
from gapless.common.config import ConfigError
from gapless.common.http import application, bearer_token, error, has_own_auth, json_body, serving
from gapless.common.openapi import documented, openapi_route, parsed
from gapless.config.cluster import ClusterDocument, ManagedConfig, validate_document
from gapless.config.management import ManagementConfig
from gapless.contracts.management import (
    Event,
    EventKind,
    EventList,
    EventsQuery,
    RecorderEntry,
    RecorderList,
    StoredConfig,
    StoredVersion,
    SwitchoverAnswer,
    SwitchoverRequest,
)
from gapless.management.access import (
    CoordinatorPolicy,
    GatewayConfig,
    Principal,
    allow,
    allowed_roles,
    forbidden,
    gateway_config,
    identify,
)
from gapless.management.backfill_routes import backfill_routes
from gapless.management.events import EventLog, EventWatcher
from gapless.management.identify import IdentifyAnswer, IdentifyRequest, UnknownCameras, identify_cameras
from gapless.management.pairs import pair_routes
from gapless.management.recorder_status import status_routes
from gapless.management.redaction import redact, restore
from gapless.management.store import ConfigStore
from gapless.management.user_routes import user_routes
from gapless.management.users import Users

log = logging.getLogger("gapless.management")

EVENT_PING_S = 15.0  # an idle event stream gets a comment this often (proxies keep it open)

DESCRIPTION = (
    "Configuration (versioned, secrets write-only), credentials by role, the embedded coordinator,"
    " and the gateway's routes (one stable URL per camera, routed to the token holder)."
)


class Management:
    def __init__(self, config: ManagementConfig) -> None:
        self.config = config
        section = config.management
        if section.api_token is None:  # load_management_config fills it in (file or environment)
            raise ConfigError("management.api_token: required")
        self.admin_token: str = section.api_token
        self.url = f"http://{section.listen}"
        self.store = ConfigStore(section.data / "config.sqlite3")
        latest = self.store.latest()
        if latest is None:
            version = self.store.save(config.document())
            log.info("configuration seeded from the file as version %d", version)
        else:
            version, stored = latest
            if stored != config.document():
                log.warning(
                    "the configuration file differs from the stored configuration (version %d), which is used;"
                    " change it with PUT /api/v1/config",
                    version,
                )
        self.embedded = EmbeddedStore(section.data / "coordinator.sqlite3")
        self.events = EventLog(section.data / "events.sqlite3")
        self.users = Users(section.data / "users.sqlite3")
        self._latest = self.store.latest()
        self._gateway_config: tuple[int, GatewayConfig] | None = None

    @property
    def document(self) -> tuple[int, ClusterDocument]:
        """The current configuration (this process is the store's only writer, so it is cached)."""
        assert self._latest is not None
        return self._latest

    def save(self, document: ClusterDocument, expected_version: int | None) -> int | None:
        version = self.store.save(document, expected_version)
        if version is not None:
            self._latest = (version, document)
            self.events.record("config", f"configuration version {version} stored")
        return version

    def record(self, kind: EventKind, message: str) -> None:
        """An event of this server's own (users, sign-ins), logged where it happens."""
        log.info("%s: %s", kind, message)
        self.events.record(kind, message)

    def gateway_config(self) -> GatewayConfig:
        """What the gateway routes with, built once per configuration version and users' sessions
        (the embedded gateway asks on every request: segments included)."""
        version, document = self.document
        built = self._gateway_config
        if built is None or built[1].version != version or built[0] != self.users.generation:
            ttl = self.config.management.signed_url_ttl
            generation = self.users.generation
            self._gateway_config = built = (
                generation,
                gateway_config(version, document, self.admin_token, ttl, self.users),
            )
        return built[1]

    def coordinator(self):
        _version, document = self.document
        return connect(
            document.coordinator.backend,
            document.coordinator.endpoints,
            self.url,
            self.admin_token,
            2.0,
        )


def build_app(management: Management) -> web.Application:
    @web.middleware
    async def auth(request: web.Request, handler):
        if has_own_auth(request.match_info.handler):  # the gateway's media routes, sign-in, the console
            return await handler(request)
        principal = identify(bearer_token(request), management.admin_token, management.document[1], management.users)
        if principal is None:
            raise error(web.HTTPUnauthorized, "missing or unknown credential")
        if principal.role not in allowed_roles(request.match_info.handler):
            raise forbidden(principal, f"{request.method} {request.path}")
        request["principal"] = principal
        return await handler(request)

    routes = web.RouteTableDef()

    @routes.get("/api/v1/config")
    @documented("The cluster configuration (secrets <redacted>) and its version", StoredConfig)
    async def get_config(_request: web.Request) -> web.Response:
        version, document = management.document
        return web.json_response(text=StoredConfig(version=version, config=redact(document)).model_dump_json())

    @routes.put("/api/v1/config")
    @documented(
        "Store a new configuration version (validated whole; If-Match: version)",
        StoredVersion,
        body=ClusterDocument,
        parses_body=False,  # `<redacted>` secrets are restored from the stored version first
    )
    async def put_config(request: web.Request) -> web.Response:
        raw = await json_body(request)
        if isinstance(raw, dict) and "config" in raw:
            raw = raw["config"]
        expected = request.headers.get("If-Match")
        if expected is not None and not (expected.strip('"').isascii() and expected.strip('"').isdigit()):
            raise error(web.HTTPBadRequest, "If-Match must be a configuration version number")
        try:
            if not isinstance(raw, dict):
                raise ConfigError("config: expected an object with coordinator, recorders, clusters and credentials")
            document = validate_document(restore(raw, management.document[1]), "config")
        except ConfigError as exc:
            raise error(web.HTTPBadRequest, str(exc)) from None
        version = management.save(document, int(expected.strip('"')) if expected else None)
        if version is None:
            raise error(web.HTTPPreconditionFailed, "the configuration changed meanwhile; read it again")
        log.info("configuration version %d stored (by %s)", version, request["principal"].name)
        return web.json_response(text=StoredVersion(version=version).model_dump_json())

    @routes.get("/api/v1/gateway/config")
    @documented("What a gateway routes and authenticates with", GatewayConfig)
    @allow("gateway")
    async def get_gateway_config(_request: web.Request) -> web.Response:
        return web.json_response(management.gateway_config().model_dump(mode="json"))

    @routes.get("/api/v1/events")
    @documented(
        "What happened: token changes, members, feeds, backfill, re-routes, configuration", EventList, query=EventsQuery
    )
    @allow("viewer")
    async def events(_request: web.Request, query: EventsQuery) -> web.Response:
        found = await asyncio.to_thread(management.events.query, query)
        return web.json_response(text=EventList(events=found).model_dump_json())

    @routes.get("/api/v1/events/stream")
    @documented(
        "The events as they happen (Server-Sent Events; Last-Event-ID or ?after= continues)",
        media_type="text/event-stream",
        query=EventsQuery,
    )
    @allow("viewer")
    async def event_stream(request: web.Request, query: EventsQuery) -> web.StreamResponse:
        queue = management.events.subscribe()  # before the backlog is read: nothing falls between
        stream = None
        try:
            async with sse_response(request, ping_interval=EVENT_PING_S) as stream:
                resumed = stream.last_event_id or ""
                after = int(resumed) if resumed.isdigit() and len(resumed) < 19 else query.after
                backlog = await asyncio.to_thread(management.events.query, query.model_copy(update={"after": after}))
                pending = list(backlog)
                while stream.is_connected():
                    for event in pending:
                        if event.id > after and _matches(event, query):
                            await stream.send(event.model_dump_json(), id=str(event.id), event=event.kind)
                            after = event.id
                    try:  # bounded, so a client that left is noticed without waiting for an event
                        pending = [await asyncio.wait_for(queue.get(), EVENT_PING_S)]
                    except TimeoutError:
                        pending = []
        except ConnectionError:
            pass  # the client left
        finally:
            management.events.unsubscribe(queue)
        return stream if stream is not None else web.Response(status=204)

    @routes.get("/api/v1/recorders")
    @documented("Recorders and their clusters", RecorderList)
    async def recorders(_request: web.Request) -> web.Response:
        _version, document = management.document
        listed = [
            RecorderEntry(id=r.id, url=r.url, cluster=getattr(document.cluster_of(r.id), "id", None))
            for r in document.recorders
        ]
        return web.json_response(text=RecorderList(recorders=listed).model_dump_json())

    @routes.get("/api/v1/recorders/{recorder}/config")
    @documented("What one recorder needs: its cluster, peers, coordinator", ManagedConfig)
    @allow("recorder")
    async def recorder_config(request: web.Request) -> web.Response:
        version, document = management.document
        recorder_id = request.match_info["recorder"]
        principal: Principal = request["principal"]
        if principal.role == "recorder" and principal.recorder != recorder_id:
            raise forbidden(principal, f"read the configuration of recorder {recorder_id!r}")
        if document.recorder(recorder_id) is None:
            raise error(web.HTTPNotFound, f"no recorder {recorder_id!r} in the configuration")
        return web.json_response(ManagedConfig.of(version, document, recorder_id).model_dump(mode="json"))

    @routes.post("/api/v1/clusters/{cluster}/switchover")
    @documented(
        "Hand the token to a member (default: the other); an empty body will do",
        SwitchoverAnswer,
        body=SwitchoverRequest,
        parses_body=False,  # no body at all means {}
    )
    @allow("operator")
    async def switchover(request: web.Request) -> web.Response:
        _version, document = management.document
        cluster = next((c for c in document.clusters if c.id == request.match_info["cluster"]), None)
        if cluster is None:
            raise error(web.HTTPNotFound, f"no cluster {request.match_info['cluster']!r}")
        body = parsed(SwitchoverRequest, await json_body(request) if request.can_read_body else {}, "body")
        coordinator = management.coordinator()
        try:
            holder = await asyncio.to_thread(coordinator.get, holder_key(cluster.id))
            current = holder.value.get("member") if holder else None
            target = body.to
            if target is None:
                others = [m for m in cluster.members if m != current]
                target = others[0]
            if target not in cluster.members:
                raise error(web.HTTPBadRequest, f"to: {target!r} is not a member of {cluster.id}")
            await asyncio.to_thread(coordinator.put, preferred_key(cluster.id), {"member": target})
            await asyncio.to_thread(coordinator.put, switchover_key(cluster.id), {"to": target, "from": current})
        finally:
            coordinator.close()
        by = request["principal"].name
        log.info("switchover of cluster %s requested: %s -> %s (by %s)", cluster.id, current, target, by)
        answer = SwitchoverAnswer.model_validate({"cluster": cluster.id, "from": current, "to": target})
        return web.json_response(text=answer.model_dump_json(by_alias=True))

    @routes.post("/api/v1/cameras/identify")
    @documented(
        "Ask cluster cameras over ONVIF what they are; store it (a new configuration version)",
        IdentifyAnswer,
        body=IdentifyRequest,
    )
    async def identify_all(request: web.Request, body: IdentifyRequest) -> web.Response:
        version, document = management.document
        try:
            updated, results = await identify_cameras(document, body)
        except UnknownCameras as exc:
            raise error(web.HTTPNotFound, f"no camera {exc} in the configuration") from None
        if updated is not None:
            stored = management.save(updated, version)
            if stored is None:
                raise error(web.HTTPPreconditionFailed, "the configuration changed meanwhile; ask again")
            version = stored
            found = sum(result.identity is not None for result in results.values())
            log.info(
                "configuration version %d stored: %d camera identities (by %s)",
                version,
                found,
                request["principal"].name,
            )
        return web.json_response(text=IdentifyAnswer(version=version, cameras=results).model_dump_json())

    app = application(auth)
    app.add_routes(routes)
    app.add_routes(pair_routes(management))
    app.add_routes(user_routes(management))
    app.add_routes(backfill_routes(lambda: management.document[1]))
    app.add_routes(status_routes(lambda: management.document[1]))
    policy = CoordinatorPolicy(lambda: management.document[1], management.embedded)
    coordinator = coordinator_routes(management.embedded, policy)
    for route in coordinator:  # which keys each may touch is the policy's
        allow("recorder", "gateway")(route.handler)  # type: ignore[attr-defined]
    app.add_routes(coordinator)
    document = openapi_route("Gapless management server", DESCRIPTION)
    allow("viewer", "gateway", "recorder")(document.handler)
    app.add_routes([document])
    return app


def _matches(event: Event, query: EventsQuery) -> bool:
    wanted = {"kind": query.kind, "cluster": query.cluster, "recorder": query.recorder, "camera": query.camera}
    return all(value is None or getattr(event, key) == value for key, value in wanted.items())


async def run_management(config: ManagementConfig, gateway_factory=None) -> None:
    management = Management(config)
    app = build_app(management)
    gateway = None
    if config.management.gateway and gateway_factory is not None:
        gateway = gateway_factory(management, app)
    sweeper = asyncio.create_task(sweep_leases(management.embedded), name="lease-sweeper")
    watcher = EventWatcher(management.events, management.coordinator)
    try:
        async with serving(app, config.management.host, config.management.port) as stop:
            if gateway is not None:
                await gateway.start()
            backend = management.document[1].coordinator.backend
            log.info("management server on %s (coordinator: %s)", management.url, backend)
            watcher.start()
            await stop.wait()
    finally:
        if watcher.is_alive():
            await asyncio.to_thread(watcher.stop)
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        if gateway is not None:
            await gateway.close()
        management.embedded.close()
        management.store.close()
        management.events.close()
        management.users.close()
