"""The recorder's HTTP API (aiohttp). Every endpoint needs the API token."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import shutil
import struct
import tempfile
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gapless.common.http import application, authenticate, error, token_matches
from gapless.common.openapi import documented, openapi_route
from gapless.common.timeparse import iso
from gapless.contracts.recorder import (
    LEFT_OUT_HEADER,
    BackfillHealth,
    BackfillRequest,
    CameraList,
    CameraState,
    Coverage,
    CoverageRange,
    ExportQuery,
    FailsafeAnswer,
    FailsafeRequest,
    FeedHealth,
    FragmentList,
    HaState,
    JobInfo,
    JobList,
    JobsQuery,
    KeyframesQuery,
    LiveQuery,
    RecorderHealth,
    StorageHealth,
    TimeRange,
)
from gapless.ingest.live import FRAME, INIT, pack
from gapless.ingest.partner_time import KeyframeTimes
from gapless.media.audio import audio_of_init
from gapless.media.fmp4 import init_parameter_sets, video_only_init, with_inband_parameter_sets, without_audio
from gapless.media.hls import (
    LIVE_SEGMENTS,
    MAX_GOP_US,
    SAME_GOP_US,
    LiveNumbering,
    MediaUris,
    continues_gop,
    live_playlist,
    same_gop,
    signed_uris,
    vod_playlist,
)
from gapless.media.progressive import progressive_format, to_progressive
from gapless.storage.store import StorageError
from gapless.storage.summary import covered

#: Paths a player opens itself: they also accept ?token= or a signed URL (?exp=&sig=).
_MEDIA_PATH = re.compile(
    r"^/api/v1/(fragments/[0-9]+|inits/[0-9a-f]+|cameras/[^/]+/"
    r"(live\.m3u8|live\.ws|playback\.m3u8|export\.mp4|segments/[0-9]+\.m4s|inits/[0-9a-f]+\.mp4))$"
)
_FRAGMENT_ID = re.compile(r"^[0-9]{1,18}$")
#: A live viewer's WebSocket is pinged this often (a dead one is noticed), and waits this long for frames
#: before checking the camera is still recorded here.
LIVE_HEARTBEAT_S = 5.0
#: Progressive exports built at once (each writes the range twice to temporary space, outside the
#: archive); more wait up to PROGRESSIVE_QUEUE_S, then get 503.
PROGRESSIVE_BUILDS = 2
PROGRESSIVE_QUEUE_S = 60.0

log = logging.getLogger("gapless.api")


def left_out_box(left_out: list[dict]) -> bytes:
    """A top-level `free` box naming what an export left out (players skip it; `gapless` tools read it)."""
    text = json.dumps({"gapless_left_out": left_out}, separators=(",", ":")).encode()
    return struct.pack(">I", 8 + len(text)) + b"free" + text


def build_api(recorder) -> web.Application:
    @web.middleware
    async def fenced(request: web.Request, handler):
        """A request routed to the token holder carries the fencing revision it was routed with."""
        fence = request.headers.get("X-Gapless-Fence")
        if fence is not None:
            agent = recorder.agent
            if not fence.isdigit() or agent is None or not agent.presenting(int(fence)):
                raise error(web.HTTPConflict, f"not the token holder at fence {fence}", holder=False)
        return await handler(request)

    @web.middleware
    async def auth(request: web.Request, handler):
        token = recorder.config.recorder.api_token
        authenticate(
            request,
            lambda given: token_matches(given, token),
            media=bool(_MEDIA_PATH.match(request.path)),
            signing_key=token,
            signed_url_ttl=recorder.config.recorder.signed_url_ttl,
        )
        return await handler(request)

    def camera_id(request: web.Request) -> str:
        """A camera configured here, recording or not (a disabled camera's archive, or a standby's
        camera between takes, stays readable: the standby's pair backfills from it)."""
        cam = request.match_info["camera"]
        if cam not in recorder.cameras and all(c.id != cam for c in recorder.config.cameras):
            raise error(web.HTTPNotFound, f"no camera {cam!r} on this recorder")
        return cam

    def nothing_recorded(cam: str, start: int, end: int) -> str:
        message = f"no recording of {cam} between {iso(start)} and {iso(end)}"
        deleted = recorder.store.deleted_until(cam)
        if deleted and deleted > start:
            message += f"; footage before {iso(deleted)} was deleted by retention"
        return message

    async def recorded(request: web.Request, span: TimeRange) -> tuple[str, list]:
        """The camera and its fragments in the request's range; 404 saying why when there are none."""
        cam = camera_id(request)
        rows = await asyncio.to_thread(recorder.store.fragments, cam, span.start, span.end)
        if not rows:
            raise error(web.HTTPNotFound, await asyncio.to_thread(nothing_recorded, cam, span.start, span.end))
        return cam, rows

    routes = web.RouteTableDef()
    hls_audio: dict[str, bool] = {}  # init segment id -> its audio stays in HLS (see browser_audio)
    progressive_builds = asyncio.Semaphore(PROGRESSIVE_BUILDS)

    @routes.get("/api/v1/health")
    @documented("Per-camera feed state, storage, write queue, backfill jobs", RecorderHealth)
    async def health(_request: web.Request) -> web.Response:
        usage = shutil.disk_usage(recorder.store.root)
        cameras = {}
        for cam, ingest in recorder.cameras.items():
            feed = ingest.feed.public()
            end = feed.pop("last_fragment_end_us")
            cameras[cam] = FeedHealth(**feed, last_fragment_time=iso(end) if end else None)
        report = RecorderHealth(
            recorder=recorder.config.recorder.id,
            cameras=cameras,
            backfill=BackfillHealth(
                jobs=await asyncio.to_thread(recorder.jobs.counts), last_scan_error=recorder.gap_scanner.last_error
            ),
            cluster=recorder.agent.snapshot() if recorder.agent else None,
            storage=StorageHealth(
                disk_free_bytes=usage.free,
                queue_depth=recorder.writer.pending_fragments(),
                last_error=recorder.writer.error,
                **await asyncio.to_thread(recorder.store.damage),
                index_rebuilt=recorder.store.rebuilt,
            ),
        )
        return web.json_response(text=report.model_dump_json())

    @routes.get("/api/v1/cameras/{camera}/keyframes")
    @documented(
        "Recent keyframes (SHA-256, camera time): how partners share camera time", KeyframeTimes, query=KeyframesQuery
    )
    async def keyframes(request: web.Request, query: KeyframesQuery) -> web.Response:
        """The times this recorder gave the camera's recent keyframes: a partner starting a session
        takes its time from these (ingest/partner_time.py)."""
        ingest = recorder.cameras.get(camera_id(request))
        if ingest is None:
            raise error(web.HTTPNotFound, "camera removed")
        times = ingest.keyframe_times(query.since_us)
        return web.json_response(text=times.model_dump_json())

    @routes.get("/api/v1/cluster")
    @documented("This member's HA state: role, holder, fencing revision, lease, token changes", HaState)
    async def cluster(_request: web.Request) -> web.Response:
        if recorder.agent is None:
            raise error(web.HTTPNotFound, "this recorder is not a cluster member")
        return web.json_response(text=recorder.agent.snapshot().model_dump_json())

    @routes.post("/api/v1/cluster/failsafe")
    @documented(
        "A peer holder asks, while the coordinator is unreachable, whether it may keep the token",
        FailsafeAnswer,
        body=FailsafeRequest,
    )
    async def failsafe(_request: web.Request, body: FailsafeRequest) -> web.Response:
        agent = recorder.agent
        if agent is None:
            raise error(web.HTTPNotFound, "this recorder is not a cluster member")
        ack = body.cluster == agent.cluster and agent.failsafe_ack(body.holder, body.fence)
        return web.json_response(text=FailsafeAnswer(ack=ack).model_dump_json())

    @routes.get("/api/v1/cameras")
    @documented("Configured cameras and their state", CameraList)
    async def cameras(_request: web.Request) -> web.Response:
        listed = []
        for camera in recorder.config.cameras:
            ingest = recorder.cameras.get(camera.id)  # a disabled camera has none
            state = ingest.feed.state if ingest else "disabled"
            listed.append(CameraState(id=camera.id, enabled=camera.enabled, state=state))
        return web.json_response(text=CameraList(cameras=listed).model_dump_json())

    @routes.get("/api/v1/cameras/{camera}/coverage")
    @documented("Recorded spans of a camera in a range (at most 31 days)", Coverage, query=CoverageRange)
    async def coverage(request: web.Request, query: CoverageRange) -> web.Response:
        cam = camera_id(request)
        intervals = await asyncio.to_thread(covered, recorder.store, cam, query.start, query.end)
        clipped = [(iso(max(a, query.start)), iso(min(b, query.end))) for a, b in intervals]
        return web.json_response(Coverage(camera=cam, intervals=clipped).model_dump(mode="json"))

    @routes.get("/api/v1/cameras/{camera}/fragments")
    @documented("Fragment metadata in a range (at most 24 h)", FragmentList, query=TimeRange)
    async def fragments(request: web.Request, query: TimeRange) -> web.Response:
        cam = camera_id(request)
        feed = recorder.cameras.feed(cam)
        open_run = feed and feed.open_run  # read before the rows: a run ended in between shows as ended
        rows = await asyncio.to_thread(recorder.store.fragments, cam, query.start, query.end)
        listing = FragmentList(camera=cam, fragments=[r.public() for r in rows], open_run=open_run)
        return web.json_response(listing.model_dump(mode="json"))

    @routes.get("/api/v1/fragments/{fragment_id}")
    @documented("A fragment's moof+mdat, checksum in X-Gapless-SHA256", media_type="video/iso.segment")
    async def fragment(request: web.Request) -> web.Response:
        raw = request.match_info["fragment_id"]
        if not _FRAGMENT_ID.match(raw):
            raise error(web.HTTPBadRequest, "fragment id must be a decimal number")
        row = await asyncio.to_thread(recorder.store.fragment, int(raw))
        if row is None:
            raise error(web.HTTPNotFound, f"no fragment {raw}")
        try:
            data = await asyncio.to_thread(recorder.store.read_payload, row)
        except StorageError as exc:
            body = {"error": str(exc), "corrupt": True}
            return web.json_response(body, status=500)
        return web.Response(
            body=data,
            content_type="video/iso.segment",
            headers={"X-Gapless-SHA256": row.sha256, "X-Gapless-Init": row.init},
        )

    @routes.get("/api/v1/inits/{init_id}")
    @documented("An init segment (ftyp+moov)", media_type="video/mp4")
    async def init(request: web.Request) -> web.Response:
        segment = await asyncio.to_thread(recorder.store.init, request.match_info["init_id"])
        if segment is None:
            raise error(web.HTTPNotFound, "no such init segment")
        return web.Response(body=segment.data, content_type="video/mp4")

    @routes.get("/api/v1/cameras/{camera}/export.mp4")
    @documented(
        "One MP4 of a range (at most 6 h): fragmented, or progressive",
        media_type="video/mp4",
        query=ExportQuery,
    )
    async def export(request: web.Request, query: ExportQuery) -> web.StreamResponse:
        _cam, rows = await recorded(request, query)
        inits = {i: await asyncio.to_thread(recorder.store.init, i) for i in {r.init for r in rows}}
        if len({segment.codec.split(".")[0] for segment in inits.values()}) > 1:
            raise error(web.HTTPConflict, "the range spans a codec change; export each part separately")
        layout = query.layout
        audio = audio_of_init(inits[rows[0].init].data)
        container = progressive_format(audio.codec if audio else None) if layout == "progressive" else "mp4"
        content_type = "video/quicktime" if container == "mov" else "video/mp4"
        known = await asyncio.to_thread(recorder.store.quarantined, rows[0].camera, query.start, query.end)
        why = "stored bytes failed their checksum (quarantined)"
        left_out: list[dict] = [{"start": iso(a), "end": iso(b), "why": why} for a, b in known]
        if layout == "fragmented":
            response = web.StreamResponse(headers={"Content-Type": content_type})
            await response.prepare(request)
            async for data in exported(rows, inits, left_out):
                await response.write(data)
            if left_out:  # said at the end, once known: a top-level `free` box players skip
                await response.write(left_out_box(left_out))
            await response.write_eof()
            return response
        if progressive_builds.locked():
            log.info("progressive export waits: %d builds in progress", PROGRESSIVE_BUILDS)
        try:
            await asyncio.wait_for(progressive_builds.acquire(), PROGRESSIVE_QUEUE_S)
        except TimeoutError:
            raise error(
                web.HTTPServiceUnavailable, "too many progressive exports are being built; retry, or export fragmented"
            ) from None
        try:  # the whole range first (to a temporary file outside the archive), then one moov + mdat
            with tempfile.TemporaryDirectory(prefix="gapless-export-") as tmp:
                fragmented, progressive = Path(tmp) / "fragmented.mp4", Path(tmp) / f"progressive.{container}"
                with fragmented.open("wb") as out:
                    async for data in exported(rows, inits, left_out):
                        await asyncio.to_thread(out.write, data)
                await asyncio.to_thread(to_progressive, fragmented, progressive, container)
                headers = {"Content-Type": content_type}
                if left_out:
                    headers[LEFT_OUT_HEADER] = json.dumps(left_out, separators=(",", ":"))
                response = web.StreamResponse(headers=headers)
                response.content_length = progressive.stat().st_size
                await response.prepare(request)
                with progressive.open("rb") as result:
                    while data := await asyncio.to_thread(result.read, 1 << 20):
                        await response.write(data)
        finally:
            progressive_builds.release()
        await response.write_eof()
        return response

    async def exported(rows: list, inits: dict, left_out: list[dict]):
        """The range as one fragmented MP4: the first init segment, then every fragment. A fragment
        whose stored bytes fail their checksum is left out (quarantined, and added to `left_out`):
        its time shows as a gap, since every fragment carries its own camera time."""
        first = rows[0].init
        yield inits[first].data
        audio = audio_of_init(inits[first].data)
        for row in rows:
            try:
                data = await asyncio.to_thread(recorder.store.read_payload, row)
            except StorageError as exc:
                left_out.append({"start": iso(row.start_us), "end": iso(row.end_us), "why": str(exc)})
                continue
            if row.init != first:  # another profile (e.g. a partner's sub-stream): switch in-band
                other = inits[row.init].data
                keep_audio = audio is not None and audio_of_init(other) == audio  # else the first init says otherwise
                data = with_inband_parameter_sets(data, row.seq, init_parameter_sets(other), keep_audio)
            if data:
                yield data

    @routes.get(r"/api/v1/cameras/{camera}/segments/{start:[0-9]{1,18}}.m4s")
    @documented("The HLS segment (one GOP) starting at this camera time", media_type="video/iso.segment")
    async def segment(request: web.Request) -> web.Response:
        """One playlist segment: the fragment starting at this camera time, with the later pieces
        of its GOP (see hls.segments). The other recorder of the camera may have listed it: its time
        of the GOP may differ from ours by a few milliseconds (hls.same_gop)."""
        cam, requested = camera_id(request), int(request.match_info["start"])
        rows = await asyncio.to_thread(
            recorder.store.fragments, cam, requested - SAME_GOP_US, requested + SAME_GOP_US + MAX_GOP_US
        )
        first = min(
            (r for r in rows if same_gop(r.start_us, requested)),
            key=lambda r: abs(r.start_us - requested),
            default=None,
        )
        if first is None:
            raise error(web.HTTPNotFound, f"no segment of {cam} starts at {requested}")
        pieces = [first]
        for row in rows[rows.index(first) + 1 :]:
            if not continues_gop(first.start_us, first.init, row):
                break
            pieces.append(row)
        try:
            payloads = [await asyncio.to_thread(recorder.store.read_payload, r) for r in pieces]
        except StorageError as exc:  # quarantined now; playlists leave it out from here on
            raise error(web.HTTPNotFound, f"segment {first.start_us} of {cam} is damaged: {exc}") from None
        if not await browser_audio(first.init):
            payloads = [without_audio(payload) for payload in payloads]
        return web.Response(body=b"".join(payloads), content_type="video/iso.segment")

    async def browser_audio(init_id: str) -> bool:
        """Whether segments of this init segment keep their audio in HLS: no audio, or one browsers
        play (AAC). G.711 is left out of HLS (no browser plays it); exports keep it."""
        if init_id not in hls_audio:
            segment = await asyncio.to_thread(recorder.store.init, init_id)
            audio = audio_of_init(segment.data) if segment is not None else None
            hls_audio[init_id] = audio is None or audio.browser_playable
        return hls_audio[init_id]

    @routes.get(r"/api/v1/cameras/{camera}/inits/{init:[0-9a-f]{8,64}}.mp4")
    @documented("An init segment as HLS names it", media_type="video/mp4")
    async def camera_init(request: web.Request) -> web.Response:
        camera_id(request)
        segment = await asyncio.to_thread(recorder.store.init, request.match_info["init"])
        if segment is None:
            raise error(web.HTTPNotFound, "no such init segment")
        data = segment.data if await browser_audio(segment.id) else video_only_init(segment.data)
        return web.Response(body=data, content_type="video/mp4")

    live_numbering: collections.defaultdict[str, LiveNumbering] = collections.defaultdict(LiveNumbering)

    def media_uris(camera: str) -> MediaUris:
        return signed_uris(recorder.config.recorder.api_token, camera, recorder.config.recorder.signed_url_ttl)

    @routes.get("/api/v1/cameras/{camera}/live.m3u8")
    @documented("Live HLS playlist (fMP4, signed segment URIs)", media_type="application/vnd.apple.mpegurl")
    async def live(request: web.Request) -> web.Response:
        cam = camera_id(request)
        rows = await asyncio.to_thread(recorder.store.recent_fragments, cam, 3 * LIVE_SEGMENTS)
        if not rows:
            raise error(web.HTTPNotFound, f"nothing recorded yet for {cam}")
        text = live_playlist(rows, live_numbering[cam], **media_uris(cam))
        return web.Response(text=text, content_type="application/vnd.apple.mpegurl")

    @routes.get("/api/v1/cameras/{camera}/live.ws")
    @documented(
        "Live frames over a WebSocket as they arrive, each its own fMP4 fragment (docs/design/live.md)",
        media_type="application/octet-stream",
        query=LiveQuery,
    )
    async def live_frames(request: web.Request, query: LiveQuery) -> web.StreamResponse:
        cam = camera_id(request)
        ingest = recorder.cameras.get(cam)
        if ingest is None:
            raise error(web.HTTPNotFound, f"{cam} is not recording here")
        ws = web.WebSocketResponse(heartbeat=LIVE_HEARTBEAT_S)
        await ws.prepare(request)
        # The viewer sends nothing; reading is how its close (a gateway switching recorders) is
        # answered at once rather than when the next frame is due.
        closing = asyncio.create_task(ws.receive())
        sent_init, cursor = "", query.after_us
        try:
            while not closing.done() and recorder.cameras.get(cam) is ingest:
                waiting = asyncio.create_task(ingest.live.next(cursor, LIVE_HEARTBEAT_S))
                await asyncio.wait({waiting, closing}, return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()
                    break
                for frame in waiting.result():
                    if frame.init.id != sent_init:
                        await ws.send_bytes(pack(INIT, frame.decode_us, frame.init.data))
                        sent_init = frame.init.id
                    await ws.send_bytes(pack(FRAME, frame.decode_us, frame.fragment()))
                    cursor = frame.decode_us
        except ConnectionError:
            pass  # the viewer left
        finally:
            closing.cancel()
        await ws.close()
        return ws

    @routes.get("/api/v1/cameras/{camera}/playback.m3u8")
    @documented(
        "VOD HLS playlist of a range (at most 24 h)",
        media_type="application/vnd.apple.mpegurl",
        query=TimeRange,
    )
    async def playback(request: web.Request, query: TimeRange) -> web.Response:
        cam, rows = await recorded(request, query)
        text = vod_playlist(rows, **media_uris(cam))
        return web.Response(text=text, content_type="application/vnd.apple.mpegurl")

    @routes.post("/api/v1/backfill")
    @documented("Queue a backfill job", JobInfo, body=BackfillRequest, status=201)
    async def backfill_create(_request: web.Request, body: BackfillRequest) -> web.Response:
        if body.camera not in recorder.cameras:
            raise error(web.HTTPNotFound, f"no camera {body.camera!r} on this recorder")
        source = recorder.resolve_source(body.camera, body.source, body.source_token, body.source_camera)
        if source is None:
            raise error(
                web.HTTPBadRequest,
                f"source {body.source!r} is not a configured partner; give its URL and source_token",
            )
        source_id, url, job_token, their_camera = source
        job = await asyncio.to_thread(
            recorder.jobs.create, body.camera, source_id, url, job_token, their_camera, body.start, body.end, False
        )
        recorder.backfill.wake.set()
        return web.json_response(text=job.public().model_dump_json(), status=201)

    @routes.get("/api/v1/backfill")
    @documented("Backfill jobs, newest first", JobList, query=JobsQuery)
    async def backfill_list(_request: web.Request, query: JobsQuery) -> web.Response:
        jobs = await asyncio.to_thread(recorder.jobs.recent, 200, query.state)
        return web.json_response(text=JobList(jobs=[j.public() for j in jobs]).model_dump_json())

    @routes.get("/api/v1/backfill/{job_id}")
    @documented("One backfill job: progress, rate, errors, next try", JobInfo)
    async def backfill_get(request: web.Request) -> web.Response:
        raw = request.match_info["job_id"]
        job = await asyncio.to_thread(recorder.jobs.get, int(raw)) if _FRAGMENT_ID.match(raw) else None
        if job is None:
            raise error(web.HTTPNotFound, f"no backfill job {raw}")
        return web.json_response(text=job.public().model_dump_json())

    @routes.get("/metrics")
    @documented("Prometheus metrics", media_type="text/plain")
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(recorder.metrics_registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = application(auth, fenced)
    app.add_routes(routes)
    app.add_routes(
        [openapi_route("Gapless recorder", "Live, playback, export, fragments and backfill of one recorder.")]
    )
    return app
