"""A symmetrical cluster on loopback for tests: management server (embedded coordinator and
gateway, or etcd), two managed recorders, one simulated camera, and a live HLS reader."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import threading
import time
from pathlib import Path

import aiohttp
import httpx
import yaml
from conftest import GAPLESS, TOKEN, Proc, Recorder, free_port, stop_all, wait_for, wait_new_fragments

from gapless.ingest.live import INIT, unpack
from gapless.media.fmp4 import AUDIO_TRACK_ID, TRACK_ID, parse_tracks
from gapless.media.h264 import find_stamp, split_avcc

CAMERA = "lobby"
CLUSTER = "main"
#: Least privilege in every cluster test: each recorder calls management with its own credential
#: (role recorder, from a token file), the standalone gateway with a gateway credential, and
#: players watch with a viewer credential. TOKEN is the administrator's.
RECORDER_TOKENS = {"rec-a": "rec-a-credential-0000000001", "rec-b": "rec-b-credential-0000000001"}
GATEWAY_TOKEN = "gateway-credential-000000001"
VIEWER_TOKEN = "viewer-credential-0000000001"
CREDENTIALS = [
    *(
        {"id": f"{name}-key-1", "role": "recorder", "recorder": name, "token": token}
        for name, token in RECORDER_TOKENS.items()
    ),
    {"id": "gateway-1", "role": "gateway", "token": GATEWAY_TOKEN},
    {"id": "operators", "role": "viewer", "token": VIEWER_TOKEN},
]


class Management:
    def __init__(
        self, tmp: Path, sim, coordinator: dict | None = None, ttl: str = "1s", failback: str = "auto"
    ) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.recorder_ports = {"rec-a": free_port(), "rec-b": free_port()}
        config = {
            "management": {"listen": f"127.0.0.1:{self.port}", "data": str(tmp / "mgmt"), "api_token": TOKEN},
            "coordinator": coordinator or {"backend": "embedded"},
            "recorders": [
                {"id": name, "url": f"http://127.0.0.1:{port}", "token": TOKEN}
                for name, port in self.recorder_ports.items()
            ],
            "clusters": [
                {
                    "id": CLUSTER,
                    "members": ["rec-a", "rec-b"],
                    "lease_ttl": ttl,
                    "failback": failback,
                    "backfill": {"scan_interval": "10s"},
                    "cameras": [{"id": CAMERA, "url": sim.url("cam0")}],
                }
            ],
            "credentials": CREDENTIALS,
        }
        self.config_path = tmp / "management.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.api = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Management:
        self.proc = Proc([*GAPLESS, "management", "--config", str(self.config_path)], self.tmp / "mgmt.log").start()
        wait_for(lambda: self.api.get("/api/v1/config").status_code == 200, 60, "management API")
        return self

    def cluster(self) -> dict:
        return self.api.get(f"/api/v1/clusters/{CLUSTER}").json()

    def holder(self) -> str | None:
        return self.cluster()["holder"]

    def close(self) -> None:
        self.api.close()
        if self.proc:
            self.proc.stop()


def managed_recorder(tmp: Path, name: str, management: Management, credential: str = "", **section) -> Recorder:
    port = management.recorder_ports[name]
    token_file = tmp / f"{name}.credential"
    token_file.write_text((credential or RECORDER_TOKENS[name]) + "\n")
    token_file.chmod(0o600)
    link = {"management": {"url": management.url, "token_file": str(token_file)}}
    rec = Recorder(tmp, name, [], link, listen=f"127.0.0.1:{port}", **section)
    rec.port = port
    rec.api = httpx.Client(base_url=rec.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    return rec


class LiveReader(threading.Thread):
    """A player on the gateway's live playlist: polls it, fetches every new segment once, in media
    sequence order, and records what it saw. Never restarted for the whole test."""

    def __init__(self, gateway_url: str, camera: str) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}, timeout=10)
        self.camera = camera
        self.stop_event = threading.Event()
        self.sequences: list[int] = []
        self.frames: list[int] = []
        self.audio: list[bytes] = []  # audio units, in the order played
        self.errors: list[str] = []
        # media sequence numbers a discontinuity was listed before: the playlist's lines around it
        self.discontinuous: dict[int, list[str]] = {}
        self.gaps: list[int] = []  # media sequence numbers listed as EXT-X-GAP
        self.went_back: list[tuple[int, int]] = []  # (next number expected, newest listed) when lower

    def run(self) -> None:
        next_msn: int | None = None
        while not self.stop_event.is_set():
            try:
                reply = self.http.get(f"/api/v1/cameras/{self.camera}/live.m3u8")
                if reply.status_code != 200:
                    self.errors.append(f"playlist HTTP {reply.status_code}")
                else:
                    next_msn = self._consume(reply.text, next_msn)
            except httpx.HTTPError as exc:
                self.errors.append(f"playlist {type(exc).__name__}")
            self.stop_event.wait(0.5)
        self.http.close()

    def _consume(self, text: str, next_msn: int | None) -> int | None:
        msn = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
        newest = msn + sum(1 for line in text.splitlines() if line and not line.startswith("#")) - 1
        if next_msn is not None and newest < next_msn - 1:
            self.went_back.append((next_msn, newest))  # a player would stall until the numbers catch up
        pending_gap = False
        lines = text.splitlines()
        for at, line in enumerate(lines):
            if line.startswith("#EXT-X-GAP"):
                pending_gap = True
            elif line.startswith("#EXT-X-DISCONTINUITY") and (next_msn is None or msn >= next_msn):
                # once (a segment whose fetch failed is listed again), with the entries either side
                self.discontinuous.setdefault(msn, [entry.split("?")[0] for entry in lines[max(0, at - 4) : at + 5]])
            elif line and not line.startswith("#"):
                if next_msn is None or msn >= next_msn:
                    if pending_gap:
                        self.gaps.append(msn)
                    else:
                        segment = self.http.get(line)
                        if segment.status_code != 200:
                            self.errors.append(f"segment {msn}: HTTP {segment.status_code}")
                            return msn  # retry this one on the next poll
                        self.sequences.append(msn)
                        tracks = parse_tracks(segment.content)
                        for sample in tracks.get(TRACK_ID, []):
                            stamp = find_stamp(split_avcc(sample.data))
                            if stamp is not None:
                                self.frames.append(stamp.frame)
                        self.audio += [sample.data for sample in tracks.get(AUDIO_TRACK_ID, [])]
                    next_msn = msn + 1
                msn += 1
                pending_gap = False
        return next_msn

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=15)


class LiveFramesReader(threading.Thread):
    """A viewer of the gateway's live WebSocket (`live.ws`, docs/design/live.md): every frame's
    stamped number, when it arrived, and which recorders served it, in order."""

    def __init__(self, gateway_url: str, camera: str) -> None:
        super().__init__(daemon=True)
        self.url = f"ws{gateway_url.removeprefix('http')}/api/v1/cameras/{camera}/live.ws?token={VIEWER_TOKEN}"
        self.frames: list[int] = []
        self.arrivals: list[float] = []  # time.time() of each frame
        self.capture_us: list[int] = []  # each frame's capture time stamped by the simulator
        self.sources: list[str] = []
        self.inits = 0
        self.errors: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        asyncio.run(self._read())

    async def _read(self) -> None:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(self.url, heartbeat=5) as ws:
                    while not self.stop_event.is_set():
                        try:
                            message = await ws.receive(timeout=0.5)
                        except TimeoutError:
                            continue
                        if message.type == aiohttp.WSMsgType.TEXT:
                            self.sources.append(message.json()["source"])
                        elif message.type == aiohttp.WSMsgType.BINARY:
                            self._frame(message.data)
                        else:
                            self.errors.append(f"stream ended: {message.type}")
                            return
            except (aiohttp.ClientError, OSError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _frame(self, data: bytes) -> None:
        kind, _decode_us, payload = unpack(data)
        if kind == INIT:
            self.inits += 1
            return
        for sample in parse_tracks(payload).get(TRACK_ID, []):
            stamp = find_stamp(split_avcc(sample.data))
            if stamp is not None:
                self.frames.append(stamp.frame)
                self.capture_us.append(stamp.capture_us)
                self.arrivals.append(time.time())

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=15)


def assert_continuous(reader: LiveReader, camera_restarts: int = 0) -> None:
    """Every segment once, in order, no gap; a discontinuity only where the camera itself restarted
    its stream (`camera_restarts`: gst-rtsp-server re-times a shared stream when a client PLAYs).
    There, and only there, one gap entry may appear: a restarted timeline without sender reports is
    timed by arrival, which may differ from the old timeline by up to the arrival bound (2 s), a
    step forward in time with no frame missing (storage.md); the callers prove every frame is held."""
    assert not reader.went_back, f"the playlist's numbers went back: {reader.went_back[:5]}"
    assert len(reader.sequences) >= 5, f"the reader saw too little: {reader.sequences} {reader.errors}"
    listed = sorted(reader.sequences + reader.gaps)  # each list is in the order played
    steps = [b - a for a, b in itertools.pairwise(listed)]
    assert all(step == 1 for step in steps), f"media sequence skipped or repeated: {reader.sequences} {reader.gaps}"
    assert len(reader.gaps) <= camera_restarts and len(reader.discontinuous) <= camera_restarts, (
        reader.gaps,
        reader.discontinuous,
        reader.errors,
    )
    frame_steps = [b - a for a, b in zip(reader.frames, reader.frames[1:], strict=False)]
    bad = [(i, s) for i, s in enumerate(frame_steps) if s != 1]
    assert not bad, f"frame numbers repeated or skipped at {bad[:5]} ({len(reader.frames)} frames)"


#: What a failed live-continuity assertion quotes from the recorders' logs: camera time and the token.
STORY_MARKERS = ("gapless.clock", "gapless.ingest", "token ", "backfill job")


@contextlib.contextmanager
def told_by_the_logs(tmp_path: Path, members: tuple[str, ...] = ("rec-a", "rec-b")):
    """An assertion failing inside is raised again with the members' camera-time and token log lines,
    in time order: a CI run's temporary files are gone when someone reads its failure."""
    try:
        yield
    except AssertionError as exc:
        story = sorted(
            f"{line[:23]} {member} {line[24:].strip()[:240]}"
            for member in members
            if (tmp_path / f"{member}.log").exists()
            for line in (tmp_path / f"{member}.log").read_text(errors="replace").splitlines()
            if any(marker in line for marker in STORY_MARKERS)
        )
        raise AssertionError(f"{exc}\nthe recorders' logs:\n" + "\n".join(story)) from None


