"""The simulator's fault-injection API (HTTP, loopback): stop, start, drop, stall, block, and what
real cameras do to time: RTP timestamp jumps, SSRC changes, sequence jumps, clock steps, sender
reports rarely or never."""

from __future__ import annotations

import time

from aiohttp import web

from gapless.common.http import application
from gapless.common.openapi import documented, openapi_route
from gapless.sim.camera import SimCamera


def build_control_app(cameras: dict[str, SimCamera]) -> web.Application:
    routes = web.RouteTableDef()

    def camera_or_404(request: web.Request) -> SimCamera:
        camera = cameras.get(request.match_info["camera"])
        if camera is None:
            raise web.HTTPNotFound(text=f"no camera {request.match_info['camera']!r}\n")
        return camera

    def seconds(request: web.Request, default: float | None = None, name: str = "seconds", low: float = 0) -> float:
        raw = request.query.get(name)
        if raw is None:
            if default is None:
                raise web.HTTPBadRequest(text=f"{name}= is required\n")
            return default
        try:
            value = float(raw)
        except ValueError:
            raise web.HTTPBadRequest(text=f"{name} must be a number, not {raw!r}\n") from None
        if not low <= value <= 86_400:
            raise web.HTTPBadRequest(text=f"{name} must be between {low:.0f} and 86400\n")
        return value

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
    @documented("Drop its sessions (or one client's)", query={"client": "a client address"})
    async def drop(request: web.Request) -> web.Response:
        """Drop sessions: all of them, or those whose User-Agent contains ?client=."""
        camera = camera_or_404(request)
        client = request.query.get("client")
        ids = [s.id for s in camera.sessions.values() if client is None or client in s.user_agent]
        for sid in ids:
            camera.drop(sid)
        return web.json_response({"dropped": len(ids)})

    @routes.post("/cameras/{camera}/block")
    @documented("Stop sending to one client for a while", query={"client": "a client address", "seconds": "how long"})
    async def block(request: web.Request) -> web.Response:
        """Drop the sessions of one client (User-Agent substring) and refuse it for ?seconds=."""
        camera = camera_or_404(request)
        client = request.query.get("client")
        if not client:
            raise web.HTTPBadRequest(text="client= (a User-Agent substring) is required\n")
        camera.blocked[client] = time.monotonic() + seconds(request)
        ids = [s.id for s in camera.sessions.values() if client in s.user_agent]
        for sid in ids:
            camera.drop(sid)
        return web.json_response({"dropped": len(ids)})

    @routes.post("/cameras/{camera}/stall")
    @documented("Stall the camera's output", query={"seconds": "how long"})
    async def stall(request: web.Request) -> web.Response:
        """Keep connections open but send nothing for ?seconds= (those frames are lost)."""
        camera = camera_or_404(request)
        camera.stalled_until = time.monotonic() + seconds(request)
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/rtp-jump")
    @documented("Jump the RTP timestamps", query={"seconds": "by how much (may be negative)"})
    async def rtp_jump(request: web.Request) -> web.Response:
        """Jump the RTP timestamps by ?seconds= (negative: back, as a restarted encoder does)."""
        camera = camera_or_404(request)
        camera.jump_rtp(seconds(request, low=-86_400))
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/ssrc-change")
    @documented("Change the SSRC")
    async def ssrc_change(request: web.Request) -> web.Response:
        camera = camera_or_404(request)
        camera.change_ssrc()
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/seq-jump")
    @documented("Skip RTP sequence numbers", query={"packets": "how many"})
    async def seq_jump(request: web.Request) -> web.Response:
        """Jump every session's RTP sequence numbers by ?packets= at the next frame."""
        camera = camera_or_404(request)
        camera.seq_jump = int(seconds(request, name="packets", low=1)) & 0xFFFF
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/clock-step")
    @documented("Step the camera's clock", query={"seconds": "by how much (may be negative)"})
    async def clock_step(request: web.Request) -> web.Response:
        """Step the camera's clock by ?seconds= (negative: back), as NTP does."""
        camera = camera_or_404(request)
        camera.step_clock(seconds(request, low=-86_400 * 365 * 60))
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/sender-reports")
    @documented("Change how often sender reports go out", query={"every": "seconds; 0: none"})
    async def sender_reports(request: web.Request) -> web.Response:
        """Send RTCP sender reports every ?every= seconds (0: none)."""
        camera = camera_or_404(request)
        camera.sr_interval_us = int(seconds(request, name="every") * 1_000_000)
        return web.json_response(camera.describe())

    @routes.post("/cameras/{camera}/audio-broken")
    @documented("Send malformed audio for a while", query={"seconds": "how long"})
    async def audio_broken(request: web.Request) -> web.Response:
        """Send malformed audio packets for ?seconds= (the video is unaffected)."""
        camera = camera_or_404(request)
        if camera.audio is None:
            raise web.HTTPConflict(text=f"camera {camera.id} sends no audio (start the simulator with --audio)\n")
        camera.break_audio(seconds(request))
        return web.json_response(camera.describe())

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
