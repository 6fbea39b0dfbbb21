"""The simulator's fault-injection API (HTTP, loopback): stop, start, drop, stall, block, and what
real cameras do to time: RTP timestamp jumps, SSRC changes, sequence jumps, clock steps, sender
reports rarely or never."""

from __future__ import annotations

import time

from aiohttp import web
from pydantic import Field

from gapless.common.http import application
from gapless.common.openapi import Query, documented, openapi_route
from gapless.sim.camera import SimCamera
from gapless.sim.onvif import Device

DAY_S = 86_400


class ClientQuery(Query):
    client: str | None = None
    """Only the sessions whose User-Agent contains this (the recorder's id, say)."""


class ForSeconds(Query):
    seconds: float = Field(ge=0, le=DAY_S)
    """How long."""


class BlockQuery(ForSeconds):
    client: str = Field(min_length=1)
    """The client to block: a substring of its User-Agent."""


class RtpJump(Query):
    seconds: float = Field(ge=-DAY_S, le=DAY_S)
    """By how much (negative: back, as a restarted encoder does)."""


class ClockStep(Query):
    seconds: float = Field(ge=-60 * 365 * DAY_S, le=DAY_S)
    """By how much (negative: back, as NTP may step it)."""


class SeqJump(Query):
    packets: int = Field(ge=1, le=0xFFFF)
    """How many sequence numbers to skip."""


class Swap(Query):
    a: int = Field(ge=0)
    """One device's slot (its port is the ONVIF base port plus the slot)."""
    b: int = Field(ge=0)
    """The other's."""


class SenderReports(Query):
    every: float = Field(ge=0, le=DAY_S)
    """Seconds between sender reports; 0: none."""


def build_control_app(cameras: dict[str, SimCamera], devices: list[Device] | None = None) -> web.Application:
    routes = web.RouteTableDef()
    slots = devices if devices is not None else []

    def camera_or_404(request: web.Request) -> SimCamera:
        camera = cameras.get(request.match_info["camera"])
        if camera is None:
            raise web.HTTPNotFound(text=f"no camera {request.match_info['camera']!r}\n")
        return camera

    @routes.get("/cameras")
    @documented("The simulated cameras")
    async def list_cameras(_request: web.Request) -> web.Response:
        return web.json_response({"cameras": [c.describe() for c in cameras.values()]})

    @routes.get("/cameras/{camera}")
    @documented("One camera: frame counter, start time, sessions")
    async def show(request: web.Request) -> web.Response:
        return web.json_response(camera_or_404(request).describe())

    @routes.post("/cameras/{camera}/stop")
    @documented("Stop the camera (its sessions end)")
    async def stop(request: web.Request) -> web.Response:
        camera = camera_or_404(request)
        camera.online = False
        camera.drop_all()
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/start")
    @documented("Start it again")
    async def start(request: web.Request) -> web.Response:
        camera = camera_or_404(request)
        camera.online = True
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/drop")
    @documented("Drop its sessions (or one client's)", query=ClientQuery)
    async def drop(request: web.Request, query: ClientQuery) -> web.Response:
        """Drop sessions: all of them, or those whose User-Agent contains ?client=."""
        camera = camera_or_404(request)
        client = query.client
        ids = [s.id for s in camera.sessions.values() if client is None or client in s.user_agent]
        for sid in ids:
            camera.drop(sid)
        return web.json_response({"dropped": len(ids)})

    @routes.post("/cameras/{camera}/block")
    @documented("Stop sending to one client for a while", query=BlockQuery)
    async def block(request: web.Request, query: BlockQuery) -> web.Response:
        """Drop the sessions of one client (User-Agent substring) and refuse it for ?seconds=."""
        camera = camera_or_404(request)
        client = query.client
        camera.blocked[client] = time.monotonic() + query.seconds
        ids = [s.id for s in camera.sessions.values() if client in s.user_agent]
        for sid in ids:
            camera.drop(sid)
        return web.json_response({"dropped": len(ids)})

    @routes.post("/cameras/{camera}/stall")
    @documented("Stall the camera's output", query=ForSeconds)
    async def stall(request: web.Request, query: ForSeconds) -> web.Response:
        """Keep connections open but send nothing for ?seconds= (those frames are lost)."""
        camera = camera_or_404(request)
        camera.stalled_until = time.monotonic() + query.seconds
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/rtp-jump")
    @documented("Jump the RTP timestamps", query=RtpJump)
    async def rtp_jump(request: web.Request, query: RtpJump) -> web.Response:
        camera = camera_or_404(request)
        camera.jump_rtp(query.seconds)
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/ssrc-change")
    @documented("Change the SSRC")
    async def ssrc_change(request: web.Request) -> web.Response:
        camera = camera_or_404(request)
        camera.change_ssrc()
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/seq-jump")
    @documented("Skip RTP sequence numbers", query=SeqJump)
    async def seq_jump(request: web.Request, query: SeqJump) -> web.Response:
        """Jump every session's RTP sequence numbers by ?packets= at the next frame."""
        camera = camera_or_404(request)
        camera.seq_jump = query.packets
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/clock-step")
    @documented("Step the camera's clock", query=ClockStep)
    async def clock_step(request: web.Request, query: ClockStep) -> web.Response:
        camera = camera_or_404(request)
        camera.step_clock(query.seconds)
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/sender-reports")
    @documented("Change how often sender reports go out", query=SenderReports)
    async def sender_reports(request: web.Request, query: SenderReports) -> web.Response:
        camera = camera_or_404(request)
        camera.sr_interval_us = int(query.every * 1_000_000)
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/audio-broken")
    @documented("Send malformed audio for a while", query=ForSeconds)
    async def audio_broken(request: web.Request, query: ForSeconds) -> web.Response:
        """Send malformed audio packets for ?seconds= (the video is unaffected)."""
        camera = camera_or_404(request)
        if camera.audio is None:
            raise web.HTTPConflict(text=f"camera {camera.id} sends no audio (start the simulator with --audio)\n")
        camera.break_audio(query.seconds)
        return web.json_response(camera.describe())

    @routes.get("/onvif/devices")
    @documented("The ONVIF devices in port order: what each says about itself")
    async def onvif_devices(_request: web.Request) -> web.Response:
        return web.json_response({"devices": [d.spec.model_dump() for d in slots]})

    @routes.post("/onvif/swap")
    @documented("Swap two ONVIF devices' ports, as a DHCP server reassigning their addresses would", query=Swap)
    async def onvif_swap(_request: web.Request, query: Swap) -> web.Response:
        if max(query.a, query.b) >= len(slots):
            raise web.HTTPNotFound(text=f"there are {len(slots)} ONVIF devices\n")
        slots[query.a], slots[query.b] = slots[query.b], slots[query.a]
        return web.json_response({"devices": [d.spec.model_dump() for d in slots]})

    @routes.delete("/sessions/{session}")
    @documented("End one RTSP session")
    async def drop_session(request: web.Request) -> web.Response:
        sid = request.match_info["session"]
        for camera in cameras.values():
            if camera.drop(sid):
                return web.json_response({"dropped": sid})
        raise web.HTTPNotFound(text=f"no session {sid!r}\n")

    app = application()
    app.add_routes(routes)
    app.add_routes([openapi_route("Gapless camera simulator", "Fault injection for the simulated cameras.")])
    return app