def wait_holder(management: Management, member: str, timeout: float = 60) -> dict:
    return wait_for(
        lambda: (state := management.cluster())["holder"] == member and state,
        timeout,
        f"{member} to hold the token",
    )


@contextlib.contextmanager
def running_cluster(
    tmp_path,
    sim,
    coordinator: dict | None = None,
    storage_a: Path | None = None,
    failback: str = "auto",
    ttl: str = "1s",
):
    """Management server, rec-a (primary, holding the token) and rec-b, all recording; stopped after."""
    management = Management(tmp_path, sim, coordinator, ttl=ttl, failback=failback)
    members = [
        managed_recorder(tmp_path, "rec-a", management, **({"storage": str(storage_a)} if storage_a else {})),
        managed_recorder(tmp_path, "rec-b", management),
    ]
    try:
        management.start()
        for member in members:
            member.start()
        wait_holder(management, "rec-a")
        wait_new_fragments([(member, CAMERA) for member in members], 2)
        yield management, *members
    finally:
        for member in members:
            member.api.close()
        stop_all([member.proc for member in members if member.proc])  # first: they let the token go
        management.close()


def kill_and_restart_the_holder(management: Management, a: Recorder) -> tuple[LiveReader, float, float]:
    """rec-a, holding the token, is killed under a live reader on the gateway; rec-b takes over; rec-a
    comes back and (after its backfill) takes the token back. Returns the stopped reader and the
    outage's start and end (wall clock)."""
    reader = LiveReader(management.url, CAMERA)
    reader.start()
    try:
        time.sleep(6)
        start = time.time()
        a.proc.kill()
        wait_holder(management, "rec-b", timeout=30)
        time.sleep(6)  # the reader keeps playing from rec-b
        a.start()
        wait_holder(management, "rec-a", timeout=120)
        end = time.time()
        time.sleep(6)
    finally:
        reader.stop()
    return reader, start, end
