"""Run simulated cameras: encode or load their loops, serve RTSP and the control API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gapless.common.http import app_runner, serving
from gapless.sim.audio import audio_loop
from gapless.sim.camera import SimCamera
from gapless.sim.control import build_control_app
from gapless.sim.encoder import Profile, encode_loop
from gapless.sim.onvif import Device, default_devices, device_app, load_devices
from gapless.sim.rtsp import Auth, RtspServer

log = logging.getLogger("gapless.sim")


@dataclass
class SimSettings:
    cameras: int = 1
    host: str = "127.0.0.1"
    port: int = 8554
    control_port: int = 8555
    profile: Profile = field(default_factory=Profile)
    sr_interval: float = 1.0
    special: list[str] = field(default_factory=list)  # extra cameras of kind "garbage" / "mpeg4"
    substream: Profile | None = None  # if set, every camera also serves /camN-sub with this profile
    auth: Auth | None = None
    session_timeout: int = 60  # seconds announced in SETUP, and enforced
    clock_error: float = 0.0  # seconds the cameras' clocks are off at start
    audio: str | None = None  # aac | pcmu | pcma: every main camera also sends audio
    audio_first: bool = False  # the SDP lists the audio track first
    onvif_port: int = 0  # ONVIF device k answers on onvif_port + k (0: no ONVIF)
    onvif_devices: Path | None = None  # what the devices say (default: one device per main camera)


def build_cameras(settings: SimSettings) -> dict[str, SimCamera]:
    loop = encode_loop(settings.profile)
    kind = settings.profile.codec
    audio = audio_loop(settings.audio) if settings.audio else None
    cameras = {
        f"cam{i}": SimCamera(f"cam{i}", loop, kind, settings.sr_interval, audio, settings.audio_first)
        for i in range(settings.cameras)
    }
    if settings.substream is not None:
        sub_loop = encode_loop(settings.substream)
        for i in range(settings.cameras):
            cameras[f"cam{i}-sub"] = SimCamera(f"cam{i}-sub", sub_loop, kind, settings.sr_interval)
    for kind in settings.special:
        if kind == "mpeg4":
            other = encode_loop(Profile(320, 240, settings.profile.fps, settings.profile.gop, 300_000, "mpeg4"))
        else:
            other = loop
        cameras[kind] = SimCamera(kind, other, kind, settings.sr_interval)
    return cameras


def build_devices(settings: SimSettings, rtsp_port: int) -> list[Device]:
    if not settings.onvif_port:
        return []
    main = [f"cam{i}" for i in range(settings.cameras)]
    specs = load_devices(settings.onvif_devices) if settings.onvif_devices else default_devices(main)
    profile = settings.profile
    base = f"rtsp://{settings.host}:{rtsp_port}"
    return [Device(spec, base, profile.width, profile.height, profile.fps) for spec in specs]


async def serve(settings: SimSettings, ready: asyncio.Event | None = None) -> None:
    cameras = build_cameras(settings)
    for camera in cameras.values():
        camera.step_clock(settings.clock_error)
    rtsp = RtspServer(cameras, settings.host, settings.port, settings.auth, settings.session_timeout)
    await rtsp.start()
    devices = build_devices(settings, rtsp.port)
    credentials = (settings.auth.username, settings.auth.password) if settings.auth else None
    async with contextlib.AsyncExitStack() as onvif:
        for slot in range(len(devices)):  # each device on its own port, as on a LAN its own address
            runner = app_runner(device_app(devices, slot, credentials))
            await runner.setup()
            onvif.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, settings.host, settings.onvif_port + slot).start()
        async with serving(build_control_app(cameras, devices), settings.host, settings.control_port) as stop:
            await _run_cameras(settings, cameras, rtsp, stop, ready)


async def _run_cameras(
    settings: SimSettings, cameras: dict[str, SimCamera], rtsp: RtspServer, stop: asyncio.Event, ready
) -> None:
    for camera in cameras.values():
        camera.start()
    profile = settings.profile
    log.info(
        "camera-sim: %d cameras %dx%d@%d GOP %d %d kb/s on rtsp://%s:%d/<camera>, control http://%s:%d",
        len(cameras),
        profile.width,
        profile.height,
        profile.fps,
        profile.gop,
        profile.bitrate // 1000,
        settings.host,
        rtsp.port,
        settings.host,
        settings.control_port,
    )
    print(
        f"ready rtsp://{settings.host}:{rtsp.port}/ control http://{settings.host}:{settings.control_port}/", flush=True
    )
    if ready:
        ready.set()
    try:
        await stop.wait()
    finally:
        for camera in cameras.values():
            await camera.stop()
        await rtsp.close()
