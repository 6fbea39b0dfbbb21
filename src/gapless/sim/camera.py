"""A simulated camera: a frame clock, its RTP sessions and the faults it can be told to show.

Frames are numbered from the camera's start and timed by the camera's own wall clock
(`capture_us = start + n / fps + clock error`), which is also what its RTCP sender reports announce.
Every client receives the same frames, as from a real camera serving two recorders. While the camera
is stopped or stalled its clock keeps running: the frames of that time are lost to every client,
and their numbers are missing from every archive.

It can also do what real cameras do wrong to time: restart or jump its RTP timestamps, change its
SSRC, jump its sequence numbers, step its clock (NTP), run a wrong clock (1970, local time), send
sender reports rarely or never, and send B-frames (out of presentation order).

A camera with audio (`sim/audio.py`: AAC or G.711) sends it on a second RTP stream with its own SSRC,
timestamps and sender reports, timed by the same camera clock; it can send broken audio packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gapless.media.h264 import FrameStamp, build_stamp_sei
from gapless.sim.audio import AudioLoop
from gapless.sim.encoder import EncodedLoop
from gapless.sim.rtp import packetize_h264, packetize_h265, packetize_mpeg4, rtp_header, sender_report

log = logging.getLogger("gapless.sim")

KINDS = ("h264", "h265", "garbage", "mpeg4")
#: Like a real camera, a client that stops reading is dropped: its backlog beyond the socket buffer
#: may hold this much for this long, then the session ends (its frames are lost to that client).
SLOW_CLIENT_BACKLOG = 512 * 1024
SLOW_CLIENT_SECONDS = 5.0
SEND_BUFFER_BYTES = 128 * 1024


@dataclass
class Session:
    """One client's PLAYing RTP session on one camera."""

    id: str
    camera: SimCamera
    user_agent: str
    peer: str
    send: Callable[[int, bytes], bool]  # False: the client is gone or too slow
    seq: int = field(default_factory=lambda: random.randrange(1 << 16))
    packets: int = 0
    octets: int = 0
    frames_sent: int = 0
    first_frame: int | None = None
    last_frame: int | None = None
    last_sr_us: int = 0
    audio: bool = False  # the client set up the audio track
    audio_seq: int = field(default_factory=lambda: random.randrange(1 << 16))
    audio_packets: int = 0
    audio_octets: int = 0
    audio_units_sent: int = 0
    last_audio_sr_us: int = 0
    playing: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def describe(self) -> dict:
        return {
            "id": self.id,
            "camera": self.camera.id,
            "user_agent": self.user_agent,
            "peer": self.peer,
            "frames_sent": self.frames_sent,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "audio_units_sent": self.audio_units_sent,
        }


