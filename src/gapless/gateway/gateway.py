"""`gapless gateway`: one stable URL per camera, routed to whichever member holds the token.

Stateless: it reads the configuration from the management server and the token holders from the
coordinator (a watch, re-read on any error; the last known state is used while it is unreachable).

Live HLS through a failover: the gateway writes its own playlists. Segment URIs name the camera
and the fragment's camera-time start (`segments/<start_us>.m4s`), not a recorder's fragment id.
Both members store the same GOP with the same camera time and the same init segment, so a segment
listed while A held the token is fetched from B after A died, and media sequence numbers continue
(the gateway numbers each camera's live segments by their start and remembers the numbers it gave,
`hls.LiveNumbering`) and a live window never goes back in time (a member behind the one listed
before, answering first, gets the last window served again): the player sees one stream, with no
restart. Those numbers and windows are the gateway's only state, kept in memory: a restarted
gateway numbers afresh, above every number it gave before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import httpx
from aiohttp import web
from pydantic import ValidationError

from gapless.common.http import application, authenticate, error, own_auth, serving
from gapless.common.openapi import OPENAPI_PATH, Handler, documented, openapi
from gapless.common.signing import signed
from gapless.common.timeparse import iso, parse_time_us
from gapless.config.cluster import CameraPair, CameraRef, ClusterConfig
from gapless.contracts.gateway import (
    ClusterView,
    MemberView,
    RoutedCamera,
    RoutedCameraList,
    Timeline,
    TimelineInterval,
    TimelineSide,
)
from gapless.contracts.management import LoginAnswer, LoginRequest
from gapless.contracts.recorder import (
    LEFT_OUT_HEADER,
    Coverage,
    CoverageRange,
    ExportQuery,
    FragmentList,
    HaState,
    JobList,
    TimeRange,
)
from gapless.gateway.console import SessionRequest, add_console_routes
from gapless.gateway.routing import Feed, OnRoute, PairRouting, Route, Source, export_order
from gapless.gateway.sites import Directory, Place, Site
from gapless.gateway.timeline import coverage_of, merged, subtract
from gapless.ingest.live import INIT, unpack
from gapless.management.access import GatewayConfig
from gapless.media.hls import (
    LiveNumbering,
    MediaUris,
    live_playlist,
    segment_path,
    side_segment_path,
    signed_uris,
    vod_playlist,
)
from gapless.storage.coverage import intersect

log = logging.getLogger("gapless.gateway")

LIVE_WINDOW_S = 40
#: The request key holding the sites whose credentials accepted the request (Gateway.authorize).
ACCEPTED_BY = web.RequestKey("accepted_by", list)
HEDGE_S = 0.5  # ask the other member too when the holder has not answered by then
#: A live stream's recorder that has sent no frame for this long is left for the next one (a GOP's
#: frames arrive every 40-100 ms; a frozen or cut-off recorder sends none).
LIVE_STALL_S = 1.0
LIVE_ROUTE_CHECK_S = 1.0  # how often a live stream checks whether its camera is routed elsewhere
LIVE_RETRY_S = 0.1
LIVE_AVOID_S = 3.0  # a recorder whose stream failed is tried last this long
LIVE_CLOSE_S = 0.2  # leaving a recorder's stream does not wait longer for its close handshake
#: An export is streamed as the recorder reads it: connecting is quick or fails, each read may wait
#: while a progressive file is built.
EXPORT_TIMEOUT = httpx.Timeout(300.0, connect=1.0)
DOCUMENT_REFRESH_S = 10.0
FENCE_HEADER = "X-Gapless-Fence"
SIGN_IN_TIMEOUT_S = 10.0  # an Argon2id check, on a management server that may be busy


class MemberFailed(Exception):
    """A member could not be asked (connection refused, timed out)."""


#: A member's answer that is the client's answer too: its request is wrong, or nobody has the thing
#: (a 401, 403 or 409 is about the gateway's own credentials or routing, and is not passed on).
PASSED_ON = {400: web.HTTPBadRequest, 404: web.HTTPNotFound, 416: web.HTTPRequestRangeNotSatisfiable}


def _passed_on(reply: httpx.Response, failures: list[str]) -> web.HTTPException:
    try:
        body = reply.json()
    except ValueError:
        body = None
    reason = body.get("error") if isinstance(body, dict) else None
    status = PASSED_ON[reply.status_code]
    return error(status, str(reason or f"HTTP {reply.status_code}"), members="; ".join(failures))


@dataclass(frozen=True)
class Row:
    """A recorder's fragment listing entry, as far as playlists need it."""

    start_us: int
    end_us: int
    frames: int
    init: str
    keyframe_first: bool
    run: str
    source: str  # the recorder that listed it


@dataclass(frozen=True)
class Listing:
    rows: list[Row]
    source: str
    open_run: str | None  # the run the source still records (FragmentList.open_run)