class SimCamera:
    def __init__(
        self,
        cam_id: str,
        loop: EncodedLoop,
        kind: str = "h264",
        sr_interval: float = 1.0,
        audio: AudioLoop | None = None,
        audio_first: bool = False,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown camera kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.id = cam_id
        self.loop = loop
        self.kind = kind
        self.fps = loop.profile.fps
        self.sr_interval_us = int(sr_interval * 1_000_000)  # 0: no sender reports at all
        self.ssrc = random.randrange(1, 1 << 32)
        self.rtp_base = random.randrange(1 << 32)
        self.clock_error_us = 0  # the camera's clock minus the true time
        self.seq_jump = 0  # added to every session's sequence numbers at the next frame
        self.sessions: dict[str, Session] = {}
        self.online = True
        self.stalled_until = 0.0
        self.blocked: dict[str, float] = {}  # user-agent substring -> monotonic deadline
        self.frame_no = 0
        self.start_us = 0
        self.audio = audio
        self.audio_first = audio_first  # the SDP lists the audio track before the video
        self.audio_ssrc = random.randrange(1, 1 << 32)
        self.audio_rtp_base = random.randrange(1 << 32)
        self.audio_unit = 0  # the next audio unit, numbered from the camera's start
        self.audio_broken_until = 0.0  # monotonic: until then, audio packets have impossible AU headers
        self._task: asyncio.Task | None = None

    @property
    def payload_type(self) -> int:
        return 96

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"camera-{self.id}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for session in list(self.sessions.values()):
            self.drop(session.id)

    def is_blocked(self, user_agent: str) -> bool:
        now = time.monotonic()
        return any(now < until and needle in user_agent for needle, until in self.blocked.items())

    def rtp_timestamp(self, frame: int) -> int:
        """The RTP timestamp of the frame presented as number `frame`."""
        return (self.rtp_base + frame * 90_000 // self.fps) & 0xFFFFFFFF

    # ---- faults (the control API's) --------------------------------------------------------
    def jump_rtp(self, seconds: float) -> None:
        """Restart the RTP timeline (negative: back, as a restarted encoder or restreamer does)."""
        self.rtp_base = (self.rtp_base + int(seconds * 90_000)) & 0xFFFFFFFF

    def change_ssrc(self) -> None:
        self.ssrc = random.randrange(1, 1 << 32)

    def step_clock(self, seconds: float) -> None:
        """Step the camera's wall clock (what sender reports and stamps say), as NTP does."""
        self.clock_error_us += int(seconds * 1_000_000)

    def break_audio(self, seconds: float) -> None:
        """Send malformed audio packets for a while (AU headers announcing more than the packet holds)."""
        self.audio_broken_until = time.monotonic() + seconds

    def add_session(self, session: Session) -> None:
        self.sessions[session.id] = session

    def drop(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        session.closed.set()
        return True

    def drop_all(self) -> int:
        ids = list(self.sessions)
        for sid in ids:
            self.drop(sid)
        return len(ids)

    def _payloads(self, index: int, frame: int, capture_us: int) -> list[tuple[bytes, bool]]:
        if self.kind == "mpeg4":
            return packetize_mpeg4(self.loop.frames[index][0])
        if self.kind == "garbage":
            return [(os.urandom(1200), False), (os.urandom(600), True)]
        hevc = self.kind == "h265"
        nals = list(self.loop.frames[index])
        if self.loop.keyframes[index]:
            nals = [*([self.loop.vps] if hevc else []), self.loop.sps, self.loop.pps, *nals]
        sei = build_stamp_sei(FrameStamp(self.id, frame, capture_us), hevc=hevc)
        if hevc:
            first_vcl = next(i for i, nal in enumerate(nals) if (nal[0] >> 1) & 0x3F < 32)
        else:
            first_vcl = next(i for i, nal in enumerate(nals) if 1 <= nal[0] & 0x1F <= 5)
        nals.insert(first_vcl, sei)
        return packetize_h265(nals) if hevc else packetize_h264(nals)

    async def _run(self) -> None:
        start_mono = time.monotonic()
        self.start_us = time.time_ns() // 1000
        n = 0
        while True:
            delay = start_mono + n / self.fps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.frame_no = n
            live = [s for s in self.sessions.values() if s.playing]
            sending = self.online and time.monotonic() >= self.stalled_until
            if sending and live:
                self._send_frame(live, n)
            if self.audio is not None:
                self._send_audio([s for s in live if s.audio] if sending else [], time.monotonic() - start_mono)
            n += 1

    def capture_us(self, frame: int) -> int:
        """The camera's clock at the capture of the frame presented as number `frame`."""
        return self.start_us + frame * 1_000_000 // self.fps + self.clock_error_us

    def _send_frame(self, sessions: list[Session], sent: int) -> None:
        """Send the `sent`-th frame in decode order; with B-frames its presentation number differs."""
        index = sent % len(self.loop.frames)
        frame = sent + self.loop.reorder[index]
        capture_us = self.capture_us(frame)
        rtp_ts = self.rtp_timestamp(frame)
        payloads = self._payloads(index, frame, capture_us)
        jump, self.seq_jump = self.seq_jump, 0
        for session in sessions:
            session.seq = (session.seq + jump) & 0xFFFF
            due = self.sr_interval_us and capture_us - session.last_sr_us >= self.sr_interval_us
            if due or (self.sr_interval_us and capture_us < session.last_sr_us):  # the clock stepped back
                report = sender_report(self.ssrc, capture_us, rtp_ts, session.packets, session.octets)
                session.last_sr_us = capture_us
                if not session.send(1, report):
                    self.drop(session.id)
                    continue
            ok = True
            for payload, marker in payloads:
                packet = rtp_header(self.payload_type, session.seq, rtp_ts, self.ssrc, marker) + payload
                session.seq = (session.seq + 1) & 0xFFFF
                session.packets += 1
                session.octets += len(payload)
                if not session.send(0, packet):
                    ok = False
                    break
            if not ok:
                log.warning("camera %s: dropping slow or gone client %s", self.id, session.peer)
                self.drop(session.id)
                continue
            session.frames_sent += 1
            if session.first_frame is None:
                session.first_frame = frame
            session.last_frame = frame

    def _send_audio(self, sessions: list[Session], elapsed_s: float) -> None:
        """Every audio unit captured by now (units of a time the camera was down are lost to all)."""
        audio = self.audio
        assert audio is not None
        due = int(elapsed_s * audio.rate) // audio.samples_per_unit
        broken = time.monotonic() < self.audio_broken_until
        while self.audio_unit < due:
            k = self.audio_unit
            self.audio_unit += 1
            capture_us = self.start_us + k * audio.samples_per_unit * 1_000_000 // audio.rate + self.clock_error_us
            rtp_ts = self.audio_rtp_base + k * audio.samples_per_unit
            payload = audio.payload(k)
            if broken:
                payload = b"\x00\x10\xff\xf8" + payload[4:]  # an AU of 8191 bytes in a packet of a few hundred
            for session in sessions:
                due_sr = self.sr_interval_us and capture_us - session.last_audio_sr_us >= self.sr_interval_us
                if due_sr or (self.sr_interval_us and capture_us < session.last_audio_sr_us):
                    report = sender_report(
                        self.audio_ssrc, capture_us, rtp_ts, session.audio_packets, session.audio_octets
                    )
                    session.last_audio_sr_us = capture_us
                    session.send(3, report)
                header = rtp_header(audio.payload_type, session.audio_seq, rtp_ts, self.audio_ssrc, True)
                session.audio_seq = (session.audio_seq + 1) & 0xFFFF
                session.audio_packets += 1
                session.audio_octets += len(payload)
                if session.send(2, header + payload):
                    session.audio_units_sent += 1

    def describe(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "audio": self.audio.codec if self.audio else None,
            "online": self.online,
            "frame": self.frame_no,
            "fps": self.fps,
            "gop": self.loop.profile.gop,
            "start_us": self.start_us,
            "clock_error_us": self.clock_error_us,
            "sender_reports": self.sr_interval_us / 1e6,
            "stalled": time.monotonic() < self.stalled_until,
            "sessions": [s.describe() for s in self.sessions.values()],
        }