def without_cut_gop(listing: Listing) -> list[Row]:
    """The rows less the newest GOP when the session that recorded it has ended: the feed was lost
    inside it, so it may be cut short, and a viewer who took it could not take the fuller copy the
    other recorder of a pair keeps (the same media sequence number)."""
    rows = listing.rows
    if not rows or rows[-1].run == listing.open_run:
        return rows
    cut = len(rows) - 1
    while cut > 0 and not rows[cut].keyframe_first and rows[cut - 1].run == rows[-1].run:
        cut -= 1
    return rows[:cut]


@dataclass(frozen=True)
class Holding:
    """What one recorder of a camera holds of a span (`covered` None: it did not answer), and the
    parts of it finished backfill jobs copied."""

    side: CameraRef
    role: str
    covered: list[tuple[int, int]] | None
    copied: list[tuple[int, int]]

    def reply(self) -> TimelineSide:
        return TimelineSide(
            recorder=self.side.recorder,
            camera=self.side.camera,
            role=self.role,  # type: ignore[arg-type]
            intervals=[(iso(a), iso(b)) for a, b in self.covered or []],
            backfilled=[(iso(a), iso(b)) for a, b in self.copied],
            reachable=self.covered is not None,
        )


class Gateway:
    """Routes every camera of its sites (management servers, sites.py) to the recorder to ask."""

    def __init__(self, sites: list[Site], on_route: OnRoute | None = None) -> None:
        self.sites = sites
        self.directory = Directory({}, {})
        self.views: list[GatewayConfig | None] = []
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(3.0, connect=1.0))
        self.pairs = PairRouting(self.feed, on_route=on_route)
        self.stop_event = threading.Event()
        self.ws_client: aiohttp.ClientSession | None = None  # live streams from recorders (made in the loop)
        self.live_numbering: collections.defaultdict[str, LiveNumbering] = collections.defaultdict(LiveNumbering)
        self.live_served: dict[str, list[Row]] = {}  # each camera's last live window, which never goes back

    async def start(self) -> None:
        await self.refresh(force=True)

    async def refresh(self, force: bool = False) -> Directory:
        """Every site's view re-read when due; a 503 only while no site has ever answered."""
        await asyncio.gather(*(site.refresh(self.stop_event, force) for site in self.sites))
        views = [site.view for site in self.sites]
        if all(view is None for view in views):
            reasons = "; ".join(f"{site.management_url}: {site.error}" for site in self.sites)
            raise error(web.HTTPServiceUnavailable, f"no configuration yet: {reasons}")
        if any(a is not b for a, b in itertools.zip_longest(views, self.views)):
            self.directory, self.views = Directory.of(self.sites), views
        return self.directory

    async def close(self) -> None:
        self.stop_event.set()
        await asyncio.gather(*(site.close() for site in self.sites))
        await self.http.aclose()
        if self.ws_client is not None:
            await self.ws_client.close()

    def feed(self, recorder: str, camera: str) -> Feed | None:
        """A recorder's feed health of a camera, from whichever site's coordinator it publishes to."""
        return next((f for site in self.sites if (f := site.state.feed(recorder, camera)) is not None), None)

    def place(self, camera_id: str) -> Place:
        place = self.directory.cameras.get(camera_id)
        if place is None:
            raise error(web.HTTPNotFound, f"no camera {camera_id!r} in any cluster or pair")
        return place

    # ---- routing ---------------------------------------------------------------------------
    async def route(self, camera_id: str) -> Route:
        """Where a camera's requests go: its cluster's holder first, or its pair's active side."""
        await self.refresh()
        place = self.place(camera_id)
        if place.cluster is not None:
            return self.cluster_route(place.site, place.cluster, camera_id)
        if place.alone is not None:
            return Route(f"recorder {place.alone.recorder}", [Source(place.alone.recorder, place.alone.camera)])
        assert place.pair is not None
        return self.pairs.route(place.pair)

    @staticmethod
    def cluster_route(site: Site, cluster: ClusterConfig, camera_id: str = "") -> Route:
        """Members to ask, holder first (with its fencing revision), then the others."""
        holder = site.state.holder(cluster.id)
        order: list[Source] = []
        if holder is not None and holder[0] in cluster.members:
            order.append(Source(holder[0], camera_id, holder[1]))
        order += [Source(m, camera_id) for m in cluster.members if holder is None or m != holder[0]]
        return Route(f"cluster {cluster.id}", order)

    async def ask(
        self, route: Route, path: Callable[[str], str], params: dict | None = None
    ) -> tuple[str, httpx.Response]:
        """GET path(camera id there) from the route's first source (a holder with its fencing
        revision). If it refuses, fails, or has not answered within HEDGE_S (a frozen holder
        accepts connections and never replies), the next is asked too, and the first good answer
        wins: both hold the same media, by camera time."""
        failures: list[str] = []
        refused: list[httpx.Response] = []
        pending: set[asyncio.Task] = set()
        try:
            for source in route.sources:
                pending.add(asyncio.create_task(self._get(source.recorder, source.fence, path(source.camera), params)))
                done, pending = await asyncio.wait(pending, timeout=HEDGE_S, return_when=asyncio.FIRST_COMPLETED)
                if (answer := self._first_good(done, failures, refused)) is not None:
                    return answer
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if (answer := self._first_good(done, failures, refused)) is not None:
                    return answer
        finally:
            for task in pending:
                task.cancel()
        refusals = [reply for reply in refused if reply.status_code in PASSED_ON]
        if refusals:  # a member that answered knows: the request is wrong, or it has no such thing
            raise _passed_on(refusals[0], failures)
        raise error(web.HTTPBadGateway, f"no recorder of {route.name} answered: {'; '.join(failures)}")

    def _where(self, member: str, fence: int | None, path: str) -> tuple[str, dict[str, str]]:
        """A member's URL for path, and the headers to ask it with (its token, the fence)."""
        entry = self.directory.recorders.get(member)
        if entry is None:
            raise MemberFailed(f"{member}: not in the configuration")
        headers = {"Authorization": f"Bearer {entry.token}"}
        if fence is not None:
            headers[FENCE_HEADER] = str(fence)
        return f"{entry.url.rstrip('/')}{path}", headers

    async def _get(self, member: str, fence: int | None, path: str, params: dict | None) -> tuple[str, httpx.Response]:
        url, headers = self._where(member, fence, path)
        try:
            return member, await self.http.get(url, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise MemberFailed(f"{member}: {type(exc).__name__}") from None

    async def relay(
        self, request: web.Request, route: Route, path: Callable[[str], str], params: dict
    ) -> web.StreamResponse:
        """A long answer (an export) passed on as it is read, from the first source that accepts it;
        the next is asked only before any byte was sent (an export is read once, not hedged)."""
        failures: list[str] = []
        refused: list[httpx.Response] = []
        for source in route.sources:
            response: web.StreamResponse | None = None
            try:
                url, headers = self._where(source.recorder, source.fence, path(source.camera))
                async with self.http.stream(
                    "GET", url, params=params, headers=headers, timeout=EXPORT_TIMEOUT
                ) as reply:
                    if reply.status_code != 200:
                        await reply.aread()
                        failures.append(f"{source.recorder}: HTTP {reply.status_code}")
                        refused.append(reply)
                        continue
                    kept = ("Content-Type", "Content-Length", LEFT_OUT_HEADER)
                    response = web.StreamResponse(headers={k: reply.headers[k] for k in kept if k in reply.headers})
                    await response.prepare(request)
                    async for data in reply.aiter_bytes():
                        await response.write(data)
                    await response.write_eof()
                    return response
            except MemberFailed as exc:
                failures.append(str(exc))
            except httpx.HTTPError as exc:
                if response is not None:  # cut after the answer began: a short file, never a spliced one
                    log.error("export of %s from %s cut: %s", route.name, source.recorder, type(exc).__name__)
                    raise
                failures.append(f"{source.recorder}: {type(exc).__name__}")
        refusals = [reply for reply in refused if reply.status_code in PASSED_ON]
        if refusals:
            raise _passed_on(refusals[0], failures)
        raise error(web.HTTPBadGateway, f"no recorder of {route.name} answered: {'; '.join(failures)}")

    def ws_session(self) -> aiohttp.ClientSession:
        if self.ws_client is None:
            timeout = aiohttp.ClientTimeout(total=None, connect=1.0, sock_connect=1.0)
            self.ws_client = aiohttp.ClientSession(timeout=timeout)
        return self.ws_client

    async def relay_live(self, camera_id: str, viewer: web.WebSocketResponse) -> None:
        """One viewer's live frames (docs/design/live.md), continuous while the recorder serving
        them changes: from the route's first source; on its failure, silence for LIVE_STALL_S, or
        the route moving elsewhere, from the next, resuming after the last frame sent (both hold a
        frame under the same camera time), so nothing is sent twice and nothing skipped that the
        next one holds. A recorder that failed is passed over for LIVE_AVOID_S (a killed holder
        stays first in the route until its lease ends). The viewer is told which recorder serves
        it (a JSON text message)."""
        cursor: int | None = None
        sent_init, serving = b"", ""
        failed: dict[str, float] = {}

        def shunned(recorder: str) -> bool:
            return time.monotonic() - failed.get(recorder, -LIVE_AVOID_S) < LIVE_AVOID_S

        while not viewer.closed:
            route = await self.route(camera_id)
            source = sorted(route.sources, key=lambda s: shunned(s.recorder))[0]  # stable: route order
            began, moved = time.monotonic(), False
            try:
                url, headers = self._where(source.recorder, None, f"/api/v1/cameras/{source.camera}/live.ws")
                params = {} if cursor is None else {"after_us": str(cursor)}
                async with self.ws_session().ws_connect(
                    "ws" + url.removeprefix("http"),
                    params=params,
                    headers=headers,
                    heartbeat=LIVE_STALL_S * 2,
                    timeout=aiohttp.ClientWSTimeout(ws_close=LIVE_CLOSE_S),
                ) as upstream:
                    checked = time.monotonic()
                    while not viewer.closed:
                        message = await upstream.receive(timeout=LIVE_STALL_S)
                        if message.type != aiohttp.WSMsgType.BINARY:
                            break
                        kind, decode_us, payload = unpack(message.data)
                        if kind == INIT:
                            if payload != sent_init:
                                await viewer.send_bytes(message.data)
                                sent_init = payload
                            continue
                        if cursor is not None and decode_us <= cursor:
                            continue  # the viewer has it already
                        if source.recorder != serving:
                            await viewer.send_json({"source": source.recorder})
                            serving = source.recorder
                        await viewer.send_bytes(message.data)
                        cursor = decode_us
                        if time.monotonic() - checked >= LIVE_ROUTE_CHECK_S:
                            checked = time.monotonic()
                            first = (await self.route(camera_id)).sources[0].recorder
                            if first != source.recorder and not shunned(first):
                                moved = True
                                break
            except MemberFailed:
                pass
            except (aiohttp.ClientError, TimeoutError, ValueError, ConnectionError) as exc:
                log.info("live %s from %s: %s", camera_id, source.recorder, type(exc).__name__)
            if not moved:
                failed[source.recorder] = time.monotonic()
                if time.monotonic() - began < LIVE_RETRY_S:
                    await asyncio.sleep(LIVE_RETRY_S)  # never spin on a recorder that refuses at once

    async def export_route(self, camera_id: str, span: CoverageRange) -> Route:
        """Where an export comes from: a cluster's holder first; a pair's side that holds more of
        the range (routing.export_order), else the active side. One side's file, never one
        spliced from both (docs/design/identity.md, non-goals)."""
        route = await self.route(camera_id)
        if self.pair(camera_id) is None:
            return route
        held = await asyncio.gather(
            *(self.side_coverage(CameraRef(recorder=s.recorder, camera=s.camera), span) for s in route.sources)
        )
        ranked = export_order([sum(b - a for a, b in intervals) for intervals in held])
        return Route(route.name, [route.sources[i] for i in ranked])

    @staticmethod
    def _first_good(
        done: set[asyncio.Task], failures: list[str], refused: list[httpx.Response]
    ) -> tuple[str, httpx.Response] | None:
        for task in done:
            try:
                member, reply = task.result()
            except MemberFailed as exc:
                failures.append(str(exc))
                continue
            if reply.status_code == 200:
                return member, reply
            failures.append(f"{member}: HTTP {reply.status_code}")
            refused.append(reply)
        return None

    async def listing(self, route: Route, start_s: float, end_s: float) -> Listing:
        member, reply = await self.ask(
            route,
            lambda camera: f"/api/v1/cameras/{camera}/fragments",
            {"start": f"{start_s:.6f}", "end": f"{end_s:.6f}"},
        )
        try:
            listed = FragmentList.model_validate_json(reply.content)
        except ValidationError:
            raise error(web.HTTPBadGateway, f"{member}: not a fragment listing") from None
        rows = [Row(f.start_us, f.end_us, f.frames, f.init, f.keyframe_first, f.run, member) for f in listed.fragments]
        return Listing(rows, member, listed.open_run)

    async def rows(self, route: Route, start_s: float, end_s: float) -> list[Row]:
        return (await self.listing(route, start_s, end_s)).rows

    async def live_rows(self, camera_id: str) -> list[Row]:
        """The live window from the camera's route, never older than the one served before. For a
        pair, the active side's newest GOP is held back while its session has ended and the other
        side records: the other side lists that GOP whole once it has it (or the route moves there
        first)."""
        route, now = await self.route(camera_id), time.time()
        listing = await self.listing(route, now - LIVE_WINDOW_S, now + 10)
        rows = listing.rows
        pair = self.pair(camera_id)
        if pair is not None:
            other = pair.b if listing.source == pair.a.recorder else pair.a
            other_feed = self.feed(other.recorder, other.camera)
            if other_feed is not None and other_feed.state == "recording":
                rows = without_cut_gop(listing)
        served = self.live_served.get(camera_id)
        if rows and served and rows[-1].start_us < served[-1].start_us:
            # A member behind the one listed before answered first (the holder was slow, the other
            # is catching up after a restart or a freeze): the playlist must not go back in time.
            log.debug("live %s: %s is behind the last live window; that window again", camera_id, listing.source)
            return served
        self.live_served[camera_id] = rows
        return rows

    def pair(self, camera_id: str) -> CameraPair | None:
        place = self.directory.cameras.get(camera_id)
        return None if place is None else place.pair

    async def holdings(self, camera_id: str, span: CoverageRange) -> list[Holding]:
        """What each recorder of a camera holds of a span: a cluster's members (the holder first),
        a pair's primary and secondary, an independent recorder."""
        place = self.place(camera_id)
        sides: list[tuple[CameraRef, str]]
        if place.pair is not None:
            sides = [(place.pair.a, "primary"), (place.pair.b, "secondary")]
        elif place.cluster is not None:
            holder = place.site.state.holder(place.cluster.id)
            members = sorted(place.cluster.members, key=lambda m: holder is None or m != holder[0])
            roles = ["holder" if holder is not None and m == holder[0] else "member" for m in members]
            sides = [(CameraRef(recorder=m, camera=camera_id), role) for m, role in zip(members, roles, strict=True)]
        else:
            assert place.alone is not None
            sides = [(place.alone, "recorder")]
        found = await asyncio.gather(*(self.side_holdings(side, span) for side, _role in sides))
        return [
            Holding(side, role, covered, copied) for (side, role), (covered, copied) in zip(sides, found, strict=True)
        ]

    async def side_rows(self, side: CameraRef, start_s: float, end_s: float) -> list[Row]:
        """One recorder's fragments of a pair's camera ([] when it has none or cannot answer)."""
        try:
            return await self.rows(Route(f"{side}", [Source(side.recorder, side.camera)]), start_s, end_s)
        except web.HTTPException:
            return []

    async def merged_rows(self, pair: CameraPair, start_s: float, end_s: float) -> list[Row]:
        """The primary's fragments, and the secondary's that lie wholly in the primary's holes; where
        both start a GOP at one time and the secondary's holds more (the primary lost the feed
        inside it), the secondary's."""
        primary, secondary = await asyncio.gather(
            self.side_rows(pair.a, start_s, end_s), self.side_rows(pair.b, start_s, end_s)
        )
        by_start = {r.start_us: r for r in primary}
        for row in secondary:
            kept = by_start.get(row.start_us)
            if kept is not None and row.end_us > kept.end_us and row.frames > kept.frames:
                by_start[row.start_us] = row
        held = coverage_of([(r.start_us, r.end_us) for r in by_start.values()])
        filling = [r for r in secondary if subtract([(r.start_us, r.end_us)], held) == [(r.start_us, r.end_us)]]
        return sorted([*by_start.values(), *filling], key=lambda r: r.start_us)

    async def side_coverage(self, side: CameraRef, span: CoverageRange) -> list[tuple[int, int]]:
        return (await self.side_holdings(side, span, with_backfill=False))[0] or []

    async def side_holdings(
        self, side: CameraRef, span: CoverageRange, with_backfill: bool = True
    ) -> tuple[list[tuple[int, int]] | None, list[tuple[int, int]]]:
        """One recorder's coverage of its camera in a span (None: it did not answer), and the parts
        of it its finished backfill jobs copied from a partner."""
        params = {"start": f"{span.start / 1e6:.6f}", "end": f"{span.end / 1e6:.6f}"}
        route = Route(f"{side}", [Source(side.recorder, side.camera)])
        try:
            _member, reply = await self.ask(route, lambda camera: f"/api/v1/cameras/{camera}/coverage", params)
            coverage = Coverage.model_validate_json(reply.content)
        except (web.HTTPException, ValidationError):
            return None, []
        covered = [(parse_time_us(a), parse_time_us(b)) for a, b in coverage.intervals]
        if not with_backfill:
            return covered, []
        try:
            _member, reply = await self.ask(route, lambda _camera: "/api/v1/backfill", {"state": "done"})
            jobs = JobList.model_validate_json(reply.content).jobs
        except (web.HTTPException, ValidationError):
            return covered, []
        copied = sorted(
            (max(job.start_us, span.start), min(job.end_us, span.end))
            for job in jobs
            if job.camera == side.camera
            and job.stored_fragments
            and job.start_us < span.end
            and job.end_us > span.start
        )
        return covered, intersect(covered, coverage_of(copied))

    async def authorize(self, request: web.Request, camera_id: str | None = None) -> list[Site]:
        """A viewer's (or admin's) token as a bearer header or `?token=`, or a signed URL: checked
        by the site of the camera asked for (each management server's credentials and signing key
        cover its own cameras), or by every site for a request about no one camera. Returns the
        sites that accepted it."""
        await self.refresh()
        place = self.directory.cameras.get(camera_id) if camera_id is not None else None
        sites = [place.site] if place is not None else [site for site in self.sites if site.view is not None]
        accepted, refusal = [], None
        for site in sites:
            view = site.view
            assert view is not None
            try:
                authenticate(
                    request,
                    view.viewer,
                    media=True,
                    signing_key=view.signing_key,
                    signed_url_ttl=view.signed_url_ttl,
                    what="viewer credential",
                )
                accepted.append(site)
            except web.HTTPUnauthorized as exc:
                refusal = exc
        if not accepted:
            assert refusal is not None
            raise refusal
        return accepted

    async def may_watch(self, token: str) -> bool:
        """Whether a credential is a viewer's (or admin's) on any site (the console's login)."""
        await self.refresh()
        return any(site.view is not None and site.view.viewer(token) for site in self.sites)

    async def sign_in(self, request: SessionRequest) -> str | None:
        """The credential a console session presents: a token that may watch, as given; else a
        user's session token from the first management server that signs the user in (by password
        or one-time link). None if nobody accepts."""
        if request.token is not None and await self.may_watch(request.token):
            return request.token
        if request.token is not None:
            if len(request.token) < 16:
                return None
            login = LoginRequest(link=request.token)
        else:
            login = LoginRequest(user=request.user, password=request.password)
        for site in self.sites:
            try:
                reply = await self.http.post(
                    f"{site.management_url.rstrip('/')}/api/v1/login",
                    content=login.model_dump_json(exclude_none=True),
                    headers={"Content-Type": "application/json"},
                    timeout=SIGN_IN_TIMEOUT_S,
                )
            except httpx.HTTPError as exc:
                log.warning("%s: sign-in could not be asked: %s", site.management_url, exc)
                continue
            if reply.status_code == 429:
                raise error(web.HTTPTooManyRequests, "too many failed sign-ins for this name; wait a minute")
            if reply.status_code == 200:
                answer = LoginAnswer.model_validate_json(reply.content)
                await site.refresh(self.stop_event, force=True)  # its view now lists the session
                return answer.token
        return None

    async def sign_out(self, credential: str) -> None:
        """A user's session token ends at every management server (a credential is not ended)."""
        for site in self.sites:
            with contextlib.suppress(httpx.HTTPError):
                await self.http.delete(
                    f"{site.management_url.rstrip('/')}/api/v1/login", headers={"Authorization": f"Bearer {credential}"}
                )

    def signed_uris(self, camera: str) -> MediaUris:
        """Signed with the key of the camera's site. A pair's segments name the recorder whose
        listing they came from (the two may hold a GOP cut differently); a cluster's are fetched
        from whichever member has them."""
        view = self.place(camera).site.view
        assert view is not None
        key, ttl = view.signing_key, view.signed_url_ttl
        uris = signed_uris(key, camera, ttl)
        if self.pair(camera) is not None:
            uris["segment_uri"] = lambda segment: signed(
                key, side_segment_path(camera, segment.source, segment.start_us), ttl
            )
        return uris

    async def media(self, route: Route, path: Callable[[str], str]) -> bytes:
        """A segment or init segment: from the route's first source, else from any that has it
        (both store the same GOP under the same camera-time path)."""
        _member, reply = await self.ask(route, path)
        return reply.content


def gateway_routes(gateway: Gateway) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    def viewer_route(handler: Handler) -> Handler:
        """A viewer's route: authorized here, before its query is read (the management server's
        middleware leaves these to the gateway)."""

        @functools.wraps(handler)
        async def authorized(request: web.Request) -> web.StreamResponse:
            request[ACCEPTED_BY] = await gateway.authorize(request, request.match_info.get("camera"))
            return await handler(request)

        return own_auth(authorized)

    @routes.get("/api/v1/cameras")
    @viewer_route
    @documented("Every camera (of clusters and pairs) with the recorder it is routed to", RoutedCameraList)
    async def cameras(request: web.Request) -> web.Response:
        directory = await gateway.refresh()
        listed = []
        for camera_id, place in directory.cameras.items():
            if place.site not in request[ACCEPTED_BY]:
                continue  # another management server's camera, and this credential is not one of its
            live = f"/api/v1/cameras/{camera_id}/live.m3u8"
            if place.pair is not None:
                active = gateway.pairs.active(place.pair).recorder
                listed.append(RoutedCamera(id=camera_id, cluster=None, holder=active, live=live))
            elif place.alone is not None:
                listed.append(RoutedCamera(id=camera_id, cluster=None, holder=place.alone.recorder, live=live))
            else:
                assert place.cluster is not None
                holder = place.site.state.holder(place.cluster.id)
                listed.append(
                    RoutedCamera(id=camera_id, cluster=place.cluster.id, holder=holder and holder[0], live=live)
                )
        return web.json_response(text=RoutedCameraList(cameras=listed).model_dump_json())

    @routes.get("/api/v1/clusters/{cluster}")
    @viewer_route
    @documented("A cluster: members, holder, fencing revision, lease", ClusterView)
    async def cluster_state(request: web.Request) -> web.Response:
        await gateway.refresh()
        found = [
            (site, cluster)
            for site in request[ACCEPTED_BY]
            for cluster in site.view.config.clusters
            if cluster.id == request.match_info["cluster"]
        ]
        if not found:
            raise error(web.HTTPNotFound, f"no cluster {request.match_info['cluster']!r}")
        site, cluster = found[0]
        holder = site.state.holder(cluster.id)
        members = []
        for member in cluster.members:
            published = site.state.member(cluster.id, member)
            members.append(
                MemberView(
                    id=member,
                    alive=published is not None,
                    ready=bool(published and published.get("ready")),
                    backfill_open=published.get("backfill_open") if published else None,
                    role=published.get("role") if published else None,
                )
            )
        lease_remaining = None
        if holder is not None:
            try:
                route = gateway.cluster_route(site, cluster)
                _member, reply = await gateway.ask(route, lambda _camera: "/api/v1/cluster")
                lease_remaining = HaState.model_validate_json(reply.content).lease_remaining
            except (web.HTTPException, ValidationError):
                lease_remaining = None
        view = ClusterView(
            id=cluster.id,
            members=members,
            holder=holder[0] if holder else None,
            fence=holder[1] if holder else None,
            lease_remaining=lease_remaining,
            lease_ttl=cluster.lease_ttl,
            failback=cluster.failback,
            coordinator_reachable=site.state.reachable,
        )
        return web.json_response(text=view.model_dump_json())

    @routes.get("/api/v1/cameras/{camera}/live.m3u8")
    @viewer_route
    @documented("Live HLS routed to the holder; segments by camera time", media_type="application/vnd.apple.mpegurl")
    async def live(request: web.Request) -> web.Response:
        camera = request.match_info["camera"]
        rows = await gateway.live_rows(camera)
        if not rows:
            raise error(web.HTTPNotFound, f"nothing recorded yet for {camera}")
        text = live_playlist(rows, gateway.live_numbering[camera], **gateway.signed_uris(camera))
        return web.Response(text=text, content_type="application/vnd.apple.mpegurl")

    @routes.get("/api/v1/cameras/{camera}/live.ws")
    @viewer_route
    @documented(
        "Live frames over a WebSocket as they arrive, continuous through failover and re-route (docs/design/live.md)",
        media_type="application/octet-stream",
    )
    async def live_frames(request: web.Request) -> web.StreamResponse:
        camera = request.match_info["camera"]
        await gateway.route(camera)  # an unknown camera: 404 before the upgrade
        viewer = web.WebSocketResponse(heartbeat=5.0)
        await viewer.prepare(request)
        with contextlib.suppress(ConnectionError):  # the viewer left
            await gateway.relay_live(camera, viewer)
        await viewer.close()
        return viewer

    @routes.get("/api/v1/cameras/{camera}/playback.m3u8")
    @viewer_route
    @documented(
        "VOD HLS of a range (at most 24 h)",
        media_type="application/vnd.apple.mpegurl",
        query=TimeRange,
    )
    async def playback(request: web.Request, query: TimeRange) -> web.Response:
        camera = request.match_info["camera"]
        route, pair = await gateway.route(camera), gateway.pair(camera)
        if pair is not None:  # the merged timeline: the primary, and the secondary in its holes
            rows = await gateway.merged_rows(pair, query.start / 1e6, query.end / 1e6)
        else:
            rows = await gateway.rows(route, query.start / 1e6, query.end / 1e6)
        if not rows:
            raise error(web.HTTPNotFound, f"nothing recorded for {camera} in that range")
        text = vod_playlist(rows, **gateway.signed_uris(camera))
        return web.Response(text=text, content_type="application/vnd.apple.mpegurl")

    @routes.get("/api/v1/cameras/{camera}/timeline")
    @viewer_route
    @documented(
        "What is recorded of a camera, each interval with the recorder it plays from", Timeline, query=CoverageRange
    )
    async def timeline(request: web.Request, query: CoverageRange) -> web.Response:
        camera = request.match_info["camera"]
        route = await gateway.route(camera)
        held = await gateway.holdings(camera, query)  # one coverage query per recorder, for both lists
        if gateway.pair(camera) is not None:
            plays = held  # the primary, and the secondary in its holes
        else:  # what the route plays from (a cluster's holder)
            plays = [next((h for h in held if h.side.recorder == route.sources[0].recorder), held[0])]
        found = [h.covered or [] for h in plays]
        intervals = merged(found[0], found[1] if len(found) > 1 else [])
        listed = [
            TimelineInterval(start=iso(s), end=iso(e), recorder=plays[i].side.recorder, camera=plays[i].side.camera)
            for s, e, i in intervals
        ]
        sides = [h.reply() for h in held]
        return web.json_response(text=Timeline(camera=camera, intervals=listed, recorders=sides).model_dump_json())

    @routes.get(r"/api/v1/cameras/{camera}/segments/{start:\d{1,18}}.m4s")
    @viewer_route
    @documented("A segment from whichever member has it", media_type="video/iso.segment")
    async def segment(request: web.Request) -> web.Response:
        camera = request.match_info["camera"]
        route, start = await gateway.route(camera), int(request.match_info["start"])
        data = await gateway.media(route, lambda there: segment_path(there, start))
        return web.Response(body=data, content_type="video/iso.segment")

    @routes.get("/api/v1/cameras/{camera}/export.mp4")
    @viewer_route
    @documented(
        "MP4 of a range (at most 6 h) from one recorder: a cluster's holder, a pair's side holding more of it",
        media_type="video/mp4",
        query=ExportQuery,
    )
    async def export(request: web.Request, query: ExportQuery) -> web.StreamResponse:
        camera = request.match_info["camera"]
        span = {"start": f"{query.start / 1e6:.6f}", "end": f"{query.end / 1e6:.6f}"}
        route = await gateway.export_route(camera, CoverageRange.model_validate(span))
        params = {**span, "layout": query.layout}
        return await gateway.relay(request, route, lambda there: f"/api/v1/cameras/{there}/export.mp4", params)

    @routes.get(r"/api/v1/cameras/{camera}/recorders/{recorder}/segments/{start:\d{1,18}}.m4s")
    @viewer_route
    @documented(
        "A paired camera's segment from the recorder its playlist listed it from, else from the other",
        media_type="video/iso.segment",
    )
    async def side_segment(request: web.Request) -> web.Response:
        camera, recorder = request.match_info["camera"], request.match_info["recorder"]
        route = await gateway.route(camera)  # 404 for an unknown camera
        if gateway.pair(camera) is None or all(source.recorder != recorder for source in route.sources):
            raise error(web.HTTPNotFound, f"{camera!r} is not a pair with a side on {recorder!r}")
        named = [source for source in route.sources if source.recorder == recorder]
        route = Route(route.name, [*named, *(source for source in route.sources if source.recorder != recorder)])
        start = int(request.match_info["start"])
        data = await gateway.media(route, lambda there: segment_path(there, start))
        return web.Response(body=data, content_type="video/iso.segment")

    @routes.get(r"/api/v1/cameras/{camera}/inits/{init:[0-9a-f]{8,64}}.mp4")
    @viewer_route
    @documented("An init segment from whichever member has it", media_type="video/mp4")
    async def init(request: web.Request) -> web.Response:
        camera = request.match_info["camera"]
        route, init = await gateway.route(camera), request.match_info["init"]
        data = await gateway.media(route, lambda there: f"/api/v1/cameras/{there}/inits/{init}.mp4")
        return web.Response(body=data, content_type="video/mp4")

    add_console_routes(routes, lambda request: gateway.sign_in(request), lambda token: gateway.sign_out(token))
    return routes


def _site(client: httpx.AsyncClient, management_url: str, credential: str) -> Site:
    """A management server read over HTTP with a gateway credential (a standalone gateway)."""

    async def fetch_view() -> GatewayConfig:
        reply = await client.get(
            f"{management_url.rstrip('/')}/api/v1/gateway/config", headers={"Authorization": f"Bearer {credential}"}
        )
        if reply.status_code != 200:
            raise RuntimeError(f"management server: HTTP {reply.status_code}: {reply.text[:200]}")
        return GatewayConfig.model_validate(reply.json())

    return Site(fetch_view, management_url, credential)


async def run_gateway(servers: list[tuple[str, str]], listen_host: str, listen_port: int) -> None:
    """A standalone gateway for one or several management servers ((URL, credential with the role
    gateway) each): what it routes with from each, holders and feeds from each one's coordinator."""
    client = httpx.AsyncClient(timeout=5.0)
    gateway = Gateway([_site(client, url, credential) for url, credential in servers])
    app = application()
    app.add_routes(gateway_routes(gateway))

    @documented("This document: the gateway's routes (OpenAPI 3.1)")
    async def document(request: web.Request) -> web.Response:
        await gateway.authorize(request)
        return web.json_response(openapi(request.app, "Gapless gateway", "One stable URL per camera."))

    app.router.add_get(OPENAPI_PATH, document)
    names = ", ".join(url for url, _credential in servers)
    try:
        async with serving(app, listen_host, listen_port) as stop:
            try:
                await gateway.start()
            except web.HTTPException as exc:  # no management server up yet: the first request retries
                log.warning("%s", exc.text)
            log.info("gateway on http://%s:%d for %s", listen_host, listen_port, names)
            await stop.wait()
    finally:
        await gateway.close()
        await client.aclose()


def embedded_gateway(management, app: web.Application) -> Gateway:
    """The gateway served by the management server on its own port (the default setup)."""

    async def view() -> GatewayConfig:
        return management.gateway_config()

    # In process the configuration is at hand: every request sees the current credentials.
    def re_routed(camera: str, recorder: str, what: str) -> None:
        management.events.record("route", what, recorder=recorder, camera=camera)

    gateway = Gateway([Site(view, management.url, management.admin_token, refresh_s=0)], re_routed)
    app.add_routes(gateway_routes(gateway))
    return gateway
